//! `corral datadir`: inspect a data directory without starting a server. Read-only: a torn
//! tail is reported, not repaired. When the txn log directory has a `raft` subfolder (an
//! ensemble member's Raft log), every action covers it too.
//!
//! `corral datadir migrate --config zoo.cfg` is the one action that writes: it turns a
//! standalone server's data into a one-member ensemble's (`corral_server::migrate`).

use std::path::{Path, PathBuf};

use anyhow::Context;
use corral_server::core::txn::{Txn, TxnRecord};
use corral_storage::LogIter;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The data directory (dataDir: snapshots, and the txn log unless --log-dir is given).
    /// Not given for `migrate`, which takes the directories from its zoo.cfg.
    #[arg(value_name = "DIR")]
    dir: Option<PathBuf>,
    /// The txn log directory (dataLogDir), if it is not DIR.
    #[arg(long, value_name = "DIR")]
    log_dir: Option<PathBuf>,
    #[command(subcommand)]
    action: Action,
}

#[derive(Debug, clap::Subcommand)]
enum Action {
    /// List snapshots and log segments: zxid ranges, sizes, record counts, validity.
    List,
    /// Check every snapshot and record CRC and the zxid sequence; fails naming file and
    /// offset of the first problem.
    Verify,
    /// Print the logged txns in order.
    Dump {
        /// First zxid to print (decimal or 0x-prefixed hex).
        #[arg(long, value_name = "ZXID", value_parser = parse_zxid)]
        from: Option<i64>,
    },
    /// Offline: turn a standalone server's data (dataDir/dataLogDir of the given zoo.cfg)
    /// into the state of a one-member ensemble, so `corral server --config` with the same file
    /// serves the same tree as a member. The config must list this server (myid) as its only
    /// participant; add the other members afterwards with `reconfig -add`. The standalone
    /// files are moved into `migrated-standalone/`, never deleted.
    Migrate {
        /// The ensemble's zoo.cfg for this server (server.N lines, myid in dataDir).
        #[arg(long, value_name = "ZOO_CFG")]
        config: PathBuf,
    },
}

fn parse_zxid(s: &str) -> Result<i64, String> {
    let parsed = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => i64::from_str_radix(hex, 16),
        None => s.parse(),
    };
    parsed.map_err(|e| format!("not a zxid: {e}"))
}

pub fn run(args: Args) -> anyhow::Result<()> {
    if let Action::Migrate { config } = &args.action {
        anyhow::ensure!(
            args.dir.is_none() && args.log_dir.is_none(),
            "migrate takes dataDir and dataLogDir from --config; give no DIR or --log-dir"
        );
        return migrate(config);
    }
    let dir = args
        .dir
        .clone()
        .context("DIR (the data directory) is required")?;
    let log_dir = args.log_dir.clone().unwrap_or_else(|| dir.clone());
    anyhow::ensure!(dir.is_dir(), "{} is not a directory", dir.display());
    let raft_dir = log_dir.join(RAFT_SUBDIR);
    let raft_dir = raft_dir.is_dir().then_some(raft_dir);
    match args.action {
        Action::Migrate { .. } => unreachable!("handled above"),
        Action::List => {
            list(&dir, &log_dir)?;
            raft_dir.map_or(Ok(()), |d| raft_list(&d))
        }
        Action::Verify => {
            verify(&dir, &log_dir)?;
            raft_dir.map_or(Ok(()), |d| raft_verify(&d))
        }
        Action::Dump { from } => {
            dump(&log_dir, from.unwrap_or(i64::MIN))?;
            raft_dir.map_or(Ok(()), |d| raft_dump(&d))
        }
    }
}

/// Where an ensemble member keeps its Raft log, inside the txn log directory.
const RAFT_SUBDIR: &str = "raft";

fn migrate(config_path: &Path) -> anyhow::Result<()> {
    let config = corral_server::config::ServerConfig::from_file(config_path)
        .with_context(|| format!("loading {}", config_path.display()))?;
    let report = corral_server::migrate::migrate_standalone(&config)?;
    if report.resumed {
        println!("resumed: an earlier run was interrupted; its Raft state is completed");
    }
    println!(
        "migrated: {} znodes and {} sessions at zxid {:#x}",
        report.znodes, report.sessions, report.zxid
    );
    println!(
        "raft snapshot: {} (log index {}, term {}; new zxids have epoch {} or above)",
        report.raft_snapshot.display(),
        report.raft_index,
        report.raft_term,
        report.raft_term + 1
    );
    for path in &report.moved {
        println!("moved aside: {}", path.display());
    }
    println!(
        "start the member with `corral server --config {}`; add the other members with \
         reconfig -add once it serves",
        config_path.display()
    );
    Ok(())
}

