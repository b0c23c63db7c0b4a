//! Server configuration, read from a ZooKeeper-format `zoo.cfg`.
//!
//! The file is `key=value` lines with `#` comments, as ZooKeeper's `QuorumPeerConfig` reads
//! it, so an existing standalone zoo.cfg works unchanged. Keys Corral does not know (quorum
//! settings, metrics providers, ...) are logged and skipped rather than rejected: refusing to
//! start over a setting that does not apply to a standalone server helps nobody. A known key
//! with a value that does not parse is an error naming the key.
//!
//! `server.N` lines make the server a member of an ensemble; that part (with `myid` and the
//! dynamic config file) lives in [`crate::ensemble_config`] and ends up in
//! [`ServerConfig::ensemble`]. Without such lines nothing changes: `ensemble` is `None`.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use crate::core::CoreConfig;
pub use crate::ensemble_config::{EnsembleConfig, MemberConfig, MemberRole};
use crate::ensemble_config::{EnsembleSettings, Origin, Surroundings};

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("line {line}: `{key}` has invalid value `{value}`: {reason}")]
    BadValue {
        line: usize,
        key: String,
        value: String,
        reason: String,
    },
    #[error("line {line}: expected key=value, found `{text}`")]
    Syntax { line: usize, text: String },
    /// A setting in a named file (zoo.cfg or the dynamic config file) that cannot be used.
    #[error("{file}: line {line}: `{key}`: {reason}")]
    Entry {
        file: String,
        line: usize,
        key: String,
        reason: String,
    },
    /// The `myid` file is missing or unreadable.
    #[error("myid file {}: {reason}", path.display())]
    MyId { path: PathBuf, reason: String },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// Settings that come from outside zoo.cfg's text (the `corral server` command line) and
/// must be known before the ensemble is assembled.
#[derive(Debug, Clone, Default)]
pub struct ConfigOverrides {
    /// This server's id, used instead of the `myid` file.
    pub my_id: Option<u64>,
    /// Replaces `dataDir`, before `myid` is looked for in it.
    pub data_dir: Option<PathBuf>,
}

/// The set of four-letter words a client may run (`4lw.commands.whitelist`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FourLetterWhitelist {
    /// `*`: every command.
    All,
    Only(BTreeSet<String>),
}

impl FourLetterWhitelist {
    /// Parses a comma-separated list; `*` anywhere in it enables everything.
    pub fn parse(list: &str) -> FourLetterWhitelist {
        let mut set = BTreeSet::new();
        for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            if item == "*" {
                return FourLetterWhitelist::All;
            }
            set.insert(item.to_string());
        }
        FourLetterWhitelist::Only(set)
    }

    /// Adds `word` (no change when everything is allowed).
    pub fn allow(&mut self, word: &str) {
        if let FourLetterWhitelist::Only(set) = self {
            set.insert(word.to_string());
        }
    }

    /// `srvr` is always allowed, as in ZooKeeper: `zkServer.sh status` depends on it.
    pub fn allows(&self, word: &str) -> bool {
        match self {
            FourLetterWhitelist::All => true,
            FourLetterWhitelist::Only(set) => word == "srvr" || set.contains(word),
        }
    }
}

impl Default for FourLetterWhitelist {
    fn default() -> Self {
        FourLetterWhitelist::parse("srvr")
    }
}

/// ZooKeeper's AdminServer (`admin.*`): JSON answers to the commands under `commandURL`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminConfig {
    /// `admin.enableServer`; on by default, as in ZooKeeper.
    pub enabled: bool,
    /// `admin.serverAddress`.
    pub address: IpAddr,
    /// `admin.serverPort`; 0 picks a free port.
    pub port: u16,
    /// `admin.commandURL`: where the command list is served (commands below it).
    pub command_url: String,
    /// `corral.console.edits`: the web console at `/` may create, change and delete nodes
    /// (behind HTTP basic auth, as a digest identity). Off by default: the console is read-only.
    pub console_edits: bool,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            enabled: true,
            address: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            port: 8080,
            command_url: "/commands".into(),
            console_edits: false,
        }
    }
}

/// The most runtime threads `corral.workerThreads` accepts (a typo such as 40000 is refused
/// rather than tried).
pub const MAX_WORKER_THREADS: usize = 1024;

