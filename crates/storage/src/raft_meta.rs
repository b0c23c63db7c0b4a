//! Small durable blobs next to the Raft log (vote, committed id, last purged id), each
//! replaced atomically as a whole file.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;

use crate::error::{IoContext, StorageError};
use crate::format::{decode_header, FORMAT_VERSION};
use crate::fsutil::sync_dir;
use crate::writer::tmp_path;

/// Magic of a blob file.
const BLOB_MAGIC: [u8; 4] = *b"CRRB";
/// magic, version, payload length, crc32c of the payload.
const BLOB_HEADER_BYTES: usize = 16;
/// Largest blob accepted: these hold a vote or a log id, never bulk data.
pub const MAX_BLOB_BYTES: usize = 64 * 1024;

pub(crate) const VOTE_FILE: &str = "vote";
pub(crate) const COMMITTED_FILE: &str = "committed";
pub(crate) const PURGED_FILE: &str = "purged";

/// Replaces `dir/name` with `payload`: temp file, (fsync), rename, (directory fsync). A
/// crash leaves either the old or the new content, never a mix, as long as `sync`; without
/// it the new file may be empty or damaged after a machine crash, which readers detect by
/// the CRC.
pub(crate) fn write_blob(
    dir: &Path,
    name: &str,
    payload: &[u8],
    sync: bool,
) -> Result<(), StorageError> {
    if payload.len() > MAX_BLOB_BYTES {
        return Err(StorageError::RecordTooLarge {
            len: payload.len(),
            max: MAX_BLOB_BYTES,
        });
    }
    let path = dir.join(name);
    let tmp = tmp_path(&path);
    let mut bytes = Vec::with_capacity(BLOB_HEADER_BYTES + payload.len());
    bytes.extend_from_slice(&BLOB_MAGIC);
    bytes.extend_from_slice(&FORMAT_VERSION.to_be_bytes());
    bytes.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    bytes.extend_from_slice(&crc32c::crc32c(payload).to_be_bytes());
    bytes.extend_from_slice(payload);
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .at(&tmp)?;
        f.write_all(&bytes).at(&tmp)?;
        if sync {
            f.sync_all().at(&tmp)?;
        }
        std::fs::rename(&tmp, &path).at(&path)?;
        if sync {
            sync_dir(dir)?;
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Reads `dir/name`: `None` if it does not exist, `Corrupt` (naming file and offset) if its
/// framing or CRC is wrong.
pub(crate) fn read_blob(dir: &Path, name: &str) -> Result<Option<Vec<u8>>, StorageError> {
    let path = dir.join(name);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(StorageError::io(&path, e)),
    };
    if bytes.len() < BLOB_HEADER_BYTES {
        return Err(StorageError::corrupt(
            &path,
            0,
            "file shorter than its header",
        ));
    }
    // The header shares the 8-byte magic+version prefix with the other file kinds.
    decode_header(&bytes[..16], &BLOB_MAGIC).map_err(|r| StorageError::corrupt(&path, 0, r))?;
    let len = u32::from_be_bytes(bytes[8..12].try_into().unwrap()) as usize;
    if len > MAX_BLOB_BYTES || BLOB_HEADER_BYTES + len != bytes.len() {
        return Err(StorageError::corrupt(
            &path,
            8,
            format!(
                "length field {len} does not match the file size {}",
                bytes.len()
            ),
        ));
    }
    let crc = u32::from_be_bytes(bytes[12..16].try_into().unwrap());
    let payload = &bytes[BLOB_HEADER_BYTES..];
    if crc32c::crc32c(payload) != crc {
        return Err(StorageError::corrupt(
            &path,
            BLOB_HEADER_BYTES as u64,
            "crc mismatch",
        ));
    }
    Ok(Some(payload.to_vec()))
}

/// Encoding of a log id (index, term, leader) as a blob payload.
pub(crate) fn encode_log_id(id: (u64, u64, u64)) -> [u8; 24] {
    let mut out = [0u8; 24];
    out[0..8].copy_from_slice(&id.0.to_be_bytes());
    out[8..16].copy_from_slice(&id.1.to_be_bytes());
    out[16..24].copy_from_slice(&id.2.to_be_bytes());
    out
}

pub(crate) fn decode_log_id(
    dir: &Path,
    name: &str,
    b: &[u8],
) -> Result<(u64, u64, u64), StorageError> {
    if b.len() != 24 {
        return Err(StorageError::corrupt(
            dir.join(name),
            BLOB_HEADER_BYTES as u64,
            format!("log id of {} bytes, expected 24", b.len()),
        ));
    }
    let word = |at: usize| u64::from_be_bytes(b[at..at + 8].try_into().unwrap());
    Ok((word(0), word(8), word(16)))
}
