//! The task that owns a group's `RawNode` (see the parent module for the
//! Ready order and quiescence).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use fjord_codec::BatchHeader;
use fjord_storage::{DeletedSegment, FlushPolicy, RaftPos};
use raft::prelude::*;
use raft::{RawNode, StateRole};
use tokio::sync::{mpsc, oneshot, watch};

use super::*;
use crate::producers::{ProducerTable, Verdict};
use crate::store::{entry_to_batch, GroupStore};
use crate::{Error, Result, Transport};

/// Where each recently appended entry landed, until it is applied.
#[derive(Debug, Clone, Copy)]
struct Landed {
    base_offset: u64,
    next_offset: u64,
}

/// Idempotent proposals held while a new leader builds its producer table
/// (a few ms as a rule); beyond this many, they are refused as NotServing
/// and retried by their clients.
const PARKED_PROPOSALS_MAX: usize = 1024;

struct Pending {
    term: u64,
    ack: Ack,
    reply: oneshot::Sender<Result<Committed>>,
}

/// Where a restarted group resumes applying: the persisted commit index,
/// clamped to the entries the log holds (a log whose unsynced tail was lost
/// may end below it; raft-rs then learns the commit from the leader), and
/// the offset after that entry, from its header alone. `(0, None)` for a
/// log with nothing committed in it.
///
/// # Errors
/// A storage error reading the entry's header, or a committed index
/// missing from the log.
fn restart_point(store: &GroupStore) -> Result<(u64, Option<u64>)> {
    let state = store.raft_state();
    let log = store.log();
    let last = log.last_raft().map_or(state.snapshot_index, |p| p.index);
    let first = log.first_raft_index().unwrap_or(state.snapshot_index + 1);
    let applied = state.commit.min(last);
    if applied < first {
        // Nothing committed in the log (empty, or just past a snapshot).
        return Ok((applied.max(first.saturating_sub(1)).min(state.commit), None));
    }
    let (h, _) = log
        .raft_entry(applied)?
        .ok_or_else(|| Error::Corrupt(format!("committed raft index {applied} is not in the log")))?;
    Ok((applied, Some(h.next_offset())))
}

/// Starts a group's task on the current tokio runtime.
///
/// # Errors
/// raft-rs rejecting the config or the stored state.
pub fn start<T: Transport>(config: GroupConfig, store: GroupStore, transport: Arc<T>) -> Result<GroupHandle> {
    let logger = slog::Logger::root(crate::raft_log::RaftLogDrain, slog::o!("group" => config.group_id));
    // Applying an entry only moves the high watermark and answers a
    // proposal, so entries up to the persisted commit index need not be
    // applied again after a restart: the high watermark starts after that
    // entry. Replaying them (applied = 0) made raft-rs read every committed
    // entry's data back, the whole log, before the partition served.
    let (applied, start_hw) = restart_point(&store)?;
    tracing::debug!(group = config.group_id, applied, ?start_hw, "restart point");
    let log_bytes = store.log().size_bytes();
    let raft_config = raft::Config {
        id: config.node_id,
        election_tick: config.election_ticks,
        heartbeat_tick: config.heartbeat_ticks,
        applied,
        max_size_per_msg: config.max_size_per_msg,
        max_inflight_msgs: config.max_inflight_msgs,
        check_quorum: true,
        pre_vote: true,
        max_uncommitted_size: 512 * 1024 * 1024,
        ..raft::Config::default()
    };
    raft_config.validate().map_err(|e| Error::Raft(e.to_string()))?;
    let start_offset = store.log().log_start_offset();
    let node = RawNode::new(&raft_config, store, &logger).map_err(|e| Error::Raft(e.to_string()))?;
    let (tx, rx) = mpsc::channel(MAILBOX_CAPACITY);
    let status = Arc::new(GroupStatus {
        leader: AtomicU64::new(0),
        term: AtomicU64::new(0),
        is_leader: AtomicBool::new(false),
        stopped: AtomicBool::new(false),
        serving: AtomicBool::new(false),
        in_sync: std::sync::Mutex::new(Vec::new()),
        high_watermark: watch::Sender::new(start_hw.unwrap_or(start_offset).max(start_offset)),
        leader_changes: AtomicU64::new(0),
    });
    let driver = Driver {
        node,
        raft_config,
        logger,
        stalled: None,
        no_space_backoff: NO_SPACE_RETRY_FIRST,
        config,
        transport,
        status: status.clone(),
        pending: BTreeMap::new(),
        landed: BTreeMap::new(),
        ticks_since_commit_store: 0,
        log_bytes_at_commit_store: log_bytes,
        idle_ticks: 0,
        maintenance: Vec::new(),
        caught_up: std::collections::HashMap::new(),
        producers: Producers::Unknown,
        parked: Vec::new(),
        leadership: 0,
        leader_incarnation: 0,
        campaigned_for: 0,
        mailbox: tx.downgrade(),
    };
    tokio::spawn(driver.run(rx));
    Ok(GroupHandle { tx, status })
}

