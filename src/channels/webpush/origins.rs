//! [`Origins`]: how one shard reaches each push-service origin, learned on first use. An
//! `https` origin gets one TLS connection offering `h2` and `http/1.1` in ALPN: if it picks
//! `h2`, its deliveries go through a pool of HTTP/2 connections (`h2client`), otherwise through
//! a pool of HTTP/1.1 keep-alive connections (`h1client`); a plain `http` origin (a loopback
//! test endpoint) is HTTP/1.1. While one delivery learns an origin's protocol, the others for
//! it wait, so a burst to a new push service costs one probe, not one per delivery. At most
//! [`MAX_ORIGINS_PER_SHARD`] origins are kept; past it the oldest is closed.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;

use clarion_shards::Verdict;

use crate::channels::sending::unavailable;
use crate::h1client::H1Pool;
use crate::h2client::{Alpn, CONNECT_TIMEOUT, Endpoint, Pool, Transport, Tuning, speaks_h2};
use crate::sync::Latch;
use crate::wait::within;

/// Push-service origins a shard keeps connections to; past it the oldest origin's pool is
/// closed (browsers use a handful of push services).
pub const MAX_ORIGINS_PER_SHARD: usize = 64;

/// HTTP/1.1 connections per origin per shard. HTTP/1.1 carries one request per connection, so
/// this is also how many sends to one such origin run at once: 32 keep a push service that
/// answers in 50 ms at 640 sends/s per shard, while bounding the sockets one slow origin holds.
pub const H1_CONNECTIONS_PER_ORIGIN: usize = 32;

/// How an origin is reached.
#[derive(Clone)]
pub enum Route {
    H2(Rc<Pool>),
    H1(Rc<H1Pool>),
}

enum Entry {
    Ready(Route),
    /// A delivery is learning the origin's protocol; set when it is done (or gave up).
    Learning(Rc<Latch>),
}

/// The origins one shard's Web Push sender talks to.
pub struct Origins {
    entries: RefCell<HashMap<String, Entry>>,
    /// Origins in the order they were first used.
    opened: RefCell<VecDeque<String>>,
    connections_per_origin: usize,
    ca_pem: Option<Vec<u8>>,
    tuning: Tuning,
    shard: usize,
}

/// Clears an unfinished learning (the delivery learning it ran out of time) so that the next
/// delivery learns again, and wakes those waiting.
struct Learning<'a> {
    origins: &'a Origins,
    origin: &'a str,
    latch: Rc<Latch>,
}

impl Drop for Learning<'_> {
    fn drop(&mut self) {
        let mut entries = self.origins.entries.borrow_mut();
        if matches!(entries.get(self.origin), Some(Entry::Learning(l)) if Rc::ptr_eq(l, &self.latch))
        {
            entries.remove(self.origin);
        }
        self.latch.set();
    }
}

impl Origins {
    pub fn new(
        connections_per_origin: usize,
        ca_pem: Option<Vec<u8>>,
        tuning: Tuning,
        shard: usize,
    ) -> Origins {
        Origins {
            entries: RefCell::default(),
            opened: RefCell::default(),
            connections_per_origin,
            ca_pem,
            tuning,
            shard,
        }
    }

    /// Origins known now.
    pub fn len(&self) -> usize {
        self.entries.borrow().len()
    }

    /// How `origin` (`https://host[:port]`, or `http://` for a loopback test endpoint) is
    /// reached, learning it first if it is new.
    pub async fn route(&self, origin: &str) -> Result<Route, Verdict> {
        loop {
            let learning = match self.entries.borrow().get(origin) {
                Some(Entry::Ready(r)) => return Ok(r.clone()),
                Some(Entry::Learning(l)) => Some(l.clone()),
                None => None,
            };
            if let Some(latch) = learning {
                latch.wait().await;
                continue;
            }
            let latch = Rc::new(Latch::default());
            self.insert(origin, Entry::Learning(latch.clone()));
            let guard = Learning {
                origins: self,
                origin,
                latch,
            };
            // Boxed: learning connects (TLS, ALPN) once per origin, and its future is large;
            // inline, it made every send's future 32 KiB to move and allocate.
            let learned = Box::pin(self.learn(origin)).await;
            if let Ok(route) = &learned {
                let mut entries = self.entries.borrow_mut();
                let ours = matches!(entries.get(origin), Some(Entry::Learning(l)) if Rc::ptr_eq(l, &guard.latch));
                if ours {
                    entries.insert(origin.to_string(), Entry::Ready(route.clone()));
                } else {
                    // Evicted (past the bound) while it learned: this send uses the pool, which
                    // closes after it; the next send learns again.
                    match route {
                        Route::H2(p) => p.begin_close(),
                        Route::H1(p) => p.close(),
                    }
                }
            }
            drop(guard);
            return learned;
        }
    }

