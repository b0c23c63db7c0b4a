//! One run: start the ensemble, set up, run the workloads while the nemesis works through its
//! schedule, heal, read the final state, check the history, and keep an artifact directory
//! when anything is wrong.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use corral_client::{Client, Error};
use rand::rngs::StdRng;
use rand::SeedableRng;
use tokio::sync::watch;

use crate::apache::{self, Target};
use crate::check::{self, Counts, WorkloadResult};
use crate::disk::{DiskError, MemberDisks, MEMBER_FS_MIB};
use crate::ensemble::{find_corral_binary, member_dir, Ensemble, EnsembleError, Server};
use crate::history::{self, Call, HistoryError, Op, Outcome, Recorder, Workload};
use crate::nemesis::{self, Fault, FaultWindow, NemesisError, Step};
use crate::net::{NetError, Network};
use crate::proxy::{DelayProxies, ProxyError};
use crate::workload::{self, Ctx, ROOT};

/// Session timeout of the workload clients; a pause lasts longer than this.
pub const SESSION_TIMEOUT_MS: u64 = 3_000;
/// Watchers keep their sessions through every fault, so their streams span the whole run.
pub const WATCHER_SESSION_TIMEOUT_MS: u64 = 30_000;
/// How long a pause lasts: past the session timeout, so paused members' sessions can expire.
pub const PAUSE_HOLD_MS: u64 = SESSION_TIMEOUT_MS + 2_000;
/// Bound on one client operation; past it the outcome is unknown.
pub const OP_TIMEOUT_MS: u64 = 5_000;
/// Bound on waiting for a leader (start, after healing).
const STABLE_PATIENCE: Duration = Duration::from_secs(60);
/// Bound on the final reads after healing.
const FINAL_READ_PATIENCE: Duration = Duration::from_secs(30);
/// How long watchers may take to catch up with the final zxid.
const WATCH_CATCH_UP: Duration = Duration::from_secs(15);
const WATCHERS: u32 = 2;

