//! One notification as an HTTP/2 request: the local checks that spare a round trip, and
//! [`RequestEncoder`], which builds `:path` and the `apns-*` headers from static names, cached
//! values and one reused byte arena instead of per-request strings.

use super::config::{ApnsConfig, ApnsError};
use super::notification::{ApnsNotification, PushType};
use crate::h2client::Endpoint;
use bytes::{BufMut, Bytes, BytesMut};
use clarion_shards::Verdict;
use http::header::{AUTHORIZATION, CONTENT_TYPE, HeaderName};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderValue, Method, Request, Uri};
use std::cell::RefCell;
use std::fmt::Write as _;

/// Apple caps `apns-collapse-id` at 64 bytes (`400 BadCollapseId`).
pub const MAX_COLLAPSE_ID_BYTES: usize = 64;
/// Device tokens are 64 hex digits today; Apple says the length may grow, so allow headroom
/// but refuse anything that could not be a token.
pub const MAX_DEVICE_TOKEN_HEX_DIGITS: usize = 200;
/// The arena carved into each request's header bytes (about 130) and payload (typically 100 to
/// 300, at most 5 KB): one allocation serves dozens of requests, and is reused outright once
/// they are all dropped. A request stuck until its timeout keeps its chunk alive, so at most one
/// chunk per request in flight (the sender bounds those), and each connection's HPACK table
/// keeps the chunk of the first request's values.
const HEADER_ARENA_BYTES: usize = 16 * 1024;
/// Headers per request: authorization, content-type, topic, push-type, priority, expiration,
/// apns-id, collapse-id.
const HEADERS_PER_REQUEST: usize = 8;
const DEVICE_PATH_PREFIX: &[u8] = b"/3/device/";

const APNS_TOPIC: HeaderName = HeaderName::from_static("apns-topic");
const APNS_PUSH_TYPE: HeaderName = HeaderName::from_static("apns-push-type");
const APNS_PRIORITY: HeaderName = HeaderName::from_static("apns-priority");
const APNS_EXPIRATION: HeaderName = HeaderName::from_static("apns-expiration");
const APNS_ID: HeaderName = HeaderName::from_static("apns-id");
const APNS_COLLAPSE_ID: HeaderName = HeaderName::from_static("apns-collapse-id");
const APPLICATION_JSON: HeaderValue = HeaderValue::from_static("application/json");

/// A notification checked and turned into header values, reusable for a second attempt.
#[derive(Debug, Clone)]
pub(crate) struct PreparedRequest {
    uri: Uri,
    apns_id: HeaderValue,
    push_type: HeaderValue,
    priority: HeaderValue,
    expiration: HeaderValue,
    collapse_id: Option<HeaderValue>,
    pub(crate) payload: Bytes,
}

/// Builds APNs requests for one shard. Exposed for the encoding benchmark; senders own one.
pub struct RequestEncoder {
    authority: Authority,
    topic: HeaderValue,
    arena: RefCell<BytesMut>,
}

impl RequestEncoder {
    /// Checks the endpoint and topic and caches them as request parts.
    pub fn new(config: &ApnsConfig) -> Result<RequestEncoder, ApnsError> {
        let endpoint = Endpoint::parse(&config.endpoint)?;
        let topic = HeaderValue::from_str(&config.topic).map_err(|e| ApnsError::InvalidConfig {
            field: "topic",
            reason: e.to_string(),
        })?;
        Ok(RequestEncoder {
            authority: endpoint.authority,
            topic,
            arena: RefCell::new(BytesMut::with_capacity(HEADER_ARENA_BYTES)),
        })
    }

    /// Checks and encodes `n` and builds the request as sent with `authorization`
    /// (`bearer <jwt>`). A notification APNs would refuse comes back as the `Permanent` outcome.
    pub fn encode(
        &self,
        n: &ApnsNotification<'_>,
        authorization: &HeaderValue,
    ) -> Result<Request<()>, Verdict> {
        Ok(self
            .prepare(n)?
            .to_request(authorization, &self.topic, false))
    }

    pub(crate) fn topic(&self) -> &HeaderValue {
        &self.topic
    }

    /// `bytes` copied into the arena: a handle whose clones (one per attempt) only count
    /// references, where a `Bytes` of its own would cost an allocation, and another at its first
    /// clone.
    pub(crate) fn shared_copy(&self, bytes: &[u8]) -> Bytes {
        let mut arena = self.arena.borrow_mut();
        arena.reserve(bytes.len());
        arena.put_slice(bytes);
        arena.split().freeze()
    }

