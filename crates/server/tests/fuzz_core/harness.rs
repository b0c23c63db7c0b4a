//! The core fuzz harness: bytes → a run of client actions against one `Core`, with the state
//! checked after every step and a log replay checked at the end.
//!
//! Shared by the libFuzzer target (`crates/server/fuzz`, includes this file by path) and the
//! stable test `tests/fuzz_core.rs` (replays the saved corpus and seeded random inputs). It
//! uses only the public API of `corral-server` and `corral-proto`.
//!
//! The input is read as a little program: each step takes an action byte and a few argument
//! bytes; running out of bytes ends the input. Paths come from a small fixed set (plus paths
//! the core created for sequential nodes) so that actions collide on the same nodes.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

use bytes::Bytes;
use corral_proto::records::{
    Acl, AddWatchRequest, AuthPacket, CheckVersionRequest, ConnectRequest, ConnectResponse,
    CreateRequest, CreateTtlRequest, DeleteRequest, Id, PathRequest, PathWatch, ReconfigRequest,
    ReplyHeader, RequestHeader, SetAclRequest, SetDataRequest, SetWatches, SetWatches2,
    WatcherEvent, WatchesRequest,
};
use corral_proto::{perms, xid, Jute, OpCode, Reader, Request, Response, Writer};
use corral_server::core::invariants::{CanonicalDump, DumpedNode};
use corral_server::core::{digest_id, ConnId, Core, CoreConfig, Effect, LoggedTxn, Now, Step};

/// Wall and monotonic clocks start here (any value works; a realistic one keeps ids sane).
const T0_MS: i64 = 1_700_000_000_000;
/// Steps per input: enough for sessions to expire and containers to be reaped, few enough
/// that every input runs in well under a millisecond or two.
const MAX_STEPS: usize = 96;
/// Connections open at once; more would only dilute collisions.
const MAX_OPEN_CONNS: usize = 6;
/// Sessions and created paths remembered for reuse (bounded, oldest dropped).
const MAX_REMEMBERED: usize = 12;

const PATHS: &[&str] = &[
    "/",
    "/a",
    "/a/b",
    "/a/b/c",
    "/c",
    "/c/d",
    "/t",
    "/t/x",
    "/zookeeper",
    "/zookeeper/quota",
    "/zookeeper/quota/a",
    "/zookeeper/quota/a/zookeeper_limits",
    "/zookeeper/config",
    "/a/",
    "a",
    "",
];

/// Consumes the input; every read past the end yields zeros and marks it exhausted.
struct Input<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Input<'_> {
    fn done(&self) -> bool {
        self.pos >= self.data.len()
    }

    fn u8(&mut self) -> u8 {
        let b = self.data.get(self.pos).copied().unwrap_or(0);
        self.pos += 1;
        b
    }

    fn u16(&mut self) -> u16 {
        u16::from(self.u8()) | (u16::from(self.u8()) << 8)
    }

    fn pick<'t, T>(&mut self, items: &'t [T]) -> &'t T {
        &items[usize::from(self.u8()) % items.len()]
    }

    fn bool(&mut self) -> bool {
        self.u8() & 1 == 1
    }

    fn take(&mut self, n: usize) -> Vec<u8> {
        let end = (self.pos + n).min(self.data.len());
        let out = self.data.get(self.pos..end).unwrap_or(&[]).to_vec();
        self.pos += n;
        out
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum ConnState {
    /// Opened; the ConnectRequest has been sent, no answer yet.
    Handshaking,
    Ready,
}

/// What the harness knows from outside the core, and the checks it makes on each step.
struct Run {
    config: CoreConfig,
    core: Core,
    now_ms: i64,
    next_conn: ConnId,
    next_xid: i32,
    open: BTreeMap<ConnId, ConnState>,
    /// (session id, password) from connect responses, to reconnect with.
    sessions: Vec<(i64, Vec<u8>)>,
    /// Paths the core answered to creates (sequential names included).
    created: Vec<String>,
    log: Vec<LoggedTxn>,
    /// Per path: (czxid, client cversion, pzxid, children) after the previous step.
    parents: BTreeMap<String, (i64, i32, i64, BTreeSet<String>)>,
    /// The step sends raw bytes: the client may have picked any xid (even the notification
    /// xid), so replies are not parsed.
    raw_step: bool,
}

fn peer() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 40_000))
}

