//! The consensus seam: the only module that knows Raft (openraft 0.9, pinned in Cargo.toml).
//!
//! The rest of the server sees an ordered stream of committed [`Payload`]s ([`Event::Applied`])
//! and a few verbs: [`Consensus::propose`] (leader only), [`Consensus::forward`] and
//! [`Consensus::send_touches`] (to the leader). A version change of openraft touches this folder
//! only.
//!
//! Mapping onto Raft:
//! - One Raft log entry per txn. The entry carries Corral's txn record (zxid inside) and, for a
//!   request forwarded by another member, its origin (member + connection), so that member
//!   answers its client when it applies the entry.
//! - Zxid = `term << 32 | n`: a new leader starts above every earlier zxid; within a term the
//!   leader counts up. Raft's blank and membership entries carry no zxid.
//! - Log index `i` of openraft is stored as record `i + 1` of `corral_storage::RaftLog`
//!   (openraft's first entry, the initial membership, has index 0).
//! - Members: `server.N` participants are voters; observers are learners.
//! - Snapshots: every `snapCount` applied payloads (txns, syncs... — a batched entry counts
//!   its items, as ZooKeeper counts txns) each member snapshots its state (Corral's snapshot
//!   image plus Raft's meta, `snapshot_store`) and openraft purges the log before it, keeping
//!   the last [`LOG_KEPT_AFTER_SNAPSHOT`] entries; a member too far behind is sent the
//!   leader's snapshot, in chunks, then the log after it.
//! - Import: `import` seeds a one-member ensemble's Raft state from a standalone server's
//!   state (`corral datadir migrate`), choosing the log id and vote so zxids keep growing.

mod forwarding;
mod import;
mod leader_loss;
mod log_store;
mod log_tail;
mod network;
mod snapshot_store;
mod state_machine;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Cursor;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use corral_proto::records::Id;
use corral_proto::SessionId;
use openraft::{BasicNode, ChangeMembers, Raft, RaftMetrics, ServerState};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, watch};

use crate::config::{EnsembleConfig, MemberConfig, MemberRole};
use crate::core::{ConnId, Forward, ForwardRequest, SnapshotView};
use crate::net::peer::{PeerClient, PeerHandler, PeerLimits, PeerServer};

pub use import::{import_term, seed_progress, seed_single_member, SeedProgress, Seeded};
pub use log_store::{LogStore, PayloadsError};

/// Member ids are ZooKeeper's `myid`s.
pub type MemberId = u64;

openraft::declare_raft_types!(
    /// Openraft's view of Corral's types.
    pub TypeConfig:
        D = Payload,
        R = (),
        NodeId = MemberId,
        Node = BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
);

/// Where a replicated request came from: the member and connection that wait for its outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    pub member: MemberId,
    pub conn: ConnId,
}

/// What one log entry asks every member to apply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Payload {
    /// A txn prepared by the leader (its zxid is inside the record).
    Txn {
        zxid: i64,
        /// Shared, not copied, by the log cache, the replication and the apply.
        #[serde(with = "record_bytes")]
        record: Bytes,
        origin: Option<Origin>,
    },
    /// A `sync` from a member's client: answered there once applied, i.e. after everything the
    /// leader committed before it.
    Sync {
        origin: Origin,
        xid: i32,
        path: String,
    },
    /// The secret session passwords derive from, shared by every member (the first entry a
    /// new ensemble's leader writes).
    SessionSecret([u8; 16]),
    /// A client resumed `session` on `to` (the leader checked it is `alive` and made `to` its
    /// owner): answered there once applied; every other member closes its connection of the
    /// session.
    SessionMoved {
        session: SessionId,
        to: Origin,
        timeout_ms: i32,
        alive: bool,
    },
    /// A read barrier (`corral.linearizableReads`): the read waiting on `origin` is answered
    /// there once this is applied.
    ReadBarrier { origin: Origin },
    /// Several payloads proposed together as one log entry, applied in order (see
    /// `propose_loop`). Never nested.
    Batch(Vec<Payload>),
}

impl Payload {
    /// The payloads this entry carries, in order: a batch's items, or itself.
    pub fn into_items(self) -> Vec<Payload> {
        match self {
            Payload::Batch(items) => items,
            other => vec![other],
        }
    }

    /// The payloads of committed entry `index` of `term` that take effect, in order: its
    /// items, without a txn prepared in another term ([`txn_belongs_to_term`]), which is
    /// logged and left out. Every path that applies committed entries goes through here.
    pub fn into_items_of_entry(self, index: u64, term: u64) -> Vec<Payload> {
        let mut items = self.into_items();
        items.retain(|item| match item {
            Payload::Txn { zxid, .. } if !txn_belongs_to_term(*zxid, term) => {
                tracing::warn!(
                    index,
                    term,
                    zxid = format_args!("{zxid:#x}"),
                    "skipping a txn prepared in an earlier term than its entry's"
                );
                false
            }
            _ => true,
        });
        items
    }

    /// Roughly the bytes it adds to a log entry.
    fn approx_bytes(&self) -> usize {
        match self {
            Payload::Txn { record, .. } => record.len() + 64,
            Payload::Sync { path, .. } => path.len() + 64,
            Payload::Batch(items) => items.iter().map(Payload::approx_bytes).sum(),
            _ => 64,
        }
    }
}

/// A txn record (or a forwarded request) as one byte string: serde's default for a byte vector
/// is a sequence of `u8` visited one element at a time, the hottest part of decoding an entry.
/// bincode writes both as a u64 length and the bytes, so log entries written either way read
/// the same.
mod record_bytes {
    use bytes::Bytes;
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(record: &Bytes, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(record)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Bytes, D::Error> {
        d.deserialize_byte_buf(Visitor)
    }

    struct Visitor;

    impl<'de> serde::de::Visitor<'de> for Visitor {
        type Value = Bytes;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a txn record")
        }

        fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Bytes, E> {
            Ok(Bytes::from(v))
        }

        fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Bytes, E> {
            Ok(Bytes::copy_from_slice(v))
        }

        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Bytes, A::Error> {
            let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64 * 1024));
            while let Some(b) = seq.next_element::<u8>()? {
                out.push(b);
            }
            Ok(Bytes::from(out))
        }
    }
}

/// Whether a txn with `zxid` belongs in a log entry of `term`. A leader prepares txns with
/// its term as the zxid's epoch (`Core::begin_epoch`), so in an entry it appended itself the
/// two agree. One that does not agree was prepared in an earlier term and reached openraft
/// only after that term ended (see `propose_loop`): its checks were made against a state that
/// did not last and its client was never answered (every client connection closes when the
/// leader changes), so every member skips it, the same way.
fn txn_belongs_to_term(zxid: i64, term: u64) -> bool {
    (zxid >> 32) as u32 == term as u32
}

