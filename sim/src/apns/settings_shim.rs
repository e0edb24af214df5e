//! APNs' stream-limit dance on the wire, which the `h2` crate cannot do itself (its server
//! has no way to change `SETTINGS_MAX_CONCURRENT_STREAMS` after the handshake).
//!
//! [`SettingsShim`] sits between TLS and `h2`, which is configured with the *raised* limit:
//! - server to client: the value of `MAX_CONCURRENT_STREAMS` in h2's first SETTINGS frame is
//!   rewritten to the initial limit (1); once [`StreamLimits::raise`] is called (first
//!   successful request), a SETTINGS frame with the raised limit is injected at the next frame
//!   boundary;
//! - client to server: the client's ACK of that injected frame is swallowed (h2 did not send it
//!   and would treat the ACK as a protocol error); the first ACK that reaches h2 marks the
//!   initial limit as binding, and the highest stream opened before it is remembered so that
//!   only streams opened after the client knew the limit are refused.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::frames::{
    FLAG_ACK, FRAME_HEADER_LEN, FRAME_HEADERS, FRAME_SETTINGS, FrameCursor,
    SETTINGS_MAX_CONCURRENT_STREAMS, frame_len, settings_frame,
};

/// The client connection preface (`PRI * HTTP/2.0...`) length.
const CLIENT_PREFACE_LEN: usize = 24;
/// Read buffer of the client-to-server direction; frames stream through it.
const READ_BUF_BYTES: usize = 16 * 1024;

/// The connection's stream-limit state, shared between the shim and the connection task.
#[derive(Default)]
pub(crate) struct StreamLimits {
    raise: AtomicBool,
    initial_acked: AtomicBool,
    pre_ack_max_stream: AtomicU32,
}

impl StreamLimits {
    /// Advertise the raised limit (idempotent).
    pub(crate) fn raise(&self) {
        self.raise.store(true, Ordering::Relaxed);
    }

    pub(crate) fn raised(&self) -> bool {
        self.raise.load(Ordering::Relaxed)
    }

    /// Whether the initial limit binds a stream: the client had acknowledged it when it
    /// opened the stream, and the limit has not been raised.
    pub(crate) fn binds(&self, stream_id: u32) -> bool {
        !self.raised()
            && self.initial_acked.load(Ordering::Relaxed)
            && stream_id > self.pre_ack_max_stream.load(Ordering::Relaxed)
    }
}

/// See the module documentation.
pub(crate) struct SettingsShim<T> {
    inner: T,
    limits: Arc<StreamLimits>,
    initial: u32,
    max: u32,
    /// h2's first frame (its SETTINGS), held until complete so it can be rewritten.
    head: Vec<u8>,
    head_done: bool,
    pending: Vec<u8>,
    pending_off: usize,
    injected: bool,
    out: FrameCursor,
    rbuf: Box<[u8]>,
    rstart: usize,
    rend: usize,
    pass: usize,
    acks_forwarded: u32,
}

impl<T: AsyncRead + AsyncWrite + Unpin> SettingsShim<T> {
    pub(crate) fn new(inner: T, limits: Arc<StreamLimits>, initial: u32, max: u32) -> Self {
        SettingsShim {
            inner,
            limits,
            initial,
            max,
            head: Vec::new(),
            head_done: initial >= max,
            pending: Vec::new(),
            pending_off: 0,
            injected: initial >= max,
            out: FrameCursor::default(),
            rbuf: vec![0; READ_BUF_BYTES].into_boxed_slice(),
            rstart: 0,
            rend: 0,
            pass: CLIENT_PREFACE_LEN,
            acks_forwarded: 0,
        }
    }

