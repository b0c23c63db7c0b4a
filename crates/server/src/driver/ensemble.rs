//! The driver as a member of an ensemble: the pipeline around the consensus seam.
//!
//! - Leader: requests are prepared and applied to the core at once (as standalone), their txns
//!   are proposed to the ensemble instead of written to a local log, and the replies and
//!   events they produced are held until the txn is committed (`durable_zxid` is the
//!   committed zxid here). Requests other members forward are prepared the same way; their
//!   txns carry the origin so that member answers its client.
//! - Follower / observer: writes, new sessions and `sync` are forwarded to the leader; every
//!   committed entry is applied to the core, which fires this member's watches and answers the
//!   requests that came through this member. Session touches go to the leader every tick.
//! - The leader's core runs ahead of what is committed. If leadership is lost while txns are
//!   outstanding, the core is rebuilt from the committed log and every client connection is
//!   closed (clients resume their sessions elsewhere). Any change of leader closes client
//!   connections, as ZooKeeper's members do; a member without a leader accepts none.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{mpsc, oneshot};

use super::{core_now, Driver, Inbound, Outbound, ServerError};
use crate::admin::metrics::{SummaryFigures, SummaryStats, Timings, BASIC_QUANTILES};
use crate::consensus::{
    Applied, Consensus, Event, LogStore, MemberId, MemberState, Origin, Payload, Settings,
    SnapshotImage, SnapshotTaken, Status,
};
use crate::consensus::{PayloadsError, ReconfigError};
use crate::core::{ConnId, Core, Forward, ForwardRequest, ReconfigCall, Role};

/// Most bytes of forwards held while this member is elected but not ready; beyond them a
/// forward is refused ("not the leader"), as all were before. Readiness takes one commit
/// round, so this bounds memory only when a quorum vanishes at the moment of an election.
const MAX_PARKED_FORWARD_BYTES: usize = 64 * 1024 * 1024;

/// How often a rebuild of the state starts again because the log was purged under it (each
/// time a newer snapshot exists; more than one in a row means snapshots come faster than a
/// rebuild takes, which the snapshot interval rules out).
const REBUILD_ATTEMPTS: u32 = 5;

/// The consensus side of a driver that is an ensemble member.
pub(crate) struct Ensemble {
    pub consensus: Consensus,
    pub log: LogStore,
    events: mpsc::UnboundedReceiver<Event>,
    /// Forwarded requests the leader refused or never acknowledged: (connection, reason).
    failed_forwards_tx: mpsc::UnboundedSender<(ConnId, String)>,
    failed_forwards: mpsc::UnboundedReceiver<(ConnId, String)>,
    pub status: Status,
    /// The term in which this member leads and prepares writes.
    ready_term: Option<u64>,
    /// Log id (index, term, leader) of the last entry applied to the core.
    applied: Option<(u64, u64, MemberId)>,
    /// The replicated session secret, once applied (or proposed by this leader).
    secret: Option<[u8; 16]>,
    /// A snapshot was asked for while this leader had uncommitted txns: client input waits
    /// in `parked` until they are committed and the view is taken.
    snapshot_waiting: Option<oneshot::Sender<SnapshotTaken>>,
    /// Input held back, in arrival order: client input while a snapshot view is awaited, and
    /// other members' forwards while this member is elected but not yet ready to lead.
    parked: VecDeque<Parked>,
    /// Roughly the bytes of the forwards in `parked`.
    parked_forward_bytes: usize,
    /// `readonlymode.enabled`: without a leader, serve read-only clients.
    read_only_enabled: bool,
    /// `corral.linearizableReads`: every read waits for a barrier through the leader's log.
    linearizable_reads: bool,
    /// Sizes of the txns proposed here while leading (`srvr`, `mntr`).
    pub proposal_sizes: crate::four_letter::ProposalSizes,
    reconfigs_tx: mpsc::UnboundedSender<ReconfigResult>,
    reconfigs: mpsc::UnboundedReceiver<ReconfigResult>,
    /// Since when this member knows no leader (set from start until the first one is known):
    /// the open interval of `election_time`.
    leaderless_since: Option<Instant>,
    /// Each leaderless interval that ended with a known leader (ZooKeeper's `election_time`).
    election_time: SummaryStats,
    /// Since when this member leads (ZooKeeper's `leader_uptime`).
    leading_since: Option<Instant>,
}

type ReconfigResult = (ReconfigCall, Option<Origin>, Result<String, ReconfigError>);

/// Input held back while a leader waits to take a snapshot view.
pub(crate) enum Parked {
    Inbound(Inbound),
    Forwarded(MemberId, Forward, oneshot::Sender<Result<(), String>>),
}

pub(crate) enum EnsembleEvent {
    Consensus(Event),
    ForwardFailed(ConnId, String),
    /// A membership change ended: the new `server.N=` lines, or why it failed.
    ReconfigDone(ReconfigCall, Option<Origin>, Result<String, ReconfigError>),
}

