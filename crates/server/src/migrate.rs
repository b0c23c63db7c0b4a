//! `corral datadir migrate`: turns a standalone server's data directory into the initial state
//! of a one-member ensemble, offline, so that `corral server` with the ensemble's zoo.cfg
//! serves the same tree as a member. The documented growth path is that one member, then
//! `reconfig -add` of the others, which catch up by snapshot transfer.
//!
//! Steps (refusals first, nothing is changed before they pass):
//! 1. Claim dataDir and dataLogDir (`DirLock`): a running server holds them.
//! 2. Refuse a configuration without `server.N` lines, or where this server is not the only
//!    participant (observers may be listed); refuse existing Raft state (a Raft log or Raft
//!    snapshots); refuse a directory without standalone files.
//! 3. Recover the standalone state exactly as a standalone start does (newest valid snapshot,
//!    then the txn log; a torn tail is cut off as on start-up).
//! 4. Write the member's Raft state (`consensus::seed_single_member`: the term, log id and
//!    vote chosen there keep every new zxid above the imported ones). The standalone session
//!    secret travels in the snapshot, so imported sessions keep their passwords; they become
//!    ensemble sessions, whose clocks the first leader restarts, so a client has a full
//!    session timeout to come back before the leader expires its session.
//! 5. Move the standalone `snapshot.*` / `log.*` files into `migrated-standalone/` (in
//!    dataDir and dataLogDir respectively); they are never deleted.
//!
//! Interrupted, it can be run again and finishes the job: Raft state that is exactly what an
//! interrupted step 4 leaves for the same standalone state (the imported snapshot, a log
//! without entries; `consensus::seed_progress`) is written again, step by step the same
//! bytes, and step 5 follows. Raft state of any other kind (the member has run, or it is
//! another member's data) is refused as before. A member started after an interruption
//! between 4 and 5 runs on the Raft state and never reads the files left behind; moving them
//! aside by hand is then safe.

use std::path::{Path, PathBuf};

use corral_storage::{DirLock, StorageError};

use crate::config::ServerConfig;
use crate::consensus::{ConsensusError, MemberId};
use crate::driver::{core_now, ServerError};

/// Where the standalone files go, inside dataDir and dataLogDir.
pub const MIGRATED_SUBDIR: &str = "migrated-standalone";

