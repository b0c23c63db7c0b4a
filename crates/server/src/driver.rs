//! The driver: the one task that owns the [`Core`].
//!
//! Connection tasks send it what happened on their sockets ([`Inbound`]); it feeds the core,
//! hands the resulting txns to the txn log, and sends the resulting frames back through each
//! connection's bounded queue ([`Outbound`]). Because only this task touches the core, the
//! core needs no locks and every client sees one global order of events.
//!
//! Durability: every effect is tagged with `core.last_zxid()` at the moment it was produced
//! and held until the log reports that zxid durable. Effects are released strictly in the
//! order they were produced, so a reply never reveals a write that a crash could still lose,
//! and replies on a connection keep their order. Txns are submitted without waiting, so
//! everything submitted while one fsync is running shares the next fsync (group commit).
//!
//! Flow control: each connection's replies (queued for its socket or held for durability)
//! are counted in bytes. Past a soft bound its further requests are set aside in order
//! (`ConnState::deferred`, bounded by the permits each frame carries) until its writer
//! reports the queue drained; past a hard bound the connection is closed. Requests received
//! and not yet answered hold an outstanding-request permit, which is what `mntr` reports.
//!
//! Snapshots: every `snapCount` txns (randomised a little) the driver takes an exact image of
//! the core and hands the bytes to a background thread, which writes the file while writes go
//! on; the log is rolled at the same point so older segments become purgeable.
//!
//! Log failures (disk full, I/O error): the core has already applied the failed txns, so its
//! state can no longer be trusted. The driver drops the effects that were waiting for them,
//! rebuilds the core from disk (snapshot + durable log) and keeps serving; writes succeed again
//! once the disk accepts them. A connection that had a reply or event waiting is closed (its
//! client reconnects to its session and re-registers its watches; the rebuilt core's replay
//! window starts empty, so changes before the rebuild are not replayed, and clients that
//! opted in are told when that leaves a gap); every other connection is handed to the rebuilt core with its
//! session and watches. Nothing acknowledged is lost because nothing was acknowledged before
//! it was durable.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use corral_proto::{OpCode, SessionId, Zxid};
use corral_storage::{GroupCommitLog, LogOptions, StorageError};
use tokio::sync::{mpsc, oneshot, watch, Notify, OwnedSemaphorePermit, Semaphore};

use crate::admin::metrics::{SummaryStats, Timings};
use crate::config::ServerConfig;
use crate::consensus::Origin;
use crate::core::{ConnId, Core, CoreConfig, Effect, Now, Role, Step};
use crate::four_letter::{self as flw, ConnLine, ConnSessionLine, LatencyStats};
use crate::persist::{self, Purger, SnapSchedule, SnapshotJob};

mod admin;
mod ensemble;
use ensemble::Ensemble;

/// Why the server could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("recovery failed: {0}")]
    Recovery(#[source] StorageError),
    #[error("logged txn {zxid:#x} cannot be replayed: {source}")]
    Replay {
        zxid: Zxid,
        #[source]
        source: corral_proto::DecodeError,
    },
    /// A snapshot whose checksum is fine but whose content cannot be loaded.
    #[error("snapshot {} cannot be loaded{}: {source}", path.display(), offset.map(|o| format!(" (at offset {o})")).unwrap_or_default())]
    Snapshot {
        path: std::path::PathBuf,
        offset: Option<u64>,
        #[source]
        source: corral_proto::DecodeError,
    },
    #[error("snapshot {} holds zxid {image_zxid:#x}, which does not match its file name", path.display())]
    SnapshotZxid {
        path: std::path::PathBuf,
        image_zxid: Zxid,
    },
    #[error("cannot start the {0} thread: {1}")]
    Thread(&'static str, #[source] std::io::Error),
    #[error("session secret {}: {source}", path.display())]
    SessionSecret {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The txn log failed and the state could not be rebuilt from disk.
    #[error("txn log failed: {0}")]
    Storage(#[source] StorageError),
    #[error("ensemble: {0}")]
    Consensus(#[source] crate::consensus::ConsensusError),
    #[error("raft log: {0}")]
    Raft(String),
    /// The data directory was written by the other kind of server (standalone vs ensemble
    /// member), whose files this one would not read.
    #[error("{0}")]
    DataDirKind(String),
}

/// What connection tasks tell the driver. Events of one connection arrive in order, over
/// one channel shared by all connections.
#[derive(Debug)]
pub(crate) enum Inbound {
    Opened {
        conn: ConnId,
        peer: SocketAddr,
        handle: ConnHandle,
    },
    /// A frame body (length prefix stripped), with the share of its connection's budgets
    /// it holds until the driver is done with it.
    Frame {
        conn: ConnId,
        body: Bytes,
        permit: FramePermit,
    },
    /// The connection's queued reply bytes fell below its pause mark (sent by its writer each
    /// time they cross it downwards).
    Drained { conn: ConnId },
    /// The connection task has ended; sent exactly once after `Opened`.
    Closed { conn: ConnId },
    /// A whitelisted four-letter word to answer (the connection is not `Opened`).
    FourLetter {
        word: &'static str,
        peer: SocketAddr,
        reply: oneshot::Sender<String>,
    },
    /// A question from the AdminServer / metrics endpoint ([`crate::admin`]).
    Admin {
        query: crate::admin::AdminQuery,
        reply: oneshot::Sender<crate::admin::AdminAnswer>,
    },
}

/// What the driver tells a connection's writer.
#[derive(Debug)]
pub(crate) enum Outbound {
    /// A complete frame, length prefix included.
    Frame(Bytes),
    /// Flush what is queued, then close.
    Close,
}

/// The driver's answer to a four-letter word or an admin query: ready at once, or with a part
/// that reads the file system (directory sizes, snapshot files, /proc), which runs on a
/// blocking thread so the driver never waits for a disk.
pub(crate) enum Answer<T> {
    Now(T),
    Later(Box<dyn FnOnce() -> T + Send>),
}

impl<T> Answer<T> {
    fn later(job: impl FnOnce() -> T + Send + 'static) -> Answer<T> {
        Answer::Later(Box::new(job))
    }
}

/// How many answers may read the file system at once; more wait for a turn (each waiting
/// answer belongs to one four-letter connection or admin request, which are bounded).
const FILE_JOBS_AT_ONCE: usize = 2;

/// What one forwarded frame holds of its connection's budgets.
#[derive(Debug)]
pub(crate) struct FramePermit {
    /// One of the connection's outstanding-request slots. The driver keeps it (forgets the
    /// permit) when the frame becomes a request in flight and gives the slot back when the
    /// reply is queued: a reader without a free slot stops reading its socket.
    pub request: OwnedSemaphorePermit,
    /// The frame's bytes in the connection's inbound budget; freed when the frame is
    /// dropped, i.e. once the core has read it.
    pub _bytes: OwnedSemaphorePermit,
}

/// The driver's way to reach one connection task.
#[derive(Debug)]
pub(crate) struct ConnHandle {
    /// Bounded: a client that stops reading fills it, and is then disconnected.
    pub tx: mpsc::Sender<Outbound>,
    /// Ends the connection at once, without flushing (used when the queue is full).
    pub kill: Arc<Notify>,
    /// Tells the connection task the driver closed it: what is queued gets a grace period
    /// to be written, then the socket is dropped (a client that never reads cannot keep a
    /// closed connection open).
    pub closing: Arc<Notify>,
    /// Bytes handed to the writer and not yet written to the socket. Bounding frames alone
    /// is not enough: 4096 queued 1 MB replies would be 4 GB.
    pub queued_bytes: Arc<AtomicUsize>,
    /// Bytes of replies produced for this connection and held until their txn is durable;
    /// they count against the same limit as `queued_bytes`.
    pub held_bytes: Arc<AtomicUsize>,
    pub max_queued_bytes: usize,
    /// Queued reply bytes at which the driver defers this connection's requests and its
    /// reader stops reading (`Inbound::Drained` ends it).
    pub pause_queued_bytes: usize,
    /// Requests received and not yet answered hold one permit each (see [`FramePermit`]).
    pub outstanding: Arc<Semaphore>,
    pub max_outstanding: usize,
}

/// Reply bytes of one held effect, counted in its connection's `held_bytes` until dropped.
#[derive(Debug)]
pub(crate) struct HeldBytes {
    counter: Arc<AtomicUsize>,
    len: usize,
}

impl Drop for HeldBytes {
    fn drop(&mut self) {
        self.counter.fetch_sub(self.len, Ordering::AcqRel);
    }
}

impl ConnHandle {
    /// A handle with empty queues: replies back up at `pause_queued_bytes`, the connection
    /// is closed past `max_queued_bytes`, and `max_outstanding` requests may be in flight.
    pub fn new(
        tx: mpsc::Sender<Outbound>,
        pause_queued_bytes: usize,
        max_queued_bytes: usize,
        max_outstanding: usize,
    ) -> ConnHandle {
        ConnHandle {
            tx,
            kill: Arc::new(Notify::new()),
            closing: Arc::new(Notify::new()),
            queued_bytes: Arc::default(),
            held_bytes: Arc::default(),
            max_queued_bytes,
            pause_queued_bytes,
            outstanding: Arc::new(Semaphore::new(max_outstanding)),
            max_outstanding,
        }
    }

    /// Enough replies wait (for the socket, or for durability) that no more should be
    /// produced for now.
    fn replies_backed_up(&self) -> bool {
        self.queued_bytes.load(Ordering::Acquire) + self.held_bytes.load(Ordering::Acquire)
            >= self.pause_queued_bytes
    }

    /// Requests received on this connection and not yet answered.
    fn outstanding_requests(&self) -> usize {
        self.max_outstanding
            .saturating_sub(self.outstanding.available_permits())
    }

    /// Queues a frame, or says the client has fallen too far behind.
    fn offer(&self, frame: Bytes) -> Result<(), &'static str> {
        let len = frame.len();
        let queued = self.queued_bytes.fetch_add(len, Ordering::AcqRel) + len;
        if queued + self.held_bytes.load(Ordering::Acquire) > self.max_queued_bytes {
            return Err("too many reply bytes queued");
        }
        match self.tx.try_send(Outbound::Frame(frame)) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(_)) => Err("too many replies queued"),
            // The connection task is gone; its Closed event is on the way.
            Err(mpsc::error::TrySendError::Closed(_)) => Ok(()),
        }
    }

    /// Counts a reply held for durability against the byte limit, or says the client has
    /// fallen too far behind.
    fn hold(&self, len: usize) -> Result<HeldBytes, &'static str> {
        let held = self.held_bytes.fetch_add(len, Ordering::AcqRel) + len;
        let reservation = HeldBytes {
            counter: self.held_bytes.clone(),
            len,
        };
        if held + self.queued_bytes.load(Ordering::Acquire) > self.max_queued_bytes {
            return Err("too many reply bytes waiting");
        }
        Ok(reservation)
    }

    /// Closes the connection after what is queued (the writer gets a grace period for it).
    fn close(&self) {
        self.closing.notify_one();
        if self.tx.try_send(Outbound::Close).is_err() {
            self.kill.notify_one();
        }
    }
}

