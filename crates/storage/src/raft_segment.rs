//! On-disk format of Raft log segments: naming, framing, whole-segment scans (which tell a
//! torn tail from corruption) and positioned reads of entry ranges. The layout is described
//! in the [`crate::raft_log`] module documentation.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use bytes::Bytes;

use crate::error::{IoContext, StorageError};
use crate::format::{decode_header, FORMAT_VERSION, MAX_PAYLOAD_BYTES};
use crate::raft_log::RaftEntry;
use crate::scan::Tail;

/// Magic at the start of every Raft log segment (distinct from the txn log's `CRLG`).
pub const RAFT_LOG_MAGIC: [u8; 4] = *b"CRRL";
/// Segment header: magic, version, index of the first entry (== the name).
pub const RAFT_HEADER_BYTES: u64 = 16;
/// Frame header: len, crc, index, term, leader.
pub const RAFT_FRAME_HEADER_BYTES: u64 = 32;
/// Bytes counted by the length field besides the payload: index, term, leader.
const KEY_BYTES: usize = 24;
pub const RAFT_SEGMENT_PREFIX: &str = "raftlog.";

/// Name of the segment whose first entry has index `first_index`.
pub fn raft_segment_name(first_index: u64) -> String {
    format!("{RAFT_SEGMENT_PREFIX}{first_index:016x}")
}

/// Parses `raftlog.<16 hex digits>`; anything else (temp files, blobs) is `None`.
pub(crate) fn parse_segment_name(path: &Path) -> Option<u64> {
    let name = path.file_name()?.to_str()?;
    let hex = name.strip_prefix(RAFT_SEGMENT_PREFIX)?;
    if hex.len() != 16 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(hex, 16).ok()
}

/// Segments in `dir`, sorted by first index. A missing directory lists as empty.
pub(crate) fn list_segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, StorageError> {
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(StorageError::io(dir, e)),
    };
    for entry in entries {
        let path = entry.at(dir)?.path();
        if let Some(index) = parse_segment_name(&path) {
            out.push((index, path));
        }
    }
    out.sort_by_key(|(i, _)| *i);
    Ok(out)
}

pub(crate) fn encode_segment_header(first_index: u64) -> [u8; RAFT_HEADER_BYTES as usize] {
    let mut h = [0u8; RAFT_HEADER_BYTES as usize];
    h[0..4].copy_from_slice(&RAFT_LOG_MAGIC);
    h[4..8].copy_from_slice(&FORMAT_VERSION.to_be_bytes());
    h[8..16].copy_from_slice(&first_index.to_be_bytes());
    h
}

/// Appends one framed entry to `out`.
pub(crate) fn encode_entry(out: &mut Vec<u8>, e: &RaftEntry) {
    // As in the txn log, the length covers everything after the crc, so it is never 0 for
    // a real record and a zero length field means "end of data" (zero fill).
    let len = (KEY_BYTES + e.payload.len()) as u32;
    out.extend_from_slice(&len.to_be_bytes());
    let crc_at = out.len();
    out.extend_from_slice(&[0u8; 4]);
    let body_at = out.len();
    out.extend_from_slice(&e.index.to_be_bytes());
    out.extend_from_slice(&e.term.to_be_bytes());
    out.extend_from_slice(&e.leader.to_be_bytes());
    out.extend_from_slice(&e.payload);
    let crc = crc32c::crc32c(&out[body_at..]);
    out[crc_at..crc_at + 4].copy_from_slice(&crc.to_be_bytes());
}

/// Bytes one entry occupies on disk.
pub(crate) fn frame_bytes(payload_len: usize) -> u64 {
    RAFT_FRAME_HEADER_BYTES + payload_len as u64
}

/// One frame parsed from a buffer that starts at the frame.
enum Frame {
    /// A zero length field: the end of the written data if only zeros follow.
    End,
    Entry {
        index: u64,
        term: u64,
        leader: u64,
        /// Payload position relative to the frame start.
        payload: std::ops::Range<usize>,
        frame_len: usize,
    },
}

