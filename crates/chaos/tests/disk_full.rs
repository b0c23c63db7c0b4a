//! A member whose disk fills up under write load: first a follower's, then the leader's. The
//! ensemble must keep serving with the majority, no acknowledged write may be lost, and once
//! the space is back the member must rejoin (restarted if it stopped, which is what Corral does
//! on a failed log write) and hold every acknowledged write.
//!
//! Each member's data directory is a tmpfs of its own (`corral_chaos::disk`); needs root and
//! `mount`, else the test prints why and passes vacuously. About 40 s.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use corral_chaos::disk::{free_bytes, MemberDisks, MEMBER_FS_MIB};
use corral_chaos::ensemble::{find_corral_binary, member_dir, Ensemble};
use corral_client::{Client, CreateMode, Error};
use tokio::sync::watch;

const PATIENCE: Duration = Duration::from_secs(30);
/// How long each disk stays full, with writes going on.
const HOLD: Duration = Duration::from_secs(6);
/// Hang guard for the whole test.
const TEST_LIMIT: Duration = Duration::from_secs(120);
const WRITERS: usize = 3;
const OP_TIMEOUT: Duration = Duration::from_secs(5);
const ROOT: &str = "/diskfull";

/// Creates `/diskfull/w<n>-<i>` one after the other until stopped, retrying through errors;
/// records the paths the ensemble acknowledged.
async fn writer(
    connect: String,
    n: usize,
    acked: Arc<Mutex<Vec<String>>>,
    stop: watch::Receiver<bool>,
) {
    let mut i = 0u64;
    let mut client: Option<Client> = None;
    while !*stop.borrow() {
        let c = match &client {
            Some(c) => c.clone(),
            None => {
                match Client::builder(&connect)
                    .session_timeout(Duration::from_secs(10))
                    .connect_timeout(Duration::from_secs(5))
                    .connect()
                    .await
                {
                    Ok(c) => {
                        client = Some(c.clone());
                        c
                    }
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                }
            }
        };
        let path = format!("{ROOT}/w{n}-{i}");
        i += 1;
        match tokio::time::timeout(OP_TIMEOUT, c.create(&path, b"x", CreateMode::Persistent)).await
        {
            Ok(Ok(_)) => acked.lock().unwrap().push(path),
            Ok(Err(Error::SessionExpired | Error::AuthFailed | Error::Closed)) => client = None,
            // Unknown outcome or refused: either way not acknowledged; a fresh path next.
            Ok(Err(_)) | Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

fn acked_count(acked: &Mutex<Vec<String>>) -> usize {
    acked.lock().unwrap().len()
}

/// Fills member `id`'s disk for [`HOLD`] while the writers run; returns how many writes were
/// acknowledged meanwhile. Heals, and restarts the member if it stopped.
async fn fill_and_heal(ens: &mut Ensemble, id: u64, acked: &Mutex<Vec<String>>) -> usize {
    let disk = ens.disks.as_ref().unwrap().path(id).unwrap().to_path_buf();
    let ballast = ens.disks.as_mut().unwrap().fill(id).expect("fill the disk");
    assert!(ballast > 0);
    assert!(
        free_bytes(&disk).unwrap() < 64 * 1024,
        "the disk of member {id} is not full"
    );
    let before = acked_count(acked);
    tokio::time::sleep(HOLD).await;
    let during = acked_count(acked) - before;
    ens.disks.as_mut().unwrap().drain(id).unwrap();
    if let Some(status) = ens.reap_exited(id) {
        println!("member {id} exited on the full disk ({status}); restarting it");
        let log = std::fs::read_to_string(ens.member(id).log_path()).unwrap_or_default();
        for line in log
            .lines()
            .filter(|l| l.contains("quit RaftCore") || l.contains("stopping"))
        {
            println!("  member {id}: {line}");
        }
        ens.restart(id).unwrap();
    } else {
        println!("member {id} kept running on the full disk");
    }
    during
}

/// Reads `/diskfull`'s children from member `id` alone (after a sync), until it holds every
/// path in `want` or the patience runs out; returns what is missing.
async fn missing_on(ens: &Ensemble, id: u64, want: &BTreeSet<String>) -> Vec<String> {
    let deadline = Instant::now() + PATIENCE;
    let mut missing: Vec<String> = want.iter().cloned().collect();
    while Instant::now() < deadline {
        let read = async {
            let c = Client::builder(&ens.member(id).client_addr())
                .session_timeout(Duration::from_secs(10))
                .connect_timeout(Duration::from_secs(5))
                .connect()
                .await?;
            c.sync(ROOT).await?;
            let (kids, _) = c.children(ROOT).await?;
            c.close().await;
            Ok::<_, Error>(kids)
        };
        if let Ok(Ok(kids)) = tokio::time::timeout(OP_TIMEOUT * 2, read).await {
            let have: BTreeSet<String> = kids.into_iter().map(|k| format!("{ROOT}/{k}")).collect();
            missing = want.difference(&have).cloned().collect();
            if missing.is_empty() {
                return missing;
            }
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    missing
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_on_a_follower_then_the_leader_loses_no_acknowledged_write() {
    if let Some(reason) = MemberDisks::unavailable_reason() {
        println!("SKIPPED: {reason}");
        return;
    }
    let binary =
        find_corral_binary().expect("build the corral binary first: cargo build -p corral");
    // Declared before the ensemble, so the mounts inside are gone before the directory is.
    let root = tempfile::tempdir().unwrap();
    let disks = MemberDisks::mount(
        &[1, 2, 3],
        |id| member_dir(root.path(), id).join("data"),
        MEMBER_FS_MIB,
    )
    .unwrap();
    let mut ens = Ensemble::start(root.path(), 3, binary, None).unwrap();
    ens.disks = Some(disks);

    tokio::time::timeout(TEST_LIMIT, async {
        let leader = ens.wait_stable(PATIENCE).await.unwrap();
        let setup = Client::builder(&ens.connect_string())
            .connect_timeout(PATIENCE)
            .connect()
            .await
            .unwrap();
        setup
            .create(ROOT, b"", CreateMode::Persistent)
            .await
            .unwrap();
        setup.close().await;

        let acked = Arc::new(Mutex::new(Vec::new()));
        let (stop_tx, stop_rx) = watch::channel(false);
        let writers: Vec<_> = (0..WRITERS)
            .map(|n| {
                tokio::spawn(writer(
                    ens.connect_string(),
                    n,
                    acked.clone(),
                    stop_rx.clone(),
                ))
            })
            .collect();
        tokio::time::sleep(Duration::from_secs(1)).await;

        let follower = ens.ids().into_iter().find(|&id| id != leader).unwrap();
        let during_follower = fill_and_heal(&mut ens, follower, &acked).await;
        assert!(
            during_follower > 0,
            "no write acknowledged while follower {follower}'s disk was full"
        );
        ens.wait_stable(PATIENCE).await.unwrap();

        let leader = ens.wait_stable(PATIENCE).await.unwrap();
        let during_leader = fill_and_heal(&mut ens, leader, &acked).await;
        // The majority elects a new leader within the hold and serves again.
        assert!(
            during_leader > 0,
            "no write acknowledged while leader {leader}'s disk was full"
        );
        ens.wait_stable(PATIENCE).await.unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
        let _ = stop_tx.send(true);
        for w in writers {
            let _ = tokio::time::timeout(OP_TIMEOUT * 2, w).await;
        }
        ens.check_alive().unwrap();

        let want: BTreeSet<String> = acked.lock().unwrap().iter().cloned().collect();
        println!(
            "{} writes acknowledged ({during_follower} with follower {follower}'s disk full, \
             {during_leader} with leader {leader}'s)",
            want.len()
        );
        for id in ens.ids() {
            let missing = missing_on(&ens, id, &want).await;
            assert!(
                missing.is_empty(),
                "member {id} lacks {} acknowledged writes, e.g. {:?}",
                missing.len(),
                &missing[..missing.len().min(5)]
            );
        }
    })
    .await
    .unwrap_or_else(|_| panic!("test did not finish within {TEST_LIMIT:?}"));
    ens.stop_all();
}
