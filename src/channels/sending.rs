//! What every provider's sender shares around its own request and answers: the sends in flight
//! (so `close` can wait for them), what one round trip came to at the transport level (a
//! request the provider provably never saw is sent again once, at once; anything that may have
//! reached it is left to the delivery's retry), and the tally of verdicts, with configuration
//! faults logged at 1, 2, 4, 8, ... so a misconfigured shard cannot flood the log. APNs and FCM
//! (`channels/apns/sender.rs`, `channels/fcm/sender.rs`) keep only their request, their auth
//! and the meaning of their answers.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::future::Future;
use std::rc::Rc;
use std::time::Duration;

use clarion_shards::Verdict;

use crate::h2client::{Connection, Deadlines, RawResponse, StreamError, Tuning};
use crate::wait::{Signal, within};

/// What every sender keeps around its requests: whether it is closing, the sends in flight,
/// the tally, and one shared deadline per tick for all of them.
pub(crate) struct SenderCore {
    provider: &'static str,
    shard: usize,
    tuning: Tuning,
    deadlines: Rc<Deadlines>,
    closing: Cell<bool>,
    in_flight: InFlight,
    counts: RefCell<SendCounts>,
}

impl SenderCore {
    pub(crate) fn new(provider: &'static str, shard: usize, tuning: Tuning) -> SenderCore {
        SenderCore {
            provider,
            shard,
            tuning,
            deadlines: Rc::default(),
            closing: Cell::new(false),
            in_flight: InFlight::default(),
            counts: RefCell::default(),
        }
    }

    /// Counts a send; refuses it once the sender is closing.
    pub(crate) fn begin(&self) -> Result<(), Verdict> {
        self.counts.borrow_mut().requests += 1;
        if self.closing.get() {
            return Err(unavailable("sender closed"));
        }
        Ok(())
    }

    /// Runs one send's attempt as running, bounded by the request timeout.
    pub(crate) async fn bounded(&self, attempt: impl Future<Output = Verdict>) -> Verdict {
        let _running = self.in_flight.start();
        let outcome = self
            .deadlines
            .within(self.tuning.request_timeout, attempt)
            .await;
        outcome.unwrap_or_else(|| {
            self.counts.borrow_mut().timeouts += 1;
            unavailable("request timed out")
        })
    }

    /// Counts a send's verdict (and an answer's status, through [`SenderCore::answered`]).
    pub(crate) fn end(&self, outcome: &Verdict) {
        self.counts
            .borrow_mut()
            .count(outcome, self.provider, self.shard);
    }

    pub(crate) fn answered(&self, status: u16) {
        self.counts.borrow_mut().answered(status);
    }

    pub(crate) fn counts(&self) -> SendCounts {
        self.counts.borrow().clone()
    }

    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.now()
    }

    /// Refuses new sends and waits up to the close grace for running ones.
    pub(crate) async fn close(&self) {
        self.closing.set(true);
        if !self.in_flight.drained(self.tuning.close_grace).await {
            tracing::warn!(
                shard = self.shard,
                provider = self.provider,
                in_flight = self.in_flight.now(),
                "close: sends still running"
            );
        }
    }
}

/// The sends running now on one sender.
#[derive(Default)]
pub(crate) struct InFlight {
    count: Cell<usize>,
    /// Notified when `count` drops.
    idle: Signal,
}

impl InFlight {
    /// Counts a send as running until the guard drops (also when the caller drops the send
    /// half-way).
    pub(crate) fn start(&self) -> Running<'_> {
        self.count.set(self.count.get() + 1);
        Running(self)
    }

    pub(crate) fn now(&self) -> usize {
        self.count.get()
    }

    /// Waits up to `grace` for every running send to finish; `false` if some still run.
    pub(crate) async fn drained(&self, grace: Duration) -> bool {
        let idle = self.idle.wait_until(|| self.count.get() == 0);
        within(grace, idle).await.is_some()
    }
}

