//! The nemesis: a schedule of faults drawn from a seed, carried out against the ensemble, and
//! healed. One fault is active at a time: quiet period, fault, hold, heal.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::ensemble::Ensemble;
use crate::net::NetError;

/// Families of faults, as named on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Fault {
    Kill,
    Pause,
    Partition,
    /// Power loss on faultfs (the run puts every member's data directory on a mount).
    Power,
    /// A member's filesystem fills up (`disk.rs`).
    DiskFull,
    /// Links between members lose packets at random (`loss.rs`).
    Lossy,
    /// Links between members are delayed (`proxy.rs`).
    Slow,
}

impl Fault {
    pub fn parse(s: &str) -> Option<Fault> {
        match s {
            "kill" => Some(Fault::Kill),
            "pause" => Some(Fault::Pause),
            "partition" => Some(Fault::Partition),
            "power" => Some(Fault::Power),
            "diskfull" => Some(Fault::DiskFull),
            "lossy" => Some(Fault::Lossy),
            "slow" => Some(Fault::Slow),
            _ => None,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Fault::Kill => "kill",
            Fault::Pause => "pause",
            Fault::Partition => "partition",
            Fault::Power => "power",
            Fault::DiskFull => "diskfull",
            Fault::Lossy => "lossy",
            Fault::Slow => "slow",
        }
    }

    /// Families that need the members in network namespaces.
    pub fn needs_network(self) -> bool {
        matches!(self, Fault::Partition | Fault::Lossy | Fault::Slow)
    }
}

/// When a fault was active, in ns of the history's clock (for the per-phase table).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultWindow {
    pub fault: Fault,
    pub start_ns: u64,
    pub end_ns: u64,
}

/// One concrete fault. Targets are resolved when it starts (who leads is known only then).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// SIGKILL one member chosen at random, restart it at heal time.
    KillRandom,
    /// SIGKILL the leader, restart it at heal time.
    KillLeader,
    /// SIGSTOP the leader (for longer than the clients' session timeout), SIGCONT at heal.
    PauseLeader,
    /// Cut the leader off from every other member.
    IsolateLeader,
    /// Random majority | minority split.
    SplitMajority,
    /// Two halves that both reach one member in the middle (the bridge).
    Bridge,
    /// One random member stops sending to the others (it still receives).
    Asymmetric,
    /// Power loss of one member chosen at random: SIGKILL and its unsynced writes dropped;
    /// restarted at heal time.
    PowerRandom,
    /// Power loss of the leader.
    PowerLeader,
    /// Power loss of every member at the same instant.
    PowerAll,
    /// Fill a random member's filesystem with ballast until ENOSPC; delete it at heal time.
    FillDiskRandom,
    /// Fill the leader's filesystem.
    FillDiskLeader,
    /// Every link of the leader loses [`LEADER_LOSS_PCT`] % of its packets, both ways.
    LossyLeader,
    /// Every link between members loses [`ALL_LOSS_PCT`] % of its packets, both ways.
    LossyAll,
    /// Every link of the leader is delayed by [`LEADER_DELAY_MS`] each way.
    SlowLeader,
    /// Every link between members is delayed by [`ALL_DELAY_MS`] each way.
    SlowAll,
}

/// One-way delay of [`Action::SlowLeader`]: every round trip of the leader takes 140 ms.
/// openraft 0.9 gives each AppendEntries the heartbeat interval to answer (about 166 ms at
/// tickTime 2000), so a round trip longer than that stops replication altogether: the
/// delays stay below it (RELIABILITY.md, "slow").
pub const LEADER_DELAY_MS: u64 = 70;
/// One-way delay of [`Action::SlowAll`]: a slow wide-area link.
pub const ALL_DELAY_MS: u64 = 40;

/// Loss rate of [`Action::LossyLeader`]: heavy enough that TCP backs off for seconds.
pub const LEADER_LOSS_PCT: u32 = 30;
/// Loss rate of [`Action::LossyAll`]: a bad network that still carries traffic.
pub const ALL_LOSS_PCT: u32 = 10;

