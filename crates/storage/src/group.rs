//! Group commit: one thread owns the [`LogWriter`], drains every queued submission, writes
//! them with one fdatasync and reports the highest durable zxid.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;

use crate::error::StorageError;
use crate::format::MAX_PAYLOAD_BYTES;
use crate::writer::{LogOptions, LogWriter};

/// Receives the outcome of each batch: `Ok(z)` = every record up to and including zxid `z`
/// is durable; `Err(e)` = the records of a batch (or one rejected submission, see
/// [`GroupCommitLog`]) were not logged.
pub type DurableCallback = Box<dyn Fn(Result<i64, StorageError>) + Send>;

enum Msg {
    Append(i64, Vec<u8>),
    Roll,
    Barrier(mpsc::Sender<()>),
}

/// Counters for tests and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogStats {
    /// fdatasync calls for batches.
    pub syncs: u64,
    /// Batches written (successfully or not).
    pub batches: u64,
    /// Records durably written.
    pub records: u64,
}

/// Background group-commit writer.
///
/// * [`submit`](Self::submit) only enqueues; the writer thread takes everything queued at
///   once, so while one fdatasync runs, the next batch accumulates and throughput grows with
///   the number of concurrent submitters.
/// * Backpressure: the queue holds at most `LogOptions::queue_capacity` records. When it is
///   full (the disk is slower than the submitters), `submit` blocks until the writer takes
///   the next batch; [`try_submit`](Self::try_submit) returns `QueueFull` instead.
/// * Ordering: records must be submitted in zxid order, each `last + 1`. A record that does
///   not continue the log is not written; the callback gets `Err(OutOfSequence)` for it.
/// * Errors: if writing or syncing a batch fails, the callback gets `Err(Io)` and the log is
///   cut back to the state before that batch; the expected zxid rewinds to
///   [`last_durable_zxid`](Self::last_durable_zxid)` + 1`. Records already queued behind the
///   failed batch will be rejected as out of sequence. A caller that can renumber may
///   resubmit from `last_durable_zxid + 1` (e.g. once disk space returns); one that cannot
///   should treat an I/O error as fatal.
/// * The callback runs on the writer thread and must be quick (e.g. forward to a channel).
///   If it panics the writer stops and later submissions fail with `Closed`.
pub struct GroupCommitLog {
    tx: Option<SyncSender<Msg>>,
    thread: Option<JoinHandle<()>>,
    durable: Arc<AtomicI64>,
    syncs: Arc<AtomicU64>,
    batches: Arc<AtomicU64>,
    records: Arc<AtomicU64>,
}

impl GroupCommitLog {
    /// Starts the writer thread on a writer obtained from [`crate::recover`].
    pub fn start(
        mut writer: LogWriter,
        options: LogOptions,
        callback: DurableCallback,
    ) -> Result<Self, StorageError> {
        let capacity = options.queue_capacity.max(1);
        writer.set_options(options);
        let (tx, rx) = mpsc::sync_channel(capacity);
        let durable = Arc::new(AtomicI64::new(writer.last_zxid()));
        let syncs = writer.sync_counter();
        let batches = Arc::new(AtomicU64::new(0));
        let records = Arc::new(AtomicU64::new(0));
        let state = ThreadState {
            writer,
            callback,
            durable: durable.clone(),
            batches: batches.clone(),
            records: records.clone(),
        };
        let thread = std::thread::Builder::new()
            .name("corral-txnlog".into())
            .spawn(move || state.run(rx))
            .map_err(|e| StorageError::io("<txnlog thread>", e))?;
        Ok(GroupCommitLog {
            tx: Some(tx),
            thread: Some(thread),
            durable,
            syncs,
            batches,
            records,
        })
    }

    /// Queues a record. Blocks only while the queue is full (see type docs).
    pub fn submit(&self, zxid: i64, payload: Vec<u8>) -> Result<(), StorageError> {
        check_len(&payload)?;
        self.sender()?
            .send(Msg::Append(zxid, payload))
            .map_err(|_| StorageError::Closed)
    }

