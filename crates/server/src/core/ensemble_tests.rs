//! Two cores as an ensemble would drive them: a leader that prepares, a follower that forwards
//! and applies committed txns. The "network" is this test: forwarded requests go straight to
//! the leader, and the leader's txns are applied on the follower in order.

use super::*;
use corral_proto::records::*;
use corral_proto::{CreateMode, OpCode};

const T0: i64 = 1_700_000_000_000;
const FOLLOWER_CONN: ConnId = 7;
const FOLLOWER_MEMBER: u64 = 2;

fn peer() -> SocketAddr {
    "127.0.0.1:5000".parse().unwrap()
}

/// What the follower's client saw, decoded.
#[derive(Debug, PartialEq)]
enum Seen {
    Connected(SessionId),
    Reply { xid: i32, err: i32 },
    Event { t: i32, path: String },
    Closed,
}

struct Pair {
    leader: Core,
    follower: Core,
    /// Frames the follower's connection got, in order.
    seen: Vec<Seen>,
    /// Txns the leader prepared and the follower has not applied yet: (record, origin conn).
    in_flight: Vec<(Vec<u8>, Option<ConnId>)>,
    now: Now,
    /// The next frame is a ConnectResponse (it has no reply header).
    awaiting_connect: bool,
    /// Syncs the follower forwarded: answered (`sync_done`) once what is in flight is applied,
    /// as the driver does when the leader's sync entry commits.
    syncs: Vec<(ConnId, i32, String)>,
}

impl Pair {
    fn new() -> Pair {
        let cfg = CoreConfig {
            session_secret: [9; 16],
            ..CoreConfig::default()
        };
        let leader = Core::new(cfg.clone(), Now::both(T0));
        let mut follower = Core::new(cfg, Now::both(T0));
        follower.set_role(Role::Follower);
        follower.connection_opened(FOLLOWER_CONN, peer(), Now::both(T0));
        Pair {
            leader,
            follower,
            seen: Vec::new(),
            in_flight: Vec::new(),
            now: Now::both(T0),
            awaiting_connect: true,
            syncs: Vec::new(),
        }
    }

    /// Routes a follower step: frames to `seen`, forwards to the leader.
    fn route(&mut self, step: Step) {
        assert!(step.txns.is_empty(), "a follower prepares no txn");
        for e in step.effects {
            match e {
                Effect::Send { conn, frame } => {
                    assert_eq!(conn, FOLLOWER_CONN);
                    if std::mem::take(&mut self.awaiting_connect) {
                        let r = ConnectResponse::decode(&frame[4..]).unwrap();
                        self.seen.push(Seen::Connected(r.session_id));
                    } else {
                        self.seen.push(decode(&frame));
                    }
                }
                Effect::Close { .. } => self.seen.push(Seen::Closed),
                Effect::Reconfig(c) => panic!("no reconfig in these tests: {c:?}"),
                Effect::Forward(Forward {
                    conn,
                    request: ForwardRequest::Sync { xid, path },
                    ..
                }) => self.syncs.push((conn, xid, path)),
                Effect::Forward(f) => {
                    let origin = Some(f.conn);
                    let step = self.leader.receive_forwarded(f, FOLLOWER_MEMBER, self.now);
                    for t in step.txns {
                        self.in_flight.push((t.record, origin));
                    }
                }
            }
        }
    }

    /// Commits everything in flight: the follower applies it.
    fn commit(&mut self) {
        for (record, origin) in std::mem::take(&mut self.in_flight) {
            let step = self
                .follower
                .apply_committed(&record, origin, self.now)
                .unwrap();
            self.route(step);
        }
        for (conn, xid, path) in std::mem::take(&mut self.syncs) {
            let step = self.follower.sync_done(conn, xid, path, self.now);
            self.route(step);
        }
    }

    fn send(&mut self, body: Vec<u8>) {
        let step = self.follower.receive(FOLLOWER_CONN, &body, self.now);
        self.route(step);
    }
}

fn decode(frame: &[u8]) -> Seen {
    let mut r = Reader::new(&frame[4..]);
    let h = ReplyHeader::read(&mut r).unwrap();
    if h.xid == -1 {
        let ev = WatcherEvent::read(&mut r).unwrap();
        return Seen::Event {
            t: ev.event_type,
            path: ev.path,
        };
    }
    Seen::Reply {
        xid: h.xid,
        err: h.err,
    }
}

fn connect_body(session_id: i64, passwd: [u8; 16]) -> Vec<u8> {
    let mut w = Writer::new();
    corral_proto::request::encode_connect(
        &ConnectRequest {
            protocol_version: 0,
            last_zxid_seen: 0,
            timeout_ms: 10_000,
            session_id,
            passwd: Some(Bytes::copy_from_slice(&passwd)),
        },
        false,
        &mut w,
    );
    w.into_inner()
}

