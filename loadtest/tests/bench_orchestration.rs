//! Scenario: `bench` end to end. It writes the server's TOML config, spawns the server, waits
//! for `/healthz`, loads it, checks the in-process simulator's ledger and stops the server with
//! SIGTERM.
//!
//! This file is its own harness (`harness = false`): started as `EXE serve --config FILE`, it is
//! the stand-in server, which reads the config as Clarion does, accepts notifications and
//! delivers them to the configured APNs endpoint (trusting `ca_file`, signing with `key_file`)
//! once per registered device. Started otherwise, it is the test, using itself as the server.

mod common;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use clarion_loadtest::bench::{BenchConfig, bench};
use clarion_loadtest::load::LoadConfig;
use clarion_sim::apns::{client_tls_config, sign_provider_token};
use common::fake_api::{Accepted, Behaviour, FakeApi};
use common::send;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("serve") {
        assert_eq!(
            args.get(2).map(String::as_str),
            Some("--config"),
            "{args:?}"
        );
        return stand_in_server(args.get(3).expect("config path"));
    }
    bench_drives_a_server_child_end_to_end();
    println!("test bench_drives_a_server_child_end_to_end ... ok");
    println!("1 passed, 0 failed");
}

fn bench_drives_a_server_child_end_to_end() {
    let server = std::env::current_exe().expect("own path");
    let load = LoadConfig {
        users: 20,
        devices_per_user: 2,
        rate: 300.0,
        duration: Duration::from_secs(1),
        drain_timeout: Duration::from_secs(10),
        ..LoadConfig::default()
    };
    let mut cfg = BenchConfig::new(server, load);
    cfg.startup_timeout = Duration::from_secs(20);
    let r = bench(&cfg).expect("bench run");
    let reg = r.registration.expect("registered");
    assert_eq!((reg.users, reg.devices), (20, 40));
    assert_eq!((r.scheduled, r.accepted, r.transport_errors), (300, 300, 0));
    let l = r.ledger.expect("ledger checked");
    assert_eq!(l.expected_per_seq, 2);
    assert_eq!(
        (l.received, l.lost, l.short, l.duplicated, l.unexpected),
        (300, 0, 0, 0, 0)
    );
    assert!(l.drained);
    let wake = r.wake_probe.expect("wake probe measured before the load");
    assert!(wake.same_cpu.round_trips > 0, "{wake:?}");
    assert_eq!(
        r.e2e_latency_us.expect("e2e").len(),
        600,
        "one push per device"
    );
}

/// `key = "value"` or `key = value` from the flat TOML the bench writes.
fn toml_value(text: &str, key: &str) -> String {
    let prefix = format!("{key} = ");
    let line = text
        .lines()
        .find(|l| l.starts_with(&prefix))
        .unwrap_or_else(|| panic!("no {key}"));
    line[prefix.len()..]
        .trim_matches(|c| c == '"' || c == '[' || c == ']')
        .to_string()
}

fn stand_in_server(config_path: &str) {
    let text = std::fs::read_to_string(config_path).expect("read config");
    for key in ["data_dir", "shards", "fsync", "connections"] {
        toml_value(&text, key); // present, as agreed
    }
    let listen = toml_value(&text, "listen").parse().expect("listen");
    let endpoint = toml_value(&text, "endpoint");
    let topic = toml_value(&text, "topic");
    let key_pem = std::fs::read_to_string(toml_value(&text, "key_file")).expect("key_file");
    let ca_pem = std::fs::read_to_string(toml_value(&text, "ca_file")).expect("ca_file");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let jwt = sign_provider_token(
        &key_pem,
        &toml_value(&text, "key_id"),
        &toml_value(&text, "team_id"),
        now,
    )
    .expect("sign");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("rt");
    rt.block_on(async move {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Accepted>();
        let api_key = Some(toml_value(&text, "keys"));
        let api = FakeApi::start_on(
            listen,
            Behaviour {
                accepted: Some(tx),
                api_key,
                ..Behaviour::default()
            },
        )
        .await;
        let addr: std::net::SocketAddr = endpoint
            .trim_start_matches("https://")
            .parse()
            .expect("endpoint");
        let tls =
            tokio_rustls::TlsConnector::from(Arc::new(client_tls_config(&ca_pem).expect("ca")));
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .expect("connect apns");
        let name = rustls_pki_types::ServerName::try_from("localhost").expect("name");
        let stream = tls.connect(name, tcp).await.expect("tls");
        let (apns, conn) = h2::client::handshake(stream).await.expect("h2");
        tokio::spawn(conn);
        tokio::spawn(async move {
            while let Some(n) = rx.recv().await {
                for device in api.devices_of(&n.user_id) {
                    let (apns, jwt, topic) = (apns.clone(), jwt.clone(), topic.clone());
                    let ts = n
                        .lt_ts
                        .map_or(String::new(), |t| format!(r#","lt_ts":{t}"#));
                    let body = Bytes::from(format!(
                        r#"{{"aps":{{"alert":"x"}},"lt_seq":{}{ts}}}"#,
                        n.seq
                    ));
                    tokio::spawn(async move {
                        let req =
                            http::Request::post(format!("https://localhost/3/device/{device}"))
                                .header("authorization", format!("bearer {jwt}"))
                                .header("apns-topic", topic)
                                .header("apns-push-type", "alert");
                        let a = send(&apns, req, body).await.expect("push");
                        assert_eq!(a.status, 200, "{:?}", a.reason());
                    });
                }
            }
        });
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("signal");
        term.recv().await;
    });
}