    /// Moves the collected first frame to `pending`, rewritten when complete.
    fn finish_head(&mut self) {
        let complete = self.head.len() >= FRAME_HEADER_LEN
            && self.head.len() == FRAME_HEADER_LEN + frame_len(&self.head);
        if complete && self.head[3] == FRAME_SETTINGS && self.head[4] & FLAG_ACK == 0 {
            for entry in self.head[FRAME_HEADER_LEN..].chunks_exact_mut(6) {
                if u16::from_be_bytes([entry[0], entry[1]]) == SETTINGS_MAX_CONCURRENT_STREAMS {
                    entry[2..6].copy_from_slice(&self.initial.to_be_bytes());
                }
            }
        }
        let head = std::mem::take(&mut self.head);
        self.out.advance(&head);
        self.pending.extend_from_slice(&head);
        self.head_done = true;
    }

    fn drain_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.pending_off < self.pending.len() {
            let n = ready!(
                Pin::new(&mut self.inner).poll_write(cx, &self.pending[self.pending_off..])
            )?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.pending_off += n;
        }
        self.pending.clear();
        self.pending_off = 0;
        Poll::Ready(Ok(()))
    }

    /// Classifies buffered client bytes and copies what passes to `out`.
    fn emit(&mut self, out: &mut ReadBuf<'_>) -> usize {
        let mut copied = 0;
        while self.rend > self.rstart && out.remaining() > 0 {
            let avail = self.rend - self.rstart;
            if self.pass > 0 {
                let k = self.pass.min(avail).min(out.remaining());
                out.put_slice(&self.rbuf[self.rstart..self.rstart + k]);
                self.rstart += k;
                self.pass -= k;
                copied += k;
                continue;
            }
            if avail < FRAME_HEADER_LEN {
                break;
            }
            let h = &self.rbuf[self.rstart..self.rstart + FRAME_HEADER_LEN];
            let len = frame_len(h);
            if h[3] == FRAME_SETTINGS && h[4] & FLAG_ACK != 0 && len == 0 {
                if self.acks_forwarded >= self.out.settings_frames {
                    self.rstart += FRAME_HEADER_LEN; // the ACK of our injected SETTINGS
                    continue;
                }
                self.acks_forwarded += 1;
                self.limits.initial_acked.store(true, Ordering::Relaxed);
            } else if h[3] == FRAME_HEADERS && !self.limits.initial_acked.load(Ordering::Relaxed) {
                let id = u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff;
                self.limits
                    .pre_ack_max_stream
                    .fetch_max(id, Ordering::Relaxed);
            }
            self.pass = FRAME_HEADER_LEN + len;
        }
        copied
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncRead for SettingsShim<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.emit(out) > 0 || out.remaining() == 0 {
                return Poll::Ready(Ok(()));
            }
            if this.rstart > 0 {
                this.rbuf.copy_within(this.rstart..this.rend, 0);
                this.rend -= this.rstart;
                this.rstart = 0;
            }
            let mut rb = ReadBuf::new(&mut this.rbuf[this.rend..]);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut rb))?;
            let n = rb.filled().len();
            if n == 0 {
                if this.rend > this.rstart {
                    this.pass = this.rend - this.rstart; // EOF mid-frame: hand h2 the rest
                    continue;
                }
                return Poll::Ready(Ok(()));
            }
            this.rend += n;
        }
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncWrite for SettingsShim<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if !this.head_done {
            let need = if this.head.len() < FRAME_HEADER_LEN {
                FRAME_HEADER_LEN - this.head.len()
            } else {
                FRAME_HEADER_LEN + frame_len(&this.head) - this.head.len()
            };
            let take = need.min(buf.len());
            this.head.extend_from_slice(&buf[..take]);
            if this.head.len() >= FRAME_HEADER_LEN
                && this.head.len() == FRAME_HEADER_LEN + frame_len(&this.head)
            {
                this.finish_head();
            }
            return Poll::Ready(Ok(take));
        }
        ready!(this.drain_pending(cx))?;
        let mut limit = buf.len();
        if !this.injected && this.limits.raised() {
            if this.out.at_boundary() {
                this.pending = settings_frame(this.max);
                this.injected = true;
                ready!(this.drain_pending(cx))?;
            } else {
                limit = limit.min(this.out.bytes_to_boundary());
            }
        }
        let n = ready!(Pin::new(&mut this.inner).poll_write(cx, &buf[..limit]))?;
        this.out.advance(&buf[..n]);
        Poll::Ready(Ok(n))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let simple =
            !this.head_done || !this.pending.is_empty() || (!this.injected && this.limits.raised());
        if simple {
            let first = bufs
                .iter()
                .find(|b| !b.is_empty())
                .map_or(&[][..], |b| &b[..]);
            return Pin::new(this).poll_write(cx, first);
        }
        let n = ready!(Pin::new(&mut this.inner).poll_write_vectored(cx, bufs))?;
        let mut left = n;
        for b in bufs {
            let k = left.min(b.len());
            this.out.advance(&b[..k]);
            left -= k;
            if left == 0 {
                break;
            }
        }
        Poll::Ready(Ok(n))
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.head_done && !this.head.is_empty() {
            this.finish_head(); // flushed before complete: send it as it is
        }
        ready!(this.drain_pending(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.drain_pending(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apns::frames::tests::frame;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn rewrites_initial_limit_injects_raise_and_swallows_its_ack() {
        let (server_io, mut peer) = tokio::io::duplex(64 * 1024);
        let limits = Arc::new(StreamLimits::default());
        let mut shim = SettingsShim::new(server_io, limits.clone(), 1, 1000);
        // h2's SETTINGS: MAX_CONCURRENT_STREAMS=1000, INITIAL_WINDOW_SIZE=65535; written in pieces.
        let mut payload = vec![0, 3, 0, 0, 0x03, 0xe8];
        payload.extend_from_slice(&[0, 4, 0, 0, 0xff, 0xff]);
        let settings = frame(FRAME_SETTINGS, 0, 0, &payload);
        shim.write_all(&settings[..5]).await.expect("w");
        shim.write_all(&settings[5..]).await.expect("w");
        shim.flush().await.expect("flush");
        let mut got = vec![0u8; settings.len()];
        peer.read_exact(&mut got).await.expect("read");
        assert_eq!(&got[9..15], &[0, 3, 0, 0, 0, 1], "limit rewritten to 1");
        assert_eq!(&got[15..], &payload[6..], "other settings untouched");

        // Client: preface, HEADERS on stream 1 (before its ACK), ACK, HEADERS on stream 3.
        let mut client = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        client.extend(frame(FRAME_HEADERS, 0x4, 1, b"hdr"));
        client.extend(frame(FRAME_SETTINGS, FLAG_ACK, 0, b""));
        client.extend(frame(FRAME_HEADERS, 0x4, 3, b"hdr"));
        peer.write_all(&client).await.expect("w");
        let mut seen = vec![0u8; client.len()];
        shim.read_exact(&mut seen).await.expect("read");
        assert_eq!(seen, client, "h2's own ACK passes");
        assert!(
            !limits.binds(1),
            "stream opened before the ACK is not bound"
        );
        assert!(limits.binds(3));

        // First success: the raise is injected before the next frame.
        limits.raise();
        let response = frame(FRAME_HEADERS, 0x5, 3, b"resp");
        shim.write_all(&response).await.expect("w");
        shim.flush().await.expect("flush");
        let mut got = vec![0u8; 15 + response.len()];
        peer.read_exact(&mut got).await.expect("read");
        assert_eq!(&got[..15], settings_frame(1000).as_slice());
        assert_eq!(&got[15..], response.as_slice());
        assert!(!limits.binds(5));

        // The client's ACK of the injected SETTINGS never reaches h2.
        let mut client = frame(FRAME_SETTINGS, FLAG_ACK, 0, b"");
        let ping = frame(0x6, 0, 0, &[7; 8]);
        client.extend(&ping);
        peer.write_all(&client).await.expect("w");
        let mut seen = vec![0u8; ping.len()];
        shim.read_exact(&mut seen).await.expect("read");
        assert_eq!(seen, ping);
    }
}
