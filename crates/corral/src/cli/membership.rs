//! zkCli's ensemble commands: `config` (prints `/zookeeper/config`) and `reconfig` (changes the
//! membership), with zkCli 3.8's flags, output and messages.

use corral_client::{Error, ZkError};
use futures::TryFutureExt;
use serde_json::json;

use super::events::WatchKind;
use super::{describe, format, json_out, out, outln, usage_of, CmdError, CmdResult, Shell};

const CONFIG_NODE: &str = "/zookeeper/config";

/// zkCli's message for a failed call that names no path (reconfig): ZooKeeper's text without
/// the ` for <path>` tail, and its own sentences for the reconfig-specific codes.
fn describe_pathless(e: &Error) -> String {
    match e {
        Error::Zk(ZkError::ReconfigInProgress) => {
            "Another reconfiguration is in progress -- concurrent reconfigs not supported (yet)"
                .into()
        }
        Error::Zk(ZkError::NewConfigNoQuorum) => "No quorum of new config is connected and \
             up-to-date with the leader of last commmitted config - try invoking reconfiguration \
             after new servers are connected and synced"
            .into(),
        // zkCli's per-code sentences end in the (absent) path, printed as `null`.
        e => {
            let text = describe(e, "null");
            match text.strip_suffix(" for null") {
                Some(t) => t.to_string(),
                None => text,
            }
        }
    }
}

/// `config -c`: the config's version, a space, and every member's client address
/// (`host:port`; a bare port listens on `0.0.0.0`), comma-separated. A member without a
/// client address leaves an empty slot, as in zkCli.
fn client_config(text: &str) -> String {
    let mut version = "";
    let mut addrs: Vec<String> = Vec::new();
    for line in text.lines() {
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let (key, value) = (key.trim(), value.trim());
        if key == "version" {
            version = value;
        }
        if !key.starts_with("server.") {
            continue;
        }
        let client = value.split_once(';').map(|(_, c)| c.trim());
        let addr = match client {
            None => String::new(),
            Some(c) => match c.rsplit_once(':') {
                Some((host, port)) => format!("{}:{port}", host.trim_matches(['[', ']'])),
                None => format!("0.0.0.0:{c}"),
            },
        };
        addrs.push(addr);
    }
    format!("{version} {}", addrs.join(","))
}

/// A parsed `reconfig` line.
#[derive(Debug, Default, PartialEq, Eq)]
struct Reconfig {
    stat: bool,
    /// The config version the change applies to (-1: whatever is current).
    from_version: i64,
    joining: String,
    leaving: String,
    members: String,
}

/// Parses `reconfig`'s flags (zkCli's multi-letter options: `-file`, `-members`, `-add`,
/// `-remove`) and applies its refusals, in zkCli's order. `-file` is read here.
fn parse_reconfig(words: &[String]) -> Result<Reconfig, CmdError> {
    let mut stat = false;
    let (mut version, mut file, mut members, mut add, mut remove) = (None, None, None, None, None);
    let mut it = words.iter().skip(1);
    while let Some(w) = it.next() {
        let slot = match w.as_str() {
            "-s" => {
                stat = true;
                continue;
            }
            "-v" => &mut version,
            "-file" => &mut file,
            "-members" => &mut members,
            "-add" => &mut add,
            "-remove" => &mut remove,
            s if s.starts_with('-') && s.len() > 1 => {
                return Err(CmdError::Usage(format!("Unrecognized option: {s}")))
            }
            // zkCli ignores stray words.
            _ => continue,
        };
        let value = it
            .next()
            .ok_or_else(|| CmdError::Usage(format!("Missing argument for option: {}", &w[1..])))?;
        // zkCli keeps the first value of a repeated option.
        slot.get_or_insert_with(|| value.clone());
    }
    let whole = file.is_some() || members.is_some();
    if !whole && add.is_none() && remove.is_none() {
        return Err(CmdError::Usage(usage_of("reconfig")));
    }
    let from_version = match version {
        None => -1,
        Some(v) => i64::from_str_radix(&v, 16).map_err(|_| {
            CmdError::Usage("-v must be followed by a long (configuration version)".into())
        })?,
    };
    if whole && (add.is_some() || remove.is_some()) {
        return Err(CmdError::Usage(
            "Can't use -file or -members together with -add or -remove (mixing incremental and \
             non-incremental modes is not allowed)"
                .into(),
        ));
    }
    if file.is_some() && members.is_some() {
        return Err(CmdError::Usage(
            "Can't use -file and -members together (conflicting non-incremental modes)".into(),
        ));
    }
    let mut members = members.map(|m| m.to_lowercase()).unwrap_or_default();
    if let Some(file) = file {
        members = members_of_file(&file)?;
    }
    Ok(Reconfig {
        stat,
        from_version,
        joining: add.map(|a| a.to_lowercase()).unwrap_or_default(),
        leaving: remove.map(|r| r.to_lowercase()).unwrap_or_default(),
        members,
    })
}

/// The `server.N=...` lines of a dynamic config file, comma-separated (the form a reconfig
/// request carries).
fn members_of_file(file: &str) -> Result<String, CmdError> {
    let text = std::fs::read_to_string(file).map_err(|e| {
        // zkCli glues the path to the reason, which itself starts with the path.
        let reason = e.to_string();
        let reason = match reason.find(" (os error") {
            Some(i) => &reason[..i],
            None => &reason,
        };
        CmdError::Usage(format!("Error processing {file}{file} ({reason})"))
    })?;
    let servers: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("server."))
        .collect();
    if servers.is_empty() {
        return Err(CmdError::Usage(format!(
            "Error processing {file}: it has no server.N lines"
        )));
    }
    Ok(servers.join(","))
}

