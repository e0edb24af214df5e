//! One persistent HTTP/1.1 connection to the server under test, reopened after any error. A
//! request whose exchange breaks (the server was killed under it) is an `Err`: its outcome is
//! unknown, which is exactly what the campaign has to account for.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use serde_json::Value;

/// How long a request may wait for its answer. A live server answers within milliseconds; a
/// killed one resets the socket at once, so this only bounds a hung exchange.
const READ_TIMEOUT: Duration = Duration::from_secs(20);
/// Largest response body read (a batch of 1,000 results is about 100 KiB).
const MAX_BODY_BYTES: usize = 4 << 20;

pub struct Conn {
    addr: SocketAddr,
    key: String,
    stream: Option<BufReader<TcpStream>>,
}

impl Conn {
    pub fn new(addr: SocketAddr, key: &str) -> Conn {
        Conn {
            addr,
            key: key.to_string(),
            stream: None,
        }
    }

    /// Sends one request and reads its answer: `(status, body as JSON or Null)`.
    pub fn call(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
    ) -> std::io::Result<(u16, Value)> {
        let r = self.exchange(method, path, body);
        if r.is_err() {
            self.stream = None;
        }
        r
    }

    fn exchange(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
    ) -> std::io::Result<(u16, Value)> {
        if self.stream.is_none() {
            let s = TcpStream::connect(self.addr)?;
            s.set_read_timeout(Some(READ_TIMEOUT))?;
            s.set_nodelay(true)?;
            self.stream = Some(BufReader::new(s));
        }
        let Some(stream) = self.stream.as_mut() else {
            return Err(broken("no connection"));
        };
        let body = body.unwrap_or(b"");
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {}\r\nContent-Length: {}\r\n",
            self.key,
            body.len()
        );
        if !body.is_empty() {
            req.push_str("Content-Type: application/json\r\n");
        }
        req.push_str("\r\n");
        let mut out = req.into_bytes();
        out.extend_from_slice(body);
        stream.get_mut().write_all(&out)?;
        let (status, body, close) = read_response(stream)?;
        if close {
            self.stream = None; // the server closes it; the next call reconnects
        }
        Ok((status, body))
    }
}

fn broken(what: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::UnexpectedEof, what.to_string())
}

/// `(status, body, whether the server closes the connection)`.
fn read_response(r: &mut BufReader<TcpStream>) -> std::io::Result<(u16, Value, bool)> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Err(broken("connection closed before the status line"));
    }
    let status: u16 = line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| broken("bad status line"))?;
    let mut length = 0usize;
    let mut chunked = false;
    let mut close = false;
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            return Err(broken("connection closed in the headers"));
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        let Some((k, v)) = l.split_once(':') else {
            continue;
        };
        let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
        match k.as_str() {
            "content-length" => length = v.parse().map_err(|_| broken("content-length"))?,
            "transfer-encoding" => chunked = v.contains("chunked"),
            "connection" => close = v.eq_ignore_ascii_case("close"),
            _ => {}
        }
    }
    let body = if chunked {
        read_chunked(r)?
    } else {
        if length > MAX_BODY_BYTES {
            return Err(broken("response body too large"));
        }
        let mut b = vec![0; length];
        r.read_exact(&mut b)?;
        b
    };
    Ok((status, json(&body), close))
}

fn read_chunked(r: &mut BufReader<TcpStream>) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        r.read_line(&mut line)?;
        let n = usize::from_str_radix(line.trim(), 16).map_err(|_| broken("chunk size"))?;
        if out.len() + n > MAX_BODY_BYTES {
            return Err(broken("response body too large"));
        }
        let start = out.len();
        out.resize(start + n, 0);
        r.read_exact(&mut out[start..])?;
        line.clear();
        r.read_line(&mut line)?; // the CRLF after the chunk (or after the trailers)
        if n == 0 {
            return Ok(out);
        }
    }
}

fn json(body: &[u8]) -> Value {
    serde_json::from_slice(body).unwrap_or(Value::Null)
}
