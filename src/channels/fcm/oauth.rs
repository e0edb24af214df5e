//! FCM's access tokens, from a service account (Google's OAuth 2.0 JWT bearer flow): an RS256
//! assertion (`iss` the account, `scope` firebase.messaging, `aud` the token URI, at most an
//! hour), exchanged at the account's `token_uri` for an access token that lasts `expires_in`.
//!
//! Tokens are shared by the shards through [`SharedTokens`], touched only when a shard's own
//! copy nears its refresh time, never per send: the shard that takes the lease refreshes (one
//! refresh at a time for the process), the others keep sending with their still-valid copy and
//! pick the new token up from the shared slot. A send waits for a token only when its shard has
//! none that is still valid.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use http::{Method, Request, StatusCode};
use ring::rand::SystemRandom;
use ring::signature::RSA_PKCS1_SHA256;
use serde::Deserialize;

use super::service_account::ServiceAccount;
use crate::h2client::{Pool, StreamError};
use crate::wait::{Signal, within};

/// The scope FCM's send endpoint asks for.
pub const SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";
/// An assertion's life: Google takes at most an hour.
pub const ASSERTION_LIFETIME: Duration = Duration::from_secs(3600);
/// How long before its expiry a token is refreshed: a quarter of its life, at most this.
pub const MAX_REFRESH_MARGIN: Duration = Duration::from_secs(300);
/// How long a shard's refresh lease keeps the other shards from starting one of their own.
pub const REFRESH_LEASE: Duration = Duration::from_secs(30);
/// Bound on one token exchange.
pub const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(20);
/// How often a shard with no valid token looks for the one another shard is fetching.
const LEASE_POLL: Duration = Duration::from_millis(50);
/// A token this close to expiry is not used: the request could arrive after it.
const MIN_VALIDITY: Duration = Duration::from_secs(2);

/// An access token and when to replace it, as the process shares it.
#[derive(Clone, Debug)]
pub struct AccessToken {
    /// `Bearer <token>`, ready for the `authorization` header.
    pub authorization: String,
    pub refresh_at: Instant,
    pub expires_at: Instant,
}

/// A shard's own copy of the token: sends clone an `Rc`, so no reference count is shared
/// between shards on the send path.
#[derive(Clone, Debug)]
pub struct LocalToken {
    pub authorization: Rc<str>,
    pub refresh_at: Instant,
    pub expires_at: Instant,
}

impl From<&AccessToken> for LocalToken {
    fn from(t: &AccessToken) -> LocalToken {
        LocalToken {
            authorization: Rc::from(t.authorization.as_str()),
            refresh_at: t.refresh_at,
            expires_at: t.expires_at,
        }
    }
}

/// Why no token could be had.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenFailure {
    /// The token endpoint refused the assertion (wrong key, unknown account, bad scope): an
    /// operator must act.
    Refused(String),
    /// The token endpoint could not be reached or failed (5xx, timeout): try again later.
    Unavailable(String),
}

/// The process's newest token and the refresh lease, shared by the shards.
#[derive(Default)]
pub struct SharedTokens {
    state: Mutex<Shared>,
}

#[derive(Default)]
struct Shared {
    token: Option<AccessToken>,
    lease_until: Option<Instant>,
    refreshes: u64,
}

impl SharedTokens {
    fn with<T>(&self, f: impl FnOnce(&mut Shared) -> T) -> T {
        // A poisoned lock only means a shard panicked mid-update of plain data: keep using it.
        let mut guard = match self.state.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        f(&mut guard)
    }

    fn latest(&self) -> Option<AccessToken> {
        self.with(|s| s.token.clone())
    }

    /// Takes the refresh lease unless another shard holds it.
    fn try_lease(&self, now: Instant) -> bool {
        self.with(|s| {
            if s.lease_until.is_some_and(|until| until > now) {
                return false;
            }
            s.lease_until = Some(now + REFRESH_LEASE);
            true
        })
    }

    fn publish(&self, token: Option<AccessToken>) {
        self.with(|s| {
            if let Some(t) = token {
                s.token = Some(t);
                s.refreshes += 1;
            }
            s.lease_until = None;
        });
    }

