//! Leader election: candidates queue as ephemeral-sequential nodes; the first is the leader;
//! each other candidate watches only its predecessor.
//!
//! A [`Leadership`] behaves as a leader latch: it stays in the election until resigned or
//! dropped, says whether it leads now ([`Leadership::is_leader`]), lets its owner wait for
//! leadership, and reports every gain and loss, in order, as [`LeadershipEvent`]s.

use futures::Stream;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::queue::{self, Entry};
use super::{await_connected, await_not_connected};
use crate::path::join;
use crate::{Client, Error};

const PREFIX: &str = "c-";

/// An election held under a directory node.
#[derive(Clone)]
pub struct LeaderElection {
    client: Client,
    dir: String,
}

impl LeaderElection {
    pub fn new(client: &Client, dir: &str) -> Self {
        LeaderElection {
            client: client.clone(),
            dir: dir.to_string(),
        }
    }

    /// Enters the election with `payload` (e.g. this candidate's address) and returns the
    /// candidacy, whose leadership changes are published as they happen.
    pub async fn campaign(&self, payload: &[u8]) -> Result<Leadership, Error> {
        let entry = queue::enter(&self.client, &self.dir, PREFIX, payload).await?;
        let (tx, rx) = watch::channel(false);
        let (events_tx, events) = mpsc::unbounded_channel();
        let status = Status {
            now: tx,
            events: events_tx,
        };
        let task = tokio::spawn(follow(
            self.client.clone(),
            self.dir.clone(),
            Entry {
                name: entry.name.clone(),
                path: entry.path.clone(),
            },
            status,
        ));
        Ok(Leadership {
            client: self.client.clone(),
            path: entry.path,
            rx,
            events,
            task,
        })
    }

    /// The current leader's payload, if there is a leader.
    pub async fn leader(&self) -> Result<Option<Vec<u8>>, Error> {
        for name in queue::members(&self.client, &self.dir).await? {
            match self.client.get_data(&join(&self.dir, &name)).await {
                Ok((data, _)) => return Ok(Some(data)),
                Err(Error::Zk(crate::ZkError::NoNode)) => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }
}

/// A change of a candidate's leadership.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeadershipEvent {
    /// The candidate became the leader.
    Elected,
    /// The candidate stopped leading: the connection dropped (the session may be expiring, so
    /// it must not act as leader), or its node or session is gone.
    Revoked,
}

/// Where a candidate's leadership is published: the current value, and each transition.
struct Status {
    now: watch::Sender<bool>,
    events: mpsc::UnboundedSender<LeadershipEvent>,
}

impl Status {
    fn send_replace(&self, leading: bool) {
        let was = self.now.send_replace(leading);
        if was != leading {
            let _ = self.events.send(if leading {
                LeadershipEvent::Elected
            } else {
                LeadershipEvent::Revoked
            });
        }
    }
}

/// Publishes whether this candidate leads. While disconnected a candidate does not claim
/// leadership (its session may be expiring); it ends as `false` when its node is gone.
async fn follow(client: Client, dir: String, me: Entry, tx: Status) {
    loop {
        match queue::wait_turn(&client, &dir, &me, |ahead| ahead.last().cloned()).await {
            Ok(()) => {}
            Err(_) => break,
        }
        tx.send_replace(true);
        // Leadership lasts until the connection drops or the node goes.
        let node_gone = async {
            loop {
                match client.exists_w(&me.path).await {
                    Ok((None, _)) => return,
                    Ok((Some(_), w)) => {
                        if w.await.is_err() {
                            return;
                        }
                    }
                    Err(_) => return,
                }
            }
        };
        tokio::select! {
            _ = node_gone => {
                tx.send_replace(false);
                break;
            }
            _ = await_not_connected(&client) => {
                tx.send_replace(false);
                if await_connected(&client).await.is_err() {
                    break;
                }
            }
        }
    }
    tx.send_replace(false);
}

/// One candidacy. Dropping it (or [`Leadership::resign`]) leaves the election.
pub struct Leadership {
    client: Client,
    path: String,
    rx: watch::Receiver<bool>,
    events: mpsc::UnboundedReceiver<LeadershipEvent>,
    task: JoinHandle<()>,
}

impl Leadership {
    pub fn is_leader(&self) -> bool {
        *self.rx.borrow()
    }

    /// This candidate's node.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Waits until this candidate leads. `Err` if the candidacy ended first.
    pub async fn wait_leader(&mut self) -> Result<(), Error> {
        self.rx.wait_for(|l| *l).await.map_err(|_| Error::Closed)?;
        Ok(())
    }

    /// Waits until this candidate no longer leads (lost connection, session or node).
    pub async fn wait_not_leader(&mut self) {
        let _ = self.rx.wait_for(|l| !*l).await;
    }

    /// A receiver of the current leadership (`true` while leading); quick successive changes
    /// may be seen as the last one only. [`Leadership::next_event`] sees each.
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.rx.clone()
    }

    /// The next gain or loss of leadership; `None` once the candidacy is over and every event
    /// was taken.
    pub async fn next_event(&mut self) -> Option<LeadershipEvent> {
        self.events.recv().await
    }

    /// The gains and losses of leadership as a stream.
    pub fn events(&mut self) -> impl Stream<Item = LeadershipEvent> + '_ {
        futures::stream::poll_fn(move |cx| self.events.poll_recv(cx))
    }

    /// Leaves the election, giving up leadership if held.
    pub async fn resign(self) -> Result<(), Error> {
        self.task.abort();
        queue::leave(&self.client, &self.path).await
    }
}

impl Drop for Leadership {
    fn drop(&mut self) {
        self.task.abort();
        let client = self.client.clone();
        let path = self.path.clone();
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move { queue::leave(&client, &path).await });
        }
    }
}
