//! A local mirror of a subtree.
//!
//! With a server that has persistent watches, one recursive watch on the root reports every
//! creation, change and deletion below it; each event makes the cache read the node (or the
//! new subtree) again, so the mirror converges on the server's state whatever the event
//! order. After a reconnect the whole subtree is read again, since events of the disconnected
//! period may not have been replayed. Servers without persistent watches get the one-shot
//! scheme instead: a data watch and a children watch on every node, re-armed as they fire
//! (the client re-registers one-shot watches on reconnect, and servers fire those whose node
//! changed meanwhile).

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::future::Future;
use std::pin::Pin;

use futures::stream::FuturesUnordered;
use futures::StreamExt;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::{await_connected, NodeData};
use crate::path::join;
use crate::{Client, Error, EventType, NodeEvent, OneshotWatch, WatchEvent, WatchMode, ZkError};

/// The mirrored nodes by path (the root included while it exists).
pub type Tree = BTreeMap<String, NodeData>;

/// A change of the mirror.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TreeEvent {
    /// A node appeared in the mirror (including those of the initial load).
    Added(String, NodeData),
    /// A mirrored node's data or Stat changed.
    Updated(String, NodeData),
    /// A node left the mirror.
    Removed(String),
    /// The initial load is complete.
    Initialized,
    /// The mirror was read again after a reconnect; the changes found were reported before.
    Reloaded,
}

/// How a [`TreeCache`] learns of changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TreeCacheMode {
    /// A persistent recursive watch where the server offers one, one-shot watches otherwise.
    #[default]
    Auto,
    /// One-shot data and children watches on every node, whatever the server offers.
    OneshotWatches,
}

/// A local, always-current copy of the subtree under a root node.
pub struct TreeCache {
    rx: watch::Receiver<Tree>,
    events: mpsc::UnboundedReceiver<TreeEvent>,
    persistent: bool,
    task: JoinHandle<()>,
}

impl TreeCache {
    /// Starts mirroring `root` (which need not exist); returns once the initial load is done.
    pub async fn start(client: &Client, root: &str) -> Result<TreeCache, Error> {
        TreeCache::start_with(client, root, TreeCacheMode::Auto).await
    }

    pub async fn start_with(
        client: &Client,
        root: &str,
        mode: TreeCacheMode,
    ) -> Result<TreeCache, Error> {
        crate::path::validate_path(root, false)?;
        let (tx, rx) = watch::channel(Tree::new());
        let (events_tx, events) = mpsc::unbounded_channel();
        let mirror = Mirror {
            client: client.clone(),
            root: root.to_string(),
            tree: tx,
            events: events_tx,
        };
        let persistent_watch = match mode {
            TreeCacheMode::Auto => match client.watch(root, WatchMode::Recursive).await {
                Ok(w) => Some(w),
                Err(Error::Zk(ZkError::Unimplemented)) => None,
                Err(e) => return Err(e),
            },
            TreeCacheMode::OneshotWatches => None,
        };
        let persistent = persistent_watch.is_some();
        let task = match persistent_watch {
            Some(w) => {
                // The watch is in place before the load, so no change can fall between.
                mirror.reload().await?;
                let _ = mirror.events.send(TreeEvent::Initialized);
                tokio::spawn(run_persistent(mirror, w))
            }
            None => {
                let mut oneshot = Oneshot {
                    mirror,
                    armed_data: HashSet::new(),
                    armed_child: HashSet::new(),
                    watches: FuturesUnordered::new(),
                    work: VecDeque::new(),
                };
                let root = oneshot.mirror.root.clone();
                oneshot.work.push_back(Work::Node(root));
                oneshot.drain().await?;
                let _ = oneshot.mirror.events.send(TreeEvent::Initialized);
                tokio::spawn(oneshot.run())
            }
        };
        Ok(TreeCache {
            rx,
            events,
            persistent,
            task,
        })
    }

    /// Whether the cache follows a persistent recursive watch (else one-shot watches).
    pub fn uses_persistent_watch(&self) -> bool {
        self.persistent
    }

    /// A mirrored node.
    pub fn get(&self, path: &str) -> Option<NodeData> {
        self.rx.borrow().get(path).cloned()
    }

    /// The names of a mirrored node's children, sorted.
    pub fn children(&self, path: &str) -> Vec<String> {
        children_of(&self.rx.borrow(), path)
    }

