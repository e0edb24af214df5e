//! The alerts' task on shard 0: checks the rules every interval, keeps each alert's state
//! (firing or not, when it was last posted), logs every change, and posts it to the webhook
//! through an HTTP/1.1 pool of its own, each post a task of its own with retries, bounded in
//! number: a slow or dead webhook costs delivery nothing.

use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use serde_json::json;
use tracing::{info, warn};

use super::{AlertKey, AlertsConfig, Firing, evaluate};
use crate::engine::probe::ProbeSnapshot;
use crate::h1client::H1Pool;
use crate::h2client::Endpoint;
use crate::http::service::{Api, snapshots};
use crate::sync::Latch;

/// Posts waiting for the webhook, sent one at a time in order (so a resolution never arrives
/// before its firing); past it a new one is dropped and logged, and its alert tried again at the
/// next check.
pub const MAX_QUEUED_POSTS: usize = 64;
/// Attempts per post, and the wait before the first retry (doubled each time).
const POST_ATTEMPTS: u32 = 4;
const FIRST_RETRY: Duration = Duration::from_secs(1);
/// Connections to the webhook.
const WEBHOOK_CONNECTIONS: usize = 2;
/// A post's time limit: the webhook answers within it or the attempt counts as failed.
const POST_TIMEOUT: Duration = Duration::from_secs(10);

/// The webhook's origin and path (`http` allowed: an in-cluster receiver).
pub fn target(url: &str) -> Result<(Endpoint, String), String> {
    let uri: http::Uri = url
        .parse()
        .map_err(|e| format!("`{url}` is not a URL: {e}"))?;
    let (Some(scheme), Some(authority)) = (uri.scheme_str(), uri.authority()) else {
        return Err(format!("`{url}` must be http(s)://host[:port]/path"));
    };
    let endpoint = Endpoint::parse_with(&format!("{scheme}://{authority}"), true)
        .map_err(|e| e.to_string())?;
    let path = uri
        .path_and_query()
        .map_or_else(|| "/".to_string(), |p| p.as_str().to_string());
    Ok((endpoint, path))
}

#[derive(Default)]
struct AlertState {
    firing: bool,
    /// Its firing was posted (so its resolution is posted too).
    posted: bool,
    last_post: Option<Instant>,
    /// What it said when it last fired: posted once the cool-down allows, if it still fires.
    last: Option<Firing>,
}

/// Runs until `stop`: on shard 0 only.
pub async fn run(api: Rc<Api>, cfg: AlertsConfig, instance: String, stop: Latch) {
    let pool = match target(&cfg.webhook_url)
        .map_err(|e| e.to_string())
        .and_then(|(endpoint, path)| {
            H1Pool::new("alerts", endpoint, None, WEBHOOK_CONNECTIONS)
                .map(|p| (Rc::new(p), Rc::new(path)))
                .map_err(|e| e.to_string())
        }) {
        Ok(p) => p,
        Err(e) => {
            warn!(error = %e, "alerts off: the webhook cannot be reached");
            return;
        }
    };
    info!(webhook = %cfg.webhook_url, interval_s = cfg.interval.as_secs_f64(), "alerts on");
    let (queue, posts) = glommio::channels::local_channel::new_bounded::<Bytes>(MAX_QUEUED_POSTS);
    {
        let (pool, path) = (pool.0.clone(), pool.1.clone());
        glommio::spawn_local(async move {
            while let Some(body) = posts.recv().await {
                post(&pool, &path, body).await;
            }
        })
        .detach();
    }
    let enqueue = |body: Bytes| -> bool {
        let queued = queue.try_send(body).is_ok();
        if !queued {
            warn!("alert not posted now: {MAX_QUEUED_POSTS} posts wait for the webhook already");
        }
        queued
    };
    let mut before: Option<ProbeSnapshot> = None;
    let mut states: HashMap<AlertKey, AlertState> = HashMap::new();
    loop {
        let stopped = futures_lite::future::or(
            async {
                stop.wait().await;
                true
            },
            async {
                glommio::timer::sleep(cfg.interval).await;
                false
            },
        )
        .await;
        if stopped {
            return;
        }
        let Ok(shards) = snapshots(&api).await else {
            continue;
        };
        let mut total = ProbeSnapshot::default();
        for s in &shards {
            total.add(s);
        }
        if let Some(b) = &before {
            let firing = evaluate(&cfg, b, &total);
            let now = Instant::now();
            for f in &firing {
                let st = states.entry(f.key).or_default();
                if !st.firing {
                    warn!(
                        alert = f.key.kind,
                        channel = channel_name(f.key),
                        value = f.value,
                        threshold = f.threshold,
                        "alert firing: {}",
                        f.message
                    );
                }
                st.firing = true;
                st.last = Some(f.clone());
                // Posted when it starts firing, or, if it started within the cool-down of its
                // last post, once the cool-down is over and it still fires.
                if !st.posted
                    && st.last_post.is_none_or(|t| now - t >= cfg.cooldown)
                    && enqueue(body(f, "firing", &instance))
                {
                    st.posted = true;
                    st.last_post = Some(now);
                }
            }
            for (key, st) in &mut states {
                if st.firing && !firing.iter().any(|f| f.key == *key) {
                    st.firing = false;
                    info!(
                        alert = key.kind,
                        channel = channel_name(*key),
                        "alert resolved"
                    );
                    if std::mem::take(&mut st.posted) {
                        let resolved = Firing {
                            key: *key,
                            value: 0.0,
                            threshold: st.last.as_ref().map_or(0.0, |f| f.threshold),
                            message: format!("{} resolved", key.kind),
                        };
                        if !enqueue(body(&resolved, "resolved", &instance)) {
                            // Said again at the next check.
                            st.firing = true;
                            st.posted = true;
                        }
                    }
                }
            }
        }
        before = Some(total);
    }
}

