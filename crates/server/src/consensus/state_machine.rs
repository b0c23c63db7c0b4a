//! openraft's state machine: committed entries go to the driver, which owns the `Core`.
//!
//! `apply` queues the entries for the driver and returns without waiting: openraft re-applies
//! the committed log inside `Raft::new`, before the driver runs. Everything the consensus layer
//! tells the driver travels over one ordered channel, so the driver still sees every entry
//! before any later event (e.g. `LeaderReady`, sent once openraft reports them applied). The
//! state is rebuilt from the log at start-up (there are no snapshots of the replicated state
//! yet), so `applied_state` starts empty.

use std::io::Cursor;

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    BasicNode, Entry, EntryPayload, ErrorSubject, ErrorVerb, LogId, RaftSnapshotBuilder,
    SnapshotMeta, StorageError, StorageIOError, StoredMembership,
};
use tokio::sync::mpsc;

use super::{Applied, Event, MemberId, TypeConfig};

pub struct StateMachine {
    events: mpsc::UnboundedSender<Event>,
    last_applied: Option<LogId<MemberId>>,
    membership: StoredMembership<MemberId, BasicNode>,
}

impl StateMachine {
    pub fn new(events: mpsc::UnboundedSender<Event>) -> StateMachine {
        StateMachine {
            events,
            last_applied: None,
            membership: StoredMembership::default(),
        }
    }
}

fn unsupported(what: &str) -> StorageError<MemberId> {
    StorageIOError::new(
        ErrorSubject::Snapshot(None),
        ErrorVerb::Write,
        openraft::AnyError::error(format!(
            "{what}: snapshots of the replicated state are not implemented; the log is kept whole"
        )),
    )
    .into()
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<MemberId>> {
        Err(unsupported("build_snapshot"))
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
        Ok((self.last_applied, self.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<()>, StorageError<MemberId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let mut applied = Vec::new();
        for e in entries {
            self.last_applied = Some(e.log_id);
            let payload = match e.payload {
                EntryPayload::Normal(p) => Some(p),
                EntryPayload::Membership(m) => {
                    self.membership = StoredMembership::new(Some(e.log_id), m);
                    None
                }
                EntryPayload::Blank => None,
            };
            applied.push(Applied {
                index: e.log_id.index,
                payload,
            });
        }
        let n = applied.len();
        // Fails only once the driver is gone (shutdown): nothing waits for the entries then.
        let _ = self.events.send(Event::Applied { entries: applied });
        Ok(vec![(); n])
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        StateMachine {
            events: self.events.clone(),
            last_applied: self.last_applied,
            membership: self.membership.clone(),
        }
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<Cursor<Vec<u8>>>, StorageError<MemberId>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        _meta: &SnapshotMeta<MemberId, BasicNode>,
        _snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<MemberId>> {
        Err(unsupported("install_snapshot"))
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<MemberId>> {
        Ok(None)
    }
}