/// One committed entry, in log order; `None` for Raft's own entries (blank, membership).
#[derive(Debug)]
pub struct Applied {
    pub index: u64,
    /// The term and leader that created the entry (its Raft log id, with `index`).
    pub term: u64,
    pub leader: MemberId,
    pub payload: Option<Payload>,
}

/// The driver's state for a snapshot: a copy-on-write view of the core at `index`.
pub struct SnapshotTaken {
    pub view: SnapshotView,
    pub index: u64,
    pub term: u64,
    pub leader: MemberId,
    pub secret: Option<[u8; 16]>,
}

impl std::fmt::Debug for SnapshotTaken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotTaken")
            .field("index", &self.index)
            .field("zxid", &self.view.zxid())
            .finish()
    }
}

/// A snapshot to start from or to install: its Raft index and Corral image.
pub struct SnapshotImage {
    pub index: u64,
    pub term: u64,
    pub leader: MemberId,
    pub secret: Option<[u8; 16]>,
    pub zxid: i64,
    /// The whole snapshot data; `image()` is the Corral image inside it.
    data: Vec<u8>,
    image_at: usize,
}

impl SnapshotImage {
    fn from_data(
        index: u64,
        term: u64,
        leader: MemberId,
        data: Vec<u8>,
    ) -> Result<SnapshotImage, String> {
        let (extra, image) = snapshot_store::decode_data(&data)?;
        let image_at = data.len() - image.len();
        Ok(SnapshotImage {
            index,
            term,
            leader,
            secret: extra.secret,
            zxid: extra.zxid,
            data,
            image_at,
        })
    }

    pub fn image(&self) -> &[u8] {
        &self.data[self.image_at..]
    }
}

/// This member's view of the ensemble, as of the last change.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Status {
    pub my_id: MemberId,
    pub term: u64,
    pub leader: Option<MemberId>,
    pub state: MemberState,
    /// Highest log index applied here.
    pub last_applied: Option<u64>,
    pub last_log_index: Option<u64>,
    pub voters: Vec<MemberId>,
    pub learners: Vec<MemberId>,
    /// Leader only: for each other member, the highest log index known to be replicated.
    pub replication: BTreeMap<MemberId, Option<u64>>,
    /// Leader only: no quorum of voters has answered for longer than the followers' lease
    /// (they may be electing another leader). Clients are not served then, as a ZooKeeper
    /// leader that loses its quorum stops serving.
    pub quorum_lost: bool,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum MemberState {
    #[default]
    Looking,
    Leader,
    Follower,
    Observer,
}

impl MemberState {
    /// As ZooKeeper's `srvr` prints it.
    pub fn zk_mode(self) -> &'static str {
        match self {
            MemberState::Looking => "looking",
            MemberState::Leader => "leader",
            MemberState::Follower => "follower",
            MemberState::Observer => "observer",
        }
    }
}

/// What the consensus layer tells the driver.
#[derive(Debug)]
pub enum Event {
    /// Entries are committed; apply them in order.
    Applied { entries: Vec<Applied> },
    /// Leader, term or membership changed.
    Status(Status),
    /// This member is the leader of `term` and has applied every entry before its term: it may
    /// prepare writes now.
    LeaderReady { term: u64 },
    /// Another member forwarded a client request; answer once it is proposed (or refused).
    Forwarded {
        from: MemberId,
        fwd: Forward,
        reply: oneshot::Sender<Result<(), String>>,
    },
    /// Another member's clients were heard from.
    Touches { sessions: Vec<SessionId> },
    /// openraft wants a snapshot: answer with a view of the core at exactly the last applied
    /// entry (a leader first waits until nothing it prepared is uncommitted).
    BuildSnapshot {
        reply: oneshot::Sender<SnapshotTaken>,
    },
    /// The leader sent a snapshot (this member was too far behind): replace the state with it.
    InstallSnapshot {
        data: Vec<u8>,
        index: u64,
        reply: oneshot::Sender<Result<(), String>>,
    },
    /// openraft stopped by itself, for good: its log or vote could not be written (a full or
    /// failing disk) or it hit an internal error. The member can no longer vote, replicate or
    /// apply, so the driver stops the server.
    Stopped { reason: String },
}

#[derive(Debug, thiserror::Error)]
pub enum ConsensusError {
    #[error("cannot listen for peers on {addr}: {source}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("raft log: {0}")]
    Storage(#[from] corral_storage::StorageError),
    #[error("raft: {0}")]
    Raft(String),
    #[error("{0}")]
    Snapshot(String),
}

/// Message kinds of the peer protocol.
mod kind {
    pub const APPEND_ENTRIES: u8 = 1;
    pub const VOTE: u8 = 2;
    pub const INSTALL_SNAPSHOT: u8 = 3;
    /// One forwarded client request per message, as earlier builds send them; still
    /// accepted (`Inbound::forwarded_alone`), no longer sent.
    pub const FORWARD: u8 = 10;
    /// Client requests forwarded to the leader, in order (`forwarding`); the answer lists
    /// each one's outcome.
    pub const FORWARD_BATCH: u8 = 13;
    pub const TOUCH: u8 = 11;
    /// "How far is your log?" (`leader_loss`).
    pub const LOG_STATE: u8 = 12;
}

/// How long a forwarded request may take to be accepted by the leader.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(5);

/// Where and how a member keeps its Raft state.
pub struct Settings<'a> {
    pub tick_time_ms: i32,
    pub snap_count: u64,
    pub force_sync: bool,
    pub raft_dir: &'a std::path::Path,
    pub snapshot_dir: &'a std::path::Path,
    /// Gets the Raft log's fsync and the snapshots' durations.
    pub timings: Arc<crate::admin::metrics::Timings>,
}

/// The running consensus layer of one member.
pub struct Consensus {
    my_id: MemberId,
    log: LogStore,
    raft: Raft<TypeConfig>,
    peers: network::Peers,
    proposals: mpsc::UnboundedSender<(u64, Payload)>,
    forwards: mpsc::UnboundedSender<forwarding::Job>,
    _peer_server: PeerServer,
    status: watch::Receiver<Status>,
    snapshots: Arc<snapshot_store::SnapshotStore>,
}

/// Log entries kept after a snapshot, so a member a little behind catches up from the log
/// rather than by a snapshot transfer (an entry may carry a batch of txns).
const LOG_KEPT_AFTER_SNAPSHOT: u64 = 100;

