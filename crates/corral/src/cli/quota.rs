//! zkCli's quota commands (`setquota`, `listquota`, `delquota`). A quota on `/p` is two nodes
//! the shell writes itself: `/zookeeper/quota/p/zookeeper_limits` (the limits) and
//! `/zookeeper/quota/p/zookeeper_stats` (usage, which the server keeps up to date), both in
//! ZooKeeper's `count=N,bytes=M` text. The nodes, their data, the refusals and the messages are
//! zkCli 3.8's, so either shell can manage quotas the other set.

use std::collections::BTreeMap;

use corral_client::{Client, CreateMode, CreateOptions, Error, ZkError};

use super::parse::{parse_flags, Parsed};
use super::{describe, failed, outln, usage_of, CmdError, CmdResult, Shell};

const QUOTA_ROOT: &str = "/zookeeper/quota";
const LIMIT_NODE: &str = "zookeeper_limits";
const STAT_NODE: &str = "zookeeper_stats";

const COUNT: &str = "count";
const BYTES: &str = "bytes";
const COUNT_HARD: &str = "countHardLimit";
const BYTES_HARD: &str = "byteHardLimit";

/// The quota flags (soft count, soft bytes, hard count, hard bytes) and the key each sets.
const QUOTA_FLAGS: [(char, &str); 4] = [
    ('n', COUNT),
    ('b', BYTES),
    ('N', COUNT_HARD),
    ('B', BYTES_HARD),
];

/// What zkCli's option parser says when none of the quota flags is given.
const MISSING_QUOTA_FLAG: &str = "Missing required option: [-n num soft quota, -b bytes soft quota, -N num hard quota, -B bytes hard quota]";

/// ZooKeeper's `StatsTrack`: `key=value` pairs separated by `,` or `;`; an absent key reads
/// as -1 ("no limit").
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct StatsTrack {
    values: BTreeMap<String, i64>,
}

impl StatsTrack {
    pub(super) fn parse(text: &[u8]) -> Result<StatsTrack, String> {
        let text = String::from_utf8_lossy(text);
        let mut values = BTreeMap::new();
        for pair in text.split([',', ';']).filter(|p| !p.is_empty()) {
            // `bytes=5=` (the marker that hides the extras from 3.4 parsers) is key and value
            // followed by an empty part.
            let mut kv = pair.split('=');
            let key = kv.next().unwrap_or_default();
            let value = match kv.next() {
                None => return Err(format!("quota data {text:?} has no value for {key:?}")),
                Some("") => -1,
                Some(v) => v
                    .parse()
                    .map_err(|_| format!("quota data {text:?}: {v:?} is not a number"))?,
            };
            values.insert(key.to_string(), value);
        }
        Ok(StatsTrack { values })
    }

    pub(super) fn get(&self, key: &str) -> i64 {
        self.values.get(key).copied().unwrap_or(-1)
    }

    pub(super) fn set(&mut self, key: &str, value: i64) {
        self.values.insert(key.to_string(), value);
    }

    /// `count=..,bytes=..` first (what 3.4 parsers read), then, after a `=` that such parsers
    /// skip, `;key=value` for every other key in name order.
    pub(super) fn render(&self) -> String {
        let mut s = format!("{COUNT}={},{BYTES}={}", self.get(COUNT), self.get(BYTES));
        let mut extras = self
            .values
            .iter()
            .filter(|(k, _)| *k != COUNT && *k != BYTES)
            .peekable();
        if extras.peek().is_some() {
            s.push('=');
            for (k, v) in extras {
                s.push_str(&format!(";{k}={v}"));
            }
        }
        s
    }
}

/// `/zookeeper/quota<path>`, joined as text as zkCli joins it (so `bad` gives a valid
/// path that does not exist, and `/` one that is not valid).
fn quota_path(path: &str) -> String {
    format!("{QUOTA_ROOT}{path}")
}

fn limit_path(path: &str) -> String {
    format!("{QUOTA_ROOT}{path}/{LIMIT_NODE}")
}

fn stat_path(path: &str) -> String {
    format!("{QUOTA_ROOT}{path}/{STAT_NODE}")
}

/// The one flag of a zkCli option group given on the line (repeating it is allowed, as in
/// zkCli's parser), or zkCli's complaint about a second one.
fn group_choice(p: &Parsed, group: &[char]) -> Result<Option<char>, CmdError> {
    let mut selected = None;
    for f in p.letters().filter(|f| group.contains(f)) {
        match selected {
            None => selected = Some(f),
            Some(s) if s == f => {}
            Some(s) => {
                return Err(CmdError::Usage(format!(
                    "The option '{f}' was specified but an option from this group has already been selected: '{s}'"
                )))
            }
        }
    }
    Ok(selected)
}

