//! The shard engine's one error type: every fallible call in this crate returns [`Error`], and each
//! variant says (through [`Error::is_retryable`]) whether trying again later can help.

use std::fmt;

use crate::record::DeliveryState;

/// Everything that can go wrong inside a shard.
///
/// Hot-path callers branch on [`Error::is_retryable`]: `true` means "back off and try again"
/// (answer 429/503 with Retry-After), `false` means "this will not get better by itself".
#[non_exhaustive]
#[derive(Debug)]
pub enum Error {
    /// A filesystem or thread-spawn error outside fjall (creating the data directory, ...).
    Io(std::io::Error),
    /// fjall reported an error; the text is fjall's own description.
    Storage(String),
    /// An earlier commit or fsync failed, so the log stopped accepting writes: what is on disk can
    /// no longer be trusted to match what was acknowledged. Restart the shard to recover.
    Poisoned,
    /// A bounded queue is full; the request was not accepted. Retry after a short delay.
    Busy,
    /// The component was shut down (or its thread exited) before the request completed.
    Closed,
    /// Stored bytes could not be decoded; `what` names the record (keyspace and key) and why.
    Corrupt {
        /// Which record, and what was wrong with it.
        what: String,
    },
    /// The on-disk log was written by an incompatible version of this crate.
    UnsupportedFormat {
        /// The format byte found on disk.
        found: u8,
        /// The format byte this build reads and writes.
        supported: u8,
    },
    /// A delivery outcome was applied to a delivery in a state that does not accept it (for
    /// example any outcome after a terminal state).
    InvalidTransition {
        /// The state the delivery was in.
        from: DeliveryState,
        /// The outcome that was rejected (see `Verdict::name`).
        outcome: &'static str,
    },
}

impl Error {
    /// Whether the same request may succeed if retried later, unchanged.
    ///
    /// Only [`Error::Busy`] is: the queue drains on its own. Everything else is either permanent
    /// for this process (`Poisoned`, `Closed`), a data problem (`Corrupt`, `UnsupportedFormat`),
    /// or a caller bug (`InvalidTransition`).
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::Busy)
    }

    /// Convenience constructor for [`Error::Corrupt`].
    pub fn corrupt(what: impl Into<String>) -> Self {
        Error::Corrupt { what: what.into() }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io(e) => write!(f, "i/o error: {e}"),
            Error::Storage(e) => write!(f, "storage error: {e}"),
            Error::Poisoned => {
                f.write_str("log is poisoned after a failed write; restart the shard")
            }
            Error::Busy => f.write_str("queue is full; retry later"),
            Error::Closed => f.write_str("shut down"),
            Error::Corrupt { what } => write!(f, "corrupt data: {what}"),
            Error::UnsupportedFormat { found, supported } => write!(
                f,
                "unsupported on-disk format {found} (this build supports {supported})"
            ),
            Error::InvalidTransition { from, outcome } => write!(
                f,
                "invalid delivery transition: outcome {outcome} in state {}",
                from.as_str()
            ),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Io(e)
    }
}

impl From<fjall::Error> for Error {
    fn from(e: fjall::Error) -> Self {
        match e {
            fjall::Error::Poisoned => Error::Poisoned,
            fjall::Error::Io(io) => Error::Io(io),
            other => Error::Storage(other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_busy_is_retryable() {
        assert!(Error::Busy.is_retryable());
        assert!(!Error::Poisoned.is_retryable());
        assert!(!Error::Closed.is_retryable());
        assert!(!Error::corrupt("x").is_retryable());
        assert!(!Error::Storage("disk".into()).is_retryable());
        assert!(!Error::Io(std::io::Error::other("x")).is_retryable());
        let t = Error::InvalidTransition {
            from: DeliveryState::Sent,
            outcome: "sent",
        };
        assert!(!t.is_retryable());
    }

    #[test]
    fn display_names_the_problem() {
        assert_eq!(
            Error::corrupt("notifications/abc: bad json").to_string(),
            "corrupt data: notifications/abc: bad json"
        );
        let t = Error::InvalidTransition {
            from: DeliveryState::Dead,
            outcome: "retryable",
        };
        assert_eq!(
            t.to_string(),
            "invalid delivery transition: outcome retryable in state dead"
        );
        let f = Error::UnsupportedFormat {
            found: 9,
            supported: 1,
        };
        assert!(f.to_string().contains("format 9"));
    }

    #[test]
    fn fjall_poison_maps_to_poisoned() {
        assert!(matches!(
            Error::from(fjall::Error::Poisoned),
            Error::Poisoned
        ));
        assert!(matches!(
            Error::from(fjall::Error::Io(std::io::Error::other("x"))),
            Error::Io(_)
        ));
    }
}
