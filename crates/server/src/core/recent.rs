//! A bounded window of recent changes, so that persistent watches re-registered after a
//! reconnect (setWatches2) can be sent the changes the client missed while it was away.
//!
//! ZooKeeper re-adds persistent watches without replaying anything, so a client loses every
//! change made during a disconnect. Corral keeps the last [`DEFAULT_CAPACITY`] changes and
//! replays those newer than the client's last seen zxid. Replayed events carry their original
//! zxid; a client that remembers the zxids it has seen can drop duplicates.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;

use corral_proto::records::Acl;
use corral_proto::{EventType, Zxid};

use super::apply::Trigger;
use super::path;

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

    /// How many changes the window holds now (0 until it is armed).
    pub fn depth(&self) -> usize {
        self.changes.len()
    }

    /// Starts keeping changes (a persistent watch exists now, or existed before a reconnect).
    pub fn arm(&mut self) {
        self.armed = true;
    }

    /// Changes up to `zxid` happened without passing through this window (replayed from the
    /// log or loaded from a snapshot at start-up or after a rebuild): a client whose last seen
    /// zxid is below it cannot be given a complete replay.
    pub fn forget_through(&mut self, zxid: Zxid) {
        self.dropped_through = self.dropped_through.max(zxid);
    }

    /// Drops the changes after `zxid`: a leader's prepared txns that will never commit. What
    /// the window knows up to `zxid` stays.
    pub fn truncate_after(&mut self, zxid: Zxid) {
        while self.changes.back().is_some_and(|c| c.zxid > zxid) {
            self.changes.pop_back();
        }
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
        // Each change is matched by hashing the path and its ancestors: the cost is the window
        // after `since` times the path depth, however many watches the client re-registers
        // (a scan of every watch per change made a reconnect cost window × watches).
        let persistent: HashSet<&str> = persistent.iter().map(String::as_str).collect();
        let recursive: HashSet<&str> = recursive.iter().map(String::as_str).collect();
        let start = self.changes.partition_point(|c| c.zxid <= since);
        let changes = self
            .changes
            .range(start..)
            .filter(|c| {
                persistent.contains(&*c.path)
                    || (c.event != EventType::NodeChildrenChanged
                        && !recursive.is_empty()
                        && path::self_and_ancestors(&c.path).any(|p| recursive.contains(p)))
            })
            .cloned()
            .collect();
        Replay { changes, complete }
    }
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
    fn replay_matches_exact_paths_and_whole_subtrees_only() {
        let mut r = RecentChanges::new(100);
        r.arm();
        let paths = ["/a", "/a/b", "/a/b/c", "/ab", "/ab/c", "/x/a", "/", "/z"];
        for (i, p) in paths.iter().enumerate() {
            r.record(i as Zxid + 1, &Trigger::DataChanged((*p).into(), acl()));
            r.record(i as Zxid + 1, &Trigger::Children((*p).into(), acl()));
        }
        let got = |persistent: &[&str], recursive: &[&str]| -> Vec<(EventType, String)> {
            let persistent: Vec<String> = persistent.iter().map(|p| p.to_string()).collect();
            let recursive: Vec<String> = recursive.iter().map(|p| p.to_string()).collect();
            r.since(0, &persistent, &recursive)
                .changes
                .iter()
                .map(|c| (c.event, c.path.to_string()))
                .collect()
        };
        let data = |p: &str| (EventType::NodeDataChanged, p.to_string());
        let children = |p: &str| (EventType::NodeChildrenChanged, p.to_string());
        // Recursive watches take data events at or below the root, never child events.
        assert_eq!(
            got(&[], &["/a"]),
            vec![data("/a"), data("/a/b"), data("/a/b/c")]
        );
        assert_eq!(
            got(&[], &["/a/b/c", "/x"]),
            vec![data("/a/b/c"), data("/x/a")]
        );
        assert_eq!(got(&[], &["/"]).len(), paths.len());
        // Persistent watches take both kinds, on their path only.
        assert_eq!(
            got(&["/ab", "/nope"], &[]),
            vec![data("/ab"), children("/ab")]
        );
        // A change both kinds of watch match is replayed once.
        assert_eq!(got(&["/z"], &["/z"]), vec![data("/z"), children("/z")]);
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
    fn an_empty_window_after_a_restart_is_incomplete_below_its_start() {
        let mut r = RecentChanges::new(10);
        r.forget_through(40);
        r.arm();
        assert!(!r.since(0, &["/a".into()], &[]).complete);
        assert!(!r.since(39, &[], &["/".into()]).complete);
        assert!(r.since(40, &["/a".into()], &[]).complete);
        r.record(41, &Trigger::DataChanged("/a".into(), acl()));
        let got = r.since(40, &["/a".into()], &[]);
        assert!(got.complete);
        assert_eq!(got.changes.len(), 1);
        // Forgetting never moves the start back.
        r.forget_through(3);
        assert!(!r.since(39, &["/a".into()], &[]).complete);
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
