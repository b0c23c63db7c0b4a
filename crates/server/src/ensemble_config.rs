//! Ensemble membership from zoo.cfg: `server.N` lines, the `myid` file, and the quorum
//! settings, read by the rules of ZooKeeper 3.8's `QuorumPeerConfig` so the files an
//! existing ZooKeeper ensemble uses work unchanged.
//!
//! A member line is `server.N=host:peerPort:electionPort[:participant|:observer][;[clientAddr:]clientPort]`
//! (IPv6 hosts in brackets). The members come from zoo.cfg itself or, with
//! `dynamicConfigFile=path`, from that file (which then holds only `server.N` and `version`).
//!
//! Deliberate differences from ZooKeeper, all in the direction of refusing to start rather
//! than running with a configuration the operator did not mean:
//! - a config with `server.N` lines is always an ensemble, even of one member (ZooKeeper
//!   silently runs a single participant standalone unless `standaloneEnabled=false`);
//! - a repeated id is an error (ZooKeeper keeps the last line);
//! - every member needs a client port when zoo.cfg has no `clientPort`, since every member
//!   reads the same file;
//! - the client address on a member line must be an IP address, not a host name;
//! - secure client ports, multiple addresses per member and hierarchical quorums
//!   (`group.N`/`weight.N`) are refused, as Corral does not implement them.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use crate::config::ConfigError;

/// Whether a member votes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberRole {
    /// Votes in elections and counts towards write quorums.
    Participant,
    /// Follows the log and serves reads, but never votes.
    Observer,
}

impl MemberRole {
    /// The word ZooKeeper uses on member lines.
    pub fn as_str(self) -> &'static str {
        match self {
            MemberRole::Participant => "participant",
            MemberRole::Observer => "observer",
        }
    }

    /// ZooKeeper's `LearnerType` ordinal, which `conf` prints as `peerType`.
    pub fn zk_ordinal(self) -> u8 {
        match self {
            MemberRole::Participant => 0,
            MemberRole::Observer => 1,
        }
    }

    fn parse(text: &str) -> Option<MemberRole> {
        match text.trim().to_ascii_lowercase().as_str() {
            "participant" => Some(MemberRole::Participant),
            "observer" => Some(MemberRole::Observer),
            _ => None,
        }
    }
}

/// One `server.N` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberConfig {
    pub id: u64,
    /// Host name or IP address as written (an IPv6 address without its brackets); resolved
    /// by whoever connects to it, so a name that does not resolve yet is not an error here.
    pub host: String,
    /// Port the members replicate over (ZooKeeper's quorum port, 2888 by convention).
    pub peer_port: u16,
    /// Port for leader election (3888 by convention).
    pub election_port: u16,
    pub role: MemberRole,
    /// The client address from the `;[addr:]port` part of the line; a bare port means
    /// 0.0.0.0. `None` when the line has no client part.
    pub client_addr: Option<SocketAddr>,
}

impl MemberConfig {
    /// The right-hand side of the member's line as ZooKeeper prints it (`QuorumServer`'s
    /// text form): `host:peer:election:role` and, when the line had one, `;addr:port`.
    pub fn zk_spec(&self) -> String {
        let mut out = format!(
            "{}:{}:{}:{}",
            bracket_ipv6(&self.host),
            self.peer_port,
            self.election_port,
            self.role.as_str()
        );
        if let Some(addr) = self.client_addr {
            let ip = addr.ip().to_string();
            let _ = write!(out, ";{}:{}", bracket_ipv6(&ip), addr.port());
        }
        out
    }
}

/// Everything a member of an ensemble needs to know about the ensemble.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnsembleConfig {
    /// This server's id, from `<dataDir>/myid` (or `corral server --myid`).
    pub my_id: u64,
    /// Every member, participants and observers, sorted by id; `my_id` is one of them.
    pub members: Vec<MemberConfig>,
    /// Ticks a follower may take to connect to and sync with a leader.
    pub init_limit: u32,
    /// Ticks a follower may fall behind a leader before it is dropped.
    pub sync_limit: u32,
    pub reconfig_enabled: bool,
    pub standalone_enabled: bool,
    /// `readonlymode.enabled`: keep serving reads while cut off from a quorum.
    pub read_only_mode_enabled: bool,
    /// `corral.linearizableReads`: reads confirm leadership first instead of answering from
    /// the local replica (ZooKeeper's reads are not linearizable; hence off by default).
    pub linearizable_reads: bool,
    /// `quorumListenOnAllIPs`: bind the peer and election ports on every address instead of
    /// the member's own host.
    pub quorum_listen_on_all_ips: bool,
    /// The file the members came from, when zoo.cfg named one.
    pub dynamic_config_file: Option<PathBuf>,
    /// The configuration's version (ZooKeeper's zxid of the reconfig that made it; 0 for a
    /// configuration written by hand).
    pub config_version: i64,
}

impl EnsembleConfig {
    /// This server's own member entry.
    pub fn me(&self) -> &MemberConfig {
        // Construction guarantees my_id is a member; the parser refuses a config where it
        // is not, so this lookup cannot fail for a value this module built.
        self.members
            .iter()
            .find(|m| m.id == self.my_id)
            .expect("EnsembleConfig::my_id names one of its members")
    }