#[derive(Debug, Clone)]
pub struct RunConfig {
    pub time: Duration,
    pub members: usize,
    pub seed: u64,
    pub faults: Vec<Fault>,
    pub workloads: Vec<Workload>,
    pub clients_per_workload: usize,
    /// Where the run's directory is made (it holds the members and, kept, the artifacts).
    pub work_root: PathBuf,
    /// Keep the run directory even when the run is clean.
    pub keep: bool,
    pub binary: Option<PathBuf>,
    /// Corral, or Apache ZooKeeper as the reference (`binary` is then unused).
    pub target: Target,
    /// Members run with `corral.linearizableReads=true` and the register's reads go without
    /// `sync`: the register checker then judges plain reads (Corral only).
    pub linearizable_reads: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("ensemble: {0}")]
    Ensemble(#[from] EnsembleError),
    #[error("nemesis: {0}")]
    Nemesis(#[from] NemesisError),
    #[error("network: {0}")]
    Net(#[from] NetError),
    #[error("history: {0}")]
    History(#[from] HistoryError),
    #[error("disk: {0}")]
    Disk(#[from] DiskError),
    #[error("proxy: {0}")]
    Proxy(#[from] ProxyError),
    #[error("setup: {0}")]
    Setup(Error),
    #[error("linearizable reads are a Corral setting; Apache ZooKeeper has no such mode")]
    LinearizableReadsOnApache,
    #[error("{source} (run directory kept: {})", dir.display())]
    Kept { dir: PathBuf, source: Box<RunError> },
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
}

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> RunError {
    let what = what.into();
    move |source| RunError::Io { what, source }
}

/// What a run produced.
#[derive(Debug)]
pub struct RunOutcome {
    pub results: Vec<WorkloadResult>,
    /// Fault families asked for but not run, with the reason.
    pub skipped: Vec<String>,
    /// What the nemesis did, one line per action, with times.
    pub nemesis_log: Vec<String>,
    /// The run directory, if kept (anomalies, or `keep`).
    pub kept_dir: Option<PathBuf>,
    pub faults_run: Vec<Fault>,
    /// Op counts per workload and phase (which fault was active when the op was invoked).
    pub phases: Vec<PhaseCounts>,
    /// Reference runs only: watch-checker lines moved to the notes as ZooKeeper's known
    /// behaviour ([`crate::apache::reclassify_known`]).
    pub known_apache_behaviour: usize,
}

/// Op counts of one workload during one phase of the run.
#[derive(Debug, Clone)]
pub struct PhaseCounts {
    pub workload: Workload,
    /// `kill`, `pause`, `partition`, `power`, or `quiet` (no fault active).
    pub phase: &'static str,
    pub counts: Counts,
}

/// Splits the ops of each workload by the fault active at their invocation.
pub fn phases(ops: &[Op], windows: &[FaultWindow]) -> Vec<PhaseCounts> {
    let mut map: BTreeMap<(Workload, &'static str), Vec<&Op>> = BTreeMap::new();
    for op in ops {
        let phase = windows
            .iter()
            .find(|w| w.start_ns <= op.invoke_ns && op.invoke_ns < w.end_ns)
            .map_or("quiet", |w| w.fault.name());
        map.entry((op.call.workload(), phase)).or_default().push(op);
    }
    map.into_iter()
        .map(|((workload, phase), ops)| PhaseCounts {
            workload,
            phase,
            counts: check::counts(&ops),
        })
        .collect()
}

impl RunOutcome {
    pub fn anomalies(&self) -> usize {
        self.results.iter().map(|r| r.report.anomalies.len()).sum()
    }
}

/// Whether checker results are evidence to keep the run's directory (and the members' data)
/// for: an anomaly, or a checker that could not decide.
fn worth_keeping(results: &[WorkloadResult]) -> bool {
    results
        .iter()
        .any(|r| !r.report.anomalies.is_empty() || r.report.inconclusive)
}

fn progress(start: Instant, msg: &str) {
    println!("[{:>6.1}s] {msg}", start.elapsed().as_secs_f64());
}

pub async fn run(cfg: RunConfig) -> Result<RunOutcome, RunError> {
    let start = Instant::now();
    if cfg.linearizable_reads && cfg.target == Target::Apache {
        return Err(RunError::LinearizableReadsOnApache);
    }
    let server = match (cfg.target, &cfg.binary) {
        (Target::Apache, _) => Server::Apache(apache::find_script()?),
        (Target::Corral, Some(b)) => Server::Corral(b.clone()),
        (Target::Corral, None) => Server::Corral(find_corral_binary()?),
    };
    fs::create_dir_all(&cfg.work_root).map_err(io_err("creating the work root"))?;
    let dir = tempfile::Builder::new()
        .prefix(&format!(
            "corral-chaos-{}-seed{}-",
            cfg.target.name(),
            cfg.seed
        ))
        .tempdir_in(&cfg.work_root)
        .map_err(io_err("creating the run directory"))?;
    let rec = Recorder::new(start);
    match run_in(&cfg, dir.path(), server, &rec).await {
        Ok(mut outcome) => {
            if worth_keeping(&outcome.results) || cfg.keep {
                outcome.kept_dir = Some(dir.keep());
            }
            Ok(outcome)
        }
        // Whatever went wrong, the member logs and the history so far are the evidence.
        Err(e) => {
            if let Err(save) = history::save(&dir.path().join("history.jsonl"), &rec.snapshot()) {
                tracing::error!(%save, "could not save the history of a failed run");
            }
            Err(RunError::Kept {
                dir: dir.keep(),
                source: Box::new(e),
            })
        }
    }
}

/// Aborts the client tasks if the run ends early (an error), so none outlives it.
struct AbortOnDrop(Vec<tokio::task::JoinHandle<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

async fn run_in(
    cfg: &RunConfig,
    dir: &Path,
    server: Server,
    rec: &Recorder,
) -> Result<RunOutcome, RunError> {
    let start = rec.start();
    let mut faults = cfg.faults.clone();
    let mut skipped = Vec::new();
    for f in [Fault::Lossy, Fault::Slow] {
        if faults.contains(&f) {
            // Both steer or drop packets with iptables inside the members' namespaces.
            let reason = crate::loss::unavailable_reason().or_else(|| {
                (f == Fault::Slow && faults.contains(&Fault::Partition)).then(|| {
                    "its proxies would bypass the partitions' blackhole routes; \
                     run slow and partition separately"
                        .to_string()
                })
            });
            if let Some(reason) = reason {
                let msg = format!("{} nemesis SKIPPED: {reason}", f.name());
                progress(start, &msg);
                skipped.push(msg);
                faults.retain(|x| *x != f);
            }
        }
    }
    let network = if faults.iter().any(|f| f.needs_network()) {
        match Network::unavailable_reason() {
            Some(reason) => {
                for f in faults.iter().filter(|f| f.needs_network()) {
                    let msg = format!("{} nemesis SKIPPED: {reason}", f.name());
                    progress(start, &msg);
                    skipped.push(msg);
                }
                faults.retain(|f| !f.needs_network());
                None
            }
            None => {
                let ids: Vec<u64> = (1..=cfg.members as u64).collect();
                let net = Network::create(&ids)?;
                progress(
                    start,
                    &format!(
                        "network namespaces {}-m1..m{} behind bridge {}br",
                        net.prefix(),
                        cfg.members,
                        net.prefix()
                    ),
                );
                Some(net)
            }
        }
    } else {
        None
    };

    let disks = if faults.contains(&Fault::DiskFull) {
        let reason = MemberDisks::unavailable_reason().or_else(|| {
            // Each puts its own file system on the members' data directories.
            faults.contains(&Fault::Power).then(|| {
                "the power nemesis's faultfs mounts take the data directories; \
                 run diskfull and power separately"
                    .to_string()
            })
        });
        match reason {
            Some(reason) => {
                let msg = format!("diskfull nemesis SKIPPED: {reason}");
                progress(start, &msg);
                skipped.push(msg);
                faults.retain(|f| *f != Fault::DiskFull);
                None
            }
            None => {
                let ids: Vec<u64> = (1..=cfg.members as u64).collect();
                let disks =
                    MemberDisks::mount(&ids, |id| member_dir(dir, id).join("data"), MEMBER_FS_MIB)?;
                progress(
                    start,
                    &format!("a {MEMBER_FS_MIB} MiB tmpfs on every member's data directory"),
                );
                Some(disks)
            }
        }
    } else {
        None
    };

    let on_faultfs = faults.contains(&Fault::Power);
    // faultfs serves Corral members only.
    if on_faultfs && !matches!(server, Server::Corral(_)) {
        return Err(RunError::Nemesis(NemesisError::NoFaultFs));
    }
    let settings = if cfg.linearizable_reads {
        "corral.linearizableReads=true\n"
    } else {
        ""
    };
    let mut ens =
        Ensemble::start_configured(dir, cfg.members, server, network, on_faultfs, settings)?;
    if on_faultfs {
        progress(start, "member data directories on faultfs (power nemesis)");
    }
    ens.disks = disks;
    if faults.contains(&Fault::Slow) {
        ens.proxies = Some(DelayProxies::start(&ens).await?);
        // The steering applies to new connections only: restart the members, which have
        // barely started, so that every peer connection goes through a proxy.
        for id in ens.ids() {
            ens.kill9(id);
            ens.restart(id)?;
        }
        progress(start, "peer links steered through the delaying proxies");
    }
    let leader = ens.wait_stable(STABLE_PATIENCE).await?;
    progress(
        start,
        &format!(
            "{} {} members up, leader {leader}",
            cfg.members,
            cfg.target.name()
        ),
    );
    let connect_string = ens.connect_string();

    let admin = Client::builder(&connect_string)
        .session_timeout(Duration::from_millis(WATCHER_SESSION_TIMEOUT_MS))
        .connect_timeout(Duration::from_secs(20))
        .connect()
        .await
        .map_err(RunError::Setup)?;
    workload::setup(&admin).await.map_err(RunError::Setup)?;
    admin.close().await;

    let (stop_tx, stop_rx) = watch::channel(false);
    let (final_tx, final_rx) = watch::channel(None::<i64>);
    let ctx = Ctx {
        connect_string: connect_string.clone(),
        rec: rec.clone(),
        stop: stop_rx,
        op_timeout: Duration::from_millis(OP_TIMEOUT_MS),
        session_timeout: Duration::from_millis(SESSION_TIMEOUT_MS),
        seed: cfg.seed,
        plain_register_reads: cfg.linearizable_reads,
    };
    let mut tasks = AbortOnDrop(Vec::new());
    let mut process = 0u32;
    for &w in &cfg.workloads {
        for _ in 0..cfg.clients_per_workload {
            process += 1;
            tasks
                .0
                .push(tokio::spawn(workload::run_task(ctx.clone(), w, process)));
        }
    }
    let mut watchers = AbortOnDrop(Vec::new());
    if cfg.workloads.contains(&Workload::Watch) {
        for _ in 0..WATCHERS {
            process += 1;
            watchers.0.push(tokio::spawn(workload::watcher(
                ctx.clone(),
                process,
                Duration::from_millis(WATCHER_SESSION_TIMEOUT_MS),
                final_rx.clone(),
                WATCH_CATCH_UP,
            )));
        }
    }

    // The nemesis.
    let schedule: Vec<Step> = nemesis::schedule(cfg.seed, &faults, cfg.time, PAUSE_HOLD_MS);
    let mut rng = StdRng::seed_from_u64(cfg.seed.wrapping_add(1));
    let mut nemesis_log = Vec::new();
    let mut windows: Vec<FaultWindow> = Vec::new();
    let phase_end = Instant::now() + cfg.time;
    let mut nemesis_failure = None;
    for (done, step) in schedule.iter().enumerate() {
        // Finding leaders and healing take time the schedule does not count: a step that
        // would end after `--time` is not started, so the run keeps to its length.
        let step_ms = step.quiet_ms + step.hold_ms;
        if Instant::now() + Duration::from_millis(step_ms) > phase_end {
            let msg = format!(
                "schedule cut at --time: {done} of {} steps applied",
                schedule.len()
            );
            progress(start, &format!("nemesis: {msg}"));
            nemesis_log.push(format!("{:.1}s {msg}", start.elapsed().as_secs_f64()));
            break;
        }
        tokio::time::sleep(Duration::from_millis(step.quiet_ms)).await;
        let fault_start_ns = rec.now_ns();
        let applied = match nemesis::apply(&mut ens, step.action, &mut rng).await {
            Ok(a) => a,
            Err(e) => {
                nemesis_failure = Some(e);
                break;
            }
        };
        let line = format!(
            "{:.1}s {} for {} ms",
            start.elapsed().as_secs_f64(),
            applied.description,
            step.hold_ms
        );
        progress(start, &format!("nemesis: {}", applied.description));
        nemesis_log.push(line);
        tokio::time::sleep(Duration::from_millis(step.hold_ms)).await;
        let healed = nemesis::heal(&mut ens, &applied);
        windows.push(FaultWindow {
            fault: step.action.fault(),
            start_ns: fault_start_ns,
            end_ns: rec.now_ns(),
        });
        match healed {
            Ok(notes) => {
                for note in notes {
                    progress(start, &format!("nemesis: {note}"));
                    nemesis_log.push(format!("{:.1}s {note}", start.elapsed().as_secs_f64()));
                }
            }
            Err(e) => {
                nemesis_failure = Some(e);
                break;
            }
        }
        progress(
            start,
            &format!("nemesis: healed; {} ops so far", rec.snapshot().len()),
        );
        nemesis_log.push(format!("{:.1}s healed", start.elapsed().as_secs_f64()));
    }
    let left = phase_end.saturating_duration_since(Instant::now());
    tokio::time::sleep(left).await;

    // Heal everything and let the ensemble settle before the workloads stop, so the last ops
    // run on a healthy ensemble.
    nemesis::heal_all(&mut ens)?;
    if let Some(e) = nemesis_failure {
        return Err(e.into());
    }
    let healthy = ens.wait_stable(STABLE_PATIENCE).await;
    progress(start, &format!("healed; stable: {healthy:?}"));
    let _ = stop_tx.send(true);
    for t in tasks.0.iter_mut() {
        // Every op is bounded, so a task ends within about one op timeout.
        let _ = tokio::time::timeout(Duration::from_millis(OP_TIMEOUT_MS * 4), t).await;
    }
    healthy?;

    final_reads(&connect_string, rec, &cfg.workloads, &final_tx).await;
    for w in watchers.0.iter_mut() {
        let _ = tokio::time::timeout(WATCH_CATCH_UP + Duration::from_secs(10), w).await;
    }
    ens.check_alive()?;
    ens.stop_all();

    let ops = rec.snapshot();
    write_artifacts(dir, cfg, &faults, &schedule, &nemesis_log, &windows, &ops)?;
    // Members and namespaces go before the (CPU-bound) check; the members' filesystems stay
    // until the verdict, so a kept run can copy their data out.
    let disks = ens.disks.take();
    drop(ens);
    progress(start, &format!("checking {} ops", ops.len()));
    let phases = phases(&ops, &windows);
    let mut results = tokio::task::spawn_blocking(move || check::check_all(&ops))
        .await
        .expect("the checkers do not panic");
    let known_apache_behaviour = match cfg.target {
        Target::Apache => apache::reclassify_known(&mut results),
        Target::Corral => 0,
    };
    if let Some(disks) = &disks {
        if cfg.keep || worth_keeping(&results) {
            for id in 1..=cfg.members as u64 {
                let to = member_dir(dir, id).join("data-kept");
                if let Err(e) = disks.preserve(id, &to) {
                    tracing::error!(%e, member = id, "could not keep a member's data");
                }
            }
        }
    }
    drop(disks);
    Ok(RunOutcome {
        results,
        skipped,
        nemesis_log,
        kept_dir: None,
        faults_run: faults,
        phases,
        known_apache_behaviour,
    })
}

/// Reads the final state after healing (retrying through the bounded patience) and records it.
async fn final_reads(
    connect_string: &str,
    rec: &Recorder,
    workloads: &[Workload],
    final_zxid: &watch::Sender<Option<i64>>,
) {
    const PROCESS: u32 = 0;
    let deadline = Instant::now() + FINAL_READ_PATIENCE;
    let client = loop {
        match Client::builder(connect_string)
            .session_timeout(Duration::from_millis(WATCHER_SESSION_TIMEOUT_MS))
            .connect_timeout(Duration::from_secs(10))
            .connect()
            .await
        {
            Ok(c) => break c,
            Err(e) if Instant::now() < deadline => {
                tracing::warn!(%e, "final reads: connect failed; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => {
                tracing::error!(%e, "final reads: no connection; nothing recorded");
                return;
            }
        }
    };
    if workloads.contains(&Workload::Set) {
        let t0 = rec.now_ns();
        if let Some(elems) = final_elements(&client, &format!("{ROOT}/set"), deadline).await {
            rec.finish(PROCESS, t0, Outcome::Ok, Call::SetFinal { elems }, None);
        }
    }
    if workloads.contains(&Workload::Counter) {
        let path = format!("{ROOT}/counter");
        let t0 = rec.now_ns();
        let got = retry(deadline, || async {
            client.sync(&path).await?;
            client.get_data(&path).await
        })
        .await;
        if let Some(value) = got.and_then(|(d, _)| std::str::from_utf8(&d).ok()?.parse().ok()) {
            rec.finish(PROCESS, t0, Outcome::Ok, Call::CounterFinal { value }, None);
        }
    }
    if workloads.contains(&Workload::Watch) {
        let path = format!("{ROOT}/watched");
        let got = retry(deadline, || async {
            client.sync(&path).await?;
            client.get_data(&path).await
        })
        .await;
        let _ = final_zxid.send(got.map(|(_, stat)| stat.mzxid));
    }
    if workloads.contains(&Workload::KazooSet) {
        let t0 = rec.now_ns();
        if let Some(elems) = final_elements(&client, &crate::kazoo::dir(), deadline).await {
            rec.finish(
                PROCESS,
                t0,
                Outcome::Ok,
                Call::KazooSetFinal { elems },
                None,
            );
        }
    }
    if workloads.contains(&Workload::Queue) {
        crate::queue::drain(&client, rec, PROCESS, deadline).await;
    }
    client.close().await;
}

fn write_artifacts(
    dir: &Path,
    cfg: &RunConfig,
    faults: &[Fault],
    schedule: &[Step],
    nemesis_log: &[String],
    windows: &[FaultWindow],
    ops: &[Op],
) -> Result<(), RunError> {
    let windows_json = serde_json::to_string_pretty(windows).expect("windows serialize");
    fs::write(dir.join("windows.json"), windows_json)
        .map_err(io_err("writing the fault windows"))?;
    history::save(&dir.join("history.jsonl"), ops)?;
    let mut meta = String::new();
    let _ = writeln!(meta, "target={}", cfg.target.name());
    let _ = writeln!(meta, "seed={}", cfg.seed);
    let _ = writeln!(meta, "members={}", cfg.members);
    let _ = writeln!(meta, "time_ms={}", cfg.time.as_millis());
    let _ = writeln!(meta, "clients_per_workload={}", cfg.clients_per_workload);
    let _ = writeln!(meta, "linearizable_reads={}", cfg.linearizable_reads);
    let names: Vec<&str> = faults.iter().map(|f| f.name()).collect();
    let _ = writeln!(meta, "nemesis={}", names.join(","));
    let names: Vec<&str> = cfg.workloads.iter().map(|w| w.name()).collect();
    let _ = writeln!(meta, "workload={}", names.join(","));
    fs::write(dir.join("run.txt"), meta).map_err(io_err("writing run.txt"))?;
    let schedule_json = serde_json::to_string_pretty(schedule).expect("steps serialize");
    fs::write(dir.join("schedule.json"), schedule_json).map_err(io_err("writing the schedule"))?;
    fs::write(dir.join("nemesis.log"), nemesis_log.join("\n") + "\n")
        .map_err(io_err("writing the nemesis log"))?;
    Ok(())
}

/// The results table: per workload a row for the whole run (with the checker's anomalies),
/// then a row per phase (the fault active when the op was invoked; anomalies are judged on the
/// whole history, so phase rows show `-`); then the checkers' notes and anomalies.
pub fn table(results: &[WorkloadResult], nemesis: &str, phases: &[PhaseCounts]) -> String {
    let mut out = String::new();
    let row = |out: &mut String, w: &str, n: &str, c: Counts, anomalies: &str| {
        let _ = writeln!(
            out,
            "{w:<9} {n:<26} {:>7} {:>7} {:>6} {:>7} {anomalies:>9}",
            c.ops, c.ok, c.fail, c.unknown
        );
    };
    let _ = writeln!(
        out,
        "{:<9} {:<26} {:>7} {:>7} {:>6} {:>7} {:>9}",
        "workload", "nemesis", "ops", "ok", "fail", "unknown", "anomalies"
    );
    for r in results {
        let name = r.workload.name();
        row(
            &mut out,
            name,
            &format!("all: {nemesis}"),
            r.counts,
            &r.report.anomalies.len().to_string(),
        );
        for p in phases.iter().filter(|p| p.workload == r.workload) {
            row(
                &mut out,
                "",
                &format!("  during {}", p.phase),
                p.counts,
                "-",
            );
        }
    }
    for r in results {
        for n in &r.report.notes {
            let _ = writeln!(out, "  {}: {n}", r.workload.name());
        }
        for a in &r.report.anomalies {
            let _ = writeln!(out, "  {} ANOMALY: {a}", r.workload.name());
        }
    }
    out
}

/// Checks a kept run again from its directory (`corral-chaos check <dir>`).
pub fn check_dir(
    dir: &Path,
    linear_budget: usize,
) -> Result<(Vec<WorkloadResult>, String, Vec<PhaseCounts>), RunError> {
    let ops = history::load(&dir.join("history.jsonl"))?;
    let meta = fs::read_to_string(dir.join("run.txt")).unwrap_or_default();
    let nemesis = meta
        .lines()
        .find_map(|l| l.strip_prefix("nemesis="))
        .unwrap_or("?")
        .to_string();
    let windows: Vec<FaultWindow> = fs::read_to_string(dir.join("windows.json"))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default();
    let phases = phases(&ops, &windows);
    Ok((check::check_all_with(&ops, linear_budget), nemesis, phases))
}

/// The element numbers of `path`'s children (`e<n>`), read after a `sync`.
async fn final_elements(client: &Client, path: &str, deadline: Instant) -> Option<Vec<u64>> {
    let (kids, _) = retry(deadline, || async {
        client.sync(path).await?;
        client.children(path).await
    })
    .await?;
    Some(
        kids.iter()
            .filter_map(|k| k.strip_prefix('e')?.parse().ok())
            .collect(),
    )
}

async fn retry<T, F, Fut>(deadline: Instant, mut op: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, Error>>,
{
    loop {
        match tokio::time::timeout(Duration::from_millis(OP_TIMEOUT_MS), op()).await {
            Ok(Ok(v)) => return Some(v),
            Ok(Err(e)) if !e.is_retryable() => {
                tracing::error!(%e, "final read failed");
                return None;
            }
            _ if Instant::now() > deadline => return None,
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}
