//! The console's chart data: one sample of the server's figures every
//! [`SAMPLE_INTERVAL_MS`], the last hour of them in a fixed-size ring.

use std::collections::VecDeque;

use serde::Serialize;

/// How often the AdminServer samples the driver's figures for the console's charts.
pub const SAMPLE_INTERVAL_MS: u64 = 10_000;
/// One hour of samples; the oldest is dropped when a new one arrives.
pub const SAMPLE_CAPACITY: usize = 360;

/// One point of the console's charts.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Sample {
    /// Wall-clock time of the sample, milliseconds since the Unix epoch.
    pub at_ms: i64,
    /// Requests received per second since the previous sample (0 for the first one).
    pub requests_per_sec: f64,
    /// The server's average request latency (as `mntr` reports it, since the last reset).
    pub avg_latency_ms: f64,
    /// The server's maximum request latency since the last reset.
    pub max_latency_ms: u64,
    pub znode_count: u64,
}

/// A bounded ring of [`Sample`]s, oldest first.
#[derive(Debug)]
pub struct SampleRing {
    samples: VecDeque<Sample>,
    capacity: usize,
    /// The previous sample's time and packet counter, to turn the counter into a rate.
    previous: Option<(i64, u64)>,
}

impl SampleRing {
    pub fn new(capacity: usize) -> SampleRing {
        SampleRing {
            samples: VecDeque::with_capacity(capacity),
            capacity: capacity.max(1),
            previous: None,
        }
    }

    /// Records the figures read at `at_ms`. `packets_received` is the server's running
    /// counter; a counter that went down (a `stat_reset`) gives a zero rate, not a negative one.
    pub fn record(
        &mut self,
        at_ms: i64,
        packets_received: u64,
        avg_latency_ms: f64,
        max_latency_ms: u64,
        znode_count: u64,
    ) {
        let requests_per_sec = match self.previous {
            Some((then_ms, then_packets)) if at_ms > then_ms => {
                packets_received.saturating_sub(then_packets) as f64 * 1000.0
                    / (at_ms - then_ms) as f64
            }
            _ => 0.0,
        };
        self.previous = Some((at_ms, packets_received));
        if self.samples.len() == self.capacity {
            self.samples.pop_front();
        }
        self.samples.push_back(Sample {
            at_ms,
            requests_per_sec,
            avg_latency_ms,
            max_latency_ms,
            znode_count,
        });
    }

    /// Every sample held, oldest first.
    pub fn to_vec(&self) -> Vec<Sample> {
        self.samples.iter().copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_comes_from_the_counter_difference() {
        let mut ring = SampleRing::new(4);
        ring.record(0, 100, 1.0, 2, 5);
        ring.record(10_000, 600, 1.5, 3, 6);
        let v = ring.to_vec();
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].requests_per_sec, 0.0);
        assert_eq!(v[1].requests_per_sec, 50.0);
        assert_eq!(v[1].znode_count, 6);
    }

    #[test]
    fn a_reset_counter_gives_zero_rate() {
        let mut ring = SampleRing::new(4);
        ring.record(0, 100, 0.0, 0, 1);
        ring.record(1_000, 10, 0.0, 0, 1);
        assert_eq!(ring.to_vec()[1].requests_per_sec, 0.0);
    }

    #[test]
    fn the_oldest_sample_is_dropped_at_capacity() {
        let mut ring = SampleRing::new(3);
        for i in 0..5 {
            ring.record(i * 1000, 0, 0.0, 0, i as u64);
        }
        let counts: Vec<u64> = ring.to_vec().iter().map(|s| s.znode_count).collect();
        assert_eq!(counts, vec![2, 3, 4]);
    }
}
