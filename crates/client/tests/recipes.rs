//! Recipes against real servers, including contention and lost sessions.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use corral_client::recipes::{ChildrenCache, LeaderElection, Mutex, NodeCache, RwLock};
use corral_client::{Client, CreateMode};
use support::{within, Proxy, Server, Target};

async fn node_cache_follows_the_node(target: Target) {
    let server = Server::start(target).await;
    let proxy = Proxy::start(server.addr()).await;
    let c = Client::builder(&proxy.connect_string())
        .session_timeout(Duration::from_secs(4))
        .connect_timeout(support::CONNECT_DEADLINE)
        .connect()
        .await
        .unwrap();
    let w = server.client().await;
    let mut cache = NodeCache::start(&c, "/cfg").await.unwrap();
    assert_eq!(cache.current(), None);

    w.create("/cfg", b"v1", CreateMode::Persistent)
        .await
        .unwrap();
    within(
        "v1",
        cache.wait_for(|v| v.as_ref().is_some_and(|d| d.data == b"v1")),
    )
    .await
    .unwrap();
    w.set_data("/cfg", b"v2", None).await.unwrap();
    within(
        "v2",
        cache.wait_for(|v| v.as_ref().is_some_and(|d| d.data == b"v2")),
    )
    .await
    .unwrap();

    // A change made while the cache's client is cut off shows up after it reconnects.
    proxy.block(true);
    proxy.cut();
    support::wait_state(&c, "disconnect", |s| !s.is_connected()).await;
    w.set_data("/cfg", b"v3", None).await.unwrap();
    proxy.block(false);
    within(
        "v3",
        cache.wait_for(|v| v.as_ref().is_some_and(|d| d.data == b"v3")),
    )
    .await
    .unwrap();

    w.delete("/cfg", None).await.unwrap();
    within("deletion", cache.wait_for(|v| v.is_none()))
        .await
        .unwrap();
}

async fn children_cache_follows_the_children(target: Target) {
    let server = Server::start(target).await;
    let c = server.client().await;
    let w = server.client().await;
    let mut cache = ChildrenCache::start(&c, "/svc").await.unwrap();
    assert_eq!(cache.current(), None);
    w.create("/svc", b"", CreateMode::Persistent).await.unwrap();
    within("empty", cache.wait_for(|v| v.as_deref() == Some(&[][..])))
        .await
        .unwrap();
    for n in ["b", "a", "c"] {
        w.create(&format!("/svc/{n}"), b"", CreateMode::Ephemeral)
            .await
            .unwrap();
    }
    let want = vec!["a".to_string(), "b".into(), "c".into()];
    within("three", cache.wait_for(|v| v.as_ref() == Some(&want)))
        .await
        .unwrap();
    // The ephemeral children vanish with their session.
    w.close().await;
    within(
        "none left",
        cache.wait_for(|v| v.as_deref() == Some(&[][..])),
    )
    .await
    .unwrap();
}

async fn mutex_excludes_twenty_contenders(target: Target) {
    let server = Server::start(target).await;
    let setup = server.client().await;
    setup
        .create("/count", b"0", CreateMode::Persistent)
        .await
        .unwrap();
    let inside = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let c = server.client().await;
        let inside = inside.clone();
        tasks.push(tokio::spawn(async move {
            let lock = Mutex::new(&c, "/locks/m");
            let guard = lock.lock().await.unwrap();
            assert_eq!(
                inside.fetch_add(1, Ordering::SeqCst),
                0,
                "two holders at once"
            );
            // An unguarded read-modify-write: correct only under mutual exclusion.
            let (data, stat) = c.get_data("/count").await.unwrap();
            let n: u32 = std::str::from_utf8(&data).unwrap().parse().unwrap();
            c.set_data("/count", (n + 1).to_string().as_bytes(), Some(stat.version))
                .await
                .unwrap();
            inside.fetch_sub(1, Ordering::SeqCst);
            guard.unlock().await.unwrap();
        }));
    }
    for t in tasks {
        within("a contender", t).await.unwrap();
    }
    assert_eq!(setup.get_data("/count").await.unwrap().0, b"20");
    assert!(setup.children("/locks/m").await.unwrap().0.is_empty());
}

