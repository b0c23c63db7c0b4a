//! Seeding a member's Raft state from a state that was never replicated: `corral datadir
//! migrate` turns a standalone server's tree into the snapshot a one-member ensemble starts
//! from, so growing a standalone server into an ensemble keeps its data.
//!
//! What is written, and why each choice keeps openraft's rules:
//! - **Snapshot** at log id `(term T, leader = the member, index 0)`, in the snapshot store's
//!   format (meta + `Extra` + Corral image), with a membership of this one voter. Openraft
//!   starts from it as from any snapshot: its state machine reports the id as applied and
//!   `get_initial_state` treats it as committed.
//! - **Log**: empty, purged through that id, so the next entry is index 1 and a learner that
//!   joins later is sent the snapshot (nothing before it exists as entries).
//! - **Vote**: `T` for this member, *not committed*. The member starts as a follower, times
//!   out and elects itself at `T + 1`. A committed vote would restore leadership at `T` and
//!   the leader's zxids would start at `T << 32`, which is not above the imported ones.
//! - **T = (imported zxid >> 32) + 1**, i.e. at least 1. Zxids in an ensemble are
//!   `term << 32 | n`, and the driver recognises the entries it prepared by that epoch, so
//!   the first leader's term (`T + 1`) must be above the epoch of every imported zxid: then
//!   each new zxid is above every zxid a client saw on the standalone server, and the
//!   member's last zxid (the imported one) is at least any client's lastZxidSeen.
//!   `T >= 1` also makes the snapshot's log id larger than the index-0 membership entry
//!   (term 0) of any member that initialised itself empty, so such a member can never win
//!   an election against this one, and a vote request from it is refused.
//! - **Exactly one voter**: with several, two voters that started empty are a majority
//!   without the imported state; they would elect a leader of an empty tree, which would
//!   then replace this member's log and state with its own. With one voter the imported
//!   state is the only quorum; the other members join with `reconfig -add`, as learners
//!   first, and catch up by snapshot before they vote.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use corral_storage::{RaftLog, RaftLogOptions};
use openraft::{CommittedLeaderId, LogId, Membership, StoredMembership, Vote};

use super::log_store::INDEX_SHIFT;
use super::snapshot_store::{decode_data, encode_data, Extra, Meta, SnapshotStore};
use super::{node_of, ConsensusError, MemberId};
use crate::config::EnsembleConfig;

/// Where the imported state sits in the Raft log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seeded {
    /// Log index of the imported snapshot (the next entry is `index + 1`).
    pub index: u64,
    /// Term of the snapshot's log id; the first election is for `term + 1`.
    pub term: u64,
    /// The snapshot file written.
    pub snapshot: PathBuf,
}

/// How far an earlier [`seed_single_member`] got in a member's directories.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeedProgress {
    /// No snapshot and a log with neither entries nor a vote: nothing that counts was
    /// written (at most a temp file), so seeding may start over.
    Nothing,
    /// The imported snapshot of a state at this zxid is the newest snapshot and the log has
    /// no entries: the member never ran (its first election appends one), so seeding may be
    /// completed — it writes only what it wrote before.
    Imported { zxid: i64 },
    /// Anything else: a member's own state.
    MemberState,
}

/// Reads, without changing anything, how far a seed got in `raft_dir` and `snapshot_dir`.
pub fn seed_progress(raft_dir: &Path, snapshot_dir: &Path) -> Result<SeedProgress, ConsensusError> {
    let (entries, vote) = if raft_dir.exists() {
        let log = RaftLog::open(raft_dir, RaftLogOptions::default())?;
        (log.last_entry_id().is_some(), log.read_vote().is_some())
    } else {
        (false, false)
    };
    if entries {
        return Ok(SeedProgress::MemberState);
    }
    let latest = SnapshotStore::new(snapshot_dir)
        .load_latest()
        .map_err(ConsensusError::Snapshot)?;
    match latest {
        None if !vote => Ok(SeedProgress::Nothing),
        None => Ok(SeedProgress::MemberState),
        Some((meta, data)) => {
            let imported = meta.snapshot_id.ends_with(IMPORTED_SUFFIX)
                && meta.last_log_id.is_some_and(|l| l.index == 0);
            if !imported {
                return Ok(SeedProgress::MemberState);
            }
            let (extra, _) = decode_data(&data).map_err(ConsensusError::Snapshot)?;
            Ok(SeedProgress::Imported { zxid: extra.zxid })
        }
    }
}

