//! Read-only inspection for `corral datadir`: listing, verification, dumping. Nothing here
//! modifies files (a torn tail is reported, not repaired).

use std::path::{Path, PathBuf};

use crate::error::StorageError;
use crate::format::{LOG_PREFIX, SNAP_PREFIX};
use crate::fsutil::list_by_zxid;
use crate::scan::{SegmentReader, Tail};
use crate::snapshot::validate_snapshot;

#[derive(Debug, Clone)]
pub struct SnapshotInfo {
    pub path: PathBuf,
    pub zxid: i64,
    pub size_bytes: u64,
    /// `None` = header and CRC are fine.
    pub problem: Option<StorageError>,
}

impl SnapshotInfo {
    pub fn is_valid(&self) -> bool {
        self.problem.is_none()
    }
}

#[derive(Debug, Clone)]
pub struct SegmentInfo {
    pub path: PathBuf,
    /// Zxid in the file name.
    pub start_zxid: i64,
    pub first_zxid: Option<i64>,
    pub last_zxid: Option<i64>,
    pub size_bytes: u64,
    /// Valid records (up to the first problem, if any).
    pub record_count: u64,
    /// Offset after the last valid record.
    pub end_offset: u64,
    /// Torn tail (newest segment only; recovery truncates it).
    pub torn_tail_offset: Option<u64>,
    /// `None` = every record is intact.
    pub problem: Option<StorageError>,
}

impl SegmentInfo {
    pub fn is_valid(&self) -> bool {
        self.problem.is_none()
    }
}

/// All snapshots in `data_dir`, oldest first, each fully CRC-checked.
pub fn list_snapshots(data_dir: &Path) -> Result<Vec<SnapshotInfo>, StorageError> {
    let mut out = Vec::new();
    for (zxid, path) in list_by_zxid(data_dir, SNAP_PREFIX)? {
        let size_bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        let problem = validate_snapshot(&path).err();
        out.push(SnapshotInfo {
            path,
            zxid,
            size_bytes,
            problem,
        });
    }
    Ok(out)
}

/// All log segments in `log_dir`, oldest first, each fully read.
pub fn list_logs(log_dir: &Path) -> Result<Vec<SegmentInfo>, StorageError> {
    let segments = list_by_zxid(log_dir, LOG_PREFIX)?;
    let newest = segments.len().saturating_sub(1);
    let mut out = Vec::new();
    for (idx, (start_zxid, path)) in segments.into_iter().enumerate() {
        let size_bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        let mut info = SegmentInfo {
            path: path.clone(),
            start_zxid,
            first_zxid: None,
            last_zxid: None,
            size_bytes,
            record_count: 0,
            end_offset: 0,
            torn_tail_offset: None,
            problem: None,
        };
        match SegmentReader::open(&path, idx == newest) {
            Err(e) => info.problem = Some(e),
            Ok(mut r) => {
                let result = loop {
                    match r.next_record() {
                        Ok(Some(_)) => {}
                        Ok(None) => break Ok(()),
                        Err(e) => break Err(e),
                    }
                };
                let s = r.summary();
                info.first_zxid = s.first_zxid;
                info.last_zxid = s.last_zxid;
                info.record_count = s.record_count;
                info.end_offset = s.end_offset;
                if let (Ok(()), Tail::Torn { offset, .. }) = (&result, &s.tail) {
                    info.torn_tail_offset = Some(*offset);
                }
                info.problem = result.err();
            }
        }
        out.push(info);
    }
    Ok(out)
}

/// Outcome of a successful [`verify`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    pub snapshots: usize,
    pub segments: usize,
    pub records: u64,
    /// A torn tail in the newest segment: not an error (recovery repairs it).
    pub torn_tail: Option<(PathBuf, u64)>,
}

/// Checks every snapshot CRC, every record CRC and zxid continuity between consecutive
/// segments. Returns the first problem found (naming file and offset).
pub fn verify(data_dir: &Path, log_dir: &Path) -> Result<VerifyReport, StorageError> {
    let snaps = list_snapshots(data_dir)?;
    for s in &snaps {
        if let Some(p) = &s.problem {
            return Err(p.clone());
        }
    }
    let segs = list_logs(log_dir)?;
    let mut records = 0;
    let mut prev_last: Option<i64> = None;
    let mut torn_tail = None;
    for s in &segs {
        if let Some(p) = &s.problem {
            return Err(p.clone());
        }
        if let (Some(prev), Some(first)) = (prev_last, s.first_zxid) {
            if first != prev + 1 {
                return Err(StorageError::Gap {
                    file: s.path.clone(),
                    offset: crate::format::LOG_HEADER_BYTES,
                    expected: prev + 1,
                    found: first,
                });
            }
        }
        if s.last_zxid.is_some() {
            prev_last = s.last_zxid;
        }
        if let Some(off) = s.torn_tail_offset {
            torn_tail = Some((s.path.clone(), off));
        }
        records += s.record_count;
    }
    Ok(VerifyReport {
        snapshots: snaps.len(),
        segments: segs.len(),
        records,
        torn_tail,
    })
}
