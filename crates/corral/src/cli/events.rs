//! The event pump: one task prints every watch event and session transition the shell's
//! watches produce, zkCli-style, without tearing the prompt (through rustyline's external
//! printer while a line is being edited).
//!
//! Events caused by the shell's own commands must appear before the next prompt, as with
//! zkCli: the client hands a notification to its watchers before it hands over the reply that
//! follows it on the connection, so after each command the shell sends a flush request, and
//! the pump (polling watches before requests) answers it only once every ready event is out.

use std::collections::HashSet;
use std::io::Write;
use std::sync::{Arc, Mutex};

use corral_client::{Client, EventType, SessionState};
use futures::future::{AbortHandle, Abortable};
use futures::stream::{BoxStream, SelectAll, StreamExt};
use futures::FutureExt;
use tokio::sync::{mpsc, oneshot};

use super::format::ShownEvent;

/// Where printed text goes.
pub type ExternalPrinter = Box<dyn rustyline::ExternalPrinter + Send>;

/// What kind of watch the shell left, for `removewatches`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchKind {
    Data,
    Child,
    Persistent,
    PersistentRecursive,
}

impl WatchKind {
    fn removed_event(self) -> EventType {
        match self {
            WatchKind::Data => EventType::DataWatchRemoved,
            WatchKind::Child => EventType::ChildWatchRemoved,
            WatchKind::Persistent | WatchKind::PersistentRecursive => {
                EventType::PersistentWatchRemoved
            }
        }
    }
}

struct Registered {
    id: u64,
    path: String,
    kind: WatchKind,
    abort: AbortHandle,
}

enum Msg {
    Add(BoxStream<'static, ShownEvent>),
    Show(ShownEvent),
    Flush(oneshot::Sender<()>),
    Printer(Option<ExternalPrinter>),
    Enabled(bool),
}

/// The shell's handle on the pump and on the watches it holds.
#[derive(Clone)]
pub struct Events {
    tx: mpsc::UnboundedSender<Msg>,
    watches: Arc<Mutex<Vec<Registered>>>,
    next_id: Arc<std::sync::atomic::AtomicU64>,
}

impl Events {
    /// Starts the pump on the current runtime.
    pub fn start(json: bool) -> Events {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(pump(rx, json));
        Events {
            tx,
            watches: Arc::new(Mutex::new(Vec::new())),
            next_id: Arc::new(std::sync::atomic::AtomicU64::new(1)),
        }
    }

    pub fn set_printer(&self, printer: Option<ExternalPrinter>) {
        let _ = self.tx.send(Msg::Printer(printer));
    }

    /// `printwatches on|off`.
    pub fn set_enabled(&self, on: bool) {
        let _ = self.tx.send(Msg::Enabled(on));
    }

