//! The AdminServer side by side with Apache ZooKeeper 3.8's: a real ZooKeeper (the Debian
//! `zookeeper` package through `scripts/apache-zk`, AdminServer on) and a Corral server answer
//! the same requests, and the test compares the command lists (`GET /commands`) and, for every
//! command both serve, the top-level JSON keys and the JSON type of each value.
//!
//! Differences that are expected are listed, with the reason, in the allow-lists below; any
//! other difference fails the test, and so does an allow-list entry that no longer matches a
//! difference (so the lists shrink when Corral catches up).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use corral_server::config::{AdminConfig, ServerConfig};
use corral_server::testing::free_port;
use corral_server::testing::TestServer;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Upper bound on one HTTP exchange. Not a timing assertion: healthy runs finish far below it.
const GUARD: Duration = Duration::from_secs(20);
/// How long the JVM may take to open its AdminServer. A readiness wait, so generous: a loaded
/// two-core machine can take tens of seconds to start ZooKeeper.
const START_DEADLINE: Duration = Duration::from_secs(120);
/// How many times ZooKeeper is started before the test gives up.
const START_ATTEMPTS: u32 = 3;

/// Commands only ZooKeeper lists, with why Corral's AdminServer leaves them out.
const ONLY_ZOOKEEPER_COMMANDS: &[(&str, &str)] = &[
    // Java log4j trace masks: Corral answers the four-letter words `gtmk`/`stmk`, but its log
    // detail is a `tracing` filter, so the AdminServer table does not offer them.
    ("get_trace_mask", "trace masks: four-letter words only"),
    ("set_trace_mask", "trace masks: four-letter words only"),
    // The JVM's system properties; Corral has no JVM (`environment` covers the useful part).
    ("system_properties", "JVM-only"),
    // Zab protocol state and observer counters: Corral replicates with Raft, not Zab, and has
    // no observers.
    ("zabstate", "Zab-specific"),
    ("observer_connection_stat_reset", "Zab observers"),
];

/// Commands only Corral lists, with why (none: Corral serves a subset of ZooKeeper's).
const ONLY_CORRAL_COMMANDS: &[(&str, &str)] = &[];

/// (command, reason, keys): top-level keys only ZooKeeper's answer has.
const ONLY_ZOOKEEPER_KEYS: &[(&str, &str, &[&str])] = &[
    (
        "monitor",
        "Zab ensemble counters (elections, proposals, learners, ensemble auth): Corral \
         replicates with Raft",
        &[
            "commit_count",
            "proposal_count",
            "diff_count",
            "snap_count",
            "looking_count",
            "learner_commit_received_count",
            "learner_proposal_received_count",
            "quit_leading_due_to_disloyal_voter",
            "ensemble_auth_success",
            "ensemble_auth_fail",
            "ensemble_auth_skip",
            "skip_learner_request_to_next_processor_count",
            "requests_not_forwarded_to_commit_processor",
        ],
    ),
    (
        "monitor",
        "queues, caches and throttles of ZooKeeper's Java request-processor chain, stages \
         Corral's pipeline does not have",
        &[
            "prep_processor_request_queued",
            "sync_processor_request_queued",
            "request_commit_queued",
            "outstanding_changes_queued",
            "outstanding_changes_removed",
            "request_throttle_wait_count",
            "throttled_ops",
            "stale_requests",
            "stale_requests_dropped",
            "stale_replies",
            "large_requests_rejected",
            "response_packet_cache_hits",
            "response_packet_cache_misses",
            "response_packet_get_children_cache_hits",
            "response_packet_get_children_cache_misses",
        ],
    ),
    (
        "monitor",
        "ZooKeeper's connection layer: TLS/mTLS handshakes, connection throttling and \
         revalidation, Netty; Corral has no TLS listener and no connection throttler",
        &[
            "outstanding_tls_handshake",
            "tls_handshake_exceeded",
            "unsuccessful_handshake",
            "non_mtls_local_conn_count",
            "non_mtls_remote_conn_count",
            "insecure_admin_count",
            "connection_drop_count",
            "connection_drop_probability",
            "connection_rejected",
            "connection_request_count",
            "connection_revalidate_count",
            "revalidate_count",
            "cnxn_closed_without_zk_server_running",
            "sessionless_connections_expired",
            "stale_sessions_expired",
        ],
    ),
    (
        "monitor",
        "ZooKeeper's watch manager internals (dead-watcher cleaner, watch memory)",
        &[
            "add_dead_watcher_stall_time",
            "dead_watchers_cleared",
            "dead_watchers_queued",
            "watch_bytes",
        ],
    ),
    (
        "monitor",
        "gaps: Corral could serve these (some it already counts for `stats`) but `mntr` does \
         not export them yet",
        &[
            "auth_failed_count",
            "bytes_received_count",
            "response_bytes",
            "last_client_response_size",
            "min_client_response_size",
            "max_client_response_size",
            "local_sessions",
            "digest_mismatches_count",
            "unrecoverable_error_count",
        ],
    ),
];

