//! The transport between members of an ensemble: framed requests and answers over TCP.
//!
//! The payload is opaque (bytes in, bytes out); callers serialize their own messages and tag
//! each with a `kind` byte. A [`PeerClient`] talks to one remote member over one connection on
//! which any number of calls may be in flight at once, matched to their answers by request
//! id. A [`PeerServer`] accepts such connections and runs every request in its own task, so a
//! slow request never holds up a fast one.
//!
//! # Wire format
//!
//! All integers are big-endian.
//!
//! A connection starts with a *hello* in each direction, 22 bytes: the connecting side sends
//! its own, the accepting side checks it and answers with its own (or closes the connection).
//!
//! ```text
//! offset  size  field
//!      0     4  magic: b"CRLP" (0x43 0x52 0x4c 0x50)
//!      4     2  protocol version (u16, currently 1; must match exactly)
//!      6     8  sender's member id (u64)
//!     14     8  member id the sender expects at the other end (u64)
//! ```
//!
//! A member whose id differs from the one expected refuses the connection, so a client
//! pointed at a stale address never talks to the wrong member. After the hellos, both sides
//! send *frames*:
//!
//! ```text
//! offset  size  field
//!      0     4  length n (u32): bytes after this field, 10 + body; 10 <= n <= max_frame_bytes
//!      4     1  type: 0 = request, 1 = answer, 2 = error answer
//!      5     8  request id (u64), chosen by the caller, unique among its calls in flight on
//!               the connection; answers echo it
//!     13     1  kind: the request's message kind, chosen by the caller; answers echo it
//!     14   n-10 body: the request payload, the answer payload, or the error text (UTF-8)
//! ```
//!
//! Requests flow only from the connecting side to the accepting side. A frame whose length is
//! out of bounds, or whose type is not expected in its direction, closes that connection
//! (and only that one).

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures::future::BoxFuture;
use futures::FutureExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch, Notify, Semaphore};
use tokio::task::{JoinHandle, JoinSet};

/// First bytes of every hello.
pub const MAGIC: [u8; 4] = *b"CRLP";
/// The one protocol version this code speaks.
pub const PROTOCOL_VERSION: u16 = 1;

const HELLO_BYTES: usize = 22;
/// Length prefix of a frame.
const LEN_PREFIX_BYTES: usize = 4;
/// Type, request id and kind: the part of a frame's length that is not body.
const FRAME_HEADER_BYTES: usize = 10;

const TYPE_REQUEST: u8 = 0;
const TYPE_ANSWER: u8 = 1;
const TYPE_ERROR: u8 = 2;

/// Wait before the first reconnect attempt after a failed one; doubles up to the maximum.
const FIRST_BACKOFF_MS: u64 = 25;
/// A dead peer is tried at most this rarely, so recovery is noticed within about a second.
const MAX_BACKOFF_MS: u64 = 1000;
/// Bytes gathered into one write when several frames are queued.
const WRITE_BATCH_BYTES: usize = 64 * 1024;
/// Connections one server holds at once. An ensemble has a handful of members with one
/// connection each; this only stops stray connections from piling up.
const MAX_SERVER_CONNECTIONS: usize = 256;

/// Size limits and timeouts of the transport; both ends of a connection should agree.
#[derive(Debug, Clone)]
pub struct PeerLimits {
    /// Largest frame either side sends or accepts, counted as the length field counts it
    /// (10 header bytes + body). A peer announcing a larger one loses its connection.
    pub max_frame_bytes: usize,
    /// Bytes one connection may hold waiting. On a client: requests not yet written to the
    /// socket (a call that would exceed it fails with [`PeerError::QueueFull`], so keep it at
    /// least `max_frame_bytes`). On a server: requests being handled (reading pauses when
    /// full) and answers not yet written (a peer that stops reading them is disconnected).
    pub max_queued_bytes: usize,
    /// Time for resolving, connecting and exchanging hellos; a server gives a new
    /// connection this long to send its hello.
    pub connect_timeout_ms: u64,
}

impl Default for PeerLimits {
    fn default() -> PeerLimits {
        PeerLimits {
            max_frame_bytes: 16 * 1024 * 1024,
            max_queued_bytes: 64 * 1024 * 1024,
            connect_timeout_ms: 2000,
        }
    }
}

impl PeerLimits {
    /// The length field is a u32, whatever the configuration says.
    fn frame_limit(&self) -> usize {
        self.max_frame_bytes.min(u32::MAX as usize)
    }
}

/// Why a call failed.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum PeerError {
    /// The request was not sent: the peer could not be reached (or was recently
    /// unreachable and is not being retried yet).
    #[error("peer unreachable: {0}")]
    Unreachable(String),
    /// No answer within the call's timeout; the peer may or may not have handled it.
    #[error("no answer within the timeout")]
    Timeout,
    /// The peer's handler returned this error.
    #[error("peer failed the request: {0}")]
    Remote(String),
    /// The request is larger than the frame limit; nothing was sent.
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    FrameTooLarge { len: usize, max: usize },
    /// The connection's send queue is full; nothing was sent.
    #[error(
        "send queue full: {queued_bytes} bytes queued, {len} more would exceed {max_queued_bytes}"
    )]
    QueueFull {
        queued_bytes: usize,
        len: usize,
        max_queued_bytes: usize,
    },
    /// The connection broke after the request was queued; the peer may or may not have
    /// handled it.
    #[error("connection lost before the answer came")]
    Closed,
}