fn raft_list(dir: &Path) -> anyhow::Result<()> {
    let info = corral_storage::inspect_raft_log(dir).context("reading the raft log")?;
    println!("raft log in {}:", dir.display());
    println!("  vote: {}", show_blob(info.vote.as_deref()));
    println!("  committed: {}", show_blob(info.committed.as_deref()));
    match info.last_purged {
        Some((index, term, leader)) => {
            println!("  last purged: index {index} term {term} leader {leader}")
        }
        None => println!("  last purged: none"),
    }
    for p in &info.problems {
        println!("  DAMAGED: {p}");
    }
    if info.segments.is_empty() {
        println!("  (no segments)");
    }
    for s in &info.segments {
        let range = match (s.first, s.last) {
            (Some(a), Some(b)) => format!("index {}..={} terms {}..={}", a.0, b.0, a.1, b.1),
            _ => "no entries".to_string(),
        };
        let mut status = match &s.problem {
            None => "ok".to_string(),
            Some(p) => format!("DAMAGED: {p}"),
        };
        if let Some(off) = s.torn_tail_offset {
            status.push_str(&format!(
                " (torn tail at offset {off}; opening the log cuts it off)"
            ));
        }
        println!(
            "  {:<30} {range}  {} entries  {} bytes ({} used)  {status}",
            name(&s.path),
            s.record_count,
            s.size_bytes,
            s.end_offset
        );
    }
    Ok(())
}

fn raft_verify(dir: &Path) -> anyhow::Result<()> {
    let info = corral_storage::inspect_raft_log(dir).context("reading the raft log")?;
    if let Some(p) = info.first_problem() {
        anyhow::bail!("raft log verification failed: {p}");
    }
    println!(
        "raft log ok: {} segments, {} entries, last purged {:?}",
        info.segments.len(),
        info.record_count(),
        info.last_purged.map(|p| p.0)
    );
    for s in &info.segments {
        if let Some(off) = s.torn_tail_offset {
            println!(
                "note: {} has a torn tail at offset {off} (a crash mid-append; opening the log cuts it off)",
                s.path.display()
            );
        }
    }
    Ok(())
}

fn raft_dump(dir: &Path) -> anyhow::Result<()> {
    let info = corral_storage::inspect_raft_log(dir).context("reading the raft log")?;
    let purged = info.last_purged.map(|p| p.0);
    println!("raft log entries in {}:", dir.display());
    for seg in &info.segments {
        let entries = corral_storage::read_raft_segment(&seg.path)
            .with_context(|| format!("reading {}", seg.path.display()))?;
        for e in entries {
            let note = if purged.is_some_and(|p| e.index <= p) {
                " (purged)"
            } else {
                ""
            };
            println!(
                "index {} term {} leader {} payload {}{note}",
                e.index,
                e.term,
                e.leader,
                show_blob(Some(&e.payload))
            );
        }
    }
    Ok(())
}

/// An opaque blob as text when it is short and printable, else its length.
fn show_blob(b: Option<&[u8]>) -> String {
    match b {
        None => "none".into(),
        Some(b) => match std::str::from_utf8(b) {
            Ok(s) if b.len() <= 64 && !s.chars().any(char::is_control) => format!("{s:?}"),
            _ => format!("<{} bytes>", b.len()),
        },
    }
}

fn name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| p.display().to_string())
}

