//! Shared harness for the real-client compatibility tests: starts a server (corral, or Apache
//! ZooKeeper when `CORRAL_COMPAT_TARGET=zk`) on a free loopback port with a ZooKeeper-format
//! zoo.cfg, waits until it answers `srvr`, and stops it when the handle is dropped.

#![allow(dead_code)] // each test binary uses a different subset

use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// How long a server may take to answer `srvr` after start; a JVM on a busy 2-core machine
/// needs the generous end of this.
const READY_TIMEOUT: Duration = Duration::from_secs(90);
const POLL_INTERVAL: Duration = Duration::from_millis(50);
const START_ATTEMPTS: usize = 3;

/// Which implementation a compat test runs its suite against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    Corral,
    ApacheZk,
}

impl Target {
    /// `CORRAL_COMPAT_TARGET=zk` points every suite at Apache ZooKeeper, to validate the suites
    /// themselves; unset or `corral` tests corral.
    pub fn from_env() -> Target {
        match std::env::var("CORRAL_COMPAT_TARGET").as_deref() {
            Err(_) | Ok("") | Ok("corral") => Target::Corral,
            Ok("zk") => Target::ApacheZk,
            Ok(other) => {
                panic!("CORRAL_COMPAT_TARGET={other:?} is not understood; use `zk` or `corral`")
            }
        }
    }
}

/// Serialises the compat tests inside one test process: several JVMs and session-expiry
/// checks at once on a 2-core machine only make each other slow.
pub fn exclusive() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("repository root")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind an ephemeral port on 127.0.0.1")
        .port()
}

/// A running server; killed (and reaped) on drop.
pub struct Server {
    child: Child,
    pub target: Target,
    pub port: u16,
    dir: TempDir,
}

impl Server {
    /// Starts whatever `CORRAL_COMPAT_TARGET` selects.
    pub fn start_target() -> Server {
        Server::start(Target::from_env())
    }

    pub fn start(target: Target) -> Server {
        let mut last_error = String::new();
        for _ in 0..START_ATTEMPTS {
            match Server::try_start(target) {
                Ok(server) => return server,
                // Most likely the free port was taken between probing and binding: retry.
                Err(e) => last_error = e,
            }
        }
        panic!("{target:?} server did not start after {START_ATTEMPTS} attempts:\n{last_error}");
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn try_start(target: Target) -> Result<Server, String> {
        let dir = tempfile::Builder::new()
            .prefix("corral-compat-")
            .tempdir()
            .map_err(|e| format!("tempdir: {e}"))?;
        let port = free_port();
        let data_dir = dir.path().join("data");
        fs::create_dir_all(&data_dir).map_err(|e| format!("create data dir: {e}"))?;
        let cfg = dir.path().join("zoo.cfg");
        fs::write(
            &cfg,
            format!(
                "tickTime=200\n\
                 dataDir={}\n\
                 clientPort={port}\n\
                 clientPortAddress=127.0.0.1\n\
                 maxClientCnxns=0\n\
                 4lw.commands.whitelist=*\n\
                 extendedTypesEnabled=true\n\
                 admin.enableServer=false\n",
                data_dir.display()
            ),
        )
        .map_err(|e| format!("write zoo.cfg: {e}"))?;
        let log =
            fs::File::create(dir.path().join("server.log")).map_err(|e| format!("log: {e}"))?;
        let log_err = log.try_clone().map_err(|e| format!("log: {e}"))?;
        let mut cmd = match target {
            Target::Corral => {
                let mut c = Command::new(env!("CARGO_BIN_EXE_corral"));
                c.arg("server").arg("--config").arg(&cfg);
                c
            }
            Target::ApacheZk => {
                require_file(
                    Path::new("/usr/share/java/zookeeper.jar"),
                    "Apache ZooKeeper (Debian package `zookeeper`)",
                );
                require_program(
                    "java",
                    "a Java runtime (pulled in by the Debian `zookeeper` package)",
                );
                let mut c = Command::new(repo_root().join("scripts/apache-zk"));
                c.arg("--config").arg(&cfg);
                c
            }
        };
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .map_err(|e| format!("spawn {cmd:?}: {e}"))?;
        let mut server = Server {
            child,
            target,
            port,
            dir,
        };
        server.wait_ready()?;
        Ok(server)
    }

    /// The server's process id (for reading its memory use from /proc).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// Ready = a TCP connect succeeds and `srvr` answers with the ZooKeeper banner.
    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!(
                    "{:?} server exited with {status} before it was ready; its log:\n{}",
                    self.target,
                    self.log()
                ));
            }
            let last = match four_letter_word(self.port, "srvr") {
                Ok(reply) if reply.starts_with("Zookeeper version:") => return Ok(()),
                Ok(reply) => format!("srvr answered {reply:?}"),
                Err(e) => e,
            };
            if Instant::now() > deadline {
                return Err(format!(
                    "{:?} server on port {} not ready within {READY_TIMEOUT:?} (last: {last}); its log:\n{}",
                    self.target,
                    self.port,
                    self.log()
                ));
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends a four-letter word and reads the reply until the server closes the connection.
pub fn four_letter_word(port: u16, word: &str) -> Result<String, String> {
    let mut stream =
        TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connect: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| format!("set timeout: {e}"))?;
    stream
        .write_all(word.as_bytes())
        .map_err(|e| format!("send {word}: {e}"))?;
    let mut reply = String::new();
    stream
        .read_to_string(&mut reply)
        .map_err(|e| format!("read {word} reply: {e}"))?;
    Ok(reply)
}

