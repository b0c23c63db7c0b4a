//! A configuration node decoded into a typed value that is always current.

use std::sync::Arc;

use futures::Stream;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::warn;

use super::{NodeCache, NodeData};
use crate::{Client, Error};

/// The configuration as a [`ConfigWatcher`] last saw it.
#[derive(Debug)]
pub struct ConfigValue<T> {
    /// The value in force: decoded from the node, or the default while the node is missing.
    pub value: Arc<T>,
    /// The node version `value` was decoded from (`None`: the default).
    pub version: Option<i32>,
    /// Why the node's newest content was rejected by the decoder, if it was (`value` then
    /// stays the last good one).
    pub error: Option<String>,
}

impl<T> Clone for ConfigValue<T> {
    fn clone(&self) -> Self {
        ConfigValue {
            value: self.value.clone(),
            version: self.version,
            error: self.error.clone(),
        }
    }
}

/// Follows one node and exposes its content decoded by a user-supplied function.
///
/// It never shows an intermediate "unknown" state: before the node exists (and after it is
/// deleted) the value is the default; content the decoder rejects leaves the last good value
/// in force and is reported in [`ConfigValue::error`]. Changes arrive on a watch channel (the
/// newest value wins if several come quickly) and as a [`Stream`].
pub struct ConfigWatcher<T> {
    rx: watch::Receiver<ConfigValue<T>>,
    task: JoinHandle<()>,
}

impl<T: Send + Sync + 'static> ConfigWatcher<T> {
    /// Starts following `path`; returns once the current value is known.
    pub async fn start<F, E>(
        client: &Client,
        path: &str,
        default: T,
        decode: F,
    ) -> Result<Self, Error>
    where
        F: Fn(&[u8]) -> Result<T, E> + Send + 'static,
        E: std::fmt::Display,
    {
        let mut cache = NodeCache::start(client, path).await?;
        let default = Arc::new(default);
        let mut current = ConfigValue {
            value: default.clone(),
            version: None,
            error: None,
        };
        let path = path.to_string();
        let apply = move |current: &ConfigValue<T>, node: Option<NodeData>| -> ConfigValue<T> {
            match node {
                None => ConfigValue {
                    value: default.clone(),
                    version: None,
                    error: None,
                },
                Some(n) => match decode(&n.data) {
                    Ok(v) => ConfigValue {
                        value: Arc::new(v),
                        version: Some(n.stat.version),
                        error: None,
                    },
                    Err(e) => {
                        warn!(%path, version = n.stat.version, error = %e, "rejected configuration");
                        ConfigValue {
                            error: Some(e.to_string()),
                            ..current.clone()
                        }
                    }
                },
            }
        };
        current = apply(&current, cache.current());
        let (tx, rx) = watch::channel(current);
        let task = tokio::spawn(async move {
            while let Ok(node) = cache.changed().await {
                let next = apply(&tx.borrow(), node);
                tx.send_replace(next);
            }
        });
        Ok(ConfigWatcher { rx, task })
    }

    /// The value in force.
    pub fn current(&self) -> Arc<T> {
        self.rx.borrow().value.clone()
    }

    /// The value in force with its version and the last decode error.
    pub fn get(&self) -> ConfigValue<T> {
        self.rx.borrow().clone()
    }

    /// Waits for the next change. `Err` once the watcher stopped (the session ended).
    pub async fn changed(&mut self) -> Result<ConfigValue<T>, Error> {
        self.rx.changed().await.map_err(|_| Error::Closed)?;
        Ok(self.rx.borrow_and_update().clone())
    }

    /// Waits until the value in force satisfies `f`, and returns it.
    pub async fn wait_for(&mut self, mut f: impl FnMut(&T) -> bool) -> Result<Arc<T>, Error> {
        let v = self
            .rx
            .wait_for(|c| f(&c.value))
            .await
            .map_err(|_| Error::Closed)?;
        Ok(v.value.clone())
    }

    /// Another receiver of the values.
    pub fn subscribe(&self) -> watch::Receiver<ConfigValue<T>> {
        self.rx.clone()
    }

    /// The current value, then each change, as a stream that ends with the watcher.
    pub fn updates(&self) -> impl Stream<Item = ConfigValue<T>> + Send + 'static {
        let mut rx = self.rx.clone();
        rx.mark_changed();
        futures::stream::unfold(rx, |mut rx| async move {
            rx.changed().await.ok()?;
            let v = rx.borrow_and_update().clone();
            Some((v, rx))
        })
    }
}

impl<T> Drop for ConfigWatcher<T> {
    fn drop(&mut self) {
        self.task.abort();
    }
}
