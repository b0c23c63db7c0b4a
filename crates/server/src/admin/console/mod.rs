//! The web console: a small page served by the AdminServer at `/` to browse the tree, follow
//! live events, see sessions, members and charts, and (when enabled) edit nodes.
//!
//! How it reaches the data: the tree, the live events and the edits go through an ordinary
//! ZooKeeper client ([`corral_client::Client`]) connected to this server's own client port.
//! That is the simplest sound way: the console needs no driver changes, reads see exactly what
//! a client sees, a subtree's events are a normal persistent recursive watch, and edits pass
//! the same ACL checks as any client's because they are made by a client that authenticated
//! with the HTTP basic-auth user and password as a `digest` identity. Reads and watches share
//! one anonymous session (so a node whose ACL denies `world:anyone` read is shown as denied);
//! each edit opens a short-lived session with the caller's identity and closes it.
//! Sessions, connections, watches and members come from the AdminServer's own commands, and
//! the charts from a ring of samples of the driver's figures ([`samples`]).
//!
//! The page is plain HTML/CSS/JS compiled into the binary (`include_str!`), no build step.
//!
//! Routes (all under the AdminServer's port):
//! - `GET /`, `/console/app.js`, `/console/app.css`: the page;
//! - `GET /console/api/info`: `{"edits": bool}`;
//! - `GET /console/api/node/<path>`: data (base64), Stat, ACL and children of one node;
//! - `GET /console/api/events/<path>`: Server-Sent Events of a recursive watch on `<path>`;
//! - `GET /console/api/sessions`: connections with their sessions (ids in hex) and watches;
//! - `GET /console/api/members`: this member and its ensemble (or `standalone`);
//! - `GET /console/api/samples`: the chart samples, oldest first;
//! - `POST`/`PUT`/`DELETE /console/api/node/<path>`: create / set / delete (body = data),
//!   only with `corral.console.edits=true`, behind HTTP basic auth.

pub mod samples;

use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use corral_client::{
    Client, CreateMode, Error as ClientError, SessionState, WatchEvent, WatchMode, ZkError,
};
use http_body_util::{BodyExt, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Method, Request, StatusCode};
use serde_json::{json, Value};
use tokio::sync::{mpsc, Mutex, Semaphore};

use super::{ask_driver, reply, text, AdminAnswer, AdminQuery, HttpResponse};
use crate::driver::Inbound;
use samples::SampleRing;

const INDEX_HTML: &str = include_str!("index.html");
const APP_JS: &str = include_str!("app.js");
const APP_CSS: &str = include_str!("app.css");

const API_PREFIX: &str = "/console/api/";
/// Live event streams served at once; each holds a watch and an HTTP connection.
const MAX_EVENT_STREAMS: usize = 16;
/// Events queued for one browser; a browser that falls this far behind is disconnected
/// (its page reconnects) rather than making the server buffer without bound.
const EVENT_QUEUE_LEN: usize = 256;
/// The largest body an edit may carry: ZooKeeper's default `jute.maxbuffer`.
const MAX_EDIT_BODY_BYTES: usize = 1024 * 1024;
/// Session timeout of the console's own client sessions.
const SESSION_TIMEOUT_MS: u64 = 30_000;
/// Keep-alive comment interval on an idle event stream, so proxies keep it open.
const EVENT_KEEPALIVE_MS: u64 = 15_000;

/// The console's state, shared by the AdminServer's connections.
pub(crate) struct Console {
    /// Where this server's clients connect (a wildcard address is reached over loopback).
    client_addr: SocketAddr,
    edits: bool,
    /// This member's id in an ensemble, `None` standalone.
    my_id: Option<u64>,
    /// The shared read-and-watch session, connected on first use and replaced when it ends.
    reader: Mutex<Option<Client>>,
    streams: Arc<Semaphore>,
    pub(crate) samples: Arc<StdMutex<SampleRing>>,
}

impl Console {
    pub(crate) fn new(client_addr: SocketAddr, edits: bool, my_id: Option<u64>) -> Console {
        let client_addr = if client_addr.ip().is_unspecified() {
            let ip = match client_addr.ip() {
                IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
                IpAddr::V6(_) => IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
            };
            SocketAddr::new(ip, client_addr.port())
        } else {
            client_addr
        };
        Console {
            client_addr,
            edits,
            my_id,
            reader: Mutex::new(None),
            streams: Arc::new(Semaphore::new(MAX_EVENT_STREAMS)),
            samples: Arc::new(StdMutex::new(SampleRing::new(samples::SAMPLE_CAPACITY))),
        }
    }

