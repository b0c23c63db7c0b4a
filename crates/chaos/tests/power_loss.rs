//! Power loss on faultfs: data not fsynced is gone after `lose`. Real `corral server`
//! processes write through a faultfs mount; a power loss is SIGKILL plus `lose`, then a
//! restart; every acknowledged write must still be there. A negative control (forceSync=no)
//! proves the layer drops what was not synced. Needs root and /dev/fuse.

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use corral_chaos::ensemble::{find_corral_binary, Ensemble};
use corral_chaos::faultfs::{is_mounted, Mount};
use corral_client::{Client, CreateMode, Error, ZkError};

/// Hang guard of each test.
const TEST_LIMIT: Duration = Duration::from_secs(90);
const WRITERS: usize = 4;
/// How long the writers run before the power goes.
const LOAD_MS: u64 = 1_500;
const OP_TIMEOUT_MS: u64 = 3_000;
const ROOT: &str = "/power";

fn corral_binary() -> PathBuf {
    if let Ok(bin) = find_corral_binary() {
        return bin;
    }
    let status = Command::new(env!("CARGO"))
        .args(["build", "-p", "corral"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .expect("run cargo build -p corral");
    assert!(status.success(), "cargo build -p corral failed");
    find_corral_binary().expect("corral binary after building it")
}

fn run<F: std::future::Future<Output = ()>>(f: F) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        tokio::time::timeout(TEST_LIMIT, f)
            .await
            .unwrap_or_else(|_| panic!("test did not finish within {TEST_LIMIT:?}"))
    });
}

async fn connect(addr: &str) -> Client {
    Client::builder(addr)
        .session_timeout(Duration::from_secs(10))
        .connect_timeout(Duration::from_secs(30))
        .connect()
        .await
        .unwrap_or_else(|e| panic!("connect to {addr}: {e}"))
}

async fn bounded<T>(f: impl std::future::Future<Output = Result<T, Error>>) -> Result<T, Error> {
    tokio::time::timeout(Duration::from_millis(OP_TIMEOUT_MS), f)
        .await
        .unwrap_or(Err(Error::Timeout))
}

fn key(w: usize) -> String {
    format!("{ROOT}/w{w}")
}

/// What one writer did: every write of value n is a set from version n-1 to n, so a node's
/// data always equals its version, and the highest value sent and acknowledged bound what a
/// correct recovery may show.
#[derive(Default)]
struct Progress {
    sent: AtomicI64,
    acked: AtomicI64,
}

async fn create_keys(addr: &str) {
    let c = connect(addr).await;
    c.create(ROOT, b"", CreateMode::Persistent).await.unwrap();
    for w in 0..WRITERS {
        c.create(&key(w), b"0", CreateMode::Persistent)
            .await
            .unwrap();
    }
    c.close().await;
}

