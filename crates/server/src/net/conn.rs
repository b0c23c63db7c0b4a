//! One task per client connection: frames in, frames out, nothing else. All protocol
//! decisions are the driver's; this code only moves bytes and enforces the framing limits.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use corral_proto::frame::four_letter_word;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, Notify, Semaphore};
use tracing::Instrument;

use super::frames::FrameBuffer;
use super::limit::ConnPermit;
use crate::config::FourLetterWhitelist;
use crate::core::ConnId;
use crate::driver::{ConnHandle, FramePermit, Inbound, Outbound};
use crate::four_letter;

/// Settings and channels every connection task shares.
pub(crate) struct ConnContext {
    pub inbound: mpsc::Sender<Inbound>,
    pub max_frame_bytes: usize,
    pub whitelist: FourLetterWhitelist,
    /// Frames that may wait for a slow reader before it is disconnected.
    pub outbound_capacity: usize,
    /// Bytes that may wait for a slow reader before it is disconnected.
    pub outbound_max_bytes: usize,
    /// Reply bytes waiting for a slow reader at which its requests stop being read (until
    /// the writer gets below it again).
    pub outbound_pause_bytes: usize,
    /// Request bytes one connection may have on their way to the driver.
    pub inbound_max_bytes: usize,
    /// Requests one connection may have received and not yet answered.
    pub max_outstanding: usize,
    /// A connection must complete its handshake (a whole ConnectRequest, or a four-letter
    /// word) within this, or it is closed.
    pub handshake_timeout_ms: u64,
    /// How long the writer may take to flush what is queued once the server closed the
    /// connection, before the socket is dropped.
    pub close_grace_ms: u64,
    /// What `gtmk` reads and `stmk` sets; answered here, as it is no state of the core.
    pub trace_mask: four_letter::TraceMask,
    /// Acknowledge received requests at once (`corral.clientQuickAck`, see [`ack_promptly`]).
    pub quick_ack: bool,
}

/// Bytes gathered into one write when several frames are queued.
const WRITE_BATCH_BYTES: usize = 64 * 1024;

/// Serves one client connection. Everything it logs is inside a `conn` span carrying the
/// connection id, the peer and, once the ConnectResponse is written, the session id (as
/// ZooKeeper writes it: `0x` and lower-case hex), so every line about a client names it.
pub(crate) async fn serve(
    stream: TcpStream,
    conn: ConnId,
    peer: SocketAddr,
    ctx: Arc<ConnContext>,
    permit: ConnPermit,
) {
    // At error level so the span is enabled whenever any line inside it is: a filter that
    // keeps only warnings must not drop the session id from them.
    let span = tracing::error_span!(
        "conn",
        conn,
        %peer,
        session_id = tracing::field::Empty
    );
    serve_in_span(stream, conn, peer, ctx, permit)
        .instrument(span)
        .await
}