/// Timing derived from tickTime, so a ZooKeeper operator's one knob still sets the pace:
/// the default tickTime of 2000 ms gives heartbeats every ~166 ms and election timeouts of
/// 500–1000 ms (ZooKeeper gives a leader up after syncLimit ticks, 10 s by default).
///
/// A leader whose process died is noticed at once (`leader_loss`: its peer port refuses
/// connections), so these timers only decide when the leader is cut off, frozen or stalled —
/// and then they must not fire on a merely slow leader: every leader change closes every
/// client connection. Shorter timeouts (100–200 ms) made a loaded 2-core machine elect a new
/// leader several times a minute under write load.
fn raft_config(ensemble: &EnsembleConfig, tick_time_ms: i32) -> openraft::Config {
    // openraft's followers wait the leader lease (= election_timeout_max) plus an election
    // timeout after the last heartbeat: 1.5–2 s at the default tickTime.
    let election_min_ms = (tick_time_ms.max(200) as u64) / 4;
    openraft::Config {
        cluster_name: "corral".into(),
        heartbeat_interval: (election_min_ms / 3).max(10),
        election_timeout_min: election_min_ms,
        election_timeout_max: election_min_ms * 2,
        // Snapshots are asked for by the state machine, which counts payloads, not entries.
        snapshot_policy: openraft::SnapshotPolicy::Never,
        max_in_snapshot_log_to_keep: LOG_KEPT_AFTER_SNAPSHOT,
        max_payload_entries: 1000,
        // Entries are batches of txns: purge in steps of a few dozen.
        purge_batch_size: 32,
        ..Default::default()
    }
    .validate()
    .unwrap_or_else(|_| {
        let _ = ensemble;
        openraft::Config::default()
    })
}

impl Consensus {
    /// Opens the Raft log in `raft_dir` and the snapshots in `snapshot_dir`, listens for peers,
    /// joins (or bootstraps) the ensemble. Returns the snapshot the state starts from, if any:
    /// the driver loads it before it handles any event.
    pub async fn start(
        ensemble: &EnsembleConfig,
        settings: Settings<'_>,
        events: mpsc::UnboundedSender<Event>,
    ) -> Result<(Consensus, Option<SnapshotImage>), ConsensusError> {
        let my_id = ensemble.my_id;
        let me = ensemble.me();
        let limits = PeerLimits::default();
        let config = Arc::new(raft_config(ensemble, settings.tick_time_ms));
        let log = LogStore::open(
            settings.raft_dir,
            settings.force_sync,
            settings.timings.sync_observer(),
        )?;
        if log.forgo_stored_leadership(my_id)? {
            tracing::info!(
                "this member led before it stopped; it campaigns for a new term instead of \
                 resuming that one"
            );
        }
        let snapshots = Arc::new(snapshot_store::SnapshotStore::new(settings.snapshot_dir));
        let latest = snapshots.load_latest().map_err(ConsensusError::Snapshot)?;
        let snapshot_due = Arc::new(tokio::sync::Notify::new());
        let sm = state_machine::StateMachine::new(
            events.clone(),
            snapshots.clone(),
            latest.as_ref().map(|(meta, _)| meta),
            settings.timings.clone(),
            state_machine::SnapshotEvery {
                payloads: settings.snap_count.max(1),
                due: snapshot_due.clone(),
            },
        );
        let initial = match latest {
            Some((meta, data)) => {
                let last = meta
                    .last_log_id
                    .ok_or_else(|| ConsensusError::Snapshot("snapshot without a log id".into()))?;
                Some(
                    SnapshotImage::from_data(
                        last.index,
                        last.leader_id.term,
                        last.leader_id.node_id,
                        data,
                    )
                    .map_err(ConsensusError::Snapshot)?,
                )
            }
            None => None,
        };
        let mut known = HashMap::new();
        for m in &ensemble.members {
            if m.id != my_id {
                let addr = format!("{}:{}", m.host, m.peer_port);
                known.insert(m.id, PeerClient::new(my_id, m.id, addr, limits.clone()));
            }
        }
        let peers = network::Peers::new(my_id, known, limits.clone());
        let network = network::Network::new(peers.clone());
        // A leader unheard by a quorum for the followers' lease may be replaced by now.
        let quorum_lost_after_ms = config.election_timeout_max;
        let raft = Raft::new(my_id, config, network, log.clone(), sm)
            .await
            .map_err(|e| ConsensusError::Raft(e.to_string()))?;

        let bind_addr = format!("{}:{}", me.host, me.peer_port);
        let listener = tokio::net::TcpListener::bind(&bind_addr)
            .await
            .map_err(|source| ConsensusError::Bind {
                addr: bind_addr.clone(),
                source,
            })?;
        let handler = Arc::new(Inbound {
            my_id,
            log: log.clone(),
            peers: peers.clone(),
            raft: raft.clone(),
            events: events.clone(),
        });
        let peer_server =
            PeerServer::start(listener, my_id, handler, limits).map_err(|source| {
                ConsensusError::Bind {
                    addr: bind_addr.clone(),
                    source,
                }
            })?;

        let initialized = raft
            .is_initialized()
            .await
            .map_err(|e| ConsensusError::Raft(e.to_string()))?;
        if !initialized && me.role == MemberRole::Participant {
            // Every participant proposes the same initial membership; openraft makes them one
            // identical entry, so any majority can form the ensemble on first start.
            let voters: BTreeMap<MemberId, BasicNode> =
                ensemble.voters().map(|m| (m.id, node_of(m))).collect();
            if let Err(e) = raft.initialize(voters).await {
                tracing::debug!(error = %e, "ensemble already initialized elsewhere");
            }
        }

        let raft2 = raft.clone();
        tokio::spawn(async move {
            loop {
                snapshot_due.notified().await;
                if raft2.trigger().snapshot().await.is_err() {
                    return; // raft stopped
                }
            }
        });
        let (proposals, proposal_rx) = mpsc::unbounded_channel();
        let (forwards, forward_rx) = mpsc::unbounded_channel();
        tokio::spawn(forwarding::forward_loop(
            peers.clone(),
            raft.clone(),
            forward_rx,
        ));
        tokio::spawn(propose_loop(raft.clone(), proposal_rx));
        let learner_addrs: BTreeMap<MemberId, BasicNode> =
            ensemble.observers().map(|m| (m.id, node_of(m))).collect();
        let (status_tx, status) = watch::channel(Status {
            my_id,
            ..Status::default()
        });
        tokio::spawn(watch_metrics(
            raft.clone(),
            my_id,
            quorum_lost_after_ms,
            learner_addrs,
            events,
            status_tx,
        ));
        let consensus = Consensus {
            snapshots,
            my_id,
            log,
            raft,
            peers,
            proposals,
            forwards,
            _peer_server: peer_server,
            status,
        };
        Ok((consensus, initial))
    }