/// The class name that turns the Prometheus endpoint on, as ZooKeeper spells it.
pub const PROMETHEUS_PROVIDER_CLASS: &str =
    "org.apache.zookeeper.metrics.prometheus.PrometheusMetricsProvider";

/// `metricsProvider.*`: the Prometheus endpoint (`GET /metrics`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsConfig {
    /// `metricsProvider.className` names [`PROMETHEUS_PROVIDER_CLASS`]; off by default.
    pub enabled: bool,
    /// `metricsProvider.httpHost`.
    pub host: IpAddr,
    /// `metricsProvider.httpPort`; 0 picks a free port.
    pub port: u16,
    /// `metricsProvider.exportJvmInfo`: accepted so existing files load; there is no JVM.
    pub export_jvm_info: bool,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            enabled: false,
            host: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            port: 7000,
            export_jvm_info: true,
        }
    }
}

/// Everything the standalone server reads from zoo.cfg.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub tick_time_ms: i32,
    pub data_dir: PathBuf,
    /// Where the txn log goes; `None` = same as `data_dir` (ZooKeeper's default).
    pub data_log_dir: Option<PathBuf>,
    pub client_port: u16,
    pub client_port_address: IpAddr,
    /// Concurrent connections per client IP; 0 = unlimited.
    pub max_client_cnxns: u32,
    /// `None` = 2 × tickTime, resolved by [`ServerConfig::min_session_timeout_ms`].
    pub min_session_timeout_ms: Option<i32>,
    /// `None` = 20 × tickTime.
    pub max_session_timeout_ms: Option<i32>,
    pub four_letter_whitelist: FourLetterWhitelist,
    pub extended_types_enabled: bool,
    /// `jute.maxbuffer`: the largest request body accepted.
    pub jute_max_buffer_bytes: usize,
    /// `zookeeper.nio.sessionlessCnxnTimeout`: how long a new connection may take to send
    /// its whole ConnectRequest (or four-letter word) before it is closed.
    pub sessionless_cnxn_timeout_ms: u64,
    /// `globalOutstandingLimit`: requests one connection may have received and not yet
    /// answered; at the limit the server stops reading that connection until replies drain.
    pub global_outstanding_limit: u32,
    pub force_sync: bool,
    /// Txns between snapshots.
    pub snap_count: u64,
    pub autopurge_snap_retain_count: u32,
    /// Hours between purges; 0 = never.
    pub autopurge_purge_interval_hours: u32,
    pub super_digest: Option<String>,
    /// `znode.container.checkIntervalMs`: how often empty containers / expired TTL nodes are
    /// looked for.
    pub container_check_interval_ms: i64,
    /// `zookeeper.enforceQuota`: fail writes beyond a hard quota. On by default (ZooKeeper's
    /// default is off, which makes a "hard" quota only log); set it to false for that behaviour.
    pub enforce_quota: bool,
    /// `corral.workerThreads`: threads of the async runtime that serves connections and runs
    /// the server's tasks; `None` = one per CPU. Fewer suit members that share a machine
    /// (several members of a test ensemble on one host): each then keeps to its share instead
    /// of every member's threads contending for every CPU.
    pub worker_threads: Option<usize>,
    /// `corral.clientQuickAck` (default true): acknowledge what a client sends at once
    /// instead of letting the kernel delay the ACK. A client that pipelines requests without
    /// TCP_NODELAY has each further request held by Nagle's algorithm until the previous one
    /// is acknowledged, and a delayed ACK then rides on a reply that may be a commit cycle
    /// away. Clients that set TCP_NODELAY (ZooKeeper's Java and C clients, go-zookeeper) gain
    /// nothing and lose nothing but some ACK segments. Linux only; elsewhere it does nothing.
    pub client_quick_ack: bool,
    /// The ensemble this server is a member of; `None` = standalone (no `server.N` lines).
    pub ensemble: Option<EnsembleConfig>,
    /// The configuration text as read at start-up (empty without a file), which the
    /// AdminServer's `initial_configuration` returns, as ZooKeeper's does.
    pub initial_config: String,
    pub admin: AdminConfig,
    pub metrics: MetricsConfig,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            tick_time_ms: 2000,
            data_dir: PathBuf::from("./corral-data"),
            data_log_dir: None,
            client_port: 2181,
            client_port_address: IpAddr::V4(Ipv4Addr::LOCALHOST),
            max_client_cnxns: 60,
            min_session_timeout_ms: None,
            max_session_timeout_ms: None,
            four_letter_whitelist: FourLetterWhitelist::default(),
            extended_types_enabled: false,
            jute_max_buffer_bytes: corral_proto::frame::DEFAULT_MAX_FRAME_BYTES,
            sessionless_cnxn_timeout_ms: 10_000,
            global_outstanding_limit: 1000,
            force_sync: true,
            snap_count: 100_000,
            autopurge_snap_retain_count: 3,
            autopurge_purge_interval_hours: 0,
            super_digest: None,
            container_check_interval_ms: 60_000,
            enforce_quota: true,
            worker_threads: None,
            client_quick_ack: true,
            ensemble: None,
            initial_config: String::new(),
            admin: AdminConfig::default(),
            metrics: MetricsConfig::default(),
        }
    }
}

