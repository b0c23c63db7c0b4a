//! Watch handles: a one-shot watch is a future of one event; a persistent watch is a stream
//! that removes its server-side watch when dropped.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::Stream;
use tokio::sync::{mpsc, oneshot, watch};

use crate::error::Error;
use crate::session::Command;
use crate::types::{NodeEvent, SessionState, WatchEvent};

/// The one event a one-shot watch (from `get_data_w`, `exists_w`, `children_w`) delivers.
///
/// It survives disconnects (the client re-registers it); it resolves to an error only if the
/// session ends first.
#[must_use = "a watch does nothing unless awaited"]
pub struct OneshotWatch {
    pub(crate) rx: oneshot::Receiver<Result<NodeEvent, Error>>,
    pub(crate) state: watch::Receiver<SessionState>,
}

impl Future for OneshotWatch {
    type Output = Result<NodeEvent, Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match Pin::new(&mut self.rx).poll(cx) {
            Poll::Ready(Ok(r)) => Poll::Ready(r),
            Poll::Ready(Err(_)) => {
                let state = *self.state.borrow();
                Poll::Ready(Err(if state.is_terminal() {
                    state.terminal_error()
                } else {
                    Error::Closed
                }))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

/// A persistent (optionally recursive) watch: a stream of node events and session-state
/// changes. It ends after the session does. Dropping it removes the watch from the server once
/// no other watcher of this client needs it.
pub struct PersistentWatch {
    pub(crate) id: u64,
    pub(crate) path: String,
    pub(crate) rx: mpsc::UnboundedReceiver<WatchEvent>,
    pub(crate) commands: mpsc::WeakUnboundedSender<Command>,
}

impl PersistentWatch {
    /// The watched path (relative to the chroot).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The next item; `None` once the session is over.
    pub async fn next(&mut self) -> Option<WatchEvent> {
        self.rx.recv().await
    }

    /// The next node event, skipping session-state and [`WatchEvent::MayHaveMissed`] items
    /// (so a caller of this method cannot learn of a gap). `Err` once the session is over.
    pub async fn next_node_event(&mut self) -> Result<NodeEvent, Error> {
        loop {
            match self.rx.recv().await {
                Some(WatchEvent::Node(e)) => return Ok(e),
                Some(WatchEvent::Session(s)) if s.is_terminal() => return Err(s.terminal_error()),
                Some(WatchEvent::Session(_)) | Some(WatchEvent::MayHaveMissed) => continue,
                None => return Err(Error::Closed),
            }
        }
    }
}

impl Stream for PersistentWatch {
    type Item = WatchEvent;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<WatchEvent>> {
        self.rx.poll_recv(cx)
    }
}

impl Drop for PersistentWatch {
    fn drop(&mut self) {
        if let Some(tx) = self.commands.upgrade() {
            let _ = tx.send(Command::Unwatch { id: self.id });
        }
    }
}

impl std::fmt::Debug for PersistentWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PersistentWatch")
            .field("id", &self.id)
            .field("path", &self.path)
            .finish()
    }
}