fn request_body(xid: i32, req: Request) -> Vec<u8> {
    let mut w = Writer::new();
    RequestHeader {
        xid,
        op: req.op().code(),
    }
    .write(&mut w);
    req.write(&mut w);
    w.into_inner()
}

fn create(path: &str, mode: CreateMode) -> Request {
    Request::Create {
        op: OpCode::Create,
        req: CreateRequest {
            path: path.into(),
            data: Some(Bytes::from_static(b"d")),
            acl: acl::open_acl(),
            flags: mode.code(),
        },
    }
}

fn get_data(path: &str, watch: bool) -> Request {
    Request::GetData(PathWatch {
        path: path.into(),
        watch,
    })
}

/// Connects the follower's client through the leader; returns the session id.
fn connected(p: &mut Pair) -> SessionId {
    p.send(connect_body(0, [0; 16]));
    assert!(
        p.seen.is_empty(),
        "no answer before the session is committed"
    );
    p.commit();
    let Some(Seen::Connected(sid)) = p.seen.pop() else {
        panic!("expected a connect response, got {:?}", p.seen);
    };
    assert_ne!(sid, 0);
    sid
}

#[test]
fn a_session_created_through_the_leader_is_answered_by_the_follower() {
    let mut p = Pair::new();
    let sid = connected(&mut p);
    assert!(p.follower.sessions.get(sid).is_some());
    assert!(p.leader.sessions.get(sid).is_some());
    // Both derive the same password, so the session resumes on either member.
    assert_eq!(
        p.follower.sessions.password(sid),
        p.leader.sessions.password(sid)
    );
}

#[test]
fn a_forwarded_write_is_answered_after_commit_and_later_reads_wait_for_it() {
    let mut p = Pair::new();
    connected(&mut p);
    p.send(request_body(1, create("/a", CreateMode::Persistent)));
    // A read pipelined behind the write must not overtake it.
    p.send(request_body(2, get_data("/a", false)));
    assert!(
        p.seen.is_empty(),
        "nothing answered before the commit: {:?}",
        p.seen
    );
    p.commit();
    assert_eq!(
        p.seen,
        vec![
            Seen::Reply { xid: 1, err: 0 },
            Seen::Reply { xid: 2, err: 0 }
        ]
    );
    assert_eq!(p.follower.last_zxid(), p.leader.last_zxid());
}

/// A session's writes on a follower go to the leader at once, without waiting for the
/// earlier ones to be applied (so one client's writes are pipelined, as in ZooKeeper); a
/// read waits for every write before it, and a write after that read waits behind it.
/// Replies come back in the client's order.
#[test]
fn a_follower_forwards_a_session_s_writes_without_waiting_and_answers_in_order() {
    let mut p = Pair::new();
    connected(&mut p);
    p.send(request_body(1, create("/p1", CreateMode::Persistent)));
    p.send(request_body(2, create("/p2", CreateMode::Persistent)));
    p.send(request_body(3, create("/p1/c", CreateMode::Persistent)));
    assert_eq!(p.in_flight.len(), 3, "all three writes reached the leader");
    p.send(request_body(4, get_data("/p2", false)));
    p.send(request_body(5, create("/p3", CreateMode::Persistent)));
    assert_eq!(
        p.in_flight.len(),
        3,
        "the write after a waiting read stays behind the read"
    );
    assert!(p.seen.is_empty(), "nothing answered before the commit");
    p.commit();
    let replies = |seen: &[Seen]| -> Vec<(i32, i32)> {
        seen.iter()
            .map(|s| match s {
                Seen::Reply { xid, err } => (*xid, *err),
                other => panic!("unexpected {other:?}"),
            })
            .collect()
    };
    assert_eq!(replies(&p.seen), vec![(1, 0), (2, 0), (3, 0), (4, 0)]);
    assert_eq!(p.in_flight.len(), 1, "the read released the last write");
    p.commit();
    assert_eq!(
        replies(&p.seen),
        vec![(1, 0), (2, 0), (3, 0), (4, 0), (5, 0)]
    );
    assert_eq!(p.follower.last_zxid(), p.leader.last_zxid());
}

#[test]
fn a_failed_write_still_commits_its_error_and_answers_it() {
    let mut p = Pair::new();
    connected(&mut p);
    p.send(request_body(
        1,
        create("/missing/child", CreateMode::Persistent),
    ));
    p.commit();
    assert_eq!(
        p.seen,
        vec![Seen::Reply {
            xid: 1,
            err: ZkError::NoNode.code()
        }]
    );
}

