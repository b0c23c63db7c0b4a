//! The watch manager: which connection watches which path, in which mode.
//!
//! Two indexes are kept in step: path → watchers (to fire a path's watches) and watcher →
//! paths (so a closing connection frees its watches in time proportional to its own watches).
//! A server keeps two managers, as ZooKeeper does: one for data/exist watches and one for child
//! watches.

use std::borrow::Borrow;
use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};

use ahash::RandomState;
use triomphe::ThinArc;

use super::path;
use super::ConnId;

/// How a watch behaves when it fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchMode {
    /// One-shot: removed when it fires.
    Standard,
    /// Fires on every change of the path; stays.
    Persistent,
    /// Fires on every change of the path or any descendant; stays.
    PersistentRecursive,
}

impl WatchMode {
    fn bit(self) -> u8 {
        match self {
            WatchMode::Standard => 1,
            WatchMode::Persistent => 2,
            WatchMode::PersistentRecursive => 4,
        }
    }
}

/// A watched path, allocated once and shared by both indexes. A thin pointer: 8 bytes in every
/// map entry instead of a `str` pointer's 16 (at 250k watches the maps' buckets, a third to half
/// of them empty, are most of the memory a watch costs).
#[derive(Clone)]
struct WatchPath(ThinArc<(), u8>);

impl WatchPath {
    fn new(path: &str) -> WatchPath {
        WatchPath(ThinArc::from_header_and_slice((), path.as_bytes()))
    }

    fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0.slice).expect("stored from a str")
    }
}

impl Borrow<str> for WatchPath {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

/// Hashes as the `str` it holds, as `Borrow<str>` requires.
impl Hash for WatchPath {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_str().hash(state)
    }
}

impl PartialEq for WatchPath {
    fn eq(&self, other: &WatchPath) -> bool {
        self.0.slice == other.0.slice
    }
}

impl Eq for WatchPath {}

impl std::fmt::Debug for WatchPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.as_str().fmt(f)
    }
}

/// The watchers of one path. Most paths have exactly one (no allocation at all), some a few (a
/// short vector); a crowded path (a fan-out) switches to a hash set so a closing connection
/// still leaves it in constant time. Both collections are boxed so that an entry is 16 bytes.
#[derive(Debug)]
pub enum WatcherSet {
    One(ConnId),
    // Boxed on purpose: see the type's documentation.
    #[allow(clippy::box_collection)]
    Few(Box<Vec<ConnId>>),
    #[allow(clippy::box_collection)]
    Many(Box<HashSet<ConnId, RandomState>>),
}

const FEW_MAX: usize = 8;

impl WatcherSet {
    fn one(w: ConnId) -> WatcherSet {
        WatcherSet::One(w)
    }

    fn insert(&mut self, w: ConnId) {
        match self {
            WatcherSet::One(x) if *x == w => {}
            WatcherSet::One(x) => *self = WatcherSet::Few(Box::new(vec![*x, w])),
            WatcherSet::Few(v) if v.contains(&w) => {}
            WatcherSet::Few(v) if v.len() < FEW_MAX => v.push(w),
            WatcherSet::Few(v) => {
                let mut set: HashSet<ConnId, RandomState> = v.drain(..).collect();
                set.insert(w);
                *self = WatcherSet::Many(Box::new(set));
            }
            WatcherSet::Many(set) => {
                set.insert(w);
            }
        }
    }

    /// Removes `w`; true if the set is now empty.
    fn remove(&mut self, w: ConnId) -> bool {
        match self {
            WatcherSet::One(x) => *x == w,
            WatcherSet::Few(v) => {
                v.retain(|x| *x != w);
                v.is_empty()
            }
            WatcherSet::Many(set) => {
                set.remove(&w);
                set.is_empty()
            }
        }
    }

    pub fn iter(&self) -> Box<dyn Iterator<Item = ConnId> + '_> {
        match self {
            WatcherSet::One(x) => Box::new(std::iter::once(*x)),
            WatcherSet::Few(v) => Box::new(v.iter().copied()),
            WatcherSet::Many(set) => Box::new(set.iter().copied()),
        }
    }
}

#[derive(Debug, Default)]
pub struct WatchManager {
    by_path: HashMap<WatchPath, WatcherSet, RandomState>,
    /// Mode bits per path of each watcher.
    by_watcher: HashMap<ConnId, HashMap<WatchPath, u8, RandomState>, RandomState>,
    /// Number of (watcher, path) pairs with a recursive mode; when zero, triggers need not
    /// look at ancestors.
    recursive_count: usize,
}

