//! The driver of one Raft group: a task that owns the group's `RawNode`,
//! ticks it, steps messages into it, proposes batches, and handles each
//! `Ready` in the order raft-rs documents:
//!
//! 1. send the leader's messages (they need no local persistence);
//! 2. install a snapshot (reset the log to start where the leader's starts);
//! 3. apply committed entries (they are already persisted locally);
//! 4. append new entries to the segment log (truncating a conflicting
//!    suffix first) and fsync them as the flush policy says;
//! 5. persist the hard state when term or vote changed;
//! 6. only then send the messages that acknowledge persisted entries;
//! 7. `advance`, then send and apply what the light ready holds, and
//!    `advance_apply`.
//!
//! A storage error stops the group: it never continues on a broken log.
//!
//! # A full disk
//! A full filesystem is the exception ([`crate::Error::NoSpace`]): the
//! log cut off what it could not write and is a consistent prefix of what
//! raft-rs was told, so the group drops its `RawNode` and builds a new one
//! from storage, as a restarted process would, after failing every pending
//! proposal with the error. Nothing it could not persist was acknowledged:
//! an entry is counted for this node only after `advance`. It then sits
//! out [`NO_SPACE_RETRY_FIRST`] (doubling to [`NO_SPACE_RETRY_MAX`] while
//! writes keep failing), stepping no messages and refusing proposals, so
//! the other voters elect a leader whose disk has room, and retention
//! (maintenance runs on) can free space. Then it rejoins, and a group of
//! one campaigns at once.
//!
//! # Quiescence
//! An idle partition would still cost a tick and a heartbeat round trip
//! per follower every 200 ms; a thousand of them keep a broker busy. So a
//! settled group stops ticking: a leader with nothing pending, every
//! follower matched and recently active, and no activity for a few ticks;
//! a follower whose leader's broker is alive. Raft's safety does not rest
//! on ticks, only its liveness does, and liveness is kept by the
//! transport: brokers ping each other, so when a leader's broker dies its
//! followers see it within a second and start ticking (and electing), and
//! when it restarts within that second they see its new incarnation (the
//! new process leads nothing) and tick just the same; when
//! a leader cannot hear a follower's broker it ticks, and check-quorum
//! makes it step down if it is cut off. Any message or proposal wakes a
//! group up again.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fjord_storage::{DeletedSegment, FlushPolicy};
use raft::prelude::*;
use tokio::sync::{mpsc, oneshot, watch};

mod driver;

pub use driver::start;

use crate::{Error, Result};

/// Messages a group's mailbox holds before transport messages are dropped
/// (Raft retransmits) and proposals wait.
pub const MAILBOX_CAPACITY: usize = 4096;
/// Messages handled between two readies, so one busy group cannot starve a tick.
const MESSAGES_PER_READY_MAX: usize = 256;
/// Ticks a leader keeps ticking after its last activity (anything but
/// heartbeats) before it may quiesce: enough heartbeats to carry the final
/// commit index to every follower.
const LEADER_QUIESCE_AFTER_TICKS: u64 = 5;
/// The same for a follower: fewer, so that followers are quiet before
/// their leader stops heartbeating and none of them times out.
const FOLLOWER_QUIESCE_AFTER_TICKS: u64 = 2;
const _: () = assert!(FOLLOWER_QUIESCE_AFTER_TICKS < LEADER_QUIESCE_AFTER_TICKS);
/// A follower counts as in sync while it has matched the leader's commit
/// index within this long (Kafka's `replica.lag.time.max.ms` is 30 s; a
/// shorter window shows a dead broker sooner).
const REPLICA_LAG_MAX: Duration = Duration::from_secs(10);
/// Ticks between two stores of the commit index when nothing else changes
/// the hard state, under load as when idle: the commit index may lag on
/// disk (Raft relearns it), but a restarted node re-applies (reads back)
/// every entry after the stored one, so a recent one keeps its restart
/// from reading what was written in more than this many ticks.
const COMMIT_PERSIST_TICKS: u64 = 50;