/// What a member answers to requests from its peers.
pub trait PeerHandler: Send + Sync + 'static {
    /// Answers one request. `from` is the sender's member id (from its hello), `kind` the
    /// caller-defined message type. An `Err` reaches the caller as [`PeerError::Remote`].
    /// Called in the order the requests arrived on a connection; the returned future runs in
    /// its own task and is dropped if the connection closes first.
    fn handle(&self, from: u64, kind: u8, body: Bytes)
        -> BoxFuture<'static, Result<Bytes, String>>;

    /// Member `from`'s connection to this member ended (not called when this server stops).
    /// A peer that goes away closes its connections, so this is the first sign of its death.
    fn closed(&self, from: u64) {
        let _ = from;
    }
}

/// Why reading or a handshake stopped.
#[derive(thiserror::Error, Debug)]
enum WireError {
    #[error("connection closed")]
    Eof,
    #[error("i/o error: {0}")]
    Io(#[from] io::Error),
    #[error("bad magic {0:02x?} (not a Corral peer)")]
    BadMagic([u8; 4]),
    #[error("protocol version {0}, this member speaks {PROTOCOL_VERSION}")]
    BadVersion(u16),
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge { len: usize, max: usize },
    #[error("frame of {len} bytes is shorter than its header")]
    TooShort { len: usize },
    #[error("unexpected frame type {0}")]
    BadType(u8),
}

impl WireError {
    /// Violations are worth a warning; a peer going away is not.
    fn is_violation(&self) -> bool {
        !matches!(self, WireError::Eof | WireError::Io(_))
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

struct Hello {
    from: u64,
    to: u64,
}

fn encode_hello(from: u64, to: u64) -> [u8; HELLO_BYTES] {
    let mut out = [0u8; HELLO_BYTES];
    out[..4].copy_from_slice(&MAGIC);
    out[4..6].copy_from_slice(&PROTOCOL_VERSION.to_be_bytes());
    out[6..14].copy_from_slice(&from.to_be_bytes());
    out[14..].copy_from_slice(&to.to_be_bytes());
    out
}

async fn read_hello<R: AsyncRead + Unpin>(rd: &mut R) -> Result<Hello, WireError> {
    let mut raw = [0u8; HELLO_BYTES];
    if let Err(e) = rd.read_exact(&mut raw).await {
        return Err(match e.kind() {
            io::ErrorKind::UnexpectedEof => WireError::Eof,
            _ => WireError::Io(e),
        });
    }
    let mut buf = &raw[..];
    let mut magic = [0u8; 4];
    buf.copy_to_slice(&mut magic);
    if magic != MAGIC {
        return Err(WireError::BadMagic(magic));
    }
    let version = buf.get_u16();
    if version != PROTOCOL_VERSION {
        return Err(WireError::BadVersion(version));
    }
    Ok(Hello {
        from: buf.get_u64(),
        to: buf.get_u64(),
    })
}

/// A frame waiting to be written: the header is built up front, the body stays in the
/// caller's buffer until the write.
struct OutFrame {
    head: [u8; LEN_PREFIX_BYTES + FRAME_HEADER_BYTES],
    body: Bytes,
}

impl OutFrame {
    /// The caller has checked `body` against the frame limit.
    fn new(ty: u8, id: u64, kind: u8, body: Bytes) -> OutFrame {
        let mut head = [0u8; LEN_PREFIX_BYTES + FRAME_HEADER_BYTES];
        let len = (FRAME_HEADER_BYTES + body.len()) as u32;
        head[..4].copy_from_slice(&len.to_be_bytes());
        head[4] = ty;
        head[5..13].copy_from_slice(&id.to_be_bytes());
        head[13] = kind;
        OutFrame { head, body }
    }

    fn wire_bytes(&self) -> usize {
        self.head.len() + self.body.len()
    }
}

struct InFrame {
    ty: u8,
    id: u64,
    kind: u8,
    body: Bytes,
}

/// Cuts a socket's byte stream into frames, refusing lengths above the limit before
/// buffering them.
struct FrameReader {
    rd: OwnedReadHalf,
    buf: BytesMut,
    max_frame_bytes: usize,
}

impl FrameReader {
    fn new(rd: OwnedReadHalf, max_frame_bytes: usize) -> FrameReader {
        FrameReader {
            rd,
            buf: BytesMut::with_capacity(8 * 1024),
            max_frame_bytes,
        }
    }

    async fn next(&mut self) -> Result<InFrame, WireError> {
        loop {
            if let Some(frame) = self.take_frame()? {
                return Ok(frame);
            }
            if self.rd.read_buf(&mut self.buf).await? == 0 {
                return Err(WireError::Eof);
            }
        }
    }

    fn take_frame(&mut self) -> Result<Option<InFrame>, WireError> {
        if self.buf.len() < LEN_PREFIX_BYTES {
            return Ok(None);
        }
        let len = u32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]) as usize;
        if len > self.max_frame_bytes {
            return Err(WireError::TooLarge {
                len,
                max: self.max_frame_bytes,
            });
        }
        if len < FRAME_HEADER_BYTES {
            return Err(WireError::TooShort { len });
        }
        let whole = LEN_PREFIX_BYTES + len;
        if self.buf.len() < whole {
            // Room for the rest of this frame (bounded by the limit checked above).
            self.buf.reserve(whole - self.buf.len());
            return Ok(None);
        }
        self.buf.advance(LEN_PREFIX_BYTES);
        let mut frame = self.buf.split_to(len);
        let ty = frame.get_u8();
        let id = frame.get_u64();
        let kind = frame.get_u8();
        Ok(Some(InFrame {
            ty,
            id,
            kind,
            body: frame.freeze(),
        }))
    }
}

/// Writes queued frames, several per syscall when they pile up, and takes their bytes off
/// `queued_bytes` once written. Returns why it stopped.
async fn write_frames(
    wr: &mut OwnedWriteHalf,
    rx: &mut mpsc::UnboundedReceiver<OutFrame>,
    queued_bytes: &AtomicUsize,
) -> String {
    let mut batch = BytesMut::with_capacity(WRITE_BATCH_BYTES);
    while let Some(first) = rx.recv().await {
        let mut written_bytes = 0;
        let mut next = Some(first);
        while let Some(frame) = next.take() {
            written_bytes += frame.wire_bytes();
            batch.put_slice(&frame.head);
            if frame.body.len() >= WRITE_BATCH_BYTES {
                // Large payloads (snapshot chunks) go out from their own buffer, uncopied.
                if let Err(e) = wr.write_all(&batch).await {
                    return format!("write error: {e}");
                }
                batch.clear();
                if let Err(e) = wr.write_all(&frame.body).await {
                    return format!("write error: {e}");
                }
            } else {
                batch.put_slice(&frame.body);
            }
            if batch.len() < WRITE_BATCH_BYTES {
                next = rx.try_recv().ok();
            }
        }
        if !batch.is_empty() {
            if let Err(e) = wr.write_all(&batch).await {
                return format!("write error: {e}");
            }
            batch.clear();
        }
        queued_bytes.fetch_sub(written_bytes, Ordering::AcqRel);
    }
    "no longer in use".into()
}

// ---------------------------------------------------------------------------------------
// Client
// ---------------------------------------------------------------------------------------

/// Calls to one remote member. Cheap to clone; clones share the connection.
#[derive(Clone)]
pub struct PeerClient {
    inner: Arc<ClientInner>,
}

struct ClientInner {
    my_id: u64,
    peer_id: u64,
    limits: PeerLimits,
    link: Mutex<Link>,
    /// One connection attempt at a time; callers arriving meanwhile wait for its outcome
    /// instead of opening connections of their own.
    connecting: tokio::sync::Mutex<()>,
    late: Arc<Mutex<LateTally>>,
}

/// The client's view of its peer, behind a lock held only for field updates.
struct Link {
    addr: String,
    /// Bumped by `set_addr`, so a connection attempt to the old address that finishes
    /// afterwards is not kept.
    addr_generation: u64,
    conn: Option<Arc<Conn>>,
    /// While set and in the future, calls fail at once instead of connecting.
    retry_at: Option<Instant>,
    backoff_ms: u64,
    last_error: String,
}

/// One established connection: the sending side. Its task holds the receiving side and
/// ends (failing every call still waiting) when the socket breaks or the last `Conn` goes.
struct Conn {
    /// Unique in this process: tells connections to the same peer apart (see [`PeerLink`]).
    id: u64,
    tx: mpsc::UnboundedSender<OutFrame>,
    shared: Arc<ConnShared>,
    next_request_id: AtomicU64,
}

/// Calls given up on that a connection remembers; older ones are forgotten (their answers,
/// if they come, are then merely discarded).
const GAVE_UP_KEPT: usize = 256;

#[derive(Debug, Clone, Copy)]
struct GaveUpCall {
    started: Instant,
    timeout: Duration,
}

/// Answers that arrived after their caller had given up on them: the sign of a link (or
/// peer) slower than the callers' timeouts, where every call fails although the peer does
/// answer. Reported by [`PeerClient::take_late_answers`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LateAnswers {
    /// Late answers since the last report.
    pub count: u64,
    /// The slowest of them, from the call's start to its answer.
    pub slowest_ms: u64,
    /// The timeout of that slowest call.
    pub timeout_ms: u64,
    /// Late answers since the client was made.
    pub total: u64,
}