    /// The members that vote.
    pub fn voters(&self) -> impl Iterator<Item = &MemberConfig> {
        self.members
            .iter()
            .filter(|m| m.role == MemberRole::Participant)
    }

    /// The members that only follow.
    pub fn observers(&self) -> impl Iterator<Item = &MemberConfig> {
        self.members
            .iter()
            .filter(|m| m.role == MemberRole::Observer)
    }

    /// The text ZooKeeper 3.5+ keeps in `/zookeeper/config` and prints for the `config`
    /// command: a `server.N=...` line per member in id order, then `version=<hex>` with no
    /// newline after it (ZooKeeper's `QuorumMaj.toString`).
    pub fn zk_config_text(&self) -> String {
        let mut out = String::new();
        for m in &self.members {
            let _ = writeln!(out, "server.{}={}", m.id, m.zk_spec());
        }
        // Java's Long.toHexString prints a negative value as its two's complement, as `{:x}`
        // does for i64.
        let _ = write!(out, "version={:x}", self.config_version);
        out
    }
}

fn bracket_ipv6(host: &str) -> String {
    if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_string()
    }
}

/// Where a setting was read: a file name (or `zoo.cfg` for text without one) and a line.
#[derive(Debug, Clone)]
pub(crate) struct Origin {
    pub file: String,
    pub line: usize,
}

impl Origin {
    fn error(&self, key: &str, reason: impl Into<String>) -> ConfigError {
        ConfigError::Entry {
            file: self.file.clone(),
            line: self.line,
            key: key.to_string(),
            reason: reason.into(),
        }
    }
}

/// zoo.cfg settings that only mean something with `server.N` lines, collected while the
/// file is read and turned into an [`EnsembleConfig`] by [`EnsembleSettings::finish`].
#[derive(Debug, Default)]
pub(crate) struct EnsembleSettings {
    members: Vec<(MemberConfig, Origin)>,
    init_limit: Option<u32>,
    sync_limit: Option<u32>,
    reconfig_enabled: Option<bool>,
    standalone_enabled: Option<bool>,
    read_only_mode_enabled: Option<bool>,
    linearizable_reads: Option<bool>,
    quorum_listen_on_all_ips: Option<bool>,
    peer_type: Option<MemberRole>,
    dynamic_config_file: Option<(PathBuf, Origin)>,
    version: Option<i64>,
}

/// What [`EnsembleSettings::finish`] needs from the rest of the configuration.
#[derive(Debug)]
pub(crate) struct Surroundings<'a> {
    /// Where `myid` is looked for.
    pub data_dir: &'a Path,
    /// `corral server --myid`, which replaces the file.
    pub my_id_override: Option<u64>,
    /// The static `clientPort`, when zoo.cfg set it.
    pub client_port: Option<u16>,
    /// The static `clientPortAddress`, when zoo.cfg set it.
    pub client_port_address: Option<IpAddr>,
}

