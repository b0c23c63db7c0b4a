//! The history of a run: one record per operation a client attempted (or per observation a
//! watcher made), with monotonic invoke and completion times and the outcome.
//!
//! A history is stored as JSON lines, one [`Op`] per line, so a failed run can be checked again
//! later (`corral-chaos check <dir>`).

use std::fs;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::{Deserialize, Serialize};

/// How an operation ended, as the client saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Acknowledged: it took effect (or, for a read, returned what it saw).
    Ok,
    /// Definitely did not take effect (the server answered with an error code).
    Fail,
    /// Unknown: the connection broke, the call timed out or the session ended before the
    /// answer; the operation may or may not have taken effect.
    Info,
}

/// What an operation was, with its inputs and (when it completed) its outputs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "f", rename_all = "snake_case")]
pub enum Call {
    /// setData of register `key` to `value`, any version.
    RegWrite { key: u32, value: u64 },
    /// setData of register `key` to `value` if its version is `expect_version`.
    RegCas {
        key: u32,
        expect_version: i32,
        value: u64,
    },
    /// sync, then getData of register `key`; `value`/`version` are set when it succeeded.
    RegRead {
        key: u32,
        value: Option<u64>,
        version: Option<i32>,
    },
    /// Create of the unique znode for `elem` in the set.
    SetAdd { elem: u64 },
    /// The set's members read after healing.
    SetFinal { elems: Vec<u64> },
    /// Create of a sequential znode; `id` is its sequence number when acknowledged.
    IdNext { id: Option<i64> },
    /// Versioned increment of the counter from the value `from` read just before.
    CounterIncr { from: i64 },
    /// The counter's value read after healing.
    CounterFinal { value: i64 },
    /// A write to the guarded znode by a lock holder with fencing `token` (the czxid of its
    /// lock node); `version` is the guard's version after the write when acknowledged.
    GuardWrite { token: i64, version: Option<i32> },
    /// setData of the watched znode; `zxid` is its mzxid when acknowledged.
    WatchWrite { zxid: Option<i64> },
    /// Watcher `watcher` registered its watch; changes above `zxid` must reach it.
    WatchStart { watcher: u32, zxid: i64 },
    /// Watcher `watcher` got a data-change event for `zxid`.
    WatchEvent { watcher: u32, zxid: i64 },
    /// Watcher `watcher` was told that events may be missing (a declared gap). The server
    /// says so after the events it did replay on a reconnect, so the gap starts at `since`,
    /// the last zxid the watcher had seen before that reconnect (absent in histories written
    /// before this field existed, and for the end of a stream: the gap starts at the last
    /// event before it).
    WatchGap {
        watcher: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        since: Option<i64>,
    },
    /// Watcher `watcher` stopped listening; changes up to `zxid` should have reached it.
    WatchEnd { watcher: u32, zxid: i64 },
    /// Session `session` created the ephemeral `path`.
    EphemeralCreate { session: i64, path: String },
    /// The server refused to resume session `session`: it is closed or expired.
    SessionEnded { session: i64 },
    /// sync, then exists of the ephemeral `path` of `session`; `present` when it succeeded.
    EphemeralRead {
        session: i64,
        path: String,
        present: Option<bool>,
    },
    /// Create of the persistent-sequential queue node carrying `elem`.
    QueueEnqueue { elem: u64 },
    /// Take the lowest queue node by deleting it. `ok`: `elem` was removed by this op;
    /// `info`: the delete of `elem` may or may not have happened; `fail`: nothing was removed
    /// (`elem` is then `None`: the queue looked empty or no delete was sent).
    QueueDequeue { elem: Option<u64> },
    /// The queue drained after healing: the elements this drain removed, lowest first. `ok`
    /// when the drain saw the queue empty at the end, `info` when it gave up before.
    QueueDrain { elems: Vec<u64> },
    /// A kazoo client's create of the unique znode for `elem` (`crate::kazoo`).
    KazooSetAdd { elem: u64 },
    /// The kazoo set's members read after healing.
    KazooSetFinal { elems: Vec<u64> },
}

/// The workloads; each checker looks at the ops of one workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Workload {
    Register,
    Set,
    Ids,
    Counter,
    Lock,
    Watch,
    Session,
    Queue,
    KazooSet,
}

impl Workload {
    pub const ALL: [Workload; 9] = [
        Workload::Register,
        Workload::Set,
        Workload::Ids,
        Workload::Counter,
        Workload::Lock,
        Workload::Watch,
        Workload::Session,
        Workload::Queue,
        Workload::KazooSet,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Workload::Register => "register",
            Workload::Set => "set",
            Workload::Ids => "ids",
            Workload::Counter => "counter",
            Workload::Lock => "lock",
            Workload::Watch => "watch",
            Workload::Session => "session",
            Workload::Queue => "queue",
            Workload::KazooSet => "kazoo-set",
        }
    }

    pub fn parse(s: &str) -> Option<Workload> {
        Workload::ALL.into_iter().find(|w| w.name() == s)
    }
}

