//! The four-letter words (`ruok`, `srvr`, `mntr`, ...): plain-text status answers in
//! ZooKeeper 3.8's exact layouts, because monitoring scripts, `zkServer.sh status` and
//! client libraries parse them.
//!
//! Everything here is formatting over plain values; the driver gathers the values (from the
//! core and from its own connection counters) and picks the renderer.

use std::fmt::Write as _;
use std::net::SocketAddr;

use corral_proto::{SessionId, Zxid};

use crate::config::ServerConfig;
use crate::core::{CoreStats, SessionInfo, WatchesByConn};

/// The ZooKeeper release whose behaviour Corral follows; tools parse the version line and
/// some gate features on it, so it leads the string.
pub const ZK_COMPAT_VERSION: &str = "3.8.4";

/// `Zookeeper version: <this>` in `srvr`/`stat`, `zk_version` in `mntr`.
pub fn full_version() -> String {
    let built = option_env!("CORRAL_BUILD_DATE").unwrap_or("1970-01-01 00:00 UTC");
    format!(
        "{ZK_COMPAT_VERSION}-corral-{}, built on {built}",
        env!("CARGO_PKG_VERSION")
    )
}

/// The reply to a word that is known but not in `4lw.commands.whitelist`.
pub fn refusal(word: &str) -> String {
    format!("{word} is not executed because it is not in the whitelist.\n")
}

/// ZooKeeper's default text trace mask (`ZooTrace`): client requests (1 << 1), server
/// packets (1 << 4), sessions (1 << 5) and warnings (1 << 8), i.e. 306.
pub const DEFAULT_TRACE_MASK: i64 = (1 << 1) | (1 << 4) | (1 << 5) | (1 << 8);

/// Bytes of `stmk`'s argument: the new mask as a big-endian 64-bit integer after the word.
pub const STMK_ARGUMENT_BYTES: usize = 8;

/// The trace mask `gtmk` reads and `stmk` sets. Corral's logging is configured through
/// `tracing` filters, so the mask selects no output; it is kept (per server) so that tools
/// which set and read it back see ZooKeeper's behaviour.
#[derive(Debug)]
pub struct TraceMask(std::sync::atomic::AtomicI64);

impl Default for TraceMask {
    fn default() -> Self {
        TraceMask(std::sync::atomic::AtomicI64::new(DEFAULT_TRACE_MASK))
    }
}

impl TraceMask {
    /// `gtmk`: the current mask in decimal, without a newline (ZooKeeper's `print`).
    pub fn gtmk(&self) -> String {
        self.0
            .load(std::sync::atomic::Ordering::Relaxed)
            .to_string()
    }

    /// `stmk`: sets the mask from its 8-byte argument and answers the new mask in decimal.
    pub fn stmk(&self, argument: [u8; STMK_ARGUMENT_BYTES]) -> String {
        let mask = i64::from_be_bytes(argument);
        self.0.store(mask, std::sync::atomic::Ordering::Relaxed);
        mask.to_string()
    }
}

/// Request latencies in milliseconds: min/avg/max over the requests seen since the last reset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LatencyStats {
    min_ms: u64,
    max_ms: u64,
    total_ms: u64,
    count: u64,
}

impl Default for LatencyStats {
    fn default() -> Self {
        LatencyStats {
            min_ms: u64::MAX,
            max_ms: 0,
            total_ms: 0,
            count: 0,
        }
    }
}

impl LatencyStats {
    pub fn record(&mut self, latency_ms: u64) {
        self.min_ms = self.min_ms.min(latency_ms);
        self.max_ms = self.max_ms.max(latency_ms);
        self.total_ms += latency_ms;
        self.count += 1;
    }

    pub fn reset(&mut self) {
        *self = LatencyStats::default();
    }

    /// 0 when nothing was measured, as ZooKeeper reports it.
    pub fn min_ms(&self) -> u64 {
        if self.count == 0 {
            0
        } else {
            self.min_ms
        }
    }

