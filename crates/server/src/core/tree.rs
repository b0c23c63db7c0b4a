//! The data tree: znodes by path, with the secondary indexes ZooKeeper keeps (ephemerals by
//! session, containers, TTL nodes, quota usage).
//!
//! Mutations here are the *apply* half of a txn: they trust that the txn was validated and only
//! fail (NoNode/NodeExists) when a replayed log disagrees with the tree. They can be recorded in
//! an undo log so that a multi whose later op fails leaves no trace.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use bytes::Bytes;
use corral_proto::records::{Acl, Data, Stat};
use corral_proto::{SessionId, ZkError, Zxid};

use super::path;
use super::quota::{self, StatsTrack};

/// `ephemeralOwner` of container nodes.
pub const CONTAINER_OWNER: i64 = i64::MIN;
const TTL_MASK: u64 = 0xff00_0000_0000_0000;
/// Largest TTL ZooKeeper accepts (40 bits of milliseconds).
pub const MAX_TTL_MS: i64 = 0xff_ffff_ffff;

/// `ephemeralOwner` of a TTL node with the given TTL.
pub fn ttl_owner(ttl_ms: i64) -> i64 {
    (TTL_MASK | ttl_ms as u64) as i64
}

/// What kind of node an `ephemeralOwner` value denotes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OwnerKind {
    Persistent,
    Ephemeral(SessionId),
    Container,
    Ttl(i64),
}

pub fn owner_kind(owner: i64, extended_types: bool) -> OwnerKind {
    if owner == 0 {
        OwnerKind::Persistent
    } else if owner == CONTAINER_OWNER {
        OwnerKind::Container
    } else if extended_types && (owner as u64) & TTL_MASK == TTL_MASK {
        OwnerKind::Ttl(((owner as u64) & !TTL_MASK) as i64)
    } else {
        OwnerKind::Ephemeral(owner)
    }
}

/// Path → node, shared with snapshots in progress (see [`DataTree::share_nodes`]).
pub type NodeMap = HashMap<Arc<str>, Arc<Node>, ahash::RandomState>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub data: Data,
    pub acl: Arc<Vec<Acl>>,
    /// `data_length` and `num_children` are filled in by [`Node::stat`].
    pub stat: Stat,
    pub children: BTreeSet<Box<str>>,
}

impl Node {
    /// The Stat clients see. Two translations, as ZooKeeper makes them: the stored cversion
    /// counts child creations (it names sequential nodes), clients see creations plus deletions
    /// (`2 * creations - live children`); and containers and TTL nodes show owner 0.
    pub fn stat(&self) -> Stat {
        let num_children = self.children.len() as i32;
        let ephemeral_owner = match owner_kind(self.stat.ephemeral_owner, true) {
            OwnerKind::Ephemeral(s) => s,
            _ => 0,
        };
        Stat {
            data_length: self.data.as_ref().map_or(0, |d| d.len() as i32),
            num_children,
            cversion: self.stat.cversion * 2 - num_children,
            ephemeral_owner,
            ..self.stat.clone()
        }
    }

    fn data_len(&self) -> u64 {
        self.data.as_ref().map_or(0, |d| d.len() as u64)
    }
}

#[derive(Debug, Default)]
pub struct DataTree {
    /// aHash: several times faster than SipHash on paths, and still keyed randomly per
    /// process, so clients cannot choose colliding paths. Nodes sit behind pointers so the
    /// table's buckets (a quarter to half of them empty) cost 24 bytes each, not a whole node;
    /// shared pointers, so a snapshot can take the whole map in one cheap clone and the tree
    /// copies a node only when it changes while a snapshot still holds it.
    nodes: NodeMap,
    ephemerals: HashMap<SessionId, BTreeSet<String>>,
    containers: BTreeSet<String>,
    ttls: BTreeSet<String>,
    /// Paths that have a quota (a `zookeeper_limits` node).
    quota_targets: BTreeSet<String>,
    acl_cache: HashMap<Vec<Acl>, Arc<Vec<Acl>>>,
    /// Sum of path lengths and data sizes, as ZooKeeper's `approximate_data_size`.
    data_size: u64,
    extended_types: bool,
    undo: Option<Vec<(String, Option<Node>)>>,
}

