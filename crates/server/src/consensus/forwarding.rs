//! Client requests a member hands to the leader, in order.
//!
//! A follower forwards a session's writes without waiting for the earlier ones to be applied
//! (as ZooKeeper's followers do), so the leader must receive them in the order the client
//! sent them. One task sends every forward, one after another, each queued on the leader's
//! connection before the next is looked at ([`PeerLink::send`]); the leader queues them for
//! its driver in arrival order (`Inbound::forwarded`).
//!
//! A connection that breaks may lose what was queued on it. A later request of a client
//! connection whose earlier requests went out on the broken connection must not overtake
//! them on a new one: it is refused instead, which closes the client connection (its client
//! sees a connection loss for every request it had outstanding, as ZooKeeper's clients do).

use bytes::Bytes;
use openraft::Raft;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

use super::network::Peers;
use super::{kind, MemberId, TypeConfig, FORWARD_TIMEOUT};
use crate::core::ConnId;
use crate::net::peer::PeerLink;

/// One forwarded request on its way.
pub(super) struct Job {
    pub leader: MemberId,
    pub conn: ConnId,
    pub body: Bytes,
    /// Gets `(conn, why)` when the leader did not accept the request.
    pub failed: mpsc::UnboundedSender<(ConnId, String)>,
}

/// For each client connection with forwards not yet answered: the peer connection they went
/// out on, and how many there are.
type InFlight = Arc<Mutex<HashMap<ConnId, (u64, u32)>>>;

fn lock(m: &InFlight) -> std::sync::MutexGuard<'_, HashMap<ConnId, (u64, u32)>> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Sends forwarded requests in the order they were queued, until the queue closes.
pub(super) async fn forward_loop(
    peers: Peers,
    raft: Raft<TypeConfig>,
    mut jobs: mpsc::UnboundedReceiver<Job>,
) {
    let in_flight: InFlight = Arc::default();
    // The link in use per leader: reused while it stays open, so order holds across requests.
    let mut links: HashMap<MemberId, PeerLink> = HashMap::new();
    while let Some(job) = jobs.recv().await {
        let Some(client) = peers.get(job.leader, &raft) else {
            let _ = job
                .failed
                .send((job.conn, format!("member {} is not a peer", job.leader)));
            continue;
        };
        let link = match links.get(&job.leader) {
            Some(link) if link.is_open() => Ok(links.remove(&job.leader).expect("present")),
            _ => client.link().await,
        };
        let link = match link {
            Ok(link) => link,
            Err(e) => {
                let _ = job.failed.send((job.conn, e.to_string()));
                continue;
            }
        };
        let overtakes = {
            let mut map = lock(&in_flight);
            let entry = map.entry(job.conn).or_insert((link.id(), 0));
            let stale = entry.1 > 0 && entry.0 != link.id();
            if !stale {
                *entry = (link.id(), entry.1 + 1);
            }
            stale
        };
        if overtakes {
            let _ = job.failed.send((
                job.conn,
                "the connection to the leader broke with earlier requests on it".into(),
            ));
            links.insert(job.leader, link);
            continue;
        }
        let sent = link.send(kind::FORWARD, job.body);
        links.insert(job.leader, link);
        let in_flight = in_flight.clone();
        let Job { conn, failed, .. } = job;
        let answer = match sent {
            Ok(answer) => answer,
            Err(e) => {
                done(&in_flight, conn);
                let _ = failed.send((conn, e.to_string()));
                continue;
            }
        };
        tokio::spawn(async move {
            let outcome = match tokio::time::timeout(FORWARD_TIMEOUT, answer).await {
                Ok(Ok(answer)) => {
                    super::decode::<Result<(), String>>(&answer).and_then(|accepted| accepted)
                }
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err(format!(
                    "the leader did not accept the request within {FORWARD_TIMEOUT:?}"
                )),
            };
            done(&in_flight, conn);
            if let Err(why) = outcome {
                let _ = failed.send((conn, why));
            }
        });
    }
}

/// One forward of `conn` is answered.
fn done(in_flight: &InFlight, conn: ConnId) {
    let mut map = lock(in_flight);
    if let Some(entry) = map.get_mut(&conn) {
        entry.1 = entry.1.saturating_sub(1);
        if entry.1 == 0 {
            map.remove(&conn);
        }
    }
}