/// (reason, summary names): ZooKeeper's `mntr` summaries Corral does not keep. Each name stands
/// for the keys `avg_`, `min_`, `max_`, `cnt_`, `sum_` NAME (and, for some, `p50_`, `p95_`,
/// `p99_`, `p999_` NAME); an entry is stale when none of them differs any more.
const ONLY_ZOOKEEPER_MONITOR_SUMMARIES: &[(&str, &[&str])] = &[
    (
        "Zab ensemble timings (elections, syncs, proposals, quorum acks): Corral replicates \
         with Raft",
        &[
            "election_time",
            "follower_sync_time",
            "observer_sync_time",
            "leader_unavailable_time",
            "unavailable_time",
            "quorum_ack_latency",
            "proposal_latency",
            "proposal_ack_creation_latency",
            "proposal_process_time",
            "propagation_latency",
            "commit_propagation_latency",
            "om_commit_process_time_ms",
            "om_proposal_process_time_ms",
            "learner_request_processor_queue_size",
            "inflight_diff_count",
            "inflight_snap_count",
        ],
    ),
    (
        "stages of ZooKeeper's Java request-processor chain (prep, sync, commit and final \
         processors, per-session queues, request throttler)",
        &[
            "close_session_prep_time",
            "commit_commit_proc_req_queued",
            "commit_process_time",
            "concurrent_request_processing_in_commit_processor",
            "local_write_committed_time_ms",
            "pending_session_queue_size",
            "prep_process_time",
            "prep_processor_queue_size",
            "prep_processor_queue_time_ms",
            "read_commit_proc_issued",
            "read_commit_proc_req_queued",
            "read_commitproc_time_ms",
            "read_final_proc_time_ms",
            "reads_after_write_in_session_queue",
            "reads_issued_from_session_queue",
            "request_throttle_queue_time_ms",
            "requests_in_session_queue",
            "server_write_committed_time_ms",
            "session_queues_drained",
            "sync_process_time",
            "sync_processor_batch_size",
            "sync_processor_queue_and_flush_time_ms",
            "sync_processor_queue_flush_time_ms",
            "sync_processor_queue_size",
            "sync_processor_queue_time_ms",
            "time_waiting_empty_pool_in_commit_processor_read_ms",
            "write_batch_time_in_commit_processor",
            "write_commit_proc_issued",
            "write_commit_proc_req_queued",
            "write_commitproc_time_ms",
            "write_final_proc_time_ms",
        ],
    ),
    (
        "JVM and Netty: garbage-collection pauses, Netty buffers, connection-throttle tokens, \
         socket close timing",
        &[
            "jvm_pause_time_ms",
            "netty_queued_buffer_capacity",
            "connection_token_deficit",
            "socket_closing_time",
        ],
    ),
    (
        "ZooKeeper's database load at startup (Corral reports its recovery in its own logs)",
        &[
            "dbinittime",
            "startup_snap_load_time",
            "startup_txns_load_time",
            "startup_txns_loaded",
        ],
    ),
    (
        "ZooKeeper's watch manager internals (watches per triggered event, dead-watcher \
         cleaner)",
        &[
            "node_changed_watch_count",
            "node_children_watch_count",
            "node_created_watch_count",
            "node_deleted_watch_count",
            "dead_watchers_cleaner_latency",
        ],
    ),
];

