//! An ensemble of real `corral server` processes: one directory per member (zoo.cfg, myid,
//! data, log), loopback ports or, with a [`Network`], one namespace per member. Members can be
//! killed (SIGKILL), restarted on the same directory, paused (SIGSTOP) and resumed (SIGCONT).
//! Dropping the ensemble resumes and kills every process it started. Started with
//! [`Ensemble::start_on_faultfs`], each member's data directory is a [`Mount`] that can lose
//! power ([`Ensemble::power_loss`]).

use std::fs;
use std::io::Write as _;
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::disk::MemberDisks;
use crate::faultfs::{FaultFsError, Loss, Mount};
use crate::net::Network;
use crate::proxy::DelayProxies;

/// ZooKeeper's default tick; with it Corral elects a new leader within about two seconds.
pub const TICK_TIME_MS: u32 = 2000;
/// Lowest session timeout the members grant, so clients can ask for short sessions and a
/// pause nemesis can outlast them.
pub const MIN_SESSION_TIMEOUT_MS: u32 = 1000;
/// How long one `srvr` probe may take: a paused member never answers.
const SRVR_TIMEOUT_MS: u64 = 1000;
const POLL_INTERVAL_MS: u64 = 100;

#[derive(Debug, thiserror::Error)]
pub enum EnsembleError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("the corral binary was not found (looked at {0}); build it with `cargo build -p corral` or set CORRAL_BIN")]
    NoBinary(String),
    #[error("no stable leader within {waited_ms} ms; srvr per member: {seen}")]
    NoLeader { waited_ms: u64, seen: String },
    #[error("faultfs: {0}")]
    FaultFs(#[from] FaultFsError),
    #[error("member {id} exited on its own ({status}); see {log}")]
    Exited {
        id: u64,
        status: String,
        log: String,
    },
}

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> EnsembleError {
    let what = what.into();
    move |source| EnsembleError::Io { what, source }
}

