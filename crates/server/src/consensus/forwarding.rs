//! Client requests a member hands to the leader, in order.
//!
//! A follower forwards a session's writes without waiting for the earlier ones to be applied
//! (as ZooKeeper's followers do), so the leader must receive them in the order the client
//! sent them. One task sends every forward, one message after another, each queued on the
//! leader's connection before the next is looked at ([`PeerLink::send`]); the leader queues
//! them for its driver in arrival order (`Inbound::forwarded`).
//!
//! Forwards queued while the task was busy go out together, in order, as one message
//! (`kind::FORWARD_BATCH`) with one answer listing each one's outcome: under load a follower
//! pays the peer message, its task and its answer once per batch, not once per request.
//!
//! A connection that breaks may lose what was queued on it. A later request of a client
//! connection whose earlier requests went out on the broken connection must not overtake
//! them on a new one: it is refused instead, which closes the client connection (its client
//! sees a connection loss for every request it had outstanding, as ZooKeeper's clients do).

use openraft::Raft;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

use super::network::Peers;
use super::{kind, MemberId, TypeConfig, WireForward, FORWARD_TIMEOUT};
use crate::core::ConnId;
use crate::net::peer::PeerLink;

/// Most forwards sent in one message.
const MAX_FORWARDS_PER_MESSAGE: usize = 256;
/// A message is closed before its forwards' bodies pass this many bytes (a larger forward
/// goes alone), well below the peer transport's frame limit.
const MAX_FORWARD_MESSAGE_BYTES: usize = 1024 * 1024;

/// One forwarded request on its way.
pub(super) struct Job {
    pub leader: MemberId,
    pub conn: ConnId,
    /// Roughly what it adds to a peer message (`Forward::approx_bytes`).
    pub bytes: usize,
    pub wire: WireForward,
    /// Gets `(conn, why)` when the leader did not accept the request.
    pub failed: mpsc::UnboundedSender<(ConnId, String)>,
}

impl Job {
    fn fail(self, why: String) {
        let _ = self.failed.send((self.conn, why));
    }
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
    // A job taken from the queue that did not fit the message before it.
    let mut carried: Option<Job> = None;
    loop {
        let first = match carried.take() {
            Some(job) => job,
            None => match jobs.recv().await {
                Some(job) => job,
                None => return,
            },
        };
        let leader = first.leader;
        let mut bytes = first.bytes;
        let (batch, next) = super::take_batch(first, &mut jobs, |batch, job| {
            let size = job.bytes;
            let fits = batch.len() < MAX_FORWARDS_PER_MESSAGE
                && job.leader == leader
                && bytes + size <= MAX_FORWARD_MESSAGE_BYTES;
            bytes += size;
            fits
        });
        carried = next;
        send_batch(&peers, &raft, &mut links, &in_flight, leader, batch).await;
    }
}

/// Sends `batch` (forwards to `leader`, in order) as one message and answers each job when
/// the leader's answer comes.
async fn send_batch(
    peers: &Peers,
    raft: &Raft<TypeConfig>,
    links: &mut HashMap<MemberId, PeerLink>,
    in_flight: &InFlight,
    leader: MemberId,
    batch: Vec<Job>,
) {
    let Some(client) = peers.get(leader, raft) else {
        for job in batch {
            job.fail(format!("member {leader} is not a peer"));
        }
        return;
    };
    let link = match links.remove(&leader) {
        Some(link) if link.is_open() => Ok(link),
        _ => client.link().await,
    };
    let link = match link {
        Ok(link) => link,
        Err(e) => {
            for job in batch {
                job.fail(e.to_string());
            }
            return;
        }
    };
    let mut sending = Vec::with_capacity(batch.len());
    {
        let mut map = lock(in_flight);
        for job in batch {
            let entry = map.entry(job.conn).or_insert((link.id(), 0));
            if entry.1 > 0 && entry.0 != link.id() {
                job.fail("the connection to the leader broke with earlier requests on it".into());
            } else {
                *entry = (link.id(), entry.1 + 1);
                sending.push(job);
            }
        }
    }
    if sending.is_empty() {
        links.insert(leader, link);
        return;
    }
    let (wires, waiting): (Vec<WireForward>, Vec<_>) = sending
        .into_iter()
        .map(|job| (job.wire, (job.conn, job.failed)))
        .unzip();
    let sent = link.send(kind::FORWARD_BATCH, super::encode(&wires));
    links.insert(leader, link);
    let answer = match sent {
        Ok(answer) => answer,
        Err(e) => {
            for (conn, failed) in waiting {
                done(in_flight, conn);
                let _ = failed.send((conn, e.to_string()));
            }
            return;
        }
    };
    let in_flight = in_flight.clone();
    tokio::spawn(async move {
        let outcomes = match tokio::time::timeout(FORWARD_TIMEOUT, answer).await {
            Ok(Ok(answer)) => super::decode::<Vec<Result<(), String>>>(&answer),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!(
                "the leader did not accept the request within {FORWARD_TIMEOUT:?}"
            )),
        };
        for (i, (conn, failed)) in waiting.into_iter().enumerate() {
            done(&in_flight, conn);
            let outcome = match &outcomes {
                Ok(each) => each
                    .get(i)
                    .cloned()
                    .unwrap_or_else(|| Err("the leader's answer lists fewer requests".into())),
                Err(why) => Err(why.clone()),
            };
            if let Err(why) = outcome {
                let _ = failed.send((conn, why));
            }
        }
    });
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
