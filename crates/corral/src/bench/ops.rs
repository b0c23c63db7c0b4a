//! Request-throughput workloads (read, write, mixed, create) and the znode memory workload.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use corral_client::{Client, CreateMode, Error};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::stats::{CpuWindow, Latency};
use super::{
    delete_all, delete_with_children, ensure_path, phase_progress, put_all, sample_rss, Options,
    Phase, Report, Step, Workload,
};

/// What one request slot measured.
pub(crate) struct Slot {
    pub lat: Vec<Latency>,
    pub errors: u64,
    pub first_error: Option<String>,
}

impl Slot {
    pub fn new(kinds: usize) -> Slot {
        Slot {
            lat: vec![Latency::new(); kinds],
            errors: 0,
            first_error: None,
        }
    }

    /// Records one finished request of `kind` started at `t0`. Returns false when the
    /// session is finished and the slot should stop.
    pub async fn record<T>(
        &mut self,
        phase: &Phase,
        step: Step,
        kind: usize,
        t0: Instant,
        result: Result<T, Error>,
        client: &Client,
    ) -> bool {
        match result {
            Ok(_) => {
                if step == Step::Measure {
                    self.lat[kind].record(t0.elapsed());
                    phase.completed(1);
                }
                true
            }
            Err(e) => {
                self.errors += 1;
                if self.first_error.is_none() {
                    self.first_error = Some(e.to_string());
                }
                if client.state().is_terminal() {
                    return false;
                }
                if e == Error::ConnectionLoss {
                    // The client is reconnecting; do not spin on instant failures meanwhile.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                true
            }
        }
    }

    fn merge(&mut self, other: Slot) {
        for (a, b) in self.lat.iter_mut().zip(&other.lat) {
            a.merge(b);
        }
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }
}

/// Waits for every slot and merges what they measured.
pub(crate) async fn join_slots(
    kinds: usize,
    handles: Vec<tokio::task::JoinHandle<Slot>>,
) -> anyhow::Result<Slot> {
    let mut all = Slot::new(kinds);
    for h in handles {
        all.merge(h.await.context("a bench task panicked")?);
    }
    Ok(all)
}

/// What a closed-loop run measured.
pub(crate) struct Measured {
    pub slots: Slot,
    /// From the start of measuring until the last slot stopped.
    pub wall: Duration,
    /// What rates are computed over (`Phase::window`).
    pub window: Duration,
    /// Still open: the workload closes it once the work it counts is done.
    pub cpu: CpuWindow,
}

/// Drives a closed-loop run with a progress line counting `unit`: starts the CPU window when
/// measuring begins and waits for the slots.
pub(crate) async fn measured_run(
    opts: &Options,
    phase: &Arc<Phase>,
    unit: &'static str,
    kinds: usize,
    handles: Vec<tokio::task::JoinHandle<Slot>>,
) -> anyhow::Result<Measured> {
    let progress = phase_progress(opts, phase, unit);
    tokio::time::sleep_until(phase.measure_from().into()).await;
    let cpu = CpuWindow::start(opts.server_pid);
    let started = Instant::now();
    let slots = join_slots(kinds, handles).await;
    let wall = started.elapsed();
    progress.stop();
    Ok(Measured {
        slots: slots?,
        wall,
        window: phase.window(wall),
        cpu,
    })
}

fn key_path(opts: &Options, i: usize) -> String {
    format!("{}/data/k{i:06}", opts.root)
}

/// read, write and mixed: getData / setData on random keys of a fixed key set.
pub async fn keyed(opts: &Options, control: &Client, report: &mut Report) -> anyhow::Result<()> {
    let value = Arc::new(opts.value());
    ensure_path(control, &format!("{}/data", opts.root)).await?;
    let keys: Arc<Vec<String>> = Arc::new((0..opts.keys).map(|i| key_path(opts, i)).collect());
    put_all(control, &keys, &value)
        .await
        .context("creating the keys")?;

    let clients = opts.connect_many(opts.clients).await?;
    let phase = Phase::from_opts(opts);
    let write_ratio = match opts.workload {
        Workload::Read => 0.0,
        Workload::Write => 1.0,
        _ => opts.write_ratio,
    };
    let mut handles = Vec::new();
    for client in &clients {
        for _ in 0..opts.depth {
            let (client, phase, keys, value) =
                (client.clone(), phase.clone(), keys.clone(), value.clone());
            handles.push(tokio::spawn(async move {
                let mut rng = StdRng::from_entropy();
                let mut slot = Slot::new(2);
                while let Some(step) = phase.next() {
                    let key = &keys[rng.gen_range(0..keys.len())];
                    let write = write_ratio > 0.0 && rng.gen_bool(write_ratio);
                    let t0 = Instant::now();
                    let ok = if write {
                        let r = client.set_data(key, &value, None).await;
                        slot.record(&phase, step, 1, t0, r, &client).await
                    } else {
                        let r = client.get_data(key).await;
                        slot.record(&phase, step, 0, t0, r, &client).await
                    };
                    if !ok {
                        break;
                    }
                }
                slot
            }));
        }
    }
    let run = measured_run(opts, &phase, "ops", 2, handles).await?;
    let slots = &run.slots;
    let (reads, writes) = (&slots.lat[0], &slots.lat[1]);
    let ops = reads.count() + writes.count();
    let cpu = run.cpu.finish(run.wall, ops);
    report.throughput("ops", "ops_per_s", ops, run.window);
    let mut all = reads.clone();
    all.merge(writes);
    report.latency("latency", &all);
    if opts.workload == Workload::Mixed {
        report.latency("read_latency", reads);
        report.latency("write_latency", writes);
    }
    report.errors(slots.errors, slots.first_error.as_deref());
    report.extend(cpu);

    for c in clients {
        c.close().await;
    }
    if !opts.skip_cleanup {
        delete_all(control, keys.to_vec()).await?;
        delete_all(control, vec![format!("{}/data", opts.root)]).await?;
    }
    Ok(())
}

/// create: create a sequential node, then delete it; both requests count.
pub async fn create_delete(
    opts: &Options,
    control: &Client,
    report: &mut Report,
) -> anyhow::Result<()> {
    let parent = format!("{}/create", opts.root);
    ensure_path(control, &parent).await?;
    let value = Arc::new(opts.value());
    let prefix = Arc::new(format!("{parent}/n-"));
    let clients = opts.connect_many(opts.clients).await?;
    let phase = Phase::from_opts(opts);
    let mut handles = Vec::new();
    for client in &clients {
        for _ in 0..opts.depth {
            let (client, phase, prefix, value) =
                (client.clone(), phase.clone(), prefix.clone(), value.clone());
            handles.push(tokio::spawn(async move {
                let mut slot = Slot::new(2);
                while let Some(step) = phase.next() {
                    let t0 = Instant::now();
                    let created = client
                        .create(&prefix, &value, CreateMode::PersistentSequential)
                        .await;
                    let path = created.as_ref().ok().map(|(p, _)| p.clone());
                    if !slot.record(&phase, step, 0, t0, created, &client).await {
                        break;
                    }
                    let Some(path) = path else { continue };
                    let t1 = Instant::now();
                    let deleted = client.delete(&path, None).await;
                    if !slot.record(&phase, step, 1, t1, deleted, &client).await {
                        break;
                    }
                }
                slot
            }));
        }
    }
    let run = measured_run(opts, &phase, "ops", 2, handles).await?;
    let slots = &run.slots;
    let ops = slots.lat[0].count() + slots.lat[1].count();
    let cpu = run.cpu.finish(run.wall, ops);
    report.throughput("ops", "ops_per_s", ops, run.window);
    report.latency("create_latency", &slots.lat[0]);
    report.latency("delete_latency", &slots.lat[1]);
    report.errors(slots.errors, slots.first_error.as_deref());
    report.extend(cpu);
    for c in clients {
        c.close().await;
    }
    if !opts.skip_cleanup {
        // Slots stopped mid-pair may leave a node behind.
        let (left, _) = control.children(&parent).await?;
        delete_with_children(control, parent, &left).await?;
    }
    Ok(())
}

/// How many znodes each parent of the memory tree holds.
const ZNODES_PER_PARENT: u64 = 1000;

/// znodes-memory: `--ops` znodes (default 1M) in a 1000-wide two-level tree; RSS per znode.
pub async fn znodes_memory(
    opts: &Options,
    control: &Client,
    report: &mut Report,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        opts.server_pid.is_some(),
        "znodes-memory measures server memory and needs --server-pid"
    );
    let total = opts.ops.unwrap_or(1_000_000);
    let base = format!("{}/zm", opts.root);
    ensure_path(control, &base).await?;
    let parents: Vec<String> = (0..total.div_ceil(ZNODES_PER_PARENT))
        .map(|i| format!("{base}/b{i:05}"))
        .collect();
    put_all(control, &parents, b"")
        .await
        .context("creating the parents")?;
    let (rss_before, raw_before) = sample_rss(opts).await?;

