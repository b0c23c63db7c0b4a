//! Durability of the real `corral server` binary: SIGKILL at random moments under concurrent
//! pipelined writes, damaged data directories, ephemerals across restarts, snapshots and
//! autopurge, and a write error (file size limit) while serving.
//!
//! `CORRAL_DURABILITY_SEED=<u64>` replays the crash test's random choices;
//! `CORRAL_DURABILITY_ROUNDS=<n>` changes its number of rounds (default 20).

mod durability_support;

use std::collections::HashMap;
use std::fs;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use corral_proto::Request;
use corral_storage::LogIter;
use durability_support::*;
use tokio::sync::Semaphore;

const SESSION_TIMEOUT_MS: i32 = 4000;

// ---------------------------------------------------------------------------------------
// Crash test

/// What the test knows about one znode it wrote.
#[derive(Debug, Clone)]
struct Track {
    /// Highest version whose write was acknowledged (-1: not even the create was).
    acked: i32,
    /// Highest version a sent write could have produced (0 once the create was sent).
    sent: i32,
    /// After a restart the observed state becomes the only acceptable one: `Some(None)` =
    /// absent for good, `Some(Some(v))` = exactly version v.
    settled: Option<Option<i32>>,
}

/// A multi that creates two nodes: both or neither may exist.
#[derive(Debug, Clone)]
struct MultiTrack {
    a: String,
    b: String,
    acked: bool,
    settled: Option<bool>,
}

#[derive(Default)]
struct Ledger {
    nodes: HashMap<String, Track>,
    multis: Vec<MultiTrack>,
    acked_writes: u64,
}

fn data_for(version: i32) -> Vec<u8> {
    format!("v{version}").into_bytes()
}

/// One writer: its own session, up to `depth` requests in flight, until the connection
/// breaks (the server was killed) or `max_ops` were sent.
async fn writer(
    addr: String,
    round: usize,
    id: usize,
    mut rng: Rng,
    ledger: Arc<Mutex<Ledger>>,
    depth: usize,
    max_ops: usize,
) {
    let Ok(client) = Client::connect(&addr, SESSION_TIMEOUT_MS).await else {
        return;
    };
    let client = Arc::new(client);
    let window = Arc::new(Semaphore::new(depth));
    // Nodes of this writer with the next setData version to use.
    let mut mine: Vec<(String, i32)> = Vec::new();
    let mut replies = tokio::task::JoinSet::new();
    for k in 0..max_ops {
        let permit = window.clone().acquire_owned().await.unwrap();
        let roll = rng.range(0, 100);
        let sent = if roll < 50 || mine.is_empty() {
            let path = format!("/r{round}-w{id}-n{k}");
            ledger.lock().unwrap().nodes.insert(
                path.clone(),
                Track {
                    acked: -1,
                    sent: 0,
                    settled: None,
                },
            );
            mine.push((path.clone(), 1));
            let fut = client
                .send(create_request(&path, &data_for(0), false))
                .await;
            fut.map(|f| (f, Op::Create(path)))
        } else if roll < 85 {
            let idx = rng.range(0, mine.len() as u64) as usize;
            let (path, next) = mine[idx].clone();
            mine[idx].1 += 1;
            ledger.lock().unwrap().nodes.get_mut(&path).unwrap().sent = next;
            let fut = client
                .send(set_data_request(&path, &data_for(next), next - 1))
                .await;
            fut.map(|f| (f, Op::Set(path, next)))
        } else {
            let a = format!("/r{round}-w{id}-ma{k}");
            let b = format!("/r{round}-w{id}-mb{k}");
            let idx = {
                let mut l = ledger.lock().unwrap();
                l.multis.push(MultiTrack {
                    a: a.clone(),
                    b: b.clone(),
                    acked: false,
                    settled: None,
                });
                l.multis.len() - 1
            };
            let req = Request::Multi(vec![
                create_request(&a, b"m", false),
                create_request(&b, b"m", false),
            ]);
            client.send(req).await.map(|f| (f, Op::Multi(idx)))
        };
        let Ok((reply, op)) = sent else {
            break; // connection gone
        };
        let ledger = ledger.clone();
        replies.spawn(async move {
            let result = reply.await;
            drop(permit);
            let mut l = ledger.lock().unwrap();
            match (result, op) {
                (Ok(_), Op::Create(path)) => {
                    let t = l.nodes.get_mut(&path).unwrap();
                    t.acked = t.acked.max(0);
                    l.acked_writes += 1;
                }
                (Ok(_), Op::Set(path, v)) => {
                    let t = l.nodes.get_mut(&path).unwrap();
                    t.acked = t.acked.max(v);
                    l.acked_writes += 1;
                }
                (Ok(_), Op::Multi(idx)) => {
                    l.multis[idx].acked = true;
                    l.acked_writes += 1;
                }
                (Err(CallError::ConnectionLoss), _) => {}
                (Err(e), op) => panic!("{op:?} failed with {e:?} on a healthy server"),
            }
        });
    }
    while replies.join_next().await.is_some() {}
}