struct Driver<T: Transport> {
    node: RawNode<GroupStore>,
    /// What the node was built with, to build it again after a full disk.
    raft_config: raft::Config,
    logger: slog::Logger,
    /// Sitting out a full disk until then, with the error; see "A full disk".
    stalled: Option<(tokio::time::Instant, Error)>,
    /// The next such pause.
    no_space_backoff: std::time::Duration,
    config: GroupConfig,
    transport: Arc<T>,
    status: Arc<GroupStatus>,
    pending: BTreeMap<u64, Pending>,
    landed: BTreeMap<u64, Landed>,
    ticks_since_commit_store: u64,
    /// The log's size when the commit index was last stored.
    log_bytes_at_commit_store: u64,
    /// Ticks since the group last did anything; see Quiescence.
    idle_ticks: u64,
    /// When each follower last matched the commit index (leader only).
    caught_up: std::collections::HashMap<u64, tokio::time::Instant>,
    /// Maintenance requests, run after the current ready.
    maintenance: Vec<(i64, oneshot::Sender<Result<Vec<DeletedSegment>>>)>,
    /// Idempotent producers' sequences, on a serving leader once the
    /// first idempotent batch needed them; see [`crate::producers`].
    producers: Producers,
    /// The incarnation of the leader's process that last sent this
    /// follower an append or heartbeat; see Quiescence.
    leader_incarnation: u64,
    /// The restarted leader incarnation this node last campaigned against.
    campaigned_for: u64,
    /// Counts role changes: a table scanned for one leadership is not
    /// installed in another (a term can change without one, when a
    /// single-node leader campaigns again, and that keeps the table valid).
    leadership: u64,
    /// Idempotent proposals waiting, in arrival order, for the table.
    parked: Vec<(Bytes, Ack, oneshot::Sender<Result<Committed>>)>,
    /// The group's own mailbox, for results of work done off the task
    /// (weak, so that dropping every handle still ends the task).
    mailbox: mpsc::WeakSender<Msg>,
}

/// Where the leader's producer table stands.
enum Producers {
    /// Not built in this leadership (or this node does not lead).
    Unknown,
    /// A blocking task is scanning the log for it, started in leadership
    /// number `leadership` (see `Driver::leadership`).
    Building {
        leadership: u64,
    },
    Ready(ProducerTable),
}

