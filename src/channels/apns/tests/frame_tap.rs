//! A byte-level shim under the test server's HTTP/2 stack that edits what the server sends:
//! every SETTINGS frame advertises the test's current `SETTINGS_MAX_CONCURRENT_STREAMS` (h2's
//! server cannot change that value after the handshake, APNs does), and PING acknowledgements
//! can be swallowed to play a dead peer. It also hands every byte the client sent to a recorder,
//! for tests of how requests are encoded on the wire.

use futures_lite::{AsyncRead, AsyncWrite};
use std::cell::Cell;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};

const FRAME_HEADER: usize = 9;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const ACK: u8 = 0x1;
const MAX_CONCURRENT_STREAMS: u16 = 0x3;
/// Past this much unsent output, writes wait for the socket.
const MAX_BUFFERED: usize = 1 << 20;

/// Called with each chunk of bytes read from the client.
pub(crate) type Recorder = Box<dyn FnMut(&[u8])>;

pub(crate) struct FrameTap<S> {
    inner: S,
    /// Value every outgoing SETTINGS frame carries for MAX_CONCURRENT_STREAMS.
    advertised: Rc<Cell<u32>>,
    drop_pongs: Arc<AtomicBool>,
    /// Bytes written by h2 that do not yet form a whole frame.
    staging: Vec<u8>,
    /// Edited frames not yet written to `inner`, from `sent` on.
    out: Vec<u8>,
    sent: usize,
    /// Sees every byte read from the client, in order.
    record_inbound: Recorder,
}

impl<S> FrameTap<S> {
    pub(crate) fn new(
        inner: S,
        advertised: Rc<Cell<u32>>,
        drop_pongs: Arc<AtomicBool>,
        record_inbound: Recorder,
    ) -> Self {
        FrameTap {
            inner,
            advertised,
            drop_pongs,
            staging: Vec::new(),
            out: Vec::new(),
            sent: 0,
            record_inbound,
        }
    }

    /// Moves every complete frame from `staging` to `out`, editing as configured.
    fn edit_frames(&mut self) {
        let mut at = 0;
        while self.staging.len() - at >= FRAME_HEADER {
            let header = &self.staging[at..at + FRAME_HEADER];
            let len =
                usize::from(header[0]) << 16 | usize::from(header[1]) << 8 | usize::from(header[2]);
            if self.staging.len() - at < FRAME_HEADER + len {
                break;
            }
            let (kind, flags) = (header[3], header[4]);
            let frame = &self.staging[at..at + FRAME_HEADER + len];
            if kind == SETTINGS && flags & ACK == 0 {
                let mut payload: Vec<u8> = frame[FRAME_HEADER..]
                    .chunks_exact(6)
                    .filter(|e| u16::from_be_bytes([e[0], e[1]]) != MAX_CONCURRENT_STREAMS)
                    .flatten()
                    .copied()
                    .collect();
                payload.extend_from_slice(&MAX_CONCURRENT_STREAMS.to_be_bytes());
                payload.extend_from_slice(&self.advertised.get().to_be_bytes());
                let n = payload.len();
                self.out
                    .extend_from_slice(&[(n >> 16) as u8, (n >> 8) as u8, n as u8]);
                self.out.extend_from_slice(&frame[3..FRAME_HEADER]);
                self.out.extend_from_slice(&payload);
            } else if !(kind == PING && flags & ACK != 0 && self.drop_pongs.load(Ordering::SeqCst))
            {
                self.out.extend_from_slice(frame);
            }
            at += FRAME_HEADER + len;
        }
        self.staging.drain(..at);
    }
}

impl<S: AsyncWrite + Unpin> FrameTap<S> {
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.out.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.out[self.sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        self.out.clear();
        self.sent = 0;
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for FrameTap<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let n = ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        (this.record_inbound)(&buf[..n]);
        Poll::Ready(Ok(n))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for FrameTap<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.out.len() - this.sent > MAX_BUFFERED {
            ready!(this.poll_drain(cx))?;
        }
        this.staging.extend_from_slice(buf);
        this.edit_frames();
        // Start sending now; anything left goes out on flush.
        if let Poll::Ready(Err(e)) = this.poll_drain(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_drain(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_drain(cx))?;
        Pin::new(&mut self.inner).poll_close(cx)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn frame(kind: u8, flags: u8, payload: &[u8]) -> Vec<u8> {
        let n = payload.len();
        let mut f = vec![
            (n >> 16) as u8,
            (n >> 8) as u8,
            n as u8,
            kind,
            flags,
            0,
            0,
            0,
            0,
        ];
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn settings_advertise_the_current_limit_and_pongs_can_vanish() {
        let advertised = Rc::new(Cell::new(1));
        let drop_pongs = Arc::new(AtomicBool::new(true));
        let mut tap = FrameTap::new((), advertised, drop_pongs, Box::new(|_| {}));
        // MAX_CONCURRENT_STREAMS=1000 and INITIAL_WINDOW_SIZE=65535, split mid-frame.
        let settings = frame(SETTINGS, 0, &[0, 3, 0, 0, 3, 0xE8, 0, 4, 0, 0, 0xFF, 0xFF]);
        let pong = frame(PING, ACK, &[0; 8]);
        let data = frame(0x0, 0x1, b"hello");
        let all = [settings, pong, data.clone()].concat();
        tap.staging.extend_from_slice(&all[..5]);
        tap.edit_frames();
        assert!(tap.out.is_empty());
        tap.staging.extend_from_slice(&all[5..]);
        tap.edit_frames();
        let expected_settings = frame(SETTINGS, 0, &[0, 4, 0, 0, 0xFF, 0xFF, 0, 3, 0, 0, 0, 1]);
        assert_eq!(tap.out, [expected_settings, data].concat());
        assert!(tap.staging.is_empty());
    }
}