    pub fn max_ms(&self) -> u64 {
        self.max_ms
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn total_ms(&self) -> u64 {
        self.total_ms
    }

    /// Server-wide average: rounded to 4 decimals (half up), as ZooKeeper's counter does.
    pub fn avg_ms(&self) -> f64 {
        if self.count == 0 {
            return 0.0;
        }
        let avg = self.total_ms as f64 / self.count as f64;
        (avg * 10_000.0).round() / 10_000.0
    }

    /// Per-connection average: integer division, as ZooKeeper's connection stats do.
    pub fn avg_ms_truncated(&self) -> u64 {
        self.total_ms.checked_div(self.count).unwrap_or(0)
    }
}

/// Formats a double the way Java's `Double.toString` does (clients parse `mntr` values), for
/// the non-negative values that appear here.
pub fn java_double(x: f64) -> String {
    if x != 0.0 && !(1e-3..1e7).contains(&x) {
        let sci = format!("{x:e}");
        let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
        let mantissa = if mantissa.contains('.') {
            mantissa.to_string()
        } else {
            format!("{mantissa}.0")
        };
        return format!("{mantissa}E{exp}");
    }
    // Rust's `{:?}` is also the shortest round-tripping form and keeps the ".0".
    format!("{x:?}")
}

/// One session's view of a connection, for the long form of `cons`.
#[derive(Debug, Clone, PartialEq)]
pub struct ConnSessionLine {
    pub session_id: SessionId,
    /// Short name of the last operation (`GETD`, `PING`, ...), ZooKeeper's vocabulary.
    pub last_op: &'static str,
    pub established_ms: i64,
    pub timeout_ms: i32,
    /// -1 before the first request.
    pub last_cxid: i64,
    pub last_zxid: Zxid,
    pub last_response_ms: i64,
    pub last_latency_ms: u64,
    pub latency: LatencyStats,
}

/// One client connection, as `stat`/`cons` list it.
#[derive(Debug, Clone, PartialEq)]
pub struct ConnLine {
    pub peer: SocketAddr,
    /// 1 (reading) for client connections; 0 for the connection asking the question, which
    /// ZooKeeper has already taken off its selector.
    pub interest_ops: u8,
    pub queued: u64,
    pub received: u64,
    pub sent: u64,
    /// `None` before the handshake completed.
    pub session: Option<ConnSessionLine>,
}

/// Java's `InetSocketAddress.toString()` for a literal address: `/ip:port`.
fn java_addr(a: &SocketAddr) -> String {
    format!("/{}:{}", a.ip(), a.port())
}

/// `ServerCnxn.dumpConnectionInfo`: `brief` is the `stat` form, otherwise the `cons` form.
pub fn connection_info(c: &ConnLine, brief: bool) -> String {
    let mut s = String::new();
    let _ = write!(
        s,
        " {}[{:x}](queued={},recved={},sent={}",
        java_addr(&c.peer),
        c.interest_ops,
        c.queued,
        c.received,
        c.sent
    );
    if let (false, Some(sess)) = (brief, &c.session) {
        if sess.session_id != 0 {
            let _ = write!(
                s,
                ",sid=0x{:x},lop={},est={},to={}",
                sess.session_id, sess.last_op, sess.established_ms, sess.timeout_ms
            );
            if sess.last_cxid >= 0 {
                let _ = write!(s, ",lcxid=0x{:x}", sess.last_cxid);
            }
            let _ = write!(
                s,
                ",lzxid=0x{:x},lresp={},llat={},minlat={},avglat={},maxlat={}",
                sess.last_zxid,
                sess.last_response_ms,
                sess.last_latency_ms,
                sess.latency.min_ms(),
                sess.latency.avg_ms_truncated(),
                sess.latency.max_ms()
            );
        }
    }
    s.push(')');
    s
}

/// The server-wide numbers shared by `srvr`, `stat` and `mntr`.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerSummary {
    pub version: String,
    pub stats: CoreStats,
    pub latency: LatencyStats,
    pub connections: usize,
    /// `standalone`, or an ensemble member's `leader`/`follower`/`observer`/`looking`.
    pub mode: &'static str,
    /// On an ensemble's leader: the byte sizes of the last, smallest and largest entry it
    /// proposed (-1 before the first), which ZooKeeper's leader adds to `srvr`/`stat`.
    pub proposal_sizes: Option<ProposalSizes>,
}

/// Byte sizes of the txns a leader proposed: last, smallest, largest; -1 until the first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProposalSizes {
    pub last: i64,
    pub min: i64,
    pub max: i64,
}

impl Default for ProposalSizes {
    fn default() -> Self {
        ProposalSizes {
            last: -1,
            min: -1,
            max: -1,
        }
    }
}