    /// Tokens fetched since start, by every shard.
    pub fn refreshes(&self) -> u64 {
        self.with(|s| s.refreshes)
    }
}

/// The RS256 assertion for `account` at `now_s` (unix seconds).
pub fn assertion(account: &ServiceAccount, now_s: u64) -> Result<String, String> {
    let header = serde_json::json!({"alg": "RS256", "typ": "JWT", "kid": account.private_key_id});
    let claims = serde_json::json!({
        "iss": account.client_email,
        "scope": SCOPE,
        "aud": account.token_uri,
        "iat": now_s,
        "exp": now_s + ASSERTION_LIFETIME.as_secs(),
    });
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let mut signature = vec![0u8; account.key.public().modulus_len()];
    account
        .key
        .sign(
            &RSA_PKCS1_SHA256,
            &SystemRandom::new(),
            signing_input.as_bytes(),
            &mut signature,
        )
        .map_err(|_| "RS256 signing failed".to_string())?;
    Ok(format!(
        "{signing_input}.{}",
        URL_SAFE_NO_PAD.encode(signature)
    ))
}

/// The token request's form body.
pub fn token_request_body(assertion: &str) -> String {
    format!(
        "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion={assertion}"
    )
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
    expires_in: u64,
    #[serde(default)]
    token_type: Option<String>,
}

/// Reads the token endpoint's answer, received at `now`.
pub fn read_answer(
    status: StatusCode,
    body: &[u8],
    now: Instant,
) -> Result<AccessToken, TokenFailure> {
    let text = String::from_utf8_lossy(body);
    if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
        return Err(TokenFailure::Unavailable(format!(
            "token endpoint answered {status}: {text}"
        )));
    }
    if !status.is_success() {
        return Err(TokenFailure::Refused(format!(
            "token endpoint refused the assertion: {status} {text}"
        )));
    }
    let a: TokenAnswer = serde_json::from_slice(body)
        .map_err(|e| TokenFailure::Unavailable(format!("token endpoint answer unreadable: {e}")))?;
    if a.token_type
        .as_deref()
        .is_some_and(|t| !t.eq_ignore_ascii_case("bearer"))
        || a.access_token.is_empty()
    {
        return Err(TokenFailure::Refused(format!(
            "token endpoint gave no bearer token: {text}"
        )));
    }
    let life = Duration::from_secs(a.expires_in.max(1));
    let margin = (life / 4).min(MAX_REFRESH_MARGIN);
    Ok(AccessToken {
        authorization: format!("Bearer {}", a.access_token),
        refresh_at: now + life - margin,
        expires_at: now + life,
    })
}

/// One shard's view of the tokens: its own copy, the shared slot, and its way to the token
/// endpoint.
pub struct Tokens {
    account: ServiceAccount,
    shared: Arc<SharedTokens>,
    local: RefCell<Option<LocalToken>>,
    refreshing: Cell<bool>,
    /// Notified when a refresh on this shard ends.
    refreshed: Signal,
    last_failure: RefCell<Option<TokenFailure>>,
    pool: Rc<Pool>,
    authority: http::uri::Authority,
    path: String,
}

impl Tokens {
    pub(crate) fn new(
        account: ServiceAccount,
        shared: Arc<SharedTokens>,
        pool: Rc<Pool>,
        authority: http::uri::Authority,
        path: String,
    ) -> Tokens {
        Tokens {
            account,
            shared,
            local: RefCell::new(None),
            refreshing: Cell::new(false),
            refreshed: Signal::default(),
            last_failure: RefCell::new(None),
            pool,
            authority,
            path,
        }
    }

