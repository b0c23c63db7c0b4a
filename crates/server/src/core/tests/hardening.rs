//! Scenarios of the hardening work: records that must fit the log, clocks, replay windows.

use super::*;
use corral_storage::MAX_PAYLOAD_BYTES;

/// Every record the core asked to log fits the log's record limit.
fn assert_all_loggable(log: &[LoggedTxn]) {
    for t in log {
        assert!(
            t.record.len() <= MAX_PAYLOAD_BYTES,
            "txn 0x{:x} is {} bytes, the log takes at most {}",
            t.zxid,
            t.record.len(),
            MAX_PAYLOAD_BYTES
        );
    }
}

/// A core that accepts requests of 16 MiB (`jute.maxbuffer` raised), so that a few ephemerals
/// with long paths add up to more than one log record may hold.
fn big_frames(max_frame_bytes: usize) -> H {
    H::with_config(CoreConfig {
        max_frame_bytes,
        ..H::config()
    })
}

/// Creates ephemerals on `conn` whose paths total more than [`MAX_PAYLOAD_BYTES`].
fn create_huge_ephemerals(h: &mut H, conn: ConnId) -> Vec<String> {
    let path_bytes = 14 * 1024 * 1024;
    let count = MAX_PAYLOAD_BYTES / path_bytes + 1;
    let mut paths = Vec::new();
    for i in 0..count {
        let path = format!("/e{i}-{}", "x".repeat(path_bytes));
        let (err, _) = h.create(conn, &path, "", CreateMode::Ephemeral);
        assert_eq!(err, 0, "creating ephemeral {i}");
        paths.push(path);
    }
    let total: usize = paths.iter().map(String::len).sum();
    assert!(total > MAX_PAYLOAD_BYTES);
    paths
}

fn replay(h: &H) -> Core {
    let mut replica = Core::new(h.core.config.clone(), Now::both(T0));
    for t in &h.log {
        replica.apply_logged(&t.record).unwrap();
    }
    replica
}

#[test]
fn expiring_a_session_with_more_ephemeral_bytes_than_a_record_holds_is_loggable() {
    let mut h = big_frames(16 * 1024 * 1024);
    h.connect(1);
    h.connect(2);
    create_huge_ephemerals(&mut h, 1);
    // Session 2 keeps pinging; session 1 goes silent and expires.
    for _ in 0..30 {
        h.now += 100;
        h.req(2, Request::Ping);
        let step = h.core.tick(h.at());
        h.take(step);
    }
    assert!(h.closed.contains(&1));
    assert_eq!(h.core.stats().ephemerals_count, 0);
    assert_all_loggable(&h.log);
    let replica = replay(&h);
    assert_eq!(replica.stats().ephemerals_count, 0);
    assert_eq!(replica.stats().znode_count, h.core.stats().znode_count);
    assert_eq!(replica.stats().session_count, 1);
}

#[test]
fn closing_a_session_with_more_ephemeral_bytes_than_a_record_holds_is_loggable() {
    let mut h = big_frames(16 * 1024 * 1024);
    h.connect(1);
    create_huge_ephemerals(&mut h, 1);
    let (err, _, _) = h.req(1, Request::CloseSession);
    assert_eq!(err, 0);
    assert_all_loggable(&h.log);
    let replica = replay(&h);
    assert_eq!(replica.stats().ephemerals_count, 0);
    assert_eq!(replica.stats().session_count, 0);
}

#[test]
fn a_write_whose_record_would_exceed_the_log_limit_fails_and_changes_nothing() {
    let limit = MAX_PAYLOAD_BYTES + 1024 * 1024;
    let mut h = big_frames(2 * limit);
    h.connect(1);
    let before = h.core.stats().znode_count;
    let big = "d".repeat(MAX_PAYLOAD_BYTES);
    let (err, _) = h.create(1, "/big", &big, CreateMode::Persistent);
    assert_eq!(err, ZkError::MarshallingError.code());
    // Two halves that fit alone but not together in one multi record.
    let half = Bytes::from(vec![b'h'; MAX_PAYLOAD_BYTES / 2 + 1]);
    let op = |path: &str| Request::Create {
        op: OpCode::Create,
        req: CreateRequest {
            path: path.into(),
            data: Some(half.clone()),
            acl: acl::open_acl(),
            flags: 0,
        },
    };
    let (err, resp, _) = h.req(1, Request::Multi(vec![op("/h1"), op("/h2")]));
    assert_eq!(err, 0, "a failed multi is answered with per-op results");
    let Some(Response::Multi(results)) = resp else {
        panic!("{resp:?}")
    };
    assert_eq!(
        results,
        vec![
            OpResult::Error(ZkError::MarshallingError.code()),
            OpResult::Error(ZkError::RuntimeInconsistency.code()),
        ]
    );
    assert_eq!(h.core.stats().znode_count, before);
    // One half alone fits and is created.
    let (err, _, _) = h.req(1, op("/h1"));
    assert_eq!(err, 0);
    assert_eq!(h.core.stats().znode_count, before + 1);
    assert_all_loggable(&h.log);
}

#[test]
fn a_wall_clock_step_does_not_expire_live_sessions() {
    let mut h = H::new();
    h.connect(1);
    h.create(1, "/e", "", CreateMode::Ephemeral);
    for _ in 0..5 {
        h.now += 100;
        h.req(1, Request::Ping);
        let step = h.core.tick(h.at());
        h.take(step);
    }
    // NTP steps the wall clock an hour ahead; the client keeps pinging as before.
    h.wall_offset_ms += 3_600_000;
    for _ in 0..5 {
        h.now += 100;
        h.req(1, Request::Ping);
        let step = h.core.tick(h.at());
        h.take(step);
    }
    assert!(h.closed.is_empty(), "no session expired: {:?}", h.closed);
    assert!(h.stat(1, "/e", false).is_some());
    // Znode times follow the wall clock.
    h.create(1, "/later", "", CreateMode::Persistent);
    let stat = h.stat(1, "/later", false).unwrap();
    assert_eq!(stat.ctime, h.at().wall_ms);
    // The monotonic clock still expires a session that goes silent (timeout 1000 ms).
    for _ in 0..12 {
        h.now += 100;
        let step = h.core.tick(h.at());
        h.take(step);
    }
    assert!(h.closed.contains(&1));
    assert!(h.core.sessions().is_empty());
}

#[test]
fn a_wall_clock_step_back_does_not_keep_silent_sessions_alive() {
    let mut h = H::new();
    h.connect(1);
    h.wall_offset_ms -= 3_600_000;
    for _ in 0..12 {
        h.now += 100;
        let step = h.core.tick(h.at());
        h.take(step);
    }
    assert!(h.closed.contains(&1));
}
