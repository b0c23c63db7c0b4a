//! Read requests: answered from the tree at once, registering watches on the way
//! (ZooKeeper's FinalRequestProcessor for non-txn ops).

use corral_proto::records::{
    Acl, ClientInfo, GetAclResponse, GetChildren2Response, GetChildrenResponse, GetDataResponse,
    Id, PathWatch,
};
use corral_proto::{perms, OpResult, Request, Response, SessionId, WatcherType, ZkError};

use super::watch::WatchMode;
use super::{acl, ConnId, Core, Reply};

impl Core {
    pub(super) fn read(&mut self, conn: ConnId, session: SessionId, req: Request) -> Reply {
        let auth = self.auth_of(conn);
        match req {
            Request::Exists(r) => {
                if r.path.contains('\0') {
                    return Err(ZkError::BadArguments);
                }
                if let Some(n) = self.tree.get(&r.path) {
                    acl::check(self.tree.acl(n), perms::READ, &auth)?;
                }
                // An exists watch is set whether or not the node exists.
                if r.watch {
                    self.data_watches.add(&r.path, conn, WatchMode::Standard);
                }
                let n = self.tree.get(&r.path).ok_or(ZkError::NoNode)?;
                Ok(Response::Stat(n.stat()))
            }
            Request::GetData(r) => self.get_data(conn, &auth, &r).map(Response::GetData),
            Request::GetChildren(r) => self
                .get_children(conn, &auth, &r)
                .map(|(children, _)| Response::GetChildren(GetChildrenResponse { children })),
            Request::GetChildren2(r) => {
                self.get_children(conn, &auth, &r).map(|(children, stat)| {
                    Response::GetChildren2(GetChildren2Response { children, stat })
                })
            }
            Request::GetAcl(r) => {
                let n = self.tree.get(&r.path).ok_or(ZkError::NoNode)?;
                acl::check(self.tree.acl(n), perms::READ | perms::ADMIN, &auth)?;
                let mut list: Vec<Acl> = self.tree.acl(n).as_ref().clone();
                if acl::check(self.tree.acl(n), perms::ADMIN, &auth).is_err() {
                    // Without ADMIN, digest hashes are hidden (they can be brute-forced).
                    for a in list.iter_mut().filter(|a| a.id.scheme == "digest") {
                        let user = a.id.id.split(':').next().unwrap_or_default();
                        a.id.id = format!("{user}:x");
                    }
                }
                Ok(Response::GetAcl(GetAclResponse {
                    acl: list,
                    stat: n.stat(),
                }))
            }
            Request::GetAllChildrenNumber(r) => {
                let n = self.tree.get(&r.path).ok_or(ZkError::NoNode)?;
                acl::check(self.tree.acl(n), perms::READ, &auth)?;
                Ok(Response::AllChildrenNumber(
                    self.tree.descendant_count(&r.path) as i32,
                ))
            }
            Request::GetEphemerals(r) => {
                let prefix = r.path.trim();
                let all = prefix.is_empty() || prefix == "/";
                let list: Vec<String> = self
                    .tree
                    .ephemerals_of(session)
                    .filter(|p| all || p.starts_with(&r.path))
                    .cloned()
                    .collect();
                Ok(Response::Ephemerals(list))
            }
            Request::Sync(r) => Ok(Response::Path(r.path)),
            Request::CheckWatches(r) => {
                let t = WatcherType::try_from(r.watcher_type).map_err(|_| ZkError::BadArguments)?;
                if self.has_watch(&r.path, conn, t) {
                    Ok(Response::Empty)
                } else {
                    Err(ZkError::NoWatcher)
                }
            }
            Request::RemoveWatches(r) => {
                let t = WatcherType::try_from(r.watcher_type).map_err(|_| ZkError::BadArguments)?;
                if self.remove_watch(&r.path, conn, t) {
                    Ok(Response::Empty)
                } else {
                    Err(ZkError::NoWatcher)
                }
            }
            Request::AddWatch(r) => {
                let recursive = match r.mode {
                    0 => false,
                    1 => true,
                    _ => return Err(ZkError::BadArguments),
                };
                self.add_persistent_watch(&r.path, conn, recursive);
                Ok(Response::ErrorCode(0))
            }
            Request::WhoAmI => Ok(Response::WhoAmI(
                auth.iter()
                    .map(|id| ClientInfo {
                        auth_scheme: id.scheme.clone(),
                        user: acl::user_of(id),
                    })
                    .collect(),
            )),
            Request::MultiRead(ops) => {
                let results = ops
                    .into_iter()
                    .map(|op| match op {
                        Request::GetData(r) => {
                            let r = PathWatch { watch: false, ..r };
                            match self.get_data(conn, &auth, &r) {
                                Ok(d) => OpResult::GetData(d),
                                Err(e) => OpResult::Error(e.code()),
                            }
                        }
                        Request::GetChildren(r) => {
                            let r = PathWatch { watch: false, ..r };
                            match self.get_children(conn, &auth, &r) {
                                Ok((c, _)) => OpResult::GetChildren(c),
                                Err(e) => OpResult::Error(e.code()),
                            }
                        }
                        _ => OpResult::Error(ZkError::Unimplemented.code()),
                    })
                    .collect();
                Ok(Response::Multi(results))
            }
            _ => Err(ZkError::Unimplemented),
        }
    }

