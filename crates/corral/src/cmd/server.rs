//! `corral server`: a standalone server configured like ZooKeeper (zoo.cfg), with
//! command-line flags that override the file.

use std::net::IpAddr;
use std::path::PathBuf;

use anyhow::Context;
use corral_server::config::{
    ConfigOverrides, FourLetterWhitelist, ServerConfig, MAX_WORKER_THREADS,
};
use corral_server::net::Server;

/// How `corral server` writes its log lines (to stderr).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line (tracing-subscriber's JSON format), for log collectors.
    Json,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Log line format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// A ZooKeeper-format zoo.cfg.
    #[arg(long, value_name = "ZOO_CFG")]
    config: Option<PathBuf>,
    /// Client port (clientPort).
    #[arg(long, value_name = "N")]
    client_port: Option<u16>,
    /// Address to listen on (clientPortAddress).
    #[arg(long, value_name = "ADDR")]
    client_address: Option<IpAddr>,
    /// This server's id in an ensemble; replaces the `myid` file in the data directory.
    #[arg(long, value_name = "N")]
    myid: Option<u64>,
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
    /// Threads of the server's async runtime (corral.workerThreads); default one per CPU.
    #[arg(long, value_name = "N",
          value_parser = clap::value_parser!(u16).range(1..=MAX_WORKER_THREADS as i64))]
    worker_threads: Option<u16>,
}

impl Args {
    fn into_config(self) -> anyhow::Result<ServerConfig> {
        // dataDir and myid decide which member of an ensemble this is, so they go in while
        // the file is read rather than after.
        let overrides = ConfigOverrides {
            my_id: self.myid,
            data_dir: self.data_dir.clone(),
        };
        let mut cfg = match &self.config {
            Some(path) => ServerConfig::load(path, &overrides)
                .with_context(|| format!("loading {}", path.display()))?,
            None => {
                anyhow::ensure!(
                    self.myid.is_none(),
                    "--myid needs --config with server.N lines"
                );
                ServerConfig::default()
            }
        };
        anyhow::ensure!(
            self.myid.is_none() || cfg.ensemble.is_some(),
            "--myid given, but the configuration has no server.N lines"
        );
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
        if let Some(n) = self.worker_threads {
            cfg.worker_threads = Some(usize::from(n));
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
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = config.worker_threads {
        runtime.worker_threads(n);
    }
    let runtime = runtime
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Wrapper {
        #[command(flatten)]
        args: Args,
    }

    #[test]
    fn log_format_defaults_to_text_and_takes_json() {
        let plain = Wrapper::try_parse_from(["server"]).unwrap();
        assert_eq!(plain.args.log_format, LogFormat::Text);
        let json = Wrapper::try_parse_from(["server", "--log-format", "json"]).unwrap();
        assert_eq!(json.args.log_format, LogFormat::Json);
        assert!(Wrapper::try_parse_from(["server", "--log-format", "xml"]).is_err());
    }

    fn args(config: Option<PathBuf>, myid: Option<u64>, data_dir: Option<PathBuf>) -> Args {
        Args {
            log_format: LogFormat::Text,
            config,
            client_port: None,
            client_address: None,
            myid,
            data_dir,
            data_log_dir: None,
            tick_time_ms: None,
            four_letter_whitelist: None,
            worker_threads: None,
        }
    }

    #[test]
    fn worker_threads_flag_overrides_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let cfg_path = dir.path().join("zoo.cfg");
        std::fs::write(&cfg_path, "corral.workerThreads=3\n").unwrap();
        let from_file = args(Some(cfg_path.clone()), None, None)
            .into_config()
            .unwrap();
        assert_eq!(from_file.worker_threads, Some(3));
        let flag = Wrapper::try_parse_from([
            "server",
            "--config",
            cfg_path.to_str().unwrap(),
            "--worker-threads",
            "1",
        ])
        .unwrap();
        assert_eq!(flag.args.into_config().unwrap().worker_threads, Some(1));
        assert!(Wrapper::try_parse_from(["server", "--worker-threads", "0"]).is_err());
    }

    #[test]
    fn config_with_server_lines_reaches_the_ensemble() {
        let dir = tempfile::tempdir().unwrap();
        let cfg_path = dir.path().join("zoo.cfg");
        std::fs::write(
            &cfg_path,
            "initLimit=5\nsyncLimit=2\nserver.1=a:2888:3888;2181\nserver.2=b:2888:3888;2182\n",
        )
        .unwrap();

        let cfg = args(Some(cfg_path.clone()), Some(2), None)
            .into_config()
            .unwrap();
        assert_eq!(cfg.ensemble.as_ref().map(|e| e.my_id), Some(2));
        assert_eq!(cfg.client_port, 2182, "this member's line gives the port");

        // --data-dir is where myid is looked for.
        std::fs::write(dir.path().join("myid"), "1\n").unwrap();
        let cfg = args(Some(cfg_path.clone()), None, Some(dir.path().to_path_buf()))
            .into_config()
            .unwrap();
        assert_eq!(cfg.ensemble.as_ref().map(|e| e.my_id), Some(1));

        let err = args(Some(cfg_path), Some(9), None)
            .into_config()
            .unwrap_err();
        assert!(format!("{err:#}").contains("myid 9"), "{err:#}");
    }

    #[test]
    fn myid_without_server_lines_is_refused() {
        let err = args(None, Some(1), None).into_config().unwrap_err();
        assert!(err.to_string().contains("--myid"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let cfg_path = dir.path().join("zoo.cfg");
        std::fs::write(&cfg_path, "clientPort=2181\n").unwrap();
        let err = args(Some(cfg_path), Some(1), None)
            .into_config()
            .unwrap_err();
        assert!(err.to_string().contains("no server.N lines"), "{err}");
    }
}
