//! `PUT /v1/users/{user_id}` and `POST /v1/users/{user_id}/devices`: parsing and validating the
//! request bodies into shard commands.

use super::error::ApiError;
use super::fields::{Fields, parse_object};
use super::validate;
use crate::channels::rules;
use crate::engine::command::{NewDevice, UserProfile};

const USER_FIELDS: &[&str] = &["email", "phone", "locale", "timezone"];
const DEVICE_FIELDS: &[&str] = &["platform", "token"];

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

/// Parses a device registration: `{"platform":"ios","token":"<64 hex>"}`.
pub fn parse_device(body: &[u8]) -> Result<NewDevice, ApiError> {
    let mut f = Fields::new(parse_object(body)?);
    let platform = f.req_str("platform", 16)?;
    let token = f.req_str("token", 4096)?;
    f.finish(DEVICE_FIELDS)?;
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
    let token = rules.target("token", &token).map_err(ApiError::rule)?;
    Ok(NewDevice {
        platform: rules.platform(),
        token,
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

    #[test]
    fn devices_are_validated() {
        let tok = "ab".repeat(32);
        let d = parse_device(
            format!(r#"{{"platform":"ios","token":"{}"}}"#, tok.to_uppercase()).as_bytes(),
        )
        .unwrap();
        assert_eq!(d.token, tok);
        let e = parse_device(br#"{"platform":"ios","token":"abc"}"#).unwrap_err();
        assert_eq!(
            (e.code, e.field.as_deref()),
            ("invalid_token", Some("token"))
        );
        let e = parse_device(format!(r#"{{"platform":"blackberry","token":"{tok}"}}"#).as_bytes())
            .unwrap_err();
        assert_eq!(e.field.as_deref(), Some("platform"));
        let e = parse_device(br#"{"token":"abc"}"#).unwrap_err();
        assert_eq!(
            (e.code, e.field.as_deref()),
            ("missing_field", Some("platform"))
        );
    }
}