/// Checks framing and CRC of the frame at the start of `buf`. The error is the reason.
fn parse_frame(buf: &[u8]) -> Result<Frame, String> {
    if buf.len() < 4 {
        return if buf.iter().all(|&b| b == 0) {
            Ok(Frame::End)
        } else {
            Err("partial frame header at end of file".into())
        };
    }
    let len = u32::from_be_bytes(buf[0..4].try_into().unwrap()) as usize;
    if len == 0 {
        return Ok(Frame::End);
    }
    if buf.len() < RAFT_FRAME_HEADER_BYTES as usize {
        return Err("partial frame header at end of file".into());
    }
    if len < KEY_BYTES || len - KEY_BYTES > MAX_PAYLOAD_BYTES {
        return Err(format!("implausible record length {len}"));
    }
    let frame_len = 8 + len;
    if frame_len > buf.len() {
        return Err(format!(
            "record of length {len} extends past the end of the data ({} bytes left)",
            buf.len()
        ));
    }
    let crc = u32::from_be_bytes(buf[4..8].try_into().unwrap());
    if crc32c::crc32c(&buf[8..frame_len]) != crc {
        return Err("crc mismatch".into());
    }
    let word = |at: usize| u64::from_be_bytes(buf[at..at + 8].try_into().unwrap());
    Ok(Frame::Entry {
        index: word(8),
        term: word(16),
        leader: word(24),
        payload: 32..frame_len,
        frame_len,
    })
}

/// Result of reading a whole segment.
#[derive(Debug, Clone)]
pub(crate) struct SegmentScan {
    /// Index from the file name (and header).
    pub first_index: u64,
    /// Frame offset of entry `first_index + i`.
    pub offsets: Vec<u64>,
    /// (index, term, leader) of the first and last valid entries.
    pub first: Option<(u64, u64, u64)>,
    pub last: Option<(u64, u64, u64)>,
    /// Offset just after the last valid entry (where appending continues).
    pub end_offset: u64,
    pub file_len: u64,
    pub tail: Tail,
}

