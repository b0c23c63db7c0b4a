//! Snapshots, recovery with snapshots, fallback, purge, inspection.

mod common;

use std::io::{Read, Write};
use std::ops::RangeInclusive;

use common::*;
use corral_storage::{
    list_logs, list_snapshots, purge, read_snapshot, recover, snapshot_file_name, verify,
    write_snapshot, Recovered, SnapshotReader, SnapshotWriter, StorageError,
};

fn snap_payload(zxid: i64) -> Vec<u8> {
    format!("tree state at {zxid}").into_bytes()
}

/// Flips a payload byte of each snapshot named by its zxid, so recovery must pass it over.
fn damage_snapshots(d: &Dirs, zxids: &[i64]) {
    for &zxid in zxids {
        flip_byte(&d.data.join(snapshot_file_name(zxid)), 20);
    }
}

/// Recovers and asserts that it starts from snapshot `snap_zxid` and replays exactly `txns`.
fn assert_recovers_from(d: &Dirs, snap_zxid: i64, txns: RangeInclusive<i64>) -> Recovered {
    let rec = recover_ok(d);
    assert_eq!(rec.snapshot.as_ref().unwrap().zxid, snap_zxid);
    assert_eq!(zxids(&rec), txns.collect::<Vec<_>>());
    rec
}

#[test]
fn snapshot_round_trip_and_streaming_writer() {
    let d = dirs();
    let p = write_snapshot(&d.data, 7, b"hello").unwrap();
    assert_eq!(p, d.data.join(snapshot_file_name(7)));
    assert_eq!(read_snapshot(&p).unwrap(), (7, b"hello".to_vec()));
    // 16-byte header + payload + 4-byte crc.
    assert_eq!(std::fs::metadata(&p).unwrap().len(), 16 + 5 + 4);

    let mut w = SnapshotWriter::create(&d.data, 9).unwrap();
    for i in 0..1000u32 {
        w.write_all(&i.to_be_bytes()).unwrap();
    }
    let p9 = w.finish().unwrap();
    let mut r = SnapshotReader::open(&p9).unwrap();
    assert_eq!(r.zxid(), 9);
    let mut all = Vec::new();
    r.read_to_end(&mut all).unwrap();
    assert_eq!(all.len(), 4000);
    assert_eq!(&all[3996..], &999u32.to_be_bytes());
    // No temp files left behind.
    assert_eq!(std::fs::read_dir(&d.data).unwrap().count(), 2);
}

#[test]
fn abandoned_snapshot_writer_leaves_no_file() {
    let d = dirs();
    let mut w = SnapshotWriter::create(&d.data, 3).unwrap();
    w.write_all(b"partial").unwrap();
    drop(w);
    assert_eq!(std::fs::read_dir(&d.data).unwrap().count(), 0);
}

#[test]
fn streaming_reader_reports_damage_at_the_end() {
    let d = dirs();
    let p = write_snapshot(&d.data, 4, &vec![7u8; 10_000]).unwrap();
    flip_byte(&p, 5000);
    let mut r = SnapshotReader::open(&p).unwrap();
    let err = r.read_to_end(&mut Vec::new()).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
    match read_snapshot(&p) {
        Err(StorageError::Corrupt { file, .. }) => assert_eq!(file, p),
        other => panic!("unexpected {other:?}"),
    }
}

/// Log 1..=20 in two segments (rolled at 11), snapshots at 5 and 15.
fn snapshots_and_log(d: &Dirs) {
    let mut w = writer(d, small_opts());
    append_range(&mut w, 1, 5);
    write_snapshot(&d.data, 5, &snap_payload(5)).unwrap();
    append_range(&mut w, 6, 10);
    w.roll();
    append_range(&mut w, 11, 15);
    write_snapshot(&d.data, 15, &snap_payload(15)).unwrap();
    append_range(&mut w, 16, 20);
}

#[test]
fn recovery_uses_newest_snapshot_and_replays_after_it() {
    let d = dirs();
    snapshots_and_log(&d);
    let rec = recover_ok(&d);
    let s = rec.snapshot.as_ref().unwrap();
    assert_eq!(s.zxid, 15);
    assert_eq!(s.read_payload().unwrap(), snap_payload(15));
    assert_eq!(zxids(&rec), (16..=20).collect::<Vec<_>>());
    assert_payloads(&rec);
    assert_eq!(rec.last_zxid, 20);
    assert!(rec.damaged_snapshots.is_empty());
}