/// A client's late answers: what the next report holds, and when the last one was made.
#[derive(Debug, Default)]
struct LateTally {
    since_report: LateAnswers,
    reported_at: Option<Instant>,
}

impl LateTally {
    fn record(&mut self, took: Duration, timeout: Duration) {
        let late = &mut self.since_report;
        late.count += 1;
        late.total += 1;
        let took_ms = took.as_millis() as u64;
        if took_ms >= late.slowest_ms {
            late.slowest_ms = took_ms;
            late.timeout_ms = timeout.as_millis() as u64;
        }
    }
}

/// Source of [`Conn::id`].
static NEXT_CONN_ID: AtomicU64 = AtomicU64::new(1);

type Waiter = oneshot::Sender<Result<Bytes, PeerError>>;

struct ConnShared {
    /// Calls waiting for answers, by request id; `None` once the connection has ended, so
    /// no call can register after the final sweep.
    pending: Mutex<Option<HashMap<u64, Waiter>>>,
    /// Timed calls whose caller gave up before the answer came, by request id (the newest
    /// [`GAVE_UP_KEPT`]), so that their answers, if they still come, count as late.
    gave_up: Mutex<BTreeMap<u64, GaveUpCall>>,
    /// The client's tally of late answers (shared by its successive connections).
    late: Arc<Mutex<LateTally>>,
    /// Bytes in the send queue; bounded by `max_queued_bytes` when calls are admitted.
    queued_bytes: AtomicUsize,
}

