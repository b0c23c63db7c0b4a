//! The client handle and its typed operations.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use corral_proto::records::{
    Acl, AddWatchRequest, ClientInfo, CreateRequest, CreateTtlRequest, DeleteRequest, PathRequest,
    PathWatch, SetAclRequest, SetDataRequest, Stat,
};
use corral_proto::{AddWatchMode, CreateMode, OpCode, Request, Response, ZkError};
use tokio::sync::{mpsc, oneshot, watch};

use crate::error::Error;
use crate::hosts::{parse_ensemble_config, EnsembleHosts};
use crate::multi::{ReadOp, Transaction};
use crate::path::{validate_path, Chroot};
use crate::session::{Command, Config, RawReply, SessionInfo, SessionTask, WatchReg};
use crate::types::{ConnectString, CreateOptions, SessionState, WatchMode};
use crate::watch::{OneshotWatch, PersistentWatch};

static NEXT_WATCH_ID: AtomicU64 = AtomicU64::new(1);

/// Where ZooKeeper 3.5+ servers publish the ensemble's membership.
const CONFIG_NODE: &str = "/zookeeper/config";

/// Settings for [`Client`]; start from [`Client::builder`].
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    connect_string: String,
    session_timeout: Duration,
    connect_timeout: Option<Duration>,
    read_only: bool,
    session: Option<(i64, Vec<u8>)>,
    auths: Vec<(String, Vec<u8>)>,
}

impl ClientBuilder {
    /// The session timeout to ask for (the server may negotiate it into its bounds).
    pub fn session_timeout(mut self, timeout: Duration) -> Self {
        self.session_timeout = timeout;
        self
    }
    /// How long [`ClientBuilder::connect`] waits for the first connection (default: the
    /// session timeout).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = Some(timeout);
        self
    }
    /// Accept read-only servers (servers cut off from their quorum).
    pub fn read_only(mut self, allowed: bool) -> Self {
        self.read_only = allowed;
        self
    }
    /// Resume an existing session (id and password from [`Client::session_id`] and
    /// [`Client::session_password`]) instead of creating one.
    pub fn session(mut self, session_id: i64, password: Vec<u8>) -> Self {
        self.session = Some((session_id, password));
        self
    }
    /// Authenticate with `scheme` (e.g. `digest` with `user:password`) on every connection.
    pub fn auth(mut self, scheme: &str, auth: &[u8]) -> Self {
        self.auths.push((scheme.to_string(), auth.to_vec()));
        self
    }

    /// Starts the session and waits until it is connected.
    pub async fn connect(self) -> Result<Client, Error> {
        let cs = ConnectString::parse(&self.connect_string)?;
        // What a rebuilt session reuses: everything but the session itself.
        let settings = ClientBuilder {
            session: None,
            ..self.clone()
        };
        let timeout_ms = self.session_timeout.as_millis().min(i32::MAX as u128) as i32;
        let (tx, rx) = mpsc::unbounded_channel();
        let (state_tx, state_rx) = watch::channel(SessionState::Connecting);
        let info = Arc::new(Mutex::new(SessionInfo::default()));
        let task = SessionTask::new(
            Config {
                hosts: cs.hosts,
                chroot: cs.chroot.clone(),
                session_timeout_ms: timeout_ms,
                read_only: self.read_only,
                session: self.session,
                auths: self.auths,
            },
            rx,
            state_tx,
            info.clone(),
        );
        tokio::spawn(task.run());
        let client = Client {
            inner: Arc::new(Inner {
                tx,
                state: state_rx,
                chroot: cs.chroot,
                info,
                settings,
            }),
        };
        let mut state = client.state_watcher();
        let wait = state.wait_for(|s| s.is_connected() || s.is_terminal());
        match tokio::time::timeout(self.connect_timeout.unwrap_or(self.session_timeout), wait).await
        {
            Ok(Ok(s)) if s.is_connected() => {}
            Ok(Ok(s)) => return Err(s.terminal_error()),
            Ok(Err(_)) => return Err(Error::Closed),
            Err(_) => return Err(Error::Timeout),
        }
        Ok(client)
    }
}

struct Inner {
    tx: mpsc::UnboundedSender<Command>,
    state: watch::Receiver<SessionState>,
    chroot: Chroot,
    info: Arc<Mutex<SessionInfo>>,
    settings: ClientBuilder,
}

