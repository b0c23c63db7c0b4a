//! A short fault-injection run in the test suite: three real members, every workload and
//! checker (the kazoo-set workload too: it needs /usr/bin/python3 with python3-kazoo, which
//! scripts/test installs), kills, pauses and (with network namespaces) partitions; any anomaly
//! fails the test and keeps the run directory for `corral-chaos check`.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use corral_chaos::ensemble::find_corral_binary;
use corral_chaos::history::Workload;
use corral_chaos::nemesis::Fault;
use corral_chaos::runner::{self, RunConfig};

/// Length of the nemesis schedule.
const SCHEDULE: Duration = Duration::from_secs(70);
/// Hang guard for the whole run: schedule, start-up, healing, final reads, checking.
const RUN_LIMIT: Duration = Duration::from_secs(140);

/// The corral binary; built with cargo (same target directory) if this test run lacks it.
fn corral_binary() -> PathBuf {
    if let Ok(bin) = find_corral_binary() {
        return bin;
    }
    let status = Command::new(env!("CARGO"))
        .args(["build", "-p", "corral"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .expect("run cargo build -p corral");
    assert!(status.success(), "cargo build -p corral failed");
    find_corral_binary().expect("corral binary after building it")
}

#[test]
fn three_members_under_kill_pause_and_partition_show_no_anomaly() {
    let binary = corral_binary();
    let seed = std::env::var("CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20261205);
    let cfg = RunConfig {
        time: SCHEDULE,
        members: 3,
        seed,
        faults: vec![Fault::Kill, Fault::Pause, Fault::Partition],
        workloads: Workload::ALL.to_vec(),
        clients_per_workload: 2,
        work_root: std::env::temp_dir(),
        keep: false,
        binary: Some(binary),
        target: Default::default(),
        linearizable_reads: false,
    };
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    // On timeout the run's future is dropped, which kills the members and removes the
    // namespaces.
    let outcome = rt
        .block_on(async { tokio::time::timeout(RUN_LIMIT, runner::run(cfg)).await })
        .unwrap_or_else(|_| panic!("run did not finish within {RUN_LIMIT:?}"))
        .unwrap_or_else(|e| panic!("run failed: {e}"));
    let nemesis: Vec<&str> = outcome.faults_run.iter().map(|f| f.name()).collect();
    let table = runner::table(&outcome.results, &nemesis.join(","), &outcome.phases);
    println!("{table}");
    for s in &outcome.skipped {
        println!("{s}");
    }
    // A skipped partition nemesis must say why; otherwise it must have run.
    assert!(
        outcome.faults_run.contains(&Fault::Partition) || !outcome.skipped.is_empty(),
        "partition neither run nor reported skipped"
    );
    assert!(
        outcome.nemesis_log.iter().any(|l| l.contains("kill -9"))
            && outcome.nemesis_log.iter().any(|l| l.contains("SIGSTOP")),
        "the schedule should have killed and paused: {:?}",
        outcome.nemesis_log
    );
    for w in Workload::ALL {
        let r = outcome
            .results
            .iter()
            .find(|r| r.workload == w)
            .unwrap_or_else(|| panic!("no result for {}", w.name()));
        assert!(r.counts.ok > 0, "{}: no acknowledged op\n{table}", w.name());
    }
    assert_eq!(
        outcome.anomalies(),
        0,
        "anomalies found; run directory kept at {:?} (re-check with `corral-chaos check`)\n{table}",
        outcome.kept_dir
    );
}