    fn get_data(
        &mut self,
        conn: ConnId,
        auth: &[Id],
        r: &PathWatch,
    ) -> Result<GetDataResponse, ZkError> {
        let n = self.tree.get(&r.path).ok_or(ZkError::NoNode)?;
        acl::check(self.tree.acl(n), perms::READ, auth)?;
        let resp = GetDataResponse {
            data: n.data_owned(),
            stat: n.stat(),
        };
        if r.watch {
            self.data_watches.add(&r.path, conn, WatchMode::Standard);
        }
        Ok(resp)
    }

    fn get_children(
        &mut self,
        conn: ConnId,
        auth: &[Id],
        r: &PathWatch,
    ) -> Result<(Vec<String>, corral_proto::records::Stat), ZkError> {
        let n = self.tree.get(&r.path).ok_or(ZkError::NoNode)?;
        acl::check(self.tree.acl(n), perms::READ, auth)?;
        let children = n.children().map(str::to_string).collect();
        let stat = n.stat();
        if r.watch {
            self.child_watches.add(&r.path, conn, WatchMode::Standard);
        }
        Ok((children, stat))
    }

    fn has_watch(&self, path: &str, conn: ConnId, t: WatcherType) -> bool {
        match t {
            WatcherType::Children => {
                self.child_watches
                    .contains(path, conn, Some(WatchMode::Standard))
            }
            WatcherType::Data => self
                .data_watches
                .contains(path, conn, Some(WatchMode::Standard)),
            WatcherType::Persistent => {
                self.data_watches
                    .contains(path, conn, Some(WatchMode::Persistent))
            }
            WatcherType::PersistentRecursive => {
                self.data_watches
                    .contains(path, conn, Some(WatchMode::PersistentRecursive))
            }
            WatcherType::Any => {
                self.child_watches.contains(path, conn, None)
                    || self.data_watches.contains(path, conn, None)
            }
        }
    }

    fn remove_watch(&mut self, path: &str, conn: ConnId, t: WatcherType) -> bool {
        match t {
            WatcherType::Children => {
                self.child_watches
                    .remove(path, conn, Some(WatchMode::Standard))
            }
            WatcherType::Data => self
                .data_watches
                .remove(path, conn, Some(WatchMode::Standard)),
            WatcherType::Persistent => {
                let a = self
                    .child_watches
                    .remove(path, conn, Some(WatchMode::Persistent));
                let b = self
                    .data_watches
                    .remove(path, conn, Some(WatchMode::Persistent));
                a || b
            }
            WatcherType::PersistentRecursive => {
                self.data_watches
                    .remove(path, conn, Some(WatchMode::PersistentRecursive))
            }
            WatcherType::Any => {
                let a = self.child_watches.remove(path, conn, None);
                let b = self.data_watches.remove(path, conn, None);
                a || b
            }
        }
    }
}