/// What a migration did.
#[derive(Debug, Clone)]
pub struct MigrationReport {
    /// Last zxid of the imported state: every zxid the member assigns is above it.
    pub zxid: i64,
    /// Znodes and sessions imported.
    pub znodes: u64,
    pub sessions: u64,
    /// The Raft snapshot written, and its log id's index and term.
    pub raft_snapshot: PathBuf,
    pub raft_index: u64,
    pub raft_term: u64,
    /// The standalone files, at their new places.
    pub moved: Vec<PathBuf>,
    /// An interrupted earlier run's Raft state was found and completed.
    pub resumed: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error(
        "the configuration has no server.N lines: migrating makes this server the one member \
         of an ensemble, so give it the ensemble's zoo.cfg with only this server as participant"
    )]
    NotAnEnsemble,
    #[error(
        "this server (id {my_id}) must be the only participant, but the configuration has \
         participants {voters:?}: migrate into a one-member ensemble (server.{my_id} as the only \
         participant; observers may be listed), start it, then add the others with \
         `reconfig -add`, which makes them catch up before they vote"
    )]
    NotTheOnlyVoter {
        my_id: MemberId,
        voters: Vec<MemberId>,
    },
    #[error(transparent)]
    InUse(StorageError),
    #[error(
        "{} already holds Raft state (an ensemble member's data, or an earlier migration); \
         nothing was changed", path.display()
    )]
    RaftStatePresent { path: PathBuf },
    #[error(
        "{} holds the imported state of zxid {imported:#x}, but the standalone files here \
         recover to zxid {found:#x}: they are not the data that was migrated; nothing was \
         changed", path.display()
    )]
    OtherImport {
        path: PathBuf,
        imported: i64,
        found: i64,
    },
    #[error(
        "no standalone data to migrate: no snapshot.* in {} and no log.* in {}",
        data_dir.display(), log_dir.display()
    )]
    NoStandaloneData { data_dir: PathBuf, log_dir: PathBuf },
    #[error("reading the standalone state: {0}")]
    Load(#[source] ServerError),
    #[error("writing the member's Raft state: {0}")]
    Seed(#[source] ConsensusError),
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
}

/// Migrates the standalone data of `config`'s directories into the member state of
/// `config.ensemble`'s `me()`. See the module documentation.
pub fn migrate_standalone(config: &ServerConfig) -> Result<MigrationReport, MigrateError> {
    let ensemble = config
        .ensemble
        .as_ref()
        .ok_or(MigrateError::NotAnEnsemble)?;
    let my_id = ensemble.my_id;
    let voters: Vec<MemberId> = ensemble.voters().map(|m| m.id).collect();
    if voters != [my_id] {
        return Err(MigrateError::NotTheOnlyVoter { my_id, voters });
    }
    let data_dir = config.data_dir.as_path();
    let log_dir = config.data_log_dir();
    // Held until the end: no server may start on the directories meanwhile.
    let _locks = lock_dirs(data_dir, log_dir)?;

    let raft_dir = log_dir.join(crate::driver::RAFT_SUBDIR);
    let snapshot_dir = data_dir.join(crate::driver::RAFT_SNAPSHOT_SUBDIR);
    let mut interrupted: Option<i64> = None;
    if let Some(dir) = [&raft_dir, &snapshot_dir]
        .into_iter()
        .find(|dir| std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_some()))
    {
        let progress = crate::consensus::seed_progress(&raft_dir, &snapshot_dir)
            .map_err(MigrateError::Seed)?;
        match progress {
            crate::consensus::SeedProgress::Nothing => {}
            crate::consensus::SeedProgress::Imported { zxid } => interrupted = Some(zxid),
            crate::consensus::SeedProgress::MemberState => {
                return Err(MigrateError::RaftStatePresent { path: dir.clone() })
            }
        }
    }
    let snapshots = corral_storage::list_snapshots(data_dir)?;
    let logs = corral_storage::list_logs(log_dir)?;
    if snapshots.is_empty() && logs.is_empty() {
        return Err(MigrateError::NoStandaloneData {
            data_dir: data_dir.to_path_buf(),
            log_dir: log_dir.to_path_buf(),
        });
    }

    let loaded = crate::persist::load(config, config.core_config(), core_now())
        .map_err(MigrateError::Load)?;
    drop(loaded.writer);
    let core = loaded.core;
    let stats = core.stats();
    let view = core.snapshot_view();
    let zxid = view.zxid();
    if let Some(imported) = interrupted {
        if imported != zxid {
            return Err(MigrateError::OtherImport {
                path: snapshot_dir,
                imported,
                found: zxid,
            });
        }
        tracing::info!(
            zxid = format_args!("{zxid:#x}"),
            "completing an interrupted migration of the same state"
        );
    }
    let image = view.encode();
    let secret = crate::driver::read_session_secret(data_dir).map_err(MigrateError::Load)?;
    tracing::info!(
        zxid = format_args!("{zxid:#x}"),
        znodes = stats.znode_count,
        sessions = stats.session_count,
        txns_replayed = loaded.replayed,
        "standalone state recovered"
    );
    let seeded = crate::consensus::seed_single_member(
        ensemble,
        &raft_dir,
        &snapshot_dir,
        &image,
        zxid,
        secret,
    )
    .map_err(MigrateError::Seed)?;

    // Listed again: recovery may have removed temp files; its writer created no segment.
    let snapshots: Vec<PathBuf> = corral_storage::list_snapshots(data_dir)?
        .into_iter()
        .map(|s| s.path)
        .collect();
    let logs: Vec<PathBuf> = corral_storage::list_logs(log_dir)?
        .into_iter()
        .map(|s| s.path)
        .collect();
    let mut moved =
        corral_storage::move_files_durably(&snapshots, &data_dir.join(MIGRATED_SUBDIR))?;
    moved.extend(corral_storage::move_files_durably(
        &logs,
        &log_dir.join(MIGRATED_SUBDIR),
    )?);
    tracing::info!(files = moved.len(), "standalone files moved aside");
    Ok(MigrationReport {
        zxid,
        znodes: stats.znode_count,
        sessions: stats.session_count,
        raft_snapshot: seeded.snapshot,
        raft_index: seeded.index,
        raft_term: seeded.term,
        moved,
        resumed: interrupted.is_some(),
    })
}

/// Claims both directories (once if they are the same), as a starting server would.
fn lock_dirs(data_dir: &Path, log_dir: &Path) -> Result<Vec<DirLock>, MigrateError> {
    let mut locks = vec![DirLock::acquire(data_dir).map_err(MigrateError::InUse)?];
    if log_dir != data_dir {
        locks.push(DirLock::acquire(log_dir).map_err(MigrateError::InUse)?);
    }
    Ok(locks)
}
