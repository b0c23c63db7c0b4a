//! The unsynced state of one file: the "page cache" that a power loss throws away.
//!
//! The backing file always holds the file's content as of its last fsync. Writes, truncations
//! and preallocations since then live here, page by page, and reads merge the two. `sync`
//! writes the dirty state into the backing file and fsyncs it; dropping a [`Dirty`] without
//! syncing it is the power loss.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::FileExt;

/// Granularity of the dirty state; a write dirties every page it touches.
pub const PAGE_BYTES: u64 = 4096;

/// Writes, truncations and size changes of one file since its last sync.
#[derive(Debug)]
pub struct Dirty {
    /// The size readers see.
    size_bytes: u64,
    /// Backing bytes at or past this offset are not part of the file any more (a truncation
    /// since the last sync cut them off, or they lie past the backing file's end): pages
    /// loaded from the backing file read zeros there.
    backing_valid_bytes: u64,
    /// Dirty pages by index; each is exactly `PAGE_BYTES` long.
    pages: BTreeMap<u64, Box<[u8]>>,
}

impl Dirty {
    /// Clean state of a file whose backing file is `backing_len_bytes` long.
    pub fn new(backing_len_bytes: u64) -> Dirty {
        Dirty {
            size_bytes: backing_len_bytes,
            backing_valid_bytes: backing_len_bytes,
            pages: BTreeMap::new(),
        }
    }

    pub fn size_bytes(&self) -> u64 {
        self.size_bytes
    }

    /// Bytes held in memory (what a power loss would drop, at page granularity).
    pub fn dirty_bytes(&self) -> u64 {
        self.pages.len() as u64 * PAGE_BYTES
    }

    /// Page `index` as the backing file has it, clipped to what is still valid.
    fn load(&self, backing: &File, index: u64) -> std::io::Result<Box<[u8]>> {
        let mut page = vec![0u8; PAGE_BYTES as usize].into_boxed_slice();
        let start = index * PAGE_BYTES;
        if start < self.backing_valid_bytes {
            let want = (self.backing_valid_bytes - start).min(PAGE_BYTES) as usize;
            let mut got = 0;
            while got < want {
                let n = backing.read_at(&mut page[got..want], start + got as u64)?;
                if n == 0 {
                    break; // past the backing file's end: zeros
                }
                got += n;
            }
        }
        Ok(page)
    }

    pub fn write(&mut self, backing: &File, offset: u64, data: &[u8]) -> std::io::Result<()> {
        let mut done = 0usize;
        while done < data.len() {
            let at = offset + done as u64;
            let index = at / PAGE_BYTES;
            let in_page = (at % PAGE_BYTES) as usize;
            let n = (PAGE_BYTES as usize - in_page).min(data.len() - done);
            if !self.pages.contains_key(&index) {
                let page = self.load(backing, index)?;
                self.pages.insert(index, page);
            }
            let page = self.pages.get_mut(&index).expect("inserted above");
            page[in_page..in_page + n].copy_from_slice(&data[done..done + n]);
            done += n;
        }
        self.size_bytes = self.size_bytes.max(offset + data.len() as u64);
        Ok(())
    }

    pub fn read(&self, backing: &File, offset: u64, len: usize) -> std::io::Result<Vec<u8>> {
        let end = (offset + len as u64).min(self.size_bytes);
        let mut out = Vec::with_capacity(end.saturating_sub(offset) as usize);
        let mut at = offset;
        while at < end {
            let index = at / PAGE_BYTES;
            let in_page = (at % PAGE_BYTES) as usize;
            let n = (PAGE_BYTES - in_page as u64).min(end - at) as usize;
            match self.pages.get(&index) {
                Some(page) => out.extend_from_slice(&page[in_page..in_page + n]),
                None => out.extend_from_slice(&self.load(backing, index)?[in_page..in_page + n]),
            }
            at += n as u64;
        }
        Ok(out)
    }

    /// ftruncate: shrinking drops the data past `new_size_bytes`, growing reads as zeros.
    pub fn set_size(&mut self, new_size_bytes: u64) {
        if new_size_bytes < self.size_bytes {
            let first_gone = new_size_bytes.div_ceil(PAGE_BYTES);
            self.pages.split_off(&first_gone);
            // The page that holds the new end keeps only what lies before it.
            let tail = (new_size_bytes % PAGE_BYTES) as usize;
            if tail != 0 {
                if let Some(page) = self.pages.get_mut(&(new_size_bytes / PAGE_BYTES)) {
                    page[tail..].fill(0);
                }
            }
            self.backing_valid_bytes = self.backing_valid_bytes.min(new_size_bytes);
        }
        self.size_bytes = new_size_bytes;
    }

    /// fallocate without KEEP_SIZE: the file grows to cover the range; the new bytes are zero.
    pub fn allocate(&mut self, offset: u64, len: u64) {
        self.size_bytes = self.size_bytes.max(offset + len);
    }

    /// Makes the backing file equal to what readers see, and fsyncs it.
    pub fn sync(&self, backing: &File) -> std::io::Result<()> {
        let backing_len = backing.metadata()?.len();
        if self.backing_valid_bytes < backing_len {
            backing.set_len(self.backing_valid_bytes)?;
        }
        backing.set_len(self.size_bytes)?;
        for (&index, page) in &self.pages {
            let start = index * PAGE_BYTES;
            if start >= self.size_bytes {
                break;
            }
            let n = (self.size_bytes - start).min(PAGE_BYTES) as usize;
            backing.write_all_at(&page[..n], start)?;
        }
        backing.sync_all()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn backing(content: &[u8]) -> (tempfile::TempDir, File) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, content).unwrap();
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        (dir, f)
    }

    fn backing_content(f: &mut File) -> Vec<u8> {
        let mut out = Vec::new();
        let mut f = f.try_clone().unwrap();
        use std::io::Seek;
        f.seek(std::io::SeekFrom::Start(0)).unwrap();
        f.read_to_end(&mut out).unwrap();
        out
    }

    #[test]
    fn writes_are_seen_by_reads_and_reach_the_backing_file_only_on_sync() {
        let (_d, mut f) = backing(b"hello world");
        let mut d = Dirty::new(11);
        d.write(&f, 6, b"there, across pages").unwrap();
        d.write(&f, 5000, b"far").unwrap();
        assert_eq!(d.size_bytes(), 5003);
        assert_eq!(
            &d.read(&f, 0, 25).unwrap()[..],
            b"hello there, across pages"
        );
        assert_eq!(d.read(&f, 4998, 100).unwrap(), b"\0\0far");
        assert_eq!(backing_content(&mut f), b"hello world");
        d.sync(&f).unwrap();
        let synced = backing_content(&mut f);
        assert_eq!(synced.len(), 5003);
        assert_eq!(&synced[..25], b"hello there, across pages");
        assert_eq!(&synced[5000..], b"far");
    }

    #[test]
    fn truncation_then_growth_reads_zeros_not_old_bytes() {
        let (_d, mut f) = backing(&[7u8; 10_000]);
        let mut d = Dirty::new(10_000);
        d.write(&f, 100, b"x").unwrap();
        d.set_size(50);
        d.allocate(0, 9_000);
        let all = d.read(&f, 0, 20_000).unwrap();
        assert_eq!(all.len(), 9_000);
        assert!(all[..50].iter().all(|&b| b == 7));
        assert!(all[50..].iter().all(|&b| b == 0), "old bytes came back");
        d.sync(&f).unwrap();
        assert_eq!(backing_content(&mut f), all);
    }
}
