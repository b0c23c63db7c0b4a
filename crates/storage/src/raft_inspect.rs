//! Read-only inspection of a Raft log directory for `corral datadir`. Nothing here modifies
//! files: a torn tail or an interrupted purge is reported, not repaired.

use std::path::{Path, PathBuf};

use crate::error::StorageError;
use crate::raft_log::{RaftEntry, RaftLogId};
use crate::raft_meta::{decode_log_id, read_blob, COMMITTED_FILE, PURGED_FILE, VOTE_FILE};
use crate::raft_segment::{list_segments, scan_segment};
use crate::scan::Tail;

/// One segment of a Raft log, as far as it could be read.
#[derive(Debug, Clone)]
pub struct RaftSegmentInfo {
    pub path: PathBuf,
    /// Index in the file name (that of its first entry).
    pub start_index: u64,
    /// (index, term, leader) of the first and last valid entries.
    pub first: Option<RaftLogId>,
    pub last: Option<RaftLogId>,
    pub record_count: u64,
    pub size_bytes: u64,
    /// Offset after the last valid entry.
    pub end_offset: u64,
    /// Torn tail (newest segment only; opening the log cuts it off).
    pub torn_tail_offset: Option<u64>,
    /// `None` = every record is intact.
    pub problem: Option<StorageError>,
}

/// Everything in a Raft log directory.
#[derive(Debug, Clone)]
pub struct RaftLogInfo {
    pub dir: PathBuf,
    /// Oldest first.
    pub segments: Vec<RaftSegmentInfo>,
    pub vote: Option<Vec<u8>>,
    pub committed: Option<Vec<u8>>,
    pub last_purged: Option<RaftLogId>,
    /// Damage outside the segments' records: unreadable blobs, gaps between segments.
    pub problems: Vec<StorageError>,
}

impl RaftLogInfo {
    /// The first problem found anywhere (blobs first, then segments in order).
    pub fn first_problem(&self) -> Option<&StorageError> {
        self.problems
            .first()
            .or_else(|| self.segments.iter().find_map(|s| s.problem.as_ref()))
    }

    /// Entries held in segments (including purged ones not yet deleted).
    pub fn record_count(&self) -> u64 {
        self.segments.iter().map(|s| s.record_count).sum()
    }
}

/// Reads every segment and blob of the Raft log in `dir`. Damage is reported inside the
/// result; `Err` only when the directory cannot be listed.
pub fn inspect_raft_log(dir: &Path) -> Result<RaftLogInfo, StorageError> {
    let mut info = RaftLogInfo {
        dir: dir.to_path_buf(),
        segments: Vec::new(),
        vote: None,
        committed: None,
        last_purged: None,
        problems: Vec::new(),
    };
    match read_blob(dir, VOTE_FILE) {
        Ok(v) => info.vote = v,
        Err(e) => info.problems.push(e),
    }
    match read_blob(dir, COMMITTED_FILE) {
        Ok(v) => info.committed = v,
        Err(e) => info.problems.push(e),
    }
    match read_blob(dir, PURGED_FILE)
        .and_then(|b| b.map(|b| decode_log_id(dir, PURGED_FILE, &b)).transpose())
    {
        Ok(p) => info.last_purged = p,
        Err(e) => info.problems.push(e),
    }
    let listed = list_segments(dir)?;
    let newest = listed.len().saturating_sub(1);
    let mut expected_next: Option<u64> = None;
    for (i, (start_index, path)) in listed.into_iter().enumerate() {
        let size_bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        let mut seg = RaftSegmentInfo {
            path: path.clone(),
            start_index,
            first: None,
            last: None,
            record_count: 0,
            size_bytes,
            end_offset: 0,
            torn_tail_offset: None,
            problem: None,
        };
        if let Some(exp) = expected_next {
            if start_index != exp {
                info.problems.push(StorageError::corrupt(
                    &path,
                    0,
                    format!("segment starts at index {start_index}, expected {exp}"),
                ));
            }
        }
        // Counted while visiting, so a damaged segment still shows what precedes the damage.
        let result = scan_segment(&path, i == newest, |_, e| {
            seg.first.get_or_insert((e.index, e.term, e.leader));
            seg.last = Some((e.index, e.term, e.leader));
            seg.record_count += 1;
        });
        match result {
            Ok(scan) => {
                seg.end_offset = scan.end_offset;
                if let Tail::Torn { offset, .. } = scan.tail {
                    seg.torn_tail_offset = Some(offset);
                }
                expected_next = Some(start_index + seg.record_count);
            }
            Err(e) => {
                seg.problem = Some(e);
                expected_next = None;
            }
        }
        info.segments.push(seg);
    }
    Ok(info)
}

/// Every valid entry of one segment, in order, for dumping. Tolerates a torn tail; any
/// other damage is an error naming file and offset.
pub fn read_raft_segment(path: &Path) -> Result<Vec<RaftEntry>, StorageError> {
    let mut out = Vec::new();
    scan_segment(path, true, |_, e| out.push(e))?;
    Ok(out)
}