impl WatchManager {
    /// Adds a watch; false if the watcher already had this mode on this path.
    pub fn add(&mut self, path: &str, watcher: ConnId, mode: WatchMode) -> bool {
        let modes = self.by_watcher.entry(watcher).or_default();
        let key = match modes.get_key_value(path) {
            Some((k, _)) => k.clone(),
            None => match self.by_path.get_key_value(path) {
                Some((k, _)) => k.clone(),
                None => WatchPath::new(path),
            },
        };
        let bits = modes.entry(key.clone()).or_insert(0);
        if *bits & mode.bit() != 0 {
            return false;
        }
        *bits |= mode.bit();
        if mode == WatchMode::PersistentRecursive {
            self.recursive_count += 1;
        }
        match self.by_path.get_mut(&key) {
            Some(set) => set.insert(watcher),
            None => {
                self.by_path.insert(key, WatcherSet::one(watcher));
            }
        }
        true
    }

    /// Drops every watch of a watcher (its connection closed).
    pub fn remove_watcher(&mut self, watcher: ConnId) {
        let Some(paths) = self.by_watcher.remove(&watcher) else {
            return;
        };
        for (p, bits) in paths {
            if bits & WatchMode::PersistentRecursive.bit() != 0 {
                self.recursive_count -= 1;
            }
            if let Some(set) = self.by_path.get_mut(p.as_str()) {
                if set.remove(watcher) {
                    self.by_path.remove(p.as_str());
                }
            }
        }
    }

    /// Fires the watches an event on `path` reaches: every watch on the path itself (one-shot
    /// ones are consumed) and recursive watches on its ancestors. Each watcher appears once.
    /// Watchers in `suppress` are consumed but not returned (they were already notified of this
    /// change by the other manager). The result is sorted; `suppress` must be sorted too (it is
    /// what an earlier `trigger` returned), so removing it is one merge pass, not a search per
    /// watcher: a delete seen by 100k data watchers and 100k child watchers stays linear.
    pub fn trigger(&mut self, path: &str, suppress: &[ConnId]) -> Vec<ConnId> {
        let mut fired: Vec<ConnId> = Vec::new();
        let ancestors = self.recursive_count > 0;
        for (depth, p) in path::self_and_ancestors(path).enumerate() {
            if depth > 0 && !ancestors {
                break;
            }
            let Some(watchers) = self.by_path.get_mut(p) else {
                continue;
            };
            let mut emptied = Vec::new();
            for w in watchers.iter() {
                let Some(bits) = self.by_watcher.get_mut(&w).and_then(|m| m.get_mut(p)) else {
                    continue;
                };
                if depth == 0 {
                    fired.push(w);
                    *bits &= !WatchMode::Standard.bit();
                    if *bits == 0 {
                        emptied.push(w);
                    }
                } else if *bits & WatchMode::PersistentRecursive.bit() != 0 {
                    fired.push(w);
                }
            }
            let mut now_empty = false;
            for w in emptied {
                now_empty = watchers.remove(w);
                if let Some(m) = self.by_watcher.get_mut(&w) {
                    m.remove(p);
                    if m.is_empty() {
                        self.by_watcher.remove(&w);
                    }
                }
            }
            if now_empty {
                self.by_path.remove(p);
            }
        }
        fired.sort_unstable();
        fired.dedup();
        without_sorted(fired, suppress)
    }

    /// Whether `watcher` watches `path` in `mode` (any mode if `None`).
    pub fn contains(&self, path: &str, watcher: ConnId, mode: Option<WatchMode>) -> bool {
        match self.by_watcher.get(&watcher).and_then(|m| m.get(path)) {
            None => false,
            Some(bits) => mode.is_none_or(|m| bits & m.bit() != 0),
        }
    }

    /// Removes `watcher`'s watch on `path` in `mode` (all modes if `None`); false if there was
    /// nothing to remove.
    pub fn remove(&mut self, path: &str, watcher: ConnId, mode: Option<WatchMode>) -> bool {
        let Some(modes) = self.by_watcher.get_mut(&watcher) else {
            return false;
        };
        let Some(bits) = modes.get_mut(path) else {
            return false;
        };
        let old = *bits;
        let new = match mode {
            Some(m) => old & !m.bit(),
            None => 0,
        };
        if new == old {
            return false;
        }
        *bits = new;
        if old & WatchMode::PersistentRecursive.bit() != 0
            && new & WatchMode::PersistentRecursive.bit() == 0
        {
            self.recursive_count -= 1;
        }
        if new == 0 {
            modes.remove(path);
            if modes.is_empty() {
                self.by_watcher.remove(&watcher);
            }
            if let Some(set) = self.by_path.get_mut(path) {
                if set.remove(watcher) {
                    self.by_path.remove(path);
                }
            }
        }
        true
    }

