//! One znode in memory.
//!
//! A node is a single reference-counted allocation: its persisted stat, its ACL, and one byte
//! slice holding its path followed by its data. Sharing matters twice: the tree's index holds
//! nodes by pointer (8 bytes a bucket) and finds them by the path stored inside; a snapshot view
//! holds the same pointers, and the tree copies a node only when it writes one a view still
//! holds. One allocation instead of four (node, path key, data buffer, name in the parent) is
//! most of what took a 100-byte znode from ~530 to ~250 bytes of server memory.
//!
//! What most nodes never need (an owner, children and their counters, a changed ACL version)
//! lives in a box allocated the first time a node needs it, and the ACL is an index into the
//! tree's table of distinct lists: a 100-byte znode then fits a 192-byte allocation.

use std::sync::LazyLock;

use bytes::Bytes;
use corral_proto::records::{Data, Stat};
use corral_proto::Zxid;
use hashbrown::HashTable;
use triomphe::ThinArc;

use super::tree::{owner_kind, OwnerKind};

#[derive(Clone, Debug, PartialEq, Eq)]
struct Meta {
    czxid: Zxid,
    mzxid: Zxid,
    ctime_ms: i64,
    mtime_ms: i64,
    version: i32,
    acl: AclId,
    extra: Option<Box<Extra>>,
}

/// What most nodes do not need: an owner (ephemerals, containers, TTL nodes), a changed ACL
/// version, children. Allocated the first time a node needs one of them.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
struct Extra {
    ephemeral_owner: i64,
    aversion: i32,
    /// Child creations ever (it names sequential children); clients see it translated. Kept
    /// after the last child goes.
    cversion: i32,
    /// `None` means "the same as czxid".
    pzxid: Option<Zxid>,
    names: NameSet,
}

/// Index of an ACL list in the tree's table of distinct lists (see `DataTree::acl`).
pub type AclId = u32;

/// Between the path and the data in a node's bytes. Paths cannot contain control characters,
/// so the first byte below 2 ends the path, and it also says whether data is null.
const DATA_FOLLOWS: u8 = 0;
const NULL_DATA: u8 = 1;

/// A znode: `Meta` and the bytes `path ++ separator ++ data` in one allocation.
#[derive(Clone)]
pub struct Node(ThinArc<Meta, u8>);

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("path", &self.path())
            .field("data", &self.data())
            .field("acl", &self.acl_id())
            .field("stat", &self.stored_stat())
            .finish()
    }
}

impl PartialEq for Node {
    fn eq(&self, other: &Node) -> bool {
        self.meta() == other.meta() && self.0.slice == other.0.slice
    }
}

impl Eq for Node {}

impl Node {
    /// A node with the given persisted stat (`cversion` counts child creations; `data_length`
    /// and `num_children` are ignored) and no children yet.
    pub fn new(path: &str, data: Option<&[u8]>, acl: AclId, stored: &Stat) -> Node {
        let extra = (stored.ephemeral_owner != 0
            || stored.aversion != 0
            || stored.cversion != 0
            || stored.pzxid != stored.czxid)
            .then(|| {
                Box::new(Extra {
                    ephemeral_owner: stored.ephemeral_owner,
                    aversion: stored.aversion,
                    cversion: stored.cversion,
                    pzxid: (stored.pzxid != stored.czxid).then_some(stored.pzxid),
                    names: NameSet::default(),
                })
            });
        let meta = Meta {
            czxid: stored.czxid,
            mzxid: stored.mzxid,
            ctime_ms: stored.ctime,
            mtime_ms: stored.mtime,
            version: stored.version,
            acl,
            extra,
        };
        Node::build(meta, path.as_bytes(), data)
    }

