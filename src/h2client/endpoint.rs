//! A provider endpoint (`https://host[:port]`, no path), parsed once: the TLS server name, the
//! address to resolve, and the `:authority` every request carries.

use super::error::Error;

/// The port when an endpoint names none.
pub const HTTPS_PORT: u16 = 443;
/// The same for a plain `http` origin.
pub const HTTP_PORT: u16 = 80;

/// Where to connect, parsed once from a channel's configured endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Host name or IP literal without brackets: the TLS server name and what DNS resolves.
    pub(crate) host: String,
    pub(crate) port: u16,
    /// `:authority` of every request, as written in the endpoint.
    pub(crate) authority: http::uri::Authority,
    /// `https` (TLS); `false` only for a plain `http` origin taken by [`Endpoint::parse_with`].
    pub(crate) tls: bool,
}

impl Endpoint {
    pub fn parse(endpoint: &str) -> Result<Endpoint, Error> {
        Endpoint::parse_with(endpoint, false)
    }

    /// [`Endpoint::parse`], also taking a plain `http://host[:port]` when `allow_http` (a
    /// loopback Web Push endpoint in tests, sent to over HTTP/1.1).
    pub(crate) fn parse_with(endpoint: &str, allow_http: bool) -> Result<Endpoint, Error> {
        let bad = |reason: String| Error::InvalidEndpoint { reason };
        let uri: http::Uri = endpoint
            .parse()
            .map_err(|e| bad(format!("{endpoint:?} is not a URI: {e}")))?;
        let tls = match uri.scheme_str() {
            Some("https") => true,
            Some("http") if allow_http => false,
            other => return Err(bad(format!("scheme must be https, got {other:?}"))),
        };
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            return Err(bad(format!(
                "{endpoint:?} must be https://host[:port] with no path"
            )));
        }
        let authority = uri
            .authority()
            .cloned()
            .ok_or_else(|| bad(format!("{endpoint:?} names no host")))?;
        if authority.as_str().contains('@') {
            return Err(bad("user info is not allowed".to_owned()));
        }
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        if host.is_empty() {
            return Err(bad(format!("{endpoint:?} names no host")));
        }
        let default_port = if tls { HTTPS_PORT } else { HTTP_PORT };
        Ok(Endpoint {
            host: host.to_owned(),
            port: authority.port_u16().unwrap_or(default_port),
            authority,
            tls,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_defaults_to_port_443() {
        let e = Endpoint::parse("https://api.push.apple.com").unwrap();
        assert_eq!((e.host.as_str(), e.port), ("api.push.apple.com", 443));
        assert_eq!(e.authority.as_str(), "api.push.apple.com");
    }

    #[test]
    fn endpoint_keeps_explicit_port_and_ip_literals() {
        let e = Endpoint::parse("https://127.0.0.1:8443").unwrap();
        assert_eq!((e.host.as_str(), e.port), ("127.0.0.1", 8443));
        let e = Endpoint::parse("https://[::1]:2197/").unwrap();
        assert_eq!((e.host.as_str(), e.port), ("::1", 2197));
    }

    #[test]
    fn endpoint_rejects_plain_http_paths_and_garbage() {
        for bad in [
            "http://api.push.apple.com",
            "https://h/3/device",
            "api.push.apple.com",
            "",
        ] {
            assert!(
                matches!(Endpoint::parse(bad), Err(Error::InvalidEndpoint { .. })),
                "{bad:?} accepted"
            );
        }
    }
}
