//! The queue (`crate::queue`): every acknowledged enqueue is removed exactly once by the end
//! (a dequeue or the final drain), nothing is removed that was never enqueued or whose enqueue
//! failed, nothing is removed twice, nothing is removed before its enqueue began, and removals
//! respect FIFO order as far as ZooKeeper promises it.
//!
//! What ZooKeeper promises. Sequence numbers come from the parent's child counter, assigned in
//! commit order, so if enqueue A was acknowledged before enqueue B was invoked, A's number is
//! lower. Every server applies the committed log in order, so any child list that shows B also
//! shows A unless A was already deleted; a dequeuer tries the lowest name first and moves on
//! only on `NoNode` (A deleted by then). Hence A is removed before B is. Each removal happens
//! inside the interval of the op that made it, so B's removal cannot be *acknowledged* before
//! the first op that may have removed A was *invoked*. That, and nothing stronger, is checked:
//! concurrent enqueues may come out in either order, and an element whose enqueue outcome is
//! unknown is not ordered against anything.

use std::collections::HashMap;

use super::Report;
use crate::history::{Call, Op, Outcome};

/// How many examples an anomaly line lists.
const EXAMPLES: usize = 10;

#[derive(Default)]
struct Elem {
    /// (outcome, invoke, complete) of its enqueue.
    enqueue: Option<(Outcome, u64, u64)>,
    /// Acknowledged removals: (invoke, complete, process).
    taken: Vec<(u64, u64, u32)>,
    /// Invoke times of removals with an unknown outcome.
    maybe_taken: Vec<u64>,
}

pub fn check(ops: &[&Op]) -> Report {
    let mut report = Report::default();
    let mut elems: HashMap<u64, Elem> = HashMap::new();
    let mut drain: Option<Outcome> = None;
    let mut duplicate_enqueues = 0usize;
    for op in ops {
        match (&op.call, op.outcome) {
            (Call::QueueEnqueue { elem }, outcome) => {
                let e = elems.entry(*elem).or_default();
                if e.enqueue.is_some() {
                    duplicate_enqueues += 1;
                }
                e.enqueue = Some((outcome, op.invoke_ns, op.complete_ns));
            }
            (Call::QueueDequeue { elem: Some(elem) }, Outcome::Ok) => {
                let e = elems.entry(*elem).or_default();
                e.taken.push((op.invoke_ns, op.complete_ns, op.process));
            }
            (Call::QueueDequeue { elem: Some(elem) }, Outcome::Info) => {
                elems
                    .entry(*elem)
                    .or_default()
                    .maybe_taken
                    .push(op.invoke_ns);
            }
            (Call::QueueDrain { elems: drained }, outcome) => {
                // The drain's deletes are each acknowledged, whatever the drain's outcome.
                for elem in drained {
                    let e = elems.entry(*elem).or_default();
                    e.taken.push((op.invoke_ns, op.complete_ns, op.process));
                }
                drain = Some(outcome);
            }
            _ => {}
        }
    }
    if duplicate_enqueues > 0 {
        report.anomalies.push(format!(
            "{duplicate_enqueues} elements enqueued twice (workload bug)"
        ));
    }

    let mut sorted: Vec<(&u64, &Elem)> = elems.iter().collect();
    sorted.sort_unstable_by_key(|(elem, _)| **elem);
    let mut twice = Vec::new();
    let mut phantom = Vec::new();
    let mut early = Vec::new();
    let mut lost = Vec::new();
    let (mut unknown_enqueues, mut unknown_present) = (0usize, 0usize);
    for &(&elem, e) in &sorted {
        if e.taken.len() > 1 {
            twice.push((elem, e.taken.len()));
        }
        match e.enqueue {
            None if !e.taken.is_empty() => phantom.push(elem),
            Some((Outcome::Fail, _, _)) if !e.taken.is_empty() => phantom.push(elem),
            Some((Outcome::Info, _, _)) => {
                unknown_enqueues += 1;
                unknown_present += usize::from(!e.taken.is_empty() || !e.maybe_taken.is_empty());
            }
            Some((Outcome::Ok, _, _))
                if e.taken.is_empty() && e.maybe_taken.is_empty() && drain == Some(Outcome::Ok) =>
            {
                lost.push(elem)
            }
            _ => {}
        }
        if let Some((_, enqueue_invoke, _)) = e.enqueue {
            if let Some(&(_, complete, process)) = e.taken.iter().find(|t| t.1 < enqueue_invoke) {
                early.push(format!(
                    "element {elem} removed by process {process} (acknowledged at {complete} ns) \
                     before its enqueue was invoked ({enqueue_invoke} ns)"
                ));
            }
        }
    }
    let mut flag = |what: String, list: &[String]| {
        if !list.is_empty() {
            report.anomalies.push(format!(
                "{} {what}: {}",
                list.len(),
                list[..list.len().min(EXAMPLES)].join(", ")
            ));
        }
    };
    let show = |v: &[u64]| v.iter().map(u64::to_string).collect::<Vec<_>>();
    flag(
        "elements removed more than once (element×times)".into(),
        &twice
            .iter()
            .map(|(e, n)| format!("{e}×{n}"))
            .collect::<Vec<_>>(),
    );
    flag(
        "elements removed that were never enqueued or whose enqueue failed".into(),
        &show(&phantom),
    );
    flag("elements removed before enqueued".into(), &early);
    flag(
        "acknowledged enqueues never removed (lost)".into(),
        &show(&lost),
    );
    flag("FIFO violations".into(), &fifo_violations(&sorted));

    match drain {
        Some(Outcome::Ok) => {}
        Some(_) => report
            .notes
            .push("the final drain did not empty the queue: lost elements not checked".into()),
        None => report
            .notes
            .push("no final drain recorded: lost elements not checked".into()),
    }
    let acked = sorted
        .iter()
        .filter(|(_, e)| matches!(e.enqueue, Some((Outcome::Ok, _, _))))
        .count();
    let removed = sorted.iter().filter(|(_, e)| !e.taken.is_empty()).count();
    report.notes.push(format!(
        "{acked} acknowledged enqueues, {removed} elements removed; \
         {unknown_present} of {unknown_enqueues} unknown enqueues took effect"
    ));
    report
}

