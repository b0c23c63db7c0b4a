//! openraft's state machine: committed entries go to the driver, which owns the `Core`.
//!
//! `apply` queues the entries for the driver and returns without waiting: openraft re-applies
//! the committed log inside `Raft::new`, before the driver runs. Everything the consensus layer
//! tells the driver travels over one ordered channel, so the driver sees every entry before any
//! later event (e.g. `LeaderReady`, sent once openraft reports them applied, or a snapshot
//! request, made after the entries it must cover were queued).
//!
//! Snapshots are images of the driver's core (see `snapshot_store`); building one asks the
//! driver for a copy-on-write view of its state and encodes it here, off the driver task.

use std::io::Cursor;
use std::sync::{Arc, Mutex};

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    BasicNode, CommittedLeaderId, Entry, EntryPayload, ErrorSubject, ErrorVerb, LogId,
    RaftSnapshotBuilder, SnapshotMeta, StorageError, StorageIOError, StoredMembership,
};
use tokio::sync::{mpsc, oneshot};

use super::snapshot_store::{decode_data, encode_data, Extra, Meta, SnapshotStore};
use super::{Applied, Event, MemberId, SnapshotTaken, TypeConfig};
use crate::admin::metrics::Timings;

/// Membership configs remembered to pick the one a snapshot covers.
const MEMBERSHIP_HISTORY: usize = 8;

/// When to ask openraft for a snapshot: after `payloads` applied payloads (a batched entry
/// counts its items), as ZooKeeper's snapCount counts txns.
pub struct SnapshotEvery {
    pub payloads: u64,
    /// Notified when one is due; the consensus layer then triggers it.
    pub due: Arc<tokio::sync::Notify>,
}

#[derive(Default)]
struct Shared {
    last_applied: Option<LogId<MemberId>>,
    /// Payloads applied since a snapshot was last asked for.
    payloads_since_snapshot: u64,
    /// Recent membership configs, oldest first (the last is the current one).
    memberships: Vec<StoredMembership<MemberId, BasicNode>>,
}

impl Shared {
    fn membership_at(&self, index: u64) -> StoredMembership<MemberId, BasicNode> {
        self.memberships
            .iter()
            .rev()
            .find(|m| m.log_id().is_none_or(|l| l.index <= index))
            .cloned()
            .unwrap_or_default()
    }

    fn push_membership(&mut self, m: StoredMembership<MemberId, BasicNode>) {
        self.memberships.push(m);
        if self.memberships.len() > MEMBERSHIP_HISTORY {
            self.memberships.remove(0);
        }
    }
}

#[derive(Clone)]
pub struct StateMachine {
    events: mpsc::UnboundedSender<Event>,
    shared: Arc<Mutex<Shared>>,
    store: Arc<SnapshotStore>,
    /// Gets the duration of each snapshot built here.
    timings: Arc<Timings>,
    snapshot_every: Arc<SnapshotEvery>,
}

fn storage_error(verb: ErrorVerb, text: impl ToString) -> StorageError<MemberId> {
    StorageIOError::new(
        ErrorSubject::Snapshot(None),
        verb,
        openraft::AnyError::error(text.to_string()),
    )
    .into()
}

impl StateMachine {
    /// A state machine whose state starts at `initial` (the snapshot the driver's core was
    /// loaded from), or empty.
    pub fn new(
        events: mpsc::UnboundedSender<Event>,
        store: Arc<SnapshotStore>,
        initial: Option<&Meta>,
        timings: Arc<Timings>,
        snapshot_every: SnapshotEvery,
    ) -> StateMachine {
        let mut shared = Shared::default();
        if let Some(meta) = initial {
            shared.last_applied = meta.last_log_id;
            shared.push_membership(meta.last_membership.clone());
        }
        StateMachine {
            events,
            shared: Arc::new(Mutex::new(shared)),
            store,
            timings,
            snapshot_every: Arc::new(snapshot_every),
        }
    }

    /// Writes a snapshot file durably, off the async workers.
    async fn save(&self, meta: &Meta, data: &[u8]) -> Result<(), StorageError<MemberId>> {
        let store = self.store.clone();
        let (meta, data) = (meta.clone(), data.to_vec());
        tokio::task::spawn_blocking(move || store.save(&meta, &data))
            .await
            .map_err(|e| storage_error(ErrorVerb::Write, e))?
            .map_err(|e| storage_error(ErrorVerb::Write, e))?;
        Ok(())
    }

