//! Service registry and discovery.
//!
//! Each running instance of a service registers itself as an ephemeral-sequential node
//! `<base>/<service>/instance-…` whose data holds its address and metadata; the node lives as
//! long as the instance's session, so a crashed instance leaves the list on its own. A
//! [`ServiceDiscovery`] keeps the live list of one service (children cache plus one read per
//! new instance) and picks instances at random or round-robin.
//!
//! The payload is text: the address on the first line, then one `key=value` line per metadata
//! entry, readable by any ZooKeeper tool.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};

use rand::seq::SliceRandom;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::lock::OwnedNode;
use super::queue;
use super::{await_connected, ChildrenCache};
use crate::path::join;
use crate::{Client, Error, ZkError};

const PREFIX: &str = "instance-";

/// One instance of a service: where to reach it and what else it says about itself.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ServiceInstance {
    /// The instance's node name, assigned at registration (empty before).
    pub id: String,
    /// How clients reach the instance, e.g. `10.0.0.5:8080`.
    pub address: String,
    pub metadata: BTreeMap<String, String>,
}

impl ServiceInstance {
    pub fn new(address: &str) -> Self {
        ServiceInstance {
            id: String::new(),
            address: address.to_string(),
            metadata: BTreeMap::new(),
        }
    }

    pub fn with_metadata(mut self, key: &str, value: &str) -> Self {
        self.metadata.insert(key.to_string(), value.to_string());
        self
    }

    /// The node payload. Fails on text the line format cannot carry.
    fn encode(&self) -> Result<Vec<u8>, Error> {
        let bad = |what: &str| Err(Error::BadArguments(format!("service instance: {what}")));
        if self.address.is_empty() || self.address.contains('\n') {
            return bad("address must be one non-empty line");
        }
        let mut out = self.address.clone();
        for (k, v) in &self.metadata {
            if k.is_empty() || k.contains(['=', '\n']) || v.contains('\n') {
                return bad("metadata keys must be non-empty without '=' or newlines, values without newlines");
            }
            out.push('\n');
            out.push_str(k);
            out.push('=');
            out.push_str(v);
        }
        Ok(out.into_bytes())
    }

    fn decode(id: &str, payload: &[u8]) -> Option<ServiceInstance> {
        let text = std::str::from_utf8(payload).ok()?;
        let mut lines = text.lines();
        let address = lines.next()?.to_string();
        let metadata = lines
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Some(ServiceInstance {
            id: id.to_string(),
            address,
            metadata,
        })
    }
}

fn check_service_name(service: &str) -> Result<(), Error> {
    if service.is_empty() || service.contains('/') {
        return Err(Error::BadArguments(format!(
            "service name {service:?} must be one path segment"
        )));
    }
    Ok(())
}

/// Registers service instances under a base path (e.g. `/services`).
#[derive(Clone)]
pub struct ServiceRegistry {
    client: Client,
    base: String,
}

impl ServiceRegistry {
    pub fn new(client: &Client, base: &str) -> Self {
        ServiceRegistry {
            client: client.clone(),
            base: base.to_string(),
        }
    }

    /// Registers `instance` of `service`; it stays listed while the returned handle lives and
    /// the client's session does.
    pub async fn register(
        &self,
        service: &str,
        instance: &ServiceInstance,
    ) -> Result<Registration, Error> {
        check_service_name(service)?;
        let payload = instance.encode()?;
        let dir = join(&self.base, service);
        let entry = queue::enter(&self.client, &dir, PREFIX, &payload).await?;
        let mut registered = instance.clone();
        registered.id = entry.name;
        Ok(Registration {
            node: OwnedNode::new(&self.client, entry.path),
            instance: registered,
        })
    }

    /// A live view of `service`'s instances.
    pub async fn discover(&self, service: &str) -> Result<ServiceDiscovery, Error> {
        ServiceDiscovery::start(&self.client, &self.base, service).await
    }
}

/// A registered instance. [`Registration::deregister`] (or dropping it) removes it; so does
/// the end of the session.
pub struct Registration {
    node: OwnedNode,
    instance: ServiceInstance,
}

impl Registration {
    /// The instance as registered (with its id).
    pub fn instance(&self) -> &ServiceInstance {
        &self.instance
    }

    /// The instance's node.
    pub fn path(&self) -> &str {
        self.node.path()
    }

    /// Removes the instance and waits until the server has.
    pub async fn deregister(self) -> Result<(), Error> {
        self.node.remove().await
    }

    /// Resolves when the registering session has ended, taking the registration with it.
    pub async fn lost(&self) {
        self.node.lost().await
    }
}

/// The live instance list of one service, ordered by registration.
pub struct ServiceDiscovery {
    rx: watch::Receiver<Vec<ServiceInstance>>,
    next: AtomicUsize,
    task: JoinHandle<()>,
}

