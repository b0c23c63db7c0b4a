//! Leader election: candidates queue as ephemeral-sequential nodes; the first is the leader;
//! each other candidate watches only its predecessor.

use tokio::sync::watch;
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
        let task = tokio::spawn(follow(
            self.client.clone(),
            self.dir.clone(),
            Entry {
                name: entry.name.clone(),
                path: entry.path.clone(),
            },
            tx,
        ));
        Ok(Leadership {
            client: self.client.clone(),
            path: entry.path,
            rx,
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

/// Publishes whether this candidate leads. While disconnected a candidate does not claim
/// leadership (its session may be expiring); it ends as `false` when its node is gone.
async fn follow(client: Client, dir: String, me: Entry, tx: watch::Sender<bool>) {
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

    /// A receiver of leadership changes (`true` while leading).
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.rx.clone()
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