    /// A copy of the whole mirror.
    pub fn snapshot(&self) -> Tree {
        self.rx.borrow().clone()
    }

    /// The next change of the mirror, in the order applied. `None` once the cache stopped (the
    /// session ended) and every event was taken.
    pub async fn next_event(&mut self) -> Option<TreeEvent> {
        self.events.recv().await
    }

    /// Waits until the mirror satisfies `f`. `Err` if the cache stopped first.
    pub async fn wait_for(&mut self, mut f: impl FnMut(&Tree) -> bool) -> Result<(), Error> {
        self.rx
            .wait_for(|t| f(t))
            .await
            .map(|_| ())
            .map_err(|_| Error::Closed)
    }

    /// A receiver of the mirror, notified on every change.
    pub fn subscribe(&self) -> watch::Receiver<Tree> {
        self.rx.clone()
    }
}

impl Drop for TreeCache {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn is_under(path: &str, root: &str) -> bool {
    root == "/" || path == root || path.strip_prefix(root).is_some_and(|r| r.starts_with('/'))
}

fn children_of(tree: &Tree, path: &str) -> Vec<String> {
    let prefix = if path == "/" {
        "/".to_string()
    } else {
        format!("{path}/")
    };
    tree.range(prefix.clone()..)
        .map(|(k, _)| k)
        .take_while(|k| k.starts_with(&prefix))
        .filter_map(|k| {
            let rest = &k[prefix.len()..];
            (!rest.is_empty() && !rest.contains('/')).then(|| rest.to_string())
        })
        .collect()
}

/// The mirror and its change log.
struct Mirror {
    client: Client,
    root: String,
    tree: watch::Sender<Tree>,
    events: mpsc::UnboundedSender<TreeEvent>,
}

impl Mirror {
    fn put(&self, path: &str, data: NodeData) {
        let events = &self.events;
        self.tree.send_if_modified(|tree| match tree.get(path) {
            Some(old) if *old == data => false,
            old => {
                let ev = if old.is_some() {
                    TreeEvent::Updated(path.to_string(), data.clone())
                } else {
                    TreeEvent::Added(path.to_string(), data.clone())
                };
                tree.insert(path.to_string(), data);
                let _ = events.send(ev);
                true
            }
        });
    }

    /// Drops `path` and everything below it.
    fn remove(&self, path: &str) {
        let events = &self.events;
        self.tree.send_if_modified(|tree| {
            let gone: Vec<String> = tree
                .range(path.to_string()..)
                .map(|(k, _)| k)
                .take_while(|k| k.starts_with(path))
                .filter(|k| is_under(k, path))
                .cloned()
                .collect();
            // Deepest first, as a server deletes.
            for k in gone.iter().rev() {
                tree.remove(k);
                let _ = events.send(TreeEvent::Removed(k.clone()));
            }
            !gone.is_empty()
        });
    }

    /// Replaces the part of the mirror under `path` with `fresh` (read from the server).
    fn replace(&self, path: &str, fresh: Tree) {
        let stale: Vec<String> = self
            .tree
            .borrow()
            .keys()
            .filter(|k| is_under(k, path) && !fresh.contains_key(*k))
            .cloned()
            .collect();
        for k in stale.iter().rev() {
            self.remove(k);
        }
        for (k, v) in fresh {
            self.put(&k, v);
        }
    }

    /// Reads the subtree under `path` as it is now, level by level, the reads of a level
    /// pipelined. Nodes deleted meanwhile are left out.
    async fn read_subtree(&self, path: &str) -> Result<Tree, Error> {
        let mut out = Tree::new();
        let mut level = vec![path.to_string()];
        while !level.is_empty() {
            let reads = level.iter().map(|p| async move {
                let data = self.client.get_data(p).await;
                let kids = self.client.children(p).await;
                (p, data, kids)
            });
            let mut next = Vec::new();
            for (p, data, kids) in futures::future::join_all(reads).await {
                let (data, stat) = match data {
                    Ok(d) => d,
                    Err(Error::Zk(ZkError::NoNode)) => continue,
                    Err(e) => return Err(e),
                };
                out.insert(p.clone(), NodeData { data, stat });
                match kids {
                    Ok((names, _)) => next.extend(names.iter().map(|n| join(p, n))),
                    Err(Error::Zk(ZkError::NoNode)) => {}
                    Err(e) => return Err(e),
                }
            }
            level = next;
        }
        Ok(out)
    }