    /// Every watch of a watcher, as (path, mode bits), to move it to another manager.
    pub fn export(&self, watcher: ConnId) -> Vec<(String, u8)> {
        self.by_watcher
            .get(&watcher)
            .into_iter()
            .flat_map(|m| m.iter().map(|(p, bits)| (p.as_str().to_string(), *bits)))
            .collect()
    }

    /// Re-creates watches exported by [`WatchManager::export`]; true if any is persistent.
    pub fn import(&mut self, watcher: ConnId, watches: &[(String, u8)]) -> bool {
        let mut persistent = false;
        for (path, bits) in watches {
            persistent |= bits & !WatchMode::Standard.bit() != 0;
            for mode in [
                WatchMode::Standard,
                WatchMode::Persistent,
                WatchMode::PersistentRecursive,
            ] {
                if bits & mode.bit() != 0 {
                    self.add(path, watcher, mode);
                }
            }
        }
        persistent
    }

    /// Number of (watcher, path) pairs.
    pub fn watch_count(&self) -> usize {
        self.by_watcher.values().map(|m| m.len()).sum()
    }

    pub fn path_count(&self) -> usize {
        self.by_path.len()
    }

    pub fn paths_of(&self, watcher: ConnId) -> impl Iterator<Item = &str> {
        self.by_watcher
            .get(&watcher)
            .into_iter()
            .flat_map(|m| m.keys().map(WatchPath::as_str))
    }

    pub fn watchers(&self) -> impl Iterator<Item = ConnId> + '_ {
        self.by_watcher.keys().copied()
    }

    pub fn by_path(&self) -> impl Iterator<Item = (&str, &WatcherSet)> {
        self.by_path.iter().map(|(k, v)| (k.as_str(), v))
    }
}

