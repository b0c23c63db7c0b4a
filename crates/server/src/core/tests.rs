//! Scenario tests of the state machine, driven with real frames as a client would send them.

use super::*;
use corral_proto::records::*;
use corral_proto::{CreateMode, OpCode, OpResult};

const T0: i64 = 1_700_000_000_000;

/// One decoded frame a connection received.
#[derive(Debug, Clone, PartialEq)]
enum Got {
    Reply {
        xid: i32,
        zxid: Zxid,
        err: i32,
        body: Vec<u8>,
    },
    Event {
        t: EventType,
        path: String,
        zxid: Zxid,
    },
}

struct H {
    core: Core,
    /// The monotonic clock; the wall clock reads `now + wall_offset_ms`.
    now: i64,
    wall_offset_ms: i64,
    next_xid: i32,
    /// Every txn logged, in order, to check replay.
    log: Vec<LoggedTxn>,
    closed: Vec<ConnId>,
}

fn peer() -> SocketAddr {
    "127.0.0.1:5000".parse().unwrap()
}

impl H {
    fn new() -> H {
        H::with_config(H::config())
    }

    /// The settings of [`H::new`]: short ticks and timeouts so expiry takes few steps.
    fn config() -> CoreConfig {
        CoreConfig {
            tick_time_ms: 100,
            min_session_timeout_ms: 200,
            max_session_timeout_ms: 2000,
            extended_types_enabled: true,
            container_check_interval_ms: 100,
            ..CoreConfig::default()
        }
    }

    fn with_config(cfg: CoreConfig) -> H {
        H {
            core: Core::new(cfg, Now::both(T0)),
            now: T0,
            wall_offset_ms: 0,
            next_xid: 1,
            log: Vec::new(),
            closed: Vec::new(),
        }
    }

    fn at(&self) -> Now {
        Now {
            mono_ms: self.now,
            wall_ms: self.now + self.wall_offset_ms,
        }
    }

    /// Collects frames per connection from a step.
    fn take(&mut self, step: Step) -> Vec<(ConnId, Got)> {
        self.log.extend(step.txns);
        let mut out = Vec::new();
        for e in step.effects {
            match e {
                Effect::Send { conn, frame } => {
                    let body = &frame[4..];
                    let mut r = Reader::new(body);
                    let h = ReplyHeader::read(&mut r).unwrap();
                    if h.xid == -1 {
                        let ev = WatcherEvent::read(&mut r).unwrap();
                        out.push((
                            conn,
                            Got::Event {
                                t: EventType::try_from(ev.event_type).unwrap(),
                                path: ev.path,
                                zxid: h.zxid,
                            },
                        ));
                    } else {
                        out.push((
                            conn,
                            Got::Reply {
                                xid: h.xid,
                                zxid: h.zxid,
                                err: h.err,
                                body: r.rest().to_vec(),
                            },
                        ));
                    }
                }
                Effect::Close { conn, .. } => self.closed.push(conn),
                Effect::Forward(f) => panic!("a leader never forwards: {f:?}"),
                Effect::Reconfig(c) => panic!("reconfig is disabled here: {c:?}"),
            }
        }
        out
    }

    fn connect_with(
        &mut self,
        conn: ConnId,
        session_id: i64,
        passwd: Vec<u8>,
        last_zxid: i64,
    ) -> Option<ConnectResponse> {
        self.core.connection_opened(conn, peer(), self.at());
        let mut w = Writer::new();
        corral_proto::request::encode_connect(
            &ConnectRequest {
                protocol_version: 0,
                last_zxid_seen: last_zxid,
                timeout_ms: 1000,
                session_id,
                passwd: Some(Bytes::from(passwd)),
            },
            false,
            &mut w,
        );
        let step = self.core.receive(conn, &w.into_inner(), self.at());
        self.log.extend(step.txns);
        for e in step.effects {
            if let Effect::Send { frame, .. } = e {
                return Some(ConnectResponse::decode(&frame[4..]).unwrap());
            }
            if let Effect::Close { conn, .. } = e {
                self.closed.push(conn);
            }
        }
        None
    }

    fn connect(&mut self, conn: ConnId) -> ConnectResponse {
        let r = self.connect_with(conn, 0, vec![0; 16], 0).unwrap();
        assert!(r.session_id != 0);
        r
    }