impl Conn {
    fn is_open(&self) -> bool {
        lock(&self.shared.pending).is_some()
    }

    /// Registers a call and queues its request.
    fn start_call(
        &self,
        kind: u8,
        body: Bytes,
        max_queued_bytes: usize,
        timeout: Option<Duration>,
    ) -> Result<(PendingCall, oneshot::Receiver<Result<Bytes, PeerError>>), PeerError> {
        let frame_id = self.next_request_id.fetch_add(1, Ordering::Relaxed);
        let frame = OutFrame::new(TYPE_REQUEST, frame_id, kind, body);
        let len = frame.wire_bytes();
        let queued_bytes = self.shared.queued_bytes.fetch_add(len, Ordering::AcqRel);
        if queued_bytes + len > max_queued_bytes {
            self.shared.queued_bytes.fetch_sub(len, Ordering::AcqRel);
            return Err(PeerError::QueueFull {
                queued_bytes,
                len,
                max_queued_bytes,
            });
        }
        let (waiter, answer) = oneshot::channel();
        match lock(&self.shared.pending).as_mut() {
            Some(pending) => pending.insert(frame_id, waiter),
            None => {
                self.shared.queued_bytes.fetch_sub(len, Ordering::AcqRel);
                return Err(PeerError::Unreachable("connection closed".into()));
            }
        };
        let call = PendingCall {
            shared: self.shared.clone(),
            id: frame_id,
            timed: timeout.map(|timeout| GaveUpCall {
                started: Instant::now(),
                timeout,
            }),
        };
        if self.tx.send(frame).is_err() {
            // The writer is gone, so the request never left: not ambiguous, Unreachable.
            self.shared.queued_bytes.fetch_sub(len, Ordering::AcqRel);
            return Err(PeerError::Unreachable("connection closed".into()));
        }
        Ok((call, answer))
    }
}

/// A call's registration; dropping it (answer received, timeout, caller gone) forgets the
/// call so a late answer is discarded and the table does not grow. A timed call dropped
/// unanswered is remembered as given up, so its answer can be told late.
struct PendingCall {
    shared: Arc<ConnShared>,
    id: u64,
    timed: Option<GaveUpCall>,
}

impl Drop for PendingCall {
    fn drop(&mut self) {
        let unanswered = match lock(&self.shared.pending).as_mut() {
            Some(pending) => pending.remove(&self.id).is_some(),
            None => false,
        };
        if let (true, Some(call)) = (unanswered, self.timed) {
            let mut gave_up = lock(&self.shared.gave_up);
            gave_up.insert(self.id, call);
            while gave_up.len() > GAVE_UP_KEPT {
                gave_up.pop_first();
            }
        }
    }
}

impl PeerClient {
    /// A client for member `peer_id` at `addr` (`host:port`, resolved on every connect).
    /// Nothing is connected until the first call.
    pub fn new(my_id: u64, peer_id: u64, addr: String, limits: PeerLimits) -> PeerClient {
        PeerClient {
            inner: Arc::new(ClientInner {
                my_id,
                peer_id,
                limits,
                link: Mutex::new(Link {
                    addr,
                    addr_generation: 0,
                    conn: None,
                    retry_at: None,
                    backoff_ms: FIRST_BACKOFF_MS,
                    last_error: String::new(),
                }),
                connecting: tokio::sync::Mutex::new(()),
                late: Arc::default(),
            }),
        }
    }

    /// Answers that came after their call had timed out, since the client was made.
    pub fn late_answers_total(&self) -> u64 {
        lock(&self.inner.late).since_report.total
    }

