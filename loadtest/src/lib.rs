//! `clarion-loadtest`: Clarion's load generator and HDR-histogram reports.
//!
//! Two halves that meet in a ledger:
//!
//! - the provider simulators of the `clarion-sim` crate ([`clarion_sim::apns`]: a faithful APNs
//!   provider API), which this harness runs in-process or, with `clarion-loadtest apns-sim`, as
//!   a process of its own. Every accepted payload carrying `lt_seq` is counted per seq, and
//!   `lt_ts` gives the end-to-end latency from a notification's intended send time to its
//!   arrival at "APNs".
//! - [`load`] drives Clarion's HTTP API open-loop (requests at their intended times whatever
//!   the answers do; accept latency measured from the intended time, so a stall is never hidden),
//!   records which seqs were answered 202, then asks the simulator for its ledger: every
//!   accepted notification must arrive, as often as the user has devices.
//!
//! ```no_run
//! use clarion_sim::apns::{generate_apns_key, SimConfig, Simulator};
//! use clarion_loadtest::load::{self, LoadConfig, SimLink};
//!
//! let (p8, public) = generate_apns_key()?;
//! let sim = Simulator::start(SimConfig::new("TEAMID1234", "KEYID12345", &public, "com.example"))?;
//! // ... start a Clarion server pointed at sim.endpoint(), trusting sim.ca_pem() ...
//! let cfg = LoadConfig { api_key: "key".into(), rate: 2000.0, ..LoadConfig::default() };
//! let report = load::run(&cfg, SimLink::InProcess(&sim))?;
//! print!("{}", clarion_loadtest::report::summary_text(&report));
//! # Ok::<(), anyhow::Error>(())
//! ```
//!
//! # Layout
//!
//! ```text
//! src/lib.rs                    this overview
//! src/main.rs, src/cli.rs       the `clarion-loadtest` binary: keygen, apns-sim (clarion-sim's APNs simulator as a process), run, bench, outage, backlog
//! src/load/mod.rs               LoadConfig, LoadReport, run / run_async
//! src/load/schedule.rs          open-loop intended send times, bursts
//! src/load/client.rs            h2c and HTTP/1.1 keep-alive API clients
//! src/load/register.rs          users and deterministic device tokens
//! src/load/driver.rs            the open-loop driver and its measurements
//! src/load/ledger_check.rs      accepted vs received: lost, duplicated, unexpected
//! src/bench.rs                  keygen + simulator + server child + load, in one command
//! src/outage/mod.rs             `outage`: normal, calibration, outage, recovery phases; verdict
//! src/outage/backlog.rs         `backlog`: a multi-million-delivery backlog against a dead provider
//! src/outage/mode.rs            the kinds of outage (503, dropped connections, refused connects)
//! src/outage/drain.rs           how a drain's start, end and rate are measured
//! src/outage/sampler.rs         one reading a second (RSS, simulator, /v1/stats), samples.csv
//! src/outage/rss.rs             VmRSS / VmHWM / RssAnon / RssFile from /proc/PID/status
//! src/outage/server_stats.rs    the /v1/stats counters the outage runs read
//! src/outage/report.rs          summary.json and the printed summary of those runs
//! src/report.rs                 summary table, summary.json, .hgrm files
//! src/cpu.rs                    CPU per notification: server, simulator, load generator
//! src/wake_probe.rs             what a cross-CPU thread wake-up costs here, measured before each load
//! src/ecdh_probe.rs             what a browser message's two P-256 agreements cost here, before a mix's load
//! src/duration.rs               "20s" / "500ms" / "2m" parsing
//! tests/                        one scenario per file, real sockets on 127.0.0.1:0
//! ```

pub mod bench;
pub mod cpu;
pub mod duration;
pub mod ecdh_probe;
pub mod fsync_probe;
pub mod load;
pub mod outage;
pub mod report;
pub mod wake_probe;
