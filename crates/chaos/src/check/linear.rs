//! Linearizability of registers: setData (any version), versioned compare-and-set, and reads
//! after sync.
//!
//! The register's state is `(value, version)`; it starts as `(0, 0)` (the runner creates each
//! register znode with data `0`). A write sets the value and bumps the version; a CAS does the
//! same only if the version matches; a CAS the server refused with BadVersion observed a
//! different version; a read observed both. Ops with an unknown outcome may take effect at any
//! time after their call, or never.
//!
//! # The sweep
//!
//! The check walks the call and return events in time order (just-in-time linearization, as
//! in Lowe's "Testing for linearizability"), keeping the set of *configurations* the register
//! can be in at that instant: the state, which of the ops still running have already been
//! linearized, and how many unknown writes have been used up. A call makes its op pending. At
//! the return of op `o`, every configuration that has not linearized `o` yet is extended by
//! the sequences of pending ops that end with `o`; the configurations that cannot reach `o`
//! are dropped. If none is left, no linearization of the history up to that return exists and
//! `o` is reported. Ops pending at one instant all overlap, so any order of them is allowed.
//! Memory is the set of configurations at one instant, not the history's length.
//!
//! **Why "linearizable" is sound.** Every configuration kept was reached by applying ops to the
//! model one at a time, each while it was pending; one surviving the last event is a
//! linearization of the whole history (of the reduced history below, whose linearizations are
//! linearizations of the original). The reductions only change which configurations are tried.
//! Each is exact, or skips a choice only when a choice that is tried can do everything it can,
//! so an anomaly is reported only when no linearization exists either; the tests compare the
//! verdicts with a brute-force search on thousands of small random histories.
//!
//! # Reductions
//!
//! - **Values are unique per write** (the workload writes `process << 32 | n`, never the initial
//!   `0`). A value no read observed can be told from no other such value by any later op, so
//!   all of them become one value, "unseen". If an observed value was written by two ops, or
//!   the initial value was written again, the register is reported inconclusive instead.
//! - **A read of `(v, k)` pins the write of `v`**: the register's version grows by exactly one
//!   per effective write, so the write of `v` must be the `k`-th. A plain write of an observed
//!   value becomes a CAS from version `k - 1`. An unknown write of an observed value took
//!   effect, before the first read of it returned: it becomes an ordinary op that returns then.
//! - **Unknown writes nobody read** matter only by the version they bump. Those that are plain
//!   writes are interchangeable: any linearization using some of them can use the earliest
//!   called ones instead (the `i`-th one used is linearized after at least `i` of them were
//!   called), so a configuration only counts how many it used, and of two configurations
//!   differing only in that count the smaller dominates and the larger is dropped. An unknown
//!   CAS from version `e` can only take effect at version `e`, after which the version has moved
//!   on for good, so it needs no bookkeeping at all: at version `e`, if one was called, the
//!   register may step to `e + 1` (and doing so dominates using a plain unknown write).
//! - **Versions have a ceiling.** A read or acknowledged CAS called after the current instant is
//!   linearized after everything linearized so far, so the version now is at most its version;
//!   configurations above the smallest such bound are dropped. Above the largest version any op
//!   names, versions are indistinguishable and are all counted as that version plus one.
//! - **Dominated orders are skipped** while extending configurations (see [`close`]): reads and
//!   refused CASes are linearized as soon as they hold, and pending plain writes earliest
//!   return first.
//!
//! Read pins make the set of configurations collapse to one or a few at almost every read, so
//! the sweep is linear in the history's length in practice; the unknown writes nobody read cost
//! a count, not a subset. The search stays bounded anyway: a budget of configurations visited
//! per register reports "inconclusive" when spent, never "linearizable". What it cannot absorb
//! is many clients on one register: the configurations grow with the ops running at once
//! (40 clients: about 1 700 configurations visited per op).

use std::collections::{BTreeMap, HashMap, HashSet};

use super::Report;
use crate::history::{Call, Op, Outcome};

/// Upper bound on configurations visited per register, so a pathological history cannot make
/// the check run for hours; exceeding it is reported as inconclusive, not as valid. Run L's
/// registers (66 000 ops, about 100 unknown each) visit about 105 000 each; a visit costs
/// under a microsecond, so the whole budget is spent in well under a minute.
pub const DEFAULT_SEARCH_BUDGET: usize = 50_000_000;

