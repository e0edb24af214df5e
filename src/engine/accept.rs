//! Accepting work on the owning shard: user profiles, devices, notifications (dedup, frequency
//! cap, one delivery per active device, queue reservation) and status look-ups.

use std::rc::Rc;

use clarion_shards::{
    Channel, DedupClaim, DeliveryRecord, DeviceRecord, LostClaim, NotificationRecord, UserRecord,
    Verdict,
};
use uuid::Uuid;

use super::answer::NotifyReplyTo;
use super::command::{NewDevice, NewNotification, Reply, Upsert, UserProfile};
use super::committer::{Deliveries, Waiter};
use super::error::ShardError;
use super::probe::bump;
use super::{DeliveryRef, Engine, ShardState, now_ms};
use crate::channels::rules;

/// Notifications a shard holds accepted but not yet durable. Past it, new ones are refused at
/// once with `503 overloaded` and `Retry-After`: the log is not keeping up (a slow or stalled
/// disk, or more intake than the shard can write), and a fast refusal beats a growing queue.
/// About a second of a shard's peak intake, and at most a few tens of MB of records and batch.
pub const MAX_UNDURABLE_ACCEPTS: usize = 32_768;

// Every key whose notification is not yet durable stays in the dedup cache (see
// `DEDUP_CACHE_KEYS`), so a duplicate of it is answered from memory.
const _: () = assert!(2 * MAX_UNDURABLE_ACCEPTS <= clarion_shards::DEDUP_CACHE_KEYS);

impl Engine {
    pub(super) fn put_user(self: &Rc<Self>, user_id: String, p: UserProfile, reply: Reply<Upsert>) {
        let now = now_ms();
        let mut st = self.state.borrow_mut();
        let result = if st.users.contains_key(&user_id) {
            Upsert::Updated
        } else {
            Upsert::Created
        };
        let user = st.users.get_or_insert_with(user_id.clone(), || UserRecord {
            user_id,
            email: None,
            phone: None,
            locale: None,
            timezone: None,
            devices: Vec::new(),
            updated_at_ms: now,
        });
        user.email = p.email;
        user.phone = p.phone;
        user.locale = p.locale;
        user.timezone = p.timezone;
        user.updated_at_ms = now;
        self.log_user(user, reply, result);
    }

    pub(super) fn add_device(self: &Rc<Self>, user_id: String, d: NewDevice, reply: Reply<Upsert>) {
        let now = now_ms();
        let mut st = self.state.borrow_mut();
        let Some((user, reply)) = registered(&mut st, &user_id, reply) else {
            return;
        };
        let existing = user
            .devices
            .iter_mut()
            .find(|x| x.platform == d.platform && x.device_id == d.device_id);
        let result = match existing {
            Some(dev) => {
                // Registered again (the app launched or was reinstalled) or reactivated: the
                // registration time moves forward, so that a provider's word that the token
                // died before now does not deactivate it (see `DeviceRecord::registered_at_ms`).
                // A browser may send its subscription again with new keys: they replace the old.
                dev.token = d.token;
                dev.active = true;
                dev.deactivated_reason = None;
                dev.deactivated_at_ms = None;
                dev.registered_at_ms = dev.registered_at_ms.max(now);
                Upsert::Updated
            }
            None => {
                if let Err(e) = make_room(user, self.cfg.max_devices_per_user) {
                    drop(st);
                    let _ = reply.send(Err(e));
                    return;
                }
                user.devices.push(DeviceRecord {
                    platform: d.platform,
                    token: d.token,
                    active: true,
                    created_at_ms: now,
                    registered_at_ms: now,
                    deactivated_reason: None,
                    deactivated_at_ms: None,
                    device_id: d.device_id,
                });
                Upsert::Created
            }
        };
        user.updated_at_ms = now;
        self.log_user(user, reply, result);
    }