/// Reads and checks a whole segment: header, every CRC, indexes running `+1` from the name.
/// `visit` sees each valid entry with its frame offset. A bad frame followed by a valid one
/// is corruption; a bad frame with nothing valid after it is a torn tail, accepted only when
/// `tolerate_torn_tail` (the newest segment).
pub(crate) fn scan_segment(
    path: &Path,
    tolerate_torn_tail: bool,
    mut visit: impl FnMut(u64, RaftEntry),
) -> Result<SegmentScan, StorageError> {
    let name_index = parse_segment_name(path)
        .ok_or_else(|| StorageError::corrupt(path, 0, "not a raft log segment file name"))?;
    // Segments are bounded by the roll size, so reading one whole is fine; as Bytes, the
    // visited payloads are slices of this one buffer.
    let data = Bytes::from(std::fs::read(path).at(path)?);
    let file_len = data.len() as u64;
    if file_len < RAFT_HEADER_BYTES {
        return Err(StorageError::corrupt(
            path,
            0,
            "file shorter than the segment header",
        ));
    }
    let header_index = decode_header(&data[..RAFT_HEADER_BYTES as usize], &RAFT_LOG_MAGIC)
        .map_err(|r| StorageError::corrupt(path, 0, r))? as u64;
    if header_index != name_index {
        return Err(StorageError::corrupt(
            path,
            8,
            format!("header index {header_index} does not match the file name"),
        ));
    }
    let mut scan = SegmentScan {
        first_index: name_index,
        offsets: Vec::new(),
        first: None,
        last: None,
        end_offset: RAFT_HEADER_BYTES,
        file_len,
        tail: Tail::Clean,
    };
    let mut pos = RAFT_HEADER_BYTES as usize;
    let mut next_index = name_index;
    while pos < data.len() {
        let bad = match parse_frame(&data[pos..]) {
            Ok(Frame::End) if data[pos..].iter().all(|&b| b == 0) => {
                scan.tail = Tail::ZeroFill;
                break;
            }
            Ok(Frame::End) => "zero length field followed by non-zero data".to_string(),
            Ok(Frame::Entry {
                index,
                term,
                leader,
                payload,
                frame_len,
            }) => {
                if index != next_index {
                    // A well-formed record with the wrong index is never a torn write.
                    return Err(StorageError::corrupt(
                        path,
                        pos as u64,
                        format!("index gap: expected {next_index}, found {index}"),
                    ));
                }
                scan.offsets.push(pos as u64);
                scan.first.get_or_insert((index, term, leader));
                scan.last = Some((index, term, leader));
                let payload = data.slice(pos + payload.start..pos + payload.end);
                visit(
                    pos as u64,
                    RaftEntry {
                        index,
                        term,
                        leader,
                        payload,
                    },
                );
                pos += frame_len;
                next_index = index + 1;
                scan.end_offset = pos as u64;
                continue;
            }
            Err(reason) => reason,
        };
        // Damage at `pos`: decide between torn tail and corruption.
        if let Some((at, index)) = find_valid_frame_after(&data, pos, next_index) {
            return Err(StorageError::corrupt(
                path,
                pos as u64,
                format!("{bad}; a valid record (index {index}) follows at offset {at}"),
            ));
        }
        if !tolerate_torn_tail {
            return Err(StorageError::corrupt(
                path,
                pos as u64,
                format!("{bad} (damaged tail in a segment that is not the newest)"),
            ));
        }
        scan.tail = Tail::Torn {
            offset: pos as u64,
            reason: bad,
        };
        break;
    }
    Ok(scan)
}

/// Tries every byte offset after `bad_at` for a frame with a valid CRC and an index at or
/// beyond `next_index`. Runs only on the failure path.
fn find_valid_frame_after(data: &[u8], bad_at: usize, next_index: u64) -> Option<(u64, u64)> {
    (bad_at + 1..data.len()).find_map(|at| match parse_frame(&data[at..]) {
        Ok(Frame::Entry { index, .. }) if index >= next_index => Some((at as u64, index)),
        _ => None,
    })
}

/// Reads the entries `first_index..first_index + count` that lie in one segment, from frame
/// offset `from` up to `to` (exclusive), with one positioned read, checking each CRC again
/// (the data may have rotted since the log was opened).
pub(crate) fn read_entries(
    path: &Path,
    file: &File,
    from: u64,
    to: u64,
    first_index: u64,
    out: &mut Vec<RaftEntry>,
) -> Result<(), StorageError> {
    let mut buf = vec![0u8; (to - from) as usize];
    file.read_exact_at(&mut buf, from).at(path)?;
    let data = Bytes::from(buf);
    let mut pos = 0usize;
    let mut expected = first_index;
    while pos < data.len() {
        let offset = from + pos as u64;
        match parse_frame(&data[pos..]) {
            Ok(Frame::Entry {
                index,
                term,
                leader,
                payload,
                frame_len,
            }) if index == expected => {
                out.push(RaftEntry {
                    index,
                    term,
                    leader,
                    payload: data.slice(pos + payload.start..pos + payload.end),
                });
                pos += frame_len;
                expected += 1;
            }
            Ok(Frame::Entry { index, .. }) => {
                return Err(StorageError::corrupt(
                    path,
                    offset,
                    format!("expected entry {expected}, found {index}"),
                ))
            }
            Ok(Frame::End) => {
                return Err(StorageError::corrupt(
                    path,
                    offset,
                    format!("expected entry {expected}, found zero fill"),
                ))
            }
            Err(reason) => return Err(StorageError::corrupt(path, offset, reason)),
        }
    }
    Ok(())
}
