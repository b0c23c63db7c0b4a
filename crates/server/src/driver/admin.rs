//! The driver's answers to the AdminServer and the Prometheus endpoint ([`crate::admin`]).
//!
//! Field names and JSON types follow ZooKeeper 3.8's AdminServer (`Commands.java`): tools
//! that read ZooKeeper's JSON read these unchanged. Where ZooKeeper reports a figure Corral
//! has no counterpart for, the field keeps ZooKeeper's own "nothing measured" value (`-1`
//! for the client response sizes, `0` for counters of features Corral lacks); docs/metrics.md
//! lists them.

use std::sync::atomic::Ordering;

use serde_json::{json, Map, Value};

use super::{Answer, Driver};
use crate::admin::metrics::{SummaryFigures, ADVANCED_QUANTILES};
use crate::admin::{AdminAnswer, AdminQuery, EnsembleMetrics, LeaderMetrics, MetricsSnapshot};
use crate::consensus::MemberState;
use crate::four_letter::{self as flw, ConnLine};

type Fields = Map<String, Value>;

/// The part of a command's fields that reads the file system; it runs off the driver.
type FilePart = Box<dyn FnOnce(&mut Fields) + Send>;

fn file_part(fill: impl FnOnce(&mut Fields) + Send + 'static) -> Option<FilePart> {
    Some(Box::new(fill))
}

/// ZooKeeper's common fields, last: `error` is null unless the command set one.
fn finish_command(name: &str, mut fields: Fields) -> AdminAnswer {
    fields.insert("command".into(), name.into());
    fields.entry("error").or_insert(Value::Null);
    AdminAnswer::Json(fields)
}

/// Fills in the descriptor counts of a metrics snapshot (a listing of /proc/self/fd).
fn with_descriptors(mut snapshot: MetricsSnapshot) -> MetricsSnapshot {
    (snapshot.open_fds, snapshot.max_fds) = flw::file_descriptors();
    snapshot
}

impl Driver {
    /// The answer to an admin query; what reads the file system (directory sizes, snapshot
    /// files, /proc) is left to [`Answer::Later`].
    pub(super) fn answer_admin(&mut self, query: AdminQuery, now: i64) -> Answer<AdminAnswer> {
        match query {
            AdminQuery::Ready => Answer::Now(AdminAnswer::Ready(
                self.ensemble.as_ref().is_none_or(|e| e.serving()),
            )),
            AdminQuery::Metrics => {
                let snapshot = self.metrics_snapshot(now);
                Answer::later(move || AdminAnswer::Metrics(Box::new(with_descriptors(snapshot))))
            }
            AdminQuery::Members => Answer::Now(AdminAnswer::Json(self.members_json())),
            AdminQuery::Command(name) => {
                let (mut fields, later) = self.admin_command(name, now);
                match later {
                    None => Answer::Now(finish_command(name, fields)),
                    Some(fill) => Answer::later(move || {
                        fill(&mut fields);
                        finish_command(name, fields)
                    }),
                }
            }
        }
    }

