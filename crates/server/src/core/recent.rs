//! A bounded window of recent changes, so that persistent watches re-registered after a
//! reconnect (setWatches2) can be sent the changes the client missed while it was away.
//!
//! ZooKeeper re-adds persistent watches without replaying anything, so a client loses every
//! change made during a disconnect. Corral keeps the last [`DEFAULT_CAPACITY`] changes and
//! replays those newer than the client's last seen zxid. Replayed events carry their original
//! zxid; a client that remembers the zxids it has seen can drop duplicates.

use std::collections::VecDeque;
use std::sync::Arc;

use corral_proto::records::Acl;
use corral_proto::{EventType, Zxid};

use super::apply::Trigger;

/// Changes kept for replay: about 100 bytes each plus the path.
pub const DEFAULT_CAPACITY: usize = 100_000;

#[derive(Debug, Clone)]
pub struct Change {
    pub zxid: Zxid,
    pub event: EventType,
    pub path: Arc<str>,
    pub acl: Arc<Vec<Acl>>,
}

#[derive(Debug)]
pub struct Replay {
    pub changes: Vec<Change>,
    /// False when changes after the client's zxid had already left the window.
    pub complete: bool,
}

#[derive(Debug)]
pub struct RecentChanges {
    changes: VecDeque<Change>,
    capacity: usize,
    /// Nothing is kept until the first persistent watch is added: until then no client can
    /// ask for a replay, and a server holding a million nodes and no such watch spends no
    /// memory on the window.
    armed: bool,
    /// The newest zxid whose changes were dropped from the window (0: nothing dropped).
    dropped_through: Zxid,
}

impl RecentChanges {
    pub fn new(capacity: usize) -> RecentChanges {
        RecentChanges {
            changes: VecDeque::new(),
            armed: false,
            capacity,
            dropped_through: 0,
        }
    }

    /// Starts keeping changes (a persistent watch exists now, or existed before a reconnect).
    pub fn arm(&mut self) {
        self.armed = true;
    }

    pub fn record(&mut self, zxid: Zxid, t: &Trigger) {
        let (event, path, acl) = match t {
            Trigger::Created(p, a) => (EventType::NodeCreated, p, a),
            Trigger::Deleted(p, a) => (EventType::NodeDeleted, p, a),
            Trigger::DataChanged(p, a) => (EventType::NodeDataChanged, p, a),
            Trigger::Children(p, a) => (EventType::NodeChildrenChanged, p, a),
        };
        if !self.armed || self.capacity == 0 {
            self.dropped_through = zxid;
            return;
        }
        while self.changes.len() >= self.capacity {
            if let Some(old) = self.changes.pop_front() {
                self.dropped_through = old.zxid;
            }
        }
        self.changes.push_back(Change {
            zxid,
            event,
            path: Arc::from(path.as_str()),
            acl: acl.clone(),
        });
    }

    /// Changes after `since` that a persistent watch on one of `persistent` or a recursive
    /// watch on one of `recursive` would have fired for, each once, in order.
    pub fn since(&self, since: Zxid, persistent: &[String], recursive: &[String]) -> Replay {
        let complete = self.dropped_through <= since;
        if persistent.is_empty() && recursive.is_empty() {
            return Replay {
                changes: Vec::new(),
                complete,
            };
        }
        let start = self.changes.partition_point(|c| c.zxid <= since);
        let changes = self
            .changes
            .range(start..)
            .filter(|c| {
                persistent.iter().any(|p| **p == *c.path)
                    || (c.event != EventType::NodeChildrenChanged
                        && recursive.iter().any(|r| is_within(&c.path, r)))
            })
            .cloned()
            .collect();
        Replay { changes, complete }
    }
}

/// Whether `path` is `root` or below it.
fn is_within(path: &str, root: &str) -> bool {
    root == "/"
        || path == root
        || (path.starts_with(root) && path.as_bytes().get(root.len()) == Some(&b'/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acl() -> Arc<Vec<Acl>> {
        Arc::new(crate::core::acl::open_acl())
    }

    #[test]
    fn replays_matching_changes_after_the_zxid() {
        let mut r = RecentChanges::new(10);
        r.arm();
        r.record(5, &Trigger::Created("/a/x".into(), acl()));
        r.record(5, &Trigger::Children("/a".into(), acl()));
        r.record(6, &Trigger::DataChanged("/a".into(), acl()));
        r.record(7, &Trigger::DataChanged("/ab".into(), acl()));
        r.record(8, &Trigger::Deleted("/a/x".into(), acl()));
        let got = r.since(5, &[], &["/a".into()]);
        assert!(got.complete);
        let ev: Vec<_> = got
            .changes
            .iter()
            .map(|c| (c.zxid, c.event, &*c.path))
            .collect();
        assert_eq!(
            ev,
            vec![
                (6, EventType::NodeDataChanged, "/a"),
                (8, EventType::NodeDeleted, "/a/x")
            ]
        );
        let got = r.since(0, &["/a".into()], &[]);
        let ev: Vec<_> = got.changes.iter().map(|c| (c.zxid, c.event)).collect();
        assert_eq!(
            ev,
            vec![
                (5, EventType::NodeChildrenChanged),
                (6, EventType::NodeDataChanged)
            ]
        );
    }

    #[test]
    fn a_window_that_lost_changes_says_so() {
        let mut r = RecentChanges::new(2);
        r.arm();
        for z in 1..=4 {
            r.record(z, &Trigger::DataChanged("/a".into(), acl()));
        }
        assert!(!r.since(1, &["/a".into()], &[]).complete);
        let got = r.since(2, &["/a".into()], &[]);
        assert!(got.complete);
        assert_eq!(got.changes.len(), 2);
    }

    #[test]
    fn nothing_is_kept_before_the_first_persistent_watch() {
        let mut r = RecentChanges::new(10);
        r.record(1, &Trigger::DataChanged("/a".into(), acl()));
        assert_eq!(r.changes.len(), 0);
        r.arm();
        r.record(2, &Trigger::DataChanged("/a".into(), acl()));
        // A client back from zxid 0 missed change 1, which was never kept.
        assert!(!r.since(0, &["/a".into()], &[]).complete);
        let got = r.since(1, &["/a".into()], &[]);
        assert!(got.complete);
        assert_eq!(got.changes.len(), 1);
    }
}