async fn mutex_passes_to_exactly_one_successor(target: Target) {
    let server = Server::start(target).await;
    let holder = server.client().await;
    let lock = Mutex::new(&holder, "/locks/k");
    let _held = lock.lock().await.unwrap();

    let (acquired_tx, mut acquired) = tokio::sync::mpsc::unbounded_channel();
    let mut waiters = Vec::new();
    for i in 0..5 {
        let c = server.client().await;
        let tx = acquired_tx.clone();
        waiters.push(c.clone());
        tokio::spawn(async move {
            let guard = Mutex::new(&c, "/locks/k").lock().await.unwrap();
            tx.send(i).unwrap();
            // Hold it: the test checks nobody else gets in.
            std::future::pending::<()>().await;
            drop(guard);
        });
    }
    // All five are queued behind the holder.
    within("queue of six", async {
        while holder.children("/locks/k").await.unwrap().0.len() < 6 {
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert!(acquired.try_recv().is_err());

    // The holder's session dies: its node goes and exactly one waiter takes over.
    holder.close().await;
    let first = within("a successor", acquired.recv()).await.unwrap();
    // Every other waiter has had a round trip with the server since; none got the lock.
    for w in &waiters {
        w.sync("/").await.unwrap();
    }
    assert!(
        acquired.try_recv().is_err(),
        "a second holder after {first}"
    );
    assert_eq!(waiters[0].children("/locks/k").await.unwrap().0.len(), 5);
}

async fn rwlock_readers_share_writers_exclude(target: Target) {
    let server = Server::start(target).await;
    let a = server.client().await;
    let b = server.client().await;
    let r1 = RwLock::new(&a, "/rw").read().await.unwrap();
    let r2 = within("second reader", RwLock::new(&b, "/rw").read())
        .await
        .unwrap();
    let writer = {
        let c = server.client().await;
        tokio::spawn(async move { RwLock::new(&c, "/rw").write().await.map(|g| (c, g)) })
    };
    // A reader arriving after the waiting writer queues behind it.
    let late_reader = {
        let c = server.client().await;
        tokio::spawn(async move { RwLock::new(&c, "/rw").read().await.map(|g| (c, g)) })
    };
    within("queue of four", async {
        while a.children("/rw").await.unwrap().0.len() < 4 {
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert!(!writer.is_finished());
    r1.unlock().await.unwrap();
    r2.unlock().await.unwrap();
    let (_wc, wg) = within("writer", writer).await.unwrap().unwrap();
    assert!(!late_reader.is_finished());
    wg.unlock().await.unwrap();
    within("late reader", late_reader).await.unwrap().unwrap();
}

async fn election_has_one_leader_and_a_successor(target: Target) {
    let server = Server::start(target).await;
    let mut clients = Vec::new();
    let mut candidacies = Vec::new();
    for i in 0..5 {
        let c = server.client().await;
        let l = LeaderElection::new(&c, "/election")
            .campaign(format!("node{i}").as_bytes())
            .await
            .unwrap();
        clients.push(c);
        candidacies.push(l);
    }
    within("first leader", candidacies[0].wait_leader())
        .await
        .unwrap();
    let observer = server.client().await;
    let election = LeaderElection::new(&observer, "/election");
    assert_eq!(election.leader().await.unwrap(), Some(b"node0".to_vec()));
    for (i, c) in clients.iter().enumerate() {
        c.sync("/").await.unwrap();
        assert_eq!(candidacies[i].is_leader(), i == 0);
    }

    // The leader's session ends: the next candidate, and only it, takes over.
    clients[0].close().await;
    within("old leader steps down", candidacies[0].wait_not_leader()).await;
    within("successor", candidacies[1].wait_leader())
        .await
        .unwrap();
    for (i, c) in clients.iter().enumerate().skip(1) {
        c.sync("/").await.unwrap();
        assert_eq!(candidacies[i].is_leader(), i == 1);
    }
    assert_eq!(election.leader().await.unwrap(), Some(b"node1".to_vec()));

    // Resigning passes leadership on too.
    let second = candidacies.remove(1);
    second.resign().await.unwrap();
    within("third leader", candidacies[1].wait_leader())
        .await
        .unwrap();
}

per_target!(
    node_cache_follows_the_node,
    children_cache_follows_the_children,
    mutex_excludes_twenty_contenders,
    mutex_passes_to_exactly_one_successor,
    rwlock_readers_share_writers_exclude,
    election_has_one_leader_and_a_successor,
);