impl<T: Transport> Driver<T> {
    async fn run(mut self, mut rx: mpsc::Receiver<Msg>) {
        let mut ticker = tokio::time::interval(self.config.tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let stopped_by = 'run: loop {
            tokio::select! {
                _ = ticker.tick() => {
                    if self.sitting_out() {
                        continue;
                    }
                    self.campaign_if_leader_restarted();
                    if self.should_tick() {
                        self.node.tick();
                        self.idle_ticks += 1;
                    }
                    self.ticks_since_commit_store += 1;
                    self.update_in_sync();
                }
                msg = rx.recv() => {
                    let Some(msg) = msg else { break None };
                    let mut stop = self.handle(msg);
                    for _ in 0..MESSAGES_PER_READY_MAX {
                        if stop.is_some() {
                            break;
                        }
                        match rx.try_recv() {
                            Ok(msg) => stop = self.handle(msg),
                            Err(_) => break,
                        }
                    }
                    if stop.is_some() {
                        break stop;
                    }
                }
            }
            match self.on_ready().await {
                Ok(()) => {}
                Err(e) if e.is_no_space() => {
                    if let Err(e) = self.sit_out_full_disk(e) {
                        tracing::error!(group = self.config.group_id, error = %e, "raft group stopped: it could not restart after a full disk");
                        break None;
                    }
                }
                Err(e) => {
                    tracing::error!(group = self.config.group_id, error = %e, "raft group stopped on a storage error");
                    break None;
                }
            }
            for (now_ms, reply) in std::mem::take(&mut self.maintenance) {
                let result = self.maintain(now_ms).await;
                // A failed fsync on a full disk cuts the log back to what
                // was durable, below what raft-rs was told it holds.
                let cut = self.node.store().log().last_raft().map_or(0, |p| p.index)
                    < self.node.raft.raft_log.last_index().min(self.node.raft.raft_log.persisted);
                let full = result.as_ref().err().filter(|e| cut && e.is_no_space()).cloned();
                if let Some(full) = full {
                    if let Err(e) = self.sit_out_full_disk(full) {
                        tracing::error!(group = self.config.group_id, error = %e, "raft group stopped: it could not restart after a full disk");
                        let _ = reply.send(result);
                        break 'run None;
                    }
                }
                let _ = reply.send(result);
            }
        };
        let _ = self.persist_commit();
        self.status.stopped.store(true, Ordering::Release);
        self.status.is_leader.store(false, Ordering::Release);
        self.status.serving.store(false, Ordering::Release);
        self.status.high_watermark.send_modify(|_| {});
        self.fail_pending(Error::Stopped);
        if let Some(stop) = stopped_by {
            let _ = stop.send(());
        }
    }

    /// Handles one mailbox message; returns the stop reply if asked to stop.
    fn handle(&mut self, msg: Msg) -> Option<oneshot::Sender<()>> {
        // Heartbeats are what a settled group exchanges; anything else is activity.
        let heartbeat = matches!(&msg, Msg::Raft(m)
            if matches!(m.get_msg_type(), MessageType::MsgHeartbeat | MessageType::MsgHeartbeatResponse));
        if !heartbeat && !matches!(msg, Msg::Maintain { .. }) {
            self.idle_ticks = 0;
        }
        if self.stalled.is_some() {
            match msg {
                Msg::Raft(_) | Msg::Campaign | Msg::TransferLeader(_) => return None,
                Msg::Propose { reply, .. } => {
                    if let Some((_, e)) = &self.stalled {
                        let _ = reply.send(Err(e.clone()));
                    }
                    return None;
                }
                _ => {}
            }
        }
        match msg {
            Msg::Raft(m) => {
                let from_leader = matches!(
                    m.get_msg_type(),
                    MessageType::MsgAppend | MessageType::MsgHeartbeat | MessageType::MsgSnapshot
                );
                if from_leader {
                    self.leader_incarnation = self.transport.incarnation(m.from);
                }
                if let Err(e) = check_appended_batches(&m) {
                    // Not stepped: the leader sends the entries again when
                    // this follower does not acknowledge them.
                    tracing::warn!(
                        group = self.config.group_id,
                        from = m.from,
                        error = %e,
                        "refused a corrupt append from the leader"
                    );
                    return None;
                }
                if let Err(e) = self.node.step(*m) {
                    tracing::debug!(group = self.config.group_id, error = %e, "raft message dropped");
                }
            }
            Msg::Propose { data, ack, reply } => self.propose(data, ack, reply),
            Msg::TransferLeader(to) => self.transfer_leader(to),
            Msg::Campaign => {
                let _ = self.node.campaign();
            }
            Msg::Maintain { now_ms, reply } => self.maintenance.push((now_ms, reply)),
            Msg::ProducersBuilt { leadership, table } => self.producers_built(leadership, table),
            Msg::Stop(tx) => return Some(tx),
        }
        None
    }

    /// A follower whose leader's broker restarted (a new incarnation: the
    /// new process leads nothing) campaigns at once if it is the live
    /// voter with the lowest id among the others, rather than waiting out
    /// a randomized election timeout. The restarted node knows no leader,
    /// so it grants its (pre-)vote to an up-to-date candidate, which makes
    /// a majority of three; one deterministic candidate avoids split votes.
    /// If it loses, the ordinary timeouts elect someone.
    fn campaign_if_leader_restarted(&mut self) {
        let raft = &self.node.raft;
        let leader = raft.leader_id;
        if raft.state != StateRole::Follower || leader == 0 || self.leader_incarnation == 0 {
            return;
        }
        let now = self.transport.incarnation(leader);
        if now == self.leader_incarnation || now == 0 || self.campaigned_for == now {
            return;
        }
        let me = self.config.node_id;
        let first =
            self.config.voters.iter().copied().filter(|v| *v != leader && self.transport.is_alive(*v)).min();
        if first == Some(me) {
            self.campaigned_for = now;
            tracing::info!(group = self.config.group_id, leader, "leader's broker restarted; campaigning");
            let _ = self.node.campaign();
        }
    }

