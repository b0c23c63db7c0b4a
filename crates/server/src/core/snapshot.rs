//! Snapshots of the state machine: every node (path, data, ACL, persisted stat) and every
//! session, consistent as of one zxid. Written by the core's owner while no txn is applied, so
//! the image is exact (not "fuzzy" as ZooKeeper's): recovery loads it and replays only later
//! txns.
//!
//! Layout (jute encoding): magic `CRLSNAP2`, last zxid, sessions (id, timeout), the distinct
//! ACL lists once each, then the nodes parents-first (path, data, ACL index, stored stat), so a
//! loader links each node into its already-loaded parent and decodes no ACL twice.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use corral_proto::records::{Acl, Stat};
use corral_proto::{DecodeError, Jute, Reader, Writer, Zxid};

use super::tree::{walk_parents_first, DataTree, Node, NodeMap};
use super::{Core, CoreConfig};

const MAGIC: &[u8; 8] = b"CRLSNAP2";

/// Everything a snapshot holds, taken from the core in one cheap step: the node map is shared
/// (pointer copies), and the core copies a node only if it changes while the view still holds
/// it. So the driver pauses for the copy of the map, and [`SnapshotView::encode`] runs on
/// another thread while the core keeps serving.
pub struct SnapshotView {
    zxid: Zxid,
    sessions: Vec<(i64, i32)>,
    nodes: NodeMap,
    data_size: usize,
}

impl SnapshotView {
    /// The zxid the view is exact at: every txn up to it, none after.
    pub fn zxid(&self) -> Zxid {
        self.zxid
    }

    /// The snapshot image (see the module documentation for the layout).
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(64 + self.nodes.len() * 96 + self.data_size);
        w.as_mut_vec().extend_from_slice(MAGIC);
        w.write_i64(self.zxid);
        w.write_i32(self.sessions.len() as i32);
        for (id, timeout_ms) in &self.sessions {
            w.write_i64(*id);
            w.write_i32(*timeout_ms);
        }
        // The distinct ACL lists, in the order nodes first use them.
        let mut acl_index: HashMap<*const Vec<Acl>, i32> = HashMap::new();
        let mut lists: Vec<&Arc<Vec<Acl>>> = Vec::new();
        for node in self.nodes.values() {
            acl_index.entry(Arc::as_ptr(&node.acl)).or_insert_with(|| {
                lists.push(&node.acl);
                lists.len() as i32 - 1
            });
        }
        w.write_i32(lists.len() as i32);
        for list in &lists {
            w.write_vec(&list[..]);
        }
        w.write_i64(self.nodes.len() as i64);
        walk_parents_first(&self.nodes, |path, node| {
            w.write_string(path);
            w.write_buffer(node.data.as_deref());
            w.write_i32(acl_index[&Arc::as_ptr(&node.acl)]);
            // The stored stat (cversion counts creations), not the client view.
            node.stat.write(&mut w);
        });
        w.into_inner()
    }
}

impl Core {
    /// A consistent view of the tree and sessions at [`Core::last_zxid`], cheap to take.
    pub fn snapshot_view(&self) -> SnapshotView {
        SnapshotView {
            zxid: self.last_zxid,
            sessions: self.sessions.iter().map(|s| (s.id, s.timeout_ms)).collect(),
            nodes: self.tree.share_nodes(),
            data_size: self.tree.approximate_data_size() as usize,
        }
    }

    /// Serializes the tree and sessions; the image holds every txn up to [`Core::last_zxid`].
    pub fn snapshot(&self) -> (Zxid, Vec<u8>) {
        let view = self.snapshot_view();
        (view.zxid, view.encode())
    }