impl ProposalSizes {
    pub fn record(&mut self, bytes: usize) {
        let bytes = bytes as i64;
        self.last = bytes;
        self.min = if self.min < 0 {
            bytes
        } else {
            self.min.min(bytes)
        };
        self.max = self.max.max(bytes);
    }
}

fn server_stats_block(s: &ServerSummary) -> String {
    let mut out = format!(
        "Latency min/avg/max: {}/{}/{}\nReceived: {}\nSent: {}\nConnections: {}\nOutstanding: {}\nZxid: 0x{:x}\nMode: {}\nNode count: {}\n",
        s.latency.min_ms(),
        java_double(s.latency.avg_ms()),
        s.latency.max_ms(),
        s.stats.packets_received,
        s.stats.packets_sent,
        s.connections,
        s.stats.outstanding_requests,
        s.stats.last_zxid,
        s.mode,
        reported_znode_count(&s.stats)
    );
    if let Some(p) = s.proposal_sizes {
        out.push_str(&format!(
            "Proposal sizes last/min/max: {}/{}/{}\n",
            p.last, p.min, p.max
        ));
    }
    out
}

/// The znode count `srvr`/`stat`/`mntr` report: one more than the tree holds. ZooKeeper's
/// node map keeps the root under both "" and "/", and its count includes both; tools compare
/// this figure across servers and against ZooKeeper, so Corral reports the same number while
/// its own counts stay exact.
pub fn reported_znode_count(stats: &CoreStats) -> u64 {
    stats.znode_count + 1
}

pub fn srvr(s: &ServerSummary) -> String {
    format!(
        "Zookeeper version: {}\n{}",
        s.version,
        server_stats_block(s)
    )
}

pub fn stat(s: &ServerSummary, conns: &[ConnLine]) -> String {
    let mut out = format!("Zookeeper version: {}\nClients:\n", s.version);
    for c in conns {
        out.push_str(&connection_info(c, true));
        out.push('\n');
    }
    out.push('\n');
    out.push_str(&server_stats_block(s));
    out
}

pub fn cons(conns: &[ConnLine]) -> String {
    let mut out = String::new();
    for c in conns {
        out.push_str(&connection_info(c, false));
        out.push('\n');
    }
    out.push('\n');
    out
}

/// Sizes of the data directories, for `conf` and `dirs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DirSizes {
    pub data_dir_bytes: u64,
    pub log_dir_bytes: u64,
}

/// `conf`. In an ensemble ZooKeeper's quorum server appends the quorum settings and the
/// membership (`QuorumZooKeeperServer.dumpConf`); that text ends with `version=<hex>` and no
/// newline, as ZooKeeper prints it.
pub fn conf(cfg: &ServerConfig, client_port: u16, dirs: DirSizes) -> String {
    let abs = |p: &std::path::Path| {
        std::path::absolute(p)
            .unwrap_or_else(|_| p.to_path_buf())
            .display()
            .to_string()
    };
    let server_id = cfg.ensemble.as_ref().map_or(0, |e| e.my_id);
    let mut out = format!(
        "clientPort={client_port}\nsecureClientPort=-1\ndataDir={}\ndataDirSize={}\ndataLogDir={}\ndataLogSize={}\ntickTime={}\nmaxClientCnxns={}\nminSessionTimeout={}\nmaxSessionTimeout={}\nclientPortListenBacklog=-1\nserverId={server_id}\n",
        abs(&cfg.data_dir),
        dirs.data_dir_bytes,
        abs(cfg.data_log_dir()),
        dirs.log_dir_bytes,
        cfg.tick_time_ms,
        cfg.max_client_cnxns,
        cfg.min_session_timeout_ms(),
        cfg.max_session_timeout_ms()
    );
    if let Some(ensemble) = &cfg.ensemble {
        let me = ensemble.me();
        // electionAlg is always 3 (the only one ZooKeeper 3.8 has); peerType is the
        // ordinal of ZooKeeper's LearnerType (0 participant, 1 observer).
        let _ = write!(
            out,
            "initLimit={}\nsyncLimit={}\nelectionAlg=3\nelectionPort={}\nquorumPort={}\npeerType={}\nmembership: \n{}",
            ensemble.init_limit,
            ensemble.sync_limit,
            me.election_port,
            me.peer_port,
            me.role.zk_ordinal(),
            ensemble.zk_config_text()
        );
    }
    out
}

