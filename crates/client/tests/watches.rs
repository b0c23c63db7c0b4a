//! One-shot and persistent watches.

mod support;

use corral_client::{CreateMode, EventType, NodeEvent, WatchEvent, WatchMode};
use support::{next_node, within, Server, Target};

fn ev(t: EventType, path: &str) -> (EventType, String) {
    (t, path.to_string())
}

fn key(e: &NodeEvent) -> (EventType, String) {
    (e.event_type, e.path.clone())
}

async fn oneshot_watches_fire_once(target: Target) {
    let server = Server::start(target).await;
    let c = server.client().await;
    let w2 = server.client().await;

    // exists_w on a missing node fires on creation.
    let (stat, created) = c.exists_w("/n").await.unwrap();
    assert!(stat.is_none());
    w2.create("/n", b"0", CreateMode::Persistent).await.unwrap();
    let e = within("NodeCreated", created).await.unwrap();
    assert_eq!(key(&e), ev(EventType::NodeCreated, "/n"));

    // get_data_w fires on the next change, once; two watchers of one client both hear it.
    let (data, _, changed) = c.get_data_w("/n").await.unwrap();
    let (_, _, changed_too) = c.get_data_w("/n").await.unwrap();
    assert_eq!(data, b"0");
    w2.set_data("/n", b"1", None).await.unwrap();
    w2.set_data("/n", b"2", None).await.unwrap();
    let e = within("NodeDataChanged", changed).await.unwrap();
    assert_eq!(key(&e), ev(EventType::NodeDataChanged, "/n"));
    assert_eq!(
        key(&within("second watcher", changed_too).await.unwrap()),
        ev(EventType::NodeDataChanged, "/n")
    );

    // children_w fires on a child change; exists_w on an existing node fires on deletion.
    let (kids, _, kids_changed) = c.children_w("/n").await.unwrap();
    assert!(kids.is_empty());
    w2.create("/n/k", b"", CreateMode::Persistent)
        .await
        .unwrap();
    assert_eq!(
        key(&within("NodeChildrenChanged", kids_changed).await.unwrap()),
        ev(EventType::NodeChildrenChanged, "/n")
    );
    let (_, _, data_w) = c.get_data_w("/n/k").await.unwrap();
    let (_, _, kids_w) = c.children_w("/n/k").await.unwrap();
    let (stat, exists_w) = c.exists_w("/n/k").await.unwrap();
    assert!(stat.is_some());
    w2.delete("/n/k", None).await.unwrap();
    for w in [data_w, kids_w, exists_w] {
        assert_eq!(
            key(&within("NodeDeleted", w).await.unwrap()),
            ev(EventType::NodeDeleted, "/n/k")
        );
    }

    // A watch set on a missing node by get_data is refused along with the read.
    assert!(c.get_data_w("/missing").await.is_err());
}

async fn persistent_watch_sees_node_and_children(target: Target) {
    let server = Server::start(target).await;
    let c = server.client().await;
    let w2 = server.client().await;
    let mut w = c.watch("/p", WatchMode::NonRecursive).await.unwrap();

    w2.create("/p", b"", CreateMode::Persistent).await.unwrap();
    w2.set_data("/p", b"1", None).await.unwrap();
    w2.create("/p/c", b"", CreateMode::Persistent)
        .await
        .unwrap();
    w2.set_data("/p/c", b"not for us", None).await.unwrap();
    w2.delete("/p/c", None).await.unwrap();
    w2.delete("/p", None).await.unwrap();
    w2.create("/p", b"", CreateMode::Persistent).await.unwrap();
    let mut got = Vec::new();
    for _ in 0..6 {
        got.push(key(&next_node(&mut w).await));
    }
    assert_eq!(
        got,
        vec![
            ev(EventType::NodeCreated, "/p"),
            ev(EventType::NodeDataChanged, "/p"),
            ev(EventType::NodeChildrenChanged, "/p"),
            ev(EventType::NodeChildrenChanged, "/p"),
            ev(EventType::NodeDeleted, "/p"),
            ev(EventType::NodeCreated, "/p"),
        ]
    );
}

async fn recursive_watch_sees_descendants(target: Target) {
    let server = Server::start(target).await;
    let c = server.client().await;
    let w2 = server.client().await;
    c.create("/r", b"", CreateMode::Persistent).await.unwrap();
    let mut w = c.watch("/r", WatchMode::Recursive).await.unwrap();

    w2.create("/r/a", b"", CreateMode::Persistent)
        .await
        .unwrap();
    w2.create("/r/a/b", b"", CreateMode::Persistent)
        .await
        .unwrap();
    w2.set_data("/r/a/b", b"x", None).await.unwrap();
    w2.create("/elsewhere", b"", CreateMode::Persistent)
        .await
        .unwrap();
    w2.delete("/r/a/b", None).await.unwrap();
    w2.set_data("/r", b"y", None).await.unwrap();
    let mut got = Vec::new();
    for _ in 0..5 {
        got.push(key(&next_node(&mut w).await));
    }
    // No NodeChildrenChanged for recursive watches, nothing from outside the subtree.
    assert_eq!(
        got,
        vec![
            ev(EventType::NodeCreated, "/r/a"),
            ev(EventType::NodeCreated, "/r/a/b"),
            ev(EventType::NodeDataChanged, "/r/a/b"),
            ev(EventType::NodeDeleted, "/r/a/b"),
            ev(EventType::NodeDataChanged, "/r"),
        ]
    );
}