    fn build(meta: Meta, path: &[u8], data: Option<&[u8]>) -> Node {
        // The separator must be the first such byte; request validation keeps control
        // characters out of paths (and UTF-8 never encodes others with these bytes).
        debug_assert!(
            !path.iter().any(|&b| b <= NULL_DATA),
            "control byte in a path"
        );
        thread_local! {
            // The node's bytes, assembled here and copied into the node in one go.
            static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        SCRATCH.with_borrow_mut(|bytes| {
            bytes.clear();
            bytes.extend_from_slice(path);
            bytes.push(if data.is_some() {
                DATA_FOLLOWS
            } else {
                NULL_DATA
            });
            bytes.extend_from_slice(data.unwrap_or_default());
            Node(ThinArc::from_header_and_slice(meta, bytes))
        })
    }

    fn meta(&self) -> &Meta {
        &self.0.header.header
    }

    fn extra(&self) -> Option<&Extra> {
        self.meta().extra.as_deref()
    }

    fn path_len(&self) -> usize {
        self.0
            .slice
            .iter()
            .position(|&b| b <= NULL_DATA)
            .expect("a node's bytes hold a separator")
    }

    pub fn path(&self) -> &str {
        std::str::from_utf8(self.path_bytes()).expect("paths are stored from str")
    }

    pub(super) fn path_bytes(&self) -> &[u8] {
        &self.0.slice[..self.path_len()]
    }

    /// Whether this is the node at `path`, without searching for the separator.
    pub(super) fn is_at(&self, path: &[u8]) -> bool {
        let bytes = &self.0.slice;
        bytes.len() > path.len() && bytes[path.len()] <= NULL_DATA && bytes.starts_with(path)
    }

    pub fn data(&self) -> Option<&[u8]> {
        let at = self.path_len();
        (self.0.slice[at] == DATA_FOLLOWS).then(|| &self.0.slice[at + 1..])
    }

    /// The data as the wire wants it (a copy: nodes do not share their buffers with replies).
    pub fn data_owned(&self) -> Data {
        self.data().map(Bytes::copy_from_slice)
    }

    pub fn data_len(&self) -> usize {
        self.data().map_or(0, <[u8]>::len)
    }

    pub fn acl_id(&self) -> AclId {
        self.meta().acl
    }

    pub fn version(&self) -> i32 {
        self.meta().version
    }

    pub fn aversion(&self) -> i32 {
        self.extra().map_or(0, |e| e.aversion)
    }

    /// Stored cversion: child creations ever.
    pub fn cversion(&self) -> i32 {
        self.extra().map_or(0, |e| e.cversion)
    }

    pub fn czxid(&self) -> Zxid {
        self.meta().czxid
    }

    pub fn mzxid(&self) -> Zxid {
        self.meta().mzxid
    }

    pub fn pzxid(&self) -> Zxid {
        self.extra().and_then(|e| e.pzxid).unwrap_or(self.czxid())
    }

    pub fn mtime_ms(&self) -> i64 {
        self.meta().mtime_ms
    }

    /// Raw owner: session id, or the container / TTL encodings of [`owner_kind`].
    pub fn ephemeral_owner(&self) -> i64 {
        self.extra().map_or(0, |e| e.ephemeral_owner)
    }

    pub fn children(&self) -> impl Iterator<Item = &str> {
        self.extra().into_iter().flat_map(|e| e.names.iter())
    }

    pub fn child_count(&self) -> usize {
        self.extra().map_or(0, |e| e.names.len())
    }

    pub fn has_children(&self) -> bool {
        self.child_count() > 0
    }

    /// The stat as persisted (cversion counts creations; `data_length` and `num_children` are
    /// derived and left 0).
    pub fn stored_stat(&self) -> Stat {
        let m = self.meta();
        Stat {
            czxid: m.czxid,
            mzxid: m.mzxid,
            ctime: m.ctime_ms,
            mtime: m.mtime_ms,
            version: m.version,
            cversion: self.cversion(),
            aversion: self.aversion(),
            ephemeral_owner: self.ephemeral_owner(),
            data_length: 0,
            num_children: 0,
            pzxid: self.pzxid(),
        }
    }

    /// The Stat clients see. Two translations, as ZooKeeper makes them: the stored cversion
    /// counts child creations (it names sequential nodes), clients see creations plus deletions
    /// (`2 * creations - live children`); and containers and TTL nodes show owner 0.
    pub fn stat(&self) -> Stat {
        let num_children = self.child_count() as i32;
        let ephemeral_owner = match owner_kind(self.ephemeral_owner(), true) {
            OwnerKind::Ephemeral(s) => s,
            _ => 0,
        };
        Stat {
            data_length: self.data_len() as i32,
            num_children,
            cversion: self.cversion() * 2 - num_children,
            ephemeral_owner,
            ..self.stored_stat()
        }
    }

    // ---- changes: in place when nobody else holds the node, on a copy otherwise ----

    fn update<R>(&mut self, f: impl FnOnce(&mut Meta) -> R) -> R {
        if ThinArc::strong_count(&self.0) > 1 {
            *self = Node(ThinArc::from_header_and_slice(
                self.meta().clone(),
                &self.0.slice,
            ));
        }
        self.0.with_arc_mut(|arc| {
            let meta = triomphe::Arc::get_mut(arc).expect("made unique above");
            f(meta.header_mut())
        })
    }

    fn extra_mut<R>(&mut self, f: impl FnOnce(&mut Extra) -> R) -> R {
        self.update(|m| f(m.extra.get_or_insert_with(Default::default)))
    }

    /// Replaces the data (a new allocation: the bytes change length); the rest moves over.
    pub(super) fn set_data(&mut self, data: Option<&[u8]>, version: i32, zxid: Zxid, time_ms: i64) {
        let mut meta = if ThinArc::strong_count(&self.0) == 1 {
            self.update(|m| {
                let extra = m.extra.take();
                Meta { extra, ..m.clone() }
            })
        } else {
            self.meta().clone()
        };
        meta.version = version;
        meta.mzxid = zxid;
        meta.mtime_ms = time_ms;
        *self = Node::build(meta, self.path_bytes(), data);
    }

    pub(super) fn set_acl(&mut self, acl: AclId, aversion: i32) {
        self.update(|m| m.acl = acl);
        if aversion != self.aversion() {
            self.extra_mut(|e| e.aversion = aversion);
        }
    }

    /// Links a child name; raises cversion to `cversion` (and pzxid to `zxid`) if that grows it.
    pub(super) fn add_child(&mut self, name: &str, cversion: i32, zxid: Zxid) {
        self.extra_mut(|e| {
            if cversion > e.cversion {
                e.cversion = cversion;
                e.pzxid = Some(zxid);
            }
            e.names.insert(name);
        });
    }

    /// Links a child name while restoring a snapshot (the counters are already right). The
    /// caller knows the name is new.
    pub(super) fn restore_child(&mut self, name: &str) {
        self.extra_mut(|e| e.names.insert_new(name));
    }

    pub(super) fn remove_child(&mut self, name: &str, zxid: Zxid) {
        let pzxid = self.pzxid();
        self.extra_mut(|e| {
            e.names.remove(name);
            if zxid > pzxid {
                e.pzxid = Some(zxid);
            }
        });
    }
}

/// Per-process random keys for child-name hashing, so clients cannot pick colliding names.
static NAME_HASHER: LazyLock<ahash::RandomState> = LazyLock::new(ahash::RandomState::new);

/// Below this many names a set is scanned; from it on, it keeps a hash index.
const INDEX_FROM: usize = 16;

/// The child names of one node, packed into one buffer: each name is a record
/// `varint(len << 1 | removed) ++ bytes`, in the order the names were added. Removing marks the
/// record; the buffer is compacted when removed records outweigh the live ones. Large sets keep
/// an index of record offsets by name hash. A name costs its length, a byte or two, and in large
/// sets ~6 bytes of index, where a set of boxed strings costs ~60.
#[derive(Clone, Debug, Default)]
pub struct NameSet {
    records: Vec<u8>,
    live: usize,
    removed_bytes: usize,
    index: Option<Index>,
}

/// Record offsets by name hash: 16-bit while the records fit in 64 KiB (most sets), which
/// halves the index.
#[derive(Clone, Debug)]
enum Index {
    Narrow(HashTable<u16>),
    Wide(HashTable<u32>),
}

impl PartialEq for NameSet {
    fn eq(&self, other: &NameSet) -> bool {
        self.len() == other.len() && self.iter().all(|n| other.contains(n))
    }
}

impl Eq for NameSet {}

/// Decodes the record at `offset`: (name, removed, offset of the next record).
fn record_at(records: &[u8], offset: usize) -> (&[u8], bool, usize) {
    let (mut value, mut shift, mut at) = (0usize, 0, offset);
    loop {
        let b = records[at];
        at += 1;
        value |= ((b & 0x7f) as usize) << shift;
        if b & 0x80 == 0 {
            break;
        }
        shift += 7;
    }
    let len = value >> 1;
    (&records[at..at + len], value & 1 == 1, at + len)
}

fn push_record(records: &mut Vec<u8>, name: &[u8]) {
    // Grow by a quarter, not double: a 1000-child directory wastes ~12% instead of ~33%.
    let needed = name.len() + 5;
    if records.capacity() - records.len() < needed {
        records.reserve_exact(needed.max(records.len() / 4));
    }
    let mut value = name.len() << 1;
    while value >= 0x80 {
        records.push((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    records.push(value as u8);
    records.extend_from_slice(name);
}

fn name_hash(name: &[u8]) -> u64 {
    NAME_HASHER.hash_one(name)
}

impl Index {
    fn find(&self, records: &[u8], name: &[u8]) -> Option<usize> {
        let is = |at: usize| record_at(records, at).0 == name;
        let hash = name_hash(name);
        match self {
            Index::Narrow(t) => t.find(hash, |&at| is(at.into())).map(|&at| at.into()),
            Index::Wide(t) => t.find(hash, |&at| is(at as usize)).map(|&at| at as usize),
        }
    }

    /// Adds the record at `at`; false if the offset does not fit this index.
    fn insert(&mut self, records: &[u8], at: usize) -> bool {
        let rehash = |at: usize| name_hash(record_at(records, at).0);
        let hash = rehash(at);
        match self {
            Index::Narrow(t) => match u16::try_from(at) {
                Ok(at) => {
                    t.insert_unique(hash, at, |&o| rehash(o.into()));
                }
                Err(_) => return false,
            },
            Index::Wide(t) => {
                t.insert_unique(hash, at as u32, |&o| rehash(o as usize));
            }
        }
        true
    }

    fn remove(&mut self, name: &[u8], at: usize) {
        let hash = name_hash(name);
        match self {
            Index::Narrow(t) => {
                if let Ok(e) = t.find_entry(hash, |&o| usize::from(o) == at) {
                    e.remove();
                }
            }
            Index::Wide(t) => {
                if let Ok(e) = t.find_entry(hash, |&o| o as usize == at) {
                    e.remove();
                }
            }
        }
    }
}

impl NameSet {
    pub fn len(&self) -> usize {
        self.live
    }

    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.live_records()
            .map(|(_, name)| std::str::from_utf8(name).expect("names are stored from str"))
    }

    /// (offset, name) of every live record, in order.
    fn live_records(&self) -> impl Iterator<Item = (usize, &[u8])> {
        let mut at = 0;
        std::iter::from_fn(move || loop {
            if at >= self.records.len() {
                return None;
            }
            let (name, removed, next) = record_at(&self.records, at);
            let this = at;
            at = next;
            if !removed {
                return Some((this, name));
            }
        })
    }

    pub fn contains(&self, name: &str) -> bool {
        self.find(name).is_some()
    }

    /// Offset of the live record for `name`.
    fn find(&self, name: &str) -> Option<usize> {
        let name = name.as_bytes();
        match &self.index {
            Some(index) => index.find(&self.records, name),
            None => self
                .live_records()
                .find(|(_, n)| *n == name)
                .map(|(at, _)| at),
        }
    }

    /// Adds `name`; false if it was there already.
    pub fn insert(&mut self, name: &str) -> bool {
        if self.contains(name) {
            return false;
        }
        self.insert_new(name);
        true
    }

    /// Adds `name`, which the caller knows is not in the set.
    pub fn insert_new(&mut self, name: &str) {
        let at = self.records.len();
        push_record(&mut self.records, name.as_bytes());
        self.live += 1;
        let indexed = match &mut self.index {
            Some(index) => index.insert(&self.records, at),
            None => self.live < INDEX_FROM,
        };
        if !indexed {
            self.rebuild_index();
        }
    }

    /// Removes `name`; false if it was not there.
    pub fn remove(&mut self, name: &str) -> bool {
        let Some(at) = self.find(name) else {
            return false;
        };
        let (_, _, next) = record_at(&self.records, at);
        // The flag is bit 0 of the varint, which is bit 0 of its first byte.
        self.records[at] |= 1;
        self.live -= 1;
        self.removed_bytes += next - at;
        if let Some(index) = &mut self.index {
            index.remove(name.as_bytes(), at);
        }
        if self.removed_bytes > 64 && self.removed_bytes * 2 > self.records.len() {
            self.compact();
        }
        true
    }

    /// Drops removed records (keeping the order of the rest) and re-indexes.
    fn compact(&mut self) {
        let mut records = Vec::with_capacity(self.records.len() - self.removed_bytes);
        for name in self.iter() {
            push_record(&mut records, name.as_bytes());
        }
        self.records = records;
        self.removed_bytes = 0;
        self.rebuild_index();
    }

    fn rebuild_index(&mut self) {
        if self.live < INDEX_FROM {
            self.index = None;
            return;
        }
        // Every offset is below the length, so 16 bits hold them all when they hold that.
        let mut index = if self.records.len() <= usize::from(u16::MAX) {
            Index::Narrow(HashTable::with_capacity(self.live))
        } else {
            Index::Wide(HashTable::with_capacity(self.live))
        };
        for (at, _) in self.live_records() {
            let fitted = index.insert(&self.records, at);
            debug_assert!(fitted);
        }
        self.index = Some(index);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stat(czxid: Zxid) -> Stat {
        Stat {
            czxid,
            mzxid: czxid,
            pzxid: czxid,
            ..Stat::default()
        }
    }

    #[test]
    fn a_small_node_fits_one_192_byte_allocation() {
        // count + Meta + slice length + "/zkbench/zm/b00001/n0001" + separator + 100 bytes
        let bytes = 8 + std::mem::size_of::<Meta>() + 8 + 24 + 1 + 100;
        assert!(bytes <= 192, "{bytes}");
    }

    #[test]
    fn a_node_keeps_path_data_and_stat() {
        let n = Node::new("/a/b", Some(b"xyz"), 0, &stat(5));
        assert_eq!(n.path(), "/a/b");
        assert_eq!(n.data(), Some(&b"xyz"[..]));
        assert_eq!(n.stat().data_length, 3);
        assert_eq!((n.czxid(), n.pzxid(), n.cversion()), (5, 5, 0));
        let null = Node::new("/n", None, 0, &stat(1));
        assert_eq!(null.data(), None);
        let empty = Node::new("/e", Some(b""), 0, &stat(1));
        assert_eq!(empty.data(), Some(&b""[..]));
    }

    #[test]
    fn a_write_to_a_shared_node_leaves_the_other_holder_unchanged() {
        let mut n = Node::new("/a", Some(b"old"), 0, &stat(1));
        n.add_child("c", 1, 2);
        let held = n.clone();
        n.set_data(Some(b"new"), 1, 3, 30);
        n.add_child("d", 2, 4);
        n.set_acl(3, 1);
        assert_eq!(held.data(), Some(&b"old"[..]));
        assert_eq!(held.children().collect::<Vec<_>>(), ["c"]);
        assert_eq!((held.version(), held.pzxid(), held.acl_id()), (0, 2, 0));
        assert_eq!(n.data(), Some(&b"new"[..]));
        assert_eq!(n.children().collect::<Vec<_>>(), ["c", "d"]);
        assert_eq!(
            (n.version(), n.pzxid(), n.mzxid(), n.aversion()),
            (1, 4, 3, 1)
        );
        assert_eq!(n.acl_id(), 3);
    }

    #[test]
    fn set_data_keeps_the_children() {
        let mut n = Node::new("/p", None, 0, &stat(1));
        n.add_child("x", 1, 2);
        n.set_data(Some(b"d"), 1, 3, 0);
        assert_eq!(n.children().collect::<Vec<_>>(), ["x"]);
        assert_eq!(n.cversion(), 1);
    }

    #[test]
    fn the_counters_outlive_the_last_child() {
        let mut n = Node::new("/p", None, 0, &stat(1));
        n.add_child("x", 1, 2);
        n.remove_child("x", 3);
        let s = n.stat();
        assert_eq!(
            (s.num_children, n.cversion(), s.cversion, s.pzxid),
            (0, 1, 2, 3)
        );
    }

    #[test]
    fn name_sets_add_remove_and_keep_order() {
        let mut s = NameSet::default();
        for i in 0..1000 {
            assert!(s.insert(&format!("n{i}")));
        }
        assert!(!s.insert("n5"));
        assert!(matches!(s.index, Some(Index::Narrow(_))));
        for i in (0..1000).filter(|i| i % 3 != 0) {
            assert!(s.remove(&format!("n{i}")), "n{i}");
        }
        assert!(!s.remove("n1"));
        assert_eq!(s.len(), 334);
        let want: Vec<String> = (0..1000)
            .filter(|i| i % 3 == 0)
            .map(|i| format!("n{i}"))
            .collect();
        assert_eq!(s.iter().collect::<Vec<_>>(), want);
        assert!(s.contains("n999") && !s.contains("n998"));
        // Compaction ran: removed records no longer fill the buffer.
        assert!(s.removed_bytes * 2 <= s.records.len());
        for name in &want {
            assert!(s.remove(name));
        }
        assert_eq!((s.len(), s.iter().count()), (0, 0));
    }

    #[test]
    fn a_set_past_64_kib_of_names_indexes_wide_offsets() {
        let mut s = NameSet::default();
        let names: Vec<String> = (0..8000).map(|i| format!("member-{i:010}")).collect();
        for n in &names {
            assert!(s.insert(n));
        }
        assert!(matches!(s.index, Some(Index::Wide(_))));
        assert!(names.iter().all(|n| s.contains(n)));
        for n in &names[..7990] {
            assert!(s.remove(n));
        }
        // Compacted below 64 KiB: narrow again, still finding every name.
        assert!(matches!(s.index, None | Some(Index::Narrow(_))));
        assert_eq!(
            s.iter().collect::<Vec<_>>(),
            names[7990..].iter().map(String::as_str).collect::<Vec<_>>()
        );
    }

    #[test]
    fn long_names_take_multi_byte_lengths() {
        let mut s = NameSet::default();
        let long = "x".repeat(300);
        s.insert(&long);
        s.insert("short");
        assert_eq!(s.iter().collect::<Vec<_>>(), [long.as_str(), "short"]);
        assert!(s.remove(&long));
        assert_eq!(s.iter().collect::<Vec<_>>(), ["short"]);
    }
}