    /// The answers that came after their call had timed out since the last report, at most
    /// once per `every` (a caller on a hot path may ask on every call); `None` when there
    /// were none or it is too soon.
    pub fn take_late_answers(&self, every: Duration) -> Option<LateAnswers> {
        let mut tally = lock(&self.inner.late);
        let too_soon = tally.reported_at.is_some_and(|at| at.elapsed() < every);
        if too_soon || tally.since_report.count == 0 {
            return None;
        }
        let report = tally.since_report;
        tally.since_report = LateAnswers {
            total: report.total,
            ..LateAnswers::default()
        };
        tally.reported_at = Some(Instant::now());
        Some(report)
    }

    /// The member this client calls.
    pub fn peer_id(&self) -> u64 {
        self.inner.peer_id
    }

    /// Points the client at a new address. A connection to the old one is no longer used
    /// for new calls (calls in flight on it finish there), and the next call connects at
    /// once, without waiting out a backoff earned by the old address.
    pub fn set_addr(&self, addr: String) {
        let mut link = lock(&self.inner.link);
        if link.addr == addr {
            return;
        }
        tracing::debug!(peer_id = self.inner.peer_id, old = %link.addr, new = %addr, "peer address changed");
        link.addr = addr;
        link.addr_generation += 1;
        link.conn = None;
        link.retry_at = None;
        link.backoff_ms = FIRST_BACKOFF_MS;
    }

    /// Sends one request and waits for its answer, for at most `timeout` (connecting
    /// included). Any number of calls may be in flight at once over the one connection.
    pub async fn call(&self, kind: u8, body: Bytes, timeout: Duration) -> Result<Bytes, PeerError> {
        let len = FRAME_HEADER_BYTES + body.len();
        let max = self.inner.limits.frame_limit();
        if len > max {
            return Err(PeerError::FrameTooLarge { len, max });
        }
        match tokio::time::timeout(timeout, self.call_untimed(kind, body, timeout)).await {
            Ok(result) => result,
            Err(_) => Err(PeerError::Timeout),
        }
    }

    async fn call_untimed(
        &self,
        kind: u8,
        body: Bytes,
        timeout: Duration,
    ) -> Result<Bytes, PeerError> {
        let conn = self.connection().await?;
        let (_registration, answer) = conn.start_call(
            kind,
            body,
            self.inner.limits.max_queued_bytes,
            Some(timeout),
        )?;
        let result = match answer.await {
            Ok(result) => result,
            Err(_) => Err(PeerError::Closed),
        };
        // Held until here so the connection stays up while this call waits on it.
        drop(conn);
        result
    }

    /// The open connection (connecting first if needed), for requests that must arrive in the
    /// order they are sent: [`PeerLink::send`] queues a request at once, so requests sent one
    /// after another on one link reach the peer in that order. `call` gives no such promise
    /// (each call may wait for a connection on its own).
    pub async fn link(&self) -> Result<PeerLink, PeerError> {
        Ok(PeerLink {
            conn: self.connection().await?,
            max_frame_bytes: self.inner.limits.frame_limit(),
            max_queued_bytes: self.inner.limits.max_queued_bytes,
        })
    }

    /// The open connection, opening one if needed, or `Unreachable` at once while a
    /// failed peer's backoff lasts.
    async fn connection(&self) -> Result<Arc<Conn>, PeerError> {
        if let Some(conn) = self.open_or_backing_off()? {
            return Ok(conn);
        }
        let _one_attempt = self.inner.connecting.lock().await;
        // Whoever held the lock before us may have connected or failed meanwhile.
        if let Some(conn) = self.open_or_backing_off()? {
            return Ok(conn);
        }
        let (addr, generation) = {
            let link = lock(&self.inner.link);
            (link.addr.clone(), link.addr_generation)
        };
        let inner = &self.inner;
        let connect_timeout = Duration::from_millis(inner.limits.connect_timeout_ms);
        let attempt = connect(
            &addr,
            inner.my_id,
            inner.peer_id,
            &inner.limits,
            inner.late.clone(),
        );
        let result = match tokio::time::timeout(connect_timeout, attempt).await {
            Ok(result) => result,
            Err(_) => Err(format!(
                "no connection to {addr} within {} ms",
                inner.limits.connect_timeout_ms
            )),
        };

        let mut link = lock(&inner.link);
        if link.addr_generation != generation {
            return Err(PeerError::Unreachable(format!(
                "address changed while connecting to {addr}"
            )));
        }
        match result {
            Ok(conn) => {
                link.conn = Some(conn.clone());
                link.retry_at = None;
                link.backoff_ms = FIRST_BACKOFF_MS;
                Ok(conn)
            }
            Err(reason) => {
                tracing::debug!(peer_id = inner.peer_id, %addr, %reason, backoff_ms = link.backoff_ms, "cannot reach peer");
                link.conn = None;
                link.retry_at = Some(Instant::now() + Duration::from_millis(link.backoff_ms));
                link.backoff_ms = (link.backoff_ms * 2).min(MAX_BACKOFF_MS);
                link.last_error = reason.clone();
                Err(PeerError::Unreachable(reason))
            }
        }
    }

