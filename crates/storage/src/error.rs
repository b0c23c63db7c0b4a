use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Errors of the storage layer. `Clone` so that one failed batch can be reported to every
/// request waiting on it (I/O errors are shared behind an `Arc`).
#[derive(Debug, Clone, thiserror::Error)]
pub enum StorageError {
    #[error("I/O error on {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: Arc<io::Error>,
    },
    /// Damaged data in a file. `offset` is a byte offset into `file`.
    #[error("{}: corrupt at offset {offset}: {reason}", file.display())]
    Corrupt {
        file: PathBuf,
        offset: u64,
        reason: String,
    },
    /// A record whose zxid is not the previous zxid + 1 (missing or out-of-order txns).
    #[error("{}: zxid gap at offset {offset}: expected {}, found {}", file.display(), Zx(*expected), Zx(*found))]
    Gap {
        file: PathBuf,
        offset: u64,
        expected: i64,
        found: i64,
    },
    /// The newest snapshot(s) are damaged and no older state can be completed from the logs.
    #[error("cannot recover: {0}")]
    Unrecoverable(String),
    /// `submit`/`append` with a zxid that does not continue the log.
    #[error("zxid out of sequence: expected {}, got {}", Zx(*expected), Zx(*got))]
    OutOfSequence { expected: i64, got: i64 },
    /// A Raft log append whose first entry does not continue the log, or whose entries do
    /// not run `+1`.
    #[error("raft log index out of sequence: expected {expected}, got {got}")]
    IndexOutOfSequence { expected: u64, got: u64 },
    #[error("record payload of {len} bytes exceeds the maximum of {max} bytes")]
    RecordTooLarge { len: usize, max: usize },
    /// The bounded submission queue is full (only from `try_submit`).
    #[error("log submission queue is full")]
    QueueFull,
    /// The group-commit thread has stopped.
    #[error("log writer is closed")]
    Closed,
    /// Another server (or another claim in this process) holds the directory's lock file.
    #[error("{} is in use by another server ({}); two servers must not share a data directory", dir.display(), holder_pid.map_or_else(|| "holder unknown".to_string(), |p| format!("pid {p}")))]
    Locked {
        dir: PathBuf,
        holder_pid: Option<u32>,
    },
}

impl StorageError {
    /// An I/O error on `path`.
    pub fn io(path: impl AsRef<Path>, source: io::Error) -> Self {
        StorageError::Io {
            path: path.as_ref().to_path_buf(),
            source: Arc::new(source),
        }
    }

    pub(crate) fn corrupt(file: impl AsRef<Path>, offset: u64, reason: impl Into<String>) -> Self {
        StorageError::Corrupt {
            file: file.as_ref().to_path_buf(),
            offset,
            reason: reason.into(),
        }
    }

    /// The underlying OS error kind, for I/O errors (e.g. to detect a full disk).
    pub fn io_kind(&self) -> Option<io::ErrorKind> {
        match self {
            StorageError::Io { source, .. } => Some(source.kind()),
            _ => None,
        }
    }
}

/// Zxids print as hex (as ZooKeeper does) with the decimal value alongside.
struct Zx(i64);

impl fmt::Display for Zx {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x} ({})", self.0, self.0)
    }
}

/// Adds the path to an `io::Error`.
pub(crate) trait IoContext<T> {
    fn at(self, path: &Path) -> Result<T, StorageError>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn at(self, path: &Path) -> Result<T, StorageError> {
        self.map_err(|e| StorageError::io(path, e))
    }
}