#[test]
fn watches_set_on_the_follower_fire_from_its_apply_before_the_reply() {
    let mut p = Pair::new();
    connected(&mut p);
    p.send(request_body(1, create("/w", CreateMode::Persistent)));
    p.commit();
    p.send(request_body(2, get_data("/w", true)));
    p.seen.clear();
    p.send(request_body(
        3,
        Request::SetData(SetDataRequest {
            path: "/w".into(),
            data: Some(Bytes::from_static(b"x")),
            version: -1,
        }),
    ));
    p.commit();
    assert_eq!(
        p.seen,
        vec![
            Seen::Event {
                t: EventType::NodeDataChanged.code(),
                path: "/w".into()
            },
            Seen::Reply { xid: 3, err: 0 }
        ]
    );
}

#[test]
fn a_follower_neither_expires_sessions_nor_prepares_txns_on_tick() {
    let mut p = Pair::new();
    let sid = connected(&mut p);
    let step = p.follower.tick(Now::both(T0 + 3_600_000));
    assert!(step.txns.is_empty() && step.effects.is_empty());
    assert!(p.follower.sessions.get(sid).is_some());
    // The follower reports who it heard from; the leader keeps those sessions alive.
    p.send(request_body(xid::PING, Request::Ping));
    assert_eq!(p.follower.take_touched_sessions(), vec![sid]);
}

#[test]
fn closing_a_session_on_the_follower_removes_its_ephemerals_everywhere() {
    let mut p = Pair::new();
    let sid = connected(&mut p);
    p.send(request_body(1, create("/e", CreateMode::Ephemeral)));
    p.commit();
    assert_eq!(p.follower.tree.ephemerals_of(sid).count(), 1);
    p.send(request_body(2, Request::CloseSession));
    p.commit();
    assert!(p.seen.contains(&Seen::Closed));
    assert!(!p.follower.tree.contains("/e"));
    assert!(!p.leader.tree.contains("/e"));
    assert!(p.follower.sessions.get(sid).is_none());
}

#[test]
fn zxids_of_a_new_epoch_start_above_the_old_ones() {
    let mut p = Pair::new();
    connected(&mut p);
    p.leader.begin_epoch(3);
    p.send(request_body(1, create("/z", CreateMode::Persistent)));
    p.commit();
    assert_eq!(p.follower.last_zxid(), (3 << 32) + 1);
}

/// A client resumes its session on the leader while its old connection on the follower is
/// still open: a write sent on the old connection before the follower learns of the move is
/// refused by the leader, and the old connection is closed, not answered (ZooKeeper's
/// SessionMoved).
#[test]
fn a_write_from_the_member_a_session_left_is_refused_and_its_connection_closed() {
    const LEADER: u64 = 1;
    const LEADER_CONN: ConnId = 3;
    let mut p = Pair::new();
    p.leader.join_ensemble(LEADER, false);
    p.follower.join_ensemble(FOLLOWER_MEMBER, false);
    let sid = connected(&mut p);
    let passwd = p.leader.sessions.password(sid);

    // The client resumes on the leader: the connect waits for the revalidation.
    p.leader.connection_opened(LEADER_CONN, peer(), p.now);
    let step = p
        .leader
        .receive(LEADER_CONN, &connect_body(sid, passwd), p.now);
    assert!(
        matches!(
            step.effects.as_slice(),
            [Effect::Forward(Forward {
                request: ForwardRequest::Revalidate { .. },
                ..
            })]
        ),
        "a resumed session is revalidated before it is answered: {:?}",
        step.effects
    );
    assert!(p.leader.revalidate(sid, LEADER, p.now));
    let step = p
        .leader
        .session_moved(sid, Some((LEADER_CONN, 10_000)), true, p.now);
    assert!(
        matches!(
            step.effects.as_slice(),
            [Effect::Send {
                conn: LEADER_CONN,
                ..
            }]
        ),
        "the resumed connection is answered once the move is applied: {:?}",
        step.effects
    );

    // A write still in flight on the old connection reaches the leader after the move.
    p.send(request_body(5, create("/stale", CreateMode::Persistent)));
    p.commit();
    assert_eq!(p.seen.pop(), Some(Seen::Closed), "closed, not answered");
    assert!(p.leader.tree.get("/stale").is_none());
    assert!(p.follower.tree.get("/stale").is_none());

    // The follower applying the move closes whatever old connection it still has; writes from
    // the member the client is on now go through.
    let step = p.follower.session_moved(sid, None, true, p.now);
    assert!(p.follower.sessions.get(sid).unwrap().conn.is_none());
    drop(step);
    let mut w = Writer::new();
    RequestHeader {
        xid: 6,
        op: OpCode::Create.code(),
    }
    .write(&mut w);
    create("/fresh", CreateMode::Persistent).write(&mut w);
    let step = p.leader.receive(LEADER_CONN, &w.into_inner(), p.now);
    assert_eq!(step.txns.len(), 1, "the owner's write is prepared");
    assert!(p.leader.tree.get("/fresh").is_some());
}

