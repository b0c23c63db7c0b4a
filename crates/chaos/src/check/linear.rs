//! Linearizability of registers: setData (any version), versioned compare-and-set, and reads
//! after sync, checked with a Wing–Gong search in the style of porcupine.
//!
//! The register's state is `(value, version)`; it starts as `(0, 0)` (the runner creates each
//! register znode with data `0`). A write sets the value and bumps the version; a CAS does the
//! same only if the version matches; a CAS the server refused with BadVersion observed a
//! different version; a read observed both.
//!
//! The search walks a doubly linked list of call and return events in time order. At a call it
//! tries to linearize that op next (apply it to the model state, unlink its events, restart
//! from the head); reaching a return event means some op should already have been linearized,
//! so it backtracks. Every (set of linearized ops, state) pair it has been in is memoized, so
//! no configuration is explored twice. The search is iterative: its depth is the number of
//! ops, which the workload (not the program's stack) controls.
//!
//! Ops with an unknown outcome never return (their return event is at +∞) and may be
//! linearized either with their effect or with none; the search succeeds once every
//! acknowledged op is linearized.

use std::collections::{BTreeMap, HashMap, HashSet};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::Report;
use crate::history::{Call, Op, Outcome};

/// Upper bound on explored configurations per register, so a pathological history cannot
/// make the check run for hours; exceeding it is reported as inconclusive, not as valid.
pub const DEFAULT_SEARCH_BUDGET: usize = 2_000_000;

type State = (u64, i32);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Write {
        value: u64,
    },
    Cas {
        expect: i32,
        value: u64,
    },
    /// A CAS the server refused with BadVersion: the version was not `expect`.
    CasRefused {
        expect: i32,
    },
    Read {
        value: u64,
        version: i32,
    },
}

#[derive(Debug, Clone, Copy)]
struct LinOp {
    /// Index into the checked ops, for reporting.
    source: usize,
    invoke_ns: u64,
    return_ns: u64,
    kind: Kind,
    /// Unknown outcome: may take effect or not, need not be linearized.
    optional: bool,
    /// For an interchangeable unknown op: the previous op of its group, which must be
    /// linearized before this one.
    after: Option<usize>,
}

fn step(state: State, kind: Kind) -> Option<State> {
    let (value, version) = state;
    match kind {
        Kind::Write { value: v } => Some((v, version + 1)),
        Kind::Cas { expect, value: v } => (version == expect).then_some((v, version + 1)),
        Kind::CasRefused { expect } => (version != expect).then_some(state),
        Kind::Read {
            value: v,
            version: ver,
        } => (value == v && version == ver).then_some(state),
    }
}

/// Result of searching one register's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Linearizable,
    /// No linearization exists; `stuck_at` is the op (index into the checked ops) whose return
    /// the deepest partial linearization could not get past.
    NotLinearizable {
        stuck_at: usize,
    },
    /// The search budget ran out.
    Unknown,
}

const NIL: usize = usize::MAX;

/// Event list with O(1) unlink and relink (the "dancing links" trick).
struct Events {
    next: Vec<usize>,
    prev: Vec<usize>,
    /// For node i ≥ 1: the op index, and whether it is the call event.
    op: Vec<usize>,
    is_call: Vec<bool>,
    /// For a call node: its return node.
    ret_node: Vec<usize>,
}

impl Events {
    fn build(ops: &[LinOp]) -> Events {
        // (time, 0 = call / 1 = return, op). Calls sort before returns at the same instant, so
        // ops touching at one instant count as concurrent (the permissive reading).
        let mut evs: Vec<(u64, u8, usize)> = Vec::with_capacity(2 * ops.len());
        for (i, op) in ops.iter().enumerate() {
            evs.push((op.invoke_ns, 0, i));
            evs.push((op.return_ns, 1, i));
        }
        evs.sort_unstable();
        let n = evs.len() + 1;
        let mut e = Events {
            next: vec![NIL; n],
            prev: vec![NIL; n],
            op: vec![0; n],
            is_call: vec![false; n],
            ret_node: vec![NIL; n],
        };
        let mut call_node = vec![NIL; ops.len()];
        for (k, &(_, kind, i)) in evs.iter().enumerate() {
            let node = k + 1;
            e.op[node] = i;
            e.is_call[node] = kind == 0;
            if kind == 0 {
                call_node[i] = node;
            } else {
                e.ret_node[call_node[i]] = node;
            }
            e.prev[node] = node - 1;
            e.next[node - 1] = node;
        }
        e
    }

    fn unlink(&mut self, node: usize) {
        let (p, n) = (self.prev[node], self.next[node]);
        self.next[p] = n;
        if n != NIL {
            self.prev[n] = p;
        }
    }