/// The settings every run uses: short ticks so expiry and container reaping happen within a
/// few steps; extended types so TTL nodes exist; a super digest so `super` can be tried.
pub fn config() -> CoreConfig {
    CoreConfig {
        tick_time_ms: 100,
        min_session_timeout_ms: 200,
        max_session_timeout_ms: 2000,
        extended_types_enabled: true,
        container_check_interval_ms: 100,
        super_digest: Some(digest_id("super:pw")),
        ..CoreConfig::default()
    }
}

/// Runs one input. Panics (with the reason) on the first broken invariant, which is what both
/// libFuzzer and the test want.
pub fn run(data: &[u8]) {
    let config = config();
    let mut run = Run {
        core: Core::new(config.clone(), Now::both(T0_MS)),
        config,
        now_ms: T0_MS,
        next_conn: 1,
        next_xid: 1,
        open: BTreeMap::new(),
        sessions: Vec::new(),
        created: Vec::new(),
        log: Vec::new(),
        parents: BTreeMap::new(),
        raw_step: false,
    };
    run.parents = parent_view(&run.core.canonical_dump());
    let mut input = Input { data, pos: 0 };
    for _ in 0..MAX_STEPS {
        if input.done() {
            break;
        }
        run.step(&mut input);
    }
    run.check_replay();
}

impl Run {
    fn now(&self) -> Now {
        Now::both(self.now_ms)
    }

    fn step(&mut self, input: &mut Input) {
        let action = input.u8();
        let ready: Vec<ConnId> = self
            .open
            .iter()
            .filter(|(_, s)| **s == ConnState::Ready)
            .map(|(c, _)| *c)
            .collect();
        match action % 16 {
            0 => self.connect(input, None),
            1 => {
                // Reconnect to a known session, with its password or a corrupted one.
                if self.sessions.is_empty() {
                    return self.connect(input, None);
                }
                let (sid, mut pw) = input.pick(&self.sessions).clone();
                if input.u8() & 7 == 0 {
                    if let Some(b) = pw.first_mut() {
                        *b ^= 1;
                    }
                }
                self.connect(input, Some((sid, pw)));
            }
            2 => {
                // The client's socket goes away.
                let conns: Vec<ConnId> = self.open.keys().copied().collect();
                if conns.is_empty() {
                    return;
                }
                let conn = *input.pick(&conns);
                let step = self.core.connection_closed(conn, self.now());
                self.open.remove(&conn);
                self.finish(step);
            }
            3 => {
                // Time passes (up to ~6.5 s: beyond the longest session timeout).
                self.now_ms += i64::from(input.u16() % 6500);
                let step = self.core.tick(self.now());
                self.finish(step);
            }
            4 => {
                // Raw bytes as a frame: whatever the decoder makes of them.
                let Some(&conn) = self.open.keys().nth(usize::from(input.u8()) % 8) else {
                    return;
                };
                let len = usize::from(input.u8() % 48);
                let body = input.take(len);
                let step = self.core.receive(conn, &body, self.now());
                self.raw_step = true;
                self.finish(step);
                self.raw_step = false;
            }
            _ => {
                if ready.is_empty() {
                    return self.connect(input, None);
                }
                let conn = *input.pick(&ready);
                let (xid, req) = self.request(input);
                let mut w = Writer::new();
                RequestHeader {
                    xid,
                    op: req.op().code(),
                }
                .write(&mut w);
                req.write(&mut w);
                let step = self.core.receive(conn, &w.into_inner(), self.now());
                self.finish(step);
            }
        }
    }

    fn connect(&mut self, input: &mut Input, resume: Option<(i64, Vec<u8>)>) {
        if self.open.len() >= MAX_OPEN_CONNS {
            return;
        }
        let conn = self.next_conn;
        self.next_conn += 1;
        self.core.connection_opened(conn, peer(), self.now());
        self.open.insert(conn, ConnState::Handshaking);
        let (session_id, passwd) = resume.unwrap_or((0, vec![0; 16]));
        let last_zxid_seen = if input.u8() & 15 == 0 { i64::MAX } else { 0 };
        let timeout_ms = i32::from(input.u16() % 3000);
        let mut w = Writer::new();
        corral_proto::request::encode_connect(
            &ConnectRequest {
                protocol_version: 0,
                last_zxid_seen,
                timeout_ms,
                session_id,
                passwd: Some(Bytes::from(passwd)),
            },
            input.bool(),
            &mut w,
        );
        let step = self.core.receive(conn, &w.into_inner(), self.now());
        self.finish(step);
    }

