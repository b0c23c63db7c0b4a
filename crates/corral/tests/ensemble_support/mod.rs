//! Harness for the ensemble tests: several real `corral server` processes forming one ensemble
//! on loopback ports, each with its own data directory, zoo.cfg and log file. Members can be
//! killed with SIGKILL and restarted on the same directory; waits poll `srvr` up to a deadline.
//!
//! When a test panics, dropping the [`Ensemble`] prints the tail of every member's log.

#![allow(dead_code)] // not every test uses every helper

use std::fs;
use std::io::Write as _;
use std::net::TcpListener as StdListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use corral_client::{Client, Error};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Hang guard only: how long one wait of the harness may take before the test fails.
pub const PATIENCE: Duration = Duration::from_secs(40);
/// Pause between two polls of `srvr`.
const POLL_INTERVAL: Duration = Duration::from_millis(50);
/// How many lines of each member's log a failing test prints.
const LOG_TAIL_LINES: usize = 60;
/// ZooKeeper's default tick; Raft elections then happen after 400–800 ms without a leader.
pub const TICK_TIME_MS: u32 = 2000;

/// Begins the line the harness writes into a member's log before each start.
const START_MARKER_PREFIX: &str = "===== harness: starting member ";

/// Role of a member as `server.N` declares it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Participant,
    Observer,
}

/// What `srvr` says about one member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Srvr {
    /// `leader`, `follower`, `observer` or `looking`.
    pub mode: String,
    pub zxid: i64,
}

/// One member: its ports, its directory and, while running, its process.
pub struct Member {
    pub id: u64,
    pub role: Role,
    pub client_port: u16,
    pub peer_port: u16,
    pub election_port: u16,
    dir: PathBuf,
    child: Option<Child>,
    log_path: PathBuf,
}

impl Member {
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    fn config_path(&self) -> PathBuf {
        self.dir.join("zoo.cfg")
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// Starts the process; its output is appended to the member's log file, so a restarted
    /// member's log keeps what the earlier process wrote.
    fn spawn(&mut self) {
        assert!(
            self.child.is_none(),
            "member {} is already running",
            self.id
        );
        let mut log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .expect("member log file");
        writeln!(log, "{START_MARKER_PREFIX}{} =====", self.id).unwrap();
        let log_err = log.try_clone().unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_corral"))
            .arg("server")
            .arg("--config")
            .arg(self.config_path())
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .expect("spawn corral server");
        self.child = Some(child);
    }

    /// SIGKILL and reap; nothing gets flushed.
    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill(); // std sends SIGKILL on Unix
            let _ = c.wait();
        }
    }

    /// Fails the test if the process exited on its own.
    fn check_alive(&mut self) {
        if let Some(c) = self.child.as_mut() {
            if let Ok(Some(status)) = c.try_wait() {
                panic!(
                    "member {} exited with {status}; its log:\n{}",
                    self.id,
                    self.log()
                );
            }
        }
    }

    /// What the member logged since the harness last started it.
    pub fn log_since_last_start(&self) -> String {
        let log = self.log();
        match log.rfind(START_MARKER_PREFIX) {
            Some(at) => log[at..].to_string(),
            None => log,
        }
    }

    fn log_tail(&self) -> String {
        let log = self.log();
        // The harness's own `srvr` polls would crowd out everything else.
        let lines: Vec<&str> = log
            .lines()
            .filter(|l| !l.contains("processing four-letter word"))
            .collect();
        lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
    }
}

/// A running ensemble of real server processes. Drop kills every process.
pub struct Ensemble {
    pub members: Vec<Member>,
    /// Holds every member's directory; removed on drop.
    _root: tempfile::TempDir,
}

fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind an ephemeral port")
        .port()
}

/// Distinct free ports. A port found free can be taken by another process before the server
/// binds it; a member that then fails to start shows up in `wait_stable`'s error with its log.
fn free_ports(n: usize) -> Vec<u16> {
    let mut ports: Vec<u16> = Vec::with_capacity(n);
    while ports.len() < n {
        let p = free_port();
        if !ports.contains(&p) {
            ports.push(p);
        }
    }
    ports
}