    /// Rebuilds a core from [`Core::snapshot`] output. Sessions get their full timeout from
    /// `now_ms`.
    pub fn from_snapshot(
        config: CoreConfig,
        image: &[u8],
        now_ms: i64,
    ) -> Result<Core, DecodeError> {
        let mut r = Reader::new(image);
        let magic = r.read_i64()?;
        if magic.to_be_bytes() != *MAGIC {
            return Err(DecodeError::UnknownValue {
                what: "snapshot magic",
                value: (magic >> 32) as i32,
            });
        }
        let mut core = Core::new(config, now_ms);
        core.last_zxid = r.read_i64()?;
        let n_sessions = r.read_i32()?;
        for _ in 0..n_sessions.max(0) {
            let id = r.read_i64()?;
            let timeout = r.read_i32()?;
            core.sessions.add(id, timeout, now_ms);
        }
        let mut tree = DataTree::empty(core.config.extended_types_enabled);
        let n_acls = r.read_i32()?;
        let mut acls = Vec::with_capacity(n_acls.clamp(0, 1 << 16) as usize);
        for _ in 0..n_acls.max(0) {
            let list: Vec<Acl> = r.read_vec()?;
            acls.push(tree.intern_acl(list));
        }
        let n_nodes = r.read_i64()?;
        // Bounded by the image size so a damaged count cannot reserve absurd memory.
        tree.reserve((n_nodes.max(0) as usize).min(image.len() / 80));
        for _ in 0..n_nodes.max(0) {
            let offset = r.position();
            let path = r.read_str()?;
            let data = r.read_buffer_ref()?.map(Bytes::copy_from_slice);
            let acl_at = r.position();
            let acl = r.read_i32()?;
            let acl = acls
                .get(acl as usize)
                .cloned()
                .ok_or(DecodeError::UnknownValue {
                    what: "snapshot ACL index",
                    value: acl,
                })
                .inspect_err(|_| tracing::error!(offset = acl_at, "bad ACL index in snapshot"))?;
            let stat = Stat::read(&mut r)?;
            let node = Node {
                data,
                acl,
                stat,
                children: Default::default(),
            };
            if !tree.restore_node(path, node) {
                tracing::error!(offset, path, "snapshot lists a node before its parent");
                return Err(DecodeError::UnknownValue {
                    what: "snapshot node order at offset",
                    value: offset as i32,
                });
            }
        }
        r.finish()?;
        core.tree = tree;
        Ok(core)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use corral_proto::CreateMode;

    #[test]
    fn snapshot_round_trip_preserves_tree_and_sessions() {
        let cfg = CoreConfig::default();
        let mut core = Core::new(cfg.clone(), 1_000);
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
        let back = Core::from_snapshot(cfg, &image, 2_000).unwrap();
        assert_eq!(back.last_zxid(), zxid);
        assert_eq!(back.sessions().len(), 1);
        assert_eq!(back.sessions()[0].ephemerals, vec!["/a/e".to_string()]);
        let mut paths: Vec<&str> = back.tree.nodes().map(|(p, _)| p).collect();
        paths.sort();
        let mut want: Vec<&str> = core.tree.nodes().map(|(p, _)| p).collect();
        want.sort();
        assert_eq!(paths, want);
        for p in want {
            let (a, b) = (back.tree.get(p).unwrap(), core.tree.get(p).unwrap());
            assert_eq!(
                (a.stat(), &a.data, &a.acl, &a.children),
                (b.stat(), &b.data, &b.acl, &b.children),
                "{p}"
            );
        }
        assert_eq!(
            back.tree.approximate_data_size(),
            core.tree.approximate_data_size()
        );
        assert!(Core::from_snapshot(CoreConfig::default(), &image[..image.len() - 1], 0).is_err());
    }

    #[test]
    fn a_view_is_unchanged_by_later_writes() {
        let cfg = CoreConfig::default();
        let mut core = Core::new(cfg.clone(), 1_000);
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
        let back = Core::from_snapshot(cfg, &view.encode(), 0).unwrap();
        assert_eq!(
            back.tree.get("/a").unwrap().data.as_deref(),
            Some(&b"before"[..])
        );
        assert!(back.tree.contains("/a/b"));
        assert!(!back.tree.contains("/c"));
        assert_eq!(back.last_zxid(), 2);
        assert_eq!(view.encode().len(), expected.len());
        // And the live tree has the later writes.
        assert_eq!(
            core.tree.get("/a").unwrap().data.as_deref(),
            Some(&b"after"[..])
        );
        assert!(!core.tree.contains("/a/b"));
    }
}
