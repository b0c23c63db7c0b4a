//! Network namespaces for partitions: each member runs in its own namespace with a veth pair
//! into one bridge in the root namespace, where the clients run. A partition is a set of
//! blackhole routes inside the members' namespaces (no iptables needed): `cut(a, b)` makes
//! member `a` drop every packet it would send to `b`.
//!
//! Everything is named with a per-run prefix and removed on drop, also when the run panics.

use std::net::Ipv4Addr;
use std::process::Command;

use rand::Rng;

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("`ip {args}` failed: {stderr}")]
    Ip { args: String, stderr: String },
    #[error("cannot run `ip`: {0}")]
    Spawn(std::io::Error),
}

fn ip(args: &[&str]) -> Result<(), NetError> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(NetError::Spawn)?;
    if out.status.success() {
        Ok(())
    } else {
        Err(NetError::Ip {
            args: args.join(" "),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

/// The namespaces, veths and bridge of one run.
pub struct Network {
    prefix: String,
    /// First three octets of the run's /24.
    subnet: [u8; 3],
    members: Vec<u64>,
    created_ns: Vec<String>,
    created_links: Vec<String>,
    /// Blackhole routes in place: (member whose namespace holds it, member it points at).
    cuts: Vec<(u64, u64)>,
}

impl Network {
    /// Why partitions cannot run here, if they cannot: the caller prints it and skips them.
    pub fn unavailable_reason() -> Option<String> {
        // SAFETY: geteuid(2) has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            return Some("network namespaces need root".into());
        }
        match Command::new("ip").args(["netns", "list"]).output() {
            Ok(o) if o.status.success() => None,
            Ok(o) => Some(format!(
                "`ip netns list` failed: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            )),
            Err(e) => Some(format!("cannot run `ip`: {e}")),
        }
    }

    /// Creates a namespace per member and the bridge joining them to the root namespace.
    pub fn create(members: &[u64]) -> Result<Network, NetError> {
        let mut rng = rand::thread_rng();
        // Short, because interface names are limited to 15 bytes.
        let prefix = format!("cc{:04x}", rng.gen::<u16>());
        let subnet = [10, rng.gen_range(100..250), rng.gen::<u8>()];
        let mut net = Network {
            prefix,
            subnet,
            members: members.to_vec(),
            created_ns: Vec::new(),
            created_links: Vec::new(),
            cuts: Vec::new(),
        };
        net.build()?;
        Ok(net)
    }

    fn build(&mut self) -> Result<(), NetError> {
        let bridge = format!("{}br", self.prefix);
        ip(&["link", "add", &bridge, "type", "bridge"])?;
        self.created_links.push(bridge.clone());
        let gateway = format!("{}/24", self.gateway());
        ip(&["addr", "add", &gateway, "dev", &bridge])?;
        ip(&["link", "set", &bridge, "up"])?;
        for id in self.members.clone() {
            let ns = self.namespace(id);
            ip(&["netns", "add", &ns])?;
            self.created_ns.push(ns.clone());
            let host_end = format!("{}h{id}", self.prefix);
            let ns_end = format!("{}n{id}", self.prefix);
            ip(&[
                "link", "add", &host_end, "type", "veth", "peer", "name", &ns_end,
            ])?;
            self.created_links.push(host_end.clone());
            ip(&["link", "set", &ns_end, "netns", &ns])?;
            let addr = format!("{}/24", self.member_ip(id));
            ip(&["-n", &ns, "addr", "add", &addr, "dev", &ns_end])?;
            ip(&["-n", &ns, "link", "set", &ns_end, "up"])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            ip(&["link", "set", &host_end, "master", &bridge])?;
            ip(&["link", "set", &host_end, "up"])?;
        }
        Ok(())
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The bridge's address: where members see the clients come from.
    pub fn gateway(&self) -> Ipv4Addr {
        let [a, b, c] = self.subnet;
        Ipv4Addr::new(a, b, c, 254)
    }

    pub fn member_ip(&self, id: u64) -> Ipv4Addr {
        let [a, b, c] = self.subnet;
        Ipv4Addr::new(a, b, c, id as u8)
    }

    pub fn namespace(&self, id: u64) -> String {
        format!("{}-m{id}", self.prefix)
    }

    /// Member `from` drops every packet to member `to` from now on (one direction).
    pub fn cut(&mut self, from: u64, to: u64) -> Result<(), NetError> {
        if from == to || self.cuts.contains(&(from, to)) {
            return Ok(());
        }
        let dest = format!("{}/32", self.member_ip(to));
        ip(&[
            "-n",
            &self.namespace(from),
            "route",
            "add",
            "blackhole",
            &dest,
        ])?;
        self.cuts.push((from, to));
        Ok(())
    }

    /// Cuts both directions between every member of `a` and every member of `b`.
    pub fn cut_between(&mut self, a: &[u64], b: &[u64]) -> Result<(), NetError> {
        for &x in a {
            for &y in b {
                self.cut(x, y)?;
                self.cut(y, x)?;
            }
        }
        Ok(())
    }

    /// Removes every blackhole route.
    pub fn heal(&mut self) -> Result<(), NetError> {
        while let Some(&(from, to)) = self.cuts.last() {
            let dest = format!("{}/32", self.member_ip(to));
            ip(&[
                "-n",
                &self.namespace(from),
                "route",
                "del",
                "blackhole",
                &dest,
            ])?;
            self.cuts.pop();
        }
        Ok(())
    }

    pub fn cuts(&self) -> &[(u64, u64)] {
        &self.cuts
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        // Deleting a namespace deletes the veth ends inside it, and with them their peers.
        for ns in self.created_ns.drain(..) {
            if let Err(e) = ip(&["netns", "del", &ns]) {
                tracing::warn!(%e, "removing a namespace");
            }
        }
        for link in self.created_links.drain(..).rev() {
            // Already gone with its namespace's peer, unless the namespace was never made.
            let _ = ip(&["link", "del", &link]);
        }
    }
}