fn write_config(members: &[Member], me: &Member, extra_config: &str) {
    let mut text = format!(
        "tickTime={TICK_TIME_MS}\n\
         initLimit=10\n\
         syncLimit=5\n\
         dataDir={}\n\
         maxClientCnxns=0\n\
         4lw.commands.whitelist=*\n\
         {extra_config}",
        me.data_dir().display()
    );
    for m in members {
        let role = match m.role {
            Role::Participant => "participant",
            Role::Observer => "observer",
        };
        text.push_str(&format!(
            "server.{}=127.0.0.1:{}:{}:{role};127.0.0.1:{}\n",
            m.id, m.peer_port, m.election_port, m.client_port
        ));
    }
    fs::create_dir_all(me.data_dir()).expect("member data dir");
    fs::write(me.data_dir().join("myid"), format!("{}\n", me.id)).expect("write myid");
    fs::write(me.config_path(), text).expect("write zoo.cfg");
}

impl Ensemble {
    /// Starts `n_voters` participants (ids 1..=n_voters) and `n_observers` observers (the ids
    /// after them) and waits until every member has a role and exactly one is the leader.
    pub async fn start(n_voters: usize, n_observers: usize) -> Ensemble {
        Ensemble::start_with(n_voters, n_observers, "").await
    }

    /// [`Ensemble::start`] with `extra_config` (whole `key=value\n` lines, e.g.
    /// `"snapCount=100\n"`) appended to every member's zoo.cfg.
    pub async fn start_with(n_voters: usize, n_observers: usize, extra_config: &str) -> Ensemble {
        let mut ens = Ensemble::configure(n_voters, n_observers, extra_config);
        ens.start_all().await;
        ens
    }

    /// Like [`Ensemble::start_with`], but only writes every member's directory, myid and
    /// zoo.cfg: a test prepares a member's data directory before [`Ensemble::start_all`].
    pub fn configure(n_voters: usize, n_observers: usize, extra_config: &str) -> Ensemble {
        let root = tempfile::Builder::new()
            .prefix("corral-ensemble-")
            .tempdir()
            .expect("temp dir");
        let total = n_voters + n_observers;
        let ports = free_ports(3 * total);
        let members: Vec<Member> = (0..total)
            .map(|i| {
                let id = i as u64 + 1;
                let dir = root.path().join(format!("member-{id}"));
                fs::create_dir_all(&dir).expect("member dir");
                Member {
                    id,
                    role: if i < n_voters {
                        Role::Participant
                    } else {
                        Role::Observer
                    },
                    client_port: ports[3 * i],
                    peer_port: ports[3 * i + 1],
                    election_port: ports[3 * i + 2],
                    log_path: dir.join("server.log"),
                    dir,
                    child: None,
                }
            })
            .collect();
        for m in &members {
            write_config(&members, m, extra_config);
        }
        Ensemble {
            members,
            _root: root,
        }
    }

    /// Starts every member that is not running and waits until the ensemble is stable.
    pub async fn start_all(&mut self) {
        for m in &mut self.members {
            if !m.is_running() {
                m.spawn();
            }
        }
        self.wait_stable().await;
    }

    /// A member's dataDir (holding its myid).
    pub fn data_dir_of(&self, id: u64) -> PathBuf {
        self.member(id).data_dir()
    }

    /// A member's zoo.cfg.
    pub fn config_path_of(&self, id: u64) -> PathBuf {
        self.member(id).config_path()
    }

    pub fn member(&self, id: u64) -> &Member {
        self.members
            .iter()
            .find(|m| m.id == id)
            .unwrap_or_else(|| panic!("no member {id}"))
    }

    /// The member whose client address (`127.0.0.1:port`) is `addr`.
    pub fn member_by_addr(&self, addr: &str) -> Option<u64> {
        self.members.iter().find(|m| m.addr() == addr).map(|m| m.id)
    }

