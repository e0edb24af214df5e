//! Reading a request body: within its size limit, within the body timeout, and within two
//! budgets of bytes being received at once, one per connection (HTTP/2 carries many bodies at
//! once on one connection) and one per shard (over all its connections). A body holds its
//! bytes against both budgets until the handler drops it; a body that would go past either is
//! answered `503` with `Retry-After` and not read further.

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::Request;
use http_body_util::BodyExt;
use hyper::body::Incoming;

use crate::api::error::ApiError;
use crate::config::HttpConfig;

/// One shard's bytes of request bodies being received, over all its connections.
#[derive(Debug)]
pub struct ShardBodies {
    held: Cell<usize>,
    cap: usize,
}

impl ShardBodies {
    pub fn new(cap: usize) -> ShardBodies {
        ShardBodies {
            held: Cell::new(0),
            cap,
        }
    }

    pub fn held(&self) -> usize {
        self.held.get()
    }
}

/// One connection's bytes of request bodies being received, and its share of the shard's.
#[derive(Debug)]
pub struct ConnBodies {
    held: Cell<usize>,
    cap: usize,
    timeout: Duration,
    shard: Rc<ShardBodies>,
}

impl ConnBodies {
    pub fn new(shard: Rc<ShardBodies>, limits: &HttpConfig) -> ConnBodies {
        ConnBodies {
            held: Cell::new(0),
            cap: limits.body_buffer_per_connection,
            timeout: limits.body_timeout,
            shard,
        }
    }

    /// Takes `n` more bytes for `hold`, or says which budget they would break.
    fn take(&self, hold: &mut BodyHold<'_>, n: usize) -> Result<(), ApiError> {
        let conn = self.held.get() + n;
        if conn > self.cap {
            return Err(busy(format!(
                "this connection is already receiving {} bytes of request bodies, and {} more \
                 would pass its limit of {}; send fewer bodies at once on one connection",
                self.held.get(),
                n,
                self.cap
            )));
        }
        let shard = self.shard.held.get() + n;
        if shard > self.shard.cap {
            return Err(busy(format!(
                "the server is already receiving {} bytes of request bodies on this core, its \
                 limit is {}",
                self.shard.held.get(),
                self.shard.cap
            )));
        }
        self.held.set(conn);
        self.shard.held.set(shard);
        hold.bytes += n;
        Ok(())
    }
}

fn busy(message: String) -> ApiError {
    ApiError {
        retry_after_s: Some(1),
        ..ApiError::new(503, "body_budget_exceeded", message)
    }
}

/// Bytes of one body counted against its connection's and shard's budgets, given back on drop.
#[derive(Debug)]
pub struct BodyHold<'c> {
    bodies: &'c ConnBodies,
    bytes: usize,
}

impl Drop for BodyHold<'_> {
    fn drop(&mut self) {
        let b = self.bodies;
        b.held.set(b.held.get().saturating_sub(self.bytes));
        b.shard
            .held
            .set(b.shard.held.get().saturating_sub(self.bytes));
    }
}

/// A request body read in full, holding its bytes against the budgets while it lives.
#[derive(Debug)]
pub struct Body<'c> {
    bytes: Bytes,
    _hold: BodyHold<'c>,
}

impl std::ops::Deref for Body<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.bytes
    }
}

fn too_large(limit: usize) -> ApiError {
    ApiError::new(
        413,
        "body_too_large",
        format!("request body exceeds {limit} bytes"),
    )
}

/// Reads the whole body of `req`: at most `limit` bytes, within the body timeout, within the
/// connection's and shard's budgets.
pub async fn read_body(
    req: Request<Incoming>,
    limit: usize,
    bodies: &ConnBodies,
) -> Result<Body<'_>, ApiError> {
    let declared = req
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large(limit));
    }
    let mut hold = BodyHold { bodies, bytes: 0 };
    let mut body = req.into_body();
    // The first chunk is kept as it came; a second one starts a buffer (most bodies are one).
    let mut first: Option<Bytes> = None;
    let mut rest = BytesMut::new();
    let mut len = 0usize;
    // Made once: armed only if a frame is not ready at once.
    let mut deadline = glommio::timer::Timer::new(bodies.timeout);
    loop {
        let frame = futures_lite::future::or(async { Some(body.frame().await) }, async {
            (&mut deadline).await;
            None
        })
        .await;
        let data = match frame {
            None => {
                return Err(ApiError::new(
                    408,
                    "body_timeout",
                    format!(
                        "the request body did not arrive within {} ms ({len} bytes came)",
                        bodies.timeout.as_millis()
                    ),
                ));
            }
            Some(None) => break,
            Some(Some(Err(e))) => {
                return Err(ApiError::new(
                    400,
                    "bad_body",
                    format!("could not read the body: {e}"),
                ));
            }
            Some(Some(Ok(frame))) => match frame.into_data() {
                Ok(data) => data,
                Err(_) => continue, // trailers
            },
        };
        if data.is_empty() {
            continue;
        }
        len += data.len();
        if len > limit {
            return Err(too_large(limit));
        }
        bodies.take(&mut hold, data.len())?;
        match first.take() {
            None if rest.is_empty() => first = Some(data),
            None => rest.extend_from_slice(&data),
            Some(f) => {
                rest.reserve(f.len() + data.len());
                rest.extend_from_slice(&f);
                rest.extend_from_slice(&data);
            }
        }
    }
    let bytes = first.unwrap_or_else(|| rest.freeze());
    Ok(Body { bytes, _hold: hold })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budgets_refuse_past_either_limit_and_are_given_back() {
        let limits = HttpConfig {
            body_buffer_per_connection: 100,
            ..HttpConfig::default()
        };
        let shard = Rc::new(ShardBodies::new(150));
        let a = ConnBodies::new(shard.clone(), &limits);
        let b = ConnBodies::new(shard.clone(), &limits);
        let mut ha = BodyHold {
            bodies: &a,
            bytes: 0,
        };
        a.take(&mut ha, 60).unwrap();
        let mut ha2 = BodyHold {
            bodies: &a,
            bytes: 0,
        };
        let e = a.take(&mut ha2, 41).unwrap_err();
        assert_eq!((e.status, e.code), (503, "body_budget_exceeded"));
        assert!(e.message.contains("this connection"), "{}", e.message);
        assert_eq!(e.retry_after_s, Some(1));
        let mut hb = BodyHold {
            bodies: &b,
            bytes: 0,
        };
        b.take(&mut hb, 90).unwrap();
        let e = b.take(&mut hb, 1).unwrap_err();
        assert!(e.message.contains("on this core"), "{}", e.message);
        assert_eq!(shard.held(), 150);
        drop((ha, ha2, hb));
        assert_eq!(shard.held(), 0);
        assert_eq!((a.held.get(), b.held.get()), (0, 0));
    }
}
