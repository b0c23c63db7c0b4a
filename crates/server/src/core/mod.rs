//! The state machine: data tree, sessions and watches, driven by its caller.
//!
//! `Core` does no I/O and reads no clock: the network layer hands it whole frames and the
//! current time, and it hands back [`Effect`]s (frames to send, connections to close) plus, for
//! writes, the [`LoggedTxn`] that must be made durable before those effects may be released.
//! Replaying the same logged txns through [`Core::apply_logged`] rebuilds the same tree.

mod acl;
mod apply;
#[doc(hidden)]
pub mod invariants;
pub use corral_proto::path;
mod prepare;
mod quota;
mod read;
mod recent;
mod session;
mod snapshot;
pub use snapshot::{SnapshotError, SnapshotView};
mod node;
mod tree;
pub mod txn;
mod watch;

use std::collections::HashMap;
use std::net::SocketAddr;

use bytes::Bytes;
use corral_proto::records::{ConnectResponse, Id, ReplyHeader, TxnHeader, WatcherEvent};
use corral_proto::request::decode_connect;
use corral_proto::{
    frame, xid, EventType, Jute, KeeperState, Reader, Request, RequestError, Response, SessionId,
    Writer, ZkError, Zxid,
};

pub use acl::digest_id;
use apply::Trigger;
use session::Sessions;
use tree::DataTree;
use txn::{Txn, TxnRecord};
use watch::{WatchManager, WatchMode};

/// Identifies one client TCP connection for the lifetime of the server process. Watches are
/// owned by connections (as in ZooKeeper): a reconnecting client re-registers them.
pub type ConnId = u64;

/// Settings of the state machine (a subset of zoo.cfg).
#[derive(Debug, Clone)]
pub struct CoreConfig {
    pub tick_time_ms: i32,
    pub min_session_timeout_ms: i32,
    pub max_session_timeout_ms: i32,
    /// `digest` of the super user (`super:<base64 sha1>`), from `zookeeper.DigestAuthenticationProvider.superDigest`.
    pub super_digest: Option<String>,
    /// TTL nodes need `extendedTypesEnabled=true`, as in ZooKeeper.
    pub extended_types_enabled: bool,
    /// Largest accepted request body; larger frames close the connection.
    pub max_frame_bytes: usize,
    /// Seed for session ids (ZooKeeper derives it from the start time and the server id).
    pub server_id: u8,
    /// Secret from which session passwords are derived; must survive restarts so clients can
    /// resume their sessions (the driver keeps it in the data directory).
    pub session_secret: [u8; 16],
    /// How often empty containers and expired TTL nodes are looked for
    /// (ZooKeeper's `znode.container.checkIntervalMs`).
    pub container_check_interval_ms: i64,
    /// Fail writes that exceed a hard quota (`zookeeper.enforceQuota`).
    pub enforce_quota: bool,
    /// `reconfigEnabled`: membership changes through the reconfig request (ensemble only).
    pub reconfig_enabled: bool,
}

impl Default for CoreConfig {
    fn default() -> Self {
        CoreConfig {
            tick_time_ms: 2000,
            min_session_timeout_ms: 4000,
            max_session_timeout_ms: 40000,
            super_digest: None,
            extended_types_enabled: false,
            max_frame_bytes: corral_proto::frame::DEFAULT_MAX_FRAME_BYTES,
            server_id: 0,
            session_secret: [0; 16],
            container_check_interval_ms: 60_000,
            enforce_quota: true,
            reconfig_enabled: false,
        }
    }
}

/// Something the network layer must do on the core's behalf.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Send a complete frame (length prefix included) on a connection.
    Send { conn: ConnId, frame: bytes::Bytes },
    /// Close a connection once everything queued before this effect has been sent.
    Close { conn: ConnId, reason: String },
    /// A member that is not the leader hands a request to the leader (ensemble only). The
    /// reply comes from [`Core::apply_committed`] once the leader's txn is committed.
    Forward(Forward),
    /// The leader must change the ensemble's membership, then answer with
    /// [`Core::commit_reconfig`] or [`Core::fail_reconfig`].
    Reconfig(ReconfigCall),
}

/// A permitted reconfig request, for the consensus layer to carry out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReconfigCall {
    /// The local connection waiting, or [`REMOTE_CONN`] for one on another member.
    pub conn: ConnId,
    pub session: SessionId,
    pub xid: i32,
    pub request: corral_proto::records::ReconfigRequest,
}

/// The connection id under which the leader prepares requests forwarded by other members:
/// no local connection ever has it, so effects addressed to it go nowhere.
pub const REMOTE_CONN: ConnId = ConnId::MAX;

/// A request a follower hands to the leader, with what the leader needs to prepare it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forward {
    /// The connection on the forwarding member that waits for the outcome.
    pub conn: ConnId,
    pub session: SessionId,
    /// The identities proven on that connection (ACL checks happen on the leader).
    pub auth: Vec<Id>,
    pub request: ForwardRequest,
}

impl Forward {
    /// Roughly the bytes it takes in memory or in a peer message.
    pub fn approx_bytes(&self) -> usize {
        let body = match &self.request {
            ForwardRequest::Request { body } => body.len(),
            ForwardRequest::Sync { path, .. } => path.len(),
            _ => 0,
        };
        let auth: usize = self
            .auth
            .iter()
            .map(|id| id.scheme.len() + id.id.len() + 16)
            .sum();
        body + auth + 64
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ForwardRequest {
    /// A new session (ConnectRequest with session id 0) with its negotiated timeout.
    Connect { timeout_ms: i32 },
    /// A write (or closeSession): the request frame body, header included.
    Request { body: Bytes },
    /// `sync`: answered once everything the leader committed before it is applied here.
    Sync { xid: i32, path: String },
    /// A client resumes its session here: the leader makes this member the session's owner
    /// and the connect is answered once that is ordered in the log (every other member then
    /// closes its connection of the session), so no request the client sent on its old
    /// connection can be applied after the move.
    Revalidate { timeout_ms: i32 },
    /// `corral.linearizableReads`: the read queued behind this is answered once the barrier
    /// went through the leader's log and was applied here, so it reflects every write
    /// committed before the read arrived.
    ReadBarrier,
}

/// How this member takes part in replication. A standalone server, and an ensemble's leader,
/// prepare writes themselves and decide session expiry; other members forward writes to the
/// leader and only report which sessions they heard from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Leader,
    Follower,
    /// A member cut off from its leader, with `readonlymode.enabled`: it serves read-only
    /// clients from its (possibly stale) state and refuses writes with `NotReadOnly`, as
    /// ZooKeeper's read-only server does.
    ReadOnly,
}

/// A write, encoded for the txn log. The effects returned alongside it must be held until the
/// log reports `zxid` durable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedTxn {
    pub zxid: Zxid,
    pub record: Vec<u8>,
}

/// The outcome of one call into the core.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Step {
    pub effects: Vec<Effect>,
    /// Zero, one or several txns (e.g. session expiries found by one tick), in zxid order.
    pub txns: Vec<LoggedTxn>,
}

/// Counters and gauges the four-letter words and metrics report.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CoreStats {
    pub znode_count: u64,
    pub ephemerals_count: u64,
    pub approximate_data_size: u64,
    pub watch_count: u64,
    pub watched_paths: u64,
    pub session_count: u64,
    pub last_zxid: Zxid,
    pub packets_received: u64,
    pub packets_sent: u64,
    pub outstanding_requests: u64,
    /// Changes held in the persistent-watch replay window (`corral_replay_window_depth`).
    pub replay_window_changes: u64,
}

/// One live session, for `cons`/`dump`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    pub session_id: SessionId,
    pub timeout_ms: i32,
    /// When the session expires unless its client is heard from (ms since epoch).
    pub expires_at_ms: i64,
    pub ephemerals: Vec<String>,
    pub conn: Option<ConnId>,
}

/// One connection's watches, for `wchc`; and the inverse for `wchp`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchesByConn {
    pub conn: ConnId,
    pub session_id: SessionId,
    pub paths: Vec<String>,
}

/// Connections taken out of one core to be adopted by another (see
/// [`Core::export_connections`]).
#[derive(Debug)]
pub struct ConnTransfer {
    conns: Vec<ExportedConn>,
}

