//! Real third-party clients against a three-member Corral ensemble: kazoo and go-zookeeper
//! suites (tests/compat/kazoo_ensemble.py, tests/compat/go_ensemble/main.go) that steer the
//! ensemble through the harness (kill the leader, kill or restart a member) while they run.
//! The tools come from Debian packages that `scripts/test` installs; a missing tool fails the
//! test with a message saying so.

mod ensemble_support;
mod support;

use ensemble_support::{run_steering_suite, Ensemble};
use support::{build_go_suite, repo_root, require_kazoo};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kazoo_against_an_ensemble() {
    let python = require_kazoo();
    let mut ens = Ensemble::start(3, 0).await;
    let hosts = ens.connect_string();
    run_steering_suite(
        &mut ens,
        "kazoo ensemble",
        tokio::process::Command::new(python)
            .current_dir(repo_root())
            .arg("tests/compat/kazoo_ensemble.py")
            .arg(hosts),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_zookeeper_against_an_ensemble() {
    let (_build_dir, binary) = build_go_suite("tests/compat/go_ensemble/main.go");
    let mut ens = Ensemble::start(3, 0).await;
    let hosts = ens.connect_string();
    run_steering_suite(
        &mut ens,
        "go-zookeeper ensemble",
        tokio::process::Command::new(&binary)
            .current_dir(repo_root())
            .arg(hosts),
    )
    .await;
}
