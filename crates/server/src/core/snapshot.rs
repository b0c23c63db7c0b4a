//! Snapshots of the state machine: every node (path, data, ACL, persisted stat) and every
//! session, consistent as of one zxid. Written by the core's owner while no txn is applied, so
//! the image is exact (not "fuzzy" as ZooKeeper's): recovery loads it and replays only later
//! txns.
//!
//! Layout (jute encoding): magic `CRLSNAP2`, last zxid, sessions (id, timeout), the distinct
//! ACL lists once each, then the nodes parents-first (path, data, ACL index, stored stat), so a
//! loader links each node into its already-loaded parent and decodes no ACL twice.

use std::io::Read;
use std::sync::Arc;

use corral_proto::records::{Acl, Stat};

use corral_proto::{DecodeError, Jute, Reader, Writer, Zxid};

use super::tree::{AclId, DataTree, Node};
#[cfg(test)]
use super::Now;
use super::{Core, CoreConfig};

const MAGIC: &[u8; 8] = b"CRLSNAP2";

/// Everything a snapshot holds, taken from the core in one cheap step: the node map is shared
/// (pointer copies), and the core copies a node only if it changes while the view still holds
/// it. So the driver pauses for the copy of the map, and [`SnapshotView::encode`] runs on
/// another thread while the core keeps serving.
pub struct SnapshotView {
    zxid: Zxid,
    sessions: Vec<(i64, i32)>,
    nodes: Vec<Node>,
    acls: Vec<Arc<Vec<Acl>>>,
    data_size: usize,
}

impl SnapshotView {
    /// The zxid the view is exact at: every txn up to it, none after.
    pub fn zxid(&self) -> Zxid {
        self.zxid
    }

    /// The snapshot image (see the module documentation for the layout), in memory.
    pub fn encode(&self) -> Vec<u8> {
        let mut image = Vec::with_capacity(64 + self.nodes.len() * 96 + self.data_size);
        self.encode_into(&mut image)
            .expect("writing to a Vec cannot fail");
        image
    }

    /// The snapshot image, written to `out` in chunks of about a megabyte: a large tree is
    /// never held twice in memory (a 1M-znode image is ~200 MB). Stops at the first error.
    pub fn encode_into(&self, mut out: impl std::io::Write) -> std::io::Result<()> {
        const CHUNK_BYTES: usize = 1 << 20;
        let mut w = Writer::with_capacity(CHUNK_BYTES + 64 * 1024);
        w.as_mut_vec().extend_from_slice(MAGIC);
        w.write_i64(self.zxid);
        w.write_i32(self.sessions.len() as i32);
        for (id, timeout_ms) in &self.sessions {
            w.write_i64(*id);
            w.write_i32(*timeout_ms);
        }
        // The distinct ACL lists; a node refers to one by its index.
        w.write_i32(self.acls.len() as i32);
        for list in &self.acls {
            w.write_vec(&list[..]);
        }
        w.write_i64(self.nodes.len() as i64);
        for node in parents_first(&self.nodes) {
            w.write_string(node.path());
            w.write_buffer(node.data());
            w.write_i32(node.acl_id() as i32);
            // The stored stat (cversion counts creations), not the client view.
            node.stored_stat().write(&mut w);
            if w.len() >= CHUNK_BYTES {
                out.write_all(w.as_mut_vec())?;
                w.as_mut_vec().clear();
            }
        }
        out.write_all(w.as_mut_vec())
    }
}

/// `nodes` ordered by depth, so every parent comes before its children (what a loader needs to
/// link each node into its parent as it goes), and within a depth grouped by parent, so a
/// loader finds each parent once per group rather than once per node. Sibling order is not
/// kept (ZooKeeper promises none).
fn parents_first(nodes: &[Node]) -> impl Iterator<Item = &Node> {
    let hasher = ahash::RandomState::new();
    // (depth, hash of the parent's path, index): 12 bytes a node, sorted as integers.
    let mut keys: Vec<(u32, u32, u32)> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let path = n.path_bytes();
            let depth = path.iter().filter(|&&b| b == b'/').count() - usize::from(path == b"/");
            let parent_end = path.iter().rposition(|&b| b == b'/').unwrap_or(0);
            let parent_hash = hasher.hash_one(&path[..parent_end]) as u32;
            (depth as u32, parent_hash, i as u32)
        })
        .collect();
    keys.sort_unstable();
    keys.into_iter().map(move |(_, _, i)| &nodes[i as usize])
}