/// How long a group whose disk was full sits out before it tries again;
/// see "A full disk".
pub const NO_SPACE_RETRY_FIRST: Duration = Duration::from_secs(1);
/// The longest such pause, reached by doubling while writes keep failing.
pub const NO_SPACE_RETRY_MAX: Duration = Duration::from_secs(30);
/// Bytes appended between two stores of the commit index, at most: what a
/// restart reads back of a busy log. 32 MiB is under 0.1 s of a disk's
/// sequential read; a store (a small file, two fsyncs) per 32 MiB written
/// costs nothing next to the writes.
const COMMIT_PERSIST_BYTES: u64 = 32 * 1024 * 1024;

/// How a group runs.
#[derive(Debug, Clone)]
pub struct GroupConfig {
    /// The group's id, unique in the cluster.
    pub group_id: u64,
    /// This node's id (the broker id).
    pub node_id: u64,
    /// Voters: the replicas, preferred leader first.
    pub voters: Vec<u64>,
    /// Interval of one Raft tick.
    pub tick: Duration,
    /// Ticks without a leader before an election (randomized up to twice this).
    pub election_ticks: usize,
    /// Ticks between heartbeats.
    pub heartbeat_ticks: usize,
    /// Bytes of entries in one append message (at least one entry is sent).
    pub max_size_per_msg: u64,
    /// Append messages in flight to one follower.
    pub max_inflight_msgs: usize,
    /// When appended entries are fsynced.
    pub flush: FlushPolicy,
    /// Let the group stop ticking while it is settled (see the module
    /// doc). Off for the metadata group, whose traffic nothing depends on.
    pub quiesce: bool,
}

impl GroupConfig {
    /// A config with Fjord's defaults: 200 ms ticks, heartbeats every tick,
    /// elections after 1–2 s without a leader, 4 MiB append messages, 64 in
    /// flight. (A tick is a wake-up of every group; fewer, coarser ticks
    /// with the same timeouts keep idle partitions cheap.)
    pub fn new(group_id: u64, node_id: u64, voters: Vec<u64>) -> GroupConfig {
        GroupConfig {
            group_id,
            node_id,
            voters,
            tick: Duration::from_millis(200),
            election_ticks: 5,
            heartbeat_ticks: 1,
            max_size_per_msg: 4 * 1024 * 1024,
            max_inflight_msgs: 64,
            flush: FlushPolicy::Always,
            quiesce: true,
        }
    }
}

/// Where an acknowledged batch landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Committed {
    /// Raft index of the entry.
    pub index: u64,
    /// Offset of its first record.
    pub base_offset: u64,
    /// Offset after its last record.
    pub next_offset: u64,
    /// The batch was a retry of one an idempotent producer had already
    /// written: these are the offsets of that first copy, and nothing new
    /// was appended.
    pub duplicate: bool,
}

/// When a proposal is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ack {
    /// Once a quorum holds it (committed).
    Quorum,
    /// Once the leader has it in its log.
    Leader,
}

enum Msg {
    Propose {
        data: Bytes,
        ack: Ack,
        reply: oneshot::Sender<Result<Committed>>,
    },
    Raft(Box<Message>),
    TransferLeader(u64),
    Campaign,
    Maintain {
        now_ms: i64,
        reply: oneshot::Sender<Result<Vec<DeletedSegment>>>,
    },
    /// A producer table scanned off the task for leadership number
    /// `leadership` (`None`: the scan failed).
    ProducersBuilt {
        leadership: u64,
        table: Option<crate::producers::ProducerTable>,
    },
    Stop(oneshot::Sender<()>),
}

/// Live facts about a group, readable without asking its task.
#[derive(Debug)]
pub struct GroupStatus {
    leader: AtomicU64,
    term: AtomicU64,
    is_leader: AtomicBool,
    stopped: AtomicBool,
    /// This node leads and has applied an entry of its own term, so its
    /// high watermark is the group's commit point and it may serve reads.
    serving: AtomicBool,
    /// On the leader: the replicas caught up to the commit index.
    in_sync: std::sync::Mutex<Vec<u64>>,
    /// Offset after the last committed (and applied) batch.
    high_watermark: watch::Sender<u64>,
    /// Times this node saw the group's leader change (to another node or to
    /// none), since it started: elections and handoffs, for metrics.
    leader_changes: AtomicU64,
}

impl GroupStatus {
    /// The leader's node id, 0 if unknown.
    pub fn leader(&self) -> u64 {
        self.leader.load(Ordering::Acquire)
    }

