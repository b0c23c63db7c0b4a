//! A small filesystem per member for the disk-full nemesis: each member's `data` directory is
//! a tmpfs mount of its own, so one member can run out of space while the others (and the
//! harness, whose logs live next to it) keep theirs. Filling writes a ballast file until the
//! kernel answers ENOSPC; healing deletes it.
//!
//! Why tmpfs and not a loop-mounted ext4 image: tmpfs needs no image file, no mkfs and no loop
//! device (which containers often lack), and mounts and unmounts in milliseconds. It has no
//! real fsync, which does not matter here: the fault is space exhaustion, not power loss. It
//! does honour `fallocate`, so a member's preallocated Raft log segment keeps its space while
//! the ballast takes the rest — as on a real disk.
//!
//! Mounts are removed on drop, also when the run panics; a mount still busy (a member that
//! outlived its ensemble) is detached lazily so nothing is left in the mount table.

use std::fs::{self, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Size of each member's filesystem. A member needs room for its preallocated Raft log
/// segments (64 MiB each; two while one rolls over), snapshots of the workloads' tree (about
/// 15 MB each after half an hour of the long run's workloads, two kept plus one being
/// written), and slack: 160 MiB ran out after 28 minutes of run Q with no ballast in place.
pub const MEMBER_FS_MIB: u64 = 384;
/// Ballast is written in chunks of this size, then in [`FINE_CHUNK_BYTES`] once a chunk no
/// longer fits, so the filesystem ends up full to the last page.
const COARSE_CHUNK_BYTES: usize = 1 << 20;
const FINE_CHUNK_BYTES: usize = 4096;
const BALLAST_NAME: &str = "chaos-ballast";

#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error("`{cmd}` failed: {stderr}")]
    Command { cmd: String, stderr: String },
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("member {0} has no filesystem of its own in this run")]
    NoMount(u64),
}

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> DiskError {
    let what = what.into();
    move |source| DiskError::Io { what, source }
}