    /// A token to send with now. Starts a refresh in the background when the shard's token
    /// nears its refresh time; waits only when it has no valid token at all.
    pub async fn current(self: &Rc<Self>) -> Result<LocalToken, TokenFailure> {
        loop {
            let now = Instant::now();
            let local = self.local.borrow().clone();
            if let Some(t) = local.as_ref().filter(|t| t.refresh_at > now) {
                return Ok(t.clone());
            }
            // Another shard may have refreshed already.
            if self.take_fresher_shared() {
                continue;
            }
            if let Some(t) = local.filter(|t| t.expires_at > now + MIN_VALIDITY) {
                // Marked before the task is spawned, so the sends until it runs start no
                // refresh of their own (each would fetch another token once this one ends).
                if !self.refreshing.replace(true) {
                    let me = self.clone();
                    glommio::spawn_local(async move { me.refresh().await }).detach();
                }
                return Ok(t);
            }
            if self.refreshing.replace(true) {
                self.refreshed.wait_until(|| !self.refreshing.get()).await;
            } else {
                self.refresh().await;
            }
            let now = Instant::now();
            let got = self
                .local
                .borrow()
                .clone()
                .filter(|t| t.expires_at > now + MIN_VALIDITY);
            if let Some(t) = got {
                return Ok(t);
            }
            if let Some(f) = self.last_failure.borrow().clone() {
                return Err(f);
            }
        }
    }

    /// Copies the shared token when it outlives this shard's own; whether it did.
    fn take_fresher_shared(&self) -> bool {
        let Some(shared) = self.shared.latest() else {
            return false;
        };
        let fresher = self
            .local
            .borrow()
            .as_ref()
            .is_none_or(|l| shared.expires_at > l.expires_at);
        if fresher {
            *self.local.borrow_mut() = Some(LocalToken::from(&shared));
        }
        fresher
    }

    /// The endpoint rejected `used` (401 on a send): forget it, so the next send fetches anew.
    pub fn rejected(&self, used: &LocalToken) {
        let mut local = self.local.borrow_mut();
        if local
            .as_ref()
            .is_some_and(|t| Rc::ptr_eq(&t.authorization, &used.authorization))
        {
            *local = None;
        }
        drop(local);
        self.shared.with(|s| {
            if s.token
                .as_ref()
                .is_some_and(|t| *t.authorization == *used.authorization)
            {
                s.token = None;
            }
        });
    }

    /// Fetches a token (holding the process's lease) or waits for the shard that holds it. The
    /// caller has set `refreshing`: one refresh per shard at a time.
    async fn refresh(&self) {
        let deadline = Instant::now() + EXCHANGE_TIMEOUT + REFRESH_LEASE;
        loop {
            let now = Instant::now();
            // Another shard's token first: once it has published one, its lease is free again,
            // and taking the lease then would fetch a second token for nothing.
            if self.take_fresher_shared() {
                break;
            }
            if self.shared.try_lease(now) {
                let got = within(EXCHANGE_TIMEOUT, self.exchange())
                    .await
                    .unwrap_or_else(|| {
                        Err(TokenFailure::Unavailable("token exchange timed out".into()))
                    });
                match got {
                    Ok(t) => {
                        *self.local.borrow_mut() = Some(LocalToken::from(&t));
                        *self.last_failure.borrow_mut() = None;
                        self.shared.publish(Some(t));
                    }
                    Err(f) => {
                        tracing::warn!(failure = ?f, "FCM access token refresh failed");
                        *self.last_failure.borrow_mut() = Some(f);
                        self.shared.publish(None);
                    }
                }
                break;
            }
            // Another shard is fetching one: its token is taken above once it is there.
            if now > deadline {
                *self.last_failure.borrow_mut() = Some(TokenFailure::Unavailable(
                    "no access token: another shard's refresh did not finish".into(),
                ));
                break;
            }
            glommio::timer::sleep(LEASE_POLL).await;
        }
        self.refreshing.set(false);
        self.refreshed.notify();
    }

