//! openraft's network: Raft RPCs over the peer transport (`net::peer`), bincode-encoded.

use std::collections::HashMap;
use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::BasicNode;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{kind, MemberId, TypeConfig};
use crate::net::peer::{PeerClient, PeerError};

#[derive(Clone)]
pub struct Network {
    peers: HashMap<MemberId, PeerClient>,
}

impl Network {
    pub fn new(peers: HashMap<MemberId, PeerClient>) -> Network {
        Network { peers }
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Connection;

    async fn new_client(&mut self, target: MemberId, _node: &BasicNode) -> Connection {
        Connection {
            target,
            client: self.peers.get(&target).cloned(),
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
        let answer = client
            .call(kind, body, timeout)
            .await
            .map_err(|e| match e {
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
