//! The FUSE side: a passthrough over a backing directory whose file data goes through
//! [`Dirty`] until fsync. Metadata operations (create, mkdir, rename, unlink, rmdir, chmod)
//! pass through at once; see the module documentation for why.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::{File, Metadata, OpenOptions};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::consts::FOPEN_DIRECT_IO;
use fuser::{
    FileAttr, FileType, Filesystem, KernelConfig, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow,
    FUSE_ROOT_ID,
};

use super::overlay::Dirty;
use super::Stats;

/// Nothing is cached in the kernel: sizes and contents change under it at a power loss.
const TTL: Duration = Duration::ZERO;

/// State shared between the FUSE thread and the controller (`lose`, `stats`).
#[derive(Debug, Default)]
pub(crate) struct Shared {
    /// Unsynced state per inode.
    pub dirty: HashMap<u64, Dirty>,
    pub stats: Stats,
}

struct Handle {
    ino: u64,
    file: File,
    append: bool,
}

pub(crate) struct FaultFs {
    backing: PathBuf,
    shared: Arc<Mutex<Shared>>,
    /// Inode → path relative to the backing root ("" is the root). Inodes are never reused.
    paths: HashMap<u64, PathBuf>,
    inodes: HashMap<PathBuf, u64>,
    next_ino: u64,
    handles: HashMap<u64, Handle>,
    next_fh: u64,
}

fn errno(e: &std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or(libc::EIO)
}

fn time(secs: i64, nsecs: i64) -> SystemTime {
    if secs >= 0 {
        UNIX_EPOCH + Duration::new(secs as u64, nsecs as u32)
    } else {
        UNIX_EPOCH
    }
}

impl FaultFs {
    pub(crate) fn new(backing: PathBuf, shared: Arc<Mutex<Shared>>) -> FaultFs {
        let mut fs = FaultFs {
            backing,
            shared,
            paths: HashMap::new(),
            inodes: HashMap::new(),
            next_ino: FUSE_ROOT_ID + 1,
            handles: HashMap::new(),
            next_fh: 1,
        };
        fs.paths.insert(FUSE_ROOT_ID, PathBuf::new());
        fs.inodes.insert(PathBuf::new(), FUSE_ROOT_ID);
        fs
    }

    fn shared(&self) -> MutexGuard<'_, Shared> {
        // A panic while holding the lock leaves plain data behind; keep serving.
        self.shared.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn rel(&self, ino: u64) -> Option<&PathBuf> {
        self.paths.get(&ino)
    }

    fn full(&self, rel: &Path) -> PathBuf {
        self.backing.join(rel)
    }

    fn child(&self, parent: u64, name: &OsStr) -> Result<PathBuf, i32> {
        let p = self.rel(parent).ok_or(libc::ENOENT)?;
        Ok(p.join(name))
    }

    fn ino_for(&mut self, rel: &Path) -> u64 {
        if let Some(&ino) = self.inodes.get(rel) {
            return ino;
        }
        let ino = self.next_ino;
        self.next_ino += 1;
        self.paths.insert(ino, rel.to_path_buf());
        self.inodes.insert(rel.to_path_buf(), ino);
        ino
    }

    fn attr(&self, ino: u64, md: &Metadata) -> FileAttr {
        let kind = match md.mode() & libc::S_IFMT {
            libc::S_IFDIR => FileType::Directory,
            libc::S_IFLNK => FileType::Symlink,
            _ => FileType::RegularFile,
        };
        let size = self
            .shared()
            .dirty
            .get(&ino)
            .map_or(md.size(), |d| d.size_bytes());
        FileAttr {
            ino,
            size,
            blocks: size.div_ceil(512),
            atime: time(md.atime(), md.atime_nsec()),
            mtime: time(md.mtime(), md.mtime_nsec()),
            ctime: time(md.ctime(), md.ctime_nsec()),
            crtime: UNIX_EPOCH,
            kind,
            perm: (md.mode() & 0o7777) as u16,
            nlink: md.nlink() as u32,
            uid: md.uid(),
            gid: md.gid(),
            rdev: md.rdev() as u32,
            blksize: 4096,
            flags: 0,
        }
    }

