//! A member whose disk fills up under write load: first a follower's, then the leader's. The
//! ensemble must keep serving with the majority, no acknowledged write may be lost, and once
//! the space is back the member must rejoin (restarted if it stopped, which is what Corral does
//! on a failed log write) and hold every acknowledged write.
//!
//! Each member's data directory is a tmpfs of its own (`corral_chaos::disk`); needs root and
//! `mount`, else the test prints why and passes vacuously. About 40 s.

use std::time::Duration;

use corral_chaos::disk::{free_bytes, MemberDisks, MEMBER_FS_MIB};
use corral_chaos::ensemble::{find_corral_binary, member_dir, Ensemble};

mod common;
use common::Writers;

const PATIENCE: Duration = Duration::from_secs(30);
/// How long each disk stays full, with writes going on.
const HOLD: Duration = Duration::from_secs(6);
/// Hang guard for the whole test.
const TEST_LIMIT: Duration = Duration::from_secs(120);
const WRITERS: usize = 3;
const ROOT: &str = "/diskfull";

/// Fills member `id`'s disk for [`HOLD`] while the writers run; returns how many writes were
/// acknowledged meanwhile. Heals, and restarts the member if it stopped.
async fn fill_and_heal(ens: &mut Ensemble, id: u64, writers: &Writers) -> usize {
    let disk = ens.disks.as_ref().unwrap().path(id).unwrap().to_path_buf();
    let ballast = ens.disks.as_mut().unwrap().fill(id).expect("fill the disk");
    assert!(ballast > 0);
    assert!(
        free_bytes(&disk).unwrap() < 64 * 1024,
        "the disk of member {id} is not full"
    );
    let before = writers.acked_count();
    tokio::time::sleep(HOLD).await;
    let during = writers.acked_count() - before;
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
        let writers = Writers::start(&ens, ROOT, WRITERS, Duration::from_secs(10), PATIENCE).await;

        let follower = ens.ids().into_iter().find(|&id| id != leader).unwrap();
        let during_follower = fill_and_heal(&mut ens, follower, &writers).await;
        assert!(
            during_follower > 0,
            "no write acknowledged while follower {follower}'s disk was full"
        );
        ens.wait_stable(PATIENCE).await.unwrap();

        let leader = ens.wait_stable(PATIENCE).await.unwrap();
        let during_leader = fill_and_heal(&mut ens, leader, &writers).await;
        // The majority elects a new leader within the hold and serves again.
        assert!(
            during_leader > 0,
            "no write acknowledged while leader {leader}'s disk was full"
        );
        ens.wait_stable(PATIENCE).await.unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
        let total = writers.stop_and_check(&mut ens, PATIENCE).await;
        println!(
            "{total} writes acknowledged ({during_follower} with follower {follower}'s disk full, \
             {during_leader} with leader {leader}'s)"
        );
    })
    .await
    .unwrap_or_else(|_| panic!("test did not finish within {TEST_LIMIT:?}"));
    ens.stop_all();
}
