//! `faultfs`: a FUSE passthrough filesystem that can lose power.
//!
//! A [`Mount`] serves a backing directory at a mount point. File data written through the
//! mount and not yet fsynced (`fsync` or `fdatasync` on that file) lives only in this
//! process's memory, the model of a page cache: reads see it, the backing file does not have
//! it. [`Mount::lose`] is the power loss: every unsynced byte is dropped, and each file reads
//! again as it was at its last fsync, content and size.
//!
//! What counts as data, and is lost: `write`, `ftruncate`/`O_TRUNC`, and `fallocate` growing
//! a file (all per file, undone together). What passes through at once and survives: the
//! namespace — create, mkdir, rename, unlink, rmdir, chmod/chown. So after a power loss a
//! file created and never fsynced still exists, empty (its size is data); a file renamed
//! over another keeps the new name with the content it had at its last fsync. That is a
//! journaling file system that commits directory changes before data (ext4's
//! `data=writeback`), and it catches the classic bug (rename of a file whose data was never
//! synced). It does not catch a missing fsync of a *directory*: a renamed or created name is
//! never undone. Only plain preallocation is modelled among fallocate modes; punching holes
//! and the like answer EOPNOTSUPP.
//!
//! The kernel caches nothing for the mount: no writeback cache is negotiated, every file is
//! opened with direct I/O, and attributes and names have a zero time-to-live, so every read,
//! write and fsync reaches this process. Memory mappings of files are therefore unsupported
//! (Corral's storage does not map files).
//!
//! Unmounting happens when the [`Mount`] is dropped, on panic too (unwinding drops it); a
//! process killed outright leaves a dead mount behind, which `umount -l <dir>` removes.

mod fs;
pub mod overlay;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::Serialize;

use fs::{FaultFs, Shared};

#[derive(Debug, thiserror::Error)]
pub enum FaultFsError {
    #[error("mounting {backing} at {mountpoint}: {source}")]
    Mount {
        backing: PathBuf,
        mountpoint: PathBuf,
        source: std::io::Error,
    },
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
}

/// Counters of one mount since it started.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Stats {
    pub writes: u64,
    pub bytes_written: u64,
    /// fsync/fdatasync of files.
    pub fsyncs: u64,
    pub dir_fsyncs: u64,
    pub losses: u64,
    /// Files and bytes (page granularity) dropped by all power losses so far.
    pub lost_files: u64,
    pub lost_bytes: u64,
    /// Files with unsynced state right now, and its size (page granularity).
    pub dirty_files: u64,
    pub dirty_bytes: u64,
}

/// What one power loss dropped.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct Loss {
    pub files: u64,
    /// Page granularity.
    pub bytes: u64,
}

/// A mounted faultfs. Dropping it unmounts.
pub struct Mount {
    mountpoint: PathBuf,
    shared: Arc<Mutex<Shared>>,
    session: Option<fuser::BackgroundSession>,
}

impl Mount {
    /// Serves `backing` at `mountpoint` (both existing directories) from a background thread.
    /// Needs root (the mount is made with mount(2), no libfuse or fusermount involved).
    pub fn start(backing: &Path, mountpoint: &Path) -> Result<Mount, FaultFsError> {
        let mount_err = |source| FaultFsError::Mount {
            backing: backing.to_path_buf(),
            mountpoint: mountpoint.to_path_buf(),
            source,
        };
        let backing = backing.canonicalize().map_err(mount_err)?;
        let shared = Arc::new(Mutex::new(Shared::default()));
        let fs = FaultFs::new(backing.clone(), shared.clone());
        let options = [
            fuser::MountOption::FSName("corral-faultfs".into()),
            fuser::MountOption::Subtype("faultfs".into()),
        ];
        let session = fuser::spawn_mount2(fs, mountpoint, &options).map_err(mount_err)?;
        tracing::info!(backing = %backing.display(), mountpoint = %mountpoint.display(), "faultfs mounted");
        Ok(Mount {
            mountpoint: mountpoint.to_path_buf(),
            shared,
            session: Some(session),
        })
    }

    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// Power loss: drops every unsynced byte; files return to their last synced content and
    /// size. Processes writing to the mount should be dead first, as they would be.
    pub fn lose(&self) -> Loss {
        let mut sh = self.shared.lock().unwrap_or_else(|p| p.into_inner());
        let loss = Loss {
            files: sh.dirty.len() as u64,
            bytes: sh.dirty.values().map(|d| d.dirty_bytes()).sum(),
        };
        sh.dirty.clear();
        sh.stats.losses += 1;
        sh.stats.lost_files += loss.files;
        sh.stats.lost_bytes += loss.bytes;
        tracing::info!(mountpoint = %self.mountpoint.display(), files = loss.files, bytes = loss.bytes, "faultfs power loss");
        loss
    }

    pub fn stats(&self) -> Stats {
        let sh = self.shared.lock().unwrap_or_else(|p| p.into_inner());
        let mut s = sh.stats.clone();
        s.dirty_files = sh.dirty.len() as u64;
        s.dirty_bytes = sh.dirty.values().map(|d| d.dirty_bytes()).sum();
        s
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        // fuser detaches the mount (umount2 with MNT_DETACH) when its session is dropped;
        // the serving thread then ends once the kernel closes the connection.
        drop(self.session.take());
        if is_mounted(&self.mountpoint) {
            lazy_unmount(&self.mountpoint);
        }
        tracing::info!(mountpoint = %self.mountpoint.display(), "faultfs unmounted");
    }
}

/// Whether `dir` is a mount point in this process's mount table.
pub fn is_mounted(dir: &Path) -> bool {
    let Ok(dir) = dir
        .canonicalize()
        .or_else(|_| Ok::<_, ()>(dir.to_path_buf()))
    else {
        return false;
    };
    let Ok(table) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    // Field 5 is the mount point (octal escapes for spaces, which our paths do not have).
    table
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|m| Path::new(m) == dir)
}

/// Detaches whatever is mounted at `dir` (a leftover of a killed process, say).
pub fn lazy_unmount(dir: &Path) {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
        return;
    };
    // SAFETY: umount2 with a NUL-terminated path; no memory is retained.
    let rc = unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    if rc != 0 {
        tracing::warn!(dir = %dir.display(), err = %std::io::Error::last_os_error(), "umount failed");
    }
}