    /// The newest snapshot on disk (for rebuilding the state without openraft).
    pub fn latest_snapshot(&self) -> Result<Option<SnapshotImage>, String> {
        match self.snapshots.load_latest()? {
            None => Ok(None),
            Some((meta, data)) => {
                let last = meta.last_log_id.ok_or("snapshot without a log id")?;
                SnapshotImage::from_data(
                    last.index,
                    last.leader_id.term,
                    last.leader_id.node_id,
                    data,
                )
                .map(Some)
            }
        }
    }

    /// Decodes snapshot data the leader sent.
    pub fn snapshot_image(index: u64, data: Vec<u8>) -> Result<SnapshotImage, String> {
        SnapshotImage::from_data(index, 0, 0, data)
    }

    pub fn my_id(&self) -> MemberId {
        self.my_id
    }

    /// The Raft log, for rebuilding the state from committed entries.
    pub fn log_store(&self) -> LogStore {
        self.log.clone()
    }

    /// Appends an entry for the leader of `term` (entries are proposed in call order). Its
    /// outcome arrives as [`Event::Applied`]; if leadership is lost first it may never arrive,
    /// and the driver learns that from [`Event::Status`]. A proposal still queued when this
    /// member no longer leads `term` is dropped, never appended in a later term.
    pub fn propose(&self, term: u64, payload: Payload) {
        let _ = self.proposals.send((term, payload));
    }

    /// Per member: its answers that came after the call had timed out (the peer transport's
    /// count since start; see `network::warn_of_late_answers`).
    pub fn late_answers(&self) -> Vec<(MemberId, u64)> {
        self.peers.late_answers()
    }

    pub fn status(&self) -> Status {
        self.status.borrow().clone()
    }

    /// Hands a client request to the leader, behind every request handed over before it.
    /// `failed` gets `(conn, why)` if the leader does not accept it (then the client
    /// connection must be closed: its outcome is unknown).
    pub fn forward(
        &self,
        leader: MemberId,
        fwd: &Forward,
        failed: mpsc::UnboundedSender<(ConnId, String)>,
    ) {
        let job = forwarding::Job {
            leader,
            conn: fwd.conn,
            bytes: fwd.approx_bytes(),
            wire: WireForward::from(fwd),
            failed,
        };
        if let Err(mpsc::error::SendError(job)) = self.forwards.send(job) {
            let _ = job
                .failed
                .send((job.conn, "member is shutting down".to_string()));
        }
    }

    /// Tells the leader which sessions this member's clients kept alive.
    pub fn send_touches(&self, leader: MemberId, sessions: Vec<SessionId>) {
        if let Some(client) = self.peers.get(leader, &self.raft) {
            let body = encode(&sessions);
            tokio::spawn(async move {
                if let Err(e) = client.call(kind::TOUCH, body, FORWARD_TIMEOUT).await {
                    tracing::debug!(leader, error = %e, "session touches not delivered");
                }
            });
        }
    }

    /// Carries out a reconfig request (leader): new participants and observers are added as
    /// learners and caught up first, then the voter set changes (openraft's joint consensus).
    /// Returns the new membership as `/zookeeper/config`'s `server.N=` lines, each ending with
    /// a newline.
    pub fn reconfigure(
        &self,
        joining: &str,
        leaving: &str,
        new_members: &str,
    ) -> impl std::future::Future<Output = Result<String, ReconfigError>> + Send + 'static {
        let raft = self.raft.clone();
        let plan = plan_reconfig(&self.raft.metrics().borrow(), joining, leaving, new_members);
        async move {
            let plan = plan?;
            for (id, node) in &plan.add_learners {
                tracing::info!(member = id, node = %node.addr, "reconfig: adding and catching up a member");
                raft.add_learner(*id, node.clone(), true)
                    .await
                    .map_err(|e| ReconfigError::Failed(e.to_string()))?;
            }
            if plan.voters != plan.old_voters {
                tracing::info!(voters = ?plan.voters, "reconfig: changing the voters");
                raft.change_membership(ChangeMembers::ReplaceAllVoters(plan.voters.clone()), true)
                    .await
                    .map_err(|e| ReconfigError::Failed(e.to_string()))?;
            }
            if !plan.remove.is_empty() {
                raft.change_membership(ChangeMembers::RemoveNodes(plan.remove.clone()), false)
                    .await
                    .map_err(|e| ReconfigError::Failed(e.to_string()))?;
            }
            let m = raft.metrics().borrow().membership_config.clone();
            let mut text = String::new();
            for (id, node) in m.membership().nodes() {
                let role = if m.membership().voter_ids().any(|v| v == *id) {
                    "participant"
                } else {
                    "observer"
                };
                text.push_str(&format!(
                    "server.{id}={}\n",
                    spec_with_role(&node.addr, role)
                ));
            }
            Ok(text)
        }
    }

    pub async fn shutdown(&self) {
        let _ = self.raft.shutdown().await;
        self.log.save_pending_committed().await;
    }
}

/// Entries proposed and not yet applied here beyond which proposals wait and are batched.
///
/// Fewer entries in flight make larger entries, and each entry costs every member a Raft
/// round (append, fsync, replication, commit, apply) whatever it carries. Measured with the
/// neutral zkbench on the 3-member bench (2 cores, members sized to one CPU each, clients
/// acknowledged at once — `corral.clientQuickAck`): durable writes 36–37k/s with four in
/// flight (~15 txns per entry), 40–41k with three, 45–51k with two (~27 per entry), 47–49k
/// with one (~47 per entry). Two keeps one entry replicating while the one before it
/// commits, which a real network's round trip needs.
const MAX_ENTRIES_IN_FLIGHT: usize = 2;
/// The same bound for a member that is the only voter: its entries commit when its own
/// log's fdatasync returns, so a second entry in flight only queues behind the same sync
/// thread while halving the batches. One-member ensemble, zkbench 4×16 durable writes:
/// 99 k/s with one in flight against 91 k/s with two.
const MAX_ENTRIES_IN_FLIGHT_ALONE: usize = 1;
/// A batch ends before it grows past this many bytes (a larger payload goes alone).
const MAX_BATCH_BYTES: usize = 64 * 1024;

/// `first`, then what is queued on `rx` right now, in order, while `fits` accepts the next
/// one given the batch so far (it may keep running totals); the first one refused is
/// returned, to start the next batch.
fn take_batch<T>(
    first: T,
    rx: &mut mpsc::UnboundedReceiver<T>,
    mut fits: impl FnMut(&[T], &T) -> bool,
) -> (Vec<T>, Option<T>) {
    let mut batch = vec![first];
    while let Ok(next) = rx.try_recv() {
        if !fits(&batch, &next) {
            return (batch, Some(next));
        }
        batch.push(next);
    }
    (batch, None)
}

