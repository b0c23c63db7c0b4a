//! Checkers: each reads the ops of one workload and reports anomalies (violations of what
//! the ensemble promises) and notes (facts worth reporting that are not violations, such as
//! declared watch gaps or an inconclusive search).

use crate::history::{Op, Outcome, Workload};

pub mod counter;
pub mod fencing;
pub mod ids;
pub mod linear;
pub mod queue;
pub mod session;
pub mod set;
pub mod watch;

/// What one checker found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    pub anomalies: Vec<String>,
    pub notes: Vec<String>,
    /// The checker could not decide (a search budget spent): not an anomaly, but the run
    /// directory is kept so the history can be checked again.
    pub inconclusive: bool,
}

impl Report {
    pub fn is_valid(&self) -> bool {
        self.anomalies.is_empty()
    }
}

/// Op counts of one workload.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub ops: usize,
    pub ok: usize,
    pub fail: usize,
    pub unknown: usize,
}

/// The checker's verdict on one workload, with its op counts.
#[derive(Debug, Clone)]
pub struct WorkloadResult {
    pub workload: Workload,
    pub counts: Counts,
    pub report: Report,
}

pub fn counts(ops: &[&Op]) -> Counts {
    let mut c = Counts {
        ops: ops.len(),
        ..Counts::default()
    };
    for op in ops {
        match op.outcome {
            Outcome::Ok => c.ok += 1,
            Outcome::Fail => c.fail += 1,
            Outcome::Info => c.unknown += 1,
        }
    }
    c
}

/// Runs the checker of every workload that has ops in `history`.
pub fn check_all(history: &[Op]) -> Vec<WorkloadResult> {
    check_all_with(history, linear::DEFAULT_SEARCH_BUDGET)
}

/// [`check_all`] with the register search's budget (configurations per register).
pub fn check_all_with(history: &[Op], linear_budget: usize) -> Vec<WorkloadResult> {
    let mut results = Vec::new();
    for workload in Workload::ALL {
        let ops: Vec<&Op> = history
            .iter()
            .filter(|o| o.call.workload() == workload)
            .collect();
        if ops.is_empty() {
            continue;
        }
        let report = match workload {
            Workload::Register => linear::check_with_budget(&ops, linear_budget),
            Workload::Set => set::check(&ops),
            Workload::Ids => ids::check(&ops),
            Workload::Counter => counter::check(&ops),
            Workload::Lock => fencing::check(&ops),
            Workload::Watch => watch::check(&ops),
            Workload::Session => session::check(&ops),
            Workload::Queue => queue::check(&ops),
            Workload::KazooSet => crate::kazoo::check(&ops),
        };
        results.push(WorkloadResult {
            workload,
            counts: counts(&ops),
            report,
        });
    }
    results
}