impl DataTree {
    /// A tree with `/`, `/zookeeper`, `/zookeeper/quota` and `/zookeeper/config`.
    pub fn new(extended_types: bool) -> DataTree {
        let mut t = DataTree {
            extended_types,
            ..Default::default()
        };
        let open = t.intern_acl(super::acl::open_acl());
        let empty = || Some(Bytes::new());
        let mk = |acl: &Arc<Vec<Acl>>, children: &[&str]| Node {
            data: empty(),
            acl: acl.clone(),
            stat: Stat::default(),
            children: children.iter().map(|c| Box::from(*c)).collect(),
        };
        t.insert("/", mk(&open, &["zookeeper"]));
        t.insert("/zookeeper", mk(&open, &["quota", "config"]));
        t.insert("/zookeeper/quota", mk(&open, &[]));
        let read = t.intern_acl(super::acl::read_acl());
        t.insert("/zookeeper/config", mk(&read, &[]));
        t
    }

    /// A tree with no nodes at all, to be filled by [`DataTree::restore_node`].
    pub fn empty(extended_types: bool) -> DataTree {
        DataTree {
            extended_types,
            ..Default::default()
        }
    }

    pub fn reserve(&mut self, nodes: usize) {
        self.nodes.reserve(nodes);
    }

    /// Inserts a node read from a snapshot and links it into its parent, which must have been
    /// restored before it (snapshots list parents first). False if the parent is missing.
    pub fn restore_node(&mut self, path: &str, node: Node) -> bool {
        if let Some((parent, name)) = path::split(path).filter(|(_, n)| !n.is_empty()) {
            match self.nodes.get_mut(parent) {
                Some(p) => {
                    Arc::make_mut(p).children.insert(Box::from(name));
                }
                None => return false,
            }
        }
        self.insert(path, node);
        true
    }

    /// The node map, shared: O(n) pointer copies, no node is copied. Later changes to the tree
    /// copy the nodes they touch, so the returned map stays as it is now.
    pub fn share_nodes(&self) -> NodeMap {
        self.nodes.clone()
    }

    pub fn get(&self, path: &str) -> Option<&Node> {
        self.nodes.get(path).map(|n| &**n)
    }

    pub fn contains(&self, path: &str) -> bool {
        self.nodes.contains_key(path)
    }

    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    pub fn approximate_data_size(&self) -> u64 {
        self.data_size
    }

    pub fn ephemerals_of(&self, session: SessionId) -> impl Iterator<Item = &String> {
        self.ephemerals.get(&session).into_iter().flatten()
    }

    pub fn ephemeral_count(&self) -> usize {
        self.ephemerals.values().map(|s| s.len()).sum()
    }

    pub fn containers(&self) -> impl Iterator<Item = &String> {
        self.containers.iter()
    }

    pub fn ttls(&self) -> impl Iterator<Item = &String> {
        self.ttls.iter()
    }

    pub fn extended_types(&self) -> bool {
        self.extended_types
    }

    #[cfg(test)]
    pub fn nodes(&self) -> impl Iterator<Item = (&str, &Node)> {
        self.nodes.iter().map(|(k, v)| (&**k, &**v))
    }

    /// Number of descendants of `path` (not counting itself).
    pub fn descendant_count(&self, path: &str) -> usize {
        let Some(node) = self.nodes.get(path) else {
            return 0;
        };
        node.children
            .iter()
            .map(|c| 1 + self.descendant_count(&path::join(path, c)))
            .sum()
    }

