//! The session task: owns the connection, matches replies to requests by xid, keeps the
//! client-side watch registry, pings, and reconnects (re-authenticating and re-registering
//! watches) until the session ends.
//!
//! One task per client. Client handles talk to it through an unbounded channel of
//! [`Command`]s, so a handle never blocks and dropping a watch can always announce itself.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use corral_proto::consts::ext;
use corral_proto::frame::{self, DEFAULT_MAX_FRAME_BYTES};
use corral_proto::records::{
    AuthPacket, ConnectRequest, ReplyHeader, RequestHeader, SetWatches, SetWatches2, WatcherEvent,
    WatchesRequest,
};
use corral_proto::request::encode_connect_ext;
use corral_proto::{xid, EventType, Jute, OpCode, Reader, Request, WatcherType, Writer, ZkError};
use rand::seq::SliceRandom;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::{sleep_until, timeout, Instant};
use tracing::{debug, info, warn};

use crate::error::Error;
use crate::path::Chroot;
use crate::types::{NodeEvent, SessionState, WatchEvent, WatchMode};

/// A reply as the session task hands it back: the header's error code and the body.
#[derive(Debug)]
pub(crate) struct RawReply {
    pub err: i32,
    pub body: Bytes,
}

pub(crate) type OneshotTx = oneshot::Sender<Result<NodeEvent, Error>>;

/// A watch to register once the request it rides on succeeds.
pub(crate) enum WatchReg {
    Data(OneshotTx),
    /// Registered as a data watch if the node exists, as an exist watch if it does not.
    Exists(OneshotTx),
    Child(OneshotTx),
    Persistent {
        id: u64,
        mode: WatchMode,
        tx: mpsc::UnboundedSender<WatchEvent>,
    },
}

pub(crate) enum Command {
    Request {
        req: Request,
        watch: Option<WatchReg>,
        reply: oneshot::Sender<Result<RawReply, Error>>,
    },
    Auth {
        scheme: String,
        auth: Vec<u8>,
        reply: oneshot::Sender<Result<(), Error>>,
    },
    /// A persistent watch stream was dropped.
    Unwatch {
        id: u64,
    },
    /// Forget the one-shot watches on a path (after removeWatches, or locally only); each is
    /// resolved with a `DataWatchRemoved`/`ChildWatchRemoved` event. Replies whether any was
    /// there.
    DropOneshots {
        server_path: String,
        client_path: String,
        data: bool,
        child: bool,
        reply: oneshot::Sender<bool>,
    },
    Close {
        reply: oneshot::Sender<()>,
    },
    /// Replace the host list (already parsed, chroot unchanged).
    SetHosts {
        hosts: Vec<String>,
    },
}

/// What the handles can read about the session without asking the task.
#[derive(Debug, Default, Clone)]
pub(crate) struct SessionInfo {
    pub session_id: i64,
    pub password: Vec<u8>,
    pub timeout_ms: i32,
}

pub(crate) struct Config {
    pub hosts: Vec<String>,
    pub chroot: Chroot,
    pub session_timeout_ms: i32,
    pub read_only: bool,
    /// Resume this session instead of creating one.
    pub session: Option<(i64, Vec<u8>)>,
    pub auths: Vec<(String, Vec<u8>)>,
}

// ---------------------------------------------------------------- watch registry

struct PersistentEntry {
    id: u64,
    tx: mpsc::UnboundedSender<WatchEvent>,
    /// Highest triggering zxid delivered, and the events already delivered at that zxid: a
    /// server that replays events after a reconnect must not make us deliver one twice.
    last_zxid: i64,
    seen_at_last: HashSet<(i32, String)>,
}

impl PersistentEntry {
    fn accept(&mut self, zxid: i64, event_type: EventType, path: &str) -> bool {
        if zxid <= 0 {
            return true;
        }
        if zxid < self.last_zxid {
            return false;
        }
        if zxid > self.last_zxid {
            self.last_zxid = zxid;
            self.seen_at_last.clear();
        }
        self.seen_at_last
            .insert((event_type.code(), path.to_string()))
    }
}

#[derive(Default)]
struct Watches {
    data: HashMap<String, Vec<OneshotTx>>,
    exist: HashMap<String, Vec<OneshotTx>>,
    child: HashMap<String, Vec<OneshotTx>>,
    persistent: HashMap<String, Vec<PersistentEntry>>,
    recursive: HashMap<String, Vec<PersistentEntry>>,
    by_id: HashMap<u64, (String, WatchMode)>,
}

impl Watches {
    fn register(&mut self, path: &str, reg: WatchReg, err: i32) {
        let ok = err == 0;
        match reg {
            WatchReg::Data(tx) if ok => self.data.entry(path.into()).or_default().push(tx),
            WatchReg::Exists(tx) if ok => self.data.entry(path.into()).or_default().push(tx),
            WatchReg::Exists(tx) if err == ZkError::NoNode.code() => {
                self.exist.entry(path.into()).or_default().push(tx)
            }
            WatchReg::Child(tx) if ok => self.child.entry(path.into()).or_default().push(tx),
            WatchReg::Persistent { id, mode, tx } if ok => {
                let entry = PersistentEntry {
                    id,
                    tx,
                    last_zxid: 0,
                    seen_at_last: HashSet::new(),
                };
                self.persistent_map(mode)
                    .entry(path.into())
                    .or_default()
                    .push(entry);
                self.by_id.insert(id, (path.into(), mode));
            }
            _ => {}
        }
    }

