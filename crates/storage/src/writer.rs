//! Synchronous segment appender. [`crate::GroupCommitLog`] drives one from its thread; it
//! can also be used directly (append, append, ..., commit).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::{IoContext, StorageError};
use crate::format::{
    encode_log_header, encode_record, log_file_name, LOG_HEADER_BYTES, MAX_PAYLOAD_BYTES,
    TMP_SUFFIX,
};
use crate::fsutil::{preallocate, sync_dir, ZeroFill};

/// Told how long each successful fdatasync of appended records took. Storage only measures;
/// what is done with the figure (metrics) is the caller's business. Called on the thread
/// that syncs, right after the call returns, so it must be quick.
pub type SyncObserver = Arc<dyn Fn(Duration) + Send + Sync>;

/// Tuning of the transaction log.
#[derive(Debug, Clone)]
pub struct LogOptions {
    /// A new segment is started before the first batch that would begin at or beyond this
    /// size. A single batch is never split across segments, so a segment can exceed the
    /// limit by up to one batch.
    pub segment_max_bytes: u64,
    /// Segments grow in zero-filled chunks of this size (0 = no preallocation: every append
    /// grows the file and each sync also writes the new size).
    pub prealloc_bytes: u64,
    /// false = never fdatasync after a batch (ZooKeeper's `forceSync=no`): a machine crash
    /// may lose acknowledged txns. Segments are still synced once when they are rolled.
    pub force_sync: bool,
    /// Capacity of the group-commit submission queue (records not yet taken by the thread).
    pub queue_capacity: usize,
}

impl Default for LogOptions {
    fn default() -> Self {
        LogOptions {
            segment_max_bytes: 64 * 1024 * 1024,
            prealloc_bytes: 64 * 1024 * 1024,
            force_sync: true,
            queue_capacity: 16 * 1024,
        }
    }
}

struct ActiveSegment {
    path: PathBuf,
    file: File,
    start_zxid: i64,
    /// End of the last durable record.
    write_offset: u64,
    /// Current file length (header + records + zero fill).
    allocated: u64,
    records: u64,
    /// Keeps appends out of fallocated-but-unwritten blocks.
    zero_fill: ZeroFill,
}

/// Appends records to the newest segment of a log directory. Obtained from
/// [`crate::recover`], which guarantees it continues right after the last valid record.
///
/// Records are buffered by [`append`](Self::append) and written, with one fdatasync, by
/// [`commit`](Self::commit). A failed commit leaves the log exactly as it was before the
/// batch (the partial write is truncated away) and rewinds the expected zxid to
/// `last_zxid() + 1`.
pub struct LogWriter {
    dir: PathBuf,
    opts: LogOptions,
    current: Option<ActiveSegment>,
    /// Last zxid that is written (and synced when `force_sync`).
    durable_zxid: i64,
    /// Next zxid `append` accepts (durable + buffered + 1).
    next_zxid: i64,
    pending: Vec<u8>,
    pending_first: Option<i64>,
    pending_count: u64,
    roll_pending: bool,
    /// After a failed write: the current segment must be cut back to this offset before
    /// anything else is written, so no fragment of the failed batch survives.
    dirty_from: Option<u64>,
    syncs: Arc<AtomicU64>,
    sync_observer: Option<SyncObserver>,
}

impl LogWriter {
    pub(crate) fn new(dir: &Path, last_zxid: i64) -> Self {
        LogWriter {
            dir: dir.to_path_buf(),
            opts: LogOptions::default(),
            current: None,
            durable_zxid: last_zxid,
            next_zxid: last_zxid + 1,
            pending: Vec::new(),
            pending_first: None,
            pending_count: 0,
            roll_pending: false,
            dirty_from: None,
            syncs: Arc::new(AtomicU64::new(0)),
            sync_observer: None,
        }
    }

    /// Reports the duration of every successful batch fdatasync to `observer` (it runs on
    /// the thread that commits, so it must be quick).
    pub fn set_sync_observer(&mut self, observer: SyncObserver) {
        self.sync_observer = Some(observer);
    }

    pub fn set_options(&mut self, opts: LogOptions) {
        self.opts = opts;
    }

    pub fn options(&self) -> &LogOptions {
        &self.opts
    }

    /// Last zxid that has been committed.
    pub fn last_zxid(&self) -> i64 {
        self.durable_zxid
    }

    /// The zxid the next `append` must carry.
    pub fn next_zxid(&self) -> i64 {
        self.next_zxid
    }

