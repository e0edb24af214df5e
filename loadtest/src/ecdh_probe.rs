//! The ECDH probe: what the two P-256 operations every browser message needs cost on this
//! machine, measured in the same run as a load that sends to browsers. RFC 8291 gives each Web
//! Push message its own key agreement, twice over: the sender makes a fresh key and agrees with
//! the subscription's key (`clarion::channels::webpush::encrypt`), and the push service agrees
//! with the message's key to decrypt it (the simulator does, as a real one does). Both run on
//! this machine's cores beside everything else in `bench`, so a platform mix with browsers pays
//! them on top of what an iOS-only run pays: this is the part of the mix's cost no change in
//! Clarion's code removes, and the probe states it per notification of the mix.
//!
//! The same library the sender and the simulator use (`aws-lc-rs`), on this thread, timed by
//! the thread's own CPU clock, so a preemption does not count. `bench` runs it before the load
//! when the mix has browsers (never beside the load), `clarion-loadtest ecdh-probe` on its own.

use aws_lc_rs::agreement::{ECDH_P256, PrivateKey, UnparsedPublicKey, agree};
use aws_lc_rs::error::Unspecified;
use serde::{Deserialize, Serialize};

use crate::cpu::this_thread;

/// Operations per round: about 0.1 s per round at the 50–80 µs each measured on the 2-vCPU VM.
pub const OPS_PER_ROUND: u32 = 1_500;
/// Rounds of each measurement; the median round is reported (a round the VM slowed is not).
pub const ROUNDS: usize = 5;

/// What the probe measured, in µs of CPU per operation (the median round).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct EcdhProbe {
    /// The sender's work per message: a fresh key, its public point, the agreement.
    pub sender_us: f64,
    /// The push service's work per message: the agreement with a stored key.
    pub service_us: f64,
    /// The share of the load's devices that are browsers (0 to 1).
    pub web_share: f64,
}

impl EcdhProbe {
    /// Both operations, per browser message.
    pub fn per_browser_message_us(&self) -> f64 {
        self.sender_us + self.service_us
    }

    /// Both operations, spread over every notification of the mix.
    pub fn per_notification_us(&self) -> f64 {
        self.per_browser_message_us() * self.web_share
    }

    /// The report's line.
    pub fn line(&self) -> String {
        format!(
            "P-256 per browser message: the sender's key and agreement {:.1} µs, the push service's agreement {:.1} µs; {:.1} µs of CPU per notification of this mix (web {:.0}%)",
            self.sender_us,
            self.service_us,
            self.per_notification_us(),
            self.web_share * 100.0
        )
    }
}

/// The median over [`ROUNDS`] of `op`'s CPU time per call, in µs.
fn median_us(mut op: impl FnMut() -> Result<(), Unspecified>) -> anyhow::Result<f64> {
    let mut rounds = Vec::with_capacity(ROUNDS);
    for _ in 0..ROUNDS {
        let start = this_thread()?;
        for _ in 0..OPS_PER_ROUND {
            op().map_err(|_| anyhow::anyhow!("ecdh probe: a P-256 operation failed"))?;
        }
        let spent = this_thread()?.saturating_sub(start);
        rounds.push(spent.as_secs_f64() * 1e6 / f64::from(OPS_PER_ROUND));
    }
    rounds.sort_by(f64::total_cmp);
    Ok(rounds[ROUNDS / 2])
}

/// Measures both operations (about a second) for a mix whose devices are `web_share` browsers.
pub fn measure(web_share: f64) -> anyhow::Result<EcdhProbe> {
    let fail = |_| anyhow::anyhow!("ecdh probe: P-256 key generation failed");
    let subscription = PrivateKey::generate(&ECDH_P256).map_err(fail)?;
    let subscription_public = subscription.compute_public_key().map_err(fail)?;
    let message_key = PrivateKey::generate(&ECDH_P256).map_err(fail)?;
    let message_public = message_key.compute_public_key().map_err(fail)?;
    let sender_us = median_us(|| {
        let key = PrivateKey::generate(&ECDH_P256)?;
        let public = key.compute_public_key()?;
        std::hint::black_box(public.as_ref());
        let peer = UnparsedPublicKey::new(&ECDH_P256, subscription_public.as_ref());
        agree(&key, peer, Unspecified, |secret| {
            std::hint::black_box(secret);
            Ok(())
        })
    })?;
    let service_us = median_us(|| {
        let peer = UnparsedPublicKey::new(&ECDH_P256, message_public.as_ref());
        agree(&subscription, peer, Unspecified, |secret| {
            std::hint::black_box(secret);
            Ok(())
        })
    })?;
    Ok(EcdhProbe {
        sender_us,
        service_us,
        web_share: web_share.clamp(0.0, 1.0),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_probe_measures_both_operations_and_spreads_them_over_the_mix() {
        let p = measure(0.1).unwrap();
        assert!(p.sender_us > 0.0 && p.service_us > 0.0, "{p:?}");
        // The sender does a key generation on top of the same agreement.
        assert!(p.sender_us > p.service_us * 0.8, "{p:?}");
        let per = p.per_notification_us();
        assert!((per - 0.1 * (p.sender_us + p.service_us)).abs() < 1e-9);
        let line = p.line();
        assert!(line.contains("web 10%"), "{line}");
        let json = serde_json::to_value(&p).unwrap();
        assert_eq!(json["web_share"], 0.1);
    }
}