impl EnsembleSettings {
    /// Takes `key=value` if it is an ensemble setting; `Ok(false)` leaves it to the caller.
    pub fn accept(&mut self, at: &Origin, key: &str, value: &str) -> Result<bool, ConfigError> {
        let boolean = |v: &str| match v.to_ascii_lowercase().as_str() {
            "true" => Ok(true),
            "false" => Ok(false),
            _ => Err(at.error(key, format!("`{v}` is not true or false"))),
        };
        let limit = |v: &str| {
            v.parse::<u32>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| at.error(key, format!("`{v}` is not a positive number of ticks")))
        };
        match key {
            "initLimit" => self.init_limit = Some(limit(value)?),
            "syncLimit" => self.sync_limit = Some(limit(value)?),
            "reconfigEnabled" => self.reconfig_enabled = Some(boolean(value)?),
            "standaloneEnabled" => self.standalone_enabled = Some(boolean(value)?),
            "readonlymode.enabled" => self.read_only_mode_enabled = Some(boolean(value)?),
            "corral.linearizableReads" => self.linearizable_reads = Some(boolean(value)?),
            "quorumListenOnAllIPs" => self.quorum_listen_on_all_ips = Some(boolean(value)?),
            "electionAlg" => {
                // ZooKeeper 3.8 removed every other algorithm; 3 is the only accepted value.
                if value != "3" {
                    return Err(at.error(key, "only electionAlg=3 is supported"));
                }
            }
            "peerType" => {
                self.peer_type =
                    Some(MemberRole::parse(value).ok_or_else(|| {
                        at.error(key, format!("unrecognised peer type `{value}`"))
                    })?)
            }
            "dynamicConfigFile" => {
                if value.is_empty() {
                    return Err(at.error(key, "empty path"));
                }
                self.dynamic_config_file = Some((PathBuf::from(value), at.clone()));
            }
            "version" => self.version = Some(parse_version(at, key, value)?),
            k if k.starts_with("server.") => {
                let member = parse_member(at, k, value)?;
                self.members.push((member, at.clone()));
            }
            k if k.starts_with("group") || k.starts_with("weight") => {
                return Err(at.error(k, "hierarchical quorums (group/weight) are not supported"));
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// Reads the dynamic file if one was named, then assembles and checks the ensemble.
    /// `Ok(None)`: no members anywhere, so the server runs standalone exactly as before.
    pub fn finish(mut self, env: &Surroundings) -> Result<Option<EnsembleConfig>, ConfigError> {
        let dynamic_file = self.dynamic_config_file.take();
        if let Some((path, named_at)) = &dynamic_file {
            if let Some((m, at)) = self.members.first() {
                return Err(at.error(
                    &format!("server.{}", m.id),
                    format!(
                        "must be in the dynamic config file {} (dynamicConfigFile, line {}), not here",
                        path.display(),
                        named_at.line
                    ),
                ));
            }
            if self.version.is_some() {
                return Err(ConfigError::Invalid(format!(
                    "version= belongs in the dynamic config file {} (or its name), not in zoo.cfg",
                    path.display()
                )));
            }
            self.read_dynamic_file(path)?;
        }
        if self.members.is_empty() {
            if let Some((path, _)) = &dynamic_file {
                return Err(ConfigError::Invalid(format!(
                    "dynamic config file {} has no server.N lines",
                    path.display()
                )));
            }
            return Ok(None);
        }

        self.members.sort_by_key(|(m, _)| m.id);
        for pair in self.members.windows(2) {
            let ((a, a_at), (b, b_at)) = (&pair[0], &pair[1]);
            if a.id == b.id {
                return Err(b_at.error(
                    &format!("server.{}", b.id),
                    format!(
                        "duplicate server id {} (also in {} line {})",
                        b.id, a_at.file, a_at.line
                    ),
                ));
            }
        }
        let voters = self
            .members
            .iter()
            .filter(|(m, _)| m.role == MemberRole::Participant)
            .count();
        if voters == 0 {
            return Err(ConfigError::Invalid(
                "no participants: every server.N line is an observer".to_string(),
            ));
        }

        let my_id = match env.my_id_override {
            Some(id) => id,
            None => read_my_id(&env.data_dir.join("myid"))?,
        };
        let Some(my_index) = self.members.iter().position(|(m, _)| m.id == my_id) else {
            let ids: Vec<String> = self.members.iter().map(|(m, _)| m.id.to_string()).collect();
            return Err(ConfigError::Invalid(format!(
                "myid {my_id} is not in the server list (server ids: {})",
                ids.join(", ")
            )));
        };

        // Every member reads the same file, so a member without a client port has nowhere
        // to listen for clients; say so on every member, not just the one that would fail.
        if env.client_port.is_none() {
            if let Some((m, at)) = self.members.iter().find(|(m, _)| m.client_addr.is_none()) {
                return Err(at.error(
                    &format!("server.{}", m.id),
                    "no client port (`;port` or `;addr:port` after the election port) and clientPort is not set",
                ));
            }
        }
        let (me, my_origin) = &self.members[my_index];
        if let (Some(line_addr), Some(static_port)) = (me.client_addr, env.client_port) {
            check_client_addr_agrees(my_origin, me.id, line_addr, static_port, env)?;
        }

        if let Some(peer_type) = self.peer_type {
            if peer_type != me.role {
                // ZooKeeper's rule: the member list wins, as every other member reads it too
                // and would count this server by it.
                tracing::warn!(
                    peer_type = peer_type.as_str(),
                    server_list = me.role.as_str(),
                    "peerType disagrees with this server's server.{my_id} line; using the line"
                );
            }
        }

        let init_limit = self.init_limit.ok_or_else(|| {
            ConfigError::Invalid("initLimit is not set (required with server.N lines)".into())
        })?;
        let sync_limit = self.sync_limit.ok_or_else(|| {
            ConfigError::Invalid("syncLimit is not set (required with server.N lines)".into())
        })?;
        let version_from_name = dynamic_file
            .as_ref()
            .and_then(|(path, _)| version_from_file_name(path));
        let config_version = match (self.version, version_from_name) {
            (Some(inside), Some(named)) if inside != named => {
                return Err(ConfigError::Invalid(format!(
                    "version={inside:x} inside the dynamic config file disagrees with {named:x} in its name"
                )))
            }
            (Some(v), _) | (None, Some(v)) => v,
            (None, None) => 0,
        };

        Ok(Some(EnsembleConfig {
            my_id,
            members: self.members.into_iter().map(|(m, _)| m).collect(),
            init_limit,
            sync_limit,
            reconfig_enabled: self.reconfig_enabled.unwrap_or(false),
            standalone_enabled: self.standalone_enabled.unwrap_or(true),
            read_only_mode_enabled: self.read_only_mode_enabled.unwrap_or(false),
            linearizable_reads: self.linearizable_reads.unwrap_or(false),
            quorum_listen_on_all_ips: self.quorum_listen_on_all_ips.unwrap_or(false),
            dynamic_config_file: dynamic_file.map(|(path, _)| path),
            config_version,
        }))
    }

    /// A dynamic file holds only `server.N` lines and `version`, as ZooKeeper writes it.
    fn read_dynamic_file(&mut self, path: &Path) -> Result<(), ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let file = path.display().to_string();
        for (idx, raw) in text.lines().enumerate() {
            let at = Origin {
                file: file.clone(),
                line: idx + 1,
            };
            let trimmed = raw.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let Some((key, value)) = trimmed.split_once('=') else {
                return Err(at.error(trimmed, "expected key=value"));
            };
            let (key, value) = (key.trim(), value.trim());
            let member_key = key.starts_with("server.") || key == "version";
            if !member_key || !self.accept(&at, key, value)? {
                return Err(at.error(
                    key,
                    "unrecognised parameter: a dynamic config file holds only server.N and version",
                ));
            }
        }
        Ok(())
    }
}

/// ZooKeeper refuses a client address in zoo.cfg that contradicts the member's own line: a
/// specific static address must equal the line's, a wildcard one must at least share its port.
fn check_client_addr_agrees(
    at: &Origin,
    id: u64,
    line_addr: SocketAddr,
    static_port: u16,
    env: &Surroundings,
) -> Result<(), ConfigError> {
    let static_ip = env
        .client_port_address
        .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    let agrees = if static_ip.is_unspecified() {
        static_port == line_addr.port()
    } else {
        SocketAddr::new(static_ip, static_port) == line_addr
    };
    if agrees {
        Ok(())
    } else {
        Err(at.error(
            &format!("server.{id}"),
            format!(
                "client address {line_addr} differs from clientPortAddress/clientPort {}",
                SocketAddr::new(static_ip, static_port)
            ),
        ))
    }
}

/// `myid`: this server's id in decimal; surrounding whitespace (the usual trailing newline)
/// is ignored.
fn read_my_id(path: &Path) -> Result<u64, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::MyId {
        path: path.to_path_buf(),
        reason: if e.kind() == std::io::ErrorKind::NotFound {
            "not found; a config with server.N lines needs this file (holding this server's id) \
             or `--myid N`"
                .to_string()
        } else {
            format!("cannot be read: {e}")
        },
    })?;
    let trimmed = text.trim();
    trimmed.parse::<u64>().map_err(|_| ConfigError::MyId {
        path: path.to_path_buf(),
        reason: format!("`{}` is not a server id (a decimal number)", clip(trimmed)),
    })
}