    fn path(&mut self, input: &mut Input) -> String {
        let i = usize::from(input.u8());
        if i % 4 == 3 && !self.created.is_empty() {
            return self.created[i / 4 % self.created.len()].clone();
        }
        PATHS[i % PATHS.len()].to_string()
    }

    fn acl(&mut self, input: &mut Input) -> Vec<Acl> {
        let id = |scheme: &str, id: String| Id {
            scheme: scheme.into(),
            id,
        };
        match input.u8() % 8 {
            0 => vec![Acl {
                perms: perms::ALL,
                id: id("digest", digest_id("u1:pw")),
            }],
            1 => vec![
                Acl {
                    perms: perms::ALL,
                    id: id("digest", digest_id("u2:pw")),
                },
                Acl {
                    perms: perms::READ,
                    id: id("world", "anyone".into()),
                },
            ],
            2 => vec![Acl {
                perms: perms::ALL,
                id: id("auth", String::new()),
            }],
            3 => vec![Acl {
                perms: perms::ALL,
                id: id("ip", "127.0.0.1".into()),
            }],
            4 => vec![Acl {
                perms: i32::from(input.u8() & 0x3f),
                id: id("world", "anyone".into()),
            }],
            5 => Vec::new(),
            6 => vec![Acl {
                perms: perms::ALL,
                id: id("bogus", "x".into()),
            }],
            _ => vec![Acl {
                perms: perms::ALL,
                id: id("world", "anyone".into()),
            }],
        }
    }

    fn data(&mut self, input: &mut Input) -> Option<Bytes> {
        match input.u8() % 8 {
            0 => None,
            // Quota specs, so the limits node parses into something.
            1 => Some(Bytes::from_static(b"count=3,bytes=20")),
            2 => Some(Bytes::from_static(b"count=-1,bytes=-1")),
            n => Some(Bytes::from(vec![b'd'; usize::from(n) * 3])),
        }
    }

    fn version(&mut self, input: &mut Input) -> i32 {
        match input.u8() % 4 {
            0 | 1 => -1,
            n => i32::from(n) - 2,
        }
    }

    /// One request and its xid. Multi holds only flat requests: no nesting, no recursion.
    fn request(&mut self, input: &mut Input) -> (i32, Request) {
        let xid = self.next_xid;
        self.next_xid += 1;
        match input.u8() % 28 {
            0 => (xid::PING, Request::Ping),
            1 => (xid::AUTH, self.auth(input)),
            2 => (xid, Request::CloseSession),
            3 => {
                let n = 1 + usize::from(input.u8() % 4);
                let ops = (0..n).map(|_| self.simple(input, true)).collect();
                (xid, Request::Multi(ops))
            }
            4 => {
                let n = 1 + usize::from(input.u8() % 4);
                let ops = (0..n).map(|_| self.simple(input, false)).collect();
                (xid, Request::MultiRead(ops))
            }
            5 => {
                let data_watches = vec![self.path(input)];
                let child_watches = vec![self.path(input)];
                let relative_zxid = i64::from(input.u8());
                let req = if input.bool() {
                    Request::SetWatches(SetWatches {
                        relative_zxid,
                        data_watches,
                        exist_watches: vec![self.path(input)],
                        child_watches,
                    })
                } else {
                    Request::SetWatches2(SetWatches2 {
                        relative_zxid,
                        data_watches,
                        exist_watches: vec![self.path(input)],
                        child_watches,
                        persistent_watches: vec![self.path(input)],
                        persistent_recursive_watches: vec![self.path(input)],
                    })
                };
                (xid::SET_WATCHES, req)
            }
            6 => (
                xid,
                Request::Reconfig(ReconfigRequest {
                    joining_servers: String::new(),
                    leaving_servers: "2".into(),
                    new_members: String::new(),
                    cur_config_id: -1,
                }),
            ),
            7 => (xid, Request::WhoAmI),
            _ => {
                let write = input.bool();
                (xid, self.simple(input, write))
            }
        }
    }

    fn auth(&mut self, input: &mut Input) -> Request {
        let (scheme, auth): (&str, &[u8]) = match input.u8() % 5 {
            0 => ("digest", b"u1:pw"),
            1 => ("digest", b"u2:pw"),
            2 => ("digest", b"super:pw"),
            3 => ("digest", b"nocolon"),
            _ => ("bogus", b"x"),
        };
        Request::Auth(AuthPacket {
            auth_type: 0,
            scheme: scheme.into(),
            auth: Some(Bytes::from_static(auth)),
        })
    }

