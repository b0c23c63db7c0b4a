//! Counter by versioned increments: each increment reads the value and writes value + 1 at the
//! version it read, so every acknowledged increment adds exactly one and refused ones add
//! nothing. The final value must lie in [acknowledged, acknowledged + unknown].

use super::Report;
use crate::history::{Call, Op, Outcome};

pub fn check(ops: &[&Op]) -> Report {
    let mut report = Report::default();
    let (mut acked, mut unknown) = (0i64, 0i64);
    let mut final_value = None;
    for op in ops {
        match (&op.call, op.outcome) {
            (Call::CounterIncr { .. }, Outcome::Ok) => acked += 1,
            (Call::CounterIncr { .. }, Outcome::Info) => unknown += 1,
            (Call::CounterFinal { value }, Outcome::Ok) => final_value = Some(*value),
            _ => {}
        }
    }
    let Some(value) = final_value else {
        report
            .notes
            .push("no final read succeeded: nothing to check".into());
        return report;
    };
    if value < acked || value > acked + unknown {
        report.anomalies.push(format!(
            "final value {value} outside [{acked}, {}] (acknowledged {acked}, unknown {unknown})",
            acked + unknown
        ));
    }
    report.notes.push(format!(
        "final {value}, acknowledged {acked}, unknown {unknown}"
    ));
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    fn incr(outcome: Outcome) -> Op {
        Op::ok(1, 0, 1, Call::CounterIncr { from: 0 }).with_outcome(outcome)
    }
    fn fin(value: i64) -> Op {
        Op::ok(2, 10, 11, Call::CounterFinal { value })
    }
    fn run(ops: &[Op]) -> Report {
        check(&ops.iter().collect::<Vec<_>>())
    }

    #[test]
    fn value_within_bounds_is_valid() {
        let h = [
            incr(Outcome::Ok),
            incr(Outcome::Ok),
            incr(Outcome::Info),
            incr(Outcome::Fail),
        ];
        for value in [2, 3] {
            let mut h = h.to_vec();
            h.push(fin(value));
            assert!(run(&h).is_valid(), "value {value}");
        }
    }

    #[test]
    fn value_out_of_bounds_is_reported() {
        for value in [1, 4] {
            let rep = run(&[
                incr(Outcome::Ok),
                incr(Outcome::Ok),
                incr(Outcome::Info),
                incr(Outcome::Fail),
                fin(value),
            ]);
            assert_eq!(rep.anomalies.len(), 1, "value {value}: {rep:?}");
        }
    }
}