/// Most ops that may be pending (called, not yet returned) at one instant on one register;
/// the set of those already linearized is a bit mask. Unknown ops nobody read do not count.
const MAX_PENDING: usize = 128;

/// The error text the workload records for a CAS refused with BadVersion.
pub const BAD_VERSION: &str = "BadVersion";

/// Value id of every value no read observed (see the module header).
const UNSEEN: u32 = 0;

/// `(value id, version)`. Versions are widened so that the ceiling arithmetic cannot overflow.
type State = (u32, i64);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A plain write of a value nobody read (a read value pins its write: a [`Kind::Cas`]).
    Write,
    Cas {
        expect: i64,
        value: u32,
    },
    /// A CAS the server refused with BadVersion: the version was not `expect`.
    CasRefused {
        expect: i64,
    },
    Read {
        value: u32,
        version: i64,
    },
}

fn step(state: State, kind: Kind) -> Option<State> {
    let (value, version) = state;
    match kind {
        Kind::Write => Some((UNSEEN, version + 1)),
        Kind::Cas { expect, value: v } => (version == expect).then_some((v, version + 1)),
        Kind::CasRefused { expect } => (version != expect).then_some(state),
        Kind::Read {
            value: v,
            version: ver,
        } => (value == v && version == ver).then_some(state),
    }
}

/// Result of checking one register's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// A linearization exists; finding it visited `visited` configurations.
    Linearizable { visited: usize },
    /// No linearization exists; `stuck_at` (index into the checked ops) is the op the sweep
    /// could not linearize: the one at whose return it got stuck, or a read or CAS called later
    /// whose version is below every version the register can be at by then.
    NotLinearizable { stuck_at: usize },
    /// The check could not decide; the text says why.
    Unknown(String),
}