fn channel_name(key: AlertKey) -> &'static str {
    key.channel.map_or("all", |c| c.as_str())
}

fn body(f: &Firing, status: &str, instance: &str) -> Bytes {
    let v = json!({
        "alert": f.key.kind,
        "channel": channel_name(f.key),
        "status": status,
        "value": f.value,
        "threshold": f.threshold,
        "message": f.message,
        "at": crate::api::status::rfc3339_ms(crate::engine::now_ms()),
        "instance": instance,
    });
    Bytes::from(serde_json::to_vec(&v).unwrap_or_default())
}

/// Posts one alert, retrying a failed connection or a `5xx`/`429` with a doubling wait.
async fn post(pool: &H1Pool, path: &str, body: Bytes) {
    let mut wait = FIRST_RETRY;
    for attempt in 1..=POST_ATTEMPTS {
        let outcome = crate::wait::within(POST_TIMEOUT, async {
            let turn = pool.turn().await.map_err(|e| format!("{e:?}"))?;
            pool.send(turn, || {
                let mut r = http::Request::new(Full::new(body.clone()));
                *r.method_mut() = http::Method::POST;
                *r.uri_mut() = http::Uri::try_from(path).unwrap_or_default();
                let h = r.headers_mut();
                if let Ok(host) = http::HeaderValue::from_str(pool.authority()) {
                    h.insert(http::header::HOST, host);
                }
                h.insert(
                    http::header::CONTENT_TYPE,
                    http::HeaderValue::from_static("application/json"),
                );
                h.insert(
                    http::header::USER_AGENT,
                    http::HeaderValue::from_static("clarion-alerts"),
                );
                r
            })
            .await
            .map_err(|e| format!("{e:?}"))
        })
        .await
        .unwrap_or_else(|| Err("timed out".into()));
        let why = match outcome {
            Ok(a) if a.status.is_success() => return,
            Ok(a) if a.status.is_server_error() || a.status.as_u16() == 429 => {
                format!("answered {}", a.status)
            }
            Ok(a) => {
                warn!(status = %a.status, "alert refused by the webhook: not retried");
                return;
            }
            Err(e) => e,
        };
        if attempt == POST_ATTEMPTS {
            warn!(reason = %why, attempts = attempt, "alert not delivered to the webhook");
            return;
        }
        glommio::timer::sleep(wait).await;
        wait *= 2;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_webhook_url_splits_into_origin_and_path() {
        let (e, p) = target("https://hooks.example.com/services/T0/B1?x=1").unwrap();
        assert_eq!(e.authority.as_str(), "hooks.example.com");
        assert_eq!(p, "/services/T0/B1?x=1");
        let (_, p) = target("http://127.0.0.1:9000").unwrap();
        assert_eq!(p, "/");
        assert!(target("ftp://x/y").is_err());
        assert!(target("not a url").is_err());
    }
}
