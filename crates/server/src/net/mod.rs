//! The network side: a TCP listener, one task per connection, and the wiring to the driver.
//!
//! * [`frames`]: splitting a byte stream into frames (no I/O).
//! * [`conn`]: a connection's task (socket reads and writes, four-letter words).
//! * [`limit`]: `maxClientCnxns` per client IP.
//! * [`peer`]: the request/answer transport between ensemble members.
//! * [`Server`]: binds, recovers, accepts, and shuts down cleanly.

pub mod frames;
pub mod limit;
pub mod peer;

mod conn;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

use crate::admin::AdminListeners;
use crate::config::ServerConfig;
use crate::core::ConnId;
use crate::driver::{Driver, ServerError};
use conn::ConnContext;
use limit::ConnLimiter;

/// Connections opened by this process so far.
static CONNS_OPENED: AtomicU64 = AtomicU64::new(0);
/// First connection id of this process: wall-clock nanoseconds at the first connection.
static CONN_ID_BASE: std::sync::OnceLock<u64> = std::sync::OnceLock::new();

/// Connection ids are unique for the life of the process (several servers in one test
/// process never share one) and across restarts of a member: a committed ensemble entry
/// names the connection on its origin member that waits for the answer, and a member that
/// restarts replays its log; were ids to start at 1 again, a replayed answer would go to a
/// new, unrelated client connection with the same id. Starting each process at the wall
/// clock in nanoseconds keeps ids above every earlier incarnation's (which could not open
/// a connection per nanosecond), short of the clock being stepped back.
fn next_conn_id() -> ConnId {
    let base = *CONN_ID_BASE.get_or_init(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
            // Far below REMOTE_CONN (u64::MAX) for centuries.
            .max(1)
    });
    base + CONNS_OPENED.fetch_add(1, Ordering::Relaxed)
}

/// Frames from all connections waiting for the driver; when full, connection tasks stop
/// reading their sockets until the driver catches up.
const INBOUND_CAPACITY: usize = 4096;
/// Request bytes one connection may have on their way to the driver (a larger frame, up to
/// `jute.maxbuffer`, is let through alone). With the frame cap above this bounds what the
/// shared queue can hold by what each connection sent, not by 4096 maximal frames.
pub const INBOUND_MAX_BYTES_PER_CONN: usize = 4 * 1024 * 1024;
/// Replies that may wait for one slow client before it is disconnected.
const OUTBOUND_CAPACITY: usize = 4096;
/// Reply bytes waiting for one client (queued for its socket, or held until the txn they
/// follow is durable) past which it is disconnected.
pub const OUTBOUND_MAX_BYTES_PER_CONN: usize = 32 * 1024 * 1024;
/// Reply bytes queued for one client's socket at which the server stops reading that
/// client's requests, until the client has read enough of its replies.
pub const OUTBOUND_PAUSE_BYTES_PER_CONN: usize = 4 * 1024 * 1024;
/// Once the server closes a connection, how long what is queued for it may take to be
/// written before the socket is dropped anyway.
pub const CLOSE_GRACE_MS: u64 = 2_000;

/// A server that has recovered its state and is bound to its port, ready to [`run`](Server::run).
pub struct Server {
    listener: TcpListener,
    local_addr: SocketAddr,
    config: Arc<ServerConfig>,
    driver: Driver,
    /// The data directory (and a separate log directory) claimed for this server; released
    /// when [`run`](Server::run) returns or the server is dropped.
    dir_locks: Vec<corral_storage::DirLock>,
    /// The AdminServer and metrics listeners (bound, served once `run` starts).
    admin: AdminListeners,
}