#[derive(Debug)]
struct ExportedConn {
    id: ConnId,
    conn: Conn,
    /// (path, mode bits) in the data and child watch managers.
    data_watches: Vec<(String, u8)>,
    child_watches: Vec<(String, u8)>,
}

/// Per-connection state the core keeps.
#[derive(Debug, Clone)]
struct Conn {
    peer: SocketAddr,
    session: Option<SessionId>,
    /// Identities proven on this connection (`ip:<addr>` plus any `addauth`). Shared so a
    /// request can hold it while the core mutates other state.
    auth: std::sync::Arc<Vec<Id>>,
    /// Pre-3.3 clients send no readOnly byte and expect none back.
    old_client: bool,
    /// The client asked (Corral's connect extension) to be told when a persistent watch
    /// replay after a reconnect is incomplete; third-party clients never are.
    wants_replay_gaps: bool,
    /// Requests forwarded to the leader whose outcome has not been applied here yet.
    forwarded: u32,
    /// How many of those are client requests (writes and syncs, not a connect, revalidation
    /// or read barrier): while they are all such, later ones may follow at once (see
    /// `pipelined_request`).
    forwarded_plain: u32,
    /// Frames that arrived while a forwarded request was outstanding: a client's requests are
    /// answered in order, so they wait for it (as ZooKeeper's commit processor does).
    queued: std::collections::VecDeque<Bytes>,
    /// Reads whose read barrier was applied here and that may now be answered (linearizable
    /// reads only; see [`ForwardRequest::ReadBarrier`]).
    reads_cleared: u32,
    /// A follower's ConnectRequest for a session it does not know, held while a sync through
    /// the leader brings this member up to date; decided again in `sync_done`.
    revalidating: Option<Bytes>,
}

/// The state machine. See the module documentation.
pub struct Core {
    config: CoreConfig,
    tree: DataTree,
    sessions: Sessions,
    data_watches: WatchManager,
    child_watches: WatchManager,
    conns: HashMap<ConnId, Conn>,
    last_zxid: Zxid,
    /// Recent changes, replayed to persistent watches re-registered after a reconnect.
    recent: recent::RecentChanges,
    packets_received: u64,
    packets_sent: u64,
    next_container_check_ms: i64,
    role: Role,
    /// Zxids prepared here are above this (the leader's epoch in the high 32 bits).
    zxid_floor: Zxid,
    /// Sessions heard from since the last `take_touched_sessions` (followers report them to
    /// the leader, which alone decides expiry).
    touched: std::collections::HashSet<SessionId>,
    /// Sessions a read-only member handed out itself: they exist only here, never in the
    /// replicated session table, and end with the read-only period.
    local_sessions: std::collections::HashSet<SessionId>,
    /// This core's member id in an ensemble (`None`: standalone). Set, sessions resume through
    /// the leader (see [`ForwardRequest::Revalidate`]).
    member_id: Option<u64>,
    /// `corral.linearizableReads` (ensemble only).
    linearizable_reads: bool,
    /// The latest time the core was given. Applying a createSession starts the session's
    /// expiry from `clock.mono_ms` (the txn header only has wall time, which must not decide
    /// liveness); `sessions()` turns monotonic expiry back into wall time for `dump`.
    clock: Now,
    /// Outcomes of the txns prepared here, by zxid, for tests that compare them with replay.
    #[cfg(test)]
    live_outcomes: Vec<(Zxid, apply::Outcome)>,
}

/// The time, as the caller's two clocks tell it. The core reads no clock itself.
///
/// Liveness (session expiry, when to look for containers) runs on the monotonic clock, so a
/// step of the wall clock (NTP, an operator) cannot expire every session at once. Wall time is
/// only written into txns, becoming znodes' ctime/mtime, and ages TTL nodes (whose mtime is wall
/// time, as in ZooKeeper).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    /// Milliseconds on a clock that never jumps (any origin, e.g. process start).
    pub mono_ms: i64,
    /// Milliseconds since the UNIX epoch.
    pub wall_ms: i64,
}

impl Now {
    /// Both clocks reading `ms` (tests and tools that need no distinction).
    pub fn both(ms: i64) -> Now {
        Now {
            mono_ms: ms,
            wall_ms: ms,
        }
    }
}

/// The result of a request, before it is encoded as a reply.
type Reply = Result<Response, ZkError>;

/// The error a write gets when its txn would not fit one log record (ZooKeeper has no closer
/// code: the request could not be serialized for the log).
const TOO_LARGE_FOR_LOG: ZkError = ZkError::MarshallingError;

/// Why a connection of a session that resumed on another member is closed.
const SESSION_MOVED: &str = "session moved to another member";

impl Core {
    /// A fresh tree (with `/zookeeper`, `/zookeeper/quota`, `/zookeeper/config`).
    pub fn new(config: CoreConfig, now: Now) -> Core {
        Core {
            tree: DataTree::new(config.extended_types_enabled),
            sessions: Sessions::new(
                config.tick_time_ms,
                config.server_id,
                now.wall_ms,
                config.session_secret,
            ),
            data_watches: WatchManager::default(),
            child_watches: WatchManager::default(),
            conns: HashMap::new(),
            last_zxid: 0,
            recent: recent::RecentChanges::new(recent::DEFAULT_CAPACITY),
            packets_received: 0,
            packets_sent: 0,
            next_container_check_ms: now.mono_ms + config.container_check_interval_ms,
            clock: now,
            #[cfg(test)]
            live_outcomes: Vec::new(),
            role: Role::Leader,
            zxid_floor: 0,
            touched: Default::default(),
            local_sessions: Default::default(),
            member_id: None,
            linearizable_reads: false,
            config,
        }
    }

    /// Makes this core member `member_id` of an ensemble. It keeps the window of recent changes
    /// from now on, not only once a persistent watch exists here: a client's persistent watches
    /// may move here from another member, and the changes it missed must be replayable. And a
    /// resumed session is revalidated through the leader, which tracks the member each session
    /// is on (`SessionMoved`). With `linearizable_reads`, every read waits for a read barrier
    /// through the leader's log before it is answered.
    pub fn join_ensemble(&mut self, member_id: u64, linearizable_reads: bool) {
        self.recent.arm();
        self.member_id = Some(member_id);
        self.linearizable_reads = linearizable_reads;
    }

    /// Switches between preparing writes here (leader, standalone) and forwarding them.
    pub fn set_role(&mut self, role: Role) {
        self.role = role;
        self.touched.clear();
        if role != Role::ReadOnly {
            self.local_sessions.clear();
        }
    }

    /// Sets the text of `/zookeeper/config` (ZooKeeper's membership format) unless the
    /// replicated state already has one (from a reconfig). Every member of a new ensemble sets
    /// the same text from the same configuration, so the node is identical across members.
    pub fn set_config_text_if_empty(&mut self, text: &str) {
        let version = match self.tree.get(CONFIG_NODE) {
            Some(n) if n.data_len() == 0 => n.version(),
            _ => return,
        };
        let data = Some(Bytes::copy_from_slice(text.as_bytes()));
        let _ = self.tree.set_data(CONFIG_NODE, data, version, 0, 0);
    }

    /// A reconfig request (leader): checks it may happen and hands it to the driver.
    #[allow(clippy::too_many_arguments)]
    fn reconfig(
        &mut self,
        conn: ConnId,
        auth: &[Id],
        session: SessionId,
        xid: i32,
        request: corral_proto::records::ReconfigRequest,
        now: Now,
        step: &mut Step,
    ) {
        let denied = if !self.config.reconfig_enabled {
            Some(ZkError::ReconfigDisabled)
        } else {
            // As ZooKeeper 3.5.3+: only who may write /zookeeper/config (the super user, unless
            // an operator grants it) may change the membership.
            let acl = self
                .tree
                .get(CONFIG_NODE)
                .map(|n| self.tree.acl_table().get(n.acl_id()).clone())
                .unwrap_or_default();
            acl::check(&acl, corral_proto::perms::WRITE, auth).err()
        };
        if let Some(e) = denied {
            if conn == REMOTE_CONN {
                // The forwarding member answers when it applies the error txn.
                let header = self.next_header(session, xid, now);
                self.commit(header, Txn::Error(e.code()), step);
            } else {
                self.send_reply(step, conn, xid, Err(e));
            }
            return;
        }
        if let Some(c) = self.conns.get_mut(&conn) {
            // Later requests of the connection wait for the outcome.
            c.forwarded += 1;
        }
        step.effects.push(Effect::Reconfig(ReconfigCall {
            conn,
            session,
            xid,
            request,
        }));
    }

