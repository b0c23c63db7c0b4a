//! Differential tests against a three-member Apache ZooKeeper ensemble (Debian `zookeeper`,
//! started by `scripts/apache-zk --quorum`): where clients and operators can see an ensemble's
//! shape, Corral's must look the same. Both run in the same test, on loopback.

mod durability_support;
mod ensemble_support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use corral_client::Client;
use corral_proto::records::CreateRequest;
use corral_proto::{OpCode, Request};
use durability_support::{CallError, Client as RawClient};
use ensemble_support::{four_letter_word, ApacheEnsemble, Ensemble};

/// Hang guard for the whole test (JVMs start slowly on a loaded machine).
const TEST_LIMIT: Duration = Duration::from_secs(300);

/// The ensemble keys of `mntr` that monitoring reads, per role.
const LEADER_KEYS: &[&str] = &[
    "zk_server_state",
    "zk_peer_state",
    "zk_quorum_size",
    "zk_learners",
    "zk_synced_followers",
    "zk_synced_non_voting_followers",
    "zk_synced_observers",
    "zk_pending_syncs",
    "zk_leader_uptime",
];
const FOLLOWER_KEYS: &[&str] = &["zk_server_state", "zk_peer_state", "zk_quorum_size"];

/// One side of the comparison: member addresses by id, and which is the leader.
struct Side {
    name: &'static str,
    addrs: BTreeMap<u64, String>,
    leader: u64,
    follower: u64,
    /// Every port of the side's members, to be masked in texts that contain them.
    ports: Vec<(u64, [u16; 3])>,
}

impl Side {
    fn port(&self, id: u64) -> u16 {
        self.addrs[&id].rsplit(':').next().unwrap().parse().unwrap()
    }

    /// `text` with every member port replaced by its role (`C1` client port of member 1, `P1`
    /// peer, `E1` election), so the two ensembles' texts compare.
    fn mask_ports(&self, text: &str) -> String {
        let mut out = text.to_string();
        for (id, [c, p, e]) in &self.ports {
            for (port, tag) in [(c, "C"), (p, "P"), (e, "E")] {
                out = out.replace(&format!(":{port}"), &format!(":{tag}{id}"));
            }
        }
        out
    }

    async fn word(&self, id: u64, word: &str) -> String {
        four_letter_word(self.port(id), word)
            .await
            .unwrap_or_else(|e| panic!("{} member {id}: {word}: {e}", self.name))
    }
}

/// `key` → value of a `mntr` answer.
fn mntr_map(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once('\t'))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The keys (text before the first ':') of the lines of a `srvr` answer.
fn srvr_keys(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, _)| k.to_string())
        .collect()
}