    /// Number of fdatasync calls made for batches (tests use this to observe batching).
    pub fn sync_count(&self) -> u64 {
        self.syncs.load(Ordering::Relaxed)
    }

    pub(crate) fn sync_counter(&self) -> Arc<AtomicU64> {
        self.syncs.clone()
    }

    /// The segment currently appended to, if one has been opened since recovery.
    pub fn current_segment(&self) -> Option<&Path> {
        self.current.as_ref().map(|s| s.path.as_path())
    }

    /// Buffers one record. It must carry exactly `next_zxid()`.
    pub fn append(&mut self, zxid: i64, payload: &[u8]) -> Result<(), StorageError> {
        if payload.len() > MAX_PAYLOAD_BYTES {
            return Err(StorageError::RecordTooLarge {
                len: payload.len(),
                max: MAX_PAYLOAD_BYTES,
            });
        }
        if zxid != self.next_zxid {
            return Err(StorageError::OutOfSequence {
                expected: self.next_zxid,
                got: zxid,
            });
        }
        encode_record(&mut self.pending, zxid, payload);
        self.pending_first.get_or_insert(zxid);
        self.pending_count += 1;
        self.next_zxid += 1;
        Ok(())
    }

    /// Starts a new segment with the next committed record (e.g. after a snapshot, so old
    /// segments become purgeable).
    pub fn roll(&mut self) {
        self.roll_pending = true;
    }

    /// Writes the buffered records and (with `force_sync`) fdatasyncs once. Returns the last
    /// committed zxid, or `None` if nothing was buffered.
    pub fn commit(&mut self) -> Result<Option<i64>, StorageError> {
        let Some(first) = self.pending_first else {
            return Ok(None);
        };
        let result = self.write_pending(first);
        self.pending.clear();
        self.pending_first = None;
        let count = std::mem::take(&mut self.pending_count);
        match result {
            Ok(()) => {
                self.durable_zxid = self.next_zxid - 1;
                tracing::trace!(
                    records = count,
                    last_zxid = self.durable_zxid,
                    "log batch committed"
                );
                Ok(Some(self.durable_zxid))
            }
            Err(e) => {
                self.next_zxid = self.durable_zxid + 1;
                tracing::warn!(error = %e, records = count, "log batch failed; log rewound to zxid {:#x}", self.durable_zxid);
                Err(e)
            }
        }
    }

    /// Syncs and trims the active segment (its preallocated tail). Called on clean shutdown;
    /// not required for correctness.
    pub fn close(mut self) -> Result<(), StorageError> {
        if let (Some(off), Some(seg)) = (self.dirty_from.take(), self.current.as_mut()) {
            // A failed batch may have left bytes after the last durable record; cut them now
            // rather than leave them for recovery to report as a torn tail.
            seg.file.set_len(off).at(&seg.path)?;
            seg.write_offset = off;
            seg.allocated = off;
        }
        if let Some(seg) = self.current.take() {
            self.finish_segment(seg)?;
        }
        Ok(())
    }

    fn write_pending(&mut self, first: i64) -> Result<(), StorageError> {
        if let Some(off) = self.dirty_from {
            let seg = self.current.as_mut().expect("dirty_from implies a segment");
            seg.file.set_len(off).at(&seg.path)?;
            seg.file.sync_all().at(&seg.path)?;
            seg.write_offset = off;
            seg.allocated = off;
            seg.zero_fill.truncated(off);
            self.dirty_from = None;
        }
        let need_new = match &self.current {
            None => true,
            // A segment left empty by a failed batch is reused: its name is still right.
            Some(s) if s.records == 0 && s.start_zxid == first => false,
            Some(s) => self.roll_pending || s.write_offset >= self.opts.segment_max_bytes,
        };
        if need_new {
            if let Some(old) = self.current.take() {
                if let Err(e) = self.finish_segment_ref(&old) {
                    self.current = Some(old);
                    return Err(e);
                }
            }
            self.current = Some(self.create_segment(first)?);
            self.roll_pending = false;
        }
        let opts = self.opts.clone();
        let seg = self.current.as_mut().expect("segment just ensured");
        let end = seg.write_offset + self.pending.len() as u64;
        if end > seg.allocated && opts.prealloc_bytes > 0 {
            let target = alloc_target(end, opts.prealloc_bytes, opts.segment_max_bytes);
            preallocate(&seg.file, seg.allocated, target).at(&seg.path)?;
            seg.allocated = target;
        }
        seg.zero_fill
            .before_write(&seg.file, &seg.path, end, seg.allocated);
        if let Err(e) = seg.file.write_all_at(&self.pending, seg.write_offset) {
            self.dirty_from = Some(seg.write_offset);
            return Err(StorageError::io(&seg.path, e));
        }
        if opts.force_sync {
            let started = Instant::now();
            if let Err(e) = seg.file.sync_data() {
                // After a failed fdatasync the page cache state is unknown; cutting the file
                // back and rewriting is the only safe continuation.
                self.dirty_from = Some(seg.write_offset);
                return Err(StorageError::io(&seg.path, e));
            }
            self.syncs.fetch_add(1, Ordering::Relaxed);
            if let Some(observe) = &self.sync_observer {
                observe(started.elapsed());
            }
        }
        seg.write_offset = end;
        seg.allocated = seg.allocated.max(end);
        seg.records += self.pending_count;
        Ok(())
    }