/// A ZooKeeper session. Cheap to clone; all clones share the session, which is closed when
/// the last clone is dropped (or by [`Client::close`]).
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("session_id", &format_args!("{:#x}", self.session_id()))
            .field("state", &self.state())
            .finish()
    }
}

/// The optional version argument of delete, setData and setACL: `None` matches any version.
fn version(v: Option<i32>) -> i32 {
    v.unwrap_or(-1)
}

fn unexpected(r: Response) -> Error {
    Error::Protocol(format!("unexpected reply {r:?}"))
}

impl Client {
    /// A new session with this client's settings (connect string, chroot, timeouts, the
    /// builder's auth identities) — for after [`SessionState::Expired`], which is final for a
    /// session: its ephemerals and watches are gone, so callers re-create what they need.
    pub async fn rebuild(&self) -> Result<Client, Error> {
        self.inner.settings.clone().connect().await
    }

    pub fn builder(connect_string: &str) -> ClientBuilder {
        ClientBuilder {
            connect_string: connect_string.to_string(),
            session_timeout: Duration::from_secs(10),
            connect_timeout: None,
            read_only: false,
            session: None,
            auths: Vec::new(),
        }
    }

    /// Connects with default settings (10 s session timeout).
    pub async fn connect(connect_string: &str) -> Result<Client, Error> {
        Client::builder(connect_string).connect().await
    }

    pub fn state(&self) -> SessionState {
        *self.inner.state.borrow()
    }

    /// A receiver of session-state changes (always holding the current state).
    pub fn state_watcher(&self) -> watch::Receiver<SessionState> {
        self.inner.state.clone()
    }

    pub fn session_id(&self) -> i64 {
        self.inner.info.lock().unwrap().session_id
    }

    pub fn session_password(&self) -> Vec<u8> {
        self.inner.info.lock().unwrap().password.clone()
    }

    /// The session timeout the server granted.
    pub fn session_timeout(&self) -> Duration {
        Duration::from_millis(self.inner.info.lock().unwrap().timeout_ms.max(0) as u64)
    }

    /// The chroot this client works under ("/" if none).
    pub fn chroot(&self) -> &str {
        self.inner.chroot.as_str()
    }

    /// Closes the session: its ephemeral nodes go away at once. Other clones fail afterwards.
    pub async fn close(&self) {
        let (reply, rx) = oneshot::channel();
        if self.inner.tx.send(Command::Close { reply }).is_ok() {
            let _ = rx.await;
        }
    }

    /// Replaces the servers this client may connect to, as ZooKeeper's `updateServerAddresses`
    /// does: `hosts` is a connect string without a chroot (`host1:2181,host2:2181`). A
    /// connection to a server the new list still names is kept; otherwise the client moves its
    /// session to one of the new servers.
    pub fn set_hosts(&self, hosts: &str) -> Result<(), Error> {
        let cs = ConnectString::parse(hosts)?;
        if cs.chroot.as_str() != "/" {
            return Err(Error::BadArguments(format!(
                "a host list has no chroot: {hosts:?}"
            )));
        }
        self.inner
            .tx
            .send(Command::SetHosts { hosts: cs.hosts })
            .map_err(|_| self.terminal())
    }

    /// Reads the ensemble's membership from `/zookeeper/config` (outside any chroot) and
    /// returns its client addresses; pass [`EnsembleHosts::connect_string`] to
    /// [`Client::set_hosts`] to follow a reconfigured ensemble.
    pub async fn ensemble_hosts(&self) -> Result<EnsembleHosts, Error> {
        let req = Request::GetData(PathWatch {
            path: CONFIG_NODE.to_string(),
            watch: false,
        });
        let data = match self.request(req, None).await? {
            Response::GetData(r) => r.data.map(|b| b.to_vec()).unwrap_or_default(),
            r => return Err(unexpected(r)),
        };
        let text = String::from_utf8(data)
            .map_err(|_| Error::Protocol(format!("{CONFIG_NODE} is not UTF-8")))?;
        parse_ensemble_config(&text)
    }

    /// Reads `/zookeeper/config` as ZooKeeper's `getConfig` does: outside any chroot, null data
    /// as `None`.
    pub async fn get_config(&self) -> Result<(Option<Vec<u8>>, Stat), Error> {
        self.get_config_inner(None).await
    }

