//! `corral-faultfs`: serves a backing directory at a mount point through faultfs (file data
//! not fsynced is lost at a power loss; see `corral_chaos::faultfs`), controlled over a unix
//! socket. One command per line, one answer line each:
//!
//! - `lose` — power loss: drop every unsynced byte; answers `lost files=N bytes=M`;
//! - `stats` — the counters, as one JSON object.
//!
//! It unmounts on SIGINT/SIGTERM and on panic; a leftover of `kill -9` goes with `umount -l`.
//!
//!     corral-faultfs --backing /var/lib/corral.real --mount /var/lib/corral \
//!         --control /run/corral-faultfs.sock &
//!     echo lose | socat - UNIX-CONNECT:/run/corral-faultfs.sock

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use corral_chaos::faultfs::Mount;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

/// Longest command line accepted; a longer one closes the connection.
const MAX_LINE_BYTES: u64 = 256;

#[derive(Parser)]
#[command(
    name = "corral-faultfs",
    about = "FUSE passthrough that drops unsynced writes on command"
)]
struct Cli {
    /// Directory holding the durable (last synced) state.
    #[arg(long)]
    backing: PathBuf,
    /// Where to mount (an existing, empty directory).
    #[arg(long)]
    mount: PathBuf,
    /// Unix socket for `lose` and `stats`.
    #[arg(long)]
    control: PathBuf,
}

async fn serve(mount: &Mount, stream: UnixStream) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read.take(MAX_LINE_BYTES * 64)).lines();
    while let Some(line) = lines.next_line().await? {
        if line.len() as u64 > MAX_LINE_BYTES {
            break;
        }
        let answer = match line.trim() {
            "lose" => {
                let l = mount.lose();
                format!("lost files={} bytes={}", l.files, l.bytes)
            }
            "stats" => serde_json::to_string(&mount.stats()).expect("stats serialize"),
            other => format!("error: unknown command {other:?} (lose, stats)"),
        };
        write.write_all(answer.as_bytes()).await?;
        write.write_all(b"\n").await?;
    }
    Ok(())
}

async fn run(cli: Cli) -> Result<(), String> {
    let mount = Mount::start(&cli.backing, &cli.mount).map_err(|e| e.to_string())?;
    let _ = std::fs::remove_file(&cli.control);
    let listener = UnixListener::bind(&cli.control)
        .map_err(|e| format!("binding {}: {e}", cli.control.display()))?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| e.to_string())?;
    println!(
        "corral-faultfs: {} on {}, control {}",
        cli.backing.display(),
        cli.mount.display(),
        cli.control.display()
    );
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                // One client at a time: commands are rare and short.
                Ok((stream, _)) => {
                    if let Err(e) = serve(&mount, stream).await {
                        tracing::warn!(%e, "control connection");
                    }
                }
                Err(e) => tracing::warn!(%e, "accept"),
            },
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
        }
    }
    let _ = std::fs::remove_file(&cli.control);
    // Dropping the mount unmounts.
    drop(mount);
    Ok(())
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let cli = Cli::parse();
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    match rt.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("corral-faultfs: {e}");
            ExitCode::from(2)
        }
    }
}