    /// The driver's figures; the descriptor counts are left `None` (see [`with_descriptors`]).
    fn metrics_snapshot(&self, now: i64) -> MetricsSnapshot {
        let stats = self.core.stats();
        let (open_fds, max_fds) = (None, None);
        MetricsSnapshot {
            znode_count: flw::reported_znode_count(&stats),
            watch_count: stats.watch_count,
            ephemerals_count: stats.ephemerals_count,
            approximate_data_size_bytes: stats.approximate_data_size,
            global_sessions: stats.session_count,
            alive_connections: self.conns.len() as u64,
            outstanding_requests: self.outstanding_requests(),
            packets_received: stats.packets_received,
            packets_sent: stats.packets_sent,
            avg_latency_ms: self.latency.avg_ms(),
            min_latency_ms: self.latency.min_ms(),
            max_latency_ms: self.latency.max_ms(),
            uptime_ms: now - self.started_ms,
            open_fds,
            max_fds,
            queued_reply_bytes: self
                .conns
                .values()
                .map(|c| c.handle.queued_bytes.load(Ordering::Relaxed) as u64)
                .sum(),
            replay_window_changes: stats.replay_window_changes,
            read_latency: self.kind_latency.read.figures(ADVANCED_QUANTILES),
            update_latency: self.kind_latency.update.figures(ADVANCED_QUANTILES),
            fsync_time: self.timings.fsync_figures(),
            snapshot_time: self.timings.snapshot_figures(),
            ensemble: self.ensemble.as_ref().map(|e| {
                // Live: replication moves without role changes, which are all the driver's
                // copy of the status follows.
                let status = &e.consensus.status();
                let leader = (status.state == MemberState::Leader).then(|| {
                    let (learners, synced, _) = self.learner_figures().unwrap_or((0, 0, 0));
                    let last = status.last_log_index.unwrap_or(0);
                    LeaderMetrics {
                        uptime_ms: e.leader_uptime_ms().unwrap_or(0),
                        learners: learners as u64,
                        synced_followers: synced as u64,
                        log_lag_entries: status
                            .replication
                            .iter()
                            .map(|(id, matched)| (*id, last.saturating_sub(matched.unwrap_or(0))))
                            .collect(),
                    }
                });
                EnsembleMetrics {
                    quorum_size: status.voters.len() as u64,
                    election_time: e.election_time_figures(),
                    leader,
                    late_answers: e.consensus.late_answers(),
                }
            }),
        }
    }

    /// `{"members": [...]}`: every member of the current configuration (participants and
    /// observers, as the consensus layer last reported it; the configuration file before
    /// that) with its role, this member's last zxid, and, on the leader, how many log
    /// entries each member is behind. Other members' zxids are not known here.
    fn members_json(&self) -> Fields {
        let mut f = Fields::new();
        let (Some(e), Some(cfg)) = (&self.ensemble, &self.config.ensemble) else {
            f.insert("members".into(), json!([]));
            return f;
        };
        // The live status: the driver's copy is only refreshed on role changes, so it misses
        // learners added later and every replication step.
        let status = &e.consensus.status();
        // Members the consensus layer knows first (voters, then observers as its learners),
        // then configured members it has not added yet (an observer until the leader adds
        // it), so the first of each id wins.
        let mut ids: Vec<(u64, bool)> = status
            .voters
            .iter()
            .map(|id| (*id, false))
            .chain(status.learners.iter().map(|id| (*id, true)))
            .chain(
                cfg.members
                    .iter()
                    .map(|m| (m.id, m.role == crate::ensemble_config::MemberRole::Observer)),
            )
            .collect();
        let mut seen = std::collections::BTreeSet::new();
        ids.retain(|(id, _)| seen.insert(*id));
        ids.sort_unstable();
        let last_index = status.last_log_index.unwrap_or(0);
        let leading = status.state == MemberState::Leader;
        let members: Vec<Value> = ids
            .into_iter()
            .map(|(id, observer)| {
                let me = id == cfg.my_id;
                let role = if me {
                    status.state.zk_mode()
                } else if status.leader == Some(id) {
                    "leader"
                } else if observer {
                    "observer"
                } else {
                    "follower"
                };
                let address = cfg
                    .members
                    .iter()
                    .find(|m| m.id == id)
                    .map(|m| format!("{}:{}", m.host, m.peer_port));
                let lag = if !leading {
                    None
                } else if me {
                    Some(0)
                } else {
                    status
                        .replication
                        .get(&id)
                        .map(|matched| last_index.saturating_sub(matched.unwrap_or(0)))
                };
                // Where its clients (and `srvr`) reach it: the line's client part, else the
                // host with this server's clientPort (ZooKeeper's one-port-for-all form).
                let client_address =
                    cfg.members
                        .iter()
                        .find(|m| m.id == id)
                        .map(|m| match m.client_addr {
                            Some(a) if !a.ip().is_unspecified() => a.to_string(),
                            Some(a) => format!("{}:{}", m.host, a.port()),
                            None => format!("{}:{}", m.host, self.client_port),
                        });
                json!({
                    "id": id,
                    "address": address,
                    "client_address": client_address,
                    "role": role,
                    "self": me,
                    "zxid": me.then(|| format!("0x{:x}", self.core.last_zxid())),
                    "lag_entries": lag,
                })
            })
            .collect();
        f.insert("members".into(), members.into());
        f
    }

