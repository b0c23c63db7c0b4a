//! Connection loss, reconnection and session expiry, through a proxy that cuts connections.

mod support;

use std::collections::HashSet;
use std::time::Duration;

use corral_client::{
    acl, Client, CreateMode, CreateOptions, Error, EventType, SessionState, WatchEvent, WatchMode,
};
use support::{next_item, next_node, wait_state, within, Proxy, Server, Target};

async fn client_via(proxy: &Proxy, timeout: Duration) -> Client {
    Client::builder(&proxy.connect_string())
        .session_timeout(timeout)
        .connect_timeout(support::CONNECT_DEADLINE)
        .connect()
        .await
        .unwrap()
}

async fn reconnect_resumes_session_and_watches(target: Target) {
    let server = Server::start(target).await;
    let proxy = Proxy::start(server.addr()).await;
    let c = client_via(&proxy, Duration::from_secs(4)).await;
    let writer = server.client().await;
    c.create("/r", b"", CreateMode::Persistent).await.unwrap();
    let (eph, _) = c
        .create("/r/eph", b"", CreateMode::Ephemeral)
        .await
        .unwrap();
    let session = c.session_id();
    let mut w = c.watch("/r", WatchMode::Recursive).await.unwrap();

    for i in 0..3 {
        writer
            .create(&format!("/r/before{i}"), b"", CreateMode::Persistent)
            .await
            .unwrap();
    }
    let mut seen = Vec::new();
    for _ in 0..3 {
        seen.push(next_node(&mut w).await.path);
    }

    // Cut, keep the client out while another client changes a node it has a one-shot watch on.
    let (_, _, data_w) = c.get_data_w("/r/before0").await.unwrap();
    proxy.block(true);
    proxy.cut();
    assert_eq!(
        next_item(&mut w).await,
        WatchEvent::Session(SessionState::Disconnected)
    );
    writer
        .set_data("/r/before0", b"changed", None)
        .await
        .unwrap();
    proxy.block(false);

    // The same session comes back; the stream says so rather than failing.
    assert_eq!(
        next_item(&mut w).await,
        WatchEvent::Session(SessionState::Connected)
    );
    wait_state(&c, "reconnected", |s| *s == SessionState::Connected).await;
    assert_eq!(c.session_id(), session);
    assert!(c.exists(&eph).await.unwrap().is_some());
    // The one-shot watch was re-registered and fires for the change made while away.
    let e = within("missed change", data_w).await.unwrap();
    assert_eq!(
        (e.event_type, e.path.as_str()),
        (EventType::NodeDataChanged, "/r/before0")
    );

    for i in 0..3 {
        writer
            .create(&format!("/r/after{i}"), b"", CreateMode::Persistent)
            .await
            .unwrap();
    }
    // A marker after which nothing else happens, so duplicates would show before it.
    writer
        .create("/r/end", b"", CreateMode::Persistent)
        .await
        .unwrap();
    let mut events: Vec<(EventType, String)> = seen
        .into_iter()
        .map(|p| (EventType::NodeCreated, p))
        .collect();
    loop {
        let e = next_node(&mut w).await;
        let done = e.path == "/r/end";
        events.push((e.event_type, e.path));
        if done {
            break;
        }
    }
    // The change made while disconnected is delivered by servers that replay persistent-watch
    // events on reconnect (ZooKeeper 3.8 does not); everything else arrives exactly once.
    let replayed = (EventType::NodeDataChanged, "/r/before0".to_string());
    let had_replay = events.contains(&replayed);
    events.retain(|e| *e != replayed);
    let unique: HashSet<_> = events.iter().collect();
    assert_eq!(unique.len(), events.len(), "duplicates in {events:?}");
    let created = |p: &str| (EventType::NodeCreated, p.to_string());
    let expected: Vec<_> = [
        "/r/before0",
        "/r/before1",
        "/r/before2",
        "/r/after0",
        "/r/after1",
        "/r/after2",
        "/r/end",
    ]
    .into_iter()
    .map(created)
    .collect();
    assert_eq!(events, expected, "events (replay seen: {had_replay})");
}