impl Shell {
    /// `config [-c] [-w] [-s]`: the ensemble's configuration (outside any chroot).
    pub(super) fn config(&mut self, words: &[String]) -> CmdResult {
        let p = self.flags(words, &[('c', false), ('w', false), ('s', false)], 1)?;
        let client = self.client(CONFIG_NODE)?;
        let (data, stat) = self.watched_read(
            CONFIG_NODE,
            p.has('w').then_some(WatchKind::Data),
            client.get_config(),
            client.get_config_w().map_ok(|(d, s, w)| ((d, s), w)),
        )?;
        let text = match &data {
            Some(d) => String::from_utf8_lossy(d).into_owned(),
            None => "null".into(),
        };
        let shown = if p.has('c') {
            client_config(&text)
        } else {
            text
        };
        if self.opts.json {
            let mut v = json!({ "config": shown });
            if p.has('s') {
                v["stat"] = format::stat_json(&stat);
            }
            json_out(&v);
            return Ok(());
        }
        outln(&shown);
        if p.has('s') {
            out(&format::stat_text(&stat));
        }
        Ok(())
    }

    /// `reconfig`: adds and removes members, or replaces the membership; prints the
    /// configuration that was committed.
    pub(super) fn reconfig(&mut self, words: &[String]) -> CmdResult {
        let r = parse_reconfig(words)?;
        let client = self.client(CONFIG_NODE)?;
        let (data, stat) = self
            .rt
            .block_on(client.reconfig(&r.joining, &r.leaving, &r.members, r.from_version))
            .map_err(|e| CmdError::Failed(describe_pathless(&e)))?;
        let text = String::from_utf8_lossy(&data);
        if self.opts.json {
            let mut v = json!({ "config": text });
            if r.stat {
                v["stat"] = format::stat_json(&stat);
            }
            json_out(&v);
            return Ok(());
        }
        outln(&format!("Committed new configuration:\n{text}"));
        if r.stat {
            out(&format::stat_text(&stat));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    fn refusal(line: &str) -> String {
        match parse_reconfig(&words(line)) {
            Err(CmdError::Usage(m)) => m,
            other => panic!("{line}: {other:?}"),
        }
    }

    #[test]
    fn reconfig_flags() {
        let r =
            parse_reconfig(&words("reconfig -s -v 1a -add SERVER.2=H:1:2;3 -remove 4")).unwrap();
        assert_eq!(
            r,
            Reconfig {
                stat: true,
                from_version: 0x1a,
                joining: "server.2=h:1:2;3".into(),
                leaving: "4".into(),
                members: String::new(),
            }
        );
        let r = parse_reconfig(&words("reconfig -members server.1=a:1:2;3")).unwrap();
        assert_eq!(
            (r.from_version, r.members.as_str()),
            (-1, "server.1=a:1:2;3")
        );
        assert!(refusal("reconfig").starts_with("reconfig [-s] [-v version]"));
        assert!(refusal("reconfig -s").starts_with("reconfig [-s]"));
        assert_eq!(
            refusal("reconfig -v zz -add x"),
            "-v must be followed by a long (configuration version)"
        );
        assert!(refusal("reconfig -members x -remove 1").starts_with("Can't use -file or -members"));
        assert!(refusal("reconfig -file f -members x").starts_with("Can't use -file and -members"));
        assert_eq!(refusal("reconfig -add"), "Missing argument for option: add");
        assert_eq!(refusal("reconfig -x 1"), "Unrecognized option: -x");
        assert_eq!(
            refusal("reconfig -file /nonexistent/dyn.cfg"),
            "Error processing /nonexistent/dyn.cfg/nonexistent/dyn.cfg (No such file or directory)"
        );
    }

    #[test]
    fn reconfig_reads_members_from_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("dyn.cfg");
        std::fs::write(
            &f,
            "server.1=127.0.0.1:1:2:participant;127.0.0.1:3\n# note\nserver.2=127.0.0.1:4:5;6\nversion=100000000\n",
        )
        .unwrap();
        let r = parse_reconfig(&words(&format!("reconfig -file {}", f.display()))).unwrap();
        assert_eq!(
            r.members,
            "server.1=127.0.0.1:1:2:participant;127.0.0.1:3,server.2=127.0.0.1:4:5;6"
        );
    }

    #[test]
    fn client_config_lists_client_addresses() {
        let text = "server.1=127.0.0.1:1:2:participant;127.0.0.1:2181\n\
                    server.2=h:3:4:observer;2182\nserver.3=h:5:6\nversion=10000000a";
        assert_eq!(
            client_config(text),
            "10000000a 127.0.0.1:2181,0.0.0.0:2182,"
        );
        assert_eq!(client_config(""), " ");
    }

    #[test]
    fn pathless_errors_read_like_zkcli() {
        assert_eq!(
            describe_pathless(&Error::Zk(ZkError::ReconfigDisabled)),
            "KeeperErrorCode = Reconfig is disabled"
        );
        assert_eq!(
            describe_pathless(&Error::Zk(ZkError::NoAuth)),
            "Insufficient permission : null"
        );
        assert!(describe_pathless(&Error::Zk(ZkError::ReconfigInProgress)).starts_with("Another"));
    }
}