/// Pairs (A, B) where A's enqueue was acknowledged before B's was invoked, yet B's removal was
/// acknowledged before any op that may have removed A was invoked. One sweep: enqueues in
/// acknowledgement order feed the latest "earliest possible removal" seen so far.
fn fifo_violations(elems: &[(&u64, &Elem)]) -> Vec<String> {
    // (enqueue complete, earliest possible removal, element) for acknowledged, removed A.
    let mut older: Vec<(u64, u64, u64)> = elems
        .iter()
        .filter_map(|&(&elem, e)| {
            let (Outcome::Ok, _, complete) = e.enqueue? else {
                return None;
            };
            let earliest = e
                .taken
                .iter()
                .map(|t| t.0)
                .chain(e.maybe_taken.iter().copied())
                .min()?;
            Some((complete, earliest, elem))
        })
        .collect();
    older.sort_unstable();
    // (enqueue invoke, removal acknowledged, element) for every B removed with acknowledgement.
    let mut newer: Vec<(u64, u64, u64)> = elems
        .iter()
        .filter_map(|&(&elem, e)| {
            let (_, invoke, _) = e.enqueue?;
            let removed = e.taken.iter().map(|t| t.1).min()?;
            Some((invoke, removed, elem))
        })
        .collect();
    newer.sort_unstable();
    let mut out = Vec::new();
    let mut next = 0usize;
    // The older element with the latest earliest-removal so far: (earliest removal, element).
    let mut latest: Option<(u64, u64)> = None;
    for &(invoke_b, removed_b, b) in &newer {
        while next < older.len() && older[next].0 < invoke_b {
            let (_, earliest, a) = older[next];
            if latest.is_none_or(|(l, _)| earliest > l) {
                latest = Some((earliest, a));
            }
            next += 1;
        }
        if let Some((earliest_a, a)) = latest {
            if removed_b < earliest_a {
                out.push(format!(
                    "{b} removed (acknowledged at {removed_b} ns) while older {a} stayed \
                     (first removal attempt at {earliest_a} ns)"
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enq(elem: u64, t0: u64, t1: u64, outcome: Outcome) -> Op {
        Op::ok(1, t0, t1, Call::QueueEnqueue { elem }).with_outcome(outcome)
    }
    fn deq(elem: u64, t0: u64, t1: u64) -> Op {
        Op::ok(2, t0, t1, Call::QueueDequeue { elem: Some(elem) })
    }
    fn drain(elems: &[u64], t0: u64, outcome: Outcome) -> Op {
        Op::ok(
            0,
            t0,
            t0 + 10,
            Call::QueueDrain {
                elems: elems.to_vec(),
            },
        )
        .with_outcome(outcome)
    }
    fn run(ops: &[Op]) -> Report {
        check(&ops.iter().collect::<Vec<_>>())
    }

    #[test]
    fn clean_queue_with_concurrency_and_unknowns_is_valid() {
        let h = [
            enq(1, 0, 10, Outcome::Ok),
            // 2 and 3 overlap: either may come out first.
            enq(2, 20, 40, Outcome::Ok),
            enq(3, 25, 35, Outcome::Ok),
            enq(4, 26, 90, Outcome::Info),
            enq(5, 27, 30, Outcome::Fail),
            deq(1, 50, 60),
            deq(3, 61, 70),
            // An unknown dequeue of 2: it may have removed it, so 2 is not lost.
            Op::ok(3, 71, 80, Call::QueueDequeue { elem: Some(2) }).with_outcome(Outcome::Info),
            Op::ok(3, 81, 82, Call::QueueDequeue { elem: None }).with_outcome(Outcome::Fail),
            drain(&[4], 100, Outcome::Ok),
        ];
        let rep = run(&h);
        assert!(rep.is_valid(), "{rep:?}");
        assert!(
            rep.notes.iter().any(|n| n.contains("1 of 1 unknown")),
            "{rep:?}"
        );
    }

    #[test]
    fn lost_element_is_reported() {
        let rep = run(&[
            enq(1, 0, 10, Outcome::Ok),
            enq(2, 20, 30, Outcome::Ok),
            deq(1, 40, 50),
            drain(&[], 100, Outcome::Ok),
        ]);
        assert_eq!(rep.anomalies.len(), 1, "{rep:?}");
        assert!(rep.anomalies[0].contains("(lost): 2"), "{rep:?}");
    }

    #[test]
    fn lost_elements_are_not_judged_without_a_complete_drain() {
        let rep = run(&[enq(1, 0, 10, Outcome::Ok), drain(&[], 100, Outcome::Info)]);
        assert!(rep.is_valid(), "{rep:?}");
        assert!(rep.notes[0].contains("did not empty"), "{rep:?}");
    }

    #[test]
    fn duplicate_dequeue_is_reported() {
        // Taken by a dequeue and again by the drain.
        let rep = run(&[
            enq(1, 0, 10, Outcome::Ok),
            deq(1, 20, 30),
            drain(&[1], 100, Outcome::Ok),
        ]);
        assert_eq!(rep.anomalies.len(), 1, "{rep:?}");
        assert!(rep.anomalies[0].contains("more than once"), "{rep:?}");
        assert!(rep.anomalies[0].contains("1×2"), "{rep:?}");
    }

    #[test]
    fn phantom_elements_are_reported() {
        let rep = run(&[
            enq(1, 0, 10, Outcome::Fail),
            deq(1, 20, 30),
            deq(77, 40, 50),
            drain(&[], 100, Outcome::Ok),
        ]);
        assert_eq!(rep.anomalies.len(), 1, "{rep:?}");
        assert!(
            rep.anomalies[0].starts_with("2 elements removed that were never"),
            "{rep:?}"
        );
    }

    #[test]
    fn removal_before_enqueue_is_reported() {
        let rep = run(&[
            deq(1, 0, 5),
            enq(1, 10, 20, Outcome::Info),
            drain(&[], 100, Outcome::Ok),
        ]);
        assert_eq!(rep.anomalies.len(), 1, "{rep:?}");
        assert!(rep.anomalies[0].contains("before its enqueue"), "{rep:?}");
    }

    #[test]
    fn fifo_violation_is_reported() {
        // 1 was enqueued before 2 began, yet 2 came out and 1 stayed until the drain.
        let rep = run(&[
            enq(1, 0, 10, Outcome::Ok),
            enq(2, 20, 30, Outcome::Ok),
            deq(2, 40, 50),
            drain(&[1], 100, Outcome::Ok),
        ]);
        assert_eq!(rep.anomalies.len(), 1, "{rep:?}");
        assert!(rep.anomalies[0].contains("FIFO"), "{rep:?}");
        assert!(rep.anomalies[0].contains("2 removed"), "{rep:?}");
    }

    #[test]
    fn overlapping_removals_are_not_a_fifo_violation() {
        // 1's dequeue was invoked before 2's was acknowledged: 1 may have gone first.
        let rep = run(&[
            enq(1, 0, 10, Outcome::Ok),
            enq(2, 20, 30, Outcome::Ok),
            deq(2, 40, 50),
            deq(1, 45, 60),
            drain(&[], 100, Outcome::Ok),
        ]);
        assert!(rep.is_valid(), "{rep:?}");
    }
}