fn run(cmd: &str, args: &[&str]) -> Result<(), DiskError> {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .map_err(io_err(format!("running {cmd}")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(DiskError::Command {
            cmd: format!("{cmd} {}", args.join(" ")),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

/// Bytes still available to an unprivileged writer on the filesystem holding `path`.
pub fn free_bytes(path: &Path) -> Result<u64, DiskError> {
    use std::os::unix::ffi::OsStrExt as _;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|e| io_err(format!("statvfs {}", path.display()))(e.into()))?;
    // SAFETY: statvfs is plain old data, for which all-zero bytes are a valid value.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: statvfs(3) fills the struct we own from a NUL-terminated path we own.
    let rc = unsafe { libc::statvfs(c_path.as_ptr(), &mut st) };
    if rc != 0 {
        return Err(io_err(format!("statvfs {}", path.display()))(
            std::io::Error::last_os_error(),
        ));
    }
    // Both are 64-bit on the Linux targets this harness runs on.
    let (blocks, block_bytes): (u64, u64) = (st.f_bavail, st.f_frsize);
    Ok(blocks.saturating_mul(block_bytes))
}

struct Mount {
    id: u64,
    path: PathBuf,
    /// Ballast bytes written by the current fill, if the disk is full.
    ballast_bytes: Option<u64>,
}

/// One tmpfs per member, mounted on its data directory.
pub struct MemberDisks {
    mounts: Vec<Mount>,
    size_mib: u64,
}

impl MemberDisks {
    /// Why members cannot have their own filesystems here, if they cannot.
    pub fn unavailable_reason() -> Option<String> {
        // SAFETY: geteuid(2) has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            return Some("mounting a filesystem per member needs root".into());
        }
        let probe = match tempfile::tempdir() {
            Ok(d) => d,
            Err(e) => return Some(format!("cannot make a probe directory: {e}")),
        };
        let path = probe.path().to_string_lossy().into_owned();
        match run("mount", &["-t", "tmpfs", "-o", "size=1m", "tmpfs", &path]) {
            Ok(()) => {
                let _ = run("umount", &[&path]);
                None
            }
            Err(e) => Some(format!("cannot mount a tmpfs: {e}")),
        }
    }

    /// Mounts a `size_mib` tmpfs on `data_dir(id)` for every member (creating the directory).
    /// Call it before the members start: anything written there earlier is hidden by the mount.
    pub fn mount(
        ids: &[u64],
        data_dir: impl Fn(u64) -> PathBuf,
        size_mib: u64,
    ) -> Result<MemberDisks, DiskError> {
        let mut disks = MemberDisks {
            mounts: Vec::new(),
            size_mib,
        };
        for &id in ids {
            let path = data_dir(id);
            fs::create_dir_all(&path).map_err(io_err(format!("creating {}", path.display())))?;
            let p = path.to_string_lossy().into_owned();
            let opts = format!("size={size_mib}m,mode=0755");
            // The source name shows in the mount table, so a leftover is recognisable.
            run(
                "mount",
                &[
                    "-t",
                    "tmpfs",
                    "-o",
                    &opts,
                    &format!("corral-chaos-m{id}"),
                    &p,
                ],
            )?;
            // Pushed only once mounted: drop unmounts exactly what was mounted.
            disks.mounts.push(Mount {
                id,
                path,
                ballast_bytes: None,
            });
        }
        Ok(disks)
    }

    pub fn size_mib(&self) -> u64 {
        self.size_mib
    }

    fn mount_of(&mut self, id: u64) -> Result<&mut Mount, DiskError> {
        self.mounts
            .iter_mut()
            .find(|m| m.id == id)
            .ok_or(DiskError::NoMount(id))
    }

    /// Where member `id`'s filesystem is mounted.
    pub fn path(&self, id: u64) -> Option<&Path> {
        self.mounts
            .iter()
            .find(|m| m.id == id)
            .map(|m| m.path.as_path())
    }

    /// Members whose disk is full now.
    pub fn full(&self) -> Vec<u64> {
        self.mounts
            .iter()
            .filter(|m| m.ballast_bytes.is_some())
            .map(|m| m.id)
            .collect()
    }

    /// Writes ballast on member `id`'s filesystem until ENOSPC; returns the ballast's size.
    /// The ballast is fsynced (a no-op on tmpfs, but it keeps the fill honest on a real
    /// filesystem, where delayed allocation could otherwise defer the ENOSPC).
    pub fn fill(&mut self, id: u64) -> Result<u64, DiskError> {
        let m = self.mount_of(id)?;
        let path = m.path.join(BALLAST_NAME);
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io_err(format!("creating {}", path.display())))?;
        let mut written = file
            .metadata()
            .map_err(io_err(format!("stat {}", path.display())))?
            .len();
        let zeros = vec![0u8; COARSE_CHUNK_BYTES];
        for chunk in [COARSE_CHUNK_BYTES, FINE_CHUNK_BYTES] {
            loop {
                match file.write(&zeros[..chunk]) {
                    Ok(0) => break,
                    Ok(n) => written += n as u64,
                    Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
                    Err(e) => return Err(io_err(format!("writing {}", path.display()))(e)),
                }
            }
        }
        match file.sync_all() {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => {}
            Err(e) => return Err(io_err(format!("syncing {}", path.display()))(e)),
        }
        m.ballast_bytes = Some(written);
        tracing::info!(member = id, ballast_bytes = written, "disk filled");
        Ok(written)
    }

    /// Deletes member `id`'s ballast (nothing to do if its disk is not full).
    pub fn drain(&mut self, id: u64) -> Result<(), DiskError> {
        let m = self.mount_of(id)?;
        let path = m.path.join(BALLAST_NAME);
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(format!("removing {}", path.display()))(e)),
        }
        m.ballast_bytes = None;
        Ok(())
    }

    /// Deletes every ballast.
    pub fn drain_all(&mut self) -> Result<(), DiskError> {
        let ids: Vec<u64> = self.mounts.iter().map(|m| m.id).collect();
        for id in ids {
            self.drain(id)?;
        }
        Ok(())
    }

    /// Copies what is on member `id`'s filesystem (not the ballast) to `to`, so a kept run
    /// directory still holds the member's data after the mount is gone.
    pub fn preserve(&self, id: u64, to: &Path) -> Result<(), DiskError> {
        let Some(from) = self.path(id) else {
            return Err(DiskError::NoMount(id));
        };
        copy_tree(from, to)
    }
}

