//! Differential tests against a three-member Apache ZooKeeper ensemble (Debian `zookeeper`,
//! started by `scripts/apache-zk --quorum`): where clients and operators can see an ensemble's
//! shape, Corral's must look the same. Both run in the same test, on loopback.

mod durability_support;
mod ensemble_support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use corral_client::{Client, CreateMode, SessionState};
use corral_proto::records::CreateRequest;
use corral_proto::{OpCode, Request};
use durability_support::{CallError, Client as RawClient};
use ensemble_support::{four_letter_word, ApacheEnsemble, Ensemble};

/// Hang guard for the whole test (JVMs start slowly on a loaded machine).
const TEST_LIMIT: Duration = Duration::from_secs(300);

/// The ensemble keys of `mntr` that monitoring reads, per role.
const LEADER_KEYS: &[&str] = &[
    "zk_server_state",
    "zk_peer_state",
    "zk_quorum_size",
    "zk_learners",
    "zk_synced_followers",
    "zk_synced_non_voting_followers",
    "zk_synced_observers",
    "zk_pending_syncs",
    "zk_leader_uptime",
];
const FOLLOWER_KEYS: &[&str] = &["zk_server_state", "zk_peer_state", "zk_quorum_size"];

/// One side of the comparison: member addresses by id, and which is the leader.
struct Side {
    name: &'static str,
    addrs: BTreeMap<u64, String>,
    leader: u64,
    follower: u64,
    /// Every port of the side's members, to be masked in texts that contain them.
    ports: Vec<(u64, [u16; 3])>,
}

impl Side {
    fn port(&self, id: u64) -> u16 {
        self.addrs[&id].rsplit(':').next().unwrap().parse().unwrap()
    }

    /// `text` with every member port replaced by its role (`C1` client port of member 1, `P1`
    /// peer, `E1` election), so the two ensembles' texts compare.
    fn mask_ports(&self, text: &str) -> String {
        let mut out = text.to_string();
        for (id, [c, p, e]) in &self.ports {
            for (port, tag) in [(c, "C"), (p, "P"), (e, "E")] {
                out = out.replace(&format!(":{port}"), &format!(":{tag}{id}"));
            }
        }
        out
    }

    async fn word(&self, id: u64, word: &str) -> String {
        four_letter_word(self.port(id), word)
            .await
            .unwrap_or_else(|e| panic!("{} member {id}: {word}: {e}", self.name))
    }
}

/// `key` → value of a `mntr` answer.
fn mntr_map(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once('\t'))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The keys (text before the first ':') of the lines of a `srvr` answer.
fn srvr_keys(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, _)| k.to_string())
        .collect()
}

