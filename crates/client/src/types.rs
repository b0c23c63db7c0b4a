//! Plain data types of the client API: session states, events, create options, ACL helpers and
//! the connect string.

use std::time::Duration;

use corral_proto::records::{Acl, Id};
use corral_proto::{perms, CreateMode, EventType};
use sha1::{Digest, Sha1};

use crate::error::Error;
use crate::path::Chroot;

/// The state of the client's session, published on its own channel
/// ([`crate::Client::state_watcher`]), separate from node events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SessionState {
    /// Establishing the first connection.
    Connecting,
    Connected,
    /// Connected to a server that serves reads only (it lost its quorum).
    ConnectedReadOnly,
    /// The connection broke; the client is reconnecting and the session may still be alive.
    Disconnected,
    /// The server declared the session expired. Final.
    Expired,
    /// The server rejected an authentication. Final.
    AuthFailed,
    /// The client was closed. Final.
    Closed,
}

impl SessionState {
    pub fn is_connected(self) -> bool {
        matches!(
            self,
            SessionState::Connected | SessionState::ConnectedReadOnly
        )
    }
    /// Whether no transition can follow.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            SessionState::Expired | SessionState::AuthFailed | SessionState::Closed
        )
    }
    /// The error an operation sees in this (terminal) state.
    pub(crate) fn terminal_error(self) -> Error {
        match self {
            SessionState::Expired => Error::SessionExpired,
            SessionState::AuthFailed => Error::AuthFailed,
            _ => Error::Closed,
        }
    }
}

/// A change to a node, delivered to a watcher.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NodeEvent {
    pub event_type: EventType,
    /// The node's path, relative to the client's chroot.
    pub path: String,
    /// The zxid of the transaction that triggered the event, when the server says it (ZooKeeper
    /// 3.9 and Corral do; ZooKeeper 3.8 does not).
    pub zxid: Option<i64>,
}

/// An item of a persistent watch stream: a node event, or a change of the session's state
/// (so a consumer learns of a disconnect without the stream failing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    Node(NodeEvent),
    Session(SessionState),
    /// Events of this watch may be missing: after a reconnect the server could not replay
    /// every change made while the client was away (the change left the server's replay
    /// window, the server restarted or rebuilt its state, or another ensemble member took
    /// over). Re-read what the watch covers. Only a Corral server sends it; it follows the
    /// `Session(Connected)` item of that reconnect and any events the server did replay.
    MayHaveMissed,
}

/// Modes of a persistent watch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WatchMode {
    /// Data changes, creation and deletion of the node, and changes of its children list.
    NonRecursive,
    /// Data changes, creation and deletion of the node and of every descendant.
    Recursive,
}

/// How to create a node: mode, ACL and (for TTL modes) time to live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateOptions {
    pub mode: CreateMode,
    pub acl: Vec<Acl>,
    pub ttl_ms: Option<i64>,
}

impl CreateOptions {
    /// `mode` with the open ACL (`world:anyone` may do anything).
    pub fn new(mode: CreateMode) -> Self {
        CreateOptions {
            mode,
            acl: acl::open_unsafe(),
            ttl_ms: None,
        }
    }
    pub fn acl(mut self, acl: Vec<Acl>) -> Self {
        self.acl = acl;
        self
    }
    /// Time to live for the TTL modes: the server removes the node once it has been childless
    /// and unmodified for this long.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl_ms = Some(ttl.as_millis() as i64);
        self
    }

    pub(crate) fn validate(&self) -> Result<(), Error> {
        if self.acl.is_empty() {
            return Err(Error::BadArguments("ACL must not be empty".into()));
        }
        match (self.mode.is_ttl(), self.ttl_ms) {
            (true, Some(ttl)) if ttl > 0 => Ok(()),
            (true, _) => Err(Error::BadArguments("TTL modes need a positive TTL".into())),
            (false, Some(_)) => Err(Error::BadArguments(
                "a TTL needs CreateMode::PersistentWithTtl or PersistentSequentialWithTtl".into(),
            )),
            (false, None) => Ok(()),
        }
    }
}

