//! Test support: the servers the integration tests run against (Apache ZooKeeper from the
//! Debian package, and Corral's in-process TestServer), a TCP proxy that can cut connections,
//! and bounded waiting.
#![allow(dead_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use corral_client::{Client, WatchEvent};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;

/// Every wait in these tests is bounded by this.
pub const DEADLINE: Duration = Duration::from_secs(30);
/// How long a new client may take to get its first session. This is a readiness wait (the
/// client retries until then), not a check, so it is generous: a loaded machine or a JVM
/// server still warming up can take far longer than a session timeout to answer.
pub const CONNECT_DEADLINE: Duration = Duration::from_secs(120);

pub async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(DEADLINE, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out waiting for {what}"),
    }
}

#[derive(Debug, Clone, Copy)]
pub enum Target {
    Apache,
    Corral,
}

pub enum Server {
    Apache(ApacheZk),
    Corral(corral_server::testing::TestServer),
}

impl Server {
    pub async fn start(target: Target) -> Server {
        match target {
            Target::Apache => Server::Apache(ApacheZk::start().await),
            Target::Corral => Server::Corral(corral_server::testing::TestServer::start().await),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        match self {
            Server::Apache(z) => z.addr,
            Server::Corral(s) => s.addr(),
        }
    }

    pub fn connect_string(&self) -> String {
        self.addr().to_string()
    }

    pub async fn client(&self) -> Client {
        Client::builder(&self.connect_string())
            .session_timeout(Duration::from_secs(4))
            .connect_timeout(CONNECT_DEADLINE)
            .connect()
            .await
            .expect("connect")
    }

    /// The answer to a four-letter word.
    pub async fn four_letter(&self, word: &str) -> String {
        let mut s = TcpStream::connect(self.addr()).await.unwrap();
        s.write_all(word.as_bytes()).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }
}

/// A standalone Apache ZooKeeper, started through `scripts/apache-zk` on a free port with a
/// temporary data directory; killed when dropped.
pub struct ApacheZk {
    pub addr: SocketAddr,
    child: tokio::process::Child,
    _dir: tempfile::TempDir,
}

impl ApacheZk {
    pub async fn start() -> ApacheZk {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/apache-zk");
        for _attempt in 0..3 {
            let dir = tempfile::Builder::new()
                .prefix("corral-client-zk-")
                .tempdir()
                .unwrap();
            let port = {
                let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
                l.local_addr().unwrap().port()
            };
            let log = std::fs::File::create(dir.path().join("stderr.log")).unwrap();
            let mut child = tokio::process::Command::new("bash")
                .arg(&script)
                .arg(port.to_string())
                .arg(dir.path())
                .env(
                    "ZK_JAVA_OPTS",
                    "-Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1",
                )
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .kill_on_drop(true)
                .spawn()
                .expect("run scripts/apache-zk");
            let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
            let ready = async {
                loop {
                    if let Ok(Some(status)) = child.try_wait() {
                        return Err(format!("apache-zk exited: {status}"));
                    }
                    // A server still starting may accept and never answer: bound each probe.
                    let probe = async {
                        let mut s = TcpStream::connect(addr).await.ok()?;
                        s.write_all(b"ruok").await.ok()?;
                        let mut out = String::new();
                        s.read_to_string(&mut out).await.ok()?;
                        Some(out)
                    };
                    if let Ok(Some(out)) = tokio::time::timeout(Duration::from_secs(2), probe).await
                    {
                        if out == "imok" {
                            return Ok(());
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            };
            match tokio::time::timeout(CONNECT_DEADLINE, ready).await {
                Ok(Ok(())) => {
                    return ApacheZk {
                        addr,
                        child,
                        _dir: dir,
                    }
                }
                other => {
                    let log =
                        std::fs::read_to_string(dir.path().join("stderr.log")).unwrap_or_default();
                    eprintln!("apache-zk did not start ({other:?}); log:\n{log}");
                    let _ = child.kill().await;
                }
            }
        }
        panic!("could not start Apache ZooKeeper");
    }
}

impl Drop for ApacheZk {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// A TCP proxy in front of a server: `cut` breaks every connection through it, `block`
/// makes it refuse new ones (accept and close at once) until unblocked.
pub struct Proxy {
    pub addr: SocketAddr,
    /// Where new connections go; `retarget` moves it (a server restarted on another port).
    target: Arc<Mutex<SocketAddr>>,
    blocked: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<AbortHandle>>>,
    accept: AbortHandle,
}

impl Proxy {
    pub async fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let blocked = Arc::new(AtomicBool::new(false));
        let conns: Arc<Mutex<Vec<AbortHandle>>> = Arc::default();
        let target = Arc::new(Mutex::new(target));
        let (b, c, t) = (blocked.clone(), conns.clone(), target.clone());
        let accept = tokio::spawn(async move {
            loop {
                let Ok((inbound, _)) = listener.accept().await else {
                    return;
                };
                if b.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let target = *t.lock().unwrap();
                let task = tokio::spawn(async move {
                    let Ok(outbound) = TcpStream::connect(target).await else {
                        return;
                    };
                    let (mut ri, mut wi) = inbound.into_split();
                    let (mut ro, mut wo) = outbound.into_split();
                    tokio::select! {
                        _ = tokio::io::copy(&mut ri, &mut wo) => {}
                        _ = tokio::io::copy(&mut ro, &mut wi) => {}
                    }
                });
                c.lock().unwrap().push(task.abort_handle());
            }
        })
        .abort_handle();
        Proxy {
            addr,
            target,
            blocked,
            conns,
            accept,
        }
    }

    pub fn connect_string(&self) -> String {
        self.addr.to_string()
    }

    /// Breaks every connection currently open through the proxy.
    pub fn cut(&self) {
        for c in self.conns.lock().unwrap().drain(..) {
            c.abort();
        }
    }

    /// How many connections through the proxy are open.
    pub fn active(&self) -> usize {
        self.conns
            .lock()
            .unwrap()
            .iter()
            .filter(|c| !c.is_finished())
            .count()
    }

    /// Sends connections opened from now on to `target`.
    pub fn retarget(&self, target: SocketAddr) {
        *self.target.lock().unwrap() = target;
    }

    pub fn block(&self, blocked: bool) {
        self.blocked.store(blocked, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

/// Waits for the next node event on a persistent watch, skipping session items.
pub async fn next_node(w: &mut corral_client::PersistentWatch) -> corral_client::NodeEvent {
    within("a node event", w.next_node_event())
        .await
        .expect("watch stream ended")
}

/// Waits for the next item of a persistent watch.
pub async fn next_item(w: &mut corral_client::PersistentWatch) -> WatchEvent {
    within("a watch item", w.next())
        .await
        .expect("watch stream ended")
}

/// Waits until the client's session state satisfies `f`.
pub async fn wait_state(
    c: &Client,
    what: &str,
    f: impl FnMut(&corral_client::SessionState) -> bool,
) {
    let mut w = c.state_watcher();
    within(what, w.wait_for(f))
        .await
        .expect("state channel closed");
}

/// Generates one `#[tokio::test]` per target for each shared async body `fn(Target)`.
#[macro_export]
macro_rules! per_target {
    ($($name:ident),* $(,)?) => {
        mod apache {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::support::Target::Apache).await
                }
            )*
        }
        mod corral {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::support::Target::Corral).await
                }
            )*
        }
    };
}
