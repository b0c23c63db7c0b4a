//! Persistence around the driver: rebuilding the core from disk (snapshot + log replay),
//! writing snapshots on a background thread, and purging old files on another.
//!
//! Only the driver task touches the core; everything here that runs on another thread works
//! on bytes the driver handed over (a snapshot image) or on files alone (purge).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use corral_proto::Zxid;
use corral_storage::{LogWriter, SnapshotWriter, StorageError};

use crate::admin::metrics::Timings;
use crate::config::ServerConfig;
use crate::core::{Core, CoreConfig, Now, SnapshotError, SnapshotView};
use crate::driver::ServerError;

/// The state rebuilt from disk, and the appender that continues its log.
pub(crate) struct Loaded {
    pub core: Core,
    pub writer: LogWriter,
    pub snapshot: Option<PathBuf>,
    pub replayed: usize,
    /// Time spent loading the snapshot and replaying the log after it.
    pub snapshot_ms: u64,
    pub replay_ms: u64,
}

/// Recovers storage and rebuilds the core: newest valid snapshot, then every later txn.
/// Sessions get their full timeout again from `now`.
pub(crate) fn load(
    config: &ServerConfig,
    core_config: CoreConfig,
    now: Now,
) -> Result<Loaded, ServerError> {
    let rec = corral_storage::recover(&config.data_dir, config.data_log_dir())
        .map_err(ServerError::Recovery)?;
    for (path, e) in &rec.damaged_snapshots {
        tracing::warn!(snapshot = %path.display(), error = %e, "skipped a damaged snapshot; its txns are replayed from the log");
    }
    let started = Instant::now();
    let mut core = match &rec.snapshot {
        Some(snap) => {
            let image = snap.open().map_err(ServerError::Recovery)?;
            let image_bytes = image.payload_len();
            let core =
                Core::from_snapshot(core_config, image, image_bytes, now).map_err(|e| match e {
                    SnapshotError::Decode { offset, source } => ServerError::Snapshot {
                        path: snap.path.clone(),
                        // The image follows the file's header: report file offsets.
                        offset: Some(offset + corral_storage::SNAP_HEADER_BYTES),
                        source,
                    },
                    SnapshotError::Read(e) => ServerError::Recovery(snap.read_error(e)),
                })?;
            if core.last_zxid() != snap.zxid {
                return Err(ServerError::SnapshotZxid {
                    path: snap.path.clone(),
                    image_zxid: core.last_zxid(),
                });
            }
            core
        }
        None => Core::new(core_config, now),
    };
    let snapshot_ms = started.elapsed().as_millis() as u64;
    let started = Instant::now();
    for (zxid, record) in &rec.txns {
        core.apply_logged(record)
            .map_err(|source| ServerError::Replay {
                zxid: *zxid,
                source,
            })?;
    }
    let replay_ms = started.elapsed().as_millis() as u64;
    core.restart_session_clocks(now);
    if core.last_zxid() != rec.last_zxid {
        tracing::warn!(
            core = core.last_zxid(),
            log = rec.last_zxid,
            "state after replay disagrees with the log's last zxid"
        );
    }
    Ok(Loaded {
        core,
        writer: rec.writer,
        snapshot: rec.snapshot.map(|s| s.path),
        replayed: rec.txns.len(),
        snapshot_ms,
        replay_ms,
    })
}

/// Decides when the next snapshot is due. As in ZooKeeper, the point is randomised between
/// half and all of `snapCount`, so servers started together do not all snapshot at once.
pub(crate) struct SnapSchedule {
    snap_count: u64,
    since_last: u64,
    due_at: u64,
}

impl SnapSchedule {
    pub fn new(snap_count: u64) -> Self {
        let mut s = SnapSchedule {
            snap_count: snap_count.max(1),
            since_last: 0,
            due_at: 0,
        };
        s.reset();
        s
    }

    pub fn reset(&mut self) {
        let half = (self.snap_count / 2).max(1);
        self.since_last = 0;
        self.due_at = half + rand::random::<u64>() % (self.snap_count - half + 1);
    }

    /// Counts logged txns; true when a snapshot is due.
    pub fn count(&mut self, txns: usize) -> bool {
        self.since_last += txns as u64;
        self.since_last >= self.due_at
    }
}