pub fn dirs(dirs: DirSizes) -> String {
    format!(
        "datadir_size: {}\nlogdir_size: {}\n",
        dirs.data_dir_bytes, dirs.log_dir_bytes
    )
}

/// `envi`: ZooKeeper lists JVM properties; Corral lists the ones that have a meaning for a
/// native process, under the same keys.
pub fn envi(entries: &[(String, String)]) -> String {
    let mut out = String::from("Environment:\n");
    for (k, v) in entries {
        let _ = writeln!(out, "{k}={v}");
    }
    out
}

/// The environment `envi` reports for this process: ZooKeeper's keys in ZooKeeper's order
/// (scripts look keys up by name, some by position). The `java.*` keys describe a JVM that
/// does not exist here; they say so (`<NA>` is ZooKeeper's own "not available") or carry the
/// native equivalent where there is one (temp dir, library path).
pub fn process_environment() -> Vec<(String, String)> {
    const NA: &str = "<NA>";
    let var = |k: &str| std::env::var(k).unwrap_or_else(|_| NA.into());
    let proc_line = |path: &str| {
        std::fs::read_to_string(path)
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| NA.into())
    };
    let cwd = std::env::current_dir()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| NA.into());
    let mb = |bytes: Option<u64>| bytes.map_or_else(|| NA.into(), |b| format!("{}MB", b >> 20));
    let memory = MemoryFigures::read();
    vec![
        ("zookeeper.version".into(), full_version()),
        ("host.name".into(), proc_line("/proc/sys/kernel/hostname")),
        (
            "java.version".into(),
            "<NA> (native process, not a JVM)".into(),
        ),
        ("java.vendor".into(), NA.into()),
        ("java.home".into(), NA.into()),
        ("java.class.path".into(), NA.into()),
        ("java.library.path".into(), var("LD_LIBRARY_PATH")),
        (
            "java.io.tmpdir".into(),
            std::env::temp_dir().display().to_string(),
        ),
        ("java.compiler".into(), NA.into()),
        ("os.name".into(), capitalize(std::env::consts::OS)),
        ("os.arch".into(), java_arch(std::env::consts::ARCH).into()),
        ("os.version".into(), proc_line("/proc/sys/kernel/osrelease")),
        ("user.name".into(), var("USER")),
        ("user.home".into(), var("HOME")),
        ("user.dir".into(), cwd),
        ("os.memory.free".into(), mb(memory.free_bytes)),
        ("os.memory.max".into(), mb(memory.max_bytes)),
        ("os.memory.total".into(), mb(memory.total_bytes)),
    ]
}

/// The native counterparts of the JVM heap figures `envi` prints as `os.memory.*`: the JVM's
/// "total" is memory it holds, "max" what it may grow to, "free" what it can still use.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct MemoryFigures {
    /// Memory the machine can still hand out (`MemAvailable`).
    free_bytes: Option<u64>,
    /// Physical memory (`MemTotal`): a native process has no heap ceiling of its own.
    max_bytes: Option<u64>,
    /// This process's resident memory (`VmRSS`).
    total_bytes: Option<u64>,
}

impl MemoryFigures {
    fn read() -> MemoryFigures {
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        MemoryFigures {
            free_bytes: kib_field(&meminfo, "MemAvailable:"),
            max_bytes: kib_field(&meminfo, "MemTotal:"),
            total_bytes: kib_field(&status, "VmRSS:"),
        }
    }
}

/// A `Key:   123 kB` line of a /proc file, in bytes.
fn kib_field(text: &str, key: &str) -> Option<u64> {
    let line = text.lines().find_map(|l| l.strip_prefix(key))?;
    let kib: u64 = line.split_whitespace().next()?.parse().ok()?;
    Some(kib * 1024)
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

/// The JVM calls x86_64 `amd64`; keep its vocabulary so `envi` consumers see familiar values.
fn java_arch(arch: &str) -> &str {
    match arch {
        "x86_64" => "amd64",
        "aarch64" => "aarch64",
        other => other,
    }
}

/// Process-level numbers `mntr` reports beside the core's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ProcessFigures {
    pub uptime_ms: i64,
    pub open_fds: Option<u64>,
    pub max_fds: Option<u64>,
}

