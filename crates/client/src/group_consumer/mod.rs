//! [`GroupConsumer`]: a member of a consumer group. The group's
//! coordinator assigns it partitions, it reads them from the group's
//! committed offsets, and commits what it has handed to the caller.
//!
//! A background task heartbeats to the coordinator (finding it again when
//! it moves) and publishes each assignment it receives. The caller's
//! [`GroupConsumer::poll`] applies assignment changes between records and
//! reports them as [`GroupEvent::Assigned`] / [`GroupEvent::Revoked`]:
//! a revoked partition's position is committed before the partition is
//! released (the next heartbeat says so, and only then may another
//! member take it). Partitions that do not move keep being read.
//! A granted partition counts as held from the moment its set-up starts
//! (so the coordinator grants it to no one else meanwhile), and is read
//! only if the newest assignment still has it when the set-up ends. Its
//! start (the committed offset, else the log start or end resolved at
//! once) is its position from then on, so even a partition revoked before
//! its first record commits where it started.
//!
//! If no heartbeat succeeds for a session timeout, the coordinator has
//! given this member's partitions away: they are reported revoked
//! without a commit, and the member joins again, under the same
//! client-made member id, when the coordinator answers.
//!
//! Delivery is at least once: a record handed out by `poll` is committed
//! by the next [`GroupConsumer::commit`], auto-commit, revocation or
//! [`GroupConsumer::close`]; if the member dies in between, its successor
//! reads the record again.

mod heartbeat;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{watch, Notify};
use tokio::time::Instant;

use heartbeat::{heartbeat_loop, leave_group, new_member_id, Assignment, Membership, Shared};

use crate::groups::CommittedOffset;
use crate::{Client, ConsumedRecord, Consumer, ConsumerConfig, Error, OffsetSpec, Result, Seek};

/// Default session timeout: the coordinator removes a member it has not
/// heard from for this long (KIP-848's default).
pub const SESSION_TIMEOUT_DEFAULT: Duration = Duration::from_secs(45);
/// Default interval of auto-commits.
pub const AUTO_COMMIT_INTERVAL_DEFAULT: Duration = Duration::from_secs(5);
/// Wait before polling again when every assigned partition has stopped on an error.
const STALLED_WAIT: Duration = Duration::from_millis(100);

/// Where a partition without a committed offset starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AutoOffsetReset {
    /// The start of the log.
    Earliest,
    /// The end: only records produced from now on.
    Latest,
}

/// Settings of a [`GroupConsumer`].
#[derive(Debug, Clone)]
pub struct GroupConsumerConfig {
    /// The group to join.
    pub group_id: String,
    /// Topics to subscribe to.
    pub topics: Vec<String>,
    /// "range", "round-robin" or "sticky"; "" for the broker default (sticky).
    pub assignor: String,
    /// Session timeout. Default [`SESSION_TIMEOUT_DEFAULT`]; the broker bounds it (1 s to 5 min).
    pub session_timeout: Duration,
    /// Where partitions without a committed offset start. Default [`AutoOffsetReset::Latest`].
    pub auto_offset_reset: AutoOffsetReset,
    /// Commit handed-out positions every `auto_commit_interval`. Default on.
    pub auto_commit: bool,
    /// Default [`AUTO_COMMIT_INTERVAL_DEFAULT`].
    pub auto_commit_interval: Duration,
    /// Shown by `DescribeGroup`. Default "fjord-client".
    pub client_id: String,
    /// Fetch settings (its `start` is ignored: the group decides positions).
    pub fetch: ConsumerConfig,
}

impl GroupConsumerConfig {
    /// Defaults for `group_id` subscribing to `topics`.
    pub fn new(group_id: &str, topics: &[&str]) -> Self {
        GroupConsumerConfig {
            group_id: group_id.to_string(),
            topics: topics.iter().map(|t| t.to_string()).collect(),
            assignor: String::new(),
            session_timeout: SESSION_TIMEOUT_DEFAULT,
            auto_offset_reset: AutoOffsetReset::Latest,
            auto_commit: true,
            auto_commit_interval: AUTO_COMMIT_INTERVAL_DEFAULT,
            client_id: "fjord-client".into(),
            fetch: ConsumerConfig::default(),
        }
    }

