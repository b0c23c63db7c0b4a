//! Self-checks of the state machine, for fuzzing and randomized tests.
//!
//! [`Core::check_invariants`] walks the whole state and reports the first disagreement between
//! redundant structures (counters, indexes, the two directions of the watch tables, session ↔
//! connection bindings). It is O(state) and meant to run after every step of a small test, never
//! in a server. [`Core::canonical_dump`] is the state that replaying the txn log must reproduce,
//! in an order that does not depend on hashing, so two cores can be compared with `==`.

use std::collections::{BTreeMap, BTreeSet};

use corral_proto::records::{Acl, Stat};
use corral_proto::{path, SessionId, Zxid};

use super::tree::{owner_kind, OwnerKind};
use super::watch::WatchManager;
use super::{ConnId, Core};

/// One znode as [`Core::canonical_dump`] shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DumpedNode {
    pub path: String,
    pub data: Option<Vec<u8>>,
    /// The stat clients see (cversion counts creations and deletions).
    pub stat: Stat,
    /// Compared by value: the index a list has in the ACL table depends on when unused lists
    /// were pruned (a local timer) and never reaches a client.
    pub acl: Vec<Acl>,
    /// Child names, sorted.
    pub children: Vec<String>,
}

/// A session as [`Core::canonical_dump`] shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DumpedSession {
    pub id: SessionId,
    pub timeout_ms: i32,
    /// Paths of its ephemeral nodes, sorted.
    pub ephemerals: Vec<String>,
}

/// Everything a replay of the txn log must reproduce, in a canonical order. Session expiry
/// times and connections are left out: they are local (monotonic clock, sockets).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CanonicalDump {
    /// Sorted by path.
    pub nodes: Vec<DumpedNode>,
    /// Sorted by id.
    pub sessions: Vec<DumpedSession>,
    pub containers: Vec<String>,
    pub ttls: Vec<String>,
    pub approximate_data_size: u64,
    pub last_zxid: Zxid,
}

impl Core {
    /// Checks that the redundant parts of the state agree; the error names the first
    /// disagreement found.
    #[doc(hidden)]
    pub fn check_invariants(&self) -> Result<(), String> {
        self.check_tree()?;
        self.check_sessions_and_connections()?;
        check_watches("data", &self.data_watches, |c| self.conns.contains_key(&c))?;
        check_watches("child", &self.child_watches, |c| {
            self.conns.contains_key(&c)
        })?;
        Ok(())
    }

    fn check_tree(&self) -> Result<(), String> {
        let tree = &self.tree;
        let extended = tree.extended_types();
        let nodes = tree.share_nodes();
        if nodes.len() != tree.node_count() {
            return Err(format!(
                "node count {} but {} nodes in the table",
                tree.node_count(),
                nodes.len()
            ));
        }
        let mut data_size = 0u64;
        let mut ephemerals = 0usize;
        let mut containers = BTreeSet::new();
        let mut ttls = BTreeSet::new();
        for node in &nodes {
            let p = node.path();
            data_size += (p.len() + node.data_len()) as u64;
            if node.data_len() != node.data().map_or(0, <[u8]>::len) {
                return Err(format!("{p}: data_len disagrees with the data"));
            }
            let owner = node.ephemeral_owner();
            match owner_kind(owner, extended) {
                OwnerKind::Ephemeral(sid) => {
                    ephemerals += 1;
                    if !tree.ephemerals_of(sid).any(|e| e == p) {
                        return Err(format!(
                            "{p}: ephemeral of 0x{sid:x} missing from the index"
                        ));
                    }
                    if self.sessions.get(sid).is_none() {
                        return Err(format!("{p}: owned by 0x{sid:x}, which is no session"));
                    }
                    if node.has_children() {
                        return Err(format!("{p}: an ephemeral node has children"));
                    }
                }
                OwnerKind::Container => {
                    containers.insert(p.to_string());
                }
                OwnerKind::Ttl(_) => {
                    ttls.insert(p.to_string());
                }
                OwnerKind::Persistent => {}
            }
            self.check_node_links(node)?;
        }
        if data_size != tree.approximate_data_size() {
            return Err(format!(
                "approximate data size {} but the nodes sum to {data_size}",
                tree.approximate_data_size()
            ));
        }
        if ephemerals != tree.ephemeral_count() {
            return Err(format!(
                "ephemeral index holds {} paths but {ephemerals} nodes are ephemeral",
                tree.ephemeral_count()
            ));
        }
        if !containers.iter().eq(tree.containers()) {
            return Err(format!(
                "container index {:?} but container nodes {containers:?}",
                tree.containers().collect::<Vec<_>>()
            ));
        }
        if !ttls.iter().eq(tree.ttls()) {
            return Err(format!(
                "TTL index {:?} but TTL nodes {ttls:?}",
                tree.ttls().collect::<Vec<_>>()
            ));
        }
        Ok(())
    }