/// The limit `setquota` sets: counts are positive ints, byte sizes non-negative longs.
fn quota_value(flag: char, text: &str) -> Result<i64, CmdError> {
    let bad_number =
        || CmdError::Failed("NumberFormatException happens when parsing the option value".into());
    if flag == 'n' || flag == 'N' {
        let count: i32 = text.parse().map_err(|_| bad_number())?;
        if count <= 0 {
            return Err(CmdError::Failed(
                "the num quota must be greater than zero".into(),
            ));
        }
        Ok(count.into())
    } else {
        let bytes: i64 = text.parse().map_err(|_| bad_number())?;
        if bytes < 0 {
            return Err(CmdError::Failed(
                "the bytes quota must be greater than or equal to zero".into(),
            ));
        }
        Ok(bytes)
    }
}

/// zkCli's warnings (on stdout) when a new limit is already below the current usage.
fn warn_if_exceeded(limits: &StatsTrack, usage: &StatsTrack) {
    let below = |soft: &str, hard: &str, used: i64| {
        let under = |limit: i64| limit > -1 && limit < used;
        under(limits.get(soft)) || under(limits.get(hard))
    };
    if below(COUNT, COUNT_HARD, usage.get(COUNT)) {
        outln(&format!(
            "[Warning]: the count quota you create is less than the existing count:{}",
            usage.get(COUNT)
        ));
    }
    if below(BYTES, BYTES_HARD, usage.get(BYTES)) {
        outln(&format!(
            "[Warning]: the bytes quota you create is less than the existing bytes:{}",
            usage.get(BYTES)
        ));
    }
}

async fn read_track(client: &Client, path: &str) -> Result<StatsTrack, CmdError> {
    let (data, _) = client.get_data(path).await.map_err(failed(path))?;
    StatsTrack::parse(&data).map_err(CmdError::Failed)
}

/// Creates a persistent node with null data and the open ACL, as zkCli creates the quota
/// tree's inner nodes; one that already exists is fine.
async fn create_null(client: &Client, path: &str) -> Result<(), CmdError> {
    match client
        .create_opt(path, None, CreateOptions::new(CreateMode::Persistent))
        .await
    {
        Ok(_) | Err(Error::Zk(ZkError::NodeExists)) => Ok(()),
        Err(e) => Err(failed(path)(e)),
    }
}

/// zkCli's refusal of a quota on `path` while a node below it has one: walks the quota tree
/// under `path` depth first, children in name order, reporting the first node (in post-order)
/// that holds a limits node. An explicit stack: the walk is as deep as the tree.
async fn check_no_child_quota(client: &Client, path: &str) -> Result<(), CmdError> {
    enum Visit {
        Enter(String),
        Leave(String, bool),
    }
    let root = quota_path(path);
    let mut stack = vec![Visit::Enter(root.clone())];
    while let Some(visit) = stack.pop() {
        match visit {
            Visit::Enter(node) => {
                let mut children = match client.children(&node).await {
                    Ok((c, _)) => c,
                    // Gone (or never there): nothing below it holds a quota.
                    Err(Error::Zk(ZkError::NoNode)) => continue,
                    Err(e) => return Err(failed(&node)(e)),
                };
                children.sort();
                let has_limits = children.iter().any(|c| c == LIMIT_NODE);
                let base = node.clone();
                stack.push(Visit::Leave(node, has_limits));
                for child in children.into_iter().rev() {
                    stack.push(Visit::Enter(format!("{base}/{child}")));
                }
            }
            Visit::Leave(node, has_limits) => {
                if has_limits && node != root {
                    return Err(CmdError::Failed(format!(
                        "{path} has a child {} which has a quota",
                        &node[QUOTA_ROOT.len()..]
                    )));
                }
            }
        }
    }
    Ok(())
}

/// zkCli's refusal of a quota on `path` while an ancestor has one. Like zkCli, it stops at the
/// first ancestor without a quota-tree node or with no children there.
async fn check_no_parent_quota(client: &Client, path: &str) -> Result<(), CmdError> {
    let own = quota_path(path);
    let names: Vec<&str> = path.split('/').skip(1).collect();
    let mut at = QUOTA_ROOT.to_string();
    for name in names.iter().take(names.len().saturating_sub(1)) {
        at.push('/');
        at.push_str(name);
        let children = match client.children(&at).await {
            Ok((c, _)) => c,
            Err(Error::Zk(ZkError::NoNode)) => return Ok(()),
            Err(e) => return Err(failed(&at)(e)),
        };
        if children.is_empty() {
            return Ok(());
        }
        if at != own && children.iter().any(|c| c == LIMIT_NODE) {
            return Err(CmdError::Failed(format!(
                "{path} has a parent {} which has a quota",
                &at[QUOTA_ROOT.len()..]
            )));
        }
    }
    Ok(())
}