    /// Shares identical ACL lists between nodes, as ZooKeeper's ACL cache does.
    pub fn intern_acl(&mut self, acl: Vec<Acl>) -> Arc<Vec<Acl>> {
        if let Some(a) = self.acl_cache.get(&acl) {
            return a.clone();
        }
        let a = Arc::new(acl.clone());
        self.acl_cache.insert(acl, a.clone());
        a
    }

    /// Drops cached ACL lists no node uses any more.
    pub fn prune_acl_cache(&mut self) {
        self.acl_cache.retain(|_, a| Arc::strong_count(a) > 1);
    }

    // ---- undo log ----

    /// Starts recording prior node states (for a multi).
    pub fn begin_undo(&mut self) {
        self.undo = Some(Vec::new());
    }

    /// Stops recording and forgets the log (the multi succeeded).
    pub fn commit_undo(&mut self) {
        self.undo = None;
    }

    /// Stops recording and restores every recorded node, newest first.
    pub fn rollback_undo(&mut self) {
        if let Some(log) = self.undo.take() {
            for (path, old) in log.into_iter().rev() {
                self.remove(&path);
                if let Some(node) = old {
                    self.insert(&path, node);
                }
            }
        }
    }

    fn record(&mut self, path: &str) {
        if self.undo.is_some() {
            let old = self.get(path).cloned();
            if let Some(log) = self.undo.as_mut() {
                log.push((path.to_string(), old));
            }
        }
    }

    // ---- raw insert/remove keeping the indexes in step ----

    fn insert(&mut self, path: &str, node: Node) {
        self.data_size += path.len() as u64 + node.data_len();
        match owner_kind(node.stat.ephemeral_owner, self.extended_types) {
            OwnerKind::Ephemeral(s) => {
                self.ephemerals
                    .entry(s)
                    .or_default()
                    .insert(path.to_string());
            }
            OwnerKind::Container => {
                self.containers.insert(path.to_string());
            }
            OwnerKind::Ttl(_) => {
                self.ttls.insert(path.to_string());
            }
            OwnerKind::Persistent => {}
        }
        if let Some((parent, name)) = path::split(path) {
            if name == quota::LIMIT_NODE {
                if let Some(target) = quota::quota_target(parent) {
                    self.quota_targets.insert(target.to_string());
                }
            }
        }
        self.nodes.insert(Arc::from(path), Arc::new(node));
    }

    fn remove(&mut self, path: &str) -> Option<Node> {
        let node = self.nodes.remove(path)?;
        // Still shared with a snapshot being written: that one keeps its copy.
        let node = Arc::try_unwrap(node).unwrap_or_else(|shared| (*shared).clone());
        self.data_size -= path.len() as u64 + node.data_len();
        match owner_kind(node.stat.ephemeral_owner, self.extended_types) {
            OwnerKind::Ephemeral(s) => {
                if let Some(set) = self.ephemerals.get_mut(&s) {
                    set.remove(path);
                    if set.is_empty() {
                        self.ephemerals.remove(&s);
                    }
                }
            }
            OwnerKind::Container => {
                self.containers.remove(path);
            }
            OwnerKind::Ttl(_) => {
                self.ttls.remove(path);
            }
            OwnerKind::Persistent => {}
        }
        if let Some((parent, name)) = path::split(path) {
            if name == quota::LIMIT_NODE {
                if let Some(target) = quota::quota_target(parent) {
                    self.quota_targets.remove(target);
                }
            }
        }
        Some(node)
    }

    // ---- txn application ----

