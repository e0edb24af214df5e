//! Counters by a small, fixed set of labels (an HTTP route and status; a refusal's code), kept
//! per shard: a short vector searched linearly, because the label values are `'static` strings
//! from the code (route templates, error codes), never from a request, so it holds at most
//! [`MAX_LABEL_SETS`] entries.

use std::cell::RefCell;

/// Most label sets one counter family keeps: routes (about 20) times the statuses the API
/// answers (about 15) is far below it; past it (a bug) new sets are folded into the last one
/// rather than grow.
pub const MAX_LABEL_SETS: usize = 512;

/// Counts by `(label, status)`; `status` is 0 where a family has no status label.
#[derive(Default)]
pub struct LabelCounts {
    entries: RefCell<Vec<(&'static str, u16, u64)>>,
}

impl LabelCounts {
    pub fn bump(&self, label: &'static str, status: u16) {
        self.add(label, status, 1);
    }

    pub fn add(&self, label: &'static str, status: u16, n: u64) {
        let mut e = self.entries.borrow_mut();
        // Labels are string constants: the pointer usually tells, the text when it does not.
        let same = |l: &'static str| std::ptr::eq(l, label) || l == label;
        if let Some(entry) = e.iter_mut().find(|(l, s, _)| *s == status && same(l)) {
            entry.2 += n;
        } else if e.len() < MAX_LABEL_SETS {
            e.push((label, status, n));
        } else if let Some(last) = e.last_mut() {
            last.2 += n;
        }
    }

    pub fn snapshot(&self) -> Vec<(&'static str, u16, u64)> {
        self.entries.borrow().clone()
    }
}

/// Sums shards' snapshots, in a stable order (label, then status).
pub fn sum(parts: &[Vec<(&'static str, u16, u64)>]) -> Vec<(&'static str, u16, u64)> {
    let mut out: Vec<(&'static str, u16, u64)> = Vec::new();
    for part in parts {
        for &(l, s, n) in part {
            match out.iter_mut().find(|(ol, os, _)| *ol == l && *os == s) {
                Some(e) => e.2 += n,
                None => out.push((l, s, n)),
            }
        }
    }
    out.sort_unstable_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_label_and_sums_across_shards() {
        let a = LabelCounts::default();
        a.bump("/v1/notifications", 202);
        a.bump("/v1/notifications", 202);
        a.bump("/v1/notifications", 400);
        let b = LabelCounts::default();
        b.bump("/v1/notifications", 202);
        b.add("/healthz", 200, 5);
        assert_eq!(
            sum(&[a.snapshot(), b.snapshot()]),
            [
                ("/healthz", 200, 5),
                ("/v1/notifications", 202, 3),
                ("/v1/notifications", 400, 1)
            ]
        );
    }
}