    /// Whether `path` is one the console answers (the command URL is checked after this).
    pub(crate) fn serves(path: &str) -> bool {
        path == "/"
            || path == "/console/app.js"
            || path == "/console/app.css"
            || path.starts_with(API_PREFIX)
    }

    async fn reader(&self) -> Result<Client, ClientError> {
        let mut slot = self.reader.lock().await;
        if let Some(c) = slot.as_ref() {
            if !matches!(
                c.state(),
                SessionState::Expired | SessionState::AuthFailed | SessionState::Closed
            ) {
                return Ok(c.clone());
            }
        }
        let c = self.builder().connect().await?;
        tracing::debug!(session = %format!("0x{:x}", c.session_id()), "console reader session");
        *slot = Some(c.clone());
        Ok(c)
    }

    fn builder(&self) -> corral_client::ClientBuilder {
        Client::builder(&self.client_addr.to_string())
            .session_timeout(Duration::from_millis(SESSION_TIMEOUT_MS))
    }

    pub(crate) async fn handle(
        &self,
        inbound: &mpsc::Sender<Inbound>,
        req: Request<Incoming>,
    ) -> HttpResponse {
        let path = req.uri().path().to_string();
        let method = req.method().clone();
        match path.as_str() {
            "/" => return reply(StatusCode::OK, "text/html; charset=utf-8", INDEX_HTML),
            "/console/app.js" => {
                return reply(StatusCode::OK, "text/javascript; charset=utf-8", APP_JS)
            }
            "/console/app.css" => return reply(StatusCode::OK, "text/css; charset=utf-8", APP_CSS),
            _ => {}
        }
        let Some(api) = path.strip_prefix(API_PREFIX) else {
            return text(StatusCode::NOT_FOUND, "not found\n");
        };
        let (endpoint, rest) = api.split_once('/').unwrap_or((api, ""));
        let is_read = method == Method::GET || method == Method::HEAD;
        match (endpoint, is_read) {
            ("info", true) => json_reply(StatusCode::OK, &json!({ "edits": self.edits })),
            ("samples", true) => {
                let samples = self.samples.lock().map(|r| r.to_vec()).unwrap_or_default();
                json_reply(StatusCode::OK, &json!(samples))
            }
            ("members", true) => self.members(inbound).await,
            ("sessions", true) => sessions(inbound).await,
            ("node", true) => match znode_path(rest) {
                Some(p) => self.node(&p).await,
                None => text(StatusCode::BAD_REQUEST, "bad path\n"),
            },
            ("events", true) => match znode_path(rest) {
                Some(p) => self.events(&p).await,
                None => text(StatusCode::BAD_REQUEST, "bad path\n"),
            },
            ("node", false) => match znode_path(rest) {
                Some(p) => self.edit(&p, req).await,
                None => text(StatusCode::BAD_REQUEST, "bad path\n"),
            },
            _ => text(StatusCode::NOT_FOUND, "not found\n"),
        }
    }

    async fn node(&self, path: &str) -> HttpResponse {
        let client = match self.reader().await {
            Ok(c) => c,
            Err(e) => return client_error(&e),
        };
        let (data, stat) = match client.get_data_opt(path).await {
            Ok(r) => r,
            Err(e) => return client_error(&e),
        };
        let mut children = match client.children(path).await {
            Ok((c, _)) => c,
            Err(e) => return client_error(&e),
        };
        children.sort_unstable();
        let acl = match client.get_acl(path).await {
            Ok((acl, _)) => acl
                .iter()
                .map(|a| json!({ "perms": perms_string(a.perms), "scheme": a.id.scheme, "id": a.id.id }))
                .collect::<Vec<_>>(),
            Err(e) => return client_error(&e),
        };
        let b64 = base64::engine::general_purpose::STANDARD;
        let body = json!({
            "path": path,
            "data_base64": data.map(|d| b64.encode(d)),
            "stat": {
                "czxid": hex(stat.czxid),
                "mzxid": hex(stat.mzxid),
                "pzxid": hex(stat.pzxid),
                "ctime": stat.ctime,
                "mtime": stat.mtime,
                "version": stat.version,
                "cversion": stat.cversion,
                "aversion": stat.aversion,
                "ephemeralOwner": hex(stat.ephemeral_owner),
                "dataLength": stat.data_length,
                "numChildren": stat.num_children,
            },
            "acl": acl,
            "children": children,
        });
        json_reply(StatusCode::OK, &body)
    }