/// Keeps error messages short when a file holds something unexpected.
fn clip(text: &str) -> String {
    const MAX_CHARS: usize = 40;
    if text.chars().count() <= MAX_CHARS {
        text.to_string()
    } else {
        let head: String = text.chars().take(MAX_CHARS).collect();
        format!("{head}...")
    }
}

fn parse_version(at: &Origin, key: &str, value: &str) -> Result<i64, ConfigError> {
    i64::from_str_radix(value, 16)
        .map_err(|_| at.error(key, format!("`{value}` is not a hexadecimal version")))
}

/// ZooKeeper names dynamic files `<zoo.cfg>.dynamic.<hex version>`: the text after the last
/// dot, read as hex, is the version; anything else means none.
fn version_from_file_name(path: &Path) -> Option<i64> {
    let name = path.file_name()?.to_str()?;
    let (_, suffix) = name.rsplit_once('.')?;
    // from_str_radix accepts a sign; a file name's suffix with one is not a version.
    if suffix.is_empty() || !suffix.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    i64::from_str_radix(suffix, 16).ok()
}

/// Splits `host:a:b...` into host and the fields after it; a bracketed host is an IPv6
/// address whose colons are not separators (ZooKeeper's `ConfigUtils.getHostAndPort`).
fn split_host<'a>(at: &Origin, key: &str, text: &'a str) -> Result<Vec<&'a str>, ConfigError> {
    if let Some(rest) = text.strip_prefix('[') {
        let Some((host, after)) = rest.split_once(']') else {
            return Err(at.error(key, format!("`{text}` starts with '[' but has no ']'")));
        };
        let Some(after) = after.strip_prefix(':') else {
            return Err(at.error(key, format!("`{text}` has no port after ']'")));
        };
        let mut fields = vec![host];
        fields.extend(after.split(':'));
        Ok(fields)
    } else {
        Ok(text.split(':').collect())
    }
}

fn parse_port(at: &Origin, key: &str, what: &str, text: &str) -> Result<u16, ConfigError> {
    text.trim()
        .parse::<u16>()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| at.error(key, format!("{what} `{text}` is not a port (1-65535)")))
}

/// One `server.N=...` value.
/// Parses one member as a reconfig request names it: `server.N=host:peer:election[:role][;[addr:]port]`.
pub fn parse_member_spec(spec: &str) -> Result<MemberConfig, String> {
    let (key, value) = spec
        .trim()
        .split_once('=')
        .ok_or_else(|| format!("`{spec}` is not server.N=host:peerPort:electionPort..."))?;
    let key = key.trim();
    if !key.starts_with("server.") {
        return Err(format!("`{key}` is not server.N"));
    }
    let at = Origin {
        file: "reconfig".into(),
        line: 0,
    };
    parse_member(&at, key, value.trim()).map_err(|e| e.to_string())
}