    fn validate(&self) -> Result<()> {
        let bad = |message: String| Err(Error::Config { message });
        if self.group_id.is_empty() {
            return bad("group_id must not be empty".into());
        }
        if self.topics.is_empty() {
            return bad("topics must name at least one topic".into());
        }
        if self.auto_commit && self.auto_commit_interval.is_zero() {
            return bad("auto_commit_interval must be positive".into());
        }
        if self.session_timeout < Duration::from_secs(1) {
            return bad(format!(
                "session_timeout {:?} is below the broker minimum of 1 s",
                self.session_timeout
            ));
        }
        Ok(())
    }
}

/// What [`GroupConsumer::poll`] returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupEvent {
    /// The next record of an owned partition.
    Record(ConsumedRecord),
    /// These partitions were granted to this member; their records follow.
    Assigned(Vec<(String, u32)>),
    /// These partitions were taken away (their positions were committed
    /// first, unless the membership was lost).
    Revoked(Vec<(String, u32)>),
}

type Tp = (String, u32);

/// A member of a consumer group.
///
/// ```no_run
/// use fjord_client::{Client, GroupConsumer, GroupConsumerConfig, GroupEvent};
/// # async fn demo(client: Client) -> fjord_client::Result<()> {
/// let mut consumer = GroupConsumer::new(client, GroupConsumerConfig::new("billing", &["orders"]))?;
/// loop {
///     match consumer.poll().await? {
///         GroupEvent::Record(rec) => println!("{}/{} {:?}", rec.partition, rec.offset, rec.value),
///         GroupEvent::Assigned(ps) => println!("now reading {ps:?}"),
///         GroupEvent::Revoked(ps) => println!("no longer reading {ps:?}"),
///     }
/// #   break;
/// }
/// consumer.close().await // commits and leaves the group
/// # }
/// ```
pub struct GroupConsumer {
    client: Client,
    config: GroupConsumerConfig,
    consumer: Consumer,
    shared: Arc<Shared>,
    assignment: watch::Receiver<Assignment>,
    lost_seen: u64,
    owned: BTreeSet<Tp>,
    /// Next offset to hand out per owned partition, as far as handed out.
    positions: BTreeMap<Tp, u64>,
    /// Last committed position per owned partition.
    committed: BTreeMap<Tp, u64>,
    events: VecDeque<GroupEvent>,
    next_commit: Instant,
    heartbeat: Option<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for GroupConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupConsumer")
            .field("group", &self.config.group_id)
            .field("owned", &self.owned)
            .field("positions", &self.positions)
            .finish()
    }
}

impl GroupConsumer {
    /// Starts a member: its heartbeat task joins the group at once.
    /// Must be called inside a tokio runtime.
    ///
    /// # Errors
    /// [`Error::Config`] for an invalid config.
    pub fn new(client: Client, config: GroupConsumerConfig) -> Result<Self> {
        config.validate()?;
        let (tx, rx) = watch::channel(Assignment::default());
        let shared = Arc::new(Shared {
            state: Mutex::new(Membership::new(new_member_id())),
            wake: Notify::new(),
            stop: watch::Sender::new(false),
        });
        let heartbeat = tokio::spawn(heartbeat_loop(client.clone(), config.clone(), shared.clone(), tx));
        // Every partition is sought to an explicit offset before it is read.
        let consumer = Consumer::new(client.clone(), config.fetch.clone());
        Ok(GroupConsumer {
            client,
            next_commit: Instant::now() + config.auto_commit_interval,
            config,
            consumer,
            shared,
            assignment: rx,
            lost_seen: 0,
            owned: BTreeSet::new(),
            positions: BTreeMap::new(),
            committed: BTreeMap::new(),
            events: VecDeque::new(),
            heartbeat: Some(heartbeat),
        })
    }

    /// The partitions this member reads now.
    pub fn assignment(&self) -> Vec<(String, u32)> {
        self.owned.iter().cloned().collect()
    }

    /// This member's id: made by the client when the consumer is created,
    /// and kept for its lifetime (a rejoin after the membership was lost
    /// uses it again).
    pub fn member_id(&self) -> String {
        self.shared.state.lock().expect("membership lock").member_id.clone()
    }