    /// Reads the whole subtree again, waiting out disconnects.
    async fn reload(&self) -> Result<(), Error> {
        loop {
            match self.read_subtree(&self.root).await {
                Ok(fresh) => {
                    self.replace(&self.root.clone(), fresh);
                    return Ok(());
                }
                Err(e) if e.is_retryable() => await_connected(&self.client).await?,
                Err(e) => return Err(e),
            }
        }
    }

    /// Reads one node's data and Stat again.
    async fn reread(&self, path: &str) -> Result<(), Error> {
        match self.client.get_data(path).await {
            Ok((data, stat)) => self.put(path, NodeData { data, stat }),
            Err(Error::Zk(ZkError::NoNode)) => self.remove(path),
            Err(e) => return Err(e),
        }
        Ok(())
    }

    /// Brings one node (and, if it is new, its subtree) up to date after an event.
    async fn refresh(&self, event: &NodeEvent) -> Result<(), Error> {
        let path = event.path.as_str();
        match event.event_type {
            EventType::NodeDeleted => self.remove(path),
            EventType::NodeDataChanged => self.reread(path).await?,
            EventType::NodeCreated => {
                let fresh = self.read_subtree(path).await?;
                self.replace(path, fresh);
            }
            _ => return Ok(()),
        }
        // A recursive watch says nothing of the parent, whose Stat (children count, cversion,
        // pzxid) changed with the creation or deletion.
        if event.event_type != EventType::NodeDataChanged && path != self.root {
            let parent = crate::path::parent(path);
            if self.tree.borrow().contains_key(parent) {
                self.reread(parent).await?;
            }
        }
        Ok(())
    }
}

async fn run_persistent(mirror: Mirror, mut watch: crate::PersistentWatch) {
    let mut stale = false;
    loop {
        let item = match watch.next().await {
            Some(item) => item,
            None => return,
        };
        let result = match item {
            WatchEvent::Node(e) if is_under(&e.path, &mirror.root) => mirror.refresh(&e).await,
            WatchEvent::Node(_) => Ok(()),
            WatchEvent::Session(s) if s.is_terminal() => return,
            WatchEvent::Session(s) if s.is_connected() => {
                if std::mem::take(&mut stale) {
                    // Changes made while away may not be replayed by the server: read again.
                    let r = mirror.reload().await;
                    let _ = mirror.events.send(TreeEvent::Reloaded);
                    r
                } else {
                    Ok(())
                }
            }
            WatchEvent::Session(_) => {
                stale = true;
                Ok(())
            }
            // The server could not replay every change made while away: read everything again
            // (even if the reconnect item already did, events between the two are covered).
            WatchEvent::MayHaveMissed => {
                stale = false;
                let r = mirror.reload().await;
                let _ = mirror.events.send(TreeEvent::Reloaded);
                r
            }
        };
        match result {
            Ok(()) => {}
            // The read failed with the connection: the reconnect item that follows reloads.
            Err(e) if e.is_retryable() => stale = true,
            Err(_) => return,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Data,
    Child,
}

type Fired = Pin<Box<dyn Future<Output = (Kind, String, Result<NodeEvent, Error>)> + Send>>;

enum Work {
    /// Read a node's data and children.
    Node(String),
    Data(String),
    Children(String),
}

/// The one-shot scheme: every mirrored node has a data watch and a children watch armed (the
/// root, while missing, an exists watch). Each fired watch makes the node be read again with
/// its watch re-armed; reads are the truth, events only say where to look.
struct Oneshot {
    mirror: Mirror,
    armed_data: HashSet<String>,
    armed_child: HashSet<String>,
    watches: FuturesUnordered<Fired>,
    work: VecDeque<Work>,
}

impl Oneshot {
    fn arm(&mut self, kind: Kind, path: &str, w: OneshotWatch) {
        let set = match kind {
            Kind::Data => &mut self.armed_data,
            Kind::Child => &mut self.armed_child,
        };
        set.insert(path.to_string());
        let path = path.to_string();
        self.watches
            .push(Box::pin(async move { (kind, path, w.await) }));
    }

    /// Does queued work until none is left, waiting out disconnects.
    async fn drain(&mut self) -> Result<(), Error> {
        while let Some(work) = self.work.pop_front() {
            let r = match &work {
                Work::Node(p) => {
                    let p = p.clone();
                    self.data(&p).await.map(|exists| {
                        if exists {
                            self.work.push_front(Work::Children(p));
                        }
                    })
                }
                Work::Data(p) => self.data(&p.clone()).await.map(|_| ()),
                Work::Children(p) => self.children(&p.clone()).await,
            };
            match r {
                Ok(()) => {}
                Err(e) if e.is_retryable() => {
                    self.work.push_front(work);
                    await_connected(&self.mirror.client).await?;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Reads a node's data (arming its data watch if none is armed); returns whether it exists.
    async fn data(&mut self, path: &str) -> Result<bool, Error> {
        let client = self.mirror.client.clone();
        let read = if self.armed_data.contains(path) {
            client.get_data(path).await.map(|(d, s)| (d, s, None))
        } else {
            client
                .get_data_w(path)
                .await
                .map(|(d, s, w)| (d, s, Some(w)))
        };
        match read {
            Ok((data, stat, w)) => {
                if let Some(w) = w {
                    self.arm(Kind::Data, path, w);
                }
                self.mirror.put(path, NodeData { data, stat });
                Ok(true)
            }
            Err(Error::Zk(ZkError::NoNode)) => {
                self.mirror.remove(path);
                if path == self.mirror.root && !self.armed_data.contains(path) {
                    // Nothing above the root tells of its creation: watch for it.
                    let (stat, w) = client.exists_w(path).await?;
                    self.arm(Kind::Data, path, w);
                    if stat.is_some() {
                        self.work.push_back(Work::Node(path.to_string()));
                    }
                }
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    async fn children(&mut self, path: &str) -> Result<(), Error> {
        if !self.mirror.tree.borrow().contains_key(path) {
            return Ok(());
        }
        let client = self.mirror.client.clone();
        let read = if self.armed_child.contains(path) {
            client.children(path).await.map(|(c, _)| (c, None))
        } else {
            client.children_w(path).await.map(|(c, _, w)| (c, Some(w)))
        };
        let names = match read {
            Ok((names, w)) => {
                if let Some(w) = w {
                    self.arm(Kind::Child, path, w);
                }
                names
            }
            Err(Error::Zk(ZkError::NoNode)) => {
                self.work.push_back(Work::Data(path.to_string()));
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        // The node's Stat changed with its children list; no data watch tells of that.
        self.work.push_back(Work::Data(path.to_string()));
        let known = children_of(&self.mirror.tree.borrow(), path);
        for name in &names {
            let child = join(path, name);
            if !known.contains(name) || !self.armed_data.contains(&child) {
                self.work.push_back(Work::Node(child));
            }
        }
        for name in known.iter().filter(|n| !names.contains(n)) {
            // Gone from the list: confirm by reading (it may be back already).
            self.work.push_back(Work::Data(join(path, name)));
        }
        Ok(())
    }

    async fn run(mut self) {
        loop {
            if self.drain().await.is_err() {
                return;
            }
            let Some((kind, path, fired)) = self.watches.next().await else {
                // Nothing armed (cannot happen while the root is watched): the session ended.
                return;
            };
            match kind {
                Kind::Data => self.armed_data.remove(&path),
                Kind::Child => self.armed_child.remove(&path),
            };
            let event = match fired {
                Ok(e) => e,
                Err(_) => return,
            };
            self.work.push_back(match (kind, event.event_type) {
                (Kind::Child, EventType::NodeChildrenChanged) => Work::Children(path),
                // A children watch that ended otherwise (the node was deleted) must be armed
                // again if the node is back. It may be back already, and read meanwhile
                // without a new watch (the old one still counted as armed until this event
                // was taken): reading only its data would leave its children unwatched.
                (Kind::Child, _) | (_, EventType::NodeCreated) => Work::Node(path),
                _ => Work::Data(path),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn children_and_subtrees() {
        let mut t = Tree::new();
        for p in ["/a", "/a/b", "/a/b/c", "/a/bb", "/ab", "/a/c"] {
            t.insert(
                p.to_string(),
                NodeData {
                    data: vec![],
                    stat: Default::default(),
                },
            );
        }
        assert_eq!(children_of(&t, "/a"), vec!["b", "bb", "c"]);
        assert_eq!(children_of(&t, "/"), vec!["a", "ab"]);
        assert!(is_under("/a/b", "/a"));
        assert!(!is_under("/ab", "/a"));
        assert!(is_under("/ab", "/"));
    }
}
