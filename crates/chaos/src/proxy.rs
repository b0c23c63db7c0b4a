//! Delay on the links between members, for the `slow` nemesis: every member-to-member TCP
//! connection is steered through a proxy in the harness that holds each chunk it reads for the
//! link's current delay before passing it on (order kept). The kernel here has no netem, fq or
//! etf qdisc, so delay cannot be injected below TCP; this is the closest real thing: the
//! members see their peers' bytes late, in order, as over a long path — but the proxy's TCP
//! legs have no loss and their own congestion control, so it is latency, not a bad network.
//!
//! Steering: inside member A's namespace an iptables DNAT rule sends A's connections to
//! B's peer port to the proxy for (A, B), which listens on the bridge gateway (root
//! namespace) and connects on to B. The rules apply to new connections only, so they are put
//! in place before the members talk (the caller restarts members that were already running).
//! Proxied connections bypass the blackhole routes of [`crate::net::Network::cut`] (their
//! packets go to the gateway, not to B), so the `slow` and `partition` nemeses do not run
//! together.

use std::collections::HashMap;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::ensemble::Ensemble;

/// Chunks in flight per direction of one connection; past it the proxy stops reading, so a
/// slow link pushes back on its sender instead of buffering without bound.
const QUEUE_CHUNKS: usize = 256;
const CHUNK_BYTES: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("`{cmd}` failed: {stderr}")]
    Command { cmd: String, stderr: String },
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("the ensemble has no network namespaces")]
    NoNetwork,
}

/// The current one-way delay of each directed link (from, to), in ms (0 = no delay), and
/// the bytes relayed so far.
#[derive(Default)]
struct Delays {
    links: HashMap<(u64, u64), AtomicU64>,
    relayed_bytes: AtomicU64,
}

impl Delays {
    fn get(&self, from: u64, to: u64) -> u64 {
        self.links
            .get(&(from, to))
            .map_or(0, |d| d.load(Ordering::Relaxed))
    }
}

/// The proxies of one run. Dropping it stops accepting; relays of connections already open
/// end when those connections close (the ensemble kills its members before dropping this).
/// The DNAT rules go with the members' namespaces.
pub struct DelayProxies {
    delays: Arc<Delays>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for DelayProxies {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn iptables_in(namespace: &str, args: &[&str]) -> Result<(), ProxyError> {
    let out = Command::new("ip")
        .args(["netns", "exec", namespace, "iptables", "-w"])
        .args(args)
        .output()
        .map_err(|source| ProxyError::Io {
            what: "running iptables".into(),
            source,
        })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(ProxyError::Command {
            cmd: format!("ip netns exec {namespace} iptables -w {}", args.join(" ")),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

impl DelayProxies {
    /// Starts a proxy per directed pair of members and the DNAT rules steering their peer
    /// connections through it. Connections already open stay direct: restart the members
    /// afterwards (or call this before they connect).
    pub async fn start(ens: &Ensemble) -> Result<DelayProxies, ProxyError> {
        let net = ens.network.as_ref().ok_or(ProxyError::NoNetwork)?;
        let gateway = net.gateway();
        let ids = ens.ids();
        let mut delays = Delays::default();
        for &a in &ids {
            for &b in &ids {
                if a != b {
                    delays.links.insert((a, b), AtomicU64::new(0));
                }
            }
        }
        let delays = Arc::new(delays);
        let mut proxies = DelayProxies {
            delays: delays.clone(),
            tasks: Vec::new(),
        };
        for &a in &ids {
            for &b in &ids {
                if a == b {
                    continue;
                }
                let listener =
                    TcpListener::bind((gateway, 0))
                        .await
                        .map_err(|source| ProxyError::Io {
                            what: format!("binding a proxy on {gateway}"),
                            source,
                        })?;
                let port = listener
                    .local_addr()
                    .map_err(|source| ProxyError::Io {
                        what: "reading a proxy's address".into(),
                        source,
                    })?
                    .port();
                let target = ens.member(b);
                let upstream = format!("{}:{}", target.ip, target.peer_port);
                iptables_in(
                    &net.namespace(a),
                    &[
                        "-t",
                        "nat",
                        "-A",
                        "OUTPUT",
                        "-p",
                        "tcp",
                        "-d",
                        &format!("{}/32", target.ip),
                        "--dport",
                        &target.peer_port.to_string(),
                        "-j",
                        "DNAT",
                        "--to-destination",
                        &format!("{gateway}:{port}"),
                    ],
                )?;
                proxies.tasks.push(tokio::spawn(serve(
                    listener,
                    upstream,
                    a,
                    b,
                    delays.clone(),
                )));
            }
        }
        Ok(proxies)
    }

    /// Sets the one-way delay of both directions between `a` and `b`.
    pub fn set_delay(&self, a: u64, b: u64, delay_ms: u64) {
        for key in [(a, b), (b, a)] {
            if let Some(d) = self.delays.links.get(&key) {
                d.store(delay_ms, Ordering::Relaxed);
            }
        }
    }

    /// Every link back to no delay.
    pub fn clear(&self) {
        for d in self.delays.links.values() {
            d.store(0, Ordering::Relaxed);
        }
    }

    /// Bytes the proxies have passed on, both directions, all links: proof that the peer
    /// traffic goes through them.
    pub fn relayed_bytes(&self) -> u64 {
        self.delays.relayed_bytes.load(Ordering::Relaxed)
    }

    /// The current one-way delay from `from` to `to`.
    pub fn delay_ms(&self, from: u64, to: u64) -> u64 {
        self.delays.get(from, to)
    }
}

/// Accepts member `a`'s connections to member `b` and relays each through delaying pipes.
async fn serve(listener: TcpListener, upstream: String, a: u64, b: u64, delays: Arc<Delays>) {
    loop {
        let down = match listener.accept().await {
            Ok((down, _)) => down,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(%e, from = a, to = b, "proxy accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let upstream = upstream.clone();
        let delays = delays.clone();
        tokio::spawn(async move {
            let up = match TcpStream::connect(&upstream).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::debug!(%e, from = a, to = b, "proxy cannot reach the member");
                    return;
                }
            };
            let _ = down.set_nodelay(true);
            let _ = up.set_nodelay(true);
            let (down_r, down_w) = down.into_split();
            let (up_r, up_w) = up.into_split();
            // a -> b and the answers b -> a; either side closing ends both.
            tokio::select! {
                _ = pipe(down_r, up_w, a, b, delays.clone()) => {}
                _ = pipe(up_r, down_w, b, a, delays) => {}
            }
        });
    }
}

/// Copies `from` to `to`, each chunk held until its read time plus the link's delay at read
/// time. A reader task and a writer task joined by a bounded queue, so reading goes on while
/// earlier chunks wait.
async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    src: u64,
    dst: u64,
    delays: Arc<Delays>,
) {
    let (tx, mut rx) = mpsc::channel::<(Instant, Vec<u8>)>(QUEUE_CHUNKS);
    let counters = delays.clone();
    let reader = async move {
        let mut buf = vec![0u8; CHUNK_BYTES];
        loop {
            match from.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    let due = Instant::now() + Duration::from_millis(delays.get(src, dst));
                    if tx.send((due, buf[..n].to_vec())).await.is_err() {
                        return;
                    }
                }
            }
        }
    };
    let writer = async move {
        while let Some((due, chunk)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if to.write_all(&chunk).await.is_err() {
                return;
            }
            counters
                .relayed_bytes
                .fetch_add(chunk.len() as u64, Ordering::Relaxed);
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(reader, writer);
}