/// Sends proposals to openraft in call order (so log order is call order). While
/// [`MAX_ENTRIES_IN_FLIGHT`] entries ([`MAX_ENTRIES_IN_FLIGHT_ALONE`] for a lone voter) wait
/// to be applied, further proposals queue up and go out together as one entry
/// ([`Payload::Batch`]): under load the log, the replication and the apply handle one entry
/// per batch instead of one per txn, and a lone proposal still goes out at once. The
/// outcome of each reaches the driver through the state machine; openraft's per-entry
/// answers are awaited here to bound the entries in flight (and so they are consumed: an
/// answer nobody waits for is logged by openraft as a warning).
///
/// Each proposal carries the term of the leader that prepared it. One whose term is over is
/// dropped: a member that lost leadership with proposals queued here and won a later term
/// before they went out would otherwise append them in that later term, where they are
/// stale (prepared against a state that did not last; their clients' connections closed
/// with the old term). The check reads openraft's metrics, which can lag its core by a
/// moment, so the apply side skips a stale txn as well ([`txn_belongs_to_term`]).
async fn propose_loop(raft: Raft<TypeConfig>, mut rx: mpsc::UnboundedReceiver<(u64, Payload)>) {
    use futures::stream::{FuturesUnordered, StreamExt};
    let mut answers = FuturesUnordered::new();
    // A proposal taken from the queue that did not fit the batch before it.
    let mut carried: Option<(u64, Payload)> = None;
    // Set from the membership with each proposal, which is what puts entries in flight.
    let mut in_flight_max = MAX_ENTRIES_IN_FLIGHT;
    loop {
        while answers.len() >= in_flight_max {
            answers.next().await;
        }
        let first = match carried.take() {
            Some(p) => p,
            None => tokio::select! {
                p = rx.recv() => match p {
                    Some(p) => p,
                    None => return,
                },
                Some(_) = answers.next(), if !answers.is_empty() => continue,
            },
        };
        let term = first.0;
        let mut bytes = first.1.approx_bytes();
        let (batch, next) = take_batch(first, &mut rx, |_, (next_term, p)| {
            let size = p.approx_bytes();
            let fits = *next_term == term && bytes + size <= MAX_BATCH_BYTES;
            bytes += size;
            fits
        });
        carried = next;
        let mut batch: Vec<Payload> = batch.into_iter().map(|(_, p)| p).collect();
        let leads_term = {
            let m = raft.metrics();
            let m = m.borrow();
            let alone = m
                .membership_config
                .membership()
                .voter_ids()
                .nth(1)
                .is_none();
            in_flight_max = if alone {
                MAX_ENTRIES_IN_FLIGHT_ALONE
            } else {
                MAX_ENTRIES_IN_FLIGHT
            };
            m.state == ServerState::Leader && m.current_term == term
        };
        if !leads_term {
            tracing::info!(
                term,
                proposals = batch.len(),
                "proposals of a term this member no longer leads are dropped"
            );
            continue;
        }
        let payload = if batch.len() == 1 {
            batch.pop().expect("one payload")
        } else {
            Payload::Batch(batch)
        };
        match raft.client_write_ff(payload).await {
            Ok(answer) => answers.push(answer),
            Err(e) => {
                tracing::error!(error = %e, "raft stopped; proposals are dropped");
                return;
            }
        }
    }
}