fn parse_member(at: &Origin, key: &str, value: &str) -> Result<MemberConfig, ConfigError> {
    let id_text = &key["server.".len()..];
    let id = id_text
        .parse::<u64>()
        .map_err(|_| at.error(key, format!("`{id_text}` is not a server id")))?;
    const FORM: &str =
        "expected host:peerPort:electionPort[:participant|:observer][;[clientAddr:]clientPort]";

    let mut parts = value.split(';');
    let server_part = parts.next().unwrap_or_default().trim();
    let client_part = parts.next().map(str::trim).unwrap_or_default();
    if let Some(secure) = parts.next() {
        if !secure.trim().is_empty() {
            return Err(at.error(key, "secure client ports are not supported"));
        }
    }
    if parts.next().is_some() {
        return Err(at.error(key, FORM));
    }
    if server_part.contains('|') {
        return Err(at.error(key, "multiple addresses per server are not supported"));
    }

    let fields = split_host(at, key, server_part)?;
    if !(3..=4).contains(&fields.len()) {
        return Err(at.error(key, format!("`{value}`: {FORM}")));
    }
    let host = fields[0].trim();
    if host.is_empty() || host.contains(char::is_whitespace) {
        return Err(at.error(key, format!("`{host}` is not a host name or address")));
    }
    let peer_port = parse_port(at, key, "peer port", fields[1])?;
    let election_port = parse_port(at, key, "election port", fields[2])?;
    if peer_port == election_port {
        return Err(at.error(key, "peer port and election port must differ"));
    }
    let role = match fields.get(3) {
        Some(word) => MemberRole::parse(word)
            .ok_or_else(|| at.error(key, format!("unrecognised peer type `{word}`")))?,
        None => MemberRole::Participant,
    };

    let client_addr = if client_part.is_empty() {
        None
    } else {
        let fields = split_host(at, key, client_part)?;
        let (ip, port_text) = match fields.as_slice() {
            [port] => (IpAddr::V4(Ipv4Addr::UNSPECIFIED), *port),
            [host, port] => {
                let ip = host.trim().parse::<IpAddr>().map_err(|_| {
                    at.error(key, format!("client address `{host}` is not an IP address"))
                })?;
                (ip, *port)
            }
            _ => return Err(at.error(key, format!("client part `{client_part}`: {FORM}"))),
        };
        Some(SocketAddr::new(
            ip,
            parse_port(at, key, "client port", port_text)?,
        ))
    };

    Ok(MemberConfig {
        id,
        host: host.to_string(),
        peer_port,
        election_port,
        role,
        client_addr,
    })
}

#[cfg(test)]
mod tests {
    use crate::config::{ConfigError, ConfigOverrides, ServerConfig};

    use super::*;

    const LIMITS: &str = "initLimit=10\nsyncLimit=5\n";

    fn with_id(my_id: u64) -> ConfigOverrides {
        ConfigOverrides {
            my_id: Some(my_id),
            data_dir: None,
        }
    }

    /// Parses `text` (after the limits every ensemble needs) as member `my_id`.
    fn parse_as(my_id: u64, text: &str) -> Result<ServerConfig, ConfigError> {
        ServerConfig::parse_with(&format!("{LIMITS}{text}"), &with_id(my_id))
    }

    fn error_as(my_id: u64, text: &str) -> String {
        parse_as(my_id, text)
            .expect_err("the configuration must be refused")
            .to_string()
    }

    /// Three participants and an observer, in the 3.5+ form with client parts.
    const FOUR: &str = "server.3=zk3.example:2888:3888:participant;2183\n\
                        server.1=10.0.0.1:2888:3888;10.0.0.1:2181\n\
                        server.4=[fe80::4]:2888:3888:observer;[::]:2184\n\
                        server.2=zk2.example:2889:3889:PARTICIPANT;0.0.0.0:2182\n";

    #[test]
    fn members_in_every_accepted_form() {
        let cfg = parse_as(2, FOUR).unwrap();
        let ens = cfg
            .ensemble
            .as_ref()
            .expect("server.N lines make an ensemble");
        let ids: Vec<u64> = ens.members.iter().map(|m| m.id).collect();
        assert_eq!(ids, [1, 2, 3, 4], "members are sorted by id");
        assert_eq!(ens.my_id, 2);
        assert_eq!(ens.me().host, "zk2.example");
        assert_eq!((ens.me().peer_port, ens.me().election_port), (2889, 3889));
        let voters: Vec<u64> = ens.voters().map(|m| m.id).collect();
        let observers: Vec<u64> = ens.observers().map(|m| m.id).collect();
        assert_eq!((voters, observers), (vec![1, 2, 3], vec![4]));

        let m1 = &ens.members[0];
        assert_eq!(m1.host, "10.0.0.1");
        assert_eq!(
            m1.role,
            MemberRole::Participant,
            "no role word = participant"
        );
        assert_eq!(m1.client_addr, Some("10.0.0.1:2181".parse().unwrap()));
        assert_eq!(
            ens.members[2].client_addr,
            Some("0.0.0.0:2183".parse().unwrap()),
            "a bare client port listens on every address"
        );
        let m4 = &ens.members[3];
        assert_eq!(m4.host, "fe80::4", "brackets are not part of the host");
        assert_eq!(m4.role, MemberRole::Observer);
        assert_eq!(m4.client_addr, Some("[::]:2184".parse().unwrap()));

        // This member's own line decides where clients connect.
        assert_eq!(cfg.client_addr(), "0.0.0.0:2182".parse().unwrap());
        assert_eq!((ens.init_limit, ens.sync_limit), (10, 5));
        assert_eq!(ens.config_version, 0);
        assert_eq!(ens.dynamic_config_file, None);
        assert!(!ens.reconfig_enabled && ens.standalone_enabled);
        assert!(!ens.read_only_mode_enabled && !ens.linearizable_reads);
    }

