//! Operations endpoints over HTTP: ZooKeeper's AdminServer (JSON commands), the Prometheus
//! endpoint of its PrometheusMetricsProvider, and health probes.
//!
//! Two listeners, configured as in ZooKeeper (`admin.*`, `metricsProvider.*`); each also
//! answers the health probes, so a probe can use whichever port is open:
//!
//! - `GET <commandURL>` lists the commands, `GET <commandURL>/<name>` answers one in JSON
//!   (admin listener only);
//! - `GET /metrics`: Prometheus text format (metrics listener only);
//! - `GET /livez`: 200 while the process serves HTTP at all;
//! - `GET /readyz`: 200 when clients can be served (standalone: always; ensemble member:
//!   it has a leader), else 503.
//!
//! The admin listener also serves the web console at `/` ([`console`]).
//!
//! Every figure comes from the driver in one [`Inbound::Admin`] request, so answers are
//! consistent snapshots and the driver stays the only owner of the state.

pub mod commands;
pub mod console;
pub mod metrics;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio::task::{JoinHandle, JoinSet};

use crate::config::ServerConfig;
use crate::driver::{Inbound, ServerError};
pub use metrics::{EnsembleMetrics, LeaderMetrics, MetricsSnapshot};

/// Health probe paths (Kubernetes' naming).
pub const LIVE_PATH: &str = "/livez";
pub const READY_PATH: &str = "/readyz";
pub const METRICS_PATH: &str = "/metrics";

/// HTTP connections served at once per listener; more wait in the kernel's backlog. Scrapes
/// and probes are few; this only stops a flood from becoming unbounded tasks.
const MAX_CONNECTIONS: usize = 64;
/// A client that does not finish sending its request headers within this is dropped.
const HEADER_READ_TIMEOUT_MS: u64 = 10_000;
/// Upper bound on waiting for the driver: a wedged driver gets a 503, not a hung probe.
const DRIVER_TIMEOUT_MS: u64 = 10_000;

/// Every answer's type: most are one buffer, the console's event stream is not.
pub(crate) type HttpResponse = Response<BoxBody<Bytes, Infallible>>;

/// What the HTTP side asks the driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AdminQuery {
    /// A command by its primary name.
    Command(&'static str),
    Metrics,
    Ready,
    /// The ensemble's members as this member sees them (the console's members view).
    Members,
}

/// The driver's answer to an [`AdminQuery`].
#[derive(Debug)]
pub(crate) enum AdminAnswer {
    /// The command's fields, `command` and `error` included.
    Json(serde_json::Map<String, serde_json::Value>),
    Metrics(Box<MetricsSnapshot>),
    Ready(bool),
}

/// Which endpoints a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Admin,
    Metrics,
}

struct Context {
    role: Role,
    command_url: String,
    inbound: mpsc::Sender<Inbound>,
    /// The web console; on the admin listener only.
    console: Option<Arc<console::Console>>,
}

/// The bound (not yet serving) operations listeners.
pub(crate) struct AdminListeners {
    admin: Option<TcpListener>,
    metrics: Option<TcpListener>,
    command_url: String,
    console_edits: bool,
    my_id: Option<u64>,
}

impl AdminListeners {
    /// Binds what the configuration enables. The metrics port was asked for explicitly, so
    /// failing to bind it stops the server; the AdminServer is on by default, and (as in
    /// ZooKeeper) failing to bind it is logged and the server runs without it.
    pub(crate) async fn bind(config: &ServerConfig) -> Result<AdminListeners, ServerError> {
        let admin = if config.admin.enabled {
            let addr = SocketAddr::new(config.admin.address, config.admin.port);
            match TcpListener::bind(addr).await {
                Ok(l) => Some(l),
                Err(e) => {
                    tracing::error!(%addr, error = %e, "cannot start the AdminServer; serving without it");
                    None
                }
            }
        } else {
            None
        };
        let metrics = if config.metrics.enabled {
            let addr = SocketAddr::new(config.metrics.host, config.metrics.port);
            Some(
                TcpListener::bind(addr)
                    .await
                    .map_err(|source| ServerError::Bind { addr, source })?,
            )
        } else {
            None
        };
        Ok(AdminListeners {
            admin,
            metrics,
            command_url: config.admin.command_url.clone(),
            console_edits: config.admin.console_edits,
            my_id: config.ensemble.as_ref().map(|e| e.my_id),
        })
    }

    pub(crate) fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().and_then(|l| l.local_addr().ok())
    }

    pub(crate) fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// Starts serving; everything stops when the returned value is dropped. `client_addr` is
    /// this server's bound client port, which the web console connects to.
    pub(crate) fn serve(
        self,
        inbound: mpsc::Sender<Inbound>,
        client_addr: SocketAddr,
    ) -> AdminTasks {
        let mut tasks = Vec::new();
        let console = self.admin.is_some().then(|| {
            Arc::new(console::Console::new(
                client_addr,
                self.console_edits,
                self.my_id,
            ))
        });
        if let Some(console) = console.clone() {
            let inbound = inbound.clone();
            tasks.push(tokio::spawn(async move {
                let mut every = tokio::time::interval(Duration::from_millis(
                    console::samples::SAMPLE_INTERVAL_MS,
                ));
                every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    every.tick().await;
                    console::sample(&console, &inbound).await;
                }
            }));
        }
        for (listener, role) in [(self.admin, Role::Admin), (self.metrics, Role::Metrics)] {
            let Some(listener) = listener else { continue };
            if let Ok(addr) = listener.local_addr() {
                tracing::info!(%addr, ?role, "serving operations endpoints");
            }
            let ctx = Arc::new(Context {
                role,
                command_url: self.command_url.clone(),
                inbound: inbound.clone(),
                console: if role == Role::Admin {
                    console.clone()
                } else {
                    None
                },
            });
            tasks.push(tokio::spawn(accept_loop(listener, ctx)));
        }
        AdminTasks { tasks }
    }
}