    /// The next event: a record, or a change of assignment. Waits while
    /// nothing is assigned or nothing new is committed. Auto-commits run here.
    ///
    /// # Errors
    /// A non-retriable fetch error, or a fatal membership error (an
    /// invalid subscription or assignor).
    pub async fn poll(&mut self) -> Result<GroupEvent> {
        loop {
            if let Some(ev) = self.events.pop_front() {
                return Ok(ev);
            }
            self.reconcile().await?;
            if !self.events.is_empty() {
                continue;
            }
            if self.config.auto_commit && Instant::now() >= self.next_commit {
                if let Err(e) = self.commit().await {
                    tracing::warn!(group = %self.config.group_id, error = %e, "auto-commit failed");
                }
                self.next_commit = Instant::now() + self.config.auto_commit_interval;
            }
            let reading = !self.owned.is_empty();
            let next_commit = if self.config.auto_commit { self.next_commit } else { far_future() };
            tokio::select! {
                changed = self.assignment.changed() => {
                    if changed.is_err() {
                        return Err(Error::ConsumerClosed);
                    }
                }
                rec = self.consumer.next(), if reading => match rec {
                    Some(Ok(r)) => {
                        self.positions.insert((r.topic.to_string(), r.partition), r.offset + 1);
                        return Ok(GroupEvent::Record(r));
                    }
                    Some(Err(e)) => self.fetch_failed(e).await?,
                    None => tokio::time::sleep(STALLED_WAIT).await,
                },
                _ = tokio::time::sleep_until(next_commit) => {}
            }
        }
    }

    /// A fetch error: an offset out of the log (retention passed the
    /// committed offset) resets the partition as `auto_offset_reset` says;
    /// retriable errors are retried by the next poll; others are returned.
    async fn fetch_failed(&mut self, e: Error) -> Result<()> {
        match e {
            Error::OffsetOutOfRange { .. } => {
                for (t, p) in self.consumer.failed() {
                    tracing::warn!(topic = %t, partition = p, "committed offset out of range; resetting");
                    let start = self.reset_offset(&t, p).await?;
                    self.consumer.seek(&t, p, Seek::Offset(start))?;
                    self.positions.insert((t, p), start);
                }
                Ok(())
            }
            e if e.is_retriable() => {
                tracing::debug!(error = %e, "fetch failed; retrying");
                Ok(())
            }
            e => Err(e),
        }
    }

    /// Where a partition without a usable committed offset starts, as
    /// `auto_offset_reset` says, resolved now: the log start, or the log
    /// end (high watermark).
    async fn reset_offset(&self, topic: &str, partition: u32) -> Result<u64> {
        let spec = match self.config.auto_offset_reset {
            AutoOffsetReset::Earliest => OffsetSpec::Earliest,
            AutoOffsetReset::Latest => OffsetSpec::Latest,
        };
        Ok(self.client.list_offsets(topic, partition, spec).await?.offset)
    }

    /// Commits the position of every owned partition: after the last
    /// record handed out by [`poll`](Self::poll), or where it was placed
    /// (its start, or a [`seek`](Self::seek)).
    ///
    /// # Errors
    /// [`Error::StaleMemberEpoch`] or [`Error::UnknownMember`] if the
    /// membership was lost meanwhile, or a transport error after retries.
    pub async fn commit(&mut self) -> Result<()> {
        let all: Vec<Tp> = self.owned.iter().cloned().collect();
        let offsets = self.uncommitted(&all);
        self.commit_to(offsets).await
    }

    /// Commits chosen offsets (each the next offset to read) with their
    /// metadata, as Kafka's `commitSync(Map<TopicPartition,
    /// OffsetAndMetadata>)`. Positions do not move: a later
    /// [`commit`](Self::commit), auto-commit, revocation or close commits
    /// a partition's position if it differs from what was committed here.
    ///
    /// # Errors
    /// [`Error::UnknownPartition`] (nothing is committed) if a partition
    /// is not owned by this member now; else as [`commit`](Self::commit).
    pub async fn commit_offsets(&mut self, offsets: &[CommittedOffset]) -> Result<()> {
        if let Some(o) = offsets.iter().find(|o| !self.owned.contains(&(o.topic.clone(), o.partition))) {
            return Err(Error::UnknownPartition {
                message: format!("{}/{} is not assigned to this member", o.topic, o.partition),
            });
        }
        self.commit_to(offsets.to_vec()).await
    }

    /// Moves an owned partition's position: the next records of it that
    /// [`poll`](Self::poll) hands out start at `offset`, and the next
    /// commit (explicit, automatic, on revocation or on close) commits
    /// `offset`. Seeking back to a record the caller could not process
    /// leaves it for whoever reads the partition next.
    ///
    /// # Errors
    /// [`Error::UnknownPartition`] if the partition is not owned by this member now.
    pub fn seek(&mut self, topic: &str, partition: u32, offset: u64) -> Result<()> {
        let tp = (topic.to_string(), partition);
        if !self.owned.contains(&tp) {
            return Err(Error::UnknownPartition {
                message: format!("{topic}/{partition} is not assigned to this member"),
            });
        }
        self.consumer.seek(topic, partition, Seek::Offset(offset))?;
        self.positions.insert(tp, offset);
        Ok(())
    }

