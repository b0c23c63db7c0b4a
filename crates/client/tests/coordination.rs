//! The newer recipes (service discovery, barriers, config watcher, tree cache) and leader
//! election at scale, under contention, against both servers.

mod support;

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use corral_client::recipes::{
    Barrier, ConfigWatcher, DoubleBarrier, LeaderElection, LeadershipEvent, NodeData,
    ServiceInstance, ServiceRegistry, TreeCache, TreeCacheMode, TreeEvent,
};
use corral_client::{Client, CreateMode, Error, SessionState, Stat, ZkError};
use rand::Rng;
use support::{wait_state, within, Proxy, Server, Target};

async fn discovery_follows_registrations(target: Target) {
    let server = Server::start(target).await;
    let observer = server.client().await;
    let mut discovery = ServiceRegistry::new(&observer, "/services")
        .discover("api")
        .await
        .unwrap();
    assert!(discovery.instances().is_empty());
    assert_eq!(discovery.pick_random(), None);

    // Six instances register at once, each from its own session.
    let mut joins = Vec::new();
    for i in 0..6 {
        let c = server.client().await;
        joins.push(tokio::spawn(async move {
            let instance =
                ServiceInstance::new(&format!("10.0.0.{i}:80")).with_metadata("n", &i.to_string());
            let reg = ServiceRegistry::new(&c, "/services")
                .register("api", &instance)
                .await
                .unwrap();
            (c, reg)
        }));
    }
    let mut members = Vec::new();
    for j in joins {
        members.push(within("a registration", j).await.unwrap());
    }
    let all: HashSet<String> = (0..6).map(|i| format!("10.0.0.{i}:80")).collect();
    let list = within("six instances", discovery.wait_for(|l| l.len() == 6))
        .await
        .unwrap();
    let addrs: HashSet<String> = list.iter().map(|i| i.address.clone()).collect();
    assert_eq!(addrs, all);
    for i in &list {
        assert_eq!(i.address, format!("10.0.0.{}:80", i.metadata["n"]));
        assert!(members.iter().any(|(_, r)| r.instance().id == i.id));
    }
    // Round-robin visits every instance once per round.
    let round: HashSet<String> = (0..6)
        .map(|_| discovery.pick_round_robin().unwrap().address)
        .collect();
    assert_eq!(round, all);
    assert!(all.contains(&discovery.pick_random().unwrap().address));

    // Two sessions end, one instance deregisters: three remain, exactly those.
    let (c0, _r0) = members.remove(0);
    c0.close().await;
    let (c1, _r1) = members.remove(0);
    c1.close().await;
    let (_c2, r2) = members.remove(0);
    r2.deregister().await.unwrap();
    let remaining: HashSet<String> = members
        .iter()
        .map(|(_, r)| r.instance().address.clone())
        .collect();
    let list = within(
        "three left",
        discovery
            .wait_for(|l| l.iter().map(|i| i.address.clone()).collect::<HashSet<_>>() == remaining),
    )
    .await
    .unwrap();
    assert_eq!(list.len(), 3);
    for _ in 0..10 {
        assert!(remaining.contains(&discovery.pick_random().unwrap().address));
    }
}

async fn barrier_holds_until_removed(target: Target) {
    let server = Server::start(target).await;
    let owner = server.client().await;
    let barrier = Barrier::new(&owner, "/barriers/b1");
    barrier.set().await.unwrap();
    barrier.set().await.unwrap();
    let passed = Arc::new(AtomicUsize::new(0));
    let mut waiters = Vec::new();
    let mut clients = Vec::new();
    for _ in 0..8 {
        let c = server.client().await;
        clients.push(c.clone());
        let passed = passed.clone();
        waiters.push(tokio::spawn(async move {
            Barrier::new(&c, "/barriers/b1").wait().await.unwrap();
            passed.fetch_add(1, Ordering::SeqCst);
        }));
    }
    // Every waiter has had round trips since; none got through the raised barrier.
    for c in &clients {
        c.sync("/").await.unwrap();
        c.exists("/barriers/b1").await.unwrap().unwrap();
    }
    assert_eq!(passed.load(Ordering::SeqCst), 0);
    barrier.remove().await.unwrap();
    for w in waiters {
        within("a waiter", w).await.unwrap();
    }
    assert_eq!(passed.load(Ordering::SeqCst), 8);
    // With the barrier down, waiting returns at once.
    within("no barrier", barrier.wait()).await.unwrap();
}

