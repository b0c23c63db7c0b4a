//! Client tasks of each workload. Every task owns its session(s), runs one operation at a time
//! and records it in the history; every operation is bounded by the op timeout, and one that
//! times out or loses its connection is recorded with an unknown outcome.

use std::time::Duration;

use corral_client::{Client, CreateMode, Error, WatchEvent, WatchMode, ZkError};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::watch;

use crate::check::linear::BAD_VERSION;
use crate::history::{Call, Outcome, Recorder, Workload};

pub const ROOT: &str = "/chaos";
pub const REGISTERS: u32 = 3;
/// Pause between two operations of one task, so histories stay checkable in seconds.
const THINK_MS: u64 = 10;
/// How long a lock waiter polls before it gives up and starts over with a new session.
const LOCK_WAIT_MS: u64 = 10_000;
/// Guarded writes per lock tenure.
const WRITES_PER_TENURE: usize = 3;

/// What every task needs.
#[derive(Clone)]
pub struct Ctx {
    pub connect_string: String,
    pub rec: Recorder,
    /// Turns true when the workload phase ends.
    pub stop: watch::Receiver<bool>,
    pub op_timeout: Duration,
    pub session_timeout: Duration,
    pub seed: u64,
    /// The register's reads go without `sync` (the members serve linearizable reads).
    pub plain_register_reads: bool,
}

impl Ctx {
    fn stopped(&self) -> bool {
        *self.stop.borrow()
    }
}

/// Whether an error proves the operation did not take effect.
pub fn classify(e: &Error) -> Outcome {
    match e {
        Error::Zk(
            ZkError::NoNode
            | ZkError::NodeExists
            | ZkError::BadVersion
            | ZkError::NotEmpty
            | ZkError::NoAuth
            | ZkError::InvalidAcl
            | ZkError::NoChildrenForEphemerals
            | ZkError::NotReadOnly,
        )
        | Error::BadArguments(_)
        | Error::MultiFailed { .. } => Outcome::Fail,
        _ => Outcome::Info,
    }
}

pub(crate) fn error_text(e: &Error) -> String {
    match e {
        Error::Zk(ZkError::BadVersion) => BAD_VERSION.to_string(),
        e => e.to_string(),
    }
}

pub(crate) async fn bounded<T>(
    ctx: &Ctx,
    fut: impl std::future::Future<Output = Result<T, Error>>,
) -> Result<T, Error> {
    match tokio::time::timeout(ctx.op_timeout, fut).await {
        Ok(r) => r,
        Err(_) => Err(Error::Timeout),
    }
}

/// A task's session, reconnected when it ends.
pub(crate) struct Session {
    client: Option<Client>,
    timeout: Duration,
}

impl Session {
    pub(crate) fn new(timeout: Duration) -> Session {
        Session {
            client: None,
            timeout,
        }
    }

