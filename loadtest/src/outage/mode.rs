//! How the provider is down during an outage run, as a simulator fault plan: every request
//! answered `503 ServiceUnavailable` (APNs up but failing), every connection closed at its next
//! request (a provider that accepts TCP and TLS and then drops everything), or no connection at
//! all (the listening socket closed, so connects are refused: an unreachable endpoint).

use serde::Serialize;

use clarion_sim::apns::Faults;

/// The kind of outage the simulator plays.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OutageMode {
    /// `unavailable_rate` 1.0: every request answered 503.
    #[default]
    Unavailable,
    /// `drop_rate` 1.0: every request's connection closed abruptly, unanswered.
    Drop,
    /// `refuse_connections`: the listener closed, open connections closed at their next request.
    Refuse,
}

impl OutageMode {
    /// The simulator's faults while the provider is down.
    #[must_use]
    pub fn faults(self) -> Faults {
        match self {
            OutageMode::Unavailable => Faults {
                unavailable_rate: 1.0,
                ..Faults::default()
            },
            OutageMode::Drop => Faults {
                drop_rate: 1.0,
                ..Faults::default()
            },
            OutageMode::Refuse => Faults {
                refuse_connections: true,
                ..Faults::default()
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_mode_is_a_valid_total_outage() {
        for mode in [
            OutageMode::Unavailable,
            OutageMode::Drop,
            OutageMode::Refuse,
        ] {
            let f = mode.faults();
            assert!(f.validate().is_ok(), "{mode:?}");
            assert!(
                f.unavailable_rate == 1.0 || f.drop_rate == 1.0 || f.refuse_connections,
                "{mode:?} fails everything"
            );
            assert_ne!(f, Faults::default());
        }
    }
}
