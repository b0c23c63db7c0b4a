//! Connection limits on the real binary: connections that stall their handshake, and a client
//! that pipelines large reads and never reads its socket. Memory is the server's resident set
//! (VmRSS in /proc/<pid>/status); every wait is a bounded poll, and nothing here asserts how
//! fast something happened, only that it happened before a generous deadline.

mod support;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use corral_client::{Client, CreateMode};
use corral_proto::records::{ConnectRequest, PathWatch, RequestHeader};
use corral_proto::request::encode_connect;
use corral_proto::{Jute, OpCode, Request, Writer};
use support::{four_letter_word, Server, Target};

/// Connections that announce a large ConnectRequest and then stall.
const STALLED_CONNECTIONS: usize = 800;
/// What each of them announces (within the default jute.maxbuffer).
const ANNOUNCED_BYTES: u32 = 1_000_000;
/// The server's resident set may grow by less than this while they are open.
const STALL_GROWTH_LIMIT_MB: u64 = 100;
/// Far beyond the 10 s handshake timeout, for a loaded machine.
const CLOSE_DEADLINE: Duration = Duration::from_secs(90);
const POLL: Duration = Duration::from_millis(200);

/// Size of the node the slow consumer reads, and how many reads it pipelines.
const BIG_NODE_BYTES: usize = 1_000_000;
const PIPELINED_READS: usize = 2_000;
/// 2,000 replies of 1 MB would be 2 GB; the server must stay far below.
const SLOW_CONSUMER_GROWTH_LIMIT_MB: u64 = 200;
/// The default `globalOutstandingLimit`.
const OUTSTANDING_LIMIT: u64 = 1000;
const CLIENT_DEADLINE: Duration = Duration::from_secs(60);

fn rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("server status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS line")
}

/// True once the server has closed its end (EOF or reset); never blocks.
fn closed_by_server(s: &mut TcpStream) -> bool {
    let mut byte = [0u8; 1];
    match s.read(&mut byte) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) if e.kind() == ErrorKind::WouldBlock => false,
        Err(_) => true,
    }
}

/// One `key value` line of `mntr`.
fn mntr_value(port: u16, key: &str) -> Option<u64> {
    let text = four_letter_word(port, "mntr").ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('\t')?.trim().parse().ok())
}

/// The `Outstanding:` line of `srvr`.
fn srvr_outstanding(port: u16) -> Option<u64> {
    let text = four_letter_word(port, "srvr").ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("Outstanding: ")?.trim().parse().ok())
}

#[test]
fn stalled_handshakes_cost_little_memory_and_are_closed() {
    let _serial = support::exclusive();
    let server = Server::start(Target::Corral);
    let before_kb = rss_kb(server.pid());

    let mut announce = ANNOUNCED_BYTES.to_be_bytes().to_vec();
    announce.extend_from_slice(&[0u8; 8]);
    let mut open: Vec<TcpStream> = (0..STALLED_CONNECTIONS)
        .map(|i| {
            let mut s = TcpStream::connect(("127.0.0.1", server.port))
                .unwrap_or_else(|e| panic!("connection {i}: {e}"));
            s.write_all(&announce).expect("send the announcement");
            s.set_nonblocking(true).expect("nonblocking");
            s
        })
        .collect();

    // The peak is what matters: sampled until every stalled connection is gone.
    let deadline = Instant::now() + CLOSE_DEADLINE;
    let mut peak_kb = rss_kb(server.pid());
    loop {
        peak_kb = peak_kb.max(rss_kb(server.pid()));
        open.retain_mut(|s| !closed_by_server(s));
        if open.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {STALLED_CONNECTIONS} stalled handshakes still open after {CLOSE_DEADLINE:?} \
             (resident set grew by {} MB)",
            open.len(),
            peak_kb.saturating_sub(before_kb) / 1024
        );
        std::thread::sleep(POLL);
    }
    let grown_mb = peak_kb.saturating_sub(before_kb) / 1024;
    eprintln!("{STALLED_CONNECTIONS} stalled handshakes: resident set grew by {grown_mb} MB");
    assert!(
        grown_mb < STALL_GROWTH_LIMIT_MB,
        "resident set grew by {grown_mb} MB for {STALLED_CONNECTIONS} stalled handshakes"
    );
    assert_eq!(
        four_letter_word(server.port, "ruok").as_deref(),
        Ok("imok"),
        "the server still serves"
    );
}

