//! Real sockets on 127.0.0.1. Every step that waits on the network is bounded by
//! [`bounded`], so a regression fails the test instead of hanging it; no test asserts a
//! duration.

use std::future::Future;

use super::*;

/// Answers `from` (8 bytes) followed by the body.
const ECHO: u8 = 1;
/// Fails with a text naming the body.
const FAIL: u8 = 2;
/// Never answers (reports that it started).
const HANG: u8 = 3;
/// Answers the body once the test opens the gate (reports that it started).
const GATED: u8 = 4;
/// Panics.
const PANIC: u8 = 5;

const SERVER_ID: u64 = 2;
const CLIENT_ID: u64 = 1;
/// Longer than any test step may take: a call that returns proves it did not hang.
const LONG_TIMEOUT: Duration = Duration::from_secs(60);
const STEP_BOUND: Duration = Duration::from_secs(10);

async fn bounded<F: Future>(step: F) -> F::Output {
    tokio::time::timeout(STEP_BOUND, step)
        .await
        .expect("test step did not finish in time")
}

struct TestHandler {
    gate: Arc<Semaphore>,
    started: mpsc::Sender<u8>,
}

impl PeerHandler for TestHandler {
    fn handle(
        &self,
        from: u64,
        kind: u8,
        body: Bytes,
    ) -> BoxFuture<'static, Result<Bytes, String>> {
        match kind {
            ECHO => async move {
                let mut out = BytesMut::with_capacity(8 + body.len());
                out.put_u64(from);
                out.put_slice(&body);
                Ok(out.freeze())
            }
            .boxed(),
            FAIL => {
                async move { Err(format!("no such thing: {}", String::from_utf8_lossy(&body))) }
                    .boxed()
            }
            HANG => {
                let _ = self.started.try_send(HANG);
                futures::future::pending().boxed()
            }
            GATED => {
                let _ = self.started.try_send(GATED);
                let gate = self.gate.clone();
                async move {
                    let permit = gate.acquire().await.map_err(|e| e.to_string())?;
                    permit.forget();
                    Ok(body)
                }
                .boxed()
            }
            PANIC => panic!("test handler asked to panic"),
            other => async move { Err(format!("unknown kind {other}")) }.boxed(),
        }
    }
}

struct Fixture {
    server: PeerServer,
    gate: Arc<Semaphore>,
    started: mpsc::Receiver<u8>,
}

fn test_limits() -> PeerLimits {
    PeerLimits {
        max_frame_bytes: 64 * 1024,
        max_queued_bytes: 1024 * 1024,
        connect_timeout_ms: 5_000,
    }
}

async fn start_server(listener: TcpListener, limits: PeerLimits) -> Fixture {
    let gate = Arc::new(Semaphore::new(0));
    let (started_tx, started) = mpsc::channel(64);
    let handler = Arc::new(TestHandler {
        gate: gate.clone(),
        started: started_tx,
    });
    let server = PeerServer::start(listener, SERVER_ID, handler, limits).expect("start server");
    Fixture {
        server,
        gate,
        started,
    }
}

async fn fixture() -> Fixture {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    start_server(listener, test_limits()).await
}

fn client_for(addr: SocketAddr) -> PeerClient {
    PeerClient::new(CLIENT_ID, SERVER_ID, addr.to_string(), test_limits())
}

fn echo_answer(body: &[u8]) -> Bytes {
    let mut out = BytesMut::new();
    out.put_u64(CLIENT_ID);
    out.put_slice(body);
    out.freeze()
}

/// An address nothing listens on (bound, then released).
async fn dead_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    listener.local_addr().expect("addr")
}

/// The client's open connection (panics if it has none).
fn current_conn(client: &PeerClient) -> Arc<Conn> {
    let link = lock(&client.inner.link);
    link.conn.clone().expect("an open connection")
}

/// Calls registered on `conn` and not yet answered; `None` once it has ended.
fn waiting_calls(conn: &Conn) -> Option<usize> {
    lock(&conn.shared.pending).as_ref().map(HashMap::len)
}