    #[test]
    fn zk_config_text_matches_zookeeper() {
        let ens = parse_as(1, &format!("{FOUR}version=100000000\n"))
            .unwrap()
            .ensemble
            .unwrap();
        // QuorumMaj.toString: members by id, `host:peer:election:role;clientHost:port`,
        // IPv6 in brackets, then the version in lower-case hex without a newline.
        assert_eq!(
            ens.zk_config_text(),
            "server.1=10.0.0.1:2888:3888:participant;10.0.0.1:2181\n\
             server.2=zk2.example:2889:3889:participant;0.0.0.0:2182\n\
             server.3=zk3.example:2888:3888:participant;0.0.0.0:2183\n\
             server.4=[fe80::4]:2888:3888:observer;[::]:2184\n\
             version=100000000"
        );
    }

    #[test]
    fn old_form_uses_client_port_and_prints_no_client_part() {
        let cfg = parse_as(
            1,
            "clientPort=2190\nserver.1=a:2888:3888\nserver.2=b:2888:3888\nserver.3=c:2888:3888:observer\n",
        )
        .unwrap();
        let ens = cfg.ensemble.as_ref().unwrap();
        assert!(ens.members.iter().all(|m| m.client_addr.is_none()));
        assert_eq!(cfg.client_port, 2190);
        // ZooKeeper does not print a client address taken from the static clientPort.
        assert_eq!(
            ens.zk_config_text(),
            "server.1=a:2888:3888:participant\nserver.2=b:2888:3888:participant\n\
             server.3=c:2888:3888:observer\nversion=0"
        );
    }

    #[test]
    fn read_only_mode_allows_isro_whatever_the_whitelist() {
        let with = parse_as(1, "server.1=a:2888:3888;2181\nreadonlymode.enabled=true\n").unwrap();
        assert!(with.four_letter_whitelist.allows("isro"));
        assert!(!with.four_letter_whitelist.allows("mntr"));
        let without = parse_as(1, "server.1=a:2888:3888;2181\n").unwrap();
        assert!(!without.four_letter_whitelist.allows("isro"));
    }

    #[test]
    fn ensemble_settings_are_read() {
        let ens = parse_as(
            1,
            "server.1=a:2888:3888;2181\nreconfigEnabled=true\nstandaloneEnabled=FALSE\n\
             readonlymode.enabled=true\ncorral.linearizableReads=true\nelectionAlg=3\n\
             quorumListenOnAllIPs=true\n4lw.commands.whitelist=*\n",
        )
        .unwrap()
        .ensemble
        .unwrap();
        assert!(ens.reconfig_enabled);
        assert!(!ens.standalone_enabled);
        assert!(ens.read_only_mode_enabled);
        assert!(ens.linearizable_reads);
        assert!(ens.quorum_listen_on_all_ips);
    }

    #[test]
    fn one_member_is_still_an_ensemble() {
        let cfg = parse_as(7, "server.7=localhost:2888:3888;2181\n").unwrap();
        let ens = cfg.ensemble.expect("never silently standalone");
        assert_eq!(ens.members.len(), 1);
        assert_eq!(ens.me().id, 7);
    }