    fn member_mut(&mut self, id: u64) -> &mut Member {
        self.members
            .iter_mut()
            .find(|m| m.id == id)
            .unwrap_or_else(|| panic!("no member {id}"))
    }

    /// Ids of the members whose process runs.
    pub fn running(&self) -> Vec<u64> {
        self.members
            .iter()
            .filter(|m| m.is_running())
            .map(|m| m.id)
            .collect()
    }

    /// `srvr` of one member; `None` if it does not answer (down, or refusing connections).
    pub async fn srvr(&self, id: u64) -> Option<Srvr> {
        let text = four_letter_word(self.member(id).client_port, "srvr")
            .await
            .ok()?;
        parse_srvr(&text)
    }

    /// Waits until every running member answers `srvr` with a role (`leader`, `follower` or
    /// `observer`, as its `server.N` line says) and exactly one is the leader; returns the
    /// leader's id. Panics (with every member's log tail) after [`PATIENCE`].
    pub async fn wait_stable(&mut self) -> u64 {
        let deadline = Instant::now() + PATIENCE;
        loop {
            for m in &mut self.members {
                m.check_alive();
            }
            let mut leaders = Vec::new();
            let mut ok = true;
            let mut seen = Vec::new();
            for id in self.running() {
                let s = self.srvr(id).await;
                let role = self.member(id).role;
                match s.as_ref().map(|s| s.mode.as_str()) {
                    Some("leader") if role == Role::Participant => leaders.push(id),
                    Some("follower") if role == Role::Participant => {}
                    Some("observer") if role == Role::Observer => {}
                    _ => ok = false,
                }
                seen.push((id, s));
            }
            if ok && leaders.len() == 1 {
                return leaders[0];
            }
            if Instant::now() > deadline {
                panic!(
                    "ensemble did not settle within {PATIENCE:?}; srvr per member: {seen:?}\n{}",
                    self.log_tails()
                );
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// The current leader (after waiting for a stable ensemble).
    pub async fn leader(&mut self) -> u64 {
        self.wait_stable().await
    }

    /// Running participants that are not the leader.
    pub async fn followers(&mut self) -> Vec<u64> {
        let leader = self.wait_stable().await;
        self.running()
            .into_iter()
            .filter(|id| *id != leader && self.member(*id).role == Role::Participant)
            .collect()
    }

    /// Waits until every running member reports the same zxid in `srvr`, and returns it.
    pub async fn wait_same_zxid(&mut self) -> i64 {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let mut zxids = Vec::new();
            for id in self.running() {
                zxids.push((id, self.srvr(id).await.map(|s| s.zxid)));
            }
            if let Some((_, Some(first))) = zxids.first() {
                if zxids.iter().all(|(_, z)| *z == Some(*first)) {
                    return *first;
                }
            }
            if Instant::now() > deadline {
                panic!(
                    "members did not reach the same zxid within {PATIENCE:?}: {zxids:x?}\n{}",
                    self.log_tails()
                );
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    pub fn kill9(&mut self, id: u64) {
        self.member_mut(id).kill9();
    }

    /// Freezes (`SIGSTOP`) or thaws (`SIGCONT`) a running member: to its peers and clients a
    /// frozen member is a hung one (a long pause, a stalled VM), its sockets open but silent.
    pub fn freeze(&self, id: u64, frozen: bool) {
        let pid = self
            .member(id)
            .child
            .as_ref()
            .unwrap_or_else(|| panic!("member {id} is not running"))
            .id();
        let sig = if frozen { libc::SIGSTOP } else { libc::SIGCONT };
        // SAFETY: a plain kill(2) on the pid of a child this harness started and still owns.
        let rc = unsafe { libc::kill(pid as libc::pid_t, sig) };
        assert_eq!(
            rc,
            0,
            "signal member {id}: {}",
            std::io::Error::last_os_error()
        );
    }

    /// Starts a killed member again on the same directory and configuration (no wait).
    pub fn restart(&mut self, id: u64) {
        self.member_mut(id).spawn();
    }

    pub fn stop_all(&mut self) {
        for m in &mut self.members {
            m.kill9();
        }
    }

    /// Connect string naming every member (observers included).
    pub fn connect_string(&self) -> String {
        self.members
            .iter()
            .map(|m| m.addr())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Connect string naming one member only.
    /// Expects member `id` to play `role` from now on (after a reconfig changed it).
    pub fn set_role(&mut self, id: u64, role: Role) {
        for m in &mut self.members {
            if m.id == id {
                m.role = role;
            }
        }
    }

    pub fn connect_string_of(&self, id: u64) -> String {
        self.member(id).addr()
    }

    /// A new session through `connect_string`.
    pub async fn client(&self, connect_string: &str, session_timeout_ms: u64) -> Client {
        Client::builder(connect_string)
            .session_timeout(Duration::from_millis(session_timeout_ms))
            .connect_timeout(PATIENCE)
            .connect()
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "cannot connect to {connect_string}: {e}\n{}",
                    self.log_tails()
                )
            })
    }

    /// A new session with one member only.
    pub async fn client_of(&self, id: u64) -> Client {
        self.client(&self.connect_string_of(id), 10_000).await
    }

    pub fn log_tails(&self) -> String {
        let mut out = String::new();
        for m in &self.members {
            out.push_str(&format!(
                "----- member {} ({:?}, {}) log tail -----\n{}\n",
                m.id,
                m.role,
                if m.is_running() { "running" } else { "down" },
                m.log_tail()
            ));
        }
        out
    }
}

impl Drop for Ensemble {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.log_tails());
        }
        self.stop_all();
    }
}