    /// Parent ↔ child links and the stat fields that follow from them.
    fn check_node_links(&self, node: &super::node::Node) -> Result<(), String> {
        let tree = &self.tree;
        let p = node.path();
        let stat = node.stored_stat();
        if stat.mzxid < stat.czxid || stat.pzxid < stat.czxid {
            return Err(format!("{p}: mzxid/pzxid below czxid: {stat:?}"));
        }
        if stat.mzxid > self.last_zxid || stat.pzxid > self.last_zxid {
            return Err(format!("{p}: zxids above the last zxid: {stat:?}"));
        }
        if stat.version < 0 || stat.aversion < 0 || stat.cversion < 0 {
            return Err(format!("{p}: negative version: {stat:?}"));
        }
        // The stored cversion counts creations, so it is at least the number of children
        // created by txns (the built-in nodes are linked at start-up without a txn, czxid 0).
        let mut created_children = 0;
        let mut names = BTreeSet::new();
        for name in node.children() {
            if name.is_empty() || name.contains('/') || !names.insert(name) {
                return Err(format!("{p}: bad or repeated child name {name:?}"));
            }
            let child_path = path::join(p, name);
            let Some(child) = tree.get(&child_path) else {
                return Err(format!("{p}: lists child {name:?} which is no node"));
            };
            if child.czxid() != 0 {
                created_children += 1;
            }
            if child.czxid() > node.pzxid() {
                return Err(format!(
                    "{p}: pzxid 0x{:x} older than child {name:?} created at 0x{:x}",
                    node.pzxid(),
                    child.czxid()
                ));
            }
        }
        if names.len() != node.child_count() {
            return Err(format!("{p}: child count disagrees with the child names"));
        }
        if stat.cversion < created_children {
            return Err(format!(
                "{p}: cversion {} below the {created_children} children created",
                stat.cversion
            ));
        }
        if let Some((parent, name)) = path::split(p).filter(|(_, n)| !n.is_empty()) {
            let Some(parent_node) = tree.get(parent) else {
                return Err(format!("{p}: parent {parent} missing"));
            };
            if !parent_node.children().any(|c| c == name) {
                return Err(format!("{p}: not in the child list of {parent}"));
            }
        } else if p != "/" {
            return Err(format!("{p}: a node without a parent"));
        }
        Ok(())
    }

    fn check_sessions_and_connections(&self) -> Result<(), String> {
        for s in self.sessions.iter() {
            if let Some(conn) = s.conn {
                match self.conns.get(&conn) {
                    Some(c) if c.session == Some(s.id) => {}
                    Some(c) => {
                        return Err(format!(
                            "session 0x{:x} bound to connection {conn}, which is on {:?}",
                            s.id, c.session
                        ))
                    }
                    None => {
                        return Err(format!(
                            "session 0x{:x} bound to closed connection {conn}",
                            s.id
                        ))
                    }
                }
            }
        }
        for (id, c) in &self.conns {
            let Some(sid) = c.session else { continue };
            if self.local_sessions.contains(&sid) {
                continue;
            }
            match self.sessions.get(sid) {
                Some(s) if s.conn == Some(*id) => {}
                Some(s) => {
                    return Err(format!(
                        "connection {id} on session 0x{sid:x}, which is bound to {:?}",
                        s.conn
                    ))
                }
                None => return Err(format!("connection {id} on missing session 0x{sid:x}")),
            }
        }
        Ok(())
    }