    fn open_or_backing_off(&self) -> Result<Option<Arc<Conn>>, PeerError> {
        let link = lock(&self.inner.link);
        if let Some(conn) = &link.conn {
            if conn.is_open() {
                return Ok(Some(conn.clone()));
            }
        }
        match link.retry_at {
            Some(at) if Instant::now() < at => Err(PeerError::Unreachable(format!(
                "{} (not retrying yet)",
                link.last_error
            ))),
            _ => Ok(None),
        }
    }
}

/// One connection to a peer, on which requests are queued in the order they are sent.
pub struct PeerLink {
    conn: Arc<Conn>,
    max_frame_bytes: usize,
    max_queued_bytes: usize,
}

impl PeerLink {
    /// Tells connections apart: two links with the same id are the same connection. A caller
    /// that needs order across requests sends them on one link; when it would have to use
    /// another, the first one broke and requests queued on it may be lost.
    pub fn id(&self) -> u64 {
        self.conn.id
    }

    /// False once the connection broke: nothing sent on it is answered any more.
    pub fn is_open(&self) -> bool {
        self.conn.is_open()
    }

    /// Queues one request now (ahead of any sent later on this link) and returns the wait for
    /// its answer. The wait has no time limit: wrap it in one.
    pub fn send(
        &self,
        kind: u8,
        body: Bytes,
    ) -> Result<
        impl std::future::Future<Output = Result<Bytes, PeerError>> + Send + 'static,
        PeerError,
    > {
        let len = FRAME_HEADER_BYTES + body.len();
        if len > self.max_frame_bytes {
            return Err(PeerError::FrameTooLarge {
                len,
                max: self.max_frame_bytes,
            });
        }
        let (registration, answer) =
            self.conn
                .start_call(kind, body, self.max_queued_bytes, None)?;
        let conn = self.conn.clone();
        Ok(async move {
            let result = match answer.await {
                Ok(result) => result,
                Err(_) => Err(PeerError::Closed),
            };
            // Held until the answer so the connection stays up while the request waits on it.
            drop((registration, conn));
            result
        })
    }
}

/// Connects, exchanges hellos and starts the connection's task. Errors are the reason, for
/// `Unreachable`.
async fn connect(
    addr: &str,
    my_id: u64,
    peer_id: u64,
    limits: &PeerLimits,
    late: Arc<Mutex<LateTally>>,
) -> Result<Arc<Conn>, String> {
    let mut stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect to {addr}: {e}"))?;
    // Raft heartbeats and votes are small and latency-bound; never let Nagle hold them.
    stream
        .set_nodelay(true)
        .map_err(|e| format!("set TCP_NODELAY on {addr}: {e}"))?;
    stream
        .write_all(&encode_hello(my_id, peer_id))
        .await
        .map_err(|e| format!("send hello to {addr}: {e}"))?;
    let hello = match read_hello(&mut stream).await {
        Ok(hello) => hello,
        Err(WireError::Eof) => {
            return Err(format!(
                "{addr} closed the connection during the handshake (wrong member or not a Corral peer port?)"
            ))
        }
        Err(e) => {
            if e.is_violation() {
                tracing::warn!(peer_id, %addr, error = %e, "bad hello from peer");
            }
            return Err(format!("handshake with {addr}: {e}"));
        }
    };
    if hello.from != peer_id || hello.to != my_id {
        tracing::warn!(peer_id, %addr, answered_by = hello.from, addressed_to = hello.to, "wrong member at peer address");
        return Err(format!(
            "{addr} is member {} talking to {}, expected member {peer_id} talking to {my_id}",
            hello.from, hello.to
        ));
    }
    tracing::debug!(peer_id, %addr, "connected to peer");
    let (rd, wr) = stream.into_split();
    let shared = Arc::new(ConnShared {
        pending: Mutex::new(Some(HashMap::new())),
        gave_up: Mutex::new(BTreeMap::new()),
        late,
        queued_bytes: AtomicUsize::new(0),
    });
    let (tx, rx) = mpsc::unbounded_channel();
    let reader = FrameReader::new(rd, limits.frame_limit());
    tokio::spawn(run_client_conn(
        reader,
        wr,
        rx,
        shared.clone(),
        peer_id,
        addr.to_string(),
    ));
    Ok(Arc::new(Conn {
        id: NEXT_CONN_ID.fetch_add(1, Ordering::Relaxed),
        tx,
        shared,
        next_request_id: AtomicU64::new(1),
    }))
}

async fn run_client_conn(
    mut reader: FrameReader,
    mut wr: OwnedWriteHalf,
    mut rx: mpsc::UnboundedReceiver<OutFrame>,
    shared: Arc<ConnShared>,
    peer_id: u64,
    addr: String,
) {
    let reason = tokio::select! {
        r = dispatch_answers(&mut reader, &shared, peer_id) => r,
        r = write_frames(&mut wr, &mut rx, &shared.queued_bytes) => r,
    };
    let orphans = lock(&shared.pending).take().unwrap_or_default();
    tracing::debug!(peer_id, %addr, %reason, calls_failed = orphans.len(), "peer connection ended");
    for (_, waiter) in orphans {
        let _ = waiter.send(Err(PeerError::Closed));
    }
}

