//! Unique ids from sequential znodes: no id is handed out twice, and ids respect real time —
//! an id acknowledged before another create was invoked is smaller than that create's id.

use std::collections::HashMap;

use super::Report;
use crate::history::{Call, Op, Outcome};

pub fn check(ops: &[&Op]) -> Report {
    let mut report = Report::default();
    // (invoke, complete, id, process)
    let mut acked: Vec<(u64, u64, i64, u32)> = ops
        .iter()
        .filter_map(|op| match (&op.call, op.outcome) {
            (Call::IdNext { id: Some(id) }, Outcome::Ok) => {
                Some((op.invoke_ns, op.complete_ns, *id, op.process))
            }
            _ => None,
        })
        .collect();

    let mut seen: HashMap<i64, usize> = HashMap::new();
    for &(_, _, id, _) in &acked {
        *seen.entry(id).or_default() += 1;
    }
    let mut dups: Vec<(i64, usize)> = seen.into_iter().filter(|&(_, n)| n > 1).collect();
    dups.sort_unstable();
    if !dups.is_empty() {
        report.anomalies.push(format!(
            "{} ids handed out more than once (id, times): {:?}",
            dups.len(),
            &dups[..dups.len().min(20)]
        ));
    }

    // Sweep in invoke order, folding in every op completed before the current invoke and
    // keeping the largest id among them: O(n log n) instead of comparing all pairs.
    let mut by_complete = acked.clone();
    by_complete.sort_unstable_by_key(|a| a.1);
    acked.sort_unstable_by_key(|a| a.0);
    let mut done = 0usize;
    let mut max_before: Option<(i64, u64, u32)> = None;
    let mut order_violations = Vec::new();
    for &(invoke, _, id, process) in &acked {
        while done < by_complete.len() && by_complete[done].1 < invoke {
            let (_, complete, prev_id, prev_process) = by_complete[done];
            if !matches!(max_before, Some((m, _, _)) if prev_id <= m) {
                max_before = Some((prev_id, complete, prev_process));
            }
            done += 1;
        }
        if let Some((prev_id, complete, prev_process)) = max_before {
            // Equal ids are duplicates, reported above.
            if prev_id > id {
                order_violations.push(format!(
                    "id {id} (process {process}, invoked at {invoke} ns) is not above id \
                     {prev_id} (process {prev_process}, acknowledged at {complete} ns)"
                ));
            }
        }
    }
    if !order_violations.is_empty() {
        report.anomalies.push(format!(
            "{} ids out of real-time order, e.g. {}",
            order_violations.len(),
            order_violations[..order_violations.len().min(5)].join("; ")
        ));
    }
    report
        .notes
        .push(format!("{} acknowledged ids", by_complete.len()));
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(p: u32, t0: u64, t1: u64, id: i64) -> Op {
        Op::ok(p, t0, t1, Call::IdNext { id: Some(id) })
    }
    fn run(ops: &[Op]) -> Report {
        check(&ops.iter().collect::<Vec<_>>())
    }

    #[test]
    fn increasing_and_concurrent_ids_are_valid() {
        // 3 and 2 overlap, so either order is fine; unknown creates are ignored.
        let h = [
            id(1, 0, 10, 1),
            id(1, 20, 40, 3),
            id(2, 25, 35, 2),
            Op::ok(3, 26, 90, Call::IdNext { id: None }).with_outcome(Outcome::Info),
            id(2, 50, 60, 5),
        ];
        let rep = run(&h);
        assert!(rep.is_valid(), "{rep:?}");
    }

    #[test]
    fn duplicate_id_is_reported() {
        let rep = run(&[id(1, 0, 10, 1), id(2, 5, 15, 1)]);
        assert_eq!(rep.anomalies.len(), 1, "{rep:?}");
        assert!(rep.anomalies[0].contains("more than once"));
    }

    #[test]
    fn out_of_order_id_is_reported() {
        // 7 was acknowledged before the create that got 4 was invoked.
        let rep = run(&[id(1, 0, 10, 7), id(2, 20, 30, 4)]);
        assert_eq!(rep.anomalies.len(), 1, "{rep:?}");
        assert!(rep.anomalies[0].contains("real-time order"));
    }
}