    /// Like [`Client::get_config`], leaving a one-shot data watch on `/zookeeper/config`.
    pub async fn get_config_w(&self) -> Result<(Option<Vec<u8>>, Stat, OneshotWatch), Error> {
        let (tx, w) = self.new_oneshot();
        let (data, stat) = self.get_config_inner(Some(WatchReg::Data(tx))).await?;
        Ok((data, stat, w))
    }

    async fn get_config_inner(
        &self,
        watch: Option<WatchReg>,
    ) -> Result<(Option<Vec<u8>>, Stat), Error> {
        // The config node is addressed by its server path: a chroot does not apply to it.
        let req = Request::GetData(PathWatch {
            path: CONFIG_NODE.to_string(),
            watch: watch.is_some(),
        });
        match self.request(req, watch).await? {
            Response::GetData(r) => Ok((r.data.map(|b| b.to_vec()), r.stat)),
            r => Err(unexpected(r)),
        }
    }

    pub(crate) fn server_path(&self, path: &str, sequential: bool) -> Result<String, Error> {
        validate_path(path, sequential)?;
        Ok(self.inner.chroot.apply(path))
    }

    pub(crate) fn client_path(&self, server_path: &str) -> String {
        self.inner.chroot.strip(server_path)
    }

    fn terminal(&self) -> Error {
        let s = self.state();
        if s.is_terminal() {
            s.terminal_error()
        } else {
            Error::Closed
        }
    }

    async fn call(&self, req: Request, watch: Option<WatchReg>) -> Result<RawReply, Error> {
        let (reply, rx) = oneshot::channel();
        self.inner
            .tx
            .send(Command::Request { req, watch, reply })
            .map_err(|_| self.terminal())?;
        rx.await.map_err(|_| self.terminal())?
    }

    pub(crate) async fn request(
        &self,
        req: Request,
        watch: Option<WatchReg>,
    ) -> Result<Response, Error> {
        let op = req.op();
        let raw = self.call(req, watch).await?;
        if raw.err != 0 {
            return Err(Error::from_code(raw.err));
        }
        Ok(Response::decode(op, &raw.body)?)
    }

    pub(crate) async fn request_raw(&self, req: Request) -> Result<RawReply, Error> {
        self.call(req, None).await
    }

    fn new_oneshot(&self) -> (crate::session::OneshotTx, OneshotWatch) {
        let (tx, rx) = oneshot::channel();
        (
            tx,
            OneshotWatch {
                rx,
                state: self.state_watcher(),
            },
        )
    }

    pub(crate) fn build_create(
        &self,
        path: &str,
        data: Option<&[u8]>,
        options: &CreateOptions,
    ) -> Result<Request, Error> {
        options.validate()?;
        let server_path = self.server_path(path, options.mode.is_sequential())?;
        let data = data.map(Bytes::copy_from_slice);
        let flags = options.mode.code();
        Ok(if options.mode.is_ttl() {
            Request::CreateTtl(CreateTtlRequest {
                path: server_path,
                data,
                acl: options.acl.clone(),
                flags,
                ttl_ms: options.ttl_ms.unwrap_or(0),
            })
        } else {
            let op = if options.mode == CreateMode::Container {
                OpCode::CreateContainer
            } else {
                OpCode::Create2
            };
            Request::Create {
                op,
                req: CreateRequest {
                    path: server_path,
                    data,
                    acl: options.acl.clone(),
                    flags,
                },
            }
        })
    }

    /// Creates a node; returns its actual path (sequential modes add a suffix) and its Stat.
    ///
    /// `options` is a [`CreateMode`] or a [`CreateOptions`] (ACL, TTL).
    pub async fn create(
        &self,
        path: &str,
        data: &[u8],
        options: impl Into<CreateOptions>,
    ) -> Result<(String, Stat), Error> {
        self.create_opt(path, Some(data), options).await
    }

    /// Like [`Client::create`], but `None` stores no data at all (ZooKeeper's null data, which
    /// zkCli shows as `null`) rather than empty data.
    pub async fn create_opt(
        &self,
        path: &str,
        data: Option<&[u8]>,
        options: impl Into<CreateOptions>,
    ) -> Result<(String, Stat), Error> {
        let req = self.build_create(path, data, &options.into())?;
        match self.request(req, None).await? {
            Response::Create2(r) => Ok((self.client_path(&r.path), r.stat)),
            Response::Path(p) => Ok((self.client_path(&p), Stat::default())),
            r => Err(unexpected(r)),
        }
    }