    /// The membership change of `call` is done: logs the new `/zookeeper/config` (`members` is
    /// its `server.N=` lines; the version line is the txn's zxid, as ZooKeeper's) and answers a
    /// local connection (a remote one is answered by its member when it applies the txn).
    pub fn commit_reconfig(&mut self, call: &ReconfigCall, members: &str, now: Now) -> Step {
        let mut step = Step::default();
        let header = self.next_header(call.session, call.xid, now);
        let text = format!("{members}version={:x}", header.zxid);
        let version = self.tree.get(CONFIG_NODE).map_or(0, |n| n.version()) + 1;
        let txn = Txn::Reconfig(corral_proto::records::SetDataTxn {
            path: CONFIG_NODE.into(),
            data: Some(Bytes::from(text)),
            version,
        });
        let outcome = self.commit(header, txn, &mut step);
        if self.conns.contains_key(&call.conn) {
            self.send_reply(&mut step, call.conn, call.xid, outcome.into_reply());
            self.forward_done(call.conn, now, &mut step);
        }
        step
    }

    /// The membership change of `call` failed with `error`: an error txn (so a forwarding
    /// member answers its client in order) and the answer to a local connection.
    pub fn fail_reconfig(&mut self, call: &ReconfigCall, error: ZkError, now: Now) -> Step {
        let mut step = Step::default();
        let header = self.next_header(call.session, call.xid, now);
        self.commit(header, Txn::Error(error.code()), &mut step);
        if self.conns.contains_key(&call.conn) {
            self.send_reply(&mut step, call.conn, call.xid, Err(error));
            self.forward_done(call.conn, now, &mut step);
        }
        step
    }

    pub fn role(&self) -> Role {
        self.role
    }

    /// A new leader's epoch: zxids it prepares from now on are `epoch << 32 | n`, above every
    /// zxid of earlier epochs, so zxids grow across leader changes (ZooKeeper tools read
    /// `zxid >> 32` as the epoch).
    pub fn begin_epoch(&mut self, epoch: u32) {
        self.zxid_floor = self.zxid_floor.max(i64::from(epoch) << 32);
    }

    /// Replaces the secret session passwords derive from. An ensemble replicates one secret,
    /// so a session resumes on any member.
    pub fn set_session_secret(&mut self, secret: [u8; 16]) {
        self.config.session_secret = secret;
        self.sessions.set_secret(secret);
    }

    /// Sessions heard from since the last call (a follower sends them to the leader).
    pub fn take_touched_sessions(&mut self) -> Vec<SessionId> {
        self.touched.drain().collect()
    }

    /// The leader hears that other members' clients are alive.
    pub fn touch_sessions(&mut self, sessions: &[SessionId], now: Now) {
        self.observe(now);
        for &sid in sessions {
            self.sessions.touch(sid, now.mono_ms);
        }
    }

    /// Keeps a session alive: on a follower, also remembered for the leader.
    fn touch(&mut self, sid: SessionId, now: Now) -> bool {
        if self.role == Role::ReadOnly {
            return self.local_sessions.contains(&sid)
                || self.sessions.get(sid).is_some_and(|s| !s.closing);
        }
        if self.role == Role::Follower {
            // The leader decides expiry; here the session only needs to exist.
            self.touched.insert(sid);
            return self.sessions.get(sid).is_some_and(|s| !s.closing);
        }
        self.sessions.touch(sid, now.mono_ms)
    }

    /// Remembers the time of the call being handled (see `clock`). A monotonic clock that
    /// appears to step back (a caller bug) is held where it was.
    fn observe(&mut self, now: Now) {
        self.clock = Now {
            mono_ms: now.mono_ms.max(self.clock.mono_ms),
            wall_ms: now.wall_ms,
        };
    }

    /// A TCP connection was accepted.
    pub fn connection_opened(&mut self, conn: ConnId, peer: SocketAddr, now: Now) {
        self.observe(now);
        let auth = std::sync::Arc::new(vec![Id {
            scheme: "ip".into(),
            id: peer.ip().to_string(),
        }]);
        self.conns.insert(
            conn,
            Conn {
                peer,
                session: None,
                auth,
                old_client: false,
                wants_replay_gaps: false,
                forwarded: 0,
                forwarded_plain: 0,
                reads_cleared: 0,
                queued: Default::default(),
                revalidating: None,
            },
        );
    }

    /// A whole frame body (length prefix stripped) arrived on `conn`. The first frame of a
    /// connection is its ConnectRequest.
    pub fn receive(&mut self, conn: ConnId, body: &[u8], now: Now) -> Step {
        self.observe(now);
        self.packets_received += 1;
        let mut step = Step::default();
        self.receive_into(conn, body, now, &mut step);
        step
    }

    fn receive_into(&mut self, conn: ConnId, body: &[u8], now: Now, step: &mut Step) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        // Deciding whether a request may be pipelined decodes it; that decoding is used below.
        let mut pipelined = None;
        if c.forwarded > 0 {
            if self.role == Role::Follower {
                pipelined = pipelined_request(c, body);
            }
            if pipelined.is_none() {
                // Answered after the forwarded request before it, in arrival order.
                c.queued.push_back(Bytes::copy_from_slice(body));
                return;
            }
        }

