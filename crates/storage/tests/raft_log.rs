//! The Raft log store: round trips, truncation, purge, blobs, recovery from crashes and
//! damage, and random operation sequences checked against an in-memory model.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use corral_storage::{
    inspect_raft_log, raft_segment_name, RaftEntry, RaftLog, RaftLogOptions, StorageError,
};
use rand::{Rng, SeedableRng};

/// Small segments so that a few dozen entries span several of them.
fn opts(cache_bytes: usize) -> RaftLogOptions {
    RaftLogOptions {
        segment_bytes: 512,
        force_sync: true,
        cache_bytes,
    }
}

fn payload(index: u64, term: u64) -> Bytes {
    Bytes::from(format!("entry {index} of term {term};").repeat(1 + (index % 4) as usize))
}

fn entry(index: u64, term: u64) -> RaftEntry {
    RaftEntry {
        index,
        term,
        leader: term % 3 + 1,
        payload: payload(index, term),
    }
}

fn entries(from: u64, to: u64, term: u64) -> Vec<RaftEntry> {
    (from..=to).map(|i| entry(i, term)).collect()
}

fn open(dir: &Path, cache_bytes: usize) -> RaftLog {
    RaftLog::open(dir, opts(cache_bytes)).unwrap_or_else(|e| panic!("open failed: {e}"))
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let n = p.file_name().unwrap().to_str().unwrap();
            n.starts_with("raftlog.") && !n.ends_with(".tmp")
        })
        .collect();
    v.sort();
    v
}

/// Frame offset of `index` in a segment holding `first..` of term `term` (on-disk format:
/// 16-byte header, then 32-byte frame header + payload per entry).
fn offset_in_segment(first: u64, index: u64, term: u64) -> u64 {
    16 + (first..index)
        .map(|i| 32 + payload(i, term).len() as u64)
        .sum::<u64>()
}

fn append_batches(log: &mut RaftLog, from: u64, to: u64, term: u64, batch: u64) {
    let mut i = from;
    while i <= to {
        let end = (i + batch - 1).min(to);
        log.append(&entries(i, end, term)).unwrap();
        i = end + 1;
    }
}

#[test]
fn fdatasyncs_are_reported_to_the_sync_observer() {
    let tmp = tempfile::tempdir().unwrap();
    let mut log = open(&tmp.path().join("raft"), 1 << 20);
    let reports = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let sink = reports.clone();
    log.set_sync_observer(std::sync::Arc::new(move |_took| {
        sink.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }));
    log.append(&entries(1, 3, 1)).unwrap();
    assert_eq!(reports.load(std::sync::atomic::Ordering::Relaxed), 1);
    // A deferred sync reports when it is made, not when the entries are written.
    let pending = log.append_unsynced(&entries(4, 5, 1)).unwrap().unwrap();
    assert_eq!(reports.load(std::sync::atomic::Ordering::Relaxed), 1);
    pending.sync().unwrap();
    assert_eq!(reports.load(std::sync::atomic::Ordering::Relaxed), 2);
}

#[test]
fn only_a_write_into_the_open_segment_s_preallocated_space_is_a_plain_append() {
    let tmp = tempfile::tempdir().unwrap();
    let mut log = open(&tmp.path().join("raft"), 0);
    assert!(
        !log.next_append_is_plain_write(&entries(1, 1, 1)),
        "no segment yet: the append creates one"
    );
    log.append(&entries(1, 1, 1)).unwrap();
    assert!(log.next_append_is_plain_write(&entries(2, 2, 1)));
    assert!(
        !log.next_append_is_plain_write(&entries(2, 40, 1)),
        "a batch past the preallocated 512 bytes grows the file"
    );
    let dir = tmp.path().join("raft");
    let (mut plain, mut rolls) = (0, 0);
    for i in 2..60 {
        let batch = entries(i, i, 1);
        let was_plain = log.next_append_is_plain_write(&batch);
        let before = segments(&dir).len();
        log.append(&batch).unwrap();
        if segments(&dir).len() > before {
            assert!(
                !was_plain,
                "entry {i} started a segment but counted as plain"
            );
            rolls += 1;
        }
        plain += usize::from(was_plain);
    }
    assert!(
        rolls >= 2 && plain >= 20,
        "rolls {rolls}, plain appends {plain}"
    );
    assert_eq!(log.read_range(1, 60).unwrap(), entries(1, 59, 1));
}

