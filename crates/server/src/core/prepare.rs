//! Preparing writes: validating a request against the current tree and turning it into a txn
//! (ZooKeeper's PrepRequestProcessor). Nothing here changes state, except `prepare_multi`, which
//! applies each op as it goes (so later ops see earlier ones) and rolls back on failure.

use corral_proto::records::{
    CheckVersionTxn, CreateContainerTxn, CreateTtlTxn, CreateTxn, Data, DeleteTxn, Id, SetAclTxn,
    SetDataTxn, TxnHeader,
};
use corral_proto::{perms, CreateMode, OpCode, Request, ZkError};

use super::apply::{Outcome, Trigger};
use super::tree::{owner_kind, OwnerKind, MAX_TTL_MS};
use super::txn::{self, Txn};
use super::{acl, path, Core};

/// Who is asking: the identities proven on the requesting connection.
pub(super) struct Ctx<'a> {
    pub auth: &'a [Id],
}

/// `/`, `/zookeeper`, `/zookeeper/quota` and `/zookeeper/config` cannot be deleted.
fn is_special(path: &str) -> bool {
    matches!(
        path,
        "/" | "/zookeeper" | "/zookeeper/quota" | "/zookeeper/config"
    )
}

/// The new version after an expected-version check (`-1` = any).
fn check_and_inc_version(current: i32, expected: i32) -> Result<i32, ZkError> {
    if expected != -1 && expected != current {
        return Err(ZkError::BadVersion);
    }
    // Skip -1 on wrap-around: it means "any version" to clients.
    Ok(match current.wrapping_add(1) {
        -1 => 0,
        v => v,
    })
}

