//! The queue workload: a FIFO queue on sequential children of `/chaos/queue`, as in
//! ZooKeeper's queue recipe.
//!
//! - enqueue: create `/chaos/queue/e<elem>-` persistent-sequential (the server appends the
//!   10-digit sequence number); the element is in the name, so a dequeue needs no read of the
//!   node's data;
//! - dequeue: list the children, then delete the one with the lowest sequence number (any
//!   version); `NoNode` means another client took it first, so try the next one;
//! - drain (after healing): the same, until the queue is empty.
//!
//! A delete succeeds at most once per node, so whoever's delete is acknowledged owns the
//! element. `crate::check::queue` judges the history.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use corral_client::{Client, CreateMode, Error, ZkError};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::history::{Call, Outcome, Recorder};
use crate::workload::{bounded, error_text, outcome_of, sequence_of, think, Ctx, Session, ROOT};

/// The queue's parent znode.
pub fn dir() -> String {
    format!("{ROOT}/queue")
}

/// The element carried by a queue node name `e<elem>-<sequence>`.
pub fn elem_of(name: &str) -> Option<u64> {
    let rest = name.strip_prefix('e')?;
    let (elem, _) = rest.split_once('-')?;
    elem.parse().ok()
}

/// Child names in queue order (lowest sequence number first); names that are not queue nodes
/// go last and are skipped by the callers.
fn in_queue_order(mut kids: Vec<String>) -> Vec<String> {
    kids.sort_by_key(|k| sequence_of(k).unwrap_or(i64::MAX));
    kids
}

/// One queue client task: enqueues and dequeues, chosen at random with equal odds, so the
/// queue stays short (a dequeue lists every child).
pub async fn run(ctx: Ctx, process: u32) {
    let mut rng = StdRng::seed_from_u64(ctx.seed ^ (u64::from(process) << 24) ^ 0x9e37);
    let mut s = Session::new(ctx.session_timeout);
    let queue = dir();
    let mut n = 0u64;
    while let Some(c) = s.get(&ctx).await {
        if rng.gen_bool(0.5) {
            n += 1;
            // Unique across the run: the process in the high bits.
            let elem = (u64::from(process) << 32) | n;
            let t0 = ctx.rec.now_ns();
            let r = bounded(
                &ctx,
                c.create(
                    &format!("{queue}/e{elem}-"),
                    elem.to_string().as_bytes(),
                    CreateMode::PersistentSequential,
                ),
            )
            .await;
            let (outcome, err) = outcome_of(&r);
            ctx.rec
                .finish(process, t0, outcome, Call::QueueEnqueue { elem }, err);
        } else {
            dequeue(&ctx, &c, process).await;
        }
        think().await;
    }
}

/// Takes the lowest element, recording one `QueueDequeue` op.
async fn dequeue(ctx: &Ctx, c: &Client, process: u32) {
    let queue = dir();
    let t0 = ctx.rec.now_ns();
    let kids = match bounded(ctx, c.children(&queue)).await {
        Ok((kids, _)) => kids,
        Err(e) => {
            // Only a read was sent: nothing can have been removed.
            ctx.rec.finish(
                process,
                t0,
                Outcome::Fail,
                Call::QueueDequeue { elem: None },
                Some(format!("no delete sent: {}", error_text(&e))),
            );
            return;
        }
    };
    for name in in_queue_order(kids) {
        let Some(elem) = elem_of(&name) else { continue };
        match bounded(ctx, c.delete(&format!("{queue}/{name}"), None)).await {
            Ok(()) => {
                ctx.rec.finish(
                    process,
                    t0,
                    Outcome::Ok,
                    Call::QueueDequeue { elem: Some(elem) },
                    None,
                );
                return;
            }
            // Another client took it: the next one is ours to try.
            Err(Error::Zk(ZkError::NoNode)) => continue,
            Err(e) => {
                let outcome = crate::workload::classify(&e);
                ctx.rec.finish(
                    process,
                    t0,
                    outcome,
                    Call::QueueDequeue {
                        elem: (outcome == Outcome::Info).then_some(elem),
                    },
                    Some(error_text(&e)),
                );
                return;
            }
        }
    }
    ctx.rec.finish(
        process,
        t0,
        Outcome::Fail,
        Call::QueueDequeue { elem: None },
        Some("queue empty".into()),
    );
}

/// Empties the queue after the workload tasks stopped, recording one `QueueDrain` op: `ok`
/// if the queue was seen empty before `deadline`, else `info`.
pub async fn drain(client: &Client, rec: &Recorder, process: u32, deadline: Instant) {
    const OP_TIMEOUT: Duration = Duration::from_millis(crate::runner::OP_TIMEOUT_MS);
    let queue = dir();
    let t0 = rec.now_ns();
    let mut taken = Vec::new();
    // Nodes whose delete by this drain had an unknown outcome: a later NoNode for one of them
    // means that delete took effect.
    let mut uncertain: HashSet<String> = HashSet::new();
    let mut emptied = false;
    while Instant::now() < deadline {
        let listed = tokio::time::timeout(OP_TIMEOUT, async {
            client.sync(&queue).await?;
            client.children(&queue).await
        })
        .await;
        let kids = match listed {
            Ok(Ok((kids, _))) => kids,
            other => {
                tracing::warn!(?other, "queue drain: listing failed; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let kids: Vec<String> = in_queue_order(kids)
            .into_iter()
            .filter(|k| elem_of(k).is_some())
            .collect();
        if kids.is_empty() {
            emptied = true;
            break;
        }
        for name in kids {
            let elem = elem_of(&name).expect("filtered above");
            let r =
                tokio::time::timeout(OP_TIMEOUT, client.delete(&format!("{queue}/{name}"), None))
                    .await
                    .unwrap_or(Err(Error::Timeout));
            match r {
                Ok(()) => taken.push(elem),
                Err(Error::Zk(ZkError::NoNode)) => {
                    // Gone: by this drain's earlier attempt, or by a late dequeue of a stopped
                    // task (which recorded it as unknown).
                    if uncertain.remove(&name) {
                        taken.push(elem);
                    }
                }
                Err(e) => {
                    tracing::warn!(%e, name, "queue drain: delete failed; listing again");
                    uncertain.insert(name);
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    break;
                }
            }
        }
    }
    let (outcome, error) = if emptied {
        (Outcome::Ok, None)
    } else {
        (
            Outcome::Info,
            Some("queue not empty by the deadline".into()),
        )
    };
    rec.finish(
        process,
        t0,
        outcome,
        Call::QueueDrain { elems: taken },
        error,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn element_and_order_come_from_the_node_name() {
        assert_eq!(elem_of("e4294967297-0000000012"), Some(4294967297));
        assert_eq!(elem_of("x1-0000000012"), None);
        assert_eq!(elem_of("e12"), None);
        let order = in_queue_order(vec![
            "e5-0000000010".into(),
            "junk".into(),
            "e9-0000000002".into(),
        ]);
        assert_eq!(order, ["e9-0000000002", "e5-0000000010", "junk"]);
    }
}
