//! On-disk constants, file naming and record framing shared by the writer, the readers and
//! the inspection API. See the crate documentation for the format description.

use std::path::Path;

/// Magic at the start of every log segment.
pub const LOG_MAGIC: [u8; 4] = *b"CRLG";
/// Magic at the start of every snapshot file.
pub const SNAP_MAGIC: [u8; 4] = *b"CRSN";
/// Current format version of both file kinds.
pub const FORMAT_VERSION: u32 = 1;
/// Segment header: magic, version, zxid of the first record (== the name).
pub const LOG_HEADER_BYTES: u64 = 16;
/// Snapshot header: magic, version, zxid.
pub const SNAP_HEADER_BYTES: u64 = 16;
/// Snapshot trailer: crc32c of header and payload.
pub const SNAP_TRAILER_BYTES: u64 = 4;
/// Record frame header: len, crc, zxid.
pub const FRAME_HEADER_BYTES: u64 = 16;
/// Largest payload accepted by the writer. Readers treat larger length fields as damage,
/// which keeps garbage from being mistaken for a huge record.
pub const MAX_PAYLOAD_BYTES: usize = 64 * 1024 * 1024;

pub const LOG_PREFIX: &str = "log.";
pub const SNAP_PREFIX: &str = "snapshot.";
pub const TMP_SUFFIX: &str = ".tmp";

pub fn log_file_name(zxid: i64) -> String {
    format!("{LOG_PREFIX}{:016x}", zxid as u64)
}

pub fn snapshot_file_name(zxid: i64) -> String {
    format!("{SNAP_PREFIX}{:016x}", zxid as u64)
}

/// Parses `<prefix><16 hex digits>`; anything else (temp files, foreign files) is `None`.
pub fn parse_name(path: &Path, prefix: &str) -> Option<i64> {
    let name = path.file_name()?.to_str()?;
    let hex = name.strip_prefix(prefix)?;
    if hex.len() != 16 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let v = u64::from_str_radix(hex, 16).ok()?;
    i64::try_from(v).ok()
}

pub fn encode_log_header(first_zxid: i64) -> [u8; LOG_HEADER_BYTES as usize] {
    let mut h = [0u8; LOG_HEADER_BYTES as usize];
    h[0..4].copy_from_slice(&LOG_MAGIC);
    h[4..8].copy_from_slice(&FORMAT_VERSION.to_be_bytes());
    h[8..16].copy_from_slice(&first_zxid.to_be_bytes());
    h
}

pub fn encode_snap_header(zxid: i64) -> [u8; SNAP_HEADER_BYTES as usize] {
    let mut h = [0u8; SNAP_HEADER_BYTES as usize];
    h[0..4].copy_from_slice(&SNAP_MAGIC);
    h[4..8].copy_from_slice(&FORMAT_VERSION.to_be_bytes());
    h[8..16].copy_from_slice(&zxid.to_be_bytes());
    h
}

/// Checks magic and version of a 16-byte header and returns its zxid field.
pub fn decode_header(h: &[u8], magic: &[u8; 4]) -> Result<i64, String> {
    if h.len() < 16 {
        return Err(format!("header too short ({} bytes)", h.len()));
    }
    if &h[0..4] != magic {
        return Err(format!("bad magic {:02x?}", &h[0..4]));
    }
    let version = u32::from_be_bytes(h[4..8].try_into().unwrap());
    if version != FORMAT_VERSION {
        return Err(format!("unsupported format version {version}"));
    }
    Ok(i64::from_be_bytes(h[8..16].try_into().unwrap()))
}

/// CRC of a record: covers the zxid bytes followed by the payload.
pub fn record_crc(zxid: i64, payload: &[u8]) -> u32 {
    let c = crc32c::crc32c(&zxid.to_be_bytes());
    crc32c::crc32c_append(c, payload)
}

/// Appends one framed record to `out`.
pub fn encode_record(out: &mut Vec<u8>, zxid: i64, payload: &[u8]) {
    // The length covers zxid + payload, so it is never 0 for a real record: a zero length
    // field is unambiguously "end of log" (preallocated zero fill).
    let len = (payload.len() + 8) as u32;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&record_crc(zxid, payload).to_be_bytes());
    out.extend_from_slice(&zxid.to_be_bytes());
    out.extend_from_slice(payload);
}

#[cfg(test)]
pub fn frame_bytes(payload_len: usize) -> u64 {
    FRAME_HEADER_BYTES + payload_len as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_reject_foreign_files() {
        let n = log_file_name(0x1_0000_0002);
        assert_eq!(n, "log.0000000100000002");
        assert_eq!(parse_name(Path::new(&n), LOG_PREFIX), Some(0x1_0000_0002));
        assert_eq!(parse_name(Path::new("log.12"), LOG_PREFIX), None);
        assert_eq!(
            parse_name(Path::new("log.0000000100000002.tmp"), LOG_PREFIX),
            None
        );
        assert_eq!(
            parse_name(Path::new("snapshot.000000000000000a"), SNAP_PREFIX),
            Some(10)
        );
        assert_eq!(
            parse_name(Path::new("snapshot.000000000000000a"), LOG_PREFIX),
            None
        );
    }

    #[test]
    fn record_frame_layout_is_big_endian() {
        let mut out = Vec::new();
        encode_record(&mut out, 7, b"abc");
        assert_eq!(&out[0..4], &11u32.to_be_bytes());
        assert_eq!(&out[4..8], &record_crc(7, b"abc").to_be_bytes());
        assert_eq!(&out[8..16], &7i64.to_be_bytes());
        assert_eq!(&out[16..], b"abc");
        assert_eq!(out.len() as u64, frame_bytes(3));
    }
}