impl Core {
    pub(super) fn prepare(&self, ctx: &Ctx<'_>, req: &Request) -> Result<Txn, ZkError> {
        match req {
            Request::Create { op, req } => {
                self.prepare_create(ctx, *op, &req.path, &req.data, &req.acl, req.flags, -1)
            }
            Request::CreateTtl(r) => self.prepare_create(
                ctx,
                OpCode::CreateTtl,
                &r.path,
                &r.data,
                &r.acl,
                r.flags,
                r.ttl_ms,
            ),
            Request::Delete(r) => {
                let parent = self.parent_for_delete(&r.path)?;
                let pnode = self.tree.get(parent).ok_or(ZkError::NoNode)?;
                acl::check(self.tree.acl(pnode), perms::DELETE, ctx.auth)?;
                let node = self.tree.get(&r.path).ok_or(ZkError::NoNode)?;
                check_and_inc_version(node.version(), r.version)?;
                if node.has_children() {
                    return Err(ZkError::NotEmpty);
                }
                Ok(Txn::Delete {
                    op: OpCode::Delete,
                    txn: DeleteTxn {
                        path: r.path.clone(),
                    },
                })
            }
            Request::DeleteContainer(r) => {
                let parent = self.parent_for_delete(&r.path)?;
                let node = self.tree.get(&r.path).ok_or(ZkError::NoNode)?;
                if node.has_children() {
                    return Err(ZkError::NotEmpty);
                }
                if let OwnerKind::Ephemeral(_) =
                    owner_kind(node.ephemeral_owner(), self.tree.extended_types())
                {
                    return Err(ZkError::BadVersion);
                }
                self.tree.get(parent).ok_or(ZkError::NoNode)?;
                Ok(Txn::Delete {
                    op: OpCode::DeleteContainer,
                    txn: DeleteTxn {
                        path: r.path.clone(),
                    },
                })
            }
            Request::SetData(r) => {
                validate(&r.path)?;
                let node = self.tree.get(&r.path).ok_or(ZkError::NoNode)?;
                acl::check(self.tree.acl(node), perms::WRITE, ctx.auth)?;
                let old = node.data_len() as i64;
                let new = r.data.as_ref().map_or(0, |d| d.len() as i64);
                self.check_quota(&r.path, new - old, 0)?;
                let version = check_and_inc_version(node.version(), r.version)?;
                Ok(Txn::SetData(SetDataTxn {
                    path: r.path.clone(),
                    data: r.data.clone(),
                    version,
                }))
            }
            Request::SetAcl(r) => {
                validate(&r.path)?;
                let fixed = acl::fixup(&r.acl, ctx.auth)?;
                let node = self.tree.get(&r.path).ok_or(ZkError::NoNode)?;
                acl::check(self.tree.acl(node), perms::ADMIN, ctx.auth)?;
                let version = check_and_inc_version(node.aversion(), r.version)?;
                Ok(Txn::SetAcl(SetAclTxn {
                    path: r.path.clone(),
                    acl: fixed,
                    version,
                }))
            }
            Request::Check(r) => {
                validate(&r.path)?;
                let node = self.tree.get(&r.path).ok_or(ZkError::NoNode)?;
                acl::check(self.tree.acl(node), perms::READ, ctx.auth)?;
                let version = check_and_inc_version(node.version(), r.version)?;
                Ok(Txn::Check(CheckVersionTxn {
                    path: r.path.clone(),
                    version,
                }))
            }
            // Standalone servers cannot reconfigure (ZooKeeper: reconfigEnabled=false).
            Request::Reconfig(_) => Err(ZkError::ReconfigDisabled),
            _ => Err(ZkError::Unimplemented),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn prepare_create(
        &self,
        ctx: &Ctx<'_>,
        op: OpCode,
        path: &str,
        data: &Data,
        acls: &[corral_proto::records::Acl],
        flags: i32,
        ttl_ms: i64,
    ) -> Result<Txn, ZkError> {
        let mode = CreateMode::try_from(flags).map_err(|_| ZkError::BadArguments)?;
        if mode.is_ttl() && !self.config.extended_types_enabled {
            return Err(ZkError::Unimplemented);
        }
        let ttl_ok = if mode.is_ttl() {
            ttl_ms > 0 && ttl_ms <= MAX_TTL_MS
        } else {
            ttl_ms < 0
        };
        if !ttl_ok {
            return Err(ZkError::BadArguments);
        }
        if path.contains('\0') {
            return Err(ZkError::BadArguments);
        }
        let (parent_path, _) = path::split(path).ok_or(ZkError::BadArguments)?;
        let fixed = acl::fixup(acls, ctx.auth)?;
        let parent = self.tree.get(parent_path).ok_or(ZkError::NoNode)?;
        acl::check(self.tree.acl(parent), perms::CREATE, ctx.auth)?;
        let mut path = path.to_string();
        if mode.is_sequential() {
            path.push_str(&format!("{:010}", parent.cversion()));
        }
        validate(&path)?;
        if self.tree.contains(&path) {
            return Err(ZkError::NodeExists);
        }
        if let OwnerKind::Ephemeral(_) =
            owner_kind(parent.ephemeral_owner(), self.tree.extended_types())
        {
            return Err(ZkError::NoChildrenForEphemerals);
        }
        self.check_quota(&path, data.as_ref().map_or(0, |d| d.len() as i64), 1)?;
        let parent_cversion = parent.cversion() + 1;
        let data = data.clone();
        Ok(match op {
            OpCode::CreateContainer => Txn::CreateContainer(CreateContainerTxn {
                path,
                data,
                acl: fixed,
                parent_cversion,
            }),
            OpCode::CreateTtl => Txn::CreateTtl(CreateTtlTxn {
                path,
                data,
                acl: fixed,
                parent_cversion,
                ttl_ms,
            }),
            _ => Txn::Create {
                op,
                txn: CreateTxn {
                    path,
                    data,
                    acl: fixed,
                    ephemeral: mode.is_ephemeral(),
                    parent_cversion,
                },
            },
        })
    }

    fn parent_for_delete<'p>(&self, path: &'p str) -> Result<&'p str, ZkError> {
        if path.contains('\0') || is_special(path) {
            return Err(ZkError::BadArguments);
        }
        path::split(path)
            .map(|(p, _)| p)
            .ok_or(ZkError::BadArguments)
    }