    async fn learn(&self, origin: &str) -> Result<Route, Verdict> {
        let endpoint = Endpoint::parse_with(origin, true)
            .map_err(|e| Verdict::permanent(format!("endpoint: {e}")))?;
        let ca = self.ca_pem.as_deref();
        // A host rustls does not take as a server name is this subscription's fault; our own
        // trusted roots failing to load would fail every origin (and the start, which loads
        // them first).
        let setup = |e: crate::h2client::Error| match e {
            crate::h2client::Error::InvalidEndpoint { .. } => {
                Verdict::permanent(format!("endpoint: {e}"))
            }
            _ => Verdict::ConfigFault {
                reason: format!("webpush TLS set-up: {e}"),
            },
        };
        let h2 = if endpoint.tls {
            let probe = Transport::with_alpn("webpush", endpoint.clone(), ca, Alpn::H2OrHttp1)
                .map_err(setup)?;
            let tls = within(CONNECT_TIMEOUT, probe.connect_tls())
                .await
                .ok_or_else(|| unavailable(format!("{origin}: connect timed out")))?
                .map_err(|e| unavailable(format!("{origin}: {e}")))?;
            speaks_h2(&tls)
        } else {
            false
        };
        let route = if h2 {
            let transport = Transport::new("webpush", endpoint, ca).map_err(setup)?;
            Route::H2(Rc::new(Pool::new(
                transport,
                self.connections_per_origin,
                self.tuning,
                self.shard,
            )))
        } else {
            let pool =
                H1Pool::new("webpush", endpoint, ca, H1_CONNECTIONS_PER_ORIGIN).map_err(setup)?;
            Route::H1(Rc::new(pool))
        };
        tracing::info!(
            shard = self.shard,
            origin,
            protocol = if h2 { "HTTP/2" } else { "HTTP/1.1" },
            "push service reached"
        );
        Ok(route)
    }

    /// Adds an entry, closing the oldest origin's connections past the bound.
    fn insert(&self, origin: &str, entry: Entry) {
        let mut entries = self.entries.borrow_mut();
        let mut opened = self.opened.borrow_mut();
        opened.retain(|o| entries.contains_key(o));
        if entries.len() >= MAX_ORIGINS_PER_SHARD {
            if let Some(oldest) = opened.pop_front() {
                match entries.remove(&oldest) {
                    Some(Entry::Ready(Route::H2(p))) => p.begin_close(),
                    Some(Entry::Ready(Route::H1(p))) => p.close(),
                    Some(Entry::Learning(l)) => l.set(),
                    None => {}
                }
            }
        }
        entries.insert(origin.to_string(), entry);
        opened.push_back(origin.to_string());
    }

    /// Every route known now.
    fn routes(&self) -> Vec<Route> {
        self.entries
            .borrow()
            .values()
            .filter_map(|e| match e {
                Entry::Ready(r) => Some(r.clone()),
                Entry::Learning(_) => None,
            })
            .collect()
    }

    /// Closes every origin's connections, letting the HTTP/2 ones finish what they carry.
    pub async fn shutdown(&self) {
        for route in self.routes() {
            match route {
                Route::H2(p) => p.shutdown().await,
                Route::H1(p) => p.close(),
            }
        }
    }

    /// Drops every connection at once.
    pub fn abort(&self) {
        for route in self.routes() {
            match route {
                Route::H2(p) => p.abort(),
                Route::H1(p) => p.close(),
            }
        }
    }
}
