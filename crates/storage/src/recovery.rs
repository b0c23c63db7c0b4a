//! Startup recovery: choose a snapshot, replay the log after it, repair a torn tail.

use std::path::{Path, PathBuf};

use crate::error::{IoContext, StorageError};
use crate::format::{LOG_PREFIX, SNAP_PREFIX};
use crate::fsutil::{list_by_zxid, list_tmp, sync_dir};
use crate::scan::{scan_segment, SegmentScan, Tail};
use crate::snapshot::{validate_snapshot, SnapshotFile};
use crate::writer::LogWriter;

/// Result of [`recover`].
pub struct Recovered {
    /// Snapshot to load first; `None` = start from the empty state at zxid 0.
    pub snapshot: Option<SnapshotFile>,
    /// Every logged txn after the snapshot, in order, contiguous.
    pub txns: Vec<(i64, Vec<u8>)>,
    /// Zxid of the recovered state (last txn, or the snapshot's zxid if no txn follows it).
    pub last_zxid: i64,
    /// Appender positioned after the last valid record; the next record must be
    /// `last_zxid + 1`. It starts a new segment on its first commit.
    pub writer: LogWriter,
    /// Snapshots newer than the chosen one that failed validation, with the reason.
    pub damaged_snapshots: Vec<(PathBuf, StorageError)>,
    /// Torn tail that was cut off: (segment, offset it was truncated to).
    pub truncated_tail: Option<(PathBuf, u64)>,
}

struct Replay {
    txns: Vec<(i64, Vec<u8>)>,
    last_log_zxid: Option<i64>,
    /// Newest segment and how it was read, if any segment was read.
    newest: Option<(PathBuf, SegmentScan)>,
}

/// Recovers the state from `data_dir` (snapshots) and `log_dir` (txn log); both are created
/// if missing.
///
/// * The newest snapshot that passes validation is used. If newer snapshots are damaged,
///   the older one is accepted only if the log continues from it at least up to the zxid of
///   every damaged snapshot; otherwise [`StorageError::Unrecoverable`].
/// * Log records after the snapshot must be contiguous ([`StorageError::Gap`] otherwise).
/// * A torn tail of the newest segment is truncated (logged with `warn!`); damage anywhere
///   else is [`StorageError::Corrupt`].
/// * Leftover temp files of interrupted snapshot/segment creation are removed.
pub fn recover(data_dir: &Path, log_dir: &Path) -> Result<Recovered, StorageError> {
    std::fs::create_dir_all(data_dir).at(data_dir)?;
    std::fs::create_dir_all(log_dir).at(log_dir)?;
    remove_tmp_files(data_dir, SNAP_PREFIX)?;
    remove_tmp_files(log_dir, LOG_PREFIX)?;

    let snapshots = list_by_zxid(data_dir, SNAP_PREFIX)?;
    let segments = list_by_zxid(log_dir, LOG_PREFIX)?;

    let mut damaged = Vec::new();
    let mut base = None;
    for (zxid, path) in snapshots.iter().rev() {
        match validate_snapshot(path) {
            Ok(_) => {
                base = Some(SnapshotFile {
                    zxid: *zxid,
                    path: path.clone(),
                });
                break;
            }
            Err(e @ StorageError::Corrupt { .. }) => {
                tracing::warn!(snapshot = %path.display(), error = %e, "damaged snapshot, trying an older one");
                damaged.push((path.clone(), e));
            }
            Err(e) => return Err(e),
        }
    }
    let base_zxid = base.as_ref().map_or(0, |s| s.zxid);
    let replay = replay_logs(&segments, base_zxid)?;
    let last_zxid = replay.last_log_zxid.map_or(base_zxid, |l| l.max(base_zxid));

    // Everything a damaged snapshot contained must be reproducible from the log.
    if let Some((path, _)) = damaged.first() {
        let needed = crate::format::parse_name(path, SNAP_PREFIX).unwrap_or(i64::MAX);
        if last_zxid < needed {
            let from = match &base {
                Some(s) => format!("older snapshot {}", s.path.display()),
                None => "the empty state (no valid snapshot)".to_string(),
            };
            return Err(StorageError::Unrecoverable(format!(
                "snapshot {} is damaged ({}); falling back to {from} would recover only up to \
                 zxid {last_zxid:#x} because the log does not cover up to {needed:#x}",
                path.display(),
                damaged[0].1
            )));
        }
    }

    // Repairs happen only once recovery is known to succeed.
    let mut truncated_tail = None;
    if let Some((path, scan)) = &replay.newest {
        if let Tail::Torn { offset, reason } = &scan.tail {
            tracing::warn!(
                segment = %path.display(),
                offset,
                reason = %reason,
                "truncating torn tail of the txn log (crash during append)"
            );
            truncated_tail = Some((path.clone(), *offset));
        }
        if scan.record_count == 0 {
            // Nothing valid in it; the writer starts a fresh segment named after the next zxid.
            std::fs::remove_file(path).at(path)?;
            sync_dir(log_dir)?;
        } else if scan.end_offset < scan.file_len {
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(path)
                .at(path)?;
            f.set_len(scan.end_offset).at(path)?;
            f.sync_all().at(path)?;
        }
    }

    tracing::info!(
        snapshot = ?base.as_ref().map(|s| s.zxid),
        txns = replay.txns.len(),
        last_zxid,
        "storage recovered"
    );
    Ok(Recovered {
        snapshot: base,
        txns: replay.txns,
        last_zxid,
        writer: LogWriter::new(log_dir, last_zxid),
        damaged_snapshots: damaged,
        truncated_tail,
    })
}