    /// Validates `n` locally and turns it into header values carved from the arena.
    pub(crate) fn prepare(&self, n: &ApnsNotification<'_>) -> Result<PreparedRequest, Verdict> {
        let token = n.device_token;
        if token.is_empty()
            || token.len() > MAX_DEVICE_TOKEN_HEX_DIGITS
            || !token.bytes().all(|b| b.is_ascii_hexdigit())
        {
            return Err(refused("BadDeviceToken", true));
        }
        let collapse_id = n.collapse_id.unwrap_or_default();
        if collapse_id.len() > MAX_COLLAPSE_ID_BYTES {
            return Err(refused("BadCollapseId", false));
        }
        let priority = match (n.push_type, n.priority) {
            (PushType::Background, _) | (_, 5) => HeaderValue::from_static("5"),
            (_, 10) => HeaderValue::from_static("10"),
            (_, 1) => HeaderValue::from_static("1"),
            _ => return Err(refused("BadPriority", false)),
        };
        if n.payload.is_empty() {
            return Err(refused("PayloadEmpty", false));
        }
        if n.payload.len() > n.push_type.payload_limit() {
            return Err(refused("PayloadTooLarge", false));
        }

        let mut arena = self.arena.borrow_mut();
        arena.reserve(DEVICE_PATH_PREFIX.len() + token.len() + 36 + 20 + collapse_id.len());
        arena.put_slice(DEVICE_PATH_PREFIX);
        arena.put_slice(token.as_bytes());
        let path_end = arena.len();
        let mut uuid = uuid::Uuid::encode_buffer();
        arena.put_slice(
            n.delivery_id
                .hyphenated()
                .encode_lower(&mut uuid)
                .as_bytes(),
        );
        let id_end = arena.len();
        // Writing an integer into a BytesMut cannot fail.
        let _ = write!(arena, "{}", n.expiration_unix_s);
        let expiration_end = arena.len();
        arena.put_slice(collapse_id.as_bytes());
        let bytes = arena.split().freeze();
        drop(arena);

        let path = PathAndQuery::from_maybe_shared(bytes.slice(..path_end))
            .map_err(|_| refused("BadDeviceToken", true))?;
        let mut uri = http::uri::Parts::default();
        uri.scheme = Some(Scheme::HTTPS);
        uri.authority = Some(self.authority.clone());
        uri.path_and_query = Some(path);
        let value =
            |range: std::ops::Range<usize>| HeaderValue::from_maybe_shared(bytes.slice(range));
        let collapse = match n.collapse_id {
            None => None,
            Some(_) => Some(
                value(expiration_end..bytes.len()).map_err(|_| refused("BadCollapseId", false))?,
            ),
        };
        Ok(PreparedRequest {
            uri: Uri::from_parts(uri).map_err(|_| refused("BadPath", false))?,
            apns_id: value(path_end..id_end).map_err(|_| refused("BadMessageId", false))?,
            push_type: HeaderValue::from_static(n.push_type.as_str()),
            priority,
            expiration: value(id_end..expiration_end)
                .map_err(|_| refused("BadExpirationDate", false))?,
            collapse_id: collapse,
            payload: n.payload.clone(),
        })
    }
}

impl PreparedRequest {
    /// The request for one attempt: every value is a reference-counted clone.
    ///
    /// HPACK as Apple asks of APNs clients: `:path` and `authorization` are never added to the
    /// server's dynamic table (h2 already sends both as literals), and `apns-id`,
    /// `apns-expiration` and `apns-collapse-id` are indexed only in a connection's first request
    /// (`first_on_connection`), which puts their names in the table; later requests send their
    /// values as literals. Values unique to one notification would otherwise fill APNs's small
    /// table, evicting what repeats (topic, push type, priority), and cost both ends a table
    /// insert and an eviction per request.
    pub(crate) fn to_request(
        &self,
        authorization: &HeaderValue,
        topic: &HeaderValue,
        first_on_connection: bool,
    ) -> Request<()> {
        let per_notification = |value: &HeaderValue| {
            let mut value = value.clone();
            // h2's only representation that keeps a value out of the table: "never indexed".
            value.set_sensitive(!first_on_connection);
            value
        };
        let mut request = Request::new(());
        *request.method_mut() = Method::POST;
        *request.uri_mut() = self.uri.clone();
        let headers = request.headers_mut();
        headers.reserve(HEADERS_PER_REQUEST);
        headers.insert(AUTHORIZATION, authorization.clone());
        headers.insert(CONTENT_TYPE, APPLICATION_JSON);
        headers.insert(APNS_TOPIC, topic.clone());
        headers.insert(APNS_PUSH_TYPE, self.push_type.clone());
        headers.insert(APNS_PRIORITY, self.priority.clone());
        headers.insert(APNS_EXPIRATION, per_notification(&self.expiration));
        headers.insert(APNS_ID, per_notification(&self.apns_id));
        if let Some(collapse_id) = &self.collapse_id {
            headers.insert(APNS_COLLAPSE_ID, per_notification(collapse_id));
        }
        request
    }
}

