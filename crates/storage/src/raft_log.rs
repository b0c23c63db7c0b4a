//! The Raft log: a durable store of replicated entries for the ensemble, independent of any
//! Raft library (the server adapts it to openraft).
//!
//! # Directory layout (`dir`, e.g. `<dataLogDir>/raft`)
//!
//! * `raftlog.<index>` — segments, named after the index of their first entry (16 hex
//!   digits). All integers are big-endian.
//!
//!   ```text
//!   segment := header record* zero-fill?
//!   header  := "CRRL" version:u32 (=1) first_index:u64                  (16 bytes)
//!   record  := len:u32 crc:u32 index:u64 term:u64 leader:u64 payload
//!              len = 24 + payload length (never 0)
//!              crc = crc32c(index || term || leader || payload)
//!   ```
//!
//!   A new segment is created (temp file, header, preallocation to
//!   [`RaftLogOptions::segment_bytes`], fsync, rename, directory fsync) when the newest one
//!   has reached `segment_bytes`, checked between batches (a batch is never split). Before a
//!   segment stops being the newest it is synced and its zero fill trimmed, so only the
//!   newest segment can ever end in a torn write.
//! * `vote`, `committed`, `purged` — small blobs: `"CRRB" version:u32 len:u32 crc:u32
//!   payload`, replaced atomically (temp file, fsync, rename, directory fsync; `committed`
//!   skips both fsyncs). `purged` holds the (index, term, leader) of the last purged entry.
//! * `*.tmp` — leftovers of an interrupted creation; removed by [`RaftLog::open`].
//!
//! # Invariants
//!
//! * Entry indexes run `+1` within and across segments; the first record of
//!   `raftlog.<i>` has index `i`.
//! * The entries present are `first_index()..=last_entry_id().index`. The oldest segment
//!   may still hold entries at or before `last_purged` (a purge deletes whole segments only);
//!   they are never served and a truncation never goes below `last_purged + 1`.
//! * The log starts at index 0 or 1 until something is purged (openraft writes its initial
//!   membership entry at index 0); after that, at `last_purged + 1`.
//!
//! # Crash safety, step by step
//!
//! * **Append**: records are written after the last valid one and fdatasynced once per
//!   batch (unless `force_sync` is off) before `append` returns. A crash mid-write leaves a
//!   torn tail in the newest segment, which `open` cuts off with a warning; what remains is
//!   a prefix of what was appended. A failed write is cut off the file before anything else
//!   is written, so no fragment of it can survive behind later records.
//! * **Segment creation** is atomic (temp + rename). A crash right after it leaves an empty
//!   newest segment, which `open` deletes.
//! * **Truncate** (`truncate_from(i)`): first the segments starting at or after `i` are
//!   deleted *newest first*, then the segment holding `i` is cut at `i`'s offset and synced.
//!   A crash at any point therefore leaves a contiguous log that is a prefix of the old one,
//!   at least `i - 1` long: some of the conflicting suffix may survive, which is exactly the
//!   state before the truncation started (the entries are uncommitted; Raft truncates them
//!   again). A crash between the truncation and the following append leaves the log cut
//!   at `i - 1`, which is the state `truncate_from` promised.
//! * **Purge** (`purge_through(i, ..)`): first `purged` is written durably, then whole
//!   segments ending at or before `i` are deleted *oldest first*. A crash in between leaves
//!   segments that are entirely purged; `open` recognises them (from the next segment's name,
//!   or by reading the newest one) and deletes them, completing the purge. The reverse order
//!   would be unsafe: segments gone while `purged` still says they are needed is a gap.
//! * **Open** repairs only what the above can produce (torn tail of the newest segment,
//!   empty newest segment, fully purged segments, temp files) and only after every segment
//!   has been checked. Anything else — a bad record followed by a valid one, damage in an
//!   older segment, an index gap, a damaged `vote` or `purged` — is
//!   [`StorageError::Corrupt`] naming the file and byte offset. A damaged `committed` (it is
//!   written without fsync) is logged and treated as absent.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;