async fn auth_is_resent_after_reconnect(target: Target) {
    let server = Server::start(target).await;
    let proxy = Proxy::start(server.addr()).await;
    let c = client_via(&proxy, Duration::from_secs(4)).await;
    c.add_auth("digest", b"bob:pw").await.unwrap();
    let opts = CreateOptions::new(CreateMode::Persistent).acl(acl::creator_all());
    c.create("/mine", b"m", opts).await.unwrap();
    proxy.block(true);
    proxy.cut();
    wait_state(&c, "disconnect", |s| *s == SessionState::Disconnected).await;
    proxy.block(false);
    wait_state(&c, "reconnect", |s| *s == SessionState::Connected).await;
    // Without the identity the read would be refused with NoAuth.
    let read = within("read after reconnect", async {
        loop {
            match c.get_data("/mine").await {
                Err(Error::ConnectionLoss) => continue,
                other => return other,
            }
        }
    })
    .await;
    assert_eq!(read.unwrap().0, b"m");
}

async fn expired_session_is_final(target: Target) {
    let server = Server::start(target).await;
    let proxy = Proxy::start(server.addr()).await;
    let c = client_via(&proxy, Duration::from_millis(1000)).await;
    let observer = server.client().await;
    c.create("/e", b"", CreateMode::Ephemeral).await.unwrap();
    let mut w = c.watch("/", WatchMode::Recursive).await.unwrap();
    let (_, pending_watch) = c.exists_w("/never").await.unwrap();
    let (_, gone) = observer.exists_w("/e").await.unwrap();

    proxy.block(true);
    proxy.cut();
    // The server expires the session: its ephemeral node goes.
    let e = within("ephemeral deletion", gone).await.unwrap();
    assert_eq!(e.event_type, EventType::NodeDeleted);
    proxy.block(false);

    wait_state(&c, "Expired", |s| *s == SessionState::Expired).await;
    // Final: the state channel closes on Expired, so no later transition can come.
    let mut states = c.state_watcher();
    states.borrow_and_update();
    assert!(within("state channel end", states.changed()).await.is_err());
    assert_eq!(c.state(), SessionState::Expired);
    assert_eq!(c.exists("/").await, Err(Error::SessionExpired));
    assert_eq!(
        within("oneshot", pending_watch).await,
        Err(Error::SessionExpired)
    );
    let mut items = Vec::new();
    while let Some(item) = within("stream end", w.next()).await {
        items.push(item);
    }
    assert_eq!(
        items.last(),
        Some(&WatchEvent::Session(SessionState::Expired))
    );
    // The helper builds a fresh session with the same settings.
    let fresh = c.rebuild().await.unwrap();
    assert_ne!(fresh.session_id(), c.session_id());
    assert_eq!(fresh.state(), SessionState::Connected);
    fresh
        .create("/e", b"", CreateMode::Ephemeral)
        .await
        .unwrap();
}

async fn session_can_be_resumed_by_id(target: Target) {
    let server = Server::start(target).await;
    let proxy = Proxy::start(server.addr()).await;
    // Generous timeout: the session must outlive JVM pauses on a busy machine.
    let c = client_via(&proxy, Duration::from_secs(10)).await;
    c.create("/held", b"", CreateMode::Ephemeral).await.unwrap();
    // Keep the original client away, or the two would take the session from each other.
    proxy.block(true);
    proxy.cut();
    let again = Client::builder(&server.connect_string())
        .session_timeout(Duration::from_secs(10))
        .session(c.session_id(), c.session_password())
        .connect_timeout(support::CONNECT_DEADLINE)
        .connect()
        .await
        .unwrap();
    assert_eq!(again.session_id(), c.session_id());
    assert_eq!(
        again.get_ephemerals("/").await.unwrap(),
        vec!["/held".to_string()]
    );
    // A wrong password is refused: that session is reported expired.
    let wrong = Client::builder(&server.connect_string())
        .session(c.session_id(), vec![1; 16])
        .connect()
        .await;
    assert_eq!(wrong.err(), Some(Error::SessionExpired));
}