impl ServiceDiscovery {
    /// Starts following `<base>/<service>` (which need not exist yet); returns once the current
    /// list is loaded.
    pub async fn start(client: &Client, base: &str, service: &str) -> Result<Self, Error> {
        check_service_name(service)?;
        let dir = join(base, service);
        let mut children = ChildrenCache::start(client, &dir).await?;
        let mut known = HashMap::new();
        let first = load(client, &dir, children.current(), &mut known).await?;
        let (tx, rx) = watch::channel(first);
        let client = client.clone();
        let task = tokio::spawn(async move {
            while let Ok(names) = children.changed().await {
                let mut names = names;
                // A read can fail on a disconnect: wait it out and load the newest list.
                let list = loop {
                    match load(&client, &dir, names, &mut known).await {
                        Ok(list) => break list,
                        Err(e) if e.is_retryable() => {
                            if await_connected(&client).await.is_err() {
                                return;
                            }
                            names = children.current();
                        }
                        Err(_) => return,
                    }
                };
                tx.send_if_modified(|cur| {
                    let changed = *cur != list;
                    *cur = list;
                    changed
                });
            }
        });
        Ok(ServiceDiscovery {
            rx,
            next: AtomicUsize::new(0),
            task,
        })
    }

    /// The instances now registered.
    pub fn instances(&self) -> Vec<ServiceInstance> {
        self.rx.borrow().clone()
    }

    /// A random instance, or `None` if there is none.
    pub fn pick_random(&self) -> Option<ServiceInstance> {
        self.rx.borrow().choose(&mut rand::thread_rng()).cloned()
    }

    /// The instances in turn, or `None` if there is none.
    pub fn pick_round_robin(&self) -> Option<ServiceInstance> {
        let list = self.rx.borrow();
        if list.is_empty() {
            return None;
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        Some(list[i % list.len()].clone())
    }

    /// Waits for the list to change and returns the new list. `Err` once discovery stopped
    /// (the session ended).
    pub async fn changed(&mut self) -> Result<Vec<ServiceInstance>, Error> {
        self.rx.changed().await.map_err(|_| Error::Closed)?;
        Ok(self.rx.borrow_and_update().clone())
    }

    /// Waits until the list satisfies `f` and returns it.
    pub async fn wait_for(
        &mut self,
        mut f: impl FnMut(&[ServiceInstance]) -> bool,
    ) -> Result<Vec<ServiceInstance>, Error> {
        let list = self
            .rx
            .wait_for(|l| f(l))
            .await
            .map_err(|_| Error::Closed)?;
        Ok(list.clone())
    }

    /// Another receiver of the list.
    pub fn subscribe(&self) -> watch::Receiver<Vec<ServiceInstance>> {
        self.rx.clone()
    }
}

impl Drop for ServiceDiscovery {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The instances named in `names`, reading the payload of those not seen before (an
/// instance's payload is fixed at registration).
async fn load(
    client: &Client,
    dir: &str,
    names: Option<Vec<String>>,
    known: &mut HashMap<String, Option<ServiceInstance>>,
) -> Result<Vec<ServiceInstance>, Error> {
    let mut names = names.unwrap_or_default();
    names.retain(|n| n.starts_with(PREFIX) && queue::sequence(n).is_some());
    names.sort_by_key(|n| queue::sequence(n));
    known.retain(|k, _| names.contains(k));
    let mut list = Vec::with_capacity(names.len());
    for name in names {
        if !known.contains_key(&name) {
            match client.get_data(&join(dir, &name)).await {
                Ok((data, _)) => {
                    known.insert(name.clone(), ServiceInstance::decode(&name, &data));
                }
                // Gone already; the children cache reports that next.
                Err(Error::Zk(ZkError::NoNode)) => continue,
                Err(e) => return Err(e),
            }
        }
        if let Some(Some(instance)) = known.get(&name) {
            list.push(instance.clone());
        }
    }
    Ok(list)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_round_trip() {
        let i = ServiceInstance::new("127.0.0.1:8897")
            .with_metadata("zone", "a")
            .with_metadata("weight", "3");
        let bytes = i.encode().unwrap();
        assert_eq!(bytes, b"127.0.0.1:8897\nweight=3\nzone=a");
        let back = ServiceInstance::decode("instance-1", &bytes).unwrap();
        assert_eq!(back.address, i.address);
        assert_eq!(back.metadata, i.metadata);
        assert_eq!(back.id, "instance-1");
        assert!(ServiceInstance::new("a\nb").encode().is_err());
        assert!(ServiceInstance::new("a")
            .with_metadata("k=", "v")
            .encode()
            .is_err());
    }
}