    /// One exchange at the token endpoint.
    async fn exchange(&self) -> Result<AccessToken, TokenFailure> {
        let now_s = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let assertion = assertion(&self.account, now_s).map_err(TokenFailure::Refused)?;
        let body = Bytes::from(token_request_body(&assertion));
        let Some(permit) = self.pool.acquire().await else {
            return Err(TokenFailure::Unavailable("sender closed".into()));
        };
        let uri = format!("https://{}{}", self.authority, self.path);
        let build = |_first: bool| {
            let mut r = Request::new(());
            *r.method_mut() = Method::POST;
            if let Ok(u) = uri.parse() {
                *r.uri_mut() = u;
            }
            r.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/x-www-form-urlencoded"),
            );
            r
        };
        let answer = permit
            .connection()
            .round_trip(build, body)
            .await
            .map_err(|e| {
                let why = match e {
                    StreamError::Reset(r) => format!("token request reset ({r:?})"),
                    _ => "token endpoint connection lost".to_string(),
                };
                TokenFailure::Unavailable(why)
            })?;
        read_answer(answer.status, &answer.body, Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::super::service_account::tests::key_file;
    use super::*;
    use ring::signature::{RSA_PKCS1_2048_8192_SHA256, UnparsedPublicKey};

    #[test]
    fn the_assertion_is_rs256_with_googles_claims() {
        let account =
            ServiceAccount::parse(key_file("https://oauth2.googleapis.com/token").as_bytes())
                .unwrap();
        let jwt = assertion(&account, 1_700_000_000).unwrap();
        let parts: Vec<&str> = jwt.split('.').collect();
        assert_eq!(parts.len(), 3);
        let header: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
        assert_eq!(
            header,
            serde_json::json!({"alg": "RS256", "typ": "JWT", "kid": "k1"})
        );
        let claims: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        assert_eq!(claims["iss"], "sender@demo.iam.gserviceaccount.com");
        assert_eq!(claims["scope"], SCOPE);
        assert_eq!(claims["aud"], "https://oauth2.googleapis.com/token");
        assert_eq!(
            claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(),
            3600
        );
        let public = UnparsedPublicKey::new(
            &RSA_PKCS1_2048_8192_SHA256,
            account.key.public().as_ref().to_vec(),
        );
        let signature = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
        public
            .verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &signature)
            .unwrap();
        assert!(token_request_body(&jwt).starts_with(
            "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion=ey"
        ));
    }

    #[test]
    fn answers_are_tokens_refusals_or_outages() {
        let now = Instant::now();
        let t = read_answer(
            StatusCode::OK,
            br#"{"access_token":"ya29.x","expires_in":3600,"token_type":"Bearer"}"#,
            now,
        )
        .unwrap();
        assert_eq!(&*t.authorization, "Bearer ya29.x");
        assert_eq!(t.expires_at - now, Duration::from_secs(3600));
        assert_eq!(t.expires_at - t.refresh_at, MAX_REFRESH_MARGIN);
        // A one-minute token is refreshed with a quarter of its life left.
        let t = read_answer(
            StatusCode::OK,
            br#"{"access_token":"a","expires_in":60}"#,
            now,
        )
        .unwrap();
        assert_eq!(t.expires_at - t.refresh_at, Duration::from_secs(15));
        assert!(matches!(
            read_answer(
                StatusCode::BAD_REQUEST,
                br#"{"error":"invalid_grant"}"#,
                now
            ),
            Err(TokenFailure::Refused(_))
        ));
        assert!(matches!(
            read_answer(StatusCode::UNAUTHORIZED, b"", now),
            Err(TokenFailure::Refused(_))
        ));
        assert!(matches!(
            read_answer(StatusCode::SERVICE_UNAVAILABLE, b"", now),
            Err(TokenFailure::Unavailable(_))
        ));
        assert!(matches!(
            read_answer(StatusCode::OK, b"{}", now),
            Err(TokenFailure::Unavailable(_))
        ));
    }

    #[test]
    fn one_shard_holds_the_lease_at_a_time() {
        let shared = SharedTokens::default();
        let now = Instant::now();
        assert!(shared.try_lease(now));
        assert!(!shared.try_lease(now), "held");
        assert!(
            shared.try_lease(now + REFRESH_LEASE + Duration::from_millis(1)),
            "expired leases lapse"
        );
        shared.publish(None);
        assert!(shared.try_lease(now), "released");
        assert_eq!(shared.refreshes(), 0);
    }
}
