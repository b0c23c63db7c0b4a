//! Helpers for the `corral cli` tests: run the shell (one command, or a piped script), run
//! Debian's zkCli.sh on the same script, and normalise what differs legitimately between runs
//! (times, zxids, session ids, ports).

#![allow(dead_code)] // each test uses a subset

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

pub const ZKCLI: &str = "/usr/share/zookeeper/bin/zkCli.sh";

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

fn finish(out: Output) -> Run {
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn corral_cmd(home: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_corral"));
    // History goes to $HOME/.corral_history; keep the tester's own out of it. TZ fixes the
    // zone that dates print in.
    c.env("HOME", home).env("TZ", "UTC").env_remove("RUST_LOG");
    c
}

/// `corral cli -server ADDR ARGS...` (non-interactive).
pub fn cli(home: &Path, addr: &str, args: &[&str]) -> Run {
    let out = corral_cmd(home)
        .arg("cli")
        .arg("-server")
        .arg(addr)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run corral cli");
    finish(out)
}

/// Feeds `script` to a program's stdin and collects its output.
fn piped(mut cmd: Command, script: &str) -> Run {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn shell");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .expect("write script");
    finish(child.wait_with_output().expect("wait for shell"))
}

/// `corral cli -server ADDR < script`.
pub fn cli_script(home: &Path, addr: &str, script: &str) -> Run {
    let mut c = corral_cmd(home);
    c.arg("cli").arg("-server").arg(addr);
    piped(c, script)
}

/// `zkCli.sh -server ADDR < script`.
pub fn zkcli_script(addr: &str, script: &str) -> Run {
    let mut c = Command::new(ZKCLI);
    c.arg("-server").arg(addr).env("TZ", "UTC");
    piped(c, script)
}

/// Replaces what may differ between two correct runs: dates, zxids, owners, ports; drops
/// banner and logging lines that are not part of any command's output.
pub fn normalize(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        if line.starts_with("SLF4J:")
            || line == "Welcome to ZooKeeper!"
            || line.starts_with("JLine support is")
        {
            continue;
        }
        let line = if let Some((key, _)) = line.split_once(" = 0x") {
            format!("{key} = 0xN")
        } else if line.starts_with("ctime = ") || line.starts_with("mtime = ") {
            format!("{} = DATE", &line[..5])
        } else {
            line.to_string()
        };
        // Ports of the servers under test.
        let line = match line.find("127.0.0.1:") {
            Some(i) => {
                let rest = &line[i + "127.0.0.1:".len()..];
                let digits = rest.chars().take_while(char::is_ascii_digit).count();
                format!("{}127.0.0.1:PORT{}", &line[..i], &rest[digits..])
            }
            None => line,
        };
        out.push_str(&line);
        out.push('\n');
    }
    out
}

/// Whether Debian's zkCli and a JVM are installed (the differential test needs both).
pub fn have_zkcli() -> bool {
    Path::new(ZKCLI).exists()
        && Path::new("/usr/share/java/zookeeper.jar").exists()
        && Command::new("java")
            .arg("-version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
}
