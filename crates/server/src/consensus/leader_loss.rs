//! Noticing a dead leader at once, instead of waiting for openraft's timers.
//!
//! openraft's followers call an election only after `leader_lease + election_timeout` without a
//! heartbeat, and refuse to vote while their own lease lasts. A leader whose process died
//! closes its peer connections, and its peer port refuses new ones: that is certain, and
//! seen within a millisecond. When the connection from the leader ends, a follower probes the
//! leader's peer port; if the connection is refused:
//!
//! 1. it campaigns at once. Every survivor does, which gives up their leases (a candidate's
//!    vote is not committed, so it grants a higher term). openraft breaks the tie between
//!    candidates of one term in favour of the higher member id, so the survivor with the
//!    highest id wins this round — if its log is as up to date as the others';
//! 2. otherwise the round fails. Every survivor asks the others for their log's last entry
//!    and term ([`LogState`]); the one with the most up-to-date log (the highest id among
//!    equals, as in round 1) campaigns again once the others have campaigned, and wins the
//!    next term with their votes. The others do nothing more.
//!
//! When something does not go as planned (a survivor does not answer, a vote is refused),
//! openraft's timers elect a leader as they would have anyway. An election is always safe in
//! Raft; the risk is only disrupting a live leader, and a port that refuses connections has no
//! live member behind it. A partition or a frozen process (connections time out instead of
//! being refused) is left to the timers.

use std::time::Duration;

use openraft::{Raft, ServerState};
use serde::{Deserialize, Serialize};

use super::network::Peers;
use super::{decode, kind, peer_addr, LogStore, MemberId, TypeConfig};

/// How long the probe of the leader's peer port may take; a refusal takes microseconds, and
/// anything slower means "not certainly dead".
const PROBE_TIMEOUT: Duration = Duration::from_millis(200);

/// Probes of the leader's port before deciding it is alive (see [`refused`]).
const PROBES: u32 = 5;

/// Pause between two probes.
const PROBE_PAUSE: Duration = Duration::from_millis(10);

/// How long a survivor's answer about its log may take.
const ASK_TIMEOUT: Duration = Duration::from_millis(100);

/// Pause before each round of asking: round 1 is usually decided within it.
const ASK_AGAIN_AFTER: Duration = Duration::from_millis(10);

/// Rounds of asking before leaving the election to the timers.
const ASK_ROUNDS: u32 = 20;

/// A member's answer to "how far is your log": its current term and its last entry's
/// `(term, index)`, compared as Raft compares logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct LogState {
    pub term: u64,
    pub last: Option<(u64, u64)>,
}

/// This member's [`LogState`], answered to a survivor that asks.
pub(super) fn log_state(raft: &Raft<TypeConfig>, log: &LogStore) -> LogState {
    LogState {
        term: raft.metrics().borrow().current_term,
        last: log.last_log_term_index(),
    }
}

/// Member `from`'s connection to this member ended: if it was the leader and its peer port now
/// refuses connections, campaign without waiting for the election timers.
pub(super) async fn on_peer_closed(
    raft: Raft<TypeConfig>,
    log: LogStore,
    peers: Peers,
    my_id: MemberId,
    from: MemberId,
) {
    let Some((term, addr, survivors, voters)) = leader_to_check(&raft, my_id, from) else {
        return;
    };
    if !refused(&addr).await {
        tracing::info!(
            term,
            leader = from,
            %addr,
            "the leader's peer connection ended but its port still accepts connections"
        );
        return;
    }
    // Still following the same leader in the same term: nobody has acted yet.
    if leader_to_check(&raft, my_id, from).map(|(t, ..)| t) != Some(term) {
        return;
    }
    tracing::info!(
        term,
        leader = from,
        %addr,
        "the leader's peer port refuses connections: campaigning now"
    );
    if raft.trigger().elect().await.is_err() {
        return;
    }
    for _ in 0..ASK_ROUNDS {
        tokio::time::sleep(ASK_AGAIN_AFTER).await;
        if raft.metrics().borrow().current_leader.is_some() {
            return; // round 1 (or a later one) elected a leader
        }
        // Compared as openraft compares candidates: the log first, then the member id.
        let mine = (log.last_log_term_index(), my_id);
        let mut answered = 1; // this member
        let mut all_campaigned = true;
        for id in survivors.iter().copied().filter(|id| *id != my_id) {
            let Some(state) = ask(&peers, &raft, id).await else {
                continue;
            };
            answered += 1;
            all_campaigned &= state.term > term;
            if (state.last, id) > mine {
                return; // that survivor's log is ahead: it campaigns, this member votes
            }
        }
        if answered * 2 <= voters {
            return; // no majority to win with: the timers decide
        }
        if all_campaigned {
            if raft.metrics().borrow().current_leader.is_some() {
                return;
            }
            tracing::info!(
                term = raft.metrics().borrow().current_term,
                "this survivor's log is the most up to date: campaigning again"
            );
            let _ = raft.trigger().elect().await;
            return;
        }
    }
}

/// Whether `addr` refuses connections. A process being killed closes its connections and its
/// listening socket one after the other, so a probe right after the connection ended may
/// still be accepted: a few probes a short pause apart tell a dying process from a live one.
async fn refused(addr: &str) -> bool {
    for attempt in 0..PROBES {
        if attempt > 0 {
            tokio::time::sleep(PROBE_PAUSE).await;
        }
        let probe = tokio::time::timeout(PROBE_TIMEOUT, tokio::net::TcpStream::connect(addr));
        if let Ok(Err(e)) = probe.await {
            if e.kind() == std::io::ErrorKind::ConnectionRefused {
                return true;
            }
        }
    }
    false
}

async fn ask(peers: &Peers, raft: &Raft<TypeConfig>, id: MemberId) -> Option<LogState> {
    let client = peers.get(id, raft)?;
    let answer = client
        .call(kind::LOG_STATE, bytes::Bytes::new(), ASK_TIMEOUT)
        .await
        .ok()?;
    decode(&answer).ok()
}

/// When this member is a voting follower of `from`: the term, `from`'s peer address, the
/// other voters (this member included) and how many voters there are.
fn leader_to_check(
    raft: &Raft<TypeConfig>,
    my_id: MemberId,
    from: MemberId,
) -> Option<(u64, String, Vec<MemberId>, usize)> {
    let m = raft.metrics().borrow().clone();
    if m.state != ServerState::Follower || m.current_leader != Some(from) {
        return None;
    }
    let membership = m.membership_config.membership();
    let voters: Vec<MemberId> = membership.voter_ids().collect();
    if !voters.contains(&my_id) {
        return None;
    }
    let survivors: Vec<MemberId> = voters.iter().copied().filter(|id| *id != from).collect();
    let node = membership.get_node(&from)?;
    Some((
        m.current_term,
        peer_addr(&node.addr),
        survivors,
        voters.len(),
    ))
}