async fn serve_in_span(
    stream: TcpStream,
    conn: ConnId,
    peer: SocketAddr,
    ctx: Arc<ConnContext>,
    _permit: ConnPermit,
) {
    // Replies are small and latency-bound; never let Nagle hold them back.
    let _ = stream.set_nodelay(true);
    let (mut rd, mut wr) = stream.into_split();
    let mut frames = FrameBuffer::new(ctx.max_frame_bytes);

    // The handshake has a deadline: a connection that never completes it (it sent nothing,
    // or announced a frame and stopped) would otherwise hold its socket and buffer forever.
    let handshake = tokio::time::timeout(
        Duration::from_millis(ctx.handshake_timeout_ms),
        read_handshake(&mut rd, &mut frames),
    )
    .await;
    let first = match handshake {
        Ok(Ok(Handshake::FourLetter(word))) => {
            answer_four_letter(word, peer, &ctx, &mut rd, &mut frames, &mut wr).await;
            return;
        }
        Ok(Ok(Handshake::Connect(body))) => body,
        Ok(Err(reason)) => {
            tracing::debug!(reason, "connection ended before its handshake");
            return;
        }
        Err(_) => {
            tracing::info!(
                timeout_ms = ctx.handshake_timeout_ms,
                buffered_bytes = frames.buffered().len(),
                "closing connection: no complete handshake within the timeout"
            );
            return;
        }
    };

    let (tx, rx) = mpsc::channel(ctx.outbound_capacity);
    let handle = ConnHandle::new(
        tx,
        ctx.outbound_pause_bytes,
        ctx.outbound_max_bytes,
        ctx.max_outstanding,
    );
    let kill = handle.kill.clone();
    let closing = handle.closing.clone();
    let budget = ReadBudget {
        outstanding: handle.outstanding.clone(),
        inbound_bytes: Arc::new(Semaphore::new(ctx.inbound_max_bytes)),
        max_inbound_bytes: ctx.inbound_max_bytes,
        queued_bytes: handle.queued_bytes.clone(),
        pause_bytes: ctx.outbound_pause_bytes,
        drained: Arc::new(Notify::new()),
    };
    if ctx
        .inbound
        .send(Inbound::Opened { conn, peer, handle })
        .await
        .is_err()
    {
        return; // shutting down
    }
    let grace = Duration::from_millis(ctx.close_grace_ms);
    let reason = tokio::select! {
        r = read_frames(conn, first, &mut rd, &mut frames, &ctx, &budget) => r,
        r = write_frames(conn, &mut wr, rx, &budget, &ctx.inbound) => r,
        _ = kill.notified() => "not reading replies (send queue full)".to_string(),
        _ = async { closing.notified().await; tokio::time::sleep(grace).await } => {
            format!("closed by the server; replies not flushed within {} ms", grace.as_millis())
        }
    };
    tracing::debug!(reason, "connection ended");
    let _ = ctx.inbound.send(Inbound::Closed { conn }).await;
}

/// What a new connection turned out to be.
enum Handshake {
    FourLetter(&'static str),
    /// The body of the first frame (a ConnectRequest, for the core to judge).
    Connect(Bytes),
}

/// Reads until the connection has shown what it is; the error says why it ended first.
async fn read_handshake(
    rd: &mut OwnedReadHalf,
    frames: &mut FrameBuffer,
) -> Result<Handshake, String> {
    // The first four bytes decide: a four-letter word, or the length of a ConnectRequest.
    while frames.buffered().len() < 4 {
        read_more(rd, frames).await?;
    }
    if let Some(word) = four_letter_word(&frames.buffered()[..4]) {
        return Ok(Handshake::FourLetter(word));
    }
    loop {
        match frames.next_frame() {
            Ok(Some(body)) => return Ok(Handshake::Connect(body)),
            Ok(None) => read_more(rd, frames).await?,
            Err(e) => {
                tracing::warn!(error = %e, "closing connection: bad frame length");
                return Err(e.to_string());
            }
        }
    }
}

async fn read_more(rd: &mut OwnedReadHalf, frames: &mut FrameBuffer) -> Result<(), String> {
    match rd.read_buf(frames.read_buf()).await {
        Ok(0) => Err("closed by the client".into()),
        Ok(_) => Ok(()),
        Err(e) => Err(format!("read error: {e}")),
    }
}

/// The reader's side of a connection's budgets: it stops reading the socket while the
/// connection has too many requests unanswered, too many request bytes on their way to the
/// driver, or too many reply bytes waiting for the client to read them.
struct ReadBudget {
    outstanding: Arc<Semaphore>,
    inbound_bytes: Arc<Semaphore>,
    max_inbound_bytes: usize,
    queued_bytes: Arc<AtomicUsize>,
    pause_bytes: usize,
    /// Signalled by the writer when the queued reply bytes fall below `pause_bytes`.
    drained: Arc<Notify>,
}

impl ReadBudget {
    /// Waits for room for one more request of `len` bytes; `None` if the budgets are gone.
    async fn admit(&self, len: usize) -> Option<FramePermit> {
        self.wait_for_replies_to_drain().await;
        let request = self.outstanding.clone().acquire_owned().await.ok()?;
        // A frame larger than the whole budget takes all of it (jute.maxbuffer decides
        // whether it is acceptable at all).
        let want = len.min(self.max_inbound_bytes).min(u32::MAX as usize) as u32;
        let bytes = self
            .inbound_bytes
            .clone()
            .acquire_many_owned(want)
            .await
            .ok()?;
        Some(FramePermit {
            request,
            _bytes: bytes,
        })
    }