    fn shared(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<MemberId>> {
        let (reply, answer) = oneshot::channel();
        self.events
            .send(Event::BuildSnapshot { reply })
            .map_err(|_| storage_error(ErrorVerb::Write, "the server is stopping"))?;
        let taken: SnapshotTaken = answer
            .await
            .map_err(|_| storage_error(ErrorVerb::Write, "the server is stopping"))?;
        let started = std::time::Instant::now();
        let view = taken.view;
        let zxid = view.zxid();
        let image = tokio::task::spawn_blocking(move || view.encode())
            .await
            .map_err(|e| storage_error(ErrorVerb::Write, e))?;
        let log_id = LogId::new(
            CommittedLeaderId::new(taken.term, taken.leader),
            taken.index,
        );
        let meta = Meta {
            last_log_id: Some(log_id),
            last_membership: self.shared().membership_at(taken.index),
            snapshot_id: format!("{}-{}-{zxid:x}", taken.index, taken.term),
        };
        let data = encode_data(
            &Extra {
                secret: taken.secret,
                zxid,
            },
            &image,
        );
        self.save(&meta, &data).await?;
        self.timings.record_snapshot(started.elapsed());
        tracing::info!(
            index = taken.index,
            zxid = format_args!("{zxid:#x}"),
            bytes = data.len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "snapshot written"
        );
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = StateMachine;

    async fn applied_state(
        &mut self,
    ) -> Result<
        (
            Option<LogId<MemberId>>,
            StoredMembership<MemberId, BasicNode>,
        ),
        StorageError<MemberId>,
    > {
        let s = self.shared();
        Ok((
            s.last_applied,
            s.memberships.last().cloned().unwrap_or_default(),
        ))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<()>, StorageError<MemberId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let mut applied = Vec::new();
        {
            let mut s = self.shared();
            for e in entries {
                s.last_applied = Some(e.log_id);
                let payload = match e.payload {
                    EntryPayload::Normal(p) => {
                        s.payloads_since_snapshot += match &p {
                            super::Payload::Batch(items) => items.len() as u64,
                            _ => 1,
                        };
                        Some(p)
                    }
                    EntryPayload::Membership(m) => {
                        s.push_membership(StoredMembership::new(Some(e.log_id), m));
                        None
                    }
                    EntryPayload::Blank => None,
                };
                applied.push(Applied {
                    index: e.log_id.index,
                    term: e.log_id.leader_id.term,
                    leader: e.log_id.leader_id.node_id,
                    payload,
                });
            }
        }
        let due = {
            let mut s = self.shared();
            let due = s.payloads_since_snapshot >= self.snapshot_every.payloads;
            if due {
                s.payloads_since_snapshot = 0;
            }
            due
        };
        if due {
            self.snapshot_every.due.notify_one();
        }
        let n = applied.len();
        // Fails only once the driver is gone (shutdown): nothing waits for the entries then.
        let _ = self.events.send(Event::Applied { entries: applied });
        Ok(vec![(); n])
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<Cursor<Vec<u8>>>, StorageError<MemberId>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<MemberId, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<MemberId>> {
        let data = snapshot.into_inner();
        let last = meta
            .last_log_id
            .ok_or_else(|| storage_error(ErrorVerb::Read, "snapshot without a log id"))?;
        decode_data(&data).map_err(|e| storage_error(ErrorVerb::Read, e))?;
        // Durable before the state moves to it, so a restart finds it.
        self.save(meta, &data).await?;
        let (reply, answer) = oneshot::channel();
        self.events
            .send(Event::InstallSnapshot {
                data,
                index: last.index,
                reply,
            })
            .map_err(|_| storage_error(ErrorVerb::Write, "the server is stopping"))?;
        answer
            .await
            .map_err(|_| storage_error(ErrorVerb::Write, "the server is stopping"))?
            .map_err(|e| storage_error(ErrorVerb::Read, e))?;
        let mut s = self.shared();
        s.last_applied = Some(last);
        s.push_membership(meta.last_membership.clone());
        tracing::info!(index = last.index, "installed a snapshot from the leader");
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<MemberId>> {
        let store = self.store.clone();
        let latest = tokio::task::spawn_blocking(move || store.load_latest())
            .await
            .map_err(|e| storage_error(ErrorVerb::Read, e))?
            .map_err(|e| storage_error(ErrorVerb::Read, e))?;
        Ok(latest.map(|(meta, data)| Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        }))
    }
}