/// One node record: path, data, ACL index, stored stat.
fn decode_node(r: &mut Reader<'_>, acls: &[AclId]) -> Result<Node, DecodeError> {
    let path = r.read_str()?;
    let data = r.read_buffer_ref()?;
    let acl = r.read_i32()?;
    let acl = acls
        .get(acl as usize)
        .copied()
        .ok_or(DecodeError::UnknownValue {
            what: "snapshot ACL index",
            value: acl,
        })?;
    let stat = Stat::read(r)?;
    Ok(Node::new(path, data, acl, &stat))
}

/// Why a snapshot image could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// The bytes are not a valid image; `offset` counts from the start of the image.
    #[error("at offset {offset}: {source}")]
    Decode { offset: u64, source: DecodeError },
    /// The image could not be read (for a file: an I/O error or a checksum mismatch).
    #[error("reading the image: {0}")]
    Read(#[source] std::io::Error),
}

/// The image as it is read: a window of about a megabyte that decoders run over and that is
/// refilled when a record runs past its end.
struct Stream<R> {
    source: R,
    window: Vec<u8>,
    /// Next unread byte of `window`.
    at: usize,
    /// Image offset of `window[0]`.
    window_offset: u64,
    ended: bool,
}

impl<R: Read> Stream<R> {
    const WINDOW_BYTES: usize = 1 << 20;

    fn new(source: R) -> Stream<R> {
        Stream {
            source,
            window: Vec::with_capacity(Self::WINDOW_BYTES),
            at: 0,
            window_offset: 0,
            ended: false,
        }
    }

    /// Image offset of the next unread byte.
    fn offset(&self) -> u64 {
        self.window_offset + self.at as u64
    }

    /// Runs `decode` over the unread bytes; when it runs out of them and the image has more,
    /// reads more and runs it again.
    fn decode<T>(
        &mut self,
        mut decode: impl FnMut(&mut Reader<'_>) -> Result<T, DecodeError>,
    ) -> Result<T, SnapshotError> {
        loop {
            let mut r = Reader::new(&self.window[self.at..]);
            match decode(&mut r) {
                Ok(value) => {
                    self.at += r.position();
                    return Ok(value);
                }
                Err(DecodeError::Truncated { needed, .. }) if !self.ended => self.fill(needed)?,
                Err(e) => return Err(self.error(e)),
            }
        }
    }

    /// Moves the unread bytes to the front and reads at least `needed` more (or to the end).
    fn fill(&mut self, needed: usize) -> Result<(), SnapshotError> {
        self.window.drain(..self.at);
        self.window_offset += self.at as u64;
        self.at = 0;
        let want = needed.max(Self::WINDOW_BYTES / 2);
        let got = (&mut self.source)
            .take(want as u64)
            .read_to_end(&mut self.window)
            .map_err(SnapshotError::Read)?;
        if got < want {
            self.ended = true;
        }
        Ok(())
    }

    /// Fails unless the image ends here (reading to its end, where a file's checksum is
    /// checked).
    fn finish(&mut self) -> Result<(), SnapshotError> {
        while !self.ended {
            self.fill(Self::WINDOW_BYTES / 2)?;
        }
        match self.window.len() - self.at {
            0 => Ok(()),
            n => Err(self.error(DecodeError::TrailingBytes(n))),
        }
    }

    fn error(&self, source: DecodeError) -> SnapshotError {
        SnapshotError::Decode {
            offset: self.offset(),
            source,
        }
    }
}

impl Core {
    /// A consistent view of the tree and sessions at [`Core::last_zxid`], cheap to take.
    pub fn snapshot_view(&self) -> SnapshotView {
        SnapshotView {
            zxid: self.last_zxid,
            sessions: self.sessions.iter().map(|s| (s.id, s.timeout_ms)).collect(),
            nodes: self.tree.share_nodes(),
            acls: self.tree.acl_table().lists(),
            data_size: self.tree.approximate_data_size() as usize,
        }
    }

    /// Serializes the tree and sessions; the image holds every txn up to [`Core::last_zxid`].
    pub fn snapshot(&self) -> (Zxid, Vec<u8>) {
        let view = self.snapshot_view();
        (view.zxid, view.encode())
    }