        let Some(session) = c.session else {
            self.handle_connect(conn, body, now, step, false);
            return;
        };
        let (header, request) = match pipelined {
            Some((header, request)) => (header, Ok(request)),
            None => {
                let mut r = Reader::new(body);
                match corral_proto::records::RequestHeader::read(&mut r) {
                    Ok(header) => {
                        let request = Request::decode(header.op, r.rest());
                        (header, request)
                    }
                    Err(e) => {
                        close(step, conn, format!("malformed request header: {e}"));
                        return;
                    }
                }
            }
        };
        if !self.touch(session, now) {
            self.send_reply(step, conn, header.xid, Err(ZkError::SessionExpired));
            close(step, conn, "session expired".into());
            return;
        }
        match request {
            Ok(Request::CloseSession) if self.role == Role::ReadOnly => {
                // The session (if replicated) lives on in the ensemble; only this connection ends.
                self.local_sessions.remove(&session);
                let zxid = self.last_zxid;
                self.send_header(step, conn, header.xid, zxid, 0);
                close(step, conn, "client closed its session".into());
            }
            Ok(req) if self.role == Role::ReadOnly && needs_leader(&req) => {
                self.send_reply(step, conn, header.xid, Err(ZkError::NotReadOnly));
            }
            Ok(req)
                if self.role == Role::Leader
                    && needs_leader(&req)
                    && self
                        .member_id
                        .is_some_and(|me| !self.claim_owner(session, me)) =>
            {
                close(step, conn, SESSION_MOVED.into());
            }
            Ok(req) if is_read(&req) && self.needs_read_barrier(conn) => {
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.queued.push_back(Bytes::copy_from_slice(body));
                }
                self.forward(conn, session, ForwardRequest::ReadBarrier, step);
            }
            Ok(req) if self.role == Role::Follower && needs_leader(&req) => {
                let request = match req {
                    Request::Sync(p) => ForwardRequest::Sync {
                        xid: header.xid,
                        path: p.path,
                    },
                    _ => ForwardRequest::Request {
                        body: Bytes::copy_from_slice(body),
                    },
                };
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.forwarded_plain += 1;
                }
                self.forward(conn, session, request, step);
            }
            Ok(req) => self.dispatch(conn, session, header.xid, req, now, step),
            Err(RequestError::UnknownOpcode(op)) => {
                // As ZooKeeper: answer ZUNIMPLEMENTED, then close the connection.
                self.send_reply(step, conn, header.xid, Err(ZkError::Unimplemented));
                close(step, conn, format!("unknown opcode {op}"));
            }
            Err(RequestError::BadMultiOp(op)) => {
                self.send_reply(step, conn, header.xid, Err(ZkError::MarshallingError));
                let session = session_label(self.session_of(conn));
                tracing::info!(conn, %session, op, "invalid op inside multi");
            }
            Err(RequestError::Malformed(e)) => {
                close(
                    step,
                    conn,
                    format!("malformed request (op {}): {e}", header.op),
                );
            }
        }
    }

    /// Hands a request to the leader; later requests of the connection wait for its outcome.
    fn forward(
        &mut self,
        conn: ConnId,
        session: SessionId,
        request: ForwardRequest,
        step: &mut Step,
    ) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        c.forwarded += 1;
        step.effects.push(Effect::Forward(Forward {
            conn,
            session,
            auth: c.auth.as_ref().clone(),
            request,
        }));
    }

    /// The leader prepares a request member `from` forwarded. The txns of the returned step
    /// carry the outcome back to that member (it replies when it applies them); effects for
    /// [`REMOTE_CONN`] go nowhere, watch events for local connections are real.
    /// ([`ForwardRequest::Revalidate`] and `Sync` are the caller's: see [`Core::revalidate`].)
    pub fn receive_forwarded(&mut self, fwd: Forward, from: u64, now: Now) -> Step {
        self.observe(now);
        let mut step = Step::default();
        match fwd.request {
            ForwardRequest::Connect { timeout_ms } => {
                let sid = self.sessions.allocate_id();
                let header = self.next_header(sid, 0, now);
                let txn =
                    Txn::CreateSession(corral_proto::records::CreateSessionTxn { timeout_ms });
                self.commit(header, txn, &mut step);
                self.claim_owner(sid, from);
            }
            ForwardRequest::Request { body } => {
                let mut r = Reader::new(&body);
                let Ok(header) = corral_proto::records::RequestHeader::read(&mut r) else {
                    return step;
                };
                let Ok(req) = Request::decode(header.op, r.rest()) else {
                    // The forwarding member decoded it already; nothing sane to log.
                    return step;
                };
                let session = fwd.session;
                if !self.sessions.touch(session, now.mono_ms) {
                    // As ZooKeeper's leader: the request becomes an error txn.
                    let header = self.next_header(session, header.xid, now);
                    let txn = Txn::Error(ZkError::SessionExpired.code());
                    self.commit(header, txn, &mut step);
                    return step;
                }
                if !self.claim_owner(session, from) {
                    // A request of a connection the client has left (ZooKeeper's leader makes
                    // it an error txn too); that member closes the connection when it applies it.
                    let header = self.next_header(session, header.xid, now);
                    let txn = Txn::Error(ZkError::SessionMoved.code());
                    self.commit(header, txn, &mut step);
                    return step;
                }
                match req {
                    Request::Reconfig(r) => {
                        let auth = fwd.auth.clone();
                        self.reconfig(REMOTE_CONN, &auth, session, header.xid, r, now, &mut step);
                    }
                    Request::CloseSession => {
                        self.close_session(session, header.xid, now, &mut step);
                    }
                    req => {
                        let auth = std::sync::Arc::new(fwd.auth);
                        self.write_as(REMOTE_CONN, auth, session, header.xid, req, now, &mut step);
                    }
                }
            }
            // None needs a txn; the consensus layer orders them behind committed entries.
            ForwardRequest::Sync { .. }
            | ForwardRequest::Revalidate { .. }
            | ForwardRequest::ReadBarrier => {}
        }
        step
    }

    /// The leader: member `from` resumes `session` for a client. Returns whether the session
    /// is alive; if so, `from` is its owner from now on and writes from elsewhere are refused.
    pub fn revalidate(&mut self, session: SessionId, from: u64, now: Now) -> bool {
        self.observe(now);
        let alive = self.sessions.get(session).is_some_and(|s| !s.closing)
            && self.sessions.touch(session, now.mono_ms);
        if let Some(s) = self.sessions.get_mut(session).filter(|_| alive) {
            s.owner = Some(from);
        }
        alive
    }

    /// Every member applies a revalidation the leader ordered in the log. On the member the
    /// client resumed on (`resumed` = its connection and negotiated timeout) the connect is
    /// answered; on the others, a connection still bound to the session is one the client left:
    /// it is closed, as ZooKeeper closes a moved session's old connection.
    pub fn session_moved(
        &mut self,
        session: SessionId,
        resumed: Option<(ConnId, i32)>,
        alive: bool,
        now: Now,
    ) -> Step {
        self.observe(now);
        let mut step = Step::default();
        match resumed {
            Some((conn, timeout_ms)) => {
                if self.conns.get(&conn).and_then(|c| c.session) != Some(session) {
                    return step; // the connection went away meanwhile
                }
                if alive {
                    self.send_connect_response(&mut step, conn, timeout_ms, session);
                    self.forward_done(conn, now, &mut step);
                } else {
                    self.send_connect_response(&mut step, conn, 0, 0);
                    close(&mut step, conn, "invalid session".into());
                }
            }
            None if alive => {
                if let Some(old) = self.sessions.get_mut(session).and_then(|s| s.conn.take()) {
                    if let Some(c) = self.conns.get_mut(&old) {
                        c.session = None;
                    }
                    close(&mut step, old, SESSION_MOVED.into());
                }
            }
            None => {}
        }
        step
    }

    /// A read barrier of `conn` was applied here: the read queued behind it is answered.
    pub fn read_barrier_done(&mut self, conn: ConnId, now: Now) -> Step {
        self.observe(now);
        let mut step = Step::default();
        if let Some(c) = self.conns.get_mut(&conn) {
            c.reads_cleared += 1;
            self.forward_done(conn, now, &mut step);
        }
        step
    }

    /// Whether a read of `conn` must first pass a read barrier (using up a cleared one if the
    /// read is the one a barrier was for).
    fn needs_read_barrier(&mut self, conn: ConnId) -> bool {
        if !self.linearizable_reads
            || self.member_id.is_none()
            || !matches!(self.role, Role::Leader | Role::Follower)
        {
            return false;
        }
        match self.conns.get_mut(&conn) {
            Some(c) if c.reads_cleared > 0 => {
                c.reads_cleared -= 1;
                false
            }
            Some(_) => true,
            None => false,
        }
    }

    /// Whether member `member` may write for `session` (the leader's ownership check); an
    /// unclaimed session becomes `member`'s.
    fn claim_owner(&mut self, session: SessionId, member: u64) -> bool {
        match self.sessions.get_mut(session) {
            None => true, // nothing to protect; the request fails on its own
            Some(s) => *s.owner.get_or_insert(member) == member,
        }
    }

    /// Applies a txn the ensemble committed (a member that did not prepare it: every member
    /// but the leader). Fires the watches of this member's connections; when the request came
    /// from `origin`, a connection of this member, answers it there.
    pub fn apply_committed(
        &mut self,
        record: &[u8],
        origin: Option<ConnId>,
        now: Now,
    ) -> Result<Step, corral_proto::DecodeError> {
        self.observe(now);
        let rec = TxnRecord::decode(record)?;
        let mut step = Step::default();
        let mut triggers = Vec::new();
        let outcome = self.apply(&rec.header, &rec.txn, &mut triggers);
        self.last_zxid = self.last_zxid.max(rec.header.zxid);
        self.fire(&triggers, rec.header.zxid, &mut step);
        let Some(conn) = origin.filter(|c| self.conns.contains_key(c)) else {
            return Ok(step);
        };
        let xid = rec.header.cxid;
        match rec.txn {
            Txn::CreateSession(t) => {
                let sid = rec.header.client_id;
                self.bind(conn, sid);
                self.send_connect_response(&mut step, conn, t.timeout_ms, sid);
            }
            Txn::CloseSession(_) => {
                let zxid = rec.header.zxid;
                self.send_header(&mut step, conn, xid, zxid, 0);
                close(&mut step, conn, "client closed its session".into());
            }
            Txn::Error(e) if e == ZkError::SessionExpired.code() && xid == 0 => {
                // A connect whose session vanished meanwhile: nothing to answer with.
                close(&mut step, conn, "session expired".into());
            }
            Txn::Error(e) if e == ZkError::SessionMoved.code() => {
                // As ZooKeeper: a moved session's old connection is closed, not answered.
                close(&mut step, conn, SESSION_MOVED.into());
                return Ok(step);
            }
            _ => {
                let reply = outcome.into_reply();
                self.send_reply(&mut step, conn, xid, reply);
            }
        }
        self.forward_done(conn, now, &mut step);
        Ok(step)
    }

    /// A forwarded `sync` of `conn` is ordered behind everything committed before it.
    pub fn sync_done(&mut self, conn: ConnId, xid: i32, path: String, now: Now) -> Step {
        self.observe(now);
        let mut step = Step::default();
        let revalidating = self
            .conns
            .get_mut(&conn)
            .and_then(|c| c.revalidating.take());
        if let Some(connect) = revalidating {
            self.handle_connect(conn, &connect, now, &mut step, true);
            self.forward_done(conn, now, &mut step);
        } else if self.conns.contains_key(&conn) {
            self.send_reply(&mut step, conn, xid, Ok(Response::Path(path)));
            self.forward_done(conn, now, &mut step);
        }
        step
    }

    /// One forwarded request of `conn` is answered: run what queued behind it.
    fn forward_done(&mut self, conn: ConnId, now: Now, step: &mut Step) {
        if let Some(c) = self.conns.get_mut(&conn) {
            c.forwarded = c.forwarded.saturating_sub(1);
            // Either every outstanding forward was plain, or one that was not is all there was.
            c.forwarded_plain = c.forwarded_plain.min(c.forwarded);
        }
        while let Some(c) = self.conns.get_mut(&conn) {
            if c.forwarded > 0 {
                break;
            }
            let Some(body) = c.queued.pop_front() else {
                break;
            };
            self.receive_into(conn, &body, now, step);
        }
    }

    /// The connection is gone (peer closed, error, or after an `Effect::Close`). Its watches are
    /// dropped; its session lives on until it expires or the client reconnects.
    pub fn connection_closed(&mut self, conn: ConnId, now: Now) -> Step {
        self.observe(now);
        if let Some(c) = self.conns.remove(&conn) {
            if let Some(sid) = c.session {
                if let Some(s) = self.sessions.get_mut(sid) {
                    if s.conn == Some(conn) {
                        s.conn = None;
                    }
                }
            }
        }
        self.data_watches.remove_watcher(conn);
        self.child_watches.remove_watcher(conn);
        Step::default()
    }

    /// Time passes: expires sessions not heard from within their timeout (as closeSession txns),
    /// removes expired TTL nodes and empty containers. Call every tick (tickTime / 2 is plenty).
    pub fn tick(&mut self, now: Now) -> Step {
        self.observe(now);
        let mut step = Step::default();
        if self.role == Role::Follower {
            // Expiry, TTLs and containers are the leader's decisions (its txns reach us).
            return step;
        }
        for sid in self.sessions.expired(now.mono_ms) {
            tracing::info!(session = format!("0x{sid:x}"), "session expired");
            let conn = self.sessions.get(sid).and_then(|s| s.conn);
            self.close_session(sid, 0, now, &mut step);
            if let Some(conn) = conn {
                close(&mut step, conn, "session expired".into());
                // Nothing may follow a Close on its connection: its watches go now, not when
                // the driver reports the connection gone (a TTL or container reaped later in
                // this tick would otherwise notify it).
                self.data_watches.remove_watcher(conn);
                self.child_watches.remove_watcher(conn);
            }
        }
        if now.mono_ms >= self.next_container_check_ms {
            self.next_container_check_ms = now.mono_ms + self.config.container_check_interval_ms;
            self.remove_empty_containers_and_expired_ttls(now, &mut step);
            self.tree.prune_acl_cache();
        }
        step
    }

    /// Re-applies a txn read back from the log (recovery). Produces no effects.
    pub fn apply_logged(&mut self, record: &[u8]) -> Result<(), corral_proto::DecodeError> {
        self.replay_record(record).map(|_| ())
    }

    /// [`Core::apply_logged`], returning the zxid and what applying produced (tests compare it
    /// with the outcome the txn had when it was prepared).
    fn replay_record(
        &mut self,
        record: &[u8],
    ) -> Result<(Zxid, apply::Outcome), corral_proto::DecodeError> {
        let rec = TxnRecord::decode(record)?;
        let mut triggers = Vec::new();
        let outcome = self.apply(&rec.header, &rec.txn, &mut triggers);
        self.last_zxid = self.last_zxid.max(rec.header.zxid);
        // Replayed changes never reach the replay window: it must not claim to cover them.
        self.recent.forget_through(self.last_zxid);
        Ok((rec.header.zxid, outcome))
    }

    /// Gives `rebuilt` — a core rebuilt from the committed log, as a leader stepping down does
    /// to drop what it prepared that will never commit — this core's window of recent changes
    /// up to `committed_zxid`, the last committed txn this core applied. Without it a rebuild
    /// empties the window, and every client that reconnects after a leader change is told it may
    /// have missed events although the changes it missed were all applied here. The changes up
    /// to `committed_zxid` are exactly the committed ones: a core applies committed txns in log
    /// order, and its own prepared ones in zxid order, all after the committed ones. Returns
    /// false, leaving `rebuilt` alone, when `rebuilt` does not end at `committed_zxid`.
    pub fn hand_over_replay_window(&mut self, rebuilt: &mut Core, committed_zxid: Zxid) -> bool {
        if rebuilt.last_zxid != committed_zxid {
            return false;
        }
        let mut window = std::mem::replace(
            &mut self.recent,
            recent::RecentChanges::new(recent::DEFAULT_CAPACITY),
        );
        window.truncate_after(committed_zxid);
        rebuilt.recent = window;
        true
    }

    /// After recovery, every recovered session gets its full timeout from now (as ZooKeeper).
    pub fn restart_session_clocks(&mut self, now: Now) {
        self.observe(now);
        self.sessions.restart_all_clocks(now.mono_ms);
    }

    /// Copies the state of live connections (session binding, identities, watches) so that a
    /// core rebuilt from disk can adopt them with [`Core::import_connections`]. The driver uses
    /// it after a txn-log failure for the connections that lost nothing.
    pub fn export_connections(&self, conns: &[ConnId]) -> ConnTransfer {
        ConnTransfer {
            conns: conns
                .iter()
                .filter_map(|id| {
                    let c = self.conns.get(id)?;
                    Some(ExportedConn {
                        id: *id,
                        conn: c.clone(),
                        data_watches: self.data_watches.export(*id),
                        child_watches: self.child_watches.export(*id),
                    })
                })
                .collect(),
        }
    }

    /// Adopts exported connections. Returns those that cannot be adopted because their
    /// session is not in this core (its creation was not durable): close them.
    pub fn import_connections(&mut self, transfer: ConnTransfer, now: Now) -> Vec<ConnId> {
        self.observe(now);
        let mut refused = Vec::new();
        for ExportedConn {
            id,
            conn,
            data_watches,
            child_watches,
        } in transfer.conns
        {
            if let Some(sid) = conn.session {
                if !self.touch(sid, now) {
                    refused.push(id);
                    continue;
                }
                if let Some(s) = self.sessions.get_mut(sid) {
                    s.conn = Some(id);
                }
            }
            let data_persistent = self.data_watches.import(id, &data_watches);
            let child_persistent = self.child_watches.import(id, &child_watches);
            if data_persistent || child_persistent {
                // As if the watches were added here (see `add_persistent_watch`).
                self.recent.arm();
            }
            self.conns.insert(id, conn);
        }
        refused
    }

    /// The zxid of the last applied txn.
    pub fn last_zxid(&self) -> Zxid {
        self.last_zxid
    }

    pub fn stats(&self) -> CoreStats {
        CoreStats {
            znode_count: self.tree.node_count() as u64,
            ephemerals_count: self.tree.ephemeral_count() as u64,
            approximate_data_size: self.tree.approximate_data_size(),
            watch_count: (self.data_watches.watch_count() + self.child_watches.watch_count())
                as u64,
            watched_paths: (self.data_watches.path_count() + self.child_watches.path_count())
                as u64,
            session_count: self.sessions.len() as u64,
            last_zxid: self.last_zxid,
            packets_received: self.packets_received,
            packets_sent: self.packets_sent,
            outstanding_requests: 0,
            replay_window_changes: self.recent.depth() as u64,
        }
    }

    pub fn sessions(&self) -> Vec<SessionInfo> {
        let mut out: Vec<SessionInfo> = self
            .sessions
            .iter()
            .map(|s| SessionInfo {
                session_id: s.id,
                timeout_ms: s.timeout_ms,
                // Expiry is kept on the monotonic clock; shown as wall time.
                expires_at_ms: self.clock.wall_ms + (s.expires_at_ms - self.clock.mono_ms),
                ephemerals: self.tree.ephemerals_of(s.id).cloned().collect(),
                conn: s.conn,
            })
            .collect();
        out.sort_by_key(|s| s.session_id);
        out
    }

    /// Session id bound to a connection, if it completed its handshake.
    ///
    /// Log lines about a client name its session with [`session_label`] of this.
    pub fn session_of(&self, conn: ConnId) -> Option<SessionId> {
        self.conns.get(&conn).and_then(|c| c.session)
    }

    /// `wchc`: watched paths per connection.
    pub fn watches_by_connection(&self) -> Vec<WatchesByConn> {
        let mut conns: Vec<ConnId> = self
            .data_watches
            .watchers()
            .chain(self.child_watches.watchers())
            .collect();
        conns.sort_unstable();
        conns.dedup();
        conns
            .into_iter()
            .map(|conn| {
                let mut paths: Vec<String> = self
                    .data_watches
                    .paths_of(conn)
                    .chain(self.child_watches.paths_of(conn))
                    .map(str::to_string)
                    .collect();
                paths.sort();
                paths.dedup();
                WatchesByConn {
                    conn,
                    session_id: self.session_of(conn).unwrap_or(0),
                    paths,
                }
            })
            .collect()
    }

    /// `wchp`: connections' session ids per watched path, sorted by path.
    pub fn watches_by_path(&self) -> Vec<(String, Vec<SessionId>)> {
        let mut map: std::collections::BTreeMap<String, Vec<SessionId>> = Default::default();
        for (p, conns) in self
            .data_watches
            .by_path()
            .chain(self.child_watches.by_path())
        {
            let e = map.entry(p.to_string()).or_default();
            e.extend(conns.iter().map(|c| self.session_of(c).unwrap_or(0)));
        }
        map.into_iter()
            .map(|(p, mut v)| {
                v.sort_unstable();
                v.dedup();
                (p, v)
            })
            .collect()
    }

    /// Resets the packet counters (`srst`, `crst`).
    pub fn reset_stats(&mut self) {
        self.packets_received = 0;
        self.packets_sent = 0;
    }

    // ---- connection handshake ----

    /// `revalidated`: a follower already synced with the leader for this request, so a session
    /// it still does not know is gone.
    fn handle_connect(
        &mut self,
        conn: ConnId,
        body: &[u8],
        now: Now,
        step: &mut Step,
        revalidated: bool,
    ) {
        let connect = match decode_connect(body) {
            Ok(c) => c,
            Err(e) => {
                close(step, conn, format!("malformed connect request: {e}"));
                return;
            }
        };
        let req = connect.req;
        if req.last_zxid_seen > self.last_zxid {
            close(
                step,
                conn,
                format!(
                    "refusing session request: client has seen zxid 0x{:x}, our last zxid is 0x{:x}",
                    req.last_zxid_seen, self.last_zxid
                ),
            );
            return;
        }
        let timeout_ms = req.timeout_ms.clamp(
            self.config.min_session_timeout_ms,
            self.config
                .max_session_timeout_ms
                .max(self.config.min_session_timeout_ms),
        );
        let old_client = connect.read_only.is_none();
        if let Some(c) = self.conns.get_mut(&conn) {
            c.old_client = old_client;
            c.wants_replay_gaps =
                connect.ext_features & corral_proto::consts::ext::FEATURE_REPLAY_GAPS != 0;
        }
        if self.role == Role::ReadOnly {
            if connect.read_only != Some(true) {
                close(
                    step,
                    conn,
                    "refusing a client that does not accept a read-only server".into(),
                );
                return;
            }
            if req.session_id == 0 {
                let sid = self.sessions.allocate_id();
                self.local_sessions.insert(sid);
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.session = Some(sid);
                }
                self.send_connect_response(step, conn, timeout_ms, sid);
                return;
            }
        }
        if req.session_id == 0 && self.role == Role::Follower {
            self.forward(conn, 0, ForwardRequest::Connect { timeout_ms }, step);
            return;
        }
        if req.session_id == 0 {
            let sid = self.sessions.allocate_id();
            let header = self.next_header(sid, 0, now);
            let txn = Txn::CreateSession(corral_proto::records::CreateSessionTxn { timeout_ms });
            self.commit(header, txn, step);
            if let Some(me) = self.member_id {
                self.claim_owner(sid, me);
            }
            self.bind(conn, sid);
            self.send_connect_response(step, conn, timeout_ms, sid);
            return;
        }
        let sid = req.session_id;
        let valid = self.sessions.get(sid).is_some_and(|s| !s.closing)
            && req.passwd.as_deref() == Some(&self.sessions.password(sid)[..]);
        if !valid && !revalidated && self.role == Role::Follower && self.sessions.get(sid).is_none()
        {
            // This member may not have applied the session's creation yet (it restarted or
            // lags), and a client that resumes a session by id need not have seen its zxid.
            // A sync through the leader orders the decision behind everything committed, as
            // ZooKeeper's followers ask the leader to revalidate a session they do not know.
            if let Some(c) = self.conns.get_mut(&conn) {
                c.revalidating = Some(Bytes::copy_from_slice(body));
            }
            let sync = ForwardRequest::Sync {
                xid: 0,
                path: "/".into(),
            };
            self.forward(conn, sid, sync, step);
            return;
        }
        if !valid {
            tracing::info!(
                session = format!("0x{sid:x}"),
                "invalid session or password, probably expired"
            );
            self.send_connect_response(step, conn, 0, 0);
            close(step, conn, "invalid session".into());
            return;
        }
        if let Some(old) = self.sessions.get(sid).and_then(|s| s.conn) {
            if old != conn {
                close(step, old, "client reconnected on another connection".into());
                if let Some(c) = self.conns.get_mut(&old) {
                    c.session = None;
                }
            }
        }
        self.touch(sid, now);
        self.bind(conn, sid);
        if self.member_id.is_some() && self.role != Role::ReadOnly {
            self.forward(conn, sid, ForwardRequest::Revalidate { timeout_ms }, step);
            return;
        }
        self.send_connect_response(step, conn, timeout_ms, sid);
    }

    /// The identities of a connection (empty for an unknown one).
    fn auth_of(&self, conn: ConnId) -> std::sync::Arc<Vec<Id>> {
        self.conns
            .get(&conn)
            .map(|c| c.auth.clone())
            .unwrap_or_default()
    }

    fn bind(&mut self, conn: ConnId, sid: SessionId) {
        if let Some(c) = self.conns.get_mut(&conn) {
            c.session = Some(sid);
        }
        if let Some(s) = self.sessions.get_mut(sid) {
            s.conn = Some(conn);
        }
    }

    fn send_connect_response(
        &mut self,
        step: &mut Step,
        conn: ConnId,
        timeout_ms: i32,
        sid: SessionId,
    ) {
        let passwd = if sid == 0 {
            [0u8; 16]
        } else {
            self.sessions.password(sid)
        };
        let rsp = ConnectResponse {
            protocol_version: 0,
            timeout_ms,
            session_id: sid,
            passwd: Some(Bytes::copy_from_slice(&passwd)),
            read_only: self.role == Role::ReadOnly,
        };
        let mut out = Vec::with_capacity(48);
        let at = frame::begin_frame(&mut out);
        let mut w = Writer::new();
        rsp.write(&mut w);
        let mut body = w.into_inner();
        if self.conns.get(&conn).is_some_and(|c| c.old_client) {
            body.pop();
        }
        out.extend_from_slice(&body);
        frame::finish_frame(&mut out, at);
        self.send(step, conn, out);
    }

    // ---- request dispatch ----

    fn dispatch(
        &mut self,
        conn: ConnId,
        session: SessionId,
        xid: i32,
        req: Request,
        now: Now,
        step: &mut Step,
    ) {
        match req {
            Request::Ping => {
                let zxid = self.last_zxid;
                self.send_header(step, conn, xid::PING, zxid, 0);
            }
            Request::Auth(p) => self.handle_auth(conn, xid, p, step),
            Request::SetWatches(w) => {
                let w2 = corral_proto::records::SetWatches2 {
                    relative_zxid: w.relative_zxid,
                    data_watches: w.data_watches,
                    exist_watches: w.exist_watches,
                    child_watches: w.child_watches,
                    persistent_watches: vec![],
                    persistent_recursive_watches: vec![],
                };
                self.set_watches(conn, w2, step);
                let zxid = self.last_zxid;
                self.send_header(step, conn, xid, zxid, 0);
            }
            Request::SetWatches2(w) => {
                self.set_watches(conn, w, step);
                let zxid = self.last_zxid;
                self.send_header(step, conn, xid, zxid, 0);
            }
            Request::Reconfig(r) => {
                let auth = self.auth_of(conn);
                self.reconfig(conn, &auth, session, xid, r, now, step);
            }
            Request::CloseSession => {
                let zxid = self.close_session(session, xid, now, step);
                self.send_header(step, conn, xid, zxid, 0);
                close(step, conn, "client closed its session".into());
            }
            req if req.is_write() => self.write(conn, session, xid, req, now, step),
            req => {
                let reply = self.read(conn, session, req);
                self.send_reply(step, conn, xid, reply);
            }
        }
    }

    fn handle_auth(
        &mut self,
        conn: ConnId,
        xid: i32,
        p: corral_proto::records::AuthPacket,
        step: &mut Step,
    ) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let result = acl::authenticate(
            &p.scheme,
            p.auth.as_deref().unwrap_or_default(),
            c.peer.ip(),
            self.config.super_digest.as_deref(),
        );
        match result {
            Ok(ids) => {
                let auth = std::sync::Arc::make_mut(&mut c.auth);
                for id in ids {
                    if !auth.contains(&id) {
                        auth.push(id);
                    }
                }
                self.send_header(step, conn, xid, 0, 0);
            }
            Err(e) => {
                self.send_header(step, conn, xid, 0, e.code());
                close(
                    step,
                    conn,
                    format!("authentication failed for scheme {}", p.scheme),
                );
            }
        }
    }

    fn set_watches(
        &mut self,
        conn: ConnId,
        w: corral_proto::records::SetWatches2,
        step: &mut Step,
    ) {
        let rel = w.relative_zxid;
        let mut events: Vec<(EventType, String)> = Vec::new();
        for p in w.data_watches {
            match self.tree.get(&p) {
                None => events.push((EventType::NodeDeleted, p)),
                Some(n) if n.mzxid() > rel => events.push((EventType::NodeDataChanged, p)),
                Some(_) => {
                    self.data_watches.add(&p, conn, WatchMode::Standard);
                }
            }
        }
        for p in w.exist_watches {
            if self.tree.contains(&p) {
                events.push((EventType::NodeCreated, p));
            } else {
                self.data_watches.add(&p, conn, WatchMode::Standard);
            }
        }
        for p in w.child_watches {
            match self.tree.get(&p) {
                None => events.push((EventType::NodeDeleted, p)),
                Some(n) if n.pzxid() > rel => events.push((EventType::NodeChildrenChanged, p)),
                Some(_) => {
                    self.child_watches.add(&p, conn, WatchMode::Standard);
                }
            }
        }
        for p in &w.persistent_watches {
            self.add_persistent_watch(p, conn, false);
        }
        for p in &w.persistent_recursive_watches {
            self.add_persistent_watch(p, conn, true);
        }
        for (t, p) in events {
            let frame = notification(t, &p, -1);
            self.send(step, conn, frame);
        }
        // Beyond ZooKeeper: persistent watches also get the changes made while the client was
        // away, with their own zxids (clients that track zxids drop what they already have).
        let replay = self
            .recent
            .since(rel, &w.persistent_watches, &w.persistent_recursive_watches);
        if !replay.complete {
            tracing::info!(
                conn,
                session = %session_label(self.session_of(conn)),
                relative_zxid = rel,
                "changes older than the replay window were not replayed"
            );
        }
        for c in replay.changes {
            let allowed = self
                .conns
                .get(&conn)
                .is_some_and(|cn| acl::check(&c.acl, corral_proto::perms::READ, &cn.auth).is_ok());
            if allowed {
                let frame = notification(c.event, &c.path, c.zxid);
                self.send(step, conn, frame);
            }
        }
        // After the replay, so the client re-reads a state at least as new as every event it
        // was given; the path is one the client registered, so it reveals nothing.
        if !replay.complete && self.conns.get(&conn).is_some_and(|c| c.wants_replay_gaps) {
            for p in w
                .persistent_watches
                .iter()
                .chain(&w.persistent_recursive_watches)
            {
                let frame =
                    notification_code(corral_proto::consts::ext::EVENT_MAY_HAVE_MISSED, p, -1);
                self.send(step, conn, frame);
            }
        }
    }

    // ---- writes ----

    fn next_header(&self, client_id: SessionId, cxid: i32, now: Now) -> TxnHeader {
        TxnHeader {
            client_id,
            cxid,
            zxid: self.last_zxid.max(self.zxid_floor) + 1,
            time_ms: now.wall_ms,
            txn_type: 0,
        }
    }

    /// Applies a new txn, fires its watches and queues it for the log. Returns the outcome.
    /// A txn whose record would not fit the log becomes an error txn before anything changes.
    fn commit(&mut self, header: TxnHeader, txn: Txn, step: &mut Step) -> apply::Outcome {
        let (txn, record) = match txn::encode_if_loggable(&header, &txn) {
            Some(record) => (txn, record),
            None => {
                tracing::info!(
                    zxid = header.zxid,
                    "write refused: its txn would exceed the log's record limit"
                );
                let txn = Txn::Error(TOO_LARGE_FOR_LOG.code());
                let record = txn::encode_record(&header, &txn);
                (txn, record)
            }
        };
        let mut triggers = Vec::new();
        let outcome = self.apply(&header, &txn, &mut triggers);
        #[cfg(test)]
        self.live_outcomes.push((header.zxid, outcome.clone()));
        self.log_applied(header.zxid, record, &triggers, step);
        outcome
    }

    /// The second half of a write, once the tree has the txn: advance the zxid, notify the
    /// watches it triggered, queue its record for the log.
    fn log_applied(&mut self, zxid: Zxid, record: Vec<u8>, triggers: &[Trigger], step: &mut Step) {
        self.last_zxid = zxid;
        self.fire(triggers, zxid, step);
        step.txns.push(LoggedTxn { zxid, record });
    }

    fn write(
        &mut self,
        conn: ConnId,
        session: SessionId,
        xid: i32,
        req: Request,
        now: Now,
        step: &mut Step,
    ) {
        let auth = self.auth_of(conn);
        self.write_as(conn, auth, session, xid, req, now, step);
    }

    /// A write with the identities of `auth` (those of `conn`, or of a forwarding member's
    /// connection).
    #[allow(clippy::too_many_arguments)]
    fn write_as(
        &mut self,
        conn: ConnId,
        auth: std::sync::Arc<Vec<Id>>,
        session: SessionId,
        xid: i32,
        req: Request,
        now: Now,
        step: &mut Step,
    ) {
        let header = self.next_header(session, xid, now);
        let ctx = prepare::Ctx { auth: &auth };
        let outcome = match req {
            Request::Multi(ops) => {
                // A multi is applied while it is prepared; log it and fire its watches now.
                let prepared = self.prepare_multi(&ctx, &header, ops);
                #[cfg(test)]
                self.live_outcomes
                    .push((header.zxid, prepared.outcome.clone()));
                self.log_applied(header.zxid, prepared.record, &prepared.triggers, step);
                prepared.outcome
            }
            req => {
                let txn = match self.prepare(&ctx, &req) {
                    Ok(txn) => txn,
                    Err(e) => Txn::Error(e.code()),
                };
                self.commit(header, txn, step)
            }
        };
        let reply = outcome.into_reply();
        self.send_reply(step, conn, xid, reply);
    }

    /// Closes a session with a closeSession txn (client request or expiry). Returns its zxid.
    fn close_session(&mut self, sid: SessionId, cxid: i32, now: Now, step: &mut Step) -> Zxid {
        if let Some(s) = self.sessions.get_mut(sid) {
            s.closing = true;
        }
        let header = self.next_header(sid, cxid, now);
        let zxid = header.zxid;
        // The record lists no paths: a session may own more ephemeral bytes than one log
        // record holds, and such a record would fail the log on every restart. Apply deletes
        // what the ephemeral index holds for the session, which every replica and every replay
        // derives identically (records written with paths still apply the same way).
        let txn = Txn::CloseSession(corral_proto::records::CloseSessionTxn {
            paths_to_delete: Vec::new(),
        });
        self.commit(header, txn, step);
        zxid
    }

    fn remove_empty_containers_and_expired_ttls(&mut self, now: Now, step: &mut Step) {
        let mut doomed = Vec::new();
        for p in self.tree.containers() {
            if let Some(n) = self.tree.get(p) {
                if !n.has_children() && n.cversion() > 0 {
                    doomed.push(p.clone());
                }
            }
        }
        for p in self.tree.ttls() {
            if let Some(n) = self.tree.get(p) {
                if let tree::OwnerKind::Ttl(ttl) =
                    tree::owner_kind(n.ephemeral_owner(), self.tree.extended_types())
                {
                    if !n.has_children() && now.wall_ms > n.mtime_ms() + ttl {
                        doomed.push(p.clone());
                    }
                }
            }
        }
        for p in doomed {
            let header = self.next_header(0, 0, now);
            let txn = Txn::Delete {
                op: corral_proto::OpCode::DeleteContainer,
                txn: corral_proto::records::DeleteTxn { path: p },
            };
            self.commit(header, txn, step);
        }
    }

    /// A persistent watch (data and children of `path`), or a recursive one (every change at
    /// or below it). The first one starts the window of changes kept for replay.
    fn add_persistent_watch(&mut self, path: &str, conn: ConnId, recursive: bool) {
        self.recent.arm();
        if recursive {
            self.data_watches
                .add(path, conn, WatchMode::PersistentRecursive);
        } else {
            self.data_watches.add(path, conn, WatchMode::Persistent);
            self.child_watches.add(path, conn, WatchMode::Persistent);
        }
    }

    // ---- watch delivery ----

    fn fire(&mut self, triggers: &[Trigger], zxid: Zxid, step: &mut Step) {
        for t in triggers {
            self.recent.record(zxid, t);
            match t {
                Trigger::Created(p, acl) => {
                    let ws = self.data_watches.trigger(p, &[]);
                    self.notify(step, &ws, EventType::NodeCreated, p, acl, zxid);
                }
                Trigger::DataChanged(p, acl) => {
                    let ws = self.data_watches.trigger(p, &[]);
                    self.notify(step, &ws, EventType::NodeDataChanged, p, acl, zxid);
                }
                Trigger::Deleted(p, acl) => {
                    let ws = self.data_watches.trigger(p, &[]);
                    self.notify(step, &ws, EventType::NodeDeleted, p, acl, zxid);
                    let more = self.child_watches.trigger(p, &ws);
                    self.notify(step, &more, EventType::NodeDeleted, p, acl, zxid);
                }
                Trigger::Children(p, acl) => {
                    let ws = self.child_watches.trigger(p, &[]);
                    self.notify(step, &ws, EventType::NodeChildrenChanged, p, acl, zxid);
                }
            }
        }
    }

    /// Sends an event to each watcher that may still READ the node (ZooKeeper 3.8.4+ checks
    /// this at delivery, so an ACL change cannot leak later changes).
    fn notify(
        &mut self,
        step: &mut Step,
        watchers: &[ConnId],
        t: EventType,
        path: &str,
        acl: &[corral_proto::records::Acl],
        zxid: Zxid,
    ) {
        if watchers.is_empty() {
            return;
        }
        // One frame shared by every watcher.
        let frame = Bytes::from(notification(t, path, zxid));
        for &w in watchers {
            let allowed = self
                .conns
                .get(&w)
                .is_some_and(|c| acl::check(acl, corral_proto::perms::READ, &c.auth).is_ok());
            if allowed {
                self.packets_sent += 1;
                step.effects.push(Effect::Send {
                    conn: w,
                    frame: frame.clone(),
                });
            }
        }
    }

    // ---- reply encoding ----

    fn send(&mut self, step: &mut Step, conn: ConnId, frame: Vec<u8>) {
        self.packets_sent += 1;
        step.effects.push(Effect::Send {
            conn,
            frame: Bytes::from(frame),
        });
    }

    fn send_header(&mut self, step: &mut Step, conn: ConnId, xid: i32, zxid: Zxid, err: i32) {
        let mut out = Vec::with_capacity(20);
        let at = frame::begin_frame(&mut out);
        let mut w = Writer::new();
        ReplyHeader { xid, zxid, err }.write(&mut w);
        out.extend_from_slice(&w.into_inner());
        frame::finish_frame(&mut out, at);
        self.send(step, conn, out);
    }

    fn send_reply(&mut self, step: &mut Step, conn: ConnId, xid: i32, reply: Reply) {
        let zxid = self.last_zxid;
        let mut w = Writer::with_capacity(64);
        w.write_i32(0);
        match reply {
            Ok(resp) => {
                ReplyHeader { xid, zxid, err: 0 }.write(&mut w);
                resp.write(&mut w);
            }
            Err(e) => ReplyHeader {
                xid,
                zxid,
                err: e.code(),
            }
            .write(&mut w),
        }
        let mut out = w.into_inner();
        frame::finish_frame(&mut out, 0);
        self.send(step, conn, out);
    }
}

