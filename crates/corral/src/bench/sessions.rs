//! sessions: `--clients` concurrent loops that open a session, create an ephemeral node and
//! close the session.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use corral_client::{Client, CreateMode};

use super::ops::{measured_run, Slot};
use super::{delete_with_children, ensure_path, Options, Phase, Report, Step};

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
            while let Some(step) = phase.next() {
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
    let run = measured_run(opts, &phase, "sessions", 3, handles).await?;
    let slots = &run.slots;
    let sessions = slots.lat[CLOSE].count();
    let cpu_figures = run.cpu.finish(run.wall, sessions);

    // Close is acknowledged after the session's ephemerals are gone, so none may be left.
    let (left, _) = control
        .children(&parent)
        .await
        .context("listing the ephemerals")?;
    report.throughput("sessions", "sessions_per_s", sessions, run.window);
    report.latency("connect_latency", &slots.lat[CONNECT]);
    report.latency("create_latency", &slots.lat[CREATE]);
    report.latency("close_latency", &slots.lat[CLOSE]);
    report.set("ephemerals_left", left.len());
    report.errors(slots.errors, slots.first_error.as_deref());
    report.extend(cpu_figures);
    if !opts.skip_cleanup {
        delete_with_children(control, parent, &left).await?;
    }
    Ok(())
}