    /// A command's fields, and the part of them to fill off the driver, if any.
    fn admin_command(&mut self, name: &str, now: i64) -> (Fields, Option<FilePart>) {
        let mut f = Fields::new();
        let mut later = None;
        match name {
            "ruok" | "hash" => {
                if name == "hash" {
                    // ZooKeeper's digest log; Corral keeps no tree digests, so it is empty, as
                    // ZooKeeper's is with digests disabled.
                    f.insert("digests".into(), json!([]));
                }
            }
            "server_stats" => later = self.server_stats(&mut f, now),
            "stats" => {
                later = self.server_stats(&mut f, now);
                f.insert("connections".into(), self.connections_json());
                f.insert("secure_connections".into(), json!([]));
            }
            "connections" => {
                f.insert("connections".into(), self.connections_json());
                f.insert("secure_connections".into(), json!([]));
            }
            "monitor" => later = self.monitor(&mut f, now),
            "configuration" => self.configuration(&mut f),
            "dirs" => {
                let sizes = self.dir_sizes_later();
                later = file_part(move |f| {
                    let d = sizes();
                    f.insert("datadir_size".into(), d.data_dir_bytes.into());
                    f.insert("logdir_size".into(), d.log_dir_bytes.into());
                });
            }
            "environment" => {
                later = file_part(|f| {
                    for (k, v) in flw::process_environment() {
                        f.insert(k, v.into());
                    }
                });
            }
            "dump" => self.dump_json(&mut f),
            "watch_summary" => {
                let by_conn = self.core.watches_by_connection();
                let total: usize = by_conn.iter().map(|w| w.paths.len()).sum();
                f.insert("num_connections".into(), by_conn.len().into());
                f.insert("num_paths".into(), self.core.stats().watched_paths.into());
                f.insert("num_total_watches".into(), total.into());
            }
            "watches" => {
                let mut map = Fields::new();
                for w in self.core.watches_by_connection() {
                    map.insert(w.session_id.to_string(), json!(w.paths));
                }
                f.insert("session_id_to_watched_paths".into(), map.into());
            }
            "watches_by_path" => {
                let mut map = Fields::new();
                for (path, sessions) in self.core.watches_by_path() {
                    map.insert(path, json!(sessions));
                }
                f.insert("path_to_session_ids".into(), map.into());
            }
            "is_read_only" => {
                let read_only = self.core.role() == crate::core::Role::ReadOnly;
                f.insert("read_only".into(), read_only.into());
            }
            "initial_configuration" => {
                f.insert(
                    "initial_configuration".into(),
                    self.config.initial_config.clone().into(),
                );
            }
            "stat_reset" => {
                self.core.reset_stats();
                self.latency.reset();
            }
            "connection_stat_reset" => {
                for c in self.conns.values_mut() {
                    c.reset_stats();
                }
            }
            "last_snapshot" => {
                // The newest snapshot on disk: zxid in hex, file time in seconds; ZooKeeper's
                // "none" is zxid -1 printed as an unsigned hex long.
                let config = self.config.clone();
                later = file_part(move |f| {
                    let (zxid, secs) = newest_snapshot(&config.data_dir).unwrap_or((-1, -1));
                    f.insert("zxid".into(), format!("{:x}", zxid as u64).into());
                    f.insert("timestamp".into(), secs.into());
                });
            }
            "leader" => self.leader_json(&mut f),
            "voting_view" => {
                let mut view = Fields::new();
                if let Some(cfg) = &self.config.ensemble {
                    for m in cfg.voters() {
                        view.insert(
                            m.id.to_string(),
                            json!({
                                "serverAddresses": [format!("{}:{}", m.host, m.peer_port)],
                                "electionAddresses": [format!("{}:{}", m.host, m.election_port)],
                                "clientAddress": m.client_addr.map_or_else(String::new, |a| a.to_string()),
                                "learnerType": "participant",
                            }),
                        );
                    }
                }
                f.insert("current_config".into(), view.into());
            }
            "observers" => {
                // Observers connected to this leader; members that are not leading have none.
                let mut observers = Vec::new();
                if let (Some(e), Some(cfg)) = (&self.ensemble, &self.config.ensemble) {
                    // Live: replication moves without role changes.
                    let status = e.consensus.status();
                    if status.state == MemberState::Leader {
                        for m in cfg.observers() {
                            if status.replication.get(&m.id).is_some_and(|r| r.is_some()) {
                                observers.push(json!(m.id.to_string()));
                            }
                        }
                    }
                }
                f.insert("synced_observers".into(), observers.len().into());
                f.insert("observers".into(), observers.into());
            }
            _ => {
                f.insert("error".into(), format!("Unknown command: {name}").into());
            }
        }
        (f, later)
    }