    /// Removes a device (by its id, in any of the forms `device_ids` lists, tried in order) from
    /// a user; answered once the user's new record is durable. Deliveries to it already
    /// accepted still run; later notifications do not reach it.
    pub(super) fn remove_device(
        self: &Rc<Self>,
        user_id: String,
        device_ids: &[String],
        reply: Reply<()>,
    ) {
        let now = now_ms();
        let mut st = self.state.borrow_mut();
        let Some((user, reply)) = registered(&mut st, &user_id, reply) else {
            return;
        };
        let found = device_ids
            .iter()
            .find_map(|id| user.devices.iter().position(|d| &d.device_id == id));
        let Some(at) = found else {
            drop(st);
            let _ = reply.send(Err(ShardError::DeviceNotFound {
                user_id: user_id.clone(),
                device_id: device_ids.first().cloned().unwrap_or_default(),
            }));
            return;
        };
        user.devices.remove(at);
        user.updated_at_ms = now;
        let user = &*user;
        self.committer.add(
            |b| {
                b.put_user(user);
            },
            Some(Waiter::Durable { reply }),
        );
    }

    /// A copy of the user's record (profile and devices) as the shard holds it: every change
    /// answered so far, and any whose commit is still under way.
    pub(super) fn get_user(&self, user_id: &str, reply: Reply<UserRecord>) {
        let found = self.state.borrow().users.get(user_id).cloned();
        let _ = reply.send(found.ok_or_else(|| user_not_found(user_id)));
    }

    /// Logs a user's new state (encoded from the shard's copy); the client is answered once it
    /// is durable.
    fn log_user(&self, user: &UserRecord, reply: Reply<Upsert>, result: Upsert) {
        self.committer.add(
            |b| {
                b.put_user(user);
            },
            Some(Waiter::Upsert { reply, result }),
        );
    }

    pub(super) fn notify(self: &Rc<Self>, n: NewNotification, reply: NotifyReplyTo) {
        let now = now_ms();
        let key = self.dedup_hasher.key(&n.user_id, &n.idempotency_key);
        let mut st = self.state.borrow_mut();
        if st.dedup.get(key, now).is_some() {
            drop(st);
            bump(&self.probe.duplicates);
            // Answer only once the original is durable: a barrier through the same commit path.
            self.committer.add(
                |_| {},
                Some(Waiter::Duplicate {
                    dedup_key: key,
                    reply,
                }),
            );
            return;
        }
        if self.undurable.get() >= MAX_UNDURABLE_ACCEPTS {
            drop(st);
            bump(&self.probe.rejected_overload);
            reply.send(Err(ShardError::LogBehind));
            return;
        }
        let shard = &mut *st;
        let Some(user) = shard.users.get(&n.user_id) else {
            reply.send(Err(user_not_found(&n.user_id)));
            return;
        };
        let active = || user.devices.iter().filter(|d| d.active);
        let count = active().count();
        // Registration keeps users within [contacts] max_devices_per_user, which is at most
        // this; only a log written before that limit existed could hold more.
        if count > clarion_shards::MAX_DELIVERIES_PER_NOTIFICATION {
            reply.send(Err(ShardError::TooManyDeliveries {
                user_id: n.user_id.clone(),
                active: count,
            }));
            return;
        }
        if let Some(device) =
            active().find(|d| self.senders[d.platform.channel().index()].is_none())
        {
            reply.send(Err(ShardError::ChannelMissing {
                channel: device.platform.channel().as_str(),
            }));
            return;
        }
        // Rendered now for each channel the user is reached on, so a notification that
        // cannot be delivered there is refused at accept (and only where it would go).
        let mut checked = [false; Channel::COUNT];
        for ch in active().map(|d| d.platform.channel()) {
            if std::mem::replace(&mut checked[ch.index()], true) {
                continue;
            }
            if let Err(e) = rules::of(ch).check_content(&n.content) {
                reply.send(Err(ShardError::ContentRefused {
                    field: e.field,
                    code: e.code,
                    message: e.message,
                }));
                return;
            }
        }
        let capped = !shard.buckets.try_take(&n.user_id, now);
        let id = shard.ids.next(now);
        let mut deliveries = Vec::with_capacity(count);
        for device in active() {
            let did = shard.ids.next(now);
            let ch = device.platform.channel();
            let mut d = DeliveryRecord::new_queued(did, ch, device.token.clone(), now);
            if capped {
                let reason = "frequency_cap: over [caps] per_user_per_hour".to_string();
                let _ = d.apply(
                    Verdict::Suppressed { reason },
                    now,
                    &self.cfg.retry,
                    &mut shard.jitter,
                );
                bump(&self.probe.suppressed);
                bump(&self.lanes[ch.index()].counts.suppressed);
            }
            deliveries.push(d);
        }
        // Boxed: the open map then moves and probes a pointer, not the whole record.
        let record = Box::new(NotificationRecord {
            id,
            user_id: n.user_id,
            idempotency_key: n.idempotency_key,
            accepted_at_ms: now,
            content: n.content,
            deliveries,
        });
        // A key the cache cannot prove new is checked on disk by the storage thread, which
        // writes the notification only if the key is not taken (`log/claims.rs`).
        let claim = DedupClaim {
            hash: key,
            id,
            at_ms: now,
            check: !st.dedup.proves_absent(now),
        };
        st.dedup.insert(key, id, now);
        let mut refs = Deliveries::new();
        for (i, d) in record.deliveries.iter().enumerate() {
            if d.state.is_terminal() {
                continue;
            }
            // Fits: at most MAX_DELIVERIES_PER_NOTIFICATION deliveries (checked above).
            let Ok(index) = u16::try_from(i) else { break };
            refs.push(DeliveryRef {
                notification: id,
                index,
                channel: d.channel,
                due_ms: self.lanes[d.channel.index()].place(now),
            });
        }
        let finished = record.is_finished();
        drop(st);
        bump(&self.probe.accepted);
        self.undurable.set(self.undurable.get() + 1);
        let waiter = Waiter::Accepted {
            id,
            reply,
            deliveries: refs.clone(),
        };
        self.committer.add(
            |b| {
                b.claimed(claim, |b| {
                    b.put_notification(&record);
                    for d in &refs {
                        b.put_pending(&d.pending_key());
                    }
                });
            },
            Some(waiter),
        );
        if !finished {
            self.state.borrow_mut().open.insert(
                id,
                super::OpenNotification {
                    record,
                    resident: 0,
                },
            );
        }
    }

