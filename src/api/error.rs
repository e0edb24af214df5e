//! The API's error answer: an HTTP status, a machine-readable code, a human message, and the
//! field at fault when there is one. Rendered as `{"error":{"code","message","field"}}`.

use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApiError {
    #[serde(skip)]
    pub status: u16,
    pub code: &'static str,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// Seconds the client should wait before retrying (429/503).
    #[serde(skip)]
    pub retry_after_s: Option<u32>,
}

impl ApiError {
    pub fn new(status: u16, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            field: None,
            retry_after_s: None,
        }
    }

    /// A 400 naming the field: `"<field>: <message>"`.
    pub fn field(field: &str, code: &'static str, message: impl Into<String>) -> ApiError {
        let message = format!("{field}: {}", message.into());
        ApiError {
            status: 400,
            code,
            message,
            field: Some(field.to_string()),
            retry_after_s: None,
        }
    }

    /// A shard's refusal, in HTTP terms.
    pub fn shard(e: crate::engine::error::ShardError) -> ApiError {
        use crate::engine::error::ShardError as E;
        let message = e.to_string();
        match e {
            E::UserNotFound { .. } => ApiError::not_found("user_not_found", message),
            E::DeviceNotFound { .. } => ApiError::not_found("device_not_found", message),
            E::NoSuchShard => ApiError::not_found("not_found", message),
            E::TooManyDeliveries { .. } => ApiError::new(422, "too_many_devices", message),
            E::DeviceLimit { .. } => ApiError {
                status: 422,
                ..ApiError::field("token", "too_many_devices", message)
            },
            E::ContentRefused {
                field,
                code,
                message,
            } => ApiError::field(field, code, message),
            E::LogBehind | E::PeerBusy => ApiError::overloaded(message),
            E::CorruptRecord => ApiError::new(500, "corrupt_record", message),
            E::ChannelMissing { .. } | E::Unavailable { .. } | E::Unanswered => {
                ApiError::unavailable(message)
            }
        }
    }

    /// A channel's refusal ([`crate::channels::rules`]), as a field error.
    pub fn rule(e: crate::channels::rules::RuleError) -> ApiError {
        ApiError::field(e.field, e.code, e.message)
    }

    pub fn not_found(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(404, code, message)
    }

    /// The server cannot take more right now; the client should retry after a pause.
    pub fn overloaded(message: impl Into<String>) -> ApiError {
        ApiError {
            retry_after_s: Some(1),
            ..ApiError::new(503, "overloaded", message)
        }
    }

    /// Storage could not make the request durable; nothing was accepted.
    pub fn unavailable(message: impl Into<String>) -> ApiError {
        ApiError {
            retry_after_s: Some(1),
            ..ApiError::new(503, "unavailable", message)
        }
    }

    /// The owning shard went away (or stopped) without answering; the client should retry.
    pub fn unanswered() -> ApiError {
        ApiError::unavailable("the shard did not answer; retry")
    }

    pub fn unauthorized() -> ApiError {
        ApiError::new(
            401,
            "unauthorized",
            "missing or invalid API key (Authorization: Bearer <key>)",
        )
    }

    /// Prefixes the field with a path such as `notifications[3].`, for batch items.
    pub fn in_item(mut self, prefix: &str) -> ApiError {
        if let Some(f) = &self.field {
            let full = format!("{prefix}{f}");
            self.message = self.message.replacen(f.as_str(), &full, 1);
            self.field = Some(full);
        }
        self
    }

    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({ "error": self })
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status, self.code, self.message)
    }
}

impl std::error::Error for ApiError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_errors_name_the_field() {
        let e = ApiError::field("email", "invalid_email", "not a valid address");
        assert_eq!(e.status, 400);
        assert_eq!(e.message, "email: not a valid address");
        let j = e.clone().in_item("notifications[2].").to_json();
        assert_eq!(j["error"]["field"], "notifications[2].email");
        assert_eq!(
            j["error"]["message"],
            "notifications[2].email: not a valid address"
        );
        assert_eq!(j["error"]["code"], "invalid_email");
    }
}