    /// Attributes of `ino`: by path, or through an open handle once the path is gone.
    fn stat(&self, ino: u64) -> Result<FileAttr, i32> {
        let md = match self.rel(ino) {
            Some(rel) => std::fs::symlink_metadata(self.full(rel)).map_err(|e| errno(&e))?,
            None => self
                .handles
                .values()
                .find(|h| h.ino == ino)
                .ok_or(libc::ENOENT)?
                .file
                .metadata()
                .map_err(|e| errno(&e))?,
        };
        Ok(self.attr(ino, &md))
    }

    fn entry(&mut self, rel: &Path) -> Result<FileAttr, i32> {
        let md = std::fs::symlink_metadata(self.full(rel)).map_err(|e| errno(&e))?;
        let ino = self.ino_for(rel);
        Ok(self.attr(ino, &md))
    }

    fn open_backing(&self, rel: &Path, create_mode: Option<(u32, bool)>) -> std::io::Result<File> {
        // Always read-write: reads of clean pages and syncs go through the same descriptor
        // (the daemon runs as root, so permissions do not stand in the way).
        let mut o = OpenOptions::new();
        o.read(true).write(true);
        if let Some((mode, exclusive)) = create_mode {
            if exclusive {
                o.create_new(true);
            } else {
                o.create(true);
            }
            o.mode(mode);
        }
        o.open(self.full(rel))
    }

    fn add_handle(&mut self, ino: u64, file: File, flags: i32) -> u64 {
        let fh = self.next_fh;
        self.next_fh += 1;
        self.handles.insert(
            fh,
            Handle {
                ino,
                file,
                append: flags & libc::O_APPEND != 0,
            },
        );
        fh
    }

    /// Truncates through the dirty state (a truncation is not durable until fsync).
    fn set_size(&self, ino: u64, file: &File, size: u64) -> std::io::Result<()> {
        let len = file.metadata()?.len();
        let mut sh = self.shared();
        sh.dirty
            .entry(ino)
            .or_insert_with(|| Dirty::new(len))
            .set_size(size);
        Ok(())
    }

    /// A file that lost its last name and is no longer open is gone: so is its dirty state.
    fn forget_if_orphan(&mut self, ino: u64) {
        if !self.paths.contains_key(&ino) && !self.handles.values().any(|h| h.ino == ino) {
            self.shared().dirty.remove(&ino);
        }
    }

    fn drop_path(&mut self, rel: &Path) {
        if let Some(ino) = self.inodes.remove(rel) {
            self.paths.remove(&ino);
            self.forget_if_orphan(ino);
        }
    }

    fn any_file(&self, ino: u64) -> Option<&File> {
        self.handles
            .values()
            .find(|h| h.ino == ino)
            .map(|h| &h.file)
    }
}

impl Filesystem for FaultFs {
    fn init(&mut self, _req: &Request<'_>, _config: &mut KernelConfig) -> Result<(), i32> {
        // No writeback cache is requested (fuser asks for none by default), so every write
        // reaches the daemon; files are opened with direct I/O so no read is served from
        // the kernel's cache of a state a power loss has undone.
        Ok(())
    }

    fn lookup(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEntry) {
        match self.child(parent, name).and_then(|rel| self.entry(&rel)) {
            Ok(attr) => reply.entry(&TTL, &attr, 0),
            Err(e) => reply.error(e),
        }
    }