/// The next thing the consensus side has to say; never completes for a standalone driver.
pub(crate) async fn next_event(ensemble: &mut Option<Ensemble>) -> EnsembleEvent {
    let Some(e) = ensemble else {
        return std::future::pending().await;
    };
    tokio::select! {
        Some(ev) = e.events.recv() => EnsembleEvent::Consensus(ev),
        Some((conn, why)) = e.failed_forwards.recv() => EnsembleEvent::ForwardFailed(conn, why),
        Some((call, origin, result)) = e.reconfigs.recv() => EnsembleEvent::ReconfigDone(call, origin, result),
        else => std::future::pending().await,
    }
}

impl Ensemble {
    /// `timings` gets the Raft log's fsync and the snapshots' durations.
    pub async fn start(
        config: &crate::config::ServerConfig,
        ensemble: &crate::config::EnsembleConfig,
        timings: Arc<Timings>,
    ) -> Result<(Ensemble, Option<SnapshotImage>), ServerError> {
        let started = Instant::now();
        let (tx, events) = mpsc::unbounded_channel();
        let raft_dir = config.data_log_dir().join(super::RAFT_SUBDIR);
        let snapshot_dir = config.data_dir.join(super::RAFT_SNAPSHOT_SUBDIR);
        let settings = Settings {
            tick_time_ms: config.tick_time_ms,
            snap_count: config.snap_count,
            force_sync: config.force_sync,
            raft_dir: &raft_dir,
            snapshot_dir: &snapshot_dir,
            timings,
        };
        let (consensus, initial) = Consensus::start(ensemble, settings, tx)
            .await
            .map_err(ServerError::Consensus)?;
        let log = consensus.log_store();
        let (failed_forwards_tx, failed_forwards) = mpsc::unbounded_channel();
        let (reconfigs_tx, reconfigs) = mpsc::unbounded_channel();
        let ensemble = Ensemble {
            status: consensus.status(),
            consensus,
            log,
            events,
            failed_forwards_tx,
            failed_forwards,
            ready_term: None,
            applied: None,
            secret: None,
            snapshot_waiting: None,
            parked: VecDeque::new(),
            parked_forward_bytes: 0,
            read_only_enabled: ensemble.read_only_mode_enabled,
            linearizable_reads: ensemble.linearizable_reads,
            proposal_sizes: Default::default(),
            reconfigs_tx,
            reconfigs,
            leaderless_since: Some(started),
            election_time: SummaryStats::default(),
            leading_since: None,
        };
        Ok((ensemble, initial))
    }

    /// Client input must wait (a leader is about to take a snapshot view).
    pub fn parking(&self) -> bool {
        self.snapshot_waiting.is_some()
    }

    /// Elected, with a quorum, but not yet ready to prepare writes (it has not applied
    /// everything before its term). Forwards that reach it meanwhile wait instead of being
    /// refused: a refusal closes the client's connection on the member that forwarded, and
    /// the client would reconnect and resume its session only to be refused again until this
    /// member is ready, each round costing a reconnect during a fail-over.
    fn awaiting_readiness(&self) -> bool {
        self.status.state == MemberState::Leader
            && !self.status.quorum_lost
            && self.ready_term != Some(self.status.term)
    }

    pub fn park(&mut self, input: Parked) {
        self.parked.push_back(input);
    }

    /// Milliseconds since this member became leader; `None` while it does not lead.
    pub fn leader_uptime_ms(&self) -> Option<u64> {
        self.leading_since
            .map(|since| since.elapsed().as_millis() as u64)
    }

    pub fn election_time_figures(&self) -> SummaryFigures {
        self.election_time.figures(BASIC_QUANTILES)
    }

    /// Times elections and leadership from the role changes the consensus layer reports:
    /// an election runs from the moment no leader is known to the moment one is.
    fn time_role_change(&mut self, old: &Status, new: &Status) {
        let now = Instant::now();
        match new.leader {
            None => {
                self.leaderless_since.get_or_insert(now);
            }
            Some(_) => {
                if let Some(since) = self.leaderless_since.take() {
                    let took = now.duration_since(since);
                    tracing::info!(
                        leader = ?new.leader,
                        term = new.term,
                        election_ms = took.as_millis() as u64,
                        "leader known"
                    );
                    self.election_time.record(took);
                }
            }
        }
        let leads = new.state == MemberState::Leader;
        let led_this_term = old.state == MemberState::Leader && old.term == new.term;
        if !leads {
            self.leading_since = None;
        } else if !led_this_term || self.leading_since.is_none() {
            self.leading_since = Some(now);
        }
    }

    /// The core a member starts with: empty, or loaded from its newest snapshot.
    pub fn initial_core(
        &mut self,
        config: crate::core::CoreConfig,
        snapshot: Option<SnapshotImage>,
        now: crate::core::Now,
    ) -> Result<Core, ServerError> {
        let mut core = match &snapshot {
            None => Core::new(config, now),
            Some(s) => load_image(config, s, now)?,
        };
        core.set_role(self.waiting_role());
        core.join_ensemble(self.my_id(), self.linearizable_reads);
        if let Some(s) = snapshot {
            self.applied = Some((s.index, s.term, s.leader));
            self.secret = s.secret;
        }
        Ok(core)
    }