#[derive(Debug)]
enum Op {
    Create(String),
    Set(String, i32),
    Multi(usize),
}

/// Reads back every znode in the ledger and checks it against what was acknowledged; then
/// settles the observed state. Returns how many znodes/multis were checked.
async fn verify(addr: &str, ledger: &Mutex<Ledger>, context: &str) -> usize {
    let client = Client::connect(addr, SESSION_TIMEOUT_MS)
        .await
        .unwrap_or_else(|e| panic!("{context}: connect after restart: {e}"));
    let (paths, multis): (Vec<String>, Vec<MultiTrack>) = {
        let l = ledger.lock().unwrap();
        let mut p: Vec<String> = l.nodes.keys().cloned().collect();
        p.sort();
        (p, l.multis.clone())
    };
    let mut wanted: Vec<String> = paths.clone();
    for m in &multis {
        wanted.push(m.a.clone());
        wanted.push(m.b.clone());
    }
    // Pipelined reads in chunks.
    let mut found: HashMap<String, Option<(Vec<u8>, i32)>> = HashMap::new();
    for chunk in wanted.chunks(512) {
        let mut futs = Vec::new();
        for path in chunk {
            let req = Request::GetData(corral_proto::records::PathWatch {
                path: path.clone(),
                watch: false,
            });
            futs.push((path.clone(), client.send(req).await.expect("send read")));
        }
        for (path, f) in futs {
            let state = match f.await {
                Ok((_, corral_proto::Response::GetData(r))) => Some((
                    r.data.map(|d| d.to_vec()).unwrap_or_default(),
                    r.stat.version,
                )),
                Err(CallError::Zk(NO_NODE)) => None,
                other => panic!("{context}: getData {path}: {other:?}"),
            };
            found.insert(path, state);
        }
    }
    let mut l = ledger.lock().unwrap();
    for path in &paths {
        let t = l.nodes.get_mut(path).unwrap();
        let got = &found[path];
        match (&t.settled, got) {
            (Some(None), None) => {}
            (Some(Some(v)), Some((data, ver))) if ver == v && *data == data_for(*v) => {}
            (Some(s), _) => panic!("{context}: {path} was settled as {s:?}, now {got:?}"),
            (None, None) => {
                assert!(
                    t.acked < 0,
                    "{context}: {path} is missing, but version {} was acknowledged",
                    t.acked
                );
                t.settled = Some(None);
            }
            (None, Some((data, ver))) => {
                assert!(
                    *ver >= t.acked && *ver <= t.sent,
                    "{context}: {path} has version {ver}; acknowledged {}, sent up to {}",
                    t.acked,
                    t.sent
                );
                assert_eq!(
                    data,
                    &data_for(*ver),
                    "{context}: {path} version {ver} has the wrong data"
                );
                t.settled = Some(Some(*ver));
            }
        }
    }
    for m in l.multis.iter_mut() {
        let a = found[&m.a].is_some();
        let b = found[&m.b].is_some();
        assert_eq!(a, b, "{context}: multi {} / {} is half applied", m.a, m.b);
        if m.acked {
            assert!(a, "{context}: acknowledged multi {} is missing", m.a);
        }
        if let Some(s) = m.settled {
            assert_eq!(s, a, "{context}: multi {} changed after settling", m.a);
        }
        m.settled = Some(a);
    }
    paths.len() + multis.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_under_load_loses_no_acknowledged_write() {
    let seed = seed();
    let rounds: usize = std::env::var("CORRAL_DURABILITY_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    // Printed up front: a failed assertion aborts the test, and this line says how to replay it.
    println!("crash test: seed {seed} (CORRAL_DURABILITY_SEED={seed} replays it), {rounds} rounds");
    let mut rng = Rng::new(seed);
    let dir = DataDir::new();
    // Small snapCount and autopurge: rounds also cover snapshot + log recovery and purging.
    let settings = Settings {
        snap_count: 300,
        extra: vec![
            "autopurge.purgeInterval=1".into(),
            "autopurge.snapRetainCount=3".into(),
        ],
        ..Settings::default()
    };
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let started = Instant::now();
    let mut total_acked = 0u64;
    for round in 0..rounds {
        let context = format!("seed {seed} round {round}");
        let mut server = ServerProc::start(&dir, &settings);
        verify(&server.addr(), &ledger, &context).await;
        let acked_before = ledger.lock().unwrap().acked_writes;
        let writers = rng.range(2, 6) as usize;
        let mut tasks = Vec::new();
        for id in 0..writers {
            tasks.push(tokio::spawn(writer(
                server.addr(),
                round,
                id,
                Rng::new(rng.next_u64()),
                ledger.clone(),
                rng.range(1, 17) as usize,
                20_000,
            )));
        }
        let kill_after = Duration::from_millis(rng.range(30, 600));
        tokio::time::sleep(kill_after).await;
        server.kill9();
        for t in tasks {
            t.await.expect("writer task");
        }
        let acked = ledger.lock().unwrap().acked_writes - acked_before;
        total_acked += acked;
        println!(
            "round {round}: {writers} writers, killed after {kill_after:?}, {acked} writes acknowledged"
        );
    }
    let mut server = ServerProc::start(&dir, &settings);
    let checked = verify(&server.addr(), &ledger, &format!("seed {seed} final")).await;
    server.stop();
    let (ok, out, err) = corral(&["datadir", dir.data().to_str().unwrap(), "verify"]);
    assert!(ok, "datadir verify after the crash rounds: {out}{err}");
    println!(
        "crash test: {rounds} rounds, {total_acked} acknowledged writes, {checked} znodes/multis verified after every restart, {:?}",
        started.elapsed()
    );
    assert!(total_acked > 0, "no write was ever acknowledged");
}

// ---------------------------------------------------------------------------------------
// Helpers for the other tests

/// Creates `n` persistent znodes `<prefix><i>` (pipelined) and returns their paths.
async fn populate(addr: &str, prefix: &str, n: usize) -> Vec<String> {
    let client = Client::connect(addr, SESSION_TIMEOUT_MS).await.unwrap();
    populate_range(&client, prefix, 0..n).await
}

/// Like `populate`, in batches of `batch` (more than snapCount); after each batch it adds
/// single filler znodes until a new snapshot file exists, so every batch is followed by a
/// snapshot however the background writer is scheduled. Returns all paths created.
async fn populate_with_snapshots(
    addr: &str,
    dir: &DataDir,
    prefix: &str,
    n: usize,
    batch: usize,
) -> Vec<String> {
    let client = Client::connect(addr, SESSION_TIMEOUT_MS).await.unwrap();
    let mut paths = Vec::new();
    let mut start = 0;
    let mut filler = 0;
    let deadline = Instant::now() + PATIENCE;
    while start < n {
        let before = dir.snapshots().len();
        let end = (start + batch).min(n);
        paths.extend(populate_range(&client, prefix, start..end).await);
        while dir.snapshots().len() <= before {
            assert!(Instant::now() < deadline, "no snapshot was written");
            tokio::time::sleep(Duration::from_millis(5)).await;
            let p = format!("{prefix}-filler{filler}");
            filler += 1;
            client.create(&p, p.as_bytes(), false).await.unwrap();
            paths.push(p);
        }
        start = end;
    }
    paths
}

async fn populate_range(
    client: &Client,
    prefix: &str,
    range: std::ops::Range<usize>,
) -> Vec<String> {
    let mut futs = Vec::new();
    let mut paths = Vec::new();
    for i in range {
        let path = format!("{prefix}{i}");
        futs.push(
            client
                .send(create_request(&path, path.as_bytes(), false))
                .await
                .unwrap(),
        );
        paths.push(path);
    }
    for f in futs {
        f.await.expect("create");
    }
    paths
}

async fn assert_present(addr: &str, paths: &[String]) {
    let client = Client::connect(addr, SESSION_TIMEOUT_MS).await.unwrap();
    for p in paths {
        let got = client.get_data(p).await.unwrap();
        let (data, _) = got.unwrap_or_else(|| panic!("{p} is missing"));
        assert_eq!(data, p.as_bytes(), "{p}");
    }
}

/// Records of the newest log segment: (path of the segment, records).
fn newest_segment_records(dir: &DataDir) -> (std::path::PathBuf, Vec<corral_storage::LogRecord>) {
    let seg = dir.segments().pop().expect("a log segment");
    let recs: Vec<_> = LogIter::open(&seg)
        .unwrap()
        .map(|r| r.expect("intact record"))
        .collect();
    (seg, recs)
}

fn flip_byte(path: &Path, offset: u64) {
    let mut bytes = fs::read(path).unwrap();
    bytes[offset as usize] ^= 0x5a;
    fs::write(path, bytes).unwrap();
}

fn file_name(p: &Path) -> String {
    p.file_name().unwrap().to_string_lossy().into_owned()
}

// ---------------------------------------------------------------------------------------
// Damaged data

#[tokio::test]
async fn torn_tail_is_truncated_with_a_warning() {
    let dir = DataDir::new();
    let settings = Settings::default();
    let mut server = ServerProc::start(&dir, &settings);
    let paths = populate(&server.addr(), "/torn", 30).await;
    server.kill9();
    let (seg, recs) = newest_segment_records(&dir);
    let last = recs.last().unwrap();
    let rec = corral_server::core::txn::TxnRecord::decode(&last.payload).unwrap();
    assert!(
        matches!(&rec.txn, corral_server::core::txn::Txn::Create { txn, .. } if txn.path == "/torn29"),
        "last txn should be the last create: {rec:?}"
    );
    // Cut the last record in the middle of its frame header, as a crash mid-append would.
    let f = fs::OpenOptions::new().write(true).open(&seg).unwrap();
    f.set_len(last.offset + 6).unwrap();
    drop(f);

    let server = ServerProc::start(&dir, &settings);
    let log = server.log();
    assert!(
        log.contains("torn tail"),
        "no warning about the torn tail:\n{log}"
    );
    assert!(
        log.contains(&file_name(&seg)) && log.contains(&last.offset.to_string()),
        "the warning should name file and offset:\n{log}"
    );
    assert_present(&server.addr(), &paths[..29]).await;
    let client = Client::connect(&server.addr(), SESSION_TIMEOUT_MS)
        .await
        .unwrap();
    assert_eq!(client.get_data("/torn29").await.unwrap(), None);
    // And the log continues cleanly after the cut.
    client.create("/after", b"x", false).await.unwrap();
}

#[tokio::test]
async fn flipped_byte_in_the_middle_of_the_log_refuses_to_start() {
    let dir = DataDir::new();
    let settings = Settings::default();
    let mut server = ServerProc::start(&dir, &settings);
    populate(&server.addr(), "/flip", 40).await;
    server.stop();
    let (seg, recs) = newest_segment_records(&dir);
    let victim = &recs[recs.len() / 2];
    flip_byte(&seg, victim.offset + 20); // inside the payload

    let (status, out) = ServerProc::start_expecting_failure(&dir, &settings);
    assert!(!status.success(), "started on a corrupt log:\n{out}");
    assert!(
        out.contains(&file_name(&seg)) && out.contains(&format!("offset {}", victim.offset)),
        "the error should name {} and offset {}:\n{out}",
        seg.display(),
        victim.offset
    );
    // The inspection tool agrees.
    let (ok, stdout, stderr) = corral(&["datadir", dir.data().to_str().unwrap(), "verify"]);
    assert!(!ok, "datadir verify passed a corrupt log: {stdout}");
    assert!(
        stderr.contains(&file_name(&seg)) && stderr.contains(&format!("offset {}", victim.offset)),
        "{stderr}"
    );
}

#[tokio::test]
async fn damaged_newest_snapshot_falls_back_to_an_older_one_and_the_log() {
    let dir = DataDir::new();
    let settings = Settings {
        snap_count: 20,
        ..Settings::default()
    };
    let mut server = ServerProc::start(&dir, &settings);
    let paths = populate_with_snapshots(&server.addr(), &dir, "/snapfall", 200, 30).await;
    server.stop();
    let snaps = dir.snapshots();
    assert!(
        snaps.len() >= 2,
        "expected several snapshots, found {snaps:?}"
    );
    let newest = snaps.last().unwrap();
    let len = fs::metadata(newest).unwrap().len();
    flip_byte(newest, len / 2);

    let server = ServerProc::start(&dir, &settings);
    assert!(
        server.log().contains(&file_name(newest)),
        "the damaged snapshot should be named in a warning:\n{}",
        server.log()
    );
    assert_present(&server.addr(), &paths).await;
}

#[tokio::test]
async fn damaged_only_snapshot_without_its_logs_refuses_to_start() {
    let dir = DataDir::new();
    let settings = Settings {
        snap_count: 20,
        ..Settings::default()
    };
    let mut server = ServerProc::start(&dir, &settings);
    populate_with_snapshots(&server.addr(), &dir, "/lonely", 120, 30).await;
    server.stop();
    // Keep only the newest snapshot and the segments after it (what a purge leaves behind
    // once older snapshots are gone), then damage that snapshot.
    let mut snaps = dir.snapshots();
    let newest = snaps.pop().unwrap();
    for s in snaps {
        fs::remove_file(s).unwrap();
    }
    let newest_zxid = i64::from_str_radix(&file_name(&newest)["snapshot.".len()..], 16).unwrap();
    for seg in dir.segments() {
        let start = i64::from_str_radix(&file_name(&seg)["log.".len()..], 16).unwrap();
        if start <= newest_zxid {
            fs::remove_file(seg).unwrap();
        }
    }
    let len = fs::metadata(&newest).unwrap().len();
    flip_byte(&newest, len / 2);

    let (status, out) = ServerProc::start_expecting_failure(&dir, &settings);
    assert!(
        !status.success(),
        "started without the data of a damaged snapshot:\n{out}"
    );
    assert!(
        out.contains(&file_name(&newest)) && out.contains("offset"),
        "the output should name the damaged snapshot and an offset:\n{out}"
    );
}

// ---------------------------------------------------------------------------------------
// Sessions across restarts

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ephemerals_of_gone_sessions_expire_and_reconnected_ones_stay() {
    let dir = DataDir::new();
    let settings = Settings::default();
    let mut server = ServerProc::start(&dir, &settings);
    let gone = Client::connect(&server.addr(), SESSION_TIMEOUT_MS)
        .await
        .unwrap();
    gone.create("/eph-gone", b"g", true).await.unwrap();
    let back = Client::connect(&server.addr(), SESSION_TIMEOUT_MS)
        .await
        .unwrap();
    back.create("/eph-back", b"b", true).await.unwrap();
    let (back_id, back_pw) = (back.session_id, back.passwd.clone());
    let gone_id = gone.session_id;
    server.kill9();
    drop((gone, back));

    let server = ServerProc::start(&dir, &settings);
    let back = Arc::new(
        Client::connect_session(&server.addr(), SESSION_TIMEOUT_MS, back_id, &back_pw)
            .await
            .expect("the surviving client resumes its session"),
    );
    back.keep_alive();
    assert!(back.get_data("/eph-back").await.unwrap().is_some());
    // The other session was recovered too, and expires once its timeout has passed.
    let deadline = Instant::now() + PATIENCE;
    while back.get_data("/eph-gone").await.unwrap().is_some() {
        assert!(Instant::now() < deadline, "/eph-gone never expired");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        Client::connect_session(&server.addr(), SESSION_TIMEOUT_MS, gone_id, &[0; 16])
            .await
            .is_err(),
        "the expired session must not be resumable"
    );
    assert!(
        back.get_data("/eph-back").await.unwrap().is_some(),
        "the ephemeral of the reconnected session must stay"
    );
}

// ---------------------------------------------------------------------------------------
// Snapshots, autopurge, inspection, forceSync

#[tokio::test]
async fn snapshots_restart_autopurge_and_datadir_tool() {
    let dir = DataDir::new();
    let mut settings = Settings {
        snap_count: 25,
        ..Settings::default()
    };
    let mut server = ServerProc::start(&dir, &settings);
    let paths = populate_with_snapshots(&server.addr(), &dir, "/snap", 400, 30).await;
    server.stop();
    let before = dir.snapshots();
    assert!(
        before.len() > 4,
        "expected many snapshots, found {}",
        before.len()
    );
    assert!(
        dir.segments().len() > 1,
        "the log should have rolled at snapshots"
    );

    // Inspection of the data dir.
    let data = dir.data();
    let data = data.to_str().unwrap();
    let (ok, out, err) = corral(&["datadir", data, "list"]);
    assert!(ok, "{err}");
    assert!(
        out.contains(&file_name(&before[0])) && out.contains("records"),
        "{out}"
    );
    let (ok, out, err) = corral(&["datadir", data, "verify"]);
    assert!(ok && out.starts_with("ok:"), "{out}{err}");
    let (ok, out, err) = corral(&["datadir", data, "dump"]);
    assert!(ok, "{err}");
    assert!(
        out.contains("/snap399") && out.contains("createSession"),
        "{out}"
    );
    let (ok, out, _) = corral(&["datadir", data, "dump", "--from", "0x100"]);
    assert!(ok);
    assert!(out.lines().next().unwrap().starts_with("0x100 "), "{out}");

    // Restart with autopurge: it runs at start-up and keeps the configured number.
    settings.extra = vec![
        "autopurge.purgeInterval=1".into(),
        "autopurge.snapRetainCount=4".into(),
    ];
    let server = ServerProc::start(&dir, &settings);
    assert_present(&server.addr(), &paths).await;
    let deadline = Instant::now() + PATIENCE;
    while dir.snapshots().len() != 4 {
        assert!(
            Instant::now() < deadline,
            "autopurge left {:?}",
            dir.snapshots()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(dir.snapshots(), before[before.len() - 4..].to_vec());
    // What is left still recovers everything.
    drop(server);
    let server = ServerProc::start(&dir, &settings);
    assert_present(&server.addr(), &paths).await;
}

#[tokio::test]
async fn force_sync_off_warns_at_start_up() {
    let dir = DataDir::new();
    let settings = Settings {
        extra: vec!["forceSync=no".into()],
        ..Settings::default()
    };
    let server = ServerProc::start(&dir, &settings);
    populate(&server.addr(), "/nosync", 5).await;
    assert!(server.log().contains("forceSync=no"), "{}", server.log());
}

// ---------------------------------------------------------------------------------------
// Write errors while serving

fn set_file_size_limit(pid: u32, limit: &str) {
    let status = std::process::Command::new("prlimit")
        .arg("--pid")
        .arg(pid.to_string())
        .arg(format!("--fsize={limit}"))
        .status()
        .expect("run prlimit (util-linux)");
    assert!(status.success(), "prlimit failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_errors_fail_writes_keep_reads_and_recover_when_space_returns() {
    let dir = DataDir::new();
    let settings = Settings {
        ignore_sigxfsz: true,
        ..Settings::default()
    };
    let mut server = ServerProc::start(&dir, &settings);
    let addr = server.addr();
    let first = Client::connect(&addr, SESSION_TIMEOUT_MS).await.unwrap();
    let (sid, pw) = (first.session_id, first.passwd.clone());
    let mut acked = Vec::new();
    for i in 0..20 {
        let p = format!("/ok{i}");
        first.create(&p, p.as_bytes(), false).await.unwrap();
        acked.push(p);
    }

    // A bystander session with nothing in flight when the disk fills.
    let reader = Client::connect(&addr, SESSION_TIMEOUT_MS).await.unwrap();

    // "Disk full": every further write to a file fails (EFBIG, like ENOSPC).
    set_file_size_limit(server.pid(), "1:unlimited");
    let err = first.create("/failed1", b"x", false).await.unwrap_err();
    println!("write under the limit failed with {err:?}");
    drop(first);

    // The bystander lost nothing, so it keeps its connection and reads on it.
    assert_eq!(
        reader.get_data("/ok3").await.unwrap().map(|(d, _)| d),
        Some(b"/ok3".to_vec()),
        "an untouched connection survives the log failure; server log:\n{}",
        server.log()
    );

    // The session survives; reads work; writes keep failing.
    for attempt in 0..2 {
        let c = Client::connect_session(&addr, SESSION_TIMEOUT_MS, sid, &pw)
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "reconnect to the session while writes fail: {e}; server log:\n{}",
                    server.log()
                )
            });
        assert_eq!(
            c.get_data("/ok7").await.unwrap().map(|(d, _)| d),
            Some(b"/ok7".to_vec()),
            "reads keep working"
        );
        assert_eq!(
            c.get_data("/failed1").await.unwrap(),
            None,
            "a failed write is not visible"
        );
        let p = format!("/failed-again{attempt}");
        assert!(
            c.create(&p, b"x", false).await.is_err(),
            "write succeeded under the limit"
        );
    }

    // Space returns: writes work again.
    set_file_size_limit(server.pid(), "unlimited");
    let c = Client::connect_session(&addr, SESSION_TIMEOUT_MS, sid, &pw)
        .await
        .expect("reconnect after space returned");
    for i in 0..10 {
        let p = format!("/later{i}");
        c.create(&p, p.as_bytes(), false).await.unwrap();
        acked.push(p);
    }
    let log = server.log();
    assert!(log.contains("txn log write failed"), "{log}");
    server.kill9();

    // Everything acknowledged survives a crash; nothing that failed appears.
    let server = ServerProc::start(&dir, &settings);
    assert_present(&server.addr(), &acked).await;
    let c = Client::connect(&server.addr(), SESSION_TIMEOUT_MS)
        .await
        .unwrap();
    for p in ["/failed1", "/failed-again0", "/failed-again1"] {
        assert_eq!(c.get_data(p).await.unwrap(), None, "{p}");
    }
}
