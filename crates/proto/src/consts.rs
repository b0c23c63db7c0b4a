//! Numeric constants of the protocol: opcodes, create modes, permissions, event types, keeper
//! states, watcher types and the reserved xids.

use crate::jute::DecodeError;

macro_rules! int_enum {
    ($(#[$meta:meta])* $name:ident : $what:literal { $($(#[$vmeta:meta])* $var:ident = $val:expr),* $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(i32)]
        pub enum $name { $($(#[$vmeta])* $var = $val),* }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$var),*];
            pub fn code(self) -> i32 { self as i32 }
        }

        impl TryFrom<i32> for $name {
            type Error = DecodeError;
            fn try_from(v: i32) -> Result<Self, DecodeError> {
                match v {
                    $($val => Ok($name::$var),)*
                    _ => Err(DecodeError::UnknownValue { what: $what, value: v }),
                }
            }
        }
    };
}

int_enum! {
    /// Request types (ZooDefs.OpCode).
    OpCode: "opcode" {
        Notification = 0,
        Create = 1,
        Delete = 2,
        Exists = 3,
        GetData = 4,
        SetData = 5,
        GetAcl = 6,
        SetAcl = 7,
        GetChildren = 8,
        Sync = 9,
        Ping = 11,
        GetChildren2 = 12,
        Check = 13,
        Multi = 14,
        Create2 = 15,
        Reconfig = 16,
        CheckWatches = 17,
        RemoveWatches = 18,
        CreateContainer = 19,
        DeleteContainer = 20,
        CreateTtl = 21,
        MultiRead = 22,
        Auth = 100,
        SetWatches = 101,
        Sasl = 102,
        GetEphemerals = 103,
        GetAllChildrenNumber = 104,
        SetWatches2 = 105,
        AddWatch = 106,
        WhoAmI = 107,
        CreateSession = -10,
        CloseSession = -11,
        Error = -1,
    }
}

int_enum! {
    /// Node creation flags (CreateMode).
    CreateMode: "create mode" {
        Persistent = 0,
        Ephemeral = 1,
        PersistentSequential = 2,
        EphemeralSequential = 3,
        Container = 4,
        PersistentWithTtl = 5,
        PersistentSequentialWithTtl = 6,
    }
}

impl CreateMode {
    pub fn is_ephemeral(self) -> bool {
        matches!(
            self,
            CreateMode::Ephemeral | CreateMode::EphemeralSequential
        )
    }
    pub fn is_sequential(self) -> bool {
        matches!(
            self,
            CreateMode::PersistentSequential
                | CreateMode::EphemeralSequential
                | CreateMode::PersistentSequentialWithTtl
        )
    }
    pub fn is_container(self) -> bool {
        self == CreateMode::Container
    }
    pub fn is_ttl(self) -> bool {
        matches!(
            self,
            CreateMode::PersistentWithTtl | CreateMode::PersistentSequentialWithTtl
        )
    }
}

int_enum! {
    /// Types of node events (Watcher.Event.EventType).
    EventType: "event type" {
        None = -1,
        NodeCreated = 1,
        NodeDeleted = 2,
        NodeDataChanged = 3,
        NodeChildrenChanged = 4,
        DataWatchRemoved = 5,
        ChildWatchRemoved = 6,
        PersistentWatchRemoved = 7,
    }
}

int_enum! {
    /// Client connection states carried by events (Watcher.Event.KeeperState).
    KeeperState: "keeper state" {
        Unknown = -1,
        Disconnected = 0,
        NoSyncConnected = 1,
        SyncConnected = 3,
        AuthFailed = 4,
        ConnectedReadOnly = 5,
        SaslAuthenticated = 6,
        Expired = -112,
        Closed = 7,
    }
}

int_enum! {
    /// Which watches checkWatches/removeWatches address (Watcher.WatcherType).
    WatcherType: "watcher type" {
        Children = 1,
        Data = 2,
        Any = 3,
        Persistent = 4,
        PersistentRecursive = 5,
    }
}

int_enum! {
    /// Modes of addWatch (AddWatchMode).
    AddWatchMode: "add watch mode" {
        Persistent = 0,
        PersistentRecursive = 1,
    }
}

/// Permission bits (ZooDefs.Perms).
pub mod perms {
    pub const READ: i32 = 1;
    pub const WRITE: i32 = 1 << 1;
    pub const CREATE: i32 = 1 << 2;
    pub const DELETE: i32 = 1 << 3;
    pub const ADMIN: i32 = 1 << 4;
    pub const ALL: i32 = READ | WRITE | CREATE | DELETE | ADMIN;
}

/// Reserved xids of server-initiated or special replies.
pub mod xid {
    /// A watch notification.
    pub const NOTIFICATION: i32 = -1;
    /// A ping and its reply.
    pub const PING: i32 = -2;
    /// An auth packet and its reply.
    pub const AUTH: i32 = -4;
    /// A setWatches request and its reply.
    pub const SET_WATCHES: i32 = -8;
}

/// The highest protocol version clients send in ConnectRequest.
pub const PROTOCOL_VERSION: i32 = 0;

/// Corral's opt-in extensions to the wire protocol.
///
/// A client opts in by appending [`CONNECT_MAGIC`](ext::CONNECT_MAGIC) and a feature mask
/// (two ints) to its ConnectRequest, after the readOnly byte. Apache ZooKeeper (3.8's
/// `ZooKeeperServer.processConnectRequest`, 3.9's `ProtocolManager`) reads the request and the
/// readOnly byte and never looks at the rest of the frame, so the same client works against
/// both. A Corral server sends extension frames only to connections that asked for them, so
/// third-party clients never see one.
pub mod ext {
    /// Marks the extension block after the readOnly byte ("CRAL").
    pub const CONNECT_MAGIC: i32 = 0x4352_414c;
    /// Feature bit: after a reconnect, tell the client which re-registered persistent watches
    /// may have missed events (the server could not replay every change since its zxid).
    pub const FEATURE_REPLAY_GAPS: i32 = 1;
    /// Event type of a notification (xid -1) for a persistent or recursive watch path: events
    /// may be missing from that watch, the client should re-read what it watches. Outside
    /// ZooKeeper's event type range, so it is never confused with one of its events.
    pub const EVENT_MAY_HAVE_MISSED: i32 = 0x4352_0001;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opcodes_round_trip_and_unknown_ones_are_errors() {
        for op in OpCode::ALL {
            assert_eq!(OpCode::try_from(op.code()).unwrap(), *op);
        }
        assert!(OpCode::try_from(10).is_err());
        assert!(OpCode::try_from(999).is_err());
    }

    #[test]
    fn create_mode_flags() {
        assert!(CreateMode::EphemeralSequential.is_ephemeral());
        assert!(CreateMode::EphemeralSequential.is_sequential());
        assert!(CreateMode::PersistentSequentialWithTtl.is_ttl());
        assert!(!CreateMode::Container.is_sequential());
    }
}