/// Hands answers to their waiting calls; returns why reading stopped.
async fn dispatch_answers(reader: &mut FrameReader, shared: &ConnShared, peer_id: u64) -> String {
    loop {
        let frame = match reader.next().await {
            Ok(frame) => frame,
            Err(e) => {
                if e.is_violation() {
                    tracing::warn!(peer_id, error = %e, "closing peer connection: protocol violation");
                }
                return e.to_string();
            }
        };
        let result = match frame.ty {
            TYPE_ANSWER => Ok(frame.body),
            TYPE_ERROR => Err(PeerError::Remote(
                String::from_utf8_lossy(&frame.body).into_owned(),
            )),
            other => {
                let e = WireError::BadType(other);
                tracing::warn!(peer_id, error = %e, "closing peer connection: protocol violation");
                return e.to_string();
            }
        };
        let waiter = lock(&shared.pending)
            .as_mut()
            .and_then(|pending| pending.remove(&frame.id));
        match waiter {
            Some(waiter) => {
                let _ = waiter.send(result);
            }
            None => match lock(&shared.gave_up).remove(&frame.id) {
                Some(call) => lock(&shared.late).record(call.started.elapsed(), call.timeout),
                None => tracing::debug!(
                    peer_id,
                    request_id = frame.id,
                    "answer to a call no longer waiting"
                ),
            },
        }
    }
}

// ---------------------------------------------------------------------------------------
// Server
// ---------------------------------------------------------------------------------------