async fn watchers_share_and_drop_independently(target: Target) {
    let server = Server::start(target).await;
    let c = server.client().await;
    let w2 = server.client().await;
    c.create("/s", b"", CreateMode::Persistent).await.unwrap();
    let mut a = c.watch("/s", WatchMode::Recursive).await.unwrap();
    let b = c.watch("/s", WatchMode::Recursive).await.unwrap();
    let mut only = c.watch("/s", WatchMode::NonRecursive).await.unwrap();

    // Dropping one of two watchers on a path keeps the other's events flowing.
    drop(b);
    w2.set_data("/s", b"1", None).await.unwrap();
    assert_eq!(
        key(&next_node(&mut a).await),
        ev(EventType::NodeDataChanged, "/s")
    );
    assert_eq!(
        key(&next_node(&mut only).await),
        ev(EventType::NodeDataChanged, "/s")
    );

    // Dropping the last one removes the server-side watch: "wchp" stops listing the path
    // once both kinds are gone.
    drop(a);
    drop(only);
    let gone = async {
        loop {
            // A round trip on the session orders us after its removeWatches requests.
            c.exists("/s").await.unwrap();
            let listing = server.four_letter("wchp").await;
            if !listing.lines().any(|l| l.trim() == "/s") {
                return listing;
            }
        }
    };
    within("the server to forget the watch", gone).await;

    // A fresh watch after the drop works and sees each event once.
    let mut again = c.watch("/s", WatchMode::NonRecursive).await.unwrap();
    w2.set_data("/s", b"2", None).await.unwrap();
    w2.set_data("/s", b"3", None).await.unwrap();
    assert_eq!(
        key(&next_node(&mut again).await),
        ev(EventType::NodeDataChanged, "/s")
    );
    assert_eq!(
        key(&next_node(&mut again).await),
        ev(EventType::NodeDataChanged, "/s")
    );
    c.create("/marker", b"", CreateMode::Persistent)
        .await
        .unwrap();
    w2.delete("/s", None).await.unwrap();
    assert_eq!(
        key(&next_node(&mut again).await),
        ev(EventType::NodeDeleted, "/s")
    );
}

async fn watch_stream_ends_with_the_session(target: Target) {
    let server = Server::start(target).await;
    let c = server.client().await;
    let mut w = c.watch("/", WatchMode::Recursive).await.unwrap();
    let (_, oneshot) = c.exists_w("/never").await.unwrap();
    c.close().await;
    assert_eq!(
        within("closed item", w.next()).await,
        Some(WatchEvent::Session(corral_client::SessionState::Closed))
    );
    assert_eq!(within("end of stream", w.next()).await, None);
    assert_eq!(
        within("oneshot end", oneshot).await,
        Err(corral_client::Error::Closed)
    );
}

async fn removed_oneshot_watches_resolve_and_stop_on_the_server(target: Target) {
    let server = Server::start(target).await;
    let c = server.client().await;
    let w2 = server.client().await;
    c.create("/rw", b"", CreateMode::Persistent).await.unwrap();
    let (_, _, data_w) = c.get_data_w("/rw").await.unwrap();
    let (_, _, child_w) = c.children_w("/rw").await.unwrap();
    c.remove_watches("/rw", corral_proto::WatcherType::Data, false)
        .await
        .unwrap();
    assert_eq!(
        key(&within("data watch removed", data_w).await.unwrap()),
        ev(EventType::DataWatchRemoved, "/rw")
    );
    // Nothing left of the data watch on the server: a second removal is NoWatcher.
    assert_eq!(
        c.remove_watches("/rw", corral_proto::WatcherType::Data, false)
            .await
            .err(),
        Some(corral_client::Error::Zk(corral_proto::ZkError::NoWatcher))
    );
    // The child watch is untouched and still fires.
    w2.create("/rw/k", b"", CreateMode::Persistent)
        .await
        .unwrap();
    assert_eq!(
        key(&within("child watch", child_w).await.unwrap()),
        ev(EventType::NodeChildrenChanged, "/rw")
    );
    // Local removal: no watcher held locally is NoWatcher without asking the server.
    assert_eq!(
        c.remove_watches("/rw", corral_proto::WatcherType::Any, true)
            .await
            .err(),
        Some(corral_client::Error::Zk(corral_proto::ZkError::NoWatcher))
    );
}

async fn null_data_is_not_empty_data(target: Target) {
    let server = Server::start(target).await;
    let c = server.client().await;
    c.create_opt("/null", None, CreateMode::Persistent)
        .await
        .unwrap();
    c.create("/empty", b"", CreateMode::Persistent)
        .await
        .unwrap();
    assert_eq!(c.get_data_opt("/null").await.unwrap().0, None);
    assert_eq!(c.get_data_opt("/empty").await.unwrap().0, Some(vec![]));
}

per_target!(
    removed_oneshot_watches_resolve_and_stop_on_the_server,
    null_data_is_not_empty_data,
    oneshot_watches_fire_once,
    persistent_watch_sees_node_and_children,
    recursive_watch_sees_descendants,
    watchers_share_and_drop_independently,
    watch_stream_ends_with_the_session,
);