    /// Whether this tick must reach raft-rs (see Quiescence in the module doc).
    fn should_tick(&self) -> bool {
        if !self.config.quiesce {
            return true;
        }
        let raft = &self.node.raft;
        match raft.state {
            StateRole::Leader => {
                let last = raft.raft_log.last_index();
                self.idle_ticks < LEADER_QUIESCE_AFTER_TICKS
                    || !self.pending.is_empty()
                    || raft.lead_transferee.is_some()
                    || raft.raft_log.committed < last
                    || raft.prs().iter().any(|(id, p)| {
                        *id != self.config.node_id && (p.matched < last || !self.transport.is_alive(*id))
                    })
            }
            StateRole::Follower => {
                self.idle_ticks < FOLLOWER_QUIESCE_AFTER_TICKS
                    || raft.leader_id == 0
                    || !self.transport.is_alive(raft.leader_id)
                    || self.transport.incarnation(raft.leader_id) != self.leader_incarnation
            }
            StateRole::Candidate | StateRole::PreCandidate => true,
        }
    }

    /// Hands leadership to `to` if it is caught up and reachable; a
    /// transfer to a lagging or dead node would stall proposals for an
    /// election timeout for nothing.
    fn transfer_leader(&mut self, to: u64) {
        if self.node.raft.state != StateRole::Leader || to == self.config.node_id {
            return;
        }
        let last = self.node.raft.raft_log.last_index();
        let ready = self.node.raft.prs().get(to).is_some_and(|p| p.recent_active && p.matched >= last);
        if ready {
            tracing::info!(
                group = self.config.group_id,
                to,
                "transferring leadership to the preferred replica"
            );
            self.node.transfer_leader(to);
        }
    }

    /// Voters whose logs are within reach of the leader's: recently heard
    /// from, and matched up to the commit index within [`REPLICA_LAG_MAX`].
    fn update_in_sync(&mut self) {
        let mut in_sync = Vec::new();
        if self.node.raft.state == StateRole::Leader {
            let now = tokio::time::Instant::now();
            let committed = self.node.raft.raft_log.committed;
            for (id, p) in self.node.raft.prs().iter() {
                if p.matched >= committed {
                    self.caught_up.insert(*id, now);
                }
                let recent =
                    self.caught_up.get(id).is_some_and(|t| now.duration_since(*t) <= REPLICA_LAG_MAX);
                if *id == self.config.node_id || (p.recent_active && recent) {
                    in_sync.push(*id);
                }
            }
            in_sync.sort_unstable();
        } else {
            self.caught_up.clear();
        }
        *self.status.in_sync.lock().unwrap_or_else(|p| p.into_inner()) = in_sync;
    }