/// Copies a directory tree iteratively (explicit stack: the depth is the member's layout, but
/// nothing here recurses on it anyway). The ballast is skipped.
fn copy_tree(from: &Path, to: &Path) -> Result<(), DiskError> {
    let mut stack = vec![(from.to_path_buf(), to.to_path_buf())];
    while let Some((src, dst)) = stack.pop() {
        fs::create_dir_all(&dst).map_err(io_err(format!("creating {}", dst.display())))?;
        for entry in fs::read_dir(&src).map_err(io_err(format!("listing {}", src.display())))? {
            let entry = entry.map_err(io_err(format!("listing {}", src.display())))?;
            if entry.file_name() == BALLAST_NAME {
                continue;
            }
            let kind = entry
                .file_type()
                .map_err(io_err(format!("stat {}", entry.path().display())))?;
            let target = dst.join(entry.file_name());
            if kind.is_dir() {
                stack.push((entry.path(), target));
            } else if kind.is_file() {
                fs::copy(entry.path(), &target)
                    .map_err(io_err(format!("copying {}", entry.path().display())))?;
            }
        }
    }
    Ok(())
}

impl Drop for MemberDisks {
    fn drop(&mut self) {
        for m in self.mounts.drain(..) {
            let p = m.path.to_string_lossy().into_owned();
            if let Err(e) = run("umount", &[&p]) {
                // Busy: a process still has a file open there. Detach it now; the kernel
                // frees it when the last user goes.
                tracing::warn!(%e, path = %p, "unmount failed; detaching lazily");
                if let Err(e) = run("umount", &["-l", &p]) {
                    tracing::error!(%e, path = %p, "cannot unmount a member filesystem");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // In the library's unit tests, not next to the ensemble tests: a process that spawns
    // members meanwhile could hold the ballast open through a fork and keep its space.
    /// The plumbing alone: one filesystem per member, a fill reaches ENOSPC on that member only,
    /// a drain gives the space back, and the mounts are gone after a drop during a panic.
    #[test]
    fn member_disks_fill_drain_and_unmount() {
        if let Some(reason) = MemberDisks::unavailable_reason() {
            println!("SKIPPED: {reason}");
            return;
        }
        let root = tempfile::tempdir().unwrap();
        let mut disks =
            MemberDisks::mount(&[1, 2], |id| root.path().join(format!("m{id}")), 8).unwrap();
        let (one, two) = (
            disks.path(1).unwrap().to_path_buf(),
            disks.path(2).unwrap().to_path_buf(),
        );
        let free_before = free_bytes(&one).unwrap();
        assert!(free_before > 7 << 20, "{free_before}");
        let ballast = disks.fill(1).unwrap();
        assert!(ballast > 7 << 20, "{ballast}");
        assert_eq!(disks.full(), vec![1]);
        let err = std::fs::write(one.join("probe"), vec![0u8; 64 * 1024]).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENOSPC), "{err}");
        assert_eq!(
            free_bytes(&two).unwrap(),
            free_before,
            "member 2 is untouched"
        );
        disks.drain(1).unwrap();
        assert!(disks.full().is_empty());
        std::fs::write(one.join("probe"), vec![0u8; 64 * 1024]).unwrap();

        let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
            let _disks = disks;
            panic!("planted");
        }));
        assert!(unwound.is_err());
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
        for p in [&one, &two] {
            assert!(
                !mounts.contains(&*p.to_string_lossy()),
                "{} still mounted",
                p.display()
            );
        }
    }
}