/// A raw connection with a session, that sends `PIPELINED_READS` getData of `path` and
/// never reads a reply.
fn start_slow_consumer(port: u16, path: &str) -> TcpStream {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let mut w = Writer::new();
    encode_connect(
        &ConnectRequest {
            protocol_version: 0,
            last_zxid_seen: 0,
            timeout_ms: 4000,
            session_id: 0,
            passwd: Some(vec![0u8; 16].into()),
        },
        false,
        &mut w,
    );
    write_frame(&mut s, &w.into_inner());
    // The ConnectResponse is the only thing this client ever reads.
    s.set_read_timeout(Some(CLIENT_DEADLINE)).unwrap();
    let mut len = [0u8; 4];
    s.read_exact(&mut len).expect("connect response length");
    let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
    s.read_exact(&mut body).expect("connect response");

    let mut requests = Vec::new();
    for xid in 1..=PIPELINED_READS as i32 {
        let mut w = Writer::new();
        RequestHeader {
            xid,
            op: OpCode::GetData.code(),
        }
        .write(&mut w);
        Request::GetData(PathWatch {
            path: path.into(),
            watch: false,
        })
        .write(&mut w);
        let body = w.into_inner();
        requests.extend_from_slice(&(body.len() as u32).to_be_bytes());
        requests.extend_from_slice(&body);
    }
    // The server may stop reading part-way: write from a thread that gives up eventually.
    let mut writer = s.try_clone().expect("clone socket");
    writer.set_write_timeout(Some(CLIENT_DEADLINE)).unwrap();
    std::thread::spawn(move || {
        let _ = writer.write_all(&requests);
    });
    s
}

fn write_frame(s: &mut TcpStream, body: &[u8]) {
    let mut out = (body.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(body);
    s.write_all(&out).expect("write frame");
}

#[test]
fn a_client_that_never_reads_its_replies_is_bounded_and_others_are_served() {
    let _serial = support::exclusive();
    let server = Server::start(Target::Corral);
    let port = server.port;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let good = rt.block_on(async {
        let c = Client::builder(&server.addr())
            .session_timeout(Duration::from_secs(4))
            .connect_timeout(CLIENT_DEADLINE)
            .connect()
            .await
            .expect("connect");
        c.create("/big", &vec![7u8; BIG_NODE_BYTES], CreateMode::Persistent)
            .await
            .expect("create /big");
        c.create("/small", b"x", CreateMode::Persistent)
            .await
            .expect("create /small");
        c
    });
    let before_kb = rss_kb(server.pid());

    let slow = start_slow_consumer(port, "/big");
    slow.set_nonblocking(true).unwrap();

    let deadline = Instant::now() + CLIENT_DEADLINE * 2;
    let mut peak_kb = before_kb;
    let mut answered = 0u64;
    let mut max_outstanding = 0u64;
    let mut srvr_saw_outstanding = false;
    // Until the server has closed the slow consumer: the other client keeps being answered,
    // memory stays bounded, and the slow consumer's unanswered requests are reported.
    loop {
        let reply = rt.block_on(async {
            tokio::time::timeout(CLIENT_DEADLINE, good.get_data("/small")).await
        });
        match reply {
            Ok(Ok((data, _))) => assert_eq!(data, b"x"),
            other => panic!("another client's read was not answered: {other:?}"),
        }
        answered += 1;
        peak_kb = peak_kb.max(rss_kb(server.pid()));
        let outstanding = mntr_value(port, "zk_outstanding_requests").expect("mntr");
        max_outstanding = max_outstanding.max(outstanding);
        srvr_saw_outstanding |= srvr_outstanding(port).is_some_and(|n| n > 0);
        // Reading the slow consumer's socket would drain its replies: only peek for the end.
        let mut byte = [0u8; 1];
        let ended = match slow.peek(&mut byte) {
            Ok(0) => true,
            Ok(_) => {
                // Replies are waiting, so the connection was open when they were sent;
                // whether it is still open shows in the server's connection count.
                mntr_value(port, "zk_num_alive_connections").is_some_and(|n| n <= 2)
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => false,
            Err(_) => true,
        };
        if ended {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the slow consumer is still connected after {:?}",
            CLIENT_DEADLINE * 2
        );
        std::thread::sleep(POLL);
    }
    let grown_mb = peak_kb.saturating_sub(before_kb) / 1024;
    eprintln!(
        "slow consumer: resident set grew by {grown_mb} MB; {answered} reads of another \
         client answered meanwhile; at most {max_outstanding} requests outstanding"
    );
    assert!(
        grown_mb < SLOW_CONSUMER_GROWTH_LIMIT_MB,
        "resident set grew by {grown_mb} MB for a client pipelining {PIPELINED_READS} reads of {BIG_NODE_BYTES} bytes"
    );
    assert!(answered > 0);
    assert!(
        max_outstanding > 0 && srvr_saw_outstanding,
        "the slow consumer's unanswered requests were never reported (mntr max {max_outstanding})"
    );
    assert!(
        max_outstanding <= OUTSTANDING_LIMIT + 1,
        "{max_outstanding} requests outstanding, beyond globalOutstandingLimit"
    );
    // Once it is gone nothing is outstanding, and the other client is still served.
    let settle = Instant::now() + CLIENT_DEADLINE;
    while mntr_value(port, "zk_outstanding_requests") != Some(0) {
        assert!(
            Instant::now() < settle,
            "outstanding requests never went back to 0"
        );
        std::thread::sleep(POLL);
    }
    let reply =
        rt.block_on(async { tokio::time::timeout(CLIENT_DEADLINE, good.get_data("/big")).await });
    match reply {
        Ok(Ok((data, _))) => assert_eq!(data.len(), BIG_NODE_BYTES),
        other => panic!("read after the slow consumer left: {other:?}"),
    }
    drop(good);
    rt.shutdown_timeout(Duration::from_secs(5));
}