/// Runs `op` until it succeeds, retrying on errors a client may see around a leader change
/// (connection loss, timeouts); panics on any other error or after [`PATIENCE`].
pub async fn retry<T, F, Fut>(what: &str, mut op: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, Error>>,
{
    let deadline = Instant::now() + PATIENCE;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, op()).await {
            Ok(Ok(v)) => return v,
            Ok(Err(e)) if e.is_retryable() => {}
            Ok(Err(e)) => panic!("{what}: {e}"),
            Err(_) => panic!("{what}: no success within {PATIENCE:?}"),
        }
        if Instant::now() > deadline {
            panic!("{what}: no success within {PATIENCE:?}");
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

pub async fn four_letter_word(port: u16, word: &str) -> Result<String, String> {
    let io = async {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        s.write_all(word.as_bytes()).await?;
        let mut out = String::new();
        s.read_to_string(&mut out).await?;
        Ok::<_, std::io::Error>(out)
    };
    match tokio::time::timeout(Duration::from_secs(5), io).await {
        Ok(Ok(out)) => Ok(out),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("{word}: no answer in 5 s")),
    }
}

fn parse_srvr(text: &str) -> Option<Srvr> {
    let mut mode = None;
    let mut zxid = None;
    for line in text.lines() {
        if let Some(m) = line.strip_prefix("Mode: ") {
            mode = Some(m.trim().to_string());
        } else if let Some(z) = line.strip_prefix("Zxid: 0x") {
            zxid = i64::from_str_radix(z.trim(), 16).ok();
        }
    }
    Some(Srvr {
        mode: mode?,
        zxid: zxid?,
    })
}

// ---------------------------------------------------------------------------------------
// Third-party client suites that steer the ensemble

/// Hang guard for one whole third-party suite run against an ensemble.
pub const SUITE_LIMIT: Duration = Duration::from_secs(150);
/// Lines a suite prints to steer the ensemble start with this; everything else is output.
const CONTROL_PREFIX: &str = "@@ ";

/// Runs a client suite (kazoo, go-zookeeper, ...) against the ensemble. The suite may steer the
/// ensemble by printing control lines to its stdout; the harness answers each with one line on
/// the suite's stdin:
///
/// - `@@ kill-leader` → kills the leader with SIGKILL, waits for a new one among the rest,
///   answers `killed HOST:PORT` (the old leader's client address);
/// - `@@ kill HOST:PORT` → kills that member with SIGKILL, answers `ok`;
/// - `@@ restart HOST:PORT` → starts that member again, answers `ok` without waiting;
/// - `@@ wait-stable` → waits until the running members agree on a leader, answers
///   `leader HOST:PORT`.
///
/// Like `support::run_suite`, the suite passes when it exits 0 and its last line is
/// `N passed, 0 failed` with N > 0.
pub async fn run_steering_suite(
    ens: &mut impl Steerable,
    name: &str,
    cmd: &mut tokio::process::Command,
) {
    use tokio::io::AsyncBufReadExt;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("could not run the {name} suite ({cmd:?}): {e}"));
    let mut stdin = child.stdin.take().expect("suite stdin");
    let mut stdout = tokio::io::BufReader::new(child.stdout.take().expect("suite stdout")).lines();
    let mut stderr_pipe = child.stderr.take().expect("suite stderr");
    let stderr_task = tokio::spawn(async move {
        let mut text = String::new();
        let _ = stderr_pipe.read_to_string(&mut text).await;
        text
    });

    let mut output = String::new();
    let run = async {
        while let Some(line) = stdout.next_line().await.expect("read suite stdout") {
            let Some(control) = line.strip_prefix(CONTROL_PREFIX) else {
                output.push_str(&line);
                output.push('\n');
                continue;
            };
            output.push_str(&format!("[harness] {control}\n"));
            let answer = steer(ens, control.trim()).await;
            stdin
                .write_all(format!("{answer}\n").as_bytes())
                .await
                .expect("answer the suite");
            stdin.flush().await.expect("answer the suite");
        }
        child.wait().await.expect("wait for the suite")
    };
    let status = tokio::time::timeout(SUITE_LIMIT, run).await;
    let stderr = match tokio::time::timeout(Duration::from_secs(5), stderr_task).await {
        Ok(Ok(text)) => text,
        _ => String::from("(stderr unavailable)"),
    };
    println!("--- {name} suite stdout\n{output}\n--- {name} suite stderr\n{stderr}");
    let status = match status {
        Ok(status) => status,
        Err(_) => panic!(
            "{name} suite did not finish within {SUITE_LIMIT:?}:\n{output}\n{stderr}\n{}",
            ens.diagnostics()
        ),
    };
    let summary = output
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    let clean = summary.ends_with(" passed, 0 failed") && !summary.starts_with("0 passed");
    assert!(
        status.success() && clean,
        "{name} suite failed ({status}, summary {summary:?}):\n--- stdout\n{output}\n--- stderr\n{stderr}\n{}",
        ens.diagnostics()
    );
}

