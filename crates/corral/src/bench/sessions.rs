//! sessions: `--clients` concurrent loops that open a session, create an ephemeral node and
//! close the session.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use corral_client::{Client, CreateMode};

use super::ops::{join_slots, Slot};
use super::stats::{round3, CpuWindow};
use super::{delete_all, ensure_path, phase_progress, Options, Phase, Report, Step};

const CONNECT: usize = 0;
const CREATE: usize = 1;
const CLOSE: usize = 2;

pub async fn run(opts: &Options, control: &Client, report: &mut Report) -> anyhow::Result<()> {
    let parent = format!("{}/sessions", opts.root);
    ensure_path(control, &parent).await?;
    let phase = Phase::from_opts(opts);
    let next = std::sync::Arc::new(AtomicU64::new(0));
    let mut handles = Vec::new();
    for _ in 0..opts.clients {
        let (phase, next, opts, parent) =
            (phase.clone(), next.clone(), opts.clone(), parent.clone());
        handles.push(tokio::spawn(async move {
            let mut slot = Slot::new(3);
            loop {
                let step = phase.next();
                if step == Step::Stop {
                    break;
                }
                let t0 = Instant::now();
                let client = match Client::builder(&opts.server)
                    .session_timeout(Duration::from_millis(opts.session_timeout_ms))
                    .connect()
                    .await
                {
                    Ok(c) => c,
                    Err(e) => {
                        slot.errors += 1;
                        slot.first_error.get_or_insert_with(|| e.to_string());
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                };
                if step == Step::Measure {
                    slot.lat[CONNECT].record(t0.elapsed());
                }
                let n = next.fetch_add(1, Ordering::Relaxed);
                let t1 = Instant::now();
                let r = client
                    .create(&format!("{parent}/e-{n}"), b"", CreateMode::Ephemeral)
                    .await;
                match r {
                    Ok(_) if step == Step::Measure => slot.lat[CREATE].record(t1.elapsed()),
                    Ok(_) => {}
                    Err(e) => {
                        slot.errors += 1;
                        slot.first_error.get_or_insert_with(|| e.to_string());
                    }
                }
                let t2 = Instant::now();
                client.close().await;
                if step == Step::Measure {
                    slot.lat[CLOSE].record(t2.elapsed());
                    phase.completed(1);
                }
            }
            slot
        }));
    }
    let progress = phase_progress(opts, &phase, "sessions");
    tokio::time::sleep_until(phase.measure_from().into()).await;
    let cpu = CpuWindow::start(opts.server_pid);
    let started = Instant::now();
    let slots = join_slots(3, handles).await;
    let wall = started.elapsed();
    progress.stop();
    let slots = slots?;
    let sessions = slots.lat[CLOSE].count();
    let mut cpu_figures = serde_json::Map::new();
    cpu.finish(wall, sessions, &mut cpu_figures);
    let window = if opts.ops.is_some() {
        wall
    } else {
        Duration::from_secs_f64(opts.duration_s)
    };

    // Close is acknowledged after the session's ephemerals are gone, so none may be left.
    let (left, _) = control
        .children(&parent)
        .await
        .context("listing the ephemerals")?;
    report.set("sessions", sessions);
    report.set("seconds", round3(window.as_secs_f64()));
    report.set(
        "sessions_per_s",
        round3(sessions as f64 / window.as_secs_f64()),
    );
    report.latency("connect_latency", &slots.lat[CONNECT]);
    report.latency("create_latency", &slots.lat[CREATE]);
    report.latency("close_latency", &slots.lat[CLOSE]);
    report.set("ephemerals_left", left.len());
    report.errors(slots.errors, slots.first_error.as_deref());
    report.extend(cpu_figures);
    if !opts.skip_cleanup {
        delete_all(
            control,
            left.iter().map(|n| format!("{parent}/{n}")).collect(),
        )
        .await?;
        delete_all(control, vec![parent]).await?;
    }
    Ok(())
}
