//! openraft's log storage on top of `corral_storage::RaftLog` (which does the fsyncs).
//!
//! The log is shared between openraft's storage task (appends, truncation, purge, votes) and
//! its replication readers, so it sits behind a mutex. Every call that may wait on the disk
//! (an fsync, a file created or cut, a read) runs on tokio's blocking pool, so no async worker
//! waits on one. The common append is a single write into the page cache of the open segment:
//! that one is made on the calling task, sparing a thread hand-off per entry batch.
//!
//! Reads are served from [`LogTail`], the newest entries kept decoded in memory, whenever it
//! holds them: replication to each follower and the state machine read every entry right
//! after it is appended, and then neither a blocking thread nor a decode is needed.
//!
//! Group commit: `append` writes the entries (readable at once, as openraft requires) and
//! returns; a sync thread makes them durable and only then reports them flushed. Everything
//! appended while one fdatasync runs shares the next one, so a leader under load pays one
//! fsync per batch, not per entry. Truncation and purge first wait for the syncs queued before
//! them.
//!
//! The committed log id is saved at most every [`COMMITTED_SAVE_INTERVAL_MS`] (openraft asks
//! on every commit, which under load is thousands of file replacements a second). An older
//! committed id is always safe to find at start-up: the file is written without fsync, so a
//! crash could leave an older one anyway; the member then learns the rest from the leader.
//! The newest id is written on shutdown ([`LogStore::save_pending_committed`]).

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::{mpsc as std_mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use corral_storage::{PendingSync, RaftEntry, RaftLog, RaftLogOptions, StorageError as DiskError};
use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{
    CommittedLeaderId, Entry, ErrorSubject, ErrorVerb, LogId, RaftLogReader, StorageError,
    StorageIOError, Vote,
};

use super::log_tail::LogTail;
use super::{MemberId, TypeConfig};

/// Openraft's index `i` is record `i + 1` of the storage log (which starts at 1).
pub(super) const INDEX_SHIFT: u64 = 1;

/// Least time between two writes of the committed log id (see the module documentation).
const COMMITTED_SAVE_INTERVAL_MS: u64 = 200;

#[derive(Clone)]
pub struct LogStore {
    log: Arc<Mutex<RaftLog>>,
    /// The newest entries, decoded; always ends where the log ends (it changes right after
    /// the log does, under openraft's one storage task).
    tail: Arc<Mutex<LogTail>>,
    syncer: std_mpsc::Sender<SyncOp>,
    committed: Arc<Mutex<CommittedSaves>>,
}

/// The throttle of committed-id writes.
#[derive(Default)]
struct CommittedSaves {
    last_write: Option<Instant>,
    /// The newest id openraft reported and that is not written yet.
    pending: Option<Option<LogId<MemberId>>>,
}

/// Work for the sync thread, in submission order.
enum SyncOp {
    /// Entries written but not yet durable; `None` when nothing was written.
    Flush(Option<PendingSync>, LogFlushed<TypeConfig>),
    /// Answered once every flush queued before it is done.
    Barrier(tokio::sync::oneshot::Sender<()>),
}

/// Makes appended batches durable, several per fdatasync, and reports them flushed in order.
fn sync_loop(ops: std_mpsc::Receiver<SyncOp>) {
    while let Ok(first) = ops.recv() {
        let mut batch = vec![first];
        while let Ok(more) = ops.try_recv() {
            batch.push(more);
        }
        // One fdatasync per segment touched (almost always one).
        let mut synced: Vec<&PendingSync> = Vec::new();
        let mut failure: Option<String> = None;
        for op in &batch {
            if let SyncOp::Flush(Some(p), _) = op {
                if failure.is_none() && !synced.iter().any(|s| s.same_file(p)) {
                    if let Err(e) = p.sync() {
                        failure = Some(e.to_string());
                    }
                    synced.push(p);
                }
            }
        }
        // Later batches may have reused the same segment: a sync issued after their write
        // covers them, so sync order within the batch does not matter.
        for op in batch {
            match op {
                SyncOp::Flush(_, callback) => match &failure {
                    None => callback.log_io_completed(Ok(())),
                    Some(e) => callback.log_io_completed(Err(std::io::Error::other(e.clone()))),
                },
                SyncOp::Barrier(done) => {
                    let _ = done.send(());
                }
            }
        }
    }
}

fn io_err(
    subject: ErrorSubject<MemberId>,
    verb: ErrorVerb,
    e: impl std::error::Error + 'static,
) -> StorageError<MemberId> {
    StorageIOError::new(subject, verb, openraft::AnyError::new(&e)).into()
}

fn log_id(index: u64, term: u64, leader: u64) -> LogId<MemberId> {
    LogId::new(CommittedLeaderId::new(term, leader), index - INDEX_SHIFT)
}

impl LogStore {
    /// `sync_observer` is told how long each fdatasync of the log takes.
    pub fn open(
        dir: &Path,
        force_sync: bool,
        sync_observer: corral_storage::SyncObserver,
    ) -> Result<LogStore, DiskError> {
        let defaults = RaftLogOptions::default();
        let tail = LogTail::new(defaults.cache_bytes);
        let opts = RaftLogOptions {
            force_sync,
            // The tail holds the recent entries, decoded; a second copy as bytes would only
            // serve reads the tail cannot, which are older than both.
            cache_bytes: 0,
            ..defaults
        };
        let mut log = RaftLog::open(dir, opts)?;
        log.set_sync_observer(sync_observer);
        let log = Arc::new(Mutex::new(log));
        let (syncer, ops) = std_mpsc::channel();
        std::thread::Builder::new()
            .name("raft-log-sync".into())
            .spawn(move || sync_loop(ops))
            .map_err(|e| DiskError::io(dir, e))?;
        Ok(LogStore {
            log,
            tail: Arc::new(Mutex::new(tail)),
            syncer,
            committed: Arc::default(),
        })
    }

    /// Waits until every flush queued so far is done.
    async fn flushed(&self) {
        let (done, wait) = tokio::sync::oneshot::channel();
        if self.syncer.send(SyncOp::Barrier(done)).is_ok() {
            let _ = wait.await;
        }
    }

    /// Runs `f` on the log on the blocking pool.
    async fn with_log<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut RaftLog) -> T + Send + 'static,
    ) -> T {
        let log = self.log.clone();
        tokio::task::spawn_blocking(move || {
            let mut log = log.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut log)
        })
        .await
        .expect("raft log task panicked")
    }

    fn tail(&self) -> std::sync::MutexGuard<'_, LogTail> {
        self.tail.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends `records` on the calling thread if that is one write into the page cache and
    /// the log is not busy (a blocking thread reading it); `None`: use the blocking pool.
    fn try_append_here(
        &self,
        records: &[RaftEntry],
    ) -> Option<Result<Option<PendingSync>, DiskError>> {
        let mut log = match self.log.try_lock() {
            Ok(log) => log,
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return None,
        };
        if !log.next_append_is_plain_write(records) {
            return None;
        }
        Some(log.append_unsynced(records))
    }

    /// Entries in openraft's index range `[start, end)`.
    async fn read(
        &self,
        start: u64,
        end: u64,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<MemberId>> {
        if let Some(entries) = self.tail().range(start, end) {
            return Ok(entries);
        }
        let records = self
            .with_log(move |log| {
                log.read_range(start + INDEX_SHIFT, end.saturating_add(INDEX_SHIFT))
            })
            .await
            .map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Read, e))?;
        let mut entries = Vec::with_capacity(records.len());
        for r in &records {
            match bincode::deserialize::<Entry<TypeConfig>>(&r.payload) {
                Ok(e) => entries.push(e),
                Err(e) => {
                    let at = log_id(r.index, r.term, r.leader);
                    return Err(io_err(ErrorSubject::Log(at), ErrorVerb::Read, e));
                }
            }
        }
        Ok(entries)
    }
}

