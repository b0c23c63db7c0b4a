//! `corral bench`: a load generator for ZooKeeper-protocol servers (Corral or Apache
//! ZooKeeper), built on `corral-client`.
//!
//! Every workload runs closed-loop: each of `--clients` sessions keeps `--depth` requests in
//! flight (one task per slot, all sharing the session's pipelined connection). Latencies go
//! into hdrhistograms, a progress line goes to stderr, and the result is a summary table or,
//! with `--json`, one JSON object on stdout.

mod ops;
mod report;
mod sessions;
pub mod stats;
mod watch;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use corral_client::{Client, CreateMode, Error, ZkError};
use futures::StreamExt;

pub use report::Report;

/// The workloads `corral bench` can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Workload {
    /// getData on random keys.
    Read,
    /// setData on random keys (durable writes).
    Write,
    /// create a sequential node, then delete it; each request counts as one op.
    Create,
    /// getData / setData mixed by --write-ratio.
    Mixed,
    /// --watchers sessions hold a data watch on one node; one writer changes it --rounds times.
    WatchFanout,
    /// Register --ops exists-watches on absent paths; server RSS per watch.
    WatchMany,
    /// Create --ops znodes in a 1000-wide two-level tree; server RSS per znode.
    ZnodesMemory,
    /// Loops of: open a session, create an ephemeral, close the session.
    Sessions,
    /// One recursive persistent watch over --keys nodes that writers change.
    PersistentWatch,
}

impl Workload {
    pub fn name(self) -> &'static str {
        match self {
            Workload::Read => "read",
            Workload::Write => "write",
            Workload::Create => "create",
            Workload::Mixed => "mixed",
            Workload::WatchFanout => "watch-fanout",
            Workload::WatchMany => "watch-many",
            Workload::ZnodesMemory => "znodes-memory",
            Workload::Sessions => "sessions",
            Workload::PersistentWatch => "persistent-watch",
        }
    }
}

/// Command-line options of `corral bench`.
#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// Server to load: HOST:PORT (a ZooKeeper connect string).
    #[arg(long, default_value = "127.0.0.1:2181")]
    pub server: String,
    #[arg(long, value_enum)]
    pub workload: Workload,
    /// Sessions issuing requests.
    #[arg(long, default_value_t = 4)]
    pub clients: usize,
    /// Requests each session keeps in flight.
    #[arg(long, default_value_t = 16)]
    pub depth: usize,
    /// Seconds measured (when --ops is not given).
    #[arg(long = "duration", value_name = "S", default_value_t = 10.0)]
    pub duration_s: f64,
    /// Seconds of unmeasured load before measuring.
    #[arg(long = "warmup", value_name = "S", default_value_t = 2.0)]
    pub warmup_s: f64,
    /// Count instead of time: requests (read/write/create/mixed), sessions (sessions), changes
    /// (persistent-watch), watches (watch-many, default 250000), znodes (znodes-memory, default
    /// 1000000).
    #[arg(long)]
    pub ops: Option<u64>,
    /// Bytes of data per node.
    #[arg(long = "value-size", value_name = "B", default_value_t = 100)]
    pub value_size_bytes: usize,
    /// Nodes read/written by read, write, mixed and persistent-watch.
    #[arg(long, default_value_t = 1000)]
    pub keys: usize,
    /// Fraction of setData in the mixed workload.
    #[arg(long, default_value_t = 0.1)]
    pub write_ratio: f64,
    /// Watching sessions in watch-fanout.
    #[arg(long, default_value_t = 1000)]
    pub watchers: usize,
    /// Writes (rounds) in watch-fanout.
    #[arg(long, default_value_t = 20)]
    pub rounds: usize,
    /// Server process id: adds its CPU time per op and, for the memory workloads, its RSS.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Shell command run before each RSS sample, `{pid}` replaced by the server pid (for a JVM:
    /// `jcmd {pid} GC.run`, so the sample shows retained data rather than garbage).
    #[arg(long)]
    pub rss_hook: Option<String>,
    /// Seconds to let the server settle before an RSS sample, and the quiet period that ends
    /// waiting for events.
    #[arg(long = "settle", value_name = "S", default_value_t = 2.0)]
    pub settle_s: f64,
    /// Session timeout requested by every session.
    #[arg(long, default_value_t = 10_000)]
    pub session_timeout_ms: u64,
    /// Parent node of everything the bench creates (deleted afterwards).
    #[arg(long, default_value = "/corral-bench")]
    pub root: String,
    /// Leave the created nodes in place (memory workloads on a server that is thrown away).
    #[arg(long)]
    pub skip_cleanup: bool,
    /// Worker threads of the bench's runtime.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// A label copied into the report.
    #[arg(long)]
    pub label: Option<String>,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
}