/// A snapshot being written by a background thread.
pub(crate) struct SnapshotJob {
    zxid: Zxid,
    abort: Arc<AtomicBool>,
    thread: JoinHandle<Result<Option<PathBuf>, StorageError>>,
}

impl SnapshotJob {
    /// Encodes `view` (the core at its zxid) and writes it as `snapshot.<zxid>`, both on a
    /// thread of its own. The file is only renamed into place once the log is durable up to
    /// that zxid (read from `durable`): otherwise a crash could leave a snapshot ahead of the
    /// log, and the next txn would be logged after a gap.
    /// The time each written snapshot took goes to `timings`.
    pub fn start(
        data_dir: &Path,
        view: SnapshotView,
        durable: Arc<AtomicI64>,
        timings: Arc<Timings>,
    ) -> Result<SnapshotJob, ServerError> {
        let zxid = view.zxid();
        let abort = Arc::new(AtomicBool::new(false));
        let stop = abort.clone();
        let dir = data_dir.to_path_buf();
        let thread = std::thread::Builder::new()
            .name("corral-snapshot".into())
            .spawn(move || write_snapshot(&dir, view, &durable, &stop, &timings))
            .map_err(|e| ServerError::Thread("snapshot", e))?;
        Ok(SnapshotJob {
            zxid,
            abort,
            thread,
        })
    }

    pub fn zxid(&self) -> Zxid {
        self.zxid
    }

    pub fn is_finished(&self) -> bool {
        self.thread.is_finished()
    }

    /// Gives up on the snapshot (its temp file is removed) and waits for the thread.
    pub fn abort(self) {
        self.abort.store(true, Ordering::Release);
        self.join();
    }

    /// Waits for the thread and logs the outcome.
    pub fn join(self) {
        match self.thread.join() {
            Ok(Ok(Some(path))) => {
                tracing::info!(snapshot = %path.display(), zxid = format_args!("{:#x}", self.zxid), "snapshot complete")
            }
            Ok(Ok(None)) => {
                tracing::info!(
                    zxid = format_args!("{:#x}", self.zxid),
                    "snapshot abandoned"
                )
            }
            Ok(Err(e)) => tracing::error!(error = %e, "writing a snapshot failed"),
            Err(_) => tracing::error!("snapshot thread panicked"),
        }
    }
}

