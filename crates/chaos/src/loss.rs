//! Packet loss on the links between members, for the `lossy` nemesis: inside a member's
//! network namespace, an iptables rule drops each packet it sends to a given peer with a fixed
//! probability (`-m statistic --mode random`). The loss is real IP-level loss — TCP
//! retransmits, backs off and slows down exactly as on a bad network — and touches only
//! member-to-member traffic (the rules match member addresses; clients talk to the members
//! from the root namespace through the bridge gateway, which no rule matches).
//!
//! Why iptables: the kernel here has no `sch_netem` (the usual `tc qdisc ... netem loss`), no
//! `gact` action and no `matchall`/`basic`/`flower` classifiers, so tc cannot drop at random;
//! netfilter with the `statistic` match can. Delay has no kernel equivalent on this machine
//! (netem, fq with EDT and etf are all missing), so only loss is injected.
//!
//! The harness is the only user of iptables in the per-run namespaces, so healing flushes the
//! OUTPUT chain of the namespaces it touched; the rules vanish with the namespaces anyway.

use std::process::Command;

use crate::net::Network;

#[derive(Debug, thiserror::Error)]
pub enum LossError {
    #[error("`{cmd}` failed: {stderr}")]
    Command { cmd: String, stderr: String },
    #[error("cannot run iptables: {0}")]
    Spawn(std::io::Error),
}

fn iptables_in(namespace: &str, args: &[&str]) -> Result<(), LossError> {
    let out = Command::new("ip")
        .args(["netns", "exec", namespace, "iptables", "-w"])
        .args(args)
        .output()
        .map_err(LossError::Spawn)?;
    if out.status.success() {
        Ok(())
    } else {
        Err(LossError::Command {
            cmd: format!("ip netns exec {namespace} iptables -w {}", args.join(" ")),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

/// Why packet loss cannot be injected here, if it cannot (the caller prints it and skips it).
/// Needs what partitions need (root, `ip netns`) plus the `iptables` command.
pub fn unavailable_reason() -> Option<String> {
    if let Some(r) = Network::unavailable_reason() {
        return Some(r);
    }
    match Command::new("iptables").arg("--version").output() {
        Ok(o) if o.status.success() => None,
        Ok(o) => Some(format!(
            "`iptables --version` failed: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(e) => Some(format!(
            "cannot run iptables ({e}); install the Debian package `iptables`"
        )),
    }
}

/// Member `from` drops `loss_pct` percent of the packets it sends to member `to`, at random,
/// from now until [`clear`].
pub fn add(net: &Network, from: u64, to: u64, loss_pct: u32) -> Result<(), LossError> {
    let probability = format!("{:.4}", f64::from(loss_pct.min(100)) / 100.0);
    let dest = format!("{}/32", net.member_ip(to));
    iptables_in(
        &net.namespace(from),
        &[
            "-A",
            "OUTPUT",
            "-d",
            &dest,
            "-m",
            "statistic",
            "--mode",
            "random",
            "--probability",
            &probability,
            "-j",
            "DROP",
        ],
    )
}

/// Every link between a member of `a` and a member of `b` loses `loss_pct` percent of its
/// packets in each direction.
pub fn add_between(net: &Network, a: &[u64], b: &[u64], loss_pct: u32) -> Result<(), LossError> {
    for &x in a {
        for &y in b {
            if x != y {
                add(net, x, y, loss_pct)?;
                add(net, y, x, loss_pct)?;
            }
        }
    }
    Ok(())
}

/// Removes every loss rule of the given members' namespaces.
pub fn clear(net: &Network, members: &[u64]) -> Result<(), LossError> {
    for &id in members {
        iptables_in(&net.namespace(id), &["-F", "OUTPUT"])?;
    }
    Ok(())
}

/// The packets member `id` has dropped by rule so far (for tests and logs).
pub fn dropped_packets(net: &Network, id: u64) -> Result<u64, LossError> {
    let out = Command::new("ip")
        .args(["netns", "exec", &net.namespace(id)])
        .args(["iptables", "-w", "-L", "OUTPUT", "-v", "-n", "-x"])
        .output()
        .map_err(LossError::Spawn)?;
    let text = String::from_utf8_lossy(&out.stdout);
    // Rows after the two header lines: "pkts bytes target ...".
    Ok(text
        .lines()
        .skip(2)
        .filter(|l| l.contains("DROP"))
        .filter_map(|l| l.split_whitespace().next()?.parse::<u64>().ok())
        .sum())
}