fn remove_tmp_files(dir: &Path, prefix: &str) -> Result<(), StorageError> {
    let tmps = list_tmp(dir, prefix)?;
    for t in &tmps {
        tracing::info!(file = %t.display(), "removing leftover temp file");
        std::fs::remove_file(t).at(t)?;
    }
    if !tmps.is_empty() {
        sync_dir(dir)?;
    }
    Ok(())
}

/// Index of the first segment needed to replay everything after `base_zxid`: the last one
/// starting at or before `base_zxid + 1` (earlier ones hold only older records).
pub(crate) fn first_needed_segment(segments: &[(i64, PathBuf)], base_zxid: i64) -> usize {
    segments
        .iter()
        .rposition(|(start, _)| *start <= base_zxid + 1)
        .unwrap_or(0)
}

fn replay_logs(segments: &[(i64, PathBuf)], base_zxid: i64) -> Result<Replay, StorageError> {
    let mut replay = Replay {
        txns: Vec::new(),
        last_log_zxid: None,
        newest: None,
    };
    if segments.is_empty() {
        return Ok(replay);
    }
    let first = first_needed_segment(segments, base_zxid);
    let newest_idx = segments.len() - 1;
    let mut last: Option<i64> = None;
    for (idx, (_, path)) in segments.iter().enumerate().skip(first) {
        let scan = scan_segment(path, idx == newest_idx, |rec| {
            // Within a segment the reader enforces +1 steps; here the links between
            // segments and to the snapshot are checked.
            let expected = match last {
                Some(l) => Some(l + 1),
                None if rec.zxid > base_zxid + 1 => Some(base_zxid + 1),
                None => None,
            };
            if let Some(expected) = expected {
                if rec.zxid != expected {
                    return Err(StorageError::Gap {
                        file: path.clone(),
                        offset: rec.offset,
                        expected,
                        found: rec.zxid,
                    });
                }
            }
            last = Some(rec.zxid);
            if rec.zxid > base_zxid {
                replay.txns.push((rec.zxid, rec.payload));
            }
            Ok(())
        })?;
        if idx == newest_idx {
            replay.newest = Some((path.clone(), scan));
        }
    }
    replay.last_log_zxid = last;
    Ok(replay)
}
