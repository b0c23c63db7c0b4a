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

use super::tree::{DataTree, Node};
use super::{Core, CoreConfig};

const MAGIC: &[u8; 8] = b"CRLSNAP2";

impl Core {
    /// Serializes the tree and sessions; the image holds every txn up to [`Core::last_zxid`].
    pub fn snapshot(&self) -> (Zxid, Vec<u8>) {
        let nodes = self.tree.node_count();
        let mut w =
            Writer::with_capacity(64 + nodes * 96 + self.tree.approximate_data_size() as usize);
        w.as_mut_vec().extend_from_slice(MAGIC);
        w.write_i64(self.last_zxid);
        let sessions: Vec<_> = self.sessions.iter().map(|s| (s.id, s.timeout_ms)).collect();
        w.write_i32(sessions.len() as i32);
        for (id, timeout_ms) in sessions {
            w.write_i64(id);
            w.write_i32(timeout_ms);
        }
        let mut acl_index: HashMap<*const Vec<Acl>, i32> = HashMap::new();
        let lists: Vec<&Arc<Vec<Acl>>> = self.tree.acl_lists().collect();
        w.write_i32(lists.len() as i32);
        for (i, list) in lists.iter().enumerate() {
            acl_index.insert(Arc::as_ptr(list), i as i32);
            w.write_vec(&list[..]);
        }
        w.write_i64(nodes as i64);
        self.tree.walk_parents_first(|path, node| {
            w.write_string(path);
            w.write_buffer(node.data.as_deref());
            // Every node's ACL list is interned, so it is in the table.
            w.write_i32(
                acl_index
                    .get(&Arc::as_ptr(&node.acl))
                    .copied()
                    .unwrap_or(-1),
            );
            // The stored stat (cversion counts creations), not the client view.
            node.stat.write(&mut w);
        });
        (self.last_zxid, w.into_inner())
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
}
