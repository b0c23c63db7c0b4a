//! Lock with fencing tokens. A holder (owner of the lowest ephemeral sequential child of the
//! lock znode) writes to a guarded znode with its lock node's czxid as token; the guard keeps
//! the highest token written and refuses smaller ones (read the guard, compare, write at the
//! version read). Fencing is violated when an acknowledged guarded write carries a smaller token
//! than one acknowledged before it — in the guard's version order or in real time.

use std::collections::HashMap;

use super::Report;
use crate::history::{Call, Op, Outcome};

pub fn check(ops: &[&Op]) -> Report {
    let mut report = Report::default();
    // (resulting version, token, invoke, complete, process)
    let mut writes: Vec<(i32, i64, u64, u64, u32)> = ops
        .iter()
        .filter_map(|op| match (&op.call, op.outcome) {
            (
                Call::GuardWrite {
                    token,
                    version: Some(v),
                },
                Outcome::Ok,
            ) => Some((*v, *token, op.invoke_ns, op.complete_ns, op.process)),
            _ => None,
        })
        .collect();
    let refused = ops
        .iter()
        .filter(|o| matches!(o.call, Call::GuardWrite { .. }) && o.outcome == Outcome::Fail)
        .count();

    let mut per_version: HashMap<i32, usize> = HashMap::new();
    for w in &writes {
        *per_version.entry(w.0).or_default() += 1;
    }
    let mut twice: Vec<i32> = per_version
        .into_iter()
        .filter(|&(_, n)| n > 1)
        .map(|(v, _)| v)
        .collect();
    twice.sort_unstable();
    if !twice.is_empty() {
        report.anomalies.push(format!(
            "{} guard versions produced by more than one acknowledged write: {:?}",
            twice.len(),
            &twice[..twice.len().min(20)]
        ));
    }

    writes.sort_unstable_by_key(|w| w.0);
    let mut violations = Vec::new();
    for pair in writes.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        if b.1 < a.1 {
            violations.push(format!(
                "guard version {} written with token {} after version {} with token {}",
                b.0, b.1, a.0, a.1
            ));
        }
    }
    // Real time: sweep in invoke order, knowing the largest token acknowledged so far.
    let mut by_complete = writes.clone();
    by_complete.sort_unstable_by_key(|w| w.3);
    let mut by_invoke = writes.clone();
    by_invoke.sort_unstable_by_key(|w| w.2);
    let mut done = 0usize;
    let mut max_token: Option<(i64, u32)> = None;
    for w in &by_invoke {
        while done < by_complete.len() && by_complete[done].3 < w.2 {
            let d = by_complete[done];
            if !matches!(max_token, Some((t, _)) if d.1 <= t) {
                max_token = Some((d.1, d.4));
            }
            done += 1;
        }
        if let Some((t, p)) = max_token {
            if w.1 < t {
                violations.push(format!(
                    "process {} wrote with token {} after process {p}'s write with token {t} \
                     was acknowledged",
                    w.4, w.1
                ));
            }
        }
    }
    if !violations.is_empty() {
        report.anomalies.push(format!(
            "fencing violated {} times, e.g. {}",
            violations.len(),
            violations[..violations.len().min(5)].join("; ")
        ));
    }
    report.notes.push(format!(
        "{} acknowledged guarded writes, {refused} refused",
        writes.len()
    ));
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gw(p: u32, t0: u64, t1: u64, token: i64, version: i32) -> Op {
        Op::ok(
            p,
            t0,
            t1,
            Call::GuardWrite {
                token,
                version: Some(version),
            },
        )
    }
    fn run(ops: &[Op]) -> Report {
        check(&ops.iter().collect::<Vec<_>>())
    }

    #[test]
    fn increasing_tokens_are_valid() {
        let h = [
            gw(1, 0, 10, 100, 1),
            gw(1, 20, 30, 100, 2),
            gw(2, 40, 50, 200, 3),
            Op::ok(
                1,
                60,
                70,
                Call::GuardWrite {
                    token: 100,
                    version: None,
                },
            )
            .with_outcome(Outcome::Fail),
        ];
        let rep = run(&h);
        assert!(rep.is_valid(), "{rep:?}");
        assert!(rep.notes[0].contains("1 refused"));
    }

    #[test]
    fn stale_holder_write_is_reported() {
        // The old holder (token 100) wrote after the new holder (token 200) did.
        let rep = run(&[gw(2, 0, 10, 200, 1), gw(1, 20, 30, 100, 2)]);
        assert_eq!(rep.anomalies.len(), 1, "{rep:?}");
        assert!(
            rep.anomalies[0].contains("fencing violated 2 times"),
            "{rep:?}"
        );
    }

    #[test]
    fn two_writes_at_one_version_are_reported() {
        let rep = run(&[gw(1, 0, 10, 100, 1), gw(2, 5, 15, 200, 1)]);
        assert!(rep.anomalies[0].contains("more than one"), "{rep:?}");
    }
}