    #[test]
    fn without_server_lines_nothing_changes() {
        let cfg = ServerConfig::parse("initLimit=10\nsyncLimit=5\nclientPort=2181\n").unwrap();
        assert!(cfg.ensemble.is_none());
        assert_eq!(cfg.client_addr(), "127.0.0.1:2181".parse().unwrap());
        // The limits are still checked, as ZooKeeper does.
        let err = ServerConfig::parse("initLimit=ten\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("initLimit") && err.contains("line 1"), "{err}");
    }

    #[test]
    fn peer_type_never_overrides_the_server_list() {
        let ens = parse_as(
            2,
            "peerType=observer\nserver.1=a:2888:3888;2181\nserver.2=b:2888:3888;2181\n",
        )
        .unwrap()
        .ensemble
        .unwrap();
        assert_eq!(ens.me().role, MemberRole::Participant);
        let ens = parse_as(
            2,
            "peerType=observer\nserver.1=a:2888:3888;2181\nserver.2=b:2888:3888:observer;2181\n",
        )
        .unwrap()
        .ensemble
        .unwrap();
        assert_eq!(ens.me().role, MemberRole::Observer);
        assert!(error_as(1, "peerType=witness\nserver.1=a:1:2;3\n").contains("witness"));
    }

    #[test]
    fn myid_file_is_read_from_the_data_dir() {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "dataDir={}\n{LIMITS}server.1=a:2888:3888;2181\nserver.2=b:2888:3888;2181\n",
            dir.path().display()
        );
        let myid = dir.path().join("myid");

        let err = ServerConfig::parse(&text).unwrap_err();
        assert!(matches!(err, ConfigError::MyId { .. }), "{err}");
        let msg = err.to_string();
        assert!(
            msg.contains(&myid.display().to_string()) && msg.contains("not found"),
            "the error says where myid was looked for: {msg}"
        );

        std::fs::write(&myid, " 2\n").unwrap();
        let cfg = ServerConfig::parse(&text).unwrap();
        assert_eq!(cfg.ensemble.unwrap().my_id, 2);

        // The command line's id replaces the file.
        let cfg = ServerConfig::parse_with(&text, &with_id(1)).unwrap();
        assert_eq!(cfg.ensemble.unwrap().my_id, 1);

        std::fs::write(&myid, "two\n").unwrap();
        let msg = ServerConfig::parse(&text).unwrap_err().to_string();
        assert!(msg.contains("`two` is not a server id"), "{msg}");

        // A dataDir override moves the place myid is looked for.
        let other = tempfile::tempdir().unwrap();
        std::fs::write(other.path().join("myid"), "1").unwrap();
        let overrides = ConfigOverrides {
            my_id: None,
            data_dir: Some(other.path().to_path_buf()),
        };
        let cfg = ServerConfig::parse_with(&text, &overrides).unwrap();
        assert_eq!(cfg.data_dir, other.path());
        assert_eq!(cfg.ensemble.unwrap().my_id, 1);
    }

    #[test]
    fn refusals_name_the_reason() {
        let two = "server.1=a:2888:3888;2181\nserver.2=b:2888:3888;2181\n";
        let cases: &[(u64, String, &str)] = &[
            (3, two.to_string(), "myid 3 is not in the server list (server ids: 1, 2)"),
            (
                1,
                format!("{two}server.1=c:2888:3888;2181\n"),
                "line 5: `server.1`: duplicate server id 1 (also in zoo.cfg line 3)",
            ),
            (
                1,
                "server.01=a:2888:3888;2181\nserver.1=b:2888:3888;2181\n".into(),
                "duplicate server id 1",
            ),
            (
                1,
                "server.1=a:2888:3888;2181\nserver.2=b:2888:3888\n".into(),
                "line 4: `server.2`: no client port",
            ),
            (1, "server.1=a:0:3888;2181\n".into(), "peer port `0`"),
            (1, "server.1=a:70000:3888;2181\n".into(), "peer port `70000`"),
            (1, "server.1=a:2888:x;2181\n".into(), "election port `x`"),
            (1, "server.1=a:2888:3888;99999\n".into(), "client port `99999`"),
            (1, "server.1=a:2888:2888;2181\n".into(), "must differ"),
            (
                1,
                "server.1=a:2888:3888:observer;2181\n".into(),
                "no participants",
            ),
            (1, "server.1=a:2888;2181\n".into(), "expected host:peerPort"),
            (1, "server.1=a:1:2:3:4;2181\n".into(), "expected host:peerPort"),
            (1, "server.1=a:2888:3888:leader;2181\n".into(), "peer type `leader`"),
            (1, "server.x=a:2888:3888;2181\n".into(), "`x` is not a server id"),
            (1, "server.-1=a:2888:3888;2181\n".into(), "`-1` is not a server id"),
            (1, "server.1=:2888:3888;2181\n".into(), "not a host name"),
            (1, "server.1=[::1:2888:3888;2181\n".into(), "no ']'"),
            (1, "server.1=[::1]2888:3888;2181\n".into(), "no port after"),
            (
                1,
                "server.1=a:2888:3888;localhost:2181\n".into(),
                "`localhost` is not an IP address",
            ),
            (1, "server.1=a:2888:3888;1.2.3.4:5:6\n".into(), "client part"),
            (1, "server.1=a:2888:3888;2181;2281\n".into(), "secure client ports"),
            (1, "server.1=a:2888:3888|b:2888:3888;2181\n".into(), "multiple addresses"),
            (1, format!("{two}group.1=1:2\n"), "hierarchical quorums"),
            (1, format!("{two}electionAlg=1\n"), "electionAlg=3"),
            (1, format!("{two}reconfigEnabled=yes\n"), "`yes` is not true or false"),
            (1, format!("{two}version=xyz\n"), "hexadecimal"),
            (
                1,
                format!("clientPort=2182\n{two}"),
                "client address 0.0.0.0:2181 differs from clientPortAddress/clientPort 0.0.0.0:2182",
            ),
        ];
        for (my_id, text, reason) in cases {
            let err = error_as(*my_id, text);
            assert!(
                err.contains(reason),
                "{text:?}: expected {reason:?} in {err:?}"
            );
        }

        let err = ServerConfig::parse_with("server.1=a:2888:3888;2181\n", &with_id(1))
            .unwrap_err()
            .to_string();
        assert!(err.contains("initLimit is not set"), "{err}");
        let err = ServerConfig::parse_with("initLimit=5\nserver.1=a:2888:3888;2181\n", &with_id(1))
            .unwrap_err()
            .to_string();
        assert!(err.contains("syncLimit is not set"), "{err}");
        assert!(error_as(1, "initLimit=0\nserver.1=a:1:2;3\n").contains("initLimit"));
    }