/// The follower's side of the move: a connection still bound to the session is closed when
/// the revalidation for another member is applied.
#[test]
fn applying_a_move_elsewhere_closes_the_old_connection() {
    let mut p = Pair::new();
    p.follower.join_ensemble(FOLLOWER_MEMBER, false);
    let sid = connected(&mut p);
    let step = p.follower.session_moved(sid, None, true, p.now);
    assert!(
        step.effects.iter().any(|e| matches!(
            e,
            Effect::Close {
                conn: FOLLOWER_CONN,
                ..
            }
        )),
        "{:?}",
        step.effects
    );
    // A dead session's revalidation closes nothing.
    let mut p = Pair::new();
    p.follower.join_ensemble(FOLLOWER_MEMBER, false);
    let sid = connected(&mut p);
    let step = p.follower.session_moved(sid, None, false, p.now);
    assert!(step.effects.is_empty());
}

/// `corral.linearizableReads`: a read on the follower waits for a barrier through the
/// leader's log; pipelined reads each wait for their own, and replies keep their order.
#[test]
fn linearizable_reads_wait_for_their_barrier() {
    let mut p = Pair::new();
    p.follower.join_ensemble(FOLLOWER_MEMBER, true);
    connected(&mut p);
    p.send(request_body(1, get_data("/zookeeper", false)));
    p.send(request_body(2, get_data("/zookeeper", false)));
    assert!(
        p.seen.is_empty(),
        "no read answered before its barrier: {:?}",
        p.seen
    );
    let step = p.follower.read_barrier_done(FOLLOWER_CONN, p.now);
    p.route(step);
    assert_eq!(
        p.seen,
        vec![Seen::Reply { xid: 1, err: 0 }],
        "only the first read is cleared"
    );
    let step = p.follower.read_barrier_done(FOLLOWER_CONN, p.now);
    p.route(step);
    assert_eq!(
        p.seen,
        vec![
            Seen::Reply { xid: 1, err: 0 },
            Seen::Reply { xid: 2, err: 0 }
        ]
    );
    // Without the setting a read is answered at once.
    let mut p = Pair::new();
    p.follower.join_ensemble(FOLLOWER_MEMBER, false);
    connected(&mut p);
    p.send(request_body(1, get_data("/zookeeper", false)));
    assert_eq!(p.seen, vec![Seen::Reply { xid: 1, err: 0 }]);
}

/// A session created through the leader, not yet applied on the follower: (id, password).
fn session_on_leader_only(p: &mut Pair) -> (SessionId, [u8; 16]) {
    const LEADER_CONN: ConnId = 1;
    p.leader.connection_opened(LEADER_CONN, peer(), p.now);
    let step = p
        .leader
        .receive(LEADER_CONN, &connect_body(0, [0; 16]), p.now);
    for t in step.txns {
        p.in_flight.push((t.record, None));
    }
    let frame = step
        .effects
        .iter()
        .find_map(|e| match e {
            Effect::Send { conn, frame } if *conn == LEADER_CONN => Some(frame.clone()),
            _ => None,
        })
        .expect("the leader answers the connect");
    let r = ConnectResponse::decode(&frame[4..]).unwrap();
    let passwd: [u8; 16] = r.passwd.as_deref().unwrap().try_into().unwrap();
    (r.session_id, passwd)
}

#[test]
fn a_follower_syncs_before_resuming_a_session_it_does_not_know_yet() {
    let mut p = Pair::new();
    let (sid, passwd) = session_on_leader_only(&mut p);
    // A client resumes the session on the follower, which has not applied its creation: it
    // must not call the session expired, but ask the leader first.
    p.send(connect_body(sid, passwd));
    assert!(p.seen.is_empty(), "answered before the sync: {:?}", p.seen);
    assert_eq!(p.syncs.len(), 1);
    p.commit();
    assert_eq!(p.seen, vec![Seen::Connected(sid)]);
    // The connection works as a session now.
    p.send(request_body(1, create("/e", CreateMode::Ephemeral)));
    p.commit();
    assert_eq!(p.seen.pop(), Some(Seen::Reply { xid: 1, err: 0 }));
}

#[test]
fn a_follower_calls_a_session_expired_once_the_leader_does_not_know_it_either() {
    let mut p = Pair::new();
    p.send(connect_body(0x1234, [7; 16]));
    assert!(p.seen.is_empty(), "answered before the sync: {:?}", p.seen);
    p.commit();
    assert_eq!(p.seen, vec![Seen::Connected(0), Seen::Closed]);
}