impl Action {
    pub fn fault(self) -> Fault {
        match self {
            Action::KillRandom | Action::KillLeader => Fault::Kill,
            Action::PauseLeader => Fault::Pause,
            Action::IsolateLeader | Action::SplitMajority | Action::Bridge | Action::Asymmetric => {
                Fault::Partition
            }
            Action::PowerRandom | Action::PowerLeader | Action::PowerAll => Fault::Power,
            Action::FillDiskRandom | Action::FillDiskLeader => Fault::DiskFull,
            Action::LossyLeader | Action::LossyAll => Fault::Lossy,
            Action::SlowLeader | Action::SlowAll => Fault::Slow,
        }
    }
}

/// One step of the schedule, relative to the previous step's heal.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Step {
    pub quiet_ms: u64,
    pub action: Action,
    pub hold_ms: u64,
}

/// Draws steps from `seed` until `total` would be exceeded. `pause_hold_ms` is how long a
/// pause lasts (longer than the clients' session timeout).
pub fn schedule(seed: u64, faults: &[Fault], total: Duration, pause_hold_ms: u64) -> Vec<Step> {
    let mut rng = StdRng::seed_from_u64(seed);
    let actions_of = |f: Fault| -> &'static [Action] {
        match f {
            Fault::Kill => &[Action::KillRandom, Action::KillLeader],
            Fault::Pause => &[Action::PauseLeader],
            Fault::Partition => &[
                Action::IsolateLeader,
                Action::SplitMajority,
                Action::Bridge,
                Action::Asymmetric,
            ],
            // One member (at random or the leader) most of the time, all of them sometimes.
            Fault::Power => &[
                Action::PowerRandom,
                Action::PowerRandom,
                Action::PowerLeader,
                Action::PowerAll,
            ],
            Fault::DiskFull => &[Action::FillDiskRandom, Action::FillDiskLeader],
            Fault::Lossy => &[Action::LossyLeader, Action::LossyAll],
            Fault::Slow => &[Action::SlowLeader, Action::SlowAll],
        }
    };
    let mut steps = Vec::new();
    if faults.is_empty() {
        return steps;
    }
    let total_ms = total.as_millis() as u64;
    let mut at_ms = 0u64;
    // Cycle through the fault families in a seeded order, so a short run still sees each one;
    // within a family the action is drawn at random.
    let mut bag: Vec<Fault> = Vec::new();
    loop {
        if bag.is_empty() {
            bag = faults.to_vec();
            bag.shuffle(&mut rng);
        }
        let family = bag.pop().expect("refilled above");
        let action = *actions_of(family)
            .choose(&mut rng)
            .expect("every family has actions");
        let quiet_ms = rng.gen_range(2_000..4_000);
        let hold_ms = match action.fault() {
            Fault::Pause => pause_hold_ms,
            _ => rng.gen_range(3_000..7_000),
        };
        if at_ms + quiet_ms + hold_ms > total_ms {
            break;
        }
        at_ms += quiet_ms + hold_ms;
        steps.push(Step {
            quiet_ms,
            action,
            hold_ms,
        });
    }
    steps
}