    pub fn my_id(&self) -> MemberId {
        self.consensus.my_id()
    }

    /// Whether client requests can be served here now (read-only ones included).
    pub fn serving(&self) -> bool {
        match self.status.state {
            MemberState::Leader if self.status.quorum_lost => false,
            MemberState::Leader => {
                self.ready_term == Some(self.status.term) || self.read_only_enabled
            }
            MemberState::Follower | MemberState::Observer => self.status.leader.is_some(),
            MemberState::Looking => self.read_only_enabled,
        }
    }

    /// The role the core plays while this member is not a ready leader.
    fn waiting_role(&self) -> Role {
        let has_leader = matches!(
            self.status.state,
            MemberState::Follower | MemberState::Observer
        ) && self.status.leader.is_some();
        if !has_leader && self.read_only_enabled {
            Role::ReadOnly
        } else {
            Role::Follower
        }
    }

    pub fn is_ready_leader(&self) -> bool {
        self.status.state == MemberState::Leader && self.ready_term == Some(self.status.term)
    }

    /// `srvr`'s `Mode:` (ZooKeeper says `read-only` for a member serving read-only clients).
    pub fn mode(&self) -> &'static str {
        if self.status.state == MemberState::Looking && self.read_only_enabled {
            return "read-only";
        }
        self.status.state.zk_mode()
    }
}