/// Finds the `corral` binary: `$CORRAL_BIN`, else next to the running executable or one
/// directory up (test executables live in `target/<profile>/deps`).
pub fn find_corral_binary() -> Result<PathBuf, EnsembleError> {
    if let Some(p) = std::env::var_os("CORRAL_BIN") {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe().map_err(io_err("locating the running executable"))?;
    let mut tried = Vec::new();
    let mut dir = exe.parent();
    for _ in 0..2 {
        let Some(d) = dir else { break };
        let candidate = d.join("corral");
        if candidate.is_file() {
            return Ok(candidate);
        }
        tried.push(candidate.display().to_string());
        dir = d.parent();
    }
    Err(EnsembleError::NoBinary(tried.join(", ")))
}

/// One member: addresses, directory and, while running, its process.
pub struct Member {
    pub id: u64,
    pub ip: Ipv4Addr,
    pub client_port: u16,
    pub peer_port: u16,
    pub election_port: u16,
    pub dir: PathBuf,
    pub namespace: Option<String>,
    child: Option<Child>,
    paused: bool,
}

impl Member {
    pub fn client_addr(&self) -> String {
        format!("{}:{}", self.ip, self.client_port)
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.join("server.log")
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    pub fn is_paused(&self) -> bool {
        self.paused
    }

    fn signal(&self, sig: libc::c_int) {
        if let Some(c) = &self.child {
            // SAFETY: kill(2) on a child we spawned and have not reaped.
            unsafe {
                libc::kill(c.id() as libc::pid_t, sig);
            }
        }
    }
}

/// What the members run.
#[derive(Debug, Clone)]
pub enum Server {
    /// `corral server` from this binary.
    Corral(PathBuf),
    /// Apache ZooKeeper's QuorumPeerMain through this `scripts/apache-zk` (the reference run;
    /// see `crate::apache`).
    Apache(PathBuf),
}

pub struct Ensemble {
    pub members: Vec<Member>,
    server: Server,
    /// One faultfs mount per member (in member order) when started on faultfs; `Drop` kills
    /// the processes before the fields go, so no server holds a file on a mount it loses.
    pub faultfs: Vec<Mount>,
    /// The delaying proxies on the peer links, for the slow nemesis (`proxy.rs`).
    pub proxies: Option<DelayProxies>,
    /// Declared last so it is dropped after the processes are gone.
    pub network: Option<Network>,
    /// Each member's own filesystem on its data directory, for the disk-full nemesis. Mounted
    /// before the members start ([`member_dir`] names the directory) and handed over here, so
    /// it is unmounted after the processes are gone.
    pub disks: Option<MemberDisks>,
}

/// The directory of member `id` under an ensemble's root; its data directory is `data` in it.
pub fn member_dir(root: &Path, id: u64) -> PathBuf {
    root.join(format!("member-{id}"))
}

fn free_port() -> Result<u16, EnsembleError> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(io_err("finding a free port"))
}

impl Ensemble {
    /// Writes every member's configuration under `root` and starts them all (no wait). With a
    /// network, member N listens on its namespace's address; otherwise on loopback ports.
    pub fn start(
        root: &Path,
        n: usize,
        binary: PathBuf,
        network: Option<Network>,
    ) -> Result<Ensemble, EnsembleError> {
        Self::start_configured(root, n, Server::Corral(binary), network, false, "")
    }

    /// [`Ensemble::start`] for either implementation.
    pub fn start_server(
        root: &Path,
        n: usize,
        server: Server,
        network: Option<Network>,
    ) -> Result<Ensemble, EnsembleError> {
        Self::start_configured(root, n, server, network, false, "")
    }

    /// Like [`Ensemble::start`], with every member's data directory on its own faultfs
    /// mount (its backing directory is `data.backing` beside it). Needs root.
    pub fn start_on_faultfs(
        root: &Path,
        n: usize,
        binary: PathBuf,
        network: Option<Network>,
    ) -> Result<Ensemble, EnsembleError> {
        Self::start_configured(root, n, Server::Corral(binary), network, true, "")
    }

    /// The general form: data directories on faultfs or not, and `corral_settings` appended
    /// to every Corral member's zoo.cfg (ignored for Apache ZooKeeper).
    pub fn start_configured(
        root: &Path,
        n: usize,
        server: Server,
        network: Option<Network>,
        on_faultfs: bool,
        corral_settings: &str,
    ) -> Result<Ensemble, EnsembleError> {
        let mut members = Vec::with_capacity(n);
        let mut used = Vec::new();
        for i in 0..n {
            let id = i as u64 + 1;
            let (ip, namespace) = match &network {
                Some(net) => (net.member_ip(id), Some(net.namespace(id))),
                None => (Ipv4Addr::LOCALHOST, None),
            };
            let mut ports = [0u16; 3];
            for p in &mut ports {
                // In a namespace every member has its own address, so fixed ports would do;
                // free loopback ports keep one code path.
                loop {
                    let candidate = free_port()?;
                    if !used.contains(&candidate) {
                        used.push(candidate);
                        *p = candidate;
                        break;
                    }
                }
            }
            let dir = member_dir(root, id);
            members.push(Member {
                id,
                ip,
                client_port: ports[0],
                peer_port: ports[1],
                election_port: ports[2],
                dir,
                namespace,
                child: None,
                paused: false,
            });
        }
        let extra = match &server {
            Server::Corral(_) => corral_settings,
            Server::Apache(_) => crate::apache::EXTRA_CONFIG,
        };
        for m in &members {
            write_config(&members, m, extra)?;
        }
        let mut faultfs = Vec::new();
        if on_faultfs {
            for m in &members {
                // The prepared data directory (myid) becomes the backing directory, so the
                // set-up is durable before any power is lost.
                let data = m.dir.join("data");
                let backing = m.dir.join("data.backing");
                fs::rename(&data, &backing).map_err(io_err("moving data to data.backing"))?;
                fs::create_dir(&data).map_err(io_err("creating the mount point"))?;
                faultfs.push(Mount::start(&backing, &data)?);
            }
        }
        let mut ens = Ensemble {
            members,
            server,
            faultfs,
            proxies: None,
            network,
            disks: None,
        };
        for id in ens.ids() {
            ens.restart(id)?;
        }
        Ok(ens)
    }

    pub fn ids(&self) -> Vec<u64> {
        self.members.iter().map(|m| m.id).collect()
    }

    pub fn member(&self, id: u64) -> &Member {
        self.members
            .iter()
            .find(|m| m.id == id)
            .expect("member ids come from the ensemble")
    }

    fn member_mut(&mut self, id: u64) -> &mut Member {
        self.members
            .iter_mut()
            .find(|m| m.id == id)
            .expect("member ids come from the ensemble")
    }

    pub fn connect_string(&self) -> String {
        self.members
            .iter()
            .map(|m| m.client_addr())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Starts member `id` if it is not running; its output is appended to its log.
    pub fn restart(&mut self, id: u64) -> Result<(), EnsembleError> {
        let (program, mut args): (PathBuf, Vec<std::ffi::OsString>) = match &self.server {
            Server::Corral(binary) => (binary.clone(), vec!["server".into(), "--config".into()]),
            Server::Apache(script) => crate::apache::program(script),
        };
        let m = self.member_mut(id);
        if m.child.is_some() {
            return Ok(());
        }
        let log_path = m.log_path();
        let mut log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(io_err(format!("opening {}", log_path.display())))?;
        let _ = writeln!(log, "===== corral-chaos: starting member {id} =====");
        let log_err = log.try_clone().map_err(io_err("cloning a log handle"))?;
        args.push(m.dir.join("zoo.cfg").into());
        let mut cmd = match &m.namespace {
            // `ip netns exec` execs the program in place (and scripts/apache-zk execs java), so
            // the pid is the server's.
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(&program);
                c
            }
            None => Command::new(&program),
        };
        cmd.args(&args)
            .env("RUST_LOG", "info")
            .env("ZK_JAVA_OPTS", crate::apache::JAVA_OPTS)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err);
        let child = cmd
            .spawn()
            .map_err(io_err(format!("starting member {id}")))?;
        m.child = Some(child);
        m.paused = false;
        Ok(())
    }

    /// SIGKILL and reap.
    pub fn kill9(&mut self, id: u64) {
        let m = self.member_mut(id);
        if let Some(mut c) = m.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        m.paused = false;
    }

    pub fn pause(&mut self, id: u64) {
        let m = self.member_mut(id);
        m.signal(libc::SIGSTOP);
        m.paused = m.child.is_some();
    }

    pub fn resume(&mut self, id: u64) {
        let m = self.member_mut(id);
        m.signal(libc::SIGCONT);
        m.paused = false;
    }

    /// Members that are running and not paused.
    pub fn live(&self) -> Vec<u64> {
        self.members
            .iter()
            .filter(|m| m.is_running() && !m.paused)
            .map(|m| m.id)
            .collect()
    }

    /// If member `id` has exited by itself, reaps it and returns its exit status (it can then
    /// be restarted); `None` while it runs or when it was not started.
    pub fn reap_exited(&mut self, id: u64) -> Option<String> {
        let m = self.member_mut(id);
        let status = m.child.as_mut()?.try_wait().ok()??;
        m.child = None;
        m.paused = false;
        Some(status.to_string())
    }

    /// Fails if a member that should run has exited by itself (a crash is a finding).
    pub fn check_alive(&mut self) -> Result<(), EnsembleError> {
        for m in &mut self.members {
            if let Some(c) = m.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    m.child = None;
                    return Err(EnsembleError::Exited {
                        id: m.id,
                        status: status.to_string(),
                        log: m.log_path().display().to_string(),
                    });
                }
            }
        }
        Ok(())
    }

    /// `Mode:` of member `id` from `srvr`, `None` if it does not answer.
    pub async fn mode(&self, id: u64) -> Option<String> {
        let m = self.member(id);
        let text = four_letter_word(&m.client_addr(), "srvr").await.ok()?;
        text.lines()
            .find_map(|l| l.strip_prefix("Mode: "))
            .map(|s| s.trim().to_string())
    }

    /// The leader among the live members, if exactly one says it leads.
    pub async fn leader(&self) -> Option<u64> {
        let mut leaders = Vec::new();
        for id in self.live() {
            if self.mode(id).await.as_deref() == Some("leader") {
                leaders.push(id);
            }
        }
        (leaders.len() == 1).then(|| leaders[0])
    }

    /// Waits until every live member answers with a role and exactly one leads.
    pub async fn wait_stable(&mut self, patience: Duration) -> Result<u64, EnsembleError> {
        let start = Instant::now();
        loop {
            self.check_alive()?;
            let mut seen = Vec::new();
            let mut leaders = Vec::new();
            let mut ok = true;
            for id in self.live() {
                let mode = self.mode(id).await;
                match mode.as_deref() {
                    Some("leader") => leaders.push(id),
                    Some("follower") => {}
                    _ => ok = false,
                }
                seen.push(format!("{id}={}", mode.as_deref().unwrap_or("-")));
            }
            if ok && leaders.len() == 1 {
                return Ok(leaders[0]);
            }
            if start.elapsed() > patience {
                return Err(EnsembleError::NoLeader {
                    waited_ms: start.elapsed().as_millis() as u64,
                    seen: seen.join(" "),
                });
            }
            tokio::time::sleep(Duration::from_millis(POLL_INTERVAL_MS)).await;
        }
    }

    /// The faultfs mount of member `id`, if the ensemble runs on faultfs.
    pub fn mount(&self, id: u64) -> Option<&Mount> {
        let i = self.members.iter().position(|m| m.id == id)?;
        self.faultfs.get(i)
    }

    /// Power loss of `ids` at one instant: every one is killed (SIGKILL) first, then every
    /// one's mount drops its unsynced data. Restart them with [`Ensemble::restart`]. Without
    /// faultfs this is a plain kill and the losses are empty.
    pub fn power_loss(&mut self, ids: &[u64]) -> Vec<(u64, Loss)> {
        for &id in ids {
            self.resume(id);
            self.kill9(id);
        }
        ids.iter()
            .filter_map(|&id| Some((id, self.mount(id)?.lose())))
            .collect()
    }

    /// Resumes and kills every process.
    pub fn stop_all(&mut self) {
        for id in self.ids() {
            self.resume(id);
            self.kill9(id);
        }
    }
}