/// Milliseconds since the UNIX epoch (wall time: logs, 4lw output, znode times).
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The time as the core takes it: a monotonic clock for liveness (counted from the first call
/// in this process) and the wall clock for znode times. See [`Now`].
pub fn core_now() -> Now {
    static ORIGIN: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    let origin = *ORIGIN.get_or_init(Instant::now);
    Now {
        mono_ms: i64::try_from(origin.elapsed().as_millis()).unwrap_or(i64::MAX),
        wall_ms: now_ms(),
    }
}

/// Name of the file in the data directory holding the secret session passwords derive from.
const SESSION_SECRET_FILE: &str = "session-secret";

/// Where an ensemble member keeps its Raft log, inside dataLogDir.
pub(crate) const RAFT_SUBDIR: &str = "raft";
/// Where an ensemble member keeps its Raft snapshots, inside dataDir.
pub(crate) const RAFT_SNAPSHOT_SUBDIR: &str = "raft-snapshots";

/// The session secret a standalone server kept in `data_dir`, if it has one (read only).
pub(crate) fn read_session_secret(
    data_dir: &std::path::Path,
) -> Result<Option<[u8; 16]>, ServerError> {
    let path = data_dir.join(SESSION_SECRET_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => {
            bytes
                .as_slice()
                .try_into()
                .map(Some)
                .map_err(|_| ServerError::SessionSecret {
                    path,
                    source: std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!("expected 16 bytes, found {}", bytes.len()),
                    ),
                })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(ServerError::SessionSecret { path, source }),
    }
}

/// Session passwords must stay valid across restarts (clients reconnect with them), so the
/// secret is generated once and kept next to the snapshots. Written to a temp file, synced
/// and renamed, so a crash never leaves a half-written secret.
fn load_or_create_session_secret(data_dir: &std::path::Path) -> Result<[u8; 16], ServerError> {
    let path = data_dir.join(SESSION_SECRET_FILE);
    let err = |source| ServerError::SessionSecret {
        path: path.clone(),
        source,
    };
    match std::fs::read(&path) {
        Ok(bytes) => {
            return bytes.as_slice().try_into().map_err(|_| {
                err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("expected 16 bytes, found {}", bytes.len()),
                ))
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(e)),
    }
    let secret: [u8; 16] = rand::random();
    corral_storage::replace_file_durably(data_dir, SESSION_SECRET_FILE, &secret)
        .map_err(|e| err(std::io::Error::other(e.to_string())))?;
    Ok(secret)
}

/// Per-connection bookkeeping for `cons`/`stat` and latency measurement.
struct ConnState {
    handle: ConnHandle,
    peer: SocketAddr,
    established_ms: i64,
    /// The core asked for this connection to close: further frames from it are dropped.
    closing: bool,
    /// The next frame sent is the ConnectResponse (it has no reply header).
    awaiting_connect_reply: bool,
    /// Requests that arrived while the connection's replies were backed up, with their
    /// arrival times; taken in when the writer reports it has drained (`Inbound::Drained`).
    deferred: VecDeque<(Bytes, FramePermit, i64)>,
    /// Requests not yet answered, oldest first.
    in_flight_ms: VecDeque<InFlight>,
    received: u64,
    sent: u64,
    last_op: &'static str,
    last_cxid: i64,
    last_zxid: Zxid,
    last_response_ms: i64,
    last_latency_ms: u64,
    latency: LatencyStats,
}

impl ConnState {
    /// A connection just accepted: its first reply will be the ConnectResponse.
    fn new(handle: ConnHandle, peer: SocketAddr, established_ms: i64) -> ConnState {
        ConnState {
            handle,
            peer,
            established_ms,
            closing: false,
            awaiting_connect_reply: true,
            deferred: VecDeque::new(),
            in_flight_ms: VecDeque::new(),
            received: 0,
            sent: 0,
            last_op: "NA",
            last_cxid: -1,
            last_zxid: -1,
            last_response_ms: 0,
            last_latency_ms: 0,
            latency: LatencyStats::default(),
        }
    }

    fn reset_stats(&mut self) {
        self.received = 0;
        self.sent = 0;
        self.last_op = "NA";
        self.last_cxid = -1;
        self.last_zxid = -1;
        self.last_response_ms = 0;
        self.last_latency_ms = 0;
        self.latency.reset();
    }
}

/// A request waiting for its reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct InFlight {
    arrived_ms: i64,
    kind: RequestKind,
}

/// Which latency summary a request's reply time goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RequestKind {
    /// Changes nothing: ZooKeeper's `readlatency` (pings and sync included, as there).
    Read,
    /// Becomes a txn: `updatelatency`.
    Update,
    /// A reconnect to an existing session: in neither (ZooKeeper does not time it either).
    Untimed,
}

impl RequestKind {
    /// Classifies a request frame by its opcode, as ZooKeeper does by whether the request
    /// carries a txn header. `first` marks the ConnectRequest: a new session (id 0 at byte
    /// 16) is a createSession txn.
    fn of(body: &[u8], first: bool) -> RequestKind {
        if first {
            return match be_i64(body, 16) {
                Some(0) => RequestKind::Update,
                _ => RequestKind::Untimed,
            };
        }
        let Some(op) = be_i32(body, 4).and_then(|op| OpCode::try_from(op).ok()) else {
            return RequestKind::Read;
        };
        use OpCode::*;
        match op {
            Create | Create2 | CreateContainer | CreateTtl | Delete | DeleteContainer | SetData
            | SetAcl | Multi | Reconfig | CloseSession => RequestKind::Update,
            _ => RequestKind::Read,
        }
    }
}