    /// A notification is durable: its deliveries join their channels' backlogs, and go
    /// straight into the lanes' windows where there is room.
    pub(super) fn enqueue_accepted(&self, id: Uuid, deliveries: Deliveries) {
        self.undurable.set(self.undurable.get().saturating_sub(1));
        for d in deliveries {
            let lane = &self.lanes[d.channel.index()];
            lane.backlog.set(lane.backlog.get() + 1);
            bump(&self.probe.deliveries_queued);
            bump(&lane.counts.accepted);
            if self.is_resident(&d) {
                // A backlog scan found it first.
                continue;
            }
            if lane.offer(d) {
                self.make_resident(&d);
            }
        }
        self.evict_if_idle(id);
    }

    /// Undoes the in-memory side of a notification whose write failed: its queue reservations,
    /// its open entry and its dedup key (so a client retry is not answered with a lost id).
    pub(super) fn forget_unaccepted(&self, id: Uuid) {
        self.undurable.set(self.undurable.get().saturating_sub(1));
        let mut st = self.state.borrow_mut();
        if let Some(open) = st.open.remove(&id) {
            let rec = &open.record;
            let key = self.dedup_hasher.key(&rec.user_id, &rec.idempotency_key);
            st.dedup.remove(key);
        }
    }

    /// Undoes a notification whose dedup claim the log found taken (a retry of one accepted
    /// within the window that the cache no longer held): nothing of it was written. Its key
    /// goes back to the notification that holds it, its frequency-cap token back to the user,
    /// and it counts as a duplicate instead of an accept.
    pub(super) fn forget_duplicate(&self, lost: &LostClaim) {
        self.undurable.set(self.undurable.get().saturating_sub(1));
        let now = now_ms();
        let mut st = self.state.borrow_mut();
        let st = &mut *st;
        if let Some(open) = st.open.remove(&lost.claimed) {
            // Only an unfinished notification is held open, and only one that was not capped
            // (a capped one is finished at once): it took a token.
            st.buckets.give_back(&open.record.user_id, now);
        }
        if st.dedup.get(lost.hash, now) == Some(lost.claimed) {
            st.dedup
                .insert(lost.hash, lost.existing, lost.existing_at_ms);
        }
        let probe = &self.probe;
        probe.accepted.set(probe.accepted.get().saturating_sub(1));
        bump(&probe.duplicates);
    }

