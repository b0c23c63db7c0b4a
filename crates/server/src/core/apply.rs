//! Applying txns to the tree and sessions: the half of a write that is replayed from the log.
//! It never validates (the txn was validated when it was prepared) and never fails the server:
//! a replayed txn that disagrees with the tree is reported as an error outcome.

use std::sync::Arc;

use corral_proto::records::{Acl, Data, Stat, TxnHeader};
use corral_proto::{OpCode, OpResult, Response, ZkError};

use super::path;
use super::tree::{ttl_owner, CONTAINER_OWNER};
use super::txn::Txn;
use super::{Core, Reply};

/// A change some watches may want to hear about, with the ACL that decides who may.
#[derive(Debug, Clone)]
pub(super) enum Trigger {
    Created(String, Arc<Vec<Acl>>),
    Deleted(String, Arc<Vec<Acl>>),
    DataChanged(String, Arc<Vec<Acl>>),
    Children(String, Arc<Vec<Acl>>),
}

/// What applying a txn produced, before it is turned into a reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Outcome {
    Created {
        op: OpCode,
        path: String,
        stat: Stat,
    },
    Deleted,
    Stat(Stat),
    Checked,
    Session,
    /// A wire error code; 0 appears inside failed multis for the ops before the failing one.
    Error(i32),
    Multi(Vec<Outcome>),
    /// The new membership: the reply is the new `/zookeeper/config` (data and stat).
    Reconfig {
        data: corral_proto::records::Data,
        stat: Stat,
    },
}

impl Outcome {
    pub(super) fn into_reply(self) -> Reply {
        match self {
            Outcome::Created {
                op: OpCode::Create,
                path,
                ..
            } => Ok(Response::Path(path)),
            Outcome::Created { path, stat, .. } => {
                Ok(Response::Create2(corral_proto::records::Create2Response {
                    path,
                    stat,
                }))
            }
            Outcome::Deleted | Outcome::Checked | Outcome::Session => Ok(Response::Empty),
            Outcome::Stat(s) => Ok(Response::Stat(s)),
            Outcome::Error(e) => Err(ZkError::from_code(e).unwrap_or(ZkError::SystemError)),
            Outcome::Multi(v) => Ok(Response::Multi(v.into_iter().map(to_op_result).collect())),
            Outcome::Reconfig { data, stat } => {
                Ok(Response::GetData(corral_proto::records::GetDataResponse {
                    data,
                    stat,
                }))
            }
        }
    }
}

fn to_op_result(o: Outcome) -> OpResult {
    match o {
        Outcome::Created {
            op: OpCode::Create,
            path,
            ..
        } => OpResult::Create(path),
        Outcome::Created { path, stat, .. } => {
            OpResult::Create2(corral_proto::records::Create2Response { path, stat })
        }
        Outcome::Deleted => OpResult::Delete,
        Outcome::Stat(s) => OpResult::SetData(s),
        Outcome::Checked | Outcome::Session | Outcome::Multi(_) | Outcome::Reconfig { .. } => {
            OpResult::Check
        }
        Outcome::Error(e) => OpResult::Error(e),
    }
}