/// Accepts connections from peers and answers their requests with a [`PeerHandler`].
/// Dropping it stops the server as [`shutdown`](PeerServer::shutdown) does, without
/// waiting.
pub struct PeerServer {
    local_addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl PeerServer {
    /// Starts accepting peers on `listener` (within a tokio runtime). Fails only if the
    /// listener's address cannot be read.
    pub fn start(
        listener: TcpListener,
        my_id: u64,
        handler: Arc<dyn PeerHandler>,
        limits: PeerLimits,
    ) -> io::Result<PeerServer> {
        let local_addr = listener.local_addr()?;
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(accept_peers(
            listener,
            my_id,
            handler,
            Arc::new(limits),
            stopped,
        ));
        tracing::debug!(my_id, addr = %local_addr, "accepting peers");
        Ok(PeerServer {
            local_addr,
            stop,
            task,
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting, closes every peer connection (their requests still running are
    /// dropped) and returns once the listening socket is closed.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

async fn accept_peers(
    listener: TcpListener,
    my_id: u64,
    handler: Arc<dyn PeerHandler>,
    limits: Arc<PeerLimits>,
    mut stopped: watch::Receiver<bool>,
) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            // A value or a dropped sender: either way, stop.
            _ = stopped.changed() => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            accepted = listener.accept() => {
                let (stream, remote) = match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Typically EMFILE: keep serving the connections we have.
                        tracing::warn!(my_id, error = %e, "accepting a peer failed");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                };
                if conns.len() >= MAX_SERVER_CONNECTIONS {
                    tracing::warn!(my_id, %remote, max = MAX_SERVER_CONNECTIONS, "too many peer connections; closing the new one");
                    continue;
                }
                conns.spawn(serve_peer(stream, remote, my_id, handler.clone(), limits.clone()));
            }
        }
    }
    drop(listener);
    conns.shutdown().await;
    tracing::debug!(my_id, "stopped accepting peers");
}

/// One accepted connection: checks the hello, then runs each request in its own task.
async fn serve_peer(
    mut stream: TcpStream,
    remote: SocketAddr,
    my_id: u64,
    handler: Arc<dyn PeerHandler>,
    limits: Arc<PeerLimits>,
) {
    let _ = stream.set_nodelay(true);
    let hello_timeout = Duration::from_millis(limits.connect_timeout_ms);
    let hello = match tokio::time::timeout(hello_timeout, read_hello(&mut stream)).await {
        Ok(Ok(hello)) => hello,
        Ok(Err(e)) => {
            tracing::warn!(my_id, %remote, error = %e, "rejecting peer connection: bad hello");
            return;
        }
        Err(_) => {
            tracing::warn!(my_id, %remote, timeout_ms = limits.connect_timeout_ms, "rejecting peer connection: no hello in time");
            return;
        }
    };
    if hello.to != my_id {
        tracing::warn!(my_id, %remote, peer_id = hello.from, addressed_to = hello.to, "rejecting peer connection: meant for another member");
        return;
    }
    let peer_id = hello.from;
    if let Err(e) = stream.write_all(&encode_hello(my_id, peer_id)).await {
        tracing::debug!(my_id, %remote, peer_id, error = %e, "peer left during the handshake");
        return;
    }
    tracing::debug!(my_id, %remote, peer_id, "peer connected");

    let (rd, mut wr) = stream.into_split();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let conn = Arc::new(ServerConn {
        peer_id,
        handler,
        max_frame_bytes: limits.frame_limit(),
        max_answer_bytes: limits.max_queued_bytes,
        request_budget: Arc::new(Semaphore::new(request_budget_permits(&limits) as usize)),
        answers: tx,
        queued_answer_bytes: AtomicUsize::new(0),
        too_slow: Notify::new(),
    });
    let mut reader = FrameReader::new(rd, conn.max_frame_bytes);
    // Requests still running when the connection ends are aborted with this set.
    let mut requests = JoinSet::new();
    let reason = tokio::select! {
        r = read_requests(&mut reader, &conn, &limits, &mut requests) => r,
        r = write_frames(&mut wr, &mut rx, &conn.queued_answer_bytes) => r,
        _ = conn.too_slow.notified() => "peer is not reading its answers".to_string(),
    };
    tracing::debug!(my_id, %remote, peer_id, %reason, aborted_requests = requests.len(), "peer connection ended");
    conn.handler.closed(peer_id);
}

/// What the request tasks of one connection share.
struct ServerConn {
    peer_id: u64,
    handler: Arc<dyn PeerHandler>,
    max_frame_bytes: usize,
    max_answer_bytes: usize,
    /// Bytes of requests being handled; reading pauses while it is used up.
    request_budget: Arc<Semaphore>,
    answers: mpsc::UnboundedSender<OutFrame>,
    /// Bytes of answers not yet written; past `max_answer_bytes` the peer is dropped.
    queued_answer_bytes: AtomicUsize,
    too_slow: Notify,
}

fn request_budget_permits(limits: &PeerLimits) -> u32 {
    limits
        .max_queued_bytes
        .clamp(1, u32::MAX as usize)
        .min(Semaphore::MAX_PERMITS) as u32
}

/// Reads requests and starts a task for each; returns why reading stopped.
async fn read_requests(
    reader: &mut FrameReader,
    conn: &Arc<ServerConn>,
    limits: &PeerLimits,
    requests: &mut JoinSet<()>,
) -> String {
    let budget_permits = request_budget_permits(limits);
    loop {
        while requests.try_join_next().is_some() {}
        let frame = match reader.next().await {
            Ok(frame) => frame,
            Err(WireError::Eof) => return "closed by the peer".into(),
            Err(e) => {
                if e.is_violation() {
                    tracing::warn!(peer_id = conn.peer_id, error = %e, "closing peer connection: protocol violation");
                }
                return e.to_string();
            }
        };
        if frame.ty != TYPE_REQUEST {
            let e = WireError::BadType(frame.ty);
            tracing::warn!(peer_id = conn.peer_id, error = %e, "closing peer connection: protocol violation");
            return e.to_string();
        }
        // A request larger than the whole budget may still run alone.
        let cost = (LEN_PREFIX_BYTES + FRAME_HEADER_BYTES + frame.body.len())
            .min(budget_permits as usize) as u32;
        let Ok(permit) = conn.request_budget.clone().acquire_many_owned(cost).await else {
            return "request budget closed".into();
        };
        let InFrame { id, kind, body, .. } = frame;
        let conn = conn.clone();
        // `handle` is called here, in arrival order, so whatever it does before returning its
        // future (forwarded client requests are queued for the driver then) keeps the order
        // in which the peer sent the requests. A panic while building the future is caught
        // like one while running it.
        let handling = std::panic::catch_unwind(AssertUnwindSafe(|| {
            conn.handler.handle(conn.peer_id, kind, body)
        }));
        requests.spawn(async move {
            let outcome = match handling {
                Ok(future) => AssertUnwindSafe(future).catch_unwind().await,
                Err(panic) => Err(panic),
            };
            drop(permit);
            let answer = match outcome {
                Ok(Ok(body)) if FRAME_HEADER_BYTES + body.len() <= conn.max_frame_bytes => {
                    OutFrame::new(TYPE_ANSWER, id, kind, body)
                }
                Ok(Ok(body)) => error_frame(
                    id,
                    kind,
                    format!(
                        "answer of {} bytes exceeds the frame limit of {} bytes",
                        body.len(),
                        conn.max_frame_bytes
                    ),
                    conn.max_frame_bytes,
                ),
                Ok(Err(text)) => error_frame(id, kind, text, conn.max_frame_bytes),
                Err(_) => {
                    tracing::warn!(
                        peer_id = conn.peer_id,
                        kind,
                        "peer request handler panicked"
                    );
                    error_frame(id, kind, "handler panicked".into(), conn.max_frame_bytes)
                }
            };
            let len = answer.wire_bytes();
            let queued = conn.queued_answer_bytes.fetch_add(len, Ordering::AcqRel);
            if queued + len > conn.max_answer_bytes && queued > 0 {
                conn.too_slow.notify_one();
                return;
            }
            let _ = conn.answers.send(answer);
        });
    }
}

/// An error answer, its text cut (at a character boundary) to fit the frame limit.
fn error_frame(id: u64, kind: u8, mut text: String, max_frame_bytes: usize) -> OutFrame {
    let room = max_frame_bytes.saturating_sub(FRAME_HEADER_BYTES);
    if text.len() > room {
        let mut cut = room;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
    }
    OutFrame::new(TYPE_ERROR, id, kind, Bytes::from(text))
}

#[cfg(test)]
mod tests;
