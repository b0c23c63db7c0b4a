//! Txn log: round trip, group commit, torn tails, corruption, gaps, reopen.

mod common;

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use common::*;
use corral_storage::{
    list_logs, log_file_name, recover, verify, GroupCommitLog, LogIter, LogOptions, Recovered,
    StorageError,
};

/// No preallocation, so a closed segment has no zero fill after its last record.
fn unpreallocated() -> LogOptions {
    LogOptions {
        prealloc_bytes: 0,
        ..small_opts()
    }
}

/// Writes zxids `1..=last` as one batch to a fresh log, closes the writer and returns the
/// first segment.
fn closed_log(d: &Dirs, opts: LogOptions, last: i64) -> PathBuf {
    let mut w = writer(d, opts);
    append_range(&mut w, 1, last);
    drop(w);
    segments(&d.log)[0].clone()
}

/// Writes zxids `1..=last` as one batch to a fresh log and then "crashes": the writer is
/// leaked, so nothing trims the preallocated zero tail. Returns the segment.
fn crashed_log(d: &Dirs, last: i64) -> PathBuf {
    let mut w = writer(d, small_opts());
    append_range(&mut w, 1, last);
    std::mem::forget(w);
    segments(&d.log)[0].clone()
}

/// Continues the log from a recovery: appends `from..=to` as one batch and closes the writer.
fn append_after(rec: Recovered, from: i64, to: i64) {
    let mut w = rec.writer;
    w.set_options(small_opts());
    append_range(&mut w, from, to);
}

#[test]
fn round_trip_through_group_commit() {
    let d = dirs();
    let rec = recover_ok(&d);
    assert!(rec.snapshot.is_none());
    assert_eq!(rec.last_zxid, 0);
    assert!(rec.txns.is_empty());

    let (tx, rx) = mpsc::channel();
    let tx = Mutex::new(tx);
    let log = GroupCommitLog::start(
        rec.writer,
        small_opts(),
        Box::new(move |r| tx.lock().unwrap().send(r).unwrap()),
    )
    .unwrap();
    for z in 1..=200 {
        log.submit(z, payload(z)).unwrap();
    }
    log.barrier().unwrap();
    assert_eq!(log.last_durable_zxid(), 200);
    let stats = log.stats();
    assert_eq!(stats.records, 200);
    assert!(stats.syncs >= 1 && stats.syncs <= 200);
    log.shutdown();
    let reported: Vec<i64> = rx.try_iter().map(|r| r.unwrap()).collect();
    assert_eq!(reported.last(), Some(&200));
    assert!(
        reported.windows(2).all(|w| w[0] < w[1]),
        "durable zxids increase"
    );

    let rec = recover_ok(&d);
    assert_eq!(zxids(&rec), (1..=200).collect::<Vec<_>>());
    assert_payloads(&rec);
    assert_eq!(rec.last_zxid, 200);
    assert!(rec.truncated_tail.is_none());
}

#[test]
fn group_commit_writes_all_queued_records_with_one_sync() {
    let d = dirs();
    let rec = recover_ok(&d);
    // The callback of the first batch holds the writer thread until every other record has
    // been queued, so the second batch deterministically contains all of them.
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let release_rx = Mutex::new(release_rx);
    let (entered_tx, entered_rx) = mpsc::channel::<()>();
    let entered_tx = Mutex::new(entered_tx);
    let (done_tx, done_rx) = mpsc::channel();
    let done_tx = Mutex::new(done_tx);
    let log = GroupCommitLog::start(
        rec.writer,
        small_opts(),
        Box::new(move |r| {
            let z = r.unwrap();
            if z == 1 {
                entered_tx.lock().unwrap().send(()).unwrap();
                release_rx.lock().unwrap().recv().unwrap();
            }
            done_tx.lock().unwrap().send(z).unwrap();
        }),
    )
    .unwrap();
    log.submit(1, payload(1)).unwrap();
    entered_rx.recv().unwrap(); // batch 1 is written; the writer waits in its callback
    for z in 2..=1000 {
        log.submit(z, payload(z)).unwrap();
    }
    release_tx.send(()).unwrap();
    log.barrier().unwrap();
    let stats = log.stats();
    assert_eq!(stats.records, 1000);
    assert_eq!(stats.batches, 2, "1000 submissions in two batches");
    assert_eq!(stats.syncs, 2, "one fdatasync per batch");
    assert_eq!(done_rx.try_iter().collect::<Vec<_>>(), vec![1, 1000]);
    log.shutdown();
    assert_eq!(zxids(&recover_ok(&d)), (1..=1000).collect::<Vec<_>>());
}

