//! The ZooKeeper client protocol ("jute") as Corral speaks it: primitive encoding ([`jute`]),
//! records ([`records`]), constants ([`consts`]), error codes ([`error`]), framing ([`frame`]),
//! typed requests ([`request`]) and replies ([`response`]).
//!
//! This crate does no I/O. Server and client both build on it, so the two can never disagree
//! about a byte.

pub mod consts;
pub mod error;
pub mod frame;
pub mod jute;
pub mod path;
pub mod records;
pub mod request;
pub mod response;

pub use consts::{
    perms, xid, AddWatchMode, CreateMode, EventType, KeeperState, OpCode, WatcherType,
};
pub use error::ZkError;
pub use jute::{DecodeError, Jute, Reader, Writer};
pub use request::{Connect, Request, RequestError};
pub use response::{OpResult, Response};

/// A transaction id: the position of a write in the global order.
pub type Zxid = i64;
/// A session id.
pub type SessionId = i64;
