//! Distributed locks: an exclusive [`Mutex`] and a shared/exclusive [`RwLock`].

use super::queue::{self, Entry};
use crate::{Client, Error};

const WRITE: &str = "write-";
const READ: &str = "read-";

/// A queue node this process owns: removed when dropped (in the background), so a lock attempt
/// that is cancelled or fails, or a handle nobody released, does not leave it blocking others.
pub(super) struct OwnedNode {
    client: Client,
    path: Option<String>,
}

impl OwnedNode {
    pub(super) fn new(client: &Client, path: String) -> Self {
        OwnedNode {
            client: client.clone(),
            path: Some(path),
        }
    }

    pub(super) fn path(&self) -> &str {
        self.path.as_deref().unwrap_or_default()
    }

    /// Removes the node and waits until the server has.
    pub(super) async fn remove(mut self) -> Result<(), Error> {
        match self.path.take() {
            Some(path) => queue::leave(&self.client, &path).await,
            None => Ok(()),
        }
    }

    /// Resolves when the owning session has ended, taking the (ephemeral) node with it.
    pub(super) async fn lost(&self) {
        let mut w = self.client.state_watcher();
        let _ = w.wait_for(|s| s.is_terminal()).await;
    }
}

impl Drop for OwnedNode {
    fn drop(&mut self) {
        if let Some(path) = self.path.take() {
            let client = self.client.clone();
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move { queue::leave(&client, &path).await });
            }
        }
    }
}

/// A held lock. Release it with [`LockGuard::unlock`]; dropping it releases it in the
/// background. The lock is also lost if the session expires: [`LockGuard::lost`] says when.
pub struct LockGuard {
    node: OwnedNode,
}

impl LockGuard {
    /// The lock node's path.
    pub fn path(&self) -> &str {
        self.node.path()
    }

    /// Releases the lock and waits until the server has removed the node.
    pub async fn unlock(self) -> Result<(), Error> {
        self.node.remove().await
    }

    /// Resolves when the session holding the lock has ended (so the lock is gone).
    pub async fn lost(&self) {
        self.node.lost().await
    }
}

async fn acquire(
    client: &Client,
    dir: &str,
    prefix: &str,
    blocker: impl Fn(&[String]) -> Option<String>,
) -> Result<LockGuard, Error> {
    let Entry { name, path } = queue::enter(client, dir, prefix, b"").await?;
    let node = OwnedNode::new(client, path.clone());
    let me = Entry { name, path };
    queue::wait_turn(client, dir, &me, blocker).await?;
    Ok(LockGuard { node })
}

/// An exclusive lock on a directory node: holders queue as ephemeral-sequential children and
/// each waits only for the one ahead of it, so a release wakes exactly one waiter.
#[derive(Clone)]
pub struct Mutex {
    client: Client,
    dir: String,
}

impl Mutex {
    pub fn new(client: &Client, dir: &str) -> Self {
        Mutex {
            client: client.clone(),
            dir: dir.to_string(),
        }
    }

    /// Waits for the lock.
    pub async fn lock(&self) -> Result<LockGuard, Error> {
        acquire(&self.client, &self.dir, WRITE, |ahead| {
            ahead.last().cloned()
        })
        .await
    }
}

/// A shared/exclusive lock: readers share it, a writer excludes everyone; first come, first
/// served (a waiting writer holds back later readers).
#[derive(Clone)]
pub struct RwLock {
    client: Client,
    dir: String,
}

impl RwLock {
    pub fn new(client: &Client, dir: &str) -> Self {
        RwLock {
            client: client.clone(),
            dir: dir.to_string(),
        }
    }

    /// Waits for shared access: until no writer is ahead.
    pub async fn read(&self) -> Result<LockGuard, Error> {
        acquire(&self.client, &self.dir, READ, |ahead| {
            ahead.iter().rev().find(|n| n.starts_with(WRITE)).cloned()
        })
        .await
    }

    /// Waits for exclusive access: until nobody is ahead.
    pub async fn write(&self) -> Result<LockGuard, Error> {
        acquire(&self.client, &self.dir, WRITE, |ahead| {
            ahead.last().cloned()
        })
        .await
    }
}
