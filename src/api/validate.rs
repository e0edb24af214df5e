//! Format checks for what clients send: user ids, email addresses, E.164 phone numbers, locales,
//! time zones, idempotency keys and APNs device tokens. Each returns an `ApiError` naming the field.

use super::error::ApiError;

/// Longest user id we accept: ids are path segments and log keys.
pub const MAX_USER_ID: usize = 128;
/// Longest idempotency key: long enough for a UUID plus a prefix, short enough to bound memory.
pub const MAX_IDEMPOTENCY_KEY: usize = 255;

pub fn user_id(field: &str, v: &str) -> Result<(), ApiError> {
    if v.is_empty() || v.len() > MAX_USER_ID {
        return Err(ApiError::field(
            field,
            "invalid_user_id",
            format!("must be 1 to {MAX_USER_ID} bytes"),
        ));
    }
    if !v
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-_.:@+~".contains(&b))
    {
        return Err(ApiError::field(
            field,
            "invalid_user_id",
            "may contain only letters, digits and - _ . : @ + ~",
        ));
    }
    Ok(())
}

/// A pragmatic address check (RFC 5321 lengths, one `@`, a dotted domain, no spaces).
pub fn email(field: &str, v: &str) -> Result<(), ApiError> {
    let err = || {
        ApiError::field(
            field,
            "invalid_email",
            format!("`{v}` is not a valid email address"),
        )
    };
    if v.len() > 254 || v.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(err());
    }
    let (local, domain) = v.rsplit_once('@').ok_or_else(err)?;
    if local.is_empty() || local.len() > 64 || local.contains('@') || domain.len() < 3 {
        return Err(err());
    }
    let labels: Vec<&str> = domain.split('.').collect();
    let label_ok = |l: &&str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    if labels.len() < 2 || !labels.iter().all(label_ok) {
        return Err(err());
    }
    Ok(())
}

/// E.164: `+`, a country code not starting with 0, at most 15 digits in all.
pub fn phone_e164(field: &str, v: &str) -> Result<(), ApiError> {
    let digits = v.strip_prefix('+').unwrap_or("");
    let ok = (2..=15).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0');
    if !ok {
        return Err(ApiError::field(
            field,
            "invalid_phone",
            format!("`{v}` is not an E.164 number (like +14155550123)"),
        ));
    }
    Ok(())
}

/// A BCP 47 language tag such as `en`, `en-US` or `zh-Hant-TW`.
pub fn locale(field: &str, v: &str) -> Result<(), ApiError> {
    let mut parts = v.split(['-', '_']);
    let first_ok = parts
        .next()
        .is_some_and(|p| (2..=3).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_alphabetic()));
    let rest_ok =
        parts.all(|p| (1..=8).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_alphanumeric()));
    if !first_ok || !rest_ok || v.len() > 35 {
        return Err(ApiError::field(
            field,
            "invalid_locale",
            format!("`{v}` is not a locale like en-US"),
        ));
    }
    Ok(())
}

/// An IANA time zone name such as `Europe/Paris`, or `UTC`.
pub fn timezone(field: &str, v: &str) -> Result<(), ApiError> {
    let chars_ok = v
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"/_+-".contains(&b));
    let shape_ok = v == "UTC"
        || v == "GMT"
        || (v.contains('/') && !v.starts_with('/') && !v.ends_with('/') && !v.contains("//"));
    if v.len() > 64 || !chars_ok || !shape_ok {
        return Err(ApiError::field(
            field,
            "invalid_timezone",
            format!("`{v}` is not an IANA time zone like Europe/Paris"),
        ));
    }
    Ok(())
}

pub fn idempotency_key(field: &str, v: &str) -> Result<(), ApiError> {
    if v.bytes().any(|b| b.is_ascii_control()) {
        return Err(ApiError::field(
            field,
            "invalid_idempotency_key",
            "must not contain control characters",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails() {
        for ok in ["a@b.co", "first.last+tag@sub.example.org", "x_y@a-b.io"] {
            assert!(email("email", ok).is_ok(), "{ok}");
        }
        for bad in [
            "", "a", "a@", "@b.co", "a@b", "a b@c.de", "a@-b.co", "a@b..co", "a@@b.co",
        ] {
            let e = email("email", bad).unwrap_err();
            assert_eq!(
                (e.code, e.field.as_deref()),
                ("invalid_email", Some("email")),
                "{bad}"
            );
        }
    }

    #[test]
    fn phones() {
        for ok in ["+14155550123", "+447911123456", "+33612345678"] {
            assert!(phone_e164("phone", ok).is_ok(), "{ok}");
        }
        for bad in [
            "14155550123",
            "+04155550123",
            "+1415555012345678",
            "+1-415-555",
            "+",
            "+1",
        ] {
            assert_eq!(
                phone_e164("phone", bad).unwrap_err().code,
                "invalid_phone",
                "{bad}"
            );
        }
    }

    #[test]
    fn locales_zones_ids() {
        assert!(locale("locale", "en-US").is_ok());
        assert!(locale("locale", "zh-Hant-TW").is_ok());
        assert!(locale("locale", "english!").is_err());
        assert!(timezone("timezone", "Europe/Paris").is_ok());
        assert!(timezone("timezone", "America/Argentina/Buenos_Aires").is_ok());
        assert!(timezone("timezone", "UTC").is_ok());
        assert!(timezone("timezone", "Mars").is_err());
        assert!(user_id("user_id", "u-123@tenant").is_ok());
        assert!(user_id("user_id", "has space").is_err());
        assert!(user_id("user_id", "").is_err());
        assert!(idempotency_key("idempotency_key", "a\nb").is_err());
    }
}