use crate::error::{IoContext, StorageError};
use crate::format::MAX_PAYLOAD_BYTES;
use crate::fsutil::{list_tmp, preallocate, sync_dir, ZeroFill};
use crate::raft_meta::{
    decode_log_id, encode_log_id, read_blob, write_blob, COMMITTED_FILE, PURGED_FILE, VOTE_FILE,
};
use crate::raft_segment::{
    encode_entry, encode_segment_header, frame_bytes, list_segments, raft_segment_name,
    read_entries, scan_segment, RAFT_HEADER_BYTES,
};
use crate::scan::Tail;
use crate::writer::{tmp_path, SyncObserver};

/// (index, term, leader) of an entry.
pub type RaftLogId = (u64, u64, u64);

/// Tuning of the Raft log.
#[derive(Debug, Clone)]
pub struct RaftLogOptions {
    /// A new segment is started before the first batch that would begin at or beyond this
    /// size; segments are preallocated to it.
    pub segment_bytes: u64,
    /// false = appends are not fdatasynced (a machine crash may lose acknowledged entries).
    /// Truncation, purge, vote and segment changes are always synced.
    pub force_sync: bool,
    /// Budget of the cache of recent entries: payload bytes plus a fixed per-entry overhead.
    pub cache_bytes: usize,
}

impl Default for RaftLogOptions {
    fn default() -> Self {
        RaftLogOptions {
            segment_bytes: 64 * 1024 * 1024,
            force_sync: true,
            cache_bytes: 32 * 1024 * 1024,
        }
    }
}

/// One replicated entry. The payload is opaque to the storage layer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RaftEntry {
    pub index: u64,
    /// Term of the leader that created the entry.
    pub term: u64,
    /// Node id of the leader that created the entry.
    pub leader: u64,
    pub payload: Bytes,
}

impl RaftEntry {
    fn id(&self) -> RaftLogId {
        (self.index, self.term, self.leader)
    }
}

/// What a cached entry costs besides its payload (the struct, the deque slot, the Bytes
/// header), so that many tiny entries cannot grow the cache unboundedly.
const CACHE_ENTRY_OVERHEAD_BYTES: usize = 64;

/// In-memory index of one segment, so reads seek straight to an entry.
#[derive(Debug)]
struct Segment {
    first_index: u64,
    path: PathBuf,
    /// Frame offset of entry `first_index + i` (including purged entries still on disk).
    offsets: Vec<u64>,
    /// Offset just after the last record: where the next append goes.
    end_offset: u64,
    /// Current file length (records + zero fill).
    file_len: u64,
    /// Keeps appends out of fallocated-but-unwritten blocks (newest segment only).
    zero_fill: ZeroFill,
}

impl Segment {
    fn next_index(&self) -> u64 {
        self.first_index + self.offsets.len() as u64
    }

    /// Frame offset of `index`, or `end_offset` for `next_index()`.
    fn offset_of(&self, index: u64) -> u64 {
        let i = (index - self.first_index) as usize;
        self.offsets.get(i).copied().unwrap_or(self.end_offset)
    }
}

/// Makes a batch written by [`RaftLog::append_unsynced`] durable (one fdatasync of its
/// segment; several pending syncs of one segment may share one call). Does nothing when the
/// log was opened without `force_sync`.
pub struct PendingSync {
    /// The segment's write handle, shared rather than duplicated per batch.
    file: Arc<File>,
    path: PathBuf,
    enabled: bool,
    observer: Option<SyncObserver>,
}

impl PendingSync {
    pub fn sync(&self) -> Result<(), StorageError> {
        if self.enabled {
            let started = std::time::Instant::now();
            self.file
                .sync_data()
                .map_err(|e| StorageError::io(&self.path, e))?;
            if let Some(observe) = &self.observer {
                observe(started.elapsed());
            }
        }
        Ok(())
    }

    /// Whether two pending syncs are for the same segment (one `sync` covers both).
    pub fn same_file(&self, other: &PendingSync) -> bool {
        self.path == other.path
    }
}