    /// The state a replay of the txn log must reproduce.
    #[doc(hidden)]
    pub fn canonical_dump(&self) -> CanonicalDump {
        let mut nodes: Vec<DumpedNode> = self
            .tree
            .share_nodes()
            .iter()
            .map(|n| {
                let mut children: Vec<String> = n.children().map(str::to_string).collect();
                children.sort();
                DumpedNode {
                    path: n.path().to_string(),
                    data: n.data().map(<[u8]>::to_vec),
                    stat: n.stat(),
                    acl: self.tree.acl(n).as_ref().clone(),
                    children,
                }
            })
            .collect();
        nodes.sort_by(|a, b| a.path.cmp(&b.path));
        let mut sessions: Vec<DumpedSession> = self
            .sessions
            .iter()
            .map(|s| DumpedSession {
                id: s.id,
                timeout_ms: s.timeout_ms,
                ephemerals: self.tree.ephemerals_of(s.id).cloned().collect(),
            })
            .collect();
        sessions.sort_by_key(|s| s.id);
        CanonicalDump {
            nodes,
            sessions,
            containers: self.tree.containers().cloned().collect(),
            ttls: self.tree.ttls().cloned().collect(),
            approximate_data_size: self.tree.approximate_data_size(),
            last_zxid: self.last_zxid,
        }
    }
}

/// Both directions of a watch table agree, and every watcher is an open connection (a closed
/// connection's watches must be gone, or events would be sent to nobody forever).
fn check_watches(
    kind: &str,
    watches: &WatchManager,
    is_open: impl Fn(ConnId) -> bool,
) -> Result<(), String> {
    let mut from_paths: BTreeMap<ConnId, BTreeSet<&str>> = BTreeMap::new();
    for (p, set) in watches.by_path() {
        let mut any = false;
        for w in set.iter() {
            any = true;
            if !from_paths.entry(w).or_default().insert(p) {
                return Err(format!("{kind} watch on {p}: watcher {w} listed twice"));
            }
        }
        if !any {
            return Err(format!("{kind} watch on {p}: empty watcher set kept"));
        }
    }
    let mut watchers = 0;
    for w in watches.watchers() {
        watchers += 1;
        if !is_open(w) {
            return Err(format!("{kind} watch left for closed connection {w}"));
        }
        let from_watcher: BTreeSet<&str> = watches.paths_of(w).collect();
        let listed = from_paths.get(&w).cloned().unwrap_or_default();
        if from_watcher != listed {
            return Err(format!(
                "{kind} watches of {w}: by watcher {from_watcher:?}, by path {listed:?}"
            ));
        }
    }
    if watchers != from_paths.len() {
        return Err(format!(
            "{kind} watches: {} watchers by path, {watchers} by watcher",
            from_paths.len()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::watch::WatchMode;
    use super::super::{acl, CoreConfig, Now};
    use super::*;

    fn core() -> Core {
        Core::new(CoreConfig::default(), Now::both(1_000))
    }

    #[test]
    fn a_fresh_core_passes() {
        assert_eq!(core().check_invariants(), Ok(()));
    }

    #[test]
    fn a_watch_of_a_connection_that_is_gone_is_reported() {
        let mut c = core();
        c.data_watches.add("/", 7, WatchMode::Standard);
        let err = c.check_invariants().unwrap_err();
        assert!(err.contains("closed connection 7"), "{err}");
    }

    #[test]
    fn an_ephemeral_node_of_no_session_is_reported() {
        let mut c = core();
        // Created behind the session table's back: the owner 0x42 is no session.
        c.tree
            .create("/e", None, acl::open_acl(), 0x42, 1, 1, 1_000)
            .unwrap();
        c.last_zxid = 1;
        let err = c.check_invariants().unwrap_err();
        assert!(err.contains("which is no session"), "{err}");
    }

    #[test]
    fn a_session_bound_to_a_missing_connection_is_reported() {
        let mut c = core();
        c.sessions.add(5, 1_000, 1_000);
        c.sessions.get_mut(5).unwrap().conn = Some(9);
        let err = c.check_invariants().unwrap_err();
        assert!(err.contains("closed connection 9"), "{err}");
    }

    #[test]
    fn two_fresh_cores_dump_equal_with_the_built_in_nodes() {
        let c = core();
        assert_eq!(c.canonical_dump(), core().canonical_dump());
        assert_eq!(c.canonical_dump().nodes.len(), 4);
    }
}
