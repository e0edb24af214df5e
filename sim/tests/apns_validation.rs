//! Scenario: the simulator accepts a well-formed push (200, `apns-id` echoed, exactly what was
//! sent recorded) and answers every malformed one with APNs' status and reason.

mod common;

use bytes::Bytes;
use common::{Apns, TOPIC, alert, push, send, token};

#[tokio::test]
async fn valid_push_is_accepted_and_its_apns_id_echoed() {
    let apns = Apns::start(|_| {});
    let client = apns.client().await;
    let jwt = apns.jwt(0);
    let id = "0f8fad5b-d9cb-469f-a165-70867728950e";
    let req = push(&token(1), &jwt)
        .header("apns-id", id)
        .header("apns-expiration", "1900000000")
        .header("apns-collapse-id", "order-42");
    let body = Bytes::from_static(
        br#"{"aps":{"alert":{"title":"Shipped","body":"On its way"}},"order":"42"}"#,
    );
    let a = send(&client, req, body.clone()).await.expect("send");
    assert_eq!(a.status, 200);
    assert_eq!(a.apns_id.as_deref(), Some(id));
    assert!(a.body.is_empty(), "200 has an empty body");

    let recent = apns.sim.recent();
    assert_eq!(recent.len(), 1);
    let p = &recent[0];
    assert_eq!(p.token, token(1));
    assert_eq!(p.apns_id, id);
    assert!(p.apns_id_from_request);
    assert_eq!(p.topic, TOPIC);
    assert_eq!(p.push_type.as_deref(), Some("alert"));
    assert_eq!(p.priority, Some(10));
    assert_eq!(p.expiration.as_deref(), Some("1900000000"));
    assert_eq!(p.collapse_id.as_deref(), Some("order-42"));
    assert_eq!(p.payload.as_bytes(), &body[..]);
    let json = p.payload_json().expect("json");
    assert_eq!(json["aps"]["alert"]["title"], "Shipped");
    assert_eq!(json["order"], "42");

    let stats = apns.sim.stats();
    assert_eq!(
        (stats.requests, stats.accepted, stats.connections),
        (1, 1, 1)
    );
}

#[tokio::test]
async fn missing_apns_id_gets_a_generated_lowercase_uuid() {
    let apns = Apns::start(|_| {});
    let client = apns.client().await;
    let a = send(&client, push(&token(2), &apns.jwt(0)), alert(1))
        .await
        .expect("send");
    assert_eq!(a.status, 200);
    let id = a.apns_id.expect("apns-id");
    assert_eq!(id.len(), 36);
    assert_eq!(id, id.to_lowercase());
    assert_eq!(id.matches('-').count(), 4);
    assert!(!apns.sim.recent()[0].apns_id_from_request);
}

fn rebuild(uri: &str, method: &str, jwt: &str, skip: &str) -> http::request::Builder {
    let mut b = http::Request::builder().method(method).uri(uri);
    for (name, value) in [
        ("authorization", format!("bearer {jwt}")),
        ("apns-topic", TOPIC.to_string()),
        ("apns-push-type", "alert".to_string()),
    ] {
        if name != skip {
            b = b.header(name, value);
        }
    }
    b
}