async fn double_barrier_starts_and_ends_together(target: Target) {
    let server = Server::start(target).await;
    const N: usize = 10;
    let arrived = Arc::new(AtomicUsize::new(0));
    let leaving = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..N {
        let c = server.client().await;
        let (arrived, leaving) = (arrived.clone(), leaving.clone());
        tasks.push(tokio::spawn(async move {
            let barrier = DoubleBarrier::new(&c, "/barriers/round1", N);
            arrived.fetch_add(1, Ordering::SeqCst);
            let member = barrier.enter().await.unwrap();
            // Nobody gets in before everyone has arrived.
            assert_eq!(arrived.load(Ordering::SeqCst), N, "entered early");
            leaving.fetch_add(1, Ordering::SeqCst);
            member.leave().await.unwrap();
            // Nobody gets out before everyone has started to leave.
            assert_eq!(leaving.load(Ordering::SeqCst), N, "left early");
        }));
    }
    for t in tasks {
        within("a member", t).await.unwrap();
    }
    let check = server.client().await;
    assert!(check
        .children("/barriers/round1")
        .await
        .unwrap()
        .0
        .is_empty());
}

async fn config_watcher_never_goes_back(target: Target) {
    let server = Server::start(target).await;
    let setup = server.client().await;
    setup
        .create("/cfg", b"0", CreateMode::Persistent)
        .await
        .unwrap();
    let reader = server.client().await;
    let decode = |b: &[u8]| -> Result<u64, String> {
        std::str::from_utf8(b)
            .map_err(|e| e.to_string())?
            .parse::<u64>()
            .map_err(|e| e.to_string())
    };
    let mut watcher = ConfigWatcher::start(&reader, "/cfg", u64::MAX, decode)
        .await
        .unwrap();
    assert_eq!(*watcher.current(), 0);
    let mut seen = watcher.subscribe();

    // Five writers increment the value with version-checked writes, 20 times each.
    let mut writers = Vec::new();
    for _ in 0..5 {
        let c = server.client().await;
        writers.push(tokio::spawn(async move {
            let mut done = 0;
            while done < 20 {
                let (data, stat) = c.get_data("/cfg").await.unwrap();
                let n: u64 = std::str::from_utf8(&data).unwrap().parse().unwrap();
                match c
                    .set_data("/cfg", (n + 1).to_string().as_bytes(), Some(stat.version))
                    .await
                {
                    Ok(_) => done += 1,
                    Err(Error::Zk(ZkError::BadVersion)) => {}
                    Err(e) => panic!("{e}"),
                }
            }
        }));
    }
    // Every value observed is at least the one before, and matches its node version.
    let observe = async {
        let mut last = 0u64;
        loop {
            seen.changed().await.unwrap();
            let v = seen.borrow_and_update().clone();
            assert!(v.error.is_none());
            assert!(*v.value >= last, "went back from {last} to {}", v.value);
            assert_eq!(v.version, Some(*v.value as i32));
            last = *v.value;
            if last == 100 {
                return;
            }
        }
    };
    within("the final value", observe).await;
    for w in writers {
        within("a writer", w).await.unwrap();
    }
    assert_eq!(*watcher.current(), 100);

    // Bad content keeps the last good value; deletion brings the default.
    setup.set_data("/cfg", b"x", None).await.unwrap();
    let v = within("rejection", seen.wait_for(|v| v.error.is_some()))
        .await
        .unwrap()
        .clone();
    assert_eq!((*v.value, v.version), (100, Some(100)));
    assert!(v.error.is_some());
    setup.delete("/cfg", None).await.unwrap();
    within("default", watcher.wait_for(|v| *v == u64::MAX))
        .await
        .unwrap();
}

/// Every node under `root` as the server has it now.
async fn read_tree(c: &Client, root: &str) -> BTreeMap<String, (Vec<u8>, Stat)> {
    let mut out = BTreeMap::new();
    let mut todo = vec![root.to_string()];
    while let Some(p) = todo.pop() {
        let Ok(read) = c.get_data(&p).await else {
            continue;
        };
        out.insert(p.clone(), read);
        if let Ok((kids, _)) = c.children(&p).await {
            todo.extend(kids.into_iter().map(|k| format!("{p}/{k}")));
        }
    }
    out
}