/// Reply latencies split by [`RequestKind`], in ms since start (never reset: Prometheus
/// summaries only grow).
#[derive(Debug, Default)]
struct KindLatency {
    read: SummaryStats,
    update: SummaryStats,
}

/// ZooKeeper's four-character names of operations, shown as `lop=` by `cons`.
fn short_op_name(op: i32) -> &'static str {
    let Ok(op) = OpCode::try_from(op) else {
        return "NA";
    };
    use OpCode::*;
    match op {
        Ping => "PING",
        Multi => "MULT",
        MultiRead => "MLTR",
        Create | Create2 | CreateContainer | CreateTtl => "CREA",
        Delete | DeleteContainer => "DELE",
        SetData => "SETD",
        Reconfig => "RECO",
        SetAcl => "SETA",
        CloseSession => "CLOS",
        Sync => "SYNC",
        Check => "CHEC",
        Exists => "EXIS",
        GetData => "GETD",
        SetWatches => "SETW",
        SetWatches2 => "STW2",
        AddWatch => "ADDW",
        GetAcl => "GETA",
        GetChildren | GetChildren2 => "GETC",
        GetAllChildrenNumber => "GETACN",
        CheckWatches => "CHKW",
        RemoveWatches => "REMW",
        WhoAmI => "HOMI",
        GetEphemerals => "GETE",
        _ => "NA",
    }
}

