#![allow(dead_code)]

use std::path::{Path, PathBuf};

use corral_storage::{recover, LogOptions, LogWriter, Recovered};

pub struct Dirs {
    _tmp: tempfile::TempDir,
    pub data: PathBuf,
    pub log: PathBuf,
}

pub fn dirs() -> Dirs {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let log = tmp.path().join("log");
    Dirs {
        _tmp: tmp,
        data,
        log,
    }
}

pub fn payload(zxid: i64) -> Vec<u8> {
    format!("txn number {zxid};")
        .repeat(1 + (zxid % 5) as usize)
        .into_bytes()
}

/// Small preallocation so tests exercise the zero tail without writing megabytes.
pub fn small_opts() -> LogOptions {
    LogOptions {
        segment_max_bytes: 1 << 20,
        prealloc_bytes: 8 * 1024,
        force_sync: true,
        queue_capacity: 4096,
    }
}

pub fn recover_ok(d: &Dirs) -> Recovered {
    recover(&d.data, &d.log).unwrap_or_else(|e| panic!("recover failed: {e}"))
}

pub fn writer(d: &Dirs, opts: LogOptions) -> LogWriter {
    let mut w = recover_ok(d).writer;
    w.set_options(opts);
    w
}

/// Appends `from..=to` as one batch.
pub fn append_range(w: &mut LogWriter, from: i64, to: i64) {
    for z in from..=to {
        w.append(z, &payload(z)).unwrap();
    }
    assert_eq!(w.commit().unwrap(), Some(to));
}

pub fn zxids(r: &Recovered) -> Vec<i64> {
    r.txns.iter().map(|(z, _)| *z).collect()
}

pub fn assert_payloads(r: &Recovered) {
    for (z, p) in &r.txns {
        assert_eq!(p, &payload(*z), "payload of zxid {z}");
    }
}

pub fn segments(log: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(log)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_str().unwrap().starts_with("log."))
        .collect();
    v.sort();
    v
}

pub fn flip_byte(path: &Path, offset: u64) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[offset as usize] ^= 0x5a;
    std::fs::write(path, bytes).unwrap();
}

/// Encodes a record exactly as the documented on-disk format says (independently of the
/// crate's own encoder, so the tests also pin the format).
pub fn frame(zxid: i64, payload: &[u8]) -> Vec<u8> {
    let mut crc_input = zxid.to_be_bytes().to_vec();
    crc_input.extend_from_slice(payload);
    let mut out = Vec::new();
    out.extend_from_slice(&((payload.len() + 8) as u32).to_be_bytes());
    out.extend_from_slice(&crc32c::crc32c(&crc_input).to_be_bytes());
    out.extend_from_slice(&zxid.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

pub fn segment_header(first_zxid: i64) -> Vec<u8> {
    let mut h = b"CRLG".to_vec();
    h.extend_from_slice(&1u32.to_be_bytes());
    h.extend_from_slice(&first_zxid.to_be_bytes());
    h
}
