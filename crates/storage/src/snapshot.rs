//! Snapshot files: written atomically, read back with CRC verification.

use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use crate::error::{IoContext, StorageError};
use crate::format::{
    decode_header, encode_snap_header, parse_name, snapshot_file_name, SNAP_HEADER_BYTES,
    SNAP_MAGIC, SNAP_PREFIX, SNAP_TRAILER_BYTES,
};
use crate::fsutil::sync_dir;
use crate::writer::tmp_path;

/// Streams a snapshot to `snapshot.<zxid>.tmp`; [`finish`](Self::finish) makes it durable
/// and renames it into place. Dropping an unfinished writer removes the temp file, so a
/// snapshot is either complete and valid under its final name or absent.
///
/// Safe to use from a background thread while the log keeps appending. The zxid must be
/// one such that the snapshot content includes every txn up to and including it; recovery
/// replays only records after it.
pub struct SnapshotWriter {
    dir: PathBuf,
    tmp: PathBuf,
    path: PathBuf,
    out: Option<BufWriter<File>>,
    crc: u32,
}

impl SnapshotWriter {
    pub fn create(data_dir: &Path, zxid: i64) -> Result<Self, StorageError> {
        std::fs::create_dir_all(data_dir).at(data_dir)?;
        let path = data_dir.join(snapshot_file_name(zxid));
        let tmp = tmp_path(&path);
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .at(&tmp)?;
        let mut w = SnapshotWriter {
            dir: data_dir.to_path_buf(),
            tmp,
            path,
            out: Some(BufWriter::with_capacity(1024 * 1024, file)),
            crc: 0,
        };
        let header = encode_snap_header(zxid);
        w.write_all(&header)
            .map_err(|e| StorageError::io(&w.tmp, e))?;
        Ok(w)
    }

    /// Final path of the snapshot.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends the CRC trailer, fsyncs, renames into place and fsyncs the directory.
    pub fn finish(mut self) -> Result<PathBuf, StorageError> {
        let mut out = self.out.take().expect("finish called once");
        out.write_all(&self.crc.to_be_bytes()).at(&self.tmp)?;
        let file = out
            .into_inner()
            .map_err(|e| StorageError::io(&self.tmp, e.into_error()))?;
        file.sync_all().at(&self.tmp)?;
        drop(file);
        std::fs::rename(&self.tmp, &self.path).at(&self.path)?;
        sync_dir(&self.dir)?;
        tracing::info!(snapshot = %self.path.display(), "snapshot written");
        Ok(self.path.clone())
    }
}

impl Write for SnapshotWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let out = self
            .out
            .as_mut()
            .ok_or_else(|| io::Error::other("snapshot writer already finished"))?;
        let n = out.write(buf)?;
        self.crc = crc32c::crc32c_append(self.crc, &buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        match self.out.as_mut() {
            Some(o) => o.flush(),
            None => Ok(()),
        }
    }
}