/// Reads until the other side closes; panics if it does not within the step bound.
async fn expect_closed_by_server(stream: &mut TcpStream) {
    let mut buf = [0u8; 256];
    loop {
        match bounded(stream.read(&mut buf)).await {
            Ok(0) | Err(_) => return,
            Ok(_) => continue,
        }
    }
}

#[tokio::test]
async fn echo_round_trip_carries_sender_id() {
    let fx = fixture().await;
    let client = client_for(fx.server.local_addr());
    let answer = bounded(client.call(ECHO, Bytes::from_static(b"hello"), LONG_TIMEOUT))
        .await
        .expect("echo");
    assert_eq!(answer, echo_answer(b"hello"));
    // An empty body is a valid request too.
    let answer = bounded(client.call(ECHO, Bytes::new(), LONG_TIMEOUT))
        .await
        .expect("empty echo");
    assert_eq!(answer, echo_answer(b""));
    fx.server.shutdown().await;
}

#[tokio::test]
async fn concurrent_calls_on_one_client_get_their_own_answers() {
    let fx = fixture().await;
    let client = client_for(fx.server.local_addr());
    let calls = (0..200u32).map(|i| {
        let client = client.clone();
        async move {
            let body = Bytes::from(format!("request {i}").repeat(1 + i as usize % 7));
            let answer = client.call(ECHO, body.clone(), LONG_TIMEOUT).await;
            (body, answer)
        }
    });
    let results = bounded(futures::future::join_all(calls)).await;
    for (body, answer) in results {
        assert_eq!(answer.expect("answered"), echo_answer(&body));
    }
    // All of them went over a single connection, and none is still registered.
    let conn = current_conn(&client);
    assert_eq!(conn.next_request_id.load(Ordering::Relaxed), 201);
    assert_eq!(waiting_calls(&conn), Some(0));
    fx.server.shutdown().await;
}

#[tokio::test]
async fn slow_handler_does_not_hold_up_a_fast_one() {
    let mut fx = fixture().await;
    let client = client_for(fx.server.local_addr());
    let slow = tokio::spawn({
        let client = client.clone();
        async move {
            client
                .call(GATED, Bytes::from_static(b"slow"), LONG_TIMEOUT)
                .await
        }
    });
    // The slow request is being handled before the fast one is sent.
    assert_eq!(bounded(fx.started.recv()).await, Some(GATED));
    let fast = bounded(client.call(ECHO, Bytes::from_static(b"fast"), LONG_TIMEOUT)).await;
    assert_eq!(fast.expect("fast answered"), echo_answer(b"fast"));
    assert!(
        !slow.is_finished(),
        "the gated call cannot have finished yet"
    );
    fx.gate.add_permits(1);
    let slow = bounded(slow).await.expect("slow task");
    assert_eq!(slow.expect("slow answered"), Bytes::from_static(b"slow"));
    fx.server.shutdown().await;
}

#[tokio::test]
async fn down_peer_is_unreachable_and_not_hammered() {
    let client = client_for(dead_addr().await);
    let first = bounded(client.call(ECHO, Bytes::new(), LONG_TIMEOUT)).await;
    assert!(matches!(first, Err(PeerError::Unreachable(_))), "{first:?}");
    {
        let mut link = lock(&client.inner.link);
        assert!(link.retry_at.is_some(), "a failed connect starts a backoff");
        assert_eq!(
            link.backoff_ms,
            FIRST_BACKOFF_MS * 2,
            "the next one waits longer"
        );
        // Stretch the backoff so the check below does not depend on how fast this runs.
        link.retry_at = Some(Instant::now() + STEP_BOUND);
    }
    // Within the backoff a call fails without a connection attempt, whatever its timeout.
    let second = bounded(client.call(ECHO, Bytes::new(), LONG_TIMEOUT)).await;
    match second {
        Err(PeerError::Unreachable(reason)) => {
            assert!(reason.contains("not retrying yet"), "{reason}");
            assert!(reason.contains("connect to"), "keeps the cause: {reason}");
        }
        other => panic!("expected Unreachable, got {other:?}"),
    }
}