#[test]
fn damaged_newest_snapshot_falls_back_when_log_covers_it() {
    let d = dirs();
    snapshots_and_log(&d);
    let newest = d.data.join(snapshot_file_name(15));
    flip_byte(&newest, 18);
    let rec = assert_recovers_from(&d, 5, 6..=20);
    assert_eq!(rec.damaged_snapshots.len(), 1);
    assert_eq!(rec.damaged_snapshots[0].0, newest);
    assert!(matches!(
        rec.damaged_snapshots[0].1,
        StorageError::Corrupt { .. }
    ));
    let infos = list_snapshots(&d.data).unwrap();
    assert_eq!(
        infos.iter().map(|i| i.is_valid()).collect::<Vec<_>>(),
        vec![true, false]
    );
}

#[test]
fn damaged_snapshot_without_log_cover_is_unrecoverable() {
    // The log ends before the damaged snapshot's zxid: falling back would lose txns.
    let d = dirs();
    let mut w = writer(&d, small_opts());
    append_range(&mut w, 1, 5);
    write_snapshot(&d.data, 5, &snap_payload(5)).unwrap();
    append_range(&mut w, 6, 12);
    drop(w);
    let newest = write_snapshot(&d.data, 15, &snap_payload(15)).unwrap();
    flip_byte(&newest, 2); // magic
    match recover(&d.data, &d.log) {
        Err(e @ StorageError::Unrecoverable(_)) => {
            assert!(e.to_string().contains(&snapshot_file_name(15)), "{e}")
        }
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("recovered to an older state than a snapshot"),
    }
}

#[test]
fn damaged_snapshot_with_purged_log_is_an_error() {
    // The log segment after the older snapshot is gone: replay from it would have a gap.
    let d = dirs();
    snapshots_and_log(&d);
    std::fs::remove_file(&segments(&d.log)[0]).unwrap();
    damage_snapshots(&d, &[15]);
    match recover(&d.data, &d.log) {
        Err(StorageError::Gap {
            expected: 6,
            found: 11,
            ..
        }) => {}
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("recovered across missing txns"),
    }
}

#[test]
fn only_damaged_snapshots_fall_back_to_full_log_replay() {
    let d = dirs();
    let mut w = writer(&d, small_opts());
    append_range(&mut w, 1, 8);
    drop(w);
    let s = write_snapshot(&d.data, 4, &snap_payload(4)).unwrap();
    flip_byte(&s, 17);
    let rec = recover_ok(&d);
    assert!(rec.snapshot.is_none());
    assert_eq!(zxids(&rec), (1..=8).collect::<Vec<_>>());
}

#[test]
fn snapshot_newer_than_log_end_is_fine_and_log_continues_after_it() {
    let d = dirs();
    let mut w = writer(&d, small_opts());
    append_range(&mut w, 1, 3);
    drop(w);
    write_snapshot(&d.data, 10, &snap_payload(10)).unwrap();
    let rec = recover_ok(&d);
    assert_eq!(rec.last_zxid, 10);
    assert!(rec.txns.is_empty());
    let mut w = rec.writer;
    w.set_options(small_opts());
    append_range(&mut w, 11, 13);
    drop(w);
    let rec = recover_ok(&d);
    assert_eq!(zxids(&rec), vec![11, 12, 13]);
}