    /// Sends a request; returns the reply (err, body) and every frame others got.
    fn req(&mut self, conn: ConnId, req: Request) -> (i32, Option<Response>, Vec<(ConnId, Got)>) {
        let xid = if req == Request::Ping {
            xid::PING
        } else {
            self.next_xid
        };
        self.next_xid += 1;
        let mut w = Writer::new();
        RequestHeader {
            xid,
            op: req.op().code(),
        }
        .write(&mut w);
        req.write(&mut w);
        let step = self.core.receive(conn, &w.into_inner(), self.at());
        let got = self.take(step);
        let mut reply = None;
        let mut others = Vec::new();
        for (c, g) in got {
            match &g {
                Got::Reply {
                    xid: x, err, body, ..
                } if c == conn && *x == xid => {
                    let resp = (*err == 0).then(|| Response::decode(req.op(), body).unwrap());
                    reply = Some((*err, resp));
                }
                _ => others.push((c, g)),
            }
        }
        let (err, resp) = reply.expect("a reply");
        (err, resp, others)
    }

    fn create(
        &mut self,
        conn: ConnId,
        path: &str,
        data: &str,
        mode: CreateMode,
    ) -> (i32, Option<String>) {
        let (err, resp, _) = self.req(
            conn,
            Request::Create {
                op: OpCode::Create,
                req: CreateRequest {
                    path: path.into(),
                    data: Some(Bytes::copy_from_slice(data.as_bytes())),
                    acl: acl::open_acl(),
                    flags: mode.code(),
                },
            },
        );
        (
            err,
            resp.map(|r| match r {
                Response::Path(p) => p,
                other => panic!("{other:?}"),
            }),
        )
    }

    /// Creates a persistent node with null data; returns what other connections got.
    fn create_null(&mut self, conn: ConnId, path: &str) -> Vec<(ConnId, Got)> {
        let (_, _, others) = self.req(
            conn,
            Request::Create {
                op: OpCode::Create,
                req: CreateRequest {
                    path: path.into(),
                    data: None,
                    acl: acl::open_acl(),
                    flags: 0,
                },
            },
        );
        others
    }

    /// Sets a data watch with getData (the reply is not looked at).
    fn watch_data(&mut self, conn: ConnId, path: &str) {
        self.req(
            conn,
            Request::GetData(PathWatch {
                path: path.into(),
                watch: true,
            }),
        );
    }

    /// Sets a child watch with getChildren (the reply is not looked at).
    fn watch_children(&mut self, conn: ConnId, path: &str) {
        self.req(
            conn,
            Request::GetChildren(PathWatch {
                path: path.into(),
                watch: true,
            }),
        );
    }

    fn stat(&mut self, conn: ConnId, path: &str, watch: bool) -> Option<Stat> {
        let (_, resp, _) = self.req(
            conn,
            Request::Exists(PathWatch {
                path: path.into(),
                watch,
            }),
        );
        resp.map(|r| match r {
            Response::Stat(s) => s,
            other => panic!("{other:?}"),
        })
    }

    fn set(
        &mut self,
        conn: ConnId,
        path: &str,
        data: &str,
        version: i32,
    ) -> (i32, Vec<(ConnId, Got)>) {
        let (err, _, others) = self.req(
            conn,
            Request::SetData(SetDataRequest {
                path: path.into(),
                data: Some(Bytes::copy_from_slice(data.as_bytes())),
                version,
            }),
        );
        (err, others)
    }

    fn delete(&mut self, conn: ConnId, path: &str, version: i32) -> (i32, Vec<(ConnId, Got)>) {
        let (err, _, others) = self.req(
            conn,
            Request::Delete(DeleteRequest {
                path: path.into(),
                version,
            }),
        );
        (err, others)
    }
}

fn events(got: &[(ConnId, Got)], conn: ConnId) -> Vec<(EventType, String)> {
    got.iter()
        .filter(|(c, _)| *c == conn)
        .filter_map(|(_, g)| match g {
            Got::Event { t, path, .. } => Some((*t, path.clone())),
            _ => None,
        })
        .collect()
}

