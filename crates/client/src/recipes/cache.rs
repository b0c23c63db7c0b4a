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
    fn read(
        client: &Client,
        path: &str,
    ) -> impl std::future::Future<Output = Result<Option<Self::Value>, Error>> + Send;
    /// The one-shot fallback: read and arm a watch covering the next relevant change.
    fn read_w(
        client: &Client,
        path: &str,
    ) -> impl std::future::Future<Output = Result<(Option<Self::Value>, crate::OneshotWatch), Error>>
           + Send;
    fn relevant(event: EventType) -> bool;
}

struct DataView;
impl View for DataView {
    type Value = NodeData;
    async fn read(client: &Client, path: &str) -> Result<Option<NodeData>, Error> {
        match client.get_data(path).await {
            Ok((data, stat)) => Ok(Some(NodeData { data, stat })),
            Err(Error::Zk(ZkError::NoNode)) => Ok(None),
            Err(e) => Err(e),
        }
    }
    async fn read_w(
        client: &Client,
        path: &str,
    ) -> Result<(Option<NodeData>, crate::OneshotWatch), Error> {
        loop {
            match client.get_data_w(path).await {
                Ok((data, stat, w)) => return Ok((Some(NodeData { data, stat }), w)),
                Err(Error::Zk(ZkError::NoNode)) => {}
                Err(e) => return Err(e),
            }
            // Missing: watch for creation; if it appeared meanwhile, read it.
            let (stat, w) = client.exists_w(path).await?;
            if stat.is_none() {
                return Ok((None, w));
            }
        }
    }
    fn relevant(event: EventType) -> bool {
        event != EventType::NodeChildrenChanged
    }
}

struct ChildrenView;
impl View for ChildrenView {
    type Value = Vec<String>;
    async fn read(client: &Client, path: &str) -> Result<Option<Vec<String>>, Error> {
        match client.children(path).await {
            Ok((mut c, _)) => {
                c.sort();
                Ok(Some(c))
            }
            Err(Error::Zk(ZkError::NoNode)) => Ok(None),
            Err(e) => Err(e),
        }
    }
    async fn read_w(
        client: &Client,
        path: &str,
    ) -> Result<(Option<Vec<String>>, crate::OneshotWatch), Error> {
        loop {
            match client.children_w(path).await {
                Ok((mut c, _, w)) => {
                    c.sort();
                    return Ok((Some(c), w));
                }
                Err(Error::Zk(ZkError::NoNode)) => {}
                Err(e) => return Err(e),
            }
            let (stat, w) = client.exists_w(path).await?;
            if stat.is_none() {
                return Ok((None, w));
            }
        }
    }
    fn relevant(event: EventType) -> bool {
        matches!(
            event,
            EventType::NodeChildrenChanged | EventType::NodeCreated | EventType::NodeDeleted
        )
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
        match V::read(client, path).await {
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
                Some(WatchEvent::Session(s)) if s.is_terminal() => return,
                Some(WatchEvent::Session(_)) => continue,
                None => return,
            }
        }
    }
}

async fn run_oneshot<V: View>(client: Client, path: String, tx: watch::Sender<Option<V::Value>>) {
    loop {
        let w = match V::read_w(&client, &path).await {
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
            let (first, w) = V::read_w(&client, &path).await?;
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
