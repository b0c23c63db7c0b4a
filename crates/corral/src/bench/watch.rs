//! Watch workloads: fan-out of one change to many watchers, memory per registered watch, and
//! the completeness and latency of a recursive persistent watch.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use corral_client::{Client, EventType, WatchMode};
use tokio::sync::mpsc;

use super::ops::{measured_run, Slot};
use super::stats::{round3, CpuWindow, Latency};
use super::{
    delete_all, ensure_path, put, put_all, sample_rss, Options, Phase, Progress, Report, Step,
};

/// How long a fan-out round waits for its events before counting the rest as missing.
const ROUND_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the writer waits for every watcher to re-arm its one-shot watch.
const ARM_TIMEOUT: Duration = Duration::from_secs(60);

enum FanoutMsg {
    /// A watcher holds a watch on the node at this version.
    Armed { version: i32 },
    /// The watch armed at `version` fired at `at`.
    Fired { version: i32, at: Instant },
}

/// watch-fanout: `--watchers` sessions each keep a one-shot data watch on one node (re-armed
/// after every event); one writer changes the node `--rounds` times, each time once every
/// watcher is armed, and each event's latency is measured from the moment the write was sent.
pub async fn fanout(opts: &Options, control: &Client, report: &mut Report) -> anyhow::Result<()> {
    let path = format!("{}/fanout", opts.root);
    put(control, &path, &opts.value()).await?;
    let watchers_n = opts.watchers.max(1);

    let connect_started = Instant::now();
    let watchers = opts.connect_many(watchers_n).await?;
    let connect_s = connect_started.elapsed().as_secs_f64();
    let writer = opts.connect().await?;

    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut tasks = Vec::new();
    for w in &watchers {
        let (w, tx, path) = (w.clone(), tx.clone(), path.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let Ok((_, stat, fired)) = w.get_data_w(&path).await else {
                    break;
                };
                let version = stat.version;
                if tx.send(FanoutMsg::Armed { version }).is_err() {
                    break;
                }
                if fired.await.is_err() {
                    break;
                }
                let at = Instant::now();
                if tx.send(FanoutMsg::Fired { version, at }).is_err() {
                    break;
                }
            }
        }));
    }
    drop(tx);

    let mut event_after_send = Latency::new();
    let mut event_after_reply_ahead = 0u64; // events that beat the writer's reply
    let mut last_event = Latency::new();
    let mut writer_reply = Latency::new();
    let mut armed: HashMap<i32, usize> = HashMap::new();
    let mut fired: HashMap<i32, usize> = HashMap::new();
    let mut missing = 0u64;
    let mut rounds_done = 0u64;
    let counted = Arc::new(AtomicU64::new(0));
    let progress = {
        let counted = counted.clone();
        Progress::start(
            "watch-fanout".into(),
            "events",
            Arc::new(move || counted.load(Ordering::Relaxed)),
        )
    };
    let cpu = CpuWindow::start(opts.server_pid);
    let started = Instant::now();
    let mut version = control
        .exists(&path)
        .await?
        .context("fan-out node vanished")?
        .version;
    for _ in 0..opts.rounds {
        // Wait until every watcher holds a watch on the current version.
        let deadline = Instant::now() + ARM_TIMEOUT;
        while armed.get(&version).copied().unwrap_or(0) < watchers_n {
            let msg = tokio::time::timeout_at(deadline.into(), rx.recv())
                .await
                .with_context(|| {
                    format!(
                        "only {} of {watchers_n} watchers re-armed within {ARM_TIMEOUT:?}",
                        armed.get(&version).copied().unwrap_or(0)
                    )
                })?
                .context("every watcher stopped")?;
            match msg {
                FanoutMsg::Armed { version: v } => *armed.entry(v).or_default() += 1,
                FanoutMsg::Fired { version: v, .. } => *fired.entry(v).or_default() += 1,
            }
        }
        armed.remove(&version);
        let sent = Instant::now();
        let stat = writer.set_data(&path, &opts.value(), None).await?;
        let replied = Instant::now();
        writer_reply.record(replied - sent);
        // Events that arrived before this point are in the channel with their own timestamps.
        let round_version = version;
        version = stat.version;
        let deadline = Instant::now() + ROUND_TIMEOUT;
        let mut got = 0usize;
        let mut latest = sent;
        while got < watchers_n {
            let Ok(Some(msg)) = tokio::time::timeout_at(deadline.into(), rx.recv()).await else {
                break;
            };
            match msg {
                FanoutMsg::Armed { version: v } => *armed.entry(v).or_default() += 1,
                FanoutMsg::Fired { version: v, at } if v == round_version => {
                    got += 1;
                    event_after_send.record(at - sent);
                    if at < replied {
                        event_after_reply_ahead += 1;
                    }
                    latest = latest.max(at);
                    counted.fetch_add(1, Ordering::Relaxed);
                }
                FanoutMsg::Fired { version: v, .. } => *fired.entry(v).or_default() += 1,
            }
        }
        missing += (watchers_n - got) as u64;
        if got > 0 {
            last_event.record(latest - sent);
        }
        rounds_done += 1;
    }
    let wall = started.elapsed();
    progress.stop();
    let cpu_figures = cpu.finish(wall, rounds_done * watchers_n as u64);

    report.set("watchers", watchers_n);
    report.set("rounds", rounds_done);
    report.set("connect_seconds", round3(connect_s));
    report.latency("event_after_send", &event_after_send);
    report.set("p99_event_after_send_us", event_after_send.p99_us());
    report.set("max_event_after_send_us", event_after_send.max_us());
    report.latency("round_last_event_after_send", &last_event);
    report.latency("writer_reply", &writer_reply);
    report.set("events", event_after_send.count());
    report.set("events_before_writer_reply", event_after_reply_ahead);
    report.set("missing_events", missing);
    // Events for a round that came after its timeout: late, and already counted as missing.
    report.set("late_events", fired.values().sum::<usize>());
    report.extend(cpu_figures);

    writer.close().await;
    futures::future::join_all(watchers.iter().map(|w| w.close())).await;
    for t in tasks {
        let _ = t.await;
    }
    if !opts.skip_cleanup {
        delete_all(control, vec![path]).await?;
    }
    Ok(())
}