pub fn require_file(path: &Path, what: &str) {
    assert!(
        path.exists(),
        "{} is missing ({what}); run scripts/test, which installs the compat-test tools",
        path.display()
    );
}

pub fn require_program(name: &str, what: &str) {
    let found = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join(name).is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "`{name}` not found on PATH ({what}); run scripts/test, which installs the compat-test tools"
    );
}

/// The Debian python3 with kazoo (not whatever python3 comes first on PATH).
pub fn require_kazoo() -> PathBuf {
    let python = PathBuf::from("/usr/bin/python3");
    require_file(&python, "Debian python3");
    let ok = Command::new(&python)
        .args(["-c", "import kazoo"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        ok,
        "/usr/bin/python3 cannot import kazoo (Debian package python3-kazoo); run scripts/test, which installs it"
    );
    python
}

/// Runs a suite to completion and asserts it passed, showing its whole output either way.
pub fn run_suite(name: &str, cmd: &mut Command) {
    let Output {
        status,
        stdout,
        stderr,
    } = cmd
        .current_dir(repo_root())
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("could not run the {name} suite ({cmd:?}): {e}"));
    let stdout = String::from_utf8_lossy(&stdout);
    let stderr = String::from_utf8_lossy(&stderr);
    println!("--- {name} suite stdout\n{stdout}\n--- {name} suite stderr\n{stderr}");
    let summary = stdout
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    let clean = summary.ends_with(" passed, 0 failed") && !summary.starts_with("0 passed");
    assert!(
        status.success() && clean,
        "{name} suite failed ({status}, summary {summary:?}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    );
}

/// Builds a Go suite (one `main.go`) against the Debian go-zookeeper package in GOPATH mode;
/// returns the directory holding the binary (removed on drop) and the binary's path.
pub fn build_go_suite(main_go: &str) -> (TempDir, PathBuf) {
    require_program("go", "the Go toolchain (Debian package golang-go)");
    require_file(
        Path::new("/usr/share/gocode/src/github.com/samuel/go-zookeeper/zk"),
        "the Go client (Debian package golang-github-samuel-go-zookeeper-dev)",
    );
    let build_dir = tempfile::tempdir().expect("tempdir");
    let binary = build_dir.path().join("go-compat");
    let go_cache = Path::new(env!("CARGO_TARGET_TMPDIR")).join("go-build-cache");
    let build = Command::new("go")
        .current_dir(repo_root())
        .args(["build", "-o"])
        .arg(&binary)
        .arg(main_go)
        .env("GO111MODULE", "off")
        .env("GOPATH", "/usr/share/gocode")
        .env("GOCACHE", &go_cache)
        .output()
        .expect("run go build");
    assert!(
        build.status.success(),
        "go build of {main_go} failed:\n{}",
        String::from_utf8_lossy(&build.stderr)
    );
    (build_dir, binary)
}