impl Call {
    pub fn workload(&self) -> Workload {
        match self {
            Call::RegWrite { .. } | Call::RegCas { .. } | Call::RegRead { .. } => {
                Workload::Register
            }
            Call::SetAdd { .. } | Call::SetFinal { .. } => Workload::Set,
            Call::IdNext { .. } => Workload::Ids,
            Call::CounterIncr { .. } | Call::CounterFinal { .. } => Workload::Counter,
            Call::GuardWrite { .. } => Workload::Lock,
            Call::WatchWrite { .. }
            | Call::WatchStart { .. }
            | Call::WatchEvent { .. }
            | Call::WatchGap { .. }
            | Call::WatchEnd { .. } => Workload::Watch,
            Call::EphemeralCreate { .. }
            | Call::SessionEnded { .. }
            | Call::EphemeralRead { .. } => Workload::Session,
            Call::QueueEnqueue { .. } | Call::QueueDequeue { .. } | Call::QueueDrain { .. } => {
                Workload::Queue
            }
            Call::KazooSetAdd { .. } | Call::KazooSetFinal { .. } => Workload::KazooSet,
        }
    }
}

/// One operation of the history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Op {
    /// The client task that ran it (a task runs one operation at a time).
    pub process: u32,
    /// When the client started it, in ns since the run's start (monotonic clock).
    pub invoke_ns: u64,
    /// When the client got its outcome, in ns since the run's start. For [`Outcome::Info`] this
    /// is when the client gave up waiting; the operation may take effect later still.
    pub complete_ns: u64,
    pub outcome: Outcome,
    #[serde(flatten)]
    pub call: Call,
    /// The error the client saw, for `fail` and `info`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Op {
    /// An acknowledged op, for hand-written histories in tests.
    pub fn ok(process: u32, invoke_ns: u64, complete_ns: u64, call: Call) -> Op {
        Op {
            process,
            invoke_ns,
            complete_ns,
            outcome: Outcome::Ok,
            call,
            error: None,
        }
    }

    pub fn with_outcome(mut self, outcome: Outcome) -> Op {
        self.outcome = outcome;
        self
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("history file {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("history file {path}, line {line}: {source}")]
    Parse {
        path: String,
        line: usize,
        source: serde_json::Error,
    },
}

/// Writes `ops` as JSON lines.
pub fn save(path: &Path, ops: &[Op]) -> Result<(), HistoryError> {
    let io_err = |source| HistoryError::Io {
        path: path.display().to_string(),
        source,
    };
    let mut out = BufWriter::new(fs::File::create(path).map_err(io_err)?);
    for op in ops {
        let line = serde_json::to_string(op).expect("an Op always serializes");
        writeln!(out, "{line}").map_err(io_err)?;
    }
    out.flush().map_err(io_err)
}

/// Reads a history written by [`save`].
pub fn load(path: &Path) -> Result<Vec<Op>, HistoryError> {
    let io_err = |source| HistoryError::Io {
        path: path.display().to_string(),
        source,
    };
    let file = fs::File::open(path).map_err(io_err)?;
    let mut ops = Vec::new();
    for (i, line) in BufReader::new(file).lines().enumerate() {
        let line = line.map_err(io_err)?;
        if line.trim().is_empty() {
            continue;
        }
        let op = serde_json::from_str(&line).map_err(|source| HistoryError::Parse {
            path: path.display().to_string(),
            line: i + 1,
            source,
        })?;
        ops.push(op);
    }
    Ok(ops)
}

/// Collects the ops of a live run from many client tasks. Every op is one small record and a
/// run is bounded in time, so the history is kept in memory until the run ends.
#[derive(Clone)]
pub struct Recorder {
    start: Instant,
    ops: Arc<Mutex<Vec<Op>>>,
}

impl Recorder {
    pub fn new(start: Instant) -> Recorder {
        Recorder {
            start,
            ops: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// When the run started (time zero of the history).
    pub fn start(&self) -> Instant {
        self.start
    }

    /// Nanoseconds since the run's start.
    pub fn now_ns(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    pub fn record(&self, op: Op) {
        self.ops.lock().expect("recorder lock").push(op);
    }

    /// Records an op that completed now.
    pub fn finish(
        &self,
        process: u32,
        invoke_ns: u64,
        outcome: Outcome,
        call: Call,
        error: Option<String>,
    ) {
        let complete_ns = self.now_ns();
        self.record(Op {
            process,
            invoke_ns,
            complete_ns,
            outcome,
            call,
            error,
        });
    }

    /// Every op so far, ordered by invoke time.
    pub fn snapshot(&self) -> Vec<Op> {
        let mut ops = self.ops.lock().expect("recorder lock").clone();
        ops.sort_by_key(|o| (o.invoke_ns, o.complete_ns));
        ops
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_round_trips_through_json_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history.jsonl");
        let ops = vec![
            Op::ok(
                1,
                5,
                9,
                Call::RegCas {
                    key: 0,
                    expect_version: 3,
                    value: 7,
                },
            ),
            Op {
                error: Some("connection lost".into()),
                ..Op::ok(2, 6, 20, Call::IdNext { id: None }).with_outcome(Outcome::Info)
            },
        ];
        save(&path, &ops).unwrap();
        let text = fs::read_to_string(&path).unwrap();
        assert!(text.contains("\"f\":\"reg_cas\""), "{text}");
        assert_eq!(load(&path).unwrap(), ops);
    }
}
