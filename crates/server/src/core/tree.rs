//! The data tree: znodes by path, with the secondary indexes ZooKeeper keeps (ephemerals by
//! session, containers, TTL nodes, quota usage).
//!
//! Mutations here are the *apply* half of a txn: they trust that the txn was validated and only
//! fail (NoNode/NodeExists) when a replayed log disagrees with the tree. They can be recorded in
//! an undo log so that a multi whose later op fails leaves no trace.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use corral_proto::records::{Acl, Data, Stat};
use corral_proto::{SessionId, ZkError, Zxid};
use hashbrown::HashTable;

pub use super::node::{AclId, Node};
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

/// Every node, found by the path it holds.
#[derive(Default)]
pub struct NodeMap {
    /// aHash: several times faster than SipHash on paths, and still keyed randomly per
    /// process, so clients cannot choose colliding paths.
    hasher: ahash::RandomState,
    /// Buckets are one pointer each (a quarter to half of them empty); the key is the path
    /// inside the node.
    table: HashTable<Node>,
}

impl std::fmt::Debug for NodeMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NodeMap({} nodes)", self.table.len())
    }
}

impl NodeMap {
    fn hash(&self, path: &str) -> u64 {
        self.hasher.hash_one(path.as_bytes())
    }

    pub fn get(&self, path: &str) -> Option<&Node> {
        self.table
            .find(self.hash(path), |n| n.is_at(path.as_bytes()))
    }

    fn get_mut(&mut self, path: &str) -> Option<&mut Node> {
        let hash = self.hash(path);
        self.table.find_mut(hash, |n| n.is_at(path.as_bytes()))
    }

    fn contains(&self, path: &str) -> bool {
        self.get(path).is_some()
    }

    fn entry(&mut self, path: &[u8]) -> hashbrown::hash_table::Entry<'_, Node> {
        let hasher = &self.hasher;
        self.table.entry(
            hasher.hash_one(path),
            |n| n.is_at(path),
            |n| hasher.hash_one(n.path_bytes()),
        )
    }

    /// Adds `node`, replacing a node with the same path.
    fn insert(&mut self, node: Node) {
        match self.entry(node.path_bytes()) {
            hashbrown::hash_table::Entry::Occupied(mut e) => *e.get_mut() = node,
            hashbrown::hash_table::Entry::Vacant(e) => {
                e.insert(node);
            }
        }
    }

    /// Adds `node` unless a node with its path exists; false then.
    fn insert_new(&mut self, node: Node) -> bool {
        match self.entry(node.path_bytes()) {
            hashbrown::hash_table::Entry::Occupied(_) => false,
            hashbrown::hash_table::Entry::Vacant(e) => {
                e.insert(node);
                true
            }
        }
    }

    fn remove(&mut self, path: &str) -> Option<Node> {
        let hash = self.hash(path);
        self.table
            .find_entry(hash, |n| n.is_at(path.as_bytes()))
            .ok()
            .map(|e| e.remove().0)
    }

    pub fn len(&self) -> usize {
        self.table.len()
    }

    #[cfg(test)]
    pub fn iter(&self) -> impl Iterator<Item = &Node> {
        self.table.iter()
    }

    fn reserve(&mut self, nodes: usize) {
        let hasher = &self.hasher;
        self.table
            .reserve(nodes, |n| hasher.hash_one(n.path_bytes()));
    }
}

/// The distinct ACL lists in use, each stored once (ZooKeeper keeps the same cache); nodes hold
/// an index. Snapshot views copy the list of lists, so reusing a freed index later cannot
/// change what a view's nodes mean.
#[derive(Debug, Default)]
pub struct AclTable {
    lists: Vec<Arc<Vec<Acl>>>,
    /// How many nodes of the tree use each list.
    users: Vec<u32>,
    ids: HashMap<Arc<Vec<Acl>>, AclId>,
    free: Vec<AclId>,
}

impl AclTable {
    pub fn get(&self, id: AclId) -> &Arc<Vec<Acl>> {
        &self.lists[id as usize]
    }

    /// Every list by index, for a snapshot.
    pub fn lists(&self) -> Vec<Arc<Vec<Acl>>> {
        self.lists.clone()
    }

    fn intern(&mut self, list: Vec<Acl>) -> AclId {
        if let Some(&id) = self.ids.get(&list) {
            return id;
        }
        let list = Arc::new(list);
        let id = match self.free.pop() {
            Some(id) => {
                self.lists[id as usize] = list.clone();
                id
            }
            None => {
                self.lists.push(list.clone());
                self.users.push(0);
                (self.lists.len() - 1) as AclId
            }
        };
        self.ids.insert(list, id);
        id
    }

    fn add_user(&mut self, id: AclId) {
        self.users[id as usize] += 1;
    }

    fn remove_user(&mut self, id: AclId) {
        self.users[id as usize] -= 1;
    }

