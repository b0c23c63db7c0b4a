//! The operations endpoints of a whole server: `/metrics` read with a Prometheus text-format
//! parser, every AdminServer command checked against ZooKeeper 3.8's field names and JSON
//! types, health probes, and listeners that configuration turns off.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use corral_proto::records::{
    Acl, ConnectRequest, ConnectResponse, CreateRequest, Id, PathWatch, ReplyHeader, RequestHeader,
};
use corral_proto::request::encode_connect;
use corral_proto::{Jute, OpCode, Writer};
use corral_server::config::{AdminConfig, MetricsConfig, ServerConfig};
use corral_server::net::Server;
use corral_server::testing::free_port;
use corral_server::testing::TestServer;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Upper bound on any single wait, so a broken server fails the test instead of hanging it.
/// Not a timing assertion: healthy runs finish far below it.
const GUARD: Duration = Duration::from_secs(20);

fn with_endpoints() -> ServerConfig {
    ServerConfig {
        admin: AdminConfig {
            enabled: true,
            ..AdminConfig::default()
        },
        metrics: MetricsConfig {
            enabled: true,
            ..MetricsConfig::default()
        },
        ..TestServer::default_config()
    }
}

/// One HTTP/1.1 GET; returns (status, content type, body).
async fn get(addr: SocketAddr, path: &str) -> (u16, String, String) {
    let exchange = async {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let req = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).await.unwrap();
        String::from_utf8(raw).unwrap()
    };
    let raw = tokio::time::timeout(GUARD, exchange)
        .await
        .expect("answer in time");
    let (head, body) = raw.split_once("\r\n\r\n").expect("a complete response");
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let content_type = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-type")
                .then(|| v.trim().to_string())
        })
        .unwrap_or_default();
    (status, content_type, body.to_string())
}

fn frame(body: &[u8]) -> Vec<u8> {
    let mut out = (body.len() as i32).to_be_bytes().to_vec();
    out.extend_from_slice(body);
    out
}

fn request(xid: i32, op: OpCode, record: &dyn Fn(&mut Writer)) -> Vec<u8> {
    let mut w = Writer::new();
    RequestHeader { xid, op: op.code() }.write(&mut w);
    record(&mut w);
    frame(&w.into_inner())
}

async fn read_frame(s: &mut TcpStream) -> Vec<u8> {
    let mut len = [0u8; 4];
    tokio::time::timeout(GUARD, s.read_exact(&mut len))
        .await
        .expect("server answered in time")
        .unwrap();
    let mut body = vec![0u8; i32::from_be_bytes(len) as usize];
    tokio::time::timeout(GUARD, s.read_exact(&mut body))
        .await
        .expect("server answered in time")
        .unwrap();
    body
}

/// A client session over the raw protocol.
struct Client {
    s: TcpStream,
    xid: i32,
}

impl Client {
    async fn connect(addr: SocketAddr) -> Client {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let req = ConnectRequest {
            protocol_version: 0,
            last_zxid_seen: 0,
            timeout_ms: 10_000,
            session_id: 0,
            passwd: Some(Bytes::from(vec![0u8; 16])),
        };
        let mut w = Writer::new();
        encode_connect(&req, false, &mut w);
        s.write_all(&frame(&w.into_inner())).await.unwrap();
        let body = read_frame(&mut s).await;
        let resp = ConnectResponse::read(&mut corral_proto::Reader::new(&body)).unwrap();
        assert_ne!(resp.session_id, 0);
        Client { s, xid: 0 }
    }

    async fn call(&mut self, op: OpCode, record: &dyn Fn(&mut Writer)) -> ReplyHeader {
        self.xid += 1;
        let bytes = request(self.xid, op, record);
        self.s.write_all(&bytes).await.unwrap();
        let body = read_frame(&mut self.s).await;
        let reply = ReplyHeader::read(&mut corral_proto::Reader::new(&body)).unwrap();
        assert_eq!(reply.xid, self.xid, "no notification expected here");
        reply
    }

