//! Snapshots of the replicated state, as openraft sees them.
//!
//! A snapshot file (written by `corral_storage::write_snapshot`, so it is atomic, fsynced and
//! CRC-checked) lives in `<dataDir>/raft-snapshots/` and is named after the last log index it
//! covers. Its payload is `u32 len | bincode(meta) | data`, where `data` is what travels to a
//! follower: `u32 len | bincode(Extra) | Corral snapshot image` (the image `Core` encodes for
//! standalone snapshots too). The session secret travels in `Extra`, so a member that only ever
//! received a snapshot can still verify session passwords.

use std::path::{Path, PathBuf};

use openraft::{BasicNode, SnapshotMeta};
use serde::{Deserialize, Serialize};

use super::MemberId;

/// Snapshots kept on disk (the newest ones); older files are removed after a new one is made.
const KEEP_SNAPSHOTS: usize = 2;

/// What a snapshot carries beside the image.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Extra {
    pub secret: Option<[u8; 16]>,
    pub zxid: i64,
}

/// The data half of a snapshot: `Extra` and the image.
pub fn encode_data(extra: &Extra, image: &[u8]) -> Vec<u8> {
    let extra = bincode::serialize(extra).expect("in-memory serialization");
    let mut out = Vec::with_capacity(4 + extra.len() + image.len());
    out.extend_from_slice(&(extra.len() as u32).to_be_bytes());
    out.extend_from_slice(&extra);
    out.extend_from_slice(image);
    out
}

/// Splits snapshot data into `Extra` and the image.
pub fn decode_data(data: &[u8]) -> Result<(Extra, &[u8]), String> {
    let (extra, image) = split_prefixed(data)?;
    let extra = bincode::deserialize(extra).map_err(|e| format!("snapshot header: {e}"))?;
    Ok((extra, image))
}

fn split_prefixed(bytes: &[u8]) -> Result<(&[u8], &[u8]), String> {
    let len = bytes
        .get(..4)
        .map(|b| u32::from_be_bytes(b.try_into().expect("4 bytes")) as usize)
        .ok_or("snapshot shorter than its header")?;
    let body = bytes.get(4..4 + len).ok_or("snapshot header cut short")?;
    Ok((body, &bytes[4 + len..]))
}

pub type Meta = SnapshotMeta<MemberId, BasicNode>;

/// The snapshot directory of a member.
pub struct SnapshotStore {
    dir: PathBuf,
}

impl SnapshotStore {
    pub fn new(dir: &Path) -> SnapshotStore {
        SnapshotStore {
            dir: dir.to_path_buf(),
        }
    }

    /// Writes a snapshot durably and removes older ones beyond the few kept.
    pub fn save(&self, meta: &Meta, data: &[u8]) -> Result<PathBuf, corral_storage::StorageError> {
        let index = meta.last_log_id.map_or(0, |l| l.index) as i64;
        let meta_bytes = bincode::serialize(meta).expect("in-memory serialization");
        let mut payload = Vec::with_capacity(4 + meta_bytes.len() + data.len());
        payload.extend_from_slice(&(meta_bytes.len() as u32).to_be_bytes());
        payload.extend_from_slice(&meta_bytes);
        payload.extend_from_slice(data);
        let path = corral_storage::write_snapshot(&self.dir, index, &payload)?;
        let mut all = self.files();
        all.sort();
        while all.len() > KEEP_SNAPSHOTS {
            let (_, old) = all.remove(0);
            if let Err(e) = std::fs::remove_file(&old) {
                tracing::warn!(file = %old.display(), error = %e, "cannot remove an old snapshot");
            }
        }
        Ok(path)
    }

    /// The newest snapshot: its meta and data. A damaged newest file is an error (naming the
    /// file), never silently skipped: the log before it may be purged already.
    pub fn load_latest(&self) -> Result<Option<(Meta, Vec<u8>)>, String> {
        let mut all = self.files();
        all.sort();
        let Some((_, path)) = all.pop() else {
            return Ok(None);
        };
        let (_, payload) = corral_storage::read_snapshot(&path).map_err(|e| e.to_string())?;
        let (meta, data) =
            split_prefixed(&payload).map_err(|e| format!("snapshot {}: {e}", path.display()))?;
        let meta: Meta = bincode::deserialize(meta)
            .map_err(|e| format!("snapshot {}: meta: {e}", path.display()))?;
        Ok(Some((meta, data.to_vec())))
    }

    /// (index, path) of every snapshot file.
    fn files(&self) -> Vec<(i64, PathBuf)> {
        let Ok(rd) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        rd.filter_map(Result::ok)
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let hex = name.strip_prefix("snapshot.")?;
                let index = i64::from_str_radix(hex, 16).ok()?;
                Some((index, e.path()))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_round_trips_and_damage_is_reported() {
        let extra = Extra {
            secret: Some([7; 16]),
            zxid: 0x1_0000_0005,
        };
        let data = encode_data(&extra, b"image");
        let (back, image) = decode_data(&data).unwrap();
        assert_eq!(
            (back.secret, back.zxid, image),
            (extra.secret, extra.zxid, &b"image"[..])
        );
        assert!(decode_data(&data[..3]).is_err());
        assert!(decode_data(&data[..6]).is_err());
    }

    #[test]
    fn the_newest_snapshot_is_loaded_and_old_ones_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let store = SnapshotStore::new(dir.path());
        assert!(store.load_latest().unwrap().is_none());
        for index in [5u64, 9, 12] {
            let meta = Meta {
                last_log_id: Some(openraft::LogId::new(
                    openraft::CommittedLeaderId::new(1, 1),
                    index,
                )),
                last_membership: Default::default(),
                snapshot_id: format!("s{index}"),
            };
            store
                .save(
                    &meta,
                    &encode_data(
                        &Extra {
                            secret: None,
                            zxid: index as i64,
                        },
                        b"x",
                    ),
                )
                .unwrap();
        }
        let (meta, data) = store.load_latest().unwrap().unwrap();
        assert_eq!(meta.last_log_id.unwrap().index, 12);
        assert_eq!(decode_data(&data).unwrap().0.zxid, 12);
        assert_eq!(store.files().len(), KEEP_SNAPSHOTS);
    }
}
