//! An ensemble member whose Raft log can no longer be written (a full or failing disk) stops,
//! as ZooKeeper's server exits when its txn log cannot be written, instead of lingering as a
//! member that says "looking" forever while holding its client port. What it could not
//! persist is never acknowledged: the write that hit the failure gets no answer.
//!
//! The failure is made portably (no root, no small filesystem): the member's `raft` directory
//! is moved away while it runs, so the next write of its `committed` marker (a temp file and
//! a rename in that directory; made at most every 200 ms) fails like a write on a full disk
//! would.
//! `crates/chaos/tests/disk_full.rs` does the same with a real ENOSPC.

use std::net::TcpListener;
use std::time::{Duration, Instant};

use corral_proto::records::{ConnectRequest, ConnectResponse};
use corral_proto::request::encode_connect;
use corral_proto::{Jute, Reader, Writer};
use corral_server::config::ServerConfig;
use corral_server::testing::TestServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Upper bound on any single wait, so a broken server fails the test instead of hanging it.
const GUARD: Duration = Duration::from_secs(20);

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_cannot_write_its_raft_log_stops_and_acknowledges_nothing_more() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("myid"), "1\n").unwrap();
    // One participant with standalone mode off: a real ensemble member (Raft log, openraft),
    // which elects itself. (The client port is replaced by an ephemeral one at start.)
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
        dir.path().display(),
        free_port(),
        free_port()
    );
    let config = ServerConfig::parse(&text).unwrap();
    assert!(
        config.ensemble.is_some(),
        "configured as an ensemble member"
    );
    let server = TestServer::start_in(config, dir.path()).await.unwrap();

    // Serving once it leads: a session is committed through the Raft log.
    let deadline = Instant::now() + GUARD;
    while open_session(&server, Duration::from_secs(2))
        .await
        .is_none()
    {
        assert!(Instant::now() < deadline, "the member never served");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

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
