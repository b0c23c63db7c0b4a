//! The queue discipline shared by locks and elections: ephemeral-sequential nodes in a
//! directory, each waiting on the one node ahead of it that blocks it.

use rand::Rng;

use super::await_connected;
use crate::path::join;
use crate::{Client, CreateMode, Error, ZkError};

/// A queue member: its node name within the directory.
pub(crate) struct Entry {
    pub name: String,
    pub path: String,
}

pub(crate) fn sequence(name: &str) -> Option<u64> {
    name.rsplit('-').next()?.parse().ok()
}

/// The directory's members sorted by sequence number.
pub(crate) async fn members(client: &Client, dir: &str) -> Result<Vec<String>, Error> {
    let (mut kids, _) = client.children(dir).await?;
    kids.retain(|k| sequence(k).is_some());
    kids.sort_by_key(|k| sequence(k));
    Ok(kids)
}

/// Creates this member's node. The name carries a random tag so that, if the reply is lost
/// with the connection, the node can be found instead of created twice.
pub(crate) async fn enter(
    client: &Client,
    dir: &str,
    prefix: &str,
    payload: &[u8],
) -> Result<Entry, Error> {
    client.create_all(dir).await?;
    let tag: u64 = rand::thread_rng().gen();
    let stem = format!("{prefix}{tag:016x}-");
    loop {
        match client
            .create(&join(dir, &stem), payload, CreateMode::EphemeralSequential)
            .await
        {
            Ok((path, _)) => {
                let name = path.rsplit('/').next().unwrap_or_default().to_string();
                return Ok(Entry { name, path });
            }
            Err(e) if e.is_retryable() => {
                await_connected(client).await?;
                if let Some(name) = members(client, dir)
                    .await?
                    .into_iter()
                    .find(|n| n.starts_with(&stem))
                {
                    let path = join(dir, &name);
                    return Ok(Entry { name, path });
                }
            }
            Err(e) => return Err(e),
        }
    }
}

/// Waits until no member ahead of `me` blocks it. `blocker` picks, from the members ahead
/// (in order), the one to wait for. Watches only that node.
pub(crate) async fn wait_turn(
    client: &Client,
    dir: &str,
    me: &Entry,
    blocker: impl Fn(&[String]) -> Option<String>,
) -> Result<(), Error> {
    loop {
        let all = match members(client, dir).await {
            Ok(m) => m,
            Err(e) if e.is_retryable() => {
                await_connected(client).await?;
                continue;
            }
            Err(e) => return Err(e),
        };
        let Some(pos) = all.iter().position(|n| *n == me.name) else {
            // Our node is gone: the session that owned it ended.
            return Err(Error::Zk(ZkError::NoNode));
        };
        let Some(pred) = blocker(&all[..pos]) else {
            return Ok(());
        };
        match client.exists_w(&join(dir, &pred)).await {
            Ok((None, _)) => continue,
            Ok((Some(_), w)) => {
                w.await?;
            }
            Err(e) if e.is_retryable() => await_connected(client).await?,
            Err(e) => return Err(e),
        }
    }
}

/// Deletes a member's node, retrying through disconnects.
pub(crate) async fn leave(client: &Client, path: &str) -> Result<(), Error> {
    loop {
        match client.delete(path, None).await {
            Ok(()) | Err(Error::Zk(ZkError::NoNode)) => return Ok(()),
            Err(e) if e.is_retryable() => await_connected(client).await?,
            Err(e) => return Err(e),
        }
    }
}
