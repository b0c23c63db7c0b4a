//! The replicated ensemble, end to end: several real `corral server` processes on loopback
//! ports, driven through the Rust client. Covers replication of reads and writes across
//! members, watches across members, leader failover under write load (kill -9), catch-up of a
//! restarted member, a minority refusing writes, session liveness through a follower, session
//! close on a follower, and observers.

mod durability_support;
mod ensemble_support;

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use corral_client::{
    parse_ensemble_config, Client, CreateMode, Error, EventType, NodeEvent, SessionState,
    WatchEvent, WatchMode,
};
use ensemble_support::*;

/// Hang guard for one whole test.
const TEST_LIMIT: Duration = Duration::from_secs(110);
/// How long a single client call may take when the ensemble is healthy.
const CALL_LIMIT: Duration = Duration::from_secs(20);

/// Runs a test body under [`TEST_LIMIT`].
async fn bounded(body: impl Future<Output = ()>) {
    if tokio::time::timeout(TEST_LIMIT, body).await.is_err() {
        panic!("test did not finish within {TEST_LIMIT:?}");
    }
}

/// One client call that must succeed within [`CALL_LIMIT`].
async fn ok<T>(what: &str, fut: impl Future<Output = Result<T, Error>>) -> T {
    match tokio::time::timeout(CALL_LIMIT, fut).await {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => panic!("{what}: {e}"),
        Err(_) => panic!("{what}: no answer within {CALL_LIMIT:?}"),
    }
}

/// Children of `path` as seen by `client` after a `sync` (so the member has applied
/// everything the leader committed before the sync).
async fn synced_children(client: &Client, path: &str) -> BTreeSet<String> {
    retry(&format!("sync {path}"), || client.sync(path)).await;
    let (children, _) = retry(&format!("children {path}"), || client.children(path)).await;
    children.into_iter().collect()
}

/// Whether `path` exists as seen by `client` after a `sync`.
async fn synced_exists(client: &Client, path: &str) -> bool {
    retry(&format!("sync {path}"), || client.sync(path)).await;
    retry(&format!("exists {path}"), || client.exists(path))
        .await
        .is_some()
}

/// Creates a persistent node, retrying through leader changes; a retry that finds the node
/// (its first attempt was applied after all) counts as success.
async fn create_retrying(client: &Client, path: &str) {
    retry(&format!("create {path}"), || async {
        match client.create(path, b"", CreateMode::Persistent).await {
            Err(Error::Zk(corral_client::ZkError::NodeExists)) => Ok(()),
            other => other.map(|_| ()),
        }
    })
    .await
}

// ---------------------------------------------------------------------------------------
// 1. Basic replication

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_on_one_member_are_seen_on_every_member() {
    bounded(async {
        let mut ens = Ensemble::start(3, 0).await;
        let leader = ens.leader().await;
        let followers = ens.followers().await;
        assert_eq!(
            followers.len(),
            2,
            "three voters: one leader, two followers"
        );

        // srvr modes: exactly one leader, the others followers.
        let mut modes = Vec::new();
        for id in [1, 2, 3] {
            modes.push(ens.srvr(id).await.expect("srvr answers").mode);
        }
        modes.sort();
        assert_eq!(modes, ["follower", "follower", "leader"]);

        // A is a follower (writes are forwarded), B the leader, C the other follower.
        let (a, b, c) = (followers[0], leader, followers[1]);
        let ca = ens.client_of(a).await;
        let cb = ens.client_of(b).await;
        let cc = ens.client_of(c).await;

        ok(
            "create /app",
            ca.create("/app", b"v1", CreateMode::Persistent),
        )
        .await;
        for reader in [&cb, &cc] {
            ok("sync", reader.sync("/app")).await;
            let (data, stat) = ok("get /app", reader.get_data("/app")).await;
            assert_eq!(data, b"v1");
            assert_eq!(stat.version, 0);
        }

        // Sequential nodes created through different members share one counter.
        let mut seq_paths = Vec::new();
        for client in [&ca, &cb, &cc] {
            let (p, _) = ok(
                "create sequential",
                client.create("/app/job-", b"", CreateMode::PersistentSequential),
            )
            .await;
            seq_paths.push(p);
        }
        assert_eq!(
            seq_paths,
            [
                "/app/job-0000000000",
                "/app/job-0000000001",
                "/app/job-0000000002"
            ]
        );

        // An ephemeral created through a follower is visible everywhere, owned by its session.
        let (eph, _) = ok(
            "create ephemeral",
            ca.create("/app/eph-", b"", CreateMode::EphemeralSequential),
        )
        .await;
        for reader in [&cb, &cc] {
            ok("sync", reader.sync("/app")).await;
            let stat = ok("exists eph", reader.exists(&eph))
                .await
                .expect("ephemeral replicated");
            assert_eq!(stat.ephemeral_owner, ca.session_id());
        }

        // A watch set through follower C fires when a client of follower A writes.
        let (_, _, watch) = ok("get_data_w", cc.get_data_w("/app")).await;
        ok("set /app", ca.set_data("/app", b"v2", None)).await;
        let event = tokio::time::timeout(CALL_LIMIT, watch)
            .await
            .expect("watch fires")
            .expect("watch event");
        assert_eq!(event.event_type, EventType::NodeDataChanged);
        assert_eq!(event.path, "/app");
        // The member that fired the watch has applied the change it announces.
        assert_eq!(ok("get /app", cc.get_data("/app")).await.0, b"v2");

        // Once writes stop, every member reports the same last zxid, and it is the zxid of the
        // last write.
        let zxid = ens.wait_same_zxid().await;
        let (_, stat) = ok("get /app", cb.get_data("/app")).await;
        assert_eq!(
            zxid, stat.mzxid,
            "srvr zxid {zxid:#x} is not the last write's {:#x}",
            stat.mzxid
        );
        for c in [ca, cb, cc] {
            c.close().await;
        }
    })
    .await;
}

// ---------------------------------------------------------------------------------------
// 2. Leader failover under write load

/// A writer: creates `/load/w<n>-<i>` one after the other, remembering which were
/// acknowledged; stops when `stop` is set.
async fn write_load(client: Client, writer: usize, stop: Arc<AtomicBool>) -> Vec<String> {
    let mut acked = Vec::new();
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let path = format!("/load/w{writer}-{i}");
        i += 1;
        match tokio::time::timeout(
            CALL_LIMIT,
            client.create(&path, b"x", CreateMode::Persistent),
        )
        .await
        {
            Ok(Ok(_)) => acked.push(path),
            // Outcome unknown (connection lost around the leader change): not counted.
            Ok(Err(e)) if e.is_retryable() => {}
            // A retried create of a path whose first attempt did get applied.
            Ok(Err(Error::Zk(corral_client::ZkError::NodeExists))) => {}
            Ok(Err(e)) => panic!("writer {writer}: create {path}: {e}"),
            Err(_) => {}
        }
    }
    acked
}

