//! Always-current views of one node's data or one node's children.

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::await_connected;
use crate::{Client, Error, Stat, WatchEvent, WatchMode, ZkError};
use corral_proto::EventType;

/// A node's data and Stat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeData {
    pub data: Vec<u8>,
    pub stat: Stat,
}

/// What a cache reads, and which events make it read again.
trait View: Send + 'static {
    type Value: Clone + PartialEq + Send + Sync + 'static;
    /// Reads the value; `Zk(NoNode)` while the node does not exist.
    fn get(
        client: &Client,
        path: &str,
    ) -> impl std::future::Future<Output = Result<Self::Value, Error>> + Send;
    /// Reads the value and arms a one-shot watch covering its next relevant change.
    fn get_w(
        client: &Client,
        path: &str,
    ) -> impl std::future::Future<Output = Result<(Self::Value, crate::OneshotWatch), Error>> + Send;
    fn relevant(event: EventType) -> bool;
}

struct DataView;
impl View for DataView {
    type Value = NodeData;
    async fn get(client: &Client, path: &str) -> Result<NodeData, Error> {
        let (data, stat) = client.get_data(path).await?;
        Ok(NodeData { data, stat })
    }
    async fn get_w(client: &Client, path: &str) -> Result<(NodeData, crate::OneshotWatch), Error> {
        let (data, stat, w) = client.get_data_w(path).await?;
        Ok((NodeData { data, stat }, w))
    }
    fn relevant(event: EventType) -> bool {
        event != EventType::NodeChildrenChanged
    }
}

struct ChildrenView;
impl View for ChildrenView {
    type Value = Vec<String>;
    async fn get(client: &Client, path: &str) -> Result<Vec<String>, Error> {
        let (mut c, _) = client.children(path).await?;
        c.sort();
        Ok(c)
    }
    async fn get_w(
        client: &Client,
        path: &str,
    ) -> Result<(Vec<String>, crate::OneshotWatch), Error> {
        let (mut c, _, w) = client.children_w(path).await?;
        c.sort();
        Ok((c, w))
    }
    fn relevant(event: EventType) -> bool {
        matches!(
            event,
            EventType::NodeChildrenChanged | EventType::NodeCreated | EventType::NodeDeleted
        )
    }
}

