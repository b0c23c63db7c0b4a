//! Jepsen-style testing of a Corral ensemble: real `corral server` processes, concurrent
//! clients recording a history of every operation, a nemesis injecting faults (kills, pauses,
//! network partitions), and checkers that judge the history afterwards.
//!
//! - [`history`] — the operation record and its JSON-lines form;
//! - [`check`] — one checker per workload (linearizable registers, sets, unique ids, counter,
//!   fencing tokens, watch streams, sessions);
//! - [`ensemble`], [`net`], [`disk`] — member processes, their network namespaces and their
//!   own small filesystems;
//! - [`faultfs`] — a FUSE layer that drops unsynced writes at a power loss;
//! - [`loss`], [`proxy`] — random packet loss and delay between members;
//! - [`nemesis`] — the fault schedule and its execution;
//! - [`workload`] — the client tasks; [`queue`] — the queue workload and its final drain;
//! - [`runner`] — one run from start to verdict, and the results table;
//! - [`apache`] — the reference run against Apache ZooKeeper (`--target apache`);
//! - [`kazoo`] — a workload run by a third-party client (kazoo, Python).

pub mod apache;
pub mod check;
pub mod disk;
pub mod ensemble;
pub mod faultfs;
pub mod history;
pub mod kazoo;
pub mod loss;
pub mod nemesis;
pub mod net;
pub mod proxy;
pub mod queue;
pub mod runner;
pub mod workload;

use std::time::Duration;

/// Parses `90`, `90s`, `500ms`, `30m` or `1h`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?}: expected a number with an optional unit"))?;
    let ms = match unit {
        "ms" => n,
        "" | "s" => n * 1000,
        "m" => n * 60_000,
        "h" => n * 3_600_000,
        other => return Err(format!("{s:?}: unknown unit {other:?} (ms, s, m, h)")),
    };
    Ok(Duration::from_millis(ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("30m").unwrap(), Duration::from_secs(1800));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("s").is_err());
    }
}
