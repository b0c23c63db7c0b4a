//! The most recent Raft entries, decoded, in memory: what replication and the state machine
//! read almost always. Served from here, a read neither waits for a blocking thread nor
//! decodes the entry again; an entry's txn records are shared (`Bytes`), not copied.

use std::collections::VecDeque;

use openraft::{Entry, EntryPayload};

use super::TypeConfig;

/// What an entry costs besides its payload's bytes (the entry, its slot, the batch vector).
const ENTRY_OVERHEAD_BYTES: usize = 128;

/// A contiguous run of entries ending at the newest one appended, within a byte budget (the
/// oldest go first). Openraft's indexes throughout.
pub(super) struct LogTail {
    entries: VecDeque<Entry<TypeConfig>>,
    used_bytes: usize,
    budget_bytes: usize,
}

fn cost(e: &Entry<TypeConfig>) -> usize {
    ENTRY_OVERHEAD_BYTES
        + match &e.payload {
            EntryPayload::Normal(p) => p.approx_bytes(),
            EntryPayload::Membership(_) | EntryPayload::Blank => 0,
        }
}

impl LogTail {
    pub(super) fn new(budget_bytes: usize) -> LogTail {
        LogTail {
            entries: VecDeque::new(),
            used_bytes: 0,
            budget_bytes,
        }
    }

    fn first_index(&self) -> Option<u64> {
        self.entries.front().map(|e| e.log_id.index)
    }

    fn next_index(&self) -> Option<u64> {
        self.entries.back().map(|e| e.log_id.index + 1)
    }

    /// Entries just appended to the log. A batch that does not continue the run (the first
    /// append after start-up or after a purge past the end) starts a new one.
    pub(super) fn push(&mut self, batch: Vec<Entry<TypeConfig>>) {
        let Some(first) = batch.first() else {
            return;
        };
        if self.next_index() != Some(first.log_id.index) {
            self.entries.clear();
            self.used_bytes = 0;
        }
        for e in batch {
            self.used_bytes += cost(&e);
            self.entries.push_back(e);
        }
        while self.used_bytes > self.budget_bytes {
            let Some(old) = self.entries.pop_front() else {
                break;
            };
            self.used_bytes -= cost(&old);
        }
    }

    /// Copies of the entries of `[start, end)` that the log holds (it ends where the tail
    /// ends), or `None` when some of them may be older than the tail: read those from disk.
    pub(super) fn range(&self, start: u64, end: u64) -> Option<Vec<Entry<TypeConfig>>> {
        let (first, next) = (self.first_index()?, self.next_index()?);
        if start < first {
            return None;
        }
        let end = end.min(next);
        if start >= end {
            return Some(Vec::new());
        }
        let skip = (start - first) as usize;
        let take = (end - start) as usize;
        Some(self.entries.range(skip..skip + take).cloned().collect())
    }

    /// Entries at `index` and after are gone from the log (a conflicting suffix).
    pub(super) fn truncate_from(&mut self, index: u64) {
        while self.entries.back().is_some_and(|e| e.log_id.index >= index) {
            let e = self.entries.pop_back().expect("checked non-empty");
            self.used_bytes -= cost(&e);
        }
    }

    /// Entries up to `index` are purged from the log.
    pub(super) fn purge_through(&mut self, index: u64) {
        while self
            .entries
            .front()
            .is_some_and(|e| e.log_id.index <= index)
        {
            let e = self.entries.pop_front().expect("checked non-empty");
            self.used_bytes -= cost(&e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consensus::Payload;
    use openraft::{CommittedLeaderId, LogId};

    fn entry(index: u64, record_bytes: usize) -> Entry<TypeConfig> {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Normal(Payload::Txn {
                zxid: index as i64,
                record: vec![7u8; record_bytes].into(),
                origin: None,
            }),
        }
    }

    fn indexes(v: Option<Vec<Entry<TypeConfig>>>) -> Option<Vec<u64>> {
        v.map(|v| v.iter().map(|e| e.log_id.index).collect())
    }

    #[test]
    fn serves_only_ranges_it_holds_whole() {
        let mut t = LogTail::new(1 << 20);
        t.push((3..8).map(|i| entry(i, 10)).collect());
        assert_eq!(indexes(t.range(3, 8)), Some(vec![3, 4, 5, 6, 7]));
        assert_eq!(indexes(t.range(5, 7)), Some(vec![5, 6]));
        assert_eq!(indexes(t.range(2, 5)), None, "starts before the tail");
        assert_eq!(
            indexes(t.range(6, 90)),
            Some(vec![6, 7]),
            "the log ends at 7"
        );
        assert_eq!(indexes(t.range(9, 12)), Some(vec![]));
        assert_eq!(
            indexes(LogTail::new(1 << 20).range(1, 2)),
            None,
            "empty: ask the disk"
        );
    }

    #[test]
    fn a_batch_that_does_not_continue_the_run_replaces_it() {
        let mut t = LogTail::new(1 << 20);
        t.push((1..4).map(|i| entry(i, 10)).collect());
        t.push((10..12).map(|i| entry(i, 10)).collect());
        assert_eq!(indexes(t.range(1, 4)), None);
        assert_eq!(indexes(t.range(10, 12)), Some(vec![10, 11]));
    }

    #[test]
    fn truncation_and_purge_drop_their_entries() {
        let mut t = LogTail::new(1 << 20);
        t.push((1..10).map(|i| entry(i, 10)).collect());
        t.truncate_from(7);
        assert_eq!(indexes(t.range(5, 8)), Some(vec![5, 6]));
        t.push(vec![entry(7, 20)]);
        assert_eq!(indexes(t.range(5, 8)), Some(vec![5, 6, 7]));
        t.purge_through(5);
        assert_eq!(indexes(t.range(5, 8)), None);
        assert_eq!(indexes(t.range(6, 8)), Some(vec![6, 7]));
        t.purge_through(100);
        assert_eq!(indexes(t.range(6, 8)), None);
        assert_eq!(t.used_bytes, 0);
    }

    #[test]
    fn the_oldest_entries_leave_when_the_budget_is_spent() {
        let per_entry = ENTRY_OVERHEAD_BYTES + 1000 + 64;
        let mut t = LogTail::new(per_entry * 3);
        t.push((1..6).map(|i| entry(i, 1000)).collect());
        assert_eq!(indexes(t.range(3, 6)), Some(vec![3, 4, 5]));
        assert_eq!(indexes(t.range(2, 6)), None);
        assert!(t.used_bytes <= per_entry * 3);
    }
}
