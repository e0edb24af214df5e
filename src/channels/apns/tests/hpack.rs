//! How requests are header-compressed on the wire, read from the bytes the test server received:
//! Apple asks APNs clients to keep `:path` and `authorization` out of its HPACK table, and to
//! index `apns-id`, `apns-expiration` and `apns-collapse-id` only the first time, so that a
//! connection's later requests add nothing to the table.

use super::fake_apns::{FakeApns, Options, Reply};
use super::*;

/// RFC 7541's static table: `:path` is index 4 and 5 (`/`, `/index.html`), `authorization` 23.
const STATIC_PATH: [usize; 2] = [4, 5];
const STATIC_AUTHORIZATION: usize = 23;
/// Dynamic table entries are numbered after the 61 static ones.
const FIRST_DYNAMIC: usize = 62;
const HEADERS: u8 = 0x1;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// One field representation of a header block (RFC 7541, section 6); `name` is the index the
/// name refers to, 0 for a literal name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Indexed(usize),
    /// Literal with incremental indexing: the server adds it to its dynamic table.
    Added {
        name: usize,
    },
    WithoutIndexing {
        name: usize,
    },
    NeverIndexed {
        name: usize,
    },
    TableSizeUpdate,
}

/// An HPACK integer with an `n`-bit prefix starting at `block[*at]`.
fn integer(block: &[u8], at: &mut usize, n: u32) -> usize {
    let max = (1usize << n) - 1;
    let mut value = usize::from(block[*at]) & max;
    *at += 1;
    if value == max {
        let mut shift = 0;
        loop {
            let b = block[*at];
            *at += 1;
            value += usize::from(b & 0x7f) << shift;
            shift += 7;
            if b & 0x80 == 0 {
                break;
            }
        }
    }
    value
}

/// Skips a string literal (Huffman-coded or not: only its length matters here).
fn skip_string(block: &[u8], at: &mut usize) {
    let len = integer(block, at, 7);
    *at += len;
}

fn literal(block: &[u8], at: &mut usize, prefix: u32) -> usize {
    let name = integer(block, at, prefix);
    if name == 0 {
        skip_string(block, at);
    }
    skip_string(block, at);
    name
}

fn fields(block: &[u8]) -> Vec<Field> {
    let mut at = 0;
    let mut out = Vec::new();
    while at < block.len() {
        let b = block[at];
        out.push(if b & 0x80 != 0 {
            Field::Indexed(integer(block, &mut at, 7))
        } else if b & 0xc0 == 0x40 {
            Field::Added {
                name: literal(block, &mut at, 6),
            }
        } else if b & 0xe0 == 0x20 {
            integer(block, &mut at, 5);
            Field::TableSizeUpdate
        } else if b & 0xf0 == 0x10 {
            Field::NeverIndexed {
                name: literal(block, &mut at, 4),
            }
        } else {
            Field::WithoutIndexing {
                name: literal(block, &mut at, 4),
            }
        });
    }
    out
}

/// The header block of every HEADERS frame the client sent, in order.
fn request_header_blocks(wire: &[u8]) -> Vec<Vec<Field>> {
    assert!(wire.starts_with(PREFACE), "client preface");
    let mut at = PREFACE.len();
    let mut blocks = Vec::new();
    while wire.len() - at >= 9 {
        let h = &wire[at..at + 9];
        let len = usize::from(h[0]) << 16 | usize::from(h[1]) << 8 | usize::from(h[2]);
        let (kind, flags) = (h[3], h[4]);
        let Some(payload) = wire.get(at + 9..at + 9 + len) else {
            break;
        };
        if kind == HEADERS {
            let mut block = payload;
            if flags & PADDED != 0 {
                let pad = usize::from(block[0]);
                block = &block[1..block.len() - pad];
            }
            if flags & PRIORITY != 0 {
                block = &block[5..];
            }
            blocks.push(fields(block));
        }
        at += 9 + len;
    }
    blocks
}