/// The running listeners; dropping this stops them and their connections.
pub(crate) struct AdminTasks {
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for AdminTasks {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

async fn accept_loop(listener: TcpListener, ctx: Arc<Context>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    // Owned here, so aborting this task ends every connection it started.
    let mut conns = JoinSet::new();
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        // Reap finished connections so the set does not grow with the server's lifetime.
        while conns.try_join_next().is_some() {}
        let (stream, _peer) = match listener.accept().await {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "admin accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let ctx = ctx.clone();
        conns.spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let ctx = ctx.clone();
                async move { Ok::<_, Infallible>(handle(&ctx, req).await) }
            });
            let served = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_millis(HEADER_READ_TIMEOUT_MS))
                .serve_connection(TokioIo::new(stream), service)
                .await;
            if let Err(e) = served {
                tracing::debug!(error = %e, "admin connection ended with an error");
            }
            drop(permit);
        });
    }
}

fn reply(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> HttpResponse {
    let mut resp = Response::new(Full::new(body.into()).boxed());
    *resp.status_mut() = status;
    if let Ok(v) = content_type.parse() {
        resp.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    resp
}

fn text(status: StatusCode, body: &str) -> HttpResponse {
    reply(status, "text/plain; charset=utf-8", body.to_string())
}

async fn ask(ctx: &Context, query: AdminQuery) -> Option<AdminAnswer> {
    ask_driver(&ctx.inbound, query).await
}

/// One question to the driver; `None` when it is gone or does not answer in time.
async fn ask_driver(inbound: &mpsc::Sender<Inbound>, query: AdminQuery) -> Option<AdminAnswer> {
    let (tx, rx) = oneshot::channel();
    let send = inbound.send(Inbound::Admin { query, reply: tx });
    let wait = async move {
        send.await.ok()?;
        rx.await.ok()
    };
    tokio::time::timeout(Duration::from_millis(DRIVER_TIMEOUT_MS), wait)
        .await
        .ok()
        .flatten()
}

fn unavailable() -> HttpResponse {
    text(StatusCode::SERVICE_UNAVAILABLE, "server is not running\n")
}

fn json(map: &serde_json::Map<String, serde_json::Value>) -> HttpResponse {
    match serde_json::to_string_pretty(map) {
        Ok(body) => reply(StatusCode::OK, "application/json", body),
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

/// The answer to a name that is no command, in ZooKeeper's form (it answers 200 too).
fn unknown_command(name: &str) -> serde_json::Map<String, serde_json::Value> {
    let mut map = serde_json::Map::new();
    map.insert("command".into(), name.into());
    map.insert("error".into(), format!("Unknown command: {name}").into());
    map
}

async fn handle(ctx: &Context, req: Request<Incoming>) -> HttpResponse {
    if let Some(console) = &ctx.console {
        if console::Console::serves(req.uri().path()) {
            return console.handle(&ctx.inbound, req).await;
        }
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET is served\n");
    }
    let path = req.uri().path();
    if path == LIVE_PATH {
        return text(StatusCode::OK, "live\n");
    }
    if path == READY_PATH {
        return match ask(ctx, AdminQuery::Ready).await {
            Some(AdminAnswer::Ready(true)) => text(StatusCode::OK, "ready\n"),
            Some(_) => text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n"),
            None => unavailable(),
        };
    }
    match ctx.role {
        Role::Metrics if path == METRICS_PATH => match ask(ctx, AdminQuery::Metrics).await {
            Some(AdminAnswer::Metrics(snapshot)) => match metrics::render(&snapshot) {
                Ok(body) => reply(StatusCode::OK, &metrics::content_type(), body),
                Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
            },
            _ => unavailable(),
        },
        Role::Admin => {
            let url = ctx.command_url.as_str();
            let Some(rest) = path.strip_prefix(url) else {
                return text(StatusCode::NOT_FOUND, "not found\n");
            };
            let name = rest.trim_matches('/');
            if name.is_empty() {
                return reply(
                    StatusCode::OK,
                    "text/html; charset=utf-8",
                    commands::index_html(url),
                );
            }
            if !rest.starts_with('/') {
                return text(StatusCode::NOT_FOUND, "not found\n");
            }
            let Some(command) = commands::find(name) else {
                return json(&unknown_command(name));
            };
            match ask(ctx, AdminQuery::Command(command.primary())).await {
                Some(AdminAnswer::Json(map)) => json(&map),
                _ => unavailable(),
            }
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}