/// One op of one register as read from the history, values still raw.
#[derive(Debug, Clone, Copy)]
struct RawOp {
    /// Index into the checked ops, for reporting.
    source: usize,
    invoke_ns: u64,
    complete_ns: u64,
    unknown: bool,
    kind: RawKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RawKind {
    Write { value: u64 },
    Cas { expect: i32, value: u64 },
    CasRefused { expect: i32 },
    Read { value: u64, version: i32 },
}

/// Turns one checked op into a register op, or `None` if it neither changed nor observed
/// anything (a failed read, a write refused outright).
fn raw_op(source: usize, op: &Op) -> Option<(u32, RawOp)> {
    let (key, kind) = match (&op.call, op.outcome) {
        (Call::RegWrite { key, value }, Outcome::Ok | Outcome::Info) => {
            (*key, RawKind::Write { value: *value })
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
            RawKind::Cas {
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
            RawKind::CasRefused {
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
            RawKind::Read {
                value: *value,
                version: *version,
            },
        ),
        _ => return None,
    };
    Some((
        key,
        RawOp {
            source,
            invoke_ns: op.invoke_ns,
            complete_ns: op.complete_ns,
            unknown: op.outcome == Outcome::Info,
            kind,
        },
    ))
}

/// An op the sweep must linearize, between its call and its return.
#[derive(Debug, Clone, Copy)]
struct LinOp {
    source: usize,
    invoke_ns: u64,
    return_ns: u64,
    kind: Kind,
}

/// A register's ops after the reductions of the module header.
#[derive(Debug, Default)]
struct Prepared {
    required: Vec<LinOp>,
    /// Call times of the unknown plain writes nobody read.
    unseen_writes_ns: Vec<u64>,
    /// Call time and expected version of the unknown CASes nobody read.
    unseen_cases: Vec<(u64, i64)>,
    /// The state the register znode was created with.
    initial: State,
    /// One above the largest version any op names: every version at or above it behaves the
    /// same.
    version_top: i64,
}

/// The initial data of every register znode.
const INITIAL_VALUE: u64 = 0;

fn prepare(ops: &[RawOp]) -> Result<Prepared, String> {
    // Observed values get ids 1.., in order of first observation.
    let mut ids: HashMap<u64, u32> = HashMap::new();
    // For each observed value: the version of its first read and the earliest return of one.
    let mut first_seen: HashMap<u64, (i64, u64)> = HashMap::new();
    let mut version_top: i64 = 0;
    for op in ops {
        match op.kind {
            RawKind::Read { value, version } => {
                let next_id = ids.len() as u32 + 1;
                ids.entry(value).or_insert(next_id);
                let seen = first_seen
                    .entry(value)
                    .or_insert((i64::from(version), op.complete_ns));
                seen.1 = seen.1.min(op.complete_ns);
                version_top = version_top.max(i64::from(version));
            }
            RawKind::Cas { expect, .. } | RawKind::CasRefused { expect } => {
                version_top = version_top.max(i64::from(expect));
            }
            RawKind::Write { .. } => {}
        }
    }
    let id = |v: u64| ids.get(&v).copied().unwrap_or(UNSEEN);

    let mut writers: HashSet<u64> = HashSet::new();
    let mut p = Prepared {
        initial: (id(INITIAL_VALUE), 0),
        version_top: version_top + 1,
        ..Prepared::default()
    };
    for op in ops {
        let observed = match op.kind {
            RawKind::Write { value } | RawKind::Cas { value, .. } => {
                let seen = first_seen.get(&value).copied();
                if seen.is_some() && (value == INITIAL_VALUE || !writers.insert(value)) {
                    return Err(format!(
                        "value {value} is read, and written by more than one op or is the \
                         initial value; the check relies on unique values"
                    ));
                }
                seen
            }
            _ => None,
        };
        let kind = match op.kind {
            RawKind::Write { value } => match observed {
                // The write of a value read at version k is the k-th write.
                Some((k, _)) => Kind::Cas {
                    expect: k - 1,
                    value: id(value),
                },
                None => Kind::Write,
            },
            RawKind::Cas { expect, value } => Kind::Cas {
                expect: i64::from(expect),
                value: id(value),
            },
            RawKind::CasRefused { expect } => Kind::CasRefused {
                expect: i64::from(expect),
            },
            RawKind::Read { value, version } => Kind::Read {
                value: id(value),
                version: i64::from(version),
            },
        };
        let return_ns = match (op.unknown, observed) {
            // (A return recorded before the call would be a clock fault; it counts as touching.)
            (false, _) => op.complete_ns.max(op.invoke_ns),
            // It took effect before the first read of its value returned. A read that returned
            // before the write was even called leaves an empty interval; the sweep then finds
            // that read impossible.
            (true, Some((_, read_ns))) => read_ns.max(op.invoke_ns),
            (true, None) => {
                match kind {
                    Kind::Cas { expect, .. } => p.unseen_cases.push((op.invoke_ns, expect)),
                    _ => p.unseen_writes_ns.push(op.invoke_ns),
                }
                continue;
            }
        };
        p.required.push(LinOp {
            source: op.source,
            invoke_ns: op.invoke_ns,
            return_ns,
            kind,
        });
    }
    Ok(p)
}

#[derive(Debug, Clone, Copy)]
struct Config {
    state: State,
    /// Bit `slot` set: the pending op in that slot is linearized.
    linearized: u128,
    /// Unknown plain writes nobody read used so far (the earliest called ones).
    used_unseen: u32,
}

/// An event of the sweep. Events sort by (time, 0 for a call / 1 for a return): calls come
/// before returns at the same instant, so ops touching at one instant count as concurrent (the
/// permissive reading).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    CallRequired(usize),
    CallUnseenWrite,
    CallUnseenCas(i64),
    Return(usize),
}

/// What the closure at one return event may use besides the configurations.
struct Pool<'a> {
    ops: &'a [LinOp],
    /// Pending required ops and their slots.
    pending: &'a [(usize, u32)],
    unseen_writes_called: u32,
    unseen_cases_called: &'a HashSet<i64>,
    version_cap: i64,
    version_top: i64,
}

impl Pool<'_> {
    fn clamp(&self, (value, version): State) -> State {
        (value, version.min(self.version_top))
    }

    /// Linearizes every pending op other than `o` that only observes and holds in `c`'s state.
    /// Doing it now loses nothing: it is pending, holds and changes nothing, so a linearization
    /// that places it later stays valid with it moved here.
    fn saturate(&self, mut c: Config, o: usize) -> Config {
        for &(p, slot) in self.pending {
            let bit = 1u128 << slot;
            if p != o
                && c.linearized & bit == 0
                && observes(self.ops[p].kind)
                && step(c.state, self.ops[p].kind).is_some()
            {
                c.linearized |= bit;
            }
        }
        c
    }
}

/// Whether ops of this kind leave the state as it is.
fn observes(kind: Kind) -> bool {
    matches!(kind, Kind::Read { .. } | Kind::CasRefused { .. })
}