/// The watchers of sorted `fired` that are not in sorted `suppress`, in one merge pass.
fn without_sorted(mut fired: Vec<ConnId>, suppress: &[ConnId]) -> Vec<ConnId> {
    debug_assert!(
        suppress.windows(2).all(|w| w[0] <= w[1]),
        "suppress is sorted"
    );
    if suppress.is_empty() {
        return fired;
    }
    let mut skip = suppress.iter().peekable();
    fired.retain(|w| {
        while skip.next_if(|s| *s < w).is_some() {}
        skip.peek() != Some(&w)
    });
    fired
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suppressing_many_watchers_keeps_exactly_the_others() {
        // Data watchers: every third connection; child watchers: every second one. A delete
        // fires the data watches first, then the child watches minus those already notified.
        let mut data = WatchManager::default();
        let mut child = WatchManager::default();
        for c in (0..3000).rev() {
            if c % 3 == 0 {
                data.add("/a", c, WatchMode::Standard);
            }
            if c % 2 == 0 {
                child.add("/a", c, WatchMode::Standard);
            }
        }
        child.add("/", 9999, WatchMode::PersistentRecursive);
        let notified = data.trigger("/a", &[]);
        assert_eq!(notified, (0..3000).step_by(3).collect::<Vec<ConnId>>());
        let more = child.trigger("/a", &notified);
        let mut expected: Vec<ConnId> = (0..3000).filter(|c| c % 2 == 0 && c % 3 != 0).collect();
        expected.push(9999);
        assert_eq!(more, expected);
        // The suppressed one-shot watches were consumed all the same.
        assert_eq!(child.trigger("/a", &[]), vec![9999]);
        // Suppressing watchers that did not fire, or all of them, works at the edges too.
        child.add("/b", 5, WatchMode::Standard);
        assert_eq!(child.trigger("/b", &[1, 2, 6, 9999, 10_000]), vec![5]);
        child.add("/b", 5, WatchMode::Standard);
        assert_eq!(child.trigger("/b", &[5, 9999]), Vec::<ConnId>::new());
    }

    #[test]
    fn one_shot_watch_fires_once() {
        let mut m = WatchManager::default();
        assert!(m.add("/a", 1, WatchMode::Standard));
        assert!(!m.add("/a", 1, WatchMode::Standard));
        assert_eq!(m.trigger("/a", &[]), vec![1]);
        assert_eq!(m.trigger("/a", &[]), Vec::<ConnId>::new());
        assert_eq!(m.watch_count(), 0);
        assert_eq!(m.path_count(), 0);
    }

    #[test]
    fn persistent_watch_stays_and_standard_on_same_path_fires_once() {
        let mut m = WatchManager::default();
        m.add("/a", 1, WatchMode::Persistent);
        m.add("/a", 1, WatchMode::Standard);
        assert_eq!(m.trigger("/a", &[]), vec![1]);
        assert!(m.contains("/a", 1, Some(WatchMode::Persistent)));
        assert!(!m.contains("/a", 1, Some(WatchMode::Standard)));
        assert_eq!(m.trigger("/a", &[]), vec![1]);
    }

    #[test]
    fn recursive_watch_sees_descendants_only_through_recursive_mode() {
        let mut m = WatchManager::default();
        m.add("/a", 1, WatchMode::PersistentRecursive);
        m.add("/a", 2, WatchMode::Standard);
        m.add("/a", 3, WatchMode::Persistent);
        assert_eq!(m.trigger("/a/b/c", &[]), vec![1]);
        assert_eq!(m.trigger("/a", &[]), vec![1, 2, 3]);
    }

    #[test]
    fn root_recursive_watch_sees_everything() {
        let mut m = WatchManager::default();
        m.add("/", 7, WatchMode::PersistentRecursive);
        assert_eq!(m.trigger("/x/y", &[]), vec![7]);
    }

    #[test]
    fn suppressed_watchers_are_consumed_but_not_returned() {
        let mut m = WatchManager::default();
        m.add("/a", 1, WatchMode::Standard);
        m.add("/a", 2, WatchMode::Standard);
        assert_eq!(m.trigger("/a", &[1]), vec![2]);
        assert_eq!(m.watch_count(), 0);
    }

    #[test]
    fn closing_a_watcher_frees_both_indexes() {
        let mut m = WatchManager::default();
        m.add("/a", 1, WatchMode::Standard);
        m.add("/b", 1, WatchMode::PersistentRecursive);
        m.add("/a", 2, WatchMode::Standard);
        m.remove_watcher(1);
        assert_eq!(m.watch_count(), 1);
        assert_eq!(m.path_count(), 1);
        assert_eq!(m.trigger("/b/c", &[]), Vec::<ConnId>::new());
    }

    #[test]
    fn watcher_sets_grow_and_shrink_through_every_shape() {
        let mut m = WatchManager::default();
        for w in 1..=20 {
            m.add("/hot", w, WatchMode::Standard);
        }
        m.remove_watcher(3);
        assert_eq!(m.trigger("/hot", &[]).len(), 19);
        assert_eq!(m.path_count(), 0);
        m.add("/x", 1, WatchMode::Standard);
        m.add("/x", 2, WatchMode::Standard);
        m.remove_watcher(1);
        m.remove_watcher(2);
        assert_eq!(m.path_count(), 0);
        // Map entries stay small: no inline hash set state.
        assert!(std::mem::size_of::<WatcherSet>() <= 16);
        assert_eq!(std::mem::size_of::<WatchPath>(), 8);
    }

    #[test]
    fn export_and_import_move_every_mode() {
        let mut a = WatchManager::default();
        a.add("/a", 1, WatchMode::Standard);
        a.add("/a", 1, WatchMode::PersistentRecursive);
        a.add("/b", 1, WatchMode::Persistent);
        let mut b = WatchManager::default();
        b.import(1, &a.export(1));
        assert!(b.contains("/a", 1, Some(WatchMode::Standard)));
        assert!(b.contains("/a", 1, Some(WatchMode::PersistentRecursive)));
        assert!(b.contains("/b", 1, Some(WatchMode::Persistent)));
        assert_eq!(b.trigger("/a/x", &[]), vec![1]);
    }

    #[test]
    fn import_says_whether_a_persistent_watch_came_along() {
        let mut a = WatchManager::default();
        a.add("/a", 1, WatchMode::Standard);
        a.add("/b", 2, WatchMode::Persistent);
        let mut b = WatchManager::default();
        assert!(!b.import(1, &a.export(1)));
        assert!(b.import(2, &a.export(2)));
    }

    #[test]
    fn remove_by_mode() {
        let mut m = WatchManager::default();
        m.add("/a", 1, WatchMode::Standard);
        m.add("/a", 1, WatchMode::PersistentRecursive);
        assert!(!m.remove("/a", 1, Some(WatchMode::Persistent)));
        assert!(m.remove("/a", 1, Some(WatchMode::PersistentRecursive)));
        assert!(m.contains("/a", 1, None));
        assert!(m.remove("/a", 1, None));
        assert!(!m.contains("/a", 1, None));
        assert_eq!(m.path_count(), 0);
    }
}
