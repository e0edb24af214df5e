//! Scenario: the simulator's answers add nothing to the client's HPACK table after the first. A
//! connection's first answer indexes `apns-id` (so its name enters the table); later answers send
//! the id as a never-indexed literal under that name, as Apple asks its clients to do with
//! per-notification headers. Read from the bytes the client received.

mod common;

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use clarion_sim::apns::client_tls_config;
use common::{Apns, alert, push, send, token};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A stream that keeps a copy of everything read from it.
struct Recorded<S> {
    inner: S,
    seen: Arc<Mutex<Vec<u8>>>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Recorded<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        this.seen
            .lock()
            .unwrap()
            .extend_from_slice(&buf.filled()[before..]);
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Recorded<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// How the `apns-id` field of one answer was represented (RFC 7541, section 6).
#[derive(Debug, PartialEq, Eq)]
enum IdField {
    /// Literal with incremental indexing and a literal name: the name enters the table.
    AddedWithName,
    /// Never-indexed literal whose name is the dynamic table entry at this index.
    NeverIndexedUnder(usize),
    Other(u8),
}

/// The `apns-id` field of each answer's header block: `:status 200` (static index 8) first,
/// then the id, as the simulator writes them.
fn id_fields(wire: &[u8]) -> Vec<IdField> {
    let mut fields = Vec::new();
    let mut at = 0;
    while wire.len() - at >= 9 {
        let h = &wire[at..at + 9];
        let len = usize::from(h[0]) << 16 | usize::from(h[1]) << 8 | usize::from(h[2]);
        let Some(block) = wire.get(at + 9..at + 9 + len) else {
            break;
        };
        // HEADERS without padding or priority flags, as h2's server sends them.
        if h[3] == 0x1 {
            assert_eq!(h[4] & 0x28, 0, "unexpected HEADERS flags");
            assert_eq!(block[0], 0x88, ":status 200 comes first, indexed");
            // A dynamic name index (62 and up) overflows the 4-bit prefix of a never-indexed
            // literal (0x1f) into one more byte while below 15 + 128.
            fields.push(match block[1..] {
                [0x40, ..] => IdField::AddedWithName,
                [0x1f, more, ..] if more & 0x80 == 0 => {
                    IdField::NeverIndexedUnder(15 + usize::from(more))
                }
                [other, ..] => IdField::Other(other),
                [] => IdField::Other(0),
            });
        }
        at += 9 + len;
    }
    fields
}

#[tokio::test]
async fn only_a_connections_first_answer_adds_its_apns_id_to_the_table() {
    let apns = Apns::start(|_| {});
    let cfg = client_tls_config(apns.sim.ca_pem()).expect("tls config");
    let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    let tcp = tokio::net::TcpStream::connect(apns.sim.addr())
        .await
        .expect("connect");
    let name = rustls_pki_types::ServerName::try_from("localhost").expect("name");
    let tls = connector.connect(name, tcp).await.expect("tls handshake");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let recorded = Recorded {
        inner: tls,
        seen: seen.clone(),
    };
    let (client, conn) = h2::client::handshake(recorded).await.expect("h2 handshake");
    tokio::spawn(async move {
        let _ = conn.await;
    });

    // One token for the connection, as a client keeps it: a newer one signed a second later would
    // be refused (TooManyProviderTokenUpdates) by the refresh rule.
    let jwt = apns.jwt(0);
    for seq in 1..=3 {
        let answer = send(&client, push(&token(seq), &jwt), alert(seq))
            .await
            .expect("send");
        assert_eq!(answer.status, 200);
    }
    let fields = id_fields(&seen.lock().unwrap());
    assert_eq!(fields.len(), 3, "{fields:?}");
    assert_eq!(fields[0], IdField::AddedWithName);
    for later in &fields[1..] {
        // 62 is the first dynamic entry: the id the first answer added.
        assert!(
            matches!(later, IdField::NeverIndexedUnder(i) if *i >= 62),
            "{fields:?}"
        );
    }
}