impl Driver {
    pub(super) fn on_ensemble(&mut self, ev: EnsembleEvent) {
        match ev {
            EnsembleEvent::ReconfigDone(call, origin, result) => {
                if !self.ensemble().is_ready_leader() {
                    // Leadership changed meanwhile: the clients were disconnected already.
                    return;
                }
                let now = core_now();
                let step = match result {
                    Ok(members) => {
                        tracing::info!(members = %members.trim_end().replace('\n', ", "), "membership changed");
                        self.core.commit_reconfig(&call, &members, now)
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "reconfig refused");
                        let code = match e {
                            ReconfigError::BadArguments(_) => corral_proto::ZkError::BadArguments,
                            ReconfigError::Failed(_) => corral_proto::ZkError::NewConfigNoQuorum,
                        };
                        self.core.fail_reconfig(&call, code, now)
                    }
                };
                self.apply_with_origin(step, origin);
            }
            EnsembleEvent::ForwardFailed(conn, why) => {
                tracing::info!(
                    conn,
                    session = %crate::core::session_label(self.core.session_of(conn)),
                    why,
                    "forwarded request failed; closing the connection"
                );
                self.close_conn(conn);
            }
            EnsembleEvent::Consensus(Event::Applied { entries }) => self.on_applied(entries),
            EnsembleEvent::Consensus(Event::Status(status)) => self.on_status(status),
            EnsembleEvent::Consensus(Event::LeaderReady { term }) => self.on_leader_ready(term),
            EnsembleEvent::Consensus(Event::Forwarded { from, fwd, reply }) => {
                self.on_forwarded_or_park(from, fwd, reply)
            }
            EnsembleEvent::Consensus(Event::Touches { sessions }) => {
                if self.ensemble().is_ready_leader() {
                    self.core.touch_sessions(&sessions, core_now());
                }
            }
            EnsembleEvent::Consensus(Event::BuildSnapshot { reply }) => {
                self.ensemble_mut().snapshot_waiting = Some(reply);
                self.maybe_take_snapshot_view();
            }
            EnsembleEvent::Consensus(Event::Stopped { reason }) => {
                // As ZooKeeper's server exits when it cannot write its log: nothing this
                // member could not persist was acknowledged (openraft reports an entry
                // flushed only after its fdatasync), and a restart recovers from the log
                // and catches up from the leader.
                tracing::error!(%reason, "raft stopped (a log or vote write failed, or an internal error); stopping this member");
                self.fatal = Some(ServerError::Raft(format!("raft stopped: {reason}")));
            }
            EnsembleEvent::Consensus(Event::InstallSnapshot { data, index, reply }) => {
                let _ = reply.send(self.install_snapshot(index, data));
            }
        }
    }

    /// Answers a waiting snapshot request once the core holds only committed state, then lets
    /// parked input through.
    fn maybe_take_snapshot_view(&mut self) {
        if self.core.last_zxid() > self.durable_zxid {
            return;
        }
        let e = self.ensemble_mut();
        let (Some(reply), Some((index, term, leader))) = (e.snapshot_waiting.take(), e.applied)
        else {
            return;
        };
        let started = std::time::Instant::now();
        let view = self.core.snapshot_view();
        tracing::info!(
            index,
            zxid = format_args!("{:#x}", view.zxid()),
            blocked_ms = started.elapsed().as_millis() as u64,
            "taking snapshot"
        );
        let secret = self.ensemble().secret;
        let _ = reply.send(SnapshotTaken {
            view,
            index,
            term,
            leader,
            secret,
        });
        self.release_parked();
    }

    /// Replaces the state with a snapshot the leader sent.
    fn install_snapshot(&mut self, index: u64, data: Vec<u8>) -> Result<(), String> {
        let image = Consensus::snapshot_image(index, data)?;
        let now = core_now();
        let core = load_image(self.core_config.clone(), &image, now).map_err(|e| e.to_string())?;
        self.close_all_client_connections("the state was replaced by the leader's snapshot");
        self.held.clear();
        self.core = core;
        let (me, linearizable_reads) =
            (self.ensemble().my_id(), self.ensemble().linearizable_reads);
        self.core.join_ensemble(me, linearizable_reads);
        let role = self.ensemble().waiting_role();
        self.core.set_role(role);
        self.durable_zxid = self.core.last_zxid();
        let e = self.ensemble_mut();
        e.applied = Some((index, image.term, image.leader));
        if image.secret.is_some() {
            e.secret = image.secret;
        }
        tracing::info!(
            index,
            zxid = format_args!("{:#x}", image.zxid),
            "state replaced by the leader's snapshot"
        );
        Ok(())
    }

    fn ensemble(&self) -> &Ensemble {
        self.ensemble.as_ref().expect("ensemble member")
    }

    fn ensemble_mut(&mut self) -> &mut Ensemble {
        self.ensemble.as_mut().expect("ensemble member")
    }

    fn on_applied(&mut self, entries: Vec<Applied>) {
        for Applied {
            index,
            term,
            leader,
            payload,
        } in entries
        {
            if self.ensemble().applied.is_some_and(|(i, _, _)| i >= index) {
                // Covered by the snapshot the state was loaded from.
                continue;
            }
            let items = payload.map(|p| p.into_items_of_entry(index, term));
            for item in items.unwrap_or_default() {
                self.apply_payload(item, index);
            }
            self.ensemble_mut().applied = Some((index, term, leader));
        }
        if self.ensemble().parking() {
            self.maybe_take_snapshot_view();
        }
    }

    /// One committed payload of entry `index` (a batch's items one by one).
    fn apply_payload(&mut self, payload: Payload, index: u64) {
        let me = self.ensemble().my_id();
        match payload {
            Payload::Batch(_) => {
                tracing::error!(index, "nested batch in a committed entry; skipped")
            }
            Payload::SessionSecret(secret) => {
                self.core.set_session_secret(secret);
                self.ensemble_mut().secret = Some(secret);
            }
            Payload::Txn {
                zxid,
                record,
                origin,
            } => {
                let ready_term = self.ensemble().ready_term;
                let ours = ready_term.is_some_and(|t| (zxid >> 32) as u64 == t & 0xffff_ffff);
                if ours && zxid <= self.core.last_zxid() {
                    // Prepared and applied here already: release what waited for it.
                    self.durable_zxid = self.durable_zxid.max(zxid);
                    self.release_durable();
                } else {
                    if self.core.last_zxid() > self.durable_zxid {
                        // Another leader's entry while ours were outstanding: they will
                        // never commit. Back to the committed state first.
                        self.step_down_and_rebuild();
                    }
                    let origin_conn = origin.filter(|o| o.member == me).map(|o| o.conn);
                    match self.core.apply_committed(&record, origin_conn, core_now()) {
                        Ok(step) => {
                            self.durable_zxid = self.core.last_zxid();
                            self.apply(step);
                        }
                        Err(e) => {
                            tracing::error!(index, error = %e, "committed entry cannot be decoded; skipped")
                        }
                    }
                }
            }
            Payload::Sync { origin, xid, path } if origin.member == me => {
                let step = self.core.sync_done(origin.conn, xid, path, core_now());
                self.apply(step);
            }
            // Another member's client asked; that member answers it.
            Payload::Sync { .. } => {}
            Payload::SessionMoved {
                session,
                to,
                timeout_ms,
                alive,
            } => {
                let resumed = (to.member == me).then_some((to.conn, timeout_ms));
                let step = self.core.session_moved(session, resumed, alive, core_now());
                self.apply(step);
            }
            Payload::ReadBarrier { origin } if origin.member == me => {
                let step = self.core.read_barrier_done(origin.conn, core_now());
                self.apply(step);
            }
            Payload::ReadBarrier { .. } => {}
        }
    }

    fn on_status(&mut self, status: Status) {
        let old = std::mem::replace(&mut self.ensemble_mut().status, status.clone());
        self.ensemble_mut().time_role_change(&old, &status);
        let was_leader = self.ensemble().ready_term.is_some();
        if was_leader
            && (status.state != MemberState::Leader
                || Some(status.term) != self.ensemble().ready_term)
        {
            tracing::warn!(term = status.term, leader = ?status.leader, "lost leadership");
            self.step_down_and_rebuild();
        }
        // A term that passes without a leader (a member alone campaigning again and again)
        // changes nothing for the clients it serves read-only: only a new leader does.
        let new_leader =
            status.leader != old.leader || (status.leader.is_some() && status.term != old.term);
        if new_leader {
            // As ZooKeeper's members: a new leader means clients reconnect (to their sessions).
            self.close_all_client_connections("the ensemble leader changed");
        } else if status.quorum_lost && !old.quorum_lost {
            // The others may be electing a new leader: clients go and find it, rather than
            // read here what may no longer be current (until a quorum answers again).
            tracing::warn!(
                term = status.term,
                "no quorum of voters answers; not serving clients"
            );
            self.close_all_client_connections("this leader lost contact with a quorum");
        } else if old.quorum_lost && !status.quorum_lost {
            tracing::info!(
                term = status.term,
                "a quorum of voters answers again; serving clients"
            );
        }
        if self.ensemble().ready_term.is_none() {
            let role = self.ensemble().waiting_role();
            if role != self.core.role() {
                tracing::info!(?role, "serving as");
                self.core.set_role(role);
            }
        }
        let e = self.ensemble();
        if !e.parked.is_empty() && !e.parking() && !e.awaiting_readiness() {
            // Elected and gone (or cut off from its quorum) before it was ready: what waited
            // for this member to lead is refused now, so the members that forwarded it move on.
            self.release_parked();
        }
    }

    fn on_leader_ready(&mut self, term: u64) {
        let e = self.ensemble();
        if e.status.state != MemberState::Leader || e.status.term != term {
            return;
        }
        let now = core_now();
        if self.core.role() == Role::ReadOnly {
            // Between its election and now this member served read-only clients (it had no
            // leader it could serve writes for): they would keep a read-only session on a
            // member that takes writes. As a ZooKeeper server leaving read-only mode, close them.
            self.close_all_client_connections("this member leads now; read-only mode is over");
        }
        self.core.set_role(Role::Leader);
        self.core.begin_epoch(term as u32);
        // A new leader gives every session a full timeout before expiring anything.
        self.core.restart_session_clocks(now);
        self.durable_zxid = self.core.last_zxid();
        let e = self.ensemble_mut();
        e.ready_term = Some(term);
        if e.secret.is_none() {
            let secret: [u8; 16] = rand::random();
            e.secret = Some(secret);
            e.consensus.propose(term, Payload::SessionSecret(secret));
            self.core.set_session_secret(secret);
        }
        tracing::info!(
            term,
            last_zxid = format_args!("{:#x}", self.core.last_zxid()),
            parked = self.ensemble().parked.len(),
            "leading: preparing writes"
        );
        self.release_parked();
    }

    pub(super) fn on_forwarded_or_park(
        &mut self,
        from: MemberId,
        fwd: Forward,
        reply: oneshot::Sender<Result<(), String>>,
    ) {
        let bytes = fwd.approx_bytes();
        let e = self.ensemble();
        let hold = e.parking()
            || (e.awaiting_readiness()
                && e.parked_forward_bytes + bytes <= MAX_PARKED_FORWARD_BYTES);
        if hold {
            let e = self.ensemble_mut();
            e.parked_forward_bytes += bytes;
            e.park(Parked::Forwarded(from, fwd, reply));
        } else {
            let _ = reply.send(self.on_forwarded(from, fwd));
        }
    }

    /// Lets parked input through, in order; what must still wait is parked again, in the
    /// same order (forwards wait while this member is elected but not ready; client input
    /// waits only for a snapshot view). Forwards let through after this member stopped
    /// leading are refused with "not the leader".
    fn release_parked(&mut self) {
        let e = self.ensemble_mut();
        e.parked_forward_bytes = 0; // what waits again is counted again
        let parked = std::mem::take(&mut e.parked);
        for input in parked {
            match input {
                Parked::Inbound(ev) => self.on_inbound(ev),
                Parked::Forwarded(from, fwd, reply) => self.on_forwarded_or_park(from, fwd, reply),
            }
        }
    }

    fn on_forwarded(&mut self, from: MemberId, fwd: Forward) -> Result<(), String> {
        let Some(term) = self
            .ensemble()
            .ready_term
            .filter(|_| self.ensemble().is_ready_leader())
        else {
            return Err("not the leader".into());
        };
        let origin = Origin {
            member: from,
            conn: fwd.conn,
        };
        match &fwd.request {
            ForwardRequest::Sync { xid, path } => {
                self.ensemble().consensus.propose(
                    term,
                    Payload::Sync {
                        origin,
                        xid: *xid,
                        path: path.clone(),
                    },
                );
                return Ok(());
            }
            ForwardRequest::Revalidate { timeout_ms } => {
                let alive = self.core.revalidate(fwd.session, from, core_now());
                self.ensemble().consensus.propose(
                    term,
                    Payload::SessionMoved {
                        session: fwd.session,
                        to: origin,
                        timeout_ms: *timeout_ms,
                        alive,
                    },
                );
                return Ok(());
            }
            ForwardRequest::ReadBarrier => {
                self.ensemble()
                    .consensus
                    .propose(term, Payload::ReadBarrier { origin });
                return Ok(());
            }
            ForwardRequest::Connect { .. } | ForwardRequest::Request { .. } => {}
        }
        let step = self.core.receive_forwarded(fwd, from, core_now());
        self.apply_with_origin(step, Some(origin));
        Ok(())
    }

    /// Proposes the txns of a step prepared here (leader only).
    pub(super) fn propose_txns(
        &mut self,
        txns: Vec<crate::core::LoggedTxn>,
        origin: Option<Origin>,
    ) {
        if txns.is_empty() {
            return; // most steps (reads, a follower's own work) prepare no txn
        }
        let e = self.ensemble_mut();
        let Some(term) = e.ready_term else {
            // Only a ready leader prepares txns; nothing to answer them here otherwise.
            tracing::error!(
                txns = txns.len(),
                "txns prepared while not leading; dropped"
            );
            return;
        };
        for t in txns {
            e.proposal_sizes.record(t.record.len());
            e.consensus.propose(
                term,
                Payload::Txn {
                    zxid: t.zxid,
                    record: t.record.into(),
                    origin,
                },
            );
        }
    }

    /// Starts the membership change a reconfig request asked for (leader); its end comes back
    /// as [`EnsembleEvent::ReconfigDone`].
    pub(super) fn start_reconfig(&mut self, call: ReconfigCall, origin: Option<Origin>) {
        let e = self.ensemble();
        let r = &call.request;
        let work = e
            .consensus
            .reconfigure(&r.joining_servers, &r.leaving_servers, &r.new_members);
        let done = e.reconfigs_tx.clone();
        tokio::spawn(async move {
            let result = work.await;
            let _ = done.send((call, origin, result));
        });
    }

    /// Sends a forwarded request to the leader; a refusal closes the connection. The leader
    /// forwards to itself only to revalidate a resumed session, which takes the same path.
    pub(super) fn send_forward(&mut self, fwd: Forward) {
        let e = self.ensemble();
        let me = e.my_id();
        if e.status.leader == Some(me) {
            let conn = fwd.conn;
            let (reply, answer) = oneshot::channel();
            self.on_forwarded_or_park(me, fwd, reply);
            let failed = self.ensemble().failed_forwards_tx.clone();
            tokio::spawn(async move {
                if let Ok(Err(why)) = answer.await {
                    let _ = failed.send((conn, why));
                }
            });
            return;
        }
        let Some(leader) = e.status.leader else {
            self.close_conn(fwd.conn);
            return;
        };
        e.consensus
            .forward(leader, &fwd, e.failed_forwards_tx.clone());
    }

    /// Every tick on a follower: the leader hears which sessions are alive here.
    pub(super) fn report_touches(&mut self) {
        let sessions = self.core.take_touched_sessions();
        let e = self.ensemble();
        if let Some(leader) = e.status.leader.filter(|l| *l != e.my_id()) {
            if !sessions.is_empty() {
                e.consensus.send_touches(leader, sessions);
            }
        }
    }

    /// Leaves the leader role: drops what was prepared but not committed by rebuilding the core
    /// from the committed log, and closes every client connection.
    fn step_down_and_rebuild(&mut self) {
        self.ensemble_mut().ready_term = None;
        let outstanding = self.core.last_zxid() > self.durable_zxid;
        self.close_all_client_connections("this member stopped leading");
        self.held.clear();
        // Input parked for a snapshot view is dropped with the connections it came from.
        self.ensemble_mut().parked.clear();
        self.ensemble_mut().parked_forward_bytes = 0;
        if let Some(reply) = self.ensemble_mut().snapshot_waiting.take() {
            drop(reply);
        }
        if outstanding {
            let upto = self.ensemble().applied.map(|(i, _, _)| i);
            match self.rebuild_core(upto) {
                Ok(mut core) => {
                    if !self
                        .core
                        .hand_over_replay_window(&mut core, self.durable_zxid)
                    {
                        tracing::info!(
                            committed_zxid = format_args!("{:#x}", self.durable_zxid),
                            rebuilt_zxid = format_args!("{:#x}", core.last_zxid()),
                            "the rebuilt state does not end at the last committed txn applied here; \
                             the persistent-watch replay window starts afresh"
                        );
                    }
                    self.core = core;
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot rebuild the state from the raft log; stopping");
                    self.fatal = Some(e);
                }
            }
        }
        let role = self.ensemble().waiting_role();
        self.core.set_role(role);
        self.durable_zxid = self.core.last_zxid();
    }

    /// A fresh core with every committed entry up to `upto` (inclusive) applied: the newest
    /// snapshot, then the log after it.
    ///
    /// openraft may finish a snapshot and purge the log up to it while this runs (snapshots
    /// are built off the driver thread): the log then no longer starts right after the
    /// snapshot loaded here, and that snapshot is no longer the newest. Applying the entries
    /// that are left would skip the purged ones (a core that silently misses committed txns),
    /// so the rebuild starts again from the newer snapshot.
    fn rebuild_core(&self, upto: Option<u64>) -> Result<Core, ServerError> {
        let started = std::time::Instant::now();
        let mut attempt = 1;
        loop {
            match self.rebuild_core_once(upto)? {
                Some(core) => {
                    tracing::info!(
                        last_zxid = format_args!("{:#x}", core.last_zxid()),
                        elapsed_ms = started.elapsed().as_millis() as u64,
                        attempts = attempt,
                        "state rebuilt from the committed log"
                    );
                    return Ok(core);
                }
                None if attempt < REBUILD_ATTEMPTS => attempt += 1,
                None => {
                    return Err(ServerError::Raft(format!(
                        "the raft log was purged past the newest snapshot {REBUILD_ATTEMPTS} \
                         times while the state was rebuilt from them"
                    )))
                }
            }
        }
    }

    /// One [`rebuild_core`](Self::rebuild_core) attempt; `None` when the log was purged past
    /// the snapshot it loaded.
    fn rebuild_core_once(&self, upto: Option<u64>) -> Result<Option<Core>, ServerError> {
        let now = core_now();
        let snapshot = self
            .ensemble()
            .consensus
            .latest_snapshot()
            .map_err(ServerError::Raft)?;
        let (mut core, from) = match &snapshot {
            Some(s) => (load_image(self.core_config.clone(), s, now)?, s.index + 1),
            None => (Core::new(self.core_config.clone(), now), 0),
        };
        core.set_role(Role::Follower);
        core.join_ensemble(self.ensemble().my_id(), self.ensemble().linearizable_reads);
        if let Some(secret) = self.ensemble().secret {
            core.set_session_secret(secret);
        }
        let Some(upto) = upto.filter(|u| *u >= from) else {
            return Ok(Some(core));
        };
        let entries = match self.ensemble().log.payloads_blocking(from, upto + 1) {
            Ok(entries) => entries,
            Err(e @ PayloadsError::Purged { .. }) => {
                tracing::info!(
                    error = %e,
                    "a newer snapshot was taken while the state was rebuilt; starting again from it"
                );
                return Ok(None);
            }
            Err(PayloadsError::Read(e)) => return Err(ServerError::Raft(e)),
        };
        for (index, term, payload) in entries {
            let items = payload.map(|p| p.into_items_of_entry(index, term));
            for item in items.unwrap_or_default() {
                match item {
                    Payload::Txn { zxid, record, .. } => core
                        .apply_logged(&record)
                        .map_err(|source| ServerError::Replay { zxid, source })?,
                    Payload::SessionSecret(s) => core.set_session_secret(s),
                    _ => {}
                }
            }
        }
        Ok(Some(core))
    }

    pub(super) fn close_all_client_connections(&mut self, why: &str) {
        let conns: Vec<ConnId> = self.conns.keys().copied().collect();
        if !conns.is_empty() {
            tracing::info!(connections = conns.len(), why, "closing client connections");
        }
        for conn in conns {
            self.close_conn(conn);
        }
    }

    /// Ends a connection now and forgets it (the core too).
    pub(super) fn close_conn(&mut self, conn: ConnId) {
        if let Some(state) = self.conns.remove(&conn) {
            if state.handle.tx.try_send(Outbound::Close).is_err() {
                state.handle.kill.notify_one();
            }
            let step = self.core.connection_closed(conn, core_now());
            debug_assert!(step.txns.is_empty());
        }
    }

    /// On the leader: (learners, synced followers, synced observers). A learner is in sync when
    /// replication reached to within a few entries of what the leader applied.
    pub(super) fn learner_figures(&self) -> Option<(usize, usize, usize)> {
        const IN_SYNC_ENTRIES: u64 = 16;
        let e = self.ensemble.as_ref()?;
        // Live: learners and replication change without the role changes the driver's copy
        // of the status follows.
        let status = e.consensus.status();
        if status.state != MemberState::Leader {
            return None;
        }
        let applied = status.last_applied.unwrap_or(0);
        let synced = |id: &MemberId| {
            status
                .replication
                .get(id)
                .copied()
                .flatten()
                .is_some_and(|i| i + IN_SYNC_ENTRIES >= applied)
        };
        let followers = status
            .voters
            .iter()
            .filter(|v| **v != e.my_id() && synced(v))
            .count();
        let observers = status.learners.iter().filter(|l| synced(l)).count();
        Some((status.replication.len(), followers, observers))
    }

    /// `mntr` lines an ensemble member adds (ZooKeeper 3.8's names): its peer state, and on
    /// the leader its learners and how many are in sync.
    pub(super) fn ensemble_mntr_lines(&self) -> String {
        let Some(e) = self.ensemble.as_ref() else {
            return String::new();
        };
        let peer_state = match e.status.state {
            MemberState::Leader => "leading - broadcast",
            MemberState::Follower => "following - broadcast",
            MemberState::Observer => "observing - broadcast",
            MemberState::Looking => "looking - election",
        };
        let mut out = format!(
            "zk_peer_state\t{peer_state}\nzk_quorum_size\t{}\n",
            e.status.voters.len()
        );
        if let Some((learners, followers, observers)) = self.learner_figures() {
            let p = e.proposal_sizes;
            out.push_str(&format!(
                "zk_learners\t{learners}\nzk_synced_followers\t{followers}\n\
                 zk_synced_non_voting_followers\t0\nzk_synced_observers\t{observers}\n\
                 zk_pending_syncs\t0\nzk_last_proposal_size\t{}\nzk_min_proposal_size\t{}\n\
                 zk_max_proposal_size\t{}\n",
                p.last, p.min, p.max
            ));
        }
        out
    }
}