    #[test]
    fn static_client_address_must_agree_with_the_line() {
        let line = "server.1=127.0.0.1:2888:3888;127.0.0.1:2181\n";
        for agreeing in [
            "clientPort=2181\n",
            "clientPort=2181\nclientPortAddress=0.0.0.0\n",
            "clientPort=2181\nclientPortAddress=127.0.0.1\n",
        ] {
            let cfg = parse_as(1, &format!("{agreeing}{line}")).unwrap();
            assert_eq!(cfg.client_addr(), "127.0.0.1:2181".parse().unwrap());
        }
        let err = error_as(
            1,
            &format!("clientPort=2181\nclientPortAddress=10.0.0.9\n{line}"),
        );
        assert!(err.contains("differs"), "{err}");
    }

    #[test]
    fn dynamic_config_file_holds_the_members() {
        let dir = tempfile::tempdir().unwrap();
        let dynamic = dir.path().join("zoo.cfg.dynamic.100000000");
        std::fs::write(
            &dynamic,
            "server.2=b:2888:3888:participant;0.0.0.0:2182\n\
             server.1=a:2888:3888:participant;0.0.0.0:2181\n",
        )
        .unwrap();
        let static_part = format!("dynamicConfigFile={}\n", dynamic.display());
        let ens = parse_as(1, &static_part).unwrap().ensemble.unwrap();
        assert_eq!(ens.members.len(), 2);
        assert_eq!(ens.dynamic_config_file.as_deref(), Some(dynamic.as_path()));
        assert_eq!(
            ens.config_version, 0x1_0000_0000,
            "the version is in the file's name"
        );
        assert!(ens.zk_config_text().ends_with("\nversion=100000000"));

        // Without a version in the name, `version=` inside the file gives it.
        let plain = dir.path().join("zoo.cfg.dynamic");
        std::fs::write(&plain, "server.1=a:2888:3888;2181\nversion=2a\n").unwrap();
        let text = format!("dynamicConfigFile={}\n", plain.display());
        assert_eq!(
            parse_as(1, &text).unwrap().ensemble.unwrap().config_version,
            0x2a
        );

        std::fs::write(&dynamic, "server.1=a:2888:3888;2181\nversion=7\n").unwrap();
        assert!(error_as(1, &static_part).contains("disagrees"));

        std::fs::write(&plain, "server.1=a:2888:3888;2181\ntickTime=100\n").unwrap();
        let err = error_as(1, &text);
        assert!(
            err.contains(&format!(
                "{}: line 2: `tickTime`: unrecognised",
                plain.display()
            )),
            "{err}"
        );

        std::fs::write(&plain, "# nothing here\n").unwrap();
        assert!(error_as(1, &text).contains("has no server.N lines"));

        let err = error_as(1, &format!("{text}server.1=a:2888:3888;2181\n"));
        assert!(err.contains("must be in the dynamic config file"), "{err}");
        let err = error_as(1, &format!("{text}version=3\n"));
        assert!(
            err.contains("version= belongs in the dynamic config file"),
            "{err}"
        );

        let missing = format!("dynamicConfigFile={}\n", dir.path().join("nope").display());
        let err = error_as(1, &missing);
        assert!(err.contains("cannot read") && err.contains("nope"), "{err}");
    }

    #[test]
    fn version_from_file_name_follows_zookeeper() {
        let v = |name: &str| version_from_file_name(Path::new(name));
        assert_eq!(v("/etc/zk/zoo.cfg.dynamic.100000000"), Some(0x1_0000_0000));
        assert_eq!(v("zoo.cfg.dynamic.0"), Some(0));
        assert_eq!(v("zoo.cfg.dynamic"), None);
        assert_eq!(v("zoo.cfg.dynamic.-1"), None);
        assert_eq!(v("noext"), None);
    }

    /// Parsing is iterative and never panics: byte-level mutations of a valid config must
    /// give an answer (accepted or refused), whatever they produce.
    #[test]
    fn mangled_input_never_panics() {
        let seed_text = format!(
            "{LIMITS}{FOUR}server.5=[::1]:1:2:observer;[::1]:3\nversion=1\npeerType=observer\n"
        );
        let alphabet = b":;[]|=.\n 0123456789abcdefx-";
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            // xorshift64: deterministic, so a failure reproduces.
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..3000 {
            let mut bytes = seed_text.clone().into_bytes();
            for _ in 0..(next() % 6 + 1) {
                let at = (next() as usize) % bytes.len();
                match next() % 3 {
                    0 => bytes[at] = alphabet[(next() as usize) % alphabet.len()],
                    1 => {
                        bytes.remove(at);
                    }
                    _ => bytes.insert(at, alphabet[(next() as usize) % alphabet.len()]),
                }
            }
            let text = String::from_utf8_lossy(&bytes);
            let _ = ServerConfig::parse_with(&text, &with_id(2));
        }
    }
}