fn ev(t: EventType, p: &str) -> (EventType, String) {
    (t, p.to_string())
}

#[test]
fn zxid_grows_by_one_per_write_including_failures_and_sessions() {
    let mut h = H::new();
    h.connect(1);
    assert_eq!(h.core.last_zxid(), 1, "createSession is a txn");
    h.create(1, "/a", "x", CreateMode::Persistent);
    assert_eq!(h.core.last_zxid(), 2);
    let (err, _) = h.create(1, "/a", "x", CreateMode::Persistent);
    assert_eq!(err, ZkError::NodeExists.code());
    assert_eq!(
        h.core.last_zxid(),
        3,
        "a failed write consumes a zxid as in ZooKeeper"
    );
    h.stat(1, "/a", false);
    assert_eq!(h.core.last_zxid(), 3, "reads do not");
}

#[test]
fn sequential_names_use_parent_cversion() {
    let mut h = H::new();
    h.connect(1);
    h.create(1, "/q", "", CreateMode::Persistent);
    let (_, a) = h.create(1, "/q/n-", "", CreateMode::PersistentSequential);
    assert_eq!(a.unwrap(), "/q/n-0000000000");
    h.delete(1, "/q/n-0000000000", -1);
    let (_, b) = h.create(1, "/q/n-", "", CreateMode::EphemeralSequential);
    assert_eq!(b.unwrap(), "/q/n-0000000001");
    let s = h.stat(1, "/q", false).unwrap();
    // Two creations and one deletion: clients see cversion 3; the next suffix is 2.
    assert_eq!((s.cversion, s.num_children), (3, 1));
    let (_, c) = h.create(1, "/q/n-", "", CreateMode::PersistentSequential);
    assert_eq!(c.unwrap(), "/q/n-0000000002");
}

#[test]
fn stat_fields_follow_zookeeper() {
    let mut h = H::new();
    let c = h.connect(1);
    h.create(1, "/p", "abc", CreateMode::Persistent);
    let s = h.stat(1, "/p", false).unwrap();
    assert_eq!((s.czxid, s.mzxid, s.pzxid), (2, 2, 2));
    assert_eq!((s.version, s.data_length, s.ephemeral_owner), (0, 3, 0));
    h.set(1, "/p", "hello", 0);
    h.create(1, "/p/e", "", CreateMode::Ephemeral);
    let s = h.stat(1, "/p", false).unwrap();
    assert_eq!((s.czxid, s.mzxid, s.pzxid), (2, 3, 4));
    assert_eq!(
        (s.version, s.cversion, s.num_children, s.data_length),
        (1, 1, 1, 5)
    );
    assert_eq!(
        h.stat(1, "/p/e", false).unwrap().ephemeral_owner,
        c.session_id
    );
    let (err, _) = h.set(1, "/p", "x", 0);
    assert_eq!(err, ZkError::BadVersion.code());
}

#[test]
fn watch_table_of_seed_004() {
    // CREATED → exists; DELETED → exists, getData, getChildren; CHANGED → exists, getData;
    // CHILD → getChildren.
    let mut h = H::new();
    h.connect(1); // writer
    h.connect(2); // watcher
    h.stat(2, "/w", true); // exists watch on a missing node
    let got = h.create_null(1, "/w");
    assert_eq!(events(&got, 2), vec![ev(EventType::NodeCreated, "/w")]);

    h.stat(2, "/w", true);
    h.watch_data(2, "/w");
    h.watch_children(2, "/w");
    let (_, got) = h.set(1, "/w", "v", -1);
    // exists and getData watches live in one manager: one event per watcher per trigger.
    assert_eq!(events(&got, 2), vec![ev(EventType::NodeDataChanged, "/w")]);

    let got = h.create_null(1, "/w/c");
    assert_eq!(
        events(&got, 2),
        vec![ev(EventType::NodeChildrenChanged, "/w")]
    );

    h.watch_children(2, "/w");
    h.delete(1, "/w/c", -1);
    h.watch_data(2, "/w");
    h.watch_children(2, "/w");
    let (_, got) = h.delete(1, "/w", -1);
    assert_eq!(events(&got, 2), vec![ev(EventType::NodeDeleted, "/w")]);
    // All consumed: nothing more fires.
    let got = h.create_null(1, "/w");
    assert!(events(&got, 2).is_empty());
}