#[tokio::test]
async fn restarted_peer_is_reached_again_by_the_same_client() {
    let fx = fixture().await;
    let addr = fx.server.local_addr();
    let client = client_for(addr);
    bounded(client.call(ECHO, Bytes::from_static(b"before"), LONG_TIMEOUT))
        .await
        .expect("before restart");

    fx.server.shutdown().await;
    let while_down = bounded(client.call(ECHO, Bytes::new(), LONG_TIMEOUT)).await;
    assert!(
        matches!(
            while_down,
            Err(PeerError::Unreachable(_) | PeerError::Closed)
        ),
        "{while_down:?}"
    );

    let listener = TcpListener::bind(addr).await.expect("rebind the same port");
    let fx = start_server(listener, test_limits()).await;
    let answer = bounded(async {
        loop {
            match client
                .call(ECHO, Bytes::from_static(b"after"), LONG_TIMEOUT)
                .await
            {
                Ok(answer) => return answer,
                // Until the backoff from the down period runs out.
                Err(PeerError::Unreachable(_) | PeerError::Closed) => {
                    tokio::time::sleep(Duration::from_millis(10)).await
                }
                Err(e) => panic!("unexpected error {e:?}"),
            }
        }
    })
    .await;
    assert_eq!(answer, echo_answer(b"after"));
    fx.server.shutdown().await;
}

#[tokio::test]
async fn unanswered_call_times_out_and_leaves_the_connection_usable() {
    let fx = fixture().await;
    let client = client_for(fx.server.local_addr());
    let hung = bounded(client.call(HANG, Bytes::new(), Duration::from_millis(100))).await;
    assert_eq!(hung, Err(PeerError::Timeout));
    let answer = bounded(client.call(ECHO, Bytes::from_static(b"next"), LONG_TIMEOUT))
        .await
        .expect("after a timeout");
    assert_eq!(answer, echo_answer(b"next"));
    // The timed-out call no longer waits for anything.
    assert_eq!(waiting_calls(&current_conn(&client)), Some(0));
    fx.server.shutdown().await;
}

#[tokio::test]
async fn an_answer_after_the_call_timed_out_is_counted_late() {
    let mut fx = fixture().await;
    let client = client_for(fx.server.local_addr());
    let timeout = Duration::from_millis(50);
    // Answered in time: nothing late.
    bounded(client.call(ECHO, Bytes::from_static(b"quick"), timeout))
        .await
        .expect("echo");
    assert_eq!(client.take_late_answers(Duration::ZERO), None);

    let slow = bounded(client.call(GATED, Bytes::from_static(b"slow"), timeout)).await;
    assert_eq!(slow, Err(PeerError::Timeout));
    assert_eq!(bounded(fx.started.recv()).await, Some(GATED));
    fx.gate.add_permits(1);
    let late = bounded(async {
        loop {
            if let Some(late) = client.take_late_answers(Duration::ZERO) {
                return late;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    assert_eq!((late.count, late.total, late.timeout_ms), (1, 1, 50));
    assert!(
        late.slowest_ms >= late.timeout_ms,
        "the answer came after the caller gave up: {late:?}"
    );
    // Reported once; the connection still serves.
    assert_eq!(client.take_late_answers(Duration::ZERO), None);
    bounded(client.call(ECHO, Bytes::from_static(b"next"), LONG_TIMEOUT))
        .await
        .expect("after a late answer");
    fx.server.shutdown().await;
}

#[tokio::test]
async fn calls_in_flight_fail_when_the_server_shuts_down() {
    let mut fx = fixture().await;
    let client = client_for(fx.server.local_addr());
    let calls: Vec<_> = (0..3)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { client.call(HANG, Bytes::new(), LONG_TIMEOUT).await })
        })
        .collect();
    for _ in 0..3 {
        assert_eq!(bounded(fx.started.recv()).await, Some(HANG));
    }
    fx.server.shutdown().await;
    for call in calls {
        assert_eq!(bounded(call).await.expect("task"), Err(PeerError::Closed));
    }
}

#[tokio::test]
async fn connection_dropped_mid_call_fails_the_call() {
    // A fake member that takes one request and hangs up without answering.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let fake = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.expect("accept");
        let hello = read_hello(&mut stream).await.expect("hello");
        assert_eq!((hello.from, hello.to), (CLIENT_ID, SERVER_ID));
        stream
            .write_all(&encode_hello(SERVER_ID, CLIENT_ID))
            .await
            .expect("answer hello");
        let mut head = [0u8; LEN_PREFIX_BYTES + FRAME_HEADER_BYTES];
        stream.read_exact(&mut head).await.expect("request header");
        assert_eq!(head[4], TYPE_REQUEST);
        assert_eq!(head[13], ECHO);
    });
    let client = client_for(addr);
    let result = bounded(client.call(ECHO, Bytes::from_static(b"lost"), LONG_TIMEOUT)).await;
    assert_eq!(result, Err(PeerError::Closed));
    bounded(fake).await.expect("fake member");
}