    /// Removes the one-shot watches on `path` of the given kinds; returns them by kind.
    fn drop_oneshots(
        &mut self,
        path: &str,
        data: bool,
        child: bool,
    ) -> (Vec<OneshotTx>, Vec<OneshotTx>) {
        let mut data_txs = Vec::new();
        if data {
            data_txs.extend(self.data.remove(path).unwrap_or_default());
            data_txs.extend(self.exist.remove(path).unwrap_or_default());
        }
        let child_txs = if child {
            self.child.remove(path).unwrap_or_default()
        } else {
            Vec::new()
        };
        (data_txs, child_txs)
    }

    fn persistent_map(&mut self, mode: WatchMode) -> &mut HashMap<String, Vec<PersistentEntry>> {
        match mode {
            WatchMode::NonRecursive => &mut self.persistent,
            WatchMode::Recursive => &mut self.recursive,
        }
    }

    /// Removes one persistent watcher; returns the path and mode if that was the last client
    /// watcher of its kind there (so the server-side watch should go too).
    fn unregister(&mut self, id: u64) -> Option<(String, WatchMode)> {
        let (path, mode) = self.by_id.remove(&id)?;
        let map = self.persistent_map(mode);
        let entries = map.get_mut(&path)?;
        entries.retain(|e| e.id != id);
        if entries.is_empty() {
            map.remove(&path);
            Some((path, mode))
        } else {
            None
        }
    }

    /// Delivers a node event; returns the server-side watches left without a live watcher.
    fn dispatch(&mut self, server_path: &str, event: NodeEvent) -> Vec<(String, WatchMode)> {
        let et = event.event_type;
        let mut oneshots = Vec::new();
        let mut take = |m: &mut HashMap<String, Vec<OneshotTx>>| {
            if let Some(v) = m.remove(server_path) {
                oneshots.extend(v);
            }
        };
        match et {
            EventType::NodeCreated | EventType::NodeDataChanged => {
                take(&mut self.data);
                take(&mut self.exist);
            }
            EventType::NodeChildrenChanged => take(&mut self.child),
            EventType::NodeDeleted => {
                take(&mut self.data);
                take(&mut self.exist);
                take(&mut self.child);
            }
            _ => {}
        }
        for tx in oneshots {
            let _ = tx.send(Ok(event.clone()));
        }

        let zxid = event.zxid.unwrap_or(-1);
        let mut dead = Vec::new();
        let deliver = |entries: &mut Vec<PersistentEntry>, dead: &mut Vec<u64>| {
            for e in entries.iter_mut() {
                if e.accept(zxid, et, server_path)
                    && e.tx.send(WatchEvent::Node(event.clone())).is_err()
                {
                    dead.push(e.id);
                }
            }
        };
        if let Some(entries) = self.persistent.get_mut(server_path) {
            deliver(entries, &mut dead);
        }
        // Recursive watches are not told about children lists: their own events cover them.
        if et != EventType::NodeChildrenChanged {
            for prefix in ancestors_or_self(server_path) {
                if let Some(entries) = self.recursive.get_mut(prefix) {
                    deliver(entries, &mut dead);
                }
            }
        }
        dead.into_iter()
            .filter_map(|id| self.unregister(id))
            .collect()
    }

    /// Tells the persistent and recursive watchers registered exactly on `server_path` that
    /// events may be missing.
    fn may_have_missed(&mut self, server_path: &str) {
        for map in [&self.persistent, &self.recursive] {
            for e in map.get(server_path).into_iter().flatten() {
                // A closed stream is being unregistered by its `Unwatch` command already.
                let _ = e.tx.send(WatchEvent::MayHaveMissed);
            }
        }
    }

    /// Tells every persistent watcher about a session state change.
    fn broadcast(&mut self, state: SessionState) {
        self.retain_persistent(|e| e.tx.send(WatchEvent::Session(state)).is_ok());
    }

    /// Ends every watch with the session's final state.
    fn finish(&mut self, state: SessionState) {
        self.broadcast(state);
        for map in [&mut self.data, &mut self.exist, &mut self.child] {
            for (_, txs) in map.drain() {
                for tx in txs {
                    let _ = tx.send(Err(state.terminal_error()));
                }
            }
        }
        *self = Watches::default();
    }

    /// Drops one-shot watchers nobody waits for any more.
    fn prune(&mut self) {
        for map in [&mut self.data, &mut self.exist, &mut self.child] {
            for txs in map.values_mut() {
                txs.retain(|tx| !tx.is_closed());
            }
            map.retain(|_, v| !v.is_empty());
        }
        // Persistent watchers whose stream is gone: their removal never reached a server.
        self.retain_persistent(|e| !e.tx.is_closed());
    }

    /// Keeps the persistent and recursive watchers `keep` accepts, and forgets the ids of the
    /// others.
    fn retain_persistent(&mut self, mut keep: impl FnMut(&PersistentEntry) -> bool) {
        for map in [&mut self.persistent, &mut self.recursive] {
            for entries in map.values_mut() {
                entries.retain(&mut keep);
            }
            map.retain(|_, v| !v.is_empty());
        }
        let live: HashSet<u64> = self
            .persistent
            .values()
            .chain(self.recursive.values())
            .flatten()
            .map(|e| e.id)
            .collect();
        self.by_id.retain(|id, _| live.contains(id));
    }
}