/// Durable Raft log store. Owned by one thread; callers wrap it (e.g. in a mutex or a
/// dedicated task) for shared use.
pub struct RaftLog {
    dir: PathBuf,
    opts: RaftLogOptions,
    /// Oldest first, contiguous. Only the newest may be empty (left by a failed batch).
    segments: Vec<Segment>,
    /// Write handle of the newest segment, opened on first use; shared with the
    /// [`PendingSync`]s of batches written to it.
    active: Option<Arc<File>>,
    last: Option<RaftLogId>,
    last_purged: Option<RaftLogId>,
    vote: Option<Vec<u8>>,
    committed: Option<Vec<u8>>,
    /// Contiguous run of the most recent entries, ending at `last` when non-empty.
    cache: VecDeque<RaftEntry>,
    cache_used_bytes: usize,
    /// After a failed write: the newest segment must be cut back to this offset before
    /// anything else is written, so no fragment of the failed batch survives.
    dirty_from: Option<u64>,
    syncs: u64,
    sync_observer: Option<SyncObserver>,
}

impl RaftLog {
    /// Opens or creates the log in `dir`. See the module documentation for what is repaired
    /// (torn tail of the newest segment, logged with `warn!`) and what is an error.
    pub fn open(dir: &Path, opts: RaftLogOptions) -> Result<RaftLog, StorageError> {
        std::fs::create_dir_all(dir).at(dir)?;
        let tmps = list_tmp(dir, "")?;
        for t in &tmps {
            tracing::info!(file = %t.display(), "removing leftover temp file");
            std::fs::remove_file(t).at(t)?;
        }
        if !tmps.is_empty() {
            sync_dir(dir)?;
        }
        let vote = read_blob(dir, VOTE_FILE)?;
        let committed = match read_blob(dir, COMMITTED_FILE) {
            Ok(c) => c,
            // Written without fsync, so a machine crash may leave it damaged; losing it only
            // means the committed id is rediscovered from the leader.
            Err(e @ StorageError::Corrupt { .. }) => {
                tracing::warn!(error = %e, "ignoring damaged committed-id file");
                None
            }
            Err(e) => return Err(e),
        };
        let last_purged = read_blob(dir, PURGED_FILE)?
            .map(|b| decode_log_id(dir, PURGED_FILE, &b))
            .transpose()?;
        let purged_index = last_purged.map(|p| p.0);

        let listed = list_segments(dir)?;
        // Segments wholly at or before last_purged are left over from an interrupted purge.
        // The next segment's name tells where one ends, so they need not even be read.
        let mut keep_from = 0;
        if let Some(p) = purged_index {
            while keep_from + 1 < listed.len() && listed[keep_from + 1].0 <= p + 1 {
                keep_from += 1;
            }
        }
        let mut stale: Vec<PathBuf> = listed[..keep_from].iter().map(|(_, p)| p.clone()).collect();
        let kept = &listed[keep_from..];

        let mut scans = Vec::with_capacity(kept.len());
        let mut expected_next: Option<u64> = None;
        for (i, (first, path)) in kept.iter().enumerate() {
            let newest = i + 1 == kept.len();
            let scan = scan_segment(path, newest, |_, _| {})?;
            if scan.offsets.is_empty() && !newest {
                return Err(StorageError::corrupt(
                    path,
                    RAFT_HEADER_BYTES,
                    "segment holds no entries but is not the newest",
                ));
            }
            match expected_next {
                Some(exp) if *first != exp => {
                    return Err(StorageError::corrupt(
                        path,
                        0,
                        format!("segment starts at index {first}, expected {exp}"),
                    ))
                }
                Some(_) => {}
                None => {
                    let start_ok = match purged_index {
                        Some(p) => *first <= p + 1,
                        None => *first <= 1,
                    };
                    if !start_ok {
                        return Err(StorageError::corrupt(
                            path,
                            0,
                            format!(
                                "log starts at index {first} but the entries before it are \
                                 neither present nor purged (last purged: {purged_index:?})"
                            ),
                        ));
                    }
                }
            }
            expected_next = Some(first + scan.offsets.len() as u64);
            scans.push((path.clone(), scan));
        }

        // Every segment checked: now the repairs.
        let mut segments = Vec::with_capacity(scans.len());
        let newest_idx = scans.len().checked_sub(1);
        for (i, (path, scan)) in scans.into_iter().enumerate() {
            let mut file_len = scan.file_len;
            if Some(i) == newest_idx {
                let all_purged = match (scan.last, purged_index) {
                    (None, _) => true,
                    (Some(l), Some(p)) => l.0 <= p,
                    (Some(_), None) => false,
                };
                if let Tail::Torn { offset, reason } = &scan.tail {
                    tracing::warn!(
                        segment = %path.display(),
                        offset,
                        reason = %reason,
                        "cutting off torn tail of the raft log (crash during append)"
                    );
                }
                if all_purged {
                    stale.push(path);
                    continue;
                }
                if matches!(scan.tail, Tail::Torn { .. }) {
                    let f = OpenOptions::new().write(true).open(&path).at(&path)?;
                    f.set_len(scan.end_offset).at(&path)?;
                    f.sync_all().at(&path)?;
                    file_len = scan.end_offset;
                }
            }
            segments.push(Segment {
                first_index: scan.first_index,
                path,
                offsets: scan.offsets,
                end_offset: scan.end_offset,
                file_len,
                zero_fill: ZeroFill::new(scan.end_offset),
            });
        }
        // Oldest first, like purge: a crash here leaves a contiguous suffix.
        for path in &stale {
            tracing::info!(segment = %path.display(), "removing raft log segment that is entirely purged or empty");
            std::fs::remove_file(path).at(path)?;
        }
        if !stale.is_empty() {
            sync_dir(dir)?;
        }

        let mut log = RaftLog {
            dir: dir.to_path_buf(),
            opts,
            segments,
            active: None,
            last: None,
            last_purged,
            vote,
            committed,
            cache: VecDeque::new(),
            cache_used_bytes: 0,
            dirty_from: None,
            syncs: 0,
            sync_observer: None,
        };
        if let Some(seg) = log.segments.last() {
            let last_index = seg.next_index() - 1;
            log.last = Some(log.read_one(last_index)?.id());
        }
        tracing::info!(
            dir = %dir.display(),
            segments = log.segments.len(),
            first_index = log.first_index(),
            last = ?log.last,
            last_purged = ?log.last_purged,
            "raft log opened"
        );
        Ok(log)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Index of the first entry present: `last_purged + 1`, else where the log starts (0 or
    /// 1), else 1 for a log that never held anything.
    pub fn first_index(&self) -> u64 {
        match (self.last_purged, self.segments.first()) {
            (Some(p), _) => p.0 + 1,
            (None, Some(s)) => s.first_index,
            (None, None) => 1,
        }
    }

    /// The last entry present; `None` when the log is empty (all purged, or nothing yet).
    pub fn last_entry_id(&self) -> Option<RaftLogId> {
        self.last
    }

    /// The entry recorded by the last [`purge_through`](Self::purge_through).
    pub fn last_purged(&self) -> Option<RaftLogId> {
        self.last_purged
    }

    /// Number of fdatasync calls made for appended batches (observes batching in tests).
    pub fn sync_count(&self) -> u64 {
        self.syncs
    }

    /// Reports the duration of every successful fdatasync of appended entries to `observer`,
    /// both here and in the [`PendingSync`]s this log hands out.
    pub fn set_sync_observer(&mut self, observer: SyncObserver) {
        self.sync_observer = Some(observer);
    }

    /// Appends contiguous entries and makes them durable (one fdatasync for the batch when
    /// `force_sync`) before returning. The first entry must be `last + 1`; on an empty log
    /// `last_purged + 1`, or 0 or 1 if nothing was ever purged. On error nothing of the batch
    /// is in the log.
    pub fn append(&mut self, entries: &[RaftEntry]) -> Result<(), StorageError> {
        let Some(pending) = self.write_batch(entries, self.opts.force_sync)? else {
            return Ok(());
        };
        drop(pending);
        Ok(())
    }

    /// Whether [`append_unsynced`](Self::append_unsynced) of `entries` next would be one
    /// positioned write into the page cache of the open newest segment: no fsync, no file
    /// created, opened, cut or removed, no growth past the preallocated length. A caller that
    /// must not block (an async task) appends itself only then.
    pub fn next_append_is_plain_write(&self, entries: &[RaftEntry]) -> bool {
        let Some(seg) = self.segments.last() else {
            return false;
        };
        let batch_bytes: u64 = entries.iter().map(|e| frame_bytes(e.payload.len())).sum();
        self.active.is_some()
            && self.dirty_from.is_none()
            && !seg.offsets.is_empty()
            && seg.end_offset < self.opts.segment_bytes
            && seg.end_offset + batch_bytes <= seg.file_len
    }

    /// Writes entries like [`RaftLog::append`] (readable at once) but leaves making them
    /// durable to the caller: the returned [`PendingSync`] does it, outside any lock the
    /// caller holds around the log, so one fdatasync can cover several batches. `None` for an
    /// empty batch.
    pub fn append_unsynced(
        &mut self,
        entries: &[RaftEntry],
    ) -> Result<Option<PendingSync>, StorageError> {
        self.write_batch(entries, false)
    }

    fn write_batch(
        &mut self,
        entries: &[RaftEntry],
        sync_now: bool,
    ) -> Result<Option<PendingSync>, StorageError> {
        let Some(head) = entries.first() else {
            return Ok(None);
        };
        let start = match (self.last, self.last_purged) {
            (Some(l), _) => l.0 + 1,
            (None, Some(p)) => p.0 + 1,
            (None, None) if head.index == 0 => 0,
            (None, None) => 1,
        };
        let mut batch_bytes = 0u64;
        for (i, e) in entries.iter().enumerate() {
            let expected = start + i as u64;
            if e.index != expected {
                return Err(StorageError::IndexOutOfSequence {
                    expected,
                    got: e.index,
                });
            }
            if e.payload.len() > MAX_PAYLOAD_BYTES {
                return Err(StorageError::RecordTooLarge {
                    len: e.payload.len(),
                    max: MAX_PAYLOAD_BYTES,
                });
            }
            batch_bytes += frame_bytes(e.payload.len());
        }
        let mut buf = Vec::with_capacity(batch_bytes as usize);
        for e in entries {
            encode_entry(&mut buf, e);
        }

        self.cut_dirty()?;
        self.ensure_segment_for(start)?;
        self.ensure_active()?;
        let file = self.active.as_ref().expect("just ensured");
        let seg = self.segments.last_mut().expect("segment just ensured");
        seg.zero_fill
            .before_write(file, &seg.path, seg.end_offset + batch_bytes, seg.file_len);
        if let Err(e) = file.write_all_at(&buf, seg.end_offset) {
            self.dirty_from = Some(seg.end_offset);
            return Err(StorageError::io(&seg.path, e));
        }
        if sync_now {
            let started = std::time::Instant::now();
            if let Err(e) = file.sync_data() {
                // After a failed fdatasync the page cache state is unknown: cut back and
                // rewrite is the only safe continuation.
                self.dirty_from = Some(seg.end_offset);
                return Err(StorageError::io(&seg.path, e));
            }
            self.syncs += 1;
            if let Some(observe) = &self.sync_observer {
                observe(started.elapsed());
            }
        }
        let mut offset = seg.end_offset;
        for e in entries {
            seg.offsets.push(offset);
            offset += frame_bytes(e.payload.len());
        }
        seg.end_offset = offset;
        seg.file_len = seg.file_len.max(offset);
        let path = seg.path.clone();
        let handle = file.clone();
        self.last = entries.last().map(RaftEntry::id);
        for e in entries {
            self.cache_push(e.clone());
        }
        tracing::trace!(entries = entries.len(), last = ?self.last, "raft log batch appended");
        Ok(Some(PendingSync {
            file: handle,
            path,
            enabled: self.opts.force_sync,
            observer: self.sync_observer.clone(),
        }))
    }

    /// Removes every entry with index >= `index`, durably (a conflicting suffix written under
    /// an old leader). Purged entries are not affected: the cut is at `last_purged + 1` at
    /// the lowest.
    pub fn truncate_from(&mut self, index: u64) -> Result<(), StorageError> {
        let floor = self.last_purged.map_or(0, |p| p.0 + 1);
        let index = index.max(floor);
        if !matches!(self.last, Some(l) if index <= l.0) {
            return Ok(());
        }
        // Where the entries present begin, before segments disappear.
        let first = self.first_index();
        self.cut_dirty()?;
        // Newest first, so that a crash leaves a contiguous prefix of the log.
        let mut removed = false;
        while let Some(seg) = self.segments.last() {
            if seg.first_index < index {
                break;
            }
            self.active = None;
            std::fs::remove_file(&seg.path).at(&seg.path)?;
            tracing::debug!(segment = %seg.path.display(), "removed raft log segment (truncation)");
            self.segments.pop();
            removed = true;
        }
        if removed {
            sync_dir(&self.dir)?;
        }
        if let Some(seg) = self.segments.last() {
            if index < seg.next_index() {
                let offset = seg.offset_of(index);
                self.ensure_active()?;
                let file = self.active.as_ref().expect("just ensured");
                let seg = self.segments.last_mut().expect("checked above");
                // Cuts the zero fill too; later appends grow the file again.
                file.set_len(offset).at(&seg.path)?;
                file.sync_all().at(&seg.path)?;
                seg.offsets.truncate((index - seg.first_index) as usize);
                seg.end_offset = offset;
                seg.file_len = offset;
                seg.zero_fill.truncated(offset);
            }
        }
        while self.cache.back().is_some_and(|e| e.index >= index) {
            let e = self.cache.pop_back().expect("checked non-empty");
            self.cache_used_bytes -= cache_cost(&e);
        }
        self.last = if index > first {
            Some(self.read_one(index - 1)?.id())
        } else {
            None
        };
        tracing::debug!(from = index, last = ?self.last, "raft log truncated");
        Ok(())
    }

    /// Entries up to `index` are no longer needed (a snapshot covers them): records
    /// `(index, term, leader)` as last purged durably, then deletes whole segments that end
    /// at or before it. `index` may lie beyond the last entry (a snapshot received from the
    /// leader); the log is then empty and continues at `index + 1`. A purge at or below the
    /// current last purged index does nothing.
    pub fn purge_through(
        &mut self,
        index: u64,
        term: u64,
        leader: u64,
    ) -> Result<(), StorageError> {
        if self.last_purged.is_some_and(|p| index <= p.0) {
            return Ok(());
        }
        let id = (index, term, leader);
        // Recorded before any segment disappears: see the module documentation.
        write_blob(&self.dir, PURGED_FILE, &encode_log_id(id), true)?;
        self.last_purged = Some(id);
        let whole = self
            .segments
            .iter()
            .take_while(|s| s.next_index() <= index + 1)
            .count();
        if whole == self.segments.len() && whole > 0 {
            // The newest segment goes too, with any failed batch in it.
            self.active = None;
            self.dirty_from = None;
        }
        // Oldest first, so that a crash leaves a contiguous suffix.
        for seg in self.segments.drain(..whole) {
            std::fs::remove_file(&seg.path).at(&seg.path)?;
            tracing::debug!(segment = %seg.path.display(), "removed raft log segment (purge)");
        }
        if whole > 0 {
            sync_dir(&self.dir)?;
        }
        if self.last.is_some_and(|l| l.0 <= index) {
            self.last = None;
        }
        while self.cache.front().is_some_and(|e| e.index <= index) {
            let e = self.cache.pop_front().expect("checked non-empty");
            self.cache_used_bytes -= cache_cost(&e);
        }
        tracing::debug!(through = index, segments_removed = whole, "raft log purged");
        Ok(())
    }

    /// Entries in `[start, end)` that are present, in order: from the cache of recent
    /// entries where possible, else with one positioned read per segment touched.
    pub fn read_range(&mut self, start: u64, end: u64) -> Result<Vec<RaftEntry>, StorageError> {
        let Some(last) = self.last else {
            return Ok(Vec::new());
        };
        let start = start.max(self.first_index());
        let end = end.min(last.0 + 1);
        if start >= end {
            return Ok(Vec::new());
        }
        let mut out = Vec::with_capacity((end - start).min(4096) as usize);
        let cache_first = self.cache.front().map_or(end, |e| e.index);
        let disk_end = end.min(cache_first);
        if start < disk_end {
            self.read_from_segments(start, disk_end, &mut out)?;
        }
        let from = start.max(cache_first);
        if from < end {
            let skip = (from - cache_first) as usize;
            let take = (end - from) as usize;
            out.extend(self.cache.iter().skip(skip).take(take).cloned());
        }
        Ok(out)
    }

    /// Replaces the durable vote (temp file, fsync, rename, directory fsync).
    pub fn save_vote(&mut self, vote: &[u8]) -> Result<(), StorageError> {
        write_blob(&self.dir, VOTE_FILE, vote, true)?;
        self.vote = Some(vote.to_vec());
        Ok(())
    }

    pub fn read_vote(&self) -> Option<Vec<u8>> {
        self.vote.clone()
    }

    /// Replaces the committed id, atomically but without fsync: after a machine crash it may
    /// be an older value or absent, never a mix.
    pub fn save_committed(&mut self, committed: &[u8]) -> Result<(), StorageError> {
        write_blob(&self.dir, COMMITTED_FILE, committed, false)?;
        self.committed = Some(committed.to_vec());
        Ok(())
    }

    pub fn read_committed(&self) -> Option<Vec<u8>> {
        self.committed.clone()
    }

    /// One present entry (cache or disk).
    fn read_one(&mut self, index: u64) -> Result<RaftEntry, StorageError> {
        let mut v = Vec::with_capacity(1);
        if let Some(e) = self.cache.iter().rev().find(|e| e.index == index) {
            return Ok(e.clone());
        }
        self.read_from_segments(index, index + 1, &mut v)?;
        v.pop().ok_or_else(|| {
            StorageError::corrupt(
                &self.dir,
                0,
                format!("entry {index} missing from the index"),
            )
        })
    }

    fn read_from_segments(
        &mut self,
        start: u64,
        end: u64,
        out: &mut Vec<RaftEntry>,
    ) -> Result<(), StorageError> {
        let first_seg = self
            .segments
            .partition_point(|s| s.first_index <= start)
            .saturating_sub(1);
        let Some(newest) = self.segments.len().checked_sub(1) else {
            return Ok(());
        };
        self.ensure_active()?;
        for i in first_seg..self.segments.len() {
            let seg = &self.segments[i];
            let a = start.max(seg.first_index);
            let b = end.min(seg.next_index());
            if a >= b {
                if seg.first_index >= end {
                    break;
                }
                continue;
            }
            let (from, to) = (seg.offset_of(a), seg.offset_of(b));
            if i == newest {
                let file = self.active.as_ref().expect("just ensured");
                read_entries(&seg.path, file, from, to, a, out)?;
            } else {
                let file = File::open(&seg.path).at(&seg.path)?;
                read_entries(&seg.path, &file, from, to, a, out)?;
            }
        }
        Ok(())
    }

    /// Opens the newest segment's handle if it is not open yet. Callers then borrow
    /// `self.active` next to `self.segments`.
    fn ensure_active(&mut self) -> Result<(), StorageError> {
        if self.active.is_none() {
            let seg = self
                .segments
                .last()
                .expect("caller ensured a segment exists");
            let f = OpenOptions::new()
                .read(true)
                .write(true)
                .open(&seg.path)
                .at(&seg.path)?;
            self.active = Some(Arc::new(f));
        }
        Ok(())
    }

    /// Cuts a failed batch off the newest segment.
    fn cut_dirty(&mut self) -> Result<(), StorageError> {
        let Some(offset) = self.dirty_from else {
            return Ok(());
        };
        self.ensure_active()?;
        let file = self.active.as_ref().expect("just ensured");
        let seg = self
            .segments
            .last_mut()
            .expect("dirty_from implies a segment");
        file.set_len(offset).at(&seg.path)?;
        file.sync_all().at(&seg.path)?;
        seg.file_len = offset;
        seg.zero_fill.truncated(offset);
        self.dirty_from = None;
        Ok(())
    }

    /// Makes the newest segment the right place for a batch starting at `start`: reuses an
    /// empty one with that name, else rolls to a new segment when the newest is full.
    fn ensure_segment_for(&mut self, start: u64) -> Result<(), StorageError> {
        if let Some(seg) = self.segments.last() {
            if seg.offsets.is_empty() {
                if seg.first_index == start {
                    return Ok(());
                }
                // Left by a failed batch at an index that no longer comes next.
                self.active = None;
                std::fs::remove_file(&seg.path).at(&seg.path)?;
                self.segments.pop();
                sync_dir(&self.dir)?;
            } else if seg.end_offset < self.opts.segment_bytes {
                return Ok(());
            } else {
                self.finish_newest()?;
            }
        }
        let seg = self.create_segment(start)?;
        self.segments.push(seg);
        Ok(())
    }

    /// Makes the newest segment fully durable before it stops being the newest (so only the
    /// newest can ever have a torn tail), then trims its zero fill.
    fn finish_newest(&mut self) -> Result<(), StorageError> {
        self.ensure_active()?;
        let file = self.active.as_ref().expect("just ensured");
        let seg = self.segments.last_mut().expect("caller checked");
        file.sync_data().at(&seg.path)?;
        if seg.file_len > seg.end_offset {
            // Cosmetic: readers accept a zero tail anyway, so failure is only logged.
            match file.set_len(seg.end_offset).and_then(|_| file.sync_all()) {
                Ok(()) => seg.file_len = seg.end_offset,
                Err(e) => {
                    tracing::warn!(segment = %seg.path.display(), error = %e, "could not trim preallocated tail")
                }
            }
        }
        self.active = None;
        Ok(())
    }

    /// Creates `raftlog.<first>` atomically so a crash never leaves a partial header.
    fn create_segment(&mut self, first: u64) -> Result<Segment, StorageError> {
        let path = self.dir.join(raft_segment_name(first));
        let tmp = tmp_path(&path);
        let result = (|| {
            let mut file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(&tmp)
                .at(&tmp)?;
            file.write_all(&encode_segment_header(first)).at(&tmp)?;
            let file_len = self.opts.segment_bytes.max(RAFT_HEADER_BYTES);
            preallocate(&file, RAFT_HEADER_BYTES, file_len).at(&tmp)?;
            file.sync_all().at(&tmp)?;
            std::fs::rename(&tmp, &path).at(&path)?;
            sync_dir(&self.dir)?;
            Ok((file, file_len))
        })();
        match result {
            Ok((file, file_len)) => {
                tracing::debug!(segment = %path.display(), "started raft log segment");
                self.active = Some(Arc::new(file));
                Ok(Segment {
                    first_index: first,
                    path,
                    offsets: Vec::new(),
                    end_offset: RAFT_HEADER_BYTES,
                    file_len,
                    zero_fill: ZeroFill::new(RAFT_HEADER_BYTES),
                })
            }
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                Err(e)
            }
        }
    }

    fn cache_push(&mut self, e: RaftEntry) {
        self.cache_used_bytes += cache_cost(&e);
        self.cache.push_back(e);
        while self.cache_used_bytes > self.opts.cache_bytes {
            let Some(old) = self.cache.pop_front() else {
                break;
            };
            self.cache_used_bytes -= cache_cost(&old);
        }
    }
}

fn cache_cost(e: &RaftEntry) -> usize {
    e.payload.len() + CACHE_ENTRY_OVERHEAD_BYTES
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn appends_leave_the_space_ahead_written_not_merely_reserved() {
        let tmp = tempfile::tempdir().unwrap();
        let mut log = RaftLog::open(tmp.path(), RaftLogOptions::default()).unwrap();
        let entries: Vec<RaftEntry> = (1..=20)
            .map(|i| RaftEntry {
                index: i,
                term: 1,
                leader: 1,
                payload: Bytes::from(vec![i as u8; 300]),
            })
            .collect();
        log.append(&entries).unwrap();
        let seg = log.segments.last().expect("a segment");
        let file = File::open(&seg.path).unwrap();
        match crate::fsutil::fiemap::next_appends_hit_written_space(&file, seg.end_offset) {
            None => eprintln!("skipped: this filesystem makes no unwritten extents"),
            Some(written) => assert!(written, "the next appends would convert unwritten extents"),
        }
    }
}