/// Linearizes `o` (in `slot`) in every configuration, after any sequence of other pending ops,
/// and clears its bit. Returns the surviving configurations and the number visited, or `None`
/// once more than `limit` were visited.
///
/// Besides the reductions of the module header, choices that a choice still tried dominates
/// are cut: an op that only observes is linearized as soon as it holds (see
/// [`Pool::saturate`]); when `o` itself only observes and holds, nothing more is linearized
/// before it, since whatever would be can as well come after it, in a later closure; and
/// pending plain writes (whose values nobody read) are linearized earliest return first: of
/// two, the one returning later can take the other's place later on, never the reverse.
fn close(
    configs: &[Config],
    o: usize,
    slot: u32,
    pool: &Pool<'_>,
    limit: usize,
) -> Option<(Vec<Config>, usize)> {
    let bit = 1u128 << slot;
    let o_kind = pool.ops[o].kind;
    let mut out: HashMap<(State, u128), u32> = HashMap::new();
    let keep = |out: &mut HashMap<(State, u128), u32>, c: Config| {
        let used = out.entry((c.state, c.linearized)).or_insert(u32::MAX);
        *used = (*used).min(c.used_unseen);
    };
    let mut seen: HashMap<(State, u128), u32> = HashMap::new();
    let mut stack: Vec<Config> = Vec::new();
    let push = |seen: &mut HashMap<(State, u128), u32>, stack: &mut Vec<Config>, c: Config| {
        if c.state.1 > pool.version_cap {
            return;
        }
        let c = pool.saturate(c, o);
        let best = seen.entry((c.state, c.linearized)).or_insert(u32::MAX);
        if c.used_unseen < *best {
            *best = c.used_unseen;
            stack.push(c);
        }
    };
    for &c in configs {
        if c.linearized & bit != 0 {
            keep(
                &mut out,
                Config {
                    linearized: c.linearized & !bit,
                    ..c
                },
            );
        } else {
            push(&mut seen, &mut stack, c);
        }
    }
    let mut visited = 0;
    while let Some(c) = stack.pop() {
        visited += 1;
        if visited > limit {
            return None;
        }
        if let Some(next) = step(c.state, o_kind) {
            let next = pool.clamp(next);
            if next.1 <= pool.version_cap {
                keep(&mut out, Config { state: next, ..c });
                if observes(o_kind) {
                    continue;
                }
            }
        }
        // The plain write to try: the pending one returning first.
        let mut earliest_write: Option<(u64, usize, u32)> = None;
        for &(p, p_slot) in pool.pending {
            let p_bit = 1u128 << p_slot;
            if p == o || c.linearized & p_bit != 0 {
                continue;
            }
            match pool.ops[p].kind {
                Kind::Write => {
                    let key = (pool.ops[p].return_ns, p, p_slot);
                    if earliest_write.is_none_or(|e| key < e) {
                        earliest_write = Some(key);
                    }
                }
                Kind::Cas { .. } => {
                    if let Some(next) = step(c.state, pool.ops[p].kind) {
                        let next = Config {
                            state: pool.clamp(next),
                            linearized: c.linearized | p_bit,
                            used_unseen: c.used_unseen,
                        };
                        push(&mut seen, &mut stack, next);
                    }
                }
                // Already linearized by `saturate` if they hold.
                Kind::Read { .. } | Kind::CasRefused { .. } => {}
            }
        }
        if let Some((_, p, p_slot)) = earliest_write {
            if let Some(next) = step(c.state, pool.ops[p].kind) {
                let next = Config {
                    state: pool.clamp(next),
                    linearized: c.linearized | 1u128 << p_slot,
                    used_unseen: c.used_unseen,
                };
                push(&mut seen, &mut stack, next);
            }
        }
        // An unknown write nobody read: a CAS at exactly this version if one was called (it
        // costs nothing later), else the earliest plain one not used yet.
        let bumped = pool.clamp((UNSEEN, c.state.1 + 1));
        if pool.unseen_cases_called.contains(&c.state.1) {
            push(&mut seen, &mut stack, Config { state: bumped, ..c });
        } else if c.used_unseen < pool.unseen_writes_called {
            let next = Config {
                state: bumped,
                linearized: c.linearized,
                used_unseen: c.used_unseen + 1,
            };
            push(&mut seen, &mut stack, next);
        }
    }
    let mut configs: Vec<Config> = out
        .into_iter()
        .map(|((state, linearized), used_unseen)| Config {
            state,
            linearized,
            used_unseen,
        })
        .collect();
    // In a fixed order, so that the work done (and the count reported) is the same each run.
    configs.sort_unstable_by_key(|c| (c.state, c.linearized));
    Some((configs, visited))
}