    async fn create(&mut self, path: &str, flags: i32) {
        let req = CreateRequest {
            path: path.into(),
            data: Some(Bytes::from_static(b"data")),
            acl: vec![Acl {
                perms: corral_proto::perms::ALL,
                id: Id {
                    scheme: "world".into(),
                    id: "anyone".into(),
                },
            }],
            flags,
        };
        let reply = self.call(OpCode::Create, &|w| req.write(w)).await;
        assert_eq!(reply.err, 0, "create {path}");
    }

    async fn watch(&mut self, path: &str) {
        let req = PathWatch {
            path: path.into(),
            watch: true,
        };
        let reply = self.call(OpCode::GetData, &|w| req.write(w)).await;
        assert_eq!(reply.err, 0, "getData {path}");
    }
}

/// Samples by name (labels ignored), and each family's declared type.
fn scrape(text: &str) -> (HashMap<String, f64>, HashMap<String, String>) {
    let lines = text.lines().map(|l| Ok(l.to_string()));
    let parsed = prometheus_parse::Scrape::parse(lines).expect("valid Prometheus text format");
    let mut values = HashMap::new();
    for s in &parsed.samples {
        let v = match s.value {
            prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => continue,
        };
        values.insert(s.metric.clone(), v);
    }
    let types = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_once(' '))
        .map(|(n, t)| (n.to_string(), t.to_string()))
        .collect();
    (values, types)
}

