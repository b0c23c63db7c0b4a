//! Barriers: [`Barrier`] holds everyone until one process lifts it; [`DoubleBarrier`] lets a
//! set number of processes start together and finish together.

use super::await_connected;
use super::queue::{self, Entry};
use crate::path::join;
use crate::{Client, CreateMode, Error, ZkError};

/// A barrier that is up while its node exists: [`Barrier::wait`] returns once it is removed.
#[derive(Clone)]
pub struct Barrier {
    client: Client,
    path: String,
}

impl Barrier {
    pub fn new(client: &Client, path: &str) -> Self {
        Barrier {
            client: client.clone(),
            path: path.to_string(),
        }
    }

    /// Raises the barrier (a persistent node, so it outlives this session). Raising a raised
    /// barrier is fine.
    pub async fn set(&self) -> Result<(), Error> {
        let parent = crate::path::parent(&self.path);
        self.client.create_all(parent).await?;
        match self
            .client
            .create(&self.path, b"", CreateMode::Persistent)
            .await
        {
            Ok(_) | Err(Error::Zk(ZkError::NodeExists)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Lifts the barrier, releasing every waiter.
    pub async fn remove(&self) -> Result<(), Error> {
        queue::leave(&self.client, &self.path).await
    }

    /// Waits until the barrier is not up (at once if it is not).
    pub async fn wait(&self) -> Result<(), Error> {
        wait_gone(&self.client, &self.path).await
    }
}

/// Waits until `path` does not exist, through disconnects.
async fn wait_gone(client: &Client, path: &str) -> Result<(), Error> {
    loop {
        match client.exists_w(path).await {
            Ok((None, _)) => return Ok(()),
            // Any event (deleted, or changed) is a reason to look again.
            Ok((Some(_), w)) => {
                w.await?;
            }
            Err(e) if e.is_retryable() => await_connected(client).await?,
            Err(e) => return Err(e),
        }
    }
}

const MEMBER: &str = "member-";
const READY: &str = "ready";

/// A double barrier for `count` processes under a directory: [`DoubleBarrier::enter`] returns
/// once `count` members have entered, and [`DoubleBarrierMember::leave`] once every member has
/// left. Members are ephemeral nodes, so a member whose session ends counts as gone.
///
/// A directory serves one round: give each round its own (e.g. `/barriers/job-17`). The members
/// that leave last remove the release marker, leaving only the empty directory.
#[derive(Clone)]
pub struct DoubleBarrier {
    client: Client,
    dir: String,
    count: usize,
}

impl DoubleBarrier {
    pub fn new(client: &Client, dir: &str, count: usize) -> Self {
        DoubleBarrier {
            client: client.clone(),
            dir: dir.to_string(),
            count,
        }
    }

    /// Joins and waits until `count` members have joined.
    pub async fn enter(&self) -> Result<DoubleBarrierMember, Error> {
        if self.count == 0 {
            return Err(Error::BadArguments(
                "a double barrier needs count > 0".into(),
            ));
        }
        let client = &self.client;
        client.create_all(&self.dir).await?;
        let ready = join(&self.dir, READY);
        // Watch for the release before joining: the member that completes the set may create
        // the ready node at any moment after our node exists.
        let (already, ready_w) = loop {
            match client.exists_w(&ready).await {
                Ok((stat, w)) => break (stat.is_some(), w),
                Err(e) if e.is_retryable() => await_connected(client).await?,
                Err(e) => return Err(e),
            }
        };
        let me = queue::enter(client, &self.dir, MEMBER, b"").await?;
        let member = DoubleBarrierMember {
            client: client.clone(),
            dir: self.dir.clone(),
            me: Some(me),
        };
        if already {
            return Ok(member);
        }
        let joined = loop {
            match queue::members(client, &self.dir).await {
                Ok(m) => break m.len(),
                Err(e) if e.is_retryable() => await_connected(client).await?,
                Err(e) => return Err(e),
            }
        };
        if joined >= self.count {
            match client.create(&ready, b"", CreateMode::Persistent).await {
                Ok(_) | Err(Error::Zk(ZkError::NodeExists)) => return Ok(member),
                Err(e) if e.is_retryable() => {}
                Err(e) => return Err(e),
            }
        }
        // The watch resolves when the ready node appears (or the session ends).
        ready_w.await?;
        Ok(member)
    }
}

/// A member inside a [`DoubleBarrier`]. Dropping it without [`leave`](Self::leave) removes its
/// node in the background without waiting for the others.
pub struct DoubleBarrierMember {
    client: Client,
    dir: String,
    me: Option<Entry>,
}

impl DoubleBarrierMember {
    /// Leaves and waits until every member has left. The lowest member leaves last, each other
    /// waits on it, and it waits on the highest remaining: no herd on every departure.
    pub async fn leave(mut self) -> Result<(), Error> {
        let me = self.me.take().expect("member present until leave");
        let client = &self.client;
        loop {
            let members = match queue::members(client, &self.dir).await {
                Ok(m) => m,
                Err(e) if e.is_retryable() => {
                    await_connected(client).await?;
                    continue;
                }
                Err(e) => return Err(e),
            };
            let mine = members.contains(&me.name);
            let (lowest, highest) = match (members.first(), members.last()) {
                (Some(l), Some(h)) => (l.clone(), h.clone()),
                _ => break,
            };
            if members.len() == 1 && mine {
                queue::leave(client, &me.path).await?;
                break;
            }
            let wait_on = if lowest == me.name {
                highest
            } else {
                if mine {
                    queue::leave(client, &me.path).await?;
                }
                lowest
            };
            wait_gone(client, &join(&self.dir, &wait_on)).await?;
        }
        // Everyone has left: remove the release marker. Other members may be doing the same,
        // which is fine.
        queue::leave(client, &join(&self.dir, READY)).await
    }
}

impl Drop for DoubleBarrierMember {
    fn drop(&mut self) {
        if let Some(me) = self.me.take() {
            let client = self.client.clone();
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move { queue::leave(&client, &me.path).await });
            }
        }
    }
}