/// `mntr`: one `zk_<key>\t<value>` line each. ZooKeeper emits a few hundred metrics; these
/// are the ones monitoring tools actually read (and Corral can fill with real values).
pub fn mntr(s: &ServerSummary, p: ProcessFigures) -> String {
    let st = &s.stats;
    let mut lines: Vec<(&str, String)> = vec![
        ("version", s.version.clone()),
        ("server_state", s.mode.into()),
        ("ephemerals_count", st.ephemerals_count.to_string()),
        ("num_alive_connections", s.connections.to_string()),
        ("avg_latency", java_double(s.latency.avg_ms())),
        ("outstanding_requests", st.outstanding_requests.to_string()),
        ("znode_count", reported_znode_count(st).to_string()),
        ("global_sessions", st.session_count.to_string()),
        ("packets_sent", st.packets_sent.to_string()),
        ("packets_received", st.packets_received.to_string()),
        ("watch_count", st.watch_count.to_string()),
        ("min_latency", s.latency.min_ms().to_string()),
        ("max_latency", s.latency.max_ms().to_string()),
        (
            "approximate_data_size",
            st.approximate_data_size.to_string(),
        ),
        ("local_sessions", "0".into()),
        ("uptime", p.uptime_ms.to_string()),
    ];
    if let Some(n) = p.max_fds {
        lines.push(("max_file_descriptor_count", n.to_string()));
    }
    if let Some(n) = p.open_fds {
        lines.push(("open_file_descriptor_count", n.to_string()));
    }
    let mut out = String::new();
    for (k, v) in lines {
        let _ = writeln!(out, "zk_{k}\t{v}");
    }
    out
}

/// `wchs`: counts only.
pub fn wchs(by_conn: &[WatchesByConn], watched_paths: u64) -> String {
    let total: usize = by_conn.iter().map(|w| w.paths.len()).sum();
    format!(
        "{} connections watching {} paths\nTotal watches:{}\n",
        by_conn.len(),
        watched_paths,
        total
    )
}

/// `wchc`: each connection's session, then its watched paths.
pub fn wchc(by_conn: &[WatchesByConn]) -> String {
    let mut out = String::new();
    for w in by_conn {
        let _ = writeln!(out, "0x{:x}", w.session_id);
        for p in &w.paths {
            let _ = writeln!(out, "\t{p}");
        }
    }
    out.push('\n');
    out
}

/// `wchp`: each watched path, then the sessions watching it.
pub fn wchp(by_path: &[(String, Vec<SessionId>)]) -> String {
    let mut out = String::new();
    for (path, sessions) in by_path {
        let _ = writeln!(out, "{path}");
        for s in sessions {
            let _ = writeln!(out, "\t0x{s:x}");
        }
    }
    out.push('\n');
    out
}

/// A connection as `dump` lists it under "Connections dump".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DumpConn {
    pub peer: SocketAddr,
    pub session_id: SessionId,
    pub expire_at_ms: i64,
}

/// `dump`: sessions grouped by expiry time, sessions' ephemeral nodes, connections grouped by
/// expiry time. Expiry times are rounded up to the next tick, as ZooKeeper's expiry queues do.
pub fn dump(sessions: &[(SessionInfo, i64)], conns: &[DumpConn], tick_time_ms: i64) -> String {
    let mut out = String::from("SessionTracker dump:\nSession ");
    let session_groups = group_by_expiry(sessions.iter().map(|(s, at)| {
        (
            round_to_tick(*at, tick_time_ms),
            format!("0x{:x}", s.session_id),
        )
    }));
    write_expiry_groups(&mut out, &session_groups, sessions.len());
    out.push_str("ephemeral nodes dump:\n");
    let with_ephemerals: Vec<&SessionInfo> = sessions
        .iter()
        .map(|(s, _)| s)
        .filter(|s| !s.ephemerals.is_empty())
        .collect();
    let _ = writeln!(out, "Sessions with Ephemerals ({}):", with_ephemerals.len());
    for s in with_ephemerals {
        let _ = writeln!(out, "0x{:x}:", s.session_id);
        for p in &s.ephemerals {
            let _ = writeln!(out, "\t{p}");
        }
    }
    out.push_str("Connections dump:\nConnections ");
    let conn_groups = group_by_expiry(conns.iter().map(|c| {
        (
            round_to_tick(c.expire_at_ms, tick_time_ms),
            format!("ip: {} sessionId: 0x{:x}", java_addr(&c.peer), c.session_id),
        )
    }));
    write_expiry_groups(&mut out, &conn_groups, conns.len());
    out
}

