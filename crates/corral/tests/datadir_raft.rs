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

/// Runs `corral server` on `cfg` and returns (exit success, stderr) once it exits; it must
/// exit on its own (a refusal), within the hang guard.
fn server_refusal(cfg: &Path) -> (bool, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_corral"))
        .args(["server", "--config", cfg.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run corral server");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            use std::io::Read;
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            return (status.success(), err);
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("corral server did not refuse to start within 60 s");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A member never starts empty on a standalone server's data, nor a standalone server on a
/// member's Raft log: either would leave every stored znode behind without a word.
#[test]
fn a_server_refuses_a_data_directory_the_other_kind_of_server_wrote() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    // A standalone server's files (names are what tells them apart).
    std::fs::write(data.join("log.0000000100000001"), b"").unwrap();
    std::fs::write(data.join("myid"), b"1\n").unwrap();
    let cfg = tmp.path().join("member.cfg");
    std::fs::write(
        &cfg,
        format!(
            "tickTime=2000\ninitLimit=10\nsyncLimit=5\ndataDir={}\nadmin.enableServer=false\n\
             server.1=127.0.0.1:{}:{};127.0.0.1:{}\n",
            data.display(),
            free_port(),
            free_port(),
            free_port()
        ),
    )
    .unwrap();
    let (ok, err) = server_refusal(&cfg);
    assert!(!ok);
    assert!(err.contains("holds a standalone server's data"), "{err}");
    assert!(err.contains("1 txn log file(s)"), "{err}");
    assert!(err.contains("corral datadir migrate --config"), "{err}");

    // The other way round: a Raft log under a standalone configuration.
    let data2 = tmp.path().join("data2");
    write_raft_log(&data2.join("raft"));
    let cfg2 = tmp.path().join("standalone.cfg");
    std::fs::write(
        &cfg2,
        format!(
            "tickTime=2000\ndataDir={}\nclientPort={}\nadmin.enableServer=false\n",
            data2.display(),
            free_port()
        ),
    )
    .unwrap();
    let (ok, err) = server_refusal(&cfg2);
    assert!(!ok);
    assert!(err.contains("holds an ensemble member's Raft log"), "{err}");
}