    /// Creates `log.<first>` atomically (temp file, header, preallocation, fsync, rename,
    /// directory fsync) so a crash never leaves a segment with a partial header.
    fn create_segment(&self, first: i64) -> Result<ActiveSegment, StorageError> {
        let path = self.dir.join(log_file_name(first));
        if path.exists() {
            return Err(StorageError::io(
                &path,
                std::io::Error::new(
                    std::io::ErrorKind::AlreadyExists,
                    "segment for this zxid already exists",
                ),
            ));
        }
        let tmp = tmp_path(&path);
        let result = (|| {
            let mut file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(&tmp)
                .at(&tmp)?;
            file.write_all(&encode_log_header(first)).at(&tmp)?;
            let mut allocated = LOG_HEADER_BYTES;
            if self.opts.prealloc_bytes > 0 {
                let end = LOG_HEADER_BYTES + self.pending.len() as u64;
                let target =
                    alloc_target(end, self.opts.prealloc_bytes, self.opts.segment_max_bytes);
                preallocate(&file, allocated, target).at(&tmp)?;
                allocated = target;
            }
            file.sync_all().at(&tmp)?;
            std::fs::rename(&tmp, &path).at(&path)?;
            sync_dir(&self.dir)?;
            Ok(ActiveSegment {
                path: path.clone(),
                file,
                start_zxid: first,
                write_offset: LOG_HEADER_BYTES,
                allocated,
                records: 0,
                zero_fill: ZeroFill::new(LOG_HEADER_BYTES),
            })
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        if result.is_ok() {
            tracing::debug!(segment = %path.display(), "started log segment");
        }
        result
    }

    fn finish_segment(&mut self, seg: ActiveSegment) -> Result<(), StorageError> {
        self.finish_segment_ref(&seg)
    }

    /// Makes a segment that is about to stop being the newest fully durable, so that only
    /// the newest segment can ever have a torn tail, then trims its zero fill.
    fn finish_segment_ref(&self, seg: &ActiveSegment) -> Result<(), StorageError> {
        seg.file.sync_data().at(&seg.path)?;
        if seg.allocated > seg.write_offset {
            // Cosmetic: readers accept a zero tail anyway, so failure is only logged.
            if let Err(e) = seg
                .file
                .set_len(seg.write_offset)
                .and_then(|_| seg.file.sync_all())
            {
                tracing::warn!(segment = %seg.path.display(), error = %e, "could not trim preallocated tail");
            }
        }
        Ok(())
    }
}

/// How far to preallocate so that `end` fits: whole chunks, but not past the segment limit
/// unless the batch itself goes past it.
fn alloc_target(end: u64, chunk: u64, segment_max_bytes: u64) -> u64 {
    let rounded = end.div_ceil(chunk) * chunk;
    if end <= segment_max_bytes {
        rounded.min(segment_max_bytes.max(end))
    } else {
        end
    }
}

pub(crate) fn tmp_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(TMP_SUFFIX);
    PathBuf::from(s)
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn commits_leave_the_space_ahead_written_not_merely_reserved() {
        let tmp = tempfile::tempdir().unwrap();
        let mut log = LogWriter::new(tmp.path(), 0);
        for zxid in 1..=20 {
            log.append(zxid, &[zxid as u8; 300]).unwrap();
        }
        log.commit().unwrap();
        let seg = log.current.as_ref().expect("a segment");
        match crate::fsutil::fiemap::next_appends_hit_written_space(&seg.file, seg.write_offset) {
            None => eprintln!("skipped: this filesystem makes no unwritten extents"),
            Some(written) => assert!(written, "the next appends would convert unwritten extents"),
        }
    }
}