/// The key prefixes of one ZooKeeper `mntr` summary.
const SUMMARY_PREFIXES: &[&str] = &[
    "avg", "min", "max", "cnt", "sum", "p50", "p95", "p99", "p999",
];

/// (command, key, reason): a top-level key only Corral's answer has (none so far).
const ONLY_CORRAL_KEYS: &[(&str, &str, &str)] = &[];

/// (command, key, reason): a key both have, with different JSON types (none so far).
const TYPE_DIFFERENCES: &[(&str, &str, &str)] = &[];

/// The JSON type of a value, as the comparison sees it: integers and floats are both numbers
/// (ZooKeeper itself prints a gauge as `0` or `0.0` depending on the metric's Java type).
fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// One HTTP/1.0 GET (1.0 so that neither server answers chunked); returns (status, body).
async fn get(addr: SocketAddr, path: &str) -> Result<(u16, String), String> {
    let exchange = async {
        let mut s = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect {addr}: {e}"))?;
        let req = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
        s.write_all(req.as_bytes())
            .await
            .map_err(|e| format!("send to {addr}: {e}"))?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw)
            .await
            .map_err(|e| format!("read from {addr}: {e}"))?;
        String::from_utf8(raw).map_err(|e| format!("{addr}{path}: not UTF-8: {e}"))
    };
    let raw = tokio::time::timeout(GUARD, exchange)
        .await
        .map_err(|_| format!("{addr}{path}: no answer in time"))??;
    let (head, body) = raw
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("{addr}{path}: incomplete response"))?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("{addr}{path}: no status in {head:?}"))?;
    Ok((status, body.to_string()))
}

async fn get_json(addr: SocketAddr, path: &str) -> serde_json::Map<String, Value> {
    let (status, body) = get(addr, path).await.unwrap();
    assert_eq!(status, 200, "{addr}{path}: {body}");
    match serde_json::from_str(&body) {
        Ok(Value::Object(map)) => map,
        other => panic!("{addr}{path}: not a JSON object ({other:?}): {body}"),
    }
}

/// The command names in a `GET /commands` page: both servers answer with one
/// `<a href="/commands/NAME">NAME</a>` link per command (primary names only).
fn command_names(index: &str) -> BTreeSet<String> {
    index
        .split("<a href=\"/commands/")
        .skip(1)
        .filter_map(|rest| rest.split_once('"').map(|(name, _)| name.to_string()))
        .collect()
}

/// A standalone Apache ZooKeeper with its AdminServer on, started through `scripts/apache-zk`
/// with a temporary directory; killed when dropped (and by [`ApacheZk::stop`]).
struct ApacheZk {
    admin: SocketAddr,
    child: tokio::process::Child,
    dir: tempfile::TempDir,
}

impl ApacheZk {
    /// Starts ZooKeeper on two free ports; tries again (three times in all) when it does not
    /// come up, since another process may take a "free" port before the JVM binds it.
    async fn start() -> ApacheZk {
        let mut logs = Vec::new();
        for _attempt in 0..START_ATTEMPTS {
            match ApacheZk::try_start().await {
                Ok(zk) => return zk,
                Err(log) => logs.push(log),
            }
        }
        panic!(
            "Apache ZooKeeper's AdminServer did not come up (it needs the Jetty 9 and servlet \
             API jars of libjetty9-java and libservlet-api-java):\n{}",
            logs.join("\n---\n")
        );
    }

