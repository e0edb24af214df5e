//! The keys' thread: the one place the keys' file is read and written while the server runs
//! (file I/O never runs on a shard's executor). It creates and revokes keys for the API's
//! `/v1/keys` calls, notices changes `clarion keys` made to the file (polling it every
//! [`POLL_INTERVAL`]), and hands every shard the new [`KeySet`] whole, so a revoked key is
//! refused on every shard well within a second.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::time::{Duration, SystemTime};

use futures_channel::{mpsc, oneshot};
use tracing::{error, info};

use super::error::KeyError;
use super::scope::Scopes;
use super::set::{KeyEntry, KeySet};
use super::store::KeyStore;

/// How often the file is checked for a change made by `clarion keys`.
pub const POLL_INTERVAL: Duration = Duration::from_millis(200);
/// Key commands waiting for the thread: an admin's calls, one at a time in practice; past it
/// the API answers `503`.
pub const MAX_QUEUED_COMMANDS: usize = 64;
/// Key sets waiting for a shard to take them: a shard takes each at once; a full channel means
/// it is busy, and it is sent the newest set on the next poll.
const SHARD_QUEUE: usize = 2;

/// A command's answer: its outcome, and the key set after it (`None`: the file did not reload).
pub type KeyReply<T> = oneshot::Sender<(Result<T, KeyError>, Option<Arc<KeySet>>)>;

/// What the API asks of the keys' thread. Each answer carries the key set as it is after the
/// change, which the asking shard applies before it answers its client (the others get it over
/// their channels within moments).
pub enum KeyCmd {
    Create {
        name: String,
        scopes: Scopes,
        rate_limit_per_s: Option<u32>,
        reply: KeyReply<(KeyEntry, String)>,
    },
    Revoke {
        name: String,
        reply: KeyReply<()>,
    },
}

/// A shard's way to the keys' thread.
#[derive(Clone)]
pub struct KeysHandle {
    cmds: SyncSender<KeyCmd>,
}

impl KeysHandle {
    /// Hands a command over; `Unavailable` when the queue is full or the thread gone.
    pub fn send(&self, cmd: KeyCmd) -> Result<(), KeyError> {
        self.cmds.try_send(cmd).map_err(|_| KeyError::Unavailable)
    }
}

/// A shard's receiver of new key sets.
pub type KeyUpdates = mpsc::Receiver<Arc<KeySet>>;

/// Starts the thread: loads the keys (an error stops the start), and returns the first set,
/// the handle for commands, and one receiver of new sets per shard.
pub fn start(
    store: KeyStore,
    config_keys: Vec<String>,
    shards: usize,
) -> Result<(Arc<KeySet>, KeysHandle, Vec<KeyUpdates>), KeyError> {
    // The file's state before it is read: a change made in between is seen on the first poll.
    let seen = fingerprint(&store);
    let first = Arc::new(KeySet::build(&config_keys, &store.load()?));
    info!(
        stored = first.entries().len() - config_keys.len(),
        from_config = config_keys.len(),
        file = %store.path().display(),
        "API keys loaded"
    );
    let (cmd_tx, cmd_rx) = std::sync::mpsc::sync_channel(MAX_QUEUED_COMMANDS);
    let (senders, receivers): (Vec<_>, Vec<_>) =
        (0..shards).map(|_| mpsc::channel(SHARD_QUEUE)).unzip();
    let mut watcher = Watcher {
        seen,
        store,
        config_keys,
        shards: senders,
        pending: vec![None; shards],
    };
    std::thread::Builder::new()
        .name("clarion-keys".into())
        .spawn(move || watcher.run(&cmd_rx))
        .map_err(KeyError::Io)?;
    Ok((first, KeysHandle { cmds: cmd_tx }, receivers))
}

/// What tells a change of the file: its inode (a durable write renames a new file over it),
/// length and modification time.
type Fingerprint = Option<(u64, u64, SystemTime)>;

fn fingerprint(store: &KeyStore) -> Fingerprint {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(store.path()).ok()?;
    Some((m.ino(), m.len(), m.modified().ok()?))
}

struct Watcher {
    store: KeyStore,
    config_keys: Vec<String>,
    seen: Fingerprint,
    shards: Vec<mpsc::Sender<Arc<KeySet>>>,
    /// The newest set a shard's full channel could not take yet.
    pending: Vec<Option<Arc<KeySet>>>,
}

impl Watcher {
    fn run(&mut self, cmds: &Receiver<KeyCmd>) {
        loop {
            match cmds.recv_timeout(POLL_INTERVAL) {
                Ok(cmd) => self.command(cmd),
                Err(RecvTimeoutError::Timeout) => {
                    if fingerprint(&self.store) != self.seen {
                        let _ = self.reload();
                    }
                    self.retry_pending();
                }
                // Every shard has stopped.
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
    }

    fn command(&mut self, cmd: KeyCmd) {
        let now = crate::engine::now_ms();
        match cmd {
            KeyCmd::Create {
                name,
                scopes,
                rate_limit_per_s,
                reply,
            } => {
                let made = if self.is_config_name(&name) {
                    Err(KeyError::Exists(name))
                } else {
                    self.store.create(&name, scopes, rate_limit_per_s, now)
                };
                let made = made.map(|(stored, key)| {
                    info!(key = %stored.name, scopes = %scopes, "API key created");
                    let entry = KeyEntry {
                        name: stored.name,
                        scopes,
                        rate_limit_per_s,
                        created_at_ms: stored.created_at_ms,
                        from_config: false,
                    };
                    (entry, key)
                });
                if let Err(e) = &made
                    && !matches!(e, KeyError::Exists(_) | KeyError::Invalid { .. })
                {
                    error!(error = %e, "API key not created");
                }
                let set = self.reload();
                let _ = reply.send((made, set));
            }
            KeyCmd::Revoke { name, reply } => {
                let done = if self.is_config_name(&name) {
                    Err(KeyError::FromConfig(name.clone()))
                } else {
                    self.store.revoke(&name)
                };
                match &done {
                    Ok(()) => info!(key = %name, "API key revoked"),
                    Err(e @ (KeyError::Corrupt(_) | KeyError::Io(_))) => {
                        error!(error = %e, "API key not revoked");
                    }
                    Err(_) => {}
                }
                let set = self.reload();
                let _ = reply.send((done, set));
            }
        }
    }

    fn is_config_name(&self, name: &str) -> bool {
        (0..self.config_keys.len()).any(|i| super::set::config_key_name(i) == name)
    }

    /// Rereads the file and hands the shards the new set (returned too); a file that does not
    /// parse leaves every shard with the set it has, and says why.
    fn reload(&mut self) -> Option<Arc<KeySet>> {
        self.seen = fingerprint(&self.store);
        let stored = match self.store.load() {
            Ok(s) => s,
            Err(e) => {
                error!(error = %e, "API keys not reloaded: the shards keep the keys they had");
                return None;
            }
        };
        let set = Arc::new(KeySet::build(&self.config_keys, &stored));
        for p in &mut self.pending {
            *p = Some(set.clone());
        }
        self.retry_pending();
        Some(set)
    }

    fn retry_pending(&mut self) {
        for (tx, p) in self.shards.iter_mut().zip(&mut self.pending) {
            if let Some(set) = p.take() {
                match tx.try_send(set) {
                    Ok(()) => {}
                    Err(e) if e.is_full() => *p = Some(e.into_inner()),
                    // That shard has stopped.
                    Err(_) => {}
                }
            }
        }
    }
}