impl From<CreateMode> for CreateOptions {
    fn from(mode: CreateMode) -> Self {
        CreateOptions::new(mode)
    }
}

/// Common ACLs and the digest helper.
pub mod acl {
    use super::*;

    fn one(perms: i32, scheme: &str, id: &str) -> Acl {
        Acl {
            perms,
            id: Id {
                scheme: scheme.into(),
                id: id.into(),
            },
        }
    }
    /// Anyone may do anything.
    pub fn open_unsafe() -> Vec<Acl> {
        vec![one(perms::ALL, "world", "anyone")]
    }
    /// Anyone may read.
    pub fn read_unsafe() -> Vec<Acl> {
        vec![one(perms::READ, "world", "anyone")]
    }
    /// All permissions for the identities the session authenticated as.
    pub fn creator_all() -> Vec<Acl> {
        vec![one(perms::ALL, "auth", "")]
    }
    /// An ACL entry for a `digest` user and password.
    pub fn digest(perms: i32, user: &str, password: &str) -> Acl {
        one(perms, "digest", &digest_id(user, password))
    }
    /// `user:base64(sha1(user:password))`, the id form of the digest scheme.
    pub fn digest_id(user: &str, password: &str) -> String {
        use base64::Engine;
        let hash = Sha1::digest(format!("{user}:{password}").as_bytes());
        format!(
            "{user}:{}",
            base64::engine::general_purpose::STANDARD.encode(hash)
        )
    }
}

/// A parsed connect string: `host1:2181,host2:2181/chroot`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectString {
    pub hosts: Vec<String>,
    pub chroot: Chroot,
}

impl ConnectString {
    pub fn parse(s: &str) -> Result<ConnectString, Error> {
        let (hosts_part, chroot) = match s.find('/') {
            Some(i) => (&s[..i], Some(&s[i..])),
            None => (s, None),
        };
        let mut hosts = Vec::new();
        for h in hosts_part.split(',') {
            let h = h.trim();
            if h.is_empty() {
                continue;
            }
            // A host without a port gets ZooKeeper's default; "[v6]:port" stays as written.
            let has_port = match h.rfind(':') {
                Some(i) => h.starts_with('[') && h[..i].ends_with(']') || !h.starts_with('['),
                None => false,
            };
            hosts.push(if has_port {
                h.to_string()
            } else {
                format!("{h}:2181")
            });
        }
        if hosts.is_empty() {
            return Err(Error::BadArguments(format!(
                "no hosts in connect string {s:?}"
            )));
        }
        Ok(ConnectString {
            hosts,
            chroot: Chroot::new(chroot)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_strings() {
        let c = ConnectString::parse("a:1,b:2/app/x").unwrap();
        assert_eq!(c.hosts, vec!["a:1", "b:2"]);
        assert_eq!(c.chroot.as_str(), "/app/x");
        let c = ConnectString::parse("localhost").unwrap();
        assert_eq!(c.hosts, vec!["localhost:2181"]);
        assert_eq!(c.chroot.as_str(), "/");
        assert!(ConnectString::parse("/x").is_err());
        assert!(ConnectString::parse("a:1/x/").is_err());
    }

    #[test]
    fn digest_ids_match_zookeeper() {
        // The value ZooKeeper's DigestAuthenticationProvider.generateDigest gives for "super:test".
        assert_eq!(
            acl::digest_id("super", "test"),
            "super:D/InIHSb7yEEbrWz8b9l71RjZJU="
        );
    }

    #[test]
    fn create_options_check_ttl() {
        assert!(CreateOptions::new(CreateMode::PersistentWithTtl)
            .validate()
            .is_err());
        assert!(CreateOptions::new(CreateMode::PersistentWithTtl)
            .ttl(Duration::from_secs(1))
            .validate()
            .is_ok());
        assert!(CreateOptions::new(CreateMode::Persistent)
            .ttl(Duration::from_secs(1))
            .validate()
            .is_err());
    }
}
