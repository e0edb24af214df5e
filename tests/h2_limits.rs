//! HTTP/2's per-connection bounds hold against a client that writes raw frames: a stream past
//! `H2_MAX_CONCURRENT_STREAMS` is refused (`REFUSED_STREAM`); a client that makes the server
//! reset more than `H2_MAX_LOCAL_ERROR_RESET_STREAMS` malformed streams is cut off with GOAWAY
//! `ENHANCE_YOUR_CALM`; and so is a rapid-reset flood (streams opened and cancelled at once,
//! CVE-2023-44487), while a normal client on another connection keeps being served.
mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use clarion::http::{H2_MAX_CONCURRENT_STREAMS, H2_MAX_LOCAL_ERROR_RESET_STREAMS};
use clarion_sim::apns::Faults;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const GOAWAY: u8 = 0x7;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const ACK: u8 = 0x1;
const CANCEL: u32 = 0x8;
const PROTOCOL_ERROR: u32 = 0x1;
const REFUSED_STREAM: u32 = 0x7;
const ENHANCE_YOUR_CALM: u32 = 0xb;

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// An HPACK header block: `:method`, `:scheme http`, and `:path`/`authorization` as literals
/// without indexing (name from the static table).
fn header_block(method_get: bool, path: &str, bearer: Option<&str>) -> Vec<u8> {
    let mut b = vec![if method_get { 0x82 } else { 0x83 }, 0x86];
    let mut literal = |name_index: u8, value: &[u8]| {
        if name_index < 15 {
            b.push(name_index);
        } else {
            b.extend_from_slice(&[0x0f, name_index - 15]);
        }
        assert!(value.len() < 127);
        b.push(value.len() as u8);
        b.extend_from_slice(value);
    };
    literal(4, path.as_bytes());
    if let Some(key) = bearer {
        literal(23, format!("Bearer {key}").as_bytes());
    }
    b
}

/// A raw HTTP/2 connection past the handshake (our SETTINGS sent, the server's acknowledged).
fn handshake(addr: std::net::SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(PREFACE).unwrap();
    s.write_all(&frame(SETTINGS, 0, 0, &[])).unwrap();
    loop {
        let (kind, flags, _, _) = read_frame(&mut s).expect("the server's SETTINGS");
        if kind == SETTINGS && flags & ACK == 0 {
            s.write_all(&frame(SETTINGS, ACK, 0, &[])).unwrap();
            return s;
        }
    }
}

/// The next frame: (type, flags, stream, payload); `None` once the server has closed.
fn read_frame(s: &mut TcpStream) -> Option<(u8, u8, u32, Vec<u8>)> {
    let mut head = [0u8; 9];
    s.read_exact(&mut head).ok()?;
    let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
    let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
    let mut payload = vec![0u8; len];
    s.read_exact(&mut payload).ok()?;
    Some((head[3], head[4], stream, payload))
}

fn code(payload: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(payload[at..at + 4].try_into().unwrap())
}

#[test]
fn a_stream_past_the_concurrency_limit_is_refused() {
    let h = common::start(1, Faults::default(), "[http]\nbody_timeout_ms = 20000\n");
    let mut s = handshake(h.server.addr);
    // Every stream a POST whose body never comes, so each stays open on the server.
    let block = header_block(false, "/v1/notifications", Some(common::API_KEY));
    let streams = H2_MAX_CONCURRENT_STREAMS + 1;
    let mut out = Vec::new();
    for i in 0..streams {
        out.extend(frame(HEADERS, END_HEADERS, 2 * i + 1, &block));
    }
    s.write_all(&out).unwrap();
    let last = 2 * (streams - 1) + 1;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        assert!(Instant::now() < deadline, "no REFUSED_STREAM");
        let (kind, _, stream, payload) = read_frame(&mut s).expect("connection stays open");
        if kind == RST_STREAM {
            assert_eq!(stream, last, "only the stream past the limit is reset");
            assert_eq!(code(&payload, 0), REFUSED_STREAM);
            break;
        }
        assert_ne!(kind, GOAWAY, "GOAWAY {payload:?}");
    }
}

