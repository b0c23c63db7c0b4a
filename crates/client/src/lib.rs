//! An async client for ZooKeeper-protocol servers (Corral and Apache ZooKeeper), with watch
//! streams and coordination recipes.
//!
//! ```no_run
//! # async fn demo() -> Result<(), corral_client::Error> {
//! use corral_client::{Client, CreateMode, WatchMode};
//! let client = Client::connect("127.0.0.1:2181/app").await?;
//! client.create("/config", b"v1", CreateMode::Persistent).await?;
//! let (data, stat, changed) = client.get_data_w("/config").await?;
//! let mut all = client.watch("/", WatchMode::Recursive).await?;
//! # Ok(()) }
//! ```
//!
//! One session per [`Client`]; requests are pipelined on its connection. When the connection
//! breaks the client reconnects (to another host if there are several), re-authenticates and
//! re-registers every watch; its session state ([`SessionState`]) is published on its own
//! channel, apart from node events.

mod client;
mod error;
mod hosts;
mod multi;
pub mod path;
pub mod recipes;
mod session;
mod types;
mod watch;

pub use client::{Client, ClientBuilder};
pub use corral_proto::records::{Acl, ClientInfo, Id, Stat};
pub use corral_proto::{perms, CreateMode, EventType, ZkError};
pub use error::{Error, Result};
pub use hosts::{parse_ensemble_config, EnsembleHosts};
pub use multi::{ReadOp, ReadResult, Transaction, TxnResult};
pub use types::{
    acl, ConnectString, CreateOptions, NodeEvent, SessionState, WatchEvent, WatchMode,
};
pub use watch::{OneshotWatch, PersistentWatch};
