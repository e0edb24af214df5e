//! `clarion dead-letters list|replay|purge`: the `/v1/dead-letters` calls made from the command
//! line against a running server, over HTTP/1.1 (hyper's client on a one-thread tokio runtime:
//! the command is a short-lived client, not part of the server). Prints the server's JSON
//! answer; a refusal prints the server's error and exits non-zero.

use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use clarion::cli::{DeadFilterArgs, DeadLettersCommand, DeadSelectionArgs, ServerArgs};
use http::{Method, Request, Uri};
use http_body_util::{BodyExt, Full};
use serde_json::{Map, Value, json};

/// Runs one `dead-letters` command.
pub fn run(cmd: DeadLettersCommand) -> anyhow::Result<()> {
    let (server, method, path, body) = match cmd {
        DeadLettersCommand::List {
            server,
            filter,
            limit,
            cursor,
        } => {
            let mut q = form_urlencoded::Serializer::new(String::new());
            for (name, value) in filter_pairs(&filter) {
                q.append_pair(name, value);
            }
            if let Some(n) = limit {
                q.append_pair("limit", &n.to_string());
            }
            if let Some(c) = &cursor {
                q.append_pair("cursor", c);
            }
            let q = q.finish();
            let path = if q.is_empty() {
                "/v1/dead-letters".to_string()
            } else {
                format!("/v1/dead-letters?{q}")
            };
            (server, Method::GET, path, None)
        }
        DeadLettersCommand::Replay { server, selection } => (
            server,
            Method::POST,
            "/v1/dead-letters/replay".to_string(),
            Some(selection_body(&selection)),
        ),
        DeadLettersCommand::Purge { server, selection } => (
            server,
            Method::DELETE,
            "/v1/dead-letters".to_string(),
            Some(selection_body(&selection)),
        ),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .context("starting the client's runtime")?;
    let timeout = Duration::from_secs(server.timeout);
    let (status, answer) = rt
        .block_on(async { tokio::time::timeout(timeout, call(&server, method, &path, body)).await })
        .with_context(|| {
            format!(
                "no answer from {} within {} s",
                server.server, server.timeout
            )
        })??;
    let shown = match serde_json::from_slice::<Value>(&answer) {
        Ok(v) => serde_json::to_string_pretty(&v).unwrap_or_default(),
        Err(_) => String::from_utf8_lossy(&answer).into_owned(),
    };
    if !status.is_success() {
        // The server's error says what is wrong; a trace of this client would not.
        eprintln!("{shown}");
        eprintln!("clarion: the server answered {status}");
        std::process::exit(1);
    }
    println!("{shown}");
    Ok(())
}

fn filter_pairs(f: &DeadFilterArgs) -> Vec<(&'static str, &str)> {
    [
        ("channel", &f.channel),
        ("reason", &f.reason),
        ("since", &f.since),
        ("until", &f.until),
    ]
    .into_iter()
    .filter_map(|(name, v)| v.as_deref().map(|v| (name, v)))
    .collect()
}

/// The replay or purge body; the server checks it (and says what is wrong with it).
fn selection_body(s: &DeadSelectionArgs) -> Value {
    if !s.delivery_ids.is_empty() {
        return json!({ "delivery_ids": s.delivery_ids });
    }
    let mut body = Map::new();
    for (name, value) in filter_pairs(&s.filter) {
        // A time given as digits is Unix ms, as the API takes it.
        let v = match value.parse::<u64>() {
            Ok(ms) if name == "since" || name == "until" => json!(ms),
            _ => json!(value),
        };
        body.insert(name.to_string(), v);
    }
    if s.all {
        body.insert("all".to_string(), json!(true));
    }
    Value::Object(body)
}

/// One request on a fresh connection: the answer's status and body.
async fn call(
    server: &ServerArgs,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> anyhow::Result<(http::StatusCode, Bytes)> {
    let uri: Uri = server
        .server
        .parse()
        .with_context(|| format!("--server {}: not a URL", server.server))?;
    if uri.scheme_str() != Some("http") {
        bail!(
            "--server {}: only http:// URLs are supported (the server speaks plain HTTP)",
            server.server
        );
    }
    let authority = uri
        .authority()
        .with_context(|| format!("--server {}: no host", server.server))?
        .clone();
    let port = authority.port_u16().unwrap_or(80);
    let stream = tokio::net::TcpStream::connect((authority.host(), port))
        .await
        .with_context(|| format!("connecting to {authority}"))?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .context("HTTP handshake")?;
    tokio::spawn(conn);
    let bytes = body.map_or_else(Bytes::new, |b| Bytes::from(b.to_string()));
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::HOST, authority.as_str())
        .header(
            http::header::AUTHORIZATION,
            format!("Bearer {}", server.api_key),
        );
    if !bytes.is_empty() {
        req = req.header(http::header::CONTENT_TYPE, "application/json");
    }
    let req = req.body(Full::new(bytes)).context("building the request")?;
    let resp = sender
        .send_request(req)
        .await
        .context("sending the request")?;
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .context("reading the answer")?
        .to_bytes();
    Ok((status, body))
}