    fn relink(&mut self, node: usize) {
        let (p, n) = (self.prev[node], self.next[node]);
        self.next[p] = node;
        if n != NIL {
            self.prev[n] = node;
        }
    }

    fn lift(&mut self, call: usize) {
        self.unlink(call);
        self.unlink(self.ret_node[call]);
    }

    fn unlift(&mut self, call: usize) {
        self.relink(self.ret_node[call]);
        self.relink(call);
    }
}

struct Frame {
    call: usize,
    prev_state: State,
}

fn search(ops: &[LinOp], init: State, budget: usize) -> Verdict {
    let required = ops.iter().filter(|o| !o.optional).count();
    if required == 0 {
        return Verdict::Linearizable;
    }
    let mut ev = Events::build(ops);
    // The set of linearized ops is memoized as a 128-bit Zobrist hash of the bitmask (XOR of
    // one random key per op), so memory per configuration stays constant however long the
    // history; a false match needs a 2^-128 collision.
    let mut keys_rng = StdRng::seed_from_u64(0x11ea_5eed);
    let keys: Vec<u128> = (0..ops.len()).map(|_| keys_rng.gen()).collect();
    let mut linearized: u128 = 0;
    let mut is_linearized = vec![false; ops.len()];
    let mut done_required = 0usize;
    let mut seen: HashSet<(u128, State)> = HashSet::new();
    let mut stack: Vec<Frame> = Vec::new();
    let mut state = init;
    let mut cur = ev.next[0];
    let mut deepest = (0usize, 0usize);

    loop {
        if done_required == required {
            return Verdict::Linearizable;
        }
        if seen.len() > budget {
            return Verdict::Unknown;
        }
        if cur != NIL && ev.is_call[cur] {
            let i = ev.op[cur];
            let op = &ops[i];
            // An interchangeable unknown op waits for its predecessor (see `model_ops`).
            let allowed = !matches!(op.after, Some(p) if !is_linearized[p]);
            let next = if allowed { step(state, op.kind) } else { None };
            match next {
                Some(next) if seen.insert((linearized ^ keys[i], next)) => {
                    stack.push(Frame {
                        call: cur,
                        prev_state: state,
                    });
                    linearized ^= keys[i];
                    is_linearized[i] = true;
                    state = next;
                    if !op.optional {
                        done_required += 1;
                    }
                    ev.lift(cur);
                    cur = ev.next[0];
                }
                _ => cur = ev.next[cur],
            }
            continue;
        }
        // A return event: the op it belongs to was not linearized in time. Backtrack one
        // level and go on with the calls after the undone one; an unknown op that is never
        // linearized is the case "it did not take effect".
        if cur != NIL && stack.len() >= deepest.0 {
            deepest = (stack.len(), ev.op[cur]);
        }
        let Some(frame) = stack.pop() else {
            return Verdict::NotLinearizable {
                stuck_at: ops[deepest.1].source,
            };
        };
        let i = ev.op[frame.call];
        linearized ^= keys[i];
        is_linearized[i] = false;
        if !ops[i].optional {
            done_required -= 1;
        }
        state = frame.prev_state;
        ev.unlift(frame.call);
        cur = ev.next[frame.call];
    }
}

/// Turns one checked op into the model's op, or `None` if it neither changed nor observed
/// anything (a failed read, a write refused outright).
fn model_op(index: usize, op: &Op) -> Option<(u32, LinOp)> {
    let info = op.outcome == Outcome::Info;
    let return_ns = if info { u64::MAX } else { op.complete_ns };
    let (key, kind) = match (&op.call, op.outcome) {
        (Call::RegWrite { key, value }, Outcome::Ok | Outcome::Info) => {
            (*key, Kind::Write { value: *value })
        }
        (
            Call::RegCas {
                key,
                expect_version,
                value,
            },
            Outcome::Ok | Outcome::Info,
        ) => (
            *key,
            Kind::Cas {
                expect: *expect_version,
                value: *value,
            },
        ),
        (
            Call::RegCas {
                key,
                expect_version,
                ..
            },
            Outcome::Fail,
        ) if op.error.as_deref() == Some(BAD_VERSION) => (
            *key,
            Kind::CasRefused {
                expect: *expect_version,
            },
        ),
        (
            Call::RegRead {
                key,
                value: Some(value),
                version: Some(version),
            },
            Outcome::Ok,
        ) => (
            *key,
            Kind::Read {
                value: *value,
                version: *version,
            },
        ),
        _ => return None,
    };
    Some((
        key,
        LinOp {
            source: index,
            invoke_ns: op.invoke_ns,
            return_ns,
            kind,
            optional: info,
            after: None,
        },
    ))
}