/// One running send (see [`InFlight::start`]).
pub(crate) struct Running<'a>(&'a InFlight);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.count.set(self.0.count.get() - 1);
        self.0.idle.notify();
    }
}

/// A send that got no answer about the delivery: the provider could not be reached, or we could
/// not send.
pub(crate) fn unavailable(reason: impl Into<String>) -> Verdict {
    Verdict::Unavailable {
        reason: reason.into(),
        retry_after_ms: None,
    }
}

/// What one round trip came to.
pub(crate) enum Trip {
    /// The provider answered.
    Answer(RawResponse),
    /// The provider never saw it: send it again at once (allowed once per send).
    Again,
    /// No answer, and the request may have reached the provider: the delivery's retry decides.
    Failed(Verdict),
}

/// Reads a round trip's result; `resend_left` allows one immediate resend of a request the
/// provider never processed (a connection that could not take it is retired).
pub(crate) fn trip(
    result: Result<RawResponse, StreamError>,
    conn: &Connection,
    resend_left: &mut bool,
) -> Trip {
    match result {
        Ok(answer) => Trip::Answer(answer),
        Err(error @ (StreamError::NotSent | StreamError::Refused)) if *resend_left => {
            *resend_left = false;
            if matches!(error, StreamError::NotSent) {
                conn.health.retire();
            }
            Trip::Again
        }
        Err(StreamError::Refused) => Trip::Failed(unavailable("stream refused")),
        Err(StreamError::NotSent | StreamError::ConnectionLost) => {
            Trip::Failed(unavailable("connection lost"))
        }
        Err(StreamError::Reset(reason)) => {
            Trip::Failed(unavailable(format!("stream reset ({reason:?})")))
        }
    }
}

/// A sender's counts since start, the same for every channel (each channel's stats add what
/// is its own: connections, tokens, pacing).
#[non_exhaustive]
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SendCounts {
    /// `send()` calls.
    pub requests: u64,
    pub sent: u64,
    pub retries: u64,
    pub permanent_failures: u64,
    pub config_faults: u64,
    /// Sends that ran out of the request timeout (counted in `retries` too).
    pub timeouts: u64,
    /// Answers received, by HTTP status (a request sent again after a refused token counts twice).
    pub by_status: BTreeMap<u16, u64>,
}

impl SendCounts {
    pub(crate) fn answered(&mut self, status: u16) {
        *self.by_status.entry(status).or_default() += 1;
    }

    /// Counts a send's verdict; logs a configuration fault now and then.
    pub(crate) fn count(&mut self, outcome: &Verdict, provider: &'static str, shard: usize) {
        match outcome {
            Verdict::Sent => self.sent += 1,
            Verdict::Retry { .. } | Verdict::Unavailable { .. } => self.retries += 1,
            Verdict::Permanent { .. } => self.permanent_failures += 1,
            // Decisions not to send: a sender never answers them.
            Verdict::Expired | Verdict::Suppressed { .. } | Verdict::GiveUp { .. } => {}
            Verdict::ConfigFault { reason } => {
                self.config_faults += 1;
                if self.config_faults.is_power_of_two() {
                    let count = self.config_faults;
                    tracing::error!(
                        shard,
                        provider,
                        reason,
                        count,
                        "the provider refused our credentials or setup"
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tally_counts_each_verdict_once() {
        let mut t = SendCounts::default();
        for v in [
            Verdict::Sent,
            unavailable("x"),
            Verdict::permanent("p"),
            Verdict::ConfigFault { reason: "c".into() },
            Verdict::Expired,
        ] {
            t.count(&v, "test", 0);
        }
        t.answered(200);
        t.answered(200);
        assert_eq!(
            (t.sent, t.retries, t.permanent_failures, t.config_faults),
            (1, 1, 1, 1)
        );
        assert_eq!(t.by_status, BTreeMap::from([(200, 2)]));
    }
}