fn round_to_tick(at_ms: i64, tick_ms: i64) -> i64 {
    if tick_ms <= 0 {
        return at_ms;
    }
    (at_ms / tick_ms + 1) * tick_ms
}

fn group_by_expiry(items: impl Iterator<Item = (i64, String)>) -> Vec<(i64, Vec<String>)> {
    let mut map: std::collections::BTreeMap<i64, Vec<String>> = Default::default();
    for (at, line) in items {
        map.entry(at).or_default().push(line);
    }
    map.into_iter().collect()
}

fn write_expiry_groups(out: &mut String, groups: &[(i64, Vec<String>)], elements: usize) {
    let _ = writeln!(out, "Sets ({})/({}):", groups.len(), elements);
    for (at, lines) in groups {
        let _ = writeln!(out, "{} expire at {}:", lines.len(), java_date_utc(*at));
        for l in lines {
            let _ = writeln!(out, "\t{l}");
        }
    }
}

/// Java's `Date.toString()` in UTC: `Sun Nov 22 22:55:52 UTC 2026`.
pub fn java_date_utc(epoch_ms: i64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let secs = epoch_ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{} {} {:02} {:02}:{:02}:{:02} UTC {}",
        DAYS[days.rem_euclid(7) as usize],
        MONTHS[(m - 1) as usize],
        d,
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        y
    )
}

/// Days since 1970-01-01 to (year, month 1-12, day 1-31) in the proleptic Gregorian calendar.
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Open and maximum file descriptors of this process, from /proc (Linux only).
pub fn file_descriptors() -> (Option<u64>, Option<u64>) {
    let open = std::fs::read_dir("/proc/self/fd")
        .ok()
        .map(|d| d.count() as u64);
    let max = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3))
                .and_then(|v| v.parse().ok())
        });
    (open, max)
}

/// Total size of the regular files under `dir` and its subdirectories. Walked with an
/// explicit stack (a deep tree does not grow the call stack); symbolic links are not
/// followed. Blocking file-system work: call it off the driver task.
pub fn dir_size_bytes(dir: &std::path::Path) -> u64 {
    let mut total = 0;
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            match entry.metadata() {
                Ok(m) if m.is_dir() => pending.push(entry.path()),
                Ok(m) => total += m.len(),
                Err(_) => {}
            }
        }
    }
    total
}