    /// The live client, connecting a new session if there is none; `None` once stopped.
    pub(crate) async fn get(&mut self, ctx: &Ctx) -> Option<Client> {
        if ctx.stopped() {
            return None;
        }
        if let Some(c) = &self.client {
            if !c.state().is_terminal() {
                return Some(c.clone());
            }
        }
        self.client = None;
        while !ctx.stopped() {
            let attempt = Client::builder(&ctx.connect_string)
                .session_timeout(self.timeout)
                .connect_timeout(Duration::from_secs(5))
                .connect();
            match attempt.await {
                Ok(c) => {
                    self.client = Some(c.clone());
                    return Some(c);
                }
                Err(e) => {
                    tracing::debug!(%e, "connect failed; retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
        None
    }

    /// Closes the session (its ephemerals go) and forgets it.
    async fn reset(&mut self) {
        if let Some(c) = self.client.take() {
            let _ = tokio::time::timeout(Duration::from_secs(2), c.close()).await;
        }
    }
}

pub(crate) async fn think() {
    tokio::time::sleep(Duration::from_millis(THINK_MS)).await;
}

/// Creates the znodes the workloads use.
pub async fn setup(client: &Client) -> Result<(), Error> {
    let mut nodes: Vec<(String, &[u8])> = vec![(ROOT.to_string(), b"")];
    nodes.push((format!("{ROOT}/reg"), b""));
    for k in 0..REGISTERS {
        nodes.push((format!("{ROOT}/reg/{k}"), b"0"));
    }
    for (name, data) in [
        ("set", &b""[..]),
        ("ids", b""),
        ("counter", b"0"),
        ("lock", b""),
        ("guard", b"0"),
        ("watched", b"0"),
        ("sess", b""),
        ("queue", b""),
        ("kset", b""),
    ] {
        nodes.push((format!("{ROOT}/{name}"), data));
    }
    for (path, data) in nodes {
        match client.create(&path, data, CreateMode::Persistent).await {
            Ok(_) | Err(Error::Zk(ZkError::NodeExists)) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Runs one task of `workload` as process `process` until stopped.
pub async fn run_task(ctx: Ctx, workload: Workload, process: u32) {
    match workload {
        Workload::Register => register(ctx, process).await,
        Workload::Set => set(ctx, process).await,
        Workload::Ids => ids(ctx, process).await,
        Workload::Counter => counter(ctx, process).await,
        Workload::Lock => lock(ctx, process).await,
        Workload::Watch => watch_writer(ctx, process).await,
        Workload::Session => session(ctx, process).await,
        Workload::Queue => crate::queue::run(ctx, process).await,
        Workload::KazooSet => crate::kazoo::run(ctx, process).await,
    }
}

fn parse_i64(data: &[u8]) -> Option<i64> {
    std::str::from_utf8(data).ok()?.trim().parse().ok()
}

async fn register(ctx: Ctx, process: u32) {
    let mut rng = StdRng::seed_from_u64(ctx.seed ^ u64::from(process) << 20);
    let mut s = Session::new(ctx.session_timeout);
    let mut last_version = [0i32; REGISTERS as usize];
    let mut n = 0u64;
    while let Some(c) = s.get(&ctx).await {
        let key = rng.gen_range(0..REGISTERS);
        let path = format!("{ROOT}/reg/{key}");
        // Values are unique across the run: process in the high bits.
        n += 1;
        let value = (u64::from(process) << 32) | n;
        let t0 = ctx.rec.now_ns();
        match rng.gen_range(0..3) {
            0 => {
                let r = bounded(&ctx, async {
                    if !ctx.plain_register_reads {
                        c.sync(&path).await?;
                    }
                    c.get_data(&path).await
                })
                .await;
                let (call, outcome, err) = match r {
                    Ok((data, stat)) => {
                        last_version[key as usize] = stat.version;
                        let value = parse_i64(&data).map(|v| v as u64);
                        (
                            Call::RegRead {
                                key,
                                value,
                                version: Some(stat.version),
                            },
                            Outcome::Ok,
                            None,
                        )
                    }
                    Err(e) => (
                        Call::RegRead {
                            key,
                            value: None,
                            version: None,
                        },
                        classify(&e),
                        Some(error_text(&e)),
                    ),
                };
                ctx.rec.finish(process, t0, outcome, call, err);
            }
            1 => {
                let r = bounded(&ctx, c.set_data(&path, value.to_string().as_bytes(), None)).await;
                let (outcome, err) = outcome_of(&r);
                ctx.rec
                    .finish(process, t0, outcome, Call::RegWrite { key, value }, err);
            }
            _ => {
                let expect = last_version[key as usize];
                let r = bounded(
                    &ctx,
                    c.set_data(&path, value.to_string().as_bytes(), Some(expect)),
                )
                .await;
                if let Ok(stat) = &r {
                    last_version[key as usize] = stat.version;
                }
                let (outcome, err) = outcome_of(&r);
                ctx.rec.finish(
                    process,
                    t0,
                    outcome,
                    Call::RegCas {
                        key,
                        expect_version: expect,
                        value,
                    },
                    err,
                );
            }
        }
        think().await;
    }
}

pub(crate) fn outcome_of<T>(r: &Result<T, Error>) -> (Outcome, Option<String>) {
    match r {
        Ok(_) => (Outcome::Ok, None),
        Err(e) => (classify(e), Some(error_text(e))),
    }
}

async fn set(ctx: Ctx, process: u32) {
    let mut s = Session::new(ctx.session_timeout);
    let mut n = 0u64;
    while let Some(c) = s.get(&ctx).await {
        n += 1;
        let elem = (u64::from(process) << 32) | n;
        let t0 = ctx.rec.now_ns();
        let r = bounded(
            &ctx,
            c.create(&format!("{ROOT}/set/e{elem}"), b"", CreateMode::Persistent),
        )
        .await;
        let (outcome, err) = outcome_of(&r);
        ctx.rec
            .finish(process, t0, outcome, Call::SetAdd { elem }, err);
        think().await;
    }
}

/// The sequence number ZooKeeper appends to a sequential node's name (10 digits).
pub(crate) fn sequence_of(path: &str) -> Option<i64> {
    let digits = path.get(path.len().checked_sub(10)?..)?;
    digits.parse().ok()
}

async fn ids(ctx: Ctx, process: u32) {
    let mut s = Session::new(ctx.session_timeout);
    while let Some(c) = s.get(&ctx).await {
        let t0 = ctx.rec.now_ns();
        let r = bounded(
            &ctx,
            c.create(
                &format!("{ROOT}/ids/id-"),
                b"",
                CreateMode::PersistentSequential,
            ),
        )
        .await;
        let (outcome, err) = outcome_of(&r);
        let id = r.ok().and_then(|(p, _)| sequence_of(&p));
        ctx.rec
            .finish(process, t0, outcome, Call::IdNext { id }, err);
        think().await;
    }
}

async fn counter(ctx: Ctx, process: u32) {
    let mut s = Session::new(ctx.session_timeout);
    let path = format!("{ROOT}/counter");
    while let Some(c) = s.get(&ctx).await {
        // The read is not part of the checked history: only the versioned write changes
        // the counter.
        let Ok((data, stat)) = bounded(&ctx, c.get_data(&path)).await else {
            think().await;
            continue;
        };
        let Some(from) = parse_i64(&data) else {
            tracing::error!(?data, "counter holds a non-number");
            think().await;
            continue;
        };
        let t0 = ctx.rec.now_ns();
        let r = bounded(
            &ctx,
            c.set_data(&path, (from + 1).to_string().as_bytes(), Some(stat.version)),
        )
        .await;
        let (outcome, err) = outcome_of(&r);
        ctx.rec
            .finish(process, t0, outcome, Call::CounterIncr { from }, err);
        think().await;
    }
}

/// Lock holder with fencing: acquire (lowest ephemeral sequential child), write the guard a
/// few times with the lock node's czxid as token, release; start over with a fresh session
/// whenever anything is uncertain, so a stale lock node dies with its session.
async fn lock(ctx: Ctx, process: u32) {
    let mut s = Session::new(ctx.session_timeout);
    let lock_dir = format!("{ROOT}/lock");
    let guard = format!("{ROOT}/guard");
    'session: while let Some(c) = s.get(&ctx).await {
        let mine = match bounded(
            &ctx,
            c.create(
                &format!("{lock_dir}/l-"),
                b"",
                CreateMode::EphemeralSequential,
            ),
        )
        .await
        {
            Ok(created) => created,
            Err(_) => {
                s.reset().await;
                continue;
            }
        };
        let (my_path, my_stat) = mine;
        let token = my_stat.czxid;
        let my_name = my_path.rsplit('/').next().unwrap_or_default().to_string();
        let waited = tokio::time::Instant::now();
        loop {
            if ctx.stopped() || waited.elapsed() > Duration::from_millis(LOCK_WAIT_MS) {
                s.reset().await;
                continue 'session;
            }
            match bounded(&ctx, c.children(&lock_dir)).await {
                Ok((mut kids, _)) => {
                    kids.sort_by_key(|k| sequence_of(k));
                    if kids.first() == Some(&my_name) {
                        break;
                    }
                    if !kids.contains(&my_name) {
                        // Our node is gone: the session expired under us.
                        s.reset().await;
                        continue 'session;
                    }
                }
                Err(_) => {
                    s.reset().await;
                    continue 'session;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        for _ in 0..WRITES_PER_TENURE {
            let t0 = ctx.rec.now_ns();
            let r = bounded(&ctx, async {
                let (data, stat) = c.get_data(&guard).await?;
                let current = parse_i64(&data).unwrap_or(i64::MAX);
                if token < current {
                    return Ok(None);
                }
                let stat = c
                    .set_data(&guard, token.to_string().as_bytes(), Some(stat.version))
                    .await?;
                Ok(Some(stat.version))
            })
            .await;
            match r {
                Ok(Some(version)) => ctx.rec.finish(
                    process,
                    t0,
                    Outcome::Ok,
                    Call::GuardWrite {
                        token,
                        version: Some(version),
                    },
                    None,
                ),
                Ok(None) => ctx.rec.finish(
                    process,
                    t0,
                    Outcome::Fail,
                    Call::GuardWrite {
                        token,
                        version: None,
                    },
                    Some("fenced: the guard holds a larger token".into()),
                ),
                Err(e) => {
                    ctx.rec.finish(
                        process,
                        t0,
                        classify(&e),
                        Call::GuardWrite {
                            token,
                            version: None,
                        },
                        Some(error_text(&e)),
                    );
                    s.reset().await;
                    continue 'session;
                }
            }
            think().await;
        }
        if bounded(&ctx, c.delete(&my_path, None)).await.is_err() {
            s.reset().await;
        }
    }
}

async fn watch_writer(ctx: Ctx, process: u32) {
    let mut s = Session::new(ctx.session_timeout);
    let path = format!("{ROOT}/watched");
    let mut n = 0u64;
    while let Some(c) = s.get(&ctx).await {
        n += 1;
        let t0 = ctx.rec.now_ns();
        let r = bounded(&ctx, c.set_data(&path, n.to_string().as_bytes(), None)).await;
        let (outcome, err) = outcome_of(&r);
        let zxid = r.ok().map(|stat| stat.mzxid);
        ctx.rec
            .finish(process, t0, outcome, Call::WatchWrite { zxid }, err);
        think().await;
    }
}

/// Listens to the watched znode until told the final zxid (after healing), then waits a bounded
/// time for the stream to reach it and records the end of its window.
pub async fn watcher(
    ctx: Ctx,
    watcher: u32,
    session_timeout: Duration,
    mut final_zxid: watch::Receiver<Option<i64>>,
    catch_up: Duration,
) {
    let path = format!("{ROOT}/watched");
    let mut s = Session::new(session_timeout);
    let Some(c) = s.get(&ctx).await else { return };
    let Ok(mut stream) = bounded(&ctx, c.watch(&path, WatchMode::NonRecursive)).await else {
        tracing::warn!(watcher, "could not register the watch; watcher not checked");
        return;
    };
    let Ok((_, stat)) = bounded(&ctx, async {
        c.sync(&path).await?;
        c.get_data(&path).await
    })
    .await
    else {
        tracing::warn!(
            watcher,
            "could not read the start zxid; watcher not checked"
        );
        return;
    };
    let t = ctx.rec.now_ns();
    ctx.rec.finish(
        watcher,
        t,
        Outcome::Ok,
        Call::WatchStart {
            watcher,
            zxid: stat.mzxid,
        },
        None,
    );
    let mut last_seen = stat.mzxid;
    // The last zxid seen before the latest disconnect: where a gap the server declares after
    // its replay on the reconnect begins.
    let mut seen_before_reconnect = last_seen;
    let mut deadline: Option<tokio::time::Instant> = None;
    loop {
        let target = *final_zxid.borrow();
        if let Some(end) = target {
            if last_seen >= end {
                break;
            }
            let d = *deadline.get_or_insert_with(|| tokio::time::Instant::now() + catch_up);
            if tokio::time::Instant::now() >= d {
                break;
            }
        }
        let next = tokio::select! {
            item = stream.next() => item,
            changed = final_zxid.changed() => {
                if changed.is_err() {
                    break; // the runner is gone
                }
                continue;
            }
            _ = tokio::time::sleep(Duration::from_millis(200)) => continue,
        };
        let t = ctx.rec.now_ns();
        match next {
            Some(WatchEvent::Node(ev)) => {
                let zxid = ev.zxid.unwrap_or(-1);
                last_seen = last_seen.max(zxid);
                ctx.rec.finish(
                    watcher,
                    t,
                    Outcome::Ok,
                    Call::WatchEvent { watcher, zxid },
                    None,
                );
            }
            Some(WatchEvent::MayHaveMissed) => {
                let gap = Call::WatchGap {
                    watcher,
                    since: Some(seen_before_reconnect),
                };
                ctx.rec.finish(watcher, t, Outcome::Ok, gap, None)
            }
            Some(WatchEvent::Session(state)) if state.is_terminal() => {
                // The session is over: whatever follows cannot reach this watcher.
                let gap = Call::WatchGap {
                    watcher,
                    since: None,
                };
                ctx.rec.finish(watcher, t, Outcome::Ok, gap, None);
                break;
            }
            Some(WatchEvent::Session(_)) => seen_before_reconnect = last_seen,
            None => {
                let gap = Call::WatchGap {
                    watcher,
                    since: None,
                };
                ctx.rec.finish(watcher, t, Outcome::Ok, gap, None);
                break;
            }
        }
    }
    // Without a final zxid (the final read failed) the window ends at what was seen.
    let end = (*final_zxid.borrow()).unwrap_or(last_seen);
    let t = ctx.rec.now_ns();
    ctx.rec.finish(
        watcher,
        t,
        Outcome::Ok,
        Call::WatchEnd { watcher, zxid: end },
        None,
    );
    s.reset().await;
}

/// Sessions and ephemerals: create an ephemeral, close the session, ask the server to resume
/// the session until it refuses (the end is then observed), and read the ephemeral again.
async fn session(ctx: Ctx, process: u32) {
    let mut reader = Session::new(ctx.session_timeout);
    let mut n = 0u64;
    while !ctx.stopped() {
        n += 1;
        let mut owner = Session::new(ctx.session_timeout);
        let Some(c) = owner.get(&ctx).await else {
            break;
        };
        let session = c.session_id();
        let password = c.session_password();
        let path = format!("{ROOT}/sess/s{process}-{n}");
        let t0 = ctx.rec.now_ns();
        let r = bounded(&ctx, c.create(&path, b"", CreateMode::Ephemeral)).await;
        let (outcome, err) = outcome_of(&r);
        ctx.rec.finish(
            process,
            t0,
            outcome,
            Call::EphemeralCreate {
                session,
                path: path.clone(),
            },
            err,
        );
        owner.reset().await;
        drop(c);
        // Probe: the server refuses to resume a closed or expired session.
        let mut ended = false;
        for _ in 0..10 {
            if ctx.stopped() {
                break;
            }
            let t0 = ctx.rec.now_ns();
            let probe = Client::builder(&ctx.connect_string)
                .session_timeout(ctx.session_timeout)
                .session(session, password.clone())
                .connect_timeout(Duration::from_secs(3))
                .connect()
                .await;
            match probe {
                Err(Error::SessionExpired) => {
                    ctx.rec.finish(
                        process,
                        t0,
                        Outcome::Ok,
                        Call::SessionEnded { session },
                        None,
                    );
                    ended = true;
                    break;
                }
                // The close did not land (the connection broke): close it again.
                Ok(resumed) => {
                    let _ = tokio::time::timeout(Duration::from_secs(2), resumed.close()).await;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
        if !ended {
            continue;
        }
        let Some(rc) = reader.get(&ctx).await else {
            break;
        };
        let t0 = ctx.rec.now_ns();
        let r = bounded(&ctx, async {
            rc.sync(&path).await?;
            rc.exists(&path).await
        })
        .await;
        let (outcome, err) = outcome_of(&r);
        ctx.rec.finish(
            process,
            t0,
            outcome,
            Call::EphemeralRead {
                session,
                path,
                present: r.ok().map(|s| s.is_some()),
            },
            err,
        );
        think().await;
    }
    reader.reset().await;
}