    fn propose(&mut self, data: Bytes, ack: Ack, reply: oneshot::Sender<Result<Committed>>) {
        if self.node.raft.state != StateRole::Leader {
            let _ = reply.send(Err(Error::NotLeader { leader: self.node.raft.leader_id }));
            return;
        }
        let header = match BatchHeader::parse(&data) {
            Ok(h) => h,
            Err(e) => {
                let _ = reply.send(Err(Error::Corrupt(format!("proposed batch: {e}"))));
                return;
            }
        };
        let idempotent = header.producer_id >= 0 && !header.is_control();
        if idempotent {
            let verdict = match &self.producers {
                _ if !self.status.is_serving() => Err(Error::NotServing),
                Producers::Ready(table) => table.check(&header),
                Producers::Unknown | Producers::Building { .. } => return self.park(data, ack, reply),
            };
            match verdict.and_then(|v| self.first_copy(v, ack)) {
                Ok(None) => {}
                Ok(Some(done)) => {
                    let _ = reply.send(Ok(done));
                    return;
                }
                Err(e) => {
                    let _ = reply.send(Err(e));
                    return;
                }
            }
        }
        let before = self.node.raft.raft_log.last_index();
        // What `RawNode::propose` does, minus its `Vec<u8>` argument: the
        // entry takes the request's bytes as they are, where `propose`
        // would copy every produced byte once more.
        let entry = Entry { data, ..Default::default() };
        let mut msg = Message::default();
        msg.set_msg_type(MessageType::MsgPropose);
        msg.from = self.node.raft.id;
        msg.set_entries(vec![entry].into());
        if let Err(e) = self.node.raft.step(msg) {
            let _ = reply.send(Err(match e {
                raft::Error::ProposalDropped => Error::NotLeader { leader: self.node.raft.leader_id },
                e => Error::Raft(e.to_string()),
            }));
            return;
        }
        let index = self.node.raft.raft_log.last_index();
        debug_assert_eq!(index, before + 1);
        if idempotent {
            let Producers::Ready(table) = &mut self.producers else {
                unreachable!("an idempotent batch is proposed only once the table is ready")
            };
            table.record(&header, index, now_ms());
        }
        self.pending.insert(index, Pending { term: self.node.raft.term, ack, reply });
    }

    /// Holds an idempotent proposal, in order, until the producer table is
    /// built (starting the build if need be), rather than bounce it.
    fn park(&mut self, data: Bytes, ack: Ack, reply: oneshot::Sender<Result<Committed>>) {
        if matches!(self.producers, Producers::Unknown) {
            self.start_producers_rebuild();
        }
        if self.parked.len() < PARKED_PROPOSALS_MAX {
            self.parked.push((data, ack, reply));
        } else {
            let _ = reply.send(Err(Error::NotServing));
        }
    }

    /// What a sequence verdict answers: `None` to propose the batch, the
    /// first copy's offsets for a retry of a stored one.
    fn first_copy(&self, verdict: Verdict, ack: Ack) -> Result<Option<Committed>> {
        let raft_index = match verdict {
            Verdict::Append => return Ok(None),
            Verdict::Duplicate { raft_index } => raft_index,
        };
        let log = self.node.store().log();
        let applied = self.node.raft.raft_log.applied;
        let appended = log.last_raft().is_some_and(|l| l.index >= raft_index);
        if raft_index > applied && !(ack == Ack::Leader && appended) {
            return Err(Error::DuplicateInFlight);
        }
        let (first, _) = log.raft_entry(raft_index)?.ok_or_else(|| {
            Error::Corrupt(format!("raft index {raft_index} of a stored batch is not in the log"))
        })?;
        Ok(Some(Committed {
            index: raft_index,
            base_offset: first.base_offset,
            next_offset: first.next_offset(),
            duplicate: true,
        }))
    }

    /// Scans the log for the producer table off the task (a cold scan
    /// reads from disk); idempotent batches are parked, in order, until it
    /// is in. Non-idempotent ones are unaffected.
    fn start_producers_rebuild(&mut self) {
        let leadership = self.leadership;
        self.producers = Producers::Building { leadership };
        let (log, mailbox, group) =
            (self.node.store().log().clone(), self.mailbox.clone(), self.config.group_id);
        tokio::spawn(async move {
            let built = tokio::task::spawn_blocking(move || ProducerTable::rebuild(&log, now_ms()))
                .await
                .unwrap_or_else(|e| Err(Error::Raft(format!("producer table task failed: {e}"))));
            if let Err(e) = &built {
                tracing::warn!(group, error = %e, "could not rebuild the producer table; will retry");
            }
            if let Some(tx) = mailbox.upgrade() {
                let _ = tx.send(Msg::ProducersBuilt { leadership, table: built.ok() }).await;
            }
        });
    }

    /// Installs a rebuilt producer table if it is still this leadership's.
    fn producers_built(&mut self, leadership: u64, table: Option<ProducerTable>) {
        let current = matches!(self.producers, Producers::Building { leadership: l } if l == leadership)
            && self.leadership == leadership
            && self.node.raft.state == StateRole::Leader;
        if !current {
            return;
        }
        let parked = std::mem::take(&mut self.parked);
        match table {
            Some(t) => {
                tracing::debug!(group = self.config.group_id, producers = t.len(), "producer table rebuilt");
                self.producers = Producers::Ready(t);
                for (data, ack, reply) in parked {
                    self.propose(data, ack, reply);
                }
            }
            None => {
                self.producers = Producers::Unknown;
                for (_, _, reply) in parked {
                    let _ = reply.send(Err(Error::NotServing));
                }
            }
        }
    }

