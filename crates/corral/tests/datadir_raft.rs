//! `corral datadir` on a data directory whose txn log directory holds a Raft log.

use std::path::Path;
use std::process::Command;

use corral_storage::{RaftEntry, RaftLog, RaftLogOptions};

fn corral(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_corral"))
        .args(args)
        .output()
        .expect("run corral");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn write_raft_log(dir: &Path) {
    let mut log = RaftLog::open(dir, RaftLogOptions::default()).unwrap();
    let entries: Vec<RaftEntry> = (1..=5)
        .map(|index| RaftEntry {
            index,
            term: 2,
            leader: 3,
            payload: "hello".into(),
        })
        .collect();
    log.append(&entries).unwrap();
    log.save_vote(b"vote-for-3").unwrap();
    log.purge_through(2, 2, 3).unwrap();
}

#[test]
fn list_verify_and_dump_cover_the_raft_log() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path();
    let raft = data.join("raft");
    write_raft_log(&raft);
    let data_arg = data.to_str().unwrap();

    let (ok, out, err) = corral(&["datadir", data_arg, "list"]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("raft log in"), "{out}");
    assert!(out.contains("index 1..=5 terms 2..=2"), "{out}");
    assert!(
        out.contains("last purged: index 2 term 2 leader 3"),
        "{out}"
    );
    assert!(out.contains("\"vote-for-3\""), "{out}");

    let (ok, out, err) = corral(&["datadir", data_arg, "verify"]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("raft log ok: 1 segments, 5 entries"), "{out}");

    let (ok, out, err) = corral(&["datadir", data_arg, "dump"]);
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("index 2 term 2 leader 3 payload \"hello\" (purged)"),
        "{out}"
    );
    assert!(
        out.contains("index 5 term 2 leader 3 payload \"hello\"\n"),
        "{out}"
    );

    // Damage in the middle of the log: verify names the segment and the offset.
    let seg = raft.join(corral_storage::raft_segment_name(1));
    let mut bytes = std::fs::read(&seg).unwrap();
    // Header (16) + first frame (32 + 5); the flipped byte is in the second entry's payload.
    let second = 16 + 37;
    bytes[second + 34] ^= 0xff;
    std::fs::write(&seg, bytes).unwrap();
    let (ok, out, err) = corral(&["datadir", data_arg, "verify"]);
    assert!(!ok, "verify passed a damaged raft log: {out}");
    assert!(
        err.contains(&corral_storage::raft_segment_name(1))
            && err.contains(&format!("offset {second}")),
        "{err}"
    );
}