    /// Creates `path` and any missing ancestors as persistent nodes with empty data; an
    /// existing node is fine.
    pub async fn create_all(&self, path: &str) -> Result<(), Error> {
        validate_path(path, false)?;
        if path == "/" {
            return Ok(());
        }
        let mut at = String::new();
        for segment in path[1..].split('/') {
            at.push('/');
            at.push_str(segment);
            match self.create(&at, b"", CreateMode::Persistent).await {
                Ok(_) | Err(Error::Zk(ZkError::NodeExists)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Deletes a node if its version matches (`None`: any version).
    pub async fn delete(&self, path: &str, version_: Option<i32>) -> Result<(), Error> {
        let path = self.server_path(path, false)?;
        let req = Request::Delete(DeleteRequest {
            path,
            version: version(version_),
        });
        self.request(req, None).await.map(|_| ())
    }

    /// Sets a node's data if its version matches (`None`: any version).
    pub async fn set_data(
        &self,
        path: &str,
        data: &[u8],
        version_: Option<i32>,
    ) -> Result<Stat, Error> {
        let path = self.server_path(path, false)?;
        let req = Request::SetData(SetDataRequest {
            path,
            data: Some(Bytes::copy_from_slice(data)),
            version: version(version_),
        });
        match self.request(req, None).await? {
            Response::Stat(s) => Ok(s),
            r => Err(unexpected(r)),
        }
    }

    async fn get_data_inner(
        &self,
        path: &str,
        watch: Option<WatchReg>,
    ) -> Result<(Option<Vec<u8>>, Stat), Error> {
        let path = self.server_path(path, false)?;
        let req = Request::GetData(PathWatch {
            path,
            watch: watch.is_some(),
        });
        match self.request(req, watch).await? {
            Response::GetData(r) => Ok((r.data.map(|b| b.to_vec()), r.stat)),
            r => Err(unexpected(r)),
        }
    }

    pub async fn get_data(&self, path: &str) -> Result<(Vec<u8>, Stat), Error> {
        let (data, stat) = self.get_data_inner(path, None).await?;
        Ok((data.unwrap_or_default(), stat))
    }

    /// Like [`Client::get_data`], telling null data (`None`) apart from empty data.
    pub async fn get_data_opt(&self, path: &str) -> Result<(Option<Vec<u8>>, Stat), Error> {
        self.get_data_inner(path, None).await
    }

    /// Removes this client's one-shot watches on `path` (data and exist watches, child watches,
    /// or both), on the server too unless `local`. Pending [`OneshotWatch`]es resolve with a
    /// `DataWatchRemoved` / `ChildWatchRemoved` event. `NoWatcher` if there was none.
    pub async fn remove_watches(
        &self,
        path: &str,
        kind: corral_proto::WatcherType,
        local: bool,
    ) -> Result<(), Error> {
        use corral_proto::WatcherType as T;
        let server_path = self.server_path(path, false)?;
        let (data, child) = match kind {
            T::Data => (true, false),
            T::Children => (false, true),
            T::Any => (true, true),
            T::Persistent | T::PersistentRecursive => {
                return Err(Error::BadArguments(
                    "persistent watches are removed by dropping their stream".into(),
                ))
            }
        };
        if !local {
            let req = Request::RemoveWatches(corral_proto::records::WatchesRequest {
                path: server_path.clone(),
                watcher_type: kind.code(),
            });
            self.request(req, None).await?;
        }
        let (reply, rx) = tokio::sync::oneshot::channel();
        self.inner
            .tx
            .send(crate::session::Command::DropOneshots {
                server_path,
                client_path: path.to_string(),
                data,
                child,
                reply,
            })
            .map_err(|_| self.terminal())?;
        match rx.await {
            Ok(true) => Ok(()),
            // The server removed a watch this client had forgotten: still a success.
            Ok(false) if !local => Ok(()),
            Ok(false) => Err(Error::Zk(ZkError::NoWatcher)),
            Err(_) => Err(Error::Closed),
        }
    }

    /// Reads a node and leaves a one-shot watch for its next change or deletion.
    pub async fn get_data_w(&self, path: &str) -> Result<(Vec<u8>, Stat, OneshotWatch), Error> {
        let (data, stat, w) = self.get_data_opt_w(path).await?;
        Ok((data.unwrap_or_default(), stat, w))
    }

    /// Like [`Client::get_data_w`], telling null data (`None`) apart from empty data.
    pub async fn get_data_opt_w(
        &self,
        path: &str,
    ) -> Result<(Option<Vec<u8>>, Stat, OneshotWatch), Error> {
        let (tx, w) = self.new_oneshot();
        let (data, stat) = self.get_data_inner(path, Some(WatchReg::Data(tx))).await?;
        Ok((data, stat, w))
    }

    async fn exists_inner(
        &self,
        path: &str,
        watch: Option<WatchReg>,
    ) -> Result<Option<Stat>, Error> {
        let path = self.server_path(path, false)?;
        let req = Request::Exists(PathWatch {
            path,
            watch: watch.is_some(),
        });
        match self.request(req, watch).await {
            Ok(Response::Stat(s)) => Ok(Some(s)),
            Ok(r) => Err(unexpected(r)),
            Err(Error::Zk(ZkError::NoNode)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The node's Stat, or `None` if it does not exist.
    pub async fn exists(&self, path: &str) -> Result<Option<Stat>, Error> {
        self.exists_inner(path, None).await
    }

    /// Like [`Client::exists`], leaving a one-shot watch for the node's creation, change or
    /// deletion.
    pub async fn exists_w(&self, path: &str) -> Result<(Option<Stat>, OneshotWatch), Error> {
        let (tx, w) = self.new_oneshot();
        let stat = self.exists_inner(path, Some(WatchReg::Exists(tx))).await?;
        Ok((stat, w))
    }

    async fn children_inner(
        &self,
        path: &str,
        watch: Option<WatchReg>,
    ) -> Result<(Vec<String>, Stat), Error> {
        let path = self.server_path(path, false)?;
        let req = Request::GetChildren2(PathWatch {
            path,
            watch: watch.is_some(),
        });
        match self.request(req, watch).await? {
            Response::GetChildren2(r) => Ok((r.children, r.stat)),
            r => Err(unexpected(r)),
        }
    }

    /// The names of a node's children (unordered) and the node's Stat.
    pub async fn children(&self, path: &str) -> Result<(Vec<String>, Stat), Error> {
        self.children_inner(path, None).await
    }

    /// Like [`Client::children`], leaving a one-shot watch for a change of the children list
    /// or the node's deletion.
    pub async fn children_w(&self, path: &str) -> Result<(Vec<String>, Stat, OneshotWatch), Error> {
        let (tx, w) = self.new_oneshot();
        let (c, s) = self.children_inner(path, Some(WatchReg::Child(tx))).await?;
        Ok((c, s, w))
    }

    /// The number of descendants of a node (not counting the node).
    pub async fn all_children_number(&self, path: &str) -> Result<i32, Error> {
        let path = self.server_path(path, false)?;
        match self
            .request(Request::GetAllChildrenNumber(PathRequest { path }), None)
            .await?
        {
            Response::AllChildrenNumber(n) => Ok(n),
            r => Err(unexpected(r)),
        }
    }

    /// The paths of this session's ephemeral nodes whose paths start with `prefix`
    /// ("/" for all).
    pub async fn get_ephemerals(&self, prefix: &str) -> Result<Vec<String>, Error> {
        let path = self.server_path(prefix, false)?;
        match self
            .request(Request::GetEphemerals(PathRequest { path }), None)
            .await?
        {
            Response::Ephemerals(v) => Ok(v.iter().map(|p| self.client_path(p)).collect()),
            r => Err(unexpected(r)),
        }
    }

    pub async fn get_acl(&self, path: &str) -> Result<(Vec<Acl>, Stat), Error> {
        let path = self.server_path(path, false)?;
        match self
            .request(Request::GetAcl(PathRequest { path }), None)
            .await?
        {
            Response::GetAcl(r) => Ok((r.acl, r.stat)),
            r => Err(unexpected(r)),
        }
    }

    /// Replaces a node's ACL if its ACL version matches (`None`: any version).
    pub async fn set_acl(
        &self,
        path: &str,
        acl: &[Acl],
        acl_version: Option<i32>,
    ) -> Result<Stat, Error> {
        if acl.is_empty() {
            return Err(Error::BadArguments("ACL must not be empty".into()));
        }
        let path = self.server_path(path, false)?;
        let req = Request::SetAcl(SetAclRequest {
            path,
            acl: acl.to_vec(),
            version: version(acl_version),
        });
        match self.request(req, None).await? {
            Response::Stat(s) => Ok(s),
            r => Err(unexpected(r)),
        }
    }

    /// Waits until the server this client talks to has caught up with the leader for `path`.
    pub async fn sync(&self, path: &str) -> Result<(), Error> {
        let path = self.server_path(path, false)?;
        self.request(Request::Sync(PathRequest { path }), None)
            .await
            .map(|_| ())
    }

    /// Changes the ensemble's membership (ZooKeeper's reconfig): `joining` is a comma-separated
    /// list of `server.N=host:peer:election[:role];[addr:]port`, `leaving` of member ids;
    /// or `new_members` gives the whole new list. `from_config` is the expected current config
    /// version (-1: any). Returns the new `/zookeeper/config` text and its stat. Needs
    /// `reconfigEnabled=true` and permission to write `/zookeeper/config` (the super user).
    pub async fn reconfig(
        &self,
        joining: &str,
        leaving: &str,
        new_members: &str,
        from_config: i64,
    ) -> Result<(Vec<u8>, Stat), Error> {
        let req = Request::Reconfig(corral_proto::records::ReconfigRequest {
            joining_servers: joining.to_string(),
            leaving_servers: leaving.to_string(),
            new_members: new_members.to_string(),
            cur_config_id: from_config,
        });
        match self.request(req, None).await? {
            Response::GetData(r) => Ok((r.data.map(|d| d.to_vec()).unwrap_or_default(), r.stat)),
            r => Err(unexpected(r)),
        }
    }

    /// Adds an identity to the session (also re-sent on every reconnect).
    pub async fn add_auth(&self, scheme: &str, auth: &[u8]) -> Result<(), Error> {
        if scheme.is_empty() {
            return Err(Error::BadArguments("empty auth scheme".into()));
        }
        let (reply, rx) = oneshot::channel();
        self.inner
            .tx
            .send(Command::Auth {
                scheme: scheme.to_string(),
                auth: auth.to_vec(),
                reply,
            })
            .map_err(|_| self.terminal())?;
        rx.await.map_err(|_| self.terminal())?
    }

    /// The identities the server associates with this session.
    pub async fn who_am_i(&self) -> Result<Vec<ClientInfo>, Error> {
        match self.request(Request::WhoAmI, None).await? {
            Response::WhoAmI(v) => Ok(v),
            r => Err(unexpected(r)),
        }
    }

    /// Adds a persistent watch on `path` (which need not exist). Events arrive on the returned
    /// stream until it is dropped or the session ends.
    pub async fn watch(&self, path: &str, mode: WatchMode) -> Result<PersistentWatch, Error> {
        let server_path = self.server_path(path, false)?;
        let id = NEXT_WATCH_ID.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::unbounded_channel();
        let wire_mode = match mode {
            WatchMode::NonRecursive => AddWatchMode::Persistent,
            WatchMode::Recursive => AddWatchMode::PersistentRecursive,
        };
        let req = Request::AddWatch(AddWatchRequest {
            path: server_path,
            mode: wire_mode.code(),
        });
        self.request(req, Some(WatchReg::Persistent { id, mode, tx }))
            .await?;
        Ok(PersistentWatch {
            id,
            path: path.to_string(),
            rx,
            commands: self.inner.tx.downgrade(),
        })
    }

    /// Starts a transaction: operations added to it are applied all or none by
    /// [`Transaction::commit`].
    pub fn transaction(&self) -> Transaction {
        Transaction::new(self.clone())
    }

    /// Reads several nodes in one round trip; each read succeeds or fails on its own.
    pub async fn multi_read(
        &self,
        ops: &[ReadOp],
    ) -> Result<Vec<Result<crate::multi::ReadResult, Error>>, Error> {
        crate::multi::multi_read(self, ops).await
    }
}