fn be_i32(b: &[u8], at: usize) -> Option<i32> {
    Some(i32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn be_i64(b: &[u8], at: usize) -> Option<i64> {
    Some(i64::from_be_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// Durability reports from the log thread.
type DurableReport = Result<Zxid, StorageError>;

/// The running txn log and the channel its thread reports on.
struct Log {
    log: GroupCommitLog,
    durable_rx: mpsc::UnboundedReceiver<DurableReport>,
}

impl Log {
    /// Starts the group-commit thread on `writer`. `durable` mirrors the highest durable
    /// zxid for the snapshot thread.
    fn start(
        mut writer: corral_storage::LogWriter,
        config: &ServerConfig,
        durable: Arc<AtomicI64>,
        timings: &Arc<Timings>,
    ) -> Result<Log, ServerError> {
        writer.set_sync_observer(timings.sync_observer());
        let (durable_tx, durable_rx) = mpsc::unbounded_channel();
        let options = LogOptions {
            force_sync: config.force_sync,
            ..LogOptions::default()
        };
        // The callback runs on the log thread; an unbounded channel never blocks it (reports
        // are bounded by the number of submitted batches).
        let log = GroupCommitLog::start(
            writer,
            options,
            Box::new(move |report: DurableReport| {
                if let Ok(z) = report {
                    durable.fetch_max(z, Ordering::AcqRel);
                }
                let _ = durable_tx.send(report);
            }),
        )
        .map_err(ServerError::Recovery)?;
        Ok(Log { log, durable_rx })
    }
}

/// The next report of the running log; never completes while there is none.
async fn next_report(log: &mut Option<Log>) -> Option<DurableReport> {
    match log {
        Some(log) => log.durable_rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Where a driver's txns go: a local log (standalone) or the ensemble.
enum Backend {
    Standalone {
        log: Log,
        purger: Option<Purger>,
        durable_shared: Arc<AtomicI64>,
    },
    Ensemble(Box<Ensemble>),
}

pub(crate) struct Driver {
    core: Core,
    config: Arc<ServerConfig>,
    core_config: CoreConfig,
    /// The port actually bound (the configured one may be 0).
    client_port: u16,
    conns: HashMap<ConnId, ConnState>,
    /// Effects waiting for their txn to become durable, with the zxid they wait for.
    /// Effects waiting for their zxid to be durable; a reply carries its byte reservation
    /// against its connection's limit.
    held: VecDeque<(Zxid, Effect, Option<HeldBytes>)>,
    durable_zxid: Zxid,
    /// Same as `durable_zxid`, but updated by the log thread itself (the snapshot thread
    /// waits on it).
    durable_shared: Arc<AtomicI64>,
    /// `None` only while the state is being rebuilt after a log failure.
    log: Option<Log>,
    /// A submission to the log failed; handled by the run loop after the current event.
    log_failure: Option<StorageError>,
    snap_schedule: SnapSchedule,
    snapshot_job: Option<SnapshotJob>,
    _purger: Option<Purger>,
    latency: LatencyStats,
    kind_latency: KindLatency,
    /// Fsync and snapshot durations, recorded by the threads doing them.
    timings: Arc<Timings>,
    started_ms: i64,
    /// Set when this server is a member of an ensemble (`server.N` lines in zoo.cfg).
    ensemble: Option<Ensemble>,
    /// An error that stops the server, found while handling an event.
    fatal: Option<ServerError>,
    /// Turns for the file-system parts of answers ([`Answer::Later`]).
    file_jobs: Arc<Semaphore>,
}

impl Driver {
    /// An ensemble member: its state is rebuilt by applying the committed Raft log, which the
    /// consensus layer replays as soon as it runs.
    pub(crate) async fn start_ensemble(
        config: Arc<ServerConfig>,
        client_port: u16,
    ) -> Result<Driver, ServerError> {
        let started_ms = now_ms();
        let ensemble_config = config
            .ensemble
            .clone()
            .expect("start_ensemble is called for ensemble configs");
        std::fs::create_dir_all(&config.data_dir).map_err(|source| ServerError::SessionSecret {
            path: config.data_dir.clone(),
            source,
        })?;
        let core_config = CoreConfig {
            server_id: ensemble_config.my_id as u8,
            reconfig_enabled: ensemble_config.reconfig_enabled,
            ..config.core_config()
        };
        check_data_dir_kind(&config, true)?;
        let timings = Arc::new(Timings::default());
        let (mut ensemble, snapshot) =
            Ensemble::start(&config, &ensemble_config, timings.clone()).await?;
        let mut core = ensemble.initial_core(core_config.clone(), snapshot, core_now())?;
        core.set_config_text_if_empty(&ensemble_config.zk_config_text());
        tracing::info!(
            my_id = ensemble_config.my_id,
            members = ensemble_config.members.len(),
            data_dir = %config.data_dir.display(),
            "joining the ensemble"
        );
        Ok(Driver::assemble(
            core,
            config,
            core_config,
            client_port,
            started_ms,
            timings,
            Backend::Ensemble(Box::new(ensemble)),
        ))
    }

    /// A driver around a loaded core; everything but the core and its backend starts empty.
    fn assemble(
        core: Core,
        config: Arc<ServerConfig>,
        core_config: CoreConfig,
        client_port: u16,
        started_ms: i64,
        timings: Arc<Timings>,
        backend: Backend,
    ) -> Driver {
        let (log, purger, durable_shared, ensemble) = match backend {
            Backend::Standalone {
                log,
                purger,
                durable_shared,
            } => (Some(log), purger, durable_shared, None),
            Backend::Ensemble(e) => (None, None, Arc::new(AtomicI64::new(0)), Some(*e)),
        };
        Driver {
            durable_zxid: core.last_zxid(),
            core,
            snap_schedule: SnapSchedule::new(config.snap_count),
            config,
            core_config,
            client_port,
            conns: HashMap::new(),
            held: VecDeque::new(),
            durable_shared,
            log,
            log_failure: None,
            snapshot_job: None,
            _purger: purger,
            latency: LatencyStats::default(),
            kind_latency: KindLatency::default(),
            timings,
            started_ms,
            ensemble,
            fatal: None,
            file_jobs: Arc::new(Semaphore::new(FILE_JOBS_AT_ONCE)),
        }
    }

    /// Rebuilds the state from disk (snapshot + log replay) and opens the txn log for
    /// appending.
    pub(crate) fn recover(
        config: Arc<ServerConfig>,
        client_port: u16,
    ) -> Result<Driver, ServerError> {
        let started_ms = now_ms();
        if !config.force_sync {
            tracing::warn!(
                "forceSync=no: txns are acknowledged before they reach the disk; a machine \
                 crash or power loss can lose acknowledged writes"
            );
        }
        let core_config = CoreConfig {
            session_secret: load_or_create_session_secret(&config.data_dir)?,
            ..config.core_config()
        };
        check_data_dir_kind(&config, false)?;
        let loaded = persist::load(&config, core_config.clone(), core_now())?;
        let core = loaded.core;
        tracing::info!(
            snapshot = ?loaded.snapshot.as_ref().map(|p| p.display().to_string()),
            txns = loaded.replayed,
            last_zxid = format_args!("{:#x}", core.last_zxid()),
            snapshot_ms = loaded.snapshot_ms,
            replay_ms = loaded.replay_ms,
            elapsed_ms = now_ms() - started_ms,
            data_dir = %config.data_dir.display(),
            "recovered"
        );
        let durable_shared = Arc::new(AtomicI64::new(core.last_zxid()));
        let timings = Arc::new(Timings::default());
        let log = Log::start(loaded.writer, &config, durable_shared.clone(), &timings)?;
        let purger = Purger::start(&config)?;
        Ok(Driver::assemble(
            core,
            config,
            core_config,
            client_port,
            started_ms,
            timings,
            Backend::Standalone {
                log,
                purger,
                durable_shared,
            },
        ))
    }

    /// Serves until `shutdown` turns true (then drains and returns `Ok`), or until the state
    /// cannot be rebuilt after a log failure.
    pub(crate) async fn run(
        mut self,
        mut inbound: mpsc::Receiver<Inbound>,
        mut shutdown: watch::Receiver<bool>,
    ) -> Result<(), ServerError> {
        let tick_every = Duration::from_millis((self.config.tick_time_ms as u64 / 2).max(1));
        let mut ticker = tokio::time::interval(tick_every);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let result = loop {
            tokio::select! {
                // Durability first: it releases held replies and frees queue space.
                biased;
                Some(report) = next_report(&mut self.log) => self.on_durable(report),
                ev = ensemble::next_event(&mut self.ensemble) => self.on_ensemble(ev),
                _ = shutdown.changed() => break Ok(()),
                event = inbound.recv() => match event {
                    Some(event) => self.on_inbound(event),
                    None => break Ok(()),
                },
                _ = ticker.tick() => {
                    if self.ensemble.is_some() && self.core.role() == Role::Follower {
                        self.report_touches();
                    }
                    if self.ensemble.as_ref().is_some_and(|e| e.status.quorum_lost) {
                        // A leader no quorum answers serves nobody, so no client can keep
                        // its session alive meanwhile: that time does not count towards
                        // expiry (as a new leader gives every session a full timeout).
                        self.core.restart_session_clocks(core_now());
                    } else if !self.ensemble.as_ref().is_some_and(|e| e.parking()) {
                        // A leader waiting for a snapshot view prepares nothing new meanwhile.
                        let step = self.core.tick(core_now());
                        self.apply(step);
                    }
                }
            }
            if let Some(fatal) = self.fatal.take() {
                break Err(fatal);
            }
            if let Some(e) = self.log_failure.take() {
                if let Err(fatal) = self.rebuild_after_log_failure(e) {
                    break Err(fatal);
                }
            }
        };
        // No more requests; connection tasks blocked on sending to us give up.
        drop(inbound);
        match result {
            Ok(()) => self.drain().await,
            Err(e) => {
                tracing::error!(error = %e, "stopping on a fatal error");
                self.conns.clear();
                if let Some(job) = self.snapshot_job.take() {
                    job.abort();
                }
                Err(e)
            }
        }
    }

    /// Clean shutdown: wait until every submitted txn is durable, send the replies that were
    /// waiting for it, close the connections, close the log, let a snapshot in progress end.
    async fn drain(mut self) -> Result<(), ServerError> {
        if let Some(e) = self.ensemble.take() {
            // Replies still held wait for commits that may never come: clients see the
            // connection close, as with any member going away.
            self.held.clear();
            for conn in self.conns.values() {
                let _ = conn.handle.tx.try_send(Outbound::Close);
            }
            self.conns.clear();
            e.consensus.shutdown().await;
            tracing::info!("left the ensemble");
            return Ok(());
        }
        while self.durable_zxid < self.core.last_zxid() && self.log_failure.is_none() {
            match next_report(&mut self.log).await {
                Some(report) => self.on_durable(report),
                None => break,
            }
        }
        if let Some(e) = self.log_failure.take() {
            tracing::error!(error = %e, dropped = self.held.len(), "txn log failed during shutdown; writes not yet durable are not answered");
            self.held.clear();
        }
        for conn in self.conns.values() {
            let _ = conn.handle.tx.try_send(Outbound::Close);
        }
        self.conns.clear();
        let Driver {
            log,
            snapshot_job,
            durable_shared,
            _purger,
            ..
        } = self;
        // Joining threads blocks; keep it off the async workers.
        let _ = tokio::task::spawn_blocking(move || {
            if let Some(log) = log {
                log.log.shutdown();
            }
            if let Some(job) = snapshot_job {
                // A snapshot whose zxid the log never made durable must not be published.
                if durable_shared.load(Ordering::Acquire) >= job.zxid() {
                    job.join();
                } else {
                    job.abort();
                }
            }
            drop(_purger);
        })
        .await;
        tracing::info!("txn log flushed and closed");
        Ok(())
    }

    fn on_durable(&mut self, report: DurableReport) {
        let zxid = match report {
            Ok(z) => z,
            Err(e) => {
                // Keep the first error; later ones are consequences of it.
                self.log_failure.get_or_insert(e);
                return;
            }
        };
        self.durable_zxid = self.durable_zxid.max(zxid);
        self.release_durable();
    }

    /// Dispatches held effects, oldest first, up to the durable zxid.
    fn release_durable(&mut self) {
        let mut released: Vec<ConnId> = Vec::new();
        while let Some((tag, _, _)) = self.held.front() {
            if *tag > self.durable_zxid {
                break;
            }
            // The reservation ends here: `dispatch` counts the frame as queued instead.
            let (_, effect, reservation) = self.held.pop_front().expect("front exists");
            if let (Some(_), Effect::Send { conn, .. }) = (&reservation, &effect) {
                if released.last() != Some(conn) {
                    released.push(*conn);
                }
            }
            drop(reservation);
            self.dispatch(effect);
        }
        // Held bytes moved to the socket queues: a connection whose requests were set aside
        // because of them may go on (its writer reports only when its own queue drains).
        released.sort_unstable();
        released.dedup();
        for conn in released {
            if self
                .conns
                .get(&conn)
                .is_some_and(|state| !state.deferred.is_empty())
            {
                self.resume_deferred(conn);
            }
        }
    }

    /// The log could not make some txns durable (disk full, I/O error, writer gone). The core
    /// applied them already, so it is rebuilt from what is on disk.
    ///
    /// Connections: one whose held replies or events are dropped must not carry on as if
    /// nothing happened, so it is closed; its client sees a connection loss, reconnects to its
    /// session (sessions are durable) and re-registers its watches. Every other connection is
    /// handed to the rebuilt core with its session, identities and watches
    /// (`Core::export_connections` / `import_connections`) and keeps going: readers are not
    /// disturbed by a full disk.
    fn rebuild_after_log_failure(&mut self, error: StorageError) -> Result<(), ServerError> {
        let started = Instant::now();
        tracing::error!(
            error = %error,
            durable_zxid = format_args!("{:#x}", self.durable_zxid),
            applied_zxid = format_args!("{:#x}", self.core.last_zxid()),
            "txn log write failed; failing the writes that are not durable and reloading the state from disk"
        );
        // Stop the log thread: what it still holds is rejected (out of sequence after the
        // failed batch), and its reports say exactly how far the log is durable.
        let Log {
            log,
            mut durable_rx,
        } = self
            .log
            .take()
            .expect("the log runs while the driver serves");
        log.shutdown();
        while let Ok(report) = durable_rx.try_recv() {
            if let Ok(z) = report {
                self.durable_zxid = self.durable_zxid.max(z);
            }
        }
        self.release_durable();
        let lost = self.held.len();
        // A connection with a reply or event still held lost something: it is closed (its
        // client sees ConnectionLoss and resumes its session). The others keep going.
        let affected: std::collections::HashSet<ConnId> = self
            .held
            .drain(..)
            .map(|(_, effect, _)| match effect {
                Effect::Send { conn, .. } | Effect::Close { conn, .. } => conn,
                Effect::Forward(f) => f.conn,
                Effect::Reconfig(c) => c.conn,
            })
            .collect();
        let keep: Vec<ConnId> = self
            .conns
            .keys()
            .copied()
            .filter(|c| !affected.contains(c))
            .collect();
        let transfer = self.core.export_connections(&keep);
        if let Some(job) = self.snapshot_job.take() {
            // Its image may hold the failed txns; it is published only if durable, so an
            // abort is always safe. Recovery below also removes its temp file.
            if self.durable_shared.load(Ordering::Acquire) >= job.zxid() {
                job.join();
            } else {
                job.abort();
            }
        }
        let now = core_now();
        let loaded = persist::load(&self.config, self.core_config.clone(), now)?;
        if loaded.core.last_zxid() != self.durable_zxid {
            tracing::warn!(
                reloaded = format_args!("{:#x}", loaded.core.last_zxid()),
                durable = format_args!("{:#x}", self.durable_zxid),
                "reloaded state ends at a different zxid than the log reported durable"
            );
        }
        self.core = loaded.core;
        let mut refused = self.core.import_connections(transfer, now);
        refused.extend(affected);
        let mut closed = 0;
        for conn in refused {
            if let Some(state) = self.conns.remove(&conn) {
                closed += 1;
                if state.handle.tx.try_send(Outbound::Close).is_err() {
                    state.handle.kill.notify_one();
                }
            }
        }
        self.durable_zxid = self.core.last_zxid();
        self.durable_shared
            .store(self.durable_zxid, Ordering::Release);
        self.log = Some(Log::start(
            loaded.writer,
            &self.config,
            self.durable_shared.clone(),
            &self.timings,
        )?);
        self.snap_schedule.reset();
        tracing::warn!(
            lost_effects = lost,
            closed_connections = closed,
            last_zxid = format_args!("{:#x}", self.durable_zxid),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "state reloaded from disk after the txn log failure; serving again"
        );
        Ok(())
    }

    fn log(&self) -> &GroupCommitLog {
        &self
            .log
            .as_ref()
            .expect("the log runs while the driver serves")
            .log
    }

    /// Takes a snapshot if one is due and none is being written.
    fn maybe_snapshot(&mut self) {
        if let Some(job) = &self.snapshot_job {
            if !job.is_finished() {
                // Tried again after the next txn: a snapshot is delayed, never skipped, so
                // the log after the last one stays bounded by about snapCount.
                tracing::debug!("previous snapshot still being written; delaying this one");
                return;
            }
            // The thread has ended: this join only collects its result.
            self.snapshot_job.take().expect("checked").join();
        }
        self.snap_schedule.reset();
        let started = Instant::now();
        // Exact: no txn is applied while the driver is here. Only the node map's pointers are
        // copied here; encoding happens on the snapshot thread.
        let view = self.core.snapshot_view();
        let zxid = view.zxid();
        let took_ms = started.elapsed().as_millis() as u64;
        // Txns after the snapshot start a new segment, so older ones can be purged later.
        if let Err(e) = self.log().roll() {
            self.log_failure.get_or_insert(e);
            return;
        }
        tracing::info!(
            zxid = format_args!("{:#x}", zxid),
            blocked_ms = took_ms,
            "taking snapshot"
        );
        match SnapshotJob::start(
            &self.config.data_dir,
            view,
            self.durable_shared.clone(),
            self.timings.clone(),
        ) {
            Ok(job) => self.snapshot_job = Some(job),
            Err(e) => tracing::error!(error = %e, "cannot write a snapshot"),
        }
    }

    pub(super) fn on_inbound(&mut self, event: Inbound) {
        if let Some(e) = self.ensemble.as_mut().filter(|e| e.parking()) {
            if !matches!(event, Inbound::FourLetter { .. }) {
                e.park(ensemble::Parked::Inbound(event));
                return;
            }
        }
        let clock = core_now();
        let now = clock.wall_ms;
        match event {
            Inbound::Opened { conn, peer, handle } => {
                if self.ensemble.as_ref().is_some_and(|e| !e.serving()) {
                    // No leader: clients are better served by another member.
                    tracing::debug!(conn, %peer, "refusing a client: this member has no leader");
                    if handle.tx.try_send(Outbound::Close).is_err() {
                        handle.kill.notify_one();
                    }
                    return;
                }
                self.core.connection_opened(conn, peer, clock);
                self.conns.insert(conn, ConnState::new(handle, peer, now));
            }
            Inbound::Frame { conn, body, permit } => {
                let Some(state) = self.conns.get_mut(&conn) else {
                    return;
                };
                if state.closing {
                    return;
                }
                // A client with a full reply queue gets no more replies produced for it until
                // it reads: its requests wait here (bounded by the permits they carry), in
                // order, and its reader has stopped reading its socket.
                if !state.deferred.is_empty() || state.handle.replies_backed_up() {
                    state.deferred.push_back((body, permit, now));
                    return;
                }
                self.receive_frame(conn, body, permit, now, clock);
            }
            Inbound::Drained { conn } => self.resume_deferred(conn),
            Inbound::Closed { conn } => {
                if let Some(state) = self.conns.remove(&conn) {
                    let session = crate::core::session_label(self.core.session_of(conn));
                    tracing::debug!(conn, %session, peer = %state.peer, "connection closed");
                    let step = self.core.connection_closed(conn, clock);
                    self.apply(step);
                }
            }
            Inbound::FourLetter { word, peer, reply } => {
                let answer = self.four_letter(word, peer, now);
                self.deliver(answer, reply);
            }
            Inbound::Admin { query, reply } => {
                let answer = self.answer_admin(query, now);
                self.deliver(answer, reply);
            }
        }
    }

    /// Feeds one request to the core (`arrived_ms`: when the connection forwarded it).
    fn receive_frame(
        &mut self,
        conn: ConnId,
        body: Bytes,
        permit: FramePermit,
        arrived_ms: i64,
        now: Now,
    ) {
        let Some(state) = self.conns.get_mut(&conn) else {
            return;
        };
        state.received += 1;
        let first = state.awaiting_connect_reply && state.received == 1;
        state.in_flight_ms.push_back(InFlight {
            arrived_ms,
            kind: RequestKind::of(&body, first),
        });
        // The slot stays taken until `account_reply` pairs a reply with this request; the
        // byte permit is freed when this function returns.
        permit.request.forget();
        if first {
            state.last_op = "SESS";
        } else if let (Some(xid), Some(op)) = (be_i32(&body, 0), be_i32(&body, 4)) {
            if xid >= 0 {
                state.last_cxid = i64::from(xid);
            }
            state.last_op = short_op_name(op);
        }
        let step = self.core.receive(conn, &body, now);
        self.apply(step);
    }

    /// The connection's writer got below the pause mark: its deferred requests are taken in,
    /// oldest first, until its replies back up again.
    fn resume_deferred(&mut self, conn: ConnId) {
        loop {
            let Some(state) = self.conns.get_mut(&conn) else {
                return;
            };
            if state.closing {
                state.deferred.clear();
                return;
            }
            if state.handle.replies_backed_up() {
                return;
            }
            let Some((body, permit, arrived_ms)) = state.deferred.pop_front() else {
                return;
            };
            self.receive_frame(conn, body, permit, arrived_ms, core_now());
        }
    }

    /// Submits a step's txns and queues its effects behind them.
    fn apply(&mut self, step: Step) {
        self.apply_with_origin(step, None)
    }

    /// As `apply`; in an ensemble the txns are proposed, tagged with the member and
    /// connection that wait for them when they came from another member.
    fn apply_with_origin(&mut self, mut step: Step, origin: Option<Origin>) {
        if self.ensemble.is_some() {
            let txns = std::mem::take(&mut step.txns);
            self.propose_txns(txns, origin);
            // Reconfig calls are work for the consensus layer, not output to hold.
            let (calls, effects): (Vec<Effect>, Vec<Effect>) = std::mem::take(&mut step.effects)
                .into_iter()
                .partition(|e| matches!(e, Effect::Reconfig(_)));
            step.effects = effects;
            for call in calls {
                if let Effect::Reconfig(call) = call {
                    self.start_reconfig(call, origin);
                }
            }
            self.hold_or_dispatch(step);
            return;
        }
        let logged = step.txns.len();
        for txn in step.txns {
            if self.log_failure.is_some() {
                // The core is about to be rebuilt; this txn's effects are dropped with it.
                break;
            }
            // `submit` blocks only when the log's (large) queue is full, which is the
            // backpressure we want: the disk is the bottleneck.
            if let Err(e) = self.log().submit(txn.zxid, txn.record) {
                tracing::error!(zxid = format_args!("{:#x}", txn.zxid), error = %e, "txn not submitted");
                self.log_failure.get_or_insert(e);
            }
        }
        self.hold_or_dispatch(Step {
            effects: step.effects,
            txns: Vec::new(),
        });
        if logged > 0 && self.log_failure.is_none() && self.snap_schedule.count(logged) {
            self.maybe_snapshot();
        }
    }

    /// Dispatches effects at once when nothing they could reveal is pending, else holds them
    /// behind the txns they follow.
    fn hold_or_dispatch(&mut self, step: Step) {
        let tag = self.core.last_zxid();
        for effect in step.effects {
            if let Effect::Close { conn, .. } = &effect {
                if let Some(state) = self.conns.get_mut(conn) {
                    state.closing = true;
                }
            }
            if self.held.is_empty() && tag <= self.durable_zxid {
                self.dispatch(effect);
                continue;
            }
            let mut reservation = None;
            if let Effect::Send { conn, frame } = &effect {
                if let Some(state) = self.conns.get_mut(conn) {
                    match state.handle.hold(frame.len()) {
                        Ok(r) => reservation = Some(r),
                        Err(why) => {
                            if !state.closing {
                                tracing::warn!(
                                    conn,
                                    session = %crate::core::session_label(self.core.session_of(*conn)),
                                    peer = %state.peer,
                                    why,
                                    limit_bytes = state.handle.max_queued_bytes,
                                    "client is not reading its replies; closing the connection"
                                );
                            }
                            state.closing = true;
                            state.handle.kill.notify_one();
                            continue;
                        }
                    }
                }
            }
            self.held.push_back((tag, effect, reservation));
        }
    }

    /// Hands one released effect to its connection's writer.
    fn dispatch(&mut self, effect: Effect) {
        let now = now_ms();
        match effect {
            Effect::Send { conn, frame } => {
                let Some(state) = self.conns.get_mut(&conn) else {
                    return;
                };
                Self::account_reply(
                    state,
                    &frame,
                    now,
                    &mut self.latency,
                    &mut self.kind_latency,
                );
                if let Err(why) = state.handle.offer(frame) {
                    if !state.closing {
                        tracing::warn!(
                            conn,
                            session = %crate::core::session_label(self.core.session_of(conn)),
                            peer = %state.peer,
                            why,
                            limit_bytes = state.handle.max_queued_bytes,
                            "client is not reading its replies; closing the connection"
                        );
                    }
                    state.closing = true;
                    state.handle.kill.notify_one();
                }
            }
            Effect::Forward(fwd) => self.send_forward(fwd),
            // Only an ensemble's leader makes these, and `apply_with_origin` takes them out.
            Effect::Reconfig(call) => {
                tracing::warn!(conn = call.conn, "reconfig outside an ensemble; ignored")
            }
            Effect::Close { conn, reason } => {
                let Some(state) = self.conns.get_mut(&conn) else {
                    return;
                };
                let session = crate::core::session_label(self.core.session_of(conn));
                tracing::debug!(conn, %session, peer = %state.peer, reason, "closing connection");
                state.closing = true;
                state.handle.close();
            }
        }
    }

    /// Updates counters for a frame about to be sent: replies (anything but a watch
    /// notification) complete the oldest request in flight.
    fn account_reply(
        state: &mut ConnState,
        frame: &Bytes,
        now: i64,
        server: &mut LatencyStats,
        by_kind: &mut KindLatency,
    ) {
        state.sent += 1;
        let is_reply = if state.awaiting_connect_reply {
            state.awaiting_connect_reply = false;
            true
        } else {
            match be_i32(frame, 4) {
                Some(xid) if xid == corral_proto::xid::NOTIFICATION => false,
                Some(_) => {
                    if let Some(zxid) = be_i64(frame, 8) {
                        state.last_zxid = zxid;
                    }
                    true
                }
                None => false,
            }
        };
        if is_reply {
            if let Some(request) = state.in_flight_ms.pop_front() {
                // Answered: the reader may take in another request.
                state.handle.outstanding.add_permits(1);
                let latency = (now - request.arrived_ms).max(0) as u64;
                state.last_latency_ms = latency;
                state.last_response_ms = now;
                state.latency.record(latency);
                server.record(latency);
                match request.kind {
                    RequestKind::Read => by_kind.read.record_ms(latency as f64),
                    RequestKind::Update => by_kind.update.record_ms(latency as f64),
                    RequestKind::Untimed => {}
                }
            }
        }
    }

    fn conn_lines(&self) -> Vec<ConnLine> {
        let sessions: HashMap<SessionId, i32> = self
            .core
            .sessions()
            .into_iter()
            .map(|s| (s.session_id, s.timeout_ms))
            .collect();
        let mut ids: Vec<&ConnId> = self.conns.keys().collect();
        ids.sort();
        ids.into_iter()
            .map(|id| {
                let c = &self.conns[id];
                let session = self.core.session_of(*id).map(|sid| ConnSessionLine {
                    session_id: sid,
                    last_op: c.last_op,
                    established_ms: c.established_ms,
                    timeout_ms: sessions.get(&sid).copied().unwrap_or(0),
                    last_cxid: c.last_cxid,
                    last_zxid: c.last_zxid,
                    last_response_ms: c.last_response_ms,
                    last_latency_ms: c.last_latency_ms,
                    latency: c.latency,
                });
                ConnLine {
                    peer: c.peer,
                    interest_ops: 1,
                    queued: c.in_flight_ms.len() as u64,
                    received: c.received,
                    sent: c.sent,
                    session,
                }
            })
            .collect()
    }

    /// Requests received on any connection and not yet answered (`Outstanding:` in `srvr`).
    fn outstanding_requests(&self) -> u64 {
        self.conns
            .values()
            .map(|c| c.handle.outstanding_requests() as u64)
            .sum()
    }

    fn summary(&self) -> flw::ServerSummary {
        let mut stats = self.core.stats();
        // The core sees requests one at a time; what waits is the network layer's to count.
        stats.outstanding_requests = self.outstanding_requests();
        flw::ServerSummary {
            version: flw::full_version(),
            stats,
            latency: self.latency,
            // ZooKeeper counts the connection asking, too.
            connections: self.conns.len() + 1,
            mode: self.ensemble.as_ref().map_or("standalone", |e| e.mode()),
            proposal_sizes: self
                .ensemble
                .as_ref()
                .filter(|e| e.mode() == "leader")
                .map(|e| e.proposal_sizes),
        }
    }

    /// Sends `answer` to `reply`: at once, or once its file-system part has run on a blocking
    /// thread (in turn with other such parts). The asker may have gone meanwhile.
    fn deliver<T: Send + 'static>(&self, answer: Answer<T>, reply: oneshot::Sender<T>) {
        let job = match answer {
            Answer::Now(value) => {
                let _ = reply.send(value);
                return;
            }
            Answer::Later(job) => job,
        };
        let turns = self.file_jobs.clone();
        tokio::spawn(async move {
            let Ok(_turn) = turns.acquire_owned().await else {
                return;
            };
            match tokio::task::spawn_blocking(job).await {
                Ok(value) => {
                    let _ = reply.send(value);
                }
                // The asker sees its connection or request end without an answer.
                Err(e) => tracing::error!(error = %e, "a four-letter or admin answer failed"),
            }
        });
    }

    /// A job that measures the data and log directories (to run off the driver).
    fn dir_sizes_later(&self) -> impl FnOnce() -> flw::DirSizes + Send + 'static {
        let config = self.config.clone();
        move || flw::DirSizes::measure(&config.data_dir, config.data_log_dir())
    }

    /// Answers a (whitelisted) four-letter word; the words that read the file system
    /// (`conf`, `dirs`: directory sizes; `envi`, `mntr`: /proc) finish off the driver.
    fn four_letter(&mut self, word: &str, asker: SocketAddr, now: i64) -> Answer<String> {
        let asker_line = ConnLine {
            peer: asker,
            interest_ops: 0,
            queued: 0,
            received: 1,
            sent: 0,
            session: None,
        };
        let text = match word {
            "ruok" => "imok".into(),
            "isro" => match &self.ensemble {
                Some(e) if !e.serving() => "null".into(),
                Some(_) if self.core.role() == Role::ReadOnly => "ro".into(),
                _ => "rw".into(),
            },
            "srvr" => flw::srvr(&self.summary()),
            "stat" => {
                let mut lines = self.conn_lines();
                lines.push(asker_line);
                flw::stat(&self.summary(), &lines)
            }
            "cons" => {
                let mut lines = self.conn_lines();
                lines.push(asker_line);
                flw::cons(&lines)
            }
            "conf" => {
                let (config, port, sizes) = (
                    self.config.clone(),
                    self.client_port,
                    self.dir_sizes_later(),
                );
                return Answer::later(move || flw::conf(&config, port, sizes()));
            }
            "dirs" => {
                let sizes = self.dir_sizes_later();
                return Answer::later(move || flw::dirs(sizes()));
            }
            "envi" => return Answer::later(|| flw::envi(&flw::process_environment())),
            "mntr" => {
                // The driver's figures now; the descriptor count (a listing of /proc/self/fd,
                // as long as there are connections) off the driver.
                let summary = self.summary();
                let uptime_ms = now - self.started_ms;
                let mut timing = serde_json::Map::new();
                self.timing_fields(&mut timing);
                let mut extra_lines = String::new();
                for (key, value) in timing {
                    let value = match value.as_f64() {
                        Some(x) if value.is_f64() => flw::java_double(x),
                        _ => value.to_string(),
                    };
                    extra_lines.push_str(&format!("zk_{key}\t{value}\n"));
                }
                extra_lines.push_str(&self.ensemble_mntr_lines());
                return Answer::later(move || {
                    let (open_fds, max_fds) = flw::file_descriptors();
                    let mut out = flw::mntr(
                        &summary,
                        flw::ProcessFigures {
                            uptime_ms,
                            open_fds,
                            max_fds,
                        },
                    );
                    out.push_str(&extra_lines);
                    out
                });
            }
            "srst" => {
                self.core.reset_stats();
                self.latency.reset();
                "Server stats reset.\n".into()
            }
            "crst" => {
                for c in self.conns.values_mut() {
                    c.reset_stats();
                }
                "Connection stats reset.\n".into()
            }
            "wchs" => flw::wchs(
                &self.core.watches_by_connection(),
                self.core.stats().watched_paths,
            ),
            "wchc" => flw::wchc(&self.core.watches_by_connection()),
            "wchp" => flw::wchp(&self.core.watches_by_path()),
            "dump" => self.dump(asker, now),
            // gtmk/stmk (the trace mask) are answered by the connection task (net/conn.rs).
            _ => String::new(),
        };
        Answer::Now(text)
    }

    fn dump(&self, asker: SocketAddr, now: i64) -> String {
        let sessions: Vec<_> = self
            .core
            .sessions()
            .into_iter()
            .map(|s| {
                let expire_at = s.expires_at_ms;
                (s, expire_at)
            })
            .collect();
        let expiry: HashMap<SessionId, i64> =
            sessions.iter().map(|(s, at)| (s.session_id, *at)).collect();
        let mut conns: Vec<flw::DumpConn> =
            self.conns
                .iter()
                .map(|(id, c)| {
                    let session_id = self.core.session_of(*id).unwrap_or(0);
                    let expire_at_ms = expiry.get(&session_id).copied().unwrap_or(
                        c.established_ms + i64::from(self.config.max_session_timeout_ms()),
                    );
                    flw::DumpConn {
                        peer: c.peer,
                        session_id,
                        expire_at_ms,
                    }
                })
                .collect();
        conns.push(flw::DumpConn {
            peer: asker,
            session_id: 0,
            expire_at_ms: now + i64::from(self.config.max_session_timeout_ms()),
        });
        flw::dump(&sessions, &conns, i64::from(self.config.tick_time_ms))
    }
}

/// Refuses to start on a data directory the other kind of server wrote. An ensemble member
/// keeps its state in a Raft log (`<dataLogDir>/raft`) and never reads a standalone server's
/// txn log and snapshots; a standalone server never reads a Raft log. Either would start
/// empty and leave the data behind, which looks like data loss to every client.
fn check_data_dir_kind(config: &ServerConfig, as_member: bool) -> Result<(), ServerError> {
    let raft_dir = config.data_log_dir().join(RAFT_SUBDIR);
    let has_raft_log = std::fs::read_dir(&raft_dir).is_ok_and(|mut d| d.next().is_some());
    if as_member {
        if has_raft_log {
            return Ok(()); // a member restarting; standalone leftovers are not read
        }
        let snapshots = corral_storage::list_snapshots(&config.data_dir).unwrap_or_default();
        let logs = corral_storage::list_logs(config.data_log_dir()).unwrap_or_default();
        if snapshots.is_empty() && logs.is_empty() {
            return Ok(());
        }
        return Err(ServerError::DataDirKind(format!(
            "{} holds a standalone server's data ({} snapshot file(s), {} txn log file(s)), \
             which an ensemble member does not read: it would start empty and leave that data \
             behind. To make this server the first member of an ensemble serving that data, \
             stop it and run `corral datadir migrate --config <this zoo.cfg>` (with this server \
             as the only participant; add the others afterwards with reconfig -add). To keep \
             serving it standalone, start this server without server.N lines; to start a new, \
             empty ensemble member here, move those snapshot.* and log.* files away first",
            config.data_dir.display(),
            snapshots.len(),
            logs.len()
        )));
    }
    if has_raft_log {
        return Err(ServerError::DataDirKind(format!(
            "{} holds an ensemble member's Raft log, which a standalone server does not read: \
             it would start empty and leave that data behind. Start this server with the \
             ensemble's server.N lines (and its myid), or move the raft directory away to start \
             a new, empty standalone server",
            raft_dir.display()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Answers that read the file system wait for a turn off the driver: with no turns to
    /// give, `dirs` (as a word and as an admin command) and the metrics stay unanswered
    /// while the driver goes on answering; one turn at a time then lets them through.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn file_system_answers_do_not_hold_the_driver() {
        use crate::admin::{AdminAnswer, AdminQuery};
        const LIMIT: Duration = Duration::from_secs(60);
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("sub/deeper")).unwrap();
        std::fs::write(dir.path().join("sub/deeper/file"), [0u8; 1000]).unwrap();
        let config = Arc::new(ServerConfig {
            data_dir: dir.path().to_path_buf(),
            ..ServerConfig::default()
        });
        let mut driver = Driver::recover(config, 2181).expect("a driver on an empty dir");
        driver.file_jobs = Arc::new(Semaphore::new(0));
        let turns = driver.file_jobs.clone();
        let peer: SocketAddr = "127.0.0.1:9".parse().unwrap();

        let (dirs_tx, mut dirs_rx) = oneshot::channel();
        driver.on_inbound(Inbound::FourLetter {
            word: "dirs",
            peer,
            reply: dirs_tx,
        });
        let (admin_tx, mut admin_rx) = oneshot::channel();
        driver.on_inbound(Inbound::Admin {
            query: AdminQuery::Command("dirs"),
            reply: admin_tx,
        });
        let (metrics_tx, mut metrics_rx) = oneshot::channel();
        driver.on_inbound(Inbound::Admin {
            query: AdminQuery::Metrics,
            reply: metrics_tx,
        });
        // The driver is free: it answers what needs no disk, while the three wait.
        let (ruok_tx, ruok_rx) = oneshot::channel();
        driver.on_inbound(Inbound::FourLetter {
            word: "ruok",
            peer,
            reply: ruok_tx,
        });
        assert_eq!(ruok_rx.await.unwrap(), "imok");
        let (srvr_tx, srvr_rx) = oneshot::channel();
        driver.on_inbound(Inbound::FourLetter {
            word: "srvr",
            peer,
            reply: srvr_tx,
        });
        assert!(srvr_rx.await.unwrap().starts_with("Zookeeper version: "));
        assert!(dirs_rx.try_recv().is_err(), "answered without a turn");
        assert!(admin_rx.try_recv().is_err(), "answered without a turn");
        assert!(metrics_rx.try_recv().is_err(), "answered without a turn");

        // One turn: the jobs run one after the other, each finding the nested file.
        turns.add_permits(1);
        let text = tokio::time::timeout(LIMIT, dirs_rx)
            .await
            .expect("answered in time")
            .unwrap();
        let data_dir_bytes: u64 = text
            .strip_prefix("datadir_size: ")
            .and_then(|t| t.lines().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("unexpected dirs answer {text:?}"));
        assert!(data_dir_bytes >= 1000, "{text}");
        match tokio::time::timeout(LIMIT, admin_rx)
            .await
            .expect("answered in time")
        {
            Ok(AdminAnswer::Json(f)) => {
                assert_eq!(f["command"], "dirs");
                assert!(f["datadir_size"].as_u64().unwrap() >= 1000, "{f:?}");
            }
            other => panic!("unexpected admin answer {other:?}"),
        }
        match tokio::time::timeout(LIMIT, metrics_rx)
            .await
            .expect("answered in time")
        {
            Ok(AdminAnswer::Metrics(m)) => assert!(m.open_fds.is_some_and(|n| n > 0)),
            other => panic!("unexpected metrics answer {other:?}"),
        }
        // Stopping the txn log joins its thread: not on the runtime's workers.
        tokio::task::spawn_blocking(move || drop(driver))
            .await
            .unwrap();
    }

    #[test]
    fn dir_size_counts_nested_files_without_recursing() {
        let dir = tempfile::tempdir().unwrap();
        let mut deep = dir.path().to_path_buf();
        for _ in 0..100 {
            deep.push("d");
        }
        std::fs::create_dir_all(&deep).unwrap();
        std::fs::write(deep.join("f"), [0u8; 7]).unwrap();
        std::fs::write(dir.path().join("top"), [0u8; 5]).unwrap();
        let sizes = flw::DirSizes::measure(dir.path(), &dir.path().join("d"));
        assert_eq!((sizes.data_dir_bytes, sizes.log_dir_bytes), (12, 7));
        assert_eq!(flw::dir_size_bytes(&dir.path().join("missing")), 0);
    }

    #[test]
    fn queue_bounds_bytes_and_frames() {
        let (tx, mut rx) = mpsc::channel(2);
        let h = ConnHandle::new(tx, 10, 10, 1000);
        assert!(h.offer(Bytes::from_static(&[0; 4])).is_ok());
        assert!(h.offer(Bytes::from_static(&[0; 4])).is_ok());
        assert!(h.offer(Bytes::from_static(&[0; 1])).is_err(), "frame limit");
        let _ = rx.try_recv();
        h.queued_bytes.fetch_sub(4, Ordering::AcqRel);
        assert!(h.offer(Bytes::from_static(&[0; 8])).is_err(), "byte limit");
    }

    #[test]
    fn held_replies_count_against_the_byte_limit_until_released() {
        let (tx, _rx) = mpsc::channel(8);
        let h = ConnHandle::new(tx, 10, 10, 1000);
        let first = h.hold(6).expect("within the limit");
        assert!(h.hold(5).is_err(), "6 held + 5 more is over 10");
        assert!(
            h.offer(Bytes::from_static(&[0; 5])).is_err(),
            "held bytes count"
        );
        drop(first);
        // The refused attempts above are not left counted as held.
        assert_eq!(h.held_bytes.load(Ordering::Acquire), 0);
        h.queued_bytes.store(0, Ordering::Release);
        let _r = h.hold(4).unwrap();
        assert!(h.offer(Bytes::from_static(&[0; 6])).is_ok());
        assert!(h.hold(1).is_err(), "4 held + 6 queued is the limit");
    }

    #[test]
    fn session_secret_is_kept_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let first = load_or_create_session_secret(dir.path()).unwrap();
        let again = load_or_create_session_secret(dir.path()).unwrap();
        assert_eq!(first, again);
        std::fs::write(dir.path().join(SESSION_SECRET_FILE), b"short").unwrap();
        assert!(matches!(
            load_or_create_session_secret(dir.path()),
            Err(ServerError::SessionSecret { .. })
        ));
    }

    #[test]
    fn op_names_follow_zookeeper() {
        assert_eq!(short_op_name(OpCode::GetData.code()), "GETD");
        assert_eq!(short_op_name(OpCode::Create2.code()), "CREA");
        assert_eq!(short_op_name(OpCode::Ping.code()), "PING");
        assert_eq!(short_op_name(9999), "NA");
    }

    #[test]
    fn reply_accounting_pairs_replies_with_requests() {
        let (tx, _rx) = mpsc::channel(1);
        let handle = ConnHandle::new(tx, 1 << 20, 1 << 20, 1000);
        // Two requests received: each took (and the driver kept) an outstanding slot.
        for _ in 0..2 {
            handle
                .outstanding
                .clone()
                .try_acquire_owned()
                .unwrap()
                .forget();
        }
        let mut st = ConnState::new(handle, "127.0.0.1:1".parse().unwrap(), 0);
        st.in_flight_ms = VecDeque::from([
            InFlight {
                arrived_ms: 100,
                kind: RequestKind::Update,
            },
            InFlight {
                arrived_ms: 150,
                kind: RequestKind::Read,
            },
        ]);
        assert_eq!(st.handle.outstanding_requests(), 2);
        st.received = 2;
        let mut server = LatencyStats::default();
        let mut by_kind = KindLatency::default();
        // Connect response: no reply header, still completes the connect request.
        Driver::account_reply(
            &mut st,
            &Bytes::from_static(&[0; 40]),
            110,
            &mut server,
            &mut by_kind,
        );
        assert_eq!((st.last_latency_ms, st.in_flight_ms.len()), (10, 1));
        assert_eq!(st.handle.outstanding_requests(), 1);
        // A notification (xid -1) completes nothing.
        let mut notif = vec![0, 0, 0, 16];
        notif.extend_from_slice(&(-1i32).to_be_bytes());
        notif.extend_from_slice(&7i64.to_be_bytes());
        notif.extend_from_slice(&0i32.to_be_bytes());
        Driver::account_reply(&mut st, &Bytes::from(notif), 160, &mut server, &mut by_kind);
        assert_eq!(st.in_flight_ms.len(), 1);
        assert_eq!(st.handle.outstanding_requests(), 1);
        // A reply with zxid 0x2a completes the second request.
        let mut reply = vec![0, 0, 0, 16];
        reply.extend_from_slice(&1i32.to_be_bytes());
        reply.extend_from_slice(&0x2ai64.to_be_bytes());
        reply.extend_from_slice(&0i32.to_be_bytes());
        Driver::account_reply(&mut st, &Bytes::from(reply), 175, &mut server, &mut by_kind);
        assert_eq!((st.last_zxid, st.last_latency_ms, st.sent), (0x2a, 25, 3));
        assert_eq!(st.handle.outstanding_requests(), 0);
        assert_eq!(
            (server.min_ms(), server.max_ms(), server.count()),
            (10, 25, 2)
        );
        let read = by_kind.read.figures(&[0.5]);
        let update = by_kind.update.figures(&[0.5]);
        assert_eq!((read.count, read.sum_ms), (1, 25.0));
        assert_eq!((update.count, update.sum_ms), (1, 10.0));
    }

    fn request_frame(op: OpCode) -> Vec<u8> {
        let mut body = 7i32.to_be_bytes().to_vec();
        body.extend_from_slice(&op.code().to_be_bytes());
        body
    }

    #[test]
    fn requests_are_timed_as_reads_or_updates_by_opcode() {
        for op in [
            OpCode::Create,
            OpCode::SetData,
            OpCode::Delete,
            OpCode::Multi,
        ] {
            assert_eq!(
                RequestKind::of(&request_frame(op), false),
                RequestKind::Update,
                "{op:?}"
            );
        }
        for op in [
            OpCode::GetData,
            OpCode::Exists,
            OpCode::Ping,
            OpCode::MultiRead,
        ] {
            assert_eq!(
                RequestKind::of(&request_frame(op), false),
                RequestKind::Read,
                "{op:?}"
            );
        }
        // ConnectRequest: protocol version, last zxid, timeout, then the session id.
        let mut connect = vec![0u8; 16];
        connect.extend_from_slice(&0i64.to_be_bytes());
        assert_eq!(RequestKind::of(&connect, true), RequestKind::Update);
        connect[16..24].copy_from_slice(&0x55i64.to_be_bytes());
        assert_eq!(RequestKind::of(&connect, true), RequestKind::Untimed);
    }
}