#[test]
fn purge_keeps_three_newest_valid_snapshots_and_needed_logs() {
    let d = dirs();
    let mut w = writer(&d, small_opts());
    // Snapshot after every 10 txns, with a roll after each, as the server does.
    for i in 0..6 {
        append_range(&mut w, i * 10 + 1, i * 10 + 10);
        write_snapshot(&d.data, i * 10 + 10, &snap_payload(i * 10 + 10)).unwrap();
        w.roll();
    }
    append_range(&mut w, 61, 65);
    let before = recover_ok(&d);
    assert_eq!(before.snapshot.as_ref().unwrap().zxid, 60);

    // Asking for 1 still keeps 3 (ZooKeeper's minimum).
    let report = purge(&d.data, &d.log, 1).unwrap();
    let snaps: Vec<i64> = list_snapshots(&d.data)
        .unwrap()
        .iter()
        .map(|s| s.zxid)
        .collect();
    assert_eq!(snaps, vec![40, 50, 60]);
    assert_eq!(report.removed_snapshots.len(), 3);
    let logs: Vec<i64> = list_logs(&d.log)
        .unwrap()
        .iter()
        .map(|s| s.start_zxid)
        .collect();
    // Replaying from snapshot 40 needs zxid 41 onwards, which starts segment log.41.
    assert_eq!(logs, vec![41, 51, 61]);
    assert_eq!(report.removed_segments.len(), 4);

    // Appending goes on in the active segment, and recovery gives the same state.
    append_range(&mut w, 66, 67);
    drop(w);
    assert_recovers_from(&d, 60, 61..=67);
    verify(&d.data, &d.log).unwrap();

    // Fallback to the oldest retained snapshot still works after purging.
    damage_snapshots(&d, &[60, 50]);
    assert_recovers_from(&d, 40, 41..=67);
}

#[test]
fn purge_keeps_segment_containing_snapshot_zxid() {
    let d = dirs();
    let mut w = writer(&d, small_opts());
    append_range(&mut w, 1, 10);
    w.roll();
    append_range(&mut w, 11, 20);
    w.roll();
    append_range(&mut w, 21, 30);
    drop(w);
    // Snapshots in the middle of segments (no roll after them).
    for z in [5, 12, 15, 25] {
        write_snapshot(&d.data, z, &snap_payload(z)).unwrap();
    }
    purge(&d.data, &d.log, 3).unwrap();
    let logs: Vec<i64> = list_logs(&d.log)
        .unwrap()
        .iter()
        .map(|s| s.start_zxid)
        .collect();
    assert_eq!(
        logs,
        vec![11, 21],
        "segment 11..20 holds 13.. needed after snapshot 12"
    );
    // Even if the two newest snapshots are damaged, snapshot 12 + logs recover everything.
    damage_snapshots(&d, &[25, 15]);
    assert_recovers_from(&d, 12, 13..=30);
}

#[test]
fn purge_with_too_few_valid_snapshots_deletes_nothing() {
    let d = dirs();
    let mut w = writer(&d, small_opts());
    for i in 0..4 {
        append_range(&mut w, i * 5 + 1, i * 5 + 5);
        write_snapshot(&d.data, i * 5 + 5, &snap_payload(i * 5 + 5)).unwrap();
        w.roll();
    }
    drop(w);
    damage_snapshots(&d, &[20, 15]);
    let report = purge(&d.data, &d.log, 3).unwrap();
    assert!(report.removed_snapshots.is_empty() && report.removed_segments.is_empty());
    assert_eq!(list_snapshots(&d.data).unwrap().len(), 4);
}

#[test]
fn inspection_lists_files_and_verify_reports_first_problem() {
    let d = dirs();
    snapshots_and_log(&d);
    let logs = list_logs(&d.log).unwrap();
    assert_eq!(logs.len(), 2);
    assert_eq!((logs[0].first_zxid, logs[0].last_zxid), (Some(1), Some(10)));
    assert_eq!(
        (logs[1].first_zxid, logs[1].last_zxid),
        (Some(11), Some(20))
    );
    assert_eq!(logs[0].record_count + logs[1].record_count, 20);
    assert!(logs.iter().all(|l| l.is_valid()));
    let snaps = list_snapshots(&d.data).unwrap();
    assert_eq!(
        snaps.iter().map(|s| s.zxid).collect::<Vec<_>>(),
        vec![5, 15]
    );
    assert_eq!(snaps[0].size_bytes, 16 + snap_payload(5).len() as u64 + 4);
    let v = verify(&d.data, &d.log).unwrap();
    assert_eq!((v.snapshots, v.segments, v.records), (2, 2, 20));

    let s5 = d.data.join(snapshot_file_name(5));
    flip_byte(&s5, 17);
    let err = verify(&d.data, &d.log).unwrap_err();
    assert!(err.to_string().contains(&snapshot_file_name(5)), "{err}");
}
