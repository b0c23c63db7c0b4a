//! Harness for the durability tests: the real `corral server` binary as a child process on a
//! kept data directory (so it can be killed and restarted), a small pipelined client speaking
//! the wire protocol through `corral-proto`, a seeded RNG, and data-dir helpers.

#![allow(dead_code)] // not every test uses every helper

use std::collections::HashMap;
use std::fs;
use std::net::TcpListener as StdListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use corral_proto::records::{
    Acl, ConnectRequest, ConnectResponse, CreateRequest, Id, PathWatch, ReplyHeader, RequestHeader,
    SetDataRequest, Stat,
};
use corral_proto::request::encode_connect;
use corral_proto::{perms, Jute, OpCode, Reader, Request, Response, Writer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::TcpStream;
use tokio::sync::oneshot;

/// Hang guard only: how long anything in these tests may wait before the test fails.
pub const PATIENCE: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------
// Deterministic randomness

/// splitmix64: small, seedable, good enough to pick operations and kill moments.
#[derive(Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo).max(1)
    }
}

/// The seed for this run: `CORRAL_DURABILITY_SEED` if set, otherwise from the clock.
pub fn seed() -> u64 {
    match std::env::var("CORRAL_DURABILITY_SEED") {
        Ok(s) => s.parse().expect("CORRAL_DURABILITY_SEED must be a u64"),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64,
    }
}

// ---------------------------------------------------------------------------------------
// The server process

pub fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind an ephemeral port")
        .port()
}

/// A data directory that outlives server processes (a temp dir, removed on drop).
pub struct DataDir {
    pub temp: tempfile::TempDir,
}

impl DataDir {
    pub fn new() -> DataDir {
        DataDir {
            temp: tempfile::Builder::new()
                .prefix("corral-durability-")
                .tempdir()
                .expect("temp dir"),
        }
    }

    pub fn root(&self) -> &Path {
        self.temp.path()
    }

    pub fn data(&self) -> PathBuf {
        self.root().join("data")
    }

    pub fn snapshots(&self) -> Vec<PathBuf> {
        files_with_prefix(&self.data(), "snapshot.")
    }

    pub fn segments(&self) -> Vec<PathBuf> {
        files_with_prefix(&self.data(), "log.")
    }
}

/// Files named `<prefix><16 hex digits>` (no temp files), sorted by name (= by zxid).
pub fn files_with_prefix(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .and_then(|n| n.strip_prefix(prefix))
                        .is_some_and(|rest| rest.len() == 16 && !rest.contains('.'))
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// Settings written to zoo.cfg, beyond the fixed test ones.
#[derive(Clone, Debug)]
pub struct Settings {
    pub snap_count: u64,
    pub extra: Vec<String>,
    /// Start under `sh` with SIGXFSZ ignored, so a file size limit (RLIMIT_FSIZE) set later
    /// makes writes fail with EFBIG instead of killing the process.
    pub ignore_sigxfsz: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            snap_count: 100_000,
            extra: Vec::new(),
            ignore_sigxfsz: false,
        }
    }
}

/// A running `corral server`; killed with SIGKILL on drop.
pub struct ServerProc {
    child: Option<Child>,
    pub port: u16,
    log_path: PathBuf,
}

fn write_config(dir: &DataDir, port: u16, settings: &Settings) -> PathBuf {
    let cfg = dir.root().join("zoo.cfg");
    let mut text = format!(
        "tickTime=200\n\
         dataDir={}\n\
         clientPort={port}\n\
         clientPortAddress=127.0.0.1\n\
         maxClientCnxns=0\n\
         4lw.commands.whitelist=*\n\
         snapCount={}\n",
        dir.data().display(),
        settings.snap_count
    );
    for line in &settings.extra {
        text.push_str(line);
        text.push('\n');
    }
    fs::write(&cfg, text).expect("write zoo.cfg");
    cfg
}

