//! Snapshots of the state machine: every node (path, data, ACL, persisted stat) and every
//! session, consistent as of one zxid. Written by the core's owner while no txn is applied, so
//! the image is exact (not "fuzzy" as ZooKeeper's): recovery loads it and replays only later
//! txns.

use bytes::Bytes;
use corral_proto::records::{Acl, Stat};
use corral_proto::{DecodeError, Jute, Reader, Writer, Zxid};

use super::tree::{DataTree, Node};
use super::{Core, CoreConfig};

const MAGIC: &[u8; 8] = b"CRLSNAP1";

impl Core {
    /// Serializes the tree and sessions; the image holds every txn up to [`Core::last_zxid`].
    pub fn snapshot(&self) -> (Zxid, Vec<u8>) {
        let mut w = Writer::with_capacity(64 + self.tree.approximate_data_size() as usize * 2);
        w.as_mut_vec().extend_from_slice(MAGIC);
        w.write_i64(self.last_zxid);
        let sessions: Vec<_> = self.sessions.iter().map(|s| (s.id, s.timeout_ms)).collect();
        w.write_i32(sessions.len() as i32);
        for (id, timeout_ms) in sessions {
            w.write_i64(id);
            w.write_i32(timeout_ms);
        }
        w.write_i64(self.tree.node_count() as i64);
        for (path, node) in self.tree.nodes() {
            w.write_string(path);
            w.write_buffer(node.data.as_deref());
            w.write_vec(&node.acl[..]);
            // The stored stat (cversion counts creations), not the client view.
            node.stat.write(&mut w);
        }
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
        let n_nodes = r.read_i64()?;
        for _ in 0..n_nodes.max(0) {
            let path = r.read_string()?;
            let data = r.read_buffer()?;
            let acl: Vec<Acl> = r.read_vec()?;
            let stat = Stat::read(&mut r)?;
            let acl = tree.intern_acl(acl);
            tree.restore_node(
                &path,
                Node {
                    data: data.map(|d| Bytes::copy_from_slice(&d)),
                    acl,
                    stat,
                    children: Default::default(),
                },
            );
        }
        r.finish()?;
        tree.link_children();
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
        for (p, mode) in [
            ("/a", CreateMode::Persistent),
            ("/a/e", CreateMode::Ephemeral),
        ] {
            let hdr = h(&core, 77);
            core.commit(
                hdr,
                super::super::txn::Txn::Create {
                    op: corral_proto::OpCode::Create,
                    txn: corral_proto::records::CreateTxn {
                        path: p.into(),
                        data: Some(Bytes::from_static(b"d")),
                        acl: super::super::acl::open_acl(),
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
        let a = back.tree.get("/a").unwrap();
        assert_eq!(a.stat(), core.tree.get("/a").unwrap().stat());
        assert_eq!(back.tree.node_count(), core.tree.node_count());
        assert_eq!(
            back.tree.approximate_data_size(),
            core.tree.approximate_data_size()
        );
        assert!(Core::from_snapshot(CoreConfig::default(), &image[..image.len() - 1], 0).is_err());
    }
}
