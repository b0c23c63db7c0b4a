//! Every client operation against a real server.

mod support;

use std::time::Duration;

use corral_client::{
    acl, perms, Client, CreateMode, CreateOptions, Error, ReadOp, ReadResult, TxnResult, ZkError,
};
use support::{within, Server, Target};

async fn create_get_set_delete(target: Target) {
    let server = Server::start(target).await;
    let c = server.client().await;

    let (path, stat) = c
        .create("/a", b"one", CreateMode::Persistent)
        .await
        .unwrap();
    assert_eq!(path, "/a");
    assert_eq!(stat.version, 0);
    assert_eq!(stat.data_length, 3);
    assert_eq!(
        c.create("/a", b"", CreateMode::Persistent).await,
        Err(Error::Zk(ZkError::NodeExists))
    );
    let (data, stat) = c.get_data("/a").await.unwrap();
    assert_eq!(data, b"one");
    assert_eq!(stat.version, 0);

    let stat = c.set_data("/a", b"two", Some(0)).await.unwrap();
    assert_eq!(stat.version, 1);
    assert_eq!(
        c.set_data("/a", b"three", Some(0)).await,
        Err(Error::Zk(ZkError::BadVersion))
    );
    assert_eq!(c.set_data("/a", b"three", None).await.unwrap().version, 2);

    c.create("/a/b", b"", CreateMode::Persistent).await.unwrap();
    assert_eq!(
        c.delete("/a", None).await,
        Err(Error::Zk(ZkError::NotEmpty))
    );
    assert_eq!(
        c.delete("/a/b", Some(5)).await,
        Err(Error::Zk(ZkError::BadVersion))
    );
    c.delete("/a/b", Some(0)).await.unwrap();
    c.delete("/a", None).await.unwrap();
    assert_eq!(c.get_data("/a").await, Err(Error::Zk(ZkError::NoNode)));
    assert_eq!(c.exists("/a").await, Ok(None));
    assert_eq!(
        c.create("/x/y", b"", CreateMode::Persistent).await,
        Err(Error::Zk(ZkError::NoNode))
    );
}

async fn modes_children_and_ephemerals(target: Target) {
    let server = Server::start(target).await;
    let c = server.client().await;
    let other = server.client().await;

    c.create_all("/q/deep").await.unwrap();
    let (p1, _) = c
        .create("/q/n-", b"", CreateMode::PersistentSequential)
        .await
        .unwrap();
    let (p2, _) = c
        .create("/q/n-", b"", CreateMode::EphemeralSequential)
        .await
        .unwrap();
    assert_eq!(p1, "/q/n-0000000001");
    assert_eq!(p2, "/q/n-0000000002");
    let (e, stat) = c
        .create("/q/eph", b"x", CreateMode::Ephemeral)
        .await
        .unwrap();
    assert_eq!(stat.ephemeral_owner, c.session_id());
    assert_eq!(
        c.create("/q/eph/child", b"", CreateMode::Persistent).await,
        Err(Error::Zk(ZkError::NoChildrenForEphemerals))
    );

    let (mut kids, stat) = c.children("/q").await.unwrap();
    kids.sort();
    assert_eq!(kids, vec!["deep", "eph", "n-0000000001", "n-0000000002"]);
    assert_eq!(stat.num_children, 4);
    assert_eq!(c.all_children_number("/q").await.unwrap(), 4);
    assert!(c.all_children_number("/").await.unwrap() >= 5);

    let mut mine = c.get_ephemerals("/q").await.unwrap();
    mine.sort();
    assert_eq!(mine, vec![e.clone(), p2.clone()]);
    assert!(other.get_ephemerals("/").await.unwrap().is_empty());

    // A container and a TTL node can be created and read back.
    c.create("/box", b"", CreateMode::Container).await.unwrap();
    c.create("/box/item", b"", CreateMode::Persistent)
        .await
        .unwrap();
    let ttl = CreateOptions::new(CreateMode::PersistentWithTtl).ttl(Duration::from_secs(60));
    let (t, _) = c.create("/ttl", b"t", ttl).await.unwrap();
    assert_eq!(t, "/ttl");
    assert!(matches!(
        c.create("/ttl2", b"", CreateMode::PersistentWithTtl).await,
        Err(Error::BadArguments(_))
    ));

    // Closing the session removes its ephemerals for everyone.
    c.close().await;
    assert_eq!(other.exists(&e).await, Ok(None));
    assert_eq!(other.exists(&p2).await, Ok(None));
    assert!(other.exists(&p1).await.unwrap().is_some());
    assert!(matches!(c.get_data("/q").await, Err(Error::Closed)));
}