    /// Like `submit` but never blocks: `Err(QueueFull)` when the queue is full.
    pub fn try_submit(&self, zxid: i64, payload: Vec<u8>) -> Result<(), StorageError> {
        check_len(&payload)?;
        match self.sender()?.try_send(Msg::Append(zxid, payload)) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => Err(StorageError::QueueFull),
            Err(TrySendError::Disconnected(_)) => Err(StorageError::Closed),
        }
    }

    /// Records submitted after this call go to a new segment (call after taking a snapshot).
    pub fn roll(&self) -> Result<(), StorageError> {
        self.sender()?
            .send(Msg::Roll)
            .map_err(|_| StorageError::Closed)
    }

    /// Blocks until everything submitted before this call has been written and reported
    /// through the callback.
    pub fn barrier(&self) -> Result<(), StorageError> {
        let (tx, rx) = mpsc::channel();
        self.sender()?
            .send(Msg::Barrier(tx))
            .map_err(|_| StorageError::Closed)?;
        rx.recv().map_err(|_| StorageError::Closed)
    }

    /// Highest zxid reported durable so far.
    pub fn last_durable_zxid(&self) -> i64 {
        self.durable.load(Ordering::Acquire)
    }

    pub fn stats(&self) -> LogStats {
        LogStats {
            syncs: self.syncs.load(Ordering::Relaxed),
            batches: self.batches.load(Ordering::Relaxed),
            records: self.records.load(Ordering::Relaxed),
        }
    }

    /// Writes everything still queued, reports it, and stops the thread.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        self.tx.take();
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                tracing::error!("txn log thread panicked");
            }
        }
    }

    fn sender(&self) -> Result<&SyncSender<Msg>, StorageError> {
        self.tx.as_ref().ok_or(StorageError::Closed)
    }
}

impl Drop for GroupCommitLog {
    fn drop(&mut self) {
        self.stop();
    }
}

fn check_len(payload: &[u8]) -> Result<(), StorageError> {
    if payload.len() > MAX_PAYLOAD_BYTES {
        return Err(StorageError::RecordTooLarge {
            len: payload.len(),
            max: MAX_PAYLOAD_BYTES,
        });
    }
    Ok(())
}

struct ThreadState {
    writer: LogWriter,
    callback: DurableCallback,
    durable: Arc<AtomicI64>,
    batches: Arc<AtomicU64>,
    records: Arc<AtomicU64>,
}

impl ThreadState {
    fn run(mut self, rx: Receiver<Msg>) {
        let mut batch = Vec::new();
        while let Ok(first) = rx.recv() {
            batch.push(first);
            // Take everything that queued up during the previous write + sync.
            while let Ok(m) = rx.try_recv() {
                batch.push(m);
            }
            for msg in batch.drain(..) {
                match msg {
                    Msg::Append(zxid, payload) => {
                        if let Err(e) = self.writer.append(zxid, &payload) {
                            (self.callback)(Err(e));
                        }
                    }
                    Msg::Roll => {
                        self.commit();
                        self.writer.roll();
                    }
                    Msg::Barrier(done) => {
                        self.commit();
                        let _ = done.send(());
                    }
                }
            }
            self.commit();
        }
        if let Err(e) = self.writer.close() {
            tracing::warn!(error = %e, "closing txn log");
        }
    }

    fn commit(&mut self) {
        let before = self.writer.last_zxid();
        match self.writer.commit() {
            Ok(None) => {}
            Ok(Some(z)) => {
                self.batches.fetch_add(1, Ordering::Relaxed);
                self.records
                    .fetch_add((z - before) as u64, Ordering::Relaxed);
                self.durable.store(z, Ordering::Release);
                (self.callback)(Ok(z));
            }
            Err(e) => {
                self.batches.fetch_add(1, Ordering::Relaxed);
                (self.callback)(Err(e));
            }
        }
    }
}
