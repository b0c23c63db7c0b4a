//! `GET /metrics`: the figures ZooKeeper's PrometheusMetricsProvider exports, under its names.
//!
//! ZooKeeper registers these as gauges whose help text is the name itself; a dashboard built
//! for ZooKeeper finds the same series here. Only figures Corral really measures are
//! exported (docs/metrics.md lists the rest). The driver fills a [`MetricsSnapshot`] per
//! scrape; rendering happens outside the driver task.
//!
//! Durations (request latency, fsync, snapshot, election) are ZooKeeper's summaries: a
//! `quantile` label per quantile plus `_sum` and `_count`, all in milliseconds.
//! [`SummaryStats`] accumulates one of them.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus::proto::{MetricFamily, MetricType, Quantile};
use prometheus::{CounterVec, Encoder, Gauge, GaugeVec, Opts, Registry, TextEncoder};

/// Quantiles of ZooKeeper's "advanced" summaries (`readlatency`, `updatelatency`).
pub const ADVANCED_QUANTILES: &[f64] = &[0.5, 0.9, 0.99];
/// Quantiles of its "basic" ones (`fsynctime`, `snapshottime`, `election_time`).
pub const BASIC_QUANTILES: &[f64] = &[0.5];
/// Quantiles are computed over this many most recent samples: they describe recent
/// behaviour (as ZooKeeper's rotating sketches do) and memory stays bounded. Count, sum, min
/// and max cover every sample since start.
const RECENT_SAMPLES: usize = 1024;

/// One summary's accumulated samples, in milliseconds.
#[derive(Debug, Clone, Default)]
pub struct SummaryStats {
    count: u64,
    sum_ms: f64,
    min_ms: f64,
    max_ms: f64,
    /// The newest samples, oldest first, at most [`RECENT_SAMPLES`].
    recent_ms: VecDeque<f64>,
}

impl SummaryStats {
    pub fn record_ms(&mut self, value_ms: f64) {
        if self.count == 0 || value_ms < self.min_ms {
            self.min_ms = value_ms;
        }
        self.max_ms = self.max_ms.max(value_ms);
        self.count += 1;
        self.sum_ms += value_ms;
        if self.recent_ms.len() == RECENT_SAMPLES {
            self.recent_ms.pop_front();
        }
        self.recent_ms.push_back(value_ms);
    }

    pub fn record(&mut self, took: Duration) {
        self.record_ms(took.as_secs_f64() * 1000.0);
    }

    /// The figures a scrape shows, with the given quantiles over the recent samples.
    pub fn figures(&self, quantiles: &[f64]) -> SummaryFigures {
        let mut sorted: Vec<f64> = self.recent_ms.iter().copied().collect();
        sorted.sort_by(f64::total_cmp);
        SummaryFigures {
            count: self.count,
            sum_ms: self.sum_ms,
            min_ms: self.min_ms,
            max_ms: self.max_ms,
            quantiles_ms: quantiles
                .iter()
                .map(|&q| (q, nearest_rank(&sorted, q)))
                .collect(),
        }
    }
}

/// The `q` quantile of sorted samples by the nearest-rank method; NaN without samples (as
/// Prometheus clients report an empty summary).
fn nearest_rank(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// A summary as one scrape shows it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SummaryFigures {
    pub count: u64,
    pub sum_ms: f64,
    /// 0 when nothing was measured.
    pub min_ms: f64,
    pub max_ms: f64,
    /// (quantile, value); values are NaN when nothing was measured.
    pub quantiles_ms: Vec<(f64, f64)>,
}

impl SummaryFigures {
    /// 0 when nothing was measured, as ZooKeeper's `mntr` reports it.
    pub fn avg_ms(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.sum_ms / self.count as f64
        }
    }
}

/// Durations measured off the driver task: fsyncs on the log threads, snapshots on their
/// own threads. Shared by those threads and read by the driver at each scrape.
#[derive(Debug, Default)]
pub struct Timings {
    fsync: Mutex<SummaryStats>,
    snapshot: Mutex<SummaryStats>,
}

impl Timings {
    pub fn record_fsync(&self, took: Duration) {
        lock(&self.fsync).record(took);
    }

