//! `GET /metrics`: the figures ZooKeeper's PrometheusMetricsProvider exports, under its names.
//!
//! ZooKeeper registers these as gauges whose help text is the name itself; a dashboard built
//! for ZooKeeper finds the same series here. Only figures Corral really measures are
//! exported (docs/metrics.md lists the rest). The driver fills a [`MetricsSnapshot`] per
//! scrape; rendering happens outside the driver task.

use prometheus::{Encoder, Gauge, GaugeVec, Opts, Registry, TextEncoder};

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
    /// Set when this server is an ensemble member.
    pub ensemble: Option<EnsembleMetrics>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EnsembleMetrics {
    /// Voting members in the configuration.
    pub quorum_size: u64,
    /// Set while this member leads.
    pub leader: Option<LeaderMetrics>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeaderMetrics {
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
    if let Some(e) = &s.ensemble {
        gauge("quorum_size", e.quorum_size as f64)?;
        if let Some(l) = &e.leader {
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
    let mut out = Vec::new();
    TextEncoder::new().encode(&registry.gather(), &mut out)?;
    String::from_utf8(out).map_err(|e| prometheus::Error::Msg(e.to_string()))
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
                leader: Some(LeaderMetrics {
                    learners: 2,
                    synced_followers: 1,
                    log_lag_entries: vec![(2, 0), (3, 40)],
                }),
            }),
            ..MetricsSnapshot::default()
        })
        .unwrap();
        assert_eq!(value_of(&text, "quorum_size"), Some(3.0));
        assert_eq!(value_of(&text, "learners"), Some(2.0));
        assert!(
            text.contains("corral_raft_log_lag{member=\"3\"} 40\n"),
            "{text}"
        );
    }
}
