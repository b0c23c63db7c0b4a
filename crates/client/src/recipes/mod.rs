//! Coordination recipes built on [`crate::Client`]:
//!
//! - [`NodeCache`] / [`ChildrenCache`]: the latest data of a node, or the latest children list,
//!   kept current through a persistent watch (one-shot watches on servers without them), and
//!   re-read after every reconnect so nothing changed in between is missed.
//! - [`LeaderElection`]: ephemeral-sequential candidates, each watching only its predecessor;
//!   leadership is published on a channel.
//! - [`Mutex`] and [`RwLock`]: distributed locks on the same queue discipline.
//! - [`ServiceRegistry`] and [`ServiceDiscovery`]: instances register as ephemeral nodes with
//!   an address and metadata; a discovery handle keeps the live list and picks from it.
//! - [`Barrier`] and [`DoubleBarrier`]: hold processes until a barrier is lifted, or until a
//!   set number of them has arrived (and again until all of them are done).
//! - [`ConfigWatcher`]: a node's content decoded into a typed value, always current.
//! - [`TreeCache`]: a local mirror of a whole subtree, kept current by a recursive watch.

mod barrier;
mod cache;
mod config;
mod discovery;
mod election;
mod lock;
mod queue;
mod tree;

pub use barrier::{Barrier, DoubleBarrier, DoubleBarrierMember};
pub use cache::{ChildrenCache, NodeCache, NodeData};
pub use config::{ConfigValue, ConfigWatcher};
pub use discovery::{Registration, ServiceDiscovery, ServiceInstance, ServiceRegistry};
pub use election::{LeaderElection, Leadership, LeadershipEvent};
pub use lock::{LockGuard, Mutex, RwLock};
pub use tree::{TreeCache, TreeCacheMode, TreeEvent};

use crate::{Client, Error, SessionState};

/// Waits until the client is connected again; `Err` if the session ended instead.
pub(crate) async fn await_connected(client: &Client) -> Result<(), Error> {
    let mut w = client.state_watcher();
    let state = *w
        .wait_for(|s| s.is_connected() || s.is_terminal())
        .await
        .map_err(|_| Error::Closed)?;
    if state.is_terminal() {
        Err(state.terminal_error())
    } else {
        Ok(())
    }
}

/// Resolves when the session leaves the connected state (disconnect or end).
pub(crate) async fn await_not_connected(client: &Client) -> SessionState {
    let mut w = client.state_watcher();
    let state = match w.wait_for(|s| !s.is_connected()).await {
        Ok(s) => *s,
        Err(_) => SessionState::Closed,
    };
    state
}