fn same(mirror: &BTreeMap<String, NodeData>, server: &BTreeMap<String, (Vec<u8>, Stat)>) -> bool {
    mirror.len() == server.len()
        && mirror.iter().all(|(p, n)| {
            server
                .get(p)
                .is_some_and(|(d, s)| *d == n.data && *s == n.stat)
        })
}

async fn tree_cache_mirrors_concurrent_changes_in(target: Target, mode: TreeCacheMode) {
    let server = Server::start(target).await;
    let proxy = Proxy::start(server.addr()).await;
    let c = Client::builder(&proxy.connect_string())
        .session_timeout(Duration::from_secs(6))
        .connect_timeout(support::CONNECT_DEADLINE)
        .connect()
        .await
        .unwrap();
    let setup = server.client().await;
    // Some tree exists before the cache starts; the root itself comes and goes later.
    for p in ["/t", "/t/a", "/t/a/x", "/t/b"] {
        setup
            .create(p, p.as_bytes(), CreateMode::Persistent)
            .await
            .unwrap();
    }
    let mut cache = TreeCache::start_with(&c, "/t", mode).await.unwrap();
    assert_eq!(cache.uses_persistent_watch(), mode == TreeCacheMode::Auto);
    assert!(same(&cache.snapshot(), &read_tree(&setup, "/t").await));
    assert_eq!(cache.children("/t"), vec!["a", "b"]);
    assert_eq!(cache.get("/t/a/x").unwrap().data, b"/t/a/x");

    // Four writers make random changes on a small set of paths two levels deep.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut writers = Vec::new();
    for _ in 0..4 {
        let w = server.client().await;
        let stop = stop.clone();
        writers.push(tokio::spawn(async move {
            let mut ops = 0;
            while !stop.load(Ordering::SeqCst) || ops < 50 {
                let (a, b, op, v) = {
                    let mut r = rand::thread_rng();
                    (
                        r.gen_range(0..3),
                        r.gen_range(0..3),
                        r.gen_range(0..4),
                        r.gen::<u32>(),
                    )
                };
                let parent = format!("/t/p{a}");
                let child = format!("{parent}/c{b}");
                let _ = match op {
                    0 => w
                        .create(&parent, b"", CreateMode::Persistent)
                        .await
                        .map(|_| ()),
                    1 => w
                        .create(&child, &v.to_be_bytes(), CreateMode::Persistent)
                        .await
                        .map(|_| ()),
                    2 => w.set_data(&child, &v.to_be_bytes(), None).await.map(|_| ()),
                    _ => match w.delete(&child, None).await {
                        Err(Error::Zk(ZkError::NoNode)) => w.delete(&parent, None).await,
                        other => other,
                    },
                };
                ops += 1;
            }
        }));
    }
    // Midway, the cache's connection is cut and kept shut a moment while writes go on.
    within(
        "some changes",
        cache.wait_for(|t| t.keys().any(|k| k.starts_with("/t/p"))),
    )
    .await
    .unwrap();
    proxy.block(true);
    proxy.cut();
    wait_state(&c, "disconnected", |s| *s == SessionState::Disconnected).await;
    for i in 0..5 {
        setup
            .create(&format!("/t/away{i}"), b"", CreateMode::Persistent)
            .await
            .unwrap();
    }
    setup.delete("/t/a/x", None).await.unwrap();
    proxy.block(false);
    wait_state(&c, "reconnected", |s| s.is_connected()).await;
    stop.store(true, Ordering::SeqCst);
    for w in writers {
        within("a writer", w).await.unwrap();
    }

    // Quiet now: the mirror must equal the server's tree, Stats included.
    let expected = read_tree(&setup, "/t").await;
    within(
        "mirror equals server",
        cache.wait_for(|t| same(t, &expected)),
    )
    .await
    .unwrap();

    // The root goes and comes back.
    for p in expected.keys().rev() {
        setup.delete(p, None).await.unwrap();
    }
    within("empty", cache.wait_for(|t| t.is_empty()))
        .await
        .unwrap();
    setup
        .create("/t", b"again", CreateMode::Persistent)
        .await
        .unwrap();
    within(
        "root back",
        cache.wait_for(|t| t.get("/t").is_some_and(|n| n.data == b"again")),
    )
    .await
    .unwrap();

    // The event log, applied in order to an empty tree, gives the mirror.
    let mut replayed: BTreeMap<String, NodeData> = BTreeMap::new();
    let mut initialized = false;
    while let Ok(Some(e)) = tokio::time::timeout(Duration::ZERO, cache.next_event()).await {
        match e {
            TreeEvent::Added(p, n) => {
                assert!(replayed.insert(p.clone(), n).is_none(), "{p} added twice");
            }
            TreeEvent::Updated(p, n) => {
                assert!(
                    replayed.insert(p.clone(), n).is_some(),
                    "{p} updated while absent"
                );
            }
            TreeEvent::Removed(p) => {
                assert!(replayed.remove(&p).is_some(), "{p} removed while absent");
            }
            TreeEvent::Initialized => initialized = true,
            TreeEvent::Reloaded => {}
        }
    }
    assert!(initialized);
    assert_eq!(replayed, cache.snapshot());
}