    pub fn record_snapshot(&self, took: Duration) {
        lock(&self.snapshot).record(took);
    }

    pub fn fsync_figures(&self) -> SummaryFigures {
        lock(&self.fsync).figures(BASIC_QUANTILES)
    }

    pub fn snapshot_figures(&self) -> SummaryFigures {
        lock(&self.snapshot).figures(BASIC_QUANTILES)
    }

    /// What storage calls after each fdatasync of the txn log or the Raft log.
    pub fn sync_observer(self: &Arc<Self>) -> corral_storage::SyncObserver {
        let timings = self.clone();
        Arc::new(move |took| timings.record_fsync(took))
    }
}

/// A poisoned lock only means a recording thread panicked mid-update of plain numbers; the
/// figures are still usable.
fn lock(m: &Mutex<SummaryStats>) -> std::sync::MutexGuard<'_, SummaryStats> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Everything one scrape shows, copied out of the driver in one go (so the figures are
/// consistent with each other).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MetricsSnapshot {
    pub znode_count: u64,
    pub watch_count: u64,
    pub ephemerals_count: u64,
    pub approximate_data_size_bytes: u64,
    pub global_sessions: u64,
    /// Client connections open now.
    pub alive_connections: u64,
    /// Requests received and not yet answered, over all connections.
    pub outstanding_requests: u64,
    pub packets_received: u64,
    pub packets_sent: u64,
    pub avg_latency_ms: f64,
    pub min_latency_ms: u64,
    pub max_latency_ms: u64,
    pub uptime_ms: i64,
    pub open_fds: Option<u64>,
    pub max_fds: Option<u64>,
    /// Reply bytes queued for clients and not yet written to their sockets.
    pub queued_reply_bytes: u64,
    /// Changes held in the persistent-watch replay window.
    pub replay_window_changes: u64,
    /// Latency of requests that change nothing (reads, pings, sync).
    pub read_latency: SummaryFigures,
    /// Latency of requests that become txns (writes, session creation and close).
    pub update_latency: SummaryFigures,
    /// Each fdatasync of the txn log (standalone) or the Raft log (ensemble member).
    pub fsync_time: SummaryFigures,
    /// Each snapshot taken, from the start of encoding to the file in place.
    pub snapshot_time: SummaryFigures,
    /// Set when this server is an ensemble member.
    pub ensemble: Option<EnsembleMetrics>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct EnsembleMetrics {
    /// Voting members in the configuration.
    pub quorum_size: u64,
    /// Each time this member was without a leader: from losing one (or starting) to knowing
    /// the next.
    pub election_time: SummaryFigures,
    /// Set while this member leads.
    pub leader: Option<LeaderMetrics>,
    /// (member id, answers from it that arrived after their call had timed out), for the
    /// members this one has called.
    pub late_answers: Vec<(u64, u64)>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeaderMetrics {
    /// Since this member became leader.
    pub uptime_ms: u64,
    /// Other members the leader replicates to (followers and observers).
    pub learners: u64,
    /// Members whose replication has caught up with what the leader applied.
    pub synced_followers: u64,
    /// (member id, log entries it is behind the leader's last log index).
    pub log_lag_entries: Vec<(u64, u64)>,
}

/// The content type of the text exposition format (version 0.0.4).
pub fn content_type() -> String {
    TextEncoder::new().format_type().to_string()
}

/// Renders one scrape in the Prometheus text format.
pub fn render(s: &MetricsSnapshot) -> Result<String, prometheus::Error> {
    let registry = Registry::new();
    // ZooKeeper's gauges use the name as help text; keep it so diffs against it stay clean.
    let gauge = |name: &str, value: f64| -> Result<(), prometheus::Error> {
        let g = Gauge::with_opts(Opts::new(name, name))?;
        g.set(value);
        registry.register(Box::new(g))
    };
    gauge("znode_count", s.znode_count as f64)?;
    gauge("watch_count", s.watch_count as f64)?;
    gauge("ephemerals_count", s.ephemerals_count as f64)?;
    gauge(
        "approximate_data_size",
        s.approximate_data_size_bytes as f64,
    )?;
    gauge("global_sessions", s.global_sessions as f64)?;
    gauge("num_alive_connections", s.alive_connections as f64)?;
    gauge("outstanding_requests", s.outstanding_requests as f64)?;
    gauge("packets_received", s.packets_received as f64)?;
    gauge("packets_sent", s.packets_sent as f64)?;
    gauge("avg_latency", s.avg_latency_ms)?;
    gauge("min_latency", s.min_latency_ms as f64)?;
    gauge("max_latency", s.max_latency_ms as f64)?;
    gauge("uptime", s.uptime_ms as f64)?;
    if let Some(n) = s.open_fds {
        gauge("open_file_descriptor_count", n as f64)?;
    }
    if let Some(n) = s.max_fds {
        gauge("max_file_descriptor_count", n as f64)?;
    }
    gauge("corral_queue_bytes", s.queued_reply_bytes as f64)?;
    gauge("corral_replay_window_depth", s.replay_window_changes as f64)?;
    let mut summaries = vec![
        summary_family("readlatency", &s.read_latency),
        summary_family("updatelatency", &s.update_latency),
        summary_family("fsynctime", &s.fsync_time),
        summary_family("snapshottime", &s.snapshot_time),
    ];
    if let Some(e) = &s.ensemble {
        gauge("quorum_size", e.quorum_size as f64)?;
        if e.late_answers.iter().any(|(_, n)| *n > 0) {
            let late = CounterVec::new(
                Opts::new(
                    "corral_peer_late_answers_total",
                    "Answers from a member that arrived after the call had timed out",
                ),
                &["member"],
            )?;
            for (member, n) in &e.late_answers {
                late.with_label_values(&[&member.to_string()])
                    .inc_by(*n as f64);
            }
            registry.register(Box::new(late))?;
        }
        summaries.push(summary_family("election_time", &e.election_time));
        if let Some(l) = &e.leader {
            gauge("leader_uptime", l.uptime_ms as f64)?;
            gauge("learners", l.learners as f64)?;
            gauge("synced_followers", l.synced_followers as f64)?;
            let lag = GaugeVec::new(
                Opts::new(
                    "corral_raft_log_lag",
                    "Raft log entries a member is behind the leader",
                ),
                &["member"],
            )?;
            for (member, behind) in &l.log_lag_entries {
                lag.with_label_values(&[&member.to_string()])
                    .set(*behind as f64);
            }
            // A family without samples would render as a bare header.
            if !l.log_lag_entries.is_empty() {
                registry.register(Box::new(lag))?;
            }
        }
    }
    let mut families = registry.gather();
    families.extend(summaries);
    let mut out = Vec::new();
    TextEncoder::new().encode(&families, &mut out)?;
    String::from_utf8(out).map_err(|e| prometheus::Error::Msg(e.to_string()))
}

/// One summary in the exposition format; the help text is the name, as ZooKeeper's.
/// (The prometheus crate has no summary collector, so the family is built directly.)
fn summary_family(name: &str, f: &SummaryFigures) -> MetricFamily {
    let mut summary = prometheus::proto::Summary::default();
    summary.set_sample_count(f.count);
    summary.set_sample_sum(f.sum_ms);
    summary.set_quantile(
        f.quantiles_ms
            .iter()
            .map(|&(q, v)| {
                let mut quantile = Quantile::default();
                quantile.set_quantile(q);
                quantile.set_value(v);
                quantile
            })
            .collect(),
    );
    let mut metric = prometheus::proto::Metric::default();
    metric.set_summary(summary);
    let mut family = MetricFamily::default();
    family.set_name(name.to_string());
    family.set_help(name.to_string());
    family.set_field_type(MetricType::SUMMARY);
    family.set_metric(vec![metric]);
    family
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value_of(text: &str, name: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .and_then(|v| v.trim().parse().ok())
    }

    #[test]
    fn renders_zookeeper_names_as_gauges() {
        let text = render(&MetricsSnapshot {
            znode_count: 7,
            avg_latency_ms: 1.5,
            open_fds: Some(12),
            max_fds: None,
            ..MetricsSnapshot::default()
        })
        .unwrap();
        assert!(text.contains("# HELP znode_count znode_count\n# TYPE znode_count gauge\n"));
        assert_eq!(value_of(&text, "znode_count"), Some(7.0));
        assert_eq!(value_of(&text, "avg_latency"), Some(1.5));
        assert_eq!(value_of(&text, "open_file_descriptor_count"), Some(12.0));
        assert!(
            !text.contains("max_file_descriptor_count"),
            "unknown figures are left out"
        );
        assert!(!text.contains("quorum_size"), "standalone has no quorum");
    }

    #[test]
    fn leader_figures_carry_a_member_label() {
        let text = render(&MetricsSnapshot {
            ensemble: Some(EnsembleMetrics {
                quorum_size: 3,
                election_time: SummaryFigures::default(),
                leader: Some(LeaderMetrics {
                    uptime_ms: 1234,
                    learners: 2,
                    synced_followers: 1,
                    log_lag_entries: vec![(2, 0), (3, 40)],
                }),
                late_answers: vec![(2, 0), (3, 7)],
            }),
            ..MetricsSnapshot::default()
        })
        .unwrap();
        assert_eq!(value_of(&text, "quorum_size"), Some(3.0));
        assert_eq!(value_of(&text, "learners"), Some(2.0));
        assert_eq!(value_of(&text, "leader_uptime"), Some(1234.0));
        assert!(text.contains("# TYPE election_time summary\n"), "{text}");
        assert!(
            text.contains("corral_raft_log_lag{member=\"3\"} 40\n"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE corral_peer_late_answers_total counter\n"),
            "{text}"
        );
        assert!(
            text.contains("corral_peer_late_answers_total{member=\"3\"} 7\n"),
            "{text}"
        );
    }

    #[test]
    fn summary_quantiles_come_from_recent_samples_and_totals_from_all() {
        let mut stats = SummaryStats::default();
        for ms in 1..=100 {
            stats.record_ms(f64::from(ms));
        }
        let f = stats.figures(ADVANCED_QUANTILES);
        assert_eq!(
            (f.count, f.sum_ms, f.min_ms, f.max_ms),
            (100, 5050.0, 1.0, 100.0)
        );
        assert_eq!(f.quantiles_ms, vec![(0.5, 50.0), (0.9, 90.0), (0.99, 99.0)]);
        assert_eq!(f.avg_ms(), 50.5);

        // Past the window, old samples leave the quantiles but not the totals.
        for _ in 0..RECENT_SAMPLES {
            stats.record_ms(1000.0);
        }
        let f = stats.figures(BASIC_QUANTILES);
        assert_eq!(f.count, 100 + RECENT_SAMPLES as u64);
        assert_eq!(f.min_ms, 1.0);
        assert_eq!(f.quantiles_ms, vec![(0.5, 1000.0)]);
        assert_eq!(stats.recent_ms.len(), RECENT_SAMPLES);
    }

    #[test]
    fn summaries_render_with_quantile_labels_sum_and_count() {
        let mut latency = SummaryStats::default();
        latency.record_ms(4.0);
        latency.record_ms(6.0);
        let text = render(&MetricsSnapshot {
            read_latency: latency.figures(ADVANCED_QUANTILES),
            fsync_time: SummaryStats::default().figures(BASIC_QUANTILES),
            ..MetricsSnapshot::default()
        })
        .unwrap();
        assert!(text.contains("# HELP readlatency readlatency\n# TYPE readlatency summary\n"));
        assert!(text.contains("readlatency{quantile=\"0.5\"} 4\n"), "{text}");
        assert!(
            text.contains("readlatency{quantile=\"0.99\"} 6\n"),
            "{text}"
        );
        assert_eq!(value_of(&text, "readlatency_sum"), Some(10.0));
        assert_eq!(value_of(&text, "readlatency_count"), Some(2.0));
        // Empty summaries are still served: count 0, quantiles NaN.
        assert_eq!(value_of(&text, "fsynctime_count"), Some(0.0));
        assert!(text.contains("fsynctime{quantile=\"0.5\"} NaN\n"), "{text}");
        assert!(
            !text.contains("election_time"),
            "standalone has no elections"
        );
    }
}