/// Stands for every value no read observed.
const UNSEEN: u64 = u64::MAX;

/// Unknown writes whose value no read observed only matter through the version they bump,
/// so those of one group (plain writes; CASes from one expected version) are interchangeable:
/// any linearization using a later-invoked one can use an earlier-invoked one instead (both
/// stay pending until +∞). Giving them one value and linearizing each group in invoke order
/// turns an exponential number of equivalent subsets into one per count — without it, a few
/// dozen timed-out writes make the search explode.
fn group_unknown_ops(ops: &mut [LinOp]) {
    let observed: HashSet<u64> = ops
        .iter()
        .filter_map(|o| match o.kind {
            Kind::Read { value, .. } => Some(value),
            _ => None,
        })
        .collect();
    let mut order: Vec<usize> = (0..ops.len()).filter(|&i| ops[i].optional).collect();
    order.sort_by_key(|&i| ops[i].invoke_ns);
    // Group -> last op of the group so far. Group: None for plain writes, Some(expected
    // version) for CASes.
    let mut last: HashMap<Option<i32>, usize> = HashMap::new();
    for i in order {
        let group = match &mut ops[i].kind {
            Kind::Write { value } if !observed.contains(value) => {
                *value = UNSEEN;
                None
            }
            Kind::Cas { expect, value } if !observed.contains(value) => {
                *value = UNSEEN;
                Some(*expect)
            }
            _ => continue,
        };
        ops[i].after = last.insert(group, i);
    }
}

/// The error text the workload records for a CAS refused with BadVersion.
pub const BAD_VERSION: &str = "BadVersion";

/// Checks every register in `ops` with [`DEFAULT_SEARCH_BUDGET`].
pub fn check(ops: &[&Op]) -> Report {
    check_with_budget(ops, DEFAULT_SEARCH_BUDGET)
}

