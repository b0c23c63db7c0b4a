//! `corral datadir migrate`: a standalone server's data directory becomes the first member of
//! an ensemble, with real `corral server` processes. The standalone server runs on member 1's
//! data directory and client port, so a client of the standalone server simply reconnects to
//! the member with its session and last seen zxid.

mod ensemble_support;

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use corral_client::{acl, perms, Acl, Client, CreateMode, CreateOptions, Error, Stat};
use ensemble_support::*;

/// Hang guard for the whole end-to-end test.
const TEST_LIMIT: Duration = Duration::from_secs(180);
/// How long a single client call may take when the server is healthy.
const CALL_LIMIT: Duration = Duration::from_secs(20);
/// `super:secret`, as ZooKeeper's superDigest wants it.
const SUPER_DIGEST: &str = "super:lK75jTNcA+U9vtVEw5vB51mj/w4=";
/// Small, so the standalone server writes several snapshots and log segments.
const STANDALONE_SNAP_COUNT: u32 = 40;

async fn ok<T>(what: &str, fut: impl Future<Output = Result<T, Error>>) -> T {
    match tokio::time::timeout(CALL_LIMIT, fut).await {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => panic!("{what}: {e}"),
        Err(_) => panic!("{what}: no answer within {CALL_LIMIT:?}"),
    }
}