#[test]
fn concurrent_submitters_share_syncs() {
    let d = dirs();
    let rec = recover_ok(&d);
    let log = Arc::new(
        GroupCommitLog::start(
            rec.writer,
            small_opts(),
            Box::new(|r| {
                r.unwrap();
            }),
        )
        .unwrap(),
    );
    // zxids are handed out under a lock so submissions arrive in order, as in the server.
    let next = Arc::new(Mutex::new(1i64));
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let log = log.clone();
            let next = next.clone();
            std::thread::spawn(move || {
                for _ in 0..250 {
                    let mut n = next.lock().unwrap();
                    log.submit(*n, payload(*n)).unwrap();
                    *n += 1;
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    log.barrier().unwrap();
    assert_eq!(log.last_durable_zxid(), 1000);
    assert!(log.stats().syncs <= 1000);
    drop(log);
    let rec = recover_ok(&d);
    assert_eq!(zxids(&rec), (1..=1000).collect::<Vec<_>>());
    assert_payloads(&rec);
}

#[test]
fn out_of_sequence_submission_is_rejected_and_log_continues() {
    let d = dirs();
    let rec = recover_ok(&d);
    let results = Arc::new(Mutex::new(Vec::new()));
    let sink = results.clone();
    let log = GroupCommitLog::start(
        rec.writer,
        small_opts(),
        Box::new(move |r| sink.lock().unwrap().push(r)),
    )
    .unwrap();
    log.submit(1, payload(1)).unwrap();
    log.submit(3, payload(3)).unwrap();
    log.submit(2, payload(2)).unwrap();
    log.barrier().unwrap();
    log.shutdown();
    let results = results.lock().unwrap();
    assert!(results.iter().any(|r| matches!(
        r,
        Err(StorageError::OutOfSequence {
            expected: 2,
            got: 3
        })
    )));
    assert!(matches!(results.last(), Some(Ok(2))));
    assert_eq!(zxids(&recover_ok(&d)), vec![1, 2]);
}

#[test]
fn force_sync_off_skips_fdatasync_but_keeps_data() {
    let d = dirs();
    let rec = recover_ok(&d);
    let opts = LogOptions {
        force_sync: false,
        ..small_opts()
    };
    let log = GroupCommitLog::start(
        rec.writer,
        opts,
        Box::new(|r| {
            r.unwrap();
        }),
    )
    .unwrap();
    for z in 1..=50 {
        log.submit(z, payload(z)).unwrap();
    }
    log.barrier().unwrap();
    assert_eq!(log.stats().syncs, 0);
    log.shutdown();
    assert_eq!(zxids(&recover_ok(&d)), (1..=50).collect::<Vec<_>>());
}

#[test]
fn every_batch_fdatasync_is_reported_to_the_sync_observer() {
    let d = dirs();
    let timed = Arc::new(Mutex::new(Vec::new()));
    let sink = timed.clone();
    let mut w = writer(&d, small_opts());
    w.set_sync_observer(Arc::new(move |took| sink.lock().unwrap().push(took)));
    append_range(&mut w, 1, 3);
    append_range(&mut w, 4, 4);
    assert_eq!(w.sync_count(), 2);
    assert_eq!(timed.lock().unwrap().len(), 2, "one report per fdatasync");

    // Without force_sync nothing is synced, so nothing is reported.
    w.set_options(LogOptions {
        force_sync: false,
        ..small_opts()
    });
    append_range(&mut w, 5, 6);
    assert_eq!(timed.lock().unwrap().len(), 2);
}

#[test]
fn reopen_continues_the_sequence_in_a_new_segment() {
    let d = dirs();
    closed_log(&d, small_opts(), 10);
    let rec = recover_ok(&d);
    assert_eq!(rec.last_zxid, 10);
    let mut w = rec.writer;
    w.set_options(small_opts());
    assert_eq!(w.next_zxid(), 11);
    assert!(matches!(
        w.append(12, b"x"),
        Err(StorageError::OutOfSequence {
            expected: 11,
            got: 12
        })
    ));
    append_range(&mut w, 11, 20);
    drop(w);
    let segs = segments(&d.log);
    assert_eq!(
        segs.iter()
            .map(|p| p.file_name().unwrap().to_str().unwrap().to_string())
            .collect::<Vec<_>>(),
        vec![log_file_name(1), log_file_name(11)]
    );
    let rec = recover_ok(&d);
    assert_eq!(zxids(&rec), (1..=20).collect::<Vec<_>>());
    assert_payloads(&rec);
    let report = verify(&d.data, &d.log).unwrap();
    assert_eq!(report.records, 20);
    assert_eq!(report.segments, 2);
}

#[test]
fn segments_roll_by_size_and_on_request() {
    let d = dirs();
    let opts = LogOptions {
        segment_max_bytes: 2048,
        prealloc_bytes: 1024,
        ..small_opts()
    };
    let mut w = writer(&d, opts);
    for z in 1..=40 {
        append_range(&mut w, z, z);
    }
    w.roll();
    append_range(&mut w, 41, 45);
    drop(w);
    let infos = list_logs(&d.log).unwrap();
    assert!(infos.len() >= 3, "size limit caused rolls: {}", infos.len());
    assert_eq!(infos.last().unwrap().start_zxid, 41);
    for pair in infos.windows(2) {
        assert_eq!(pair[0].last_zxid.unwrap() + 1, pair[1].first_zxid.unwrap());
        // A rolled segment stays near the limit (one batch of slack) and has no zero fill.
        assert!(pair[0].size_bytes <= 2048 + 200);
        assert_eq!(pair[0].size_bytes, pair[0].end_offset);
    }
    assert_eq!(zxids(&recover_ok(&d)), (1..=45).collect::<Vec<_>>());
}

#[test]
fn preallocated_zero_tail_is_not_an_error() {
    let d = dirs();
    let seg = crashed_log(&d, 5);
    let infos = list_logs(&d.log).unwrap();
    assert!(infos[0].size_bytes > infos[0].end_offset, "preallocated");
    assert_eq!(infos[0].size_bytes % 8192, 0);
    assert!(infos[0].is_valid() && infos[0].torn_tail_offset.is_none());
    assert!(verify(&d.data, &d.log).unwrap().torn_tail.is_none());

    let rec = recover_ok(&d);
    assert!(rec.truncated_tail.is_none());
    assert_eq!(zxids(&rec), (1..=5).collect::<Vec<_>>());
    // A zero tail left on an older segment (crash before trimming) is fine too.
    append_after(rec, 6, 7);
    let f = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
    f.set_len(f.metadata().unwrap().len() + 5000).unwrap();
    assert_eq!(zxids(&recover_ok(&d)), (1..=7).collect::<Vec<_>>());
}

fn record_offsets(path: &Path) -> Vec<(i64, u64)> {
    LogIter::open(path)
        .unwrap()
        .map(|r| {
            let r = r.unwrap();
            (r.zxid, r.offset)
        })
        .collect()
}

#[test]
fn torn_tail_mid_record_is_truncated_and_appending_resumes() {
    let d = dirs();
    let seg = closed_log(&d, unpreallocated(), 10);
    let offsets = record_offsets(&seg);
    let (_, off10) = offsets[9];
    let len = std::fs::metadata(&seg).unwrap().len();
    assert!(len > off10 + 20);
    let f = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
    f.set_len(off10 + 20).unwrap(); // header and part of the payload of zxid 10
    drop(f);

    let v = verify(&d.data, &d.log).unwrap();
    assert_eq!(v.torn_tail, Some((seg.clone(), off10)));

    let rec = recover_ok(&d);
    assert_eq!(rec.truncated_tail, Some((seg.clone(), off10)));
    assert_eq!(zxids(&rec), (1..=9).collect::<Vec<_>>());
    assert_eq!(std::fs::metadata(&seg).unwrap().len(), off10);
    append_after(rec, 10, 12);
    let rec = recover_ok(&d);
    assert_eq!(zxids(&rec), (1..=12).collect::<Vec<_>>());
    assert_payloads(&rec);
    assert!(rec.truncated_tail.is_none());
}

#[test]
fn torn_tail_with_garbage_in_preallocated_space_is_truncated() {
    let d = dirs();
    let seg = crashed_log(&d, 6);
    let end = record_offsets(&seg).last().unwrap().1 + frame(6, &payload(6)).len() as u64;
    // A half-written next frame: plausible length, wrong crc, then garbage and zeros.
    let mut bytes = std::fs::read(&seg).unwrap();
    let mut torn = frame(7, &payload(7));
    torn.truncate(torn.len() / 2);
    torn[5] ^= 1;
    torn.extend_from_slice(&[0xab; 37]);
    bytes[end as usize..end as usize + torn.len()].copy_from_slice(&torn);
    std::fs::write(&seg, bytes).unwrap();

    let rec = recover_ok(&d);
    assert_eq!(rec.truncated_tail, Some((seg, end)));
    assert_eq!(zxids(&rec), (1..=6).collect::<Vec<_>>());
}

#[test]
fn flipped_byte_mid_log_is_corruption_naming_file_and_offset() {
    for (what, delta) in [("payload", 20u64), ("length field", 1), ("crc field", 5)] {
        let d = dirs();
        let seg = closed_log(&d, small_opts(), 10);
        let (_, off5) = record_offsets(&seg)[4];
        flip_byte(&seg, off5 + delta);
        let err = match recover(&d.data, &d.log) {
            Err(e) => e,
            Ok(_) => panic!("{what}: damage accepted"),
        };
        match &err {
            StorageError::Corrupt { file, offset, .. } => {
                assert_eq!(file, &seg, "{what}");
                assert_eq!(*offset, off5, "{what}");
            }
            other => panic!("{what}: unexpected error {other}"),
        }
        let msg = err.to_string();
        assert!(
            msg.contains(seg.file_name().unwrap().to_str().unwrap()),
            "{msg}"
        );
        assert!(msg.contains(&format!("offset {off5}")), "{msg}");
        // Nothing was repaired behind the operator's back.
        assert_eq!(verify(&d.data, &d.log).unwrap_err().to_string(), msg);
        let infos = list_logs(&d.log).unwrap();
        assert!(!infos[0].is_valid());
        assert_eq!(infos[0].record_count, 4);
    }
}

#[test]
fn zeroed_length_followed_by_valid_records_is_corruption() {
    let d = dirs();
    let seg = closed_log(&d, unpreallocated(), 10);
    let (_, off3) = record_offsets(&seg)[2];
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[off3 as usize..off3 as usize + 4].fill(0);
    std::fs::write(&seg, bytes).unwrap();
    match recover(&d.data, &d.log) {
        Err(StorageError::Corrupt { offset, .. }) => assert_eq!(offset, off3),
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("lost records silently"),
    }
}

#[test]
fn damaged_tail_of_an_older_segment_is_corruption() {
    let d = dirs();
    let mut w = writer(&d, unpreallocated());
    append_range(&mut w, 1, 5);
    w.roll();
    append_range(&mut w, 6, 8);
    drop(w);
    let segs = segments(&d.log);
    let (_, off5) = record_offsets(&segs[0])[4];
    flip_byte(&segs[0], off5 + 18);
    match recover(&d.data, &d.log) {
        Err(StorageError::Corrupt { file, offset, .. }) => {
            assert_eq!(file, segs[0]);
            assert_eq!(offset, off5);
        }
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("damage in an older segment accepted"),
    }
}

#[test]
fn zxid_gap_between_segments_is_an_error() {
    let d = dirs();
    let mut w = writer(&d, small_opts());
    append_range(&mut w, 1, 5);
    w.roll();
    append_range(&mut w, 6, 10);
    w.roll();
    append_range(&mut w, 11, 15);
    drop(w);
    let segs = segments(&d.log);
    std::fs::remove_file(&segs[1]).unwrap();
    let err = recover(&d.data, &d.log).err().expect("gap accepted");
    match &err {
        StorageError::Gap {
            file,
            offset,
            expected,
            found,
        } => {
            assert_eq!(file, &segs[2]);
            assert_eq!(*offset, 16);
            assert_eq!((*expected, *found), (6, 11));
        }
        other => panic!("unexpected error {other}"),
    }
    assert!(err.to_string().contains("offset 16"), "{err}");
    assert!(matches!(
        verify(&d.data, &d.log),
        Err(StorageError::Gap { .. })
    ));
}

#[test]
fn zxid_gap_inside_a_segment_is_an_error() {
    // Hand-built segment following the documented format: 1, 2, 4.
    let d = dirs();
    std::fs::create_dir_all(&d.log).unwrap();
    let mut bytes = segment_header(1);
    bytes.extend(frame(1, b"a"));
    bytes.extend(frame(2, b"b"));
    let off = bytes.len() as u64;
    bytes.extend(frame(4, b"d"));
    let seg = d.log.join(log_file_name(1));
    std::fs::write(&seg, bytes).unwrap();
    match recover(&d.data, &d.log) {
        Err(StorageError::Gap {
            file,
            offset,
            expected: 3,
            found: 4,
        }) => {
            assert_eq!(file, seg);
            assert_eq!(offset, off);
        }
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("gap accepted"),
    }
}

#[test]
fn hand_built_segment_in_documented_format_is_read() {
    let d = dirs();
    std::fs::create_dir_all(&d.log).unwrap();
    let mut bytes = segment_header(1);
    for z in 1..=3 {
        bytes.extend(frame(z, &payload(z)));
    }
    bytes.extend(vec![0u8; 100]);
    std::fs::write(d.log.join(log_file_name(1)), bytes).unwrap();
    let rec = recover_ok(&d);
    assert_eq!(zxids(&rec), vec![1, 2, 3]);
    assert_payloads(&rec);
}

#[test]
fn log_without_snapshot_must_start_at_zxid_one() {
    let d = dirs();
    std::fs::create_dir_all(&d.log).unwrap();
    let mut bytes = segment_header(5);
    bytes.extend(frame(5, b"e"));
    std::fs::write(d.log.join(log_file_name(5)), bytes).unwrap();
    assert!(matches!(
        recover(&d.data, &d.log),
        Err(StorageError::Gap {
            expected: 1,
            found: 5,
            ..
        })
    ));
}

#[test]
fn leftover_temp_files_and_empty_newest_segment_are_cleaned_up() {
    let d = dirs();
    closed_log(&d, small_opts(), 3);
    // A segment created for zxid 4 whose first batch never made it, and a temp file.
    let mut empty = segment_header(4);
    empty.extend(vec![0u8; 64]);
    std::fs::write(d.log.join(log_file_name(4)), empty).unwrap();
    std::fs::write(d.log.join(format!("{}.tmp", log_file_name(9))), b"junk").unwrap();
    let rec = recover_ok(&d);
    assert_eq!(rec.last_zxid, 3);
    append_after(rec, 4, 5);
    assert_eq!(segments(&d.log).len(), 2);
    assert!(!d.log.join(format!("{}.tmp", log_file_name(9))).exists());
    assert_eq!(zxids(&recover_ok(&d)), (1..=5).collect::<Vec<_>>());
}

#[test]
fn log_iter_dumps_records_with_offsets() {
    let d = dirs();
    let seg = closed_log(&d, small_opts(), 4);
    let mut it = LogIter::open(&seg).unwrap();
    let recs: Vec<_> = it.by_ref().map(|r| r.unwrap()).collect();
    assert_eq!(recs.len(), 4);
    assert_eq!(recs[0].offset, 16);
    assert_eq!(recs[1].offset, 16 + frame(1, &payload(1)).len() as u64);
    assert_eq!(recs[3].payload, payload(4));
    let s = it.summary();
    assert_eq!(
        (s.first_zxid, s.last_zxid, s.record_count),
        (Some(1), Some(4), 4)
    );
}

#[test]
fn bad_crc_in_last_record_followed_by_zeros_is_a_torn_tail() {
    let d = dirs();
    let seg = crashed_log(&d, 8); // the zero fill stays after the last record
    let (_, off8) = record_offsets(&seg)[7];
    flip_byte(&seg, off8 + 17);
    let rec = recover_ok(&d);
    assert_eq!(rec.truncated_tail, Some((seg.clone(), off8)));
    assert_eq!(zxids(&rec), (1..=7).collect::<Vec<_>>());
    assert_eq!(std::fs::metadata(&seg).unwrap().len(), off8);
}