    /// Hard quotas fail the write; soft quotas only log (ZooKeeper's semantics).
    fn check_quota(&self, path: &str, bytes_diff: i64, count_diff: i64) -> Result<(), ZkError> {
        let Some((target, limits, usage)) = self.tree.quota_of(path) else {
            return Ok(());
        };
        let check = |used: i64, diff: i64, soft: i64, hard: i64, what: &str| {
            if diff == 0 {
                return Ok(());
            }
            let new = used + diff;
            if hard > -1 && new > hard {
                if self.config.enforce_quota {
                    tracing::warn!(%target, what, new, hard, "hard quota exceeded");
                    return Err(ZkError::QuotaExceeded);
                }
            } else if soft > -1 && new > soft {
                tracing::warn!(%target, what, new, soft, "quota exceeded");
            }
            Ok(())
        };
        check(
            usage.count(),
            count_diff,
            limits.count(),
            limits.get("countHardLimit"),
            "count",
        )?;
        check(
            usage.bytes(),
            bytes_diff,
            limits.bytes(),
            limits.get("byteHardLimit"),
            "bytes",
        )
    }

    /// Prepares and applies each op of a multi in turn. On the first failure everything is
    /// rolled back and the logged txn holds only error entries: 0 for the ops before the failing
    /// one, its error, and RuntimeInconsistency for the rest (ZooKeeper's reply layout).
    pub(super) fn prepare_multi(
        &mut self,
        ctx: &Ctx<'_>,
        header: &TxnHeader,
        ops: Vec<Request>,
    ) -> PreparedMulti {
        let mut txns = Vec::with_capacity(ops.len());
        let mut outcomes = Vec::with_capacity(ops.len());
        let mut triggers = Vec::new();
        let mut failed: Option<(usize, ZkError)> = None;
        self.tree.begin_undo();
        for (i, op) in ops.iter().enumerate() {
            let txn = match self.prepare(ctx, op) {
                Ok(t) => t,
                Err(e) => {
                    failed = Some((i, e));
                    break;
                }
            };
            let outcome = self.apply(header, &txn, &mut triggers);
            if let Outcome::Error(code) = outcome {
                // Prepared txns apply cleanly; this guards the invariant rather than trusting it.
                failed = Some((i, ZkError::from_code(code).unwrap_or(ZkError::SystemError)));
                break;
            }
            txns.push(txn);
            outcomes.push(outcome);
        }
        let (at, err) = match failed {
            Some(failed) => failed,
            None => {
                let txn = Txn::Multi(txns);
                // Sized before the undo log is dropped: a multi too large for one log record
                // fails as a whole (the first op carries the error) and leaves the tree as it was.
                match txn::encode_if_loggable(header, &txn) {
                    Some(record) => {
                        self.tree.commit_undo();
                        return PreparedMulti {
                            record,
                            outcome: Outcome::Multi(outcomes),
                            triggers,
                        };
                    }
                    None => (0, super::TOO_LARGE_FOR_LOG),
                }
            }
        };
        self.tree.rollback_undo();
        let codes: Vec<i32> = (0..ops.len())
            .map(|i| match i.cmp(&at) {
                std::cmp::Ordering::Less => 0,
                std::cmp::Ordering::Equal => err.code(),
                std::cmp::Ordering::Greater => ZkError::RuntimeInconsistency.code(),
            })
            .collect();
        let txn = Txn::Multi(codes.iter().map(|c| Txn::Error(*c)).collect());
        let outcome = Outcome::Multi(codes.into_iter().map(Outcome::Error).collect());
        PreparedMulti {
            record: txn::encode_record(header, &txn),
            outcome,
            triggers: Vec::new(),
        }
    }
}

/// A multi, applied (or failed) while it was prepared and encoded for the log.
pub(super) struct PreparedMulti {
    pub record: Vec<u8>,
    pub outcome: Outcome,
    pub triggers: Vec<Trigger>,
}

fn validate(path: &str) -> Result<(), ZkError> {
    if path::is_valid(path) {
        Ok(())
    } else {
        Err(ZkError::BadArguments)
    }
}