fn corral(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_corral"))
        .args(args)
        .output()
        .expect("run corral");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn migrate(cfg: &Path) -> (bool, String, String) {
    corral(&["datadir", "migrate", "--config", cfg.to_str().unwrap()])
}

fn files_named(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with(prefix) && !n.ends_with(".tmp"))
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// A standalone `corral server` process; killed on drop.
struct Standalone {
    child: Child,
}

impl Standalone {
    /// Starts a standalone server on `data_dir` and `port` and waits until it answers.
    async fn start(root: &Path, data_dir: &Path, port: u16) -> Standalone {
        let cfg = root.join("standalone.cfg");
        std::fs::write(
            &cfg,
            format!(
                "tickTime=2000\ndataDir={}\nclientPort={port}\nclientPortAddress=127.0.0.1\n\
                 maxClientCnxns=0\n4lw.commands.whitelist=*\nadmin.enableServer=false\n\
                 snapCount={STANDALONE_SNAP_COUNT}\n\
                 zookeeper.DigestAuthenticationProvider.superDigest={SUPER_DIGEST}\n",
                data_dir.display()
            ),
        )
        .unwrap();
        let log = std::fs::File::create(root.join("standalone.log")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_corral"))
            .args(["server", "--config", cfg.to_str().unwrap()])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn corral server");
        let mut s = Standalone { child };
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Ok(Some(status)) = s.child.try_wait() {
                panic!(
                    "standalone server exited with {status}: {}",
                    std::fs::read_to_string(root.join("standalone.log")).unwrap_or_default()
                );
            }
            if four_letter_word(port, "ruok").await.as_deref() == Ok("imok") {
                return s;
            }
            assert!(Instant::now() < deadline, "standalone server not ready");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Standalone {
    fn drop(&mut self) {
        self.kill();
    }
}

type Tree = BTreeMap<String, (Option<Vec<u8>>, Stat, Vec<Acl>)>;

/// Every znode outside `/zookeeper` (which holds the ensemble's config on a member) with its
/// data, stat and ACL, walked without recursion. `client` must be allowed to read them all.
async fn dump(client: &Client) -> Tree {
    ok("sync", client.sync("/")).await;
    let mut tree = Tree::new();
    let mut todo = vec!["/".to_string()];
    while let Some(path) = todo.pop() {
        if path == "/zookeeper" {
            continue;
        }
        let (data, stat) = ok(&format!("get {path}"), client.get_data_opt(&path)).await;
        let (acl, _) = ok(&format!("getAcl {path}"), client.get_acl(&path)).await;
        let (children, _) = ok(&format!("ls {path}"), client.children(&path)).await;
        for c in children {
            todo.push(if path == "/" {
                format!("/{c}")
            } else {
                format!("{path}/{c}")
            });
        }
        tree.insert(path, (data, stat, acl));
    }
    tree
}

/// Fails naming the znodes that differ (the trees are too large to print whole).
fn assert_same_tree(got: &Tree, want: &Tree, what: &str) {
    let mut diffs = Vec::new();
    for (path, w) in want {
        match got.get(path) {
            None => diffs.push(format!("{path}: missing")),
            Some(g) if g != w => diffs.push(format!("{path}: {g:?} != {w:?}")),
            Some(_) => {}
        }
    }
    for path in got.keys().filter(|p| !want.contains_key(*p)) {
        diffs.push(format!("{path}: unexpected"));
    }
    assert!(
        diffs.is_empty(),
        "{what}: {} znodes differ:\n{}",
        diffs.len(),
        diffs.join("\n")
    );
}

/// A client for `addr` that reads everything (as the super user).
async fn super_client(addr: &str) -> Client {
    let client = ok(
        "connect",
        Client::builder(addr)
            .session_timeout(Duration::from_secs(30))
            .connect(),
    )
    .await;
    ok("addauth", client.add_auth("digest", b"super:secret")).await;
    client
}

/// Writes a varied tree through `client`: persistent and sequential nodes, ACLs, null and
/// binary data, updates (versions), deletions (cversion), a multi.
async fn fill(client: &Client, keeper: &Client) {
    ok(
        "create /app",
        client.create("/app", b"root of the app", CreateMode::Persistent),
    )
    .await;
    let secret_acl = vec![
        acl::digest(perms::ALL, "alice", "pw"),
        Acl {
            perms: perms::READ,
            id: corral_client::Id {
                scheme: "world".into(),
                id: "anyone".into(),
            },
        },
    ];
    ok(
        "create /secure",
        client.create(
            "/secure",
            b"guarded",
            CreateOptions::new(CreateMode::Persistent).acl(secret_acl),
        ),
    )
    .await;
    ok(
        "create null",
        client.create_opt("/app/null", None, CreateMode::Persistent),
    )
    .await;
    for i in 0..120u32 {
        let path = format!("/app/n{i:03}");
        ok(
            "create",
            client.create(&path, &i.to_be_bytes(), CreateMode::Persistent),
        )
        .await;
        if i % 3 == 0 {
            ok("set", client.set_data(&path, b"updated", None)).await;
            ok("set", client.set_data(&path, b"updated twice", None)).await;
        }
        if i % 7 == 0 {
            ok("delete", client.delete(&path, None)).await;
        }
        if i % 10 == 0 {
            ok(
                "create seq",
                client.create("/app/seq-", &[0xff, 0, 1], CreateMode::PersistentSequential),
            )
            .await;
        }
    }
    ok(
        "multi",
        client
            .transaction()
            .create("/app/multi", b"m", CreateMode::Persistent)
            .set_data("/app", b"after multi", None)
            .commit(),
    )
    .await;
    ok(
        "ephemeral",
        keeper.create("/app/keeper", b"alive", CreateMode::Ephemeral),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standalone_data_directory_becomes_the_first_member_and_grows_to_three() {
    let body = async {
        let extra = format!(
            "reconfigEnabled=true\nzookeeper.DigestAuthenticationProvider.superDigest={SUPER_DIGEST}\n"
        );
        // Member 1 is the only participant; 2 and 3 start as observers and are added as
        // participants by reconfig, as in the documented growth path.
        let mut ens = Ensemble::configure(1, 2, &extra);
        let root = tempfile::tempdir().unwrap();
        let data1 = ens.data_dir_of(1);
        let port1 = ens.member(1).client_port;
        let addr1 = ens.member(1).addr();

        // 1. A standalone server on member 1's directory and port.
        let mut standalone = Standalone::start(root.path(), &data1, port1).await;
        let writer = super_client(&addr1).await;
        let keeper = ok(
            "connect keeper",
            Client::builder(&addr1)
                .session_timeout(Duration::from_secs(30))
                .connect(),
        )
        .await;
        fill(&writer, &keeper).await;
        // The keeper writes last: its last seen zxid is the standalone server's last zxid.
        let last = ok(
            "keeper's last write",
            keeper.set_data("/app/keeper", b"still alive", None),
        )
        .await;
        let last_zxid = last.mzxid;
        let session = keeper.session_id();
        let before = dump(&writer).await;
        assert!(before.len() > 100, "{} znodes", before.len());
        standalone.kill();
        writer.close().await;

        let snapshots = files_named(&data1, "snapshot.");
        let logs = files_named(&data1, "log.");
        assert!(snapshots.len() >= 2, "snapshots: {snapshots:?}");
        assert!(logs.len() >= 2, "log segments: {logs:?}");

        // 2. Migrate: the standalone files are moved aside, not deleted.
        let (ok_, out, err) = migrate(&ens.config_path_of(1));
        assert!(ok_, "migrate failed: {out}{err}");
        assert!(out.contains("migrated:"), "{out}");
        assert!(out.contains(&format!("zxid {last_zxid:#x}")), "{out}");
        assert!(files_named(&data1, "snapshot.").is_empty());
        assert!(files_named(&data1, "log.").is_empty());
        let aside = data1.join("migrated-standalone");
        assert_eq!(files_named(&aside, "snapshot.").len(), snapshots.len());
        assert_eq!(files_named(&aside, "log.").len(), logs.len());
        assert!(!out.contains("resumed"), "{out}");

        // 2b. As if that run had been interrupted after writing the Raft snapshot: the log
        //     part of the Raft state gone, the standalone files not moved yet. A second run
        //     completes it.
        for file in files_named(&aside, "snapshot.")
            .into_iter()
            .chain(files_named(&aside, "log."))
        {
            std::fs::rename(&file, data1.join(file.file_name().unwrap())).unwrap();
        }
        std::fs::remove_dir_all(data1.join("raft")).unwrap();
        let (ok_, out, err) = migrate(&ens.config_path_of(1));
        assert!(ok_, "second migrate failed: {out}{err}");
        assert!(out.contains("resumed"), "{out}");
        assert!(out.contains(&format!("zxid {last_zxid:#x}")), "{out}");
        let log = corral_storage::RaftLog::open(&data1.join("raft"), Default::default()).unwrap();
        assert!(
            log.read_vote().is_some() && log.last_purged().is_some(),
            "the second run wrote the log part of the Raft state again"
        );
        drop(log);
        assert!(files_named(&data1, "snapshot.").is_empty());
        assert!(files_named(&data1, "log.").is_empty());

        // 2c. Standalone files that are not the migrated data (the snapshots without the
        //     logs: an older state) are refused with both zxids, and nothing moves.
        for file in files_named(&aside, "snapshot.") {
            std::fs::copy(&file, data1.join(file.file_name().unwrap())).unwrap();
        }
        let (ok_, out, err) = migrate(&ens.config_path_of(1));
        assert!(!ok_, "migrated other data: {out}");
        assert!(
            err.contains(&format!("holds the imported state of zxid {last_zxid:#x}")),
            "{err}"
        );
        assert_eq!(files_named(&aside, "snapshot.").len(), snapshots.len());
        for file in files_named(&data1, "snapshot.") {
            std::fs::remove_file(file).unwrap();
        }
        assert!(files_named(&data1, "snapshot.").is_empty());
        assert!(files_named(&data1, "log.").is_empty());
        assert_eq!(files_named(&aside, "snapshot.").len(), snapshots.len());
        assert_eq!(files_named(&aside, "log.").len(), logs.len());

        // 3. The member serves the same tree; the keeper resumes its session with the last
        //    zxid it saw on the standalone server.
        ens.start_all().await;
        assert_eq!(ens.leader().await, 1);
        let (_, stat) = ok("keeper resumes", keeper.get_data("/app/keeper")).await;
        assert_eq!(keeper.session_id(), session, "the session was kept");
        assert_eq!(stat.ephemeral_owner, session);
        let admin = super_client(&addr1).await;
        assert_same_tree(&dump(&admin).await, &before, "after the migration");

        // New writes get zxids above every standalone one, in a higher epoch.
        let (_, created) = ok(
            "create after",
            keeper.create("/after", b"new", CreateMode::Persistent),
        )
        .await;
        assert!(
            created.czxid > last_zxid,
            "{:#x} <= {last_zxid:#x}",
            created.czxid
        );
        assert!(
            created.czxid >> 32 > last_zxid >> 32,
            "{:#x}",
            created.czxid
        );
        let expected = dump(&admin).await;

        // 4. Grow to three members; they catch up and serve the same tree.
        let joining = format!(
            "{},{}",
            participant_spec(&ens, 2),
            participant_spec(&ens, 3)
        );
        ok("reconfig", admin.reconfig(&joining, "", "", -1)).await;
        ens.set_role(2, Role::Participant);
        ens.set_role(3, Role::Participant);
        ens.wait_stable().await;
        for id in 1..=3 {
            let c = super_client(&ens.member(id).addr()).await;
            assert_same_tree(&dump(&c).await, &expected, &format!("member {id}"));
            c.close().await;
        }
        keeper.close().await;
        // The keeper's ephemeral went with its session.
        let expected = dump(&admin).await;
        assert!(!expected.contains_key("/app/keeper"));
        admin.close().await;

        // 5. Restart everything: still there.
        ens.stop_all();
        ens.start_all().await;
        for id in 1..=3 {
            let c = super_client(&ens.member(id).addr()).await;
            assert_same_tree(
                &dump(&c).await,
                &expected,
                &format!("member {id} after restart"),
            );
            c.close().await;
        }
    };
    if tokio::time::timeout(TEST_LIMIT, body).await.is_err() {
        panic!("test did not finish within {TEST_LIMIT:?}");
    }
}

fn participant_spec(ens: &Ensemble, id: u64) -> String {
    let m = ens.member(id);
    format!(
        "server.{id}=127.0.0.1:{}:{}:participant;127.0.0.1:{}",
        m.peer_port, m.election_port, m.client_port
    )
}

/// A member's zoo.cfg in `root` for `data`, with `participants` as server.N lines (ports are
/// never bound: migrate only reads the file) and `my_id` in data/myid.
fn member_config(root: &Path, data: &Path, participants: &[u64], my_id: u64) -> PathBuf {
    std::fs::create_dir_all(data).unwrap();
    std::fs::write(data.join("myid"), format!("{my_id}\n")).unwrap();
    let mut text = format!(
        "tickTime=2000\ninitLimit=10\nsyncLimit=5\ndataDir={}\nadmin.enableServer=false\n",
        data.display()
    );
    for id in participants {
        let base = 20000 + 10 * id;
        text.push_str(&format!(
            "server.{id}=127.0.0.1:{}:{};127.0.0.1:{}\n",
            base,
            base + 1,
            base + 2
        ));
    }
    let cfg = root.join(format!("member-{my_id}-{}.cfg", participants.len()));
    std::fs::write(&cfg, text).unwrap();
    cfg
}

/// Each refusal names its reason and changes nothing: no Raft state appears and the
/// standalone files stay where they are.
#[test]
fn migrate_refuses_what_it_cannot_migrate_safely() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let standalone_log = data.join("log.0000000000000001");
    std::fs::write(&standalone_log, b"").unwrap();

    // A standalone configuration: nothing to migrate into.
    let standalone_cfg = tmp.path().join("standalone.cfg");
    std::fs::write(
        &standalone_cfg,
        format!("tickTime=2000\ndataDir={}\n", data.display()),
    )
    .unwrap();
    let (ok_, out, err) = migrate(&standalone_cfg);
    assert!(!ok_, "{out}");
    assert!(err.contains("no server.N lines"), "{err}");

    // More than one participant: an empty voter pair could outvote the imported state.
    let (ok_, out, err) = migrate(&member_config(tmp.path(), &data, &[1, 2, 3], 1));
    assert!(!ok_, "{out}");
    assert!(
        err.contains("must be the only participant") && err.contains("reconfig -add"),
        "{err}"
    );

    let cfg = member_config(tmp.path(), &data, &[1], 1);

    // A server holds the directory.
    {
        let _held = corral_storage::DirLock::acquire(&data).unwrap();
        let (ok_, out, err) = migrate(&cfg);
        assert!(!ok_, "{out}");
        assert!(err.contains("in use by another server"), "{err}");
    }

    // Raft state already there (a member's directory, or a second run).
    let raft = data.join("raft");
    let mut log = corral_storage::RaftLog::open(&raft, Default::default()).unwrap();
    log.save_vote(b"vote").unwrap();
    drop(log);
    let (ok_, out, err) = migrate(&cfg);
    assert!(!ok_, "{out}");
    assert!(err.contains("already holds Raft state"), "{err}");
    std::fs::remove_dir_all(&raft).unwrap();

    // No standalone data at all.
    let empty = tmp.path().join("empty");
    let (ok_, out, err) = migrate(&member_config(tmp.path(), &empty, &[1], 1));
    assert!(!ok_, "{out}");
    assert!(err.contains("no standalone data to migrate"), "{err}");

    assert!(
        standalone_log.exists(),
        "a refusal moved the standalone log"
    );
    assert!(!data.join("migrated-standalone").exists());
    assert!(!data.join("raft-snapshots").exists());
    assert!(!empty.join("raft-snapshots").exists() && !empty.join("raft").exists());
}