fn sweep(p: &Prepared, budget: usize) -> Verdict {
    let mut events: Vec<(u64, u8, Event)> = Vec::new();
    for (i, op) in p.required.iter().enumerate() {
        events.push((op.invoke_ns, 0, Event::CallRequired(i)));
        events.push((op.return_ns, 1, Event::Return(i)));
    }
    events.extend(
        p.unseen_writes_ns
            .iter()
            .map(|&t| (t, 0, Event::CallUnseenWrite)),
    );
    events.extend(
        p.unseen_cases
            .iter()
            .map(|&(t, expect)| (t, 0, Event::CallUnseenCas(expect))),
    );
    events.sort_unstable();

    // caps[i]: the smallest version named by a read or CAS called after event i, and that op.
    let mut caps = vec![(i64::MAX, None); events.len()];
    let mut cap = (i64::MAX, None);
    for (i, &(_, _, ev)) in events.iter().enumerate().rev() {
        caps[i] = cap;
        if let Event::CallRequired(o) = ev {
            let bound = match p.required[o].kind {
                Kind::Read { version, .. } => version,
                Kind::Cas { expect, .. } => expect,
                Kind::Write | Kind::CasRefused { .. } => i64::MAX,
            };
            if bound < cap.0 {
                cap = (bound, Some(o));
            }
        }
    }

    let mut configs = vec![Config {
        state: p.initial,
        linearized: 0,
        used_unseen: 0,
    }];
    let mut pending: Vec<(usize, u32)> = Vec::new();
    let mut free_slots: Vec<u32> = (0..MAX_PENDING as u32).rev().collect();
    let mut unseen_writes_called = 0u32;
    let mut unseen_cases_called: HashSet<i64> = HashSet::new();
    let mut visited = 0usize;
    for (i, &(_, _, ev)) in events.iter().enumerate() {
        match ev {
            Event::CallRequired(o) => {
                let Some(slot) = free_slots.pop() else {
                    return Verdict::Unknown(format!(
                        "more than {MAX_PENDING} ops pending at once"
                    ));
                };
                pending.push((o, slot));
            }
            Event::CallUnseenWrite => unseen_writes_called += 1,
            Event::CallUnseenCas(expect) => {
                unseen_cases_called.insert(expect);
            }
            Event::Return(o) => {
                let at = pending
                    .iter()
                    .position(|&(q, _)| q == o)
                    .expect("an op returns after its call");
                let (_, slot) = pending.swap_remove(at);
                let (version_cap, capped_by) = caps[i];
                let mut pool = Pool {
                    ops: &p.required,
                    pending: &pending,
                    unseen_writes_called,
                    unseen_cases_called: &unseen_cases_called,
                    version_cap,
                    version_top: p.version_top,
                };
                let Some((next, n)) = close(&configs, o, slot, &pool, budget - visited) else {
                    return Verdict::Unknown(format!(
                        "search budget of {budget} configurations spent"
                    ));
                };
                visited += n;
                if next.is_empty() {
                    // If only the ceiling ruled `o` out, the op that set it is the culprit (say
                    // a read called later that saw an older version); blame that one.
                    pool.version_cap = i64::MAX;
                    let culprit = match (capped_by, close(&configs, o, slot, &pool, budget)) {
                        (Some(c), Some((found, _))) if !found.is_empty() => c,
                        _ => o,
                    };
                    return Verdict::NotLinearizable {
                        stuck_at: p.required[culprit].source,
                    };
                }
                configs = next;
                free_slots.push(slot);
            }
        }
    }
    Verdict::Linearizable { visited }
}

/// Decides one register's ops (all of one key).
fn decide(ops: &[RawOp], budget: usize) -> Verdict {
    match prepare(ops) {
        Ok(p) => sweep(&p, budget),
        Err(why) => Verdict::Unknown(why),
    }
}

/// Checks every register in `ops` with [`DEFAULT_SEARCH_BUDGET`].
pub fn check(ops: &[&Op]) -> Report {
    check_with_budget(ops, DEFAULT_SEARCH_BUDGET)
}