#[test]
fn events_carry_the_zxid_of_their_txn_and_precede_the_reply() {
    let mut h = H::new();
    h.connect(1);
    h.create(1, "/z", "", CreateMode::Persistent);
    h.watch_data(1, "/z");
    let xid = h.next_xid;
    let mut w = Writer::new();
    RequestHeader {
        xid,
        op: OpCode::SetData.code(),
    }
    .write(&mut w);
    Request::SetData(SetDataRequest {
        path: "/z".into(),
        data: None,
        version: -1,
    })
    .write(&mut w);
    let step = h.core.receive(1, &w.into_inner(), h.at());
    let got = h.take(step);
    let zxid = h.core.last_zxid();
    assert!(
        matches!(&got[0].1, Got::Event { t: EventType::NodeDataChanged, zxid: z, .. } if *z == zxid)
    );
    assert!(matches!(&got[1].1, Got::Reply { xid: x, zxid: z, .. } if *x == xid && *z == zxid));
}

#[test]
fn persistent_and_recursive_watches_stay() {
    let mut h = H::new();
    h.connect(1);
    h.connect(2);
    h.create(1, "/r", "", CreateMode::Persistent);
    h.req(
        2,
        Request::AddWatch(AddWatchRequest {
            path: "/r".into(),
            mode: 1,
        }),
    );
    h.req(
        2,
        Request::AddWatch(AddWatchRequest {
            path: "/r".into(),
            mode: 0,
        }),
    );
    let got = h.create_null(1, "/r/a");
    // Recursive: NodeCreated for the child; persistent on /r: NodeChildrenChanged.
    assert_eq!(
        events(&got, 2),
        vec![
            ev(EventType::NodeCreated, "/r/a"),
            ev(EventType::NodeChildrenChanged, "/r")
        ]
    );
    for _ in 0..3 {
        let (_, got) = h.set(1, "/r/a", "x", -1);
        assert_eq!(
            events(&got, 2),
            vec![ev(EventType::NodeDataChanged, "/r/a")]
        );
    }
    let (err, _, _) = h.req(
        2,
        Request::CheckWatches(WatchesRequest {
            path: "/r".into(),
            watcher_type: 5,
        }),
    );
    assert_eq!(err, 0);
    let (err, _, _) = h.req(
        2,
        Request::RemoveWatches(WatchesRequest {
            path: "/r".into(),
            watcher_type: 5,
        }),
    );
    assert_eq!(err, 0);
    let (err, _, _) = h.req(
        2,
        Request::CheckWatches(WatchesRequest {
            path: "/r".into(),
            watcher_type: 5,
        }),
    );
    assert_eq!(err, ZkError::NoWatcher.code());
    let (_, got) = h.set(1, "/r/a", "y", -1);
    assert!(events(&got, 2).is_empty());
}

#[test]
fn multi_is_all_or_nothing_with_zookeeper_error_layout() {
    let mut h = H::new();
    h.connect(1);
    h.connect(2);
    h.stat(2, "/m", true);
    let create = |p: &str| Request::Create {
        op: OpCode::Create,
        req: CreateRequest {
            path: p.into(),
            data: None,
            acl: acl::open_acl(),
            flags: 0,
        },
    };
    let (err, resp, got) = h.req(
        1,
        Request::Multi(vec![
            create("/m"),
            create("/m/child"),
            Request::Delete(DeleteRequest {
                path: "/missing".into(),
                version: -1,
            }),
            create("/m2"),
        ]),
    );
    assert_eq!(err, 0);
    assert_eq!(
        resp,
        Some(Response::Multi(vec![
            OpResult::Error(0),
            OpResult::Error(0),
            OpResult::Error(ZkError::NoNode.code()),
            OpResult::Error(ZkError::RuntimeInconsistency.code()),
        ]))
    );
    assert!(events(&got, 2).is_empty(), "a failed multi fires nothing");
    assert!(h.stat(1, "/m", false).is_none());
    let root = h.stat(1, "/", false).unwrap();
    // -1 as in ZooKeeper: `/zookeeper` was never "created" under `/`.
    assert_eq!(root.cversion, -1, "rolled back");

    let (err, resp, got) = h.req(
        1,
        Request::Multi(vec![
            create("/m"),
            create("/m/child"),
            Request::Check(CheckVersionRequest {
                path: "/m".into(),
                version: 0,
            }),
        ]),
    );
    assert_eq!(err, 0);
    assert_eq!(
        resp,
        Some(Response::Multi(vec![
            OpResult::Create("/m".into()),
            OpResult::Create("/m/child".into()),
            OpResult::Check,
        ]))
    );
    assert_eq!(events(&got, 2), vec![ev(EventType::NodeCreated, "/m")]);
    let z = h.core.last_zxid();
    assert_eq!(
        h.stat(1, "/m/child", false).unwrap().czxid,
        z,
        "one zxid for the whole multi"
    );
}

