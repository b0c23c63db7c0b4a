//! Raw-bytes tests against a whole server on an ephemeral port: what a client sees on the
//! wire when it behaves, misbehaves, or pipelines.

use std::time::Duration;

use bytes::Bytes;
use corral_proto::records::{
    ConnectRequest, ConnectResponse, CreateRequest, PathWatch, ReplyHeader, RequestHeader,
};
use corral_proto::request::encode_connect;
use corral_proto::{Jute, OpCode, Writer};
use corral_server::config::{FourLetterWhitelist, ServerConfig};
use corral_server::testing::TestServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Upper bound on any single wait, so a broken server fails the test instead of hanging it.
/// Not a timing assertion: healthy runs finish far below it.
const GUARD: Duration = Duration::from_secs(20);

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

fn get_data(xid: i32, path: &str) -> Vec<u8> {
    let pw = PathWatch {
        path: path.into(),
        watch: false,
    };
    request(xid, OpCode::GetData, &|w| pw.write(w))
}

fn create(xid: i32, path: &str, data: &'static [u8]) -> Vec<u8> {
    let req = CreateRequest {
        path: path.into(),
        data: Some(Bytes::from_static(data)),
        acl: vec![corral_proto::records::Acl {
            perms: corral_proto::perms::ALL,
            id: corral_proto::records::Id {
                scheme: "world".into(),
                id: "anyone".into(),
            },
        }],
        flags: 0,
    };
    request(xid, OpCode::Create, &|w| req.write(w))
}

async fn read_frame(s: &mut TcpStream) -> Option<Vec<u8>> {
    let mut len = [0u8; 4];
    tokio::time::timeout(GUARD, s.read_exact(&mut len))
        .await
        .expect("server answered in time")
        .ok()?;
    let mut body = vec![0u8; i32::from_be_bytes(len) as usize];
    tokio::time::timeout(GUARD, s.read_exact(&mut body))
        .await
        .expect("server answered in time")
        .ok()?;
    Some(body)
}

async fn read_reply(s: &mut TcpStream) -> ReplyHeader {
    let body = read_frame(s).await.expect("a reply frame");
    ReplyHeader::read(&mut corral_proto::Reader::new(&body)).expect("a reply header")
}

/// True once the server has closed the connection (EOF or reset), draining anything before.
async fn closed_by_server(s: &mut TcpStream) -> bool {
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout(GUARD, s.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
        }
    }
}

/// Opens a connection and completes the session handshake.
async fn session(server: &TestServer) -> TcpStream {
    let mut s = TcpStream::connect(server.addr()).await.unwrap();
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
    let body = read_frame(&mut s).await.expect("a connect response");
    let resp = ConnectResponse::read(&mut corral_proto::Reader::new(&body)).unwrap();
    assert_ne!(resp.session_id, 0, "server assigned a session");
    s
}

async fn four_letter(server: &TestServer, word: &str) -> String {
    four_letter_bytes(server, word.as_bytes()).await
}

/// A four-letter word followed by whatever argument bytes it takes (`stmk`'s mask).
async fn four_letter_bytes(server: &TestServer, bytes: &[u8]) -> String {
    let mut s = TcpStream::connect(server.addr()).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut out = String::new();
    tokio::time::timeout(GUARD, s.read_to_string(&mut out))
        .await
        .expect("answer in time")
        .unwrap();
    out
}

#[tokio::test]
async fn malformed_packet_closes_only_that_connection() {
    let server = TestServer::start().await;
    let mut bad = session(&server).await;
    let mut good = session(&server).await;

    // getData whose path claims 100 bytes but carries 2.
    let mut body = Vec::new();
    body.extend_from_slice(&1i32.to_be_bytes());
    body.extend_from_slice(&OpCode::GetData.code().to_be_bytes());
    body.extend_from_slice(&100i32.to_be_bytes());
    body.extend_from_slice(b"/x");
    bad.write_all(&frame(&body)).await.unwrap();
    assert!(closed_by_server(&mut bad).await);

    good.write_all(&get_data(1, "/zookeeper")).await.unwrap();
    let reply = read_reply(&mut good).await;
    assert_eq!((reply.xid, reply.err), (1, 0));
    server.stop().await.unwrap();
}

