//! The registration phase: users `<prefix>0 .. <prefix>N-1`, each with a profile and
//! `devices_per_user` devices (iOS unless `platforms` says otherwise: an Android token or a
//! browser subscription) whose tokens are a pure function of (prefix, user, device),
//! so a later run, a test or the simulator's fault list can name the same tokens. Done by a
//! fixed number of workers over the load's own connections.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use http::Method;
use serde::Serialize;

use super::LoadConfig;
use super::client::ApiClient;
use super::platforms::{Platform, Platforms, Subscriber};
use clarion_sim::apns::mix;

/// Registration requests in flight at once.
const REGISTER_CONCURRENCY: usize = 64;

/// What the registration phase did.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct RegistrationReport {
    pub users: u32,
    pub devices: u64,
    #[serde(with = "super::serde_secs")]
    pub elapsed: Duration,
}

/// The user id of user number `n`.
pub fn user_id(prefix: &str, n: u32) -> String {
    format!("{prefix}{n}")
}

/// The APNs device token (64 lowercase hex chars) of `user`'s device number `device`.
pub fn device_token(prefix: &str, user: u32, device: u32) -> String {
    let mut h = prefix.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    h ^= (u64::from(user) << 32) | u64::from(device);
    let words = [1u64, 2, 3, 4].map(|i| mix(h.wrapping_add(i.wrapping_mul(0x9E37_79B9_7F4A_7C15))));
    format!(
        "{:016x}{:016x}{:016x}{:016x}",
        words[0], words[1], words[2], words[3]
    )
}

/// Registers every user and device; fails on the first answer that is not 2xx.
pub(crate) async fn register(
    client: Arc<ApiClient>,
    cfg: &LoadConfig,
) -> anyhow::Result<RegistrationReport> {
    let started = Instant::now();
    let next = Arc::new(AtomicU32::new(0));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..REGISTER_CONCURRENCY.min(cfg.users.max(1) as usize) {
        let (client, next) = (client.clone(), next.clone());
        let (prefix, users, devices) = (cfg.user_prefix.clone(), cfg.users, cfg.devices_per_user);
        let (platforms, subscriber) = (cfg.platforms, cfg.subscriber.clone());
        workers.spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= users {
                    return Ok::<(), anyhow::Error>(());
                }
                let devices = Devices {
                    count: devices,
                    platforms,
                    subscriber: subscriber.as_ref(),
                };
                register_user(&client, &prefix, n, &devices).await?;
            }
        });
    }
    while let Some(done) = workers.join_next().await {
        done.context("registration worker")??;
    }
    Ok(RegistrationReport {
        users: cfg.users,
        devices: u64::from(cfg.users) * u64::from(cfg.devices_per_user),
        elapsed: started.elapsed(),
    })
}

/// The devices each user gets.
struct Devices<'a> {
    count: u32,
    platforms: Platforms,
    subscriber: Option<&'a Subscriber>,
}

/// The registration body of `user`'s device number `device`.
fn device_body(
    prefix: &str,
    user: u32,
    device: u32,
    d: &Devices<'_>,
) -> anyhow::Result<serde_json::Value> {
    let token = device_token(prefix, user, device);
    let h = u64::from_str_radix(&token[..15], 16).unwrap_or(0);
    Ok(match d.platforms.pick(h) {
        Platform::Ios => serde_json::json!({"platform": "ios", "token": token}),
        Platform::Android => {
            serde_json::json!({"platform": "android", "token": format!("lt-fcm:{token}")})
        }
        Platform::Web => {
            let Some(subscribe) = d.subscriber else {
                bail!("a web device needs the Web Push simulator");
            };
            serde_json::json!({"platform": "web", "subscription": (subscribe.0)()?})
        }
    })
}

async fn register_user(
    client: &ApiClient,
    prefix: &str,
    n: u32,
    devices: &Devices<'_>,
) -> anyhow::Result<()> {
    let uid = user_id(prefix, n);
    let profile = serde_json::json!({
        "email": format!("{uid}@loadtest.invalid"),
        "phone": format!("+1555{:07}", n % 10_000_000),
        "locale": "en-US",
        "timezone": "UTC",
    });
    let path = format!("/v1/users/{uid}");
    expect_2xx(
        client.send(Method::PUT, &path, json_bytes(&profile)).await,
        &path,
    )?;
    let path = format!("/v1/users/{uid}/devices");
    for d in 0..devices.count {
        let body = device_body(prefix, n, d, devices)?;
        expect_2xx(
            client.send(Method::POST, &path, json_bytes(&body)).await,
            &path,
        )?;
    }
    Ok(())
}

fn json_bytes(v: &serde_json::Value) -> Bytes {
    Bytes::from(v.to_string())
}

fn expect_2xx(r: anyhow::Result<super::client::ApiResponse>, path: &str) -> anyhow::Result<()> {
    let r = r.with_context(|| format!("registration request {path}"))?;
    if !(200..300).contains(&r.status) {
        bail!(
            "registration {path}: {} {}",
            r.status,
            String::from_utf8_lossy(&r.body)
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_tokens_are_deterministic_hex_and_distinct() {
        let a = device_token("lt-u", 1, 0);
        assert_eq!(a, device_token("lt-u", 1, 0));
        assert_eq!(a.len(), 64);
        assert!(
            a.bytes()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
        let mut all: Vec<String> = (0..100)
            .flat_map(|u| (0..3).map(move |d| device_token("lt-u", u, d)))
            .collect();
        all.push(device_token("other", 1, 0));
        let n = all.len();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), n);
        assert_eq!(user_id("lt-u", 7), "lt-u7");
    }
}
