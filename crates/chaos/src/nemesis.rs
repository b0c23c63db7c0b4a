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
}

impl Fault {
    pub fn parse(s: &str) -> Option<Fault> {
        match s {
            "kill" => Some(Fault::Kill),
            "pause" => Some(Fault::Pause),
            "partition" => Some(Fault::Partition),
            "power" => Some(Fault::Power),
            _ => None,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Fault::Kill => "kill",
            Fault::Pause => "pause",
            Fault::Partition => "partition",
            Fault::Power => "power",
        }
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
}

impl Action {
    pub fn fault(self) -> Fault {
        match self {
            Action::KillRandom | Action::KillLeader => Fault::Kill,
            Action::PauseLeader => Fault::Pause,
            Action::IsolateLeader | Action::SplitMajority | Action::Bridge | Action::Asymmetric => {
                Fault::Partition
            }
            Action::PowerRandom | Action::PowerLeader | Action::PowerAll => Fault::Power,
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
    #[error("restarting a member: {0}")]
    Ensemble(#[from] crate::ensemble::EnsembleError),
}

/// What a started fault did, so it can be healed and logged.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Applied {
    pub description: String,
    killed: Vec<u64>,
    paused: Vec<u64>,
    partitioned: bool,
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
    }
    Ok(applied)
}

/// Undoes what [`apply`] did.
pub fn heal(ens: &mut Ensemble, applied: &Applied) -> Result<(), NemesisError> {
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
    Ok(())
}

/// Heals everything, whatever was applied: resumes, restarts, removes every cut.
pub fn heal_all(ens: &mut Ensemble) -> Result<(), NemesisError> {
    for id in ens.ids() {
        ens.resume(id);
        ens.restart(id)?;
    }
    if let Some(net) = ens.network.as_mut() {
        net.heal()?;
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
}