pub fn check_with_budget(ops: &[&Op], budget: usize) -> Report {
    let mut per_key: BTreeMap<u32, Vec<LinOp>> = BTreeMap::new();
    for (i, op) in ops.iter().enumerate() {
        if let Some((key, lin)) = model_op(i, op) {
            per_key.entry(key).or_default().push(lin);
        }
    }
    let mut report = Report::default();
    for (key, mut lin_ops) in per_key {
        group_unknown_ops(&mut lin_ops);
        match search(&lin_ops, (0, 0), budget) {
            Verdict::Linearizable => report.notes.push(format!(
                "register {key}: {} ops linearizable",
                lin_ops.len()
            )),
            Verdict::NotLinearizable { stuck_at } => {
                let op = ops[stuck_at];
                report.anomalies.push(format!(
                    "register {key}: not linearizable ({} ops); the deepest partial \
                     linearization cannot get past process {} {:?} [{} ns .. {} ns, {:?}]",
                    lin_ops.len(),
                    op.process,
                    op.call,
                    op.invoke_ns,
                    op.complete_ns,
                    op.outcome
                ))
            }
            Verdict::Unknown => report.notes.push(format!(
                "register {key}: INCONCLUSIVE, search budget of {budget} configurations spent"
            )),
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(p: u32, t0: u64, t1: u64, value: u64) -> Op {
        Op::ok(p, t0, t1, Call::RegWrite { key: 0, value })
    }
    fn cas(p: u32, t0: u64, t1: u64, expect_version: i32, value: u64) -> Op {
        Op::ok(
            p,
            t0,
            t1,
            Call::RegCas {
                key: 0,
                expect_version,
                value,
            },
        )
    }
    fn r(p: u32, t0: u64, t1: u64, value: u64, version: i32) -> Op {
        Op::ok(
            p,
            t0,
            t1,
            Call::RegRead {
                key: 0,
                value: Some(value),
                version: Some(version),
            },
        )
    }
    fn run(ops: &[Op]) -> Report {
        let refs: Vec<&Op> = ops.iter().collect();
        check(&refs)
    }

    #[test]
    fn sequential_history_is_linearizable() {
        let h = [
            w(1, 0, 10, 5),
            r(2, 11, 20, 5, 1),
            cas(1, 21, 30, 1, 6),
            r(2, 31, 40, 6, 2),
        ];
        let rep = run(&h);
        assert!(rep.is_valid(), "{rep:?}");
    }

    #[test]
    fn concurrent_ops_may_linearize_in_either_order() {
        // The read overlaps both writes and sees the first one's value at version 1: only the
        // order "write 7, read, write 8" explains it.
        let h = [w(1, 0, 100, 7), w(2, 10, 90, 8), r(3, 5, 95, 7, 1)];
        assert!(run(&h).is_valid());
        // Afterwards 8 at version 2 is what a read must see.
        let mut h2 = h.to_vec();
        h2.push(r(3, 200, 210, 8, 2));
        assert!(run(&h2).is_valid());
    }

    #[test]
    fn stale_read_is_reported() {
        // The write of 5 was acknowledged before the read began, yet the read saw the initial
        // value.
        let h = [w(1, 0, 10, 5), r(2, 20, 30, 0, 0)];
        let rep = run(&h);
        assert_eq!(rep.anomalies.len(), 1, "{rep:?}");
        assert!(rep.anomalies[0].contains("not linearizable"));
    }

    #[test]
    fn lost_write_is_reported() {
        // Two acknowledged writes, then a read that sees the first after the second finished.
        let h = [w(1, 0, 10, 5), w(1, 20, 30, 6), r(2, 40, 50, 5, 1)];
        assert!(!run(&h).is_valid());
    }

    #[test]
    fn cas_at_a_taken_version_is_reported() {
        // Two acknowledged CASes from version 0 that do not overlap: the second must fail.
        let h = [cas(1, 0, 10, 0, 5), cas(2, 20, 30, 0, 6)];
        assert!(!run(&h).is_valid());
    }

    #[test]
    fn refused_cas_is_an_observation() {
        let refused = |t0, t1, expect| {
            let mut op = cas(2, t0, t1, expect, 9).with_outcome(Outcome::Fail);
            op.error = Some(BAD_VERSION.into());
            op
        };
        // Refused at version 0 while the register is still at version 0: impossible.
        assert!(!run(&[refused(0, 10, 0)]).is_valid());
        // Refused at version 0 after a write moved it to 1: fine.
        assert!(run(&[w(1, 0, 10, 3), refused(20, 30, 0)]).is_valid());
    }

    #[test]
    fn unknown_writes_may_or_may_not_take_effect() {
        let unknown = w(1, 0, 10, 5).with_outcome(Outcome::Info);
        // Took effect (seen later) ...
        assert!(run(&[unknown.clone(), r(2, 20, 30, 5, 1)]).is_valid());
        // ... or not (never seen) ...
        assert!(run(&[unknown.clone(), r(2, 20, 30, 0, 0)]).is_valid());
        // ... or late: not seen by the first read, seen by the second.
        assert!(run(&[unknown.clone(), r(2, 20, 30, 0, 0), r(2, 40, 50, 5, 1)]).is_valid());
        // But once seen it cannot be unseen.
        assert!(!run(&[unknown, r(2, 20, 30, 5, 1), r(2, 40, 50, 0, 0)]).is_valid());
    }

    #[test]
    fn many_unknown_writes_are_checked_quickly() {
        // 60 timed-out writes nobody read; a read later sees a version that 29 of them (taking
        // effect before the acknowledged write of 7) explain. Without grouping the
        // interchangeable unknown writes the search would try C(60, 29) subsets.
        let mut h = vec![w(1, 0, 10, 1)];
        for i in 0..60u64 {
            h.push(w(2 + i as u32, 20 + i, 30 + i, 100 + i).with_outcome(Outcome::Info));
        }
        h.push(w(1, 900, 950, 7));
        h.push(r(1, 1000, 1010, 7, 31));
        let refs: Vec<&Op> = h.iter().collect();
        let rep = check_with_budget(&refs, 100_000);
        assert!(rep.is_valid(), "{rep:?}");
        assert!(rep.notes[0].contains("linearizable"), "{rep:?}");
        // A version no number of them explains is reported, also within the budget.
        let last = h.len() - 1;
        h[last] = r(1, 1000, 1010, 7, 63);
        let refs: Vec<&Op> = h.iter().collect();
        let rep = check_with_budget(&refs, 100_000);
        assert_eq!(rep.anomalies.len(), 1, "{rep:?}");
    }

    #[test]
    fn registers_are_checked_independently() {
        let mut other = r(2, 20, 30, 0, 0);
        if let Call::RegRead { key, .. } = &mut other.call {
            *key = 1;
        }
        // Key 1 was never written, so reading its initial value after key 0's write is fine.
        assert!(run(&[w(1, 0, 10, 5), other]).is_valid());
    }

    #[test]
    fn long_sequential_history_is_checked_quickly() {
        // Sanity bound on the memoized search: thousands of ops, two processes overlapping.
        let mut h = Vec::new();
        let mut version = 0;
        for i in 0..3000u64 {
            let t = i * 10;
            h.push(w(1, t, t + 8, i + 1));
            version += 1;
            h.push(r(2, t + 9, t + 12, i + 1, version));
        }
        let rep = run(&h);
        assert!(rep.is_valid(), "{rep:?}");
        assert!(rep.notes[0].contains("linearizable"));
    }
}