/// "/a/b" → "/a/b", "/a", "/".
fn ancestors_or_self(path: &str) -> impl Iterator<Item = &str> {
    let mut next = Some(path);
    std::iter::from_fn(move || {
        let cur = next?;
        next = if cur == "/" {
            None
        } else {
            Some(crate::path::parent(cur))
        };
        Some(cur)
    })
}

// ---------------------------------------------------------------- connection plumbing

struct FrameReader {
    rd: OwnedReadHalf,
    buf: BytesMut,
}

impl FrameReader {
    /// The next frame body. Cancel-safe: partial input stays in `buf`.
    async fn next(&mut self) -> Result<Bytes, String> {
        loop {
            match frame::check(&self.buf, DEFAULT_MAX_FRAME_BYTES * 4) {
                Ok(Some(len)) => {
                    let mut f = self.buf.split_to(4 + len);
                    let _ = f.split_to(4);
                    return Ok(f.freeze());
                }
                Ok(None) => {}
                Err(e) => return Err(e.to_string()),
            }
            match self.rd.read_buf(&mut self.buf).await {
                Ok(0) => return Err("connection closed by server".into()),
                Ok(_) => {}
                Err(e) => return Err(e.to_string()),
            }
        }
    }
}

fn encode_frame(write_body: impl FnOnce(&mut Writer)) -> Vec<u8> {
    let mut w = Writer::new();
    w.write_i32(0);
    write_body(&mut w);
    let len = (w.len() - 4) as i32;
    w.patch_i32(0, len);
    w.into_inner()
}

fn request_frame(xid: i32, op: OpCode, body: impl FnOnce(&mut Writer)) -> Vec<u8> {
    encode_frame(|w| {
        RequestHeader { xid, op: op.code() }.write(w);
        body(w);
    })
}

/// The first pause before looking for a read-write server, and the longest (ZooKeeper's
/// clients use the same bounds).
const RW_PROBE_FIRST: Duration = Duration::from_millis(100);
const RW_PROBE_MAX: Duration = Duration::from_secs(60);
/// How long one probe may take.
const RW_PROBE_TIMEOUT: Duration = Duration::from_secs(2);

type RwProbe = dyn std::future::Future<Output = Option<String>> + Send;

/// Asks `host` with the `isro` four-letter word whether it serves writes; `Some(host)` if it
/// answers `rw`.
async fn probe_read_write(host: String) -> Option<String> {
    let ask = async {
        let mut s = TcpStream::connect(&host).await.ok()?;
        s.write_all(b"isro").await.ok()?;
        let mut answer = Vec::with_capacity(8);
        (&mut s).take(16).read_to_end(&mut answer).await.ok()?;
        answer.starts_with(b"rw").then_some(())
    };
    match timeout(RW_PROBE_TIMEOUT, ask).await {
        Ok(Some(())) => Some(host),
        _ => None,
    }
}

struct Handshake {
    /// The host (as the host list names it) this connection went to.
    host: String,
    reader: FrameReader,
    writer: OwnedWriteHalf,
    timeout_ms: i32,
    session_id: i64,
    password: Vec<u8>,
    read_only: bool,
}

enum AttemptError {
    Failed(String),
    Expired,
}

struct AttemptParams {
    host: String,
    connect_timeout: Duration,
    session_id: i64,
    password: Vec<u8>,
    last_zxid: i64,
    timeout_ms: i32,
    read_only: bool,
}

