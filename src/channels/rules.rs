//! What the API asks of a channel before it accepts anything for it, without knowing which
//! channel it is: the shape of a device target (a token, or a browser's subscription), the id a
//! device is addressed by, and whether a notification's content renders within the channel's
//! limits. Each channel implements [`ChannelRules`] beside its sender (`channels/apns/`,
//! `channels/fcm/`, `channels/webpush/`), and `api/` reaches them only through this module's
//! registry, so the API names no channel.

use clarion_shards::{Channel, NotificationContent, Platform};
use serde_json::Value;

/// A refusal in the API's terms: the field it concerns (a name or a path, like `token` or
/// `subscription.keys.p256dh`), a machine-readable code and a human message (without the
/// field's name, which the API adds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleError {
    pub field: &'static str,
    pub code: &'static str,
    pub message: String,
}

impl RuleError {
    pub fn new(field: &'static str, code: &'static str, message: impl Into<String>) -> RuleError {
        RuleError {
            field,
            code,
            message: message.into(),
        }
    }
}

/// What the deployment allows of device targets (from the configuration).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TargetPolicy {
    /// `[webpush] allow_insecure_loopback`: a subscription endpoint may be
    /// `http://127.0.0.1[:port]/...` (tests and local simulators), besides `https`.
    pub allow_insecure_loopback: bool,
}

/// One channel's rules, stateless and shared by every shard.
pub trait ChannelRules: Sync {
    fn channel(&self) -> Channel;
    /// The platform whose devices this channel reaches.
    fn platform(&self) -> Platform;
    /// The platform's name in the API (`"ios"`).
    fn platform_name(&self) -> &'static str {
        self.platform().as_str()
    }
    /// The registration body's field that holds the device's target: `token` or
    /// `subscription`.
    fn target_field(&self) -> &'static str;
    /// A device target as registered (the JSON value of [`ChannelRules::target_field`]),
    /// checked, in the canonical form it is stored in and sent to.
    fn target(&self, raw: &Value, policy: TargetPolicy) -> Result<String, RuleError>;
    /// The id the API addresses a stored target by: by default the token itself (a browser's
    /// is derived from its endpoint).
    fn device_id(&self, target: &str) -> String {
        target.to_string()
    }
    /// A device id from a path, in this platform's canonical form, if it can be one of its ids:
    /// by default the path read as a token.
    fn device_id_form(&self, raw: &str) -> Option<String> {
        self.target(&Value::from(raw), TargetPolicy::default()).ok()
    }
    /// What the API shows of a stored target beside its `device_id`, a JSON object: by default
    /// `{"token": ..}` (a browser's shows its endpoint).
    fn describe(&self, target: &str) -> Value {
        serde_json::json!({ "token": target })
    }
    /// Whether `content` renders as this channel's payload within its limits.
    fn check_content(&self, content: &NotificationContent) -> Result<(), RuleError>;
    /// Panics unless an accepted `content` renders as a payload that carries every part of
    /// it, the way the channel's provider reads it (the request-parsing fuzz targets).
    #[cfg(any(test, feature = "fuzz"))]
    fn assert_renders(&self, content: &NotificationContent);
}

/// Every channel's rules, in [`Channel::index`] order.
pub fn all() -> &'static [&'static dyn ChannelRules] {
    &[
        &super::apns::ApnsRules,
        &super::fcm::FcmRules,
        &super::webpush::WebPushRules,
    ]
}

/// The rules of `channel`.
pub fn of(channel: Channel) -> &'static dyn ChannelRules {
    all()[channel.index()]
}

/// The rules of the platform the API calls `name`, if one is supported.
pub fn for_platform(name: &str) -> Option<&'static dyn ChannelRules> {
    all().iter().copied().find(|r| r.platform_name() == name)
}

/// The supported platforms' names, for error messages: `"ios, android, web"`.
pub fn platform_names() -> String {
    all()
        .iter()
        .map(|r| r.platform_name())
        .collect::<Vec<_>>()
        .join(", ")
}

/// A device id as it appears in a path (`DELETE /v1/users/{id}/devices/{device_id}`): each
/// form some platform could store it in, without repeats (the shard removes the first device
/// with one of them). `field` names it in the error when no platform could.
pub fn device_id_forms(field: &'static str, raw: &str) -> Result<Vec<String>, RuleError> {
    let mut forms: Vec<String> = Vec::new();
    for form in all().iter().filter_map(|r| r.device_id_form(raw)) {
        if !forms.contains(&form) {
            forms.push(form);
        }
    }
    if forms.is_empty() {
        return Err(RuleError::new(
            field,
            "invalid_device_id",
            "not a device id of any platform (an iOS or Android token, or a web device's `web-` id)",
        ));
    }
    Ok(forms)
}

/// A `token` field's value as a string (`invalid_type` otherwise): the target of the
/// token-addressed platforms.
pub fn token_str(raw: &Value) -> Result<&str, RuleError> {
    raw.as_str()
        .ok_or_else(|| RuleError::new("token", "invalid_type", "must be a string"))
}

/// The most payload any channel carries (APNs' and FCM's 4096 bytes; Web Push's record too).
pub const LARGEST_PAYLOAD_BYTES: usize = 4096;

/// Whether `content` could fit some channel at all: every channel's payload carries at least
/// the bytes of the title, body, category and data as given, so content whose parts alone
/// pass [`LARGEST_PAYLOAD_BYTES`] is refused at once, wherever the user's devices are, with no
/// rendering on the API's core. (Each channel's own limits are checked by the owning shard, for
/// the channels the user has active devices on.)
pub fn fits_some_channel(content: &NotificationContent) -> Result<(), RuleError> {
    let len = |s: &Option<String>| s.as_ref().map_or(0, String::len);
    let size = len(&content.title)
        + len(&content.body)
        + len(&content.category)
        + content.data.as_str().len();
    if size > LARGEST_PAYLOAD_BYTES {
        return Err(RuleError::new(
            "body",
            "payload_too_large",
            format!(
                "title, body, category and data come to {size} bytes; no channel carries more than {LARGEST_PAYLOAD_BYTES}"
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_registry_finds_each_channel_by_channel_and_platform() {
        for (i, rules) in all().iter().enumerate() {
            assert_eq!(rules.channel().index(), i);
            assert_eq!(of(rules.channel()).channel(), rules.channel());
            assert_eq!(rules.platform().channel(), rules.channel());
            let found = for_platform(rules.platform_name()).map(|r| r.channel());
            assert_eq!(found, Some(rules.channel()));
        }
        assert_eq!(all().len(), Channel::COUNT);
        assert!(for_platform("blackberry").is_none());
        assert_eq!(platform_names(), "ios, android, web");
    }

    #[test]
    fn a_device_id_takes_the_canonical_form_of_each_platform_that_could_hold_it() {
        let upper = "AB".repeat(32);
        // An iOS token lowercased; as an Android token, as it is.
        assert_eq!(
            device_id_forms("device_id", &upper).unwrap(),
            vec!["ab".repeat(32), upper.clone()]
        );
        let web = format!("web-{}", "0f".repeat(16));
        assert_eq!(device_id_forms("device_id", &web).unwrap(), vec![web]);
        let e = device_id_forms("device_id", "not a token").unwrap_err();
        assert_eq!((e.field, e.code), ("device_id", "invalid_device_id"));
    }
}