    async fn on_ready(&mut self) -> Result<()> {
        if !self.node.has_ready() {
            if self.ticks_since_commit_store >= COMMIT_PERSIST_TICKS {
                self.persist_commit()?;
            }
            return Ok(());
        }
        let mut rd = self.node.ready();
        if let Some(ss) = rd.ss() {
            self.on_soft_state(ss.leader_id, ss.raft_state);
            self.update_in_sync();
        }
        self.send(rd.take_messages());
        if !rd.snapshot().is_empty() {
            self.install_snapshot(rd.snapshot().clone()).await?;
        }
        self.apply(rd.take_committed_entries())?;
        let entries = rd.take_entries();
        if !entries.is_empty() {
            self.append(entries).await?;
            self.no_space_backoff = NO_SPACE_RETRY_FIRST;
        }
        if let Some(hs) = rd.hs() {
            let stored = self.node.store().raft_state();
            if hs.term != stored.term || hs.vote != stored.vote {
                let hs = hs.clone();
                self.node.mut_store().store_hard_state(&hs)?;
                self.ticks_since_commit_store = 0;
            }
        }
        self.status.term.store(self.node.raft.term, Ordering::Release);
        self.send(rd.take_persisted_messages());
        let mut light = self.node.advance(rd);
        self.send(light.take_messages());
        self.apply(light.take_committed_entries())?;
        self.node.advance_apply();
        // Busy or idle: what a restart re-applies from the log (everything
        // after the stored commit index, read back) stays bounded by
        // COMMIT_PERSIST_BYTES and what was written in COMMIT_PERSIST_TICKS.
        let size = self.node.store().log().size_bytes();
        self.log_bytes_at_commit_store = self.log_bytes_at_commit_store.min(size); // retention shrank it
        if self.ticks_since_commit_store >= COMMIT_PERSIST_TICKS
            || size - self.log_bytes_at_commit_store >= COMMIT_PERSIST_BYTES
        {
            self.persist_commit()?;
        }
        Ok(())
    }

    fn on_soft_state(&mut self, leader: u64, role: StateRole) {
        // A deposed leader's unacknowledged suffix may be overwritten, and
        // a new leader must see every earlier term's batches first.
        self.producers = Producers::Unknown;
        self.leadership += 1;
        for (_, _, reply) in std::mem::take(&mut self.parked) {
            let _ = reply.send(Err(Error::NotLeader { leader }));
        }
        let was_leader = self.status.is_leader.swap(role == StateRole::Leader, Ordering::AcqRel);
        self.status.serving.store(false, Ordering::Release);
        if self.status.leader.swap(leader, Ordering::AcqRel) != leader {
            self.status.leader_changes.fetch_add(1, Ordering::AcqRel);
        }
        if was_leader && role != StateRole::Leader {
            self.fail_pending(Error::NotLeader { leader });
        }
        tracing::info!(group = self.config.group_id, leader, role = ?role, term = self.node.raft.term, "raft role changed");
    }

    /// After a write failed on a full disk: fails what is pending, builds
    /// the node again from storage, and sits out a pause (see "A full disk").
    ///
    /// # Errors
    /// The stored state no longer making a node (a storage failure).
    fn sit_out_full_disk(&mut self, reason: Error) -> Result<()> {
        let pause = self.no_space_backoff;
        self.no_space_backoff = (pause * 2).min(NO_SPACE_RETRY_MAX);
        tracing::warn!(
            group = self.config.group_id,
            error = %reason,
            retry_in_ms = pause.as_millis() as u64,
            "disk full: the write was cut off and refused; the replica waits for space"
        );
        self.fail_pending(reason.clone());
        let store = self.node.store().reopened();
        let (applied, _) = restart_point(&store)?;
        let mut config = self.raft_config.clone();
        config.applied = applied;
        self.node = RawNode::new(&config, store, &self.logger).map_err(|e| Error::Raft(e.to_string()))?;
        self.landed.clear();
        self.on_soft_state(0, StateRole::Follower);
        self.stalled = Some((tokio::time::Instant::now() + pause, reason));
        Ok(())
    }