    /// Frees the lists no node uses.
    fn prune(&mut self) {
        for (id, users) in self.users.iter().enumerate() {
            let list = &self.lists[id];
            if *users == 0 && self.ids.get(list) == Some(&(id as AclId)) {
                self.ids.remove(list);
                self.free.push(id as AclId);
            }
        }
    }
}

#[derive(Debug, Default)]
pub struct DataTree {
    nodes: NodeMap,
    ephemerals: HashMap<SessionId, BTreeSet<String>>,
    containers: BTreeSet<String>,
    ttls: BTreeSet<String>,
    /// Paths that have a quota (a `zookeeper_limits` node).
    quota_targets: BTreeSet<String>,
    acls: AclTable,
    /// Sum of path lengths and data sizes, as ZooKeeper's `approximate_data_size`.
    data_size: u64,
    extended_types: bool,
    /// Nodes as they were before the ops of a multi in progress (`None`: absent), oldest first.
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
        let read = t.intern_acl(super::acl::read_acl());
        for (path, acl) in [
            ("/", open),
            ("/zookeeper", open),
            ("/zookeeper/quota", open),
            ("/zookeeper/config", read),
        ] {
            let restored = t.restore_node(Node::new(path, Some(b""), acl, &Stat::default()));
            debug_assert!(restored);
        }
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
    /// False also for a path restored twice. After a false the tree is not to be used.
    pub fn restore_node(&mut self, node: Node) -> bool {
        if !self.nodes.insert_new(node.clone()) {
            return false;
        }
        self.track(&node);
        match path::split(node.path()).filter(|(_, n)| !n.is_empty()) {
            Some((parent, name)) => match self.nodes.get_mut(parent) {
                Some(p) => {
                    // New to the tree, so new to its parent: no need to look for it there.
                    p.restore_child(name);
                    true
                }
                None => false,
            },
            None => true,
        }
    }

    /// Every node, shared: O(n) pointer copies (8 bytes a node), no node is copied. Later
    /// changes to the tree copy the nodes they touch, so the returned nodes stay as they are.
    pub fn share_nodes(&self) -> Vec<Node> {
        let mut nodes = Vec::with_capacity(self.nodes.len());
        nodes.extend(self.nodes.table.iter().cloned());
        nodes
    }

    pub fn get(&self, path: &str) -> Option<&Node> {
        self.nodes.get(path)
    }