    fn getattr(&mut self, _req: &Request<'_>, ino: u64, _fh: Option<u64>, reply: ReplyAttr) {
        match self.stat(ino) {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<u64>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<u32>,
        reply: ReplyAttr,
    ) {
        let result = (|| -> Result<(), i32> {
            let path = self.rel(ino).map(|r| self.full(r));
            if let Some(mode) = mode {
                let p = path.as_ref().ok_or(libc::ENOENT)?;
                std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode & 0o7777))
                    .map_err(|e| errno(&e))?;
            }
            if uid.is_some() || gid.is_some() {
                let p = path.as_ref().ok_or(libc::ENOENT)?;
                std::os::unix::fs::chown(p, uid, gid).map_err(|e| errno(&e))?;
            }
            if let Some(size) = size {
                let by_handle = fh.and_then(|fh| self.handles.get(&fh)).map(|h| &h.file);
                let opened;
                let file = match by_handle.or_else(|| self.any_file(ino)) {
                    Some(f) => f,
                    None => {
                        let rel = self.rel(ino).ok_or(libc::ENOENT)?.clone();
                        opened = self.open_backing(&rel, None).map_err(|e| errno(&e))?;
                        &opened
                    }
                };
                self.set_size(ino, file, size).map_err(|e| errno(&e))?;
            }
            Ok(())
        })();
        match result.and_then(|()| self.stat(ino)) {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn mkdir(
        &mut self,
        _req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let result = self.child(parent, name).and_then(|rel| {
            std::fs::DirBuilder::new()
                .mode(mode & !umask)
                .create(self.full(&rel))
                .map_err(|e| errno(&e))?;
            self.entry(&rel)
        });
        match result {
            Ok(attr) => reply.entry(&TTL, &attr, 0),
            Err(e) => reply.error(e),
        }
    }

    fn unlink(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEmpty) {
        match self.child(parent, name).and_then(|rel| {
            std::fs::remove_file(self.full(&rel)).map_err(|e| errno(&e))?;
            Ok(rel)
        }) {
            Ok(rel) => {
                self.drop_path(&rel);
                reply.ok()
            }
            Err(e) => reply.error(e),
        }
    }

    fn rmdir(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEmpty) {
        match self.child(parent, name).and_then(|rel| {
            std::fs::remove_dir(self.full(&rel)).map_err(|e| errno(&e))?;
            Ok(rel)
        }) {
            Ok(rel) => {
                self.drop_path(&rel);
                reply.ok()
            }
            Err(e) => reply.error(e),
        }
    }

    fn rename(
        &mut self,
        _req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        newparent: u64,
        newname: &OsStr,
        flags: u32,
        reply: ReplyEmpty,
    ) {
        // RENAME_EXCHANGE would swap two names; nothing here uses it.
        if flags & !libc::RENAME_NOREPLACE != 0 {
            return reply.error(libc::EINVAL);
        }
        let (from, to) = match (self.child(parent, name), self.child(newparent, newname)) {
            (Ok(a), Ok(b)) => (a, b),
            (Err(e), _) | (_, Err(e)) => return reply.error(e),
        };
        if flags & libc::RENAME_NOREPLACE != 0 && self.full(&to).symlink_metadata().is_ok() {
            return reply.error(libc::EEXIST);
        }
        if let Err(e) = std::fs::rename(self.full(&from), self.full(&to)) {
            return reply.error(errno(&e));
        }
        // The replaced target loses its name; everything at or under `from` moves.
        self.drop_path(&to);
        let moved: Vec<(PathBuf, u64)> = self
            .inodes
            .iter()
            .filter(|(p, _)| p.starts_with(&from))
            .map(|(p, &i)| (p.clone(), i))
            .collect();
        for (old, ino) in moved {
            let rest = old.strip_prefix(&from).expect("filtered on the prefix");
            // `join("")` would add a trailing slash, which names a directory.
            let new = if rest.as_os_str().is_empty() {
                to.clone()
            } else {
                to.join(rest)
            };
            self.inodes.remove(&old);
            self.inodes.insert(new.clone(), ino);
            self.paths.insert(ino, new);
        }
        reply.ok()
    }

    fn open(&mut self, _req: &Request<'_>, ino: u64, flags: i32, reply: ReplyOpen) {
        let Some(rel) = self.rel(ino).cloned() else {
            return reply.error(libc::ENOENT);
        };
        let file = match self.open_backing(&rel, None) {
            Ok(f) => f,
            Err(e) => return reply.error(errno(&e)),
        };
        if flags & libc::O_TRUNC != 0 {
            if let Err(e) = self.set_size(ino, &file, 0) {
                return reply.error(errno(&e));
            }
        }
        let fh = self.add_handle(ino, file, flags);
        reply.opened(fh, FOPEN_DIRECT_IO);
    }

    fn create(
        &mut self,
        _req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let rel = match self.child(parent, name) {
            Ok(r) => r,
            Err(e) => return reply.error(e),
        };
        let exclusive = flags & libc::O_EXCL != 0;
        let file = match self.open_backing(&rel, Some((mode & !umask, exclusive))) {
            Ok(f) => f,
            Err(e) => return reply.error(errno(&e)),
        };
        let attr = match self.entry(&rel) {
            Ok(a) => a,
            Err(e) => return reply.error(e),
        };
        if flags & libc::O_TRUNC != 0 {
            if let Err(e) = self.set_size(attr.ino, &file, 0) {
                return reply.error(errno(&e));
            }
        }
        let ino = attr.ino;
        let fh = self.add_handle(ino, file, flags);
        match self.stat(ino) {
            Ok(attr) => reply.created(&TTL, &attr, 0, fh, FOPEN_DIRECT_IO),
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        fh: u64,
        offset: i64,
        size: u32,
        _flags: i32,
        _lock_owner: Option<u64>,
        reply: ReplyData,
    ) {
        let Some(h) = self.handles.get(&fh) else {
            return reply.error(libc::EBADF);
        };
        let offset = offset.max(0) as u64;
        let sh = self.shared();
        let result = match sh.dirty.get(&ino) {
            Some(d) => d.read(&h.file, offset, size as usize),
            None => {
                let mut buf = vec![0u8; size as usize];
                let mut got = 0;
                loop {
                    match h.file.read_at(&mut buf[got..], offset + got as u64) {
                        Ok(0) => break Ok(()),
                        Ok(n) => {
                            got += n;
                            if got == buf.len() {
                                break Ok(());
                            }
                        }
                        Err(e) => break Err(e),
                    }
                }
                .map(|()| {
                    buf.truncate(got);
                    buf
                })
            }
        };
        drop(sh);
        match result {
            Ok(data) => reply.data(&data),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn write(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        fh: u64,
        offset: i64,
        data: &[u8],
        _write_flags: u32,
        _flags: i32,
        _lock_owner: Option<u64>,
        reply: ReplyWrite,
    ) {
        let Some(h) = self.handles.get(&fh) else {
            return reply.error(libc::EBADF);
        };
        let len = match h.file.metadata() {
            Ok(m) => m.len(),
            Err(e) => return reply.error(errno(&e)),
        };
        let mut sh = self.shared();
        let d = sh.dirty.entry(ino).or_insert_with(|| Dirty::new(len));
        // O_APPEND writes go to the end this layer knows, not the kernel's idea of it.
        let at = if h.append {
            d.size_bytes()
        } else {
            offset.max(0) as u64
        };
        let result = d.write(&h.file, at, data);
        if result.is_ok() {
            sh.stats.writes += 1;
            sh.stats.bytes_written += data.len() as u64;
        }
        drop(sh);
        match result {
            Ok(()) => reply.written(data.len() as u32),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn flush(&mut self, _req: &Request<'_>, _ino: u64, _fh: u64, _lo: u64, reply: ReplyEmpty) {
        // close(2) makes nothing durable.
        reply.ok()
    }

    fn release(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        fh: u64,
        _flags: i32,
        _lock_owner: Option<u64>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.handles.remove(&fh);
        self.forget_if_orphan(ino);
        reply.ok()
    }

    fn fsync(&mut self, _req: &Request<'_>, ino: u64, fh: u64, _datasync: bool, reply: ReplyEmpty) {
        let Some(h) = self.handles.get(&fh) else {
            return reply.error(libc::EBADF);
        };
        let mut sh = self.shared();
        let result = match sh.dirty.get(&ino) {
            Some(d) => d.sync(&h.file),
            None => h.file.sync_all(),
        };
        if result.is_ok() {
            sh.dirty.remove(&ino);
            sh.stats.fsyncs += 1;
        }
        drop(sh);
        match result {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn fsyncdir(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let Some(rel) = self.rel(ino) else {
            return reply.error(libc::ENOENT);
        };
        match File::open(self.full(rel)).and_then(|d| d.sync_all()) {
            Ok(()) => {
                self.shared().stats.dir_fsyncs += 1;
                reply.ok()
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn readdir(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        offset: i64,
        mut reply: ReplyDirectory,
    ) {
        let Some(rel) = self.rel(ino).cloned() else {
            return reply.error(libc::ENOENT);
        };
        let entries = match std::fs::read_dir(self.full(&rel)) {
            Ok(rd) => rd,
            Err(e) => return reply.error(errno(&e)),
        };
        let mut names: Vec<(std::ffi::OsString, FileType)> = entries
            .filter_map(|e| e.ok())
            .map(|e| {
                let kind = match e.file_type() {
                    Ok(t) if t.is_dir() => FileType::Directory,
                    Ok(t) if t.is_symlink() => FileType::Symlink,
                    _ => FileType::RegularFile,
                };
                (e.file_name(), kind)
            })
            .collect();
        // A stable order, so offsets mean the same thing between calls.
        names.sort_by(|a, b| a.0.cmp(&b.0));
        let mut all = vec![
            (ino, FileType::Directory, std::ffi::OsString::from(".")),
            (ino, FileType::Directory, std::ffi::OsString::from("..")),
        ];
        for (name, kind) in names {
            let child = self.ino_for(&rel.join(&name));
            all.push((child, kind, name));
        }
        for (i, (child, kind, name)) in all.into_iter().enumerate().skip(offset.max(0) as usize) {
            if reply.add(child, i as i64 + 1, kind, &name) {
                break;
            }
        }
        reply.ok()
    }

    fn statfs(&mut self, _req: &Request<'_>, _ino: u64, reply: ReplyStatfs) {
        let path =
            std::ffi::CString::new(self.backing.as_os_str().as_bytes()).expect("paths have no NUL");
        // SAFETY: statvfs fills the zeroed struct we pass; the path is NUL-terminated.
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        let rc = unsafe { libc::statvfs(path.as_ptr(), &mut st) };
        if rc != 0 {
            return reply.error(errno(&std::io::Error::last_os_error()));
        }
        reply.statfs(
            st.f_blocks,
            st.f_bfree,
            st.f_bavail,
            st.f_files,
            st.f_ffree,
            st.f_bsize as u32,
            st.f_namemax as u32,
            st.f_frsize as u32,
        );
    }

    fn access(&mut self, _req: &Request<'_>, _ino: u64, _mask: i32, reply: ReplyEmpty) {
        reply.ok()
    }

    fn fallocate(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        fh: u64,
        offset: i64,
        length: i64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        // Plain preallocation only; punching holes and the like are not modelled.
        if mode & !libc::FALLOC_FL_KEEP_SIZE != 0 || offset < 0 || length <= 0 {
            return reply.error(libc::EOPNOTSUPP);
        }
        let Some(h) = self.handles.get(&fh) else {
            return reply.error(libc::EBADF);
        };
        if mode & libc::FALLOC_FL_KEEP_SIZE != 0 {
            // Reserves space without changing the content a reader sees: nothing to lose.
            return reply.ok();
        }
        let len = match h.file.metadata() {
            Ok(m) => m.len(),
            Err(e) => return reply.error(errno(&e)),
        };
        self.shared()
            .dirty
            .entry(ino)
            .or_insert_with(|| Dirty::new(len))
            .allocate(offset as u64, length as u64);
        reply.ok()
    }
}