/// watch-many: `--clients` sessions register `--ops` (default 250k) exists-watches on distinct
/// absent paths, `--depth` in flight each; the server's RSS growth per watch.
pub async fn many(opts: &Options, _control: &Client, report: &mut Report) -> anyhow::Result<()> {
    anyhow::ensure!(
        opts.server_pid.is_some(),
        "watch-many measures server memory and needs --server-pid"
    );
    let total = opts.ops.unwrap_or(250_000);
    let clients = opts.connect_many(opts.clients).await?;
    let (rss_before, raw_before) = sample_rss(opts).await?;

    let phase = Phase::new(Duration::ZERO, Duration::ZERO, Some(total));
    let next = Arc::new(AtomicU64::new(0));
    // The watches stay registered as long as the sessions live; their handles are kept so
    // that nothing on the client side goes away either.
    let held = Arc::new(Mutex::new(Vec::with_capacity(total as usize)));
    let mut handles = Vec::new();
    for client in &clients {
        for _ in 0..opts.depth {
            let (client, phase, next, held, root) = (
                client.clone(),
                phase.clone(),
                next.clone(),
                held.clone(),
                opts.root.clone(),
            );
            handles.push(tokio::spawn(async move {
                let mut slot = Slot::new(1);
                while let Some(step) = phase.next() {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let t0 = Instant::now();
                    let r = client.exists_w(&format!("{root}/wm/w{i:07}")).await;
                    let r = r.map(|(_, w)| held.lock().unwrap().push(w));
                    if !slot.record(&phase, step, 0, t0, r, &client).await {
                        break;
                    }
                }
                slot
            }));
        }
    }
    // No warm-up, so measuring starts at once.
    let run = measured_run(opts, &phase, "watches", 1, handles).await?;
    let slots = &run.slots;
    let watches = slots.lat[0].count();
    let cpu_figures = run.cpu.finish(run.wall, watches);
    let (rss_after, raw_after) = sample_rss(opts).await?;

    report.throughput("watches", "watches_per_s", watches, run.wall);
    report.latency("register_latency", &slots.lat[0]);
    report.errors(slots.errors, slots.first_error.as_deref());
    report.rss_per(
        "watch",
        watches,
        (rss_before, raw_before),
        (rss_after, raw_after),
    );
    report.extend(cpu_figures);
    for c in clients {
        c.close().await;
    }
    drop(held);
    Ok(())
}

/// Send times of the writes not yet matched with an event, one queue per key: a key is written
/// by one slot at a time, so its events arrive in the order of its sends.
type Pending = Arc<Vec<Mutex<VecDeque<Instant>>>>;

fn key_index(path: &str) -> Option<usize> {
    path.rsplit_once("/k")?.1.parse().ok()
}