impl Options {
    fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(self.clients > 0, "--clients must be at least 1");
        anyhow::ensure!(self.depth > 0, "--depth must be at least 1");
        anyhow::ensure!(self.keys > 0, "--keys must be at least 1");
        anyhow::ensure!(self.duration_s > 0.0, "--duration must be positive");
        anyhow::ensure!(self.warmup_s >= 0.0, "--warmup must not be negative");
        anyhow::ensure!(
            (0.0..=1.0).contains(&self.write_ratio),
            "--write-ratio must be within 0..1"
        );
        anyhow::ensure!(
            self.root.starts_with('/') && self.root.len() > 1 && !self.root.ends_with('/'),
            "--root must be an absolute path other than /"
        );
        anyhow::ensure!(self.threads > 0, "--threads must be at least 1");
        Ok(())
    }

    fn settle(&self) -> Duration {
        Duration::from_secs_f64(self.settle_s.max(0.0))
    }

    pub(crate) fn value(&self) -> Vec<u8> {
        vec![b'x'; self.value_size_bytes]
    }

    pub(crate) async fn connect(&self) -> anyhow::Result<Client> {
        Client::builder(&self.server)
            .session_timeout(Duration::from_millis(self.session_timeout_ms))
            .connect()
            .await
            .with_context(|| format!("connecting to {}", self.server))
    }

    /// `n` sessions, opened a few at a time: a burst of hundreds of connects overflows the
    /// server's accept backlog and measures SYN retries instead of the server.
    pub(crate) async fn connect_many(&self, n: usize) -> anyhow::Result<Vec<Client>> {
        futures::stream::iter(0..n)
            .map(|_| self.connect())
            .buffered(16)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect()
    }
}

/// Runs the workload and prints its report.
pub fn run(opts: Options) -> anyhow::Result<()> {
    opts.validate()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(opts.threads)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let report = runtime.block_on(run_workload(&opts))?;
    if opts.json {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.table());
    }
    Ok(())
}

pub async fn run_workload(opts: &Options) -> anyhow::Result<Report> {
    let mut report = Report::new(opts);
    let control = opts.connect().await?;
    ensure_path(&control, &opts.root).await?;
    match opts.workload {
        Workload::Read | Workload::Write | Workload::Mixed => {
            ops::keyed(opts, &control, &mut report).await?
        }
        Workload::Create => ops::create_delete(opts, &control, &mut report).await?,
        Workload::ZnodesMemory => ops::znodes_memory(opts, &control, &mut report).await?,
        Workload::WatchFanout => watch::fanout(opts, &control, &mut report).await?,
        Workload::WatchMany => watch::many(opts, &control, &mut report).await?,
        Workload::PersistentWatch => watch::persistent(opts, &control, &mut report).await?,
        Workload::Sessions => sessions::run(opts, &control, &mut report).await?,
    }
    if !opts.skip_cleanup {
        // Best effort: the root may hold nodes of another bench running at the same time.
        let _ = control.delete(&opts.root, None).await;
    }
    control.close().await;
    Ok(report)
}

/// Creates `path` and its ancestors if missing.
pub(crate) async fn ensure_path(client: &Client, path: &str) -> anyhow::Result<()> {
    client
        .create_all(path)
        .await
        .with_context(|| format!("creating {path}"))
}

/// Creates `path` with `data`, or overwrites the data of an existing node.
pub(crate) async fn put(client: &Client, path: &str, data: &[u8]) -> Result<(), Error> {
    match client.create(path, data, CreateMode::Persistent).await {
        Ok(_) => Ok(()),
        Err(Error::Zk(ZkError::NodeExists)) => client.set_data(path, data, None).await.map(|_| ()),
        Err(e) => Err(e),
    }
}

/// Creates or overwrites every node of `paths` with `data`, a few dozen at a time.
pub(crate) async fn put_all(client: &Client, paths: &[String], data: &[u8]) -> Result<(), Error> {
    for_each_concurrent(paths, 64, |p| put(client, p, data)).await
}

/// Runs `f` over `items` with `concurrency` requests in flight; the first error wins.
pub(crate) async fn for_each_concurrent<I, F, Fut>(
    items: I,
    concurrency: usize,
    f: F,
) -> Result<(), Error>
where
    I: IntoIterator,
    F: FnMut(I::Item) -> Fut,
    Fut: std::future::Future<Output = Result<(), Error>>,
{
    let mut results = futures::stream::iter(items)
        .map(f)
        .buffer_unordered(concurrency.max(1));
    while let Some(r) = results.next().await {
        r?;
    }
    Ok(())
}

/// Deletes the nodes at `paths`, ignoring ones already gone.
pub(crate) async fn delete_all(client: &Client, paths: Vec<String>) -> Result<(), Error> {
    for_each_concurrent(paths, 64, |p| {
        let client = client.clone();
        async move {
            match client.delete(&p, None).await {
                Ok(()) | Err(Error::Zk(ZkError::NoNode)) => Ok(()),
                Err(e) => Err(e),
            }
        }
    })
    .await
}

/// Deletes the children `names` of `parent`, then `parent` (ignoring nodes already gone).
pub(crate) async fn delete_with_children(
    client: &Client,
    parent: String,
    names: &[String],
) -> Result<(), Error> {
    delete_all(
        client,
        names.iter().map(|n| format!("{parent}/{n}")).collect(),
    )
    .await?;
    delete_all(client, vec![parent]).await
}