    /// A persistent recursive watch on `path`, streamed as Server-Sent Events: one
    /// `data: {"type":..,"path":..,"zxid":..}` per node event, `event: session` for changes of
    /// the console session's state.
    async fn events(&self, path: &str) -> HttpResponse {
        let Ok(permit) = self.streams.clone().try_acquire_owned() else {
            return text(StatusCode::SERVICE_UNAVAILABLE, "too many event streams\n");
        };
        let client = match self.reader().await {
            Ok(c) => c,
            Err(e) => return client_error(&e),
        };
        let mut watch = match client.watch(path, WatchMode::Recursive).await {
            Ok(w) => w,
            Err(e) => return client_error(&e),
        };
        let (tx, rx) = mpsc::channel::<Bytes>(EVENT_QUEUE_LEN);
        let _ = tx.try_send(Bytes::from(format!(
            "event: ready\ndata: {}\n\n",
            json!({ "path": path })
        )));
        tokio::spawn(async move {
            // Held while the stream lives; the watch is dropped (removed) when it ends.
            let _permit = permit;
            let mut keepalive = tokio::time::interval(Duration::from_millis(EVENT_KEEPALIVE_MS));
            loop {
                let chunk = tokio::select! {
                    ev = watch.next() => match ev {
                        Some(WatchEvent::Node(n)) => format!(
                            "data: {}\n\n",
                            json!({
                                "type": format!("{:?}", n.event_type),
                                "path": n.path,
                                "zxid": n.zxid.map(hex),
                            })
                        ),
                        Some(WatchEvent::Session(s)) => {
                            format!("event: session\ndata: {}\n\n", json!(format!("{s:?}")))
                        }
                        // The page shows it like a session change: what it lists may be
                        // incomplete and the tree should be re-read.
                        Some(WatchEvent::MayHaveMissed) => format!(
                            "event: session\ndata: {}\n\n",
                            json!("MayHaveMissed: events may be missing, re-read")
                        ),
                        None => break,
                    },
                    _ = keepalive.tick() => ": keepalive\n\n".to_string(),
                    _ = tx.closed() => break,
                };
                if tx.try_send(Bytes::from(chunk)).is_err() {
                    tracing::debug!("console event stream closed or too slow; ending it");
                    break;
                }
            }
        });
        let stream = futures::stream::unfold(rx, |mut rx| async move {
            rx.recv()
                .await
                .map(|b| (Ok::<_, Infallible>(Frame::data(b)), rx))
        });
        let mut resp = hyper::Response::new(StreamBody::new(stream).boxed());
        let headers = resp.headers_mut();
        headers.insert(
            hyper::header::CONTENT_TYPE,
            hyper::header::HeaderValue::from_static("text/event-stream"),
        );
        headers.insert(
            hyper::header::CACHE_CONTROL,
            hyper::header::HeaderValue::from_static("no-cache"),
        );
        resp
    }

    /// Create (`POST`), set (`PUT`) or delete (`DELETE`) as a client authenticated with the
    /// basic-auth credentials as a `digest` identity.
    async fn edit(&self, path: &str, req: Request<Incoming>) -> HttpResponse {
        if !self.edits {
            return text(
                StatusCode::FORBIDDEN,
                "the console is read-only; set corral.console.edits=true to allow edits\n",
            );
        }
        let Some(credentials) = basic_credentials(&req) else {
            let mut resp = text(StatusCode::UNAUTHORIZED, "credentials required\n");
            resp.headers_mut().insert(
                hyper::header::WWW_AUTHENTICATE,
                hyper::header::HeaderValue::from_static("Basic realm=\"corral console\""),
            );
            return resp;
        };
        let method = req.method().clone();
        let data = match Limited::new(req.into_body(), MAX_EDIT_BODY_BYTES)
            .collect()
            .await
        {
            Ok(b) => b.to_bytes(),
            Err(_) => return text(StatusCode::PAYLOAD_TOO_LARGE, "body too large\n"),
        };
        let client = match self
            .builder()
            .auth("digest", credentials.as_bytes())
            .connect()
            .await
        {
            Ok(c) => c,
            Err(e) => return client_error(&e),
        };
        let user = credentials
            .split(':')
            .next()
            .unwrap_or_default()
            .to_string();
        let result = match method {
            Method::POST => client
                .create(path, &data, CreateMode::Persistent)
                .await
                .map(|(p, _)| json!({ "created": p })),
            Method::PUT => client
                .set_data(path, &data, None)
                .await
                .map(|s| json!({ "version": s.version })),
            Method::DELETE => client
                .delete(path, None)
                .await
                .map(|()| json!({ "deleted": path })),
            _ => {
                client.close().await;
                return text(StatusCode::METHOD_NOT_ALLOWED, "use POST, PUT or DELETE\n");
            }
        };
        client.close().await;
        match result {
            Ok(v) => {
                tracing::info!(%user, %method, path, "console edit");
                json_reply(StatusCode::OK, &v)
            }
            Err(e) => client_error(&e),
        }
    }