    /// Fills `f`; the directory sizes are measured by the returned part (0 until it runs).
    fn server_stats(&self, f: &mut Fields, now: i64) -> Option<FilePart> {
        let summary = self.summary();
        let st = &summary.stats;
        let dirs = flw::DirSizes::default();
        // Corral does not measure reply buffer sizes: -1 is ZooKeeper's "none measured".
        let client_response = json!({
            "last_buffer_size": -1,
            "min_buffer_size": -1,
            "max_buffer_size": -1,
        });
        f.insert("version".into(), summary.version.clone().into());
        f.insert("read_only".into(), false.into());
        f.insert(
            "server_stats".into(),
            json!({
                "packets_sent": st.packets_sent,
                "packets_received": st.packets_received,
                "fsync_threshold_exceed_count": 0,
                "client_response_stats": client_response,
                "data_dir_size": dirs.data_dir_bytes,
                "log_dir_size": dirs.log_dir_bytes,
                "provider_null": false,
                "server_state": summary.mode,
                "last_processed_zxid": st.last_zxid,
                "outstanding_requests": self.outstanding_requests(),
                "avg_latency": summary.latency.avg_ms(),
                "max_latency": summary.latency.max_ms(),
                "min_latency": summary.latency.min_ms(),
                "num_alive_client_connections": self.conns.len(),
                "auth_failed_count": 0,
                "non_mtlsremote_conn_count": 0,
                "non_mtlslocal_conn_count": 0,
                "uptime": now - self.started_ms,
            }),
        );
        f.insert("client_response".into(), client_response);
        f.insert("node_count".into(), flw::reported_znode_count(st).into());
        let sizes = self.dir_sizes_later();
        file_part(move |f| {
            let d = sizes();
            if let Some(Value::Object(stats)) = f.get_mut("server_stats") {
                stats.insert("data_dir_size".into(), d.data_dir_bytes.into());
                stats.insert("log_dir_size".into(), d.log_dir_bytes.into());
            }
        })
    }

    /// Fills `f`; the descriptor counts are added by the returned part.
    fn monitor(&self, f: &mut Fields, now: i64) -> Option<FilePart> {
        let m = self.metrics_snapshot(now);
        let summary = self.summary();
        f.insert("version".into(), summary.version.into());
        f.insert("server_state".into(), summary.mode.into());
        f.insert("ephemerals_count".into(), m.ephemerals_count.into());
        f.insert("num_alive_connections".into(), m.alive_connections.into());
        f.insert("avg_latency".into(), m.avg_latency_ms.into());
        f.insert("outstanding_requests".into(), m.outstanding_requests.into());
        f.insert("znode_count".into(), m.znode_count.into());
        f.insert("global_sessions".into(), m.global_sessions.into());
        f.insert("packets_sent".into(), m.packets_sent.into());
        f.insert("packets_received".into(), m.packets_received.into());
        f.insert("watch_count".into(), m.watch_count.into());
        f.insert("min_latency".into(), m.min_latency_ms.into());
        f.insert("max_latency".into(), m.max_latency_ms.into());
        f.insert(
            "approximate_data_size".into(),
            m.approximate_data_size_bytes.into(),
        );
        f.insert("uptime".into(), m.uptime_ms.into());
        self.timing_fields(f);
        if let Some(e) = &m.ensemble {
            f.insert("quorum_size".into(), e.quorum_size.into());
            if let Some(l) = &e.leader {
                f.insert("learners".into(), l.learners.into());
                f.insert("synced_followers".into(), l.synced_followers.into());
            }
        }
        file_part(|f| {
            let (open_fds, max_fds) = flw::file_descriptors();
            if let Some(n) = max_fds {
                f.insert("max_file_descriptor_count".into(), n.into());
            }
            if let Some(n) = open_fds {
                f.insert("open_file_descriptor_count".into(), n.into());
            }
        })
    }

