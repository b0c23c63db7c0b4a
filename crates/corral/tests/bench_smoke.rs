//! Every `corral bench` workload at a tiny size against an in-process server, so the benchmark
//! code keeps working. Only counts are checked (no timing): something was measured, nothing
//! failed, no event went missing, and the bench cleaned up after itself.

use corral_server::testing::TestServer;
use serde_json::Value;

/// Runs `corral bench --json` with `args` against `server` and returns its report.
async fn bench(server: &TestServer, args: &[&str]) -> Value {
    let out = bench_raw(server, args, true).await;
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("bench printed {out:?}: {e}"))
}

async fn bench_raw(server: &TestServer, args: &[&str], json: bool) -> String {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_corral"));
    cmd.arg("bench")
        .arg("--server")
        .arg(server.connect_string())
        // The server runs inside this test process, so its CPU and memory are ours.
        .arg("--server-pid")
        .arg(std::process::id().to_string())
        .arg("--settle")
        .arg("0.05")
        .args(args);
    if json {
        cmd.arg("--json");
    }
    let out = cmd.output().await.expect("run corral bench");
    assert!(
        out.status.success(),
        "corral bench {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

fn count(report: &Value, key: &str) -> u64 {
    report[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} missing or not a count in {report}"))
}

/// The bench removes everything it created unless told otherwise.
async fn assert_cleaned_up(server: &TestServer) {
    let client = corral_client::Client::connect(&server.connect_string())
        .await
        .expect("connect");
    assert_eq!(client.exists("/corral-bench").await.expect("exists"), None);
    client.close().await;
}

const TINY_LOOP: &[&str] = &[
    "--clients",
    "2",
    "--depth",
    "2",
    "--duration",
    "0.3",
    "--warmup",
    "0.1",
    "--keys",
    "10",
];

async fn throughput(workload: &str) -> Value {
    let server = TestServer::start().await;
    let mut args = vec!["--workload", workload];
    args.extend_from_slice(TINY_LOOP);
    let r = bench(&server, &args).await;
    assert_eq!(r["workload"], workload);
    assert!(count(&r, "ops") > 0, "{r}");
    assert_eq!(count(&r, "errors"), 0, "{r}");
    assert!(r["ops_per_s"].as_f64().unwrap() > 0.0, "{r}");
    assert_cleaned_up(&server).await;
    server.stop().await.expect("server stops cleanly");
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read() {
    let r = throughput("read").await;
    assert_eq!(count(&r["latency"], "count"), count(&r, "ops"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write() {
    throughput("write").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create() {
    let r = throughput("create").await;
    // Every measured create is followed by its delete (a pair may straddle the end).
    let creates = count(&r["create_latency"], "count");
    let deletes = count(&r["delete_latency"], "count");
    assert!(creates > 0 && creates.abs_diff(deletes) <= 4, "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed() {
    let r = throughput("mixed").await;
    let reads = count(&r["read_latency"], "count");
    let writes = count(&r["write_latency"], "count");
    assert_eq!(reads + writes, count(&r, "ops"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_fanout() {
    let server = TestServer::start().await;
    let r = bench(
        &server,
        &[
            "--workload",
            "watch-fanout",
            "--watchers",
            "5",
            "--rounds",
            "3",
        ],
    )
    .await;
    assert_eq!(count(&r, "rounds"), 3);
    assert_eq!(count(&r, "events"), 15, "{r}");
    assert_eq!(count(&r, "missing_events"), 0, "{r}");
    assert_cleaned_up(&server).await;
    server.stop().await.expect("server stops cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_many() {
    let server = TestServer::start().await;
    let r = bench(
        &server,
        &[
            "--workload",
            "watch-many",
            "--ops",
            "300",
            "--clients",
            "2",
            "--depth",
            "4",
        ],
    )
    .await;
    assert_eq!(count(&r, "watches"), 300, "{r}");
    assert_eq!(count(&r, "errors"), 0, "{r}");
    assert!(r["rss_bytes_per_watch"].is_number(), "{r}");
    server.stop().await.expect("server stops cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn znodes_memory() {
    let server = TestServer::start().await;
    let r = bench(
        &server,
        &[
            "--workload",
            "znodes-memory",
            "--ops",
            "1500",
            "--clients",
            "2",
            "--depth",
            "4",
        ],
    )
    .await;
    assert_eq!(count(&r, "znodes"), 1500, "{r}");
    assert_eq!(count(&r, "errors"), 0, "{r}");
    assert!(r["rss_bytes_per_znode"].is_number(), "{r}");
    assert_cleaned_up(&server).await;
    server.stop().await.expect("server stops cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions() {
    let server = TestServer::start().await;
    let r = bench(
        &server,
        &[
            "--workload",
            "sessions",
            "--clients",
            "2",
            "--ops",
            "10",
            "--warmup",
            "0",
        ],
    )
    .await;
    assert_eq!(count(&r, "sessions"), 10, "{r}");
    assert_eq!(count(&r["create_latency"], "count"), 10, "{r}");
    assert_eq!(count(&r, "ephemerals_left"), 0, "{r}");
    assert_eq!(count(&r, "errors"), 0, "{r}");
    assert_cleaned_up(&server).await;
    server.stop().await.expect("server stops cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_watch() {
    let server = TestServer::start().await;
    let r = bench(
        &server,
        &[
            "--workload",
            "persistent-watch",
            "--ops",
            "200",
            "--keys",
            "10",
            "--clients",
            "1",
            "--depth",
            "4",
            "--warmup",
            "0",
        ],
    )
    .await;
    assert_eq!(count(&r, "changes"), 200, "{r}");
    assert_eq!(count(&r, "events_received"), 200, "{r}");
    assert_eq!(count(&r, "events_missing"), 0, "{r}");
    assert_eq!(count(&r, "events_unmatched"), 0, "{r}");
    assert_cleaned_up(&server).await;
    server.stop().await.expect("server stops cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn table_output() {
    let server = TestServer::start().await;
    let mut args = vec!["--workload", "read"];
    args.extend_from_slice(TINY_LOOP);
    let out = bench_raw(&server, &args, false).await;
    let row = out
        .lines()
        .find(|l| l.starts_with("ops_per_s"))
        .unwrap_or_else(|| panic!("no ops_per_s row in {out}"));
    let value: f64 = row.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!(value > 0.0, "{out}");
    server.stop().await.expect("server stops cleanly");
}