async fn bad_paths_never_reach_the_server(target: Target) {
    let server = Server::start(target).await;
    let c = server.client().await;
    for bad in ["", "a", "/a/", "/a//b", "/a/./b", "/a/../b", "/nul\u{0}"] {
        assert!(
            matches!(c.get_data(bad).await, Err(Error::BadArguments(_))),
            "{bad:?}"
        );
        assert!(matches!(
            c.create(bad, b"", CreateMode::Persistent).await,
            Err(Error::BadArguments(_))
        ));
    }
    // The session is unharmed.
    assert!(c.exists("/").await.unwrap().is_some());
}

async fn chroot_is_applied_and_stripped(target: Target) {
    let server = Server::start(target).await;
    let root = server.client().await;
    root.create_all("/app/x").await.unwrap();
    let c = Client::connect(&format!("{}/app", server.connect_string()))
        .await
        .unwrap();
    assert_eq!(c.chroot(), "/app");
    let (p, _) = c
        .create("/s-", b"v", CreateMode::EphemeralSequential)
        .await
        .unwrap();
    assert!(p.starts_with("/s-"), "{p}");
    assert_eq!(root.get_data(&format!("/app{p}")).await.unwrap().0, b"v");
    let (mut kids, _) = c.children("/").await.unwrap();
    kids.sort();
    assert_eq!(kids.len(), 2);
    assert_eq!(c.get_ephemerals("/").await.unwrap(), vec![p.clone()]);
    let (_, _, w) = c.get_data_w(&p).await.unwrap();
    root.set_data(&format!("/app{p}"), b"w", None)
        .await
        .unwrap();
    let ev = within("chrooted event", w).await.unwrap();
    assert_eq!(ev.path, p);
}

async fn acls_and_auth(target: Target) {
    let server = Server::start(target).await;
    let c = server.client().await;
    let stranger = server.client().await;

    c.add_auth("digest", b"alice:secret").await.unwrap();
    let who = c.who_am_i().await.unwrap();
    assert!(
        who.iter()
            .any(|i| i.auth_scheme == "digest" && i.user == "alice"),
        "{who:?}"
    );
    let opts = CreateOptions::new(CreateMode::Persistent).acl(acl::creator_all());
    c.create("/private", b"p", opts).await.unwrap();
    let (acl_list, stat) = c.get_acl("/private").await.unwrap();
    assert_eq!(acl_list, vec![acl::digest(perms::ALL, "alice", "secret")]);
    assert_eq!(stat.aversion, 0);
    assert_eq!(
        stranger.get_data("/private").await,
        Err(Error::Zk(ZkError::NoAuth))
    );

    let mut readable = acl::read_unsafe();
    readable.push(acl::digest(perms::ALL, "alice", "secret"));
    assert_eq!(
        c.set_acl("/private", &readable, Some(7)).await,
        Err(Error::Zk(ZkError::BadVersion))
    );
    let stat = c.set_acl("/private", &readable, Some(0)).await.unwrap();
    assert_eq!(stat.aversion, 1);
    assert_eq!(stranger.get_data("/private").await.unwrap().0, b"p");
    assert_eq!(
        stranger.set_data("/private", b"no", None).await,
        Err(Error::Zk(ZkError::NoAuth))
    );
    c.sync("/private").await.unwrap();
}

async fn unknown_auth_scheme_fails_the_session(target: Target) {
    let server = Server::start(target).await;
    let c = server.client().await;
    assert_eq!(
        c.add_auth("nosuchscheme", b"x").await,
        Err(Error::AuthFailed)
    );
    support::wait_state(&c, "AuthFailed", |s| {
        *s == corral_client::SessionState::AuthFailed
    })
    .await;
    assert_eq!(c.exists("/").await, Err(Error::AuthFailed));
}