async fn tree_cache_with_persistent_watch(target: Target) {
    tree_cache_mirrors_concurrent_changes_in(target, TreeCacheMode::Auto).await
}

async fn tree_cache_with_oneshot_watches(target: Target) {
    tree_cache_mirrors_concurrent_changes_in(target, TreeCacheMode::OneshotWatches).await
}

/// Twenty candidates; the leader's connection is cut until its session expires; exactly one
/// successor, the next in line, and the old leader learns it lost.
async fn election_of_twenty_survives_leader_expiry(target: Target) {
    let server = Server::start(target).await;
    let proxy = Proxy::start(server.addr()).await;
    let first = Client::builder(&proxy.connect_string())
        .session_timeout(Duration::from_millis(1000))
        .connect_timeout(support::CONNECT_DEADLINE)
        .connect()
        .await
        .unwrap();
    let mut leader = LeaderElection::new(&first, "/election")
        .campaign(b"c0")
        .await
        .unwrap();
    within("first leader", leader.wait_leader()).await.unwrap();
    assert_eq!(leader.next_event().await, Some(LeadershipEvent::Elected));

    let (elected_tx, mut elected) = tokio::sync::mpsc::unbounded_channel();
    let mut clients = Vec::new();
    let mut holders = Vec::new();
    for i in 1..20 {
        let c = server.client().await;
        let mut l = LeaderElection::new(&c, "/election")
            .campaign(format!("c{i}").as_bytes())
            .await
            .unwrap();
        clients.push(c);
        let tx = elected_tx.clone();
        let (keep_tx, keep_rx) = tokio::sync::oneshot::channel::<()>();
        holders.push(keep_tx);
        tokio::spawn(async move {
            if l.next_event().await == Some(LeadershipEvent::Elected) {
                let _ = tx.send(i);
            }
            // Stay in the election until the test ends.
            let _ = keep_rx.await;
            drop(l);
        });
    }
    let observer = server.client().await;
    let election = LeaderElection::new(&observer, "/election");
    within("all twenty queued", async {
        while observer.children("/election").await.unwrap().0.len() < 20 {
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert!(elected.try_recv().is_err());

    // The leader is cut off: it steps down at once, and the session expires.
    proxy.block(true);
    proxy.cut();
    assert_eq!(
        within("step down", leader.next_event()).await,
        Some(LeadershipEvent::Revoked)
    );
    assert!(!leader.is_leader());

    // The server expires the session, removing its node: the next in line takes over.
    let successor = within("a successor", elected.recv()).await.unwrap();
    assert_eq!(successor, 1, "the next candidate in line takes over");
    for c in &clients {
        c.sync("/").await.unwrap();
    }
    assert!(elected.try_recv().is_err(), "a second leader");
    assert_eq!(election.leader().await.unwrap(), Some(b"c1".to_vec()));
    assert_eq!(observer.children("/election").await.unwrap().0.len(), 19);
    // Let back in, the old leader learns its session is over, and stays out.
    proxy.block(false);
    wait_state(&first, "expired", |s| *s == SessionState::Expired).await;
    assert_eq!(within("last event", leader.next_event()).await, None);
    assert!(!leader.is_leader());
    drop(holders);
}

per_target!(
    discovery_follows_registrations,
    barrier_holds_until_removed,
    double_barrier_starts_and_ends_together,
    config_watcher_never_goes_back,
    tree_cache_with_persistent_watch,
    tree_cache_with_oneshot_watches,
    election_of_twenty_survives_leader_expiry,
);
