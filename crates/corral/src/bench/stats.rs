//! Measurement helpers: latency histograms, and the CPU time and resident memory of processes
//! read from /proc.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde_json::{json, Value};

const MAX_TRACKED_NS: u64 = 3_600 * 1_000_000_000;

/// Latencies in nanoseconds; reported in microseconds.
#[derive(Clone)]
pub struct Latency {
    hist: Histogram<u64>,
}

impl Default for Latency {
    fn default() -> Self {
        Latency::new()
    }
}

impl Latency {
    pub fn new() -> Latency {
        // Three significant digits (0.1% resolution) from 1 ns to an hour; anything longer is
        // clamped to an hour rather than lost.
        Latency {
            hist: Histogram::new_with_bounds(1, MAX_TRACKED_NS, 3).expect("valid histogram bounds"),
        }
    }

    pub fn record(&mut self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX).max(1);
        self.hist.saturating_record(ns);
    }

    pub fn merge(&mut self, other: &Latency) {
        // Same bounds on both sides, so adding cannot run out of range.
        let _ = self.hist.add(&other.hist);
    }

    pub fn count(&self) -> u64 {
        self.hist.len()
    }

    fn quantile_us(&self, q: f64) -> f64 {
        round_us(self.hist.value_at_quantile(q) as f64 / 1000.0)
    }

    pub fn p99_us(&self) -> f64 {
        self.quantile_us(0.99)
    }

    pub fn max_us(&self) -> f64 {
        round_us(self.hist.max() as f64 / 1000.0)
    }

    /// `{count, mean_us, p50_us, p99_us, p999_us, max_us}` (all zero when empty).
    pub fn to_json(&self) -> Value {
        if self.hist.is_empty() {
            return json!({"count": 0, "mean_us": 0.0, "p50_us": 0.0, "p99_us": 0.0,
                          "p999_us": 0.0, "max_us": 0.0});
        }
        json!({
            "count": self.count(),
            "mean_us": round_us(self.hist.mean() / 1000.0),
            "p50_us": self.quantile_us(0.50),
            "p99_us": self.quantile_us(0.99),
            "p999_us": self.quantile_us(0.999),
            "max_us": self.max_us(),
        })
    }
}

fn round_us(us: f64) -> f64 {
    (us * 10.0).round() / 10.0
}

/// Linux reports process times in clock ticks of USER_HZ, which is 100 on every architecture
/// Linux supports (it is part of the user-space ABI, unlike the kernel's internal HZ).
const USER_HZ: f64 = 100.0;

/// User + system CPU seconds used so far by process `pid` (`None`: this process).
pub fn cpu_seconds(pid: Option<u32>) -> Option<f64> {
    let path = match pid {
        Some(p) => format!("/proc/{p}/stat"),
        None => "/proc/self/stat".to_string(),
    };
    let text = std::fs::read_to_string(path).ok()?;
    // The command name (field 2) is in parentheses and may contain spaces, so count fields
    // from the last ')': state is field 3, utime field 14, stime field 15.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / USER_HZ)
}

/// Resident set size of process `pid` in bytes (VmRSS of /proc/PID/status).
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// CPU used by the server (if its pid is known) and by the bench over one measured window.
pub struct CpuWindow {
    server_pid: Option<u32>,
    server_start_s: Option<f64>,
    bench_start_s: Option<f64>,
}

impl CpuWindow {
    pub fn start(server_pid: Option<u32>) -> CpuWindow {
        CpuWindow {
            server_pid,
            server_start_s: server_pid.and_then(|p| cpu_seconds(Some(p))),
            bench_start_s: cpu_seconds(None),
        }
    }

    /// `server_cpu_s`, `server_cores`, `server_cpu_us_per_op` (when the server pid is known),
    /// `bench_cpu_s` and `bench_cores`.
    pub fn finish(self, wall: Duration, ops: u64) -> serde_json::Map<String, Value> {
        let mut out = serde_json::Map::new();
        let wall_s = wall.as_secs_f64().max(1e-9);
        if let (Some(pid), Some(start)) = (self.server_pid, self.server_start_s) {
            if let Some(end) = cpu_seconds(Some(pid)) {
                let used = end - start;
                out.insert("server_cpu_s".into(), json!(round3(used)));
                out.insert("server_cores".into(), json!(round3(used / wall_s)));
                if ops > 0 {
                    out.insert(
                        "server_cpu_us_per_op".into(),
                        json!(round3(used * 1e6 / ops as f64)),
                    );
                }
            }
        }
        if let (Some(start), Some(end)) = (self.bench_start_s, cpu_seconds(None)) {
            out.insert("bench_cpu_s".into(), json!(round3(end - start)));
            out.insert("bench_cores".into(), json!(round3((end - start) / wall_s)));
        }
        out
    }
}

pub fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_summary_is_in_microseconds() {
        let mut l = Latency::new();
        for us in 1..=100u64 {
            l.record(Duration::from_micros(us));
        }
        let v = l.to_json();
        assert_eq!(v["count"], 100);
        let p50 = v["p50_us"].as_f64().unwrap();
        assert!((49.0..=51.0).contains(&p50), "p50 {p50}");
        let max = v["max_us"].as_f64().unwrap();
        assert!((99.9..=100.1).contains(&max), "max {max}");
    }

    #[test]
    fn proc_readers_see_this_process() {
        assert!(cpu_seconds(None).is_some());
        assert!(rss_bytes(std::process::id()).unwrap() > 0);
    }
}
