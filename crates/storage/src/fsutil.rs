//! Small filesystem helpers: directory listing by zxid, directory fsync, preallocation.

use std::fs::File;
use std::path::{Path, PathBuf};

use crate::error::{IoContext, StorageError};
use crate::format::{parse_name, TMP_SUFFIX};

/// Files in `dir` named `<prefix><16 hex>`, sorted by zxid ascending. A missing directory
/// lists as empty.
pub(crate) fn list_by_zxid(dir: &Path, prefix: &str) -> Result<Vec<(i64, PathBuf)>, StorageError> {
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(StorageError::io(dir, e)),
    };
    for entry in entries {
        let path = entry.at(dir)?.path();
        if let Some(zxid) = parse_name(&path, prefix) {
            out.push((zxid, path));
        }
    }
    out.sort_by_key(|(z, _)| *z);
    Ok(out)
}

/// Leftover `<prefix>*.tmp` files (an interrupted snapshot or segment creation).
pub(crate) fn list_tmp(dir: &Path, prefix: &str) -> Result<Vec<PathBuf>, StorageError> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).at(dir)? {
        let path = entry.at(dir)?.path();
        if let Some(name) = path.file_name().and_then(|n| n.to_str()) {
            if name.starts_with(prefix) && name.ends_with(TMP_SUFFIX) {
                out.push(path);
            }
        }
    }
    Ok(out)
}

/// Makes creations, renames and deletions in `dir` durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), StorageError> {
    File::open(dir).and_then(|d| d.sync_all()).at(dir)
}

/// Extends `file` to `new_len` bytes with zero-filled, really allocated space, so that later
/// appends neither hit ENOSPC nor change the file size (and fdatasync stays cheap). Falls
/// back to a sparse `set_len` where fallocate is unsupported.
pub(crate) fn preallocate(file: &File, cur_len: u64, new_len: u64) -> std::io::Result<()> {
    if new_len <= cur_len {
        return Ok(());
    }
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: plain syscall on a file descriptor we own; no memory is passed.
        let rc = unsafe {
            libc::fallocate(
                file.as_raw_fd(),
                0,
                cur_len as libc::off_t,
                (new_len - cur_len) as libc::off_t,
            )
        };
        if rc == 0 {
            return Ok(());
        }
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EOPNOTSUPP) {
            return Err(err);
        }
    }
    file.set_len(new_len)
}

/// Replaces `dir/name` with `bytes` so that a crash leaves the old or the new content, never a
/// mix: temp file, fsync, rename, directory fsync. For small files other crates keep in the
/// data directory (the session secret), so that every fsync stays in this crate.
pub fn replace_file_durably(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), StorageError> {
    use std::io::Write;
    std::fs::create_dir_all(dir).at(dir)?;
    let path = dir.join(name);
    let tmp = dir.join(format!("{name}.tmp"));
    let result = (|| {
        let mut f = File::create(&tmp).at(&tmp)?;
        f.write_all(bytes).at(&tmp)?;
        f.sync_all().at(&tmp)?;
        std::fs::rename(&tmp, &path).at(&path)?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Moves `files` (each directly inside some directory) into `dest` (created if missing), under
/// the same names, durably: the renames and both directories are synced before it returns.
/// Nothing is overwritten: if a name is taken in `dest`, that file and the ones after it stay
/// where they are and the error names it. Returns the new paths. Renames stay within one file
/// system, so each file is either in its old place or its new one, never lost or copied.
pub fn move_files_durably(files: &[PathBuf], dest: &Path) -> Result<Vec<PathBuf>, StorageError> {
    std::fs::create_dir_all(dest).at(dest)?;
    let mut moved = Vec::with_capacity(files.len());
    let mut sources: Vec<&Path> = Vec::new();
    let mut result = Ok(());
    for file in files {
        let Some(name) = file.file_name() else {
            result = Err(StorageError::io(
                file,
                std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a file name"),
            ));
            break;
        };
        let target = dest.join(name);
        if target.exists() {
            result = Err(StorageError::io(
                &target,
                std::io::Error::new(std::io::ErrorKind::AlreadyExists, "already exists"),
            ));
            break;
        }
        if let Err(e) = std::fs::rename(file, &target).at(file) {
            result = Err(e);
            break;
        }
        if let Some(parent) = file.parent() {
            if !sources.contains(&parent) {
                sources.push(parent);
            }
        }
        moved.push(target);
    }
    // Whatever moved is made durable, also when a later file failed.
    sync_dir(dest)?;
    for dir in sources {
        sync_dir(dir)?;
    }
    result.map(|()| moved)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_moved_aside_and_nothing_is_overwritten() {
        let tmp = tempfile::tempdir().unwrap();
        let a = tmp.path().join("log.1");
        let b = tmp.path().join("snapshot.2");
        std::fs::write(&a, b"a").unwrap();
        std::fs::write(&b, b"b").unwrap();
        let dest = tmp.path().join("aside");
        let moved = move_files_durably(&[a.clone(), b.clone()], &dest).unwrap();
        assert_eq!(moved, vec![dest.join("log.1"), dest.join("snapshot.2")]);
        assert!(!a.exists() && !b.exists());
        assert_eq!(std::fs::read(dest.join("log.1")).unwrap(), b"a");

        // A second file of the same name stays where it is.
        std::fs::write(&a, b"newer").unwrap();
        let err = move_files_durably(std::slice::from_ref(&a), &dest).unwrap_err();
        assert!(err.to_string().contains("already exists"), "{err}");
        assert_eq!(std::fs::read(&a).unwrap(), b"newer");
        assert_eq!(std::fs::read(dest.join("log.1")).unwrap(), b"a");
    }
}