/// The node that holds the ensemble's membership.
const CONFIG_NODE: &str = "/zookeeper/config";

/// The request in `body`, decoded, if a follower may forward it at once although `c` has
/// forwarded requests outstanding: a client request that needs the leader, when everything
/// outstanding is such a request too (not a session's connect or revalidation) and nothing
/// waits in the queue (a read waiting for an earlier write keeps every later request behind
/// it). The leader receives forwards in the order they were sent and commits them in that
/// order, so their outcomes, and the replies, come back in the client's order — as
/// ZooKeeper's followers pass writes on without waiting for the earlier ones.
fn pipelined_request(
    c: &Conn,
    body: &[u8],
) -> Option<(corral_proto::records::RequestHeader, Request)> {
    if c.session.is_none()
        || c.revalidating.is_some()
        || !c.queued.is_empty()
        || c.forwarded != c.forwarded_plain
    {
        return None;
    }
    let mut r = Reader::new(body);
    let header = corral_proto::records::RequestHeader::read(&mut r).ok()?;
    Request::decode(header.op, r.rest())
        .ok()
        .filter(needs_leader)
        .map(|req| (header, req))
}

/// Requests a follower cannot answer alone: writes go through the leader, and `sync` must be
/// ordered behind the leader's commits.
fn needs_leader(req: &Request) -> bool {
    req.is_write() || matches!(req, Request::Sync(_))
}