    let clients = opts.connect_many(opts.clients).await?;
    let value = Arc::new(opts.value());
    let next = Arc::new(AtomicU64::new(0));
    // No warm-up: every znode counts.
    let phase = Phase::new(Duration::ZERO, Duration::ZERO, Some(total));
    let mut handles = Vec::new();
    for client in &clients {
        for _ in 0..opts.depth {
            let (client, phase, next, value, base) = (
                client.clone(),
                phase.clone(),
                next.clone(),
                value.clone(),
                base.clone(),
            );
            handles.push(tokio::spawn(async move {
                let mut slot = Slot::new(1);
                while let Some(step) = phase.next() {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let path = format!(
                        "{base}/b{:05}/n{:04}",
                        i / ZNODES_PER_PARENT,
                        i % ZNODES_PER_PARENT
                    );
                    let t0 = Instant::now();
                    let r = client.create(&path, &value, CreateMode::Persistent).await;
                    if !slot.record(&phase, step, 0, t0, r, &client).await {
                        break;
                    }
                }
                slot
            }));
        }
    }
    let run = measured_run(opts, &phase, "ops", 1, handles).await?;
    let slots = &run.slots;
    let created = slots.lat[0].count();
    let cpu = run.cpu.finish(run.wall, created);
    for c in clients {
        c.close().await;
    }
    let (rss_after, raw_after) = sample_rss(opts).await?;
    report.throughput("znodes", "creates_per_s", created, run.wall);
    report.latency("create_latency", &slots.lat[0]);
    report.errors(slots.errors, slots.first_error.as_deref());
    report.rss_per(
        "znode",
        created,
        (rss_before, raw_before),
        (rss_after, raw_after),
    );
    report.extend(cpu);

    if !opts.skip_cleanup {
        let mut nodes = Vec::with_capacity(created as usize);
        for i in 0..total {
            nodes.push(format!(
                "{base}/b{:05}/n{:04}",
                i / ZNODES_PER_PARENT,
                i % ZNODES_PER_PARENT
            ));
        }
        delete_all(control, nodes).await?;
        delete_all(control, parents).await?;
        delete_all(control, vec![base]).await?;
    }
    Ok(())
}