impl Drop for SnapshotWriter {
    fn drop(&mut self) {
        if self.out.take().is_some() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// Writes a complete snapshot from one buffer. Returns its path.
pub fn write_snapshot(data_dir: &Path, zxid: i64, payload: &[u8]) -> Result<PathBuf, StorageError> {
    let mut w = SnapshotWriter::create(data_dir, zxid)?;
    w.write_all(payload)
        .map_err(|e| StorageError::io(&w.tmp, e))?;
    w.finish()
}

/// Streams a snapshot's payload. The CRC is checked when the payload has been read to its
/// end: a mismatch is returned as an `io::Error` of kind `InvalidData` wrapping a
/// [`StorageError::Corrupt`] (so damage is never silently accepted by a streaming reader).
pub struct SnapshotReader {
    path: PathBuf,
    reader: BufReader<File>,
    zxid: i64,
    remaining: u64,
    payload_len: u64,
    crc: u32,
    verified: bool,
}

impl SnapshotReader {
    pub fn open(path: &Path) -> Result<Self, StorageError> {
        let name_zxid = parse_name(path, SNAP_PREFIX)
            .ok_or_else(|| StorageError::corrupt(path, 0, "not a snapshot file name"))?;
        let file = File::open(path).at(path)?;
        let len = file.metadata().at(path)?.len();
        if len < SNAP_HEADER_BYTES + SNAP_TRAILER_BYTES {
            return Err(StorageError::corrupt(
                path,
                0,
                format!("file too short ({len} bytes)"),
            ));
        }
        let mut reader = BufReader::with_capacity(1024 * 1024, file);
        let mut h = [0u8; SNAP_HEADER_BYTES as usize];
        reader.read_exact(&mut h).at(path)?;
        let zxid = decode_header(&h, &SNAP_MAGIC).map_err(|r| StorageError::corrupt(path, 0, r))?;
        if zxid != name_zxid {
            return Err(StorageError::corrupt(
                path,
                8,
                format!("header zxid {zxid:#x} does not match the file name"),
            ));
        }
        let payload_len = len - SNAP_HEADER_BYTES - SNAP_TRAILER_BYTES;
        Ok(SnapshotReader {
            path: path.to_path_buf(),
            reader,
            zxid,
            remaining: payload_len,
            payload_len,
            crc: crc32c::crc32c(&h),
            verified: false,
        })
    }

    pub fn zxid(&self) -> i64 {
        self.zxid
    }

    pub fn payload_len(&self) -> u64 {
        self.payload_len
    }

    fn verify_trailer(&mut self) -> io::Result<()> {
        let mut t = [0u8; SNAP_TRAILER_BYTES as usize];
        self.reader.read_exact(&mut t)?;
        let stored = u32::from_be_bytes(t);
        if stored != self.crc {
            let err = StorageError::corrupt(
                &self.path,
                SNAP_HEADER_BYTES + self.payload_len,
                format!(
                    "snapshot crc mismatch (stored {stored:#010x}, computed {:#010x})",
                    self.crc
                ),
            );
            return Err(io::Error::new(io::ErrorKind::InvalidData, err));
        }
        self.verified = true;
        Ok(())
    }
}

impl Read for SnapshotReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 {
            if !self.verified {
                self.verify_trailer()?;
            }
            return Ok(0);
        }
        let want = buf.len().min(self.remaining as usize);
        let n = self.reader.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("{}: snapshot shorter than expected", self.path.display()),
            ));
        }
        self.crc = crc32c::crc32c_append(self.crc, &buf[..n]);
        self.remaining -= n as u64;
        Ok(n)
    }
}

/// Turns a read error of a `SnapshotReader` back into a `StorageError`.
fn read_error(path: &Path, e: io::Error) -> StorageError {
    if e.kind() == io::ErrorKind::InvalidData {
        if let Some(inner) = e.get_ref().and_then(|i| i.downcast_ref::<StorageError>()) {
            return inner.clone();
        }
    }
    StorageError::io(path, e)
}

/// Reads and verifies a whole snapshot: `(zxid, payload)`.
pub fn read_snapshot(path: &Path) -> Result<(i64, Vec<u8>), StorageError> {
    let mut r = SnapshotReader::open(path)?;
    let mut payload = Vec::with_capacity(r.payload_len() as usize);
    r.read_to_end(&mut payload)
        .map_err(|e| read_error(path, e))?;
    Ok((r.zxid(), payload))
}

/// Checks a snapshot end to end without keeping its payload. Returns its zxid.
pub(crate) fn validate_snapshot(path: &Path) -> Result<i64, StorageError> {
    let mut r = SnapshotReader::open(path)?;
    io::copy(&mut r, &mut io::sink()).map_err(|e| read_error(path, e))?;
    Ok(r.zxid())
}

/// A snapshot chosen by recovery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotFile {
    pub zxid: i64,
    pub path: PathBuf,
}

impl SnapshotFile {
    /// Streams the payload (verifying the CRC again at its end).
    pub fn open(&self) -> Result<SnapshotReader, StorageError> {
        SnapshotReader::open(&self.path)
    }

    /// What a read error of this snapshot's [`SnapshotReader`] means (a checksum mismatch is
    /// [`StorageError::Corrupt`] naming the file and offset).
    pub fn read_error(&self, e: io::Error) -> StorageError {
        read_error(&self.path, e)
    }

    pub fn read_payload(&self) -> Result<Vec<u8>, StorageError> {
        read_snapshot(&self.path).map(|(_, p)| p)
    }
}