#[test]
fn only_a_connections_first_request_adds_to_the_apns_hpack_table() {
    let server = FakeApns::start(Options::script(|_| Reply::ok()));
    let key = SigningKey::generate();
    let config = config(&server, &key, 1);
    let outcomes = on_executor(move || async move {
        let sender = sender(config, quick());
        let mut outcomes = Vec::new();
        for (i, collapse_id) in (0..).zip(["orders-1", "orders-2", "orders-3"]) {
            let n = ApnsNotification {
                collapse_id: Some(collapse_id),
                expiration_unix_s: 1_700_000_000 + i,
                ..notification(0x1000 + u128::from(i))
            };
            outcomes.push(sender.send(n).await);
        }
        outcomes
    });
    assert!(
        outcomes
            .iter()
            .all(|o| matches!(o, clarion_shards::Verdict::Sent)),
        "{outcomes:?}"
    );
    assert_eq!(server.connections(), 1);

    let blocks = request_header_blocks(&server.inbound(0));
    assert_eq!(blocks.len(), 3, "{blocks:?}");
    for (i, block) in blocks.iter().enumerate() {
        let name_of = |f: &Field| match *f {
            Field::Added { name }
            | Field::WithoutIndexing { name }
            | Field::NeverIndexed { name } => Some(name),
            _ => None,
        };
        let path: Vec<_> = block
            .iter()
            .filter(|f| name_of(f).is_some_and(|n| STATIC_PATH.contains(&n)))
            .collect();
        assert!(
            matches!(path[..], [Field::WithoutIndexing { .. }]),
            "request {i}: :path must be a literal without indexing: {block:?}"
        );
        let authorization: Vec<_> = block
            .iter()
            .filter(|f| name_of(f) == Some(STATIC_AUTHORIZATION))
            .collect();
        assert!(
            matches!(authorization[..], [Field::WithoutIndexing { .. }]),
            "request {i}: authorization must be a literal without indexing: {block:?}"
        );
    }
    // The first request indexes the names (and values) of the headers that repeat.
    assert!(
        blocks[0]
            .iter()
            .any(|f| matches!(f, Field::Added { name: 0 })),
        "{:?}",
        blocks[0]
    );
    for (i, block) in blocks.iter().enumerate().skip(1) {
        assert!(
            !block.iter().any(|f| matches!(f, Field::Added { .. })),
            "request {i} added to the table: {block:?}"
        );
        // apns-id, apns-expiration and apns-collapse-id: values as literals, names from the
        // table entries the first request made.
        let per_notification = block
            .iter()
            .filter(|f| matches!(f, Field::NeverIndexed { name } if *name >= FIRST_DYNAMIC))
            .count();
        assert_eq!(per_notification, 3, "request {i}: {block:?}");
    }
}

#[test]
fn the_field_reader_reads_rfc_7541_examples() {
    // C.3.1 (indexed fields and a literal with incremental indexing, Huffman-free), C.2.2 (a
    // literal without indexing) and C.2.3 (never indexed), RFC 7541 appendix C.
    let c31 = [
        0x82, 0x86, 0x84, 0x41, 0x0f, b'w', b'w', b'w', b'.', b'e', b'x', b'a', b'm', b'p', b'l',
        b'e', b'.', b'c', b'o', b'm',
    ];
    assert_eq!(
        fields(&c31),
        [
            Field::Indexed(2),
            Field::Indexed(6),
            Field::Indexed(4),
            Field::Added { name: 1 }
        ]
    );
    let c22 = [
        0x04, 0x0c, b'/', b's', b'a', b'm', b'p', b'l', b'e', b'/', b'p', b'a', b't', b'h',
    ];
    assert_eq!(fields(&c22), [Field::WithoutIndexing { name: 4 }]);
    let c23 = [
        0x10, 0x08, b'p', b'a', b's', b's', b'w', b'o', b'r', b'd', 0x06, b's', b'e', b'c', b'r',
        b'e', b't',
    ];
    assert_eq!(fields(&c23), [Field::NeverIndexed { name: 0 }]);
    // A name index past the 4-bit prefix (authorization, 23) takes a continuation byte.
    assert_eq!(
        fields(&[0x0f, 0x08, 0x01, b'x']),
        [Field::WithoutIndexing { name: 23 }]
    );
}