    /// Creates a node. Sets the parent's cversion to `parent_cversion` (if it grows) and its
    /// pzxid to `zxid`. Returns the new node's Stat.
    #[allow(clippy::too_many_arguments)]
    pub fn create(
        &mut self,
        path: &str,
        data: Data,
        acl: Vec<Acl>,
        ephemeral_owner: i64,
        parent_cversion: i32,
        zxid: Zxid,
        time_ms: i64,
    ) -> Result<Stat, ZkError> {
        let (parent_path, name) = path::split(path).ok_or(ZkError::BadArguments)?;
        if !self.nodes.contains_key(parent_path) {
            return Err(ZkError::NoNode);
        }
        if self.nodes.contains_key(path) {
            return Err(ZkError::NodeExists);
        }
        self.record(parent_path);
        self.record(path);
        let parent = Arc::make_mut(self.nodes.get_mut(parent_path).expect("checked above"));
        let cversion = if parent_cversion == -1 {
            parent.stat.cversion + 1
        } else {
            parent_cversion
        };
        if cversion > parent.stat.cversion {
            parent.stat.cversion = cversion;
            parent.stat.pzxid = zxid;
        }
        parent.children.insert(Box::from(name));
        let acl = self.intern_acl(acl);
        let data_len = data.as_ref().map_or(0, |d| d.len() as i64);
        let node = Node {
            data,
            acl,
            stat: Stat {
                czxid: zxid,
                mzxid: zxid,
                ctime: time_ms,
                mtime: time_ms,
                version: 0,
                cversion: 0,
                aversion: 0,
                ephemeral_owner,
                data_length: 0,
                num_children: 0,
                pzxid: zxid,
            },
            children: BTreeSet::new(),
        };
        let stat = node.stat();
        self.insert(path, node);
        if name == quota::STAT_NODE {
            if let Some(target) = quota::quota_target(parent_path) {
                let target = target.to_string();
                self.recount_quota(&target);
            }
        }
        self.update_quota_usage(path, data_len, 1);
        Ok(stat)
    }

    /// Deletes a node; returns its ACL (to filter the watchers of the deletion event).
    pub fn delete(&mut self, path: &str, zxid: Zxid) -> Result<Arc<Vec<Acl>>, ZkError> {
        let (parent_path, name) = path::split(path).ok_or(ZkError::BadArguments)?;
        if !self.nodes.contains_key(path) || !self.nodes.contains_key(parent_path) {
            return Err(ZkError::NoNode);
        }
        self.record(parent_path);
        self.record(path);
        let parent = Arc::make_mut(self.nodes.get_mut(parent_path).expect("checked above"));
        parent.children.remove(name);
        if zxid > parent.stat.pzxid {
            parent.stat.pzxid = zxid;
        }
        let node = self.remove(path).expect("checked above");
        self.update_quota_usage(path, -(node.data_len() as i64), -1);
        Ok(node.acl)
    }

    pub fn set_data(
        &mut self,
        path: &str,
        data: Data,
        version: i32,
        zxid: Zxid,
        time_ms: i64,
    ) -> Result<Stat, ZkError> {
        if !self.nodes.contains_key(path) {
            return Err(ZkError::NoNode);
        }
        self.record(path);
        let node = Arc::make_mut(self.nodes.get_mut(path).expect("checked above"));
        let old_len = node.data_len() as i64;
        let new_len = data.as_ref().map_or(0, |d| d.len() as i64);
        node.data = data;
        node.stat.mtime = time_ms;
        node.stat.mzxid = zxid;
        node.stat.version = version;
        let stat = node.stat();
        self.data_size = (self.data_size as i64 + new_len - old_len) as u64;
        self.update_quota_usage(path, new_len - old_len, 0);
        Ok(stat)
    }

    pub fn set_acl(&mut self, path: &str, acl: Vec<Acl>, aversion: i32) -> Result<Stat, ZkError> {
        if !self.nodes.contains_key(path) {
            return Err(ZkError::NoNode);
        }
        self.record(path);
        let acl = self.intern_acl(acl);
        let node = Arc::make_mut(self.nodes.get_mut(path).expect("checked above"));
        node.acl = acl;
        node.stat.aversion = aversion;
        Ok(node.stat())
    }

    // ---- quotas ----