/// An ensemble that [`run_steering_suite`] can steer: Corral's or Apache ZooKeeper's, so one
/// suite runs against both.
// The harness's own trait, used with concrete types only: the futures need no `Send` bound.
#[allow(async_fn_in_trait)]
pub trait Steerable {
    /// Waits until the running members agree on one leader; returns its id.
    async fn stable_leader(&mut self) -> u64;
    /// SIGKILL member `id`.
    fn kill_member(&mut self, id: u64);
    /// Starts killed member `id` again (no wait).
    fn restart_member(&mut self, id: u64);
    /// Client address (`127.0.0.1:port`) of member `id`.
    fn addr_of(&self, id: u64) -> String;
    /// The member whose client address is `addr`.
    fn id_at(&self, addr: &str) -> Option<u64>;
    /// The members' logs, for a failure message.
    fn diagnostics(&self) -> String;
}

impl Steerable for Ensemble {
    async fn stable_leader(&mut self) -> u64 {
        self.wait_stable().await
    }
    fn kill_member(&mut self, id: u64) {
        self.kill9(id);
    }
    fn restart_member(&mut self, id: u64) {
        self.restart(id);
    }
    fn addr_of(&self, id: u64) -> String {
        self.member(id).addr()
    }
    fn id_at(&self, addr: &str) -> Option<u64> {
        self.member_by_addr(addr)
    }
    fn diagnostics(&self) -> String {
        self.log_tails()
    }
}