/// Keys that belong to ZooKeeper features Corral accepts but does not act on; they are not
/// worth a warning.
const ACCEPTED_AND_IGNORED: &[&str] = &["preAllocSize"];

impl ServerConfig {
    /// Reads and parses a zoo.cfg file (and the files it leads to: `myid`, the dynamic
    /// config file).
    pub fn from_file(path: &Path) -> Result<ServerConfig, ConfigError> {
        ServerConfig::load(path, &ConfigOverrides::default())
    }

    /// [`from_file`](ServerConfig::from_file) with command-line overrides.
    pub fn load(path: &Path, overrides: &ConfigOverrides) -> Result<ServerConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        ServerConfig::parse_source(&text, &path.display().to_string(), overrides)
    }

    /// Parses zoo.cfg text on top of the defaults. With `server.N` lines it also reads
    /// `<dataDir>/myid` (and a `dynamicConfigFile`, if named).
    pub fn parse(text: &str) -> Result<ServerConfig, ConfigError> {
        ServerConfig::parse_with(text, &ConfigOverrides::default())
    }

    /// [`parse`](ServerConfig::parse) with command-line overrides.
    pub fn parse_with(
        text: &str,
        overrides: &ConfigOverrides,
    ) -> Result<ServerConfig, ConfigError> {
        ServerConfig::parse_source(text, "zoo.cfg", overrides)
    }

    /// `file` names the text in errors about ensemble settings.
    fn parse_source(
        text: &str,
        file: &str,
        overrides: &ConfigOverrides,
    ) -> Result<ServerConfig, ConfigError> {
        let mut cfg = ServerConfig {
            initial_config: text.to_string(),
            ..ServerConfig::default()
        };
        let mut ensemble = EnsembleSettings::default();
        // The defaults cannot tell "not set" from "set to the default", and a member line's
        // client address is checked against what zoo.cfg said explicitly.
        let mut client_port_set = false;
        let mut client_port_address_set = false;
        for (idx, raw) in text.lines().enumerate() {
            let line = idx + 1;
            let trimmed = raw.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let Some((key, value)) = trimmed.split_once('=') else {
                return Err(ConfigError::Syntax {
                    line,
                    text: trimmed.to_string(),
                });
            };
            let (key, value) = (key.trim(), value.trim());
            let at = Origin {
                file: file.to_string(),
                line,
            };
            if ensemble.accept(&at, key, value)? {
                continue;
            }
            client_port_set |= key == "clientPort";
            client_port_address_set |= key == "clientPortAddress";
            cfg.set(line, key, value)?;
        }
        if let Some(dir) = &overrides.data_dir {
            cfg.data_dir = dir.clone();
        }
        cfg.ensemble = ensemble.finish(&Surroundings {
            data_dir: &cfg.data_dir,
            my_id_override: overrides.my_id,
            client_port: client_port_set.then_some(cfg.client_port),
            client_port_address: client_port_address_set.then_some(cfg.client_port_address),
        })?;
        // As in ZooKeeper 3.5+, a client address on this server's own line is where it
        // listens for clients.
        if let Some(addr) = cfg.ensemble.as_ref().and_then(|e| e.me().client_addr) {
            cfg.client_port = addr.port();
            cfg.client_port_address = addr.ip();
        }
        // As ZooKeeper: clients look for a read-write member with `isro` while read-only mode
        // is on, so the word is allowed whatever the whitelist says.
        if cfg
            .ensemble
            .as_ref()
            .is_some_and(|e| e.read_only_mode_enabled)
        {
            cfg.four_letter_whitelist.allow("isro");
        }
        cfg.validate()?;
        Ok(cfg)
    }

    /// Applies one `key=value` setting (also used for command-line overrides, with line 0).
    /// Ensemble settings (`server.N`, `initLimit`, ...) are read only by
    /// [`parse`](ServerConfig::parse), which needs all of them together.
    pub fn set(&mut self, line: usize, key: &str, value: &str) -> Result<(), ConfigError> {
        let bad = |reason: &str| ConfigError::BadValue {
            line,
            key: key.to_string(),
            value: value.to_string(),
            reason: reason.to_string(),
        };
        let int = |v: &str| v.parse::<i64>().map_err(|_| bad("not an integer"));
        match key {
            "tickTime" => {
                self.tick_time_ms = positive_i32(int(value)?).ok_or_else(|| bad("must be > 0"))?
            }
            "dataDir" => self.data_dir = PathBuf::from(value),
            "dataLogDir" => self.data_log_dir = Some(PathBuf::from(value)),
            "clientPort" => {
                self.client_port =
                    u16::try_from(int(value)?).map_err(|_| bad("not a port number"))?
            }
            "clientPortAddress" => {
                self.client_port_address = value.parse().map_err(|_| bad("not an IP address"))?
            }
            "maxClientCnxns" => {
                self.max_client_cnxns =
                    u32::try_from(int(value)?).map_err(|_| bad("must be >= 0"))?
            }
            "minSessionTimeout" => self.min_session_timeout_ms = timeout(int(value)?),
            "maxSessionTimeout" => self.max_session_timeout_ms = timeout(int(value)?),
            "4lw.commands.whitelist" => {
                self.four_letter_whitelist = FourLetterWhitelist::parse(value)
            }
            "extendedTypesEnabled" => {
                self.extended_types_enabled =
                    boolean(value).ok_or_else(|| bad("expected true or false"))?
            }
            "jute.maxbuffer" => {
                self.jute_max_buffer_bytes = usize::try_from(int(value)?)
                    .ok()
                    .filter(|n| *n > 0 && *n <= i32::MAX as usize)
                    .ok_or_else(|| bad("must be between 1 and 2147483647"))?
            }
            // ZooKeeper reads it as a JVM system property; as with the two below, zoo.cfg
            // is its home here.
            "zookeeper.nio.sessionlessCnxnTimeout" => {
                self.sessionless_cnxn_timeout_ms = u64::try_from(int(value)?)
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| bad("must be > 0"))?
            }
            "globalOutstandingLimit" => {
                self.global_outstanding_limit = u32::try_from(int(value)?)
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| bad("must be > 0"))?
            }
            "forceSync" => {
                self.force_sync = match value.to_ascii_lowercase().as_str() {
                    "yes" | "true" => true,
                    "no" | "false" => false,
                    _ => return Err(bad("expected yes or no")),
                }
            }
            "snapCount" => {
                self.snap_count = u64::try_from(int(value)?)
                    .ok()
                    .filter(|n| *n >= 2)
                    .ok_or_else(|| bad("must be >= 2"))?
            }
            "autopurge.snapRetainCount" => {
                // ZooKeeper silently raises values below 3 to 3; so do we, with a log line.
                let n = u32::try_from(int(value)?).map_err(|_| bad("must be >= 0"))?;
                if n < 3 {
                    tracing::warn!("autopurge.snapRetainCount={n} raised to the minimum of 3");
                }
                self.autopurge_snap_retain_count = n.max(3);
            }
            "autopurge.purgeInterval" => {
                self.autopurge_purge_interval_hours =
                    u32::try_from(int(value)?).map_err(|_| bad("must be >= 0"))?
            }
            "zookeeper.DigestAuthenticationProvider.superDigest" => {
                if !value.starts_with("super:") {
                    return Err(bad("expected super:<base64 sha1 digest>"));
                }
                self.super_digest = Some(value.to_string())
            }
            // ZooKeeper reads these two as JVM system properties; zoo.cfg is their home here.
            "znode.container.checkIntervalMs" => {
                self.container_check_interval_ms = Some(int(value)?)
                    .filter(|n| *n > 0)
                    .ok_or_else(|| bad("must be > 0"))?
            }
            "zookeeper.enforceQuota" => {
                self.enforce_quota = boolean(value).ok_or_else(|| bad("expected true or false"))?
            }
            "admin.enableServer" => {
                self.admin.enabled = boolean(value).ok_or_else(|| bad("expected true or false"))?
            }
            "admin.serverAddress" => {
                self.admin.address = value.parse().map_err(|_| bad("not an IP address"))?
            }
            "admin.serverPort" => {
                self.admin.port =
                    u16::try_from(int(value)?).map_err(|_| bad("not a port number"))?
            }
            "corral.workerThreads" => {
                self.worker_threads = Some(
                    usize::try_from(int(value)?)
                        .ok()
                        .filter(|n| (1..=MAX_WORKER_THREADS).contains(n))
                        .ok_or_else(|| {
                            bad(&format!("must be between 1 and {MAX_WORKER_THREADS}"))
                        })?,
                )
            }
            "corral.clientQuickAck" => {
                self.client_quick_ack =
                    boolean(value).ok_or_else(|| bad("expected true or false"))?
            }
            "corral.console.edits" => {
                self.admin.console_edits =
                    boolean(value).ok_or_else(|| bad("expected true or false"))?
            }
            "admin.commandURL" => {
                if !value.starts_with('/') || value.len() < 2 {
                    return Err(bad("expected a path such as /commands"));
                }
                self.admin.command_url = value.trim_end_matches('/').to_string()
            }
            "metricsProvider.className" => {
                // ZooKeeper's default provider (NullMetricsProvider) serves nothing; any other
                // class is one Corral does not have, which is worth a warning, not a failure.
                self.metrics.enabled = value == PROMETHEUS_PROVIDER_CLASS;
                if !self.metrics.enabled && !value.ends_with(".NullMetricsProvider") {
                    tracing::warn!(class = value, "unknown metrics provider; metrics are off");
                }
            }
            "metricsProvider.httpHost" => {
                self.metrics.host = value.parse().map_err(|_| bad("not an IP address"))?
            }
            "metricsProvider.httpPort" => {
                self.metrics.port =
                    u16::try_from(int(value)?).map_err(|_| bad("not a port number"))?
            }
            "metricsProvider.exportJvmInfo" => {
                self.metrics.export_jvm_info =
                    boolean(value).ok_or_else(|| bad("expected true or false"))?
            }
            k if ACCEPTED_AND_IGNORED.contains(&k) => {
                tracing::debug!(key = k, "zoo.cfg setting accepted and ignored");
            }
            k => tracing::warn!(key = k, line, "unknown zoo.cfg setting ignored"),
        }
        Ok(())
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let (min, max) = (self.min_session_timeout_ms(), self.max_session_timeout_ms());
        if min > max {
            return Err(ConfigError::Invalid(format!(
                "minSessionTimeout ({min}) must not be larger than maxSessionTimeout ({max})"
            )));
        }
        Ok(())
    }

    pub fn min_session_timeout_ms(&self) -> i32 {
        self.min_session_timeout_ms
            .unwrap_or_else(|| self.tick_time_ms.saturating_mul(2))
    }

    pub fn max_session_timeout_ms(&self) -> i32 {
        self.max_session_timeout_ms
            .unwrap_or_else(|| self.tick_time_ms.saturating_mul(20))
    }

    pub fn data_log_dir(&self) -> &Path {
        self.data_log_dir.as_deref().unwrap_or(&self.data_dir)
    }

    pub fn client_addr(&self) -> SocketAddr {
        SocketAddr::new(self.client_port_address, self.client_port)
    }

    /// The part of the configuration the state machine needs. `session_secret` is left at
    /// its default: the driver loads it from the data directory.
    pub fn core_config(&self) -> CoreConfig {
        CoreConfig {
            tick_time_ms: self.tick_time_ms,
            min_session_timeout_ms: self.min_session_timeout_ms(),
            max_session_timeout_ms: self.max_session_timeout_ms(),
            super_digest: self.super_digest.clone(),
            extended_types_enabled: self.extended_types_enabled,
            max_frame_bytes: self.jute_max_buffer_bytes,
            server_id: 0,
            container_check_interval_ms: self.container_check_interval_ms,
            enforce_quota: self.enforce_quota,
            // The driver fills in the secret kept in the data directory.
            ..CoreConfig::default()
        }
    }
}