impl Core {
    pub(super) fn apply(
        &mut self,
        h: &TxnHeader,
        txn: &Txn,
        triggers: &mut Vec<Trigger>,
    ) -> Outcome {
        match txn {
            Txn::Create { op, txn } => self.apply_create(
                *op,
                &txn.path,
                txn.data.clone(),
                txn.acl.clone(),
                if txn.ephemeral { h.client_id } else { 0 },
                txn.parent_cversion,
                h,
                triggers,
            ),
            Txn::CreateContainer(t) => self.apply_create(
                OpCode::CreateContainer,
                &t.path,
                t.data.clone(),
                t.acl.clone(),
                CONTAINER_OWNER,
                t.parent_cversion,
                h,
                triggers,
            ),
            Txn::CreateTtl(t) => self.apply_create(
                OpCode::CreateTtl,
                &t.path,
                t.data.clone(),
                t.acl.clone(),
                ttl_owner(t.ttl_ms),
                t.parent_cversion,
                h,
                triggers,
            ),
            Txn::Delete { txn, .. } => self.apply_delete(&txn.path, h.zxid, triggers),
            Txn::Reconfig(t) => match self.apply_set_data(t, h, triggers) {
                Ok(stat) => Outcome::Reconfig {
                    data: t.data.clone(),
                    stat,
                },
                Err(e) => Outcome::Error(e.code()),
            },
            Txn::SetData(t) => match self.apply_set_data(t, h, triggers) {
                Ok(stat) => Outcome::Stat(stat),
                Err(e) => Outcome::Error(e.code()),
            },
            Txn::SetAcl(t) => match self.tree.set_acl(&t.path, t.acl.clone(), t.version) {
                Ok(stat) => Outcome::Stat(stat),
                Err(e) => Outcome::Error(e.code()),
            },
            Txn::Check(_) => Outcome::Checked,
            Txn::Multi(txns) => {
                if txns.iter().any(|t| matches!(t, Txn::Error(_))) {
                    // A failed multi is logged as error entries only: nothing to apply.
                    return Outcome::Multi(
                        txns.iter()
                            .map(|t| match t {
                                Txn::Error(e) => Outcome::Error(*e),
                                _ => Outcome::Error(0),
                            })
                            .collect(),
                    );
                }
                Outcome::Multi(txns.iter().map(|t| self.apply(h, t, triggers)).collect())
            }
            Txn::CreateSession(t) => {
                // Liveness runs on the monotonic clock of this server, never the header's wall
                // time (replayed sessions get their clocks restarted after recovery anyway).
                self.sessions
                    .add(h.client_id, t.timeout_ms, self.clock.mono_ms);
                Outcome::Session
            }
            Txn::CloseSession(t) => {
                for p in &t.paths_to_delete {
                    self.apply_delete(p, h.zxid, triggers);
                }
                // Ephemerals the txn did not list (none, unless the log and tree disagree).
                let rest: Vec<String> = self.tree.ephemerals_of(h.client_id).cloned().collect();
                for p in rest {
                    self.apply_delete(&p, h.zxid, triggers);
                }
                self.sessions.remove(h.client_id);
                Outcome::Session
            }
            Txn::Error(e) => Outcome::Error(*e),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn apply_create(
        &mut self,
        op: OpCode,
        path: &str,
        data: Data,
        acl: Vec<Acl>,
        owner: i64,
        parent_cversion: i32,
        h: &TxnHeader,
        triggers: &mut Vec<Trigger>,
    ) -> Outcome {
        match self
            .tree
            .create(path, data, acl, owner, parent_cversion, h.zxid, h.time_ms)
        {
            Ok(stat) => {
                let acl = self.acl_of(path);
                triggers.push(Trigger::Created(path.to_string(), acl));
                if let Some(parent) = path::parent(path) {
                    let pacl = self.acl_of(parent);
                    triggers.push(Trigger::Children(parent.to_string(), pacl));
                }
                Outcome::Created {
                    op,
                    path: path.to_string(),
                    stat,
                }
            }
            Err(e) => Outcome::Error(e.code()),
        }
    }

    /// A setData (or reconfig, which sets `/zookeeper/config`): new data, a data watch trigger.
    fn apply_set_data(
        &mut self,
        t: &corral_proto::records::SetDataTxn,
        h: &TxnHeader,
        triggers: &mut Vec<Trigger>,
    ) -> Result<Stat, ZkError> {
        let stat = self
            .tree
            .set_data(&t.path, t.data.clone(), t.version, h.zxid, h.time_ms)?;
        let acl = self.acl_of(&t.path);
        triggers.push(Trigger::DataChanged(t.path.clone(), acl));
        Ok(stat)
    }

    fn apply_delete(&mut self, path: &str, zxid: i64, triggers: &mut Vec<Trigger>) -> Outcome {
        match self.tree.delete(path, zxid) {
            Ok(acl) => {
                triggers.push(Trigger::Deleted(path.to_string(), acl));
                if let Some(parent) = path::parent(path) {
                    let pacl = self.acl_of(parent);
                    triggers.push(Trigger::Children(parent.to_string(), pacl));
                }
                Outcome::Deleted
            }
            Err(e) => Outcome::Error(e.code()),
        }
    }

    fn acl_of(&self, path: &str) -> Arc<Vec<Acl>> {
        self.tree
            .get(path)
            .map(|n| self.tree.acl(n).clone())
            .unwrap_or_default()
    }
}