#[test]
fn append_and_reopen_round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("raft");
    let all = entries(1, 50, 1);
    {
        let mut log = open(&dir, 1 << 20);
        assert_eq!(log.first_index(), 1);
        assert_eq!(log.last_entry_id(), None);
        append_batches(&mut log, 1, 50, 1, 7);
        // One fdatasync per batch: 50 entries in batches of 7.
        assert_eq!(log.sync_count(), 8);
        assert_eq!(log.last_entry_id(), Some((50, 1, 2)));
        assert_eq!(log.read_range(1, 51).unwrap(), all);
        assert_eq!(log.read_range(10, 13).unwrap(), all[9..12].to_vec());
    }
    assert!(segments(&dir).len() > 3, "small segments must roll");
    // Without a cache every read goes to the segment files.
    let mut log = open(&dir, 0);
    assert_eq!(log.first_index(), 1);
    assert_eq!(log.last_entry_id(), Some((50, 1, 2)));
    assert_eq!(log.read_range(0, 100).unwrap(), all);
    assert_eq!(log.read_range(17, 33).unwrap(), all[16..32].to_vec());
    assert!(log.read_range(51, 60).unwrap().is_empty());
    log.append(&entries(51, 52, 2)).unwrap();
    assert_eq!(log.read_range(50, 53).unwrap().len(), 3);
}

#[test]
fn log_may_start_at_index_zero() {
    let tmp = tempfile::tempdir().unwrap();
    {
        let mut log = open(tmp.path(), 1 << 20);
        log.append(&entries(0, 3, 0)).unwrap();
        assert_eq!(log.first_index(), 0);
    }
    let mut log = open(tmp.path(), 1 << 20);
    assert_eq!(log.first_index(), 0);
    assert_eq!(log.last_entry_id().map(|l| l.0), Some(3));
    assert_eq!(log.read_range(0, 10).unwrap(), entries(0, 3, 0));
}

#[test]
fn truncate_inside_an_older_segment_then_append_and_reopen() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut log = open(dir, 1 << 20);
    append_batches(&mut log, 1, 60, 1, 5);
    let before = segments(dir).len();
    assert!(before >= 4);
    // Entry 12 lies in the second segment (first_index 1, several entries per segment).
    let second_start: u64 = segments(dir)[1]
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .strip_prefix("raftlog.")
        .map(|h| u64::from_str_radix(h, 16).unwrap())
        .unwrap();
    let cut = second_start + 1;
    log.truncate_from(cut).unwrap();
    assert_eq!(log.last_entry_id(), Some((cut - 1, 1, 2)));
    assert_eq!(segments(dir).len(), 2, "later segments are deleted");
    log.append(&entries(cut, cut + 9, 2)).unwrap();
    assert_eq!(log.last_entry_id(), Some((cut + 9, 2, 3)));
    drop(log);

    let mut log = open(dir, 0);
    let mut expected = entries(1, cut - 1, 1);
    expected.extend(entries(cut, cut + 9, 2));
    assert_eq!(log.read_range(1, 1000).unwrap(), expected);
    // Truncating past the end or below the first entry behaves.
    log.truncate_from(cut + 100).unwrap();
    assert_eq!(log.last_entry_id(), Some((cut + 9, 2, 3)));
    log.truncate_from(1).unwrap();
    assert_eq!(log.last_entry_id(), None);
    assert!(segments(dir).is_empty());
    log.append(&entries(1, 2, 3)).unwrap();
    drop(log);
    assert_eq!(open(dir, 0).read_range(1, 10).unwrap(), entries(1, 2, 3));
}

