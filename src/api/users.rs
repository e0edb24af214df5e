//! `PUT /v1/users/{user_id}`, `POST /v1/users/{user_id}/devices` and `GET /v1/users/{user_id}`:
//! parsing and validating the request bodies into shard commands, and showing a user.

use super::error::ApiError;
use super::fields::{Fields, parse_object};
use super::status::rfc3339_ms;
use super::validate;
use crate::channels::rules::{self, TargetPolicy};
use crate::engine::command::{NewDevice, UserProfile};
use clarion_shards::{DeviceRecord, UserRecord};
use serde_json::{Value, json};

const USER_FIELDS: &[&str] = &["email", "phone", "locale", "timezone"];

/// Parses a user profile; every field is optional, and each present one is validated.
pub fn parse_profile(body: &[u8]) -> Result<UserProfile, ApiError> {
    let mut f = Fields::new(parse_object(body)?);
    let profile = UserProfile {
        email: f.opt_str("email", 254)?,
        phone: f.opt_str("phone", 16)?,
        locale: f.opt_str("locale", 35)?,
        timezone: f.opt_str("timezone", 64)?,
    };
    f.finish(USER_FIELDS)?;
    if let Some(v) = &profile.email {
        validate::email("email", v)?;
    }
    if let Some(v) = &profile.phone {
        validate::phone_e164("phone", v)?;
    }
    if let Some(v) = &profile.locale {
        validate::locale("locale", v)?;
    }
    if let Some(v) = &profile.timezone {
        validate::timezone("timezone", v)?;
    }
    Ok(profile)
}

/// Parses a device registration: `{"platform":"ios","token":"<64 hex>"}`,
/// `{"platform":"android","token":"<FCM token>"}` or
/// `{"platform":"web","subscription":{"endpoint":..,"keys":{"p256dh":..,"auth":..}}}`; each
/// platform's channel checks its target.
pub fn parse_device(body: &[u8], policy: TargetPolicy) -> Result<NewDevice, ApiError> {
    let mut f = Fields::new(parse_object(body)?);
    let platform = f.req_str("platform", 16)?;
    let Some(rules) = rules::for_platform(&platform) else {
        return Err(ApiError::field(
            "platform",
            "unsupported_platform",
            format!(
                "`{platform}` is not supported; supported: {}",
                rules::platform_names()
            ),
        ));
    };
    let field = rules.target_field();
    let raw = f.take(field);
    f.finish(&["platform", field])?;
    let Some(raw) = raw.filter(|v| !v.is_null()) else {
        return Err(ApiError::field(field, "missing_field", "is required"));
    };
    let token = rules.target(&raw, policy).map_err(ApiError::rule)?;
    Ok(NewDevice {
        platform: rules.platform(),
        device_id: rules.device_id(&token),
        token,
    })
}

/// A device as `GET /v1/users/{id}` and `POST .../devices` show it.
pub fn device_json(d: &DeviceRecord) -> Value {
    let mut v = json!({
        "platform": d.platform.as_str(),
        "device_id": d.device_id,
        "active": d.active,
        "created_at": rfc3339_ms(d.created_at_ms),
        "registered_at": rfc3339_ms(d.registered_at_ms),
    });
    if let (Value::Object(m), Value::Object(extra)) =
        (&mut v, rules::of(d.platform.channel()).describe(&d.token))
    {
        m.extend(extra);
    }
    if let Some(r) = &d.deactivated_reason {
        v["deactivated_reason"] = json!(r);
    }
    if let Some(at) = d.deactivated_at_ms {
        v["deactivated_at"] = json!(at);
    }
    v
}

/// `GET /v1/users/{id}`: the profile and every device.
pub fn user_json(u: &UserRecord) -> Value {
    json!({
        "user_id": u.user_id,
        "email": u.email,
        "phone": u.phone,
        "locale": u.locale,
        "timezone": u.timezone,
        "updated_at": rfc3339_ms(u.updated_at_ms),
        "devices": u.devices.iter().map(device_json).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profile_fields_are_validated() {
        let p = parse_profile(br#"{"email":"a@b.co","phone":"+14155550123","locale":"en-US","timezone":"Europe/Paris"}"#).unwrap();
        assert_eq!(p.email.as_deref(), Some("a@b.co"));
        assert_eq!(parse_profile(b"{}").unwrap(), UserProfile::default());
        let field = |b: &[u8]| parse_profile(b).unwrap_err().field;
        assert_eq!(field(br#"{"email":"nope"}"#).as_deref(), Some("email"));
        assert_eq!(field(br#"{"phone":"555"}"#).as_deref(), Some("phone"));
        assert_eq!(field(br#"{"phone":12}"#).as_deref(), Some("phone"));
        assert_eq!(field(br#"{"locale":"??"}"#).as_deref(), Some("locale"));
        assert_eq!(
            field(br#"{"timezone":"Nowhere"}"#).as_deref(),
            Some("timezone")
        );
        assert_eq!(field(br#"{"name":"x"}"#).as_deref(), Some("name"));
    }

    fn device(body: &str) -> Result<NewDevice, ApiError> {
        parse_device(body.as_bytes(), TargetPolicy::default())
    }

    #[test]
    fn devices_of_every_platform_are_validated() {
        let tok = "ab".repeat(32);
        let d = device(&format!(
            r#"{{"platform":"ios","token":"{}"}}"#,
            tok.to_uppercase()
        ))
        .unwrap();
        assert_eq!(
            (d.token.as_str(), d.device_id.as_str()),
            (tok.as_str(), tok.as_str())
        );
        let d = device(r#"{"platform":"android","token":"fcm:Tok-1_x"}"#).unwrap();
        assert_eq!(
            (d.platform, d.device_id.as_str()),
            (clarion_shards::Platform::Android, "fcm:Tok-1_x")
        );
        let web = r#"{"platform":"web","subscription":{"endpoint":"https://push.example.net/p/1","expirationTime":null,"keys":{"p256dh":"BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4","auth":"BTBZMqHH6r4Tts7J_aSIgg"}}}"#;
        let d = device(web).unwrap();
        assert_eq!(d.platform, clarion_shards::Platform::Web);
        assert!(d.device_id.starts_with("web-"), "{}", d.device_id);
        let err = |b: &str| {
            let e = device(b).unwrap_err();
            (e.code, e.field.unwrap_or_default())
        };
        assert_eq!(
            err(r#"{"platform":"ios","token":"abc"}"#),
            ("invalid_token", "token".into())
        );
        assert_eq!(
            err(r#"{"platform":"android","token":"a b"}"#),
            ("invalid_token", "token".into())
        );
        assert_eq!(
            err(r#"{"platform":"android"}"#),
            ("missing_field", "token".into())
        );
        assert_eq!(
            err(r#"{"platform":"web","token":"abc"}"#),
            ("unknown_field", "token".into())
        );
        assert_eq!(
            err(r#"{"platform":"web"}"#),
            ("missing_field", "subscription".into())
        );
        assert_eq!(
            err(&web.replace("BTBZMqHH6r4Tts7J_aSIgg", "short")),
            ("invalid_key", "subscription.keys.auth".into())
        );
        assert_eq!(
            err(&format!(r#"{{"platform":"blackberry","token":"{tok}"}}"#)),
            ("unsupported_platform", "platform".into())
        );
        assert_eq!(
            err(r#"{"token":"abc"}"#),
            ("missing_field", "platform".into())
        );
    }
}
