//! One consumer group's state and its membership protocol (KIP-848 style),
//! as a state machine with an injected clock: no I/O, so it is tested with
//! plain `Instant`s.
//!
//! The coordinator keeps a *target* assignment, recomputed by the group's
//! assignor whenever the group epoch is bumped (a member joins, leaves,
//! expires or changes its subscription, or a subscribed topic's partition
//! count changes). A member's heartbeat reconciles it toward its target
//! one step: partitions no longer in its target are dropped from its
//! assignment at once (revoked), and partitions of its target are granted
//! only when no other member still holds them, where "holds" means the
//! other member was assigned them or still reports them owned. So a
//! partition moves from A to B only after A's heartbeat reports it
//! released (or A left or expired), and members whose partitions do not
//! change keep consuming throughout.
//!
//! A member that keeps partitions it was asked to give up for
//! `REBALANCE_TIMEOUT_MS` (it heartbeats but its application stopped
//! polling) is removed, so a handoff cannot stall forever.
//!
//! Member epochs: a member's epoch becomes the group epoch whenever its
//! assignment changes. A request may carry the current or the previous
//! epoch (the response that carried the new one may have been lost);
//! anything else is stale.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::assignor::{assign, Assignor, MemberSpec};
use super::limits::{
    GROUP_MEMBERS_MAX, HEARTBEAT_INTERVAL_MS_MAX, HEARTBEAT_INTERVAL_MS_MIN, REBALANCE_TIMEOUT_MS,
    SESSION_TIMEOUT_MS_DEFAULT, SESSION_TIMEOUT_MS_MAX, SESSION_TIMEOUT_MS_MIN,
};
use crate::{Error, Result};

/// A topic partition.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub(crate) struct Tp {
    pub(crate) topic: String,
    pub(crate) partition: u32,
}

impl Tp {
    pub(crate) fn new(topic: &str, partition: u32) -> Tp {
        Tp { topic: topic.to_owned(), partition }
    }
}

impl std::fmt::Display for Tp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.topic, self.partition)
    }
}

/// A member as persisted (storage-format.md §11).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Member {
    pub(crate) epoch: i64,
    pub(crate) previous_epoch: i64,
    pub(crate) client_id: String,
    pub(crate) client_host: String,
    pub(crate) topics: BTreeSet<String>,
    pub(crate) session_timeout_ms: u32,
    /// What the coordinator last told the member it may consume.
    pub(crate) assigned: BTreeSet<Tp>,
    /// What the member last reported consuming.
    pub(crate) owned: BTreeSet<Tp>,
}

impl Member {
    fn holds(&self, tp: &Tp) -> bool {
        self.assigned.contains(tp) || self.owned.contains(tp)
    }
}

/// The persisted part of a group: everything a new coordinator needs to
/// carry on without the members noticing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct GroupMeta {
    pub(crate) epoch: i64,
    pub(crate) assignor: String,
    /// Partition counts the target was computed from.
    pub(crate) partitions: BTreeMap<String, u32>,
    pub(crate) members: BTreeMap<String, Member>,
    pub(crate) target: BTreeMap<String, BTreeSet<Tp>>,
}

/// A committed offset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Committed {
    /// The next offset to read.
    pub(crate) offset: u64,
    pub(crate) metadata: String,
    /// When it was committed, ms since the Unix epoch.
    pub(crate) timestamp_ms: i64,
}

/// A group: its persisted metadata, its committed offsets, and (in memory
/// only) when each member's session ends.
#[derive(Debug, Clone, Default)]
pub(crate) struct Group {
    pub(crate) meta: GroupMeta,
    pub(crate) offsets: BTreeMap<Tp, Committed>,
    pub(crate) deadlines: HashMap<String, Instant>,
    /// Since when each member has held partitions it was asked to give up
    /// (not persisted: timers restart with a new coordinator, as sessions do).
    pub(crate) revoking: HashMap<String, Instant>,
}

/// A heartbeat, converted from the wire.
#[derive(Debug, Clone, Default)]
pub(crate) struct Heartbeat {
    pub(crate) member_id: String,
    pub(crate) member_epoch: i64,
    pub(crate) topics: Vec<String>,
    pub(crate) owned: BTreeSet<Tp>,
    pub(crate) assignor: String,
    pub(crate) session_timeout_ms: u32,
    pub(crate) client_id: String,
    pub(crate) client_host: String,
}