#[test]
fn session_expiry_removes_ephemerals_and_notifies() {
    let mut h = H::new();
    h.connect(1);
    h.connect(2);
    h.create(1, "/eph", "", CreateMode::Ephemeral);
    h.stat(2, "/eph", true);
    // Session 2 keeps pinging; session 1 goes silent.
    let mut seen = Vec::new();
    for _ in 0..20 {
        h.now += 100;
        h.req(2, Request::Ping);
        let step = h.core.tick(h.at());
        seen.extend(h.take(step));
    }
    assert_eq!(events(&seen, 2), vec![ev(EventType::NodeDeleted, "/eph")]);
    assert!(h.closed.contains(&1));
    assert!(h.stat(2, "/eph", false).is_none());
}

#[test]
fn reconnect_checks_password_and_refuses_clients_from_the_future() {
    let mut h = H::new();
    let c = h.connect(1);
    h.core.connection_closed(1, h.at());
    let bad = h.connect_with(2, c.session_id, vec![1; 16], 0).unwrap();
    assert_eq!((bad.session_id, bad.timeout_ms), (0, 0));
    let good = h
        .connect_with(
            3,
            c.session_id,
            c.passwd.clone().unwrap().to_vec(),
            h.core.last_zxid(),
        )
        .unwrap();
    assert_eq!(good.session_id, c.session_id);
    assert!(h.connect_with(4, 0, vec![0; 16], 999).is_none());
    assert!(h.closed.contains(&4));
}

#[test]
fn set_watches_fires_what_was_missed() {
    let mut h = H::new();
    h.connect(1);
    let c = h.connect(2);
    h.create(1, "/d", "", CreateMode::Persistent);
    h.create(1, "/kids", "", CreateMode::Persistent);
    h.create(1, "/same", "", CreateMode::Persistent);
    let seen = h.core.last_zxid();
    h.core.connection_closed(2, h.at());
    h.set(1, "/d", "changed", -1);
    h.create(1, "/kids/k", "", CreateMode::Persistent);
    h.create(1, "/born", "", CreateMode::Persistent);
    h.connect_with(3, c.session_id, c.passwd.clone().unwrap().to_vec(), seen)
        .unwrap();
    let (_, _, got) = h.req(
        3,
        Request::SetWatches(SetWatches {
            relative_zxid: seen,
            data_watches: vec!["/d".into(), "/same".into(), "/gone".into()],
            exist_watches: vec!["/born".into()],
            child_watches: vec!["/kids".into()],
        }),
    );
    assert_eq!(
        events(&got, 3),
        vec![
            ev(EventType::NodeDataChanged, "/d"),
            ev(EventType::NodeDeleted, "/gone"),
            ev(EventType::NodeCreated, "/born"),
            ev(EventType::NodeChildrenChanged, "/kids"),
        ]
    );
    let (_, got) = h.set(1, "/same", "now", -1);
    assert_eq!(
        events(&got, 3),
        vec![ev(EventType::NodeDataChanged, "/same")]
    );
}