    /// A request that is not multi, auth, ping or closeSession; `write` picks a write (the
    /// kinds a multi may hold), otherwise a read or watch operation.
    fn simple(&mut self, input: &mut Input, write: bool) -> Request {
        let path = self.path(input);
        if write {
            match input.u8() % 8 {
                0 | 1 => {
                    let op =
                        *input.pick(&[OpCode::Create, OpCode::Create2, OpCode::CreateContainer]);
                    let flags = if op == OpCode::CreateContainer {
                        4
                    } else {
                        i32::from(input.u8() % 8)
                    };
                    Request::Create {
                        op,
                        req: CreateRequest {
                            path,
                            data: self.data(input),
                            acl: self.acl(input),
                            flags,
                        },
                    }
                }
                2 => Request::CreateTtl(CreateTtlRequest {
                    path,
                    data: self.data(input),
                    acl: self.acl(input),
                    flags: *input.pick(&[5, 6, 0, 1]),
                    ttl_ms: *input.pick(&[1, 150, 1000, 0, -5, 0xff_ffff_ffff, 0x100_0000_0000]),
                }),
                3 => Request::Delete(DeleteRequest {
                    path,
                    version: self.version(input),
                }),
                4 => Request::SetData(SetDataRequest {
                    path,
                    data: self.data(input),
                    version: self.version(input),
                }),
                5 => Request::SetAcl(SetAclRequest {
                    path,
                    acl: self.acl(input),
                    version: self.version(input),
                }),
                6 => Request::Check(CheckVersionRequest {
                    path,
                    version: self.version(input),
                }),
                _ => Request::DeleteContainer(PathRequest { path }),
            }
        } else {
            let watch = input.bool();
            match input.u8() % 11 {
                0 => Request::Exists(PathWatch { path, watch }),
                1 => Request::GetData(PathWatch { path, watch }),
                2 => Request::GetChildren(PathWatch { path, watch }),
                3 => Request::GetChildren2(PathWatch { path, watch }),
                4 => Request::GetAcl(PathRequest { path }),
                5 => Request::Sync(PathRequest { path }),
                6 => Request::GetEphemerals(PathRequest { path }),
                7 => Request::GetAllChildrenNumber(PathRequest { path }),
                8 => Request::AddWatch(AddWatchRequest {
                    path,
                    mode: i32::from(input.u8() % 3),
                }),
                9 => Request::CheckWatches(WatchesRequest {
                    path,
                    watcher_type: i32::from(input.u8() % 4),
                }),
                _ => Request::RemoveWatches(WatchesRequest {
                    path,
                    watcher_type: i32::from(input.u8() % 4),
                }),
            }
        }
    }

    /// Checks one step's output, closes what it asked to close, and checks the core's state.
    fn finish(&mut self, step: Step) {
        if std::env::var_os("FUZZ_CORE_TRACE").is_some() {
            eprintln!("{step:?}");
        }
        let Step { effects, txns } = step;
        // Only txns change the tree: without one, the parents' stats cannot have moved.
        let tree_may_change = !txns.is_empty();
        for t in &txns {
            if let Some(last) = self.log.last() {
                assert!(
                    t.zxid > last.zxid,
                    "zxid 0x{:x} logged after 0x{:x}",
                    t.zxid,
                    last.zxid
                );
            }
        }
        self.log.extend(txns);
        let mut closing = Vec::new();
        for effect in effects {
            match effect {
                Effect::Send { conn, frame } => {
                    let state = self.open.get(&conn).copied();
                    assert!(
                        state.is_some(),
                        "frame sent to connection {conn}, which is not open"
                    );
                    // Nothing follows a Close on its connection (FUZZING.md, finding 1, fixed).
                    assert!(
                        !closing.contains(&conn),
                        "frame sent to connection {conn} after its Close in the same step"
                    );
                    self.look_at_frame(conn, state, &frame[4..]);
                }
                Effect::Close { conn, .. } => {
                    assert!(
                        self.open.contains_key(&conn),
                        "close of connection {conn}, which is not open"
                    );
                    closing.push(conn);
                }
                Effect::Forward(f) => panic!("a standalone core forwarded {f:?}"),
                Effect::Reconfig(c) => panic!("reconfig is disabled here, yet {c:?}"),
            }
        }
        for conn in closing {
            if self.open.remove(&conn).is_some() {
                let step = self.core.connection_closed(conn, self.now());
                assert!(step.effects.is_empty() && step.txns.is_empty());
            }
        }
        if let Err(e) = self.core.check_invariants() {
            panic!("invariant broken: {e}");
        }
        if tree_may_change {
            self.check_parents();
        }
    }