/// Ends the id of a snapshot written by [`seed_single_member`].
const IMPORTED_SUFFIX: &str = "-imported";

/// The term the imported state gets: one above the epoch of its last zxid (see the module
/// documentation).
pub fn import_term(zxid: i64) -> Result<u64, ConsensusError> {
    let epoch = u64::try_from(zxid >> 32)
        .map_err(|_| ConsensusError::Snapshot(format!("zxid {zxid:#x} is negative")))?;
    // The first leader's term (import term + 1) must still fit the 32-bit epoch of a zxid.
    if epoch + 2 > u64::from(u32::MAX) {
        return Err(ConsensusError::Snapshot(format!(
            "zxid {zxid:#x} leaves no epoch above it"
        )));
    }
    Ok(epoch + 1)
}

/// Writes the initial Raft state of `ensemble.me()` from a Corral snapshot `image` at `zxid`:
/// the snapshot into `snapshot_dir`, vote and purge point into the Raft log in `raft_dir`.
/// `secret` is the session secret the imported sessions' passwords derive from. The caller
/// makes sure both directories hold no Raft state yet, or only what an interrupted seed of
/// the same state left ([`seed_progress`]): every step writes the same bytes again. The
/// member must be the only voter.
pub fn seed_single_member(
    ensemble: &EnsembleConfig,
    raft_dir: &Path,
    snapshot_dir: &Path,
    image: &[u8],
    zxid: i64,
    secret: Option<[u8; 16]>,
) -> Result<Seeded, ConsensusError> {
    let me = ensemble.me();
    let voters: Vec<MemberId> = ensemble.voters().map(|m| m.id).collect();
    if voters != [me.id] {
        return Err(ConsensusError::Snapshot(format!(
            "the imported state needs this member ({}) as the only voter, found voters {voters:?}",
            me.id
        )));
    }
    let term = import_term(zxid)?;
    let index = 0;
    let log_id = LogId::new(CommittedLeaderId::new(term, me.id), index);
    let membership = Membership::new(
        vec![BTreeSet::from([me.id])],
        BTreeMap::from([(me.id, node_of(me))]),
    );
    let meta = Meta {
        last_log_id: Some(log_id),
        last_membership: StoredMembership::new(Some(log_id), membership),
        snapshot_id: format!("{index}-{term}-{zxid:x}{IMPORTED_SUFFIX}"),
    };
    let data = encode_data(&Extra { secret, zxid }, image);
    // The snapshot first: a log purged past an index with no snapshot covering it would be
    // a member that lost its state.
    let snapshot = SnapshotStore::new(snapshot_dir).save(&meta, &data)?;
    let mut log = RaftLog::open(raft_dir, RaftLogOptions::default())?;
    let vote = Vote::new(term, me.id);
    log.save_vote(&bincode::serialize(&vote).expect("in-memory serialization"))?;
    log.save_committed(&bincode::serialize(&Some(log_id)).expect("in-memory serialization"))?;
    log.purge_through(index + INDEX_SHIFT, term, me.id)?;
    tracing::info!(
        term,
        index,
        zxid = format_args!("{zxid:#x}"),
        snapshot = %snapshot.display(),
        "member state seeded from an imported snapshot"
    );
    Ok(Seeded {
        index,
        term,
        snapshot,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consensus::test_config::ensemble;

    /// What openraft reads back at start: the snapshot's log id and one-voter membership, a
    /// log purged through that id, and an uncommitted vote for its term.
    #[test]
    fn the_seeded_state_is_a_snapshot_a_purged_log_and_an_uncommitted_vote() {
        let dir = tempfile::tempdir().unwrap();
        let ens = ensemble(
            dir.path(),
            "server.1=127.0.0.1:2888:3888;127.0.0.1:2181\n\
             server.2=127.0.0.1:2889:3889:observer;127.0.0.1:2182\n",
        );
        let (raft, snaps) = (dir.path().join("raft"), dir.path().join("raft-snapshots"));
        let zxid = 0x3_0000_0007;
        let seeded =
            seed_single_member(&ens, &raft, &snaps, b"image", zxid, Some([5; 16])).unwrap();
        assert_eq!((seeded.index, seeded.term), (0, 4));

        let (meta, data) = SnapshotStore::new(&snaps).load_latest().unwrap().unwrap();
        let log_id = meta.last_log_id.unwrap();
        assert_eq!(
            (
                log_id.index,
                log_id.leader_id.term,
                log_id.leader_id.node_id
            ),
            (0, 4, 1)
        );
        let voters: Vec<MemberId> = meta.last_membership.membership().voter_ids().collect();
        assert_eq!(voters, vec![1]);
        let (extra, image) = super::super::snapshot_store::decode_data(&data).unwrap();
        assert_eq!(
            (extra.zxid, extra.secret, image),
            (zxid, Some([5; 16]), &b"image"[..])
        );

        let log = RaftLog::open(&raft, RaftLogOptions::default()).unwrap();
        assert_eq!(log.last_purged(), Some((INDEX_SHIFT, 4, 1)));
        assert_eq!(log.last_entry_id(), None);
        let vote: Vote<MemberId> = bincode::deserialize(&log.read_vote().unwrap()).unwrap();
        assert_eq!(vote, Vote::new(4, 1));
        assert!(!vote.is_committed());
    }

    #[test]
    fn seed_progress_tells_an_interrupted_seed_from_a_members_state() {
        let dir = tempfile::tempdir().unwrap();
        let ens = ensemble(dir.path(), "server.1=127.0.0.1:2888:3888;127.0.0.1:2181\n");
        let (raft, snaps) = (dir.path().join("raft"), dir.path().join("raft-snapshots"));
        assert_eq!(seed_progress(&raft, &snaps).unwrap(), SeedProgress::Nothing);

        let zxid = 0x2_0000_0009;
        seed_single_member(&ens, &raft, &snaps, b"image", zxid, None).unwrap();
        assert_eq!(
            seed_progress(&raft, &snaps).unwrap(),
            SeedProgress::Imported { zxid }
        );
        // Interrupted before the log part: still the same seed, and seeding again completes
        // it with the same vote and purge point.
        std::fs::remove_dir_all(&raft).unwrap();
        assert_eq!(
            seed_progress(&raft, &snaps).unwrap(),
            SeedProgress::Imported { zxid }
        );
        let again = seed_single_member(&ens, &raft, &snaps, b"image", zxid, None).unwrap();
        assert_eq!((again.index, again.term), (0, 3));
        let mut log = RaftLog::open(&raft, RaftLogOptions::default()).unwrap();
        assert_eq!(log.last_purged(), Some((INDEX_SHIFT, 3, 1)));
        let vote: Vote<MemberId> = bincode::deserialize(&log.read_vote().unwrap()).unwrap();
        assert_eq!(vote, Vote::new(3, 1));

        // Once the member has run (its first election appends an entry): its own state.
        log.append(&[corral_storage::RaftEntry {
            index: INDEX_SHIFT + 1,
            term: 4,
            leader: 1,
            payload: bytes::Bytes::from_static(b"blank"),
        }])
        .unwrap();
        drop(log);
        assert_eq!(
            seed_progress(&raft, &snaps).unwrap(),
            SeedProgress::MemberState
        );

        // A vote without any snapshot: a member that never snapshotted, not a seed.
        let other = tempfile::tempdir().unwrap();
        let other_raft = other.path().join("raft");
        let mut log = RaftLog::open(&other_raft, RaftLogOptions::default()).unwrap();
        log.save_vote(b"vote").unwrap();
        drop(log);
        assert_eq!(
            seed_progress(&other_raft, &other.path().join("raft-snapshots")).unwrap(),
            SeedProgress::MemberState
        );
    }

    #[test]
    fn a_second_voter_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let ens = ensemble(
            dir.path(),
            "server.1=127.0.0.1:2888:3888;127.0.0.1:2181\n\
             server.2=127.0.0.1:2889:3889;127.0.0.1:2182\n",
        );
        let (raft, snaps) = (dir.path().join("raft"), dir.path().join("raft-snapshots"));
        assert!(seed_single_member(&ens, &raft, &snaps, b"image", 1, None).is_err());
        assert!(!raft.exists() && !snaps.exists());
    }

    #[test]
    fn the_import_term_is_above_the_epoch_of_the_imported_zxid() {
        assert_eq!(import_term(0).unwrap(), 1);
        assert_eq!(import_term(41).unwrap(), 1);
        assert_eq!(import_term(0x5_0000_0003).unwrap(), 6);
        assert!(import_term(-1).is_err());
        assert!(import_term(i64::from(u32::MAX) << 32).is_err());
    }
}