impl Server {
    /// Recovers the data directory and binds the client port. Errors here mean the server
    /// never served anything.
    pub async fn bind(config: ServerConfig) -> Result<Server, ServerError> {
        // Claimed before anything reads or writes the files, and held while the server runs
        // (recovery after a txn-log failure included): a second server on the same
        // directories fails here instead of corrupting the first one's log.
        let mut dir_locks =
            vec![corral_storage::DirLock::acquire(&config.data_dir)
                .map_err(ServerError::Recovery)?];
        if config.data_log_dir() != config.data_dir.as_path() {
            dir_locks.push(
                corral_storage::DirLock::acquire(config.data_log_dir())
                    .map_err(ServerError::Recovery)?,
            );
        }
        let addr = config.client_addr();
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| ServerError::Bind { addr, source })?;
        let local_addr = listener
            .local_addr()
            .map_err(|source| ServerError::Bind { addr, source })?;
        let admin = AdminListeners::bind(&config).await?;
        let config = Arc::new(config);
        let driver = if config.ensemble.is_some() {
            Driver::start_ensemble(config.clone(), local_addr.port()).await?
        } else {
            Driver::recover(config.clone(), local_addr.port())?
        };
        Ok(Server {
            listener,
            local_addr,
            config,
            driver,
            dir_locks,
            admin,
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Where the AdminServer listens, when it is enabled and its port could be bound.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.admin_addr()
    }

    /// Where `GET /metrics` is served, when the Prometheus provider is enabled.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.admin.metrics_addr()
    }

    /// Serves until `shutdown` completes, then stops accepting, lets the txn log flush,
    /// answers what became durable, and returns. Returns early with an error if the txn log
    /// fails.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), ServerError> {
        let Server {
            listener,
            local_addr,
            config,
            driver,
            dir_locks,
            admin,
        } = self;
        let (inbound_tx, inbound_rx) = mpsc::channel(INBOUND_CAPACITY);
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut driver_task = tokio::spawn(driver.run(inbound_rx, stop_rx));
        // Stopped (dropped) when this function returns.
        let _admin_tasks = admin.serve(inbound_tx.clone(), local_addr);
        let ctx = Arc::new(ConnContext {
            inbound: inbound_tx,
            max_frame_bytes: config.jute_max_buffer_bytes,
            whitelist: config.four_letter_whitelist.clone(),
            outbound_capacity: OUTBOUND_CAPACITY,
            outbound_max_bytes: OUTBOUND_MAX_BYTES_PER_CONN,
            outbound_pause_bytes: OUTBOUND_PAUSE_BYTES_PER_CONN,
            inbound_max_bytes: INBOUND_MAX_BYTES_PER_CONN,
            max_outstanding: config.global_outstanding_limit as usize,
            handshake_timeout_ms: config.sessionless_cnxn_timeout_ms,
            close_grace_ms: CLOSE_GRACE_MS,
            trace_mask: Default::default(),
            quick_ack: config.client_quick_ack,
        });
        let limiter = ConnLimiter::new(config.max_client_cnxns);
        tracing::info!(addr = %local_addr, "serving clients");

        tokio::pin!(shutdown);
        let early_end = loop {
            tokio::select! {
                _ = &mut shutdown => break None,
                ended = &mut driver_task => break Some(ended),
                accepted = listener.accept() => {
                    let (stream, peer) = match accepted {
                        Ok(a) => a,
                        Err(e) => {
                            // Typically EMFILE: keep serving the connections we have.
                            tracing::warn!(error = %e, "accept failed");
                            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                            continue;
                        }
                    };
                    let Some(permit) = limiter.try_acquire(peer.ip()) else {
                        tracing::warn!(
                            %peer,
                            max = config.max_client_cnxns,
                            "too many connections from this address; closing the new one"
                        );
                        drop(stream);
                        continue;
                    };
                    let conn = next_conn_id();
                    tokio::spawn(conn::serve(stream, conn, peer, ctx.clone(), permit));
                }
            }
        };
        drop(listener);
        let result = match early_end {
            Some(ended) => ended,
            None => {
                tracing::info!("shutting down");
                let _ = stop_tx.send(true);
                driver_task.await
            }
        };
        let outcome = match result {
            Ok(r) => r,
            Err(join) if join.is_panic() => std::panic::resume_unwind(join.into_panic()),
            Err(_) => Ok(()), // the runtime is shutting down under us
        };
        // The driver has closed the log and joined its threads: the directories are free.
        drop(dir_locks);
        outcome
    }
}