per_target!(
    reconnect_resumes_session_and_watches,
    auth_is_resent_after_reconnect,
    expired_session_is_final,
    session_can_be_resumed_by_id,
);

/// A stand-in for a ZooKeeper server in read-only mode: it hands out a session flagged
/// read-only, answers pings, and answers `isro` with `ro`. (A real read-only member needs a
/// partitioned ensemble; the client's side of the protocol is what is tested here.)
async fn read_only_stand_in() -> (std::net::SocketAddr, tokio::task::AbortHandle) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let serve = async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut len = [0u8; 4];
                if s.read_exact(&mut len).await.is_err() {
                    return;
                }
                if &len == b"isro" {
                    let _ = s.write_all(b"ro").await;
                    return;
                }
                let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
                if s.read_exact(&mut body).await.is_err() {
                    return;
                }
                // ConnectResponse: protocol, timeout, session id, password, readOnly = true.
                let mut rsp = Vec::new();
                rsp.extend_from_slice(&0i32.to_be_bytes());
                rsp.extend_from_slice(&4000i32.to_be_bytes());
                rsp.extend_from_slice(&0x0ead_beefi64.to_be_bytes());
                rsp.extend_from_slice(&16i32.to_be_bytes());
                rsp.extend_from_slice(&[7u8; 16]);
                rsp.push(1);
                let mut frame = (rsp.len() as u32).to_be_bytes().to_vec();
                frame.extend_from_slice(&rsp);
                if s.write_all(&frame).await.is_err() {
                    return;
                }
                // Answer pings (xid -2) until the client leaves.
                loop {
                    if s.read_exact(&mut len).await.is_err() {
                        return;
                    }
                    let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
                    if s.read_exact(&mut body).await.is_err() {
                        return;
                    }
                    let xid = i32::from_be_bytes(body[..4].try_into().unwrap());
                    let mut reply = 16u32.to_be_bytes().to_vec();
                    reply.extend_from_slice(&xid.to_be_bytes());
                    reply.extend_from_slice(&0i64.to_be_bytes());
                    reply.extend_from_slice(&0i32.to_be_bytes());
                    if s.write_all(&reply).await.is_err() {
                        return;
                    }
                }
            });
        }
    };
    (addr, tokio::spawn(serve).abort_handle())
}

/// A client that allows read-only servers and lands on one keeps looking for a read-write
/// server (`isro`), moves there once one answers, and gets a real session there (its
/// read-only session exists only on the read-only server).
#[tokio::test]
async fn a_read_only_client_moves_to_a_read_write_server() {
    let (ro_addr, ro_task) = read_only_stand_in().await;
    let rw = Server::start(Target::Corral).await;
    let c = Client::builder(&ro_addr.to_string())
        .session_timeout(Duration::from_secs(4))
        .read_only(true)
        .connect_timeout(support::CONNECT_DEADLINE)
        .connect()
        .await
        .unwrap();
    assert_eq!(c.state(), SessionState::ConnectedReadOnly);
    assert_eq!(c.session_id(), 0x0ead_beef);
    let mut states = c.state_watcher();
    c.set_hosts(&format!("{ro_addr},{}", rw.addr())).unwrap();
    within("a read-write connection", async {
        while *states.borrow_and_update() != SessionState::Connected {
            states.changed().await.unwrap();
        }
    })
    .await;
    assert_ne!(
        c.session_id(),
        0x0ead_beef,
        "a new session from the read-write server"
    );
    within("a write", c.create("/rw", b"", CreateMode::Persistent))
        .await
        .unwrap();
    ro_task.abort();
}
