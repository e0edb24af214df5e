//! The APNs rejection reasons the simulator can answer: each reason's HTTP status and its
//! `{"reason":"..."}` body, exactly as in the provider table of `shared/reference/providers.md`.
//!
//! One simulator-only reason exists, [`Reason::BadPayload`]: APNs documents no reason for a body
//! that is not a JSON object with an `aps` dictionary, so the simulator answers
//! `400 {"reason":"BadPayload"}` for it. A sender that hits it has a bug (it builds its own
//! payloads); like every other 400 it is a permanent failure.

use bytes::Bytes;

/// Every reason the simulator answers, with its status. Counted per reason in `SimStats`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Reason {
    BadCollapseId,
    BadDeviceToken,
    BadExpirationDate,
    BadMessageId,
    BadPriority,
    BadTopic,
    DeviceTokenNotForTopic,
    DuplicateHeaders,
    IdleTimeout,
    InvalidPushType,
    MissingDeviceToken,
    MissingTopic,
    PayloadEmpty,
    TopicDisallowed,
    /// Simulator-only: the body is not a JSON object with an `aps` object (see the module doc).
    BadPayload,
    BadCertificate,
    BadCertificateEnvironment,
    ExpiredProviderToken,
    Forbidden,
    InvalidProviderToken,
    MissingProviderToken,
    BadPath,
    MethodNotAllowed,
    Unregistered,
    ExpiredToken,
    PayloadTooLarge,
    TooManyRequests,
    TooManyProviderTokenUpdates,
    InternalServerError,
    ServiceUnavailable,
    Shutdown,
}

impl Reason {
    /// All reasons, in declaration order; `index()` is a position in this list.
    pub const ALL: [Reason; 31] = [
        Reason::BadCollapseId,
        Reason::BadDeviceToken,
        Reason::BadExpirationDate,
        Reason::BadMessageId,
        Reason::BadPriority,
        Reason::BadTopic,
        Reason::DeviceTokenNotForTopic,
        Reason::DuplicateHeaders,
        Reason::IdleTimeout,
        Reason::InvalidPushType,
        Reason::MissingDeviceToken,
        Reason::MissingTopic,
        Reason::PayloadEmpty,
        Reason::TopicDisallowed,
        Reason::BadPayload,
        Reason::BadCertificate,
        Reason::BadCertificateEnvironment,
        Reason::ExpiredProviderToken,
        Reason::Forbidden,
        Reason::InvalidProviderToken,
        Reason::MissingProviderToken,
        Reason::BadPath,
        Reason::MethodNotAllowed,
        Reason::Unregistered,
        Reason::ExpiredToken,
        Reason::PayloadTooLarge,
        Reason::TooManyRequests,
        Reason::TooManyProviderTokenUpdates,
        Reason::InternalServerError,
        Reason::ServiceUnavailable,
        Reason::Shutdown,
    ];

    /// The reason string APNs puts in `{"reason":"..."}`.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::BadCollapseId => "BadCollapseId",
            Reason::BadDeviceToken => "BadDeviceToken",
            Reason::BadExpirationDate => "BadExpirationDate",
            Reason::BadMessageId => "BadMessageId",
            Reason::BadPriority => "BadPriority",
            Reason::BadTopic => "BadTopic",
            Reason::DeviceTokenNotForTopic => "DeviceTokenNotForTopic",
            Reason::DuplicateHeaders => "DuplicateHeaders",
            Reason::IdleTimeout => "IdleTimeout",
            Reason::InvalidPushType => "InvalidPushType",
            Reason::MissingDeviceToken => "MissingDeviceToken",
            Reason::MissingTopic => "MissingTopic",
            Reason::PayloadEmpty => "PayloadEmpty",
            Reason::TopicDisallowed => "TopicDisallowed",
            Reason::BadPayload => "BadPayload",
            Reason::BadCertificate => "BadCertificate",
            Reason::BadCertificateEnvironment => "BadCertificateEnvironment",
            Reason::ExpiredProviderToken => "ExpiredProviderToken",
            Reason::Forbidden => "Forbidden",
            Reason::InvalidProviderToken => "InvalidProviderToken",
            Reason::MissingProviderToken => "MissingProviderToken",
            Reason::BadPath => "BadPath",
            Reason::MethodNotAllowed => "MethodNotAllowed",
            Reason::Unregistered => "Unregistered",
            Reason::ExpiredToken => "ExpiredToken",
            Reason::PayloadTooLarge => "PayloadTooLarge",
            Reason::TooManyRequests => "TooManyRequests",
            Reason::TooManyProviderTokenUpdates => "TooManyProviderTokenUpdates",
            Reason::InternalServerError => "InternalServerError",
            Reason::ServiceUnavailable => "ServiceUnavailable",
            Reason::Shutdown => "Shutdown",
        }
    }

    /// The HTTP status APNs answers with this reason.
    pub fn status(self) -> u16 {
        match self {
            Reason::BadCertificate
            | Reason::BadCertificateEnvironment
            | Reason::ExpiredProviderToken
            | Reason::Forbidden
            | Reason::InvalidProviderToken
            | Reason::MissingProviderToken => 403,
            Reason::BadPath => 404,
            Reason::MethodNotAllowed => 405,
            Reason::Unregistered | Reason::ExpiredToken => 410,
            Reason::PayloadTooLarge => 413,
            Reason::TooManyRequests | Reason::TooManyProviderTokenUpdates => 429,
            Reason::InternalServerError => 500,
            Reason::ServiceUnavailable | Reason::Shutdown => 503,
            _ => 400,
        }
    }

    /// Position in [`Reason::ALL`], for per-reason counters.
    pub fn index(self) -> usize {
        // Fieldless enum in the same order as `ALL` (checked by a test).
        self as usize
    }

    /// The response body: `{"reason":"..."}`, plus `"timestamp"` (ms) for 410 answers.
    pub fn body(self, timestamp_ms: u64) -> Bytes {
        if self.status() == 410 {
            Bytes::from(format!(
                "{{\"reason\":\"{}\",\"timestamp\":{timestamp_ms}}}",
                self.as_str()
            ))
        } else {
            Bytes::from(format!("{{\"reason\":\"{}\"}}", self.as_str()))
        }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_follow_the_provider_table() {
        assert_eq!(Reason::BadDeviceToken.status(), 400);
        assert_eq!(Reason::PayloadEmpty.status(), 400);
        assert_eq!(Reason::ExpiredProviderToken.status(), 403);
        assert_eq!(Reason::BadPath.status(), 404);
        assert_eq!(Reason::MethodNotAllowed.status(), 405);
        assert_eq!(Reason::Unregistered.status(), 410);
        assert_eq!(Reason::PayloadTooLarge.status(), 413);
        assert_eq!(Reason::TooManyProviderTokenUpdates.status(), 429);
        assert_eq!(Reason::InternalServerError.status(), 500);
        assert_eq!(Reason::Shutdown.status(), 503);
    }

    #[test]
    fn index_is_a_bijection_onto_all() {
        for (i, r) in Reason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i, "{r}");
        }
    }

    #[test]
    fn bodies_are_json_with_timestamp_only_on_410() {
        let v: serde_json::Value =
            serde_json::from_slice(&Reason::Unregistered.body(1234)).expect("json");
        assert_eq!(v["reason"], "Unregistered");
        assert_eq!(v["timestamp"], 1234);
        let v: serde_json::Value =
            serde_json::from_slice(&Reason::BadTopic.body(1234)).expect("json");
        assert_eq!(v, serde_json::json!({"reason": "BadTopic"}));
    }
}
