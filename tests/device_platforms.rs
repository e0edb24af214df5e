//! Devices of every push platform over the API (issue 13, items 1 and 4): an iPhone's APNs
//! token, an Android FCM registration token and a browser's Web Push subscription, each with
//! a `device_id`; `GET /v1/users/{id}` shows them; registering again is idempotent and
//! reactivates; `DELETE .../devices/{device_id}` works for all three; a notification reaches
//! every platform, each delivery naming its channel and device; and each channel's payload
//! rules apply only to users reached on that channel.
mod common;

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use clarion_sim::apns::Faults;
use ring::agreement::{ECDH_P256, EphemeralPrivateKey};
use ring::rand::SystemRandom;
use serde_json::{Value, json};

/// A browser's `PushSubscription.toJSON()` with a fresh P-256 key.
fn subscription(endpoint: &str) -> Value {
    let key = EphemeralPrivateKey::generate(&ECDH_P256, &SystemRandom::new()).unwrap();
    let public = key.compute_public_key().unwrap();
    json!({
        "endpoint": endpoint,
        "expirationTime": null,
        "keys": {"p256dh": URL_SAFE_NO_PAD.encode(public.as_ref()), "auth": URL_SAFE_NO_PAD.encode([7u8; 16])},
    })
}

use common::device;