    /// This member and, in an ensemble, every member with its role and replication lag as
    /// this member knows them (lag only on the leader, which is the one that tracks it).
    async fn members(&self, inbound: &mpsc::Sender<Inbound>) -> HttpResponse {
        let fields = |answer: Option<AdminAnswer>| match answer {
            Some(AdminAnswer::Json(m)) => m,
            _ => Default::default(),
        };
        let stats = fields(ask_driver(inbound, AdminQuery::Command("server_stats")).await);
        let server = stats.get("server_stats").cloned().unwrap_or(Value::Null);
        let state = server
            .get("server_state")
            .and_then(Value::as_str)
            .unwrap_or("unknown")
            .to_string();
        let zxid = server
            .get("last_processed_zxid")
            .and_then(Value::as_i64)
            .map(hex);
        let Some(my_id) = self.my_id else {
            return json_reply(
                StatusCode::OK,
                &json!({ "mode": "standalone", "state": state, "zxid": zxid, "members": [] }),
            );
        };
        let leader = fields(ask_driver(inbound, AdminQuery::Command("leader")).await);
        let leader_id = leader.get("leader_id").and_then(Value::as_i64);
        // Roles come from the consensus layer's membership (observers are its learners), not
        // from `voting_view`, which lists voters only.
        let mut members = fields(ask_driver(inbound, AdminQuery::Members).await)
            .remove("members")
            .unwrap_or_else(|| json!([]));
        // A member knows only its own zxid; the others' come from their `srvr` (which every
        // server answers whatever its whitelist), asked all at once, each bounded.
        if let Some(list) = members.as_array_mut() {
            let asks = list.iter().map(|m| {
                let addr = m["client_address"].as_str().map(str::to_string);
                let known = m["zxid"].is_string();
                async move {
                    match addr {
                        Some(a) if !known => srvr_zxid(&a).await,
                        _ => None,
                    }
                }
            });
            let zxids = futures::future::join_all(asks).await;
            for (m, zxid) in list.iter_mut().zip(zxids) {
                if let Some(z) = zxid {
                    m["zxid"] = Value::String(z);
                }
            }
        }
        json_reply(
            StatusCode::OK,
            &json!({ "mode": "ensemble", "state": state, "zxid": zxid, "my_id": my_id, "leader_id": leader_id, "members": members }),
        )
    }
}

/// Connections with their session and watched paths. Session ids go out as hex strings:
/// they do not fit a JavaScript number exactly.
async fn sessions(inbound: &mpsc::Sender<Inbound>) -> HttpResponse {
    let fields = |answer: Option<AdminAnswer>| match answer {
        Some(AdminAnswer::Json(m)) => m,
        _ => Default::default(),
    };
    let conns = fields(ask_driver(inbound, AdminQuery::Command("connections")).await);
    let watches = fields(ask_driver(inbound, AdminQuery::Command("watches")).await);
    let by_session = watches
        .get("session_id_to_watched_paths")
        .and_then(Value::as_object);
    let mut out = Vec::new();
    for c in conns
        .get("connections")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let id = c.get("session_id").and_then(Value::as_i64);
        let paths = id
            .and_then(|id| by_session?.get(&id.to_string()).cloned())
            .unwrap_or_else(|| json!([]));
        out.push(json!({
            "session": id.map(hex),
            "remote": c.get("remote_socket_address"),
            "timeout_ms": c.get("session_timeout"),
            "last_operation": c.get("last_operation"),
            "packets_received": c.get("packets_received"),
            "packets_sent": c.get("packets_sent"),
            "watches": paths,
        }));
    }
    json_reply(StatusCode::OK, &json!(out))
}