fn list(data_dir: &Path, log_dir: &Path) -> anyhow::Result<()> {
    let snaps = corral_storage::list_snapshots(data_dir).context("listing snapshots")?;
    println!("snapshots in {}:", data_dir.display());
    if snaps.is_empty() {
        println!("  (none)");
    }
    for s in &snaps {
        let status = match &s.problem {
            None => "ok".to_string(),
            Some(p) => format!("DAMAGED: {p}"),
        };
        println!(
            "  {:<30} zxid {:#x}  {} bytes  {status}",
            name(&s.path),
            s.zxid,
            s.size_bytes
        );
    }
    let segs = corral_storage::list_logs(log_dir).context("listing log segments")?;
    println!("log segments in {}:", log_dir.display());
    if segs.is_empty() {
        println!("  (none)");
    }
    for s in &segs {
        let range = match (s.first_zxid, s.last_zxid) {
            (Some(a), Some(b)) => format!("zxids {a:#x}..={b:#x}"),
            _ => "no records".to_string(),
        };
        let mut status = match &s.problem {
            None => "ok".to_string(),
            Some(p) => format!("DAMAGED: {p}"),
        };
        if let Some(off) = s.torn_tail_offset {
            status.push_str(&format!(
                " (torn tail at offset {off}; recovery truncates it)"
            ));
        }
        println!(
            "  {:<30} {range}  {} records  {} bytes ({} used)  {status}",
            name(&s.path),
            s.record_count,
            s.size_bytes,
            s.end_offset
        );
    }
    Ok(())
}

fn verify(data_dir: &Path, log_dir: &Path) -> anyhow::Result<()> {
    let report = corral_storage::verify(data_dir, log_dir).context("verification failed")?;
    println!(
        "ok: {} snapshots, {} segments, {} records",
        report.snapshots, report.segments, report.records
    );
    if let Some((path, off)) = report.torn_tail {
        println!(
            "note: {} has a torn tail at offset {off} (a crash mid-append; the server truncates it on start)",
            path.display()
        );
    }
    Ok(())
}

fn dump(log_dir: &Path, from: i64) -> anyhow::Result<()> {
    let segs = corral_storage::list_logs(log_dir).context("listing log segments")?;
    for seg in segs {
        if seg.last_zxid.is_some_and(|last| last < from) {
            continue;
        }
        let iter =
            LogIter::open(&seg.path).with_context(|| format!("opening {}", seg.path.display()))?;
        for rec in iter {
            let rec = rec?;
            if rec.zxid < from {
                continue;
            }
            match TxnRecord::decode(&rec.payload) {
                Ok(t) => println!(
                    "{:#x} session {:#x} cxid {} time {} {}",
                    rec.zxid,
                    t.header.client_id,
                    t.header.cxid,
                    t.header.time_ms,
                    describe(&t.txn)
                ),
                Err(e) => println!(
                    "{:#x} <undecodable payload of {} bytes: {e}> ({} offset {})",
                    rec.zxid,
                    rec.payload.len(),
                    name(&seg.path),
                    rec.offset
                ),
            }
        }
    }
    Ok(())
}

/// Data as text when it is printable, else its length.
fn show_data(d: &Option<impl AsRef<[u8]>>) -> String {
    match d {
        None => "null".into(),
        Some(d) => {
            let d = d.as_ref();
            match std::str::from_utf8(d) {
                Ok(s) if d.len() <= 64 && !s.chars().any(char::is_control) => format!("{s:?}"),
                _ => format!("<{} bytes>", d.len()),
            }
        }
    }
}

fn describe(txn: &Txn) -> String {
    match txn {
        Txn::Create { op, txn } => format!(
            "{op:?} {} data={} ephemeral={} parent_cversion={}",
            txn.path,
            show_data(&txn.data),
            txn.ephemeral,
            txn.parent_cversion
        ),
        Txn::CreateContainer(t) => {
            format!("createContainer {} data={}", t.path, show_data(&t.data))
        }
        Txn::CreateTtl(t) => format!(
            "createTTL {} data={} ttl={}ms",
            t.path,
            show_data(&t.data),
            t.ttl_ms
        ),
        Txn::Delete { op, txn } => format!("{op:?} {}", txn.path),
        Txn::SetData(t) => format!(
            "setData {} version={} data={}",
            t.path,
            t.version,
            show_data(&t.data)
        ),
        Txn::Reconfig(t) => format!("reconfig {} data={}", t.path, show_data(&t.data)),
        Txn::SetAcl(t) => format!("setACL {} version={} acl={:?}", t.path, t.version, t.acl),
        Txn::Check(t) => format!("check {} version={}", t.path, t.version),
        Txn::Multi(ops) => {
            let parts: Vec<String> = ops.iter().map(describe).collect();
            format!("multi [{}]", parts.join("; "))
        }
        Txn::CreateSession(t) => format!("createSession timeout={}ms", t.timeout_ms),
        Txn::CloseSession(t) => format!("closeSession ephemerals={:?}", t.paths_to_delete),
        Txn::Error(code) => format!("error {code}"),
    }
}
