//! An in-process server for tests: ours, and those of Rust projects that use ZooKeeper and
//! want a real server without a JVM.
//!
//! ```no_run
//! # async fn demo() {
//! let server = corral_server::testing::TestServer::start().await;
//! let connect_string = server.connect_string(); // "127.0.0.1:<port>"
//! // ... point a ZooKeeper client at it ...
//! server.stop().await;
//! # }
//! ```

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::config::{AdminConfig, FourLetterWhitelist, MetricsConfig, ServerConfig};
use crate::driver::ServerError;
use crate::net::Server;

/// A loopback port free at the moment of asking (the OS picks it), for the peer ports of
/// an ensemble a test writes into a zoo.cfg. Another process may take it before the test
/// binds it; tests accept that small chance.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("the OS hands out an ephemeral loopback port")
}

/// A complete server on 127.0.0.1 with an ephemeral port and a temporary data directory.
/// Dropping it stops the server (without waiting); [`stop`](TestServer::stop) waits.
pub struct TestServer {
    addr: SocketAddr,
    admin_addr: Option<SocketAddr>,
    metrics_addr: Option<SocketAddr>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), ServerError>>>,
    data_dir: PathBuf,
    /// Owns the directory when the server made it; deleted on drop.
    _temp: Option<tempfile::TempDir>,
}

impl TestServer {
    /// A server with test-friendly settings: every four-letter word enabled, a short tick
    /// (200 ms, so session timeouts from 400 ms are accepted), TTL nodes enabled, no
    /// AdminServer (tests that want it enable `admin` and/or `metrics`).
    pub async fn start() -> TestServer {
        TestServer::start_with(TestServer::default_config()).await
    }

    /// The configuration [`start`](TestServer::start) uses; adjust and pass to
    /// [`start_with`](TestServer::start_with).
    pub fn default_config() -> ServerConfig {
        ServerConfig {
            tick_time_ms: 200,
            max_client_cnxns: 0,
            four_letter_whitelist: FourLetterWhitelist::All,
            extended_types_enabled: true,
            admin: AdminConfig {
                enabled: false,
                ..AdminConfig::default()
            },
            metrics: MetricsConfig::default(),
            ..ServerConfig::default()
        }
    }

    /// Starts with `config`, except that it always listens on 127.0.0.1 port 0 and keeps its
    /// data in a fresh temporary directory.
    pub async fn start_with(config: ServerConfig) -> TestServer {
        let temp = tempfile::Builder::new()
            .prefix("corral-test-")
            .tempdir()
            .expect("create a temporary data directory");
        let dir = temp.path().to_path_buf();
        let mut server = TestServer::start_in(config, &dir)
            .await
            .expect("start the test server");
        server._temp = Some(temp);
        server
    }

    /// Starts with `config` on 127.0.0.1 port 0 with its data in `data_dir`, which the caller
    /// owns: stopping and starting again over the same directory tests recovery. An enabled
    /// AdminServer or metrics endpoint also listens on 127.0.0.1 port 0.
    pub async fn start_in(
        mut config: ServerConfig,
        data_dir: &Path,
    ) -> Result<TestServer, ServerError> {
        config.client_port_address = Ipv4Addr::LOCALHOST.into();
        config.client_port = 0;
        config.data_dir = data_dir.to_path_buf();
        config.data_log_dir = None;
        config.admin.address = Ipv4Addr::LOCALHOST.into();
        config.admin.port = 0;
        config.metrics.host = Ipv4Addr::LOCALHOST.into();
        config.metrics.port = 0;
        let server = Server::bind(config).await?;
        let addr = server.local_addr();
        let (admin_addr, metrics_addr) = (server.admin_addr(), server.metrics_addr());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.run(async move {
            // Both an explicit stop and a dropped TestServer end the server.
            let _ = stopped.await;
        }));
        Ok(TestServer {
            addr,
            admin_addr,
            metrics_addr,
            stop: Some(stop),
            task: Some(task),
            data_dir: data_dir.to_path_buf(),
            _temp: None,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The AdminServer's address, when the configuration enabled it.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// The Prometheus endpoint's address, when the configuration enabled it.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// `host:port`, as ZooKeeper clients take it.
    pub fn connect_string(&self) -> String {
        self.addr.to_string()
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Stops the server and waits until its txn log is flushed and closed. Returns the
    /// server's own result (an error if its log failed while running).
    pub async fn stop(mut self) -> Result<(), ServerError> {
        self.shutdown().await
    }

    async fn shutdown(&mut self) -> Result<(), ServerError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.task.take() {
            Some(task) => match task.await {
                Ok(r) => r,
                Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                Err(_) => Ok(()),
            },
            None => Ok(()),
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
