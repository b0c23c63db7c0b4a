//! A one-member ensemble (a real Raft log and openraft, no peers), for what one member shows:
//!
//! - A member whose Raft log can no longer be written (a full or failing disk) stops, as
//!   ZooKeeper's server exits when its txn log cannot be written, instead of lingering as a
//!   member that says "looking" forever while holding its client port. What it could not
//!   persist is never acknowledged: the write that hit the failure gets no answer. The failure
//!   is made portably (no root, no small filesystem): the member's `raft` directory is moved
//!   away while it runs, so the next write of its `committed` marker (a temp file and a rename
//!   in that directory; made at most every 200 ms) fails like a write on a full disk would.
//!   `crates/chaos/tests/disk_full.rs` does the same with a real ENOSPC.
//! - A member that led before it stopped leads a new term after a restart, never the old one
//!   again (see `LogStore::forgo_stored_leadership`).

use std::time::{Duration, Instant};

use corral_proto::records::{ConnectRequest, ConnectResponse};
use corral_proto::request::encode_connect;
use corral_proto::{Jute, Reader, Writer};
use corral_server::config::ServerConfig;
use corral_server::testing::free_port;
use corral_server::testing::TestServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Upper bound on any single wait, so a broken server fails the test instead of hanging it.
const GUARD: Duration = Duration::from_secs(20);

/// Opens a session; `None` if the server closed the connection or did not answer within
/// `wait` (a member that is not serving, or one that could not commit the session).
async fn open_session(server: &TestServer, wait: Duration) -> Option<i64> {
    let attempt = async {
        let mut s = TcpStream::connect(server.addr()).await.ok()?;
        let req = ConnectRequest {
            protocol_version: 0,
            last_zxid_seen: 0,
            timeout_ms: 30_000,
            session_id: 0,
            passwd: Some(vec![0u8; 16].into()),
        };
        let mut w = Writer::new();
        encode_connect(&req, false, &mut w);
        let body = w.into_inner();
        let mut frame = (body.len() as i32).to_be_bytes().to_vec();
        frame.extend_from_slice(&body);
        s.write_all(&frame).await.ok()?;
        let mut len = [0u8; 4];
        s.read_exact(&mut len).await.ok()?;
        let mut body = vec![0u8; i32::from_be_bytes(len) as usize];
        s.read_exact(&mut body).await.ok()?;
        let resp = ConnectResponse::read(&mut Reader::new(&body)).ok()?;
        (resp.session_id != 0).then_some(resp.session_id)
    };
    tokio::time::timeout(wait, attempt).await.ok().flatten()
}

/// One participant with standalone mode off: a real ensemble member (Raft log, openraft),
/// which elects itself. (The client port is replaced by an ephemeral one at start.)
fn one_member_config(dir: &std::path::Path) -> ServerConfig {
    std::fs::write(dir.join("myid"), "1\n").unwrap();
    let text = format!(
        "tickTime=200\n\
         clientPort={}\n\
         initLimit=10\n\
         syncLimit=5\n\
         dataDir={}\n\
         standaloneEnabled=false\n\
         4lw.commands.whitelist=*\n\
         server.1=127.0.0.1:{}:{}:participant\n",
        free_port(),
        dir.display(),
        free_port(),
        free_port()
    );
    let config = ServerConfig::parse(&text).unwrap();
    assert!(
        config.ensemble.is_some(),
        "configured as an ensemble member"
    );
    config
}

/// Waits until the member serves: a session is committed through the Raft log.
async fn wait_serving(server: &TestServer) {
    let deadline = Instant::now() + GUARD;
    while open_session(server, Duration::from_secs(2)).await.is_none() {
        assert!(Instant::now() < deadline, "the member never served");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The epoch (`zxid >> 32`) of the member's last zxid, from `srvr`.
async fn epoch(server: &TestServer) -> i64 {
    let mut s = TcpStream::connect(server.addr()).await.unwrap();
    s.write_all(b"srvr").await.unwrap();
    let mut text = String::new();
    tokio::time::timeout(GUARD, s.read_to_string(&mut text))
        .await
        .unwrap()
        .unwrap();
    let zxid = text
        .lines()
        .find_map(|l| l.strip_prefix("Zxid: 0x"))
        .unwrap_or_else(|| panic!("no Zxid in srvr: {text}"));
    i64::from_str_radix(zxid.trim(), 16).unwrap() >> 32
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_led_leads_a_new_term_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_in(one_member_config(dir.path()), dir.path())
        .await
        .unwrap();
    wait_serving(&server).await;
    let before = epoch(&server).await;
    assert!(before > 0, "a leader's epoch is its term");
    server.stop().await.unwrap();

    // Same data directory (fresh ports): the stored vote says this member led term `before`.
    let server = TestServer::start_in(one_member_config(dir.path()), dir.path())
        .await
        .unwrap();
    wait_serving(&server).await;
    let after = epoch(&server).await;
    assert!(
        after > before,
        "the restarted member resumed leading epoch {before:#x} instead of winning a new term \
         (epoch now {after:#x})"
    );
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_cannot_write_its_raft_log_stops_and_acknowledges_nothing_more() {
    let dir = tempfile::tempdir().unwrap();
    let config = one_member_config(dir.path());
    let server = TestServer::start_in(config, dir.path()).await.unwrap();

    wait_serving(&server).await;

    let raft_dir = dir.path().join("raft");
    assert!(
        raft_dir.is_dir(),
        "the Raft log lives in {}",
        raft_dir.display()
    );
    std::fs::rename(&raft_dir, dir.path().join("raft-moved")).unwrap();
    // The committed marker is written at most every 200 ms (`log_store`); after a longer
    // pause the next commit writes it, and that write fails.
    tokio::time::sleep(Duration::from_millis(600)).await;

    // This session's commit cannot be recorded: it must not be acknowledged...
    assert_eq!(
        open_session(&server, Duration::from_secs(5)).await,
        None,
        "a session was acknowledged after the Raft log became unwritable"
    );
    // ...and the member stops by itself: its client port closes.
    let deadline = Instant::now() + GUARD;
    while TcpStream::connect(server.addr()).await.is_ok() {
        assert!(
            Instant::now() < deadline,
            "the member still listens {GUARD:?} after its Raft log failed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let result = server.stop().await;
    let err = result.expect_err("the member reports why it stopped");
    assert!(err.to_string().contains("raft stopped"), "{err}");
}