/// Takes one sample of the driver's figures into the console's ring.
pub(crate) async fn sample(console: &Console, inbound: &mpsc::Sender<Inbound>) {
    if let Some(AdminAnswer::Metrics(m)) = ask_driver(inbound, AdminQuery::Metrics).await {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        if let Ok(mut ring) = console.samples.lock() {
            ring.record(
                now_ms,
                m.packets_received,
                m.avg_latency_ms,
                m.max_latency_ms,
                m.znode_count,
            );
        }
    }
}

/// How long the members view waits for another member's `srvr`.
const SRVR_TIMEOUT: Duration = Duration::from_secs(1);

/// The `Zxid:` line of `addr`'s `srvr` answer (`0x...`), if it answers in time.
async fn srvr_zxid(addr: &str) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let ask = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
        s.write_all(b"srvr").await.ok()?;
        let mut answer = String::new();
        (&mut s).take(4096).read_to_string(&mut answer).await.ok()?;
        answer
            .lines()
            .find_map(|l| l.strip_prefix("Zxid: "))
            .map(|z| z.trim().to_string())
    };
    tokio::time::timeout(SRVR_TIMEOUT, ask).await.ok().flatten()
}

fn hex(v: i64) -> String {
    format!("0x{:x}", v)
}

fn json_reply(status: StatusCode, v: &Value) -> HttpResponse {
    reply(status, "application/json", v.to_string())
}

/// A client error as an HTTP answer: ZooKeeper's code name in a JSON body.
fn client_error(e: &ClientError) -> HttpResponse {
    let status = match e {
        ClientError::Zk(ZkError::NoNode) => StatusCode::NOT_FOUND,
        ClientError::Zk(ZkError::NoAuth) | ClientError::AuthFailed => StatusCode::FORBIDDEN,
        ClientError::Zk(_) | ClientError::BadArguments(_) => StatusCode::CONFLICT,
        _ => StatusCode::BAD_GATEWAY,
    };
    json_reply(status, &json!({ "error": e.to_string() }))
}

/// `cdrwa` letters of a permission mask, in zkCli's order.
fn perms_string(perms: i32) -> String {
    use corral_client::perms as p;
    [
        (p::CREATE, 'c'),
        (p::DELETE, 'd'),
        (p::READ, 'r'),
        (p::WRITE, 'w'),
        (p::ADMIN, 'a'),
    ]
    .iter()
    .filter(|(bit, _)| perms & bit != 0)
    .map(|(_, c)| *c)
    .collect()
}

/// The znode path of a URL tail: `a/b%20c` → `/a/b c`. `None` when it does not decode.
fn znode_path(tail: &str) -> Option<String> {
    let decoded = percent_decode(tail)?;
    let trimmed = decoded.trim_end_matches('/');
    Some(format!("/{}", trimmed.trim_start_matches('/')))
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let h = bytes.get(i + 1..i + 3)?;
            let h = std::str::from_utf8(h).ok()?;
            out.push(u8::from_str_radix(h, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// `user:password` from an `Authorization: Basic` header.
fn basic_credentials<B>(req: &Request<B>) -> Option<String> {
    let value = req
        .headers()
        .get(hyper::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let encoded = value.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let s = String::from_utf8(decoded).ok()?;
    s.contains(':').then_some(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_tails_become_znode_paths() {
        assert_eq!(znode_path("").as_deref(), Some("/"));
        assert_eq!(znode_path("a/b%20c").as_deref(), Some("/a/b c"));
        assert_eq!(znode_path("a/").as_deref(), Some("/a"));
        assert_eq!(znode_path("%zz"), None);
        assert_eq!(znode_path("%4"), None);
    }

    #[test]
    fn perms_print_in_zkcli_order() {
        assert_eq!(perms_string(corral_client::perms::ALL), "cdrwa");
        assert_eq!(perms_string(corral_client::perms::READ), "r");
    }

    #[test]
    fn basic_auth_header_decodes() {
        let req = Request::builder()
            .header("authorization", "Basic YWxpY2U6c2VjcmV0")
            .body(())
            .unwrap();
        assert_eq!(basic_credentials(&req).as_deref(), Some("alice:secret"));
        let none = Request::builder().body(()).unwrap();
        assert_eq!(basic_credentials(&none), None);
    }
}