/// Follows openraft's metrics: reports role changes and tells the driver when a new leader
/// has applied everything before its term.
async fn watch_metrics(
    raft: Raft<TypeConfig>,
    my_id: MemberId,
    quorum_lost_after_ms: u64,
    learner_addrs: BTreeMap<MemberId, BasicNode>,
    events: mpsc::UnboundedSender<Event>,
    status_tx: watch::Sender<Status>,
) {
    let mut metrics = raft.metrics();
    let mut last = Status::default();
    let mut ready_term = None;
    loop {
        let m = metrics.borrow_and_update().clone();
        if let Err(fatal) = &m.running_state {
            // Left alone, such a member would report "looking" forever while holding its
            // client port: wedged until someone restarts it. `Stopped` is our own shutdown.
            if !matches!(fatal, openraft::error::Fatal::Stopped) {
                let _ = events.send(Event::Stopped {
                    reason: fatal.to_string(),
                });
            }
            return;
        }
        let membership = m.membership_config.membership();
        let voters: Vec<MemberId> = membership.voter_ids().collect();
        let learners: Vec<MemberId> = membership.learner_ids().collect();
        let state = match m.state {
            ServerState::Leader => MemberState::Leader,
            // A member that is not a voter (an observer, or a new member being caught up
            // before a reconfig makes it a participant) only observes.
            ServerState::Follower if m.current_leader.is_some() => {
                if voters.contains(&my_id) {
                    MemberState::Follower
                } else {
                    MemberState::Observer
                }
            }
            ServerState::Learner if m.current_leader.is_some() => MemberState::Observer,
            _ => MemberState::Looking,
        };
        let replication = m
            .replication
            .as_ref()
            .map(|r| {
                r.iter()
                    .filter(|(id, _)| **id != my_id)
                    .map(|(id, l)| (*id, l.map(|l| l.index)))
                    .collect()
            })
            .unwrap_or_default();
        let quorum_lost = state == MemberState::Leader
            && voters.len() > 1
            // None: no quorum has answered yet in this term; such a leader is not ready
            // (readiness needs a quorum) and serves nobody anyway.
            && m.millis_since_quorum_ack
                .is_some_and(|ms| ms > quorum_lost_after_ms);
        let status = Status {
            my_id,
            term: m.current_term,
            leader: m.current_leader,
            state,
            last_applied: m.last_applied.map(|l| l.index),
            last_log_index: m.last_log_index,
            voters,
            learners,
            replication,
            quorum_lost,
        };
        let role_changed = (status.term, status.leader, status.state, &status.voters)
            != (last.term, last.leader, last.state, &last.voters)
            || status.quorum_lost != last.quorum_lost;
        let _ = status_tx.send(status.clone());
        if role_changed {
            tracing::info!(
                term = status.term,
                leader = ?status.leader,
                mode = status.state.zk_mode(),
                quorum_lost = status.quorum_lost,
                voters = ?status.voters,
                learners = ?status.learners,
                "ensemble role"
            );
            if events.send(Event::Status(status.clone())).is_err() {
                return;
            }
        }
        if status.state == MemberState::Leader && ready_term != Some(status.term) {
            ready_term = Some(status.term);
            let term = status.term;
            let raft2 = raft.clone();
            let events2 = events.clone();
            let learner_addrs = learner_addrs.clone();
            let known_learners: BTreeSet<MemberId> = status.learners.iter().copied().collect();
            tokio::spawn(async move {
                // Confirms leadership with a quorum and waits until this member applied every
                // entry up to its own first entry of the term. Peers that are still starting
                // make it fail: retry while this member leads the same term.
                let mut ready = raft2.ensure_linearizable().await;
                while ready.is_err() {
                    let m = raft2.metrics().borrow().clone();
                    if m.state != ServerState::Leader || m.current_term != term {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    ready = raft2.ensure_linearizable().await;
                }
                match ready {
                    Ok(_) => {
                        let _ = events2.send(Event::LeaderReady { term });
                        for (id, node) in learner_addrs {
                            if !known_learners.contains(&id) {
                                if let Err(e) = raft2.add_learner(id, node, false).await {
                                    tracing::warn!(observer = id, error = %e, "cannot add observer");
                                }
                            }
                        }
                    }
                    Err(e) => {
                        tracing::info!(term, error = %e, "lost leadership before it was ready")
                    }
                }
            });
        }
        last = status;
        if metrics.changed().await.is_err() {
            return;
        }
    }
}

impl Inbound {
    /// Client requests another member forwarded in one message: queued for the driver now, in
    /// order and before the next message on the connection is looked at, so a session's
    /// requests are prepared in the order its member sent them (a follower sends them without
    /// waiting for answers). Answered with each one's outcome once the driver has proposed (or
    /// refused) them all.
    fn forwarded(
        &self,
        from: MemberId,
        body: &[u8],
    ) -> futures::future::BoxFuture<'static, Result<Bytes, String>> {
        let wires: Vec<WireForward> = match decode(body) {
            Ok(w) => w,
            Err(e) => return Box::pin(async move { Err(e) }),
        };
        let answers = self.queue_forwards(from, wires);
        Box::pin(async move { Ok(encode(&answers.await)) })
    }

    /// One forwarded request in a message of its own (`kind::FORWARD`, what members of
    /// earlier builds send): accepted as a batch of one, so such a member can still forward
    /// to this one while an ensemble is upgraded member by member.
    fn forwarded_alone(
        &self,
        from: MemberId,
        body: &[u8],
    ) -> futures::future::BoxFuture<'static, Result<Bytes, String>> {
        let wire: WireForward = match decode(body) {
            Ok(w) => w,
            Err(e) => return Box::pin(async move { Err(e) }),
        };
        let answers = self.queue_forwards(from, vec![wire]);
        Box::pin(async move {
            let answer = answers
                .await
                .pop()
                .unwrap_or_else(|| Err("no answer".to_string()));
            Ok(encode(&answer))
        })
    }

    /// Queues forwarded requests for the driver, in order; resolves to each one's outcome.
    fn queue_forwards(
        &self,
        from: MemberId,
        wires: Vec<WireForward>,
    ) -> impl std::future::Future<Output = Vec<Result<(), String>>> + Send + 'static {
        let mut replies = Vec::with_capacity(wires.len());
        for wire in wires {
            let (reply, rx) = oneshot::channel();
            let fwd = wire.into_forward();
            let queued = self
                .events
                .send(Event::Forwarded { from, fwd, reply })
                .is_ok();
            replies.push(queued.then_some(rx));
        }
        async move {
            let mut answers = Vec::with_capacity(replies.len());
            for rx in replies {
                let answer = match rx {
                    Some(rx) => rx
                        .await
                        .unwrap_or_else(|_| Err("member is shutting down".to_string())),
                    None => Err("member is shutting down".to_string()),
                };
                answers.push(answer);
            }
            answers
        }
    }
}

/// Serves peers' requests.
struct Inbound {
    my_id: MemberId,
    log: LogStore,
    peers: network::Peers,
    raft: Raft<TypeConfig>,
    events: mpsc::UnboundedSender<Event>,
}

impl PeerHandler for Inbound {
    fn handle(
        &self,
        from: u64,
        kind: u8,
        body: Bytes,
    ) -> futures::future::BoxFuture<'static, Result<Bytes, String>> {
        if kind == kind::FORWARD_BATCH {
            return self.forwarded(from, &body);
        }
        if kind == kind::FORWARD {
            return self.forwarded_alone(from, &body);
        }
        if kind == kind::LOG_STATE {
            let state = leader_loss::log_state(&self.raft, &self.log);
            return Box::pin(async move { Ok(encode(&state)) });
        }
        let raft = self.raft.clone();
        let events = self.events.clone();
        Box::pin(async move {
            match kind {
                kind::APPEND_ENTRIES => {
                    let rpc = decode(&body)?;
                    Ok(encode(&raft.append_entries(rpc).await))
                }
                kind::VOTE => {
                    let rpc = decode(&body)?;
                    Ok(encode(&raft.vote(rpc).await))
                }
                kind::INSTALL_SNAPSHOT => {
                    let rpc = decode(&body)?;
                    Ok(encode(&raft.install_snapshot(rpc).await))
                }
                kind::TOUCH => {
                    let sessions: Vec<SessionId> = decode(&body)?;
                    let _ = events.send(Event::Touches { sessions });
                    Ok(Bytes::new())
                }
                other => Err(format!("unknown peer message kind {other}")),
            }
        })
    }

    fn closed(&self, from: u64) {
        tokio::spawn(leader_loss::on_peer_closed(
            self.raft.clone(),
            self.log.clone(),
            self.peers.clone(),
            self.my_id,
            from,
        ));
    }
}

/// A forwarded request as it travels between members.
#[derive(Debug, Serialize, Deserialize)]
struct WireForward {
    conn: ConnId,
    session: SessionId,
    auth: Vec<(String, String)>,
    request: WireRequest,
}

#[derive(Debug, Serialize, Deserialize)]
enum WireRequest {
    Connect {
        timeout_ms: i32,
    },
    Request {
        #[serde(with = "record_bytes")]
        body: Bytes,
    },
    Sync {
        xid: i32,
        path: String,
    },
    Revalidate {
        timeout_ms: i32,
    },
    ReadBarrier,
}

impl From<&Forward> for WireForward {
    fn from(f: &Forward) -> WireForward {
        WireForward {
            conn: f.conn,
            session: f.session,
            auth: f
                .auth
                .iter()
                .map(|id| (id.scheme.clone(), id.id.clone()))
                .collect(),
            request: match &f.request {
                ForwardRequest::Connect { timeout_ms } => WireRequest::Connect {
                    timeout_ms: *timeout_ms,
                },
                ForwardRequest::Request { body } => WireRequest::Request { body: body.clone() },
                ForwardRequest::Sync { xid, path } => WireRequest::Sync {
                    xid: *xid,
                    path: path.clone(),
                },
                ForwardRequest::Revalidate { timeout_ms } => WireRequest::Revalidate {
                    timeout_ms: *timeout_ms,
                },
                ForwardRequest::ReadBarrier => WireRequest::ReadBarrier,
            },
        }
    }
}

