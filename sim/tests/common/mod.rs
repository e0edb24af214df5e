//! Test helpers shared by the simulator's integration tests: a simulator with a fresh key, an
//! HTTP/2-over-TLS client that trusts it (as a real APNs client would, through an extra root),
//! and request builders.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use clarion_sim::apns::{
    SimConfig, SimHandle, Simulator, client_tls_config, generate_apns_key, sign_provider_token,
};
use h2::client::SendRequest;

pub const TEAM: &str = "TEAM000001";
pub const KEY: &str = "KEY0000001";
pub const TOPIC: &str = "com.clarion.test";

/// A running simulator with the key that signs for it.
pub struct Apns {
    pub sim: SimHandle,
    pub p8: String,
}

impl Apns {
    pub fn start(configure: impl FnOnce(&mut SimConfig)) -> Apns {
        let (p8, public) = generate_apns_key().expect("keygen");
        let mut cfg = SimConfig::new(TEAM, KEY, &public, TOPIC);
        configure(&mut cfg);
        let sim = Simulator::start(cfg).expect("start simulator");
        Apns { sim, p8 }
    }

    /// A provider token issued `age_secs` ago.
    pub fn jwt(&self, age_secs: u64) -> String {
        sign_provider_token(&self.p8, KEY, TEAM, now_secs() - age_secs).expect("sign")
    }

    pub async fn client(&self) -> SendRequest<Bytes> {
        connect(&self.sim).await
    }
}

pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_nanos() as u64
}

/// A device token (64 hex chars) numbered `n`.
pub fn token(n: u64) -> String {
    format!("{:064x}", n.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
}

/// Connects over TLS (ALPN h2) and waits until the server's SETTINGS arrived.
pub async fn connect(sim: &SimHandle) -> SendRequest<Bytes> {
    let cfg = client_tls_config(sim.ca_pem()).expect("tls config");
    let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    let tcp = tokio::net::TcpStream::connect(sim.addr())
        .await
        .expect("connect");
    let name = rustls_pki_types::ServerName::try_from("localhost").expect("name");
    let tls = connector.connect(name, tcp).await.expect("tls handshake");
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (client, conn) = h2::client::handshake(tls).await.expect("h2 handshake");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    // Wait until the server's initial SETTINGS were applied (the default is "unlimited").
    for _ in 0..200 {
        if client.current_max_send_streams() != usize::MAX {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    client
}

/// A well-formed push request to `token`; tweak the builder for error cases.
pub fn push(token: &str, jwt: &str) -> http::request::Builder {
    http::Request::builder()
        .method("POST")
        .uri(format!("https://localhost/3/device/{token}"))
        .header("authorization", format!("bearer {jwt}"))
        .header("apns-topic", TOPIC)
        .header("apns-push-type", "alert")
        .header("apns-priority", "10")
}

pub fn alert(seq: u64) -> Bytes {
    Bytes::from(format!(
        r#"{{"aps":{{"alert":{{"title":"Hello","body":"World {seq}"}}}},"lt_seq":{seq}}}"#
    ))
}

/// What came back.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub apns_id: Option<String>,
    pub body: Bytes,
}

impl Answer {
    pub fn reason(&self) -> Option<String> {
        let v: serde_json::Value = serde_json::from_slice(&self.body).ok()?;
        v["reason"].as_str().map(str::to_string)
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("json body")
    }
}

/// Sends one request and reads the whole answer.
pub async fn send(
    client: &SendRequest<Bytes>,
    req: http::request::Builder,
    body: Bytes,
) -> Result<Answer, h2::Error> {
    let mut client = client.clone().ready().await?;
    let req = req.body(()).expect("request");
    let (resp, mut stream) = client.send_request(req, body.is_empty())?;
    if !body.is_empty() {
        stream.send_data(body, true)?;
    }
    let resp = resp.await?;
    let status = resp.status().as_u16();
    let apns_id = resp
        .headers()
        .get("apns-id")
        .map(|v| v.to_str().expect("ascii").to_string());
    let mut recv = resp.into_body();
    let mut buf = Vec::new();
    while let Some(chunk) = recv.data().await {
        let chunk = chunk?;
        let _ = recv.flow_control().release_capacity(chunk.len());
        buf.extend_from_slice(&chunk);
    }
    Ok(Answer {
        status,
        apns_id,
        body: Bytes::from(buf),
    })
}

/// An HTTP/2 client over TLS to `addr`, trusting `ca_pem` (the FCM and Web Push simulators).
pub async fn connect_h2(addr: std::net::SocketAddr, ca_pem: &str) -> SendRequest<Bytes> {
    let cfg = client_tls_config(ca_pem).expect("tls config");
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let name = rustls_pki_types::ServerName::try_from("localhost").expect("name");
    let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(name, tcp)
        .await
        .expect("tls handshake");
    let (client, conn) = h2::client::handshake(tls).await.expect("h2 handshake");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

/// `POST uri` with `headers` and `body`; the status and the body read as JSON (`Null` if not).
pub async fn post_json(
    c: &SendRequest<Bytes>,
    uri: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> (u16, serde_json::Value) {
    let mut req = http::Request::post(uri);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let mut c = c.clone().ready().await.expect("ready");
    let (resp, mut stream) = c
        .send_request(req.body(()).expect("request"), false)
        .expect("send");
    stream.send_data(Bytes::from(body), true).expect("body");
    let resp = resp.await.expect("response");
    let status = resp.status().as_u16();
    let mut recv = resp.into_body();
    let mut bytes = Vec::new();
    while let Some(chunk) = recv.data().await {
        let chunk = chunk.expect("chunk");
        let _ = recv.flow_control().release_capacity(chunk.len());
        bytes.extend_from_slice(&chunk);
    }
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
    )
}