    /// Positions of `tps` handed out since their last commit.
    fn uncommitted(&self, tps: &[Tp]) -> Vec<CommittedOffset> {
        tps.iter()
            .filter_map(|tp| {
                // Past trailing Raft no-ops too once everything fetched was
                // handed out, so a caught-up group shows no lag.
                let handed_out = *self.positions.get(tp)?;
                let drained = self.consumer.drained_position(&tp.0, tp.1).unwrap_or(0);
                let pos = handed_out.max(drained);
                (self.owned.contains(tp) && self.committed.get(tp) != Some(&pos)).then(|| CommittedOffset {
                    topic: tp.0.clone(),
                    partition: tp.1,
                    offset: pos,
                    metadata: String::new(),
                })
            })
            .collect()
    }

    async fn commit_to(&mut self, offsets: Vec<CommittedOffset>) -> Result<()> {
        if offsets.is_empty() {
            return Ok(());
        }
        let (member, epoch, hint) = {
            let s = self.shared.state.lock().expect("membership lock");
            (s.member_id.clone(), s.epoch, s.coordinator.clone())
        };
        if epoch == 0 {
            return Err(Error::UnknownMember { message: "not a member of the group yet".into() });
        }
        // A commit retries for as long as the client's retry deadline; if the
        // membership is lost meanwhile (the coordinator silent for a
        // session), it is pointless and must not hold up `poll`.
        let mut watch = self.assignment.clone();
        let seen = self.lost_seen;
        let lost = async move {
            if watch.wait_for(|a| a.lost != seen).await.is_err() {
                std::future::pending::<()>().await;
            }
        };
        let commit = self.client.commit_offsets(&self.config.group_id, &member, epoch, &offsets, hint);
        let addr = tokio::select! {
            addr = commit => addr?,
            () = lost => {
                return Err(Error::UnknownMember { message: "the membership was lost while committing".into() })
            }
        };
        self.shared.state.lock().expect("membership lock").coordinator = Some(addr);
        for o in offsets {
            self.committed.insert((o.topic, o.partition), o.offset);
        }
        Ok(())
    }

    /// Commits, stops heartbeating and leaves the group, so its partitions
    /// move to the other members at once.
    ///
    /// # Errors
    /// The commit's failure (the member leaves anyway).
    pub async fn close(mut self) -> Result<()> {
        let committed = self.commit().await;
        self.leave().await;
        committed
    }

    async fn leave(&mut self) {
        let _ = self.shared.stop.send(true);
        if let Some(h) = self.heartbeat.take() {
            let _ = h.await;
        }
        leave_group(&self.client, &self.config, &self.shared).await;
    }

    /// Applies the latest assignment: revoke (commit, release), then grant.
    /// Granted partitions are reported owned from the moment their set-up
    /// starts, and only those still assigned when it ends are read: the
    /// coordinator may have revoked some meanwhile (and, since they were
    /// reported owned, granted them to nobody else).
    async fn reconcile(&mut self) -> Result<()> {
        loop {
            let a = self.assignment.borrow_and_update().clone();
            if let Some(e) = a.fatal {
                return Err(e);
            }
            if a.lost != self.lost_seen {
                self.lost_seen = a.lost;
                let all: Vec<Tp> = self.owned.iter().cloned().collect();
                self.release(&all);
                if !all.is_empty() {
                    self.events.push_back(GroupEvent::Revoked(all));
                }
            }
            let revoked: Vec<Tp> = self.owned.difference(&a.assigned).cloned().collect();
            if !revoked.is_empty() {
                let offsets = self.uncommitted(&revoked);
                if let Err(e) = self.commit_to(offsets).await {
                    tracing::warn!(group = %self.config.group_id, error = %e, "commit of revoked partitions failed");
                }
                self.release(&revoked);
                self.events.push_back(GroupEvent::Revoked(revoked));
            }
            let added: BTreeSet<Tp> = a.assigned.difference(&self.owned).cloned().collect();
            if added.is_empty() {
                return Ok(());
            }
            self.publish_held(&added);
            let starts = match self.set_up(&added).await {
                Ok(starts) => starts,
                Err(e) => {
                    self.abandon(&added);
                    return Err(e);
                }
            };
            let latest = self.assignment.borrow().clone();
            if latest.lost != self.lost_seen || latest.fatal.is_some() {
                self.abandon(&added);
                continue;
            }
            let mut granted = Vec::new();
            for (tp, (offset, committed)) in starts {
                if !latest.assigned.contains(&tp) {
                    continue;
                }
                self.consumer.seek(&tp.0, tp.1, Seek::Offset(offset))?;
                self.positions.insert(tp.clone(), offset);
                if committed {
                    self.committed.insert(tp.clone(), offset);
                }
                self.owned.insert(tp.clone());
                granted.push(tp);
            }
            // Revoked while being set up: never read, so released as is.
            let dropped: BTreeSet<Tp> = added.difference(&self.owned).cloned().collect();
            self.abandon(&dropped);
            if !granted.is_empty() {
                self.events.push_back(GroupEvent::Assigned(granted));
            }
        }
    }