    /// The deepest quota'd path at or above `path` (never `/zookeeper` itself).
    pub fn quota_prefix<'p>(&self, path: &'p str) -> Option<&'p str> {
        if self.quota_targets.is_empty() {
            return None;
        }
        path::self_and_ancestors(path)
            .find(|p| self.quota_targets.contains(*p))
            .filter(|p| *p != "/zookeeper" && *p != "/")
    }

    /// Current usage and limits for the quota covering `path`, if any.
    pub fn quota_of(&self, path: &str) -> Option<(String, StatsTrack, StatsTrack)> {
        let target = self.quota_prefix(path)?;
        let limits = self.get(&quota::limit_path(target))?;
        let usage = self.get(&quota::stat_path(target))?;
        Some((
            target.to_string(),
            StatsTrack::parse(limits.data.as_deref().unwrap_or_default()),
            StatsTrack::parse(usage.data.as_deref().unwrap_or_default()),
        ))
    }

    fn update_quota_usage(&mut self, path: &str, bytes_diff: i64, count_diff: i64) {
        let Some(target) = self.quota_prefix(path).map(str::to_string) else {
            return;
        };
        let stat_path = quota::stat_path(&target);
        if !self.nodes.contains_key(stat_path.as_str()) {
            return;
        }
        self.record(&stat_path);
        let node = Arc::make_mut(
            self.nodes
                .get_mut(stat_path.as_str())
                .expect("checked above"),
        );
        let mut usage = StatsTrack::parse(node.data.as_deref().unwrap_or_default());
        usage.set("count", usage.count() + count_diff);
        usage.set("bytes", usage.bytes() + bytes_diff);
        let old_len = node.data_len();
        node.data = Some(Bytes::from(usage.render()));
        let new_len = node.data_len();
        self.data_size = self.data_size + new_len - old_len;
    }

    /// Recomputes the usage of a quota'd subtree (when its stats node is created).
    fn recount_quota(&mut self, target: &str) {
        let (mut count, mut bytes) = (0i64, 0i64);
        let mut stack = vec![target.to_string()];
        while let Some(p) = stack.pop() {
            if let Some(n) = self.nodes.get(p.as_str()) {
                count += 1;
                bytes += n.data_len() as i64;
                stack.extend(n.children.iter().map(|c| path::join(&p, c)));
            }
        }
        let stat_path = quota::stat_path(target);
        if let Some(node) = self.nodes.get_mut(stat_path.as_str()).map(Arc::make_mut) {
            let mut usage = StatsTrack::default();
            usage.set("count", count);
            usage.set("bytes", bytes);
            let old_len = node.data_len();
            node.data = Some(Bytes::from(usage.render()));
            self.data_size = self.data_size + node.data_len() - old_len;
        }
    }
}