/// A core loaded from a snapshot image, with the replicated session secret it carries.
fn load_image(
    config: crate::core::CoreConfig,
    s: &SnapshotImage,
    now: crate::core::Now,
) -> Result<Core, ServerError> {
    let image = s.image();
    let mut core = Core::from_snapshot(config, image, image.len() as u64, now).map_err(|e| {
        ServerError::Raft(format!(
            "snapshot at raft index {} cannot be loaded: {e}",
            s.index
        ))
    })?;
    if let Some(secret) = s.secret {
        core.set_session_secret(secret);
    }
    Ok(core)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consensus::test_config;
    use crate::testing::free_port;
    use tokio::sync::oneshot::error::TryRecvError;

    type Answer = oneshot::Receiver<Result<(), String>>;

    /// The driver of a one-member ensemble, not running, told it was elected leader of term
    /// 7 and not yet ready: the tests feed it the consensus events themselves (its own
    /// consensus's events stay unread).
    async fn elected_not_ready(dir: &std::path::Path) -> Driver {
        let lines = format!(
            "clientPort=0\nserver.1=127.0.0.1:{}:{}\n",
            free_port(),
            free_port()
        );
        let config = test_config::server(dir, &lines);
        let mut driver = Driver::start_ensemble(Arc::new(config), 0).await.unwrap();
        driver.on_status(status(MemberState::Leader, 7, 1));
        driver
    }

    /// Hands the driver `fwd` as member `from` forwarded it; the receiver gets its outcome.
    fn offer(driver: &mut Driver, from: MemberId, fwd: Forward) -> Answer {
        let (reply, answer) = oneshot::channel();
        driver.on_forwarded_or_park(from, fwd, reply);
        answer
    }

    fn status(state: MemberState, term: u64, leader: MemberId) -> Status {
        Status {
            my_id: 1,
            term,
            leader: Some(leader),
            state,
            voters: vec![1, 2, 3],
            ..Status::default()
        }
    }

    fn sync_forward(conn: ConnId) -> Forward {
        Forward {
            conn,
            session: 0x77,
            auth: Vec::new(),
            request: ForwardRequest::Sync {
                xid: 1,
                path: "/".into(),
            },
        }
    }

    /// A forward that reaches a member elected but not yet ready waits and is taken once it
    /// is ready, instead of being refused (which would close the client's connection on the
    /// member that forwarded it).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_forward_waits_for_its_new_leader_to_be_ready() {
        let dir = tempfile::tempdir().unwrap();
        let mut driver = elected_not_ready(dir.path()).await;
        let mut answer = offer(&mut driver, 2, sync_forward(5));
        assert_eq!(
            answer.try_recv(),
            Err(TryRecvError::Empty),
            "held, not refused"
        );
        driver.on_leader_ready(7);
        assert_eq!(answer.try_recv(), Ok(Ok(())));
        // Once ready, a forward is taken at once.
        let mut answer = offer(&mut driver, 2, sync_forward(6));
        assert_eq!(answer.try_recv(), Ok(Ok(())));
    }

    /// Forwards held for a term this member never got ready in are refused when the term
    /// ends, and when the leader loses its quorum, so the forwarding members move on.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn held_forwards_are_refused_when_the_leadership_ends_unready() {
        let dir = tempfile::tempdir().unwrap();
        let mut driver = elected_not_ready(dir.path()).await;
        let mut first = offer(&mut driver, 2, sync_forward(5));
        driver.on_status(status(MemberState::Follower, 8, 2));
        assert_eq!(first.try_recv(), Ok(Err("not the leader".to_string())));

        driver.on_status(status(MemberState::Leader, 9, 1));
        let mut second = offer(&mut driver, 3, sync_forward(6));
        assert_eq!(second.try_recv(), Err(TryRecvError::Empty));
        driver.on_status(Status {
            quorum_lost: true,
            ..status(MemberState::Leader, 9, 1)
        });
        assert_eq!(second.try_recv(), Ok(Err("not the leader".to_string())));
    }

    /// What a new leader holds is bounded in bytes: past the bound a forward is refused at
    /// once, as before there was any holding.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn held_forwards_are_bounded_in_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let mut driver = elected_not_ready(dir.path()).await;
        let mut small = offer(&mut driver, 2, sync_forward(5));
        let big = Forward {
            request: ForwardRequest::Request {
                body: bytes::Bytes::from(vec![0u8; MAX_PARKED_FORWARD_BYTES]),
            },
            ..sync_forward(6)
        };
        let mut refused = offer(&mut driver, 2, big);
        assert_eq!(refused.try_recv(), Ok(Err("not the leader".to_string())));
        assert_eq!(
            small.try_recv(),
            Err(TryRecvError::Empty),
            "the small one still waits"
        );
        driver.on_leader_ready(7);
        assert_eq!(small.try_recv(), Ok(Ok(())));
    }
}
