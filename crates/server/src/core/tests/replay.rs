//! Replay determinism: a core driven by random requests, then rebuilt from its log (and from a
//! snapshot plus the rest of the log), must hold exactly what the live core holds, and every
//! txn must have the same outcome when replayed as when it was prepared.

use super::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const PATHS: &[&str] = &["/a", "/a/b", "/a/b/c", "/c", "/c/d", "/t", "/t/x", "/q"];

fn acl_choice(rng: &mut StdRng) -> Vec<Acl> {
    let digest = |user: &str| Acl {
        perms: corral_proto::perms::ALL,
        id: Id {
            scheme: "digest".into(),
            id: acl::digest_id(&format!("{user}:pw")),
        },
    };
    match rng.gen_range(0..4) {
        0 => vec![digest("u1")],
        1 => vec![
            digest("u2"),
            Acl {
                perms: corral_proto::perms::READ,
                id: Id {
                    scheme: "world".into(),
                    id: "anyone".into(),
                },
            },
        ],
        _ => acl::open_acl(),
    }
}

/// One random write (or check) on a path of [`PATHS`].
fn random_write(rng: &mut StdRng, in_multi: bool) -> Request {
    let path = PATHS[rng.gen_range(0..PATHS.len())].to_string();
    let data = Some(Bytes::from(vec![b'd'; rng.gen_range(0..8)]));
    let version = if rng.gen_bool(0.7) {
        -1
    } else {
        rng.gen_range(0..3)
    };
    let pick = rng.gen_range(0..if in_multi { 8 } else { 10 });
    match pick {
        0..=2 => {
            let flags = [0, 1, 2, 3][rng.gen_range(0..4)];
            Request::Create {
                op: if rng.gen_bool(0.5) {
                    OpCode::Create
                } else {
                    OpCode::Create2
                },
                req: CreateRequest {
                    path,
                    data,
                    acl: acl_choice(rng),
                    flags,
                },
            }
        }
        3 => Request::Create {
            op: OpCode::CreateContainer,
            req: CreateRequest {
                path,
                data,
                acl: acl::open_acl(),
                flags: 4,
            },
        },
        4 => Request::Delete(DeleteRequest { path, version }),
        5 => Request::SetData(SetDataRequest {
            path,
            data,
            version,
        }),
        6 => Request::SetAcl(SetAclRequest {
            path,
            acl: acl_choice(rng),
            version,
        }),
        7 => Request::Check(CheckVersionRequest { path, version }),
        8 => Request::CreateTtl(CreateTtlRequest {
            path,
            data,
            acl: acl::open_acl(),
            flags: [5, 6][rng.gen_range(0..2)],
            ttl_ms: rng.gen_range(1..400),
        }),
        _ => Request::Multi(
            (0..rng.gen_range(1..5))
                .map(|_| random_write(rng, true))
                .collect(),
        ),
    }
}

/// Everything replay must reproduce, in a canonical order. ACLs are compared by value: the
/// index a list gets in the ACL table depends on when unused lists were pruned (a local timer),
/// and never reaches a client or the meaning of a node.
#[derive(Debug, PartialEq)]
struct Dump {
    nodes: Vec<(String, Option<Bytes>, Stat, Vec<Acl>)>,
    sessions: Vec<(SessionId, i32, Vec<String>)>,
    containers: Vec<String>,
    ttls: Vec<String>,
    znode_count: u64,
    ephemerals_count: u64,
    approximate_data_size: u64,
    session_count: u64,
    last_zxid: Zxid,
}

fn dump(c: &Core) -> Dump {
    let mut nodes: Vec<_> = c
        .tree
        .nodes()
        .map(|n| {
            (
                n.path().to_string(),
                n.data_owned(),
                n.stat(),
                c.tree.acl(n).as_ref().clone(),
            )
        })
        .collect();
    nodes.sort_by(|a, b| a.0.cmp(&b.0));
    let mut sessions: Vec<_> = c
        .sessions
        .iter()
        .map(|s| {
            (
                s.id,
                s.timeout_ms,
                c.tree.ephemerals_of(s.id).cloned().collect(),
            )
        })
        .collect();
    sessions.sort();
    let stats = c.stats();
    Dump {
        nodes,
        sessions,
        containers: c.tree.containers().cloned().collect(),
        ttls: c.tree.ttls().cloned().collect(),
        znode_count: stats.znode_count,
        ephemerals_count: stats.ephemerals_count,
        approximate_data_size: stats.approximate_data_size,
        session_count: stats.session_count,
        last_zxid: stats.last_zxid,
    }
}

