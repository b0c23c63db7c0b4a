//! Durable storage for Corral: the transaction log and snapshots.
//!
//! This crate is the only code in Corral that calls fsync. It stores opaque byte records
//! keyed by a strictly contiguous `zxid: i64` (each write txn of the server is one record);
//! the server encodes and decodes them.
//!
//! # Transaction log (`log_dir`)
//!
//! The log is a sequence of *segments* named `log.<zxid>`, where `<zxid>` is the zxid of
//! the segment's first record as 16 lowercase hex digits. All integers are big-endian.
//!
//! ```text
//! segment := header record* zero-fill?
//! header  := "CRLG" version:u32 (=1) first_zxid:i64          (16 bytes)
//! record  := len:u32 crc:u32 zxid:i64 payload:[u8; len - 8]
//!            len = 8 + payload length (so a real record never has len 0)
//!            crc = crc32c(zxid bytes || payload)
//! ```
//!
//! Segments are preallocated in chunks ([`LogOptions::prealloc_bytes`], via fallocate) so
//! appends do not change the file size and each batch costs one fdatasync; 128 KiB
//! ahead of the appends the reserved space is overwritten with zeros, so that fdatasync
//! does not also have to record unwritten blocks becoming written (`fsutil::ZeroFill`;
//! the Raft log does the same).
//! A zero length field followed only by zero bytes is the end of the log. A new segment is
//! started when the current one has reached [`LogOptions::segment_max_bytes`] (checked
//! between batches), on request ([`GroupCommitLog::roll`], e.g. after a snapshot), and
//! after every recovery. Segments are created atomically (temp file, header,
//! preallocation, fsync, rename, directory fsync). Before a segment stops being the newest
//! it is synced and its zero fill trimmed.
//!
//! # Snapshots (`data_dir`)
//!
//! ```text
//! snapshot.<zxid> := "CRSN" version:u32 (=1) zxid:i64 payload crc:u32
//!                    crc = crc32c(header || payload)
//! ```
//!
//! Written to `snapshot.<zxid>.tmp`, fsynced, renamed, directory fsynced
//! ([`SnapshotWriter`], [`write_snapshot`]). A snapshot at zxid Z contains every txn up to
//! and including Z.
//!
//! # Invariants
//!
//! * Zxids in the log increase by exactly 1, within and across segments; the first record
//!   of `log.<z>` has zxid `z`.
//! * Only the newest segment may end in a *torn tail* (damaged bytes after the last valid
//!   record and no valid record after them). Recovery truncates it with a warning. Any other
//!   damage (a bad record followed by a valid one, damage in an older segment, a gap) is an
//!   error naming file and offset, never silently skipped.
//! * A record is reported durable only after the fdatasync of its batch (unless
//!   `force_sync` is off). A failed batch is cut off the file before anything else is
//!   written, so the log never contains a fragment of it.
//! * Recovery replays from the newest valid snapshot; it falls back to an older one only if
//!   the log reaches at least the zxid of every newer (damaged) snapshot.
//! * Purge keeps at least [`MIN_SNAP_RETAIN_COUNT`] valid snapshots and all segments
//!   needed to replay from the oldest of them.
//!
//! # Raft log
//!
//! [`RaftLog`] stores the entries of the replicated ensemble (index, term, leader, opaque
//! payload), the vote and the purge point, in its own directory with its own segment format
//! (same framing ideas: CRC32C per record, preallocation, torn tail vs corruption). Its
//! format and crash-safety argument are in the [`raft_log`] module documentation.
//!
//! # Use
//!
//! ```no_run
//! # fn main() -> Result<(), corral_storage::StorageError> {
//! use std::path::Path;
//! let rec = corral_storage::recover(Path::new("data"), Path::new("log"))?;
//! // load rec.snapshot, apply rec.txns ...
//! let log = corral_storage::GroupCommitLog::start(
//!     rec.writer,
//!     corral_storage::LogOptions::default(),
//!     Box::new(|durable| { /* forward Ok(zxid) / Err(e) to the server */ let _ = durable; }),
//! )?;
//! log.submit(rec.last_zxid + 1, b"txn".to_vec())?;
//! # Ok(()) }
//! ```

mod error;
mod format;
mod fsutil;
mod group;
mod inspect;
mod lock;
mod purge;
mod raft_inspect;
pub mod raft_log;
mod raft_meta;
mod raft_segment;
mod recovery;
mod scan;
mod snapshot;
mod writer;

pub use error::StorageError;
pub use format::{log_file_name, snapshot_file_name, MAX_PAYLOAD_BYTES, SNAP_HEADER_BYTES};
pub use fsutil::{move_files_durably, replace_file_durably};
pub use group::{DurableCallback, GroupCommitLog, LogStats};
pub use inspect::{list_logs, list_snapshots, verify, SegmentInfo, SnapshotInfo, VerifyReport};
pub use lock::{DirLock, LOCK_FILE_NAME};
pub use purge::{purge, PurgeReport, MIN_SNAP_RETAIN_COUNT};
pub use raft_inspect::{inspect_raft_log, read_raft_segment, RaftLogInfo, RaftSegmentInfo};
pub use raft_log::{PendingSync, RaftEntry, RaftLog, RaftLogId, RaftLogOptions};
pub use raft_segment::raft_segment_name;
pub use recovery::{recover, Recovered};
pub use scan::{LogIter, LogRecord, SegmentScan, Tail};
pub use snapshot::{read_snapshot, write_snapshot, SnapshotFile, SnapshotReader, SnapshotWriter};
pub use writer::{LogOptions, LogWriter, SyncObserver};