impl Drop for Ensemble {
    fn drop(&mut self) {
        self.stop_all();
    }
}

/// `extra` is appended verbatim (settings only one implementation reads).
fn write_config(members: &[Member], me: &Member, extra: &str) -> Result<(), EnsembleError> {
    let data = me.dir.join("data");
    fs::create_dir_all(&data).map_err(io_err(format!("creating {}", data.display())))?;
    let mut text = format!(
        "tickTime={TICK_TIME_MS}\n\
         initLimit=10\n\
         syncLimit=5\n\
         dataDir={}\n\
         maxClientCnxns=0\n\
         minSessionTimeout={MIN_SESSION_TIMEOUT_MS}\n\
         4lw.commands.whitelist=*\n",
        data.display()
    );
    for m in members {
        text.push_str(&format!(
            "server.{}={}:{}:{}:participant;{}:{}\n",
            m.id, m.ip, m.peer_port, m.election_port, m.ip, m.client_port
        ));
    }
    text.push_str(extra);
    fs::write(data.join("myid"), format!("{}\n", me.id)).map_err(io_err("writing myid"))?;
    fs::write(me.dir.join("zoo.cfg"), text).map_err(io_err("writing zoo.cfg"))
}

/// Sends a four-letter word and reads the whole answer, within [`SRVR_TIMEOUT_MS`].
pub async fn four_letter_word(addr: &str, word: &str) -> Result<String, std::io::Error> {
    let io = async {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        s.write_all(word.as_bytes()).await?;
        let mut out = String::new();
        s.read_to_string(&mut out).await?;
        Ok::<_, std::io::Error>(out)
    };
    match tokio::time::timeout(Duration::from_millis(SRVR_TIMEOUT_MS), io).await {
        Ok(r) => r,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("{word} to {addr}: no answer"),
        )),
    }
}