/// Requests that only read the tree (what `corral.linearizableReads` puts behind a barrier).
fn is_read(req: &Request) -> bool {
    matches!(
        req,
        Request::Exists(_)
            | Request::GetData(_)
            | Request::GetAcl(_)
            | Request::GetChildren(_)
            | Request::GetChildren2(_)
            | Request::GetEphemerals(_)
            | Request::GetAllChildrenNumber(_)
            | Request::MultiRead(_)
    )
}

fn close(step: &mut Step, conn: ConnId, reason: String) {
    step.effects.push(Effect::Close { conn, reason });
}

/// A watch notification frame: reply header with xid -1 and the zxid of the change (-1 when
/// there is none, e.g. events fired by setWatches), then the event.
fn notification(t: EventType, path: &str, zxid: Zxid) -> Vec<u8> {
    notification_code(t.code(), path, zxid)
}

/// A notification frame with a raw event type (Corral's extension events have no
/// `EventType`).
fn notification_code(event_type: i32, path: &str, zxid: Zxid) -> Vec<u8> {
    let mut w = Writer::with_capacity(32 + path.len());
    w.write_i32(0);
    ReplyHeader {
        xid: xid::NOTIFICATION,
        zxid,
        err: 0,
    }
    .write(&mut w);
    WatcherEvent {
        event_type,
        state: KeeperState::SyncConnected.code(),
        path: path.to_string(),
    }
    .write(&mut w);
    let mut out = w.into_inner();
    frame::finish_frame(&mut out, 0);
    out
}

#[cfg(test)]
mod ensemble_tests;
#[cfg(test)]
mod tests;

/// A session id as log lines name it (`0x…`, as ZooKeeper prints them); `none` before the
/// connection's handshake bound a session.
pub fn session_label(session: Option<SessionId>) -> String {
    session.map_or_else(|| "none".to_string(), |id| format!("0x{id:x}"))
}