    pub fn contains(&self, path: &str) -> bool {
        self.nodes.contains(path)
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
    pub fn nodes(&self) -> impl Iterator<Item = &Node> {
        self.nodes.iter()
    }

    /// Number of descendants of `path` (not counting itself). Walks with an explicit stack
    /// of paths still to visit, never recursion: a client can make the tree as deep as it
    /// likes, and the stack of the thread that runs the core is a few megabytes.
    pub fn descendant_count(&self, path: &str) -> usize {
        let mut count = 0;
        let mut to_visit = vec![path.to_string()];
        while let Some(p) = to_visit.pop() {
            if let Some(node) = self.nodes.get(&p) {
                count += node.child_count();
                to_visit.extend(node.children().map(|c| path::join(&p, c)));
            }
        }
        count
    }

    /// The index of `acl` in the table of distinct lists (added if new).
    pub fn intern_acl(&mut self, acl: Vec<Acl>) -> AclId {
        self.acls.intern(acl)
    }

    /// The ACL list of `node`.
    pub fn acl(&self, node: &Node) -> &Arc<Vec<Acl>> {
        self.acls.get(node.acl_id())
    }

    pub fn acl_table(&self) -> &AclTable {
        &self.acls
    }

    /// Drops cached ACL lists no node uses any more.
    pub fn prune_acl_cache(&mut self) {
        self.acls.prune();
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
                    self.insert(node);
                }
            }
        }
    }

    /// Remembers `path` as it is now, if a multi is recording. The log holds the node itself
    /// (a pointer): the change that follows copies it, as it would for a snapshot.
    fn record(&mut self, path: &str) {
        if let Some(log) = self.undo.as_mut() {
            log.push((path.to_string(), self.nodes.get(path).cloned()));
        }
    }

    // ---- raw insert/remove keeping the indexes in step ----

    fn insert(&mut self, node: Node) {
        self.track(&node);
        self.nodes.insert(node);
    }

    /// Adds `node` to the secondary indexes and counters (the node map is the caller's).
    fn track(&mut self, node: &Node) {
        self.acls.add_user(node.acl_id());
        let path = node.path();
        self.data_size += (path.len() + node.data_len()) as u64;
        match owner_kind(node.ephemeral_owner(), self.extended_types) {
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
    }

    fn remove(&mut self, path: &str) -> Option<Node> {
        let node = self.nodes.remove(path)?;
        self.acls.remove_user(node.acl_id());
        self.data_size -= (path.len() + node.data_len()) as u64;
        match owner_kind(node.ephemeral_owner(), self.extended_types) {
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
        if !self.nodes.contains(parent_path) {
            return Err(ZkError::NoNode);
        }
        if self.nodes.contains(path) {
            return Err(ZkError::NodeExists);
        }
        self.record(parent_path);
        self.record(path);
        let parent = self.nodes.get_mut(parent_path).expect("checked above");
        let cversion = if parent_cversion == -1 {
            parent.cversion() + 1
        } else {
            parent_cversion
        };
        parent.add_child(name, cversion, zxid);
        let acl = self.intern_acl(acl);
        let data_len = data.as_ref().map_or(0, |d| d.len() as i64);
        let node = Node::new(
            path,
            data.as_deref(),
            acl,
            &Stat {
                czxid: zxid,
                mzxid: zxid,
                ctime: time_ms,
                mtime: time_ms,
                ephemeral_owner,
                pzxid: zxid,
                ..Stat::default()
            },
        );
        let stat = node.stat();
        self.insert(node);
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
        if !self.nodes.contains(path) || !self.nodes.contains(parent_path) {
            return Err(ZkError::NoNode);
        }
        self.record(parent_path);
        self.record(path);
        let parent = self.nodes.get_mut(parent_path).expect("checked above");
        parent.remove_child(name, zxid);
        let node = self.remove(path).expect("checked above");
        self.update_quota_usage(path, -(node.data_len() as i64), -1);
        Ok(self.acls.get(node.acl_id()).clone())
    }

    pub fn set_data(
        &mut self,
        path: &str,
        data: Data,
        version: i32,
        zxid: Zxid,
        time_ms: i64,
    ) -> Result<Stat, ZkError> {
        if !self.nodes.contains(path) {
            return Err(ZkError::NoNode);
        }
        self.record(path);
        let node = self.nodes.get_mut(path).expect("checked above");
        let old_len = node.data_len() as i64;
        let new_len = data.as_ref().map_or(0, |d| d.len() as i64);
        node.set_data(data.as_deref(), version, zxid, time_ms);
        let stat = node.stat();
        self.data_size = (self.data_size as i64 + new_len - old_len) as u64;
        self.update_quota_usage(path, new_len - old_len, 0);
        Ok(stat)
    }

    pub fn set_acl(&mut self, path: &str, acl: Vec<Acl>, aversion: i32) -> Result<Stat, ZkError> {
        if !self.nodes.contains(path) {
            return Err(ZkError::NoNode);
        }
        self.record(path);
        let acl = self.intern_acl(acl);
        let node = self.nodes.get_mut(path).expect("checked above");
        let old = node.acl_id();
        node.set_acl(acl, aversion);
        let stat = node.stat();
        self.acls.remove_user(old);
        self.acls.add_user(acl);
        Ok(stat)
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
            StatsTrack::parse(limits.data().unwrap_or_default()),
            StatsTrack::parse(usage.data().unwrap_or_default()),
        ))
    }

    fn update_quota_usage(&mut self, path: &str, bytes_diff: i64, count_diff: i64) {
        let Some(target) = self.quota_prefix(path).map(str::to_string) else {
            return;
        };
        let stat_path = quota::stat_path(&target);
        let Some(node) = self.nodes.get(&stat_path) else {
            return;
        };
        let mut usage = StatsTrack::parse(node.data().unwrap_or_default());
        usage.set("count", usage.count() + count_diff);
        usage.set("bytes", usage.bytes() + bytes_diff);
        self.rewrite_usage(&stat_path, usage);
    }

    /// Stores quota usage in a stats node. Not a client write: version and mzxid stay.
    fn rewrite_usage(&mut self, stat_path: &str, usage: StatsTrack) {
        self.record(stat_path);
        let Some(node) = self.nodes.get_mut(stat_path) else {
            return;
        };
        let old_len = node.data_len() as u64;
        let rendered = usage.render();
        let (version, mzxid, mtime_ms) = (node.version(), node.mzxid(), node.mtime_ms());
        node.set_data(Some(rendered.as_bytes()), version, mzxid, mtime_ms);
        self.data_size = self.data_size + rendered.len() as u64 - old_len;
    }

    /// Recomputes the usage of a quota'd subtree (when its stats node is created).
    fn recount_quota(&mut self, target: &str) {
        let (mut count, mut bytes) = (0i64, 0i64);
        let mut stack = vec![target.to_string()];
        while let Some(p) = stack.pop() {
            if let Some(n) = self.nodes.get(&p) {
                count += 1;
                bytes += n.data_len() as i64;
                stack.extend(n.children().map(|c| path::join(&p, c)));
            }
        }
        let stat_path = quota::stat_path(target);
        if self.nodes.contains(&stat_path) {
            let mut usage = StatsTrack::default();
            usage.set("count", count);
            usage.set("bytes", bytes);
            self.rewrite_usage(&stat_path, usage);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::acl::open_acl;
    use bytes::Bytes;

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
        assert_eq!(t.get("/a").unwrap().cversion(), 1);
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
        assert_eq!(t.get("/a").unwrap().data_owned(), data("1"));
        assert_eq!(t.get("/a").unwrap().cversion(), 0);
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