fn write_snapshot(
    dir: &Path,
    view: SnapshotView,
    durable: &AtomicI64,
    abort: &AtomicBool,
    timings: &Timings,
) -> Result<Option<PathBuf>, StorageError> {
    let started = Instant::now();
    let zxid = view.zxid();
    let mut w = SnapshotWriter::create(dir, zxid)?;
    let mut sink = Abortable {
        out: &mut w,
        abort,
        bytes: 0,
    };
    let encoded = view.encode_into(&mut sink);
    let bytes = sink.bytes;
    // The view shares nodes with the live tree; let them go before waiting for the log.
    drop(view);
    if abort.load(Ordering::Acquire) {
        return Ok(None);
    }
    if let Err(e) = encoded {
        return Err(io_error(w.path(), e));
    }
    while durable.load(Ordering::Acquire) < zxid {
        if abort.load(Ordering::Acquire) {
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let path = w.finish()?;
    timings.record_snapshot(started.elapsed());
    tracing::debug!(
        bytes,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "snapshot written"
    );
    Ok(Some(path))
}

/// The snapshot file as the encoder sees it: fails once the job is aborted, so a shutdown
/// does not wait for a large tree to be written out.
struct Abortable<'a, W> {
    out: W,
    abort: &'a AtomicBool,
    bytes: u64,
}

impl<W: Write> Write for Abortable<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.abort.load(Ordering::Acquire) {
            return Err(std::io::Error::other("snapshot aborted"));
        }
        let n = self.out.write(buf)?;
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

fn io_error(path: &Path, e: std::io::Error) -> StorageError {
    StorageError::Io {
        path: path.to_path_buf(),
        source: Arc::new(e),
    }
}

/// `autopurge`: a thread that purges old snapshots and segments at start-up and then every
/// `purgeInterval` hours (ZooKeeper's schedule). Stops when dropped.
pub(crate) struct Purger {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Purger {
    /// `None` when autopurge is off (`purgeInterval` = 0).
    pub fn start(config: &ServerConfig) -> Result<Option<Purger>, ServerError> {
        let hours = config.autopurge_purge_interval_hours;
        if hours == 0 {
            return Ok(None);
        }
        let every = Duration::from_secs(u64::from(hours) * 3600);
        let data_dir = config.data_dir.clone();
        let log_dir = config.data_log_dir().to_path_buf();
        let retain = config.autopurge_snap_retain_count as usize;
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("corral-purge".into())
            .spawn(move || loop {
                match corral_storage::purge(&data_dir, &log_dir, retain) {
                    Ok(report) => tracing::info!(
                        snapshots = report.removed_snapshots.len(),
                        segments = report.removed_segments.len(),
                        retain,
                        "autopurge done"
                    ),
                    Err(e) => tracing::warn!(error = %e, "autopurge failed"),
                }
                match stopped.recv_timeout(every) {
                    Err(mpsc::RecvTimeoutError::Timeout) => continue,
                    _ => break,
                }
            })
            .map_err(|e| ServerError::Thread("autopurge", e))?;
        tracing::info!(retain, interval_hours = hours, "autopurge enabled");
        Ok(Some(Purger {
            stop: Some(stop),
            thread: Some(thread),
        }))
    }
}

impl Drop for Purger {
    fn drop(&mut self) {
        self.stop.take();
        if let Some(t) = self.thread.take() {
            // A purge in progress finishes first; it only deletes files.
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_point_is_between_half_and_all_of_snap_count() {
        for _ in 0..100 {
            let mut s = SnapSchedule::new(10);
            assert!((5..=10).contains(&s.due_at), "{}", s.due_at);
            assert!(!s.count(4));
            assert!(s.count(6));
        }
        let mut one = SnapSchedule::new(1);
        assert!(one.count(1));
    }

    /// How long `Core::snapshot_view` holds the driver (and encoding takes) for 1M small znodes (a measurement, not a
    /// test): `cargo test -p corral-server --release snapshot_pause -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn snapshot_pause_for_a_million_znodes() {
        fn rss_bytes() -> u64 {
            let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
            let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
            pages * 4096
        }
        use crate::core::txn::{Txn, TxnRecord};
        use corral_proto::records::{Acl, CreateTxn, Id, TxnHeader};
        let acl = vec![Acl {
            perms: corral_proto::perms::ALL,
            id: Id {
                scheme: "world".into(),
                id: "anyone".into(),
            },
        }];
        let mut core = Core::new(CoreConfig::default(), Now::both(0));
        let mut zxid = 0;
        let mut create = |core: &mut Core, path: String| {
            zxid += 1;
            let rec = TxnRecord {
                header: TxnHeader {
                    client_id: 1,
                    cxid: 0,
                    zxid,
                    time_ms: 0,
                    txn_type: 0,
                },
                txn: Txn::Create {
                    op: corral_proto::OpCode::Create,
                    txn: CreateTxn {
                        path,
                        data: Some(bytes::Bytes::from_static(&[b'x'; 100])),
                        acl: acl.clone(),
                        ephemeral: false,
                        parent_cversion: -1,
                    },
                },
            };
            core.apply_logged(&rec.encode()).unwrap();
        };
        // The layout of the znodes-memory benchmark: 1000 × 1000 under one root, 100 B each.
        let rss_before = rss_bytes();
        create(&mut core, "/zm".to_string());
        for d in 0..1000 {
            create(&mut core, format!("/zm/b{d:05}"));
            for n in 0..999 {
                create(&mut core, format!("/zm/b{d:05}/n{n:04}"));
            }
        }
        let nodes = core.stats().znode_count;
        let rss_per_znode = (rss_bytes() - rss_before) / nodes;
        let started = Instant::now();
        let view = core.snapshot_view();
        let pause = started.elapsed();
        let started = Instant::now();
        let image = view.encode();
        let encode = started.elapsed();
        let started = Instant::now();
        let back = Core::from_snapshot(
            CoreConfig::default(),
            &image[..],
            image.len() as u64,
            Now::both(0),
        )
        .unwrap();
        let load = started.elapsed();
        assert_eq!(back.stats().znode_count, nodes);
        println!(
            "{nodes} znodes: RSS {rss_per_znode} B per znode, snapshot_view() {pause:?} (the driver's pause), encode {encode:?} (snapshot thread), {} bytes ({} per znode), from_snapshot {load:?}",
            image.len(),
            image.len() as u64 / nodes
        );
    }
}