/// Checks every register in `ops`, visiting at most `budget` configurations per register.
pub fn check_with_budget(ops: &[&Op], budget: usize) -> Report {
    let mut per_key: BTreeMap<u32, Vec<RawOp>> = BTreeMap::new();
    for (i, op) in ops.iter().enumerate() {
        if let Some((key, raw)) = raw_op(i, op) {
            per_key.entry(key).or_default().push(raw);
        }
    }
    let mut report = Report::default();
    for (key, raw) in per_key {
        let unknown = raw.iter().filter(|o| o.unknown).count();
        match decide(&raw, budget) {
            Verdict::Linearizable { visited } => report.notes.push(format!(
                "register {key}: {} ops ({unknown} unknown) linearizable ({visited} \
                 configurations visited)",
                raw.len()
            )),
            Verdict::NotLinearizable { stuck_at } => {
                let op = ops[stuck_at];
                report.anomalies.push(format!(
                    "register {key}: not linearizable ({} ops); the sweep cannot linearize \
                     process {} {:?} [{} ns .. {} ns, {:?}]",
                    raw.len(),
                    op.process,
                    op.call,
                    op.invoke_ns,
                    op.complete_ns,
                    op.outcome
                ))
            }
            Verdict::Unknown(why) => {
                report.inconclusive = true;
                report
                    .notes
                    .push(format!("register {key}: INCONCLUSIVE, {why}"))
            }
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

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

    #[test]
    fn an_unknown_write_read_before_its_call_is_reported() {
        let unknown = w(1, 50, 60, 5).with_outcome(Outcome::Info);
        let rep = run(&[r(2, 0, 10, 5, 1), unknown]);
        assert_eq!(rep.anomalies.len(), 1, "{rep:?}");
    }

    #[test]
    fn a_value_read_at_two_versions_is_reported() {
        let h = [
            w(1, 0, 10, 5),
            r(2, 20, 30, 5, 1),
            w(1, 40, 50, 6),
            r(2, 60, 70, 5, 2),
        ];
        assert!(!run(&h).is_valid());
    }

    #[test]
    fn unknown_cas_fills_only_its_own_version() {
        let unknown = cas(1, 0, 10, 0, 5).with_outcome(Outcome::Info);
        // Nobody read 5; the CAS from version 0 may explain version 1 ...
        assert!(run(&[unknown.clone(), w(2, 20, 30, 6), r(2, 40, 50, 6, 2)]).is_valid());
        // ... but not a second step once the register has moved past version 0.
        let late = cas(1, 10, 15, 0, 5).with_outcome(Outcome::Info);
        let h = [w(2, 0, 5, 6), late, w(2, 20, 30, 7), r(2, 40, 50, 7, 3)];
        assert!(!run(&h).is_valid());
    }

    #[test]
    fn a_written_value_read_twice_over_is_inconclusive_not_valid() {
        // Two writes of the same value break the pinning the check relies on.
        let h = [w(1, 0, 10, 5), w(1, 20, 30, 5), r(2, 40, 50, 5, 2)];
        let rep = run(&h);
        assert!(rep.notes[0].contains("INCONCLUSIVE"), "{rep:?}");
    }

    /// Brute force over every subset of unknown ops and every order allowed by real time;
    /// the reference the sweep is compared with on small histories.
    fn brute_force(ops: &[Op]) -> bool {
        let m: Vec<RawOp> = ops
            .iter()
            .enumerate()
            .filter_map(|(i, o)| raw_op(i, o).map(|(_, r)| r))
            .collect();
        assert!(m.len() < 16);
        let ret = |o: &RawOp| if o.unknown { u64::MAX } else { o.complete_ns };
        let apply = |(value, version): (u64, i32), k: RawKind| match k {
            RawKind::Write { value: v } => Some((v, version + 1)),
            RawKind::Cas { expect, value: v } => (version == expect).then_some((v, version + 1)),
            RawKind::CasRefused { expect } => (version != expect).then_some((value, version)),
            RawKind::Read {
                value: v,
                version: k,
            } => (value == v && version == k).then_some((value, version)),
        };
        let all_required: u32 = (0..m.len())
            .filter(|&i| !m[i].unknown)
            .map(|i| 1 << i)
            .sum();
        // Depth-first over (placed ops, state); the depth is at most 15 here.
        let mut stack: Vec<(u32, (u64, i32))> = vec![(0, (0, 0))];
        let mut seen = HashSet::new();
        while let Some((placed, state)) = stack.pop() {
            if placed & all_required == all_required {
                return true;
            }
            if !seen.insert((placed, state)) {
                continue;
            }
            for x in 0..m.len() {
                if placed & (1 << x) != 0 {
                    continue;
                }
                let blocked = (0..m.len()).any(|y| {
                    y != x && placed & (1 << y) == 0 && !m[y].unknown && ret(&m[y]) < m[x].invoke_ns
                });
                if blocked {
                    continue;
                }
                if let Some(next) = apply(state, m[x].kind) {
                    stack.push((placed | 1 << x, next));
                }
            }
        }
        false
    }

    /// A linearizable history: `procs` clients, one op at a time each, every op taking effect
    /// at a random instant inside its interval (an unknown one: later, or never), reads and
    /// refused CASes reporting the state at that instant.
    fn simulate(seed: u64, procs: u32, n_ops: usize, unknown_per_mille: u32) -> Vec<Op> {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut clock = vec![0u64; procs as usize];
        let mut ops = Vec::with_capacity(n_ops);
        let mut effect_ns: Vec<Option<u64>> = Vec::with_capacity(n_ops);
        for i in 0..n_ops {
            let p = (0..procs).min_by_key(|&p| clock[p as usize]).unwrap();
            let invoke = clock[p as usize] + rng.gen_range(0..5);
            let complete = invoke + rng.gen_range(1..30);
            clock[p as usize] = complete + rng.gen_range(0..3);
            let value = (u64::from(p) << 32) | (i as u64 + 1);
            let call = match rng.gen_range(0..3) {
                0 => Call::RegRead {
                    key: 0,
                    value: None,
                    version: None,
                },
                1 => Call::RegWrite { key: 0, value },
                _ => Call::RegCas {
                    key: 0,
                    expect_version: 0,
                    value,
                },
            };
            let mut op = Op::ok(p, invoke, complete, call);
            if rng.gen_range(0..1000) < unknown_per_mille {
                op.outcome = Outcome::Info;
                effect_ns.push(rng.gen_bool(0.5).then(|| invoke + rng.gen_range(0..200)));
            } else {
                effect_ns.push(Some(rng.gen_range(invoke..=complete)));
            }
            ops.push(op);
        }
        let mut order: Vec<usize> = (0..n_ops).filter(|&i| effect_ns[i].is_some()).collect();
        order.sort_by_key(|&i| effect_ns[i]);
        let (mut value, mut version) = (0u64, 0i32);
        for i in order {
            let unknown = ops[i].outcome == Outcome::Info;
            let guess = if rng.gen_bool(0.5) {
                version
            } else {
                version - rng.gen_range(1..3)
            };
            match &mut ops[i].call {
                Call::RegRead {
                    value: v,
                    version: k,
                    ..
                } if !unknown => {
                    *v = Some(value);
                    *k = Some(version);
                }
                Call::RegWrite { value: v, .. } => {
                    value = *v;
                    version += 1;
                }
                Call::RegCas {
                    expect_version,
                    value: v,
                    ..
                } => {
                    *expect_version = guess;
                    if guess == version {
                        value = *v;
                        version += 1;
                    } else if !unknown {
                        ops[i].outcome = Outcome::Fail;
                        ops[i].error = Some(BAD_VERSION.into());
                    }
                }
                _ => {}
            }
        }
        // Unknown CASes that never took effect expected some plausible version.
        for i in 0..n_ops {
            if effect_ns[i].is_none() {
                if let Call::RegCas { expect_version, .. } = &mut ops[i].call {
                    *expect_version = rng.gen_range(0..(i as i32 / 3 + 1));
                }
            }
        }
        ops
    }

    /// Changes one op of `h` so that the history may no longer be linearizable.
    fn corrupt(rng: &mut StdRng, h: &mut [Op]) {
        let i = rng.gen_range(0..h.len());
        let other_value = match &h[rng.gen_range(0..h.len())].call {
            Call::RegWrite { value, .. } | Call::RegCas { value, .. } => *value,
            _ => 0,
        };
        match &mut h[i].call {
            Call::RegRead {
                value: Some(v),
                version: Some(k),
                ..
            } => {
                if rng.gen_bool(0.5) {
                    *k += rng.gen_range(-1..=1);
                } else {
                    *v = other_value;
                }
            }
            Call::RegCas { expect_version, .. } => *expect_version += rng.gen_range(-1..=1),
            _ => {
                let shift = rng.gen_range(0..40);
                h[i].invoke_ns += shift;
                h[i].complete_ns += shift;
            }
        }
    }

    #[test]
    fn agrees_with_brute_force_on_small_histories() {
        let mut rng = StdRng::seed_from_u64(0x5eed_11ea);
        let (mut valid, mut invalid) = (0, 0);
        for round in 0..20_000u64 {
            let procs = rng.gen_range(2..7);
            let mut h = simulate(round, procs, rng.gen_range(2..13), 300);
            if rng.gen_bool(0.8) {
                corrupt(&mut rng, &mut h);
            }
            let expected = brute_force(&h);
            let rep = run(&h);
            assert!(
                rep.notes.iter().all(|n| !n.contains("INCONCLUSIVE")),
                "{rep:?}"
            );
            assert_eq!(rep.is_valid(), expected, "round {round}: {h:#?}\n{rep:?}");
            if expected {
                valid += 1;
            } else {
                invalid += 1;
            }
        }
        // Both verdicts are exercised, often.
        assert!(
            valid > 3000 && invalid > 3000,
            "{valid} valid, {invalid} invalid"
        );
    }

    #[test]
    fn long_history_with_many_unknown_ops_is_decided() {
        // 60 000 ops on one register from five clients, 3 % of them unknown (about 1 800).
        let h = simulate(1205, 5, 60_000, 30);
        let unknown = h.iter().filter(|o| o.outcome == Outcome::Info).count();
        assert!(unknown > 1500, "{unknown}");
        let refs: Vec<&Op> = h.iter().collect();
        // A budget of 40 configurations per op on average: the sweep must not search.
        let rep = check_with_budget(&refs, 40 * h.len());
        assert!(rep.is_valid(), "{rep:?}");
        assert!(rep.notes[0].contains("linearizable"), "{rep:?}");
    }

    #[test]
    fn many_clients_on_one_register_stay_cheap() {
        // Twelve clients overlapping all the time. Trying every order of the pending ops
        // spends this budget; linearizing reads as soon as they hold and plain writes
        // earliest return first keeps it to about twenty configurations per op.
        let h = simulate(12, 12, 5_000, 30);
        let refs: Vec<&Op> = h.iter().collect();
        let rep = check_with_budget(&refs, 100 * h.len());
        assert!(rep.is_valid(), "{rep:?}");
        assert!(rep.notes[0].contains("linearizable"), "{rep:?}");
    }

    #[test]
    fn stale_read_deep_in_a_long_history_is_found() {
        let mut h = simulate(77, 5, 60_000, 30);
        let acked_read = |o: &Op| match o.call {
            Call::RegRead {
                value: Some(v),
                version: Some(k),
                ..
            } if o.outcome == Outcome::Ok => Some((v, k)),
            _ => None,
        };
        // The read to make stale, 90 % in; an earlier read that returned before it was
        // called and saw version k; a read that saw an older state, which the stale read will
        // report.
        let target = (h.len() * 9 / 10..h.len())
            .find(|&i| acked_read(&h[i]).is_some())
            .unwrap();
        let before = (0..target)
            .rev()
            .find(|&i| acked_read(&h[i]).is_some() && h[i].complete_ns < h[target].invoke_ns)
            .unwrap();
        let (_, k) = acked_read(&h[before]).unwrap();
        let old = (0..before)
            .rev()
            .find(|&i| matches!(acked_read(&h[i]), Some((_, v)) if v + 5 <= k))
            .unwrap();
        let (old_value, old_version) = acked_read(&h[old]).unwrap();
        if let Call::RegRead { value, version, .. } = &mut h[target].call {
            *value = Some(old_value);
            *version = Some(old_version);
        }
        let refs: Vec<&Op> = h.iter().collect();
        let rep = check(&refs);
        assert_eq!(rep.anomalies.len(), 1, "{rep:?}");
        let at = format!(
            "[{} ns .. {} ns",
            h[target].invoke_ns, h[target].complete_ns
        );
        assert!(rep.anomalies[0].contains(&at), "{rep:?}, planted at {at}");
    }

    #[test]
    fn bounds_are_reported_as_inconclusive() {
        // A spent budget ...
        let h = simulate(5, 3, 2_000, 30);
        let refs: Vec<&Op> = h.iter().collect();
        let rep = check_with_budget(&refs, 100);
        assert!(rep.is_valid(), "{rep:?}");
        assert!(
            rep.notes[0].contains("INCONCLUSIVE, search budget"),
            "{rep:?}"
        );
        // ... and more ops running at once than the bit mask holds.
        let h: Vec<Op> = (0..=MAX_PENDING as u64)
            .map(|i| w(i as u32, i, 1_000 + i, i + 1))
            .collect();
        let rep = run(&h);
        assert!(rep.notes[0].contains("INCONCLUSIVE, more than"), "{rep:?}");
    }
}
