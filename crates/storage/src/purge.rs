//! Deleting old snapshots and the log segments only they needed.

use std::path::{Path, PathBuf};

use crate::error::{IoContext, StorageError};
use crate::format::{LOG_PREFIX, SNAP_PREFIX};
use crate::fsutil::{list_by_zxid, sync_dir};
use crate::recovery::first_needed_segment;
use crate::snapshot::validate_snapshot;

/// ZooKeeper refuses to keep fewer snapshots than this; so do we.
pub const MIN_SNAP_RETAIN_COUNT: usize = 3;

/// What [`purge`] deleted.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PurgeReport {
    pub removed_snapshots: Vec<PathBuf>,
    pub removed_segments: Vec<PathBuf>,
}

/// Keeps the newest `max(snap_retain_count, 3)` *valid* snapshots and every log segment
/// needed to replay from the oldest of them; deletes older snapshots (valid or not) and
/// older segments. Damaged snapshots newer than the oldest retained one are left alone.
///
/// With fewer valid snapshots than that, nothing is deleted: recovery may need to fall back
/// to the oldest state, which needs the whole log.
///
/// Safe to run while a [`crate::GroupCommitLog`] appends and a snapshot is being written:
/// the active segment and temp files are never touched.
pub fn purge(
    data_dir: &Path,
    log_dir: &Path,
    snap_retain_count: usize,
) -> Result<PurgeReport, StorageError> {
    let keep = snap_retain_count.max(MIN_SNAP_RETAIN_COUNT);
    let snapshots = list_by_zxid(data_dir, SNAP_PREFIX)?;
    let mut valid_seen = 0;
    let mut oldest_kept = None;
    for (zxid, path) in snapshots.iter().rev() {
        match validate_snapshot(path) {
            Ok(_) => {
                valid_seen += 1;
                if valid_seen == keep {
                    oldest_kept = Some(*zxid);
                    break;
                }
            }
            Err(StorageError::Corrupt { .. }) => continue,
            Err(e) => return Err(e),
        }
    }
    let mut report = PurgeReport::default();
    let Some(oldest_kept) = oldest_kept else {
        return Ok(report);
    };

    let segments = list_by_zxid(log_dir, LOG_PREFIX)?;
    let first_needed = first_needed_segment(&segments, oldest_kept);
    // first_needed_segment falls back to 0 when every segment starts later: keep them all.
    for (_, path) in &segments[..first_needed] {
        std::fs::remove_file(path).at(path)?;
        report.removed_segments.push(path.clone());
    }
    for (zxid, path) in &snapshots {
        if *zxid < oldest_kept {
            std::fs::remove_file(path).at(path)?;
            report.removed_snapshots.push(path.clone());
        }
    }
    if !report.removed_segments.is_empty() {
        sync_dir(log_dir)?;
    }
    if !report.removed_snapshots.is_empty() {
        sync_dir(data_dir)?;
    }
    tracing::info!(
        snapshots = report.removed_snapshots.len(),
        segments = report.removed_segments.len(),
        oldest_kept_zxid = oldest_kept,
        "purged old snapshots and log segments"
    );
    Ok(report)
}