/// persistent-watch: one session holds a recursive persistent watch over `--keys` nodes;
/// `--clients` × `--depth` writer slots change them (each slot its own keys, one request at a
/// time); every change must produce exactly one event.
pub async fn persistent(
    opts: &Options,
    control: &Client,
    report: &mut Report,
) -> anyhow::Result<()> {
    let base = format!("{}/pw", opts.root);
    ensure_path(control, &base).await?;
    let value = Arc::new(opts.value());
    let keys: Arc<Vec<String>> = Arc::new((0..opts.keys).map(|i| format!("{base}/k{i}")).collect());
    // The nodes exist before the watch, so only the measured changes raise events.
    put_all(control, &keys, &value)
        .await
        .context("creating the keys")?;

    let watcher = opts.connect().await?;
    let mut stream = watcher.watch(&base, WatchMode::Recursive).await?;
    let pending: Pending = Arc::new(
        (0..opts.keys)
            .map(|_| Mutex::new(VecDeque::new()))
            .collect(),
    );
    let received = Arc::new(AtomicU64::new(0));
    let last_event_at = Arc::new(Mutex::new(Instant::now()));
    let listener = {
        let (pending, received, last_event_at) =
            (pending.clone(), received.clone(), last_event_at.clone());
        tokio::spawn(async move {
            let mut latency = Latency::new();
            let mut unmatched = 0u64;
            let mut other = 0u64;
            while let Ok(ev) = stream.next_node_event().await {
                let at = Instant::now();
                *last_event_at.lock().unwrap() = at;
                if ev.event_type != EventType::NodeDataChanged {
                    other += 1;
                    continue;
                }
                let sent = key_index(&ev.path)
                    .and_then(|i| pending.get(i))
                    .and_then(|q| q.lock().unwrap().pop_front());
                match sent {
                    Some(sent) => {
                        latency.record(at - sent);
                        received.fetch_add(1, Ordering::Relaxed);
                    }
                    None => unmatched += 1,
                }
            }
            (latency, unmatched, other)
        })
    };

    let clients = opts.connect_many(opts.clients).await?;
    let slots_n = (opts.clients * opts.depth).min(opts.keys);
    let phase = Phase::from_opts(opts);
    let mut handles = Vec::new();
    for s in 0..slots_n {
        let client = clients[s % clients.len()].clone();
        let (phase, keys, value, pending) =
            (phase.clone(), keys.clone(), value.clone(), pending.clone());
        handles.push(tokio::spawn(async move {
            let own: Vec<usize> = (s..keys.len()).step_by(slots_n).collect();
            let mut slot = Slot::new(1);
            let mut n = 0usize;
            while let Some(step) = phase.next() {
                let k = own[n % own.len()];
                n += 1;
                let t0 = Instant::now();
                // Measured writes queue their send time before sending: the event may arrive
                // before the reply. Warm-up writes queue none, and their events arrive before
                // any measured write to the same key (same slot, in order), so they are
                // counted as unmatched instead.
                if step == Step::Measure {
                    pending[k].lock().unwrap().push_back(t0);
                }
                let r = client.set_data(&keys[k], &value, None).await;
                if r.is_err() && step == Step::Measure {
                    // A failed write changes nothing and raises no event.
                    pending[k].lock().unwrap().pop_back();
                }
                if !slot.record(&phase, step, 0, t0, r, &client).await {
                    break;
                }
            }
            slot
        }));
    }
    let run = measured_run(opts, &phase, "changes", 1, handles).await?;
    let slots = &run.slots;
    let changes = slots.lat[0].count();
    // Wait for the stragglers: until every change was notified, or nothing came for a while.
    loop {
        if received.load(Ordering::Relaxed) >= changes {
            break;
        }
        let quiet = last_event_at.lock().unwrap().elapsed();
        if quiet >= opts.settle().max(Duration::from_millis(500)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The CPU window stays open until here, over the delivery of the last events.
    let cpu_figures = run.cpu.finish(run.wall, changes);
    watcher.close().await;
    let (latency, unmatched, other) = listener.await.context("the watch listener panicked")?;

    report.set("changes", changes);
    report.set("events_received", latency.count());
    report.set("events_missing", changes.saturating_sub(latency.count()));
    report.set("events_unmatched", unmatched);
    report.set("events_other", other);
    report.set(
        "writes_per_s",
        round3(changes as f64 / run.window.as_secs_f64()),
    );
    report.latency("event_after_send", &latency);
    report.set("p99_event_after_send_us", latency.p99_us());
    report.latency("write_latency", &slots.lat[0]);
    report.errors(slots.errors, slots.first_error.as_deref());
    report.extend(cpu_figures);
    for c in clients {
        c.close().await;
    }
    if !opts.skip_cleanup {
        delete_all(control, keys.to_vec()).await?;
        delete_all(control, vec![base]).await?;
    }
    Ok(())
}