/// Each summary's quantile labels (ZooKeeper's summaries: `name{quantile="0.5"}` ...).
fn quantile_labels(text: &str) -> HashMap<String, Vec<f64>> {
    let lines = text.lines().map(|l| Ok(l.to_string()));
    let parsed = prometheus_parse::Scrape::parse(lines).expect("valid Prometheus text format");
    parsed
        .samples
        .iter()
        .filter_map(|s| match &s.value {
            prometheus_parse::Value::Summary(qs) => {
                Some((s.metric.clone(), qs.iter().map(|q| q.quantile).collect()))
            }
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn metrics_follow_the_load() {
    let server = TestServer::start_with(ServerConfig {
        // Small, so the writes below take a snapshot (at 2 to 4 txns).
        snap_count: 4,
        ..with_endpoints()
    })
    .await;
    let metrics = server.metrics_addr().expect("metrics enabled");

    let (status, content_type, body) = get(metrics, "/metrics").await;
    assert_eq!(status, 200);
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    let (before, types) = scrape(&body);
    for name in [
        "znode_count",
        "watch_count",
        "ephemerals_count",
        "approximate_data_size",
        "num_alive_connections",
        "outstanding_requests",
        "packets_received",
        "packets_sent",
        "avg_latency",
        "min_latency",
        "max_latency",
        "global_sessions",
        "open_file_descriptor_count",
        "max_file_descriptor_count",
        "uptime",
        "corral_queue_bytes",
        "corral_replay_window_depth",
    ] {
        assert!(before.contains_key(name), "{name} missing from:\n{body}");
        assert_eq!(types.get(name).map(String::as_str), Some("gauge"), "{name}");
    }
    assert!(
        !before.contains_key("quorum_size"),
        "standalone has no quorum"
    );
    assert!(
        !before.contains_key("election_time_count"),
        "standalone has no elections"
    );
    assert_eq!(before["num_alive_connections"], 0.0);
    // ZooKeeper's summaries: advanced ones with three quantiles, basic ones with the median.
    let quantiles = quantile_labels(&body);
    for (name, expected) in [
        ("readlatency", vec![0.5, 0.9, 0.99]),
        ("updatelatency", vec![0.5, 0.9, 0.99]),
        ("fsynctime", vec![0.5]),
        ("snapshottime", vec![0.5]),
    ] {
        assert_eq!(
            types.get(name).map(String::as_str),
            Some("summary"),
            "{name}"
        );
        assert_eq!(quantiles.get(name), Some(&expected), "{name}");
        for part in ["_sum", "_count"] {
            let series = format!("{name}{part}");
            assert!(
                before.contains_key(&series),
                "{series} missing from:\n{body}"
            );
        }
    }

    let mut client = Client::connect(server.addr()).await;
    for i in 0..5 {
        client.create(&format!("/load{i}"), 0).await;
    }
    client.create("/eph", 1).await;
    client.watch("/load0").await;

    let (_, _, body) = get(metrics, "/metrics").await;
    let (after, _) = scrape(&body);
    assert_eq!(after["znode_count"], before["znode_count"] + 6.0);
    assert_eq!(after["ephemerals_count"], before["ephemerals_count"] + 1.0);
    assert_eq!(after["watch_count"], before["watch_count"] + 1.0);
    assert_eq!(after["global_sessions"], before["global_sessions"] + 1.0);
    assert_eq!(after["num_alive_connections"], 1.0);
    assert!(after["packets_received"] >= before["packets_received"] + 7.0);
    assert!(after["approximate_data_size"] > before["approximate_data_size"]);
    // Six creates and the new session are updates; the getData is a read. Every write was
    // made durable with an fdatasync (several may share one).
    assert!(
        after["updatelatency_count"] >= before["updatelatency_count"] + 7.0,
        "{body}"
    );
    assert!(after["readlatency_count"] >= before["readlatency_count"] + 1.0);
    assert!(
        after["fsynctime_count"] > before["fsynctime_count"],
        "{body}"
    );
    assert!(after["fsynctime_sum"] >= before["fsynctime_sum"]);
    // The snapshot is written on its own thread: wait for it to be counted.
    let deadline = std::time::Instant::now() + GUARD;
    loop {
        let (_, _, body) = get(metrics, "/metrics").await;
        if scrape(&body).0["snapshottime_count"] >= 1.0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no snapshot timed:\n{body}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The replay window keeps changes once a persistent watch exists, and only then.
    assert_eq!(after["corral_replay_window_depth"], 0.0);
    let mut watcher = Client::connect(server.addr()).await;
    let req = corral_proto::records::AddWatchRequest {
        path: "/".into(),
        mode: 1, // persistent recursive
    };
    assert_eq!(
        watcher.call(OpCode::AddWatch, &|w| req.write(w)).await.err,
        0
    );
    client.create("/window1", 0).await;
    client.create("/window2", 0).await;
    let (_, _, body) = get(metrics, "/metrics").await;
    assert!(
        scrape(&body).0["corral_replay_window_depth"] >= 2.0,
        "two changes in the window:\n{body}"
    );
    drop(watcher);

    // The metrics listener answers probes but not commands.
    assert_eq!(get(metrics, "/livez").await.0, 200);
    assert_eq!(get(metrics, "/readyz").await.0, 200);
    assert_eq!(get(metrics, "/commands/ruok").await.0, 404);
    drop(client);
    server.stop().await.unwrap();
}

/// JSON types as ZooKeeper's Jackson output has them.
#[derive(Debug, Clone, Copy)]
enum T {
    Int,
    Float,
    Str,
    Bool,
    Arr,
    Obj,
    Null,
}

fn has_type(v: &Value, t: T) -> bool {
    match t {
        T::Int => v.is_i64() || v.is_u64(),
        T::Float => v.is_f64(),
        T::Str => v.is_string(),
        T::Bool => v.is_boolean(),
        T::Arr => v.is_array(),
        T::Obj => v.is_object(),
        T::Null => v.is_null(),
    }
}

fn check_keys(what: &str, v: &Value, golden: &[(&str, T)]) {
    let obj = v
        .as_object()
        .unwrap_or_else(|| panic!("{what}: not an object: {v}"));
    for (key, t) in golden {
        let field = obj
            .get(*key)
            .unwrap_or_else(|| panic!("{what}: `{key}` missing in {v:#}"));
        assert!(has_type(field, *t), "{what}: `{key}` is not {t:?}: {field}");
    }
}

/// Fields of ZooKeeper 3.8's `server_stats` object (`ServerStats`).
const SERVER_STATS: &[(&str, T)] = &[
    ("packets_sent", T::Int),
    ("packets_received", T::Int),
    ("fsync_threshold_exceed_count", T::Int),
    ("client_response_stats", T::Obj),
    ("data_dir_size", T::Int),
    ("log_dir_size", T::Int),
    ("provider_null", T::Bool),
    ("server_state", T::Str),
    ("last_processed_zxid", T::Int),
    ("outstanding_requests", T::Int),
    ("avg_latency", T::Float),
    ("max_latency", T::Int),
    ("min_latency", T::Int),
    ("num_alive_client_connections", T::Int),
    ("auth_failed_count", T::Int),
    ("non_mtlsremote_conn_count", T::Int),
    ("non_mtlslocal_conn_count", T::Int),
    ("uptime", T::Int),
];

const CLIENT_RESPONSE: &[(&str, T)] = &[
    ("last_buffer_size", T::Int),
    ("min_buffer_size", T::Int),
    ("max_buffer_size", T::Int),
];

/// One connection with a session (`ServerCnxn.getConnectionInfo(false)`).
const CONNECTION: &[(&str, T)] = &[
    ("remote_socket_address", T::Str),
    ("interest_ops", T::Int),
    ("outstanding_requests", T::Int),
    ("packets_received", T::Int),
    ("packets_sent", T::Int),
    ("session_id", T::Int),
    ("last_operation", T::Str),
    ("established", T::Int),
    ("session_timeout", T::Int),
    ("last_cxid", T::Int),
    ("last_zxid", T::Int),
    ("last_response_time", T::Int),
    ("last_latency", T::Int),
    ("min_latency", T::Int),
    ("avg_latency", T::Int),
    ("max_latency", T::Int),
];

/// Field names with their JSON types.
type Keys = Vec<(&'static str, T)>;

/// (primary name, short name, top-level golden keys) for every command, from ZooKeeper 3.8's
/// `Commands.java`; `command` and `error` are checked for all of them.
fn golden() -> Vec<(&'static str, &'static str, Keys)> {
    let server_stats = vec![
        ("version", T::Str),
        ("read_only", T::Bool),
        ("server_stats", T::Obj),
        ("client_response", T::Obj),
        ("node_count", T::Int),
    ];
    let mut stats = server_stats.clone();
    stats.extend([("connections", T::Arr), ("secure_connections", T::Arr)]);
    vec![
        ("ruok", "ruok", vec![]),
        ("server_stats", "srvr", server_stats),
        ("stats", "stat", stats),
        (
            "monitor",
            "mntr",
            vec![
                ("version", T::Str),
                ("server_state", T::Str),
                ("ephemerals_count", T::Int),
                ("num_alive_connections", T::Int),
                ("avg_latency", T::Float),
                ("outstanding_requests", T::Int),
                ("znode_count", T::Int),
                ("global_sessions", T::Int),
                ("packets_sent", T::Int),
                ("packets_received", T::Int),
                ("watch_count", T::Int),
                ("min_latency", T::Int),
                ("max_latency", T::Int),
                ("approximate_data_size", T::Int),
                ("open_file_descriptor_count", T::Int),
                ("max_file_descriptor_count", T::Int),
                ("uptime", T::Int),
                ("avg_readlatency", T::Float),
                ("min_readlatency", T::Float),
                ("max_readlatency", T::Float),
                ("cnt_readlatency", T::Int),
                ("sum_readlatency", T::Float),
                ("p50_readlatency", T::Float),
                ("p95_readlatency", T::Float),
                ("p99_readlatency", T::Float),
                ("p999_readlatency", T::Float),
                ("cnt_updatelatency", T::Int),
                ("p99_updatelatency", T::Float),
                ("avg_fsynctime", T::Float),
                ("cnt_fsynctime", T::Int),
                ("cnt_snapshottime", T::Int),
            ],
        ),
        (
            "configuration",
            "conf",
            vec![
                ("client_port", T::Int),
                ("data_dir", T::Str),
                ("data_log_dir", T::Str),
                ("tick_time", T::Int),
                ("max_client_cnxns", T::Int),
                ("min_session_timeout", T::Int),
                ("max_session_timeout", T::Int),
                ("server_id", T::Int),
                ("client_port_listen_backlog", T::Int),
            ],
        ),
        (
            "connections",
            "cons",
            vec![("connections", T::Arr), ("secure_connections", T::Arr)],
        ),
        (
            "dump",
            "dump",
            vec![
                ("expiry_time_to_session_ids", T::Obj),
                ("session_id_to_ephemeral_paths", T::Obj),
            ],
        ),
        (
            "environment",
            "envi",
            vec![
                ("zookeeper.version", T::Str),
                ("host.name", T::Str),
                ("java.version", T::Str),
                ("java.vendor", T::Str),
                ("java.home", T::Str),
                ("java.class.path", T::Str),
                ("java.library.path", T::Str),
                ("java.io.tmpdir", T::Str),
                ("java.compiler", T::Str),
                ("os.name", T::Str),
                ("os.arch", T::Str),
                ("os.version", T::Str),
                ("user.name", T::Str),
                ("user.home", T::Str),
                ("user.dir", T::Str),
                ("os.memory.free", T::Str),
                ("os.memory.max", T::Str),
                ("os.memory.total", T::Str),
            ],
        ),
        (
            "watch_summary",
            "wchs",
            vec![
                ("num_connections", T::Int),
                ("num_paths", T::Int),
                ("num_total_watches", T::Int),
            ],
        ),
        (
            "watches",
            "wchc",
            vec![("session_id_to_watched_paths", T::Obj)],
        ),
        (
            "watches_by_path",
            "wchp",
            vec![("path_to_session_ids", T::Obj)],
        ),
        ("is_read_only", "isro", vec![("read_only", T::Bool)]),
        (
            "initial_configuration",
            "icfg",
            vec![("initial_configuration", T::Str)],
        ),
        // Standalone: ZooKeeper answers only with an error.
        ("leader", "lead", vec![("error", T::Str)]),
        (
            "voting_view",
            "voting_view",
            vec![("current_config", T::Obj)],
        ),
        (
            "last_snapshot",
            "lsnp",
            vec![("zxid", T::Str), ("timestamp", T::Int)],
        ),
        (
            "dirs",
            "dirs",
            vec![("datadir_size", T::Int), ("logdir_size", T::Int)],
        ),
        ("hash", "hash", vec![("digests", T::Arr)]),
        (
            "observers",
            "obsr",
            vec![("synced_observers", T::Int), ("observers", T::Arr)],
        ),
        ("stat_reset", "srst", vec![]),
        ("connection_stat_reset", "crst", vec![]),
    ]
}

#[tokio::test]
async fn every_command_answers_zookeeper_fields() {
    let server = TestServer::start_with(with_endpoints()).await;
    let admin = server.admin_addr().expect("admin enabled");
    let mut client = Client::connect(server.addr()).await;
    client.create("/p", 0).await;
    client.create("/eph", 1).await;
    client.watch("/p").await;

    let (status, content_type, index) = get(admin, "/commands").await;
    assert_eq!(status, 200);
    assert!(content_type.starts_with("text/html"), "{content_type}");

    for (primary, short, keys) in golden() {
        assert!(
            index.contains(&format!("<a href=\"/commands/{primary}\">{primary}</a>")),
            "{primary} not listed"
        );
        for name in [primary, short] {
            let (status, content_type, body) = get(admin, &format!("/commands/{name}")).await;
            assert_eq!(status, 200, "{name}");
            assert_eq!(content_type, "application/json", "{name}");
            let v: Value = serde_json::from_str(&body)
                .unwrap_or_else(|e| panic!("{name}: invalid JSON ({e}): {body}"));
            assert_eq!(v["command"], primary, "{name}");
            let error_type = if primary == "leader" { T::Str } else { T::Null };
            check_keys(name, &v, &[("command", T::Str), ("error", error_type)]);
            check_keys(name, &v, &keys);
        }
    }

    // Nested shapes and the session made above.
    let (_, _, body) = get(admin, "/commands/srvr").await;
    let v: Value = serde_json::from_str(&body).unwrap();
    check_keys(
        "server_stats.server_stats",
        &v["server_stats"],
        SERVER_STATS,
    );
    check_keys(
        "server_stats.client_response_stats",
        &v["server_stats"]["client_response_stats"],
        CLIENT_RESPONSE,
    );
    check_keys(
        "server_stats.client_response",
        &v["client_response"],
        CLIENT_RESPONSE,
    );
    assert_eq!(v["server_stats"]["server_state"], "standalone");

    let (_, _, body) = get(admin, "/commands/cons").await;
    let v: Value = serde_json::from_str(&body).unwrap();
    let conns = v["connections"].as_array().unwrap();
    assert_eq!(conns.len(), 1, "{v:#}");
    check_keys("connection", &conns[0], CONNECTION);
    let session_id = conns[0]["session_id"].as_i64().unwrap();
    assert_ne!(session_id, 0);

    let (_, _, body) = get(admin, "/commands/dump").await;
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        v["session_id_to_ephemeral_paths"][session_id.to_string()],
        serde_json::json!(["/eph"])
    );
    let expiring: Vec<i64> = v["expiry_time_to_session_ids"]
        .as_object()
        .unwrap()
        .values()
        .flat_map(|ids| ids.as_array().unwrap().iter().filter_map(Value::as_i64))
        .collect();
    assert_eq!(expiring, vec![session_id]);

    let (_, _, body) = get(admin, "/commands/wchp").await;
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        v["path_to_session_ids"]["/p"],
        serde_json::json!([session_id])
    );
    let (_, _, body) = get(admin, "/commands/wchc").await;
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        v["session_id_to_watched_paths"][session_id.to_string()],
        serde_json::json!(["/p"])
    );
    let (_, _, body) = get(admin, "/commands/wchs").await;
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["num_total_watches"], 1);

    // ZooKeeper's answer to an unknown name.
    let (status, _, body) = get(admin, "/commands/nosuch").await;
    assert_eq!(status, 200);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["command"], "nosuch");
    assert_eq!(v["error"], "Unknown command: nosuch");
    assert_eq!(get(admin, "/elsewhere").await.0, 404);
    assert_eq!(
        get(admin, "/metrics").await.0,
        404,
        "metrics live on their own port"
    );

    assert_eq!(get(admin, "/livez").await.0, 200);
    assert_eq!(get(admin, "/readyz").await.0, 200);
    drop(client);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn command_url_is_configurable() {
    let mut config = with_endpoints();
    config.admin.command_url = "/zk".into();
    let server = TestServer::start_with(config).await;
    let admin = server.admin_addr().unwrap();
    let (status, _, body) = get(admin, "/zk/ruok").await;
    assert_eq!(status, 200);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (v["command"].as_str(), v["error"].is_null()),
        (Some("ruok"), true)
    );
    assert_eq!(get(admin, "/commands/ruok").await.0, 404);
    server.stop().await.unwrap();
}