    async fn try_start() -> Result<ApacheZk, String> {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/apache-zk");
        let dir = tempfile::Builder::new()
            .prefix("corral-admin-zk-")
            .tempdir()
            .unwrap();
        let (client_port, admin_port) = (free_port(), free_port());
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        // The settings the Corral side also runs with (tick 200 ms, every four-letter word),
        // plus ZooKeeper's AdminServer on loopback.
        let cfg = format!(
            "tickTime=200\n\
             dataDir={}\n\
             clientPort={client_port}\n\
             clientPortAddress=127.0.0.1\n\
             maxClientCnxns=0\n\
             4lw.commands.whitelist=*\n\
             extendedTypesEnabled=true\n\
             admin.enableServer=true\n\
             admin.serverAddress=127.0.0.1\n\
             admin.serverPort={admin_port}\n",
            data.display()
        );
        let cfg_path = dir.path().join("zoo.cfg");
        std::fs::write(&cfg_path, cfg).unwrap();
        let log_path = dir.path().join("stderr.log");
        let log = std::fs::File::create(&log_path).unwrap();
        let mut child = tokio::process::Command::new("bash")
            .arg(&script)
            .arg("--config")
            .arg(&cfg_path)
            .env(
                "ZK_JAVA_OPTS",
                "-Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1",
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("run scripts/apache-zk");
        let admin: SocketAddr = format!("127.0.0.1:{admin_port}").parse().unwrap();
        let client: SocketAddr = format!("127.0.0.1:{client_port}").parse().unwrap();
        let ready = async {
            loop {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(format!("apache-zk exited: {status}"));
                }
                // ZooKeeper opens the AdminServer before the client port, and exits when the
                // client port is taken: ready means both answer.
                if let Ok((200, _)) = get(admin, "/commands/ruok").await {
                    if TcpStream::connect(client).await.is_ok() {
                        return Ok(());
                    }
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        };
        match tokio::time::timeout(START_DEADLINE, ready).await {
            Ok(Ok(())) => Ok(ApacheZk { admin, child, dir }),
            outcome => {
                let _ = child.kill().await;
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                Err(format!("{outcome:?}; log:\n{log}"))
            }
        }
    }

    async fn stop(mut self) {
        let _ = self.child.kill().await;
        drop(self.dir);
    }
}

/// What differs between the two answers to one command, before the allow-lists apply.
#[derive(Default)]
struct Differences {
    only_zookeeper: Vec<(String, String)>,
    only_corral: Vec<(String, String)>,
    types: Vec<(String, String, String)>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_server_matches_apache_zookeeper() {
    let test = async {
        let zk = ApacheZk::start().await;
        let corral = TestServer::start_with(ServerConfig {
            admin: AdminConfig {
                enabled: true,
                ..AdminConfig::default()
            },
            ..TestServer::default_config()
        })
        .await;
        let corral_admin = corral.admin_addr().expect("admin enabled");

        let mut failures = Vec::new();

        // The command lists.
        let (status, zk_index) = get(zk.admin, "/commands").await.unwrap();
        assert_eq!(status, 200, "{zk_index}");
        let (status, corral_index) = get(corral_admin, "/commands").await.unwrap();
        assert_eq!(status, 200, "{corral_index}");
        let zk_names = command_names(&zk_index);
        let corral_names = command_names(&corral_index);
        assert!(!zk_names.is_empty(), "no commands in {zk_index}");
        check_set(
            "commands only ZooKeeper lists",
            zk_names.difference(&corral_names).cloned().collect(),
            ONLY_ZOOKEEPER_COMMANDS
                .iter()
                .map(|(c, _)| c.to_string())
                .collect(),
            &mut failures,
        );
        check_set(
            "commands only Corral lists",
            corral_names.difference(&zk_names).cloned().collect(),
            ONLY_CORRAL_COMMANDS
                .iter()
                .map(|(c, _)| c.to_string())
                .collect(),
            &mut failures,
        );

        // Every command both serve.
        let mut diffs = Differences::default();
        let common: Vec<&String> = zk_names.intersection(&corral_names).collect();
        for name in &common {
            let path = format!("/commands/{name}");
            let zk_answer = get_json(zk.admin, &path).await;
            let corral_answer = get_json(corral_admin, &path).await;
            let zk_types: BTreeMap<&str, &str> = zk_answer
                .iter()
                .map(|(k, v)| (k.as_str(), json_type(v)))
                .collect();
            let corral_types: BTreeMap<&str, &str> = corral_answer
                .iter()
                .map(|(k, v)| (k.as_str(), json_type(v)))
                .collect();
            for (key, zk_type) in &zk_types {
                match corral_types.get(key) {
                    None => diffs
                        .only_zookeeper
                        .push((name.to_string(), key.to_string())),
                    Some(t) if t != zk_type => diffs.types.push((
                        name.to_string(),
                        key.to_string(),
                        format!("ZooKeeper {zk_type}, Corral {t}"),
                    )),
                    Some(_) => {}
                }
            }
            for key in corral_types.keys() {
                if !zk_types.contains_key(key) {
                    diffs.only_corral.push((name.to_string(), key.to_string()));
                }
            }
        }
        let pairs = |l: &[(&str, &str, &str)]| -> BTreeSet<String> {
            l.iter().map(|(c, k, _)| format!("{c}.{k}")).collect()
        };
        let only_zookeeper: BTreeSet<String> = diffs
            .only_zookeeper
            .iter()
            .map(|(c, k)| format!("{c}.{k}"))
            .collect();
        let mut allowed_only_zookeeper: BTreeSet<String> = ONLY_ZOOKEEPER_KEYS
            .iter()
            .flat_map(|(c, _, keys)| keys.iter().map(move |k| format!("{c}.{k}")))
            .collect();
        // A summary is allowed as a whole: whichever of its keys ZooKeeper prints. It is stale
        // when none of its keys differs.
        for (_, names) in ONLY_ZOOKEEPER_MONITOR_SUMMARIES {
            for name in *names {
                let keys: Vec<String> = SUMMARY_PREFIXES
                    .iter()
                    .map(|p| format!("monitor.{p}_{name}"))
                    .filter(|k| only_zookeeper.contains(k))
                    .collect();
                if keys.is_empty() {
                    failures.push(format!(
                        "monitor summary `{name}`: allow-listed, but no key of it differs any more"
                    ));
                }
                allowed_only_zookeeper.extend(keys);
            }
        }
        check_set(
            "keys only ZooKeeper has",
            only_zookeeper,
            allowed_only_zookeeper,
            &mut failures,
        );
        check_set(
            "keys only Corral has",
            diffs
                .only_corral
                .iter()
                .map(|(c, k)| format!("{c}.{k}"))
                .collect(),
            pairs(ONLY_CORRAL_KEYS),
            &mut failures,
        );
        let type_detail: BTreeMap<String, &String> = diffs
            .types
            .iter()
            .map(|(c, k, d)| (format!("{c}.{k}"), d))
            .collect();
        let unexpected_types = check_set(
            "keys whose JSON types differ",
            type_detail.keys().cloned().collect(),
            pairs(TYPE_DIFFERENCES),
            &mut failures,
        );
        for key in unexpected_types {
            failures.push(format!("  {key}: {}", type_detail[&key]));
        }

        eprintln!(
            "compared {} commands; {} listed by ZooKeeper, {} by Corral",
            common.len(),
            zk_names.len(),
            corral_names.len()
        );
        corral.stop().await.expect("corral stops cleanly");
        zk.stop().await;
        failures
    };
    // The JVM start dominates; everything else is a few dozen local HTTP requests.
    let failures = tokio::time::timeout(
        START_DEADLINE * START_ATTEMPTS + Duration::from_secs(120),
        test,
    )
    .await
    .expect("differential test finished in time");
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

/// Records, in `failures`, the members of `found` the allow-list lacks and the allow-list
/// entries `found` lacks; returns the unexpected members.
fn check_set(
    what: &str,
    found: BTreeSet<String>,
    allowed: BTreeSet<String>,
    failures: &mut Vec<String>,
) -> Vec<String> {
    let unexpected: Vec<String> = found.difference(&allowed).cloned().collect();
    let stale: Vec<String> = allowed.difference(&found).cloned().collect();
    if !unexpected.is_empty() {
        failures.push(format!("{what}, not in the allow-list: {unexpected:?}"));
    }
    if !stale.is_empty() {
        failures.push(format!(
            "{what}: allow-list entries that no longer differ: {stale:?}"
        ));
    }
    unexpected
}