#[derive(Debug, thiserror::Error)]
pub enum NemesisError {
    #[error("network: {0}")]
    Net(#[from] NetError),
    #[error("{0} needs network namespaces, which this run does not have")]
    NoNetwork(&'static str),
    #[error("power loss needs the members on faultfs, which this run does not have")]
    NoFaultFs,
    #[error("{0} needs a filesystem per member, which this run does not have")]
    NoDisks(&'static str),
    #[error("{0} needs the delaying proxies, which this run does not have")]
    NoProxies(&'static str),
    #[error("restarting a member: {0}")]
    Ensemble(#[from] crate::ensemble::EnsembleError),
    #[error("disk: {0}")]
    Disk(#[from] crate::disk::DiskError),
    #[error("packet loss: {0}")]
    Loss(#[from] crate::loss::LossError),
}

/// What a started fault did, so it can be healed and logged.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Applied {
    pub description: String,
    killed: Vec<u64>,
    paused: Vec<u64>,
    partitioned: bool,
    filled: Vec<u64>,
    lossy: bool,
    slowed: bool,
}

/// Starts `action`. Targets that need a leader fall back to a random member if there is none.
pub async fn apply(
    ens: &mut Ensemble,
    action: Action,
    rng: &mut StdRng,
) -> Result<Applied, NemesisError> {
    let live = ens.live();
    let leader = ens.leader().await;
    let random = *live.choose(rng).unwrap_or(&1);
    let target = leader.unwrap_or(random);
    let who = |id: u64| {
        if Some(id) == leader {
            format!("member {id} (leader)")
        } else {
            format!("member {id}")
        }
    };
    let mut applied = Applied::default();
    match action {
        Action::KillRandom | Action::KillLeader => {
            let id = if action == Action::KillLeader {
                target
            } else {
                random
            };
            ens.kill9(id);
            applied.killed.push(id);
            applied.description = format!("kill -9 {}", who(id));
        }
        Action::PowerRandom | Action::PowerLeader | Action::PowerAll => {
            if ens.faultfs.is_empty() {
                return Err(NemesisError::NoFaultFs);
            }
            let ids = match action {
                Action::PowerAll => ens.ids(),
                Action::PowerLeader => vec![target],
                _ => vec![random],
            };
            let losses = ens.power_loss(&ids);
            let bytes: u64 = losses.iter().map(|(_, l)| l.bytes).sum();
            applied.killed.extend(&ids);
            applied.description = if action == Action::PowerAll {
                format!("power loss of all members ({bytes} unsynced bytes dropped)")
            } else {
                format!(
                    "power loss of {} ({bytes} unsynced bytes dropped)",
                    who(ids[0])
                )
            };
        }
        Action::PauseLeader => {
            ens.pause(target);
            applied.paused.push(target);
            applied.description = format!("SIGSTOP {}", who(target));
        }
        Action::IsolateLeader | Action::SplitMajority | Action::Bridge | Action::Asymmetric => {
            let mut ids = ens.ids();
            let net = ens
                .network
                .as_mut()
                .ok_or(NemesisError::NoNetwork("partition"))?;
            applied.partitioned = true;
            match action {
                Action::IsolateLeader => {
                    let rest: Vec<u64> = ids.iter().copied().filter(|&i| i != target).collect();
                    net.cut_between(&[target], &rest)?;
                    applied.description = format!("isolate {}", who(target));
                }
                Action::SplitMajority => {
                    ids.shuffle(rng);
                    let (minority, majority) = ids.split_at(ids.len() / 2);
                    net.cut_between(minority, majority)?;
                    applied.description = format!("split {minority:?} | {majority:?}");
                }
                Action::Bridge => {
                    ids.shuffle(rng);
                    let middle = ids[0];
                    let rest = &ids[1..];
                    let (a, b) = rest.split_at(rest.len() / 2);
                    net.cut_between(a, b)?;
                    applied.description = format!("bridge {a:?} <-> {middle} <-> {b:?}");
                }
                Action::Asymmetric => {
                    let rest: Vec<u64> = ids.iter().copied().filter(|&i| i != random).collect();
                    for &other in &rest {
                        net.cut(random, other)?;
                    }
                    applied.description =
                        format!("{} sends nothing to {rest:?} (receives still)", who(random));
                }
                _ => unreachable!("partition actions only"),
            }
        }
        Action::FillDiskRandom | Action::FillDiskLeader => {
            let id = if action == Action::FillDiskLeader {
                target
            } else {
                random
            };
            let disks = ens
                .disks
                .as_mut()
                .ok_or(NemesisError::NoDisks("diskfull"))?;
            let ballast_bytes = disks.fill(id)?;
            applied.filled.push(id);
            applied.description = format!(
                "fill the disk of {} ({} MiB of ballast)",
                who(id),
                ballast_bytes >> 20
            );
        }
        Action::LossyLeader | Action::LossyAll => {
            let ids = ens.ids();
            let net = ens
                .network
                .as_ref()
                .ok_or(NemesisError::NoNetwork("lossy"))?;
            applied.lossy = true;
            if action == Action::LossyLeader {
                let rest: Vec<u64> = ids.iter().copied().filter(|&i| i != target).collect();
                crate::loss::add_between(net, &[target], &rest, LEADER_LOSS_PCT)?;
                applied.description = format!(
                    "{LEADER_LOSS_PCT}% packet loss on every link of {}",
                    who(target)
                );
            } else {
                crate::loss::add_between(net, &ids, &ids, ALL_LOSS_PCT)?;
                applied.description = format!("{ALL_LOSS_PCT}% packet loss on every peer link");
            }
        }
        Action::SlowLeader | Action::SlowAll => {
            let ids = ens.ids();
            let proxies = ens
                .proxies
                .as_ref()
                .ok_or(NemesisError::NoProxies("slow"))?;
            applied.slowed = true;
            if action == Action::SlowLeader {
                for &other in ids.iter().filter(|&&i| i != target) {
                    proxies.set_delay(target, other, LEADER_DELAY_MS);
                }
                applied.description = format!(
                    "{LEADER_DELAY_MS} ms delay each way on every link of {}",
                    who(target)
                );
            } else {
                for &a in &ids {
                    for &b in &ids {
                        proxies.set_delay(a, b, ALL_DELAY_MS);
                    }
                }
                applied.description =
                    format!("{ALL_DELAY_MS} ms delay each way on every peer link");
            }
        }
    }
    Ok(applied)
}

/// Undoes what [`apply`] did. Returns notes for the nemesis log: a member that exited by
/// itself while its disk was full (Corral stops on a failed log write, as ZooKeeper does) is
/// restarted once the space is back, and said so.
pub fn heal(ens: &mut Ensemble, applied: &Applied) -> Result<Vec<String>, NemesisError> {
    let mut notes = Vec::new();
    for &id in &applied.filled {
        if let Some(disks) = ens.disks.as_mut() {
            disks.drain(id)?;
        }
        if let Some(status) = ens.reap_exited(id) {
            notes.push(format!(
                "member {id} had exited ({status}) on the full disk; restarted"
            ));
            ens.restart(id)?;
        }
    }
    for &id in &applied.paused {
        ens.resume(id);
    }
    for &id in &applied.killed {
        ens.restart(id)?;
    }
    if applied.partitioned {
        if let Some(net) = ens.network.as_mut() {
            net.heal()?;
        }
    }
    if applied.lossy {
        if let Some(net) = ens.network.as_ref() {
            crate::loss::clear(net, &ens.ids())?;
        }
    }
    if applied.slowed {
        if let Some(proxies) = ens.proxies.as_ref() {
            proxies.clear();
        }
    }
    Ok(notes)
}

/// Heals everything, whatever was applied: resumes, restarts, removes every cut.
pub fn heal_all(ens: &mut Ensemble) -> Result<(), NemesisError> {
    if let Some(disks) = ens.disks.as_mut() {
        disks.drain_all()?;
    }
    if let Some(proxies) = ens.proxies.as_ref() {
        proxies.clear();
    }
    for id in ens.ids() {
        ens.resume(id);
        ens.restart(id)?;
    }
    if let Some(net) = ens.network.as_mut() {
        net.heal()?;
    }
    // Loss rules can exist only where iptables runs.
    if let Some(net) = ens.network.as_ref() {
        if crate::loss::unavailable_reason().is_none() {
            crate::loss::clear(net, &ens.ids())?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_is_a_function_of_the_seed_and_fits_the_time() {
        let faults = [Fault::Kill, Fault::Pause, Fault::Partition, Fault::Power];
        let a = schedule(7, &faults, Duration::from_secs(60), 5_000);
        let b = schedule(7, &faults, Duration::from_secs(60), 5_000);
        assert_eq!(format!("{a:?}"), format!("{b:?}"));
        let total: u64 = a.iter().map(|s| s.quiet_ms + s.hold_ms).sum();
        assert!(total <= 60_000, "{total}");
        assert!(a.len() >= 5, "{a:?}");
        // Every family appears in a run long enough for one pass through the bag.
        for f in faults {
            assert!(
                a.iter().any(|s| s.action.fault() == f),
                "{f:?} missing: {a:?}"
            );
        }
        assert!(schedule(1, &[], Duration::from_secs(60), 5_000).is_empty());
    }

    #[test]
    fn new_fault_families_parse_schedule_and_need_what_they_use() {
        let faults = [Fault::DiskFull, Fault::Lossy, Fault::Slow];
        for f in faults {
            assert_eq!(Fault::parse(f.name()), Some(f));
        }
        assert!(!Fault::DiskFull.needs_network());
        assert!(Fault::Lossy.needs_network() && Fault::Slow.needs_network());
        let steps = schedule(3, &faults, Duration::from_secs(60), 5_000);
        for f in faults {
            assert!(
                steps.iter().any(|s| s.action.fault() == f),
                "{f:?} missing: {steps:?}"
            );
        }
    }
}