fn bounds(range: &impl RangeBounds<u64>) -> (u64, u64) {
    let start = match range.start_bound() {
        Bound::Included(s) => *s,
        Bound::Excluded(s) => s + 1,
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        Bound::Included(e) => e.saturating_add(1),
        Bound::Excluded(e) => *e,
        Bound::Unbounded => u64::MAX - INDEX_SHIFT,
    };
    (start, end)
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<MemberId>> {
        let (start, end) = bounds(&range);
        self.read(start, end).await
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<MemberId>> {
        let (purged, last) = self
            .with_log(|log| (log.last_purged(), log.last_entry_id()))
            .await;
        let last_purged_log_id = purged.map(|(i, t, l)| log_id(i, t, l));
        let last_log_id = last.map(|(i, t, l)| log_id(i, t, l)).or(last_purged_log_id);
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<MemberId>) -> Result<(), StorageError<MemberId>> {
        let bytes = bincode::serialize(vote).expect("in-memory serialization");
        self.with_log(move |log| log.save_vote(&bytes))
            .await
            .map_err(|e| io_err(ErrorSubject::Vote, ErrorVerb::Write, e))
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<MemberId>>, StorageError<MemberId>> {
        let bytes = self.with_log(|log| log.read_vote()).await;
        bytes
            .map(|b| bincode::deserialize(&b))
            .transpose()
            .map_err(|e| io_err(ErrorSubject::Vote, ErrorVerb::Read, e))
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId<MemberId>>,
    ) -> Result<(), StorageError<MemberId>> {
        {
            let mut saves = self.committed.lock().unwrap_or_else(|p| p.into_inner());
            let interval = Duration::from_millis(COMMITTED_SAVE_INTERVAL_MS);
            if saves.last_write.is_some_and(|at| at.elapsed() < interval) {
                saves.pending = Some(committed);
                return Ok(());
            }
            saves.last_write = Some(Instant::now());
            saves.pending = None;
        }
        self.write_committed(committed).await
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<MemberId>>, StorageError<MemberId>> {
        let bytes = self.with_log(|log| log.read_committed()).await;
        Ok(bytes
            .and_then(|b| bincode::deserialize::<Option<LogId<MemberId>>>(&b).ok())
            .flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError<MemberId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let entries: Vec<Entry<TypeConfig>> = entries.into_iter().collect();
        let records: Vec<RaftEntry> = entries
            .iter()
            .map(|e| RaftEntry {
                index: e.log_id.index + INDEX_SHIFT,
                term: e.log_id.leader_id.term,
                leader: e.log_id.leader_id.node_id,
                payload: Bytes::from(bincode::serialize(e).expect("in-memory serialization")),
            })
            .collect();
        let result = match self.try_append_here(&records) {
            Some(result) => result,
            None => {
                self.with_log(move |log| log.append_unsynced(&records))
                    .await
            }
        };
        match result {
            Ok(pending) => {
                self.tail().push(entries);
                if let Err(std_mpsc::SendError(SyncOp::Flush(_, callback))) =
                    self.syncer.send(SyncOp::Flush(pending, callback))
                {
                    callback.log_io_completed(Err(std::io::Error::other("raft log closed")));
                }
                Ok(())
            }
            Err(e) => {
                let text = e.to_string();
                callback.log_io_completed(Err(std::io::Error::other(text)));
                Err(io_err(ErrorSubject::Logs, ErrorVerb::Write, e))
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId<MemberId>) -> Result<(), StorageError<MemberId>> {
        let from = log_id.index + INDEX_SHIFT;
        self.flushed().await;
        self.tail().truncate_from(log_id.index);
        self.with_log(move |log| log.truncate_from(from))
            .await
            .map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Delete, e))
    }

    async fn purge(&mut self, log_id: LogId<MemberId>) -> Result<(), StorageError<MemberId>> {
        let (index, term, leader) = (
            log_id.index + INDEX_SHIFT,
            log_id.leader_id.term,
            log_id.leader_id.node_id,
        );
        self.flushed().await;
        self.tail().purge_through(log_id.index);
        self.with_log(move |log| log.purge_through(index, term, leader))
            .await
            .map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Delete, e))
    }
}

impl LogStore {
    /// At start-up, before openraft reads the vote: a vote that says this member leads (its
    /// own, committed) is stored again as not committed. openraft would otherwise resume
    /// leading that term at once, with whatever log survived the restart — and after a power
    /// loss that can be shorter than the log it led with (entries a quorum of followers had
    /// fsynced, and it had not). It would then append different entries under log ids the
    /// followers already hold (same term, same leader, same index), which they take as
    /// equal: two members with different txns at one index. Campaigning instead makes any
    /// leader after a restart lead a new term. Returns whether the vote was changed.
    pub fn forgo_stored_leadership(&self, my_id: MemberId) -> Result<bool, DiskError> {
        let mut log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        let Some(bytes) = log.read_vote() else {
            return Ok(false);
        };
        let Ok(vote) = bincode::deserialize::<Vote<MemberId>>(&bytes) else {
            // openraft reports the damage when it reads the vote.
            return Ok(false);
        };
        if !(vote.is_committed() && vote.leader_id().voted_for() == Some(my_id)) {
            return Ok(false);
        }
        let candidate = Vote::new(vote.leader_id().get_term(), my_id);
        let bytes = bincode::serialize(&candidate).expect("in-memory serialization");
        log.save_vote(&bytes)?;
        Ok(true)
    }

    async fn write_committed(
        &self,
        committed: Option<LogId<MemberId>>,
    ) -> Result<(), StorageError<MemberId>> {
        let bytes = bincode::serialize(&committed).expect("in-memory serialization");
        self.with_log(move |log| log.save_committed(&bytes))
            .await
            .map_err(|e| io_err(ErrorSubject::Store, ErrorVerb::Write, e))
    }

    /// Writes the newest committed id if the throttle held it back (on shutdown, so that a
    /// restart re-applies everything this member knew to be committed).
    pub async fn save_pending_committed(&self) {
        let pending = {
            let mut saves = self.committed.lock().unwrap_or_else(|p| p.into_inner());
            saves.pending.take()
        };
        if let Some(committed) = pending {
            if let Err(e) = self.write_committed(committed).await {
                tracing::warn!(error = %e, "cannot save the committed log id");
            }
        }
    }

    /// The last entry's `(term, index)` (openraft's index), or the last purged one's; taken
    /// on the calling thread (the log's lock is only held for field updates and writes).
    pub fn last_log_term_index(&self) -> Option<(u64, u64)> {
        let log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        log.last_entry_id()
            .or(log.last_purged())
            .map(|(index, term, _)| (term, index - INDEX_SHIFT))
    }

    /// `(index, term, payload)` of every entry in openraft's index range `[start, end)`, read
    /// on the calling thread: for rebuilding the state from committed entries (the driver,
    /// after a lost leadership). All of them or an error, never a part: entries before the
    /// log's first are [`PayloadsError::Purged`] (a snapshot newer than the caller's holds
    /// them).
    pub fn payloads_blocking(
        &self,
        start: u64,
        end: u64,
    ) -> Result<Vec<(u64, u64, Option<super::Payload>)>, PayloadsError> {
        if start >= end {
            return Ok(Vec::new());
        }
        let records = {
            let mut log = self.log.lock().unwrap_or_else(|p| p.into_inner());
            let first = log.first_index() - INDEX_SHIFT;
            if start < first {
                return Err(PayloadsError::Purged { start, first });
            }
            log.read_range(start + INDEX_SHIFT, end.saturating_add(INDEX_SHIFT))
                .map_err(|e| PayloadsError::Read(e.to_string()))?
        };
        let expected = end - start;
        if records.len() as u64 != expected {
            return Err(PayloadsError::Read(format!(
                "raft entries [{start}, {end}) asked, {} present",
                records.len()
            )));
        }
        let mut out = Vec::with_capacity(records.len());
        for r in records {
            let payload = match bincode::deserialize::<Entry<TypeConfig>>(&r.payload) {
                Ok(e) => match e.payload {
                    openraft::EntryPayload::Normal(p) => Some(p),
                    _ => None,
                },
                Err(e) => {
                    return Err(PayloadsError::Read(format!(
                        "raft entry {} cannot be decoded: {e}",
                        r.index - INDEX_SHIFT
                    )))
                }
            };
            out.push((r.index - INDEX_SHIFT, r.term, payload));
        }
        Ok(out)
    }
}

/// Why [`LogStore::payloads_blocking`] returned no entries.
#[derive(Debug, thiserror::Error)]
pub enum PayloadsError {
    /// The log no longer holds `start`: it was purged after a newer snapshot was taken.
    #[error("raft entries from {start} asked, but the log starts at {first} (purged)")]
    Purged { start: u64, first: u64 },
    #[error("{0}")]
    Read(String),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consensus::Payload;
    use openraft::{CommittedLeaderId, EntryPayload};

    /// A log of txn entries at openraft indexes `0..=last` purged through `purged`,
    /// written with the storage log directly, then opened as the store.
    fn store_with(dir: &Path, last: u64, purged: u64) -> LogStore {
        let mut log = RaftLog::open(dir, RaftLogOptions::default()).unwrap();
        let entries: Vec<RaftEntry> = (0..=last)
            .map(|index| {
                let entry = Entry::<TypeConfig> {
                    log_id: LogId::new(CommittedLeaderId::new(3, 1), index),
                    payload: EntryPayload::Normal(Payload::Txn {
                        zxid: index as i64,
                        record: vec![index as u8; 8].into(),
                        origin: None,
                    }),
                };
                RaftEntry {
                    index: index + INDEX_SHIFT,
                    term: 3,
                    leader: 1,
                    payload: Bytes::from(bincode::serialize(&entry).unwrap()),
                }
            })
            .collect();
        log.append(&entries).unwrap();
        log.purge_through(purged + INDEX_SHIFT, 3, 1).unwrap();
        drop(log);
        LogStore::open(dir, false, Arc::new(|_| {})).unwrap()
    }

    #[test]
    fn payloads_are_the_whole_range_asked_for() {
        let tmp = tempfile::tempdir().unwrap();
        let store = store_with(tmp.path(), 30, 10);
        let got = store.payloads_blocking(11, 31).unwrap();
        let indexes: Vec<u64> = got.iter().map(|(i, _, _)| *i).collect();
        assert!(got.iter().all(|(_, term, _)| *term == 3));
        assert_eq!(indexes, (11..31).collect::<Vec<u64>>());
        assert!(store.payloads_blocking(20, 20).unwrap().is_empty());
    }

    /// A rebuild that loaded a snapshot of index 5 asks for entries from 6; the log was
    /// purged through 10 in the meantime (after a newer snapshot). Returning 11.. would
    /// let the rebuilt state miss the txns of 6..=10.
    #[test]
    fn purged_entries_are_an_error_not_a_shorter_range() {
        let tmp = tempfile::tempdir().unwrap();
        let store = store_with(tmp.path(), 30, 10);
        match store.payloads_blocking(6, 31) {
            Err(PayloadsError::Purged {
                start: 6,
                first: 11,
            }) => {}
            other => panic!("expected Purged, got {other:?}"),
        }
    }

    #[test]
    fn entries_past_the_end_are_an_error_not_a_shorter_range() {
        let tmp = tempfile::tempdir().unwrap();
        let store = store_with(tmp.path(), 30, 10);
        assert!(matches!(
            store.payloads_blocking(20, 40),
            Err(PayloadsError::Read(_))
        ));
    }
}
