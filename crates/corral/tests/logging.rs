//! Log lines about a client name its session: `corral server --log-format json` writes the
//! connection's span with a `session_id` field (`0x` + hex, as ZooKeeper writes ids) on every
//! line the connection logs once its session is known.

use std::fs;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use corral_client::Client;
use serde_json::Value;

/// Upper bound on any single wait, so a broken server fails the test instead of hanging it.
/// Not a timing assertion: healthy runs finish far below it.
const GUARD: Duration = Duration::from_secs(30);

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind an ephemeral port")
        .port()
}

/// The server process; killed and reaped on drop, so a failing test leaves nothing behind.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The JSON log lines written so far (lines that are not JSON objects are skipped).
fn json_lines(log: &std::path::Path) -> Vec<Value> {
    fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .collect()
}

/// Starts `corral server --log-format <format>` logging connection ends, connects a client
/// and closes its session; returns the server, its log file and the session id as logged.
async fn run_one_session(format: &str) -> (Running, tempfile::TempDir, std::path::PathBuf, String) {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let cfg = dir.path().join("zoo.cfg");
    fs::write(
        &cfg,
        format!(
            "tickTime=200\ndataDir={}\nclientPort={port}\nclientPortAddress=127.0.0.1\n\
             admin.enableServer=false\n",
            dir.path().join("data").display()
        ),
    )
    .unwrap();
    let log = dir.path().join("server.log");
    let child = Command::new(env!("CARGO_BIN_EXE_corral"))
        .args(["server", "--log-format", format, "--config"])
        .arg(&cfg)
        // A connection's end is logged at debug level.
        .env("RUST_LOG", "info,corral_server::net=debug")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(&log).unwrap())
        .spawn()
        .expect("start corral server");
    let server = Running(child);

    let addr = format!("127.0.0.1:{port}");
    let deadline = Instant::now() + GUARD;
    let client = loop {
        match Client::connect(&addr).await {
            Ok(c) => break c,
            Err(e) => {
                assert!(
                    Instant::now() < deadline,
                    "server did not accept clients: {e}; log:\n{}",
                    fs::read_to_string(&log).unwrap_or_default()
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    let session = format!("0x{:x}", client.session_id());
    // Closing the session makes the server close the connection, which it logs.
    client.close().await;
    (server, dir, log, session)
}

#[tokio::test]
async fn text_log_lines_about_a_client_carry_its_session_id() {
    let (_server, _dir, log, session) = run_one_session("text").await;
    let deadline = Instant::now() + GUARD;
    loop {
        let text = fs::read_to_string(&log).unwrap_or_default();
        if let Some(line) = text.lines().find(|l| l.contains("connection ended")) {
            assert!(line.contains(&format!("session_id={session}")), "{line}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no `connection ended` line; log:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn json_log_lines_about_a_client_carry_its_session_id() {
    let (_server, _dir, log, session) = run_one_session("json").await;
    let deadline = Instant::now() + GUARD;
    let ended = loop {
        let found = json_lines(&log)
            .into_iter()
            .find(|l| l["fields"]["message"] == "connection ended");
        if let Some(line) = found {
            break line;
        }
        assert!(
            Instant::now() < deadline,
            "no `connection ended` line; log:\n{}",
            fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(ended["span"]["name"], "conn", "{ended}");
    assert_eq!(ended["span"]["session_id"], session.as_str(), "{ended}");
    // The session id was recorded on the span, so earlier lines of the same connection
    // carry it too.
    let established = json_lines(&log)
        .into_iter()
        .find(|l| l["fields"]["message"] == "session established")
        .expect("the session's start is logged");
    assert_eq!(established["span"]["session_id"], session.as_str());
}