    /// ZooKeeper's timing summaries, and `leader_uptime` while leading, as its `mntr` lists
    /// them (shared by the AdminServer's `monitor` and the `mntr` four-letter word).
    pub(super) fn timing_fields(&self, f: &mut Fields) {
        // `mntr` shows other percentiles of ZooKeeper's advanced summaries than /metrics.
        let mntr_quantiles = &[0.5, 0.95, 0.99, 0.999];
        let read = self.kind_latency.read.figures(mntr_quantiles);
        let update = self.kind_latency.update.figures(mntr_quantiles);
        summary_fields(f, "readlatency", &read);
        summary_fields(f, "updatelatency", &update);
        summary_fields(f, "fsynctime", &self.timings.fsync_figures());
        summary_fields(f, "snapshottime", &self.timings.snapshot_figures());
        if let Some(e) = &self.ensemble {
            summary_fields(f, "election_time", &e.election_time_figures());
            if let Some(ms) = e.leader_uptime_ms() {
                f.insert("leader_uptime".into(), ms.into());
            }
        }
    }

    fn configuration(&self, f: &mut Fields) {
        let cfg = &self.config;
        let abs = |p: &std::path::Path| {
            std::path::absolute(p)
                .unwrap_or_else(|_| p.to_path_buf())
                .display()
                .to_string()
        };
        f.insert("client_port".into(), self.client_port.into());
        f.insert("data_dir".into(), abs(&cfg.data_dir).into());
        f.insert("data_log_dir".into(), abs(cfg.data_log_dir()).into());
        f.insert("tick_time".into(), cfg.tick_time_ms.into());
        f.insert("max_client_cnxns".into(), cfg.max_client_cnxns.into());
        f.insert(
            "min_session_timeout".into(),
            cfg.min_session_timeout_ms().into(),
        );
        f.insert(
            "max_session_timeout".into(),
            cfg.max_session_timeout_ms().into(),
        );
        f.insert(
            "server_id".into(),
            cfg.ensemble.as_ref().map_or(0, |e| e.my_id).into(),
        );
        // Corral listens with the system's default backlog; -1 is ZooKeeper's "default".
        f.insert("client_port_listen_backlog".into(), (-1).into());
    }

    fn connections_json(&self) -> Value {
        let lines = self.conn_lines();
        Value::Array(lines.iter().map(connection_json).collect())
    }

    fn dump_json(&self, f: &mut Fields) {
        let tick_ms = i64::from(self.config.tick_time_ms).max(1);
        let mut by_expiry: std::collections::BTreeMap<i64, Vec<i64>> = Default::default();
        let mut ephemerals = Fields::new();
        for s in self.core.sessions() {
            // Expiry rounded up to the next tick, as ZooKeeper's expiry buckets are.
            let at = (s.expires_at_ms / tick_ms + 1) * tick_ms;
            by_expiry.entry(at).or_default().push(s.session_id);
            if !s.ephemerals.is_empty() {
                ephemerals.insert(s.session_id.to_string(), json!(s.ephemerals));
            }
        }
        let expiry: Fields = by_expiry
            .into_iter()
            .map(|(at, ids)| (at.to_string(), json!(ids)))
            .collect();
        f.insert("expiry_time_to_session_ids".into(), expiry.into());
        f.insert("session_id_to_ephemeral_paths".into(), ephemerals.into());
    }