    /// Whether the group is still sitting out a full disk; ends the pause
    /// when it is over (a group of one campaigns at once, as on open).
    fn sitting_out(&mut self) -> bool {
        let Some((until, _)) = &self.stalled else { return false };
        if tokio::time::Instant::now() < *until {
            return true;
        }
        self.stalled = None;
        tracing::info!(group = self.config.group_id, "retrying writes after a full disk");
        if self.config.voters == [self.config.node_id] {
            let _ = self.node.campaign();
        }
        false
    }

    fn fail_pending(&mut self, e: Error) {
        for (_, p) in std::mem::take(&mut self.pending) {
            let _ = p.reply.send(Err(e.clone()));
        }
        for (_, _, reply) in std::mem::take(&mut self.parked) {
            let _ = reply.send(Err(e.clone()));
        }
    }

    fn send(&self, msgs: Vec<Message>) {
        for m in msgs {
            self.transport.send(m.to, self.config.group_id, m);
        }
    }

    /// Appends entries to the log, truncating a conflicting suffix first,
    /// and makes them durable as the flush policy says (blocking I/O off
    /// the async threads).
    async fn append(&mut self, entries: Vec<Entry>) -> Result<()> {
        let log = self.node.store().log().clone();
        let flush = self.config.flush;
        let landed = tokio::task::spawn_blocking(move || -> Result<Vec<(u64, Landed)>> {
            let first = entries[0].index;
            if let Some(last) = log.last_raft() {
                if first <= last.index {
                    let (h, _) = log.raft_entry(first)?.ok_or_else(|| {
                        Error::Corrupt(format!("raft index {first} to overwrite is not in the log"))
                    })?;
                    log.truncate_suffix(h.base_offset)?;
                }
            }
            // On a full disk the whole Ready is cut off, not just the batch
            // that failed: raft-rs is told none of it is persisted, and a
            // node rebuilt from a log still holding the others would count
            // them (and commit them) although their proposals failed.
            let start = log.log_end_offset();
            let mut landed = Vec::with_capacity(entries.len());
            let mut end = 0;
            let written = entries.iter().try_for_each(|e| {
                let batch = entry_to_batch(e);
                let a = log.append(&batch, RaftPos { term: e.term, index: e.index })?;
                end = a.next_offset;
                landed.push((e.index, Landed { base_offset: a.base_offset, next_offset: a.next_offset }));
                Ok::<_, fjord_storage::Error>(())
            });
            let written = written.and_then(|()| match flush {
                FlushPolicy::Always => log.sync_through(end),
                _ => Ok(()),
            });
            match written {
                Ok(()) => Ok(landed),
                Err(e) if e.is_no_space() => {
                    log.truncate_suffix(start)?;
                    Err(e.into())
                }
                Err(e) => Err(e.into()),
            }
        })
        .await
        .map_err(|e| Error::Raft(format!("append task failed: {e}")))??;
        for (index, l) in landed {
            // Entries from an overwritten suffix are forgotten with it.
            self.landed.split_off(&index);
            self.landed.insert(index, l);
            if let Some(p) = self.pending.get(&index) {
                if p.ack == Ack::Leader && p.term == self.node.raft.term {
                    let p = self.pending.remove(&index).expect("present");
                    let c = Committed {
                        index,
                        base_offset: l.base_offset,
                        next_offset: l.next_offset,
                        duplicate: false,
                    };
                    let _ = p.reply.send(Ok(c));
                }
            }
        }
        Ok(())
    }

