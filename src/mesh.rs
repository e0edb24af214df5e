//! Cross-shard routing: the `ShardRouter` each core's ingress uses to hand a command to the
//! shard that owns it, and the per-destination `Forwarder` that batches commands onto the
//! glommio channel mesh. Commands answer through their own oneshot replies, never back over
//! the mesh, and each mesh receiver only runs non-blocking `Engine::handle`, so a full mesh
//! channel delays a sender but can never deadlock.

use std::cell::RefCell;
use std::rc::Rc;

use glommio::channels::channel_mesh::{Receivers, Senders};

use crate::engine::Engine;
use crate::engine::command::ShardCmd;
use crate::engine::error::ShardError;
use crate::sync::LocalNotify;

/// One mesh message: a batch of commands for one shard.
pub type MeshBatch = Vec<ShardCmd>;

/// Slots per mesh channel. glommio channels collapse at small capacities (see the ceilings),
/// and each slot is a whole batch, so this holds many thousands of commands.
pub const MESH_CHANNEL_CAPACITY: usize = 1024;
/// Notifications (commands, counting a batch command by its items) waiting on this core for one
/// destination while the mesh channel is full; past this the API answers 503 instead of
/// buffering without bound.
pub const MAX_FORWARD_PENDING: usize = 50_000;

/// Commands for one remote shard, waiting to be sent as one batch.
pub struct Forwarder {
    dest: usize,
    pending: RefCell<Vec<ShardCmd>>,
    /// The summed [`ShardCmd::weight`] of `pending`.
    weight: std::cell::Cell<usize>,
    wake: LocalNotify,
}

impl Forwarder {
    /// Queues a command for the destination; a full buffer hands it back (boxed: it is large).
    fn push(&self, cmd: ShardCmd) -> Result<(), Box<ShardCmd>> {
        let mut p = self.pending.borrow_mut();
        let weight = self.weight.get() + cmd.weight();
        if !p.is_empty() && weight > MAX_FORWARD_PENDING {
            return Err(Box::new(cmd));
        }
        self.weight.set(weight);
        p.push(cmd);
        drop(p);
        self.wake.notify();
        Ok(())
    }

    /// Everything pending, to send as one mesh message; the buffer is empty again.
    fn take(&self) -> Vec<ShardCmd> {
        self.weight.set(0);
        std::mem::take(&mut *self.pending.borrow_mut())
    }

    async fn run(self: Rc<Self>, senders: Rc<Senders<MeshBatch>>) {
        loop {
            self.wake.wait().await;
            let batch = self.take();
            if batch.is_empty() {
                continue;
            }
            // A closed channel hands the batch back; answer every command in it.
            if let Err(
                glommio::GlommioError::Closed(glommio::ResourceType::Channel(batch))
                | glommio::GlommioError::WouldBlock(glommio::ResourceType::Channel(batch)),
            ) = senders.send_to(self.dest, batch).await
            {
                for cmd in batch {
                    cmd.reject(ShardError::Unavailable {
                        why: "the owning shard is not reachable",
                    });
                }
            }
        }
    }
}

/// Hands commands to their owning shard: the local engine directly, others over the mesh.
pub struct ShardRouter {
    me: usize,
    shards: usize,
    local: Rc<Engine>,
    forwarders: Vec<Option<Rc<Forwarder>>>,
}

impl ShardRouter {
    /// Builds the router for this core and starts its forwarding and receiving tasks.
    pub fn start(
        local: Rc<Engine>,
        senders: Senders<MeshBatch>,
        receivers: Receivers<MeshBatch>,
    ) -> ShardRouter {
        let me = senders.peer_id();
        let shards = senders.nr_consumers().max(1);
        let senders = Rc::new(senders);
        let mut forwarders = Vec::with_capacity(shards);
        for dest in 0..shards {
            if dest == me {
                forwarders.push(None);
                continue;
            }
            let f = Rc::new(Forwarder {
                dest,
                pending: RefCell::new(Vec::new()),
                weight: std::cell::Cell::new(0),
                wake: LocalNotify::default(),
            });
            glommio::spawn_local(f.clone().run(senders.clone())).detach();
            forwarders.push(Some(f));
        }
        let receivers = Rc::new(receivers);
        for peer in 0..shards {
            if peer == me {
                continue;
            }
            let (engine, receivers) = (local.clone(), receivers.clone());
            glommio::spawn_local(async move {
                while let Ok(Some(batch)) = receivers.recv_from(peer).await {
                    for cmd in batch {
                        engine.handle(cmd);
                    }
                }
            })
            .detach();
        }
        ShardRouter {
            me,
            shards,
            local,
            forwarders,
        }
    }

    pub fn shards(&self) -> usize {
        self.shards
    }

    pub fn me(&self) -> usize {
        self.me
    }

    /// This core's engine counters.
    pub fn probe(&self) -> &crate::engine::probe::Probe {
        &self.local.probe
    }

    /// The shard that owns a user.
    pub fn shard_for_user(&self, user_id: &str) -> usize {
        clarion_shards::shard_for_user(user_id, self.shards as u32) as usize
    }

    /// Sends a command to its shard; a full forwarding buffer answers 503 at once.
    pub fn dispatch(&self, shard: usize, cmd: ShardCmd) {
        if shard == self.me {
            return self.local.handle(cmd);
        }
        match self.forwarders.get(shard).and_then(Option::as_ref) {
            Some(f) => {
                if let Err(cmd) = f.push(cmd) {
                    cmd.reject(ShardError::PeerBusy);
                }
            }
            None => cmd.reject(ShardError::NoSuchShard),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::command::NewNotification;

    fn batch(items: usize) -> ShardCmd {
        let n = NewNotification {
            user_id: "u".into(),
            idempotency_key: "k".into(),
            content: clarion_shards::NotificationContent::default(),
        };
        let (reply, _answers) = futures_channel::oneshot::channel();
        ShardCmd::NotifyBatch {
            items: (0..items as u32).map(|i| (i, n.clone())).collect(),
            reply,
        }
    }

    #[test]
    fn a_forwarding_buffer_is_bounded_by_the_notifications_it_holds() {
        let f = Forwarder {
            dest: 1,
            pending: RefCell::new(Vec::new()),
            weight: std::cell::Cell::new(0),
            wake: LocalNotify::default(),
        };
        let per_batch = 1000;
        for _ in 0..MAX_FORWARD_PENDING / per_batch {
            assert!(f.push(batch(per_batch)).is_ok());
        }
        assert_eq!(f.weight.get(), MAX_FORWARD_PENDING);
        // Full: a whole batch, and even a one-notification command, come back to be answered 503.
        assert!(f.push(batch(per_batch)).is_err());
        let (reply, _rx) = futures_channel::oneshot::channel();
        assert!(f.push(ShardCmd::Stats { reply }).is_err());
        assert_eq!(f.pending.borrow().len(), MAX_FORWARD_PENDING / per_batch);
        // Once the forwarding task has taken what was pending, there is room again; a single
        // command larger than the bound still goes through an empty buffer.
        assert_eq!(f.take().len(), MAX_FORWARD_PENDING / per_batch);
        assert!(f.push(batch(MAX_FORWARD_PENDING + 1)).is_ok());
        assert!(f.push(batch(1)).is_err());
    }
}
