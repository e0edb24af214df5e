//! Record format versions 2, 3 and 4: the compact binary encoding of [`NotificationRecord`],
//! [`UserRecord`] and delivery updates (everything after the version byte), and its strict
//! decoder. A delivery update is a delivery's progress alone: state, attempts, next attempt and
//! history, exactly as they appear inside a notification after the delivery's target.
//!
//! Version 3 differs from 2 in users alone: each device has `registered_at_ms` after
//! `created_at_ms`. Version 4 differs from 3 in users alone: each device has, after its token,
//! its `device_id` as an option (`None`: the same as the token, as for iOS and Android), and
//! after its `deactivated_reason` its `deactivated_at_ms` as an option. Notifications and
//! delivery updates are the same in all three. Version 4 is written; all are read (a version 2
//! device reads `registered_at_ms` as `created_at_ms`; before 4, `device_id` is the token).
//!
//! Primitives: integers and lengths are unsigned LEB128 varints; strings are a varint byte length
//! then UTF-8; a [`Uuid`] is its 16 raw bytes; an `Option` is a presence byte (0 = `None`,
//! 1 = `Some`) followed by the value; a `bool` is one byte (0 or 1); a `Vec` is a varint count
//! followed by its elements; enums are one tag byte whose numbers are fixed below and must never
//! be reused or renumbered. `content.data` is its JSON text as a length-prefixed string, with
//! length 0 meaning the empty map. Fields are written in declaration order (see the encoders);
//! a record must end exactly where its last field does.
//!
//! Adding or reordering a field changes the format: that needs version 5 and a reader for 4.
//!
//! The decoder never panics and never allocates more than the input can justify: every length
//! and count is checked against the bytes that remain, and anything truncated, over-long or
//! out of range is [`Error::Corrupt`] naming the field being read.

use uuid::Uuid;

use super::{
    Channel, DeliveryEvent, DeliveryRecord, DeliveryState, DeviceRecord, JsonObject,
    NotificationContent, NotificationRecord, Platform, Priority, UserRecord,
};
use crate::error::Error;

// Stable tag numbers. Append new variants with new numbers; never change an existing one.

fn platform_tag(p: Platform) -> u8 {
    match p {
        Platform::Ios => 0,
        Platform::Android => 1,
        Platform::Web => 2,
    }
}

fn platform_of(tag: u8) -> Option<Platform> {
    match tag {
        0 => Some(Platform::Ios),
        1 => Some(Platform::Android),
        2 => Some(Platform::Web),
        _ => None,
    }
}

fn channel_tag(c: Channel) -> u8 {
    match c {
        Channel::Apns => 0,
        Channel::Fcm => 1,
        Channel::Webpush => 2,
    }
}

fn channel_of(tag: u8) -> Option<Channel> {
    match tag {
        0 => Some(Channel::Apns),
        1 => Some(Channel::Fcm),
        2 => Some(Channel::Webpush),
        _ => None,
    }
}

fn priority_tag(p: Priority) -> u8 {
    match p {
        Priority::High => 0,
        Priority::Normal => 1,
    }
}

fn priority_of(tag: u8) -> Option<Priority> {
    match tag {
        0 => Some(Priority::High),
        1 => Some(Priority::Normal),
        _ => None,
    }
}

fn state_tag(s: DeliveryState) -> u8 {
    match s {
        DeliveryState::Queued => 0,
        DeliveryState::Retrying => 1,
        DeliveryState::Sent => 2,
        DeliveryState::Delivered => 3,
        DeliveryState::Failed => 4,
        DeliveryState::Expired => 5,
        DeliveryState::Suppressed => 6,
        DeliveryState::Dead => 7,
    }
}