    /// Applies committed entries: advances the high watermark and answers
    /// the proposals they carry.
    fn apply(&mut self, entries: Vec<Entry>) -> Result<()> {
        let Some(last) = entries.last() else { return Ok(()) };
        let last_index = last.index;
        for e in &entries {
            let l = match self.landed.remove(&e.index) {
                Some(l) => l,
                None => {
                    let log = self.node.store().log();
                    let (h, _) = log.raft_entry(e.index)?.ok_or_else(|| {
                        Error::Corrupt(format!("committed raft index {} is not in the log", e.index))
                    })?;
                    Landed { base_offset: h.base_offset, next_offset: h.next_offset() }
                }
            };
            self.raise_high_watermark(l.next_offset);
            if e.term == self.node.raft.term && self.node.raft.state == StateRole::Leader {
                self.status.serving.store(true, Ordering::Release);
            }
            if let Some(p) = self.pending.remove(&e.index) {
                let result = if p.term == e.term {
                    Ok(Committed {
                        index: e.index,
                        base_offset: l.base_offset,
                        next_offset: l.next_offset,
                        duplicate: false,
                    })
                } else {
                    Err(Error::NotLeader { leader: self.node.raft.leader_id })
                };
                let _ = p.reply.send(result);
            }
        }
        // Forget landing records of entries applied through other paths.
        self.landed = self.landed.split_off(&(last_index + 1));
        Ok(())
    }

    /// Moves the high watermark up to `hw` (never down) and wakes readers.
    fn raise_high_watermark(&self, hw: u64) {
        self.status.high_watermark.send_if_modified(|cur| {
            let advance = hw > *cur;
            if advance {
                *cur = hw;
            }
            advance
        });
    }

    async fn install_snapshot(&mut self, snap: Snapshot) -> Result<()> {
        let meta = snap.get_metadata();
        let (index, term) = (meta.index, meta.term);
        let start = fjord_codec::le::u64(&snap.data, 0)
            .ok_or_else(|| Error::Corrupt("snapshot data does not hold a start offset".into()))?;
        let log = self.node.store().log().clone();
        tokio::task::spawn_blocking(move || log.reset(start, index + 1))
            .await
            .map_err(|e| Error::Raft(format!("snapshot task failed: {e}")))??;
        self.node.mut_store().store_snapshot_point(index, term)?;
        self.landed.clear();
        self.producers = Producers::Unknown;
        self.raise_high_watermark(start);
        tracing::info!(
            group = self.config.group_id,
            index,
            term,
            start,
            "installed snapshot: log now starts at the leader's"
        );
        Ok(())
    }

    /// Interval flush and retention below the high watermark; records in
    /// the Raft state where the log now starts.
    async fn maintain(&mut self, now_ms: i64) -> Result<Vec<DeletedSegment>> {
        let log = self.node.store().log().clone();
        let hw = self.status.high_watermark();
        let deleted = tokio::task::spawn_blocking(move || -> Result<Vec<DeletedSegment>> {
            log.flush_if_due(now_ms.max(0) as u64)?;
            Ok(log.maintain(now_ms, hw)?)
        })
        .await
        .map_err(|e| Error::Raft(format!("maintenance task failed: {e}")))??;
        if let Producers::Ready(table) = &mut self.producers {
            table.expire(now_ms);
        }
        if let Some(last) = deleted.iter().rev().find_map(|d| d.last_raft) {
            self.node.mut_store().store_snapshot_point(last.index, last.term)?;
        }
        Ok(deleted)
    }

    fn persist_commit(&mut self) -> Result<()> {
        self.ticks_since_commit_store = 0;
        self.log_bytes_at_commit_store = self.node.store().log().size_bytes();
        let hs = self.node.raft.hard_state();
        self.node.mut_store().store_hard_state(&hs)
    }
}

/// Wall-clock ms, for producer idleness (compared with record timestamps,
/// which are wall-clock too).
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Checks every batch an append message carries (the leader's bytes, or
/// the producer's for entries it had not stored yet) against its own CRC
/// before the follower takes it, so that corruption on the leader's disk
/// or on the way is refused at the first hop that can see it (STYLE.md:
/// verify, never re-bless). Control entries are built by each replica
/// from the entry type and carry no batch.
fn check_appended_batches(m: &Message) -> Result<()> {
    if m.get_msg_type() != MessageType::MsgAppend {
        return Ok(());
    }
    for e in m.get_entries() {
        if e.get_entry_type() != EntryType::EntryNormal || e.data.is_empty() {
            continue;
        }
        let checked = fjord_codec::BatchHeader::parse(&e.data).and_then(|h| {
            if h.batch_len as usize != e.data.len() {
                return Err(fjord_codec::Error::Truncated {
                    needed: h.batch_len as usize,
                    have: e.data.len(),
                });
            }
            fjord_codec::verify_crc(&e.data, &h)
        });
        checked.map_err(|source| Error::CorruptEntry { index: e.index, source })?;
    }
    Ok(())
}
