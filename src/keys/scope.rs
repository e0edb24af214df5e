//! What a key may do: its scopes, as a bit set. `admin` implies every other scope.

use std::fmt;

/// One scope a key can hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// `POST /v1/notifications`, `/batch`, `GET /v1/notifications/{id}`.
    Send,
    /// `GET /v1/users/{id}`.
    UsersRead,
    /// `PUT /v1/users/{id}`, device registration and removal.
    UsersWrite,
    /// The `/v1/dead-letters` calls.
    DeadLetters,
    /// `GET /metrics` and `GET /v1/stats` on the API port.
    Metrics,
    /// Everything, and `/v1/keys`.
    Admin,
}

impl Scope {
    pub const ALL: [Scope; 6] = [
        Scope::Send,
        Scope::UsersRead,
        Scope::UsersWrite,
        Scope::DeadLetters,
        Scope::Metrics,
        Scope::Admin,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Send => "send",
            Scope::UsersRead => "users:read",
            Scope::UsersWrite => "users:write",
            Scope::DeadLetters => "dead_letters",
            Scope::Metrics => "metrics",
            Scope::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|sc| sc.as_str() == s)
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// A set of scopes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Scopes(u8);

impl Scopes {
    pub const ADMIN: Scopes = Scopes(1 << (Scope::Admin as u8));

    pub fn with(self, s: Scope) -> Scopes {
        Scopes(self.0 | s.bit())
    }

    /// Whether a key with these scopes may do what `needed` guards (`admin` may do anything).
    pub fn allows(self, needed: Scope) -> bool {
        self.0 & (needed.bit() | Scope::Admin.bit()) != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn iter(self) -> impl Iterator<Item = Scope> {
        Scope::ALL
            .into_iter()
            .filter(move |s| self.0 & s.bit() != 0)
    }

    pub fn names(self) -> Vec<&'static str> {
        self.iter().map(Scope::as_str).collect()
    }

    /// Parses `send,users:write` (or a list's items): an unknown scope is named in the error.
    pub fn parse_list<'a>(items: impl IntoIterator<Item = &'a str>) -> Result<Scopes, String> {
        let mut out = Scopes::default();
        for item in items {
            let item = item.trim();
            let s = Scope::parse(item).ok_or_else(|| {
                format!(
                    "`{item}` is not a scope; expected one of: {}",
                    Scope::ALL.map(Scope::as_str).join(", ")
                )
            })?;
            out = out.with(s);
        }
        if out.is_empty() {
            return Err("at least one scope is required".into());
        }
        Ok(out)
    }
}

impl fmt::Display for Scopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.names().join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_allows_everything_and_others_only_themselves() {
        let s = Scopes::parse_list(["send", "users:write"]).unwrap();
        assert!(s.allows(Scope::Send));
        assert!(s.allows(Scope::UsersWrite));
        assert!(!s.allows(Scope::UsersRead));
        assert!(!s.allows(Scope::Admin));
        assert_eq!(s.to_string(), "send,users:write");
        for sc in Scope::ALL {
            assert!(Scopes::ADMIN.allows(sc));
            assert_eq!(Scope::parse(sc.as_str()), Some(sc));
        }
        assert!(Scopes::parse_list(["sned"]).unwrap_err().contains("`sned`"));
        assert!(Scopes::parse_list([]).is_err());
    }
}