/// Writes until aborted: conditional sets of value n over version n-1; after an error it
/// re-reads the node and goes on from there.
async fn writer(connect_string: String, w: usize, p: Arc<Progress>) {
    let c = connect(&connect_string).await;
    let path = key(w);
    let mut next: Option<i64> = None;
    loop {
        let n = match next {
            Some(n) => n,
            None => match bounded(c.get_data(&path)).await {
                Ok((_, stat)) => i64::from(stat.version) + 1,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        p.sent.fetch_max(n, Ordering::SeqCst);
        let expected = i32::try_from(n - 1).expect("versions stay small");
        match bounded(c.set_data(&path, n.to_string().as_bytes(), Some(expected))).await {
            Ok(stat) => {
                assert_eq!(i64::from(stat.version), n, "set of {path} to {n}");
                p.acked.fetch_max(n, Ordering::SeqCst);
                next = Some(n + 1);
            }
            Err(Error::Zk(ZkError::BadVersion)) => next = None,
            Err(_) => {
                next = None;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

struct Load {
    progress: Vec<Arc<Progress>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(connect_string: &str, progress: Option<Vec<Arc<Progress>>>) -> Load {
        let progress = progress.unwrap_or_else(|| (0..WRITERS).map(|_| Arc::default()).collect());
        let tasks = progress
            .iter()
            .enumerate()
            .map(|(w, p)| tokio::spawn(writer(connect_string.to_string(), w, p.clone())))
            .collect();
        Load { progress, tasks }
    }

    /// Stops the writers; their progress stays. A writer that panicked (a set answered
    /// with the wrong version) fails the test here.
    async fn stop(&mut self) {
        for t in self.tasks.drain(..) {
            t.abort();
            if let Err(e) = t.await {
                if e.is_panic() {
                    std::panic::resume_unwind(e.into_panic());
                }
            }
        }
    }

    fn acked_total(&self) -> i64 {
        self.progress
            .iter()
            .map(|p| p.acked.load(Ordering::SeqCst))
            .sum()
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Reads every key on `addr` (after a sync) and returns one line per acknowledged write that
/// is missing. Panics on what no recovery may show: data other than the version, or a value
/// never sent.
async fn lost_writes(addr: &str, progress: &[Arc<Progress>]) -> Vec<String> {
    let c = connect(addr).await;
    let mut lost = Vec::new();
    for (w, p) in progress.iter().enumerate() {
        let path = key(w);
        let (sent, acked) = (
            p.sent.load(Ordering::SeqCst),
            p.acked.load(Ordering::SeqCst),
        );
        let got = loop {
            let r = bounded(async {
                c.sync(&path).await?;
                c.get_data(&path).await
            })
            .await;
            match r {
                Err(e) if e.is_retryable() => tokio::time::sleep(Duration::from_millis(100)).await,
                r => break r,
            }
        };
        match got {
            Ok((data, stat)) => {
                let value: i64 = std::str::from_utf8(&data).unwrap().parse().unwrap();
                assert_eq!(
                    value,
                    i64::from(stat.version),
                    "{addr} {path}: data {value} but version {}",
                    stat.version
                );
                assert!(
                    value <= sent,
                    "{addr} {path}: {value} was never sent (sent {sent})"
                );
                if value < acked {
                    lost.push(format!("{addr} {path}: {value} < acknowledged {acked}"));
                }
            }
            Err(Error::Zk(ZkError::NoNode)) => {
                lost.push(format!("{addr} {path}: gone (acknowledged {acked})"))
            }
            Err(e) => panic!("{addr} {path}: {e}"),
        }
    }
    c.close().await;
    lost
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A standalone server whose dataDir is a faultfs mount. Dropped: killed, then unmounted.
struct Standalone {
    child: Option<Child>,
    binary: PathBuf,
    dir: PathBuf,
    port: u16,
    mount: Mount,
}

impl Standalone {
    fn start(dir: &Path, force_sync: bool) -> Standalone {
        let backing = dir.join("data.backing");
        let data = dir.join("data");
        fs::create_dir_all(&backing).unwrap();
        fs::create_dir_all(&data).unwrap();
        let mount = Mount::start(&backing, &data).expect("mount faultfs (root and /dev/fuse)");
        let port = free_port();
        let force = if force_sync { "yes" } else { "no" };
        fs::write(
            dir.join("zoo.cfg"),
            format!(
                "tickTime=2000\ndataDir={}\nclientPort={port}\nforceSync={force}\n\
                 4lw.commands.whitelist=*\n",
                data.display()
            ),
        )
        .unwrap();
        let mut s = Standalone {
            child: None,
            binary: corral_binary(),
            dir: dir.to_path_buf(),
            port,
            mount,
        };
        s.restart();
        s
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn restart(&mut self) {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("server.log"))
            .unwrap();
        let child = Command::new(&self.binary)
            .arg("server")
            .arg("--config")
            .arg(self.dir.join("zoo.cfg"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start corral server");
        self.child = Some(child);
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Standalone {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// One standalone power loss under concurrent writers; returns the acknowledged writes lost.
async fn standalone_power_loss(force_sync: bool) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Standalone::start(dir.path(), force_sync);
    create_keys(&s.addr()).await;
    let mut load = Load::start(&s.addr(), None);
    tokio::time::sleep(Duration::from_millis(LOAD_MS)).await;
    s.kill9();
    let loss = s.mount.lose();
    load.stop().await;
    assert!(load.acked_total() > 0, "no write was acknowledged");
    s.restart();
    let lost = lost_writes(&s.addr(), &load.progress).await;
    let stats = s.mount.stats();
    println!(
        "forceSync={force_sync}: {} writes acknowledged, power loss dropped {loss:?}; {stats:?}",
        load.acked_total()
    );
    if force_sync {
        assert!(
            stats.fsyncs > 0,
            "the server never fsynced through the mount"
        );
    }
    let mountpoint = s.mount.mountpoint().to_path_buf();
    drop(s);
    assert!(!is_mounted(&mountpoint), "still mounted after drop");
    lost
}

#[test]
fn faultfs_keeps_synced_data_and_drops_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let backing = dir.path().join("backing");
    let mnt = dir.path().join("mnt");
    fs::create_dir_all(&backing).unwrap();
    fs::create_dir_all(&mnt).unwrap();
    let mount = Mount::start(&backing, &mnt).expect("mount faultfs (root and /dev/fuse)");
    use std::io::Write;
    let mut synced = fs::File::create(mnt.join("synced")).unwrap();
    synced.write_all(b"durable").unwrap();
    synced.sync_data().unwrap();
    synced.write_all(b" and volatile").unwrap();
    synced.set_len(100).unwrap();
    drop(synced);
    fs::write(mnt.join("tmp"), b"never synced").unwrap();
    fs::rename(mnt.join("tmp"), mnt.join("renamed")).unwrap();
    fs::create_dir(mnt.join("sub")).unwrap();
    assert_eq!(fs::read(mnt.join("renamed")).unwrap(), b"never synced");
    assert_eq!(fs::metadata(mnt.join("synced")).unwrap().len(), 100);
    assert_eq!(fs::read(backing.join("synced")).unwrap(), b"durable");
    let loss = mount.lose();
    assert_eq!(loss.files, 2, "{loss:?}");
    assert_eq!(fs::read(mnt.join("synced")).unwrap(), b"durable");
    // Names pass through; the data of a never-synced file does not.
    assert_eq!(fs::read(mnt.join("renamed")).unwrap(), b"");
    assert!(mnt.join("sub").is_dir());
    drop(mount);
    assert!(!is_mounted(&mnt));
}

#[test]
fn standalone_power_loss_keeps_every_acknowledged_write() {
    run(async {
        let lost = standalone_power_loss(true).await;
        assert!(lost.is_empty(), "acknowledged writes lost: {lost:#?}");
    });
}

/// The negative control: without fsync the same power loss must lose acknowledged writes,
/// or faultfs is not doing its job.
#[test]
fn standalone_without_fsync_loses_acknowledged_writes() {
    run(async {
        let lost = standalone_power_loss(false).await;
        assert!(
            !lost.is_empty(),
            "forceSync=no lost nothing: faultfs did not bite"
        );
        println!("lost as expected: {lost:?}");
    });
}

#[test]
fn ensemble_survives_power_loss_of_all_members_and_of_the_leader() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let mut ens = Ensemble::start_on_faultfs(dir.path(), 3, corral_binary(), None)
            .expect("ensemble on faultfs (root and /dev/fuse)");
        ens.wait_stable(Duration::from_secs(60)).await.unwrap();
        let cs = ens.connect_string();
        create_keys(&cs).await;

        // All members at once, under load.
        let mut load = Load::start(&cs, None);
        tokio::time::sleep(Duration::from_millis(LOAD_MS)).await;
        let losses = ens.power_loss(&ens.ids());
        load.stop().await;
        println!(
            "all members: {} acknowledged; dropped {losses:?}",
            load.acked_total()
        );
        assert!(load.acked_total() > 0, "no write was acknowledged");
        for id in ens.ids() {
            ens.restart(id).unwrap();
        }
        ens.wait_stable(Duration::from_secs(60)).await.unwrap();
        for m in &ens.members {
            let lost = lost_writes(&m.client_addr(), &load.progress).await;
            assert!(lost.is_empty(), "member {}: lost {lost:#?}", m.id);
        }

        // The leader alone, while the writers go on against the rest.
        let before = load.acked_total();
        let mut load = Load::start(&cs, Some(load.progress.clone()));
        tokio::time::sleep(Duration::from_millis(LOAD_MS)).await;
        let leader = ens.leader().await.expect("a leader");
        let losses = ens.power_loss(&[leader]);
        tokio::time::sleep(Duration::from_millis(LOAD_MS)).await;
        ens.restart(leader).unwrap();
        ens.wait_stable(Duration::from_secs(60)).await.unwrap();
        load.stop().await;
        println!(
            "leader {leader}: {} acknowledged in total; dropped {losses:?}",
            load.acked_total()
        );
        assert!(
            load.acked_total() > before,
            "no write acknowledged in the second phase"
        );
        for m in &ens.members {
            let lost = lost_writes(&m.client_addr(), &load.progress).await;
            assert!(lost.is_empty(), "member {}: lost {lost:#?}", m.id);
        }
        let mounts: Vec<PathBuf> = ens
            .faultfs
            .iter()
            .map(|m| m.mountpoint().to_path_buf())
            .collect();
        drop(ens);
        for m in mounts {
            assert!(!is_mounted(&m), "{} still mounted", m.display());
        }
    });
}