/// Sets (or, if `path` has a quota already, changes) one limit of the quota on `path`.
async fn set_quota(client: &Client, path: &str, key: &str, value: i64) -> CmdResult {
    match client.exists(path).await {
        Ok(Some(_)) => {}
        Ok(None) => return Err(CmdError::Failed(format!("{path} does not exist."))),
        Err(e) => return Err(failed(path)(e)),
    }
    check_no_child_quota(client, path).await?;
    check_no_parent_quota(client, path).await?;
    if client
        .exists(QUOTA_ROOT)
        .await
        .map_err(failed(QUOTA_ROOT))?
        .is_none()
    {
        create_null(client, QUOTA_ROOT).await?;
    }
    let mut at = QUOTA_ROOT.to_string();
    for name in path.split('/').filter(|n| !n.is_empty()) {
        at.push('/');
        at.push_str(name);
        if client.exists(&at).await.map_err(failed(&at))?.is_none() {
            create_null(client, &at).await?;
        }
    }
    let (limits_path, stats_path) = (limit_path(path), stat_path(path));
    if client
        .exists(&limits_path)
        .await
        .map_err(failed(&limits_path))?
        .is_none()
    {
        // A new quota names every limit, the ones not set as -1.
        let mut limits = StatsTrack::default();
        for (_, k) in QUOTA_FLAGS {
            limits.set(k, -1);
        }
        limits.set(key, value);
        let create = |p: String, text: String| async move {
            client
                .create(&p, text.as_bytes(), CreateMode::Persistent)
                .await
                .map_err(failed(&p))
        };
        create(limits_path.clone(), limits.render()).await?;
        // The server replaces these zeros with the subtree's real usage.
        create(stats_path.clone(), "count=0,bytes=0".into()).await?;
        let limits = read_track(client, &limits_path).await?;
        let usage = read_track(client, &stats_path).await?;
        warn_if_exceeded(&limits, &usage);
    } else {
        let mut limits = read_track(client, &limits_path).await?;
        limits.set(key, value);
        let usage = read_track(client, &stats_path).await?;
        warn_if_exceeded(&limits, &usage);
        client
            .set_data(&limits_path, limits.render().as_bytes(), None)
            .await
            .map_err(failed(&limits_path))?;
    }
    Ok(())
}

/// Removes the quota on `path` (`key` None), or sets one of its limits back to -1.
async fn del_quota(client: &Client, path: &str, key: Option<&str>) -> CmdResult {
    let limits_path = limit_path(path);
    if client
        .exists(&limits_path)
        .await
        .map_err(failed(&limits_path))?
        .is_none()
    {
        outln(&format!("Quota does not exist for {path}"));
        return Ok(());
    }
    let mut limits = read_track(client, &limits_path).await?;
    if let Some(key) = key {
        limits.set(key, -1);
        return client
            .set_data(&limits_path, limits.render().as_bytes(), None)
            .await
            .map(|_| ())
            .map_err(failed(&limits_path));
    }
    let own = quota_path(path);
    let (children, _) = client.children(&own).await.map_err(failed(&own))?;
    for child in children {
        let p = format!("{own}/{child}");
        client.delete(&p, None).await.map_err(failed(&p))?;
    }
    // Then the quota tree's nodes that led only here, up to the quota root.
    let mut at = own;
    while at != QUOTA_ROOT {
        let (children, _) = client.children(&at).await.map_err(failed(&at))?;
        if !children.is_empty() {
            break;
        }
        client.delete(&at, None).await.map_err(failed(&at))?;
        match at.rfind('/') {
            Some(i) => at.truncate(i),
            None => break,
        }
    }
    Ok(())
}

impl Shell {
    /// `setquota -n|-b|-N|-B val path`.
    pub(super) fn setquota(&mut self, words: &[String]) -> CmdResult {
        let p = parse_flags(words, &[('n', true), ('b', true), ('N', true), ('B', true)])
            .map_err(CmdError::Usage)?;
        let flags: Vec<char> = QUOTA_FLAGS.iter().map(|(f, _)| *f).collect();
        let Some(flag) = group_choice(&p, &flags)? else {
            return Err(CmdError::Usage(MISSING_QUOTA_FLAG.into()));
        };
        if p.positional.len() < 2 {
            return Err(CmdError::Usage(usage_of("setquota")));
        }
        let path = p.positional[1].clone();
        if path.starts_with(QUOTA_ROOT) {
            return Err(CmdError::Failed(format!(
                "cannot set a quota under the path: {QUOTA_ROOT}"
            )));
        }
        let value = quota_value(flag, p.value(flag).unwrap_or_default())?;
        let key = QUOTA_FLAGS
            .iter()
            .find(|(f, _)| *f == flag)
            .map(|(_, k)| *k)
            .unwrap_or(COUNT);
        let client = self.client(&path)?;
        self.rt.block_on(set_quota(&client, &path, key, value))
    }