#[tokio::test]
async fn garbage_and_wrong_member_hellos_are_refused_and_others_still_served() {
    let fx = fixture().await;
    let addr = fx.server.local_addr();

    let mut stray = bounded(TcpStream::connect(addr)).await.expect("connect");
    stray
        .write_all(b"GET / HTTP/1.1\r\nHost: corral\r\n\r\n")
        .await
        .expect("write");
    expect_closed_by_server(&mut stray).await;

    let mut old_version = bounded(TcpStream::connect(addr)).await.expect("connect");
    let mut hello = encode_hello(CLIENT_ID, SERVER_ID);
    hello[4..6].copy_from_slice(&(PROTOCOL_VERSION + 1).to_be_bytes());
    old_version.write_all(&hello).await.expect("write");
    expect_closed_by_server(&mut old_version).await;

    let misdirected = PeerClient::new(CLIENT_ID, SERVER_ID + 7, addr.to_string(), test_limits());
    let refused = bounded(misdirected.call(ECHO, Bytes::new(), LONG_TIMEOUT)).await;
    assert!(
        matches!(refused, Err(PeerError::Unreachable(_))),
        "{refused:?}"
    );

    let client = client_for(addr);
    let answer = bounded(client.call(ECHO, Bytes::from_static(b"still here"), LONG_TIMEOUT))
        .await
        .expect("served");
    assert_eq!(answer, echo_answer(b"still here"));
    fx.server.shutdown().await;
}

#[tokio::test]
async fn oversized_frame_closes_only_that_connection() {
    let fx = fixture().await;
    let addr = fx.server.local_addr();
    let client = client_for(addr);
    bounded(client.call(ECHO, Bytes::new(), LONG_TIMEOUT))
        .await
        .expect("connected before");

    let mut rogue = bounded(TcpStream::connect(addr)).await.expect("connect");
    rogue
        .write_all(&encode_hello(CLIENT_ID + 1, SERVER_ID))
        .await
        .expect("hello");
    let hello = bounded(read_hello(&mut rogue)).await.expect("server hello");
    assert_eq!((hello.from, hello.to), (SERVER_ID, CLIENT_ID + 1));
    let announced = (test_limits().max_frame_bytes + 1) as u32;
    rogue
        .write_all(&announced.to_be_bytes())
        .await
        .expect("length");
    expect_closed_by_server(&mut rogue).await;

    // The other connection is untouched.
    let answer = bounded(client.call(ECHO, Bytes::from_static(b"fine"), LONG_TIMEOUT))
        .await
        .expect("served");
    assert_eq!(answer, echo_answer(b"fine"));

    // The client refuses to send an oversized request at all.
    let too_big = Bytes::from(vec![0u8; test_limits().max_frame_bytes]);
    let refused = client.call(ECHO, too_big, LONG_TIMEOUT).await;
    assert_eq!(
        refused,
        Err(PeerError::FrameTooLarge {
            len: test_limits().max_frame_bytes + FRAME_HEADER_BYTES,
            max: test_limits().max_frame_bytes
        })
    );
    fx.server.shutdown().await;
}