fn spawn(dir: &DataDir, port: u16, settings: &Settings, log_name: &str) -> (Child, PathBuf) {
    let cfg = write_config(dir, port, settings);
    let log_path = dir.root().join(log_name);
    let log = fs::File::create(&log_path).expect("server log");
    let log_err = log.try_clone().unwrap();
    let bin = env!("CARGO_BIN_EXE_corral");
    let mut cmd = if settings.ignore_sigxfsz {
        let mut c = Command::new("sh");
        // An ignored signal stays ignored across exec.
        c.arg("-c")
            .arg("trap '' XFSZ; exec \"$0\" server --config \"$1\"")
            .arg(bin)
            .arg(&cfg);
        c
    } else {
        let mut c = Command::new(bin);
        c.arg("server").arg("--config").arg(&cfg);
        c
    };
    cmd.env("RUST_LOG", "info").stdin(Stdio::null());
    if !settings.ignore_sigxfsz {
        let child = cmd
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .expect("spawn corral server");
        return (child, log_path);
    }
    // Under a file size limit the server could not write a log file either, so its output
    // goes through a pipe (not subject to the limit) and this process writes the file.
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn corral server");
    let out = child.stdout.take().unwrap();
    let err = child.stderr.take().unwrap();
    for (mut from, mut to) in [
        (Box::new(out) as Box<dyn std::io::Read + Send>, log),
        (Box::new(err), log_err),
    ] {
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut from, &mut to);
        });
    }
    (child, log_path)
}

static LOG_SEQ: AtomicI32 = AtomicI32::new(0);

fn next_log_name() -> String {
    format!("server-{}.log", LOG_SEQ.fetch_add(1, Ordering::Relaxed))
}

impl ServerProc {
    /// Starts a server on `dir` and waits until it answers `ruok`.
    pub fn start(dir: &DataDir, settings: &Settings) -> ServerProc {
        let mut last = String::new();
        for _ in 0..3 {
            let port = free_port();
            let (child, log_path) = spawn(dir, port, settings, &next_log_name());
            let mut s = ServerProc {
                child: Some(child),
                port,
                log_path,
            };
            match s.wait_ready() {
                Ok(()) => return s,
                Err(e) => last = e, // most likely the port was taken meanwhile: retry
            }
        }
        panic!("server did not start: {last}");
    }

