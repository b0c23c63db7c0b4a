//! openraft's network: Raft RPCs over the peer transport (`net::peer`), bincode-encoded.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{BasicNode, Raft};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{kind, MemberId, TypeConfig};
use crate::net::peer::{PeerClient, PeerError, PeerLimits};

/// One client per other member, made when first needed: members added by a reconfig are
/// reached at the peer address their Raft node names.
#[derive(Clone)]
pub struct Peers {
    my_id: MemberId,
    limits: PeerLimits,
    clients: Arc<Mutex<HashMap<MemberId, PeerClient>>>,
}

impl Peers {
    pub fn new(my_id: MemberId, known: HashMap<MemberId, PeerClient>, limits: PeerLimits) -> Peers {
        Peers {
            my_id,
            limits,
            clients: Arc::new(Mutex::new(known)),
        }
    }

    fn clients(&self) -> std::sync::MutexGuard<'_, HashMap<MemberId, PeerClient>> {
        self.clients.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The client of `id`, made from the node's spec if there is none yet; a known member
    /// whose address changed is redirected.
    pub fn for_node(&self, id: MemberId, node: &BasicNode) -> PeerClient {
        let addr = super::peer_addr(&node.addr);
        let mut clients = self.clients();
        let client = clients
            .entry(id)
            .or_insert_with(|| PeerClient::new(self.my_id, id, addr.clone(), self.limits.clone()))
            .clone();
        client.set_addr(addr);
        client
    }

    /// (member, answers that came after their call had timed out) for every member called.
    pub fn late_answers(&self) -> Vec<(MemberId, u64)> {
        let mut late: Vec<(MemberId, u64)> = self
            .clients()
            .iter()
            .map(|(id, c)| (*id, c.late_answers_total()))
            .collect();
        late.sort_unstable();
        late
    }

    /// The client of `id`, looking its address up in the membership when it is not known.
    pub fn get(&self, id: MemberId, raft: &Raft<TypeConfig>) -> Option<PeerClient> {
        if let Some(c) = self.clients().get(&id) {
            return Some(c.clone());
        }
        let node = raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .get_node(&id)
            .cloned()?;
        Some(self.for_node(id, &node))
    }
}

#[derive(Clone)]
pub struct Network {
    peers: Peers,
}

impl Network {
    pub fn new(peers: Peers) -> Network {
        Network { peers }
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Connection;

    async fn new_client(&mut self, target: MemberId, node: &BasicNode) -> Connection {
        Connection {
            target,
            client: Some(self.peers.for_node(target, node)),
        }
    }
}

pub struct Connection {
    target: MemberId,
    client: Option<PeerClient>,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Text(String);

/// How often a member's late answers are logged, at most.
const LATE_ANSWERS_REPORT_EVERY: Duration = Duration::from_secs(10);

/// Openraft 0.9 gives every AppendEntries (heartbeats included) one heartbeat interval to be
/// answered, whatever the network's own timeout. Over a link whose round trip is longer,
/// every one of them times out although the follower answers: nothing commits, and since the
/// heartbeats do arrive no election happens either. The answers that still come are the
/// only sign of it, so they are reported with the remedy.
fn warn_of_late_answers(target: MemberId, late: crate::net::peer::LateAnswers) {
    tracing::warn!(
        member = target,
        late_answers = late.count,
        late_answers_total = late.total,
        slowest_ms = late.slowest_ms,
        timeout_ms = late.timeout_ms,
        "member {target} answered Raft calls after they had timed out (slowest {} ms against \
         {} ms). Once, after a pause or a stall, this is harmless; if it keeps happening, the \
         link is slower than the heartbeat interval, which bounds every AppendEntries, and \
         writes that need that member cannot commit: raise tickTime (the heartbeat interval \
         is tickTime / 12) or fix the link",
        late.slowest_ms,
        late.timeout_ms,
    );
}

impl Connection {
    async fn call<Req, Resp, E>(
        &self,
        kind: u8,
        rpc: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<MemberId, BasicNode, RaftError<MemberId, E>>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let Some(client) = &self.client else {
            return Err(RPCError::Unreachable(Unreachable::new(&Text(format!(
                "member {} is not configured",
                self.target
            )))));
        };
        let body = super::encode(rpc);
        let timeout = option.hard_ttl().max(Duration::from_millis(50));
        let answer = client.call(kind, body, timeout).await;
        if let Some(late) = client.take_late_answers(LATE_ANSWERS_REPORT_EVERY) {
            warn_of_late_answers(self.target, late);
        }
        let answer = answer.map_err(|e| match e {
            PeerError::Unreachable(_) | PeerError::Closed => {
                RPCError::Unreachable(Unreachable::new(&e))
            }
            _ => RPCError::Network(NetworkError::new(&e)),
        })?;
        let result: Result<Resp, RaftError<MemberId, E>> =
            super::decode(&answer).map_err(|e| RPCError::Network(NetworkError::new(&Text(e))))?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for Connection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<MemberId>, RPCError<MemberId, BasicNode, RaftError<MemberId>>>
    {
        self.call(kind::APPEND_ENTRIES, &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<MemberId>,
        RPCError<MemberId, BasicNode, RaftError<MemberId, InstallSnapshotError>>,
    > {
        self.call(kind::INSTALL_SNAPSHOT, &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<MemberId>,
        option: RPCOption,
    ) -> Result<VoteResponse<MemberId>, RPCError<MemberId, BasicNode, RaftError<MemberId>>> {
        self.call(kind::VOTE, &rpc, &option).await
    }
}