    pub(super) fn get_notification(
        self: &Rc<Self>,
        id: Uuid,
        reply: Reply<Option<NotificationRecord>>,
    ) {
        if let Some(open) = self.state.borrow().open.get(&id) {
            let _ = reply.send(Ok(Some(NotificationRecord::clone(&open.record))));
            return;
        }
        // Read after the committer's pending writes, so the answer includes them.
        let engine = self.clone();
        self.committer.after_writes(Box::new(move || {
            let shard = engine.cfg.shard;
            let read = engine.log.get_notification(id);
            glommio::spawn_local(async move {
                let answer = match read {
                    Ok(read) => read.await,
                    Err(e) => Err(e),
                };
                let answer = answer.map_err(|e| storage_error(shard, &e));
                let _ = reply.send(answer);
            })
            .detach();
        }));
    }
}

/// What an API client is told of a failed read: that storage failed, and whether to retry.
/// The storage error itself, with paths and keys, goes to the server's log only.
fn storage_error(shard: u16, e: &clarion_shards::Error) -> ShardError {
    tracing::error!(shard, error = %e, "status read failed");
    match e {
        clarion_shards::Error::Corrupt { .. } => ShardError::CorruptRecord,
        _ => ShardError::Unavailable {
            why: "storage is unavailable on this shard; retry later",
        },
    }
}

/// The user's record and the reply, to change it; `None` once answered `404 user_not_found`.
fn registered<'a, T>(
    st: &'a mut ShardState,
    user_id: &str,
    reply: Reply<T>,
) -> Option<(&'a mut UserRecord, Reply<T>)> {
    match st.users.get_mut(user_id) {
        Some(user) => Some((user, reply)),
        None => {
            let _ = reply.send(Err(user_not_found(user_id)));
            None
        }
    }
}

fn user_not_found(user_id: &str) -> ShardError {
    ShardError::UserNotFound {
        user_id: user_id.to_string(),
    }
}

/// Makes room for one more device under the per-user limit by dropping the user's oldest
/// deactivated devices (devices are kept in registration order); a user whose devices are all
/// active and at the limit gets `422 too_many_devices`.
fn make_room(user: &mut UserRecord, max: usize) -> Result<(), ShardError> {
    let mut excess = (user.devices.len() + 1).saturating_sub(max);
    if excess > 0 {
        user.devices.retain(|d| {
            let drop = excess > 0 && !d.active;
            excess -= usize::from(drop);
            !drop
        });
    }
    if excess == 0 {
        return Ok(());
    }
    Err(ShardError::DeviceLimit {
        user_id: user.user_id.clone(),
        devices: user.devices.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clarion_shards::Platform;

    fn user(active: &[bool]) -> UserRecord {
        UserRecord {
            user_id: "u".into(),
            email: None,
            phone: None,
            locale: None,
            timezone: None,
            devices: active
                .iter()
                .enumerate()
                .map(|(i, &active)| DeviceRecord {
                    platform: Platform::Ios,
                    token: format!("t{i}"),
                    active,
                    created_at_ms: i as u64,
                    registered_at_ms: i as u64,
                    deactivated_reason: (!active).then(|| "Unregistered".into()),
                    deactivated_at_ms: (!active).then_some(i as u64),
                    device_id: format!("t{i}"),
                })
                .collect(),
            updated_at_ms: 0,
        }
    }

    fn tokens(u: &UserRecord) -> Vec<&str> {
        u.devices.iter().map(|d| d.token.as_str()).collect()
    }

    #[test]
    fn room_is_made_from_the_oldest_deactivated_devices_only() {
        let mut u = user(&[true, false, true, false, false]);
        assert_eq!(make_room(&mut u, 10), Ok(()));
        assert_eq!(u.devices.len(), 5, "under the limit nothing is dropped");
        assert_eq!(make_room(&mut u, 4), Ok(()));
        assert_eq!(
            tokens(&u),
            ["t0", "t2", "t4"],
            "the two oldest deactivated go"
        );
        assert_eq!(make_room(&mut u, 3), Ok(()));
        assert_eq!(tokens(&u), ["t0", "t2"]);
        let e = make_room(&mut u, 2).unwrap_err();
        assert!(
            matches!(e, ShardError::DeviceLimit { devices: 2, .. }),
            "{e:?}"
        );
        let api = crate::api::error::ApiError::shard(e);
        assert_eq!((api.status, api.code), (422, "too_many_devices"));
        assert_eq!(api.field.as_deref(), Some("token"));
        assert_eq!(tokens(&u), ["t0", "t2"], "active devices are never dropped");
    }
}
