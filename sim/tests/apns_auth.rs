//! Scenario: provider tokens are checked as APNs checks them (signature, `kid`, `iss`, age,
//! per-connection refresh rate), and each distinct token is verified only once.

mod common;

use clarion_sim::apns::{generate_apns_key, sign_provider_token};
use common::{Apns, KEY, TEAM, alert, now_secs, push, send, token};

#[tokio::test]
async fn token_is_verified_once_for_many_requests_and_connections() {
    let apns = Apns::start(|_| {});
    let jwt = apns.jwt(0);
    for _ in 0..3 {
        let client = apns.client().await;
        for seq in 0..20 {
            let a = send(&client, push(&token(seq), &jwt), alert(seq))
                .await
                .expect("send");
            assert_eq!(a.status, 200);
        }
    }
    let stats = apns.sim.stats();
    assert_eq!(stats.accepted, 60);
    assert_eq!(stats.connections, 3);
    assert_eq!(stats.jwt_verifications, 1);
}

#[tokio::test]
async fn expired_token_is_expired_provider_token() {
    let apns = Apns::start(|_| {});
    let client = apns.client().await;
    let a = send(&client, push(&token(1), &apns.jwt(3601 + 5)), alert(1))
        .await
        .expect("send");
    assert_eq!(
        (a.status, a.reason().as_deref()),
        (403, Some("ExpiredProviderToken"))
    );
    // Fifty minutes old is still fine.
    let a = send(&client, push(&token(1), &apns.jwt(50 * 60)), alert(1))
        .await
        .expect("send");
    assert_eq!(a.status, 200);
}

#[tokio::test]
async fn bad_signature_kid_or_team_is_invalid_provider_token() {
    let apns = Apns::start(|_| {});
    let client = apns.client().await;
    let (other_key, _) = generate_apns_key().expect("keygen");
    let now = now_secs();
    let good = apns.jwt(0);
    let mut tampered = good.clone();
    tampered.pop();
    tampered.push(if good.ends_with('A') { 'B' } else { 'A' });
    let tokens = [
        sign_provider_token(&other_key, KEY, TEAM, now).expect("sign"),
        sign_provider_token(&apns.p8, "WRONGKEY01", TEAM, now).expect("sign"),
        sign_provider_token(&apns.p8, KEY, "WRONGTEAM1", now).expect("sign"),
        tampered,
        "not-a-jwt".to_string(),
    ];
    for (i, jwt) in tokens.iter().enumerate() {
        let a = send(&client, push(&token(1), jwt), alert(1))
            .await
            .expect("send");
        assert_eq!(
            (a.status, a.reason().as_deref()),
            (403, Some("InvalidProviderToken")),
            "token {i}"
        );
    }
    let stats = apns.sim.stats();
    assert_eq!(stats.by_reason.get("InvalidProviderToken"), Some(&5));
    assert_eq!(stats.accepted, 0);
}

#[tokio::test]
async fn refreshing_the_token_too_often_is_too_many_provider_token_updates() {
    let apns = Apns::start(|_| {});
    let client = apns.client().await;
    let first = apns.jwt(30 * 60);
    assert_eq!(
        send(&client, push(&token(1), &first), alert(1))
            .await
            .expect("send")
            .status,
        200
    );
    let early = apns.jwt(25 * 60); // five minutes after the first
    let a = send(&client, push(&token(1), &early), alert(2))
        .await
        .expect("send");
    assert_eq!(
        (a.status, a.reason().as_deref()),
        (429, Some("TooManyProviderTokenUpdates"))
    );
    // The rule is per connection: the same token is fine as another connection's first token
    // (another server or shard signing its own), and this connection kept its old token.
    let other = apns.client().await;
    assert_eq!(
        send(&other, push(&token(1), &early), alert(2))
            .await
            .expect("send")
            .status,
        200
    );
    assert_eq!(
        send(&client, push(&token(1), &first), alert(2))
            .await
            .expect("send")
            .status,
        200
    );
    let later = apns.jwt(5 * 60); // 25 minutes after the first
    assert_eq!(
        send(&client, push(&token(1), &later), alert(3))
            .await
            .expect("send")
            .status,
        200
    );
}

#[tokio::test]
async fn refresh_rule_can_be_turned_off() {
    let apns = Apns::start(|c| c.token_refresh_min_interval = None);
    let client = apns.client().await;
    for age in [600, 300, 0] {
        let a = send(&client, push(&token(1), &apns.jwt(age)), alert(age))
            .await
            .expect("send");
        assert_eq!(a.status, 200, "age {age}");
    }
}