    /// Waits until every event that is ready now has been printed.
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Msg::Flush(tx)).is_ok() {
            let _ = rx.await;
        }
    }

    pub fn show(&self, ev: ShownEvent) {
        let _ = self.tx.send(Msg::Show(ev));
    }

    /// Follows a new session's state: `SyncConnected`, `Disconnected`, `Closed`, ...
    pub fn follow_session(&self, client: &Client) {
        let rx = client.state_watcher();
        let stream = futures::stream::unfold((rx, None), |(mut rx, last)| async move {
            loop {
                let state: SessionState = *rx.borrow_and_update();
                if Some(state) != last {
                    if let Some(ev) = ShownEvent::session(state) {
                        return Some((ev, (rx, Some(state))));
                    }
                }
                if state.is_terminal() || rx.changed().await.is_err() {
                    return None;
                }
            }
        });
        let _ = self.tx.send(Msg::Add(stream.boxed()));
    }

    /// Registers a one-shot watch (from `get -w`, `stat -w`, `ls -w`).
    pub fn add_oneshot(&self, path: &str, kind: WatchKind, watch: corral_client::OneshotWatch) {
        let (abort, reg) = AbortHandle::new_pair();
        let id = self.register(path, kind, abort);
        let watches = self.watches.clone();
        let fut = Abortable::new(watch, reg).map(move |r| {
            forget(&watches, id);
            match r {
                Ok(Ok(ev)) => Some(ShownEvent::node(&ev)),
                _ => None,
            }
        });
        let stream = fut.into_stream().filter_map(futures::future::ready);
        let _ = self.tx.send(Msg::Add(stream.boxed()));
    }

    /// Registers a persistent watch (from `addWatch`); dropping its stream removes it from
    /// the server.
    pub fn add_persistent(
        &self,
        path: &str,
        kind: WatchKind,
        watch: corral_client::PersistentWatch,
    ) {
        let (abort, reg) = AbortHandle::new_pair();
        let id = self.register(path, kind, abort);
        let watches = self.watches.clone();
        let events = futures::stream::Abortable::new(watch, reg)
            .filter_map(|item| {
                futures::future::ready(match item {
                    // Session transitions are shown once, by the session follower.
                    corral_client::WatchEvent::Node(ev) => Some(ShownEvent::node(&ev)),
                    corral_client::WatchEvent::Session(_) => None,
                    corral_client::WatchEvent::MayHaveMissed => None,
                })
            })
            .chain(
                futures::stream::once(async move {
                    forget(&watches, id);
                })
                .filter_map(|_| futures::future::ready(None)),
            );
        let _ = self.tx.send(Msg::Add(events.boxed()));
    }

    fn register(&self, path: &str, kind: WatchKind, abort: AbortHandle) -> u64 {
        let id = self
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.watches.lock().unwrap().push(Registered {
            id,
            path: path.to_string(),
            kind,
            abort,
        });
        id
    }

    /// Drops the shell's watches on `path` whose kind `matches`; shows the removal events zkCli
    /// shows. Returns whether any watch was removed.
    pub fn remove(&self, path: &str, matches: impl Fn(WatchKind) -> bool) -> bool {
        let mut removed = Vec::new();
        self.watches.lock().unwrap().retain(|w| {
            if w.path == path && matches(w.kind) {
                w.abort.abort();
                removed.push(w.kind.removed_event());
                false
            } else {
                true
            }
        });
        let mut shown = HashSet::new();
        for kind in removed {
            if shown.insert(kind) {
                self.show(ShownEvent::removed(kind, path));
            }
        }
        !shown.is_empty()
    }

    /// Forgets every watch (the session they belonged to is gone).
    pub fn clear(&self) {
        for w in self.watches.lock().unwrap().drain(..) {
            w.abort.abort();
        }
    }
}

fn forget(watches: &Mutex<Vec<Registered>>, id: u64) {
    watches.lock().unwrap().retain(|w| w.id != id);
}

struct Output {
    printer: Option<ExternalPrinter>,
    enabled: bool,
    json: bool,
}

impl Output {
    fn print(&mut self, ev: &ShownEvent) {
        if !self.enabled {
            return;
        }
        let text = if self.json {
            format!("{}\n", ev.json())
        } else {
            format!("\nWATCHER::\n\n{}\n", ev.line())
        };
        match &mut self.printer {
            Some(p) => {
                let _ = p.print(text);
            }
            None => {
                let mut out = std::io::stdout().lock();
                let _ = out.write_all(text.as_bytes());
                let _ = out.flush();
            }
        }
    }
}

async fn pump(mut rx: mpsc::UnboundedReceiver<Msg>, json: bool) {
    let mut streams: SelectAll<BoxStream<'static, ShownEvent>> = SelectAll::new();
    let mut out = Output {
        printer: None,
        enabled: true,
        json,
    };
    loop {
        tokio::select! {
            biased;
            Some(ev) = streams.next(), if !streams.is_empty() => {
                // One notification can reach several of the shell's watches (`get -w` and
                // `stat -w` on one node); zkCli's single watcher prints it once.
                let mut batch = HashSet::new();
                out.print(&ev);
                batch.insert(ev);
                while let Some(Some(ev)) = streams.next().now_or_never() {
                    if batch.insert(ev.clone()) {
                        out.print(&ev);
                    }
                }
            }
            msg = rx.recv() => match msg {
                None => return,
                Some(Msg::Add(s)) => streams.push(s),
                Some(Msg::Show(ev)) => out.print(&ev),
                Some(Msg::Flush(done)) => {
                    let _ = done.send(());
                }
                Some(Msg::Printer(p)) => out.printer = p,
                Some(Msg::Enabled(on)) => out.enabled = on,
            },
        }
    }
}
