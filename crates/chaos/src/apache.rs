//! The reference run: the same workloads, nemeses and checkers against a real Apache
//! ZooKeeper 3.8 ensemble (the Debian `zookeeper` package's QuorumPeerMain, started by the
//! repository's `scripts/apache-zk --quorum`). Its results, next to Corral's with the same
//! seed, tell which findings are Corral's and which are ZooKeeper's own semantics.
//!
//! Members get the same zoo.cfg as Corral's (`server.N=ip:peer:election:participant;ip:client`
//! is ZooKeeper's own dynamic-configuration syntax) plus [`EXTRA_CONFIG`].

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crate::check::WorkloadResult;
use crate::ensemble::EnsembleError;
use crate::history::Workload;

/// Which implementation the ensemble runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Target {
    #[default]
    Corral,
    Apache,
}

impl Target {
    pub fn parse(s: &str) -> Option<Target> {
        match s {
            "corral" => Some(Target::Corral),
            "apache" => Some(Target::Apache),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Target::Corral => "corral",
            Target::Apache => "apache",
        }
    }
}

/// zoo.cfg lines only Apache members get: no AdminServer (it would need a free port 8080 per
/// member).
pub const EXTRA_CONFIG: &str = "admin.enableServer=false\n";

/// JVM flags of each member (read by `scripts/apache-zk`; ignored by `corral`): a small heap
/// and a quick-starting JIT, since three JVMs share the machine with the clients.
pub const JAVA_OPTS: &str = "-Xmx192m -XX:+UseSerialGC -XX:TieredStopAtLevel=1";

/// The jar `scripts/apache-zk` runs.
const ZOOKEEPER_JAR: &str = "/usr/share/java/zookeeper.jar";

/// Finds `scripts/apache-zk`: `$APACHE_ZK_SCRIPT`, else the one in the source tree this tool
/// was built from. Fails if the Debian package's jar is missing.
pub fn find_script() -> Result<PathBuf, EnsembleError> {
    let script = match std::env::var_os("APACHE_ZK_SCRIPT") {
        Some(p) => PathBuf::from(p),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/apache-zk"),
    };
    if !script.is_file() {
        return Err(EnsembleError::NoBinary(format!(
            "{} (set APACHE_ZK_SCRIPT to scripts/apache-zk)",
            script.display()
        )));
    }
    if !Path::new(ZOOKEEPER_JAR).is_file() {
        return Err(EnsembleError::NoBinary(format!(
            "{ZOOKEEPER_JAR} (Debian package zookeeper; scripts/test installs it)"
        )));
    }
    Ok(script)
}

/// Program and leading arguments that start one member; the zoo.cfg path follows. The script
/// ends in `exec java`, so the process signalled by the nemesis is the JVM itself.
pub fn program(script: &Path) -> (PathBuf, Vec<OsString>) {
    (
        PathBuf::from("bash"),
        vec![script.as_os_str().to_owned(), "--quorum".into()],
    )
}

/// The watch checker's "never delivered" lines, which on Apache ZooKeeper are its documented
/// semantics rather than a fault: after a reconnect it re-registers persistent watches
/// (setWatches2) without replaying the changes made while the client was away, and sends no
/// marker. They are moved to the notes (counted there), so the reference run fails only on
/// anomalies ZooKeeper does not explain. Returns how many lines were moved.
pub fn reclassify_known(results: &mut [WorkloadResult]) -> usize {
    let mut moved = 0;
    for r in results.iter_mut().filter(|r| r.workload == Workload::Watch) {
        let (known, rest): (Vec<String>, Vec<String>) = r
            .report
            .anomalies
            .drain(..)
            .partition(|a| a.contains("never delivered"));
        r.report.anomalies = rest;
        for a in known {
            moved += 1;
            r.report.notes.push(format!(
                "silent watch loss (ZooKeeper does not replay persistent-watch events missed \
                 across a reconnect, and declares no gap): {a}"
            ));
        }
    }
    moved
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::{Counts, Report};

    #[test]
    fn only_undelivered_watch_events_are_reclassified() {
        let mut results = vec![
            WorkloadResult {
                workload: Workload::Watch,
                counts: Counts::default(),
                report: Report {
                    anomalies: vec![
                        "watcher 3: 2 acknowledged changes never delivered (zxids [..])".into(),
                        "watcher 3: duplicate event for zxid 0x5".into(),
                    ],
                    notes: vec![],
                    inconclusive: false,
                },
            },
            WorkloadResult {
                workload: Workload::Set,
                counts: Counts::default(),
                report: Report {
                    anomalies: vec!["1 acknowledged adds missing never delivered".into()],
                    notes: vec![],
                    inconclusive: false,
                },
            },
        ];
        assert_eq!(reclassify_known(&mut results), 1);
        assert_eq!(
            results[0].report.anomalies,
            ["watcher 3: duplicate event for zxid 0x5"]
        );
        assert!(results[0].report.notes[0].starts_with("silent watch loss"));
        assert_eq!(results[1].report.anomalies.len(), 1);
        assert_eq!(Target::parse("apache"), Some(Target::Apache));
        assert_eq!(Target::parse("zk"), None);
    }
}