#[test]
fn purge_then_reopen() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut log = open(dir, 1 << 20);
    append_batches(&mut log, 1, 60, 1, 4);
    let before = segments(dir).len();
    log.purge_through(25, 1, 2).unwrap();
    assert_eq!(log.first_index(), 26);
    assert_eq!(log.last_purged(), Some((25, 1, 2)));
    assert!(segments(dir).len() < before, "whole segments are deleted");
    assert_eq!(log.read_range(1, 1000).unwrap(), entries(26, 60, 1));
    // Truncation never goes below the purge point.
    log.truncate_from(10).unwrap();
    assert_eq!(log.last_entry_id(), None);
    assert_eq!(log.first_index(), 26);
    log.append(&entries(26, 30, 2)).unwrap();
    drop(log);

    let mut log = open(dir, 0);
    assert_eq!(log.first_index(), 26);
    assert_eq!(log.last_purged(), Some((25, 1, 2)));
    assert_eq!(log.read_range(0, 1000).unwrap(), entries(26, 30, 2));

    // A snapshot beyond the end of the log empties it; it continues after the snapshot.
    log.purge_through(100, 3, 1).unwrap();
    assert_eq!(log.last_entry_id(), None);
    assert_eq!(log.first_index(), 101);
    assert!(segments(dir).is_empty());
    let err = log.append(&entries(100, 100, 3)).unwrap_err();
    assert!(matches!(
        err,
        StorageError::IndexOutOfSequence {
            expected: 101,
            got: 100
        }
    ));
    log.append(&entries(101, 103, 3)).unwrap();
    drop(log);
    let mut log = open(dir, 0);
    assert_eq!(log.last_purged(), Some((100, 3, 1)));
    assert_eq!(log.read_range(0, 1000).unwrap(), entries(101, 103, 3));
}

#[test]
fn vote_and_committed_survive_reopen() {
    let tmp = tempfile::tempdir().unwrap();
    {
        let mut log = open(tmp.path(), 0);
        assert_eq!(log.read_vote(), None);
        assert_eq!(log.read_committed(), None);
        log.save_vote(b"term 3 voted for 2").unwrap();
        log.save_vote(b"term 4 voted for 1").unwrap();
        log.save_committed(b"committed 17").unwrap();
        assert_eq!(log.read_vote().as_deref(), Some(&b"term 4 voted for 1"[..]));
    }
    let log = open(tmp.path(), 0);
    assert_eq!(log.read_vote().as_deref(), Some(&b"term 4 voted for 1"[..]));
    assert_eq!(log.read_committed().as_deref(), Some(&b"committed 17"[..]));
}

#[test]
fn damaged_vote_fails_open_but_damaged_committed_is_dropped() {
    let tmp = tempfile::tempdir().unwrap();
    {
        let mut log = open(tmp.path(), 0);
        log.save_vote(b"vote").unwrap();
        log.save_committed(b"committed").unwrap();
    }
    flip_byte(&tmp.path().join("committed"), 17);
    let log = open(tmp.path(), 0);
    assert_eq!(log.read_committed(), None);
    assert_eq!(log.read_vote().as_deref(), Some(&b"vote"[..]));
    drop(log);
    flip_byte(&tmp.path().join("vote"), 17);
    let err = RaftLog::open(tmp.path(), opts(0)).err().expect("must fail");
    assert!(err.to_string().contains("vote"), "{err}");
}

fn flip_byte(path: &Path, offset: u64) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[offset as usize] ^= 0x5a;
    std::fs::write(path, bytes).unwrap();
}

/// One big segment holding 1..=10 of term 1.
fn ten_entries(dir: &Path) -> PathBuf {
    let mut log = RaftLog::open(
        dir,
        RaftLogOptions {
            segment_bytes: 1 << 20,
            ..opts(0)
        },
    )
    .unwrap();
    log.append(&entries(1, 10, 1)).unwrap();
    drop(log);
    let segs = segments(dir);
    assert_eq!(segs.len(), 1);
    segs[0].clone()
}