#[test]
fn acls_deny_and_digest_auth_grants() {
    let mut h = H::new();
    h.connect(1);
    h.connect(2);
    let (err, _, _) = h.req(
        1,
        Request::Auth(AuthPacket {
            auth_type: 0,
            scheme: "digest".into(),
            auth: Some(Bytes::from_static(b"alice:secret")),
        }),
    );
    assert_eq!(err, 0);
    let only_alice = vec![Acl {
        perms: corral_proto::perms::ALL,
        id: Id {
            scheme: "auth".into(),
            id: "".into(),
        },
    }];
    let (err, _, _) = h.req(
        1,
        Request::Create {
            op: OpCode::Create,
            req: CreateRequest {
                path: "/secret".into(),
                data: None,
                acl: only_alice.clone(),
                flags: 0,
            },
        },
    );
    assert_eq!(err, 0);
    let (err, _, _) = h.req(
        2,
        Request::GetData(PathWatch {
            path: "/secret".into(),
            watch: false,
        }),
    );
    assert_eq!(err, ZkError::NoAuth.code());
    let (err, _, _) = h.req(
        2,
        Request::Create {
            op: OpCode::Create,
            req: CreateRequest {
                path: "/x".into(),
                data: None,
                acl: only_alice,
                flags: 0,
            },
        },
    );
    assert_eq!(
        err,
        ZkError::InvalidAcl.code(),
        "auth scheme without an authenticated id"
    );
    let (err, resp, _) = h.req(
        2,
        Request::GetAcl(PathRequest {
            path: "/secret".into(),
        }),
    );
    assert_eq!(err, ZkError::NoAuth.code(), "{resp:?}");
    let (_, resp, _) = h.req(1, Request::WhoAmI);
    let Some(Response::WhoAmI(infos)) = resp else {
        panic!()
    };
    assert!(infos
        .iter()
        .any(|i| i.auth_scheme == "digest" && i.user == "alice"));
}

#[test]
fn containers_and_ttl_nodes_are_reaped() {
    let mut h = H::new();
    h.connect(1);
    let (err, _, _) = h.req(
        1,
        Request::Create {
            op: OpCode::CreateContainer,
            req: CreateRequest {
                path: "/box".into(),
                data: None,
                acl: acl::open_acl(),
                flags: 4,
            },
        },
    );
    assert_eq!(err, 0);
    h.create(1, "/box/item", "", CreateMode::Persistent);
    let (err, _, _) = h.req(
        1,
        Request::CreateTtl(CreateTtlRequest {
            path: "/ttl".into(),
            data: None,
            acl: acl::open_acl(),
            flags: 5,
            ttl_ms: 500,
        }),
    );
    assert_eq!(err, 0);
    h.delete(1, "/box/item", -1);
    for _ in 0..10 {
        h.now += 100;
        h.req(1, Request::Ping);
        let s = h.core.tick(h.at());
        h.take(s);
    }
    assert!(
        h.stat(1, "/box", false).is_none(),
        "empty container removed"
    );
    assert!(
        h.stat(1, "/ttl", false).is_none(),
        "expired TTL node removed"
    );
}