/// A port nothing listens on right now.

#[tokio::test]
async fn disabled_endpoints_leave_their_ports_closed() {
    let dir = tempfile::tempdir().unwrap();
    let (admin_port, metrics_port) = (free_port(), free_port());
    let config = ServerConfig {
        client_port: 0,
        client_port_address: [127, 0, 0, 1].into(),
        data_dir: dir.path().to_path_buf(),
        admin: AdminConfig {
            enabled: false,
            address: [127, 0, 0, 1].into(),
            port: admin_port,
            ..AdminConfig::default()
        },
        metrics: MetricsConfig {
            enabled: false,
            host: [127, 0, 0, 1].into(),
            port: metrics_port,
            ..MetricsConfig::default()
        },
        ..ServerConfig::default()
    };
    let server = Server::bind(config).await.unwrap();
    assert_eq!((server.admin_addr(), server.metrics_addr()), (None, None));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.run(async move {
        let _ = stopped.await;
    }));
    for port in [admin_port, metrics_port] {
        let refused = tokio::time::timeout(GUARD, TcpStream::connect(("127.0.0.1", port)))
            .await
            .expect("connect resolves in time");
        assert!(refused.is_err(), "port {port} is open");
    }
    let _ = stop.send(());
    task.await.unwrap().unwrap();
}
