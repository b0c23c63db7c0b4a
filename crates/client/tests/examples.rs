//! Each example runs to completion against a server started by the test, and does what its
//! description says. The example files are compiled in as modules, so the test calls their
//! `run` directly instead of spawning cargo.

mod support;

#[path = "../examples/watch_demo.rs"]
#[allow(dead_code)]
mod watch_demo;

#[path = "../examples/master_election.rs"]
#[allow(dead_code)]
mod master_election;

#[path = "../examples/service_discovery.rs"]
#[allow(dead_code)]
mod service_discovery;

#[path = "../examples/config_center.rs"]
#[allow(dead_code)]
mod config_center;

use corral_client::EventType;
use support::{within, Server, Target};

async fn watch_demo_sees_each_event(target: Target) {
    let server = Server::start(target).await;
    let seen = within("watch_demo", watch_demo::run(&server.connect_string()))
        .await
        .unwrap();
    let demo = |t| (t, "/demo".to_string());
    assert_eq!(
        seen,
        vec![
            demo(EventType::NodeCreated),
            demo(EventType::NodeDataChanged),
            demo(EventType::NodeChildrenChanged),
            demo(EventType::NodeChildrenChanged),
            demo(EventType::NodeDeleted),
        ]
    );
    // A second run finds a clean slate and sees the same.
    let again = within(
        "watch_demo again",
        watch_demo::run(&server.connect_string()),
    )
    .await
    .unwrap();
    assert_eq!(again, seen);
}

async fn master_election_hands_over(target: Target) {
    let server = Server::start(target).await;
    let o = within(
        "master_election",
        master_election::run(&server.connect_string()),
    )
    .await
    .unwrap();
    assert_eq!(o.first_master, "server-0");
    assert_eq!(o.second_master, "server-1");
    let sizes: Vec<usize> = o.lists.iter().map(Vec::len).collect();
    assert_eq!(sizes.first(), Some(&0), "lists {:?}", o.lists);
    assert_eq!(sizes.last(), Some(&2), "lists {:?}", o.lists);
    assert!(sizes.contains(&3), "lists {:?}", o.lists);
    // The survivors are the full list without the first candidate (lowest sequence number).
    let mut full = o.lists.iter().find(|l| l.len() == 3).unwrap().clone();
    full.sort_by_key(|n| n.rsplit('-').next().unwrap().to_string());
    let mut survivors = full[1..].to_vec();
    survivors.sort();
    let mut last = o.lists.last().unwrap().clone();
    last.sort();
    assert_eq!(last, survivors);
}

async fn service_discovery_follows_departures(target: Target) {
    let server = Server::start(target).await;
    let o = within(
        "service_discovery",
        service_discovery::run(&server.connect_string()),
    )
    .await
    .unwrap();
    assert_eq!(o.before.len(), 6);
    assert_eq!(o.after.len(), 6);
    let all = ["server-a", "server-b", "server-c"];
    assert!(o.before.iter().all(|n| all.contains(&n.as_str())));
    assert!(all.contains(&o.gone.as_str()));
    assert!(
        !o.after.contains(&o.gone),
        "{} reached after it left: {:?}",
        o.gone,
        o.after
    );
}

async fn config_center_sees_every_update(target: Target) {
    let server = Server::start(target).await;
    let seen = within(
        "config_center",
        config_center::run(&server.connect_string()),
    )
    .await
    .unwrap();
    assert_eq!(seen.len(), 2);
    let default = config_center::AppConfig::default();
    let cfg = |db: &str, n| config_center::AppConfig {
        db_url: format!("postgres://{db}/app"),
        max_conns: n,
    };
    for app in seen {
        let versions: Vec<_> = app
            .iter()
            .map(|(v, c, e)| (*v, c.clone(), e.is_some()))
            .collect();
        assert_eq!(
            versions,
            vec![
                (None, default.clone(), false),
                (Some(0), cfg("db1", 10), false),
                (Some(1), cfg("db1", 50), false),
                (Some(1), cfg("db1", 50), true),
                (Some(3), cfg("db2", 50), false),
                (None, default.clone(), false),
            ]
        );
    }
}

per_target!(
    watch_demo_sees_each_event,
    master_election_hands_over,
    service_discovery_follows_departures,
    config_center_sees_every_update,
);