    async fn wait_for_replies_to_drain(&self) {
        loop {
            // Registered before the check, so a wake-up between the two is not lost.
            let drained = self.drained.notified();
            tokio::pin!(drained);
            drained.as_mut().enable();
            if self.queued_bytes.load(Ordering::Acquire) < self.pause_bytes {
                return;
            }
            drained.await;
        }
    }

    /// The writer wrote `written` bytes off the queue. True when that took the queue
    /// below the pause mark (the driver is then told, as it may have set requests aside).
    fn written(&self, written: usize) -> bool {
        let before = self.queued_bytes.fetch_sub(written, Ordering::AcqRel);
        let after = before.saturating_sub(written);
        if after < self.pause_bytes {
            self.drained.notify_one();
        }
        before >= self.pause_bytes && after < self.pause_bytes
    }
}

/// How long `stmk` waits for its 8-byte argument before the connection is dropped unanswered.
const STMK_ARGUMENT_TIMEOUT_MS: u64 = 5_000;

async fn answer_four_letter(
    word: &'static str,
    peer: SocketAddr,
    ctx: &ConnContext,
    rd: &mut OwnedReadHalf,
    frames: &mut FrameBuffer,
    wr: &mut OwnedWriteHalf,
) {
    let allowed = ctx.whitelist.allows(word);
    let text = if allowed && word == "gtmk" {
        ctx.trace_mask.gtmk()
    } else if allowed && word == "stmk" {
        // ZooKeeper reads the mask right after the word; without it there is no answer.
        let wanted = 4 + four_letter::STMK_ARGUMENT_BYTES;
        let read_argument = async {
            while frames.buffered().len() < wanted {
                match rd.read_buf(frames.read_buf()).await {
                    Ok(0) | Err(_) => return false,
                    Ok(_) => {}
                }
            }
            true
        };
        let timeout = std::time::Duration::from_millis(STMK_ARGUMENT_TIMEOUT_MS);
        if !matches!(tokio::time::timeout(timeout, read_argument).await, Ok(true)) {
            tracing::debug!("stmk without its 8-byte mask");
            return;
        }
        let mut argument = [0u8; four_letter::STMK_ARGUMENT_BYTES];
        argument.copy_from_slice(&frames.buffered()[4..wanted]);
        tracing::info!(word, "processing four-letter word");
        ctx.trace_mask.stmk(argument)
    } else if allowed {
        tracing::info!(word, "processing four-letter word");
        let (reply, answer) = oneshot::channel();
        if ctx
            .inbound
            .send(Inbound::FourLetter { word, peer, reply })
            .await
            .is_err()
        {
            return;
        }
        match answer.await {
            Ok(text) => text,
            Err(_) => return,
        }
    } else {
        tracing::debug!(word, "four-letter word not in the whitelist");
        four_letter::refusal(word)
    };
    let _ = wr.write_all(text.as_bytes()).await;
    let _ = wr.shutdown().await;
}

/// Forwards the connect frame, then reads frames and forwards them; returns why reading
/// stopped.
async fn read_frames(
    conn: ConnId,
    first: Bytes,
    rd: &mut OwnedReadHalf,
    frames: &mut FrameBuffer,
    ctx: &ConnContext,
    budget: &ReadBudget,
) -> String {
    let inbound = &ctx.inbound;
    let mut next = Some(first);
    loop {
        loop {
            let body = match next.take() {
                Some(body) => body,
                None => match frames.next_frame() {
                    Ok(Some(body)) => body,
                    Ok(None) => break,
                    Err(e) => {
                        tracing::warn!(error = %e, "closing connection: bad frame length");
                        return e.to_string();
                    }
                },
            };
            // Waiting here is the backpressure: nothing more is read from this socket until
            // the connection is within its budgets, and a busy driver slows every reader.
            let Some(permit) = budget.admit(body.len()).await else {
                return "server shutting down".into();
            };
            if inbound
                .send(Inbound::Frame { conn, body, permit })
                .await
                .is_err()
            {
                return "server shutting down".into();
            }
        }
        if let Err(reason) = read_more(rd, frames).await {
            return reason;
        }
        if ctx.quick_ack {
            ack_promptly(rd.as_ref());
        }
    }
}

/// Makes the kernel acknowledge the next data from this client at once rather than delay
/// the ACK (Linux's TCP_QUICKACK, which the kernel clears again on its own, so it is set
/// after every read). Why: a client that pipelines requests without TCP_NODELAY (the Rust
/// `zookeeper-client` crate, for one) gets each further small request held back by Nagle's
/// algorithm until the one before is acknowledged; with delayed ACKs that waits for a reply,
/// so its requests reach the server in bursts, one commit cycle apart. Measured with the
/// neutral zkbench on 2 cores (BENCHMARKS.md): standalone durable writes ~80k → ~110k/s,
/// a 3-member ensemble's ~25k → ~38k/s; reads unchanged.
fn ack_promptly(stream: &TcpStream) {
    #[cfg(target_os = "linux")]
    if let Err(e) = socket2::SockRef::from(stream).set_tcp_quickack(true) {
        // Harmless to go without (replies still carry the ACKs); worth a trace only.
        tracing::trace!(error = %e, "could not set TCP_QUICKACK");
    }
    #[cfg(not(target_os = "linux"))]
    let _ = stream;
}

/// Writes queued frames, several per syscall when they pile up; returns why it stopped.
async fn write_frames(
    conn: ConnId,
    wr: &mut OwnedWriteHalf,
    mut rx: mpsc::Receiver<Outbound>,
    budget: &ReadBudget,
    inbound: &mpsc::Sender<Inbound>,
) -> String {
    // Small frames are gathered here; a large one is written from its own buffer, so this
    // never grows past one batch (a connection idles with at most that much).
    let mut batch = BytesMut::new();
    let mut connect_reply_seen = false;
    while let Some(first) = rx.recv().await {
        let mut close = false;
        let mut next = Some(first);
        let mut written = 0;
        while let Some(msg) = next.take() {
            if let (false, Outbound::Frame(f)) = (connect_reply_seen, &msg) {
                connect_reply_seen = true;
                record_session_id(f);
            }
            match msg {
                Outbound::Frame(f) if f.len() >= WRITE_BATCH_BYTES => {
                    if let Err(e) = write_out(wr, &mut batch).await {
                        return e;
                    }
                    if let Err(e) = wr.write_all(&f).await {
                        return format!("write error: {e}");
                    }
                    written += f.len();
                }
                Outbound::Frame(f) => {
                    written += f.len();
                    batch.extend_from_slice(&f);
                }
                Outbound::Close => {
                    close = true;
                    break;
                }
            }
            if batch.len() < WRITE_BATCH_BYTES {
                next = rx.try_recv().ok();
            }
        }
        if let Err(e) = write_out(wr, &mut batch).await {
            return e;
        }
        if budget.written(written) {
            // Requests the driver set aside while the replies were backed up can go on.
            if inbound.send(Inbound::Drained { conn }).await.is_err() {
                return "server shutting down".into();
            }
        }
        if close {
            let _ = wr.shutdown().await;
            return "closed by the server".into();
        }
    }
    // The driver dropped our queue: it is shutting down.
    let _ = wr.shutdown().await;
    "server shutting down".into()
}

/// Names the session in the connection's span, from the first frame the connection is sent:
/// always the ConnectResponse (length prefix, protocol version, timeout, session id). A
/// refused connect carries session id 0 and names none.
fn record_session_id(connect_reply: &[u8]) {
    let Some(id) = connect_reply
        .get(12..20)
        .and_then(|b| b.try_into().ok())
        .map(i64::from_be_bytes)
    else {
        return;
    };
    if id != 0 {
        let label = crate::core::session_label(Some(id));
        tracing::Span::current().record("session_id", tracing::field::display(&label));
        tracing::debug!("session established");
    }
}

async fn write_out(wr: &mut OwnedWriteHalf, batch: &mut BytesMut) -> Result<(), String> {
    if batch.is_empty() {
        return Ok(());
    }
    wr.write_all(batch)
        .await
        .map_err(|e| format!("write error: {e}"))?;
    batch.clear();
    Ok(())
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// The kernel clears quick-ACK mode by itself as a connection turns interactive; what
    /// `ack_promptly` must do is switch it back on, on the connection it is given.
    #[tokio::test]
    async fn ack_promptly_switches_the_socket_to_quick_acks() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let _client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let sock = socket2::SockRef::from(&server);
        sock.set_tcp_quickack(false).unwrap();
        assert!(!sock.tcp_quickack().unwrap());
        ack_promptly(&server);
        assert!(sock.tcp_quickack().unwrap());
    }
}
