//! Master election under `/master`: three candidates, an observer that follows the candidate
//! list continuously, the master dies, the next candidate takes over.
//!
//! Each candidate is an ephemeral-sequential node; the lowest leads and every other watches
//! only the one just ahead of it, so a departure wakes one candidate, not all. The observer
//! uses a children cache: its list is re-read after every change with no window between an
//! event and the re-arming of a watch, the race a loop of one-shot `ChildrenW` calls has.
//!
//! ```text
//! cargo run -p corral-client --example master_election [-- HOST:PORT]
//! ```

// tests/examples.rs compiles every example into one crate, loading this once per example.
#[allow(clippy::duplicate_mod)]
mod common;

use corral_client::recipes::{ChildrenCache, LeaderElection, LeadershipEvent};
use corral_client::{Client, Error};

/// What the run saw.
#[derive(Debug)]
pub struct Outcome {
    pub first_master: String,
    pub second_master: String,
    /// Every candidate list the observer saw, in order.
    pub lists: Vec<Vec<String>>,
}

pub async fn run(connect_string: &str) -> Result<Outcome, Error> {
    let observer = Client::connect(connect_string).await?;
    let mut cache = ChildrenCache::start(&observer, "/master").await?;
    let (lists_tx, mut lists_rx) = tokio::sync::mpsc::unbounded_channel();
    let watching = tokio::spawn(async move {
        let mut last = None;
        loop {
            let list = cache.current().unwrap_or_default();
            if last.as_ref() != Some(&list) {
                println!("observer: candidates {list:?}");
                if lists_tx.send(list.clone()).is_err() {
                    return;
                }
                last = Some(list);
            }
            if cache.changed().await.is_err() {
                return;
            }
        }
    });

    let mut clients = Vec::new();
    let mut candidacies = Vec::new();
    for i in 0..3 {
        let c = Client::connect(connect_string).await?;
        let name = format!("server-{i}");
        let l = LeaderElection::new(&c, "/master")
            .campaign(name.as_bytes())
            .await?;
        println!("{name}: campaigning as {}", l.path());
        clients.push(c);
        candidacies.push((name, l));
    }

    let election = LeaderElection::new(&observer, "/master");
    let first = candidacies[0].1.next_event().await;
    assert_eq!(first, Some(LeadershipEvent::Elected));
    let first_master =
        String::from_utf8_lossy(&election.leader().await?.unwrap_or_default()).into_owned();
    println!(
        "{}: I am the master (election says {first_master})",
        candidacies[0].0
    );

    // The master's process dies: its session ends and its node goes with it.
    println!("{}: dying", candidacies[0].0);
    clients[0].close().await;
    let (dead, mut old) = candidacies.remove(0);
    assert_eq!(old.next_event().await, Some(LeadershipEvent::Revoked));
    println!("{dead}: no longer master");

    let event = candidacies[0].1.next_event().await;
    assert_eq!(event, Some(LeadershipEvent::Elected));
    let second_master =
        String::from_utf8_lossy(&election.leader().await?.unwrap_or_default()).into_owned();
    println!(
        "{}: took over as master (election says {second_master})",
        candidacies[0].0
    );
    // The third candidate has had a round trip since, and still follows.
    clients[2].sync("/").await?;
    assert!(!candidacies[1].1.is_leader());
    println!("{}: still a follower", candidacies[1].0);

    // Wait until the observer has seen the list without the dead master.
    let mut lists: Vec<Vec<String>> = Vec::new();
    while let Some(list) = lists_rx.recv().await {
        let done = list.len() == 2 && lists.iter().any(|l| l.len() == 3);
        lists.push(list);
        if done {
            break;
        }
    }
    watching.abort();
    for (_, l) in candidacies {
        l.resign().await?;
    }
    for c in &clients[1..] {
        c.close().await;
    }
    observer.close().await;
    Ok(Outcome {
        first_master,
        second_master,
        lists,
    })
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (connect_string, _server) = common::server_from_args().await;
    let outcome = run(&connect_string).await?;
    println!(
        "master {} died, {} took over; done",
        outcome.first_master, outcome.second_master
    );
    Ok(())
}