    /// `listquota path`: the limits and the usage, as zkCli prints them.
    pub(super) fn listquota(&mut self, words: &[String]) -> CmdResult {
        let p = self.flags(words, &[], 2)?;
        let path = p.positional[1].clone();
        super::errln(&format!("absolute path is {}", limit_path(&path)));
        let client = self.client(&path)?;
        let tracks = self.rt.block_on(async {
            let mut tracks = Vec::new();
            for node in [limit_path(&path), stat_path(&path)] {
                match client.get_data(&node).await {
                    Ok((data, _)) => tracks.push(StatsTrack::parse(&data)),
                    Err(Error::Zk(ZkError::NoNode)) => return Ok(None),
                    Err(e) => return Err(CmdError::Failed(describe(&e, &node))),
                }
            }
            Ok(Some(tracks))
        })?;
        let Some(tracks) = tracks else {
            return Err(CmdError::Failed(format!(
                "quota for {path} does not exist."
            )));
        };
        for (i, track) in tracks.into_iter().enumerate() {
            let track = track.map_err(CmdError::Failed)?;
            let what = if i == 0 { "quota" } else { "stat" };
            outln(&format!("Output {what} for {path} {}", track.render()));
        }
        Ok(())
    }

    /// `delquota [-n|-b|-N|-B] path`: one limit back to "none", or the whole quota.
    pub(super) fn delquota(&mut self, words: &[String]) -> CmdResult {
        let p = parse_flags(
            words,
            &[('n', false), ('b', false), ('N', false), ('B', false)],
        )
        .map_err(CmdError::Usage)?;
        let flags: Vec<char> = QUOTA_FLAGS.iter().map(|(f, _)| *f).collect();
        let flag = group_choice(&p, &flags)?;
        if p.positional.len() < 2 {
            return Err(CmdError::Usage(usage_of("delquota")));
        }
        let path = p.positional[1].clone();
        let key = flag.and_then(|f| QUOTA_FLAGS.iter().find(|(g, _)| *g == f).map(|(_, k)| *k));
        let client = self.client(&path)?;
        self.rt.block_on(del_quota(&client, &path, key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_track_reads_and_writes_zookeeper_text() {
        let t =
            StatsTrack::parse(b"count=5,bytes=-1=;byteHardLimit=100;countHardLimit=-1").unwrap();
        assert_eq!(t.get(COUNT), 5);
        assert_eq!(t.get(BYTES), -1);
        assert_eq!(t.get(BYTES_HARD), 100);
        assert_eq!(t.get("missing"), -1);
        assert_eq!(
            t.render(),
            "count=5,bytes=-1=;byteHardLimit=100;countHardLimit=-1"
        );
        // Only count and bytes: no marker, as the server writes usage.
        let u = StatsTrack::parse(b"count=2,bytes=3").unwrap();
        assert_eq!(u.render(), "count=2,bytes=3");
        // Empty values read as -1; an empty text has nothing.
        assert_eq!(StatsTrack::parse(b"count=,bytes=7").unwrap().get(COUNT), -1);
        assert_eq!(
            StatsTrack::parse(b"").unwrap().render(),
            "count=-1,bytes=-1"
        );
        assert!(StatsTrack::parse(b"count=x").is_err());
        assert!(StatsTrack::parse(b"count").is_err());
    }

    #[test]
    fn quota_values_follow_zkcli_rules() {
        assert_eq!(quota_value('n', "5").unwrap(), 5);
        assert!(
            matches!(quota_value('n', "0"), Err(CmdError::Failed(m)) if m.contains("greater than zero"))
        );
        assert!(
            matches!(quota_value('N', "3000000000"), Err(CmdError::Failed(m)) if m.starts_with("NumberFormatException"))
        );
        assert_eq!(quota_value('b', "0").unwrap(), 0);
        assert_eq!(quota_value('B', "3000000000").unwrap(), 3_000_000_000);
        assert!(
            matches!(quota_value('b', "-1"), Err(CmdError::Failed(m)) if m.contains("greater than or equal to zero"))
        );
    }

    #[test]
    fn quota_paths() {
        assert_eq!(limit_path("/a/b"), "/zookeeper/quota/a/b/zookeeper_limits");
        assert_eq!(stat_path("/a"), "/zookeeper/quota/a/zookeeper_stats");
        assert_eq!(quota_path("bad"), "/zookeeper/quotabad");
    }
}
