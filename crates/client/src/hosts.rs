//! The client addresses of an ensemble, read from the text ZooKeeper 3.5+ keeps in
//! `/zookeeper/config`:
//!
//! ```text
//! server.1=10.0.0.1:2888:3888:participant;0.0.0.0:2181
//! server.2=10.0.0.2:2888:3888:participant;10.0.0.2:2181
//! server.3=10.0.0.3:2888:3888:observer;2181
//! version=100000000
//! ```
//!
//! Each `server.N` line is `host:peerPort:electionPort[:role]` then, after `;`, the client
//! address as `[clientHost:]clientPort`. A member without a client part serves no clients and
//! is left out. A wildcard or missing client host means "the member's own host", as
//! ZooKeeper's Java client reads it.

use crate::error::Error;

/// The client addresses of an ensemble's members, and the config version they come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnsembleHosts {
    /// `host:port` per member that serves clients (observers included), in id order.
    pub hosts: Vec<String>,
    /// The `version=` line (hexadecimal in the text), if there was one.
    pub version: Option<u64>,
}

impl EnsembleHosts {
    /// The hosts as a connect string (no chroot), for [`crate::Client::set_hosts`] or
    /// [`crate::Client::builder`].
    pub fn connect_string(&self) -> String {
        self.hosts.join(",")
    }
}

fn bad(line: &str, why: &str) -> Error {
    Error::BadArguments(format!("ensemble config line {line:?}: {why}"))
}

/// Splits `host:rest` where host may be a bracketed IPv6 address; returns (host, rest after
/// the colon). `None` when there is no colon after the host.
fn split_host(s: &str) -> Option<(&str, &str)> {
    if let Some(inner) = s.strip_prefix('[') {
        let end = inner.find(']')?;
        let rest = inner[end + 1..].strip_prefix(':')?;
        Some((&s[..end + 2], rest))
    } else {
        s.split_once(':')
    }
}

fn is_wildcard(host: &str) -> bool {
    matches!(host, "0.0.0.0" | "[::]" | "[0:0:0:0:0:0:0:0]")
}

fn parse_port(line: &str, text: &str) -> Result<u16, Error> {
    match text.trim().parse::<u16>() {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(bad(line, "the client port is not a port number")),
    }
}

/// Parses the text of `/zookeeper/config` (or a dynamic config file) into client addresses.
/// Lines other than `server.N=` and `version=` are ignored, as ZooKeeper does with unknown
/// keys in that text.
pub fn parse_ensemble_config(text: &str) -> Result<EnsembleHosts, Error> {
    let mut members: Vec<(u64, String)> = Vec::new();
    let mut version = None;
    for raw in text.lines() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            return Err(bad(line, "expected key=value"));
        };
        let (key, value) = (key.trim(), value.trim());
        if key == "version" {
            let v = u64::from_str_radix(value, 16)
                .map_err(|_| bad(line, "the version is not hexadecimal"))?;
            version = Some(v);
            continue;
        }
        let Some(id) = key.strip_prefix("server.") else {
            continue;
        };
        let id: u64 = id
            .parse()
            .map_err(|_| bad(line, "the server id is not a number"))?;
        let (server_part, client_part) = match value.split_once(';') {
            Some((s, c)) => (s.trim(), Some(c.trim())),
            None => (value, None),
        };
        let Some(client_part) = client_part.filter(|c| !c.is_empty()) else {
            // No client address: the member serves no clients.
            continue;
        };
        let (member_host, _) = split_host(server_part)
            .ok_or_else(|| bad(line, "expected host:peerPort:electionPort"))?;
        if member_host.is_empty() {
            return Err(bad(line, "empty member host"));
        }
        let host_port = match split_host(client_part) {
            Some((host, port)) => {
                let port = parse_port(line, port)?;
                let host = if host.is_empty() || is_wildcard(host) {
                    member_host
                } else {
                    host
                };
                format!("{host}:{port}")
            }
            None => format!("{member_host}:{}", parse_port(line, client_part)?),
        };
        if members.iter().any(|(other, _)| *other == id) {
            return Err(bad(line, "the server id appears twice"));
        }
        members.push((id, host_port));
    }
    members.sort_by_key(|(id, _)| *id);
    Ok(EnsembleHosts {
        hosts: members.into_iter().map(|(_, h)| h).collect(),
        version,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_zookeeper_config_text() {
        let text = "server.2=10.0.0.2:2888:3888:participant;10.0.0.2:2182\n\
                    server.1=10.0.0.1:2888:3888:participant;0.0.0.0:2181\n\
                    server.3=10.0.0.3:2888:3888:observer;2183\n\
                    version=100000000";
        let hosts = parse_ensemble_config(text).unwrap();
        assert_eq!(
            hosts.hosts,
            ["10.0.0.1:2181", "10.0.0.2:2182", "10.0.0.3:2183"],
            "id order; wildcard and missing client hosts become the member's host"
        );
        assert_eq!(hosts.version, Some(0x1_0000_0000));
        assert_eq!(
            hosts.connect_string(),
            "10.0.0.1:2181,10.0.0.2:2182,10.0.0.3:2183"
        );
    }

    #[test]
    fn members_without_a_client_port_are_left_out() {
        let text = "server.1=a:1:2;127.0.0.1:3\nserver.2=b:1:2:participant\nserver.3=c:1:2;\n";
        let hosts = parse_ensemble_config(text).unwrap();
        assert_eq!(hosts.hosts, ["127.0.0.1:3"]);
        assert_eq!(hosts.version, None);
    }

    #[test]
    fn ipv6_addresses_keep_their_brackets() {
        let text = "server.1=[::1]:2888:3888:participant;[::1]:2181\n\
                    server.2=[fe80::2]:2888:3888;[::]:2182\n";
        let hosts = parse_ensemble_config(text).unwrap();
        assert_eq!(hosts.hosts, ["[::1]:2181", "[fe80::2]:2182"]);
    }

    #[test]
    fn other_keys_and_blank_lines_are_ignored() {
        let text = "\n# comment\nclientPort=2181\nserver.1=a:1:2;5\n\n";
        assert_eq!(parse_ensemble_config(text).unwrap().hosts, ["a:5"]);
        assert_eq!(
            parse_ensemble_config("").unwrap().hosts,
            Vec::<String>::new()
        );
    }

    #[test]
    fn malformed_lines_are_errors() {
        for text in [
            "server.x=a:1:2;3",
            "server.1=a:1:2;notaport",
            "server.1=a:1:2;a:0",
            "server.1=a:1:2;a:70000",
            "server.1=nocolon;3",
            "version=xyz",
            "just text",
            "server.1=a:1:2;3\nserver.1=b:1:2;4",
        ] {
            assert!(
                matches!(parse_ensemble_config(text), Err(Error::BadArguments(_))),
                "{text:?} was accepted"
            );
        }
    }
}
