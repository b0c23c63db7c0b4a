//! An exclusive claim on a data directory, so that two servers never write the same txn log
//! or snapshots: each would trust its own view of the files and corrupt the other's.
//!
//! The claim is an `flock(2)` on `corral.lock` in the directory. The kernel drops it when the
//! holder exits, however it exits, so a crashed server leaves nothing to clean up; the PID
//! written into the file only serves the error message of the next claimant.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use crate::error::{IoContext, StorageError};

/// Name of the lock file inside a locked directory.
pub const LOCK_FILE_NAME: &str = "corral.lock";

/// Held for as long as the directory is in use; dropping it releases the directory.
#[derive(Debug)]
pub struct DirLock {
    dir: PathBuf,
    /// Open for the lifetime of the claim: closing it is what releases the lock.
    _file: File,
}

impl DirLock {
    /// Claims `dir` (created if missing). Fails with [`StorageError::Locked`] if another
    /// holder — another process, or another claim in this one — has it.
    pub fn acquire(dir: &Path) -> Result<DirLock, StorageError> {
        std::fs::create_dir_all(dir).at(dir)?;
        let path = dir.join(LOCK_FILE_NAME);
        // Not truncated on open: until the lock is ours, the file holds the holder's PID.
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .at(&path)?;
        // SAFETY: flock only reads the descriptor, which `file` keeps open for the call.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let err = std::io::Error::last_os_error();
            if err.kind() != std::io::ErrorKind::WouldBlock {
                return Err(StorageError::io(&path, err));
            }
            let mut text = String::new();
            let holder_pid = file
                .read_to_string(&mut text)
                .ok()
                .and_then(|_| text.trim().parse::<u32>().ok());
            return Err(StorageError::Locked {
                dir: dir.to_path_buf(),
                holder_pid,
            });
        }
        // Ours now: record who holds it. Not synced, as it is only a hint for error messages.
        file.set_len(0).at(&path)?;
        file.rewind().at(&path)?;
        writeln!(file, "{}", std::process::id()).at(&path)?;
        tracing::debug!(dir = %dir.display(), "data directory locked");
        Ok(DirLock {
            dir: dir.to_path_buf(),
            _file: file,
        })
    }

    /// The directory this lock holds.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_directory_cannot_be_claimed_again_until_released() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        let held = DirLock::acquire(&dir).unwrap();
        assert_eq!(held.dir(), dir);
        match DirLock::acquire(&dir) {
            Err(StorageError::Locked { dir: d, holder_pid }) => {
                assert_eq!(d, dir);
                assert_eq!(holder_pid, Some(std::process::id()));
                let message = StorageError::Locked { dir: d, holder_pid }.to_string();
                assert!(message.contains(&dir.display().to_string()), "{message}");
                assert!(message.contains(&format!("pid {}", std::process::id())));
            }
            other => panic!("second claim: {other:?}"),
        }
        drop(held);
        DirLock::acquire(&dir).unwrap();
    }

    #[test]
    fn a_stale_pid_in_the_file_does_not_block_a_claim() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join(LOCK_FILE_NAME), "999999999\n").unwrap();
        let _held = DirLock::acquire(tmp.path()).unwrap();
        let text = std::fs::read_to_string(tmp.path().join(LOCK_FILE_NAME)).unwrap();
        assert_eq!(text.trim(), std::process::id().to_string());
    }
}