async fn attempt(p: AttemptParams) -> Result<Handshake, AttemptError> {
    let fail = |e: String| AttemptError::Failed(format!("{}: {e}", p.host));
    let addrs: Vec<_> = tokio::net::lookup_host(&p.host)
        .await
        .map_err(|e| fail(e.to_string()))?
        .collect();
    let mut last_err = "no address".to_string();
    for addr in addrs {
        let stream = match timeout(p.connect_timeout, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                last_err = e.to_string();
                continue;
            }
            Err(_) => {
                last_err = "connect timed out".into();
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let (rd, mut wr) = stream.into_split();
        let req = ConnectRequest {
            protocol_version: corral_proto::consts::PROTOCOL_VERSION,
            last_zxid_seen: p.last_zxid,
            timeout_ms: p.timeout_ms,
            session_id: p.session_id,
            passwd: Some(Bytes::from(p.password.clone())),
        };
        // The extension block asks a Corral server to report incomplete persistent watch
        // replays; ZooKeeper ignores bytes after the readOnly flag.
        let bytes =
            encode_frame(|w| encode_connect_ext(&req, p.read_only, ext::FEATURE_REPLAY_GAPS, w));
        let mut reader = FrameReader {
            rd,
            buf: BytesMut::with_capacity(64 * 1024),
        };
        let exchange = async {
            wr.write_all(&bytes).await.map_err(|e| e.to_string())?;
            reader.next().await
        };
        let body = match timeout(p.connect_timeout, exchange).await {
            Ok(Ok(b)) => b,
            Ok(Err(e)) => {
                last_err = e;
                continue;
            }
            Err(_) => {
                last_err = "handshake timed out".into();
                continue;
            }
        };
        let mut r = Reader::new(&body);
        let parsed = (|| -> Result<_, corral_proto::DecodeError> {
            let _protocol = r.read_i32()?;
            let timeout_ms = r.read_i32()?;
            let session_id = r.read_i64()?;
            let password = r.read_buffer()?.map(|b| b.to_vec()).unwrap_or_default();
            let read_only = if r.remaining() > 0 {
                r.read_bool()?
            } else {
                false
            };
            Ok((timeout_ms, session_id, password, read_only))
        })();
        let (timeout_ms, session_id, password, read_only) =
            parsed.map_err(|e| fail(format!("bad connect response: {e}")))?;
        if timeout_ms <= 0 {
            return Err(AttemptError::Expired);
        }
        return Ok(Handshake {
            host: p.host.clone(),
            reader,
            writer: wr,
            timeout_ms,
            session_id,
            password,
            read_only,
        });
    }
    Err(fail(last_err))
}

/// Writes queued frames in order; reports through `dead` when the socket fails.
fn spawn_writer(
    mut wr: OwnedWriteHalf,
) -> (mpsc::UnboundedSender<Vec<u8>>, oneshot::Receiver<String>) {
    let (tx, mut rx) = mpsc::unbounded_channel::<Vec<u8>>();
    let (dead_tx, dead_rx) = oneshot::channel();
    tokio::spawn(async move {
        let mut batch = Vec::new();
        while let Some(first) = rx.recv().await {
            batch.clear();
            batch.extend_from_slice(&first);
            // Coalesce what is already queued into one write.
            while batch.len() < 256 * 1024 {
                match rx.try_recv() {
                    Ok(more) => batch.extend_from_slice(&more),
                    Err(_) => break,
                }
            }
            if let Err(e) = wr.write_all(&batch).await {
                let _ = dead_tx.send(e.to_string());
                return;
            }
        }
        let _ = wr.shutdown().await;
    });
    (tx, dead_rx)
}

// ---------------------------------------------------------------- the task

struct Pending {
    xid: i32,
    op: OpCode,
    path: Option<String>,
    watch: Option<WatchReg>,
    reply: Option<oneshot::Sender<Result<RawReply, Error>>>,
    /// For a typed removeWatches of a persistent watch: the path, to retry the removal the way
    /// older servers understand if this one rejects the typed form.
    removing_persistent: Option<String>,
}

enum End {
    Lost(String),
    Final(SessionState),
}

pub(crate) struct SessionTask {
    cfg: Config,
    rx: mpsc::UnboundedReceiver<Command>,
    rx_closed: bool,
    state: watch::Sender<SessionState>,
    info: Arc<Mutex<SessionInfo>>,
    session_id: i64,
    password: Vec<u8>,
    timeout_ms: i32,
    last_zxid: i64,
    auths: Vec<(String, Vec<u8>)>,
    auth_waiters: HashMap<usize, Vec<oneshot::Sender<Result<(), Error>>>>,
    watches: Watches,
    next_xid: i32,
    host_cursor: usize,
    backlog: VecDeque<Command>,
    close_waiters: Vec<oneshot::Sender<()>>,
    closing: bool,
    /// The server rejected typed removal of persistent watches (ZooKeeper 3.8).
    untyped_watch_removal: bool,
    /// The host of the current connection, while there is one.
    current_host: Option<String>,
    /// The host list changed and no longer names the current host: leave it.
    leave_current_host: bool,
    /// The session was handed out by a read-only server and no read-write server has seen it:
    /// it exists only there, so the next connection asks for a new session (as ZooKeeper's
    /// clients do until they have seen a read-write server).
    read_only_session: bool,
}

impl SessionTask {
    pub(crate) fn new(
        mut cfg: Config,
        rx: mpsc::UnboundedReceiver<Command>,
        state: watch::Sender<SessionState>,
        info: Arc<Mutex<SessionInfo>>,
    ) -> Self {
        cfg.hosts.shuffle(&mut rand::thread_rng());
        let (session_id, password) = cfg.session.clone().unwrap_or((0, vec![0; 16]));
        let auths = std::mem::take(&mut cfg.auths);
        let timeout_ms = cfg.session_timeout_ms;
        SessionTask {
            cfg,
            rx,
            rx_closed: false,
            state,
            info,
            session_id,
            password,
            timeout_ms,
            last_zxid: 0,
            auths,
            auth_waiters: HashMap::new(),
            watches: Watches::default(),
            next_xid: 1,
            host_cursor: 0,
            backlog: VecDeque::new(),
            close_waiters: Vec::new(),
            closing: false,
            untyped_watch_removal: false,
            current_host: None,
            leave_current_host: false,
            read_only_session: false,
        }
    }

    /// Takes a new host list. The next connection attempt starts at its (shuffled) beginning;
    /// a connection to a host the list no longer names is given up, and the session resumes
    /// on one of the new hosts, as ZooKeeper's `updateServerAddresses` does.
    fn set_hosts(&mut self, mut hosts: Vec<String>) {
        if hosts.is_empty() {
            return; // the handle rejects an empty list; nothing to connect to otherwise
        }
        hosts.shuffle(&mut rand::thread_rng());
        info!(?hosts, "host list replaced");
        if let Some(current) = &self.current_host {
            if !hosts.contains(current) {
                self.leave_current_host = true;
            }
        }
        self.cfg.hosts = hosts;
        self.host_cursor = 0;
    }

    pub(crate) async fn run(mut self) {
        let final_state = loop {
            let hs = match self.connect_any().await {
                Ok(hs) => hs,
                Err(state) => break state,
            };
            match self.serve(hs).await {
                End::Lost(why) => {
                    info!(session_id = format_args!("{:#x}", self.session_id), %why, "connection lost");
                    if self.closing {
                        break SessionState::Closed;
                    }
                    self.set_state(SessionState::Disconnected);
                }
                End::Final(state) => break state,
            }
        };
        self.finish(final_state);
    }

    fn finish(&mut self, state: SessionState) {
        debug!(?state, "session finished");
        self.set_state(state);
        self.watches.finish(state);
        for (_, waiters) in self.auth_waiters.drain() {
            for w in waiters {
                let _ = w.send(Err(state.terminal_error()));
            }
        }
        self.rx.close();
        let mut leftovers: Vec<Command> = self.backlog.drain(..).collect();
        while let Ok(cmd) = self.rx.try_recv() {
            leftovers.push(cmd);
        }
        for cmd in leftovers {
            fail_command(cmd, state.terminal_error());
        }
        for w in self.close_waiters.drain(..) {
            let _ = w.send(());
        }
    }

    fn set_state(&mut self, state: SessionState) {
        let old = self.state.send_replace(state);
        if old != state && !state.is_terminal() {
            self.watches.broadcast(state);
        }
    }

    /// Cycles through the hosts until one accepts the session. Commands arriving meanwhile
    /// wait in the backlog.
    async fn connect_any(&mut self) -> Result<Handshake, SessionState> {
        let mut failures_in_round = 0usize;
        loop {
            if self.closing {
                return Err(SessionState::Closed);
            }
            let n = self.cfg.hosts.len();
            let host = self.cfg.hosts[self.host_cursor % n].clone();
            self.host_cursor = self.host_cursor.wrapping_add(1);
            let connect_timeout =
                Duration::from_millis((self.timeout_ms.max(1000) as u64) / n as u64)
                    .max(Duration::from_millis(500));
            let fut = attempt(AttemptParams {
                host: host.clone(),
                connect_timeout,
                session_id: if self.read_only_session {
                    0
                } else {
                    self.session_id
                },
                password: self.password.clone(),
                last_zxid: self.last_zxid,
                timeout_ms: self.cfg.session_timeout_ms,
                read_only: self.cfg.read_only,
            });
            tokio::pin!(fut);
            let result = loop {
                tokio::select! {
                    r = &mut fut => break r,
                    cmd = self.rx.recv(), if !self.rx_closed => match cmd {
                        Some(Command::Close { reply }) => {
                            self.close_waiters.push(reply);
                            if self.session_id == 0 {
                                return Err(SessionState::Closed);
                            }
                            // Keep connecting so the server learns the session is over.
                            self.closing = true;
                        }
                        Some(Command::SetHosts { hosts }) => self.set_hosts(hosts),
                        Some(cmd) => self.backlog.push_back(cmd),
                        None => {
                            self.rx_closed = true;
                            self.closing = true;
                            if self.session_id == 0 {
                                return Err(SessionState::Closed);
                            }
                        }
                    },
                }
            };
            match result {
                Ok(hs) => return Ok(hs),
                Err(AttemptError::Expired) => {
                    warn!(
                        session_id = format_args!("{:#x}", self.session_id),
                        "session expired"
                    );
                    return Err(SessionState::Expired);
                }
                Err(AttemptError::Failed(why)) => {
                    debug!(%why, "connect attempt failed");
                    failures_in_round += 1;
                    if failures_in_round >= n {
                        failures_in_round = 0;
                        if self.closing {
                            // Nobody is left to resume the session: give up on telling the server.
                            return Err(SessionState::Closed);
                        }
                        // Every host failed: back off briefly rather than spin.
                        let pause = rand::random::<u64>() % 200 + 50;
                        tokio::time::sleep(Duration::from_millis(pause)).await;
                    }
                }
            }
        }
    }

    fn next_xid(&mut self) -> i32 {
        let x = self.next_xid;
        self.next_xid = if x == i32::MAX { 1 } else { x + 1 };
        x
    }

    async fn serve(&mut self, hs: Handshake) -> End {
        let Handshake {
            host,
            mut reader,
            writer,
            timeout_ms,
            session_id,
            password,
            read_only,
        } = hs;
        if self.session_id != 0 && self.session_id != session_id && !self.read_only_session {
            return End::Lost("server answered with another session".into());
        }
        self.read_only_session = read_only && (self.read_only_session || self.session_id == 0);
        self.session_id = session_id;
        self.password = password;
        self.timeout_ms = timeout_ms;
        self.current_host = Some(host);
        self.leave_current_host = false;
        {
            let mut info = self.info.lock().unwrap();
            info.session_id = session_id;
            info.password = self.password.clone();
            info.timeout_ms = timeout_ms;
        }
        let (wtx, mut dead) = spawn_writer(writer);
        let ping_every = Duration::from_millis(timeout_ms as u64 / 3);
        let read_timeout = Duration::from_millis(timeout_ms as u64 * 2 / 3);
        let mut pending: VecDeque<Pending> = VecDeque::new();
        let mut auth_queue: VecDeque<usize> = VecDeque::new();
        let zxid_at_connect = self.last_zxid;
        let mut checked_server_zxid = false;

        // Prime the connection: authentication first (watch re-registration may need it),
        // then the watches, then whatever waited.
        for (i, (scheme, auth)) in self.auths.iter().enumerate() {
            let f = request_frame(xid::AUTH, OpCode::Auth, |w| {
                AuthPacket {
                    auth_type: 0,
                    scheme: scheme.clone(),
                    auth: Some(Bytes::from(auth.clone())),
                }
                .write(w)
            });
            let _ = wtx.send(f);
            auth_queue.push_back(i);
        }
        for f in self.set_watches_frames(None) {
            let _ = wtx.send(f);
        }
        info!(
            session_id = format_args!("{:#x}", session_id),
            timeout_ms, read_only, "connected"
        );
        self.set_state(if read_only {
            SessionState::ConnectedReadOnly
        } else {
            SessionState::Connected
        });
        if self.closing {
            self.send_close(&wtx, &mut pending);
        }
        while let Some(cmd) = self.backlog.pop_front() {
            self.handle_command(cmd, &wtx, &mut pending, &mut auth_queue);
        }

        let mut last_recv = Instant::now();
        let mut last_send = Instant::now();
        // On a read-only server, look for a read-write one now and then (as ZooKeeper's
        // clients do with `isro`), backing off from RW_PROBE_FIRST to RW_PROBE_MAX.
        let mut rw_probe_gap = RW_PROBE_FIRST;
        let mut next_rw_probe = Instant::now() + rw_probe_gap;
        let mut rw_probe: Option<std::pin::Pin<Box<RwProbe>>> = None;
        let end = loop {
            let may_probe = read_only && rw_probe.is_none() && self.cfg.hosts.len() > 1;
            let probing = async {
                match rw_probe.as_mut() {
                    Some(p) => p.await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                _ = sleep_until(next_rw_probe), if may_probe => {
                    let candidate = self.rw_probe_candidate();
                    rw_probe = candidate.map(|host| Box::pin(probe_read_write(host)) as _);
                    if rw_probe.is_none() {
                        next_rw_probe = Instant::now() + rw_probe_gap;
                    }
                    continue;
                }
                found = probing => {
                    rw_probe = None;
                    if let Some(host) = found {
                        if let Some(i) = self.cfg.hosts.iter().position(|h| *h == host) {
                            self.host_cursor = i;
                        }
                        break End::Lost(format!("{host} is a read-write server"));
                    }
                    rw_probe_gap = (rw_probe_gap * 2).min(RW_PROBE_MAX);
                    next_rw_probe = Instant::now() + rw_probe_gap;
                    continue;
                }
                f = reader.next() => {
                    let body = match f {
                        Ok(b) => b,
                        Err(e) => break End::Lost(e),
                    };
                    last_recv = Instant::now();
                    match self.on_frame(&body, &wtx, &mut pending, &mut auth_queue) {
                        Ok(Some(zxid)) if !checked_server_zxid => {
                            checked_server_zxid = true;
                            if zxid < zxid_at_connect {
                                break End::Lost(format!(
                                    "server is behind: zxid {zxid:#x} < seen {zxid_at_connect:#x}"
                                ));
                            }
                        }
                        Ok(_) => {}
                        Err(end) => break end,
                    }
                }
                cmd = self.rx.recv(), if !self.rx_closed => {
                    match cmd {
                        Some(cmd) => {
                            self.handle_command(cmd, &wtx, &mut pending, &mut auth_queue);
                            if self.leave_current_host {
                                break End::Lost("the host list no longer names this server".into());
                            }
                        }
                        None => {
                            self.rx_closed = true;
                            if !self.closing {
                                self.closing = true;
                                self.send_close(&wtx, &mut pending);
                            }
                        }
                    }
                    last_send = Instant::now();
                }
                _ = sleep_until(last_send + ping_every) => {
                    let _ = wtx.send(request_frame(xid::PING, OpCode::Ping, |_| {}));
                    last_send = Instant::now();
                }
                _ = sleep_until(last_recv + read_timeout) => {
                    break End::Lost(format!("nothing received for {read_timeout:?}"));
                }
                e = &mut dead => {
                    break End::Lost(e.unwrap_or_else(|_| "writer stopped".into()));
                }
            }
        };
        self.current_host = None;
        self.leave_current_host = false;
        let err = match &end {
            End::Lost(_) => Error::ConnectionLoss,
            End::Final(s) => s.terminal_error(),
        };
        for p in pending.drain(..) {
            if let Some(r) = p.reply {
                let _ = r.send(Err(err.clone()));
            }
        }
        end
    }

    /// The next host after the current one to ask whether it is read-write.
    fn rw_probe_candidate(&mut self) -> Option<String> {
        let n = self.cfg.hosts.len();
        for _ in 0..n {
            let host = self.cfg.hosts[self.host_cursor % n].clone();
            self.host_cursor = self.host_cursor.wrapping_add(1);
            if Some(&host) != self.current_host.as_ref() {
                return Some(host);
            }
        }
        None
    }

    fn send_close(
        &mut self,
        wtx: &mpsc::UnboundedSender<Vec<u8>>,
        pending: &mut VecDeque<Pending>,
    ) {
        let xid = self.next_xid();
        let _ = wtx.send(request_frame(xid, OpCode::CloseSession, |_| {}));
        pending.push_back(Pending {
            xid,
            op: OpCode::CloseSession,
            path: None,
            watch: None,
            reply: None,
            removing_persistent: None,
        });
    }

    fn handle_command(
        &mut self,
        cmd: Command,
        wtx: &mpsc::UnboundedSender<Vec<u8>>,
        pending: &mut VecDeque<Pending>,
        auth_queue: &mut VecDeque<usize>,
    ) {
        match cmd {
            Command::Request { req, watch, reply } => {
                if self.closing {
                    let _ = reply.send(Err(Error::Closed));
                    return;
                }
                let xid = self.next_xid();
                let op = req.op();
                let _ = wtx.send(request_frame(xid, op, |w| req.write(w)));
                pending.push_back(Pending {
                    xid,
                    op,
                    path: req.path().map(str::to_string),
                    watch,
                    reply: Some(reply),
                    removing_persistent: None,
                });
            }
            Command::Auth {
                scheme,
                auth,
                reply,
            } => {
                let idx = match self
                    .auths
                    .iter()
                    .position(|(s, a)| *s == scheme && *a == auth)
                {
                    Some(i) => i,
                    None => {
                        self.auths.push((scheme.clone(), auth.clone()));
                        self.auths.len() - 1
                    }
                };
                self.auth_waiters.entry(idx).or_default().push(reply);
                let f = request_frame(xid::AUTH, OpCode::Auth, |w| {
                    AuthPacket {
                        auth_type: 0,
                        scheme,
                        auth: Some(Bytes::from(auth)),
                    }
                    .write(w)
                });
                let _ = wtx.send(f);
                auth_queue.push_back(idx);
            }
            Command::Unwatch { id } => {
                if let Some((path, mode)) = self.watches.unregister(id) {
                    self.remove_server_watch(path, mode, wtx, pending);
                }
            }
            Command::DropOneshots {
                server_path,
                client_path,
                data,
                child,
                reply,
            } => {
                let (data_txs, child_txs) = self.watches.drop_oneshots(&server_path, data, child);
                let any = !data_txs.is_empty() || !child_txs.is_empty();
                for (txs, event_type) in [
                    (data_txs, EventType::DataWatchRemoved),
                    (child_txs, EventType::ChildWatchRemoved),
                ] {
                    for tx in txs {
                        let _ = tx.send(Ok(NodeEvent {
                            event_type,
                            path: client_path.clone(),
                            zxid: None,
                        }));
                    }
                }
                let _ = reply.send(any);
            }
            Command::Close { reply } => {
                self.close_waiters.push(reply);
                if !self.closing {
                    self.closing = true;
                    self.send_close(wtx, pending);
                }
            }
            Command::SetHosts { hosts } => self.set_hosts(hosts),
        }
    }

    fn remove_server_watch(
        &mut self,
        path: String,
        mode: WatchMode,
        wtx: &mpsc::UnboundedSender<Vec<u8>>,
        pending: &mut VecDeque<Pending>,
    ) {
        let watcher_type = match mode {
            _ if self.untyped_watch_removal => WatcherType::Any,
            WatchMode::NonRecursive => WatcherType::Persistent,
            WatchMode::Recursive => WatcherType::PersistentRecursive,
        };
        let xid = self.next_xid();
        let req = WatchesRequest {
            path: path.clone(),
            watcher_type: watcher_type.code(),
        };
        let _ = wtx.send(request_frame(xid, OpCode::RemoveWatches, |w| req.write(w)));
        let untyped = watcher_type == WatcherType::Any;
        pending.push_back(Pending {
            xid,
            op: OpCode::RemoveWatches,
            path: None,
            watch: None,
            reply: None,
            removing_persistent: (!untyped).then_some(path.clone()),
        });
        if untyped {
            // Removing "any" watch also dropped this session's other watches on the path at
            // the server: put back those the client still holds. Watches re-set this way
            // fire at once if the node changed since the last zxid seen, as after a reconnect.
            for f in self.set_watches_frames(Some(&path)) {
                let _ = wtx.send(f);
            }
        }
    }

    /// Handles one frame. `Ok(Some(zxid))` reports the zxid of a reply header carrying one.
    fn on_frame(
        &mut self,
        body: &Bytes,
        wtx: &mpsc::UnboundedSender<Vec<u8>>,
        pending: &mut VecDeque<Pending>,
        auth_queue: &mut VecDeque<usize>,
    ) -> Result<Option<i64>, End> {
        let mut r = Reader::new(body);
        let hdr =
            ReplyHeader::read(&mut r).map_err(|e| End::Lost(format!("bad reply header: {e}")))?;
        match hdr.xid {
            xid::NOTIFICATION => {
                let ev = WatcherEvent::read(&mut r)
                    .map_err(|e| End::Lost(format!("bad notification: {e}")))?;
                if ev.event_type == ext::EVENT_MAY_HAVE_MISSED {
                    self.watches.may_have_missed(&ev.path);
                    return Ok(None);
                }
                let Ok(event_type) = EventType::try_from(ev.event_type) else {
                    warn!(event_type = ev.event_type, "unknown event type");
                    return Ok(None);
                };
                if event_type == EventType::None {
                    return Ok(None);
                }
                if hdr.zxid > 0 {
                    self.last_zxid = self.last_zxid.max(hdr.zxid);
                }
                let event = NodeEvent {
                    event_type,
                    path: self.cfg.chroot.strip(&ev.path),
                    zxid: (hdr.zxid > 0).then_some(hdr.zxid),
                };
                for (path, mode) in self.watches.dispatch(&ev.path, event) {
                    self.remove_server_watch(path, mode, wtx, pending);
                }
                Ok(None)
            }
            xid::PING => Ok((hdr.zxid > 0).then_some(hdr.zxid)),
            xid::AUTH => {
                let idx = auth_queue.pop_front();
                let result = match Error::from_code(hdr.err) {
                    _ if hdr.err == 0 => Ok(()),
                    e => Err(e),
                };
                if let Some(waiters) = idx.and_then(|i| self.auth_waiters.remove(&i)) {
                    for w in waiters {
                        let _ = w.send(result.clone());
                    }
                }
                if hdr.err != 0 {
                    warn!(err = hdr.err, "authentication rejected");
                    return Err(End::Final(SessionState::AuthFailed));
                }
                Ok(None)
            }
            xid::SET_WATCHES => {
                if hdr.err != 0 {
                    warn!(err = hdr.err, "re-registering watches failed");
                }
                Ok(None)
            }
            x => {
                let Some(p) = pending.pop_front() else {
                    return Err(End::Lost(format!("reply with xid {x} but nothing pending")));
                };
                if p.xid != x {
                    return Err(End::Lost(format!("reply xid {x}, expected {}", p.xid)));
                }
                if hdr.zxid > 0 {
                    self.last_zxid = self.last_zxid.max(hdr.zxid);
                }
                if let (Some(reg), Some(path)) = (p.watch, p.path.as_deref()) {
                    self.watches.register(path, reg, hdr.err);
                }
                if let Some(path) = p.removing_persistent {
                    if hdr.err != 0 && !self.untyped_watch_removal {
                        // ZooKeeper before 3.9 does not remove persistent watches by type
                        // (3.8 answers MarshallingError, as it cannot parse the type).
                        debug!("server lacks typed persistent watch removal; using Any");
                        self.untyped_watch_removal = true;
                        let mode = WatchMode::NonRecursive; // ignored: removal is untyped now
                        self.remove_server_watch(path, mode, wtx, pending);
                    }
                }
                if p.op == OpCode::CloseSession {
                    return Err(End::Final(SessionState::Closed));
                }
                if let Some(reply) = p.reply {
                    let _ = reply.send(Ok(RawReply {
                        err: hdr.err,
                        body: body.slice(r.position()..),
                    }));
                }
                Ok((hdr.zxid > 0).then_some(hdr.zxid))
            }
        }
    }

    /// setWatches / setWatches2 frames re-registering every live watch, split so no frame
    /// grows past what servers accept.
    fn set_watches_frames(&mut self, only: Option<&str>) -> Vec<Vec<u8>> {
        self.watches.prune();
        let w = &self.watches;
        let lists: [Vec<String>; 5] = [
            keys_of(&w.data, only),
            keys_of(&w.exist, only),
            keys_of(&w.child, only),
            keys_of(&w.persistent, only),
            keys_of(&w.recursive, only),
        ];
        if lists.iter().all(Vec::is_empty) {
            return Vec::new();
        }
        let use_v2 = !lists[3].is_empty() || !lists[4].is_empty();
        const MAX_BATCH_BYTES: usize = 128 * 1024;
        let mut frames = Vec::new();
        let mut batch: [Vec<String>; 5] = Default::default();
        let mut size = 0;
        let relative_zxid = self.last_zxid;
        let mut flush = |batch: &mut [Vec<String>; 5]| {
            let [d, e, c, p, r] = std::mem::take(batch);
            frames.push(if use_v2 {
                let rec = SetWatches2 {
                    relative_zxid,
                    data_watches: d,
                    exist_watches: e,
                    child_watches: c,
                    persistent_watches: p,
                    persistent_recursive_watches: r,
                };
                request_frame(xid::SET_WATCHES, OpCode::SetWatches2, |w| rec.write(w))
            } else {
                let rec = SetWatches {
                    relative_zxid,
                    data_watches: d,
                    exist_watches: e,
                    child_watches: c,
                };
                request_frame(xid::SET_WATCHES, OpCode::SetWatches, |w| rec.write(w))
            });
        };
        for (i, list) in lists.into_iter().enumerate() {
            for path in list {
                size += path.len() + 4;
                batch[i].push(path);
                if size >= MAX_BATCH_BYTES {
                    flush(&mut batch);
                    size = 0;
                }
            }
        }
        if size > 0 {
            flush(&mut batch);
        }
        frames
    }
}

fn keys_of<V>(m: &HashMap<String, V>, only: Option<&str>) -> Vec<String> {
    m.keys()
        .filter(|k| !matches!(only, Some(o) if o != k.as_str()))
        .cloned()
        .collect()
}

fn fail_command(cmd: Command, err: Error) {
    match cmd {
        Command::Request { reply, .. } => {
            let _ = reply.send(Err(err));
        }
        Command::Auth { reply, .. } => {
            let _ = reply.send(Err(err));
        }
        Command::Close { reply } => {
            let _ = reply.send(());
        }
        Command::Unwatch { .. } | Command::SetHosts { .. } => {}
        Command::DropOneshots { reply, .. } => {
            let _ = reply.send(false);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ancestors() {
        let v: Vec<_> = ancestors_or_self("/a/b").collect();
        assert_eq!(v, vec!["/a/b", "/a", "/"]);
        let v: Vec<_> = ancestors_or_self("/").collect();
        assert_eq!(v, vec!["/"]);
    }

    #[test]
    fn persistent_dedupe_by_zxid() {
        let (tx, _rx) = mpsc::unbounded_channel();
        let mut e = PersistentEntry {
            id: 1,
            tx,
            last_zxid: 0,
            seen_at_last: HashSet::new(),
        };
        assert!(e.accept(5, EventType::NodeCreated, "/a"));
        assert!(e.accept(5, EventType::NodeCreated, "/b"));
        assert!(!e.accept(5, EventType::NodeCreated, "/a"));
        assert!(!e.accept(4, EventType::NodeDataChanged, "/a"));
        assert!(e.accept(6, EventType::NodeDataChanged, "/a"));
        // Servers that do not report zxids are never filtered.
        assert!(e.accept(-1, EventType::NodeDataChanged, "/a"));
        assert!(e.accept(-1, EventType::NodeDataChanged, "/a"));
    }
}
