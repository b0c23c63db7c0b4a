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

use std::collections::{BTreeMap, HashSet};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::Report;
use crate::history::{Call, Op, Outcome};

/// Upper bound on explored configurations per register, so a pathological history cannot
/// make the check run for hours; exceeding it is reported as inconclusive, not as valid.
pub const DEFAULT_SEARCH_BUDGET: usize = 5_000_000;

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
    /// Which alternative was taken (0: with effect, 1: without, for optional ops).
    alt: u8,
}

fn search(ops: &[LinOp], init: State, budget: usize) -> Verdict {
    let required = ops.iter().filter(|o| !o.optional).count();
    if required == 0 {
        return Verdict::Linearizable;
    }
    let mut ev = Events::build(ops);
    // The set of linearized ops is memoized as a 128-bit Zobrist hash (XOR of one random key
    // per op) rather than as a bitset, so memory per configuration stays constant however
    // long the history; a false match needs a 2^-128 collision.
    let mut keys_rng = StdRng::seed_from_u64(0x11ea_5eed);
    let keys: Vec<u128> = (0..ops.len()).map(|_| keys_rng.gen()).collect();
    let mut linearized: u128 = 0;
    let mut done_required = 0usize;
    let mut seen: HashSet<(u128, State)> = HashSet::new();
    let mut stack: Vec<Frame> = Vec::new();
    let mut state = init;
    let mut cur = ev.next[0];
    let mut deepest = (0usize, 0usize);

    // Tries alternatives `from..` of the op at call node `call` in `state`; returns the first
    // that leads to an unexplored configuration.
    let try_op = |ev: &Events,
                  linearized: &mut u128,
                  seen: &mut HashSet<(u128, State)>,
                  state: State,
                  call: usize,
                  from: u8|
     -> Option<(u8, State)> {
        let op = &ops[ev.op[call]];
        let alts: u8 = if op.optional { 2 } else { 1 };
        for alt in from..alts {
            let next = if alt == 0 {
                step(state, op.kind)
            } else {
                Some(state)
            };
            let Some(next) = next else { continue };
            let with_op = *linearized ^ keys[ev.op[call]];
            if seen.insert((with_op, next)) {
                *linearized = with_op;
                return Some((alt, next));
            }
        }
        None
    };

    loop {
        if done_required == required {
            return Verdict::Linearizable;
        }
        if seen.len() > budget {
            return Verdict::Unknown;
        }
        if cur != NIL && ev.is_call[cur] {
            match try_op(&ev, &mut linearized, &mut seen, state, cur, 0) {
                Some((alt, next)) => {
                    stack.push(Frame {
                        call: cur,
                        prev_state: state,
                        alt,
                    });
                    state = next;
                    if !ops[ev.op[cur]].optional {
                        done_required += 1;
                    }
                    ev.lift(cur);
                    cur = ev.next[0];
                }
                None => cur = ev.next[cur],
            }
            continue;
        }
        // A return event (or the end): the op it belongs to was not linearized in time.
        if cur != NIL && stack.len() >= deepest.0 {
            deepest = (stack.len(), ev.op[cur]);
        }
        // Backtrack until some frame has an untried alternative or the search is exhausted.
        loop {
            let Some(frame) = stack.pop() else {
                return Verdict::NotLinearizable {
                    stuck_at: ops[deepest.1].source,
                };
            };
            let i = ev.op[frame.call];
            linearized ^= keys[i];
            if !ops[i].optional {
                done_required -= 1;
            }
            state = frame.prev_state;
            ev.unlift(frame.call);
            match try_op(
                &ev,
                &mut linearized,
                &mut seen,
                state,
                frame.call,
                frame.alt + 1,
            ) {
                Some((alt, next)) => {
                    stack.push(Frame {
                        call: frame.call,
                        prev_state: state,
                        alt,
                    });
                    state = next;
                    if !ops[i].optional {
                        done_required += 1;
                    }
                    ev.lift(frame.call);
                    cur = ev.next[0];
                    break;
                }
                None => {
                    // Try later calls at this level; if the next event is a return, the main
                    // loop backtracks further.
                    cur = ev.next[frame.call];
                    break;
                }
            }
        }
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
        },
    ))
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
    for (key, lin_ops) in per_key {
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
