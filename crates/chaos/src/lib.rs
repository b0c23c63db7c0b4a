//! Jepsen-style testing of a Corral ensemble: real `corral server` processes, concurrent
//! clients recording a history of every operation, a nemesis injecting faults (kills, pauses,
//! network partitions), and checkers that judge the history afterwards.
//!
//! - [`history`] — the operation record and its JSON-lines form;
//! - [`check`] — one checker per workload (linearizable registers, sets, unique ids, counter,
//!   fencing tokens, watch streams, sessions);

pub mod check;
pub mod history;