/// What a slot should do next (while the phase lasts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// Issue a request without recording it.
    Warmup,
    /// Issue a request and record it.
    Measure,
}

/// The shared clock of a closed-loop run: a warm-up, then either a fixed measured time or a
/// fixed number of measured requests.
pub(crate) struct Phase {
    measure_from: Instant,
    end: Option<Instant>,
    budget: Option<u64>,
    issued: AtomicU64,
    /// Measured operations completed, for the progress line.
    pub done: AtomicU64,
}

impl Phase {
    pub fn new(warmup: Duration, duration: Duration, budget: Option<u64>) -> Arc<Phase> {
        let measure_from = Instant::now() + warmup;
        Arc::new(Phase {
            measure_from,
            end: if budget.is_some() {
                None
            } else {
                Some(measure_from + duration)
            },
            budget,
            issued: AtomicU64::new(0),
            done: AtomicU64::new(0),
        })
    }

    pub fn from_opts(opts: &Options) -> Arc<Phase> {
        Phase::new(
            Duration::from_secs_f64(opts.warmup_s),
            Duration::from_secs_f64(opts.duration_s),
            opts.ops,
        )
    }

    pub fn measure_from(&self) -> Instant {
        self.measure_from
    }

    /// The next request's step, or `None` once the slot should stop.
    pub fn next(&self) -> Option<Step> {
        let now = Instant::now();
        if now < self.measure_from {
            return Some(Step::Warmup);
        }
        if let Some(end) = self.end {
            return (now < end).then_some(Step::Measure);
        }
        let budget = self.budget.unwrap_or(0);
        (self.issued.fetch_add(1, Ordering::Relaxed) < budget).then_some(Step::Measure)
    }

    /// The span rates are computed over, given the measured run took `wall`: the fixed
    /// measuring time or, with a request budget, `wall` itself. (Requests still in flight at
    /// the end of a fixed time were started inside it and are counted.)
    pub fn window(&self, wall: Duration) -> Duration {
        match self.end {
            Some(end) => end - self.measure_from,
            None => wall,
        }
    }

    pub fn completed(&self, n: u64) {
        self.done.fetch_add(n, Ordering::Relaxed);
    }
}

/// The stderr progress line: rewritten in place on a terminal, one line every few seconds
/// otherwise (so logs of scripted runs stay short).
pub(crate) struct Progress {
    task: tokio::task::JoinHandle<()>,
    tty: bool,
}

impl Progress {
    pub fn start(
        label: String,
        unit: &'static str,
        count: Arc<dyn Fn() -> u64 + Send + Sync>,
    ) -> Progress {
        let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
        let period = if tty {
            Duration::from_secs(1)
        } else {
            Duration::from_secs(5)
        };
        let task = tokio::spawn(async move {
            let start = Instant::now();
            let mut last = (start, count());
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
            loop {
                tick.tick().await;
                let now = Instant::now();
                let n = count();
                let rate = (n - last.1.min(n)) as f64 / now.duration_since(last.0).as_secs_f64();
                last = (now, n);
                let line = format!(
                    "[{label}] {:6.1} s  {n:>10} {unit}  {rate:>10.0} {unit}/s",
                    now.duration_since(start).as_secs_f64()
                );
                if tty {
                    eprint!("\r{line}  ");
                } else {
                    eprintln!("{line}");
                }
            }
        });
        Progress { task, tty }
    }

    pub fn stop(self) {
        self.task.abort();
        if self.tty {
            eprintln!();
        }
    }
}

/// A progress line counting `phase.done`.
pub(crate) fn phase_progress(opts: &Options, phase: &Arc<Phase>, unit: &'static str) -> Progress {
    let phase = phase.clone();
    Progress::start(
        opts.workload.name().to_string(),
        unit,
        Arc::new(move || phase.done.load(Ordering::Relaxed)),
    )
}

/// Samples the server's RSS after running the hook (if any) and letting it settle.
pub(crate) async fn sample_rss(opts: &Options) -> anyhow::Result<(u64, Option<u64>)> {
    let pid = opts
        .server_pid
        .context("this workload measures server memory and needs --server-pid")?;
    tokio::time::sleep(opts.settle()).await;
    let raw = stats::rss_bytes(pid).with_context(|| format!("reading /proc/{pid}/status"))?;
    let Some(hook) = &opts.rss_hook else {
        return Ok((raw, None));
    };
    let cmd = hook.replace("{pid}", &pid.to_string());
    let status = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(&cmd)
        .stdout(std::process::Stdio::null())
        .status()
        .await
        .with_context(|| format!("running --rss-hook {cmd:?}"))?;
    anyhow::ensure!(status.success(), "--rss-hook {cmd:?} failed: {status}");
    tokio::time::sleep(opts.settle()).await;
    let after_hook =
        stats::rss_bytes(pid).with_context(|| format!("reading /proc/{pid}/status"))?;
    Ok((after_hook, Some(raw)))
}