#[tokio::test]
async fn handler_errors_and_panics_come_back_as_remote() {
    let fx = fixture().await;
    let client = client_for(fx.server.local_addr());
    let failed = bounded(client.call(FAIL, Bytes::from_static(b"znode"), LONG_TIMEOUT)).await;
    assert_eq!(
        failed,
        Err(PeerError::Remote("no such thing: znode".into()))
    );
    let panicked = bounded(client.call(PANIC, Bytes::new(), LONG_TIMEOUT)).await;
    assert_eq!(panicked, Err(PeerError::Remote("handler panicked".into())));
    // Neither cost the connection.
    let answer = bounded(client.call(ECHO, Bytes::from_static(b"ok"), LONG_TIMEOUT))
        .await
        .expect("served");
    assert_eq!(answer, echo_answer(b"ok"));
    fx.server.shutdown().await;
}

#[tokio::test]
async fn request_beyond_the_send_queue_is_refused() {
    let fx = fixture().await;
    let limits = PeerLimits {
        max_queued_bytes: 100,
        ..test_limits()
    };
    let client = PeerClient::new(
        CLIENT_ID,
        SERVER_ID,
        fx.server.local_addr().to_string(),
        limits,
    );
    let refused = bounded(client.call(ECHO, Bytes::from(vec![7u8; 200]), LONG_TIMEOUT)).await;
    assert!(
        matches!(
            refused,
            Err(PeerError::QueueFull {
                max_queued_bytes: 100,
                ..
            })
        ),
        "{refused:?}"
    );
    // Smaller requests still fit.
    let answer = bounded(client.call(ECHO, Bytes::from_static(b"small"), LONG_TIMEOUT))
        .await
        .expect("served");
    assert_eq!(answer, echo_answer(b"small"));
    fx.server.shutdown().await;
}

#[tokio::test]
async fn set_addr_moves_the_client_without_waiting_out_the_backoff() {
    let fx = fixture().await;
    let client = client_for(dead_addr().await);
    let down = bounded(client.call(ECHO, Bytes::new(), LONG_TIMEOUT)).await;
    assert!(matches!(down, Err(PeerError::Unreachable(_))), "{down:?}");
    client.set_addr(fx.server.local_addr().to_string());
    let answer = bounded(client.call(ECHO, Bytes::from_static(b"moved"), LONG_TIMEOUT))
        .await
        .expect("served at the new address");
    assert_eq!(answer, echo_answer(b"moved"));
    fx.server.shutdown().await;
}

#[test]
fn error_text_is_cut_at_a_character_boundary() {
    // 'é' is two bytes; a limit that falls inside it must not split it.
    let frame = error_frame(9, 1, "ééé".into(), FRAME_HEADER_BYTES + 3);
    assert_eq!(&frame.body[..], "é".as_bytes());
    assert_eq!(
        &frame.head[..4],
        &((FRAME_HEADER_BYTES + 2) as u32).to_be_bytes()
    );
    assert_eq!(frame.head[4], TYPE_ERROR);
    assert_eq!(&frame.head[5..13], &9u64.to_be_bytes());
    assert_eq!(frame.head[13], 1);
}

#[tokio::test]
async fn dropping_the_server_closes_its_connections() {
    let mut fx = fixture().await;
    let client = client_for(fx.server.local_addr());
    let call = tokio::spawn({
        let client = client.clone();
        async move { client.call(HANG, Bytes::new(), LONG_TIMEOUT).await }
    });
    assert_eq!(bounded(fx.started.recv()).await, Some(HANG));
    drop(fx.server);
    assert_eq!(bounded(call).await.expect("task"), Err(PeerError::Closed));
}
