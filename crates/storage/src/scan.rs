//! Reading log segments: record iteration, CRC checks, and the decision between a torn tail
//! (crash mid-append, repairable) and real corruption (an error).

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use crate::error::{IoContext, StorageError};
use crate::format::{
    decode_header, FRAME_HEADER_BYTES, LOG_HEADER_BYTES, LOG_MAGIC, LOG_PREFIX, MAX_PAYLOAD_BYTES,
};

/// How a segment ends after its last valid record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tail {
    /// The file ends exactly after the last record.
    Clean,
    /// Only zero bytes follow (preallocated space): the normal end of an active segment.
    ZeroFill,
    /// Damaged bytes follow the last valid record, with no valid record after them: the
    /// signature of a crash in the middle of an append. Only acceptable in the newest segment.
    Torn { offset: u64, reason: String },
}

/// Summary of a fully read segment.
#[derive(Debug, Clone)]
pub struct SegmentScan {
    /// Zxid from the file name (and header).
    pub start_zxid: i64,
    pub record_count: u64,
    pub first_zxid: Option<i64>,
    pub last_zxid: Option<i64>,
    /// Offset just after the last valid record (where appending would continue).
    pub end_offset: u64,
    pub file_len: u64,
    pub tail: Tail,
}

/// One record read from a segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecord {
    pub zxid: i64,
    /// Byte offset of the record's frame in its segment file.
    pub offset: u64,
    pub payload: Vec<u8>,
}

/// Sequential reader over one segment. Checks the header, each CRC, and that zxids run
/// contiguously from the zxid in the file name.
pub(crate) struct SegmentReader {
    path: PathBuf,
    reader: BufReader<File>,
    file_len: u64,
    pos: u64,
    start_zxid: i64,
    next_zxid: i64,
    record_count: u64,
    first_zxid: Option<i64>,
    tolerate_torn_tail: bool,
    finished: Option<Tail>,
}

impl SegmentReader {
    /// Opens a segment. `tolerate_torn_tail` is set for the newest segment only: a torn tail
    /// anywhere else is reported as corruption.
    pub fn open(path: &Path, tolerate_torn_tail: bool) -> Result<Self, StorageError> {
        let name_zxid = crate::format::parse_name(path, LOG_PREFIX)
            .ok_or_else(|| StorageError::corrupt(path, 0, "not a log segment file name"))?;
        let file = File::open(path).at(path)?;
        let file_len = file.metadata().at(path)?.len();
        let mut reader = BufReader::with_capacity(256 * 1024, file);
        if file_len < LOG_HEADER_BYTES {
            return Err(StorageError::corrupt(
                path,
                0,
                "file shorter than the segment header",
            ));
        }
        let mut h = [0u8; LOG_HEADER_BYTES as usize];
        reader.read_exact(&mut h).at(path)?;
        let header_zxid =
            decode_header(&h, &LOG_MAGIC).map_err(|r| StorageError::corrupt(path, 0, r))?;
        if header_zxid != name_zxid {
            return Err(StorageError::corrupt(
                path,
                8,
                format!("header zxid {header_zxid:#x} does not match the file name"),
            ));
        }
        Ok(SegmentReader {
            path: path.to_path_buf(),
            reader,
            file_len,
            pos: LOG_HEADER_BYTES,
            start_zxid: name_zxid,
            next_zxid: name_zxid,
            record_count: 0,
            first_zxid: None,
            tolerate_torn_tail,
            finished: None,
        })
    }

    /// The next valid record, or `None` at the end of the valid data (see [`Self::summary`]).
    pub fn next_record(&mut self) -> Result<Option<LogRecord>, StorageError> {
        if self.finished.is_some() {
            return Ok(None);
        }
        let pos = self.pos;
        let remaining = self.file_len - pos;
        if remaining == 0 {
            self.finished = Some(Tail::Clean);
            return Ok(None);
        }
        let mut hdr = [0u8; FRAME_HEADER_BYTES as usize];
        let n = remaining.min(FRAME_HEADER_BYTES) as usize;
        self.reader.read_exact(&mut hdr[..n]).at(&self.path)?;
        let len = if n >= 4 {
            u32::from_be_bytes(hdr[0..4].try_into().unwrap())
        } else {
            // Fewer than 4 bytes left: a zero-filled remainder still reads as "length 0".
            if hdr[..n].iter().all(|&b| b == 0) {
                0
            } else {
                return self.fail(pos, "partial frame header at end of file");
            }
        };
        if len == 0 {
            if hdr[..n].iter().all(|&b| b == 0) && self.rest_is_zero()? {
                self.finished = Some(Tail::ZeroFill);
                return Ok(None);
            }
            return self.fail(pos, "zero length field followed by non-zero data");
        }
        if n < FRAME_HEADER_BYTES as usize {
            return self.fail(pos, "partial frame header at end of file");
        }
        if len < 8 || (len - 8) as usize > MAX_PAYLOAD_BYTES {
            return self.fail(pos, format!("implausible record length {len}"));
        }
        let frame_end = pos + 8 + u64::from(len);
        if frame_end > self.file_len {
            return self.fail(
                pos,
                format!(
                    "record of length {len} extends past end of file ({})",
                    self.file_len
                ),
            );
        }
        let crc = u32::from_be_bytes(hdr[4..8].try_into().unwrap());
        let zxid = i64::from_be_bytes(hdr[8..16].try_into().unwrap());
        let mut payload = vec![0u8; (len - 8) as usize];
        self.reader.read_exact(&mut payload).at(&self.path)?;
        if crate::format::record_crc(zxid, &payload) != crc {
            return self.fail(pos, "crc mismatch");
        }
        if zxid != self.next_zxid {
            return Err(StorageError::Gap {
                file: self.path.clone(),
                offset: pos,
                expected: self.next_zxid,
                found: zxid,
            });
        }
        self.pos = frame_end;
        self.next_zxid = zxid + 1;
        self.record_count += 1;
        self.first_zxid.get_or_insert(zxid);
        Ok(Some(LogRecord {
            zxid,
            offset: pos,
            payload,
        }))
    }

