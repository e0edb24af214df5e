//! `clarion keys create|list|revoke`: the keys' file of a data directory, edited under the same
//! lock a running server's keys' thread takes, which notices the change within a second.

use anyhow::Context;
use clarion::cli::{KeyStoreArgs, KeysCommand};
use clarion::config::RawConfig;
use clarion::keys::{KeyStore, Scopes};
use serde_json::json;

fn store(args: &KeyStoreArgs) -> anyhow::Result<KeyStore> {
    if let Some(dir) = &args.data_dir {
        return Ok(KeyStore::new(dir));
    }
    let path = args
        .config
        .as_ref()
        .context("give --data-dir or --config")?;
    let raw = RawConfig::from_file(path)?;
    let dir = raw
        .data_dir
        .unwrap_or_else(|| clarion::config::DEFAULT_DATA_DIR.into());
    Ok(KeyStore::new(&dir))
}

pub fn run(cmd: KeysCommand) -> anyhow::Result<()> {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let out = match cmd {
        KeysCommand::Create {
            store: s,
            name,
            scopes,
            rate_limit,
        } => {
            let scopes = Scopes::parse_list(scopes.iter().map(String::as_str))
                .map_err(anyhow::Error::msg)?;
            let (stored, key) = store(&s)?.create(&name, scopes, rate_limit, now_ms)?;
            let mut v = json!({"name": stored.name, "key": key, "scopes": stored.scopes});
            if let Some(r) = stored.rate_limit_per_s {
                v["rate_limit_per_s"] = json!(r);
            }
            v
        }
        KeysCommand::List { store: s } => {
            let keys: Vec<_> = store(&s)?
                .load()?
                .into_iter()
                .map(|k| {
                    let mut v = json!({
                        "name": k.name,
                        "scopes": k.scopes,
                        "created_at": clarion::api::status::rfc3339_ms(k.created_at_ms),
                    });
                    if let Some(r) = k.rate_limit_per_s {
                        v["rate_limit_per_s"] = json!(r);
                    }
                    v
                })
                .collect();
            json!({ "keys": keys })
        }
        KeysCommand::Revoke { store: s, name } => {
            store(&s)?.revoke(&name)?;
            json!({ "revoked": name })
        }
    };
    println!("{out}");
    Ok(())
}