#[test]
fn torn_tail_is_cut_off() {
    let tmp = tempfile::tempdir().unwrap();
    let seg = ten_entries(tmp.path());
    // Crash mid-write of entry 10: the file ends inside its frame.
    let off10 = offset_in_segment(1, 10, 1);
    let f = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
    f.set_len(off10 + 20).unwrap();
    drop(f);

    let mut log = open(tmp.path(), 0);
    assert_eq!(log.last_entry_id(), Some((9, 1, 2)));
    assert_eq!(log.read_range(1, 100).unwrap(), entries(1, 9, 1));
    assert_eq!(std::fs::metadata(&seg).unwrap().len(), off10);
    log.append(&entries(10, 11, 2)).unwrap();
    drop(log);
    let mut log = open(tmp.path(), 0);
    assert_eq!(log.last_entry_id(), Some((11, 2, 3)));
    let mut expected = entries(1, 9, 1);
    expected.extend(entries(10, 11, 2));
    assert_eq!(log.read_range(1, 100).unwrap(), expected);
}

#[test]
fn garbage_in_the_zero_fill_is_a_torn_tail() {
    let tmp = tempfile::tempdir().unwrap();
    let seg = ten_entries(tmp.path());
    // Half-written entry 11 in the preallocated space after entry 10.
    let end = offset_in_segment(1, 11, 1);
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[end as usize..end as usize + 40].fill(0x77);
    std::fs::write(&seg, bytes).unwrap();
    let mut log = open(tmp.path(), 0);
    assert_eq!(log.last_entry_id(), Some((10, 1, 2)));
    assert_eq!(log.read_range(1, 100).unwrap(), entries(1, 10, 1));
}

#[test]
fn flipped_byte_in_the_middle_fails_open_naming_file_and_offset() {
    let tmp = tempfile::tempdir().unwrap();
    let seg = ten_entries(tmp.path());
    let off3 = offset_in_segment(1, 3, 1);
    flip_byte(&seg, off3 + 40);
    let err = RaftLog::open(tmp.path(), opts(0))
        .err()
        .expect("open must fail");
    match &err {
        StorageError::Corrupt { file, offset, .. } => {
            assert_eq!(file, &seg);
            assert_eq!(*offset, off3);
        }
        other => panic!("expected Corrupt, got {other}"),
    }
    let msg = err.to_string();
    assert!(msg.contains(&raft_segment_name(1)), "{msg}");
    assert!(msg.contains(&format!("offset {off3}")), "{msg}");
    // Inspection reports the same damage without modifying anything.
    let info = inspect_raft_log(tmp.path()).unwrap();
    assert!(info.first_problem().is_some());
    assert_eq!(info.segments[0].record_count, 2);
}

#[test]
fn damage_in_an_older_segment_is_an_error_even_at_its_end() {
    let tmp = tempfile::tempdir().unwrap();
    let mut log = open(tmp.path(), 0);
    append_batches(&mut log, 1, 40, 1, 3);
    drop(log);
    let segs = segments(tmp.path());
    assert!(segs.len() >= 2);
    let len = std::fs::metadata(&segs[0]).unwrap().len();
    flip_byte(&segs[0], len - 1);
    let err = RaftLog::open(tmp.path(), opts(0)).err().expect("must fail");
    assert!(err.to_string().contains("not the newest"), "{err}");
}