/// Waits until the writers have `n` more acknowledged creates in total than now (by counting
/// children through `observer`).
async fn wait_progress(observer: &Client, n: usize) {
    let start = synced_children(observer, "/load").await.len();
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let now = synced_children(observer, "/load").await.len();
        if now >= start + n {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "writes made no progress: {now} nodes, wanted {}",
            start + n
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_killed_under_write_load_loses_no_acknowledged_write() {
    bounded(async {
        let mut ens = Ensemble::start(3, 0).await;
        let all = ens.connect_string();
        let setup = ens.client(&all, 10_000).await;
        ok(
            "create /load",
            setup.create("/load", b"", CreateMode::Persistent),
        )
        .await;
        ok(
            "create /watched",
            setup.create("/watched", b"0", CreateMode::Persistent),
        )
        .await;

        // An ephemeral owned by a client that survives the failover.
        let owner = ens.client(&all, 10_000).await;
        ok(
            "create ephemeral",
            owner.create("/owned", b"", CreateMode::Ephemeral),
        )
        .await;
        // A data watch set before the failover.
        let watcher = ens.client(&all, 10_000).await;
        let (_, _, watch) = ok("get_data_w", watcher.get_data_w("/watched")).await;

        let stop = Arc::new(AtomicBool::new(false));
        let mut writers = Vec::new();
        let mut sessions_before = Vec::new();
        for w in 0..4 {
            let c = ens.client(&all, 10_000).await;
            sessions_before.push((c.session_id(), c.clone()));
            writers.push(tokio::spawn(write_load(c, w, stop.clone())));
        }
        let owner_session = owner.session_id();
        let watcher_session = watcher.session_id();

        wait_progress(&setup, 40).await;
        let old_leader = ens.leader().await;
        ens.kill9(old_leader);
        let new_leader = ens.wait_stable().await;
        assert_ne!(new_leader, old_leader);
        // The writers get going again under the new leader before the load stops.
        wait_progress(&setup, 40).await;
        stop.store(true, Ordering::Relaxed);
        let mut acked = Vec::new();
        for w in writers {
            acked.extend(w.await.expect("writer task"));
        }
        assert!(!acked.is_empty());

        // Every acknowledged create is on every surviving member.
        let acked: BTreeSet<String> = acked
            .into_iter()
            .map(|p| p.trim_start_matches("/load/").to_string())
            .collect();
        for id in ens.running() {
            let c = ens.client_of(id).await;
            let children = synced_children(&c, "/load").await;
            let missing: Vec<&String> = acked.difference(&children).collect();
            assert!(
                missing.is_empty(),
                "member {id} lacks {} acknowledged creates, e.g. {:?}",
                missing.len(),
                &missing[..missing.len().min(5)]
            );
            // The surviving client's ephemeral is still there.
            assert!(
                synced_exists(&c, "/owned").await,
                "member {id}: the ephemeral of a live session is gone"
            );
            c.close().await;
        }

        // Sessions survived the leader change.
        for (before, client) in &sessions_before {
            assert_eq!(client.session_id(), *before);
            assert_ne!(client.state(), SessionState::Expired);
        }
        assert_eq!(owner.session_id(), owner_session);
        assert_eq!(watcher.session_id(), watcher_session);
        let stat = retry("exists /owned", || owner.exists("/owned"))
            .await
            .expect("ephemeral exists");
        assert_eq!(stat.ephemeral_owner, owner_session);

        // The watch set before the failover fires for a change made after it.
        retry("set /watched", || setup.set_data("/watched", b"1", None)).await;
        let event = tokio::time::timeout(CALL_LIMIT, watch)
            .await
            .expect("the pre-failover watch fires")
            .expect("watch event");
        assert_eq!(event.event_type, EventType::NodeDataChanged);
        assert_eq!(event.path, "/watched");
        drop(sessions_before);
    })
    .await;
}

// ---------------------------------------------------------------------------------------
// 3. A restarted member catches up

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_member_catches_up() {
    bounded(async {
        let mut ens = Ensemble::start(3, 0).await;
        let all = ens.connect_string();
        let c = ens.client(&all, 10_000).await;
        ok(
            "create /load",
            c.create("/load", b"", CreateMode::Persistent),
        )
        .await;
        for i in 0..20 {
            let p = format!("/load/before-{i}");
            create_retrying(&c, &p).await;
        }
        // Kill the leader: on restart it must drop anything it had appended but not committed
        // and take the new leader's log.
        let killed = ens.leader().await;
        ens.kill9(killed);
        ens.wait_stable().await;
        for i in 0..20 {
            let p = format!("/load/while-down-{i}");
            create_retrying(&c, &p).await;
        }
        retry("set /load", || c.set_data("/load", b"changed", None)).await;

        ens.restart(killed);
        ens.wait_stable().await;
        let zxid = ens.wait_same_zxid().await;
        assert!(zxid > 0);

        let mut views = Vec::new();
        for id in [1, 2, 3] {
            let m = ens.client_of(id).await;
            let children = synced_children(&m, "/load").await;
            let (data, _) = ok("get /load", m.get_data("/load")).await;
            views.push((id, children, data));
            m.close().await;
        }
        let (_, first, first_data) = &views[0];
        assert_eq!(first.len(), 40, "every create is there: {first:?}");
        for (id, children, data) in &views {
            assert_eq!(children, first, "member {id} differs from member 1");
            assert_eq!(data, first_data, "member {id}: /load data differs");
        }
        assert_eq!(first_data, b"changed");
        c.close().await;
    })
    .await;
}

/// zoo.cfg lines for the snapshot tests: the smallest snapshot interval (100 entries).
const SMALL_SNAP_COUNT: &str = "snapCount=100\n";
/// How many creates the lagging member misses. The leader keeps the last 1,000 entries a
/// snapshot covers and purges the log in batches of 1,024, so only past ~2,100 entries is the
/// lagging member's next entry gone from the leader's log and a snapshot the only way back.
const CREATES_WHILE_LAGGING: usize = 2_500;
/// Creates kept in flight at once by [`create_many`].
const CREATES_IN_FLIGHT: usize = 64;

/// Creates `/<parent>/n<i>` for every i in `range`, many requests in flight at once (each
/// create is one log entry), retrying through leader changes.
async fn create_many(client: &Client, parent: &str, range: std::ops::Range<usize>) {
    create_many_in_flight(client, parent, range, CREATES_IN_FLIGHT).await;
}

/// [`create_many`] with at most `in_flight` creates outstanding (and so at most that many
/// txns in one log entry: the leader batches what queues up).
async fn create_many_in_flight(
    client: &Client,
    parent: &str,
    range: std::ops::Range<usize>,
    in_flight: usize,
) {
    use futures::stream::{self, StreamExt};
    stream::iter(range)
        .map(|i| {
            let path = format!("{parent}/n{i}");
            async move { create_retrying(client, &path).await }
        })
        .buffer_unordered(in_flight)
        .collect::<Vec<()>>()
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lagging_member_catches_up_from_a_snapshot() {
    bounded(async {
        let mut ens = Ensemble::start_with(3, 0, SMALL_SNAP_COUNT).await;
        let all = ens.connect_string();
        let c = ens.client(&all, 10_000).await;
        create_retrying(&c, "/bulk").await;
        create_many(&c, "/bulk", 0..10).await;
        ens.wait_same_zxid().await;

        let lagging = ens.followers().await[0];
        ens.kill9(lagging);
        ens.wait_stable().await;
        // Two at a time: well over a snapshot's worth of log entries (a batch is one entry),
        // so the leader purges the entries the lagging member misses.
        create_many_in_flight(&c, "/bulk", 10..10 + CREATES_WHILE_LAGGING, 2).await;

        ens.restart(lagging);
        ens.wait_stable().await;
        let zxid = ens.wait_same_zxid().await;
        assert!(zxid > 0);

        let leader = ens.leader().await;
        let lc = ens.client_of(leader).await;
        let fc = ens.client_of(lagging).await;
        let on_leader = synced_children(&lc, "/bulk").await;
        let on_lagging = synced_children(&fc, "/bulk").await;
        assert_eq!(on_leader.len(), 10 + CREATES_WHILE_LAGGING);
        assert!(
            on_lagging == on_leader,
            "the caught-up member has {} children, the leader {}",
            on_lagging.len(),
            on_leader.len()
        );
        let log = ens.member(lagging).log_since_last_start();
        assert!(
            log.contains("installed a snapshot from the leader"),
            "member {lagging} caught up without installing the leader's snapshot:\n{}",
            ens.log_tails()
        );
        for client in [c, lc, fc] {
            client.close().await;
        }
    })
    .await;
}

/// Writes more than three snapshots' worth of entries with an ephemeral on top, kills every
/// member, restarts them (`order` says how), and checks that the data and the connected
/// client's session come back.
async fn restart_everything(order: RestartOrder) {
    const CREATES: usize = 350;
    let mut ens = Ensemble::start_with(3, 0, SMALL_SNAP_COUNT).await;
    let all = ens.connect_string();
    // Long enough a session timeout that the restart (elections included) cannot expire it.
    let c = ens.client(&all, 30_000).await;
    let session = c.session_id();
    create_retrying(&c, "/many").await;
    create_many(&c, "/many", 0..CREATES).await;
    ok(
        "create ephemeral",
        c.create("/owned", b"mine", CreateMode::Ephemeral),
    )
    .await;
    retry("set /many", || c.set_data("/many", b"last", None)).await;
    let zxid_before = ens.wait_same_zxid().await;
    let leader = ens.leader().await;
    let followers = ens.followers().await;

    for id in [1, 2, 3] {
        ens.kill9(id);
    }
    match order {
        RestartOrder::FollowersThenLeader => {
            // The former followers elect a leader of a new term; the former leader joins it.
            for id in &followers {
                ens.restart(*id);
            }
            ens.wait_stable().await;
            ens.restart(leader);
        }
        RestartOrder::LeaderFirst => {
            ens.restart(leader);
            for id in &followers {
                ens.restart(*id);
            }
        }
    }
    ens.wait_stable().await;
    let zxid_after = ens.wait_same_zxid().await;
    assert!(
        zxid_after >= zxid_before,
        "the restarted ensemble is at {zxid_after:#x}, behind {zxid_before:#x}"
    );

    // The connected client resumes its session: same id, ephemeral kept, usable.
    let stat = retry("exists /owned", || c.exists("/owned"))
        .await
        .expect("the resumed session's ephemeral survived the restart");
    assert_eq!(stat.ephemeral_owner, session);
    assert_eq!(c.session_id(), session);
    assert_eq!(c.state(), SessionState::Connected);
    create_retrying(&c, "/after-restart").await;

    for id in [1, 2, 3] {
        let m = ens.client_of(id).await;
        let children = synced_children(&m, "/many").await;
        assert_eq!(children.len(), CREATES, "member {id} lost creates");
        let (data, _) = ok("get /many", m.get_data("/many")).await;
        assert_eq!(data, b"last", "member {id}");
        assert!(
            synced_exists(&m, "/owned").await,
            "member {id} lacks /owned"
        );
        assert!(
            synced_exists(&m, "/after-restart").await,
            "member {id} lacks /after-restart"
        );
        m.close().await;
    }
    c.close().await;
}

#[derive(Debug, Clone, Copy)]
enum RestartOrder {
    /// The two former followers first (they elect a leader), then the former leader.
    FollowersThenLeader,
    /// The former leader first, the followers right after it.
    LeaderFirst,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_member_restarts_from_its_snapshot_and_log() {
    bounded(restart_everything(RestartOrder::FollowersThenLeader)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_member_restarts_with_the_former_leader_first() {
    bounded(restart_everything(RestartOrder::LeaderFirst)).await;
}

// ---------------------------------------------------------------------------------------
// 4. A minority cannot write

/// Kills both followers of a fresh three-member ensemble after writing `/before`, and checks
/// that the lone remaining member acknowledges no write, on a new session or an existing one.
/// Returns the killed followers.
async fn leave_leader_alone(ens: &mut Ensemble) -> Vec<u64> {
    let leader = ens.leader().await;
    let followers = ens.followers().await;
    let c = ens.client_of(leader).await;
    ok(
        "create /before",
        c.create("/before", b"kept", CreateMode::Persistent),
    )
    .await;
    // Make sure both followers hold /before, so either can bring it back.
    ens.wait_same_zxid().await;

    // The leader may still believe it leads, but nothing it prepares can commit, so no write
    // may be acknowledged.
    ens.kill9(followers[0]);
    ens.kill9(followers[1]);
    let lonely_addr = ens.connect_string_of(leader);
    let attempt = async {
        // Connecting may itself fail: a member that knows it has no leader refuses clients.
        let c = Client::builder(&lonely_addr)
            .session_timeout(Duration::from_millis(4_000))
            .connect()
            .await?;
        c.create("/during", b"", CreateMode::Persistent).await
    };
    match tokio::time::timeout(Duration::from_secs(8), attempt).await {
        Err(_) => {}                         // no answer: not acknowledged
        Ok(Err(e)) if e.is_retryable() => {} // connection loss / no connection
        Ok(Err(Error::SessionExpired)) => {} // also not an acknowledgement
        Ok(Ok(_)) => panic!("a lone member acknowledged a write"),
        Ok(Err(e)) => panic!("unexpected error from a lone member: {e}"),
    }
    // The first client's connection either went away or cannot write either.
    let again = tokio::time::timeout(
        Duration::from_secs(5),
        c.create("/during-2", b"", CreateMode::Persistent),
    )
    .await;
    assert!(
        !matches!(again, Ok(Ok(_))),
        "a lone member acknowledged a write on an existing session"
    );
    followers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lone_member_does_not_acknowledge_writes() {
    bounded(async {
        let mut ens = Ensemble::start(3, 0).await;
        leave_leader_alone(&mut ens).await;
    })
    .await;
}

/// A leader that no quorum answers any more stops serving clients (its connections close and
/// new ones are refused), as a ZooKeeper leader that loses its quorum does: the others may be
/// electing a new leader, and its clients should go and find it rather than read here. Once a
/// member answers again, it serves again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_no_quorum_answers_stops_serving_until_one_does() {
    bounded(async {
        let mut ens = Ensemble::start(3, 0).await;
        // A session with a short timeout: the time without quorum must not count against
        // it (its client cannot reach anyone who could keep it alive).
        let keeper = ens.client(&ens.connect_string(), 4_000).await;
        let followers = leave_leader_alone(&mut ens).await;
        let leader = ens.running()[0];
        let lonely = ens.connect_string_of(leader);
        // It may serve for up to a leader lease after its last quorum answer; then never.
        let refused = async {
            loop {
                let attempt = Client::builder(&lonely)
                    .session_timeout(Duration::from_millis(4_000))
                    .connect_timeout(Duration::from_secs(2))
                    .connect()
                    .await;
                match attempt {
                    Err(_) => return,
                    Ok(c) => c.close().await,
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        };
        if tokio::time::timeout(Duration::from_secs(30), refused)
            .await
            .is_err()
        {
            panic!(
                "the leader still accepts clients without a quorum:\n{}",
                ens.log_tails()
            );
        }
        assert!(
            ens.member(leader)
                .log()
                .contains("no quorum of voters answers; not serving clients"),
            "the leader did not say why it stopped serving"
        );
        ens.restart(followers[0]);
        ens.wait_stable().await;
        let c = ens.client(&ens.connect_string(), 10_000).await;
        let (data, _) = ok("get /before", c.get_data("/before")).await;
        assert_eq!(data, b"kept");
        c.close().await;
        // Longer than its timeout without quorum, and still alive.
        ok("the keeper's session survived", keeper.exists("/before")).await;
        keeper.close().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minority_regains_quorum_after_a_member_restarts() {
    bounded(async {
        let mut ens = Ensemble::start(3, 0).await;
        let followers = leave_leader_alone(&mut ens).await;

        // One member back: the pair has a majority again.
        ens.restart(followers[0]);
        ens.wait_stable().await;
        let pair = ens.client(&ens.connect_string(), 10_000).await;
        create_retrying(&pair, "/after").await;
        for id in ens.running() {
            let m = ens.client_of(id).await;
            ok("sync", m.sync("/")).await;
            let (data, _) = ok("get /before", m.get_data("/before")).await;
            assert_eq!(data, b"kept", "member {id} lost earlier data");
            assert!(
                synced_exists(&m, "/after").await,
                "member {id} lacks /after"
            );
            m.close().await;
        }
    })
    .await;
}

// ---------------------------------------------------------------------------------------
// 5. A follower keeps its clients' sessions alive

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pings_through_a_follower_keep_the_session_alive() {
    bounded(async {
        let mut ens = Ensemble::start(3, 0).await;
        let leader = ens.leader().await;
        let follower = ens.followers().await[0];
        let timeout_ms = 4000;
        let idle = ens
            .client(&ens.connect_string_of(follower), timeout_ms)
            .await;
        let session = idle.session_id();
        ok(
            "create ephemeral",
            idle.create("/alive", b"", CreateMode::Ephemeral),
        )
        .await;
        let mut states = idle.state_watcher();

        // Idle (the client only pings) for three session timeouts; the session must not
        // expire. The wait ends early if it does.
        let expired = tokio::time::timeout(
            Duration::from_millis(3 * timeout_ms),
            states.wait_for(|s| *s == SessionState::Expired),
        )
        .await;
        assert!(expired.is_err(), "the session expired while pinging");

        let leader_client = ens.client_of(leader).await;
        let stat = ok("exists /alive", leader_client.exists("/alive"))
            .await
            .expect("the leader still has the idle session's ephemeral");
        assert_eq!(stat.ephemeral_owner, session);
        assert_eq!(idle.session_id(), session);
        ok("read through the follower", idle.get_data("/alive")).await;
        idle.close().await;
        leader_client.close().await;
    })
    .await;
}

// ---------------------------------------------------------------------------------------
// 6. Closing a session on a follower removes its ephemerals everywhere

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_close_on_a_follower_removes_its_ephemerals_everywhere() {
    bounded(async {
        let mut ens = Ensemble::start(3, 0).await;
        let follower = ens.followers().await[0];
        let owner = ens.client_of(follower).await;
        ok("create /e", owner.create("/e", b"", CreateMode::Persistent)).await;
        for name in ["a", "b", "c"] {
            let p = format!("/e/{name}");
            ok(
                "create ephemeral",
                owner.create(&p, b"", CreateMode::Ephemeral),
            )
            .await;
        }
        let mut readers = Vec::new();
        for id in [1, 2, 3] {
            let r = ens.client_of(id).await;
            assert_eq!(synced_children(&r, "/e").await.len(), 3, "member {id}");
            readers.push((id, r));
        }
        owner.close().await;
        for (id, r) in &readers {
            let left = synced_children(r, "/e").await;
            assert!(
                left.is_empty(),
                "member {id} still has ephemerals of a closed session: {left:?}"
            );
        }
        for (_, r) in readers {
            r.close().await;
        }
    })
    .await;
}

// ---------------------------------------------------------------------------------------
// 7. Observers

/// `mntr` of one member as key → value (without the `zk_` prefix).
async fn mntr(ens: &Ensemble, id: u64) -> std::collections::HashMap<String, String> {
    let text = four_letter_word(ens.member(id).client_port, "mntr")
        .await
        .expect("mntr answers");
    text.lines()
        .filter_map(|l| l.strip_prefix("zk_")?.split_once('\t'))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The AdminServer address a member logged (its port is picked by the system).
fn admin_port(ens: &Ensemble, id: u64) -> u16 {
    let log = ens.member(id).log();
    log.lines()
        .filter(|l| l.contains("serving operations endpoints") && l.contains("Admin"))
        .find_map(|l| {
            let addr = l.split("addr=").nth(1)?.split_whitespace().next()?;
            addr.rsplit(':').next()?.parse().ok()
        })
        .unwrap_or_else(|| panic!("member {id} logged no AdminServer address:\n{log}"))
}

/// `GET path` on a member's AdminServer, as JSON.
async fn admin_json(port: u16, path: &str) -> serde_json::Value {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect to the AdminServer");
    let req = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.unwrap();
    let raw = String::from_utf8(raw).unwrap();
    let (_, body) = raw.split_once("\r\n\r\n").expect("a complete response");
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn observer_serves_reads_and_forwards_writes() {
    bounded(async {
        // AdminServers on system-picked ports, for the console's members view below.
        let mut ens = Ensemble::start_with(3, 1, "admin.serverPort=0\n").await;
        let observer = 4;
        assert_eq!(ens.srvr(observer).await.expect("srvr").mode, "observer");
        let leader = ens.leader().await;

        // Every member timed the election that gave it its first leader; only the leader
        // reports how long it has led.
        for id in [1, 2, 3, 4] {
            let m = mntr(&ens, id).await;
            let elections: u64 = m["cnt_election_time"].parse().unwrap();
            assert!(elections >= 1, "member {id}: {m:?}");
            assert_eq!(m.contains_key("leader_uptime"), id == leader, "member {id}");
        }

        // The console's members view: roles from the membership, the observer as such, lag
        // as the leader tracks it.
        // The leader adds the observer to replication once it is ready, so its lag may show
        // a moment after the ensemble settled.
        let admin = admin_port(&ens, leader);
        let deadline = std::time::Instant::now() + PATIENCE;
        let view = loop {
            let view = admin_json(admin, "/console/api/members").await;
            let all_lags = view["members"]
                .as_array()
                .is_some_and(|ms| ms.iter().all(|m| m["lag_entries"].is_u64()));
            if all_lags || std::time::Instant::now() > deadline {
                break view;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let members = view["members"].as_array().expect("members listed");
        let role_of = |id: u64| {
            members
                .iter()
                .find(|m| m["id"] == id)
                .unwrap_or_else(|| panic!("member {id} missing: {view}"))["role"]
                .clone()
        };
        assert_eq!(members.len(), 4, "{view}");
        assert_eq!(role_of(leader), "leader");
        assert_eq!(role_of(observer), "observer", "{view}");
        for m in members {
            assert!(
                m["lag_entries"].is_u64(),
                "the leader knows every lag: {view}"
            );
            // Every member's zxid, the others' read from their `srvr`.
            assert!(
                m["zxid"].as_str().is_some_and(|z| z.starts_with("0x")),
                "every member's zxid: {view}"
            );
        }
        let view = admin_json(admin_port(&ens, observer), "/console/api/members").await;
        let me = view["members"]
            .as_array()
            .and_then(|ms| ms.iter().find(|m| m["self"] == true))
            .cloned()
            .unwrap_or_else(|| panic!("no self entry: {view}"));
        assert_eq!(
            (me["id"].as_u64(), me["role"].as_str()),
            (Some(4), Some("observer"))
        );
        assert!(
            me["zxid"].as_str().is_some_and(|z| z.starts_with("0x")),
            "{me}"
        );

        let via_observer = ens.client_of(observer).await;
        let via_leader = ens.client_of(leader).await;

        // A write through the observer is forwarded, committed and readable everywhere.
        ok(
            "create via observer",
            via_observer.create("/obs", b"from-observer", CreateMode::Persistent),
        )
        .await;
        ok("sync", via_leader.sync("/obs")).await;
        assert_eq!(
            ok("get", via_leader.get_data("/obs")).await.0,
            b"from-observer"
        );
        // A write through the leader is readable through the observer.
        ok(
            "create via leader",
            via_leader.create("/ldr", b"from-leader", CreateMode::Persistent),
        )
        .await;
        ok("sync", via_observer.sync("/ldr")).await;
        assert_eq!(
            ok("get", via_observer.get_data("/ldr")).await.0,
            b"from-leader"
        );
        // The observer is not a voter: the leader stays the leader.
        let modes: Vec<String> = {
            let mut v = Vec::new();
            for id in [1, 2, 3, 4] {
                v.push(ens.srvr(id).await.expect("srvr").mode);
            }
            v
        };
        assert_eq!(modes.iter().filter(|m| *m == "leader").count(), 1);
        assert_eq!(modes.iter().filter(|m| *m == "observer").count(), 1);

        // Without the observer, writes go on.
        ens.kill9(observer);
        for i in 0..5 {
            let p = format!("/without-observer-{i}");
            ok("create", via_leader.create(&p, b"", CreateMode::Persistent)).await;
        }
        assert_eq!(ens.wait_stable().await, leader);
        via_leader.close().await;
    })
    .await;
}

// ---------------------------------------------------------------------------------------
// 8. The Rust client across a leader change

/// A change the writer made and the ensemble acknowledged: (zxid, event type, path).
type Acked = (i64, EventType, String);

/// Creates `/rw/n<i>` and then sets its data, one change after the other, until `stop` is
/// set; returns the acknowledged changes. A change whose outcome is unknown (connection lost
/// around the leader change) is left out: the watch may or may not report it.
async fn change_load(client: Client, stop: Arc<AtomicBool>) -> Vec<Acked> {
    let mut acked = Vec::new();
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let path = format!("/rw/n{i}");
        i += 1;
        let created = tokio::time::timeout(
            CALL_LIMIT,
            client.create(&path, b"", CreateMode::Persistent),
        )
        .await;
        match created {
            Ok(Ok((_, stat))) => acked.push((stat.czxid, EventType::NodeCreated, path.clone())),
            Ok(Err(e)) if e.is_retryable() => continue,
            Ok(Err(e)) => panic!("create {path}: {e}"),
            Err(_) => continue,
        }
        let set = tokio::time::timeout(CALL_LIMIT, client.set_data(&path, b"x", None)).await;
        match set {
            Ok(Ok(stat)) => acked.push((stat.mzxid, EventType::NodeDataChanged, path)),
            Ok(Err(e)) if e.is_retryable() => {}
            Ok(Err(e)) => panic!("set {path}: {e}"),
            Err(_) => {}
        }
    }
    acked
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recursive_watch_across_a_leader_kill_gets_every_change_once_in_order() {
    bounded(async {
        let mut ens = Ensemble::start(3, 0).await;
        let all = ens.connect_string();
        let watcher = ens.client(&all, 15_000).await;
        let writer = ens.client(&all, 15_000).await;
        ok(
            "create /rw",
            writer.create("/rw", b"", CreateMode::Persistent),
        )
        .await;
        ok("sync", watcher.sync("/rw")).await;
        let mut stream = ok("watch /rw", watcher.watch("/rw", WatchMode::Recursive)).await;
        let session = watcher.session_id();

        let stop = Arc::new(AtomicBool::new(false));
        let load = tokio::spawn(change_load(writer.clone(), stop.clone()));
        wait_progress_under(&writer, "/rw", 20).await;
        let old_leader = ens.leader().await;
        ens.kill9(old_leader);
        assert_ne!(ens.wait_stable().await, old_leader);
        wait_progress_under(&writer, "/rw", 20).await;
        stop.store(true, Ordering::Relaxed);
        let acked = load.await.expect("writer task");
        // A last change marks the end of the stream to read.
        let (_, end) = retry("create /rw/end", || {
            writer.create("/rw/end", b"", CreateMode::Persistent)
        })
        .await;

        let mut events: Vec<NodeEvent> = Vec::new();
        let mut states: Vec<SessionState> = Vec::new();
        loop {
            let item = tokio::time::timeout(CALL_LIMIT, stream.next())
                .await
                .expect("the watch stream goes on")
                .expect("the watch stream is open");
            match item {
                WatchEvent::Session(s) => states.push(s),
                // Every member keeps the replay window from its start, so the member the
                // watcher moves to can replay what it missed.
                WatchEvent::MayHaveMissed => panic!("the replay after the failover was incomplete"),
                WatchEvent::Node(e) => {
                    let last = e.zxid == Some(end.czxid);
                    events.push(e);
                    if last {
                        break;
                    }
                }
            }
        }

        // Every event carries a zxid, and they rise strictly: one event per change, in order.
        let zxids: Vec<i64> = events
            .iter()
            .map(|e| e.zxid.expect("Corral reports zxids"))
            .collect();
        for pair in zxids.windows(2) {
            assert!(
                pair[0] < pair[1],
                "events out of order or repeated: {:#x} then {:#x}",
                pair[0],
                pair[1]
            );
        }
        // Every acknowledged change is there, with its type and path.
        let seen: BTreeSet<(i64, EventType, String)> = events
            .iter()
            .map(|e| (e.zxid.unwrap(), e.event_type, e.path.clone()))
            .collect();
        let missing: Vec<&Acked> = acked.iter().filter(|a| !seen.contains(a)).collect();
        if let Some((first_zxid, _, _)) = missing.first() {
            // What was delivered around the first gap tells a server that never sent the event
            // from a client that dropped it.
            let at = zxids.partition_point(|z| z < first_zxid);
            let around: Vec<String> = zxids[at.saturating_sub(3)..(at + 3).min(zxids.len())]
                .iter()
                .map(|z| format!("{z:#x}"))
                .collect();
            panic!(
                "{} of {} acknowledged changes were not delivered, e.g. {:?}; delivered near \
                 the first gap: {around:?}; session items: {states:?}",
                missing.len(),
                acked.len(),
                &missing[..missing.len().min(5)]
            );
        }
        // The leader change shows up as session items, apart from node events.
        let lost = states
            .iter()
            .position(|s| *s == SessionState::Disconnected)
            .unwrap_or_else(|| panic!("no Disconnected item in the stream: {states:?}"));
        assert!(
            states[lost..].contains(&SessionState::Connected),
            "no Connected item after the disconnect: {states:?}"
        );
        assert_eq!(watcher.session_id(), session);
        for c in [watcher, writer] {
            c.close().await;
        }
    })
    .await;
}

/// Waits until `parent` has `n` more children than now, as `client` sees it.
async fn wait_progress_under(client: &Client, parent: &str, n: usize) {
    let start = synced_children(client, parent).await.len();
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        if synced_children(client, parent).await.len() >= start + n {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no progress under {parent}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The client addresses every member should list: each member's `127.0.0.1:port`.
fn member_addrs(ens: &Ensemble) -> BTreeSet<String> {
    ens.members.iter().map(|m| m.addr()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_text_parses_into_every_members_client_address() {
    bounded(async {
        let ens = Ensemble::start(3, 1).await;
        // `conf` prints the same text ZooKeeper keeps in /zookeeper/config after a
        // `membership:` line.
        let conf = four_letter_word(ens.member(1).client_port, "conf")
            .await
            .expect("conf answers");
        let (_, membership) = conf
            .split_once("membership: \n")
            .unwrap_or_else(|| panic!("no membership in conf: {conf}"));
        let hosts = parse_ensemble_config(membership).expect("membership parses");
        let listed: BTreeSet<String> = hosts.hosts.iter().cloned().collect();
        assert_eq!(listed, member_addrs(&ens), "from {membership}");
        assert!(hosts.version.is_some(), "no version in {membership}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ensemble_hosts_reads_zookeeper_config() {
    bounded(async {
        let ens = Ensemble::start(3, 0).await;
        let c = ens.client(&ens.connect_string(), 10_000).await;
        let hosts = ok("ensemble_hosts", c.ensemble_hosts()).await;
        let listed: BTreeSet<String> = hosts.hosts.iter().cloned().collect();
        assert_eq!(listed, member_addrs(&ens), "from {hosts:?}");
        assert!(hosts.version.is_some(), "no version in {hosts:?}");
        c.close().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_follows_a_new_host_list() {
    bounded(async {
        let mut ens = Ensemble::start(3, 0).await;

        // A client of one member only is pointed at another; when the first member dies the
        // client carries on there with the same session.
        let (a, b) = (1, 2);
        let moved = ens.client_of(a).await;
        let session = moved.session_id();
        ok(
            "create ephemeral",
            moved.create("/moved", b"", CreateMode::Ephemeral),
        )
        .await;
        moved
            .set_hosts(&ens.connect_string_of(b))
            .expect("set_hosts");
        assert!(
            moved.set_hosts("").is_err(),
            "an empty host list is refused"
        );
        assert!(
            moved.set_hosts("127.0.0.1:1/chroot").is_err(),
            "a chroot is refused"
        );
        ens.kill9(a);
        ens.wait_stable().await;
        let stat = retry("exists /moved", || moved.exists("/moved"))
            .await
            .expect("the ephemeral is kept");
        assert_eq!(stat.ephemeral_owner, session);
        assert_eq!(moved.session_id(), session);
        create_retrying(&moved, "/after-move").await;

        // With every member listed again, the client survives losing member b too.
        moved.set_hosts(&ens.connect_string()).expect("set_hosts");
        ens.restart(a);
        ens.wait_stable().await;
        ens.kill9(b);
        ens.wait_stable().await;
        create_retrying(&moved, "/after-second-move").await;
        assert_eq!(moved.session_id(), session);
        moved.close().await;
    })
    .await;
}

// ---------------------------------------------------------------------------------------
// 8. Reconfig

/// `super:secret`, as ZooKeeper's superDigest wants it.
const SUPER_DIGEST: &str = "super:lK75jTNcA+U9vtVEw5vB51mj/w4=";

fn participant_spec(ens: &Ensemble, id: u64) -> String {
    let m = ens.member(id);
    format!(
        "server.{id}=127.0.0.1:{}:{}:participant;127.0.0.1:{}",
        m.peer_port, m.election_port, m.client_port
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconfig_grows_one_member_to_three_that_survive_the_first_ones_loss() {
    bounded(async {
        // Member 1 is the whole ensemble; 2 and 3 start as its observers.
        let extra = format!(
            "reconfigEnabled=true\nzookeeper.DigestAuthenticationProvider.superDigest={SUPER_DIGEST}\n"
        );
        let mut ens = Ensemble::start_with(1, 2, &extra).await;
        assert_eq!(ens.leader().await, 1);
        let admin = ens.client_of(1).await;
        ok(
            "create",
            admin.create("/before", b"x", CreateMode::Persistent),
        )
        .await;

        // Without the super identity the membership cannot change.
        let joining = format!("{},{}", participant_spec(&ens, 2), participant_spec(&ens, 3));
        let refused = admin.reconfig(&joining, "", "", -1).await;
        assert!(matches!(refused, Err(Error::Zk(corral_proto::ZkError::NoAuth))), "{refused:?}");

        ok("addauth", admin.add_auth("digest", b"super:secret")).await;
        let (config, _) = ok("reconfig", admin.reconfig(&joining, "", "", -1)).await;
        let config = String::from_utf8(config).unwrap();
        for id in 1..=3 {
            assert!(
                config.contains(&format!("server.{id}=")) && config.matches(":participant").count() == 3,
                "{config}"
            );
        }
        assert!(config.contains("version="), "{config}");
        ens.set_role(2, Role::Participant);
        ens.set_role(3, Role::Participant);
        ens.wait_stable().await;

        // Every member shows the new membership.
        let via_2 = ens.client_of(2).await;
        ok("sync", via_2.sync("/zookeeper/config")).await;
        let (seen, _) = ok("get config", via_2.get_data("/zookeeper/config")).await;
        assert_eq!(String::from_utf8(seen).unwrap(), config);

        // The first member is no longer needed: the two new voters are a majority.
        ens.kill9(1);
        let leader = ens.wait_stable().await;
        assert_ne!(leader, 1);
        let client = ens.client(&ens.connect_string(), 10_000).await;
        retry("create after", || client.create("/after", b"y", CreateMode::Persistent)).await;
        assert!(synced_exists(&client, "/before").await);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconfig_is_refused_unless_enabled() {
    bounded(async {
        let mut ens = Ensemble::start(3, 0).await;
        ens.wait_stable().await;
        let client = ens.client(&ens.connect_string(), 10_000).await;
        let spec = participant_spec(&ens, 2);
        let refused = client.reconfig(&spec, "", "", -1).await;
        assert!(
            matches!(
                refused,
                Err(Error::Zk(corral_proto::ZkError::ReconfigDisabled))
            ),
            "{refused:?}"
        );
    })
    .await;
}

// ---------------------------------------------------------------------------------------
// Sessions that move between members

/// A client that resumes its session on another member leaves its old connection behind (a
/// partition, a slow failure detector): nothing sent on that connection may be applied after
/// the move (ZooKeeper's SessionMoved), and the old member closes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_moved_session_s_old_connection_is_closed_and_its_writes_refused() {
    use corral_proto::records::CreateRequest;
    use corral_proto::Request;
    use durability_support::{CallError, Client as RawClient};
    bounded(async {
        let mut ens = Ensemble::start(3, 0).await;
        let followers = ens.followers().await;
        let (old_member, new_member) = (followers[0], ens.leader().await);
        let raw = RawClient::connect(&ens.connect_string_of(old_member), 10_000)
            .await
            .expect("raw session on a follower");
        let create = |path: &str| Request::Create {
            op: corral_proto::OpCode::Create,
            req: CreateRequest {
                path: path.into(),
                data: Some(Vec::new().into()),
                acl: durability_support::open_acl(),
                flags: 0,
            },
        };
        raw.call(create("/moved"))
            .await
            .unwrap_or_else(|e| panic!("create /moved on the old member: {e:?}"));

        let resumed = Client::builder(&ens.connect_string_of(new_member))
            .session(raw.session_id, raw.passwd.clone())
            .connect_timeout(CALL_LIMIT)
            .connect()
            .await
            .unwrap_or_else(|e| panic!("resume the session on the leader: {e}"));
        assert_eq!(resumed.session_id(), raw.session_id);

        // Sent on the connection the client left, after the move.
        let stale = raw.call(create("/moved/stale")).await;
        assert!(
            matches!(stale, Err(CallError::ConnectionLoss)),
            "a write on the left connection is neither applied nor answered: {stale:?}"
        );
        assert!(
            matches!(
                raw.call(create("/moved/later")).await,
                Err(CallError::ConnectionLoss)
            ),
            "the old member closed the connection"
        );
        ok(
            "create on the new member",
            resumed.create("/moved/fresh", b"", CreateMode::Persistent),
        )
        .await;
        let children = synced_children(&resumed, "/moved").await;
        assert_eq!(children, BTreeSet::from(["fresh".to_string()]));
        ens.stop_all();
    })
    .await;
}

// ---------------------------------------------------------------------------------------
// Linearizable reads (corral.linearizableReads)

/// Settings of the linearizable-read test; the flag is what the test is about.
const LINEARIZABLE_READS_CONFIG: &str = "tickTime=40000\ncorral.linearizableReads=true\n";

/// With `corral.linearizableReads=true` a read reflects every write committed before it, on
/// any member and without `sync`; a member cut off from its leader answers no read at all
/// (it cannot pass the read barrier), where by default it would answer from its possibly stale
/// replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linearizable_reads_are_not_answered_by_a_member_cut_off_from_its_leader() {
    bounded(async {
        // A long tickTime makes the election timeout (a twentieth of it) seconds long, so the
        // read below reaches the follower while it still believes in its frozen leader.
        let mut ens = Ensemble::start_with(3, 0, LINEARIZABLE_READS_CONFIG).await;
        let leader = ens.leader().await;
        let followers = ens.followers().await;
        let (reader_member, other) = (followers[0], followers[1]);
        let writer = ens.client_of(leader).await;
        let reader = ens.client_of(reader_member).await;
        for i in 0..20 {
            let value = format!("v{i}");
            if i == 0 {
                ok(
                    "create",
                    writer.create("/lin", value.as_bytes(), CreateMode::Persistent),
                )
                .await;
            } else {
                ok("set", writer.set_data("/lin", value.as_bytes(), None)).await;
            }
            // No sync: the read itself waits for everything committed before it.
            let (data, _) = ok("read on a follower", reader.get_data("/lin")).await;
            assert_eq!(data, value.as_bytes(), "read {i} missed a committed write");
        }

        ens.freeze(leader, true);
        ens.freeze(other, true);
        let cut_off = tokio::time::timeout(CALL_LIMIT, reader.get_data("/lin")).await;
        assert!(
            matches!(cut_off, Ok(Err(_))),
            "a member without its leader must not answer a linearizable read: {cut_off:?}"
        );
        ens.freeze(leader, false);
        ens.freeze(other, false);
        ens.wait_stable().await;
        let (data, _) = retry("read after the thaw", || reader.get_data("/lin")).await;
        assert_eq!(data, b"v19");
        ens.stop_all();
    })
    .await;
}

// ---------------------------------------------------------------------------------------
// Five members; a slow follower

/// Starts `n` writers on `/load` through `connect_string`; returns their tasks and stop flag.
async fn start_writers(
    ens: &Ensemble,
    connect_string: &str,
    n: usize,
) -> (Vec<tokio::task::JoinHandle<Vec<String>>>, Arc<AtomicBool>) {
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..n {
        let c = ens.client(connect_string, 10_000).await;
        writers.push(tokio::spawn(write_load(c, w, stop.clone())));
    }
    (writers, stop)
}

/// Stops the writers; returns the names (under `/load`) of every acknowledged create.
async fn stop_writers(
    writers: Vec<tokio::task::JoinHandle<Vec<String>>>,
    stop: Arc<AtomicBool>,
) -> BTreeSet<String> {
    stop.store(true, Ordering::Relaxed);
    let mut acked = BTreeSet::new();
    for w in writers {
        for p in w.await.expect("writer task") {
            acked.insert(p.trim_start_matches("/load/").to_string());
        }
    }
    assert!(!acked.is_empty(), "no write was acknowledged");
    acked
}

/// Every member in `members` holds every acknowledged create.
async fn assert_all_present(ens: &Ensemble, members: &[u64], acked: &BTreeSet<String>) {
    for &id in members {
        let c = ens.client_of(id).await;
        let children = synced_children(&c, "/load").await;
        let missing: Vec<&String> = acked.difference(&children).collect();
        assert!(
            missing.is_empty(),
            "member {id} lacks {} acknowledged creates, e.g. {:?}",
            missing.len(),
            &missing[..missing.len().min(5)]
        );
        c.close().await;
    }
}

/// Five members lose two, the leader among them, under write load: the three left keep a
/// quorum, elect a leader and go on; nothing acknowledged is lost, and the two catch up when
/// they return.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_members_survive_losing_two_under_load() {
    bounded(async {
        let mut ens = Ensemble::start(5, 0).await;
        let all = ens.connect_string();
        let setup = ens.client(&all, 10_000).await;
        ok(
            "create /load",
            setup.create("/load", b"", CreateMode::Persistent),
        )
        .await;
        let (writers, stop) = start_writers(&ens, &all, 3).await;
        wait_progress(&setup, 30).await;

        let leader = ens.leader().await;
        let follower = ens.followers().await[0];
        ens.kill9(leader);
        ens.kill9(follower);
        assert_ne!(ens.wait_stable().await, leader);
        wait_progress(&setup, 30).await;
        let acked = stop_writers(writers, stop).await;
        assert_all_present(&ens, &ens.running(), &acked).await;

        ens.restart(leader);
        ens.restart(follower);
        ens.wait_stable().await;
        ens.wait_same_zxid().await;
        assert_all_present(&ens, &[leader, follower], &acked).await;
        ens.stop_all();
    })
    .await;
}

/// A follower that stops answering (frozen, as a long pause or a stalled disk looks) does not
/// hold the leader back: writes keep being acknowledged by the quorum of the other two, and
/// the follower catches up once it runs again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_follower_does_not_hold_writes_back() {
    bounded(async {
        let mut ens = Ensemble::start(3, 0).await;
        let leader = ens.leader().await;
        let slow = ens.followers().await[0];
        let on_leader = ens.connect_string_of(leader);
        let setup = ens.client(&on_leader, 10_000).await;
        ok(
            "create /load",
            setup.create("/load", b"", CreateMode::Persistent),
        )
        .await;
        let (writers, stop) = start_writers(&ens, &on_leader, 3).await;
        wait_progress(&setup, 20).await;

        ens.freeze(slow, true);
        // Acknowledged only if the leader does not wait for the frozen member.
        wait_progress(&setup, 60).await;
        let acked = stop_writers(writers, stop).await;
        // (Not `ens.leader()`: it waits for every running member, the frozen one included.)
        let mode = ens.srvr(leader).await.map(|s| s.mode);
        assert_eq!(mode.as_deref(), Some("leader"), "the leader kept its role");
        ens.freeze(slow, false);
        ens.wait_same_zxid().await;
        assert_all_present(&ens, &[slow], &acked).await;
        ens.stop_all();
    })
    .await;
}

/// A leader whose process dies is replaced without waiting for the election timers: the
/// survivors see its peer connection close and its peer port refuse connections, and
/// campaign at once. With tickTime=20000 the timers alone would wait 2 s of lease plus a
/// 1–2 s election timeout; the log lines say which path elected the new leader.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survivors_campaign_as_soon_as_the_leader_s_port_refuses_connections() {
    bounded(async {
        let mut ens = Ensemble::start_with(3, 0, "tickTime=20000\n").await;
        let old = ens.leader().await;
        let on_all = ens.connect_string();
        let client = ens.client(&on_all, 60_000).await;
        ok(
            "create /before",
            client.create("/before", b"", CreateMode::Persistent),
        )
        .await;
        ens.kill9(old);
        let new = ens.leader().await;
        assert_ne!(new, old, "a survivor leads");
        let noticed: Vec<u64> = ens
            .running()
            .into_iter()
            .filter(|id| {
                ens.member(*id)
                    .log()
                    .contains("the leader's peer port refuses connections: campaigning now")
            })
            .collect();
        assert!(
            !noticed.is_empty(),
            "no survivor noticed the dead leader's port; logs:\n{}",
            ens.log_tails()
        );
        ok(
            "create /after",
            client.create("/after", b"", CreateMode::Persistent),
        )
        .await;
        ens.stop_all();
    })
    .await;
}
