//! What the API asks of a channel before it accepts anything for it, without knowing which
//! channel it is: the shape of a device target, and whether a notification's content renders
//! within the channel's limits. Each channel implements [`ChannelRules`] beside its sender
//! (`channels/apns.rs`), and `api/` reaches them only through this module's registry, so the
//! API names no channel.

use clarion_shards::{Channel, NotificationContent, Platform};

/// A refusal in the API's terms: the field it concerns (a name, like `token`), a
/// machine-readable code and a human message (without the field's name, which the API adds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleError {
    pub field: &'static str,
    pub code: &'static str,
    pub message: String,
}

/// One channel's rules, stateless and shared by every shard.
pub trait ChannelRules: Sync {
    fn channel(&self) -> Channel;
    /// The platform whose devices this channel reaches.
    fn platform(&self) -> Platform;
    /// The platform's name in the API (`"ios"`).
    fn platform_name(&self) -> &'static str;
    /// A device target as registered, checked, in the canonical form it is stored and
    /// addressed by (its `device_id`); `field` names it in the error.
    fn target(&self, field: &'static str, raw: &str) -> Result<String, RuleError>;
    /// Whether `content` renders as this channel's payload within its limits.
    fn check_content(&self, content: &NotificationContent) -> Result<(), RuleError>;
    /// Panics unless an accepted `content` renders as a payload that carries every part of
    /// it, the way the channel's provider reads it (the request-parsing fuzz targets).
    #[cfg(any(test, feature = "fuzz"))]
    fn assert_renders(&self, content: &NotificationContent);
}

/// Every channel's rules, in [`Channel::index`] order.
pub fn all() -> &'static [&'static dyn ChannelRules] {
    &[&super::apns::ApnsRules]
}

/// The rules of `channel`.
pub fn of(channel: Channel) -> Option<&'static dyn ChannelRules> {
    all().iter().copied().find(|r| r.channel() == channel)
}

/// The rules of the platform the API calls `name`, if one is supported.
pub fn for_platform(name: &str) -> Option<&'static dyn ChannelRules> {
    all().iter().copied().find(|r| r.platform_name() == name)
}

/// The supported platforms' names, for error messages: `"ios"`.
pub fn platform_names() -> String {
    all()
        .iter()
        .map(|r| r.platform_name())
        .collect::<Vec<_>>()
        .join(", ")
}

/// A device id as it appears in a path (`DELETE /v1/users/{id}/devices/{device_id}`), in the
/// canonical form of the first platform that takes it.
pub fn device_id(field: &'static str, raw: &str) -> Result<String, RuleError> {
    let mut first_error = None;
    for rules in all() {
        match rules.target(field, raw) {
            Ok(id) => return Ok(id),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    Err(first_error.unwrap_or_else(|| RuleError {
        field,
        code: "invalid_token",
        message: "no platform is supported".into(),
    }))
}

/// Whether `content` renders within every channel's limits. (A notification is accepted
/// before its devices are looked up, on any core: every channel's limit applies.)
pub fn check_content(content: &NotificationContent) -> Result<(), RuleError> {
    all().iter().try_for_each(|r| r.check_content(content))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_registry_finds_each_channel_by_channel_and_platform() {
        for (i, rules) in all().iter().enumerate() {
            assert_eq!(rules.channel().index(), i);
            assert_eq!(
                of(rules.channel()).map(|r| r.channel()),
                Some(rules.channel())
            );
            assert_eq!(rules.platform().channel(), rules.channel());
            let found = for_platform(rules.platform_name()).map(|r| r.channel());
            assert_eq!(found, Some(rules.channel()));
        }
        assert_eq!(all().len(), Channel::COUNT);
        assert!(for_platform("blackberry").is_none());
        assert_eq!(platform_names(), "ios");
    }

    #[test]
    fn a_device_id_takes_the_canonical_form_of_its_platform() {
        let upper = "AB".repeat(32);
        assert_eq!(device_id("device_id", &upper).unwrap(), "ab".repeat(32));
        let e = device_id("device_id", "not a token").unwrap_err();
        assert_eq!((e.field, e.code), ("device_id", "invalid_token"));
    }
}