#[tokio::test]
async fn oversized_frame_closes_the_connection() {
    let server = TestServer::start_with(ServerConfig {
        jute_max_buffer_bytes: 1024,
        ..TestServer::default_config()
    })
    .await;
    let mut s = session(&server).await;
    // Announce 1025 bytes: refused from the length alone, before any body arrives.
    s.write_all(&1025i32.to_be_bytes()).await.unwrap();
    assert!(closed_by_server(&mut s).await);

    // A negative length as the very first frame is refused too.
    let mut raw = TcpStream::connect(server.addr()).await.unwrap();
    raw.write_all(&(-5i32).to_be_bytes()).await.unwrap();
    assert!(closed_by_server(&mut raw).await);

    // The server itself is fine.
    let mut other = session(&server).await;
    other.write_all(&get_data(9, "/")).await.unwrap();
    assert_eq!(read_reply(&mut other).await.err, 0);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn unknown_opcode_is_answered_with_zunimplemented() {
    let server = TestServer::start().await;
    let mut s = session(&server).await;
    let mut w = Writer::new();
    RequestHeader { xid: 7, op: 999 }.write(&mut w);
    s.write_all(&frame(&w.into_inner())).await.unwrap();
    let reply = read_reply(&mut s).await;
    assert_eq!((reply.xid, reply.err), (7, -6));
    // ZooKeeper 3.8 closes the connection after ZUNIMPLEMENTED (checked against a real
    // server); Corral does the same.
    assert!(closed_by_server(&mut s).await);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn four_letter_words_respect_the_whitelist() {
    let server = TestServer::start_with(ServerConfig {
        four_letter_whitelist: FourLetterWhitelist::parse("ruok"),
        ..TestServer::default_config()
    })
    .await;
    assert_eq!(
        four_letter(&server, "dump").await,
        "dump is not executed because it is not in the whitelist.\n"
    );
    assert_eq!(four_letter(&server, "ruok").await, "imok");
    // srvr is always allowed, as in ZooKeeper.
    let srvr = four_letter(&server, "srvr").await;
    assert!(srvr.starts_with("Zookeeper version: 3.8."), "{srvr}");
    assert!(srvr.contains("\nMode: standalone\n"), "{srvr}");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn four_letter_words_report_live_state() {
    let server = TestServer::start().await;
    let mut s = session(&server).await;
    s.write_all(&create(1, "/flw", b"x")).await.unwrap();
    assert_eq!(read_reply(&mut s).await.err, 0);

    let cons = four_letter(&server, "cons").await;
    assert!(cons.contains(",sid=0x"), "{cons}");
    assert!(cons.contains("lop=CREA"), "{cons}");
    let mntr = four_letter(&server, "mntr").await;
    assert!(mntr.contains("zk_server_state\tstandalone\n"), "{mntr}");
    assert!(mntr.contains("zk_global_sessions\t1\n"), "{mntr}");
    let stat = four_letter(&server, "stat").await;
    assert!(stat.contains("\nClients:\n"), "{stat}");
    assert!(stat.contains("\nConnections: 2\n"), "{stat}");
    let conf = four_letter(&server, "conf").await;
    assert!(
        conf.contains(&format!("clientPort={}\n", server.addr().port())),
        "{conf}"
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order() {
    let server = TestServer::start().await;
    let mut s = session(&server).await;
    // Writes and reads interleaved in one burst: each read must see the write before it,
    // and every reply must come back in request order even though writes wait for fsync.
    let mut burst = Vec::new();
    let mut xid = 0;
    for i in 0..40 {
        xid += 1;
        burst.extend_from_slice(&create(xid, &format!("/p{i}"), b"v"));
        xid += 1;
        burst.extend_from_slice(&get_data(xid, &format!("/p{i}")));
    }
    s.write_all(&burst).await.unwrap();
    for expect in 1..=xid {
        let reply = read_reply(&mut s).await;
        assert_eq!(reply.xid, expect, "replies in request order");
        assert_eq!(reply.err, 0, "xid {expect}");
    }
    server.stop().await.unwrap();
}

#[tokio::test]
async fn max_client_cnxns_is_enforced_per_ip() {
    let server = TestServer::start_with(ServerConfig {
        max_client_cnxns: 2,
        ..TestServer::default_config()
    })
    .await;
    let _a = session(&server).await;
    let mut b = session(&server).await;
    let mut c = TcpStream::connect(server.addr()).await.unwrap();
    assert!(closed_by_server(&mut c).await, "third connection refused");
    // The ones admitted keep working.
    b.write_all(&get_data(1, "/")).await.unwrap();
    assert_eq!(read_reply(&mut b).await.err, 0);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn writes_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_in(TestServer::default_config(), dir.path())
        .await
        .unwrap();
    let mut s = session(&server).await;
    s.write_all(&create(1, "/kept", b"hello")).await.unwrap();
    assert_eq!(read_reply(&mut s).await.err, 0);
    drop(s);
    server.stop().await.unwrap();

    let server = TestServer::start_in(TestServer::default_config(), dir.path())
        .await
        .unwrap();
    let mut s = session(&server).await;
    s.write_all(&get_data(1, "/kept")).await.unwrap();
    let body = read_frame(&mut s).await.unwrap();
    let mut r = corral_proto::Reader::new(&body);
    let header = ReplyHeader::read(&mut r).unwrap();
    assert_eq!(header.err, 0);
    assert_eq!(r.read_buffer().unwrap().as_deref(), Some(&b"hello"[..]));
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_client_that_does_not_read_is_disconnected() {
    let server = TestServer::start().await;
    let mut writer = session(&server).await;
    static BIG: [u8; 512 * 1024] = [7u8; 512 * 1024];
    writer.write_all(&create(1, "/big", &BIG)).await.unwrap();
    assert_eq!(read_reply(&mut writer).await.err, 0);

    // 200 reads of 512 KiB = 100 MiB of replies, never read: far beyond what the socket
    // buffers plus the server's per-connection queue may hold.
    let mut hog = session(&server).await;
    let mut burst = Vec::new();
    for xid in 1..=200 {
        burst.extend_from_slice(&get_data(xid, "/big"));
    }
    hog.write_all(&burst).await.unwrap();

    // The server stops reading the hog and sets its requests aside; with its pings unread
    // its session expires and it is closed. Only the hog is dropped: wait (bounded by
    // GUARD) until the server counts just the writer and the asking connection, while the
    // writer keeps being answered (which also keeps its own session alive).
    let deadline = tokio::time::Instant::now() + GUARD;
    loop {
        let mntr = four_letter(&server, "mntr").await;
        if mntr.contains("zk_num_alive_connections\t2\n") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "hog still connected:\n{mntr}"
        );
        writer.write_all(&get_data(3, "/zookeeper")).await.unwrap();
        assert_eq!(read_reply(&mut writer).await.err, 0);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    writer.write_all(&get_data(2, "/zookeeper")).await.unwrap();
    assert_eq!(read_reply(&mut writer).await.err, 0);
    assert!(closed_by_server(&mut hog).await);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn trace_mask_words_answer_the_mask_in_decimal() {
    let server = TestServer::start().await;
    // ZooKeeper's default: client requests, server packets, sessions and warnings.
    assert_eq!(four_letter(&server, "gtmk").await, "306");
    let mut stmk = b"stmk".to_vec();
    stmk.extend_from_slice(&0x1f2i64.to_be_bytes());
    assert_eq!(four_letter_bytes(&server, &stmk).await, "498");
    assert_eq!(four_letter(&server, "gtmk").await, "498");
    // The mask may arrive in a later segment than the word.
    let mut s = TcpStream::connect(server.addr()).await.unwrap();
    s.write_all(b"stmk").await.unwrap();
    s.flush().await.unwrap();
    tokio::task::yield_now().await;
    s.write_all(&(-1i64).to_be_bytes()).await.unwrap();
    let mut out = String::new();
    tokio::time::timeout(GUARD, s.read_to_string(&mut out))
        .await
        .expect("answer in time")
        .unwrap();
    assert_eq!(out, "-1");
    assert_eq!(four_letter(&server, "gtmk").await, "-1");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn node_count_matches_zookeeper_for_a_fresh_tree() {
    let server = TestServer::start().await;
    // ZooKeeper's node map holds the root under "" and "/": a fresh server reports 5 nodes
    // (root twice, /zookeeper, /zookeeper/quota, /zookeeper/config).
    let srvr = four_letter(&server, "srvr").await;
    assert!(srvr.contains("\nNode count: 5\n"), "{srvr}");
    let mntr = four_letter(&server, "mntr").await;
    assert!(mntr.contains("\nzk_znode_count\t5\n"), "{mntr}");
    let mut s = session(&server).await;
    s.write_all(&create(1, "/one", b"x")).await.unwrap();
    assert_eq!(read_reply(&mut s).await.err, 0);
    let stat = four_letter(&server, "stat").await;
    assert!(stat.contains("\nNode count: 6\n"), "{stat}");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn envi_lists_zookeepers_keys_in_order() {
    let server = TestServer::start().await;
    let envi = four_letter(&server, "envi").await;
    let mut lines = envi.lines();
    assert_eq!(lines.next(), Some("Environment:"));
    let keys: Vec<&str> = lines
        .map(|l| l.split_once('=').expect("key=value").0)
        .collect();
    assert_eq!(
        keys,
        [
            "zookeeper.version",
            "host.name",
            "java.version",
            "java.vendor",
            "java.home",
            "java.class.path",
            "java.library.path",
            "java.io.tmpdir",
            "java.compiler",
            "os.name",
            "os.arch",
            "os.version",
            "user.name",
            "user.home",
            "user.dir",
            "os.memory.free",
            "os.memory.max",
            "os.memory.total",
        ]
    );
    for key in ["os.memory.free", "os.memory.max", "os.memory.total"] {
        let value = envi
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{key}=")))
            .unwrap();
        let mb = value
            .strip_suffix("MB")
            .expect("a figure in MB, as ZooKeeper prints");
        mb.parse::<u64>().expect("whole megabytes");
    }
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_second_server_on_the_same_data_dir_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let first = TestServer::start_in(TestServer::default_config(), dir.path())
        .await
        .unwrap();
    let second = TestServer::start_in(TestServer::default_config(), dir.path()).await;
    let Err(e) = second else {
        panic!("two servers opened {}", dir.path().display());
    };
    let message = e.to_string();
    assert!(
        message.contains(&dir.path().display().to_string()),
        "{message}"
    );
    assert!(
        message.contains(&format!("pid {}", std::process::id())),
        "{message}"
    );
    // The first server is unaffected, and once it stops the directory is free again.
    assert!(four_letter(&first, "srvr")
        .await
        .starts_with("Zookeeper version:"));
    first.stop().await.unwrap();
    let again = TestServer::start_in(TestServer::default_config(), dir.path())
        .await
        .unwrap();
    again.stop().await.unwrap();
}

/// Sends `requests` on `s` in windows of a few hundred (replies to deep paths are large, and
/// a server drops a client whose unread replies pile up), and returns each reply's error
/// code and body, in order.
async fn pipeline(mut s: TcpStream, requests: Vec<Vec<u8>>) -> (TcpStream, Vec<(i32, Vec<u8>)>) {
    const WINDOW: usize = 256;
    let mut replies = Vec::with_capacity(requests.len());
    for window in requests.chunks(WINDOW) {
        s.write_all(&window.concat()).await.unwrap();
        for _ in window {
            let body = read_frame(&mut s).await.expect("a reply");
            let mut r = corral_proto::Reader::new(&body);
            let header = ReplyHeader::read(&mut r).unwrap();
            replies.push((header.err, r.rest().to_vec()));
        }
    }
    (s, replies)
}

async fn all_children_number(s: TcpStream, path: &str) -> (TcpStream, i32) {
    let req = corral_proto::records::PathRequest { path: path.into() };
    let (s, replies) = pipeline(
        s,
        vec![request(9, OpCode::GetAllChildrenNumber, &|w| req.write(w))],
    )
    .await;
    assert_eq!(replies[0].0, 0);
    let mut r = corral_proto::Reader::new(&replies[0].1);
    (s, r.read_i32().unwrap())
}

/// A chain this deep overflows a 2 MiB stack (the test thread's, and what the server's
/// threads get) if anything recurses once per level.
const DEEP_CHAIN_LEVELS: usize = 25_000;

#[tokio::test]
async fn a_deep_chain_is_served_snapshotted_recovered_and_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let config = ServerConfig {
        // Durability is not under test here; fsyncs would only slow it down.
        force_sync: false,
        // Due somewhere in the creates, so recovery loads the chain from a snapshot.
        snap_count: DEEP_CHAIN_LEVELS as u64,
        ..TestServer::default_config()
    };
    let server = TestServer::start_in(config.clone(), dir.path())
        .await
        .unwrap();
    let s = session(&server).await;
    let mut paths = Vec::with_capacity(DEEP_CHAIN_LEVELS);
    let mut path = String::new();
    for _ in 0..DEEP_CHAIN_LEVELS {
        path.push_str("/a");
        paths.push(path.clone());
    }
    let creates = paths
        .iter()
        .enumerate()
        .map(|(i, p)| create(i as i32 + 1, p, b""))
        .collect();
    let (s, replies) = pipeline(s, creates).await;
    assert!(replies.iter().all(|(err, _)| *err == 0));
    let leaf = format!("{path}/e");
    let eph = CreateRequest {
        path: leaf.clone(),
        data: None,
        acl: vec![corral_proto::records::Acl {
            perms: corral_proto::perms::ALL,
            id: corral_proto::records::Id {
                scheme: "world".into(),
                id: "anyone".into(),
            },
        }],
        flags: 1, // ephemeral
    };
    let list = corral_proto::records::PathRequest { path: "/".into() };
    let (s, replies) = pipeline(
        s,
        vec![
            request(1, OpCode::Create, &|w| eph.write(w)),
            request(2, OpCode::GetEphemerals, &|w| list.write(w)),
        ],
    )
    .await;
    assert_eq!(replies[0].0, 0);
    let mut r = corral_proto::Reader::new(&replies[1].1);
    assert_eq!(r.read_vec::<String>().unwrap(), vec![leaf]);
    // The chain, its ephemeral leaf and the three /zookeeper nodes.
    let (s, count) = all_children_number(s, "/").await;
    assert_eq!(count as usize, DEEP_CHAIN_LEVELS + 1 + 3);
    // Wait (bounded) for the snapshot the creates made due.
    let snapshot_written = async {
        loop {
            let found = std::fs::read_dir(dir.path()).unwrap().flatten().any(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                name.starts_with("snapshot.") && !name.ends_with(".tmp")
            });
            if found {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(GUARD * 6, snapshot_written)
        .await
        .expect("a snapshot of the chain");
    drop(s);
    server.stop().await.unwrap();

    let server = TestServer::start_in(config, dir.path()).await.unwrap();
    let s = session(&server).await;
    let (s, count) = all_children_number(s, "/").await;
    // The ephemeral leaf may already be gone with its session; the chain is not.
    assert!(count as usize >= DEEP_CHAIN_LEVELS + 3, "{count}");
    // deleteall's order: deepest first.
    let mut deletes = Vec::with_capacity(DEEP_CHAIN_LEVELS + 1);
    let leaf = format!("{path}/e");
    for p in std::iter::once(&leaf).chain(paths.iter().rev()) {
        let req = corral_proto::records::DeleteRequest {
            path: p.clone(),
            version: -1,
        };
        deletes.push(request(deletes.len() as i32 + 1, OpCode::Delete, &|w| {
            req.write(w)
        }));
    }
    let (s, replies) = pipeline(s, deletes).await;
    // The leaf: deleted now, or already gone with its session.
    assert!(
        replies[0].0 == 0 || replies[0].0 == -101,
        "{}",
        replies[0].0
    );
    assert!(replies[1..].iter().all(|(err, _)| *err == 0));
    let (s, count) = all_children_number(s, "/").await;
    assert_eq!(count, 3);
    drop(s);
    server.stop().await.unwrap();
}