#[test]
fn replaying_the_log_rebuilds_the_same_tree() {
    let mut h = H::new();
    h.connect(1);
    h.connect(2);
    h.create(1, "/a", "1", CreateMode::Persistent);
    h.create(1, "/a/s-", "", CreateMode::PersistentSequential);
    h.create(2, "/a/e", "", CreateMode::Ephemeral);
    h.set(1, "/a", "2", -1);
    h.create(1, "/a", "dup", CreateMode::Persistent);
    h.req(
        1,
        Request::Multi(vec![Request::Delete(DeleteRequest {
            path: "/a/s-0000000000".into(),
            version: -1,
        })]),
    );
    h.req(2, Request::CloseSession);
    let mut replica = Core::new(h.core.config.clone(), Now::both(T0));
    for t in &h.log {
        replica.apply_logged(&t.record).unwrap();
    }
    assert_eq!(replica.last_zxid(), h.core.last_zxid());
    let dump = |c: &Core| {
        let mut v: Vec<(String, Option<Bytes>, Stat)> = c
            .tree
            .nodes()
            .map(|n| (n.path().to_string(), n.data_owned(), n.stat()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    };
    assert_eq!(dump(&replica), dump(&h.core));
    assert_eq!(replica.sessions.len(), h.core.sessions.len());
}

#[test]
fn malformed_and_unknown_requests() {
    let mut h = H::new();
    h.connect(1);
    let step = h.core.receive(1, &[0, 0, 0, 1, 0, 0, 0, 5, 0, 0], h.at());
    assert!(step
        .effects
        .iter()
        .any(|e| matches!(e, Effect::Close { conn: 1, .. })));
    h.connect(2);
    let mut w = Writer::new();
    RequestHeader { xid: 9, op: 999 }.write(&mut w);
    let got = {
        let s = h.core.receive(2, &w.into_inner(), h.at());
        h.take(s)
    };
    assert!(matches!(
        &got[0].1,
        Got::Reply {
            xid: 9,
            err: -6,
            ..
        }
    ));
}

#[test]
fn events_reach_only_watchers_that_may_read_the_node() {
    let mut h = H::new();
    h.connect(1);
    h.connect(2);
    h.req(
        1,
        Request::Auth(AuthPacket {
            auth_type: 0,
            scheme: "digest".into(),
            auth: Some(Bytes::from_static(b"owner:pw")),
        }),
    );
    h.create(1, "/guarded", "", CreateMode::Persistent);
    h.watch_data(2, "/guarded");
    // Now only the owner may read it; watcher 2's pending watch must not leak the change.
    let owner_only = vec![Acl {
        perms: corral_proto::perms::ALL,
        id: Id {
            scheme: "auth".into(),
            id: "".into(),
        },
    }];
    let (err, _, _) = h.req(
        1,
        Request::SetAcl(SetAclRequest {
            path: "/guarded".into(),
            acl: owner_only,
            version: -1,
        }),
    );
    assert_eq!(err, 0);
    let (_, got) = h.set(1, "/guarded", "secret", -1);
    assert!(events(&got, 2).is_empty());
}

#[test]
fn hard_quota_fails_writes_and_soft_quota_only_counts() {
    let mut h = H::new();
    h.connect(1);
    h.create(1, "/q", "", CreateMode::Persistent);
    h.create(1, "/zookeeper/quota/q", "", CreateMode::Persistent);
    h.create(
        1,
        "/zookeeper/quota/q/zookeeper_limits",
        "count=-1,bytes=-1=;byteHardLimit=-1;countHardLimit=3",
        CreateMode::Persistent,
    );
    h.create(
        1,
        "/zookeeper/quota/q/zookeeper_stats",
        "count=0,bytes=0",
        CreateMode::Persistent,
    );
    assert_eq!(h.create(1, "/q/a", "", CreateMode::Persistent).0, 0);
    assert_eq!(h.create(1, "/q/b", "", CreateMode::Persistent).0, 0);
    assert_eq!(
        h.create(1, "/q/c", "", CreateMode::Persistent).0,
        ZkError::QuotaExceeded.code()
    );
    let (_, resp, _) = h.req(
        1,
        Request::GetData(PathWatch {
            path: "/zookeeper/quota/q/zookeeper_stats".into(),
            watch: false,
        }),
    );
    let Some(Response::GetData(d)) = resp else {
        panic!()
    };
    assert_eq!(d.data.as_deref(), Some(&b"count=3,bytes=0"[..]));
}

#[test]
fn ephemerals_counts_and_multi_read() {
    let mut h = H::new();
    h.connect(1);
    h.create(1, "/app", "", CreateMode::Persistent);
    h.create(1, "/app/x", "1", CreateMode::Ephemeral);
    h.create(1, "/app/y", "", CreateMode::Persistent);
    h.create(1, "/app/y/z", "", CreateMode::Persistent);
    h.create(1, "/other", "", CreateMode::Ephemeral);
    let (_, resp, _) = h.req(
        1,
        Request::GetEphemerals(PathRequest {
            path: "/app".into(),
        }),
    );
    assert_eq!(resp, Some(Response::Ephemerals(vec!["/app/x".into()])));
    let (_, resp, _) = h.req(
        1,
        Request::GetAllChildrenNumber(PathRequest {
            path: "/app".into(),
        }),
    );
    assert_eq!(resp, Some(Response::AllChildrenNumber(3)));
    let (_, resp, _) = h.req(
        1,
        Request::MultiRead(vec![
            Request::GetData(PathWatch {
                path: "/app/x".into(),
                watch: false,
            }),
            Request::GetChildren(PathWatch {
                path: "/nope".into(),
                watch: false,
            }),
            Request::GetChildren(PathWatch {
                path: "/app".into(),
                watch: false,
            }),
        ]),
    );
    let Some(Response::Multi(r)) = resp else {
        panic!()
    };
    assert!(matches!(&r[0], OpResult::GetData(d) if d.data.as_deref() == Some(&b"1"[..])));
    assert_eq!(r[1], OpResult::Error(ZkError::NoNode.code()));
    assert_eq!(r[2], OpResult::GetChildren(vec!["x".into(), "y".into()]));
}

/// Resumes `session` on `conn` having seen `seen`, re-registers a recursive watch on `path`
/// (setWatches2) and returns the events replayed to `conn`.
fn resume_with_recursive_watch(
    h: &mut H,
    conn: ConnId,
    session: &ConnectResponse,
    seen: Zxid,
    path: &str,
) -> Vec<(EventType, String, Zxid)> {
    h.connect_with(
        conn,
        session.session_id,
        session.passwd.clone().unwrap().to_vec(),
        seen,
    )
    .unwrap();
    let (_, _, got) = h.req(
        conn,
        Request::SetWatches2(SetWatches2 {
            relative_zxid: seen,
            data_watches: vec![],
            exist_watches: vec![],
            child_watches: vec![],
            persistent_watches: vec![],
            persistent_recursive_watches: vec![path.into()],
        }),
    );
    got.iter()
        .filter_map(|(c, g)| match g {
            Got::Event { t, path, zxid } if *c == conn => Some((*t, path.clone(), *zxid)),
            _ => None,
        })
        .collect()
}

#[test]
fn persistent_watches_get_missed_changes_replayed_after_reconnect() {
    let mut h = H::new();
    h.connect(1);
    let c = h.connect(2);
    h.create(1, "/pw", "", CreateMode::Persistent);
    h.req(
        2,
        Request::AddWatch(AddWatchRequest {
            path: "/pw".into(),
            mode: 1,
        }),
    );
    let seen = h.core.last_zxid();
    h.core.connection_closed(2, h.at());
    h.create(1, "/pw/a", "", CreateMode::Persistent);
    h.set(1, "/pw/a", "x", -1);
    h.set(1, "/elsewhere-not-watched", "x", -1);
    let changed_at = h.core.last_zxid() - 1;
    let replayed = resume_with_recursive_watch(&mut h, 3, &c, seen, "/pw");
    assert_eq!(
        replayed,
        vec![
            (EventType::NodeCreated, "/pw/a".to_string(), changed_at - 1),
            (EventType::NodeDataChanged, "/pw/a".to_string(), changed_at),
        ]
    );
}

#[test]
fn a_core_rebuilt_from_the_committed_log_keeps_the_replay_window_up_to_it() {
    // A leader that steps down with txns prepared but not committed rebuilds its core from
    // the committed log; clients reconnecting to it later must still get the changes that
    // were committed, and never the ones that were only prepared.
    let mut h = H::new();
    h.connect(1);
    let c = h.connect(2);
    h.create(1, "/pw", "", CreateMode::Persistent);
    h.req(
        2,
        Request::AddWatch(AddWatchRequest {
            path: "/pw".into(),
            mode: 1,
        }),
    );
    let seen = h.core.last_zxid();
    h.core.connection_closed(2, h.at());
    h.set(1, "/pw", "committed", -1);
    let committed = h.core.last_zxid();
    h.set(1, "/pw", "prepared only", -1);
    let mut rebuilt = Core::new(H::config(), h.at());
    for t in h.log.iter().filter(|t| t.zxid <= committed) {
        rebuilt.apply_logged(&t.record).unwrap();
    }
    // A rebuilt core that does not end at the committed zxid is refused.
    let mut short = Core::new(H::config(), h.at());
    assert!(!h.core.hand_over_replay_window(&mut short, committed));
    assert!(h.core.hand_over_replay_window(&mut rebuilt, committed));
    h.core = rebuilt;
    let replayed = resume_with_recursive_watch(&mut h, 3, &c, seen, "/pw");
    assert_eq!(
        replayed,
        vec![(EventType::NodeDataChanged, "/pw".to_string(), committed)]
    );
}

mod hardening;
mod replay;