fn state_of(tag: u8) -> Option<DeliveryState> {
    Some(match tag {
        0 => DeliveryState::Queued,
        1 => DeliveryState::Retrying,
        2 => DeliveryState::Sent,
        3 => DeliveryState::Delivered,
        4 => DeliveryState::Failed,
        5 => DeliveryState::Expired,
        6 => DeliveryState::Suppressed,
        7 => DeliveryState::Dead,
        _ => return None,
    })
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_varint(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

/// Presence byte, then the value if there is one.
fn put_opt<T>(out: &mut Vec<u8>, v: Option<T>, put: impl FnOnce(&mut Vec<u8>, T)) {
    out.push(u8::from(v.is_some()));
    if let Some(v) = v {
        put(out, v);
    }
}

/// The object's JSON text, length-prefixed; the empty object is just length 0.
fn put_data(out: &mut Vec<u8>, data: &JsonObject) {
    if data.is_empty() {
        out.push(0);
        return;
    }
    put_str(out, data.as_str());
}

/// Appends the v4 (= v3 = v2) body of `n` (everything after the version byte) to `out`.
pub(super) fn encode_notification(out: &mut Vec<u8>, n: &NotificationRecord) {
    out.extend_from_slice(n.id.as_bytes());
    put_str(out, &n.user_id);
    put_str(out, &n.idempotency_key);
    put_varint(out, n.accepted_at_ms);
    let c = &n.content;
    put_opt(out, c.title.as_deref(), put_str);
    put_opt(out, c.body.as_deref(), put_str);
    put_data(out, &c.data);
    put_opt(out, c.category.as_deref(), put_str);
    out.push(priority_tag(c.priority));
    put_opt(out, c.ttl_seconds.map(u64::from), put_varint);
    put_opt(out, c.collapse_id.as_deref(), put_str);
    put_varint(out, n.deliveries.len() as u64);
    for d in &n.deliveries {
        out.extend_from_slice(d.id.as_bytes());
        out.push(channel_tag(d.channel));
        put_str(out, &d.target);
        put_progress(out, d);
    }
}

/// A delivery's progress: the fields after its target (state, attempts, next attempt, history).
/// Inside a notification body, and alone as the body of a delivery update record.
fn put_progress(out: &mut Vec<u8>, d: &DeliveryRecord) {
    out.push(state_tag(d.state));
    put_varint(out, u64::from(d.attempts));
    put_opt(out, d.next_attempt_at_ms, put_varint);
    put_varint(out, d.history.len() as u64);
    for e in &d.history {
        put_varint(out, e.at_ms);
        out.push(state_tag(e.state));
        put_varint(out, u64::from(e.attempt));
        put_opt(out, e.reason.as_deref(), put_str);
    }
}

/// Appends the v4 (= v3 = v2) body of a delivery update (the delivery's progress) to `out`.
pub(super) fn encode_progress(out: &mut Vec<u8>, d: &DeliveryRecord) {
    put_progress(out, d);
}

/// Appends the v4 body of `u` (everything after the version byte) to `out`.
pub(super) fn encode_user(out: &mut Vec<u8>, u: &UserRecord) {
    put_user(out, u, 4);
}

/// Appends the v3 body of `u`, as earlier builds wrote it (no `device_id`,
/// `deactivated_at_ms`).
#[cfg(test)]
pub(super) fn encode_user_v3(out: &mut Vec<u8>, u: &UserRecord) {
    put_user(out, u, 3);
}

/// Appends the v2 body of `u`, as earlier builds wrote it (`registered_at_ms` left out).
#[cfg(test)]
pub(super) fn encode_user_v2(out: &mut Vec<u8>, u: &UserRecord) {
    put_user(out, u, 2);
}

fn put_user(out: &mut Vec<u8>, u: &UserRecord, version: u8) {
    put_str(out, &u.user_id);
    put_opt(out, u.email.as_deref(), put_str);
    put_opt(out, u.phone.as_deref(), put_str);
    put_opt(out, u.locale.as_deref(), put_str);
    put_opt(out, u.timezone.as_deref(), put_str);
    put_varint(out, u.devices.len() as u64);
    for d in &u.devices {
        out.push(platform_tag(d.platform));
        put_str(out, &d.token);
        if version >= 4 {
            let own_id = (d.device_id != d.token).then_some(d.device_id.as_str());
            put_opt(out, own_id, put_str);
        }
        out.push(u8::from(d.active));
        put_varint(out, d.created_at_ms);
        if version >= 3 {
            put_varint(out, d.registered_at_ms);
        }
        put_opt(out, d.deactivated_reason.as_deref(), put_str);
        if version >= 4 {
            put_opt(out, d.deactivated_at_ms, put_varint);
        }
    }
    put_varint(out, u.updated_at_ms);
}

/// Smallest encodings of a delivery (id, channel, empty target, state, attempts, `None`, no
/// history), a history event and a device (v2; v3 adds one byte, v4 two more): bounds for
/// counts read from the input.
const MIN_DELIVERY_SIZE: usize = 16 + 6;
const MIN_EVENT_SIZE: usize = 4;
const MIN_DEVICE_SIZE_V2: usize = 5;

/// A cursor over a v2, v3 or v4 body; every read names what it reads so errors can say it.
struct Reader<'a> {
    kind: &'static str,
    version: u8,
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(kind: &'static str, version: u8, buf: &'a [u8]) -> Self {
        Reader {
            kind,
            version,
            buf,
            pos: 0,
        }
    }

    fn err(&self, what: &str) -> Error {
        Error::corrupt(format!(
            "{} record (v{}): truncated or malformed {what} (read up to byte {})",
            self.kind,
            self.version,
            self.pos + 1
        ))
    }

    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], Error> {
        if n > self.remaining() {
            return Err(self.err(what));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn u8(&mut self, what: &str) -> Result<u8, Error> {
        Ok(self.take(1, what)?[0])
    }

    fn varint(&mut self, what: &str) -> Result<u64, Error> {
        let mut v: u64 = 0;
        for i in 0..10 {
            let b = self.u8(what)?;
            // The tenth byte may only carry the top bit of a u64.
            if i == 9 && b > 1 {
                return Err(self.err(what));
            }
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(self.err(what))
    }

    fn u32(&mut self, what: &str) -> Result<u32, Error> {
        let v = self.varint(what)?;
        u32::try_from(v).map_err(|_| self.err(what))
    }

    /// A byte length (`min_size` 1) or a count of elements that each take at least `min_size`
    /// bytes, checked against the bytes left: allocations are bounded by the input's size.
    fn len(&mut self, what: &str, min_size: usize) -> Result<usize, Error> {
        let v = self.varint(what)?;
        match usize::try_from(v) {
            Ok(n) if n.saturating_mul(min_size) <= self.remaining() => Ok(n),
            _ => Err(self.err(what)),
        }
    }

    fn flag(&mut self, what: &str) -> Result<bool, Error> {
        match self.u8(what)? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(self.err(what)),
        }
    }

    fn tag<T>(&mut self, what: &str, of: fn(u8) -> Option<T>) -> Result<T, Error> {
        let t = self.u8(what)?;
        of(t).ok_or_else(|| self.err(what))
    }

    fn string(&mut self, what: &str) -> Result<String, Error> {
        let n = self.len(what, 1)?;
        let bytes = self.take(n, what)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| self.err(what))
    }

    /// Presence byte, then the value read by `read` if there is one.
    fn opt<T>(
        &mut self,
        what: &str,
        read: impl FnOnce(&mut Self, &str) -> Result<T, Error>,
    ) -> Result<Option<T>, Error> {
        if self.flag(what)? {
            read(self, what).map(Some)
        } else {
            Ok(None)
        }
    }

    fn uuid(&mut self, what: &str) -> Result<Uuid, Error> {
        Uuid::from_slice(self.take(16, what)?).map_err(|_| self.err(what))
    }

    fn data(&mut self) -> Result<JsonObject, Error> {
        let n = self.len("content.data", 1)?;
        if n == 0 {
            return Ok(JsonObject::empty());
        }
        let json = self.take(n, "content.data")?;
        let kind = self.kind;
        std::str::from_utf8(json)
            .map_err(|e| e.to_string())
            .and_then(|text| JsonObject::parse(text).map_err(|e| e.to_string()))
            .map_err(|e| {
                Error::corrupt(format!(
                    "{kind} record (v{}): bad content.data JSON: {e}",
                    self.version
                ))
            })
    }

    fn finish(&self) -> Result<(), Error> {
        match self.remaining() {
            0 => Ok(()),
            _ => Err(self.err("record end (trailing bytes)")),
        }
    }
}

/// Decodes a v2, v3 or v4 notification body (the bytes after the version byte `version`).
pub(super) fn decode_notification(body: &[u8], version: u8) -> Result<NotificationRecord, Error> {
    let mut r = Reader::new("notification", version, body);
    // Struct fields are evaluated in the order written, which is the order they are stored in.
    let n = NotificationRecord {
        id: r.uuid("id")?,
        user_id: r.string("user_id")?,
        idempotency_key: r.string("idempotency_key")?,
        accepted_at_ms: r.varint("accepted_at_ms")?,
        content: NotificationContent {
            title: r.opt("content.title", Reader::string)?,
            body: r.opt("content.body", Reader::string)?,
            data: r.data()?,
            category: r.opt("content.category", Reader::string)?,
            priority: r.tag("content.priority", priority_of)?,
            ttl_seconds: r.opt("content.ttl_seconds", Reader::u32)?,
            collapse_id: r.opt("content.collapse_id", Reader::string)?,
        },
        deliveries: {
            let count = r.len("deliveries count", MIN_DELIVERY_SIZE)?;
            let mut deliveries = Vec::with_capacity(count);
            for _ in 0..count {
                deliveries.push(decode_delivery(&mut r)?);
            }
            deliveries
        },
    };
    r.finish()?;
    Ok(n)
}

fn decode_delivery(r: &mut Reader<'_>) -> Result<DeliveryRecord, Error> {
    let mut d = DeliveryRecord {
        id: r.uuid("delivery.id")?,
        channel: r.tag("delivery.channel", channel_of)?,
        target: r.string("delivery.target")?,
        state: DeliveryState::Queued,
        attempts: 0,
        next_attempt_at_ms: None,
        history: Vec::new(),
    };
    read_progress(r, &mut d)?;
    Ok(d)
}

/// Reads what [`put_progress`] wrote into `d`.
fn read_progress(r: &mut Reader<'_>, d: &mut DeliveryRecord) -> Result<(), Error> {
    d.state = r.tag("delivery.state", state_of)?;
    d.attempts = r.u32("delivery.attempts")?;
    d.next_attempt_at_ms = r.opt("delivery.next_attempt_at_ms", Reader::varint)?;
    let count = r.len("delivery.history count", MIN_EVENT_SIZE)?;
    let mut history = Vec::with_capacity(count);
    for _ in 0..count {
        history.push(DeliveryEvent {
            at_ms: r.varint("event.at_ms")?,
            state: r.tag("event.state", state_of)?,
            attempt: r.u32("event.attempt")?,
            reason: r.opt("event.reason", Reader::string)?,
        });
    }
    d.history = history;
    Ok(())
}

/// Decodes a v2, v3 or v4 delivery update body into `d`, replacing its progress. All or nothing: on
/// error `d` is unchanged.
pub(super) fn decode_progress_into(
    body: &[u8],
    version: u8,
    d: &mut DeliveryRecord,
) -> Result<(), Error> {
    let mut r = Reader::new("delivery update", version, body);
    let mut next = DeliveryRecord {
        id: d.id,
        channel: d.channel,
        target: String::new(),
        state: DeliveryState::Queued,
        attempts: 0,
        next_attempt_at_ms: None,
        history: Vec::new(),
    };
    read_progress(&mut r, &mut next)?;
    r.finish()?;
    d.state = next.state;
    d.attempts = next.attempts;
    d.next_attempt_at_ms = next.next_attempt_at_ms;
    d.history = next.history;
    Ok(())
}

/// Decodes a v2, v3 or v4 user body (the bytes after the version byte `version`).
pub(super) fn decode_user(body: &[u8], version: u8) -> Result<UserRecord, Error> {
    let mut r = Reader::new("user", version, body);
    let v3 = version >= 3;
    let v4 = version >= 4;
    let min_device_size = MIN_DEVICE_SIZE_V2 + usize::from(v3) + 2 * usize::from(v4);
    let u = UserRecord {
        user_id: r.string("user_id")?,
        email: r.opt("email", Reader::string)?,
        phone: r.opt("phone", Reader::string)?,
        locale: r.opt("locale", Reader::string)?,
        timezone: r.opt("timezone", Reader::string)?,
        devices: {
            let count = r.len("devices count", min_device_size)?;
            let mut devices = Vec::with_capacity(count);
            for _ in 0..count {
                let platform = r.tag("device.platform", platform_of)?;
                let token = r.string("device.token")?;
                let own_id = if v4 {
                    r.opt("device.device_id", Reader::string)?
                } else {
                    None
                };
                let active = r.flag("device.active")?;
                let created_at_ms = r.varint("device.created_at_ms")?;
                let registered_at_ms = if v3 {
                    r.varint("device.registered_at_ms")?
                } else {
                    created_at_ms
                };
                let deactivated_reason = r.opt("device.deactivated_reason", Reader::string)?;
                let deactivated_at_ms = if v4 {
                    r.opt("device.deactivated_at_ms", Reader::varint)?
                } else {
                    None
                };
                devices.push(DeviceRecord {
                    platform,
                    device_id: own_id.unwrap_or_else(|| token.clone()),
                    token,
                    active,
                    created_at_ms,
                    registered_at_ms,
                    deactivated_reason,
                    deactivated_at_ms,
                });
            }
            devices
        },
        updated_at_ms: r.varint("updated_at_ms")?,
    };
    r.finish()?;
    Ok(u)
}