impl Steerable for ApacheEnsemble {
    async fn stable_leader(&mut self) -> u64 {
        self.wait_stable().await
    }
    fn kill_member(&mut self, id: u64) {
        self.kill9(id);
    }
    fn restart_member(&mut self, id: u64) {
        self.restart(id);
    }
    fn addr_of(&self, id: u64) -> String {
        self.addr(id)
    }
    fn id_at(&self, addr: &str) -> Option<u64> {
        (1..=self.ports.len() as u64).find(|id| self.addr(*id) == addr)
    }
    fn diagnostics(&self) -> String {
        self.logs()
    }
}

/// Carries out one control line of [`run_steering_suite`]; returns the answer line.
async fn steer(ens: &mut impl Steerable, control: &str) -> String {
    let (verb, arg) = control.split_once(' ').unwrap_or((control, ""));
    let member =
        |id: Option<u64>| id.unwrap_or_else(|| panic!("suite named {arg:?}, which is no member"));
    match verb {
        "kill-leader" => {
            let leader = ens.stable_leader().await;
            ens.kill_member(leader);
            ens.stable_leader().await;
            format!("killed {}", ens.addr_of(leader))
        }
        "kill" => {
            let id = member(ens.id_at(arg));
            ens.kill_member(id);
            "ok".to_string()
        }
        "restart" => {
            let id = member(ens.id_at(arg));
            ens.restart_member(id);
            "ok".to_string()
        }
        "wait-stable" => {
            let leader = ens.stable_leader().await;
            format!("leader {}", ens.addr_of(leader))
        }
        other => panic!("unknown control line from the suite: {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------
// A three-member Apache ZooKeeper ensemble (the reference for differential tests)

/// How long a JVM member may take to start and join its ensemble on a loaded machine.
const APACHE_PATIENCE: Duration = Duration::from_secs(120);

/// JVM flags of every Apache member: a small heap and quick start-up on a shared machine.
const APACHE_JAVA_OPTS: &str = "-Xmx128m -XX:+UseSerialGC -XX:TieredStopAtLevel=1";

/// An Apache ZooKeeper ensemble from the Debian package (`scripts/apache-zk --quorum`), on
/// loopback, with the same kind of `server.N` lines as [`Ensemble`]. Killed when dropped.
pub struct ApacheEnsemble {
    /// (client, peer, election) ports per member, member i + 1 at index i.
    pub ports: Vec<(u16, u16, u16)>,
    /// Running members' processes, member i + 1 at index i (`None` while killed).
    children: Vec<Option<Child>>,
    /// Extra JVM flags of every member (system properties such as `-Dreadonlymode.enabled`).
    java_opts: String,
    root: tempfile::TempDir,
}

impl ApacheEnsemble {
    pub async fn start(n: usize) -> ApacheEnsemble {
        ApacheEnsemble::start_with(n, "").await
    }

    /// [`ApacheEnsemble::start`] with `java_opts` added to every member's JVM flags; waits
    /// until one member leads and the others follow.
    pub async fn start_with(n: usize, java_opts: &str) -> ApacheEnsemble {
        let root = tempfile::Builder::new()
            .prefix("corral-apache-ensemble-")
            .tempdir()
            .expect("temp dir");
        let flat = free_ports(3 * n);
        let ports: Vec<(u16, u16, u16)> = (0..n)
            .map(|i| (flat[3 * i], flat[3 * i + 1], flat[3 * i + 2]))
            .collect();
        let servers: String = ports
            .iter()
            .enumerate()
            .map(|(i, (c, p, e))| format!("server.{}=127.0.0.1:{p}:{e};127.0.0.1:{c}\n", i + 1))
            .collect();
        for i in 0..n {
            let dir = root.path().join(format!("member-{}", i + 1));
            let data = dir.join("data");
            fs::create_dir_all(&data).expect("member dir");
            fs::write(data.join("myid"), format!("{}\n", i + 1)).expect("myid");
            fs::write(
                dir.join("zoo.cfg"),
                format!(
                    "tickTime={TICK_TIME_MS}\ninitLimit=10\nsyncLimit=5\ndataDir={}\n\
                     4lw.commands.whitelist=*\nadmin.enableServer=false\nmaxClientCnxns=0\n{servers}",
                    data.display()
                ),
            )
            .expect("zoo.cfg");
        }
        let mut zk = ApacheEnsemble {
            ports,
            children: (0..n).map(|_| None).collect(),
            java_opts: java_opts.to_string(),
            root,
        };
        for id in 1..=n as u64 {
            zk.restart(id);
        }
        zk.wait_stable().await;
        zk
    }

    /// Starts member `id` (again) on its directory; its stderr is appended to its log.
    pub fn restart(&mut self, id: u64) {
        let i = id as usize - 1;
        assert!(self.children[i].is_none(), "Apache member {id} is running");
        let dir = self.root.path().join(format!("member-{id}"));
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("stderr.log"))
            .expect("log file");
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/apache-zk");
        // scripts/apache-zk execs java, so the child is the JVM itself and SIGKILL reaches it.
        let child = Command::new("bash")
            .arg(&script)
            .arg("--quorum")
            .arg(dir.join("zoo.cfg"))
            .env(
                "ZK_JAVA_OPTS",
                format!("{APACHE_JAVA_OPTS} {}", self.java_opts),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("run scripts/apache-zk --quorum");
        self.children[i] = Some(child);
    }

    /// SIGKILL and reap member `id`.
    pub fn kill9(&mut self, id: u64) {
        if let Some(mut c) = self.children[id as usize - 1].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Waits until one running member leads and the other running ones follow; returns the
    /// leader's id.
    pub async fn wait_stable(&self) -> u64 {
        let running = self.children.iter().filter(|c| c.is_some()).count();
        let deadline = Instant::now() + APACHE_PATIENCE;
        loop {
            let mut modes = Vec::new();
            for (c, _, _) in &self.ports {
                modes.push(
                    four_letter_word(*c, "srvr")
                        .await
                        .ok()
                        .and_then(|t| parse_srvr(&t).map(|s| s.mode)),
                );
            }
            let leaders = modes
                .iter()
                .filter(|m| m.as_deref() == Some("leader"))
                .count();
            let followers = modes
                .iter()
                .filter(|m| m.as_deref() == Some("follower"))
                .count();
            if leaders == 1 && leaders + followers == running {
                let leader = modes.iter().position(|m| m.as_deref() == Some("leader"));
                return leader.expect("one leader") as u64 + 1;
            }
            if Instant::now() > deadline {
                panic!(
                    "Apache ZooKeeper ensemble did not form within {APACHE_PATIENCE:?}: {modes:?}\n{}",
                    self.logs()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub fn addr(&self, id: u64) -> String {
        format!("127.0.0.1:{}", self.ports[id as usize - 1].0)
    }

    /// The member ids whose `srvr` says `mode`.
    pub async fn with_mode(&self, mode: &str) -> Vec<u64> {
        let mut out = Vec::new();
        for (i, (c, _, _)) in self.ports.iter().enumerate() {
            let text = four_letter_word(*c, "srvr").await.unwrap_or_default();
            if parse_srvr(&text).is_some_and(|s| s.mode == mode) {
                out.push(i as u64 + 1);
            }
        }
        out
    }

    pub fn logs(&self) -> String {
        let mut out = String::new();
        for i in 0..self.ports.len() {
            let path = self
                .root
                .path()
                .join(format!("member-{}/stderr.log", i + 1));
            out.push_str(&format!("----- Apache member {} -----\n", i + 1));
            out.push_str(&fs::read_to_string(path).unwrap_or_default());
        }
        out
    }
}

impl Drop for ApacheEnsemble {
    fn drop(&mut self) {
        for id in 1..=self.children.len() as u64 {
            self.kill9(id);
        }
    }
}