    fn look_at_frame(&mut self, conn: ConnId, state: Option<ConnState>, body: &[u8]) {
        if state == Some(ConnState::Handshaking) {
            let resp = ConnectResponse::decode(body).expect("a ConnectResponse");
            if resp.session_id != 0 {
                self.open.insert(conn, ConnState::Ready);
                let pw = resp.passwd.map(|p| p.to_vec()).unwrap_or_default();
                if !self.sessions.iter().any(|(s, _)| *s == resp.session_id) {
                    if self.sessions.len() == MAX_REMEMBERED {
                        self.sessions.remove(0);
                    }
                    self.sessions.push((resp.session_id, pw));
                }
            }
            return;
        }
        let mut r = Reader::new(body);
        let header = ReplyHeader::read(&mut r).expect("a reply header");
        if self.raw_step {
            return;
        }
        if header.xid == xid::NOTIFICATION {
            WatcherEvent::read(&mut r).expect("a watch event");
            return;
        }
        // Remember created paths (sequential names) so later steps can use them.
        if header.err == 0 {
            for op in [OpCode::Create, OpCode::Create2] {
                let path = match Response::decode(op, r.rest()) {
                    Ok(Response::Path(p)) => Some(p),
                    Ok(Response::Create2(c)) => Some(c.path),
                    _ => None,
                };
                if let Some(p) = path.filter(|p| p.starts_with('/') && p.len() < 64) {
                    if !self.created.contains(&p) {
                        if self.created.len() == MAX_REMEMBERED {
                            self.created.remove(0);
                        }
                        self.created.push(p);
                    }
                    break;
                }
            }
        }
    }

    /// A parent whose set of children changed in this step must show it: its (client-visible)
    /// cversion grew by at least the number of names added plus removed, and its pzxid moved
    /// forward to a zxid of this step.
    fn check_parents(&mut self) {
        let now = parent_view(&self.core.canonical_dump());
        let last_zxid = self.core.last_zxid();
        for (path, (czxid, cversion, pzxid, children)) in &now {
            let Some((old_czxid, old_cversion, old_pzxid, old_children)) = self.parents.get(path)
            else {
                continue;
            };
            if old_czxid != czxid {
                continue; // Deleted and re-created: a different node.
            }
            assert!(
                cversion >= old_cversion && pzxid >= old_pzxid,
                "{path}: cversion {old_cversion}→{cversion}, pzxid 0x{old_pzxid:x}→0x{pzxid:x}"
            );
            if children != old_children {
                let changed = children.symmetric_difference(old_children).count() as i32;
                assert!(
                    cversion - old_cversion >= changed,
                    "{path}: {changed} children changed, cversion {old_cversion}→{cversion}"
                );
                assert!(
                    pzxid > old_pzxid && *pzxid <= last_zxid,
                    "{path}: children changed, pzxid 0x{old_pzxid:x}→0x{pzxid:x}"
                );
            }
        }
        self.parents = now;
    }

    /// Every logged txn, replayed into a fresh core, rebuilds the same state.
    fn check_replay(&self) {
        let mut fresh = Core::new(self.config.clone(), Now::both(T0_MS));
        for t in &self.log {
            fresh
                .apply_logged(&t.record)
                .unwrap_or_else(|e| panic!("logged txn 0x{:x} does not decode: {e}", t.zxid));
        }
        let live = self.core.canonical_dump();
        let replayed = fresh.canonical_dump();
        if live != replayed {
            panic!("replay differs:\nlive     {live:?}\nreplayed {replayed:?}");
        }
        if let Err(e) = fresh.check_invariants() {
            panic!("invariant broken after replay: {e}");
        }
    }
}

type ParentView = BTreeMap<String, (i64, i32, i64, BTreeSet<String>)>;

fn parent_view(dump: &CanonicalDump) -> ParentView {
    dump.nodes
        .iter()
        .map(|n: &DumpedNode| {
            (
                n.path.clone(),
                (
                    n.stat.czxid,
                    n.stat.cversion,
                    n.stat.pzxid,
                    n.children.iter().cloned().collect(),
                ),
            )
        })
        .collect()
}

/// A small deterministic generator (xorshift64*) for the seeded inputs of the stable test, so
/// that the test needs no extra dependency.
pub fn seeded_input(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 56) as u8
        })
        .collect()
}
