//! Set of unique znodes: every acknowledged create is present in the final read, no create the
//! server refused is, and nothing appears that was never attempted. Creates with an unknown
//! outcome may be present or not.

use std::collections::{BTreeSet, HashMap};

use super::Report;
use crate::history::{Call, Op, Outcome};

pub fn check(ops: &[&Op]) -> Report {
    let mut report = Report::default();
    let mut attempted: HashMap<u64, Outcome> = HashMap::new();
    let mut finals: Vec<&BTreeSet<u64>> = Vec::new();
    let owned: Vec<BTreeSet<u64>> = ops
        .iter()
        .filter_map(|op| match (&op.call, op.outcome) {
            (Call::SetFinal { elems }, Outcome::Ok) => Some(elems.iter().copied().collect()),
            _ => None,
        })
        .collect();
    finals.extend(owned.iter());
    for op in ops {
        if let Call::SetAdd { elem } = op.call {
            if attempted.insert(elem, op.outcome).is_some() {
                report
                    .anomalies
                    .push(format!("element {elem} was added twice (workload bug)"));
            }
        }
    }
    let Some(last) = finals.last() else {
        report
            .notes
            .push("no final read succeeded: nothing to check".into());
        return report;
    };
    let mut lost: Vec<u64> = Vec::new();
    let mut resurrected: Vec<u64> = Vec::new();
    let mut unknown_present = 0usize;
    let mut unknown_total = 0usize;
    for (&elem, &outcome) in &attempted {
        let present = last.contains(&elem);
        match outcome {
            Outcome::Ok if !present => lost.push(elem),
            Outcome::Fail if present => resurrected.push(elem),
            Outcome::Info => {
                unknown_total += 1;
                unknown_present += usize::from(present);
            }
            _ => {}
        }
    }
    lost.sort_unstable();
    resurrected.sort_unstable();
    if !lost.is_empty() {
        report.anomalies.push(format!(
            "{} acknowledged adds missing from the final read: {:?}",
            lost.len(),
            &lost[..lost.len().min(20)]
        ));
    }
    if !resurrected.is_empty() {
        report.anomalies.push(format!(
            "{} failed adds present in the final read: {:?}",
            resurrected.len(),
            &resurrected[..resurrected.len().min(20)]
        ));
    }
    let strangers: Vec<u64> = last
        .iter()
        .filter(|e| !attempted.contains_key(e))
        .copied()
        .collect();
    if !strangers.is_empty() {
        report.anomalies.push(format!(
            "{} elements present that no client added: {:?}",
            strangers.len(),
            &strangers[..strangers.len().min(20)]
        ));
    }
    report.notes.push(format!(
        "final read has {} elements; {unknown_present} of {unknown_total} unknown adds took effect",
        last.len()
    ));
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    fn add(elem: u64, outcome: Outcome) -> Op {
        Op::ok(1, elem * 10, elem * 10 + 5, Call::SetAdd { elem }).with_outcome(outcome)
    }
    fn fin(elems: &[u64]) -> Op {
        Op::ok(
            9,
            1000,
            1010,
            Call::SetFinal {
                elems: elems.to_vec(),
            },
        )
    }
    fn run(ops: &[Op]) -> Report {
        check(&ops.iter().collect::<Vec<_>>())
    }

    #[test]
    fn clean_set_with_unknowns_either_way_is_valid() {
        let h = [
            add(1, Outcome::Ok),
            add(2, Outcome::Info),
            add(3, Outcome::Info),
            add(4, Outcome::Fail),
            fin(&[1, 2]),
        ];
        let rep = run(&h);
        assert!(rep.is_valid(), "{rep:?}");
        assert!(rep.notes[0].contains("1 of 2 unknown"), "{rep:?}");
    }

    #[test]
    fn lost_acknowledged_add_is_reported() {
        let rep = run(&[add(1, Outcome::Ok), add(2, Outcome::Ok), fin(&[2])]);
        assert_eq!(rep.anomalies.len(), 1);
        assert!(rep.anomalies[0].contains("missing"), "{rep:?}");
    }

    #[test]
    fn failed_add_present_is_reported() {
        let rep = run(&[add(1, Outcome::Fail), fin(&[1])]);
        assert!(rep.anomalies[0].contains("failed adds present"), "{rep:?}");
    }

    #[test]
    fn element_nobody_added_is_reported() {
        let rep = run(&[add(1, Outcome::Ok), fin(&[1, 77])]);
        assert!(rep.anomalies[0].contains("no client added"), "{rep:?}");
    }
}
