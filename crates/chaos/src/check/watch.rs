//! Watch streams. Each watcher holds a persistent watch on one znode that writers keep
//! changing. Its stream must be ordered by zxid with no duplicates, and must contain every
//! acknowledged change of the znode between the watch's start and its end — except inside a
//! gap the client declared (`MayHaveMissed` after a failover), which is counted, not flagged.
//!
//! A declared gap covers the zxids between the last event the watcher had before the reconnect
//! that declared it (the server declares it after the events it could replay) — or, for a gap
//! recorded without that zxid, the last event before the gap — and the first event after the
//! gap (or the end of the stream).

use std::collections::{BTreeMap, BTreeSet};

use super::Report;
use crate::history::{Call, Op, Outcome};

#[derive(Default)]
struct Stream {
    start: Option<i64>,
    end: Option<i64>,
    /// Events and gaps in delivery order.
    items: Vec<Item>,
}

enum Item {
    Event(i64),
    /// A declared gap, with the zxid it starts after when the watcher recorded it.
    Gap(Option<i64>),
}

impl Item {
    fn event(&self) -> Option<i64> {
        match self {
            Item::Event(z) => Some(*z),
            Item::Gap(_) => None,
        }
    }
}

pub fn check(ops: &[&Op]) -> Report {
    let mut report = Report::default();
    let mut writes: BTreeSet<i64> = BTreeSet::new();
    let mut unknown_writes = 0usize;
    let mut streams: BTreeMap<u32, Stream> = BTreeMap::new();
    // Ops arrive ordered by invoke time, and a watcher records its items in delivery order
    // (a stable sort keeps equal timestamps in that order).
    for op in ops {
        match (&op.call, op.outcome) {
            (Call::WatchWrite { zxid: Some(z) }, Outcome::Ok) => {
                writes.insert(*z);
            }
            (Call::WatchWrite { .. }, Outcome::Info) => unknown_writes += 1,
            (Call::WatchStart { watcher, zxid }, _) => {
                streams.entry(*watcher).or_default().start = Some(*zxid)
            }
            (Call::WatchEnd { watcher, zxid }, _) => {
                streams.entry(*watcher).or_default().end = Some(*zxid)
            }
            (Call::WatchEvent { watcher, zxid }, _) => streams
                .entry(*watcher)
                .or_default()
                .items
                .push(Item::Event(*zxid)),
            (Call::WatchGap { watcher, since }, _) => streams
                .entry(*watcher)
                .or_default()
                .items
                .push(Item::Gap(*since)),
            _ => {}
        }
    }

    let mut total_gaps = 0usize;
    let mut excused = 0usize;
    for (watcher, s) in &streams {
        let (Some(start), Some(end)) = (s.start, s.end) else {
            report.notes.push(format!(
                "watcher {watcher}: no start or end recorded, not checked"
            ));
            continue;
        };
        // Apache ZooKeeper 3.8 sends notifications with zxid -1 (the reference run): such a
        // stream can be judged by counts only. A persistent watch fires once per change, so
        // acknowledged changes in the window minus events delivered is a lower bound on the
        // events lost (unknown writes and changes just before the start add events, never
        // remove them).
        if s.items.iter().filter_map(Item::event).any(|z| z < 0) {
            let events = s.items.iter().filter_map(Item::event).count();
            let acked = writes.range(start + 1..=end).count();
            let lost = acked.saturating_sub(events);
            let what = format!(
                "{acked} acknowledged changes in the window, {events} events without zxids"
            );
            if lost > 0 {
                report.anomalies.push(format!(
                    "watcher {watcher}: at least {lost} acknowledged changes never delivered ({what})"
                ));
            } else {
                report
                    .notes
                    .push(format!("watcher {watcher}: {what}; order not checkable"));
            }
            continue;
        }
        // Order and duplicates.
        let mut last: Option<i64> = None;
        let mut received = BTreeSet::new();
        for z in s.items.iter().filter_map(Item::event) {
            if let Some(prev) = last {
                if z == prev || received.contains(&z) {
                    report.anomalies.push(format!(
                        "watcher {watcher}: duplicate event for zxid {z:#x}"
                    ));
                } else if z < prev {
                    report.anomalies.push(format!(
                        "watcher {watcher}: event for zxid {z:#x} delivered after {prev:#x}"
                    ));
                }
            }
            received.insert(z);
            last = Some(z);
        }
        // Declared gaps as zxid ranges (exclusive of the zxids that bound them).
        let mut gaps: Vec<(i64, i64)> = Vec::new();
        let mut before = start;
        let mut open_gap: Option<i64> = None;
        for item in &s.items {
            match item {
                Item::Gap(since) => {
                    total_gaps += 1;
                    let from = since.unwrap_or(before).min(before);
                    open_gap = Some(open_gap.map_or(from, |lo| lo.min(from)));
                }
                Item::Event(z) => {
                    if let Some(lo) = open_gap.take() {
                        gaps.push((lo, *z));
                    }
                    before = before.max(*z);
                }
            }
        }
        if let Some(lo) = open_gap {
            gaps.push((lo, i64::MAX));
        }
        let mut missing = Vec::new();
        for &z in writes.range(start + 1..=end) {
            if received.contains(&z) {
                continue;
            }
            if gaps.iter().any(|&(lo, hi)| lo < z && z < hi) {
                excused += 1;
            } else {
                missing.push(z);
            }
        }
        if !missing.is_empty() {
            report.anomalies.push(format!(
                "watcher {watcher}: {} acknowledged changes never delivered (zxids {:x?})",
                missing.len(),
                &missing[..missing.len().min(10)]
            ));
        }
    }
    report.notes.push(format!(
        "{} watchers, {} acknowledged writes, {unknown_writes} unknown; {total_gaps} declared \
         gaps (MayHaveMissed) excusing {excused} undelivered changes",
        streams.len(),
        writes.len()
    ));
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(t: u64, z: i64) -> Op {
        Op::ok(1, t, t + 1, Call::WatchWrite { zxid: Some(z) })
    }
    fn ev(t: u64, z: i64) -> Op {
        Op::ok(
            9,
            t,
            t,
            Call::WatchEvent {
                watcher: 0,
                zxid: z,
            },
        )
    }
    fn gap(t: u64) -> Op {
        Op::ok(
            9,
            t,
            t,
            Call::WatchGap {
                watcher: 0,
                since: None,
            },
        )
    }
    fn gap_since(t: u64, since: i64) -> Op {
        Op::ok(
            9,
            t,
            t,
            Call::WatchGap {
                watcher: 0,
                since: Some(since),
            },
        )
    }
    fn start(z: i64) -> Op {
        Op::ok(
            9,
            0,
            0,
            Call::WatchStart {
                watcher: 0,
                zxid: z,
            },
        )
    }
    fn end(t: u64, z: i64) -> Op {
        Op::ok(
            9,
            t,
            t,
            Call::WatchEnd {
                watcher: 0,
                zxid: z,
            },
        )
    }
    fn run(ops: &[Op]) -> Report {
        check(&ops.iter().collect::<Vec<_>>())
    }
    fn clean() -> Vec<Op> {
        vec![
            start(1),
            write(10, 2),
            ev(12, 2),
            write(20, 3),
            ev(22, 3),
            write(30, 4),
            ev(32, 4),
            end(40, 4),
        ]
    }

    #[test]
    fn complete_ordered_stream_is_valid() {
        let rep = run(&clean());
        assert!(rep.is_valid(), "{rep:?}");
    }

    #[test]
    fn reordered_events_are_reported() {
        let mut h = clean();
        h.swap(2, 4); // event 3 before event 2
        let rep = run(&h);
        assert!(
            rep.anomalies.iter().any(|a| a.contains("delivered after")),
            "{rep:?}"
        );
    }

    #[test]
    fn duplicated_event_is_reported() {
        let mut h = clean();
        h.insert(5, ev(23, 3));
        let rep = run(&h);
        assert!(
            rep.anomalies.iter().any(|a| a.contains("duplicate")),
            "{rep:?}"
        );
    }

    #[test]
    fn missing_event_is_reported() {
        let mut h = clean();
        h.remove(4); // event 3 never delivered
        let rep = run(&h);
        assert_eq!(rep.anomalies.len(), 1, "{rep:?}");
        assert!(rep.anomalies[0].contains("never delivered"));
    }

    #[test]
    fn missing_event_inside_a_declared_gap_is_excused() {
        let mut h = clean();
        h[4] = gap(22); // a MayHaveMissed where event 3 should have been
        let rep = run(&h);
        assert!(rep.is_valid(), "{rep:?}");
        assert!(
            rep.notes[0].contains("1 declared gaps (MayHaveMissed) excusing 1"),
            "{rep:?}"
        );
    }

    #[test]
    fn a_gap_declared_after_a_replay_covers_what_came_before_the_replay() {
        // Seen 2, reconnected, the server replayed 4 and then said events may be missing: 3
        // is excused, because the gap starts at the last zxid seen before the reconnect.
        let h = vec![
            start(1),
            write(10, 2),
            ev(12, 2),
            write(20, 3),
            write(30, 4),
            ev(32, 4),
            gap_since(33, 2),
            end(40, 4),
        ];
        let rep = run(&h);
        assert!(rep.is_valid(), "{rep:?}");
        // The same stream with the gap placed where it arrived and no start given: 3 is
        // reported, as it lies before the event that precedes the gap.
        let mut without = h.clone();
        without[6] = gap(33);
        let rep = run(&without);
        assert_eq!(rep.anomalies.len(), 1, "{rep:?}");
        // A change before the gap's start is not excused by it.
        let early = vec![
            start(1),
            write(10, 2),
            write(20, 3),
            ev(22, 3),
            write(30, 4),
            ev(32, 4),
            gap_since(33, 3),
            end(40, 4),
        ];
        let rep = run(&early);
        assert_eq!(rep.anomalies.len(), 1, "{rep:?}");
        assert!(rep.anomalies[0].contains("[2]"), "{rep:?}");
    }

    #[test]
    fn changes_outside_the_window_are_not_required() {
        // Written before the watch started and after it ended.
        let mut h = clean();
        h.push(write(1, 1));
        h.push(write(50, 9));
        assert!(run(&h).is_valid());
    }

    #[test]
    fn events_without_zxids_are_judged_by_count() {
        // Three acknowledged changes in the window; the events carry zxid -1.
        let all = [
            start(1),
            write(10, 2),
            ev(12, -1),
            write(20, 3),
            ev(22, -1),
            write(30, 4),
            ev(32, -1),
            end(40, 4),
        ];
        let rep = run(&all);
        assert!(rep.is_valid(), "{rep:?}");
        let lossy = [
            start(1),
            write(10, 2),
            ev(12, -1),
            write(20, 3),
            write(30, 4),
            end(40, 4),
        ];
        let rep = run(&lossy);
        assert_eq!(rep.anomalies.len(), 1, "{rep:?}");
        assert!(
            rep.anomalies[0].contains("at least 2 acknowledged changes never delivered"),
            "{rep:?}"
        );
    }
}