    /// Rebuilds a core from [`Core::snapshot`] output, read from `image` as it is decoded (a
    /// file's image is never held whole in memory). `image_bytes` is its length, which bounds
    /// what a damaged node count can make the loader reserve. Sessions get their full timeout
    /// from `now`.
    pub fn from_snapshot(
        config: CoreConfig,
        image: impl Read + Send,
        image_bytes: u64,
        now: super::Now,
    ) -> Result<Core, SnapshotError> {
        let mut s = Stream::new(image);
        let magic = s.decode(|r| r.read_i64())?;
        if magic.to_be_bytes() != *MAGIC {
            return Err(s.error(DecodeError::UnknownValue {
                what: "snapshot magic",
                value: (magic >> 32) as i32,
            }));
        }
        let mut core = Core::new(config, now);
        core.last_zxid = s.decode(|r| r.read_i64())?;
        // The image's changes were never in the replay window.
        core.recent.forget_through(core.last_zxid);
        let n_sessions = s.decode(|r| r.read_i32())?;
        for _ in 0..n_sessions.max(0) {
            let (id, timeout) = s.decode(|r| Ok((r.read_i64()?, r.read_i32()?)))?;
            core.sessions.add(id, timeout, now.mono_ms);
        }
        let mut tree = DataTree::empty(core.config.extended_types_enabled);
        let n_acls = s.decode(|r| r.read_i32())?;
        let mut acls = Vec::with_capacity(n_acls.clamp(0, 1 << 16) as usize);
        for _ in 0..n_acls.max(0) {
            let list: Vec<Acl> = s.decode(|r| r.read_vec())?;
            acls.push(tree.intern_acl(list));
        }
        let n_nodes = s.decode(|r| r.read_i64())?;
        tree.reserve((n_nodes.max(0) as u64).min(image_bytes / 80) as usize);
        // Two stages on two threads: reading and decoding the image into nodes (allocating
        // them) here, linking them into the tree on the caller's thread. Each does about half
        // of the work, so a large tree loads in little more than half the time.
        type Batch = Result<Vec<(u64, Node)>, SnapshotError>;
        let (batches, decoded) = std::sync::mpsc::sync_channel::<Batch>(8);
        let acls = &acls;
        std::thread::scope(|scope| {
            scope.spawn(move || {
                let mut left = n_nodes.max(0);
                while left > 0 {
                    let batch_len = left.min(4096);
                    left -= batch_len;
                    let mut batch = Vec::with_capacity(batch_len as usize);
                    for _ in 0..batch_len {
                        let offset = s.offset();
                        match s.decode(|r| decode_node(r, acls)) {
                            Ok(node) => batch.push((offset, node)),
                            Err(e) => {
                                let _ = batches.send(Err(e));
                                return;
                            }
                        }
                    }
                    if batches.send(Ok(batch)).is_err() {
                        return; // the linking stage failed and stopped listening
                    }
                }
                if let Err(e) = s.finish() {
                    let _ = batches.send(Err(e));
                }
            });
            for batch in decoded {
                for (offset, node) in batch? {
                    if !tree.restore_node(node) {
                        return Err(SnapshotError::Decode {
                            offset,
                            source: DecodeError::UnknownValue {
                                what: "snapshot node order (a node before its parent, or twice)",
                                value: 0,
                            },
                        });
                    }
                }
            }
            Ok(())
        })?;
        core.tree = tree;
        Ok(core)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use corral_proto::CreateMode;

    #[test]
    fn snapshot_round_trip_preserves_tree_and_sessions() {
        let cfg = CoreConfig::default();
        let mut core = Core::new(cfg.clone(), Now::both(1_000));
        let h = |core: &Core, sid| corral_proto::records::TxnHeader {
            client_id: sid,
            cxid: 0,
            zxid: core.last_zxid() + 1,
            time_ms: 5,
            txn_type: 0,
        };
        let mut step = super::super::Step::default();
        let hdr = h(&core, 77);
        core.commit(
            hdr,
            super::super::txn::Txn::CreateSession(corral_proto::records::CreateSessionTxn {
                timeout_ms: 4000,
            }),
            &mut step,
        );
        let digest = vec![Acl {
            perms: 1,
            id: corral_proto::records::Id {
                scheme: "digest".into(),
                id: "u:x".into(),
            },
        }];
        for (p, mode, acl) in [
            ("/a", CreateMode::Persistent, super::super::acl::open_acl()),
            ("/a/e", CreateMode::Ephemeral, super::super::acl::open_acl()),
            ("/a/z", CreateMode::Persistent, digest.clone()),
            ("/a/z/deep", CreateMode::Persistent, digest),
        ] {
            let hdr = h(&core, 77);
            core.commit(
                hdr,
                super::super::txn::Txn::Create {
                    op: corral_proto::OpCode::Create,
                    txn: corral_proto::records::CreateTxn {
                        path: p.into(),
                        data: Some(Bytes::from_static(b"d")),
                        acl,
                        ephemeral: mode.is_ephemeral(),
                        parent_cversion: -1,
                    },
                },
                &mut step,
            );
        }
        let (zxid, image) = core.snapshot();
        let back =
            Core::from_snapshot(cfg, &image[..], image.len() as u64, Now::both(2_000)).unwrap();
        assert_eq!(back.last_zxid(), zxid);
        assert_eq!(back.sessions().len(), 1);
        assert_eq!(back.sessions()[0].ephemerals, vec!["/a/e".to_string()]);
        let mut paths: Vec<&str> = back.tree.nodes().map(|n| n.path()).collect();
        paths.sort();
        let mut want: Vec<&str> = core.tree.nodes().map(|n| n.path()).collect();
        want.sort();
        assert_eq!(paths, want);
        for p in want {
            let (a, b) = (back.tree.get(p).unwrap(), core.tree.get(p).unwrap());
            assert_eq!(a, b, "{p}");
        }
        assert_eq!(
            back.tree.approximate_data_size(),
            core.tree.approximate_data_size()
        );
        assert!(Core::from_snapshot(
            CoreConfig::default(),
            &image[..image.len() - 1],
            0,
            Now::both(0)
        )
        .is_err());
    }

    /// A source that hands out a few bytes per read, so records straddle every refill.
    struct Trickle<'a>(&'a [u8], usize);

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            self.1 = self.1 % 7 + 1;
            let n = self.1.min(buf.len()).min(self.0.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    #[test]
    fn an_image_loads_from_a_stream_of_any_chunking() {
        let mut tree = DataTree::new(false);
        // A node larger than the decoder's window, among small ones.
        let big = vec![7u8; 3 << 20];
        tree.create(
            "/big",
            Some(Bytes::from(big.clone())),
            super::super::acl::open_acl(),
            0,
            -1,
            1,
            0,
        )
        .unwrap();
        for i in 0..300 {
            tree.create(
                &format!("/big/n{i}"),
                Some(Bytes::from(vec![i as u8; i])),
                super::super::acl::open_acl(),
                0,
                -1,
                i as i64 + 2,
                0,
            )
            .unwrap();
        }
        let mut core = Core::new(CoreConfig::default(), Now::both(0));
        core.tree = tree;
        let (_, image) = core.snapshot();
        let back = Core::from_snapshot(CoreConfig::default(), Trickle(&image, 0), 0, Now::both(0))
            .unwrap();
        assert_eq!(back.tree.get("/big").unwrap().data(), Some(&big[..]));
        assert_eq!(back.tree.get("/big").unwrap().child_count(), 300);
        assert_eq!(back.tree.get("/big/n299").unwrap().data_len(), 299);
        // Cut anywhere, it fails with the offset of the record it could not finish.
        let cut = image.len() - 100;
        match Core::from_snapshot(
            CoreConfig::default(),
            Trickle(&image[..cut], 0),
            0,
            Now::both(0),
        ) {
            Err(SnapshotError::Decode {
                offset,
                source: DecodeError::Truncated { .. },
            }) => {
                assert!(offset > (3 << 20) && (offset as usize) < cut, "{offset}")
            }
            Err(other) => panic!("{other:?}"),
            Ok(_) => panic!("a cut image loaded"),
        }
    }

    /// Levels of the chain in the deep-tree test: far more than a 2 MiB stack survives when
    /// anything recurses once per level.
    const DEEP_CHAIN_LEVELS: usize = 25_000;

    #[test]
    fn a_deep_chain_counts_snapshots_and_loads_on_a_default_stack() {
        // The default stack of a spawned thread (and of tokio's workers): the server's.
        const STACK_BYTES: usize = 2 << 20;
        let worker = std::thread::Builder::new()
            .stack_size(STACK_BYTES)
            .spawn(|| {
                let mut core = Core::new(CoreConfig::default(), Now::both(0));
                core.sessions.add(77, 4000, 0);
                let mut path = String::with_capacity(2 * DEEP_CHAIN_LEVELS + 8);
                for level in 0..DEEP_CHAIN_LEVELS {
                    path.push_str("/a");
                    let zxid = level as i64 + 1;
                    core.tree
                        .create(&path, None, super::super::acl::open_acl(), 0, -1, zxid, 0)
                        .unwrap();
                }
                let leaf = format!("{path}/e");
                core.tree
                    .create(&leaf, None, super::super::acl::open_acl(), 77, -1, 0, 0)
                    .unwrap();
                // The chain, its ephemeral leaf, and the three /zookeeper nodes.
                let below_root = DEEP_CHAIN_LEVELS + 1 + 3;
                assert_eq!(core.tree.descendant_count("/"), below_root);
                assert_eq!(core.tree.descendant_count("/a/a"), DEEP_CHAIN_LEVELS - 1);
                assert_eq!(core.tree.ephemerals_of(77).collect::<Vec<_>>(), vec![&leaf]);

                let image = core.snapshot_view().encode();
                let back = Core::from_snapshot(
                    CoreConfig::default(),
                    &image[..],
                    image.len() as u64,
                    Now::both(0),
                )
                .unwrap();
                assert_eq!(back.tree.node_count(), core.tree.node_count());
                assert_eq!(back.tree.descendant_count("/"), below_root);
                assert_eq!(back.sessions()[0].ephemerals, vec![leaf]);
            })
            .unwrap();
        worker
            .join()
            .expect("no stack overflow, no failed assertion");
    }

    #[test]
    fn parents_come_before_their_children() {
        let mut tree = DataTree::new(false);
        // Created deepest-last in one branch, shallow-last in another.
        for (i, p) in ["/b", "/b/c", "/b/c/d", "/a", "/b/c/d/e", "/a/x", "/z"]
            .into_iter()
            .enumerate()
        {
            tree.create(
                p,
                None,
                super::super::acl::open_acl(),
                0,
                -1,
                i as i64 + 1,
                0,
            )
            .unwrap();
        }
        let nodes = tree.share_nodes();
        let order: Vec<&str> = parents_first(&nodes).map(|n| n.path()).collect();
        assert_eq!(order.len(), nodes.len());
        for (i, p) in order.iter().enumerate() {
            if let Some((parent, _)) = super::super::path::split(p).filter(|(_, n)| !n.is_empty()) {
                let at = order.iter().position(|q| *q == parent).unwrap();
                assert!(at < i, "{parent} after {p} in {order:?}");
            }
        }
    }

    #[test]
    fn a_view_is_unchanged_by_later_writes() {
        let cfg = CoreConfig::default();
        let mut core = Core::new(cfg.clone(), Now::both(1_000));
        let mut step = super::super::Step::default();
        let mut apply = |core: &mut Core, txn| {
            let hdr = corral_proto::records::TxnHeader {
                client_id: 0,
                cxid: 0,
                zxid: core.last_zxid() + 1,
                time_ms: 5,
                txn_type: 0,
            };
            core.commit(hdr, txn, &mut step);
        };
        let create = |p: &str, d: &'static [u8]| super::super::txn::Txn::Create {
            op: corral_proto::OpCode::Create,
            txn: corral_proto::records::CreateTxn {
                path: p.into(),
                data: Some(Bytes::from_static(d)),
                acl: super::super::acl::open_acl(),
                ephemeral: false,
                parent_cversion: -1,
            },
        };
        apply(&mut core, create("/a", b"before"));
        apply(&mut core, create("/a/b", b"child"));
        let (_, expected) = core.snapshot();
        let view = core.snapshot_view();
        // Writes after the view: change, add, delete.
        apply(
            &mut core,
            super::super::txn::Txn::SetData(corral_proto::records::SetDataTxn {
                path: "/a".into(),
                data: Some(Bytes::from_static(b"after")),
                version: 1,
            }),
        );
        apply(&mut core, create("/c", b"new"));
        apply(
            &mut core,
            super::super::txn::Txn::Delete {
                op: corral_proto::OpCode::Delete,
                txn: corral_proto::records::DeleteTxn {
                    path: "/a/b".into(),
                },
            },
        );
        let image = view.encode();
        let back = Core::from_snapshot(cfg, &image[..], image.len() as u64, Now::both(0)).unwrap();
        assert_eq!(back.tree.get("/a").unwrap().data(), Some(&b"before"[..]));
        assert!(back.tree.contains("/a/b"));
        assert!(!back.tree.contains("/c"));
        assert_eq!(back.last_zxid(), 2);
        assert_eq!(view.encode().len(), expected.len());
        // And the live tree has the later writes.
        assert_eq!(core.tree.get("/a").unwrap().data(), Some(&b"after"[..]));
        assert!(!core.tree.contains("/a/b"));
    }
}