    fn leader_json(&self, f: &mut Fields) {
        let Some(e) = &self.ensemble else {
            // ZooKeeper's standalone answer.
            f.insert("error".into(), "server is not initialized".into());
            return;
        };
        let leader = e.status.leader;
        f.insert(
            "is_leader".into(),
            (e.status.state == MemberState::Leader).into(),
        );
        // ZooKeeper reports -1 while no leader is known.
        f.insert("leader_id".into(), leader.map_or(-1, |id| id as i64).into());
        let ip = leader
            .and_then(|id| {
                self.config
                    .ensemble
                    .as_ref()?
                    .members
                    .iter()
                    .find(|m| m.id == id)
                    .map(|m| format!("{}:{}", m.host, m.peer_port))
            })
            .unwrap_or_default();
        f.insert("leader_ip".into(), ip.into());
    }
}

/// A summary as ZooKeeper's `mntr` lists it: `avg_`, `min_`, `max_`, `cnt_`, `sum_`, and
/// `p50_`-style fields for the quantiles computed (0 before any sample). Values in ms.
fn summary_fields(f: &mut Fields, name: &str, s: &SummaryFigures) {
    f.insert(format!("avg_{name}"), s.avg_ms().into());
    f.insert(format!("min_{name}"), s.min_ms.into());
    f.insert(format!("max_{name}"), s.max_ms.into());
    f.insert(format!("cnt_{name}"), s.count.into());
    f.insert(format!("sum_{name}"), s.sum_ms.into());
    if s.quantiles_ms.len() < 2 {
        // Basic summaries: ZooKeeper's `mntr` lists no percentiles for them.
        return;
    }
    for (q, v) in &s.quantiles_ms {
        // ZooKeeper's names: p50, p95, p99, p999.
        let per_mille = (q * 1000.0).round() as u64;
        let label = if per_mille.is_multiple_of(10) {
            format!("p{}", per_mille / 10)
        } else {
            format!("p{per_mille}")
        };
        let v = if v.is_nan() { 0.0 } else { *v };
        f.insert(format!("{label}_{name}"), v.into());
    }
}

/// One connection as ZooKeeper's `getConnectionInfo(false)` shows it.
fn connection_json(c: &ConnLine) -> Value {
    let mut m = Fields::new();
    m.insert("remote_socket_address".into(), c.peer.to_string().into());
    m.insert("interest_ops".into(), c.interest_ops.into());
    m.insert("outstanding_requests".into(), c.queued.into());
    m.insert("packets_received".into(), c.received.into());
    m.insert("packets_sent".into(), c.sent.into());
    if let Some(s) = &c.session {
        m.insert("session_id".into(), s.session_id.into());
        m.insert("last_operation".into(), s.last_op.into());
        m.insert("established".into(), s.established_ms.into());
        m.insert("session_timeout".into(), s.timeout_ms.into());
        m.insert("last_cxid".into(), s.last_cxid.into());
        m.insert("last_zxid".into(), s.last_zxid.into());
        m.insert("last_response_time".into(), s.last_response_ms.into());
        m.insert("last_latency".into(), s.last_latency_ms.into());
        m.insert("min_latency".into(), s.latency.min_ms().into());
        m.insert("avg_latency".into(), s.latency.avg_ms_truncated().into());
        m.insert("max_latency".into(), s.latency.max_ms().into());
    }
    Value::Object(m)
}

/// Zxid and modification time (seconds since the epoch) of the newest snapshot file.
fn newest_snapshot(data_dir: &std::path::Path) -> Option<(i64, i64)> {
    let prefix = corral_storage::snapshot_file_name(0);
    let prefix = prefix.split('.').next()?.to_string() + ".";
    let mut best: Option<(i64, std::path::PathBuf)> = None;
    for entry in std::fs::read_dir(data_dir).ok()?.flatten() {
        let name = entry.file_name();
        let Some(hex) = name.to_str().and_then(|n| n.strip_prefix(&prefix)) else {
            continue;
        };
        let Ok(zxid) = i64::from_str_radix(hex, 16) else {
            continue;
        };
        if best.as_ref().is_none_or(|(z, _)| zxid > *z) {
            best = Some((zxid, entry.path()));
        }
    }
    let (zxid, path) = best?;
    let secs = std::fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(-1, |d| d.as_secs() as i64);
    Some((zxid, secs))
}
