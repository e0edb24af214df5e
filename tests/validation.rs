//! Every bad input gets a 4xx with a machine-readable code and a message naming the field;
//! a missing or wrong API key is a 401; nothing bad is accepted.
mod common;

use clarion_sim::apns::Faults;
use serde_json::{Value, json};

fn expect(r: common::http::Response, status: u16, code: &str, field: Option<&str>) {
    assert_eq!(r.status, status, "{}", r.body);
    assert_eq!(r.body["error"]["code"], code, "{}", r.body);
    if let Some(f) = field {
        assert_eq!(r.body["error"]["field"], f, "{}", r.body);
        assert!(
            r.body["error"]["message"].as_str().unwrap().contains(f),
            "{}",
            r.body
        );
    }
}

#[test]
fn bad_inputs_are_refused_with_the_field_named() {
    let h = common::start(2, Faults::default(), "");
    let c = h.client();
    let tok = common::token(1);
    h.register("val", std::slice::from_ref(&tok));

    // Authentication.
    let mut anon = h.client();
    anon.key = None;
    expect(
        anon.call("PUT", "/v1/users/x", Some(json!({}))),
        401,
        "unauthorized",
        None,
    );
    let wrong = common::http::Client::new(h.server.addr, "wrong-key-0123456789");
    expect(
        wrong.call("GET", "/v1/stats", None),
        401,
        "unauthorized",
        None,
    );
    assert_eq!(
        anon.raw("GET", "/healthz", None).status,
        200,
        "healthz needs no key"
    );

    // Users.
    let put = |body: Value| c.call("PUT", "/v1/users/u1", Some(body));
    expect(
        put(json!({"email": "not-an-email"})),
        400,
        "invalid_email",
        Some("email"),
    );
    expect(
        put(json!({"phone": "0155 555"})),
        400,
        "invalid_phone",
        Some("phone"),
    );
    expect(
        put(json!({"phone": "+0123"})),
        400,
        "invalid_phone",
        Some("phone"),
    );
    expect(
        put(json!({"locale": "!!"})),
        400,
        "invalid_locale",
        Some("locale"),
    );
    expect(
        put(json!({"timezone": "Nowhere"})),
        400,
        "invalid_timezone",
        Some("timezone"),
    );
    expect(put(json!({"email": 5})), 400, "invalid_type", Some("email"));
    expect(
        put(json!({"nickname": "x"})),
        400,
        "unknown_field",
        Some("nickname"),
    );
    expect(
        c.raw("PUT", "/v1/users/u1", Some(b"{not json")),
        400,
        "invalid_json",
        None,
    );
    expect(
        c.call("PUT", "/v1/users/bad%20id", Some(json!({}))),
        400,
        "invalid_user_id",
        Some("user_id"),
    );

    // Devices.
    let dev = |body: Value| c.call("POST", "/v1/users/val/devices", Some(body));
    expect(
        dev(json!({"platform": "ios", "token": "abc"})),
        400,
        "invalid_token",
        Some("token"),
    );
    expect(
        dev(json!({"platform": "ios", "token": "z".repeat(64)})),
        400,
        "invalid_token",
        Some("token"),
    );
    expect(
        dev(json!({"platform": "symbian", "token": tok})),
        400,
        "unsupported_platform",
        Some("platform"),
    );
    expect(
        dev(json!({"token": tok})),
        400,
        "missing_field",
        Some("platform"),
    );
    expect(
        c.call(
            "POST",
            "/v1/users/nobody/devices",
            Some(json!({"platform": "ios", "token": tok})),
        ),
        404,
        "user_not_found",
        None,
    );
    let again = dev(json!({"platform": "ios", "token": tok.to_uppercase()}));
    assert_eq!(
        again.status, 200,
        "registering the same token again is not an error: {}",
        again.body
    );

    // Notifications.
    let n = |body: Value| c.call("POST", "/v1/notifications", Some(body));
    expect(
        n(json!({"idempotency_key": "k", "body": "b"})),
        400,
        "missing_field",
        Some("user_id"),
    );
    expect(
        n(json!({"user_id": "val", "body": "b"})),
        400,
        "missing_field",
        Some("idempotency_key"),
    );
    expect(
        n(json!({"user_id": "val", "idempotency_key": "k"})),
        400,
        "missing_field",
        Some("body"),
    );
    expect(
        n(json!({"user_id": "val", "idempotency_key": "k", "body": "b", "priority": "urgent"})),
        400,
        "invalid_priority",
        Some("priority"),
    );
    expect(
        n(json!({"user_id": "val", "idempotency_key": "k", "body": "b", "ttl_seconds": "soon"})),
        400,
        "invalid_type",
        Some("ttl_seconds"),
    );
    expect(
        n(
            json!({"user_id": "val", "idempotency_key": "k", "body": "b", "collapse_id": "c".repeat(65)}),
        ),
        400,
        "too_long",
        Some("collapse_id"),
    );
    expect(
        n(json!({"user_id": "val", "idempotency_key": "k", "body": "b", "data": [1]})),
        400,
        "invalid_type",
        Some("data"),
    );
    expect(
        n(json!({"user_id": "val", "idempotency_key": "k", "body": "x".repeat(4096)})),
        400,
        "payload_too_large",
        Some("body"),
    );
    expect(
        n(json!({"user_id": "nobody", "idempotency_key": "k", "body": "b"})),
        404,
        "user_not_found",
        None,
    );

    // Batches: one result per item, in order, errors naming the item's field.
    let r = c.call(
        "POST",
        "/v1/notifications/batch",
        Some(json!({"notifications": [
            {"user_id": "val", "idempotency_key": "b1", "body": "ok"},
            {"user_id": "val", "body": "no key"},
            {"user_id": "nobody", "idempotency_key": "b3", "body": "b"},
            {"user_id": "val", "idempotency_key": "b1", "body": "ok"},
        ]})),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let res = r.body["results"].as_array().unwrap();
    assert_eq!(res.len(), 4);
    // The repeated key within the same batch answers with the first item's id.
    assert_eq!(res[3]["status"], 202, "{}", r.body);
    assert_eq!(res[3]["duplicate"], true, "{}", r.body);
    assert_eq!(res[3]["id"], res[0]["id"]);
    assert_eq!(res[0]["status"], 202);
    assert_eq!(res[1]["status"], 400);
    assert_eq!(res[1]["error"]["field"], "notifications[1].idempotency_key");
    assert_eq!(res[2]["status"], 404);
    let too_many: Vec<Value> = (0..1001)
        .map(|i| json!({"user_id": "val", "idempotency_key": format!("m{i}"), "body": "b"}))
        .collect();
    expect(
        c.call(
            "POST",
            "/v1/notifications/batch",
            Some(json!({"notifications": too_many})),
        ),
        400,
        "invalid_batch_size",
        Some("notifications"),
    );

    // Status look-ups and routes.
    expect(
        c.call("GET", "/v1/notifications/not-a-uuid", None),
        400,
        "invalid_id",
        Some("id"),
    );
    expect(
        c.call(
            "GET",
            "/v1/notifications/0190f0f0-0000-7000-8000-000000000000",
            None,
        ),
        404,
        "notification_not_found",
        None,
    );
    expect(
        c.call("DELETE", "/v1/notifications", None),
        405,
        "method_not_allowed",
        None,
    );
    expect(c.call("GET", "/v1/nothing", None), 404, "not_found", None);
    // 405 names the methods the route takes (RFC 9110); the batch route is not an id.
    let r = c.call("PATCH", "/v1/users/u1", None);
    assert_eq!((r.status, r.header("allow")), (405, Some("GET, HEAD, PUT")));
    let r = c.call("GET", "/v1/notifications/batch", None);
    assert_eq!((r.status, r.header("allow")), (405, Some("POST")));
    let r = c.call("TRACE", "/healthz", None);
    assert_eq!((r.status, r.header("allow")), (405, Some("GET, HEAD")));
    // HEAD is GET without the body (RFC 9110 §9.3.2), with GET's status and scope.
    let r = c.raw("HEAD", "/healthz", None);
    assert_eq!((r.status, r.text.as_str()), (200, ""));
    let r = c.raw("HEAD", "/v1/users/nobody", None);
    assert_eq!((r.status, r.text.as_str()), (404, ""));
    let r = c.raw("HEAD", "/v1/notifications", None);
    assert_eq!((r.status, r.header("allow")), (405, Some("POST")));
    // Path segments are percent-decoded: `u%3Ax` is the user `u:x`.
    let r = c.call("PUT", "/v1/users/u%3Ax", Some(serde_json::json!({})));
    assert!(r.status == 201 || r.status == 200, "{}", r.body);
    assert_eq!(c.call("GET", "/v1/users/u:x", None).status, 200);
    let r = c.raw("HEAD", "/v1/users/u:x", None);
    assert_eq!((r.status, r.text.as_str()), (200, ""), "{:?}", r.headers);
    assert_eq!(r.header("content-type"), Some("application/json"));
    expect(
        c.call("GET", "/v1/users/%FF", None),
        400,
        "invalid_path",
        None,
    );
}