#[test]
fn devices_of_every_platform_are_registered_shown_and_removed() {
    let h = common::start(2, Faults::default(), "");
    h.register("ada", &[]);
    let c = h.client();
    let post = |body: Value| c.call("POST", "/v1/users/ada/devices", Some(body));

    let ios = common::token(1);
    let r = post(json!({"platform": "ios", "token": ios.to_uppercase()}));
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.body["device_id"], ios.as_str());
    assert_eq!(r.body["platform"], "ios");

    let fcm = "dGhpcyBpcyBmY20:APA91bH-x_Y";
    let r = post(json!({"platform": "android", "token": fcm}));
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.body["device_id"], fcm);

    let endpoint = "https://push.example.net/wpush/v2/abc";
    let r = post(json!({"platform": "web", "subscription": subscription(endpoint)}));
    assert_eq!(r.status, 201, "{}", r.body);
    let web_id = r.body["device_id"].as_str().unwrap().to_string();
    assert!(web_id.starts_with("web-"), "{web_id}");
    // The same subscription with new keys is the same device, updated.
    let r = post(json!({"platform": "web", "subscription": subscription(endpoint)}));
    assert_eq!(
        (r.status, r.body["device_id"].as_str()),
        (200, Some(web_id.as_str()))
    );

    let r = c.call("GET", "/v1/users/ada", None);
    assert_eq!(r.status, 200, "{}", r.body);
    let user = r.body;
    assert_eq!(user["user_id"], "ada");
    assert_eq!(user["devices"].as_array().unwrap().len(), 3, "{user}");
    let d = device(&user, &ios);
    assert_eq!(
        (d["platform"].as_str(), d["active"].as_bool()),
        (Some("ios"), Some(true))
    );
    assert_eq!(d["token"], ios.as_str());
    assert_eq!(device(&user, fcm)["platform"], "android");
    let w = device(&user, &web_id);
    assert_eq!(
        (w["platform"].as_str(), w["endpoint"].as_str()),
        (Some("web"), Some(endpoint))
    );
    assert!(w.get("deactivated_reason").is_none(), "{w}");

    // One notification, one delivery per platform, each naming its channel and device.
    let r = h.notify(json!({"user_id": "ada", "idempotency_key": "n1", "title": "Hi"}));
    assert_eq!(r.status, 202, "{}", r.body);
    let status = h.status(r.body["id"].as_str().unwrap());
    let mut reached: Vec<(String, String)> = status["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["channel"].as_str().unwrap().to_string(),
                d["device_id"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    reached.sort();
    let mut expected = vec![
        ("apns".to_string(), ios.clone()),
        ("fcm".to_string(), fcm.to_string()),
        ("webpush".to_string(), web_id.clone()),
    ];
    expected.sort();
    assert_eq!(reached, expected, "{status}");

    // Removed by device id, whatever the platform; the path's iOS id in any case.
    for id in [ios.to_uppercase(), fcm.to_string(), web_id.clone()] {
        let r = c.call("DELETE", &format!("/v1/users/ada/devices/{id}"), None);
        assert_eq!(r.status, 204, "{id}: {}", r.body);
        let r = c.call("DELETE", &format!("/v1/users/ada/devices/{id}"), None);
        assert_eq!(r.status, 404, "{id}: {}", r.body);
        assert_eq!(r.body["error"]["code"], "device_not_found");
    }
    let r = c.call("DELETE", "/v1/users/ada/devices/not%20an%20id", None);
    assert_eq!(
        (r.status, r.body["error"]["field"].as_str()),
        (400, Some("device_id")),
        "{}",
        r.body
    );
    let user = c.call("GET", "/v1/users/ada", None).body;
    assert_eq!(user["devices"], json!([]), "{user}");
    assert_eq!(c.call("GET", "/v1/users/nobody", None).status, 404);
}

#[test]
fn a_device_deactivated_by_its_provider_shows_why_and_when_and_comes_back_when_registered() {
    let h = common::start(1, Faults::default(), "");
    let gone = common::token(410);
    h.register("bo", std::slice::from_ref(&gone));
    h.unregister(&[&gone]);
    let r = h.notify(json!({"user_id": "bo", "idempotency_key": "n1", "title": "t"}));
    h.wait_finished(r.body["id"].as_str().unwrap(), Duration::from_secs(20));
    let c = h.client();
    let user = c.call("GET", "/v1/users/bo", None).body;
    let d = device(&user, &gone);
    assert_eq!(d["active"], false, "{user}");
    assert_eq!(d["deactivated_reason"], "Unregistered");
    assert!(
        d["deactivated_at"].as_u64().unwrap() > 1_700_000_000_000,
        "{d}"
    );
    let r = c.call(
        "POST",
        "/v1/users/bo/devices",
        Some(json!({"platform": "ios", "token": gone})),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let user = c.call("GET", "/v1/users/bo", None).body;
    let d = device(&user, &gone);
    assert_eq!(d["active"], true, "{user}");
    assert!(
        d.get("deactivated_reason").is_none() && d.get("deactivated_at").is_none(),
        "{d}"
    );
}

#[test]
fn bad_devices_are_refused_naming_the_field() {
    let h = common::start(1, Faults::default(), "");
    h.register("cy", &[]);
    let c = h.client();
    let post = |body: Value| c.call("POST", "/v1/users/cy/devices", Some(body));
    let mut sub = subscription("https://push.example.net/x");
    sub["keys"]["p256dh"] = json!(URL_SAFE_NO_PAD.encode([4u8; 65]));
    let mut short_auth = subscription("https://push.example.net/x");
    short_auth["keys"]["auth"] = json!("AAAA");
    let cases = [
        (
            json!({"platform": "android", "token": "has space"}),
            "token",
            "invalid_token",
        ),
        (
            json!({"platform": "android", "token": "a".repeat(4097)}),
            "token",
            "invalid_token",
        ),
        (
            json!({"platform": "web", "subscription": sub}),
            "subscription.keys.p256dh",
            "invalid_key",
        ),
        (
            json!({"platform": "web", "subscription": short_auth}),
            "subscription.keys.auth",
            "invalid_key",
        ),
        (
            json!({"platform": "web", "subscription": subscription("http://push.example.net/x")}),
            "subscription.endpoint",
            "invalid_endpoint",
        ),
        (
            json!({"platform": "web", "subscription": subscription("http://127.0.0.1:1/x")}),
            "subscription.endpoint",
            "invalid_endpoint",
        ),
        (json!({"platform": "web"}), "subscription", "missing_field"),
        (
            json!({"platform": "pager", "token": "x"}),
            "platform",
            "unsupported_platform",
        ),
    ];
    for (body, field, code) in cases {
        let r = post(body.clone());
        assert_eq!(r.status, 400, "{body}: {}", r.body);
        assert_eq!(
            (
                r.body["error"]["field"].as_str(),
                r.body["error"]["code"].as_str()
            ),
            (Some(field), Some(code)),
            "{body}: {}",
            r.body
        );
    }
}

#[test]
fn loopback_http_endpoints_only_when_the_config_allows_them() {
    let h = common::start(
        1,
        Faults::default(),
        "[webpush]\nallow_insecure_loopback = true\n",
    );
    h.register("di", &[]);
    let r = h.client().call(
        "POST",
        "/v1/users/di/devices",
        Some(json!({"platform": "web", "subscription": subscription("http://127.0.0.1:9/push/1")})),
    );
    assert_eq!(r.status, 201, "{}", r.body);
}

#[test]
fn each_channels_payload_rules_apply_to_users_it_reaches() {
    let h = common::start(2, Faults::default(), "");
    let c = h.client();
    h.register("ios-only", &[common::token(5)]);
    h.register("android", &[]);
    let r = c.call(
        "POST",
        "/v1/users/android/devices",
        Some(json!({"platform": "android", "token": "fcm-token-1"})),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    h.register("browser", &[]);
    let r = c.call(
        "POST",
        "/v1/users/browser/devices",
        Some(
            json!({"platform": "web", "subscription": subscription("https://push.example.net/b")}),
        ),
    );
    assert_eq!(r.status, 201, "{}", r.body);

    // FCM reserves `google.*` data keys: refused for a user with an Android device only.
    let reserved = |user: &str, key: &str| {
        h.notify(json!({"user_id": user, "idempotency_key": format!("r-{key}"), "title": "t", "data": {"google.x": "1"}}))
    };
    assert_eq!(reserved("ios-only", "a").status, 202);
    let r = reserved("android", "b");
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(
        (
            r.body["error"]["code"].as_str(),
            r.body["error"]["field"].as_str()
        ),
        (Some("reserved_key"), Some("data"))
    );
    assert!(
        r.body["error"]["message"].as_str().unwrap().contains("fcm"),
        "{}",
        r.body
    );

    // A Web Push Topic is at most 32 base64url characters: refused for a browser's user only.
    let topic = |user: &str| {
        h.notify(json!({"user_id": user, "idempotency_key": "t", "title": "t", "collapse_id": "a.long.topic.that.is.not.base64url.at.all"}))
    };
    assert_eq!(topic("ios-only").status, 202);
    let r = topic("browser");
    assert_eq!(
        (r.status, r.body["error"]["code"].as_str()),
        (400, Some("invalid_topic")),
        "{}",
        r.body
    );

    // 3,993 bytes of plaintext fit a Web Push record; APNs takes 4,096 of payload.
    let body = "x".repeat(3_990);
    let big =
        |user: &str| h.notify(json!({"user_id": user, "idempotency_key": "big", "body": body}));
    assert_eq!(big("ios-only").status, 202);
    let r = big("browser");
    assert_eq!(
        (r.status, r.body["error"]["code"].as_str()),
        (400, Some("payload_too_large")),
        "{}",
        r.body
    );
    assert!(
        r.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("webpush"),
        "{}",
        r.body
    );
    // What no channel could carry is refused for anyone.
    let r = h.notify(json!({"user_id": "ios-only", "idempotency_key": "huge", "body": "x".repeat(4_096), "data": {"k": "x".repeat(1000)}}));
    assert_eq!(
        (r.status, r.body["error"]["code"].as_str()),
        (400, Some("payload_too_large")),
        "{}",
        r.body
    );
}