#[test]
fn non_contiguous_append_is_rejected() {
    let tmp = tempfile::tempdir().unwrap();
    let mut log = open(tmp.path(), 1 << 20);
    let err = log.append(&entries(2, 2, 1)).unwrap_err();
    assert!(matches!(
        err,
        StorageError::IndexOutOfSequence {
            expected: 1,
            got: 2
        }
    ));
    log.append(&entries(1, 3, 1)).unwrap();
    let err = log.append(&entries(5, 5, 1)).unwrap_err();
    assert!(matches!(
        err,
        StorageError::IndexOutOfSequence {
            expected: 4,
            got: 5
        }
    ));
    let gap = vec![entry(4, 1), entry(6, 1)];
    let err = log.append(&gap).unwrap_err();
    assert!(matches!(
        err,
        StorageError::IndexOutOfSequence {
            expected: 5,
            got: 6
        }
    ));
    assert_eq!(log.last_entry_id(), Some((3, 1, 2)));
    drop(log);
    let mut log = open(tmp.path(), 0);
    assert_eq!(log.read_range(1, 10).unwrap(), entries(1, 3, 1));
}

#[test]
fn interrupted_purge_is_completed_on_open() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut log = open(dir, 0);
    append_batches(&mut log, 1, 60, 1, 4);
    let saved: Vec<(PathBuf, Vec<u8>)> = segments(dir)
        .into_iter()
        .map(|p| {
            let b = std::fs::read(&p).unwrap();
            (p, b)
        })
        .collect();
    log.purge_through(30, 1, 2).unwrap();
    let after = segments(dir);
    drop(log);
    // Crash after `purged` was written but before the segments were deleted.
    for (p, b) in &saved {
        std::fs::write(p, b).unwrap();
    }
    let mut log = open(dir, 0);
    assert_eq!(log.first_index(), 31);
    assert_eq!(log.read_range(0, 1000).unwrap(), entries(31, 60, 1));
    assert_eq!(segments(dir), after, "purged segments are deleted on open");
}

#[test]
fn crash_during_truncation_leaves_a_prefix() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut log = open(dir, 0);
    append_batches(&mut log, 1, 60, 1, 4);
    drop(log);
    // Truncation deletes newest segments first; a crash after deleting only the newest.
    let segs = segments(dir);
    std::fs::remove_file(segs.last().unwrap()).unwrap();
    let mut log = open(dir, 0);
    let last = log.last_entry_id().unwrap().0;
    assert!(last < 60);
    assert_eq!(log.read_range(0, 1000).unwrap(), entries(1, last, 1));
}

#[test]
fn empty_newest_segment_from_a_crash_is_removed() {
    let tmp = tempfile::tempdir().unwrap();
    let seg = ten_entries(tmp.path());
    let _ = seg;
    // Crash right after creating the segment for entry 11.
    let mut header = b"CRRL".to_vec();
    header.extend_from_slice(&1u32.to_be_bytes());
    header.extend_from_slice(&11u64.to_be_bytes());
    header.resize(4096, 0);
    std::fs::write(tmp.path().join(raft_segment_name(11)), header).unwrap();
    std::fs::write(tmp.path().join("raftlog.000000000000000c.tmp"), b"junk").unwrap();
    let mut log = open(tmp.path(), 0);
    assert_eq!(log.last_entry_id(), Some((10, 1, 2)));
    assert_eq!(segments(tmp.path()).len(), 1);
    log.append(&entries(11, 12, 1)).unwrap();
    assert_eq!(log.read_range(1, 100).unwrap(), entries(1, 12, 1));
}

#[test]
fn inspection_lists_segments_vote_and_purge_point() {
    let tmp = tempfile::tempdir().unwrap();
    let mut log = open(tmp.path(), 0);
    append_batches(&mut log, 1, 40, 1, 3);
    log.append(&entries(41, 45, 2)).unwrap();
    log.save_vote(b"v").unwrap();
    log.purge_through(10, 1, 2).unwrap();
    let live = segments(tmp.path()).len();
    drop(log);
    let info = inspect_raft_log(tmp.path()).unwrap();
    assert!(info.first_problem().is_none(), "{:?}", info.first_problem());
    assert_eq!(info.segments.len(), live);
    assert_eq!(info.vote.as_deref(), Some(&b"v"[..]));
    assert_eq!(info.last_purged, Some((10, 1, 2)));
    let newest = info.segments.last().unwrap();
    assert_eq!(newest.last, Some((45, 2, 3)));
    for pair in info.segments.windows(2) {
        assert_eq!(pair[0].last.unwrap().0 + 1, pair[1].first.unwrap().0);
    }
}

