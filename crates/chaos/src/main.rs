//! `corral-chaos`: run a fault-injection test against a Corral ensemble, or re-check the
//! history a failed run left behind.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use corral_chaos::apache::Target;
use corral_chaos::history::Workload;
use corral_chaos::nemesis::Fault;
use corral_chaos::runner::{self, RunConfig};

#[derive(Parser)]
#[command(
    name = "corral-chaos",
    about = "Fault injection and history checking for Corral"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Start an ensemble, run workloads under a nemesis, heal, check.
    Run {
        /// How long the workloads and the nemesis run (e.g. 60s, 30m).
        #[arg(long, default_value = "60s", value_parser = corral_chaos::parse_duration)]
        time: Duration,
        /// Ensemble size.
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(3..=9))]
        members: u64,
        /// Seed of the nemesis schedule and of the clients' choices (default: from the clock).
        #[arg(long)]
        seed: Option<u64>,
        /// Fault families: kill, pause, partition, power (power loss on faultfs; needs root),
        /// diskfull, lossy, slow.
        #[arg(long, value_delimiter = ',', default_value = "kill,pause,partition")]
        nemesis: Vec<String>,
        /// Workloads: register, set, ids, counter, lock, watch, session, queue, kazoo-set
        /// (kazoo-set runs a Python kazoo client; needs /usr/bin/python3 with python3-kazoo).
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "register,set,ids,counter,lock,watch,session,queue"
        )]
        workload: Vec<String>,
        /// Client tasks per workload.
        #[arg(long, default_value_t = 3)]
        clients: usize,
        /// Where run directories are made.
        #[arg(long, default_value = "/tmp")]
        dir: PathBuf,
        /// Keep the run directory even when no anomaly was found.
        #[arg(long)]
        keep: bool,
        /// The corral binary (default: $CORRAL_BIN, or next to this executable).
        #[arg(long)]
        corral: Option<PathBuf>,
        /// What the ensemble runs: corral, or apache (Apache ZooKeeper through
        /// scripts/apache-zk, as the reference).
        #[arg(long, default_value = "corral")]
        target: String,
        /// Run the members with `corral.linearizableReads=true` and read the registers
        /// without `sync`, so the register checker judges plain reads (Corral only).
        #[arg(long)]
        linearizable_reads: bool,
    },
    /// Check the history kept in a run directory again.
    Check {
        dir: PathBuf,
        /// Budget of the register checker, in configurations visited per register (a bound on
        /// its time: each costs under a microsecond).
        #[arg(long, default_value_t = corral_chaos::check::linear::DEFAULT_SEARCH_BUDGET)]
        linear_budget: usize,
    },
}

/// Resolves on SIGTERM, so `kill` (and `timeout`) also get the cleanup of an interrupt.
async fn terminated() {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut s) => {
            s.recv().await;
        }
        Err(_) => std::future::pending().await,
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env() // The clients warn about every expired session, which the nemesis causes on
                // purpose; the run prints its own progress.
                .unwrap_or_else(|_| "warn,corral_client=error".into()),
        )
        .init();
    let cli = Cli::parse();
    match cli.command {
        Cmd::Check { dir, linear_budget } => match runner::check_dir(&dir, linear_budget) {
            Ok((results, nemesis, phases)) => {
                print!("{}", runner::table(&results, &nemesis, &phases));
                let bad: usize = results.iter().map(|r| r.report.anomalies.len()).sum();
                if bad == 0 {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                }
            }
            Err(e) => {
                eprintln!("corral-chaos check: {e}");
                ExitCode::from(2)
            }
        },
        Cmd::Run {
            time,
            members,
            seed,
            nemesis,
            workload,
            clients,
            dir,
            keep,
            corral,
            target,
            linearizable_reads,
        } => {
            let Some(target) = Target::parse(&target) else {
                eprintln!("unknown target {target:?} (corral, apache)");
                return ExitCode::from(2);
            };
            let mut faults = Vec::new();
            for n in nemesis.iter().filter(|n| !n.is_empty() && *n != "none") {
                match Fault::parse(n) {
                    Some(f) => faults.push(f),
                    None => {
                        eprintln!("unknown nemesis {n:?} (kill, pause, partition, power, diskfull, lossy, slow, none)");
                        return ExitCode::from(2);
                    }
                }
            }
            let mut workloads = Vec::new();
            for w in &workload {
                match Workload::parse(w) {
                    Some(w) => workloads.push(w),
                    None => {
                        eprintln!("unknown workload {w:?}");
                        return ExitCode::from(2);
                    }
                }
            }
            let seed = seed.unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0)
            });
            println!(
                "corral-chaos run: {} {} members, {:?}, seed {seed}, nemesis {}, workload {}",
                target.name(),
                members,
                time,
                nemesis.join(","),
                workload.join(",")
            );
            let cfg = RunConfig {
                time,
                members: members as usize,
                seed,
                faults,
                workloads,
                clients_per_workload: clients,
                work_root: dir,
                keep,
                binary: corral,
                target,
                linearizable_reads,
            };
            let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
            let outcome = rt.block_on(async {
                tokio::select! {
                    r = runner::run(cfg) => Some(r),
                    // Dropping the run kills the members and removes the namespaces.
                    _ = tokio::signal::ctrl_c() => None,
                    _ = terminated() => None,
                }
            });
            let outcome = match outcome {
                None => {
                    eprintln!("interrupted; members stopped, namespaces removed");
                    return ExitCode::from(130);
                }
                Some(Err(e)) => {
                    eprintln!("corral-chaos run failed: {e}");
                    return ExitCode::from(2);
                }
                Some(Ok(o)) => o,
            };
            let names: Vec<&str> = outcome.faults_run.iter().map(|f| f.name()).collect();
            let nemesis_label = if names.is_empty() {
                "none".to_string()
            } else {
                names.join(",")
            };
            println!();
            print!(
                "{}",
                runner::table(&outcome.results, &nemesis_label, &outcome.phases)
            );
            for s in &outcome.skipped {
                println!("{s}");
            }
            if outcome.known_apache_behaviour > 0 {
                println!(
                    "{} watch-checker findings are ZooKeeper's known behaviour (see the notes)",
                    outcome.known_apache_behaviour
                );
            }
            if let Some(dir) = &outcome.kept_dir {
                println!("run directory kept: {}", dir.display());
                println!("re-check: corral-chaos check {}", dir.display());
            }
            if outcome.anomalies() == 0 {
                println!("no anomalies");
                ExitCode::SUCCESS
            } else {
                println!("{} ANOMALIES", outcome.anomalies());
                ExitCode::FAILURE
            }
        }
    }
}
