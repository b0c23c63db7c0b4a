//! Quotas as ZooKeeper keeps them: for a quota on `/p`, the node `/zookeeper/quota/p/zookeeper_limits`
//! holds the limits and `/zookeeper/quota/p/zookeeper_stats` the current usage, both in the
//! `count=N,bytes=M` text format (with `;key=value` extras for hard limits).

use std::collections::BTreeMap;

pub const QUOTA_ROOT: &str = "/zookeeper/quota";
pub const LIMIT_NODE: &str = "zookeeper_limits";
pub const STAT_NODE: &str = "zookeeper_stats";

/// Parsed `count=..,bytes=..` text; absent keys read as -1 ("no limit").
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatsTrack {
    values: BTreeMap<String, i64>,
}

impl StatsTrack {
    pub fn parse(text: &[u8]) -> StatsTrack {
        let mut values = BTreeMap::new();
        let text = String::from_utf8_lossy(text);
        for pair in text.split([',', ';']) {
            let mut kv = pair.split('=');
            let (Some(k), Some(v)) = (kv.next(), kv.next()) else {
                continue;
            };
            if k.is_empty() {
                continue;
            }
            values.insert(k.to_string(), v.trim().parse().unwrap_or(-1));
        }
        StatsTrack { values }
    }

    pub fn get(&self, key: &str) -> i64 {
        self.values.get(key).copied().unwrap_or(-1)
    }

    pub fn set(&mut self, key: &str, v: i64) {
        self.values.insert(key.to_string(), v);
    }

    pub fn count(&self) -> i64 {
        self.get("count")
    }

    pub fn bytes(&self) -> i64 {
        self.get("bytes")
    }

    /// ZooKeeper's layout: `count` and `bytes` first, then `=;key=value` extras sorted.
    pub fn render(&self) -> String {
        let mut s = format!("count={},bytes={}", self.count(), self.bytes());
        let extras: Vec<_> = self
            .values
            .iter()
            .filter(|(k, _)| *k != "count" && *k != "bytes")
            .collect();
        if !extras.is_empty() {
            s.push('=');
            for (k, v) in extras {
                s.push_str(&format!(";{k}={v}"));
            }
        }
        s
    }
}

/// For a node under the quota root named `.../zookeeper_limits` or `.../zookeeper_stats`, the
/// quota'd path it belongs to.
pub fn quota_target(parent: &str) -> Option<&str> {
    let rest = parent.strip_prefix(QUOTA_ROOT)?;
    if rest.is_empty() {
        return None;
    }
    rest.starts_with('/').then_some(rest)
}

pub fn limit_path(target: &str) -> String {
    format!("{QUOTA_ROOT}{target}/{LIMIT_NODE}")
}

pub fn stat_path(target: &str) -> String {
    format!("{QUOTA_ROOT}{target}/{STAT_NODE}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_track_round_trips_zookeeper_format() {
        let t = StatsTrack::parse(b"count=10,bytes=-1");
        assert_eq!(t.count(), 10);
        assert_eq!(t.bytes(), -1);
        assert_eq!(t.render(), "count=10,bytes=-1");
        let h = StatsTrack::parse(b"count=-1,bytes=-1=;byteHardLimit=-1;countHardLimit=2");
        assert_eq!(h.get("countHardLimit"), 2);
        assert_eq!(
            h.render(),
            "count=-1,bytes=-1=;byteHardLimit=-1;countHardLimit=2"
        );
    }

    #[test]
    fn quota_targets() {
        assert_eq!(quota_target("/zookeeper/quota/a/b"), Some("/a/b"));
        assert_eq!(quota_target("/zookeeper/quota"), None);
        assert_eq!(quota_target("/zookeeper/quotax"), None);
        assert_eq!(stat_path("/a"), "/zookeeper/quota/a/zookeeper_stats");
    }
}