/// The reference: the entries present and the purge point.
#[derive(Default)]
struct Model {
    entries: Vec<RaftEntry>,
    purged: Option<(u64, u64, u64)>,
}

impl Model {
    fn first_index(&self) -> u64 {
        match (self.purged, self.entries.first()) {
            (Some(p), _) => p.0 + 1,
            (None, Some(e)) => e.index,
            (None, None) => 1,
        }
    }
    fn next_index(&self) -> u64 {
        self.entries
            .last()
            .map_or(self.first_index(), |e| e.index + 1)
    }
}

#[test]
fn random_operations_match_a_model() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed_0001);
    let small_opts = |cache_bytes| RaftLogOptions {
        segment_bytes: 300,
        force_sync: false,
        cache_bytes,
    };
    let mut log = RaftLog::open(dir, small_opts(2000)).unwrap();
    let mut model = Model::default();
    let mut term = 1u64;
    for step in 0..1000 {
        match rng.gen_range(0..100) {
            0..=54 => {
                let n = rng.gen_range(1..6u64);
                let start = model.next_index();
                let batch: Vec<RaftEntry> = (start..start + n).map(|i| entry(i, term)).collect();
                log.append(&batch).unwrap();
                model.entries.extend(batch);
            }
            55..=69 => {
                let lo = model.first_index().saturating_sub(2);
                let at = rng.gen_range(lo..=model.next_index() + 1);
                log.truncate_from(at).unwrap();
                model.entries.retain(|e| e.index < at);
                term += 1;
            }
            70..=79 => {
                let lo = model.first_index();
                let at = rng.gen_range(lo..=model.next_index() + 3);
                let id = (at, term, 9);
                log.purge_through(at, term, 9).unwrap();
                if !matches!(model.purged, Some(p) if at <= p.0) {
                    model.purged = Some(id);
                    model.entries.retain(|e| e.index > at);
                }
            }
            80..=89 => {
                drop(log);
                let cache = [0, 400, 2000][rng.gen_range(0..3)];
                log = RaftLog::open(dir, small_opts(cache))
                    .unwrap_or_else(|e| panic!("step {step}: reopen failed: {e}"));
            }
            _ => {
                assert_eq!(
                    log.read_range(0, u64::MAX).unwrap(),
                    model.entries,
                    "step {step}"
                );
            }
        }
        // A random range after every step, mostly near the end (where the cache is).
        let lo = if rng.gen_bool(0.5) {
            model.next_index().saturating_sub(8)
        } else {
            model.first_index().saturating_sub(3)
        };
        let a = rng.gen_range(lo..=model.next_index() + 2);
        let b = rng.gen_range(a..=model.next_index() + 2);
        let want: Vec<RaftEntry> = model
            .entries
            .iter()
            .filter(|e| e.index >= a && e.index < b)
            .cloned()
            .collect();
        assert_eq!(
            log.read_range(a, b).unwrap(),
            want,
            "step {step}: [{a}, {b})"
        );
        assert_eq!(log.first_index(), model.first_index(), "step {step}");
        assert_eq!(
            log.last_entry_id(),
            model.entries.last().map(|e| (e.index, e.term, e.leader)),
            "step {step}"
        );
        assert_eq!(log.last_purged(), model.purged, "step {step}");
    }
    assert_eq!(log.read_range(0, u64::MAX).unwrap(), model.entries);
    drop(log);
    let mut log = RaftLog::open(dir, small_opts(0)).unwrap();
    assert_eq!(log.read_range(0, u64::MAX).unwrap(), model.entries);
}
