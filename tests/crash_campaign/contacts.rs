//! The workers' user and device operations: registering a user, adding a device, removing
//! one, each moving the worker's model of that device by the answer (acknowledged, removed, or
//! in doubt when the exchange broke), and any answer that contradicts the model is a violation
//! (say, a device acknowledged as registered that the server no longer knows).

use std::collections::BTreeSet;

use super::model::{Dev, User, dead_tokens_of_user};
use super::workload::{Worker, device_body, user_body};

/// A user gets no more than this many active devices (the server allows 100).
const MAX_ACTIVE_DEVICES: usize = 4;

impl Worker {
    pub(crate) fn add_user(&mut self) -> bool {
        self.ops.users_added += 1;
        let id = format!("w{}u{}", self.w, self.users.len());
        let answer = self.call("PUT", &format!("/v1/users/{id}"), Some(user_body()));
        let known = matches!(answer.0, 200 | 201);
        if !known && answer.0 != 0 {
            self.violation(format!("PUT user {id}: {}", answer.0));
        }
        self.users.push(User {
            id,
            known,
            devices: Vec::new(),
        });
        answer.0 != 0
    }

    pub(crate) fn add_device(&mut self) -> bool {
        let u = self.rng.usize(..self.users.len());
        let active = self.users[u]
            .devices
            .iter()
            .filter(|(_, d)| *d != Dev::Removed)
            .count();
        if active >= MAX_ACTIVE_DEVICES {
            return self.remove_device_of(u);
        }
        self.ops.devices_added += 1;
        let t = self.new_token();
        let path = format!("/v1/users/{}/devices", self.users[u].id);
        let (s, b) = self.call("POST", &path, Some(device_body(&t)));
        let state = match s {
            200 | 201 => {
                self.users[u].known = true;
                Dev::Active
            }
            404 if !self.users[u].known => Dev::Removed, // the user's registration was lost
            0 | 503 => Dev::Maybe,
            _ => {
                self.violation(format!("POST device for {}: {s} {b}", self.users[u].id));
                Dev::Maybe
            }
        };
        self.users[u].devices.push((t, state));
        s != 0
    }

    pub(crate) fn remove_device(&mut self) -> bool {
        let u = self.rng.usize(..self.users.len());
        self.remove_device_of(u)
    }

    /// Removes one of user `u`'s devices that is not a dead token (active or in doubt).
    fn remove_device_of(&mut self, u: usize) -> bool {
        let dead: BTreeSet<String> = dead_tokens_of_user(self.w, &self.users[u].id);
        let candidates: Vec<usize> = (0..self.users[u].devices.len())
            .filter(|&i| {
                let (t, d) = &self.users[u].devices[i];
                *d != Dev::Removed && !dead.contains(t)
            })
            .collect();
        if candidates.is_empty() {
            return true;
        }
        self.ops.devices_removed += 1;
        let i = candidates[self.rng.usize(..candidates.len())];
        let (t, before) = self.users[u].devices[i].clone();
        let path = format!("/v1/users/{}/devices/{t}", self.users[u].id);
        let (s, b) = self.call("DELETE", &path, None);
        let after = match s {
            204 => Dev::Removed,
            404 if before == Dev::Maybe => Dev::Removed, // its registration was lost
            0 | 503 => Dev::Maybe,
            _ => {
                self.violation(format!(
                    "DELETE device {t} of {} ({before:?}): {s} {b}",
                    self.users[u].id
                ));
                Dev::Maybe
            }
        };
        self.users[u].devices[i].1 = after;
        s != 0
    }
}
