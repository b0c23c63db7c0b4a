//! `corral server`: a standalone server configured like ZooKeeper (zoo.cfg), with
//! command-line flags that override the file.

use std::net::IpAddr;
use std::path::PathBuf;

use anyhow::Context;
use corral_server::config::{FourLetterWhitelist, ServerConfig};
use corral_server::net::Server;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// A ZooKeeper-format zoo.cfg.
    #[arg(long, value_name = "ZOO_CFG")]
    config: Option<PathBuf>,
    /// Client port (clientPort).
    #[arg(long, value_name = "N")]
    client_port: Option<u16>,
    /// Address to listen on (clientPortAddress).
    #[arg(long, value_name = "ADDR")]
    client_address: Option<IpAddr>,
    /// Snapshot directory (dataDir).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Txn log directory (dataLogDir); defaults to the data directory.
    #[arg(long, value_name = "DIR")]
    data_log_dir: Option<PathBuf>,
    /// Tick length in milliseconds (tickTime).
    #[arg(long, value_name = "N")]
    tick_time_ms: Option<i32>,
    /// Enabled four-letter words, comma-separated, `*` for all (4lw.commands.whitelist).
    #[arg(long = "4lw-whitelist", value_name = "LIST")]
    four_letter_whitelist: Option<String>,
}

impl Args {
    fn into_config(self) -> anyhow::Result<ServerConfig> {
        let mut cfg = match &self.config {
            Some(path) => ServerConfig::from_file(path)
                .with_context(|| format!("loading {}", path.display()))?,
            None => ServerConfig::default(),
        };
        if let Some(port) = self.client_port {
            cfg.client_port = port;
        }
        if let Some(addr) = self.client_address {
            cfg.client_port_address = addr;
        }
        if let Some(dir) = self.data_dir {
            cfg.data_dir = dir;
        }
        if let Some(dir) = self.data_log_dir {
            cfg.data_log_dir = Some(dir);
        }
        if let Some(tick) = self.tick_time_ms {
            anyhow::ensure!(tick > 0, "--tick-time-ms must be > 0");
            cfg.tick_time_ms = tick;
        }
        if let Some(list) = self.four_letter_whitelist {
            cfg.four_letter_whitelist = FourLetterWhitelist::parse(&list);
        }
        anyhow::ensure!(
            cfg.min_session_timeout_ms() <= cfg.max_session_timeout_ms(),
            "minSessionTimeout ({}) is larger than maxSessionTimeout ({})",
            cfg.min_session_timeout_ms(),
            cfg.max_session_timeout_ms()
        );
        Ok(cfg)
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let config = args.into_config()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let server = Server::bind(config).await?;
        server.run(shutdown_signal()).await?;
        anyhow::Ok(())
    })?;
    tracing::info!("server stopped");
    Ok(())
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch SIGTERM; only Ctrl-C stops the server");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
        _ = term.recv() => tracing::info!("SIGTERM received"),
    }
}
