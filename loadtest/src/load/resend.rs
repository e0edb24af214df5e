//! Sends again, as a well-behaved client would after `503` and `Retry-After`, the items a
//! driven load had refused. The backlog run uses it: it needs its whole count in the log, and
//! it offers more than the server's sustained rate on purpose, so admission control refuses
//! some of the open-loop batches. The same idempotency keys go again (a `202` the client never
//! saw would come back as the original's answer, not as a second notification).

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::Method;

use super::LoadConfig;
use super::client::ApiClient;
use super::driver::{Measurements, Shot, request_body};

/// Rounds of resending before giving up; each round waits [`RETRY_AFTER`] first.
const ROUNDS: usize = 20;
/// What the server's `Retry-After: 1` asks for.
const RETRY_AFTER: Duration = Duration::from_secs(1);
/// Requests a round has outstanding at once: a gentle pace, well under what was refused.
const IN_FLIGHT: usize = 4;

/// Resends every item of `m`'s schedule not yet accepted, in runs of up to `cfg.batch`
/// consecutive seqs, until all are accepted or [`ROUNDS`] pass; returns how many were
/// accepted on a resend (they join `m.accepted` and count in `m.accepted_on_resend`).
pub(crate) async fn resend_refused(
    client: &Arc<ApiClient>,
    cfg: &LoadConfig,
    m: &mut Measurements,
) -> u64 {
    let path = if cfg.batch <= 1 {
        "/v1/notifications"
    } else {
        "/v1/notifications/batch"
    };
    let before = m.accepted.len();
    for _ in 0..ROUNDS {
        let runs = missing_runs(
            &mut m.accepted,
            cfg.seq_start,
            m.scheduled_items,
            cfg.batch.max(1) as u64,
        );
        if runs.is_empty() {
            break;
        }
        tokio::time::sleep(RETRY_AFTER).await;
        for chunk in runs.chunks(IN_FLIGHT) {
            let mut sends = tokio::task::JoinSet::new();
            for &(first, items) in chunk {
                let (client, body) = (client.clone(), request_body(cfg, first, items, None));
                sends.spawn(async move {
                    let answer = tokio::time::timeout(
                        super::driver::REQUEST_TIMEOUT,
                        client.send(Method::POST, path, body),
                    )
                    .await;
                    (first, items, answer)
                });
            }
            while let Some(Ok((first_seq, items, answer))) = sends.join_next().await {
                let shot = Shot {
                    first_seq,
                    items,
                    intended: Instant::now(),
                    measured: false,
                };
                m.record(&shot, answer, Instant::now());
            }
        }
    }
    m.accepted.sort_unstable();
    let resent = (m.accepted.len() - before) as u64;
    m.accepted_on_resend += resent;
    resent
}

/// The seqs in `start..start + count` missing from `accepted` (which it sorts), as runs of
/// `(first, len)` of at most `batch` consecutive seqs.
fn missing_runs(accepted: &mut [u64], start: u64, count: u64, batch: u64) -> Vec<(u64, u64)> {
    accepted.sort_unstable();
    let mut runs: Vec<(u64, u64)> = Vec::new();
    let mut have = accepted.iter().peekable();
    for seq in start..start + count {
        while have.next_if(|&&a| a < seq).is_some() {}
        if have.next_if(|&&a| a == seq).is_some() {
            continue;
        }
        match runs.last_mut() {
            Some((first, len)) if *first + *len == seq && *len < batch => *len += 1,
            _ => runs.push((seq, 1)),
        }
    }
    runs
}

#[cfg(test)]
mod tests {
    use super::missing_runs;

    #[test]
    fn missing_seqs_form_runs_of_at_most_a_batch() {
        let mut accepted = vec![5, 0, 1, 2, 9];
        assert_eq!(
            missing_runs(&mut accepted, 0, 12, 3),
            vec![(3, 2), (6, 3), (10, 2)]
        );
        assert_eq!(accepted, vec![0, 1, 2, 5, 9], "sorted");
        let mut all: Vec<u64> = (100..110).collect();
        assert!(missing_runs(&mut all, 100, 10, 4).is_empty());
        assert_eq!(missing_runs(&mut [], 7, 2, 100), vec![(7, 2)]);
    }
}