/// Drives a core with `steps` random actions; returns the harness and the log index at which a
/// snapshot was taken, with its image.
fn drive(seed: u64, steps: usize) -> (H, usize, Vec<u8>) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut h = H::new();
    let mut live: Vec<ConnId> = Vec::new();
    let mut next_conn: ConnId = 1;
    let mut snapshot = None;
    for step in 0..steps {
        if step == steps / 2 {
            let (_, image) = h.core.snapshot();
            snapshot = Some((h.log.len(), image));
        }
        if live.is_empty() || rng.gen_bool(0.05) {
            h.connect(next_conn);
            live.push(next_conn);
            next_conn += 1;
            continue;
        }
        let conn = live[rng.gen_range(0..live.len())];
        match rng.gen_range(0..100) {
            0..=2 => {
                h.req(conn, Request::CloseSession);
                h.core.connection_closed(conn, h.at());
            }
            3..=5 => {
                // Addauth, so ACL'd nodes are writable by some sessions.
                let user = if rng.gen_bool(0.5) { "u1" } else { "u2" };
                let mut w = Writer::new();
                RequestHeader {
                    xid: xid::AUTH,
                    op: OpCode::Auth.code(),
                }
                .write(&mut w);
                AuthPacket {
                    auth_type: 0,
                    scheme: "digest".into(),
                    auth: Some(Bytes::from(format!("{user}:pw"))),
                }
                .write(&mut w);
                let step = h.core.receive(conn, &w.into_inner(), h.at());
                h.take(step);
            }
            6..=15 => {
                // Time passes; some sessions keep pinging, the others may expire. Ticks also
                // reap empty containers and expired TTL nodes, and prune the ACL table.
                h.now += rng.gen_range(50..400);
                for &c in &live {
                    if c % 3 != 0 {
                        h.req(c, Request::Ping);
                    }
                }
                let step = h.core.tick(h.at());
                h.take(step);
            }
            _ => {
                let req = random_write(&mut rng, false);
                h.req(conn, req);
            }
        }
        live.retain(|c| !h.closed.contains(c) && h.core.conns.contains_key(c));
    }
    let (at, image) = snapshot.expect("a snapshot was taken");
    (h, at, image)
}

/// Replays `records` into `core`, checking each outcome against the live one of its zxid.
fn replay_checking(core: &mut Core, records: &[LoggedTxn], live: &HashMap<Zxid, apply::Outcome>) {
    for t in records {
        let (zxid, outcome) = core.replay_record(&t.record).unwrap();
        assert_eq!(zxid, t.zxid);
        assert_eq!(
            Some(&outcome),
            live.get(&zxid),
            "outcome of txn 0x{zxid:x} differs on replay"
        );
    }
}

#[test]
fn random_histories_replay_to_the_same_state_and_outcomes() {
    for seed in 0..12u64 {
        let (h, snap_at, image) = drive(seed, 1500);
        let live_outcomes: HashMap<Zxid, apply::Outcome> =
            h.core.live_outcomes.iter().cloned().collect();
        assert_eq!(live_outcomes.len(), h.log.len(), "seed {seed}");
        let expected = dump(&h.core);
        assert!(
            expected.nodes.len() > 4,
            "seed {seed}: the history did something"
        );

        let mut from_empty = Core::new(h.core.config.clone(), Now::both(T0));
        replay_checking(&mut from_empty, &h.log, &live_outcomes);
        assert_eq!(
            dump(&from_empty),
            expected,
            "seed {seed}: replay from empty"
        );

        let mut from_snapshot = Core::from_snapshot(
            h.core.config.clone(),
            &image[..],
            image.len() as u64,
            Now::both(T0),
        )
        .unwrap();
        replay_checking(&mut from_snapshot, &h.log[snap_at..], &live_outcomes);
        assert_eq!(
            dump(&from_snapshot),
            expected,
            "seed {seed}: snapshot + later log"
        );
    }
}