impl WireForward {
    fn into_forward(self) -> Forward {
        Forward {
            conn: self.conn,
            session: self.session,
            auth: self
                .auth
                .into_iter()
                .map(|(scheme, id)| Id { scheme, id })
                .collect(),
            request: match self.request {
                WireRequest::Connect { timeout_ms } => ForwardRequest::Connect { timeout_ms },
                WireRequest::Request { body } => ForwardRequest::Request { body },
                WireRequest::Sync { xid, path } => ForwardRequest::Sync { xid, path },
                WireRequest::Revalidate { timeout_ms } => ForwardRequest::Revalidate { timeout_ms },
                WireRequest::ReadBarrier => ForwardRequest::ReadBarrier,
            },
        }
    }
}

fn encode<T: Serialize>(value: &T) -> Bytes {
    Bytes::from(bincode::serialize(value).expect("in-memory serialization does not fail"))
}

fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, String> {
    bincode::deserialize(bytes).map_err(|e| format!("undecodable peer message: {e}"))
}

/// Why a reconfig request failed (mapped to ZooKeeper's codes by the caller).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReconfigError {
    /// The request is malformed or would leave no voter (ZooKeeper: BadArguments).
    #[error("bad reconfig request: {0}")]
    BadArguments(String),
    /// The change could not be carried out (ZooKeeper: NewConfigNoQuorum).
    #[error("reconfig failed: {0}")]
    Failed(String),
}

/// A member's Raft node: its `server.N` right-hand side (`host:peer:election:role;addr:port`),
/// so the membership alone can print `/zookeeper/config` and find a member's peer port.
fn node_of(m: &MemberConfig) -> BasicNode {
    BasicNode::new(m.zk_spec())
}

/// `host:peer` of a node's spec (also accepts a bare `host:peer`).
pub(crate) fn peer_addr(spec: &str) -> String {
    let server = spec.split(';').next().unwrap_or_default();
    let mut parts: Vec<&str> = server.rsplitn(4, ':').collect();
    parts.reverse();
    // [host, peer, election, role] or [host.., peer, election] or [host, peer]
    if parts.len() == 4 && parts[3].chars().all(|c| c.is_ascii_alphabetic()) {
        return format!("{}:{}", parts[0], parts[1]);
    }
    let mut parts: Vec<&str> = server.rsplitn(3, ':').collect();
    parts.reverse();
    match parts.as_slice() {
        [host, peer, _election] => format!("{host}:{peer}"),
        _ => server.to_string(),
    }
}

/// The spec with its role word set to `role`.
fn spec_with_role(spec: &str, role: &str) -> String {
    let (server, client) = match spec.split_once(';') {
        Some((s, c)) => (s, Some(c)),
        None => (spec, None),
    };
    let base = match server.rsplit_once(':') {
        Some((rest, last)) if last.chars().all(|c| c.is_ascii_alphabetic()) => rest,
        _ => server,
    };
    match client {
        Some(c) => format!("{base}:{role};{c}"),
        None => format!("{base}:{role}"),
    }
}

struct ReconfigPlan {
    add_learners: Vec<(MemberId, BasicNode)>,
    old_voters: BTreeSet<MemberId>,
    voters: BTreeSet<MemberId>,
    remove: BTreeSet<MemberId>,
}

/// What a reconfig request asks for, against the current membership. Incremental form:
/// `joining` (comma-separated `server.N=...`) and `leaving` (comma-separated ids);
/// non-incremental: `new_members` (the whole new list).
fn plan_reconfig(
    m: &RaftMetrics<MemberId, BasicNode>,
    joining: &str,
    leaving: &str,
    new_members: &str,
) -> Result<ReconfigPlan, ReconfigError> {
    let membership = m.membership_config.membership();
    let old_voters: BTreeSet<MemberId> = membership.voter_ids().collect();
    let current: BTreeMap<MemberId, BasicNode> =
        membership.nodes().map(|(id, n)| (*id, n.clone())).collect();
    let parse_list = |text: &str| -> Result<Vec<MemberConfig>, ReconfigError> {
        text.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| {
                crate::ensemble_config::parse_member_spec(s).map_err(ReconfigError::BadArguments)
            })
            .collect()
    };
    let (wanted, leaving_ids): (Vec<MemberConfig>, BTreeSet<MemberId>) =
        if !new_members.trim().is_empty() {
            let wanted = parse_list(new_members)?;
            let keep: BTreeSet<MemberId> = wanted.iter().map(|m| m.id).collect();
            let gone = current
                .keys()
                .filter(|id| !keep.contains(id))
                .copied()
                .collect();
            (wanted, gone)
        } else {
            let mut ids = BTreeSet::new();
            for t in leaving.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                let id = t.parse::<MemberId>().map_err(|_| {
                    ReconfigError::BadArguments(format!("`{t}` is not a server id"))
                })?;
                ids.insert(id);
            }
            (parse_list(joining)?, ids)
        };
    let mut voters: BTreeSet<MemberId> = old_voters
        .iter()
        .filter(|v| !leaving_ids.contains(v))
        .copied()
        .collect();
    let mut add_learners = Vec::new();
    for w in &wanted {
        let node = node_of(w);
        if current.get(&w.id).map(|n| peer_addr(&n.addr)) != Some(peer_addr(&node.addr))
            || !current.contains_key(&w.id)
        {
            add_learners.push((w.id, node));
        }
        match w.role {
            MemberRole::Participant => {
                voters.insert(w.id);
            }
            MemberRole::Observer => {
                voters.remove(&w.id);
            }
        }
    }
    if voters.is_empty() {
        return Err(ReconfigError::BadArguments(
            "the new configuration has no participant".into(),
        ));
    }
    Ok(ReconfigPlan {
        add_learners,
        old_voters,
        voters,
        remove: leaving_ids,
    })
}

#[cfg(test)]
mod payload_tests {
    use super::*;

    /// `Payload` as it was when a txn record was a `Vec<u8>`: log entries written then must
    /// still decode.
    #[derive(Serialize)]
    enum PayloadWithVecRecord {
        Txn {
            zxid: i64,
            record: Vec<u8>,
            origin: Option<Origin>,
        },
    }