    /// Assigns granted partitions to the fetcher (not read until sought)
    /// and finds where each starts: its committed offset (`true`), or the
    /// offset `auto_offset_reset` gives now (`false`), which becomes its
    /// position at once, so a revocation before the first record commits
    /// it and the next owner starts exactly there.
    async fn set_up(&mut self, added: &BTreeSet<Tp>) -> Result<BTreeMap<Tp, (u64, bool)>> {
        let list: Vec<Tp> = added.iter().cloned().collect();
        let committed = self.client.fetch_offsets(&self.config.group_id, &list).await?;
        let committed: BTreeMap<Tp, u64> =
            committed.into_iter().map(|c| ((c.topic, c.partition), c.offset)).collect();
        let mut starts = BTreeMap::new();
        for tp in list {
            self.consumer.assign(&tp.0, Some(&[tp.1])).await?;
            let start = match committed.get(&tp) {
                Some(&o) => (o, true),
                None => (self.reset_offset(&tp.0, tp.1).await?, false),
            };
            starts.insert(tp, start);
        }
        Ok(starts)
    }

    /// Gives up partitions that were being set up and never read.
    fn abandon(&mut self, tps: &BTreeSet<Tp>) {
        for tp in tps {
            if !self.owned.contains(tp) {
                self.consumer.unassign(&tp.0, tp.1);
            }
        }
        self.publish_owned();
    }

    /// Stops reading partitions and tells the heartbeat task they are released.
    fn release(&mut self, tps: &[Tp]) {
        for tp in tps {
            self.consumer.unassign(&tp.0, tp.1);
            self.owned.remove(tp);
            self.positions.remove(tp);
            self.committed.remove(tp);
        }
        self.publish_owned();
    }

    fn publish_owned(&self) {
        self.publish_held(&BTreeSet::new());
    }

    /// Tells the heartbeat task what this member holds: what it reads,
    /// plus `setting_up`.
    fn publish_held(&self, setting_up: &BTreeSet<Tp>) {
        {
            let mut s = self.shared.state.lock().expect("membership lock");
            s.owned = self.owned.union(setting_up).cloned().collect();
            s.owned_lost = self.lost_seen;
        }
        self.shared.wake.notify_one();
    }
}

impl Drop for GroupConsumer {
    /// Best effort when not closed: commit what was handed out and leave,
    /// on a task of the current runtime if there is one.
    fn drop(&mut self) {
        let Some(h) = self.heartbeat.take() else { return };
        let _ = self.shared.stop.send(true);
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            h.abort();
            return;
        };
        let (client, config, shared) = (self.client.clone(), self.config.clone(), self.shared.clone());
        let all: Vec<Tp> = self.owned.iter().cloned().collect();
        // After a loss not yet applied by `poll`, nothing owned is ours to commit.
        let lost = self.assignment.borrow().lost != self.lost_seen;
        let offsets = if lost { Vec::new() } else { self.uncommitted(&all) };
        rt.spawn(async move {
            let _ = h.await;
            let (member, epoch, hint) = {
                let s = shared.state.lock().expect("membership lock");
                (s.member_id.clone(), s.epoch, s.coordinator.clone())
            };
            if !offsets.is_empty() && epoch != 0 {
                let _ = client.commit_offsets(&config.group_id, &member, epoch, &offsets, hint).await;
            }
            leave_group(&client, &config, &shared).await;
        });
    }
}

fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(365 * 24 * 3600)
}

#[cfg(test)]
mod tests;