fn positive_i32(v: i64) -> Option<i32> {
    i32::try_from(v).ok().filter(|v| *v > 0)
}

/// ZooKeeper treats -1 (or any negative value) as "use the tickTime-derived default".
fn timeout(v: i64) -> Option<i32> {
    positive_i32(v)
}

fn boolean(v: &str) -> Option<bool> {
    match v.to_ascii_lowercase().as_str() {
        "true" => Some(true),
        "false" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_without_a_file() {
        let cfg = ServerConfig::default();
        assert_eq!(cfg.client_addr(), "127.0.0.1:2181".parse().unwrap());
        assert_eq!(cfg.data_dir, PathBuf::from("./corral-data"));
        assert_eq!(cfg.data_log_dir(), Path::new("./corral-data"));
        assert_eq!(cfg.min_session_timeout_ms(), 4000);
        assert_eq!(cfg.max_session_timeout_ms(), 40000);
        assert!(cfg.four_letter_whitelist.allows("srvr"));
        assert!(!cfg.four_letter_whitelist.allows("mntr"));
    }

    #[test]
    fn parses_a_typical_zoo_cfg() {
        let cfg = ServerConfig::parse(
            "# a comment\n\
             tickTime=500\n\
             dataDir=/var/lib/zk\n\
             dataLogDir = /var/log/zk \n\
             clientPort=2999\n\
             clientPortAddress=0.0.0.0\n\
             maxClientCnxns=0\n\
             4lw.commands.whitelist=stat, ruok ,mntr\n\
             extendedTypesEnabled=true\n\
             jute.maxbuffer=4096\n\
             forceSync=no\n\
             snapCount=1000\n\
             autopurge.snapRetainCount=5\n\
             autopurge.purgeInterval=1\n\
             zookeeper.DigestAuthenticationProvider.superDigest=super:abc=\n\
             admin.enableServer=false\n\
             znode.container.checkIntervalMs=1000\n\
             zookeeper.enforceQuota=true\n\
             corral.workerThreads=1\n\
             corral.clientQuickAck=false\n",
        )
        .unwrap();
        assert_eq!(cfg.worker_threads, Some(1));
        assert_eq!(ServerConfig::default().worker_threads, None);
        assert!(!cfg.client_quick_ack);
        assert!(ServerConfig::default().client_quick_ack);
        assert!(ServerConfig::parse("corral.clientQuickAck=sometimes\n").is_err());
        for bad in ["0", "1025", "-1", "two"] {
            let text = format!("corral.workerThreads={bad}\n");
            assert!(ServerConfig::parse(&text).is_err(), "{bad} is refused");
        }
        assert_eq!(cfg.tick_time_ms, 500);
        assert_eq!(cfg.min_session_timeout_ms(), 1000);
        assert_eq!(cfg.max_session_timeout_ms(), 10000);
        assert_eq!(cfg.data_dir, PathBuf::from("/var/lib/zk"));
        assert_eq!(cfg.data_log_dir(), Path::new("/var/log/zk"));
        assert_eq!(cfg.client_addr(), "0.0.0.0:2999".parse().unwrap());
        assert_eq!(cfg.max_client_cnxns, 0);
        assert!(cfg.four_letter_whitelist.allows("ruok"));
        assert!(cfg.four_letter_whitelist.allows("mntr"));
        assert!(
            cfg.four_letter_whitelist.allows("srvr"),
            "srvr is always on"
        );
        assert!(!cfg.four_letter_whitelist.allows("dump"));
        assert!(cfg.extended_types_enabled);
        assert_eq!(cfg.jute_max_buffer_bytes, 4096);
        assert!(!cfg.force_sync);
        assert_eq!(cfg.snap_count, 1000);
        assert_eq!(cfg.autopurge_snap_retain_count, 5);
        assert_eq!(cfg.autopurge_purge_interval_hours, 1);
        assert_eq!(cfg.super_digest.as_deref(), Some("super:abc="));
        let core = cfg.core_config();
        assert_eq!(core.max_frame_bytes, 4096);
        assert_eq!(core.tick_time_ms, 500);
        assert_eq!(core.container_check_interval_ms, 1000);
        assert!(core.enforce_quota);
    }

    #[test]
    fn admin_and_metrics_settings() {
        let cfg = ServerConfig::default();
        assert!(cfg.admin.enabled, "on by default, as in ZooKeeper");
        assert_eq!(cfg.admin.port, 8080);
        assert_eq!(cfg.admin.command_url, "/commands");
        assert!(!cfg.metrics.enabled);
        assert_eq!(cfg.metrics.port, 7000);
        let cfg = ServerConfig::parse(
            "admin.enableServer=false\n\
             admin.serverAddress=127.0.0.1\n\
             admin.serverPort=9090\n\
             admin.commandURL=/cmds/\n\
             metricsProvider.className=org.apache.zookeeper.metrics.prometheus.PrometheusMetricsProvider\n\
             metricsProvider.httpHost=127.0.0.2\n\
             metricsProvider.httpPort=7001\n\
             metricsProvider.exportJvmInfo=false\n",
        )
        .unwrap();
        assert!(!cfg.admin.enabled);
        assert_eq!(cfg.admin.address, IpAddr::from([127, 0, 0, 1]));
        assert_eq!(cfg.admin.port, 9090);
        assert_eq!(cfg.admin.command_url, "/cmds");
        assert!(cfg.metrics.enabled);
        assert_eq!(cfg.metrics.host, IpAddr::from([127, 0, 0, 2]));
        assert_eq!(cfg.metrics.port, 7001);
        assert!(!cfg.metrics.export_jvm_info);
        let other = ServerConfig::parse("metricsProvider.className=com.example.Other\n").unwrap();
        assert!(!other.metrics.enabled);
        for bad in [
            "admin.serverPort=70000",
            "admin.enableServer=maybe",
            "admin.commandURL=commands",
            "metricsProvider.httpHost=somewhere",
        ] {
            let key = bad.split('=').next().unwrap();
            let err = ServerConfig::parse(bad).unwrap_err().to_string();
            assert!(err.contains(key), "{bad}: {err}");
        }
    }

    #[test]
    fn connection_limits_have_zookeeper_defaults_and_keys() {
        let d = ServerConfig::default();
        assert_eq!(
            (d.sessionless_cnxn_timeout_ms, d.global_outstanding_limit),
            (10_000, 1000)
        );
        let cfg = ServerConfig::parse(
            "zookeeper.nio.sessionlessCnxnTimeout=2500\nglobalOutstandingLimit=7\n",
        )
        .unwrap();
        assert_eq!(
            (
                cfg.sessionless_cnxn_timeout_ms,
                cfg.global_outstanding_limit
            ),
            (2500, 7)
        );
        for bad in [
            "zookeeper.nio.sessionlessCnxnTimeout=0",
            "globalOutstandingLimit=0",
            "globalOutstandingLimit=-1",
        ] {
            assert!(ServerConfig::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn star_enables_every_word() {
        let cfg = ServerConfig::parse("4lw.commands.whitelist=ruok,*\n").unwrap();
        assert_eq!(cfg.four_letter_whitelist, FourLetterWhitelist::All);
        assert!(cfg.four_letter_whitelist.allows("dump"));
    }

    #[test]
    fn explicit_session_timeouts_win_over_tick_defaults() {
        let cfg =
            ServerConfig::parse("tickTime=100\nminSessionTimeout=300\nmaxSessionTimeout=-1\n")
                .unwrap();
        assert_eq!(cfg.min_session_timeout_ms(), 300);
        assert_eq!(cfg.max_session_timeout_ms(), 2000);
    }

    #[test]
    fn unknown_keys_are_not_fatal() {
        let cfg = ServerConfig::parse("syncEnabled=true\nfoo=bar\nclientPort=1234\n").unwrap();
        assert_eq!(cfg.client_port, 1234);
    }

    #[test]
    fn bad_values_name_the_key() {
        let err = ServerConfig::parse("tickTime=2000\nclientPort=abc\n").unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("clientPort") && msg.contains("line 2"),
            "{msg}"
        );
        for bad in [
            "tickTime=0",
            "forceSync=maybe",
            "clientPortAddress=nowhere",
            "maxClientCnxns=-3",
            "jute.maxbuffer=0",
            "extendedTypesEnabled=yes please",
        ] {
            let key = bad.split('=').next().unwrap();
            let err = ServerConfig::parse(bad).unwrap_err().to_string();
            assert!(err.contains(key), "{bad}: {err}");
        }
        assert!(matches!(
            ServerConfig::parse("just text").unwrap_err(),
            ConfigError::Syntax { line: 1, .. }
        ));
    }

    #[test]
    fn min_above_max_is_rejected() {
        let err =
            ServerConfig::parse("minSessionTimeout=9000\nmaxSessionTimeout=5000\n").unwrap_err();
        assert!(matches!(err, ConfigError::Invalid(_)));
    }
}
