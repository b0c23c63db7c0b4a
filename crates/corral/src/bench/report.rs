//! The result of one bench run: an ordered set of named figures, printed as a table or as one
//! JSON object.

use std::time::Duration;

use serde_json::{json, Map, Value};

use super::stats::{round3, Latency};
use super::Options;

pub struct Report {
    head: Map<String, Value>,
    figures: Map<String, Value>,
}

impl Report {
    pub fn new(opts: &Options) -> Report {
        let mut head = Map::new();
        head.insert("workload".into(), json!(opts.workload.name()));
        if let Some(label) = &opts.label {
            head.insert("label".into(), json!(label));
        }
        head.insert("server".into(), json!(opts.server));
        head.insert("clients".into(), json!(opts.clients));
        head.insert("depth".into(), json!(opts.depth));
        head.insert("value_size".into(), json!(opts.value_size_bytes));
        Report {
            head,
            figures: Map::new(),
        }
    }

    /// Adds (or replaces) a figure.
    pub fn set(&mut self, name: &str, value: impl Into<Value>) {
        self.figures.insert(name.to_string(), value.into());
    }

    /// `count` of something done in `window`: the count as `count_name`, `seconds`, and the
    /// rate per second as `rate_name`.
    pub fn throughput(&mut self, count_name: &str, rate_name: &str, count: u64, window: Duration) {
        self.set(count_name, count);
        self.set("seconds", round3(window.as_secs_f64()));
        self.set(rate_name, round3(count as f64 / window.as_secs_f64()));
    }

    pub fn latency(&mut self, name: &str, l: &Latency) {
        self.set(name, l.to_json());
    }

    /// `errors` and, if any request failed, the first failure.
    pub fn errors(&mut self, count: u64, first: Option<&str>) {
        self.set("errors", count);
        if let Some(e) = first {
            self.set("first_error", e);
        }
    }

    /// Server memory before and after, and the growth per `unit` for `count` units (also from
    /// the hook-less raw samples when there are some). Samples are `(rss, raw rss)` as
    /// `sample_rss` returns them.
    pub fn rss_per(
        &mut self,
        unit: &str,
        count: u64,
        before: (u64, Option<u64>),
        after: (u64, Option<u64>),
    ) {
        let per = |a: u64, b: u64| round3((a as f64 - b as f64) / count.max(1) as f64);
        self.set("rss_before_bytes", before.0);
        self.set("rss_after_bytes", after.0);
        self.set(&format!("rss_bytes_per_{unit}"), per(after.0, before.0));
        if let (Some(a), Some(b)) = (after.1, before.1) {
            self.set(&format!("raw_rss_bytes_per_{unit}"), per(a, b));
        }
    }

    /// Merges figures computed elsewhere (CPU usage).
    pub fn extend(&mut self, more: Map<String, Value>) {
        self.figures.extend(more);
    }

    pub fn to_json(&self) -> Value {
        let mut all = self.head.clone();
        all.extend(self.figures.clone());
        Value::Object(all)
    }

    /// A two-column table: one row per figure, a latency summary on one row.
    pub fn table(&self) -> String {
        let mut rows: Vec<(String, String)> = Vec::new();
        for (k, v) in &self.head {
            rows.push((k.clone(), plain(v)));
        }
        for (k, v) in &self.figures {
            let text = match v {
                Value::Object(o) if o.contains_key("p50_us") => format!(
                    "n={} mean={} p50={} p99={} p99.9={} max={} µs",
                    plain(&o["count"]),
                    plain(&o["mean_us"]),
                    plain(&o["p50_us"]),
                    plain(&o["p99_us"]),
                    plain(&o["p999_us"]),
                    plain(&o["max_us"]),
                ),
                other => plain(other),
            };
            rows.push((k.clone(), text));
        }
        let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        let mut out = String::new();
        for (k, v) in rows {
            out.push_str(&format!("{k:<width$}  {v}\n"));
        }
        out
    }
}

fn plain(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => match n.as_f64() {
            Some(f) if n.is_f64() => {
                if f.abs() >= 100.0 {
                    format!("{f:.0}")
                } else {
                    format!("{f:.3}")
                        .trim_end_matches('0')
                        .trim_end_matches('.')
                        .to_string()
                }
            }
            _ => n.to_string(),
        },
        other => other.to_string(),
    }
}