/// Every node of `nodes`, parents before their children. One path buffer is reused for the
/// whole walk, and the stack is explicit: trees can be deeper than the thread stack.
pub fn walk_parents_first(nodes: &NodeMap, mut visit: impl FnMut(&str, &Node)) {
    let Some(root) = nodes.get("/") else {
        return;
    };
    visit("/", root);
    let mut path = String::from("/");
    // (children still to visit, length of `path` for their parent)
    let mut stack = vec![(root.children.iter(), 1usize)];
    while let Some((children, parent_len)) = stack.last_mut() {
        let parent_len = *parent_len;
        let Some(child) = children.next() else {
            stack.pop();
            continue;
        };
        path.truncate(parent_len);
        if parent_len > 1 {
            path.push('/');
        }
        path.push_str(child);
        if let Some(node) = nodes.get(path.as_str()) {
            visit(&path, node);
            if !node.children.is_empty() {
                stack.push((node.children.iter(), path.len()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::acl::open_acl;

    fn data(s: &str) -> Data {
        Some(Bytes::copy_from_slice(s.as_bytes()))
    }

    #[test]
    fn new_tree_has_the_system_nodes() {
        let t = DataTree::new(false);
        for p in ["/", "/zookeeper", "/zookeeper/quota", "/zookeeper/config"] {
            assert!(t.contains(p), "{p}");
        }
        assert_eq!(t.descendant_count("/"), 3);
    }

    #[test]
    fn create_maintains_parent_cversion_and_pzxid() {
        let mut t = DataTree::new(false);
        t.create("/a", data("x"), open_acl(), 0, 1, 10, 100)
            .unwrap();
        t.create("/a/b", None, open_acl(), 0, 1, 11, 101).unwrap();
        let a = t.get("/a").unwrap().stat();
        assert_eq!((a.cversion, a.pzxid, a.num_children), (1, 11, 1));
        assert_eq!(
            t.create("/a/b", None, open_acl(), 0, 2, 12, 102),
            Err(ZkError::NodeExists)
        );
        t.delete("/a/b", 13).unwrap();
        let a = t.get("/a").unwrap().stat();
        // delete moves pzxid; the stored cversion counts creations, clients see changes
        assert_eq!(t.get("/a").unwrap().stat.cversion, 1);
        assert_eq!((a.cversion, a.pzxid, a.num_children), (2, 13, 0));
    }

    #[test]
    fn ephemeral_index_follows_nodes() {
        let mut t = DataTree::new(false);
        t.create("/e", None, open_acl(), 42, 1, 10, 0).unwrap();
        assert_eq!(t.ephemerals_of(42).collect::<Vec<_>>(), vec!["/e"]);
        t.delete("/e", 11).unwrap();
        assert_eq!(t.ephemerals_of(42).count(), 0);
    }

    #[test]
    fn rollback_restores_nodes_and_indexes() {
        let mut t = DataTree::new(false);
        t.create("/a", data("1"), open_acl(), 0, 1, 10, 0).unwrap();
        let before_size = t.approximate_data_size();
        t.begin_undo();
        t.create("/a/e", None, open_acl(), 7, 1, 11, 0).unwrap();
        t.set_data("/a", data("22"), 1, 11, 0).unwrap();
        t.delete("/a/e", 11).unwrap();
        t.create("/b", None, open_acl(), 7, 2, 11, 0).unwrap();
        t.rollback_undo();
        assert!(!t.contains("/b"));
        assert!(!t.contains("/a/e"));
        assert_eq!(t.get("/a").unwrap().data, data("1"));
        assert_eq!(t.get("/a").unwrap().stat.cversion, 0);
        assert_eq!(t.ephemerals_of(7).count(), 0);
        assert_eq!(t.approximate_data_size(), before_size);
    }

    #[test]
    fn quota_usage_is_tracked_under_the_stats_node() {
        let mut t = DataTree::new(false);
        t.create("/q", data("abc"), open_acl(), 0, 1, 10, 0)
            .unwrap();
        t.create("/zookeeper/quota/q", None, open_acl(), 0, 1, 11, 0)
            .unwrap();
        t.create(
            "/zookeeper/quota/q/zookeeper_limits",
            data("count=2,bytes=-1"),
            open_acl(),
            0,
            1,
            12,
            0,
        )
        .unwrap();
        t.create(
            "/zookeeper/quota/q/zookeeper_stats",
            data("count=0,bytes=0"),
            open_acl(),
            0,
            2,
            13,
            0,
        )
        .unwrap();
        let (_, _, usage) = t.quota_of("/q/x").unwrap();
        assert_eq!((usage.count(), usage.bytes()), (1, 3));
        t.create("/q/x", data("12"), open_acl(), 0, 1, 14, 0)
            .unwrap();
        let (target, limits, usage) = t.quota_of("/q/x").unwrap();
        assert_eq!(target, "/q");
        assert_eq!(limits.count(), 2);
        assert_eq!((usage.count(), usage.bytes()), (2, 5));
    }

    #[test]
    fn owner_kinds() {
        assert_eq!(owner_kind(0, true), OwnerKind::Persistent);
        assert_eq!(owner_kind(CONTAINER_OWNER, true), OwnerKind::Container);
        assert_eq!(owner_kind(ttl_owner(5000), true), OwnerKind::Ttl(5000));
        assert_eq!(owner_kind(77, true), OwnerKind::Ephemeral(77));
    }
}