/// A missing node read as `None`.
fn present<T>(read: Result<T, Error>) -> Result<Option<T>, Error> {
    match read {
        Ok(v) => Ok(Some(v)),
        Err(Error::Zk(ZkError::NoNode)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The one-shot fallback: reads and arms a watch covering the next relevant change, which for
/// a missing node is its creation.
async fn read_w<V: View>(
    client: &Client,
    path: &str,
) -> Result<(Option<V::Value>, crate::OneshotWatch), Error> {
    loop {
        if let Some((v, w)) = present(V::get_w(client, path).await)? {
            return Ok((Some(v), w));
        }
        // Missing: watch for creation; if it appeared meanwhile, read it.
        let (stat, w) = client.exists_w(path).await?;
        if stat.is_none() {
            return Ok((None, w));
        }
    }
}

/// Publishes `value` unless it equals the current one.
fn publish<T: PartialEq>(tx: &watch::Sender<Option<T>>, value: Option<T>) {
    tx.send_if_modified(|cur| {
        if *cur == value {
            false
        } else {
            *cur = value;
            true
        }
    });
}

/// Reads until a read succeeds, waiting out disconnects.
async fn read_retrying<V: View>(client: &Client, path: &str) -> Result<Option<V::Value>, Error> {
    loop {
        match present(V::get(client, path).await) {
            Err(e) if e.is_retryable() => await_connected(client).await?,
            other => return other,
        }
    }
}

async fn run_persistent<V: View>(
    client: Client,
    path: String,
    mut watch: crate::PersistentWatch,
    tx: watch::Sender<Option<V::Value>>,
) {
    // The watch was set before the first read, so no change can slip between them.
    loop {
        match read_retrying::<V>(&client, &path).await {
            Ok(v) => publish(&tx, v),
            Err(_) => return,
        }
        // Wait for a reason to read again.
        loop {
            match watch.next().await {
                Some(WatchEvent::Node(e)) if V::relevant(e.event_type) => break,
                Some(WatchEvent::Node(_)) => continue,
                // Events during a disconnect may be lost: re-read once connected.
                Some(WatchEvent::Session(s)) if s.is_connected() => break,
                // The server could not replay everything since the last read.
                Some(WatchEvent::MayHaveMissed) => break,
                Some(WatchEvent::Session(s)) if s.is_terminal() => return,
                Some(WatchEvent::Session(_)) => continue,
                None => return,
            }
        }
    }
}

async fn run_oneshot<V: View>(client: Client, path: String, tx: watch::Sender<Option<V::Value>>) {
    loop {
        let w = match read_w::<V>(&client, &path).await {
            Ok((v, w)) => {
                publish(&tx, v);
                w
            }
            Err(e) if e.is_retryable() => {
                if await_connected(&client).await.is_err() {
                    return;
                }
                continue;
            }
            Err(_) => return,
        };
        // One-shot watches survive reconnects (the client re-arms them), so only the
        // session's end stops this wait.
        if w.await.is_err() {
            return;
        }
    }
}

async fn start<V: View>(
    client: &Client,
    path: &str,
) -> Result<(watch::Receiver<Option<V::Value>>, JoinHandle<()>), Error> {
    let (tx, rx) = watch::channel(None);
    let client = client.clone();
    let path = path.to_string();
    match client.watch(&path, WatchMode::NonRecursive).await {
        Ok(w) => {
            // The first value is read here so the cache is current when returned.
            let first = read_retrying::<V>(&client, &path).await?;
            publish(&tx, first);
            let task = tokio::spawn(run_persistent::<V>(client, path, w, tx));
            Ok((rx, task))
        }
        Err(Error::Zk(ZkError::Unimplemented)) => {
            let (first, w) = read_w::<V>(&client, &path).await?;
            publish(&tx, first);
            let task = tokio::spawn(async move {
                if w.await.is_ok() {
                    run_oneshot::<V>(client, path, tx).await
                }
            });
            Ok((rx, task))
        }
        Err(e) => Err(e),
    }
}

macro_rules! cache_type {
    ($(#[$m:meta])* $name:ident, $view:ty, $value:ty) => {
        $(#[$m])*
        pub struct $name {
            rx: watch::Receiver<Option<$value>>,
            task: JoinHandle<()>,
        }

        impl $name {
            /// Starts watching `path` (which need not exist); returns once the first value is
            /// loaded.
            pub async fn start(client: &Client, path: &str) -> Result<Self, Error> {
                let (rx, task) = start::<$view>(client, path).await?;
                Ok($name { rx, task })
            }

            /// The latest value (`None` while the node does not exist).
            pub fn current(&self) -> Option<$value> {
                self.rx.borrow().clone()
            }

            /// Waits for the next change and returns the new value. `Err` once the cache
            /// stopped (the session ended).
            pub async fn changed(&mut self) -> Result<Option<$value>, Error> {
                self.rx.changed().await.map_err(|_| Error::Closed)?;
                Ok(self.rx.borrow_and_update().clone())
            }

            /// Waits until the value satisfies `f` and returns it.
            pub async fn wait_for(
                &mut self,
                mut f: impl FnMut(&Option<$value>) -> bool,
            ) -> Result<Option<$value>, Error> {
                let v = self.rx.wait_for(|v| f(v)).await.map_err(|_| Error::Closed)?;
                Ok(v.clone())
            }

            /// Another receiver of the same values.
            pub fn subscribe(&self) -> watch::Receiver<Option<$value>> {
                self.rx.clone()
            }
        }

        impl Drop for $name {
            fn drop(&mut self) {
                self.task.abort();
            }
        }
    };
}

cache_type!(
    /// The latest data of one node.
    NodeCache, DataView, NodeData
);
cache_type!(
    /// The latest (sorted) children list of one node.
    ChildrenCache, ChildrenView, Vec<String>
);