/// A session on `old`, resumed on `new`; then a write sent on the connection it left. Returns
/// what that write got, and whether the node exists afterwards (read on the new member).
async fn stale_write_after_a_move(side: &Side, old: u64, new: u64) -> (String, bool) {
    let raw = RawClient::connect(&side.addrs[&old], 10_000)
        .await
        .unwrap_or_else(|e| panic!("{}: raw session: {e}", side.name));
    let resumed = Client::builder(&side.addrs[&new])
        .session(raw.session_id, raw.passwd.clone())
        .connect_timeout(Duration::from_secs(60))
        .connect()
        .await
        .unwrap_or_else(|e| panic!("{}: resume the session: {e}", side.name));
    let stale = raw
        .call(Request::Create {
            op: OpCode::Create,
            req: CreateRequest {
                path: "/stale".into(),
                data: Some(Vec::new().into()),
                acl: durability_support::open_acl(),
                flags: 0,
            },
        })
        .await;
    let outcome = match stale {
        Ok(_) => "applied".to_string(),
        Err(CallError::ConnectionLoss) => "connection closed".to_string(),
        Err(CallError::Zk(code)) => format!("error {code}"),
    };
    resumed.sync("/").await.expect("sync");
    let exists = resumed.exists("/stale").await.expect("exists").is_some();
    resumed.close().await;
    (outcome, exists)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ensemble_looks_like_apache_zookeeper_s() {
    let body = async {
        let zk = ApacheEnsemble::start(3).await;
        let mut corral = Ensemble::start(3, 0).await;

        let zk_leader = zk.with_mode("leader").await[0];
        let zk_side = Side {
            name: "Apache ZooKeeper",
            addrs: (1..=3).map(|id| (id, zk.addr(id))).collect(),
            leader: zk_leader,
            follower: zk.with_mode("follower").await[0],
            ports: (1..=3)
                .map(|id| {
                    let (c, p, e) = zk.ports[id as usize - 1];
                    (id, [c, p, e])
                })
                .collect(),
        };
        let corral_leader = corral.leader().await;
        let corral_side = Side {
            name: "Corral",
            addrs: (1..=3).map(|id| (id, corral.member(id).addr())).collect(),
            leader: corral_leader,
            follower: corral.followers().await[0],
            ports: (1..=3)
                .map(|id| {
                    let m = corral.member(id);
                    (id, [m.client_port, m.peer_port, m.election_port])
                })
                .collect(),
        };

        // /zookeeper/config: the membership in the same format (what Curator's
        // EnsembleTracker and kazoo parse).
        let mut configs = Vec::new();
        for side in [&zk_side, &corral_side] {
            let c = Client::builder(&side.addrs[&side.follower])
                .connect_timeout(Duration::from_secs(60))
                .connect()
                .await
                .expect("connect");
            let (data, _) = c.get_data("/zookeeper/config").await.expect("get config");
            configs.push(side.mask_ports(&String::from_utf8_lossy(&data)));
            c.close().await;
        }
        assert_eq!(
            configs[1], configs[0],
            "/zookeeper/config (Corral, then ZooKeeper)"
        );

        // srvr: the same lines, per role.
        for (role, zk_id, corral_id) in [
            ("leader", zk_side.leader, corral_side.leader),
            ("follower", zk_side.follower, corral_side.follower),
        ] {
            let zk_srvr = zk_side.word(zk_id, "srvr").await;
            let corral_srvr = corral_side.word(corral_id, "srvr").await;
            assert_eq!(
                srvr_keys(&corral_srvr),
                srvr_keys(&zk_srvr),
                "srvr lines of a {role}:\n--- Corral\n{corral_srvr}--- ZooKeeper\n{zk_srvr}"
            );
        }

        // mntr: the ensemble keys monitoring reads, per role, with the same state values.
        for (role, keys, zk_id, corral_id) in [
            ("leader", LEADER_KEYS, zk_side.leader, corral_side.leader),
            (
                "follower",
                FOLLOWER_KEYS,
                zk_side.follower,
                corral_side.follower,
            ),
        ] {
            let zk_mntr = mntr_map(&zk_side.word(zk_id, "mntr").await);
            let corral_mntr = mntr_map(&corral_side.word(corral_id, "mntr").await);
            for key in keys {
                assert!(zk_mntr.contains_key(*key), "ZooKeeper's {role} lacks {key}");
                assert!(
                    corral_mntr.contains_key(*key),
                    "Corral's {role} lacks {key} (ZooKeeper has {:?})",
                    zk_mntr.get(*key)
                );
            }
            for key in ["zk_server_state", "zk_peer_state", "zk_quorum_size"] {
                assert_eq!(corral_mntr[key], zk_mntr[key], "{role}: {key}");
            }
            if role == "leader" {
                for key in ["zk_learners", "zk_synced_followers", "zk_synced_observers"] {
                    assert_eq!(corral_mntr[key], zk_mntr[key], "{role}: {key}");
                }
            }
        }

        // SessionMoved: a write sent on the connection a session left is not applied, and
        // that connection is closed.
        let zk_moved = stale_write_after_a_move(&zk_side, zk_side.follower, zk_side.leader).await;
        let corral_moved =
            stale_write_after_a_move(&corral_side, corral_side.follower, corral_side.leader).await;
        assert_eq!(zk_moved, ("connection closed".to_string(), false));
        assert_eq!(
            corral_moved, zk_moved,
            "a stale write after a session moved"
        );
        corral.stop_all();
    };
    if tokio::time::timeout(TEST_LIMIT, body).await.is_err() {
        panic!("test did not finish within {TEST_LIMIT:?}");
    }
}