/// A session on `old`, resumed on `new`; then a write sent on the connection it left. Returns
/// what that write got, and whether the node exists afterwards (read on the new member).
async fn stale_write_after_a_move(side: &Side, old: u64, new: u64) -> (String, bool) {
    let raw = RawClient::connect(&side.addrs[&old], 10_000)
        .await
        .unwrap_or_else(|e| panic!("{}: raw session: {e}", side.name));
    let resumed = Client::builder(&side.addrs[&new])
        .session(raw.session_id, raw.passwd.clone())
        .connect_timeout(Duration::from_secs(60))
        .connect()
        .await
        .unwrap_or_else(|e| panic!("{}: resume the session: {e}", side.name));
    let stale = raw
        .call(Request::Create {
            op: OpCode::Create,
            req: CreateRequest {
                path: "/stale".into(),
                data: Some(Vec::new().into()),
                acl: durability_support::open_acl(),
                flags: 0,
            },
        })
        .await;
    let outcome = match stale {
        Ok(_) => "applied".to_string(),
        Err(CallError::ConnectionLoss) => "connection closed".to_string(),
        Err(CallError::Zk(code)) => format!("error {code}"),
    };
    resumed.sync("/").await.expect("sync");
    let exists = resumed.exists("/stale").await.expect("exists").is_some();
    resumed.close().await;
    (outcome, exists)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ensemble_looks_like_apache_zookeeper_s() {
    let body = async {
        let zk = ApacheEnsemble::start(3).await;
        let mut corral = Ensemble::start(3, 0).await;

        let zk_leader = zk.with_mode("leader").await[0];
        let zk_side = Side {
            name: "Apache ZooKeeper",
            addrs: (1..=3).map(|id| (id, zk.addr(id))).collect(),
            leader: zk_leader,
            follower: zk.with_mode("follower").await[0],
            ports: (1..=3)
                .map(|id| {
                    let (c, p, e) = zk.ports[id as usize - 1];
                    (id, [c, p, e])
                })
                .collect(),
        };
        let corral_leader = corral.leader().await;
        let corral_side = Side {
            name: "Corral",
            addrs: (1..=3).map(|id| (id, corral.member(id).addr())).collect(),
            leader: corral_leader,
            follower: corral.followers().await[0],
            ports: (1..=3)
                .map(|id| {
                    let m = corral.member(id);
                    (id, [m.client_port, m.peer_port, m.election_port])
                })
                .collect(),
        };

        // /zookeeper/config: the membership in the same format (what Curator's
        // EnsembleTracker and kazoo parse).
        let mut configs = Vec::new();
        for side in [&zk_side, &corral_side] {
            let c = Client::builder(&side.addrs[&side.follower])
                .connect_timeout(Duration::from_secs(60))
                .connect()
                .await
                .expect("connect");
            let (data, _) = c.get_data("/zookeeper/config").await.expect("get config");
            configs.push(side.mask_ports(&String::from_utf8_lossy(&data)));
            c.close().await;
        }
        assert_eq!(
            configs[1], configs[0],
            "/zookeeper/config (Corral, then ZooKeeper)"
        );

        // srvr: the same lines, per role.
        for (role, zk_id, corral_id) in [
            ("leader", zk_side.leader, corral_side.leader),
            ("follower", zk_side.follower, corral_side.follower),
        ] {
            let zk_srvr = zk_side.word(zk_id, "srvr").await;
            let corral_srvr = corral_side.word(corral_id, "srvr").await;
            assert_eq!(
                srvr_keys(&corral_srvr),
                srvr_keys(&zk_srvr),
                "srvr lines of a {role}:\n--- Corral\n{corral_srvr}--- ZooKeeper\n{zk_srvr}"
            );
        }

        // mntr: the ensemble keys monitoring reads, per role, with the same state values.
        for (role, keys, zk_id, corral_id) in [
            ("leader", LEADER_KEYS, zk_side.leader, corral_side.leader),
            (
                "follower",
                FOLLOWER_KEYS,
                zk_side.follower,
                corral_side.follower,
            ),
        ] {
            let zk_mntr = mntr_map(&zk_side.word(zk_id, "mntr").await);
            let corral_mntr = mntr_map(&corral_side.word(corral_id, "mntr").await);
            for key in keys {
                assert!(zk_mntr.contains_key(*key), "ZooKeeper's {role} lacks {key}");
                assert!(
                    corral_mntr.contains_key(*key),
                    "Corral's {role} lacks {key} (ZooKeeper has {:?})",
                    zk_mntr.get(*key)
                );
            }
            for key in ["zk_server_state", "zk_peer_state", "zk_quorum_size"] {
                assert_eq!(corral_mntr[key], zk_mntr[key], "{role}: {key}");
            }
            if role == "leader" {
                for key in ["zk_learners", "zk_synced_followers", "zk_synced_observers"] {
                    assert_eq!(corral_mntr[key], zk_mntr[key], "{role}: {key}");
                }
            }
        }

        // SessionMoved: a write sent on the connection a session left is not applied, and
        // that connection is closed.
        let zk_moved = stale_write_after_a_move(&zk_side, zk_side.follower, zk_side.leader).await;
        let corral_moved =
            stale_write_after_a_move(&corral_side, corral_side.follower, corral_side.leader).await;
        assert_eq!(zk_moved, ("connection closed".to_string(), false));
        assert_eq!(
            corral_moved, zk_moved,
            "a stale write after a session moved"
        );
        corral.stop_all();
    };
    if tokio::time::timeout(TEST_LIMIT, body).await.is_err() {
        panic!("test did not finish within {TEST_LIMIT:?}");
    }
}

// ---------------------------------------------------------------------------------------
// Read-only mode

/// The ensemble operations the read-only comparison needs, on either side.
trait Members {
    fn addr(&self, id: u64) -> String;
    fn kill(&mut self, id: u64);
    fn restart(&mut self, id: u64);
    async fn wait_stable(&mut self);
    async fn a_follower(&mut self) -> u64;
    /// What the members logged, for a failure message.
    fn logs(&self) -> String;
}

impl Members for Ensemble {
    fn addr(&self, id: u64) -> String {
        self.member(id).addr()
    }
    fn kill(&mut self, id: u64) {
        self.kill9(id);
    }
    fn restart(&mut self, id: u64) {
        Ensemble::restart(self, id);
    }
    async fn wait_stable(&mut self) {
        Ensemble::wait_stable(self).await;
    }
    async fn a_follower(&mut self) -> u64 {
        self.followers().await[0]
    }
    fn logs(&self) -> String {
        self.log_tails()
    }
}

impl Members for ApacheEnsemble {
    fn addr(&self, id: u64) -> String {
        ApacheEnsemble::addr(self, id)
    }
    fn kill(&mut self, id: u64) {
        self.kill9(id);
    }
    fn restart(&mut self, id: u64) {
        ApacheEnsemble::restart(self, id);
    }
    async fn wait_stable(&mut self) {
        ApacheEnsemble::wait_stable(self).await;
    }
    async fn a_follower(&mut self) -> u64 {
        self.with_mode("follower").await[0]
    }
    fn logs(&self) -> String {
        ApacheEnsemble::logs(self)
    }
}

/// What a client and an operator see of a member left alone by the other two, with read-only
/// mode on, and once they are back.
#[derive(Debug, PartialEq, Eq)]
struct ReadOnlyView {
    /// `Mode:` of the survivor's `srvr` once it serves read-only clients.
    srvr_mode_alone: String,
    isro_alone: String,
    /// Whether a client that does not allow read-only servers gets a session from it.
    plain_client_connects: bool,
    /// A client that allows read-only servers, with a session from before the loss, on the
    /// survivor. Not compared: Apache ZooKeeper 3.8.0 (Debian) closes such a connection at
    /// once, as it refuses a new read-only session with a bare NotReadOnly reply header (its
    /// own Java client fails the same way), so it serves no read-only client at all.
    alone: ReadOnlyClient,
    /// After the other two returned and the ensemble has a leader again:
    isro_back: String,
    srvr_mode_back: String,
    /// The read-only client's first write that is not refused, and whether its session id
    /// changed on the way.
    read_only_client_writes_again: Result<(), String>,
    read_only_client_state_back: SessionState,
    read_only_client_same_session_back: bool,
}

/// What the read-only client got from the lone member.
#[derive(Debug)]
struct ReadOnlyClient {
    state: SessionState,
    same_session: bool,
    read: Result<Vec<u8>, String>,
    children: Result<Vec<String>, String>,
    write: Result<(), String>,
    /// Changes of the client's state while it sat on the lone member for
    /// [`READ_ONLY_QUIET`] (the member campaigns again and again meanwhile).
    state_changes_while_alone: usize,
}

impl PartialEq for ReadOnlyClient {
    fn eq(&self, _: &Self) -> bool {
        true // see `ReadOnlyView::alone`
    }
}
impl Eq for ReadOnlyClient {}

/// Patience for the read-only transitions (ZooKeeper starts its read-only server a couple of
/// seconds after losing the quorum; JVMs are slow on a loaded machine).
const READ_ONLY_PATIENCE: Duration = Duration::from_secs(60);
/// How long the read-only client is watched on the lone member: several election rounds
/// (0.5–1 s each at the tests' tickTime).
const READ_ONLY_QUIET: Duration = Duration::from_secs(4);

/// Bound of one request of the read-only client: one that a server neither answers nor fails
/// (the client keeps it while reconnecting) counts as "no answer".
const READ_ONLY_OP_LIMIT: Duration = Duration::from_secs(5);

/// Runs `op` until it gets an answer other than a connection loss, for up to
/// [`READ_ONLY_OP_LIMIT`]. Connection losses are retried because a lone Corral member closes
/// its read-only clients' connections at every election it starts (each bumps the term), so
/// a request can meet one; what is compared is the answer.
async fn bounded<T, F, Fut>(mut op: F) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, corral_client::Error>>,
{
    let deadline = tokio::time::Instant::now() + READ_ONLY_OP_LIMIT;
    loop {
        match tokio::time::timeout_at(deadline, op()).await {
            Ok(Err(corral_client::Error::ConnectionLoss)) => {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            Ok(r) => return r.map_err(error_text),
            Err(_) => return Err("no answer".to_string()),
        }
    }
}

fn error_text(e: corral_client::Error) -> String {
    match e {
        corral_client::Error::Zk(code) => format!("{code:?}"),
        other => other.to_string(),
    }
}

async fn srvr_mode(port: u16) -> String {
    let text = four_letter_word(port, "srvr").await.unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix("Mode: "))
        .unwrap_or("(no mode)")
        .trim()
        .to_string()
}

async fn read_only_view(side: &mut impl Members, name: &str) -> ReadOnlyView {
    let all: Vec<String> = (1..=3).map(|id| side.addr(id)).collect();
    let setup = Client::builder(&all.join(","))
        .connect_timeout(READ_ONLY_PATIENCE)
        .connect()
        .await
        .unwrap_or_else(|e| panic!("{name}: connect: {e}"));
    setup
        .create("/ro", b"kept", CreateMode::Persistent)
        .await
        .unwrap_or_else(|e| panic!("{name}: create /ro: {e}"));
    setup
        .create("/ro/child", b"", CreateMode::Persistent)
        .await
        .unwrap_or_else(|e| panic!("{name}: create /ro/child: {e}"));
    setup.close().await;

    // The read-only client's session starts while the ensemble has its quorum; it resumes
    // that session on the survivor. (A session created on a read-only Apache ZooKeeper 3.8.0
    // server is refused: its answer to such a ConnectRequest is a bare reply header with
    // NotReadOnly, to the Java client as to this one. New read-only sessions are not compared.)
    let ro = Client::builder(&all.join(","))
        .read_only(true)
        .connect_timeout(READ_ONLY_PATIENCE)
        .connect()
        .await
        .unwrap_or_else(|e| panic!("{name}: read-only client: {e}"));
    let ro_session = ro.session_id();

    let survivor = side.a_follower().await;
    let port: u16 = side
        .addr(survivor)
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let others: Vec<u64> = (1..=3).filter(|id| *id != survivor).collect();
    for id in &others {
        side.kill(*id);
    }
    let deadline = tokio::time::Instant::now() + READ_ONLY_PATIENCE;
    while four_letter_word(port, "isro").await.as_deref() != Ok("ro") {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name}: the survivor never answered isro with ro (srvr mode {})\n{}",
            srvr_mode(port).await,
            side.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let srvr_mode_alone = srvr_mode(port).await;
    let isro_alone = four_letter_word(port, "isro").await.unwrap_or_default();

    let plain_client_connects = Client::builder(&side.addr(survivor))
        .connect_timeout(Duration::from_secs(3))
        .connect()
        .await
        .map(drop)
        .is_ok();
    let mut state = ro.state_watcher();
    let read_only_client_state = match tokio::time::timeout(
        READ_ONLY_PATIENCE,
        state.wait_for(|s| *s == SessionState::ConnectedReadOnly),
    )
    .await
    {
        Ok(Ok(s)) => *s,
        _ => ro.state(),
    };
    let read_only_client_same_session = ro.session_id() == ro_session;
    let read = bounded(|| ro.get_data("/ro")).await.map(|(d, _)| d);
    let children = bounded(|| ro.children("/ro")).await.map(|(c, _)| c);
    let write = bounded(|| ro.create("/ro/new", b"", CreateMode::Persistent))
        .await
        .map(|_| ());
    // A lone member's failed elections are no reason to drop the clients it serves.
    let mut state_changes_while_alone = 0;
    state.borrow_and_update();
    let quiet_until = tokio::time::Instant::now() + READ_ONLY_QUIET;
    while let Ok(Ok(())) = tokio::time::timeout_at(quiet_until, state.changed()).await {
        state_changes_while_alone += 1;
    }

    for id in &others {
        side.restart(*id);
    }
    side.wait_stable().await;
    let isro_back = four_letter_word(port, "isro").await.unwrap_or_default();
    let srvr_mode_back = match srvr_mode(port).await.as_str() {
        "leader" | "follower" => "leader or follower".to_string(),
        other => other.to_string(),
    };
    // The client finds the read-write ensemble on its own; refusals and connection losses on
    // the way are what this waits out.
    let deadline = tokio::time::Instant::now() + READ_ONLY_PATIENCE;
    let read_only_client_writes_again = loop {
        let attempt = bounded(|| ro.create("/ro/after", b"", CreateMode::Persistent)).await;
        match attempt {
            Ok(_) => break Ok(()),
            Err(e) if tokio::time::Instant::now() > deadline => break Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    let view = ReadOnlyView {
        srvr_mode_alone,
        isro_alone,
        plain_client_connects,
        alone: ReadOnlyClient {
            state: read_only_client_state,
            same_session: read_only_client_same_session,
            read,
            children,
            write,
            state_changes_while_alone,
        },
        isro_back,
        srvr_mode_back,
        read_only_client_writes_again,
        read_only_client_state_back: ro.state(),
        read_only_client_same_session_back: ro.session_id() == ro_session,
    };
    ro.close().await;
    view
}

/// `readonlymode.enabled` on both: two of three members die, a client that allows read-only
/// servers reads from the survivor and is refused writes the same way, operators see the same
/// `srvr`/`isro`, and the same happens when the quorum returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_mode_looks_like_apache_zookeeper_s() {
    // The client's reconnects and probes are what to look at when this fails (RUST_LOG=debug).
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let body = async {
        // ZooKeeper reads the switch from a JVM system property only.
        let mut zk = ApacheEnsemble::start_with(3, "-Dreadonlymode.enabled=true").await;
        let zk_view = read_only_view(&mut zk, "Apache ZooKeeper").await;
        drop(zk);
        let mut corral = Ensemble::start_with(3, 0, "readonlymode.enabled=true\n").await;
        let corral_view = read_only_view(&mut corral, "Corral").await;
        println!("Apache ZooKeeper: {zk_view:#?}\nCorral: {corral_view:#?}");
        assert_eq!(zk_view.isro_alone, "ro", "{zk_view:#?}");
        assert_eq!(
            corral_view, zk_view,
            "read-only mode (Corral, then ZooKeeper)"
        );
        // What ZooKeeper's read-only mode is meant to do (and Apache's 3.8.0 does not, see
        // `ReadOnlyView::alone`): the session resumes read-only, reads are served, writes
        // are refused with NotReadOnly.
        let alone = &corral_view.alone;
        assert_eq!(alone.state, SessionState::ConnectedReadOnly, "{alone:#?}");
        assert!(alone.same_session, "{alone:#?}");
        assert_eq!(alone.read, Ok(b"kept".to_vec()), "{alone:#?}");
        assert_eq!(alone.children, Ok(vec!["child".to_string()]), "{alone:#?}");
        assert_eq!(alone.write, Err("NotReadOnly".to_string()), "{alone:#?}");
        assert_eq!(alone.state_changes_while_alone, 0, "{alone:#?}");
        corral.stop_all();
    };
    if tokio::time::timeout(TEST_LIMIT, body).await.is_err() {
        panic!("test did not finish within {TEST_LIMIT:?}");
    }
}
