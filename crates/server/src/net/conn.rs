//! One task per client connection: frames in, frames out, nothing else. All protocol
//! decisions are the driver's; this code only moves bytes and enforces the framing limits.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::BytesMut;
use corral_proto::frame::four_letter_word;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, Notify};

use super::frames::FrameBuffer;
use super::limit::ConnPermit;
use crate::config::FourLetterWhitelist;
use crate::core::ConnId;
use crate::driver::{ConnHandle, Inbound, Outbound};
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
    /// What `gtmk` reads and `stmk` sets; answered here, as it is no state of the core.
    pub trace_mask: four_letter::TraceMask,
}

/// Bytes gathered into one write when several frames are queued.
const WRITE_BATCH_BYTES: usize = 64 * 1024;

pub(crate) async fn serve(
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

    // The first four bytes decide: a four-letter word, or the length of a ConnectRequest.
    while frames.buffered().len() < 4 {
        match rd.read_buf(frames.read_buf()).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
    if let Some(word) = four_letter_word(&frames.buffered()[..4]) {
        answer_four_letter(word, peer, &ctx, &mut rd, &mut frames, &mut wr).await;
        return;
    }

    let (tx, rx) = mpsc::channel(ctx.outbound_capacity);
    let kill = Arc::new(Notify::new());
    let queued_bytes = Arc::new(AtomicUsize::new(0));
    let handle = ConnHandle {
        tx,
        kill: kill.clone(),
        queued_bytes: queued_bytes.clone(),
        max_queued_bytes: ctx.outbound_max_bytes,
    };
    if ctx
        .inbound
        .send(Inbound::Opened { conn, peer, handle })
        .await
        .is_err()
    {
        return; // shutting down
    }
    let reason = tokio::select! {
        r = read_frames(conn, &mut rd, &mut frames, &ctx.inbound) => r,
        r = write_frames(&mut wr, rx, &queued_bytes) => r,
        _ = kill.notified() => "not reading replies (send queue full)".to_string(),
    };
    tracing::debug!(conn, %peer, reason, "connection ended");
    let _ = ctx.inbound.send(Inbound::Closed { conn }).await;
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
            tracing::debug!(%peer, "stmk without its 8-byte mask");
            return;
        }
        let mut argument = [0u8; four_letter::STMK_ARGUMENT_BYTES];
        argument.copy_from_slice(&frames.buffered()[4..wanted]);
        tracing::info!(word, %peer, "processing four-letter word");
        ctx.trace_mask.stmk(argument)
    } else if allowed {
        tracing::info!(word, %peer, "processing four-letter word");
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
        tracing::debug!(word, %peer, "four-letter word not in the whitelist");
        four_letter::refusal(word)
    };
    let _ = wr.write_all(text.as_bytes()).await;
    let _ = wr.shutdown().await;
}

/// Reads frames and forwards them; returns why reading stopped.
async fn read_frames(
    conn: ConnId,
    rd: &mut OwnedReadHalf,
    frames: &mut FrameBuffer,
    inbound: &mpsc::Sender<Inbound>,
) -> String {
    loop {
        loop {
            match frames.next_frame() {
                Ok(Some(body)) => {
                    // Awaiting here is the backpressure: a busy driver slows readers down
                    // instead of buffering without bound.
                    if inbound.send(Inbound::Frame { conn, body }).await.is_err() {
                        return "server shutting down".into();
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(conn, error = %e, "closing connection: bad frame length");
                    return e.to_string();
                }
            }
        }
        match rd.read_buf(frames.read_buf()).await {
            Ok(0) => return "closed by the client".into(),
            Ok(_) => {}
            Err(e) => return format!("read error: {e}"),
        }
    }
}

/// Writes queued frames, several per syscall when they pile up; returns why it stopped.
async fn write_frames(
    wr: &mut OwnedWriteHalf,
    mut rx: mpsc::Receiver<Outbound>,
    queued_bytes: &AtomicUsize,
) -> String {
    let mut batch = BytesMut::new();
    while let Some(first) = rx.recv().await {
        let mut close = false;
        let mut next = Some(first);
        while let Some(msg) = next.take() {
            match msg {
                Outbound::Frame(f) => batch.extend_from_slice(&f),
                Outbound::Close => {
                    close = true;
                    break;
                }
            }
            if batch.len() < WRITE_BATCH_BYTES {
                next = rx.try_recv().ok();
            }
        }
        if let Err(e) = wr.write_all(&batch).await {
            return format!("write error: {e}");
        }
        queued_bytes.fetch_sub(batch.len(), Ordering::AcqRel);
        batch.clear();
        if close {
            let _ = wr.shutdown().await;
            return "closed by the server".into();
        }
    }
    // The driver dropped our queue: it is shutting down.
    let _ = wr.shutdown().await;
    "server shutting down".into()
}
