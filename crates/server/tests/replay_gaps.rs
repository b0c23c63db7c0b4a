//! Raw-bytes tests of Corral's "events may be missing" notification: after a server restart a
//! persistent watch re-registered with setWatches2 cannot be given every change since the
//! client's zxid, and only a connection that opted in (the extension block after the readOnly
//! byte of its ConnectRequest) is told so.

use std::time::Duration;

use bytes::Bytes;
use corral_proto::consts::ext;
use corral_proto::records::{
    AddWatchRequest, ConnectRequest, ConnectResponse, PathWatch, ReplyHeader, RequestHeader,
    SetWatches2, WatcherEvent,
};
use corral_proto::request::{encode_connect, encode_connect_ext};
use corral_proto::{xid, AddWatchMode, Jute, OpCode, Reader, Writer};
use corral_server::testing::TestServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Upper bound on any single wait, so a broken server fails the test instead of hanging it.
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

async fn read_frame(s: &mut TcpStream) -> Vec<u8> {
    let mut len = [0u8; 4];
    tokio::time::timeout(GUARD, s.read_exact(&mut len))
        .await
        .expect("server answered in time")
        .expect("a frame length");
    let mut body = vec![0u8; i32::from_be_bytes(len) as usize];
    tokio::time::timeout(GUARD, s.read_exact(&mut body))
        .await
        .expect("server answered in time")
        .expect("a frame body");
    body
}

/// Connects, resuming `session` when given; returns the stream, session id and password.
async fn connect(
    server: &TestServer,
    session: Option<(i64, Bytes)>,
    last_zxid_seen: i64,
    opt_in: bool,
) -> (TcpStream, i64, Bytes) {
    let mut s = TcpStream::connect(server.addr()).await.unwrap();
    let (session_id, passwd) = session.unwrap_or((0, Bytes::from(vec![0u8; 16])));
    let req = ConnectRequest {
        protocol_version: 0,
        last_zxid_seen,
        timeout_ms: 30_000,
        session_id,
        passwd: Some(passwd),
    };
    let mut w = Writer::new();
    if opt_in {
        encode_connect_ext(&req, false, ext::FEATURE_REPLAY_GAPS, &mut w);
    } else {
        encode_connect(&req, false, &mut w);
    }
    s.write_all(&frame(&w.into_inner())).await.unwrap();
    let resp = ConnectResponse::read(&mut Reader::new(&read_frame(&mut s).await)).unwrap();
    assert_ne!(resp.session_id, 0, "the session was accepted");
    (s, resp.session_id, resp.passwd.unwrap_or_default())
}

/// Sends one request and reads frames up to its reply; returns the reply header and the
/// notifications (event type, path) that came first.
async fn call(
    s: &mut TcpStream,
    req: Vec<u8>,
    reply_xid: i32,
) -> (ReplyHeader, Vec<(i32, String)>) {
    s.write_all(&req).await.unwrap();
    let mut events = Vec::new();
    loop {
        let body = read_frame(s).await;
        let mut r = Reader::new(&body);
        let h = ReplyHeader::read(&mut r).unwrap();
        if h.xid == xid::NOTIFICATION {
            let ev = WatcherEvent::read(&mut r).unwrap();
            events.push((ev.event_type, ev.path));
        } else if h.xid == reply_xid {
            return (h, events);
        }
    }
}

/// Runs the scenario; returns the notifications the resumed connection got before the reply
/// to a getData sent after its setWatches2 (replies keep order, so nothing can come later).
async fn after_restart(opt_in: bool) -> Vec<(i32, String)> {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_in(TestServer::default_config(), dir.path())
        .await
        .unwrap();
    let (mut s, sid, passwd) = connect(&server, None, 0, opt_in).await;
    let create = corral_proto::records::CreateRequest {
        path: "/g".into(),
        data: Some(Bytes::from_static(b"1")),
        acl: vec![corral_proto::records::Acl {
            perms: corral_proto::perms::ALL,
            id: corral_proto::records::Id {
                scheme: "world".into(),
                id: "anyone".into(),
            },
        }],
        flags: 0,
    };
    let (h, _) = call(&mut s, request(1, OpCode::Create, &|w| create.write(w)), 1).await;
    assert_eq!(h.err, 0);
    let seen = h.zxid;
    let add = AddWatchRequest {
        path: "/g".into(),
        mode: AddWatchMode::PersistentRecursive.code(),
    };
    let (h, _) = call(&mut s, request(2, OpCode::AddWatch, &|w| add.write(w)), 2).await;
    assert_eq!(h.err, 0);
    drop(s);
    server.stop().await.unwrap();

    // The restarted server changes /g before the client is back: that change never went
    // through a replay window that knew of the client's watch.
    let server = TestServer::start_in(TestServer::default_config(), dir.path())
        .await
        .unwrap();
    let (mut writer, _, _) = connect(&server, None, 0, false).await;
    let set = corral_proto::records::SetDataRequest {
        path: "/g".into(),
        data: Some(Bytes::from_static(b"2")),
        version: -1,
    };
    let (h, _) = call(
        &mut writer,
        request(1, OpCode::SetData, &|w| set.write(w)),
        1,
    )
    .await;
    assert_eq!(h.err, 0);

    let (mut s, _, _) = connect(&server, Some((sid, passwd)), seen, opt_in).await;
    let watches = SetWatches2 {
        relative_zxid: seen,
        data_watches: vec![],
        exist_watches: vec![],
        child_watches: vec![],
        persistent_watches: vec![],
        persistent_recursive_watches: vec!["/g".into()],
    };
    let (h, mut events) = call(
        &mut s,
        request(xid::SET_WATCHES, OpCode::SetWatches2, &|w| watches.write(w)),
        xid::SET_WATCHES,
    )
    .await;
    assert_eq!(h.err, 0);
    let get = PathWatch {
        path: "/g".into(),
        watch: false,
    };
    let (h, more) = call(&mut s, request(3, OpCode::GetData, &|w| get.write(w)), 3).await;
    assert_eq!(h.err, 0);
    events.extend(more);
    drop((s, writer));
    server.stop().await.unwrap();
    events
}

#[tokio::test]
async fn an_opted_in_connection_is_told_its_persistent_watch_may_have_missed_events() {
    let events = after_restart(true).await;
    assert_eq!(
        events,
        vec![(ext::EVENT_MAY_HAVE_MISSED, "/g".to_string())],
        "one gap notice for the re-registered recursive watch"
    );
}

#[tokio::test]
async fn a_connection_that_did_not_opt_in_gets_nothing_new() {
    let events = after_restart(false).await;
    assert!(
        events.iter().all(|(t, _)| *t != ext::EVENT_MAY_HAVE_MISSED),
        "no extension event for a third-party client: {events:?}"
    );
    assert!(
        events.is_empty(),
        "nothing at all was replayable: {events:?}"
    );
}
