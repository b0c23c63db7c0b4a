//! A third-party client in the harness: the `kazoo-set` workload runs
//! `crates/chaos/kazoo_workload.py` on kazoo (Debian `python3-kazoo`) as a client task. The
//! script creates unique znodes under `/chaos/kset` and writes every operation to stdout as a
//! JSON line in the history's own format, timed on the same monotonic clock; this task feeds
//! those lines into the run's recorder, and the set checker judges them with the final read
//! the runner records as `KazooSetFinal`.
//!
//! The script runs until its stdin closes, which is how the task tells it the workload phase
//! is over.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

use crate::check::{set, Report};
use crate::history::{Call, Op};
use crate::workload::{Ctx, ROOT};

/// The interpreter that has kazoo (the Debian package installs into the system Python).
pub const PYTHON: &str = "/usr/bin/python3";
/// How long the script may take to finish its last operation and exit after being told to
/// stop; then it is killed. Its ops are bounded by the op timeout, so this is one op timeout
/// plus kazoo's own shutdown.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// The kazoo set's parent znode.
pub fn dir() -> String {
    format!("{ROOT}/kset")
}

/// `$KAZOO_WORKLOAD_SCRIPT`, else the script in the source tree this tool was built from.
pub fn script() -> PathBuf {
    match std::env::var_os("KAZOO_WORKLOAD_SCRIPT") {
        Some(p) => PathBuf::from(p),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("kazoo_workload.py"),
    }
}

/// CLOCK_MONOTONIC now, in ns: the clock `Instant` uses on Linux and Python's
/// `time.monotonic_ns()` reads, so the script can time ops against the run's start.
fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime(2) writes the timespec we pass; CLOCK_MONOTONIC always exists.
    unsafe {
        libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts);
    }
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// One kazoo client task as process `process`: runs the script until the workload phase ends
/// and records what it reports.
pub async fn run(ctx: Ctx, process: u32) {
    let start_monotonic_ns = monotonic_ns().saturating_sub(ctx.rec.now_ns());
    let spawned = Command::new(PYTHON)
        .arg(script())
        .arg("--hosts")
        .arg(&ctx.connect_string)
        .arg("--process")
        .arg(process.to_string())
        .arg("--start-monotonic-ns")
        .arg(start_monotonic_ns.to_string())
        .arg("--session-timeout-ms")
        .arg(ctx.session_timeout.as_millis().to_string())
        .arg("--op-timeout-ms")
        .arg(ctx.op_timeout.as_millis().to_string())
        .arg("--root")
        .arg(dir())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn();
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(%e, "cannot start the kazoo workload ({PYTHON} {})", script().display());
            return;
        }
    };
    let Some(stdout) = child.stdout.take() else {
        return;
    };
    let mut lines = BufReader::new(stdout).lines();
    let mut stdin = child.stdin.take();
    let mut stop = ctx.stop.clone();
    let mut deadline: Option<tokio::time::Instant> = None;
    let (mut recorded, mut malformed) = (0usize, 0usize);
    loop {
        if deadline.is_none() && *stop.borrow() {
            // Closing stdin is the script's stop signal.
            stdin = None;
            deadline = Some(tokio::time::Instant::now() + STOP_GRACE);
        }
        let grace_over = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            line = lines.next_line() => match line {
                Ok(Some(line)) => match serde_json::from_str::<Op>(&line) {
                    Ok(op) => {
                        ctx.rec.record(op);
                        recorded += 1;
                    }
                    Err(e) => {
                        malformed += 1;
                        tracing::warn!(%e, line, "kazoo workload: not a history line");
                    }
                },
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(%e, "kazoo workload: reading its output failed");
                    break;
                }
            },
            changed = stop.changed(), if deadline.is_none() => {
                if changed.is_err() {
                    // The runner is gone: stop as if told to.
                    stdin = None;
                    deadline = Some(tokio::time::Instant::now() + STOP_GRACE);
                }
            }
            _ = grace_over => {
                tracing::warn!(process, "kazoo workload did not exit in time; killing it");
                let _ = child.start_kill();
                break;
            }
        }
    }
    drop(stdin);
    let status = tokio::time::timeout(Duration::from_secs(2), child.wait()).await;
    tracing::debug!(process, recorded, malformed, ?status, "kazoo workload done");
    if recorded == 0 {
        tracing::error!(
            process,
            ?status,
            "the kazoo workload recorded nothing (is python3-kazoo installed?)"
        );
    }
}

/// The set checker on the kazoo ops: the same rules as the Rust clients' set.
pub fn check(ops: &[&Op]) -> Report {
    let as_set: Vec<Op> = ops
        .iter()
        .filter_map(|op| {
            let call = match &op.call {
                Call::KazooSetAdd { elem } => Call::SetAdd { elem: *elem },
                Call::KazooSetFinal { elems } => Call::SetFinal {
                    elems: elems.clone(),
                },
                _ => return None,
            };
            Some(Op {
                call,
                ..(*op).clone()
            })
        })
        .collect();
    set::check(&as_set.iter().collect::<Vec<_>>())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::Outcome;

    #[test]
    fn a_line_in_the_scripts_format_parses_as_an_op() {
        let line = r#"{"process": 7, "invoke_ns": 1, "complete_ns": 2, "outcome": "info", "f": "kazoo_set_add", "elem": 30064771073, "error": "ConnectionLoss"}"#;
        let op: Op = serde_json::from_str(line).unwrap();
        assert_eq!(op.call, Call::KazooSetAdd { elem: 30064771073 });
        assert_eq!(op.outcome, Outcome::Info);
        assert_eq!(op.error.as_deref(), Some("ConnectionLoss"));
    }

    #[test]
    fn the_set_rules_judge_kazoo_ops() {
        let ops = [
            Op::ok(1, 0, 5, Call::KazooSetAdd { elem: 1 }),
            Op::ok(1, 10, 15, Call::KazooSetAdd { elem: 2 }),
            Op::ok(0, 100, 110, Call::KazooSetFinal { elems: vec![2] }),
        ];
        let rep = check(&ops.iter().collect::<Vec<_>>());
        assert_eq!(rep.anomalies.len(), 1, "{rep:?}");
        assert!(rep.anomalies[0].contains("missing"), "{rep:?}");
        let clean = [
            Op::ok(1, 0, 5, Call::KazooSetAdd { elem: 1 }),
            Op::ok(0, 100, 110, Call::KazooSetFinal { elems: vec![1] }),
        ];
        assert!(check(&clean.iter().collect::<Vec<_>>()).is_valid());
    }
}
