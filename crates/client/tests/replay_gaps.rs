//! A Corral server restarted while the client is away cannot replay the changes made before
//! the client re-registered its persistent watches: the watch stream says so with
//! `WatchEvent::MayHaveMissed`, and the caches re-read.

mod support;

use std::time::Duration;

use corral_client::recipes::{NodeCache, TreeCache};
use corral_client::{Client, CreateMode, SessionState, WatchEvent, WatchMode};
use corral_server::testing::TestServer;
use support::{next_item, wait_state, within, Proxy};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_between_events_yields_may_have_missed_and_caches_reread() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_in(TestServer::default_config(), dir.path())
        .await
        .unwrap();
    // The client reaches the server through a proxy, so it keeps one address across the
    // restart (the restarted server listens on a new port).
    let proxy = Proxy::start(server.addr()).await;
    let c = Client::builder(&proxy.connect_string())
        .session_timeout(Duration::from_secs(4))
        .connect()
        .await
        .unwrap();
    c.create("/g", b"", CreateMode::Persistent).await.unwrap();
    c.create("/g/a", b"1", CreateMode::Persistent)
        .await
        .unwrap();
    let mut w = c.watch("/g", WatchMode::Recursive).await.unwrap();
    let mut node = NodeCache::start(&c, "/g/a").await.unwrap();
    let mut tree = TreeCache::start(&c, "/g").await.unwrap();

    // Keep the client out while the server restarts and changes happen without it.
    proxy.block(true);
    proxy.cut();
    server.stop().await.unwrap();
    let server = TestServer::start_in(TestServer::default_config(), dir.path())
        .await
        .unwrap();
    proxy.retarget(server.addr());
    let writer = Client::builder(&server.connect_string())
        .connect()
        .await
        .unwrap();
    writer.set_data("/g/a", b"2", None).await.unwrap();
    writer
        .create("/g/b", b"new", CreateMode::Persistent)
        .await
        .unwrap();
    proxy.block(false);
    wait_state(&c, "the reconnect", |s| *s == SessionState::Connected).await;

    // The stream: the disconnect, the reconnect, then the gap notice. The changes themselves
    // are not replayed (the restarted server had no window for them).
    let mut items = Vec::new();
    loop {
        let item = next_item(&mut w).await;
        let done = item == WatchEvent::MayHaveMissed;
        items.push(item);
        if done {
            break;
        }
    }
    let connected = items
        .iter()
        .position(|i| *i == WatchEvent::Session(SessionState::Connected))
        .expect("the reconnect is on the stream");
    assert_eq!(
        connected,
        items.len() - 2,
        "the gap notice follows the reconnect: {items:?}"
    );
    assert!(
        !items.iter().any(|i| matches!(i, WatchEvent::Node(_))),
        "nothing was replayable: {items:?}"
    );

    // The caches re-read and end with the data written while the client was away.
    let v = within(
        "the node cache",
        node.wait_for(|v| v.as_ref().is_some_and(|d| d.data == b"2")),
    )
    .await
    .unwrap();
    assert_eq!(v.unwrap().data, b"2");
    within(
        "the tree cache",
        tree.wait_for(|t| {
            t.get("/g/a").is_some_and(|d| d.data == b"2")
                && t.get("/g/b").is_some_and(|d| d.data == b"new")
        }),
    )
    .await
    .unwrap();

    drop((w, node, tree));
    c.close().await;
    writer.close().await;
    drop(proxy);
    server.stop().await.unwrap();
}
