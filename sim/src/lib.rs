//! `clarion-sim`: the provider simulators. Each answers as its provider does, on the wire
//! (HTTP/2 over TLS, the provider's auth checks, its statuses, reasons and stream limits), so a
//! real client library could not tell it from the provider; each records what it accepted in a
//! ledger and takes injected faults (latency, error rates, outages) at run time.
//!
//! Who runs them: the integration tests (on 127.0.0.1:0), the load-test harness
//! (`clarion-loadtest`, in-process or as `clarion-loadtest apns-sim`), and the server only when
//! told to (`mode = "simulator"` in a channel's section, or `clarion serve --simulate`), which it then says in its
//! log, `GET /v1/stats` and `/healthz`.
//!
//! ```text
//! src/apns/mod.rs           Simulator::start and SimHandle (runtime thread, accessors)
//! src/apns/config.rs        SimConfig, Faults, SimError
//! src/apns/keys.rs          .p8 keys, provider-token signing, the TLS certificate
//! src/apns/jwt.rs           provider-token checks with per-connection and shared caches
//! src/apns/request.rs       request validation in APNs' terms; payload checks
//! src/apns/reason.rs        APNs reasons and their statuses and bodies
//! src/apns/connection.rs    TLS + HTTP/2 connections and each request's life
//! src/apns/settings_shim.rs MAX_CONCURRENT_STREAMS 1 -> N on the wire (h2 cannot)
//! src/apns/frames.rs        just enough HTTP/2 framing for the shim
//! src/apns/faults.rs        the fault plan in force and its seeded random draws
//! src/apns/stats.rs         counters (SimStats) and the recent accepted pushes
//! src/apns/ledger.rs        per-seq receipt counts and end-to-end latency
//! src/apns/control.rs       the HTTP/1.1 control endpoint and its client, SimControl
//! src/fcm/mod.rs            the FCM simulator: config, faults, handle, the built-in key
//! src/fcm/server.rs         its HTTPS origin: the token endpoint and the send endpoint
//! src/webpush/mod.rs        the Web Push service simulator: subscriptions, faults, handle
//! src/webpush/server.rs     its HTTPS origin: VAPID checks, RFC 8291 decryption, answers
//! src/https.rs              the TLS + HTTP/2 origin the FCM and Web Push simulators stand on
//! src/histogram.rs          the latency histogram shape, V2 wire form, .hgrm text (shared with the harness)
//! tests/apns_*.rs           the APNs simulator against a raw h2 client, one concern per file
//! examples/apns_throughput.rs  the simulator's pushes per second on one core
//! ```

pub mod apns;
pub mod fcm;
pub mod histogram;
pub(crate) mod https;
pub(crate) mod lt_keys;
pub mod webpush;
