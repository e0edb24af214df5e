//! HTTP/2 framing, just enough of it for the stream-limit shim: frame-header constants, a
//! cursor that follows frame boundaries through a byte stream split anywhere, and the SETTINGS
//! frame that raises `MAX_CONCURRENT_STREAMS`.

/// HTTP/2 frame header length.
pub(crate) const FRAME_HEADER_LEN: usize = 9;
pub(crate) const FRAME_HEADERS: u8 = 0x1;
pub(crate) const FRAME_SETTINGS: u8 = 0x4;
pub(crate) const FLAG_ACK: u8 = 0x1;
pub(crate) const SETTINGS_MAX_CONCURRENT_STREAMS: u16 = 0x3;

/// Tracks frame boundaries in one direction of a connection.
#[derive(Default)]
pub(crate) struct FrameCursor {
    header: [u8; FRAME_HEADER_LEN],
    have: usize,
    payload_left: usize,
    /// Non-ACK SETTINGS frames seen.
    pub(crate) settings_frames: u32,
}

impl FrameCursor {
    pub(crate) fn at_boundary(&self) -> bool {
        self.have == 0 && self.payload_left == 0
    }

    /// Bytes that can pass before the next point where the boundary is known.
    pub(crate) fn bytes_to_boundary(&self) -> usize {
        if self.payload_left > 0 {
            self.payload_left
        } else {
            FRAME_HEADER_LEN - self.have
        }
    }

    pub(crate) fn advance(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if self.payload_left > 0 {
                let k = self.payload_left.min(bytes.len());
                self.payload_left -= k;
                bytes = &bytes[k..];
                continue;
            }
            let k = (FRAME_HEADER_LEN - self.have).min(bytes.len());
            self.header[self.have..self.have + k].copy_from_slice(&bytes[..k]);
            self.have += k;
            bytes = &bytes[k..];
            if self.have == FRAME_HEADER_LEN {
                let h = self.header;
                if h[3] == FRAME_SETTINGS && h[4] & FLAG_ACK == 0 {
                    self.settings_frames += 1;
                }
                self.payload_left = frame_len(&h);
                self.have = 0;
            }
        }
    }
}

pub(crate) fn frame_len(h: &[u8]) -> usize {
    (usize::from(h[0]) << 16) | (usize::from(h[1]) << 8) | usize::from(h[2])
}

pub(crate) fn settings_frame(max_streams: u32) -> Vec<u8> {
    let mut f = vec![0, 0, 6, FRAME_SETTINGS, 0, 0, 0, 0, 0];
    f.extend_from_slice(&SETTINGS_MAX_CONCURRENT_STREAMS.to_be_bytes());
    f.extend_from_slice(&max_streams.to_be_bytes());
    f
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// An encoded frame.
    pub(crate) fn frame(ty: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = payload.len() as u32;
        let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, ty, flags];
        f.extend_from_slice(&stream.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn cursor_tracks_boundaries_across_splits() {
        let mut c = FrameCursor::default();
        let f = frame(FRAME_SETTINGS, 0, 0, &[0; 12]);
        c.advance(&f[..4]);
        assert!(!c.at_boundary());
        assert_eq!(c.bytes_to_boundary(), 5);
        c.advance(&f[4..10]);
        assert_eq!(c.bytes_to_boundary(), 11);
        c.advance(&f[10..]);
        assert!(c.at_boundary());
        assert_eq!(c.settings_frames, 1);
        c.advance(&frame(FRAME_SETTINGS, FLAG_ACK, 0, b""));
        assert_eq!(c.settings_frames, 1, "ACKs are not counted");
    }

    #[test]
    fn settings_frame_carries_only_the_stream_limit() {
        let f = settings_frame(1000);
        assert_eq!(frame_len(&f), 6);
        assert_eq!(f[3], FRAME_SETTINGS);
        assert_eq!(f[4] & FLAG_ACK, 0);
        assert_eq!(&f[9..], &[0, 3, 0, 0, 0x03, 0xe8]);
    }
}
