//! Request-throughput workloads (read, write, mixed, create) and the znode memory workload.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use corral_client::{Client, CreateMode, Error};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Map;

use super::stats::{round3, CpuWindow, Latency};
use super::{
    delete_all, ensure_path, for_each_concurrent, phase_progress, put, sample_rss, Options, Phase,
    Report, Step, Workload,
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

/// Drives a closed-loop run: starts the CPU window when measuring begins, waits for the slots
/// and returns (merged slots, measured wall time, CPU figures).
async fn measured_run(
    opts: &Options,
    phase: &Arc<Phase>,
    kinds: usize,
    handles: Vec<tokio::task::JoinHandle<Slot>>,
) -> anyhow::Result<(Slot, Duration, Map<String, serde_json::Value>)> {
    let progress = phase_progress(opts, phase, "ops");
    tokio::time::sleep_until(phase.measure_from().into()).await;
    let cpu = CpuWindow::start(opts.server_pid);
    let started = Instant::now();
    let slots = join_slots(kinds, handles).await;
    let wall = started.elapsed();
    progress.stop();
    let slots = slots?;
    let ops: u64 = slots.lat.iter().map(Latency::count).sum();
    let mut cpu_figures = Map::new();
    cpu.finish(wall, ops, &mut cpu_figures);
    // With a time budget the window is the budget itself; requests still in flight at its end
    // were started inside it and are counted.
    let window = if opts.ops.is_some() {
        wall
    } else {
        Duration::from_secs_f64(opts.duration_s)
    };
    Ok((slots, window, cpu_figures))
}

fn key_path(opts: &Options, i: usize) -> String {
    format!("{}/data/k{i:06}", opts.root)
}

/// read, write and mixed: getData / setData on random keys of a fixed key set.
pub async fn keyed(opts: &Options, control: &Client, report: &mut Report) -> anyhow::Result<()> {
    let value = Arc::new(opts.value());
    ensure_path(control, &format!("{}/data", opts.root)).await?;
    let keys: Arc<Vec<String>> = Arc::new((0..opts.keys).map(|i| key_path(opts, i)).collect());
    for_each_concurrent(keys.iter().cloned(), 64, |k| {
        let (c, v) = (control.clone(), value.clone());
        async move { put(&c, &k, &v).await }
    })
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
                loop {
                    let step = phase.next();
                    if step == Step::Stop {
                        break;
                    }
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
    let (slots, window, cpu) = measured_run(opts, &phase, 2, handles).await?;
    let (reads, writes) = (&slots.lat[0], &slots.lat[1]);
    let ops = reads.count() + writes.count();
    report.set("ops", ops);
    report.set("seconds", round3(window.as_secs_f64()));
    report.set("ops_per_s", round3(ops as f64 / window.as_secs_f64()));
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
                loop {
                    let step = phase.next();
                    if step == Step::Stop {
                        break;
                    }
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
    let (slots, window, cpu) = measured_run(opts, &phase, 2, handles).await?;
    let ops = slots.lat[0].count() + slots.lat[1].count();
    report.set("ops", ops);
    report.set("seconds", round3(window.as_secs_f64()));
    report.set("ops_per_s", round3(ops as f64 / window.as_secs_f64()));
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
        delete_all(
            control,
            left.iter().map(|n| format!("{parent}/{n}")).collect(),
        )
        .await?;
        delete_all(control, vec![parent]).await?;
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
    for_each_concurrent(parents.iter().cloned(), 64, |p| {
        let c = control.clone();
        async move { put(&c, &p, b"").await }
    })
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
                loop {
                    let step = phase.next();
                    if step == Step::Stop {
                        break;
                    }
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
    let (slots, wall, cpu) = measured_run(opts, &phase, 1, handles).await?;
    for c in clients {
        c.close().await;
    }
    let created = slots.lat[0].count();
    let (rss_after, raw_after) = sample_rss(opts).await?;
    report.set("znodes", created);
    report.set("seconds", round3(wall.as_secs_f64()));
    report.set("creates_per_s", round3(created as f64 / wall.as_secs_f64()));
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