/// The answer to a heartbeat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Reply {
    pub(crate) member_id: String,
    pub(crate) member_epoch: i64,
    pub(crate) assigned: BTreeSet<Tp>,
    pub(crate) heartbeat_interval_ms: u32,
}

/// Member epoch that leaves the group.
pub(crate) const LEAVE_EPOCH: i64 = -1;

/// What a group looks like from outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GroupState {
    Empty,
    Stable,
    Assigning,
}

impl GroupState {
    pub(crate) fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "empty",
            GroupState::Stable => "stable",
            GroupState::Assigning => "assigning",
        }
    }
}

/// Heartbeat interval for a session timeout: a third of it, so two
/// heartbeats may be lost before the session ends, within bounds.
pub(crate) fn heartbeat_interval_ms(session_timeout_ms: u32) -> u32 {
    (session_timeout_ms / 3).clamp(HEARTBEAT_INTERVAL_MS_MIN, HEARTBEAT_INTERVAL_MS_MAX)
}

impl Group {
    /// Whether the group has anything worth keeping.
    pub(crate) fn is_empty(&self) -> bool {
        self.meta.members.is_empty() && self.offsets.is_empty()
    }

    pub(crate) fn state(&self) -> GroupState {
        if self.meta.members.is_empty() {
            GroupState::Empty
        } else if self
            .meta
            .members
            .iter()
            .all(|(id, m)| self.meta.target.get(id).is_some_and(|t| *t == m.assigned))
        {
            GroupState::Stable
        } else {
            GroupState::Assigning
        }
    }

    /// Starts every member's session afresh (after a coordinator took the group over).
    pub(crate) fn restart_sessions(&mut self, now: Instant) {
        self.deadlines = self
            .meta
            .members
            .iter()
            .map(|(id, m)| (id.clone(), now + Duration::from_millis(m.session_timeout_ms as u64)))
            .collect();
        self.revoking.clear();
    }

    /// Whether a member's session or rebalance timeout has passed.
    pub(crate) fn has_expired(&self, now: Instant) -> bool {
        let rebalance = Duration::from_millis(REBALANCE_TIMEOUT_MS);
        self.meta.members.keys().any(|id| self.deadlines.get(id).is_none_or(|d| *d <= now))
            || self.revoking.values().any(|since| now.duration_since(*since) >= rebalance)
    }

