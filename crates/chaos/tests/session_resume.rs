//! A lagging member must not declare a live session expired.
//!
//! Found by the session workload of `corral-chaos` (RELIABILITY.md, "Findings"): a member
//! restarted after kill -9 answered a resume of a live session (by id and password, from a
//! client that had seen no zxid yet) with "session expired", because it had not yet applied
//! the session's creation; the session and its ephemerals lived on. Followers now sync with
//! the leader before calling a session they do not know expired, as ZooKeeper's followers ask
//! the leader to revalidate it.

use std::time::{Duration, Instant};

use corral_chaos::ensemble::{find_corral_binary, Ensemble};
use corral_client::{Client, CreateMode, Error};

const PATIENCE: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_member_does_not_expire_a_live_session_it_has_not_caught_up_with() {
    let binary =
        find_corral_binary().expect("build the corral binary first: cargo build -p corral");
    let root = tempfile::tempdir().unwrap();
    let mut ens = Ensemble::start(root.path(), 3, binary, None).unwrap();
    let leader = ens.wait_stable(PATIENCE).await.unwrap();
    let lagging = ens.ids().into_iter().find(|&id| id != leader).unwrap();
    ens.kill9(lagging);
    let others: Vec<String> = ens
        .ids()
        .into_iter()
        .filter(|&id| id != lagging)
        .map(|id| ens.member(id).client_addr())
        .collect();

    let mut false_expiries = 0;
    let mut resumed_clients = Vec::new();
    for round in 0..5 {
        // A live session with an ephemeral, created while the member is down.
        let owner = Client::builder(&others.join(","))
            .session_timeout(Duration::from_secs(20))
            .connect_timeout(PATIENCE)
            .connect()
            .await
            .unwrap();
        let path = format!("/live-{round}");
        owner
            .create(&path, b"", CreateMode::Ephemeral)
            .await
            .unwrap();

        ens.restart(lagging).unwrap();
        // Resume the session on the restarted member only, as a new process would.
        let deadline = Instant::now() + PATIENCE;
        loop {
            let probe = Client::builder(&ens.member(lagging).client_addr())
                .session_timeout(Duration::from_secs(20))
                .session(owner.session_id(), owner.session_password())
                .connect_timeout(Duration::from_secs(2))
                .connect()
                .await;
            match probe {
                Ok(resumed) => {
                    // Dropping the last handle of a client closes its session, which would
                    // remove the ephemeral: keep it until the end.
                    resumed_clients.push(resumed);
                    break;
                }
                Err(Error::SessionExpired) => {
                    false_expiries += 1;
                    break;
                }
                Err(_) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await
                }
                Err(e) => panic!("member {lagging} never answered: {e}"),
            }
        }
        // The owner may have been moved to the restarted member by the resume; either way the
        // session is alive, so its ephemeral must still be there.
        let check = Client::builder(&others.join(","))
            .connect_timeout(PATIENCE)
            .connect()
            .await
            .unwrap();
        assert!(check.exists(&path).await.unwrap().is_some());
        ens.kill9(lagging);
    }
    assert_eq!(
        false_expiries, 0,
        "member {lagging} declared a live session expired in {false_expiries} of 5 rounds"
    );
}