    /// Starts a server that is expected to refuse to start; returns its exit status and
    /// output.
    pub fn start_expecting_failure(dir: &DataDir, settings: &Settings) -> (ExitStatus, String) {
        let (mut child, log_path) = spawn(dir, free_port(), settings, &next_log_name());
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return (status, fs::read_to_string(&log_path).unwrap_or_default());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "server did not exit; its log:\n{}",
                    fs::read_to_string(&log_path).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Ok(Some(status)) = self.child.as_mut().unwrap().try_wait() {
                return Err(format!("exited with {status}; log:\n{}", self.log()));
            }
            if four_letter_word(self.port, "ruok").as_deref() == Ok("imok") {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("not ready in time; log:\n{}", self.log()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill(); // std sends SIGKILL on Unix
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for a clean exit.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(c.id().to_string())
                .status();
            let deadline = Instant::now() + PATIENCE;
            loop {
                if let Some(status) = c.try_wait().unwrap() {
                    assert!(status.success(), "server exited with {status}");
                    return;
                }
                if Instant::now() > deadline {
                    let _ = c.kill();
                    let _ = c.wait();
                    panic!("server did not stop on SIGTERM");
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        self.kill9();
    }
}

pub fn four_letter_word(port: u16, word: &str) -> Result<String, String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok();
    s.write_all(word.as_bytes()).map_err(|e| e.to_string())?;
    let mut out = String::new();
    s.read_to_string(&mut out).map_err(|e| e.to_string())?;
    Ok(out)
}

/// Runs `corral <args>`; returns (success, stdout, stderr).
pub fn corral(args: &[&str]) -> (bool, String, String) {
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

// ---------------------------------------------------------------------------------------
// A pipelined client

/// Why a request has no answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    /// The connection ended before the reply: the outcome is unknown.
    ConnectionLoss,
    /// The server answered with an error code.
    Zk(i32),
}

type Pending =
    Arc<Mutex<Option<HashMap<i32, (OpCode, oneshot::Sender<Result<(i64, Response), CallError>>)>>>>;

/// One session over one connection. Requests can be issued concurrently (pipelined); each
/// reply is matched to its request by xid. Pings are sent in the background.
pub struct Client {
    writer: tokio::sync::Mutex<OwnedWriteHalf>,
    pending: Pending,
    next_xid: AtomicI32,
    pub session_id: i64,
    pub passwd: Vec<u8>,
    pub timeout_ms: i32,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Client {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn frame(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 4);
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(body);
    out
}

async fn read_frame(r: &mut tokio::net::tcp::OwnedReadHalf) -> std::io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len).await?;
    let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
    r.read_exact(&mut body).await?;
    Ok(body)
}

impl Client {
    /// A new session.
    pub async fn connect(addr: &str, timeout_ms: i32) -> Result<Client, String> {
        Client::connect_session(addr, timeout_ms, 0, &[0u8; 16]).await
    }

    /// Connects to `session_id` (0 = a new session). `Err` if the server refuses (e.g. the
    /// session expired).
    pub async fn connect_session(
        addr: &str,
        timeout_ms: i32,
        session_id: i64,
        passwd: &[u8],
    ) -> Result<Client, String> {
        let stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        stream.set_nodelay(true).ok();
        let (mut rd, mut wr) = stream.into_split();
        let mut w = Writer::new();
        encode_connect(
            &ConnectRequest {
                protocol_version: 0,
                last_zxid_seen: 0,
                timeout_ms,
                session_id,
                passwd: Some(passwd.to_vec().into()),
            },
            false,
            &mut w,
        );
        wr.write_all(&frame(&w.into_inner()))
            .await
            .map_err(|e| e.to_string())?;
        let body = read_frame(&mut rd).await.map_err(|e| e.to_string())?;
        let resp = ConnectResponse::read(&mut Reader::new(&body)).map_err(|e| e.to_string())?;
        if resp.session_id == 0 {
            return Err("session expired".into());
        }
        let pending: Pending = Arc::new(Mutex::new(Some(HashMap::new())));
        let reader = tokio::spawn(read_loop(rd, pending.clone()));
        Ok(Client {
            writer: tokio::sync::Mutex::new(wr),
            pending,
            next_xid: AtomicI32::new(1),
            session_id: resp.session_id,
            passwd: resp.passwd.map(|p| p.to_vec()).unwrap_or_default(),
            timeout_ms: resp.timeout_ms,
            tasks: vec![reader],
        })
    }

    /// Sends one request and waits for its reply.
    pub async fn call(&self, req: Request) -> Result<(i64, Response), CallError> {
        self.send(req).await?.await
    }

    /// Writes one request; the returned future resolves with its reply. Requests sent one
    /// after the other reach the server in that order (pipelining).
    pub async fn send(
        &self,
        req: Request,
    ) -> Result<impl std::future::Future<Output = Result<(i64, Response), CallError>>, CallError>
    {
        let op = req.op();
        let xid = self.next_xid.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        {
            let mut p = self.pending.lock().unwrap();
            match p.as_mut() {
                Some(map) => {
                    map.insert(xid, (op, tx));
                }
                None => return Err(CallError::ConnectionLoss),
            }
        }
        let mut w = Writer::new();
        RequestHeader { xid, op: op.code() }.write(&mut w);
        req.write(&mut w);
        let bytes = frame(&w.into_inner());
        {
            let mut wr = self.writer.lock().await;
            if wr.write_all(&bytes).await.is_err() {
                return Err(CallError::ConnectionLoss);
            }
        }
        Ok(async move { rx.await.unwrap_or(Err(CallError::ConnectionLoss)) })
    }

    /// Pings every third of the session timeout until the connection ends.
    pub fn keep_alive(self: &Arc<Self>) {
        let me = Arc::downgrade(self);
        let every = Duration::from_millis((self.timeout_ms / 3).max(50) as u64);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let Some(c) = me.upgrade() else { return };
                if c.ping().await.is_err() {
                    return;
                }
            }
        });
    }

    pub async fn ping(&self) -> Result<(), CallError> {
        let mut w = Writer::new();
        RequestHeader {
            xid: corral_proto::xid::PING,
            op: OpCode::Ping.code(),
        }
        .write(&mut w);
        let bytes = frame(&w.into_inner());
        let mut wr = self.writer.lock().await;
        wr.write_all(&bytes)
            .await
            .map_err(|_| CallError::ConnectionLoss)
    }

    pub async fn create(&self, path: &str, data: &[u8], ephemeral: bool) -> Result<i64, CallError> {
        let req = create_request(path, data, ephemeral);
        self.call(req).await.map(|(zxid, _)| zxid)
    }

    pub async fn set_data(&self, path: &str, data: &[u8], version: i32) -> Result<Stat, CallError> {
        match self.call(set_data_request(path, data, version)).await? {
            (_, Response::Stat(s)) => Ok(s),
            other => panic!("unexpected setData reply {other:?}"),
        }
    }

    /// `Ok(None)` if the node does not exist.
    pub async fn get_data(&self, path: &str) -> Result<Option<(Vec<u8>, Stat)>, CallError> {
        let req = Request::GetData(PathWatch {
            path: path.into(),
            watch: false,
        });
        match self.call(req).await {
            Ok((_, Response::GetData(r))) => Ok(Some((
                r.data.map(|d| d.to_vec()).unwrap_or_default(),
                r.stat,
            ))),
            Ok(other) => panic!("unexpected getData reply {other:?}"),
            Err(CallError::Zk(NO_NODE)) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// ZooKeeper's error codes used here.
pub const NO_NODE: i32 = -101;
pub const NODE_EXISTS: i32 = -110;

pub fn open_acl() -> Vec<Acl> {
    vec![Acl {
        perms: perms::ALL,
        id: Id {
            scheme: "world".into(),
            id: "anyone".into(),
        },
    }]
}

pub fn create_request(path: &str, data: &[u8], ephemeral: bool) -> Request {
    Request::Create {
        op: OpCode::Create,
        req: CreateRequest {
            path: path.into(),
            data: Some(data.to_vec().into()),
            acl: open_acl(),
            flags: if ephemeral { 1 } else { 0 },
        },
    }
}

pub fn set_data_request(path: &str, data: &[u8], version: i32) -> Request {
    Request::SetData(SetDataRequest {
        path: path.into(),
        data: Some(data.to_vec().into()),
        version,
    })
}

async fn read_loop(mut rd: tokio::net::tcp::OwnedReadHalf, pending: Pending) {
    loop {
        let body = match read_frame(&mut rd).await {
            Ok(b) => b,
            Err(_) => break,
        };
        let mut r = Reader::new(&body);
        let Ok(h) = ReplyHeader::read(&mut r) else {
            break;
        };
        if h.xid == corral_proto::xid::NOTIFICATION || h.xid == corral_proto::xid::PING {
            continue;
        }
        let entry = pending
            .lock()
            .unwrap()
            .as_mut()
            .and_then(|m| m.remove(&h.xid));
        let Some((op, tx)) = entry else { continue };
        let result = if h.err != 0 {
            Err(CallError::Zk(h.err))
        } else {
            match Response::decode(op, r.rest()) {
                Ok(resp) => Ok((h.zxid, resp)),
                Err(_) => Err(CallError::ConnectionLoss),
            }
        };
        let _ = tx.send(result);
    }
    // Everything still waiting has an unknown outcome; dropping the senders says so.
    pending.lock().unwrap().take();
}