    /// Valid only after `next_record` returned `Ok(None)`.
    pub fn summary(&self) -> SegmentScan {
        SegmentScan {
            start_zxid: self.start_zxid,
            record_count: self.record_count,
            first_zxid: self.first_zxid,
            last_zxid: self.first_zxid.map(|_| self.next_zxid - 1),
            end_offset: self.pos,
            file_len: self.file_len,
            tail: self.finished.clone().unwrap_or(Tail::Clean),
        }
    }

    /// Decides what a bad frame at `offset` means. If any valid record with a later zxid
    /// exists after it, acknowledged data would be lost by truncating, so it is corruption.
    /// Otherwise it is a torn tail, which only the newest segment may have.
    fn fail(
        &mut self,
        offset: u64,
        reason: impl Into<String>,
    ) -> Result<Option<LogRecord>, StorageError> {
        let reason = reason.into();
        if let Some((at, zxid)) = self.find_valid_frame_after(offset)? {
            return Err(StorageError::corrupt(
                &self.path,
                offset,
                format!("{reason}; a valid record (zxid {zxid:#x}) follows at offset {at}"),
            ));
        }
        if !self.tolerate_torn_tail {
            return Err(StorageError::corrupt(
                &self.path,
                offset,
                format!("{reason} (damaged tail in a segment that is not the newest)"),
            ));
        }
        self.finished = Some(Tail::Torn { offset, reason });
        Ok(None)
    }

    fn rest_is_zero(&mut self) -> Result<bool, StorageError> {
        let mut buf = vec![0u8; 1024 * 1024];
        loop {
            let n = self.reader.read(&mut buf).at(&self.path)?;
            if n == 0 {
                return Ok(true);
            }
            if buf[..n].iter().any(|&b| b != 0) {
                return Ok(false);
            }
        }
    }

    /// Scans every byte offset after `offset` for a frame with a plausible length, a
    /// matching CRC and a zxid beyond the last good one. Only runs on the failure path.
    fn find_valid_frame_after(&mut self, offset: u64) -> Result<Option<(u64, i64)>, StorageError> {
        let base = offset + 1;
        if base >= self.file_len {
            return Ok(None);
        }
        let mut rest = Vec::with_capacity((self.file_len - base) as usize);
        let file = self.reader.get_mut();
        file.seek(SeekFrom::Start(base)).at(&self.path)?;
        file.read_to_end(&mut rest).at(&self.path)?;
        let last_good = self.next_zxid - 1;
        let h = FRAME_HEADER_BYTES as usize;
        let mut i = 0usize;
        while i + h <= rest.len() {
            let len = u32::from_be_bytes(rest[i..i + 4].try_into().unwrap()) as usize;
            if len >= 8 && len - 8 <= MAX_PAYLOAD_BYTES && i + 8 + len <= rest.len() {
                let zxid = i64::from_be_bytes(rest[i + 8..i + 16].try_into().unwrap());
                let crc = u32::from_be_bytes(rest[i + 4..i + 8].try_into().unwrap());
                // zxid and payload are adjacent, so the record CRC is over one slice.
                if zxid > last_good && crc32c::crc32c(&rest[i + 8..i + 8 + len]) == crc {
                    return Ok(Some((base + i as u64, zxid)));
                }
            }
            i += 1;
        }
        Ok(None)
    }
}

/// Iterator over the records of one segment, for dumping (`corral datadir`). Tolerates a
/// torn tail (reported through [`LogIter::summary`]); yields an `Err` item on corruption and
/// then stops.
pub struct LogIter {
    reader: SegmentReader,
    done: bool,
}

impl LogIter {
    pub fn open(path: &Path) -> Result<Self, StorageError> {
        Ok(LogIter {
            reader: SegmentReader::open(path, true)?,
            done: false,
        })
    }

    /// Summary of the segment; complete once the iterator returned `None`.
    pub fn summary(&self) -> SegmentScan {
        self.reader.summary()
    }
}

impl Iterator for LogIter {
    type Item = Result<LogRecord, StorageError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.reader.next_record() {
            Ok(Some(r)) => Some(Ok(r)),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

/// Reads a whole segment, calling `visit` for each record.
pub(crate) fn scan_segment(
    path: &Path,
    tolerate_torn_tail: bool,
    mut visit: impl FnMut(LogRecord) -> Result<(), StorageError>,
) -> Result<SegmentScan, StorageError> {
    let mut r = SegmentReader::open(path, tolerate_torn_tail)?;
    while let Some(rec) = r.next_record()? {
        visit(rec)?;
    }
    Ok(r.summary())
}