    /// Whether this node leads the group.
    pub fn is_leader(&self) -> bool {
        self.is_leader.load(Ordering::Acquire)
    }

    /// Whether this node leads the group and knows the commit point (it
    /// applied an entry of its term): the condition for serving reads.
    pub fn is_serving(&self) -> bool {
        self.serving.load(Ordering::Acquire)
    }

    /// The current term.
    pub fn term(&self) -> u64 {
        self.term.load(Ordering::Acquire)
    }

    /// On the leader, the replicas caught up to the commit index (empty elsewhere).
    pub fn in_sync(&self) -> Vec<u64> {
        self.in_sync.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Whether the group's task has stopped (deleted, or a storage failure).
    pub fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::Acquire)
    }

    /// Offsets below it are committed.
    pub fn high_watermark(&self) -> u64 {
        *self.high_watermark.borrow()
    }

    /// Times this node saw the leader change since it started.
    pub fn leader_changes(&self) -> u64 {
        self.leader_changes.load(Ordering::Acquire)
    }

    /// A receiver that sees every advance of the high watermark (and stop).
    pub fn watch_high_watermark(&self) -> watch::Receiver<u64> {
        self.high_watermark.subscribe()
    }
}

/// A handle to a running group.
#[derive(Debug, Clone)]
pub struct GroupHandle {
    tx: mpsc::Sender<Msg>,
    status: Arc<GroupStatus>,
}

impl std::fmt::Debug for Msg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Msg::Propose { .. } => "Propose",
            Msg::Raft(_) => "Raft",
            Msg::TransferLeader(_) => "TransferLeader",
            Msg::Campaign => "Campaign",
            Msg::Maintain { .. } => "Maintain",
            Msg::ProducersBuilt { .. } => "ProducersBuilt",
            Msg::Stop(_) => "Stop",
        })
    }
}

impl GroupHandle {
    /// The group's live status.
    pub fn status(&self) -> &Arc<GroupStatus> {
        &self.status
    }

    /// Proposes a validated batch; resolves when it is acknowledged as `ack` says.
    ///
    /// # Errors
    /// [`Error::NotLeader`] (with the leader if known), [`Error::Stopped`].
    pub async fn propose(&self, data: Bytes, ack: Ack) -> Result<Committed> {
        self.submit(data, ack).await?.await
    }

    /// Enqueues a proposal and returns the future of its acknowledgement:
    /// proposals submitted one after another are ordered in the log as
    /// submitted, while their acknowledgements can be awaited together.
    ///
    /// # Errors
    /// [`Error::Stopped`] if the group is gone.
    pub async fn submit(
        &self,
        data: Bytes,
        ack: Ack,
    ) -> Result<impl std::future::Future<Output = Result<Committed>> + Send + 'static> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Msg::Propose { data, ack, reply }).await.map_err(|_| Error::Stopped)?;
        Ok(async move { rx.await.map_err(|_| Error::Stopped)? })
    }

    /// Runs retention on the group's log (inside the group's task, so the
    /// Raft state records where the log now starts before Raft reads it
    /// again) and interval flushes. Returns the deleted segments.
    ///
    /// # Errors
    /// [`Error::Stopped`], or a storage error.
    pub async fn maintain(&self, now_ms: i64) -> Result<Vec<DeletedSegment>> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Msg::Maintain { now_ms, reply }).await.map_err(|_| Error::Stopped)?;
        rx.await.map_err(|_| Error::Stopped)?
    }

    /// Hands a Raft message from the network to the group; dropped if its
    /// mailbox is full (Raft resends).
    pub fn step(&self, msg: Message) {
        let _ = self.tx.try_send(Msg::Raft(Box::new(msg)));
    }

    /// Asks the leader to hand leadership to `to`, if `to` is caught up.
    pub fn transfer_leader(&self, to: u64) {
        let _ = self.tx.try_send(Msg::TransferLeader(to));
    }

    /// Starts an election now rather than after a timeout.
    pub fn campaign(&self) {
        let _ = self.tx.try_send(Msg::Campaign);
    }

    /// Stops the group's task and waits for it.
    pub async fn stop(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Msg::Stop(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }
}