    /// Handles a heartbeat. `counts` gives a topic's partition count (None
    /// if it does not exist); `new_id` a fresh member id for a join. The
    /// group may change even when this fails (a fenced member is removed).
    pub(crate) fn heartbeat(
        &mut self,
        group: &str,
        hb: Heartbeat,
        counts: &dyn Fn(&str) -> Option<u32>,
        new_id: &dyn Fn() -> String,
        now: Instant,
    ) -> Result<Reply> {
        let timeout = match hb.session_timeout_ms {
            0 => SESSION_TIMEOUT_MS_DEFAULT,
            t if !(SESSION_TIMEOUT_MS_MIN..=SESSION_TIMEOUT_MS_MAX).contains(&t) => {
                return Err(Error::InvalidArgument(format!(
                    "session_timeout_ms {t} is outside {SESSION_TIMEOUT_MS_MIN}..={SESSION_TIMEOUT_MS_MAX}"
                )))
            }
            t => t,
        };
        let mut bump = false;
        let id = match hb.member_epoch {
            LEAVE_EPOCH => {
                if self.meta.members.remove(&hb.member_id).is_some() {
                    self.deadlines.remove(&hb.member_id);
                    self.revoking.remove(&hb.member_id);
                    self.retarget(counts);
                }
                return Ok(Reply {
                    member_id: hb.member_id,
                    member_epoch: LEAVE_EPOCH,
                    assigned: BTreeSet::new(),
                    heartbeat_interval_ms: 0,
                });
            }
            0 => {
                if hb.topics.is_empty() {
                    return Err(Error::InvalidArgument(
                        "topics: a joining member must subscribe to at least one topic".into(),
                    ));
                }
                if self.meta.members.is_empty() {
                    self.meta.assignor = Assignor::parse(&hb.assignor)?.name().to_owned();
                } else if !hb.assignor.is_empty() {
                    // A member naming no assignor takes the group's.
                    let assignor = Assignor::parse(&hb.assignor)?.name();
                    if assignor != self.meta.assignor {
                        return Err(Error::InvalidArgument(format!(
                            "assignor {assignor:?} differs from {:?}, which group {group:?} uses while it has \
                             members; join with assignor {:?} (or none), or wait until the group is empty",
                            self.meta.assignor, self.meta.assignor
                        )));
                    }
                }
                let id = if hb.member_id.is_empty() { new_id() } else { hb.member_id.clone() };
                if !self.meta.members.contains_key(&id) && self.meta.members.len() >= GROUP_MEMBERS_MAX {
                    return Err(Error::InvalidArgument(format!(
                        "group {group:?} already has the limit of {GROUP_MEMBERS_MAX} members"
                    )));
                }
                // A member rejoining under its id starts over: whatever it
                // held is released, since it lost it when it rejoined.
                self.meta.members.insert(
                    id.clone(),
                    Member {
                        epoch: 0,
                        previous_epoch: 0,
                        client_id: hb.client_id.clone(),
                        client_host: hb.client_host.clone(),
                        topics: BTreeSet::new(),
                        session_timeout_ms: timeout,
                        assigned: BTreeSet::new(),
                        owned: BTreeSet::new(),
                    },
                );
                bump = true;
                id
            }
            epoch => {
                let Some(m) = self.meta.members.get_mut(&hb.member_id) else {
                    return Err(Error::UnknownMember { group: group.to_owned(), member: hb.member_id });
                };
                if epoch != m.epoch && epoch != m.previous_epoch {
                    let current = m.epoch;
                    self.meta.members.remove(&hb.member_id);
                    self.deadlines.remove(&hb.member_id);
                    self.revoking.remove(&hb.member_id);
                    self.retarget(counts);
                    return Err(Error::StaleMemberEpoch(format!(
                        "member {:?} of group {group:?} sent epoch {epoch}, but its epoch is {current}; it was removed and must rejoin",
                        hb.member_id
                    )));
                }
                // Only what it was given can be owned.
                let held: BTreeSet<Tp> = m.assigned.union(&m.owned).cloned().collect();
                m.owned = hb.owned.intersection(&held).cloned().collect();
                m.session_timeout_ms = timeout;
                if !hb.client_id.is_empty() {
                    m.client_id = hb.client_id.clone();
                }
                hb.member_id.clone()
            }
        };
        let m = self.meta.members.get_mut(&id).expect("member present");
        let topics: BTreeSet<String> = hb.topics.iter().cloned().collect();
        if !topics.is_empty() && topics != m.topics {
            m.topics = topics;
            bump = true;
        }
        self.deadlines.insert(id.clone(), now + Duration::from_millis(timeout as u64));
        let counts_now = self.subscribed_counts(counts);
        if bump || counts_now != self.meta.partitions {
            self.retarget(counts);
        }
        self.reconcile(&id);
        let m = &self.meta.members[&id];
        if m.owned.is_subset(&m.assigned) {
            self.revoking.remove(&id);
        } else {
            self.revoking.entry(id.clone()).or_insert(now);
        }
        // A member still waiting for partitions another member holds asks
        // again soon, so a handoff takes one release, not a heartbeat interval.
        let waiting = self.meta.target.get(&id).is_some_and(|t| *t != m.assigned);
        Ok(Reply {
            member_id: id,
            member_epoch: m.epoch,
            assigned: m.assigned.clone(),
            heartbeat_interval_ms: if waiting {
                HEARTBEAT_INTERVAL_MS_MIN
            } else {
                heartbeat_interval_ms(timeout)
            },
        })
    }