#[tokio::test]
async fn each_malformed_header_gets_its_reason() {
    let apns = Apns::start(|_| {});
    let client = apns.client().await;
    let jwt = apns.jwt(0);
    let good = format!("https://localhost/3/device/{}", token(3));
    let cases: Vec<(&str, http::request::Builder, Bytes, u16, &str)> = vec![
        (
            "GET",
            rebuild(&good, "GET", &jwt, ""),
            Bytes::new(),
            405,
            "MethodNotAllowed",
        ),
        (
            "path",
            rebuild("https://localhost/3/devices/abc", "POST", &jwt, ""),
            alert(0),
            404,
            "BadPath",
        ),
        (
            "no token",
            rebuild("https://localhost/3/device/", "POST", &jwt, ""),
            alert(0),
            400,
            "MissingDeviceToken",
        ),
        (
            "short token",
            push("abcd", &jwt),
            alert(0),
            400,
            "BadDeviceToken",
        ),
        (
            "non-hex token",
            push(&"z".repeat(64), &jwt),
            alert(0),
            400,
            "BadDeviceToken",
        ),
        (
            "no topic",
            rebuild(&good, "POST", &jwt, "apns-topic"),
            alert(0),
            400,
            "MissingTopic",
        ),
        (
            "other topic",
            rebuild(&good, "POST", &jwt, "apns-topic").header("apns-topic", "com.other.app"),
            alert(0),
            400,
            "TopicDisallowed",
        ),
        (
            "bad topic",
            rebuild(&good, "POST", &jwt, "apns-topic").header("apns-topic", "bad topic!"),
            alert(0),
            400,
            "BadTopic",
        ),
        (
            "push type",
            rebuild(&good, "POST", &jwt, "apns-push-type").header("apns-push-type", "fax"),
            alert(0),
            400,
            "InvalidPushType",
        ),
        (
            "priority",
            rebuild(&good, "POST", &jwt, "").header("apns-priority", "7"),
            alert(0),
            400,
            "BadPriority",
        ),
        (
            "expiration",
            push(&token(3), &jwt).header("apns-expiration", "tomorrow"),
            alert(0),
            400,
            "BadExpirationDate",
        ),
        (
            "collapse id",
            push(&token(3), &jwt).header("apns-collapse-id", "c".repeat(65)),
            alert(0),
            400,
            "BadCollapseId",
        ),
        (
            "apns-id",
            push(&token(3), &jwt).header("apns-id", "not-a-uuid"),
            alert(0),
            400,
            "BadMessageId",
        ),
        (
            "duplicate",
            push(&token(3), &jwt).header("apns-topic", TOPIC),
            alert(0),
            400,
            "DuplicateHeaders",
        ),
        (
            "empty",
            push(&token(3), &jwt),
            Bytes::new(),
            400,
            "PayloadEmpty",
        ),
        (
            "not json",
            push(&token(3), &jwt),
            Bytes::from_static(b"hello"),
            400,
            "BadPayload",
        ),
        (
            "no aps",
            push(&token(3), &jwt),
            Bytes::from_static(b"{\"a\":1}"),
            400,
            "BadPayload",
        ),
        (
            "no auth",
            rebuild(&good, "POST", &jwt, "authorization"),
            alert(0),
            403,
            "MissingProviderToken",
        ),
    ];
    let n = cases.len() as u64;
    for (name, req, body, status, reason) in cases {
        let a = send(&client, req, body).await.expect(name);
        assert_eq!(a.status, status, "{name}");
        assert_eq!(a.reason().as_deref(), Some(reason), "{name}");
        assert!(a.apns_id.is_some(), "{name}: apns-id on every answer");
    }
    // Background pushes must not use priority 10.
    let req = rebuild(&good, "POST", &jwt, "apns-push-type")
        .header("apns-push-type", "background")
        .header("apns-priority", "10");
    let a = send(&client, req, alert(0)).await.expect("background");
    assert_eq!(
        (a.status, a.reason().as_deref()),
        (400, Some("BadPriority"))
    );
    let req = rebuild(&good, "POST", &jwt, "apns-push-type")
        .header("apns-push-type", "background")
        .header("apns-priority", "5");
    assert_eq!(
        send(&client, req, alert(0)).await.expect("bg 5").status,
        200
    );

    let stats = apns.sim.stats();
    assert_eq!(stats.requests, n + 2);
    assert_eq!(stats.accepted, 1);
    assert_eq!(stats.by_reason.get("BadDeviceToken"), Some(&2));
    assert_eq!(stats.by_reason.get("BadPayload"), Some(&2));
    assert_eq!(stats.by_status.get(&403), Some(&1));
    assert_eq!(
        apns.sim.recent().len(),
        1,
        "only accepted pushes are recorded"
    );
}

#[tokio::test]
async fn payload_limits_are_4096_and_5120_for_voip() {
    let apns = Apns::start(|_| {});
    let client = apns.client().await;
    let jwt = apns.jwt(0);
    let sized = |n: usize| {
        let pad = n - r#"{"aps":{},"p":""}"#.len();
        Bytes::from(format!(r#"{{"aps":{{}},"p":"{}"}}"#, "x".repeat(pad)))
    };
    assert_eq!(
        send(&client, push(&token(4), &jwt), sized(4096))
            .await
            .expect("4096")
            .status,
        200
    );
    let a = send(&client, push(&token(4), &jwt), sized(4097))
        .await
        .expect("4097");
    assert_eq!(
        (a.status, a.reason().as_deref()),
        (413, Some("PayloadTooLarge"))
    );
    let voip = |b: http::request::Builder| {
        let mut req = b.body(()).expect("req");
        req.headers_mut()
            .insert("apns-push-type", "voip".parse().expect("hv"));
        req.headers_mut()
            .insert("apns-topic", format!("{TOPIC}.voip").parse().expect("hv"));
        let (parts, ()) = req.into_parts();
        let mut b = http::Request::builder().method(parts.method).uri(parts.uri);
        for (k, v) in &parts.headers {
            b = b.header(k, v);
        }
        b
    };
    let a = send(&client, voip(push(&token(4), &jwt)), sized(5120))
        .await
        .expect("voip 5120");
    assert_eq!(a.status, 200);
    let a = send(&client, voip(push(&token(4), &jwt)), sized(5121))
        .await
        .expect("voip 5121");
    assert_eq!(a.status, 413);
}
