//! Sessions and ephemerals: once the server has refused to resume a session (it is closed or
//! expired), no read that starts afterwards may see one of its ephemerals.

use std::collections::HashMap;

use super::Report;
use crate::history::{Call, Op, Outcome};

pub fn check(ops: &[&Op]) -> Report {
    let mut report = Report::default();
    let mut ended_at: HashMap<i64, u64> = HashMap::new();
    for op in ops {
        if let (Call::SessionEnded { session }, Outcome::Ok) = (&op.call, op.outcome) {
            let t = ended_at.entry(*session).or_insert(op.complete_ns);
            *t = (*t).min(op.complete_ns);
        }
    }
    let mut reads = 0usize;
    let mut violations = Vec::new();
    for op in ops {
        if let (
            Call::EphemeralRead {
                session,
                path,
                present: Some(present),
            },
            Outcome::Ok,
        ) = (&op.call, op.outcome)
        {
            reads += 1;
            if let Some(&ended) = ended_at.get(session) {
                if *present && op.invoke_ns > ended {
                    violations.push(format!(
                        "{path} of session {session:#x} visible to a read invoked at {} ns, \
                         after the session's end was observed at {ended} ns",
                        op.invoke_ns
                    ));
                }
            }
        }
    }
    if !violations.is_empty() {
        report.anomalies.push(format!(
            "{} ephemerals visible after their session ended, e.g. {}",
            violations.len(),
            violations[..violations.len().min(5)].join("; ")
        ));
    }
    report.notes.push(format!(
        "{} sessions observed ended, {reads} ephemeral reads",
        ended_at.len()
    ));
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 0x42;

    fn ended(t0: u64, t1: u64) -> Op {
        Op::ok(1, t0, t1, Call::SessionEnded { session: S })
    }
    fn read(t0: u64, t1: u64, present: bool) -> Op {
        Op::ok(
            2,
            t0,
            t1,
            Call::EphemeralRead {
                session: S,
                path: "/e".into(),
                present: Some(present),
            },
        )
    }
    fn run(ops: &[Op]) -> Report {
        check(&ops.iter().collect::<Vec<_>>())
    }

    #[test]
    fn ephemeral_gone_after_end_is_valid() {
        // Present before (and concurrently with) the end, absent after it.
        let rep = run(&[
            read(0, 10, true),
            ended(5, 20),
            read(15, 25, true),
            read(30, 40, false),
        ]);
        assert!(rep.is_valid(), "{rep:?}");
    }

    #[test]
    fn ephemeral_visible_after_end_is_reported() {
        let rep = run(&[ended(0, 10), read(20, 30, true)]);
        assert_eq!(rep.anomalies.len(), 1, "{rep:?}");
    }
}