impl DirSizes {
    /// Walks both directories (blocking: call it off the driver task).
    pub fn measure(data_dir: &std::path::Path, log_dir: &std::path::Path) -> DirSizes {
        DirSizes {
            data_dir_bytes: dir_size_bytes(data_dir),
            log_dir_bytes: dir_size_bytes(log_dir),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary() -> ServerSummary {
        ServerSummary {
            version: "3.8.4-corral-0.1.0, built on 1970-01-01 00:00 UTC".into(),
            stats: CoreStats {
                znode_count: 4,
                last_zxid: 0x1a,
                packets_received: 3,
                packets_sent: 2,
                ..CoreStats::default()
            },
            latency: LatencyStats::default(),
            connections: 1,
            mode: "standalone",
            proposal_sizes: None,
        }
    }

    fn asker() -> ConnLine {
        ConnLine {
            peer: "127.0.0.1:35828".parse().unwrap(),
            interest_ops: 0,
            queued: 0,
            received: 1,
            sent: 0,
            session: None,
        }
    }

    #[test]
    fn version_line_is_parseable_like_zookeepers() {
        let v = full_version();
        assert!(v.starts_with("3.8.4-corral-"), "{v}");
        assert!(v.contains(", built on "), "{v}");
    }

    #[test]
    fn srvr_layout() {
        assert_eq!(
            srvr(&summary()),
            "Zookeeper version: 3.8.4-corral-0.1.0, built on 1970-01-01 00:00 UTC\n\
             Latency min/avg/max: 0/0.0/0\nReceived: 3\nSent: 2\nConnections: 1\n\
             Outstanding: 0\nZxid: 0x1a\nMode: standalone\nNode count: 5\n"
        );
    }

    #[test]
    fn stat_lists_clients_then_stats() {
        assert_eq!(
            stat(&summary(), &[asker()]),
            "Zookeeper version: 3.8.4-corral-0.1.0, built on 1970-01-01 00:00 UTC\n\
             Clients:\n /127.0.0.1:35828[0](queued=0,recved=1,sent=0)\n\n\
             Latency min/avg/max: 0/0.0/0\nReceived: 3\nSent: 2\nConnections: 1\n\
             Outstanding: 0\nZxid: 0x1a\nMode: standalone\nNode count: 5\n"
        );
    }

    #[test]
    fn cons_long_form_has_session_details() {
        let mut latency = LatencyStats::default();
        latency.record(1);
        latency.record(4);
        let c = ConnLine {
            peer: "127.0.0.1:40000".parse().unwrap(),
            interest_ops: 1,
            queued: 0,
            received: 7,
            sent: 6,
            session: Some(ConnSessionLine {
                session_id: 0x1000abc,
                last_op: "GETD",
                established_ms: 1_700_000_000_000,
                timeout_ms: 30000,
                last_cxid: 5,
                last_zxid: -1,
                last_response_ms: 1_700_000_000_123,
                last_latency_ms: 4,
                latency,
            }),
        };
        assert_eq!(
            cons(&[c, asker()]),
            " /127.0.0.1:40000[1](queued=0,recved=7,sent=6,sid=0x1000abc,lop=GETD,\
             est=1700000000000,to=30000,lcxid=0x5,lzxid=0xffffffffffffffff,\
             lresp=1700000000123,llat=4,minlat=1,avglat=2,maxlat=4)\n\
             \x20/127.0.0.1:35828[0](queued=0,recved=1,sent=0)\n\n"
        );
    }

    #[test]
    fn latency_averages_round_like_zookeeper() {
        let mut l = LatencyStats::default();
        assert_eq!((l.min_ms(), l.avg_ms(), l.max_ms()), (0, 0.0, 0));
        for v in [1, 1, 2] {
            l.record(v);
        }
        assert_eq!(java_double(l.avg_ms()), "1.3333");
        assert_eq!(l.avg_ms_truncated(), 1);
        l.reset();
        assert_eq!(l.count(), 0);
    }

    #[test]
    fn java_double_forms() {
        assert_eq!(java_double(0.0), "0.0");
        assert_eq!(java_double(2.0), "2.0");
        assert_eq!(java_double(0.5), "0.5");
        assert_eq!(java_double(12345678.0), "1.2345678E7");
        assert_eq!(java_double(0.0001), "1.0E-4");
    }

    #[test]
    fn watch_dumps() {
        let w = vec![
            WatchesByConn {
                conn: 1,
                session_id: 0x10,
                paths: vec!["/a".into(), "/b".into()],
            },
            WatchesByConn {
                conn: 2,
                session_id: 0x20,
                paths: vec!["/a".into()],
            },
        ];
        assert_eq!(
            wchs(&w, 2),
            "2 connections watching 2 paths\nTotal watches:3\n"
        );
        assert_eq!(
            wchs(&[], 0),
            "0 connections watching 0 paths\nTotal watches:0\n"
        );
        assert_eq!(wchc(&w), "0x10\n\t/a\n\t/b\n0x20\n\t/a\n\n");
        assert_eq!(wchc(&[]), "\n");
        let p = vec![
            ("/a".to_string(), vec![0x10, 0x20]),
            ("/b".to_string(), vec![0x10]),
        ];
        assert_eq!(wchp(&p), "/a\n\t0x10\n\t0x20\n/b\n\t0x10\n\n");
    }

    #[test]
    fn dump_groups_by_expiry_tick() {
        let s = |id, eph: &[&str]| SessionInfo {
            session_id: id,
            timeout_ms: 4000,
            expires_at_ms: 0,
            ephemerals: eph.iter().map(|e| e.to_string()).collect(),
            conn: None,
        };
        let sessions = vec![
            (s(0x1, &["/e1"]), 10_100),
            (s(0x2, &[]), 10_900),
            (s(0x3, &[]), 13_000),
        ];
        let conns = vec![DumpConn {
            peer: "127.0.0.1:5000".parse().unwrap(),
            session_id: 0,
            expire_at_ms: 10_500,
        }];
        assert_eq!(
            dump(&sessions, &conns, 2000),
            "SessionTracker dump:\nSession Sets (2)/(3):\n\
             2 expire at Thu Jan 01 00:00:12 UTC 1970:\n\t0x1\n\t0x2\n\
             1 expire at Thu Jan 01 00:00:14 UTC 1970:\n\t0x3\n\
             ephemeral nodes dump:\nSessions with Ephemerals (1):\n0x1:\n\t/e1\n\
             Connections dump:\nConnections Sets (1)/(1):\n\
             1 expire at Thu Jan 01 00:00:12 UTC 1970:\n\tip: /127.0.0.1:5000 sessionId: 0x0\n"
        );
    }

    #[test]
    fn java_dates() {
        assert_eq!(java_date_utc(0), "Thu Jan 01 00:00:00 UTC 1970");
        // 2026-11-22 22:55:52 UTC was a Sunday.
        assert_eq!(
            java_date_utc(1_795_388_152_000),
            "Sun Nov 22 22:55:52 UTC 2026"
        );
        assert_eq!(
            java_date_utc(951_782_400_000),
            "Tue Feb 29 00:00:00 UTC 2000"
        );
    }

    #[test]
    fn conf_and_dirs() {
        let cfg = ServerConfig {
            data_dir: "/srv/zk".into(),
            max_client_cnxns: 10,
            ..ServerConfig::default()
        };
        let sizes = DirSizes {
            data_dir_bytes: 457,
            log_dir_bytes: 457,
        };
        assert_eq!(
            conf(&cfg, 2181, sizes),
            "clientPort=2181\nsecureClientPort=-1\ndataDir=/srv/zk\ndataDirSize=457\n\
             dataLogDir=/srv/zk\ndataLogSize=457\ntickTime=2000\nmaxClientCnxns=10\n\
             minSessionTimeout=4000\nmaxSessionTimeout=40000\nclientPortListenBacklog=-1\nserverId=0\n"
        );
        assert_eq!(dirs(sizes), "datadir_size: 457\nlogdir_size: 457\n");
    }

    #[test]
    fn conf_in_an_ensemble_adds_the_quorum_lines() {
        let overrides = crate::config::ConfigOverrides {
            my_id: Some(3),
            data_dir: None,
        };
        let cfg = ServerConfig::parse_with(
            "dataDir=/srv/zk\ninitLimit=10\nsyncLimit=5\n\
             server.1=a:2888:3888;2181\nserver.2=b:2888:3888;2181\n\
             server.3=c:2890:3890:observer;2181\n",
            &overrides,
        )
        .unwrap();
        let sizes = DirSizes::default();
        // QuorumZooKeeperServer.dumpConf: serverId is myid, peerType is the LearnerType
        // ordinal, and the membership text ends without a newline.
        assert_eq!(
            conf(&cfg, 2181, sizes),
            "clientPort=2181\nsecureClientPort=-1\ndataDir=/srv/zk\ndataDirSize=0\n\
             dataLogDir=/srv/zk\ndataLogSize=0\ntickTime=2000\nmaxClientCnxns=60\n\
             minSessionTimeout=4000\nmaxSessionTimeout=40000\nclientPortListenBacklog=-1\nserverId=3\n\
             initLimit=10\nsyncLimit=5\nelectionAlg=3\nelectionPort=3890\nquorumPort=2890\npeerType=1\n\
             membership: \n\
             server.1=a:2888:3888:participant;0.0.0.0:2181\n\
             server.2=b:2888:3888:participant;0.0.0.0:2181\n\
             server.3=c:2890:3890:observer;0.0.0.0:2181\n\
             version=0"
        );
    }

    #[test]
    fn mntr_lines_are_tab_separated() {
        let out = mntr(
            &summary(),
            ProcessFigures {
                uptime_ms: 42,
                open_fds: Some(9),
                max_fds: Some(1024),
            },
        );
        assert!(out.starts_with("zk_version\t3.8.4-corral-"), "{out}");
        assert!(out.contains("\nzk_server_state\tstandalone\n"));
        assert!(out.contains("\nzk_znode_count\t5\n"));
        assert!(out.contains("\nzk_avg_latency\t0.0\n"));
        assert!(out.contains("\nzk_uptime\t42\n"));
        assert!(out.contains("\nzk_open_file_descriptor_count\t9\n"));
        for line in out.lines() {
            let (k, v) = line.split_once('\t').expect(line);
            assert!(k.starts_with("zk_") && !v.is_empty(), "{line}");
        }
    }

    #[test]
    fn refusal_text_matches_zookeeper() {
        assert_eq!(
            refusal("dump"),
            "dump is not executed because it is not in the whitelist.\n"
        );
    }
}