    /// Removes members whose session ended, or who kept partitions they
    /// were asked to give up for longer than [`REBALANCE_TIMEOUT_MS`] (a
    /// member that heartbeats but never polls would otherwise stall the
    /// handoff forever); returns their ids.
    pub(crate) fn expire(&mut self, now: Instant, counts: &dyn Fn(&str) -> Option<u32>) -> Vec<String> {
        let rebalance = Duration::from_millis(REBALANCE_TIMEOUT_MS);
        let expired: Vec<String> = self
            .meta
            .members
            .keys()
            .filter(|id| {
                self.deadlines.get(*id).is_none_or(|d| *d <= now)
                    || self.revoking.get(*id).is_some_and(|since| now.duration_since(*since) >= rebalance)
            })
            .cloned()
            .collect();
        if !expired.is_empty() {
            for id in &expired {
                self.meta.members.remove(id);
                self.deadlines.remove(id);
                self.revoking.remove(id);
            }
            self.retarget(counts);
        }
        expired
    }

    /// Checks that a commit of `partitions` by this member is allowed.
    pub(crate) fn check_commit(
        &self,
        group: &str,
        member_id: &str,
        epoch: i64,
        partitions: &[Tp],
    ) -> Result<()> {
        if member_id.is_empty() && epoch == LEAVE_EPOCH {
            if !self.meta.members.is_empty() {
                return Err(Error::GroupNotEmpty {
                    group: group.to_owned(),
                    members: self.meta.members.len(),
                });
            }
            return Ok(());
        }
        let Some(m) = self.meta.members.get(member_id) else {
            return Err(Error::UnknownMember { group: group.to_owned(), member: member_id.to_owned() });
        };
        if epoch != m.epoch && epoch != m.previous_epoch {
            return Err(Error::StaleMemberEpoch(format!(
                "member {member_id:?} of group {group:?} committed with epoch {epoch}, but its epoch is {}",
                m.epoch
            )));
        }
        if let Some(tp) = partitions.iter().find(|tp| !m.holds(tp)) {
            return Err(Error::StaleMemberEpoch(format!(
                "member {member_id:?} of group {group:?} does not own {tp} (epoch {epoch})"
            )));
        }
        Ok(())
    }

    fn subscribed_counts(&self, counts: &dyn Fn(&str) -> Option<u32>) -> BTreeMap<String, u32> {
        let topics: BTreeSet<&String> = self.meta.members.values().flat_map(|m| m.topics.iter()).collect();
        topics.into_iter().filter_map(|t| counts(t).map(|n| (t.clone(), n))).collect()
    }

    /// Bumps the group epoch and recomputes the target assignment.
    fn retarget(&mut self, counts: &dyn Fn(&str) -> Option<u32>) {
        self.meta.epoch += 1;
        self.meta.partitions = self.subscribed_counts(counts);
        let kind = Assignor::parse(&self.meta.assignor).unwrap_or(Assignor::Sticky);
        let specs: BTreeMap<String, MemberSpec> = self
            .meta
            .members
            .iter()
            .map(|(id, m)| {
                let current = self.meta.target.get(id).cloned().unwrap_or_default();
                (id.clone(), MemberSpec { topics: m.topics.clone(), current })
            })
            .collect();
        self.meta.target = assign(kind, &specs, &self.meta.partitions);
    }

    /// Moves one member's assignment toward its target: revoke what left
    /// the target, grant what no other member holds.
    fn reconcile(&mut self, id: &str) {
        let target = self.meta.target.get(id).cloned().unwrap_or_default();
        let me = &self.meta.members[id];
        let others: Vec<&Member> =
            self.meta.members.iter().filter(|(o, _)| *o != id).map(|(_, m)| m).collect();
        let assigned: BTreeSet<Tp> = target
            .into_iter()
            .filter(|tp| me.assigned.contains(tp) || !others.iter().any(|o| o.holds(tp)))
            .collect();
        let epoch = self.meta.epoch;
        let m = self.meta.members.get_mut(id).expect("member present");
        if m.epoch == 0 {
            // Just joined: no earlier epoch to accept.
            (m.epoch, m.previous_epoch) = (epoch, epoch);
        } else if assigned != m.assigned && m.epoch != epoch {
            (m.previous_epoch, m.epoch) = (m.epoch, epoch);
        }
        m.assigned = assigned;
    }
}

#[cfg(test)]
mod tests;