/// The outcome for a notification refused before sending, named like Apple's reason.
fn refused(reason: &str, deactivate: bool) -> Verdict {
    Verdict::Permanent {
        reason: format!("{reason} (refused locally)"),
        deactivate: deactivate.then(|| reason.to_string()),
        unregistered_at_ms: None,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::channels::apns::payload::MAX_PAYLOAD_BYTES;

    const TOKEN: &str = "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90";

    fn encoder() -> RequestEncoder {
        let config = ApnsConfig {
            endpoint: "https://127.0.0.1:8443".into(),
            topic: "com.example.app".into(),
            ..ApnsConfig::default()
        };
        RequestEncoder::new(&config).unwrap()
    }

    fn notification() -> ApnsNotification<'static> {
        ApnsNotification {
            delivery_id: uuid::Uuid::from_u128(0x0F8FAD5B_D9CB_469F_A165_70867728950E),
            device_token: TOKEN,
            push_type: PushType::Alert,
            priority: 10,
            expiration_unix_s: 1_700_000_000,
            collapse_id: Some("orders"),
            payload: Bytes::from_static(br#"{"aps":{"alert":{"body":"hi"}}}"#),
        }
    }

    fn header<'r>(r: &'r Request<()>, name: &str) -> Option<&'r str> {
        r.headers().get(name).map(|v| v.to_str().unwrap())
    }

    #[test]
    fn request_carries_path_and_every_apns_header() {
        let auth = HeaderValue::from_static("bearer x.y.z");
        let r = encoder().encode(&notification(), &auth).unwrap();
        assert_eq!(r.method(), Method::POST);
        assert_eq!(
            r.uri().to_string(),
            format!("https://127.0.0.1:8443/3/device/{TOKEN}")
        );
        assert_eq!(header(&r, "authorization"), Some("bearer x.y.z"));
        assert_eq!(header(&r, "apns-topic"), Some("com.example.app"));
        assert_eq!(header(&r, "apns-push-type"), Some("alert"));
        assert_eq!(header(&r, "apns-priority"), Some("10"));
        assert_eq!(header(&r, "apns-expiration"), Some("1700000000"));
        assert_eq!(
            header(&r, "apns-id"),
            Some("0f8fad5b-d9cb-469f-a165-70867728950e")
        );
        assert_eq!(header(&r, "apns-collapse-id"), Some("orders"));
        assert_eq!(r.headers().len(), HEADERS_PER_REQUEST);
    }

    #[test]
    fn background_forces_priority_5_and_absent_collapse_id_is_omitted() {
        let n = ApnsNotification {
            push_type: PushType::Background,
            collapse_id: None,
            expiration_unix_s: 0,
            ..notification()
        };
        let r = encoder()
            .encode(&n, &HeaderValue::from_static("bearer t"))
            .unwrap();
        assert_eq!(header(&r, "apns-push-type"), Some("background"));
        assert_eq!(header(&r, "apns-priority"), Some("5"));
        assert_eq!(header(&r, "apns-expiration"), Some("0"));
        assert_eq!(header(&r, "apns-collapse-id"), None);
    }

    #[test]
    fn collapse_id_is_limited_to_64_bytes() {
        let e = encoder();
        let at_limit = "c".repeat(MAX_COLLAPSE_ID_BYTES);
        assert!(
            e.prepare(&ApnsNotification {
                collapse_id: Some(&at_limit),
                ..notification()
            })
            .is_ok()
        );
        let over = "c".repeat(MAX_COLLAPSE_ID_BYTES + 1);
        let refused = e
            .prepare(&ApnsNotification {
                collapse_id: Some(&over),
                ..notification()
            })
            .unwrap_err();
        assert_eq!(
            refused,
            Verdict::Permanent {
                reason: "BadCollapseId (refused locally)".into(),
                deactivate: None,
                unregistered_at_ms: None,
            }
        );
        let control = e.prepare(&ApnsNotification {
            collapse_id: Some("a\nb"),
            ..notification()
        });
        assert!(matches!(
            control,
            Err(Verdict::Permanent {
                deactivate: None,
                ..
            })
        ));
    }

    #[test]
    fn malformed_tokens_are_refused_and_deactivated() {
        let e = encoder();
        let long = "a".repeat(MAX_DEVICE_TOKEN_HEX_DIGITS + 1);
        for token in ["", "not-hex", "../../etc", long.as_str()] {
            let got = e.prepare(&ApnsNotification {
                device_token: token,
                ..notification()
            });
            assert!(
                matches!(
                    got,
                    Err(Verdict::Permanent {
                        deactivate: Some(_),
                        ..
                    })
                ),
                "{token:?}"
            );
        }
    }

    #[test]
    fn priority_and_payload_size_are_checked_per_push_type() {
        let e = encoder();
        let bad_priority = e.prepare(&ApnsNotification {
            priority: 7,
            ..notification()
        });
        assert!(
            matches!(bad_priority, Err(Verdict::Permanent { ref reason, .. }) if reason.starts_with("BadPriority"))
        );
        let big = Bytes::from(vec![b' '; MAX_PAYLOAD_BYTES + 1]);
        let alert = e.prepare(&ApnsNotification {
            payload: big.clone(),
            ..notification()
        });
        assert!(
            matches!(alert, Err(Verdict::Permanent { ref reason, .. }) if reason.starts_with("PayloadTooLarge"))
        );
        assert!(
            e.prepare(&ApnsNotification {
                payload: big,
                push_type: PushType::Voip,
                ..notification()
            })
            .is_ok()
        );
        let empty = e.prepare(&ApnsNotification {
            payload: Bytes::new(),
            ..notification()
        });
        assert!(
            matches!(empty, Err(Verdict::Permanent { ref reason, .. }) if reason.starts_with("PayloadEmpty"))
        );
    }

    #[test]
    fn prepared_request_is_reusable_across_attempts() {
        let e = encoder();
        let prepared = e.prepare(&notification()).unwrap();
        let first = prepared.to_request(&HeaderValue::from_static("bearer old"), e.topic(), true);
        let second = prepared.to_request(&HeaderValue::from_static("bearer new"), e.topic(), false);
        assert_eq!(first.uri(), second.uri());
        assert_eq!(header(&second, "authorization"), Some("bearer new"));
        assert_eq!(
            header(&second, "apns-id"),
            Some("0f8fad5b-d9cb-469f-a165-70867728950e")
        );
    }

    #[test]
    fn shared_copies_keep_their_bytes_across_arena_chunks() {
        let e = encoder();
        // More than one arena chunk's worth, kept alive while new ones are carved.
        let copies: Vec<(Vec<u8>, Bytes)> = (0..200u8)
            .map(|i| {
                let payload = vec![i; 100 + usize::from(i)];
                let copy = e.shared_copy(&payload);
                (payload, copy)
            })
            .collect();
        for (payload, copy) in &copies {
            assert_eq!(&copy[..], &payload[..]);
            // A clone per attempt shares the bytes rather than copying them.
            assert_eq!(copy.clone().as_ptr(), copy.as_ptr());
        }
    }

    #[test]
    fn per_notification_headers_stay_out_of_the_hpack_table_after_a_connections_first_request() {
        let e = encoder();
        let prepared = e.prepare(&notification()).unwrap();
        let auth = HeaderValue::from_static("bearer x");
        let sensitive = |r: &Request<()>, name: &str| r.headers()[name].is_sensitive();
        let per_notification = ["apns-id", "apns-expiration", "apns-collapse-id"];
        let repeating = [
            "apns-topic",
            "apns-push-type",
            "apns-priority",
            "content-type",
        ];

        let first = prepared.to_request(&auth, e.topic(), true);
        for name in per_notification.iter().chain(&repeating) {
            assert!(
                !sensitive(&first, name),
                "{name} may be indexed in the first request"
            );
        }
        let later = prepared.to_request(&auth, e.topic(), false);
        for name in per_notification {
            assert!(sensitive(&later, name), "{name} must not be indexed again");
            assert_eq!(later.headers()[name], first.headers()[name], "{name} value");
        }
        for name in repeating {
            assert!(
                !sensitive(&later, name),
                "{name} repeats: keep it indexable"
            );
        }
    }
}