#[test]
fn a_client_that_keeps_sending_malformed_streams_is_cut_off() {
    let h = common::start(1, Faults::default(), "");
    let mut s = handshake(h.server.addr);
    // A connection-level header is malformed in HTTP/2: the server resets each such stream.
    let mut block = header_block(true, "/healthz", None);
    block.push(0x00);
    block.push(10);
    block.extend_from_slice(b"connection");
    block.push(5);
    block.extend_from_slice(b"close");
    let limit = H2_MAX_LOCAL_ERROR_RESET_STREAMS as u32;
    // Up to the limit, each is reset and the connection stays.
    let mut out = Vec::new();
    for i in 0..limit {
        out.extend(frame(HEADERS, END_HEADERS | END_STREAM, 2 * i + 1, &block));
    }
    s.write_all(&out).unwrap();
    let mut resets = 0;
    while resets < limit {
        match read_frame(&mut s).expect("connection stays open") {
            (RST_STREAM, _, _, payload) => {
                assert_eq!(code(&payload, 0), PROTOCOL_ERROR);
                resets += 1;
            }
            (GOAWAY, _, _, payload) => panic!("GOAWAY after {resets} resets: {payload:?}"),
            _ => {}
        }
    }
    // One more, and the connection is cut off.
    s.write_all(&frame(
        HEADERS,
        END_HEADERS | END_STREAM,
        2 * limit + 1,
        &block,
    ))
    .unwrap();
    let goaway = loop {
        match read_frame(&mut s) {
            Some((GOAWAY, _, _, payload)) => break Some(code(&payload, 4)),
            Some(_) => {}
            None => break None,
        }
    };
    assert_eq!(goaway, Some(ENHANCE_YOUR_CALM));
}

/// Opens one connection and floods it with streams opened and cancelled at once until the
/// server cuts it off; returns the GOAWAY's error code (if one came) and the streams written.
fn flood_once(addr: std::net::SocketAddr) -> (Option<u32>, u32) {
    let mut s = handshake(addr);
    let block = header_block(true, "/healthz", None);
    let writer = std::thread::spawn({
        let mut s = s.try_clone().unwrap();
        move || {
            let mut sent = 0u32;
            for batch in 0..100u32 {
                let mut out = Vec::new();
                for i in 0..1000 {
                    let id = 2 * (batch * 1000 + i) + 1;
                    out.extend(frame(HEADERS, END_HEADERS | END_STREAM, id, &block));
                    out.extend(frame(RST_STREAM, 0, id, &CANCEL.to_be_bytes()));
                }
                if s.write_all(&out).is_err() {
                    break;
                }
                sent += 1000;
            }
            sent
        }
    });
    let goaway = loop {
        match read_frame(&mut s) {
            Some((GOAWAY, _, _, payload)) => break Some(code(&payload, 4)),
            Some(_) => continue,
            None => break None,
        }
    };
    // After the GOAWAY the server closes the connection.
    while read_frame(&mut s).is_some() {}
    (goaway, writer.join().unwrap())
}

#[test]
fn a_rapid_reset_flood_is_cut_off_while_other_clients_are_served() {
    const ATTACK: Duration = Duration::from_millis(1500);
    let h = common::start(1, Faults::default(), "");
    let addr = h.server.addr;
    let normal = std::thread::spawn(move || {
        let c = common::http::Client { addr, key: None };
        let mut worst = Duration::ZERO;
        let mut served = 0;
        let started = Instant::now();
        while started.elapsed() < ATTACK {
            let t = Instant::now();
            assert_eq!(c.raw("GET", "/healthz", None).status, 200);
            worst = worst.max(t.elapsed());
            served += 1;
            std::thread::sleep(Duration::from_millis(5));
        }
        (served, worst)
    });
    // The attacker reconnects and floods again each time it is cut off.
    let started = Instant::now();
    let mut connections = 0;
    let mut streams = 0;
    while started.elapsed() < ATTACK {
        let t = Instant::now();
        let (goaway, sent) = flood_once(addr);
        assert_eq!(goaway, Some(ENHANCE_YOUR_CALM), "cut off with GOAWAY");
        assert!(
            sent < 100_000,
            "the flood was never refused ({sent} streams)"
        );
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
        connections += 1;
        streams += sent;
    }
    let (served, worst) = normal.join().unwrap();
    assert!(
        worst < Duration::from_secs(2),
        "a normal request took {worst:?}"
    );
    eprintln!(
        "{connections} flooding connections cut off ({streams} streams written); {served} normal requests meanwhile, the slowest {worst:?}"
    );
}