async fn transactions(target: Target) {
    let server = Server::start(target).await;
    let c = server.client().await;
    c.create("/t", b"0", CreateMode::Persistent).await.unwrap();

    let results = c
        .transaction()
        .create("/t/a", b"a", CreateMode::Persistent)
        .set_data("/t", b"1", Some(0))
        .check("/t", 1)
        .create("/t/s-", b"", CreateMode::PersistentSequential)
        .delete("/t/a", None)
        .commit()
        .await
        .unwrap();
    assert_eq!(results.len(), 5);
    assert!(matches!(&results[0], TxnResult::Create { path, .. } if path == "/t/a"));
    assert!(matches!(&results[1], TxnResult::SetData(s) if s.version == 1));
    assert_eq!(results[2], TxnResult::Check);
    assert!(matches!(&results[3], TxnResult::Create { path, .. } if path == "/t/s-0000000001"));
    assert_eq!(results[4], TxnResult::Delete);

    // A failing op aborts all of them.
    let err = c
        .transaction()
        .create("/t/b", b"", CreateMode::Persistent)
        .check("/t", 0)
        .set_data("/t", b"x", None)
        .commit()
        .await
        .unwrap_err();
    assert_eq!(
        err,
        Error::MultiFailed {
            index: 1,
            code: ZkError::BadVersion
        }
    );
    assert_eq!(c.exists("/t/b").await, Ok(None));
    assert_eq!(c.get_data("/t").await.unwrap().0, b"1");

    // Argument errors are reported before sending.
    assert!(matches!(
        c.transaction().delete("bad", None).commit().await,
        Err(Error::BadArguments(_))
    ));

    let reads = c
        .multi_read(&[
            ReadOp::GetData("/t".into()),
            ReadOp::GetChildren("/t".into()),
            ReadOp::GetData("/missing".into()),
        ])
        .await
        .unwrap();
    assert!(matches!(&reads[0], Ok(ReadResult::Data { data, .. }) if data == b"1"));
    assert_eq!(
        reads[1],
        Ok(ReadResult::Children(vec!["s-0000000001".into()]))
    );
    assert_eq!(reads[2], Err(Error::Zk(ZkError::NoNode)));
}

async fn requests_are_pipelined_in_order(target: Target) {
    let server = Server::start(target).await;
    let c = server.client().await;
    c.create("/p", b"", CreateMode::Persistent).await.unwrap();
    // All requests are in flight at once; the server sees them in submission order, so the
    // sequence numbers follow it.
    let futs = (0..200).map(|i| {
        let c = c.clone();
        async move {
            c.create(
                "/p/n-",
                i.to_string().as_bytes(),
                CreateMode::PersistentSequential,
            )
            .await
        }
    });
    let created = within("200 creates", futures::future::join_all(futs)).await;
    for (i, r) in created.into_iter().enumerate() {
        let (path, _) = r.unwrap();
        assert_eq!(path, format!("/p/n-{i:010}"));
    }
    assert_eq!(c.children("/p").await.unwrap().0.len(), 200);
}

async fn connect_skips_dead_hosts(target: Target) {
    let server = Server::start(target).await;
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let cs = format!("{dead},{}", server.connect_string());
    for _ in 0..3 {
        let c = Client::builder(&cs)
            .session_timeout(Duration::from_secs(4))
            .connect_timeout(support::CONNECT_DEADLINE)
            .connect()
            .await
            .unwrap();
        assert!(c.exists("/").await.unwrap().is_some());
    }
    // Nothing listening at all: connect gives up with Timeout.
    let r = Client::builder(&dead.to_string())
        .session_timeout(Duration::from_secs(1))
        .connect()
        .await;
    assert!(matches!(r, Err(Error::Timeout)), "{r:?}");
}

per_target!(
    create_get_set_delete,
    modes_children_and_ephemerals,
    bad_paths_never_reach_the_server,
    chroot_is_applied_and_stripped,
    acls_and_auth,
    unknown_auth_scheme_fails_the_session,
    transactions,
    requests_are_pipelined_in_order,
    connect_skips_dead_hosts,
);