    #[test]
    fn a_txn_record_encodes_as_it_did_when_it_was_a_byte_vector() {
        let origin = Some(Origin { member: 2, conn: 9 });
        let old = bincode::serialize(&PayloadWithVecRecord::Txn {
            zxid: 0x5_0000_0007,
            record: b"txn record".to_vec(),
            origin,
        })
        .unwrap();
        let new = Payload::Txn {
            zxid: 0x5_0000_0007,
            record: Bytes::from_static(b"txn record"),
            origin,
        };
        assert_eq!(bincode::serialize(&new).unwrap(), old);
        assert_eq!(bincode::deserialize::<Payload>(&old).unwrap(), new);
        let batch = Payload::Batch(vec![new.clone(), new]);
        let back: Payload = bincode::deserialize(&bincode::serialize(&batch).unwrap()).unwrap();
        assert_eq!(back, batch);
    }
}

/// Configuration for the consensus tests: a zoo.cfg in `dir` with `servers` lines (tickTime
/// 2000, the usual limits), loaded as member 1.
#[cfg(test)]
pub(crate) mod test_config {
    use crate::config::{ConfigOverrides, ServerConfig};
    use crate::ensemble_config::EnsembleConfig;
    use std::path::Path;

    pub(crate) fn ensemble(dir: &Path, servers: &str) -> EnsembleConfig {
        server(dir, servers)
            .ensemble
            .expect("a configuration with server lines")
    }

    /// The whole server configuration of that zoo.cfg (`lines` may add other keys).
    pub(crate) fn server(dir: &Path, lines: &str) -> ServerConfig {
        let cfg = dir.join("zoo.cfg");
        std::fs::write(
            &cfg,
            format!(
                "tickTime=2000\ninitLimit=10\nsyncLimit=5\ndataDir={}\n{lines}",
                dir.display()
            ),
        )
        .unwrap();
        let overrides = ConfigOverrides {
            my_id: Some(1),
            ..ConfigOverrides::default()
        };
        ServerConfig::load(&cfg, &overrides).unwrap()
    }
}

#[cfg(test)]
mod propose_tests {
    use super::*;
    use crate::testing::free_port;
    use std::time::Duration;

    /// How long a test waits for one step.
    const WITHIN: Duration = Duration::from_secs(60);

    /// A one-member ensemble in `dir`, once it leads: its consensus, its events and the term.
    async fn leading_one_member(
        dir: &std::path::Path,
    ) -> (
        Consensus,
        mpsc::UnboundedReceiver<Event>,
        u64,
        EnsembleConfig,
    ) {
        let ensemble = test_config::ensemble(
            dir,
            &format!(
                "server.1=127.0.0.1:{}:{};{}\n",
                free_port(),
                free_port(),
                free_port()
            ),
        );
        let (events_tx, mut events) = mpsc::unbounded_channel();
        let settings = Settings {
            tick_time_ms: 200,
            snap_count: 1_000_000,
            force_sync: false,
            raft_dir: &dir.join("raft"),
            snapshot_dir: &dir.join("raft-snapshots"),
            timings: Arc::new(crate::admin::metrics::Timings::default()),
        };
        let (consensus, _) = Consensus::start(&ensemble, settings, events_tx)
            .await
            .expect("a one-member ensemble starts");
        let term = tokio::time::timeout(WITHIN, async {
            loop {
                if let Some(Event::LeaderReady { term }) = events.recv().await {
                    return term;
                }
            }
        })
        .await
        .expect("the member leads within a minute");
        (consensus, events, term, ensemble)
    }

    fn txn(zxid: i64, record: &'static [u8]) -> Payload {
        Payload::Txn {
            zxid,
            record: Bytes::from_static(record),
            origin: None,
        }
    }

    /// A proposal prepared for a term this member no longer leads is dropped, not appended in
    /// the term it leads now (where it would be a stale txn in a later term's entry).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_proposal_of_a_term_that_is_over_is_not_appended() {
        let dir = tempfile::tempdir().unwrap();
        let (consensus, mut events, term, _) = leading_one_member(dir.path()).await;
        let within = WITHIN;

        consensus.propose(term - 1, txn(((term - 1) as i64) << 32 | 1, b"stale"));
        consensus.propose(term, txn((term as i64) << 32 | 1, b"fresh"));
        let applied: Vec<Bytes> = tokio::time::timeout(within, async {
            let mut seen = Vec::new();
            loop {
                if let Some(Event::Applied { entries }) = events.recv().await {
                    for e in entries {
                        for item in e.payload.map(Payload::into_items).unwrap_or_default() {
                            if let Payload::Txn { record, .. } = item {
                                seen.push(record);
                            }
                        }
                    }
                }
                if seen.iter().any(|r| r.as_ref() == b"fresh") {
                    return seen;
                }
            }
        })
        .await
        .expect("the current term's proposal is applied within a minute");
        assert_eq!(applied, vec![Bytes::from_static(b"fresh")]);
        consensus.shutdown().await;
    }

    /// A member of an earlier build forwards one request per message (`kind::FORWARD`); the
    /// leader still takes it, so an ensemble can be upgraded member by member.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_forward_in_a_message_of_its_own_is_still_accepted() {
        let dir = tempfile::tempdir().unwrap();
        let (consensus, mut events, _, ensemble) = leading_one_member(dir.path()).await;
        let peer_addr = format!("127.0.0.1:{}", ensemble.me().peer_port);
        let within = WITHIN;

        let wire = WireForward {
            conn: 77,
            session: 0x1234,
            auth: Vec::new(),
            request: WireRequest::Request {
                body: Bytes::from_static(b"request bytes"),
            },
        };
        let old_member = PeerClient::new(2, 1, peer_addr, PeerLimits::default());
        let call = old_member.call(kind::FORWARD, encode(&wire), within);
        let forwarded = tokio::time::timeout(within, async {
            loop {
                if let Some(Event::Forwarded { from, fwd, reply }) = events.recv().await {
                    let _ = reply.send(Ok(()));
                    return (from, fwd);
                }
            }
        });
        let (answer, forwarded) = tokio::join!(call, forwarded);
        let (from, fwd) = forwarded.expect("the request reaches the driver within a minute");
        assert_eq!((from, fwd.conn, fwd.session), (2, 77, 0x1234));
        let answer: Result<(), String> = decode(&answer.expect("an answer")).unwrap();
        assert_eq!(answer, Ok(()));
        consensus.shutdown().await;
    }

    #[test]
    fn a_txn_belongs_to_the_term_that_is_its_zxid_epoch() {
        assert!(txn_belongs_to_term(0x7_0000_0001, 7));
        assert!(!txn_belongs_to_term(0x6_0000_0001, 7));
        assert!(!txn_belongs_to_term(0x8_0000_0001, 7));
        // The epoch is the term's low 32 bits, as `Core::begin_epoch` takes it.
        assert!(txn_belongs_to_term(0x2_0000_0001, (1 << 32) | 2));
    }
}
