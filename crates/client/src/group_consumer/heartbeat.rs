//! The heartbeat task of a [`super::GroupConsumer`]: joins, stays in and
//! leaves the group at its coordinator, and publishes each assignment.
//!
//! The member id is made here, on the client, once per consumer, and sent
//! with every join: a join whose answer was lost and is sent again names
//! the same member, so the coordinator does not create a second one
//! (which would hold partitions until its session ended).
//!
//! The task also keeps the session's clock on this side: if no heartbeat
//! has succeeded for a session timeout, the coordinator has (or soon will
//! have) expired the member and handed its partitions to others, so the
//! membership is treated as lost (the consumer stops reading without a
//! commit) and the task joins again once the coordinator answers.

use std::collections::BTreeSet;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fjord_proto::pb;
use tokio::sync::{watch, Notify};
use tokio::time::Instant;

use super::{GroupConsumerConfig, Tp};
use crate::{Client, Error};

/// Wait before retrying a heartbeat that failed retriably.
const HEARTBEAT_RETRY: Duration = Duration::from_millis(200);

/// What the heartbeat task publishes.
#[derive(Debug, Clone, Default)]
pub(super) struct Assignment {
    /// Bumped when the membership is lost (fenced, expired, or no
    /// heartbeat succeeded for a session timeout): everything owned is
    /// gone without a commit.
    pub(super) lost: u64,
    pub(super) assigned: BTreeSet<Tp>,
    /// A failure the member cannot recover from (bad configuration).
    pub(super) fatal: Option<Error>,
}

/// State shared with the heartbeat task.
#[derive(Debug)]
pub(super) struct Membership {
    /// Made by [`new_member_id`] once; kept across rejoins.
    pub(super) member_id: String,
    /// 0 while not a member (before the first join, after a loss).
    pub(super) epoch: i64,
    /// Whether a join was ever sent: only then may the coordinator know
    /// the member, and a leave be worth sending.
    pub(super) joined: bool,
    pub(super) coordinator: Option<String>,
    /// Partitions the consumer holds: those it reads and those granted
    /// and still being set up. Reported as owned until released, so the
    /// coordinator grants none of them to another member meanwhile.
    pub(super) owned: BTreeSet<Tp>,
    /// The [`Assignment::lost`] count `owned` was published under: a set
    /// published before a loss is not reported after it.
    pub(super) owned_lost: u64,
}

impl Membership {
    pub(super) fn new(member_id: String) -> Self {
        Membership {
            member_id,
            epoch: 0,
            joined: false,
            coordinator: None,
            owned: BTreeSet::new(),
            owned_lost: 0,
        }
    }
}

/// Membership and signals shared by the consumer and its heartbeat task.
#[derive(Debug)]
pub(super) struct Shared {
    pub(super) state: Mutex<Membership>,
    pub(super) wake: Notify,
    pub(super) stop: watch::Sender<bool>,
}

/// A member id: 32 hex digits of a 128-bit value that is unique in
/// practice. Two std `RandomState`s (randomly keyed per process, and each
/// new one differently within it) hash the time, the process id and a
/// counter; no random-number crate is needed for an id that only has to
/// differ from the group's other members'.
pub(super) fn new_member_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let now =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
    let half = || {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(now);
        h.write_u32(std::process::id());
        h.write_u64(n);
        h.finish()
    };
    format!("{:016x}{:016x}", half(), half())
}

/// One attempt per coordinator to leave (epoch -1); the session timeout
/// removes the member anyway if this fails.
pub(super) async fn leave_group(client: &Client, config: &GroupConsumerConfig, shared: &Shared) {
    let (member, joined, hint) = {
        let s = shared.state.lock().expect("membership lock");
        (s.member_id.clone(), s.joined, s.coordinator.clone())
    };
    if !joined {
        return;
    }
    let req = pb::GroupHeartbeatRequest {
        group_id: config.group_id.clone(),
        member_id: member,
        member_epoch: -1,
        ..Default::default()
    };
    let timeout = client.config().request_timeout.min(config.session_timeout);
    let addr = match hint {
        Some(a) => a,
        None => match client.find_coordinator(&config.group_id).await {
            Ok(a) => a,
            Err(_) => return,
        },
    };
    if let Err(Error::NotCoordinator { coordinator_address: Some(a), .. }) =
        client.heartbeat_once(&addr, timeout, req.clone()).await
    {
        let _ = client.heartbeat_once(&a, timeout, req).await;
    }
}

/// The next heartbeat: a join (epoch 0) under the member's own id, or a
/// heartbeat reporting what it owns. `lost` is the task's loss count.
fn request(config: &GroupConsumerConfig, s: &Membership, lost: u64) -> pb::GroupHeartbeatRequest {
    let owned = if s.owned_lost == lost { &s.owned } else { &BTreeSet::new() };
    pb::GroupHeartbeatRequest {
        group_id: config.group_id.clone(),
        member_id: s.member_id.clone(),
        member_epoch: s.epoch,
        topics: config.topics.clone(),
        owned: owned.iter().map(|(t, p)| pb::TopicPartition { topic: t.clone(), partition: *p }).collect(),
        assignor: config.assignor.clone(),
        session_timeout_ms: config.session_timeout.as_millis().min(u32::MAX as u128) as u32,
        client_id: config.client_id.clone(),
    }
}

/// The membership is gone: a later heartbeat joins again under the same
/// id, and the consumer drops what it owned without a commit.
fn lose(shared: &Shared, tx: &watch::Sender<Assignment>, lost: &mut u64) {
    shared.state.lock().expect("membership lock").epoch = 0;
    *lost += 1;
    let n = *lost;
    tx.send_modify(|a| {
        a.lost = n;
        a.assigned.clear();
    });
}

/// Heartbeats until told to stop, publishing assignments.
pub(super) async fn heartbeat_loop(
    client: Client,
    config: GroupConsumerConfig,
    shared: Arc<Shared>,
    tx: watch::Sender<Assignment>,
) {
    let mut stop = shared.stop.subscribe();
    let timeout = client.config().request_timeout.min(config.session_timeout);
    let mut interval = config.session_timeout / 3;
    // Consecutive failed heartbeats: each asks the next broker who coordinates.
    let mut failures = 0usize;
    // Memberships lost so far (mirrors `Assignment::lost`).
    let mut lost = 0u64;
    // While a member: when the session, as the coordinator counts it, ends
    // at the earliest (a session timeout after the last successful
    // heartbeat was sent; the coordinator started it later, on receipt).
    let mut session_end: Option<Instant> = None;
    loop {
        if *stop.borrow() {
            return;
        }
        let (req, hint) = {
            let mut s = shared.state.lock().expect("membership lock");
            if s.epoch == 0 {
                s.joined = true;
            }
            (request(&config, &s, lost), s.coordinator.clone())
        };
        let sent = Instant::now();
        let attempt = async {
            let addr = match hint {
                Some(a) => a,
                None => client.find_coordinator_from(&config.group_id, failures).await?,
            };
            client.heartbeat_once(&addr, timeout, req).await.map(|r| (r, addr))
        };
        let result = match session_end {
            Some(end) => tokio::select! {
                r = attempt => Some(r),
                _ = tokio::time::sleep_until(end) => None,
            },
            None => Some(attempt.await),
        };
        let mut wait = interval;
        match result {
            Some(Ok((reply, addr))) => {
                failures = 0;
                {
                    let mut s = shared.state.lock().expect("membership lock");
                    if reply.member_id != s.member_id {
                        // A coordinator that names members itself: use its name.
                        tracing::debug!(group = %config.group_id, id = %reply.member_id, "coordinator renamed this member");
                        s.member_id = reply.member_id;
                    }
                    s.epoch = reply.member_epoch;
                    s.coordinator = Some(addr);
                }
                session_end = Some(sent + config.session_timeout);
                if !reply.heartbeat_interval.is_zero() {
                    interval = reply.heartbeat_interval;
                    wait = interval;
                }
                tx.send_if_modified(|a| {
                    let changed = a.assigned != reply.assigned;
                    a.assigned = reply.assigned;
                    changed
                });
            }
            None => {
                // The coordinator has not answered for a session: it has
                // expired this member by now, or will before it answers.
                tracing::warn!(group = %config.group_id, session = ?config.session_timeout, "no heartbeat succeeded for a session; partitions lost, rejoining");
                session_end = None;
                lose(&shared, &tx, &mut lost);
                shared.state.lock().expect("membership lock").coordinator = None;
                failures += 1;
                wait = HEARTBEAT_RETRY;
            }
            Some(Err(Error::StaleMemberEpoch { message } | Error::UnknownMember { message })) => {
                // Fenced or expired: everything owned is lost; rejoin now.
                tracing::warn!(group = %config.group_id, %message, "lost group membership; rejoining");
                session_end = None;
                lose(&shared, &tx, &mut lost);
                wait = Duration::ZERO;
            }
            Some(Err(e @ (Error::InvalidArgument { .. } | Error::Config { .. }))) => {
                tracing::error!(group = %config.group_id, error = %e, "the group refused this member");
                tx.send_modify(|a| a.fatal = Some(e));
                return;
            }
            Some(Err(e)) => {
                tracing::debug!(group = %config.group_id, error = %e, "heartbeat failed; retrying");
                let mut s = shared.state.lock().expect("membership lock");
                if let Error::NotCoordinator { coordinator_address, .. } = &e {
                    s.coordinator = coordinator_address.clone();
                } else {
                    s.coordinator = None;
                }
                failures += 1;
                wait = HEARTBEAT_RETRY;
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shared.wake.notified() => {}
            _ = stop.changed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_ids_are_32_hex_digits_and_differ() {
        let ids: BTreeSet<String> = (0..1000).map(|_| new_member_id()).collect();
        assert_eq!(ids.len(), 1000);
        for id in &ids {
            assert_eq!(id.len(), 32, "{id}");
            assert!(id.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
        }
    }

    fn config() -> GroupConsumerConfig {
        GroupConsumerConfig::new("g", &["t"])
    }

    #[test]
    fn a_join_and_a_rejoin_name_the_member() {
        let mut s = Membership::new("abc".into());
        let join = request(&config(), &s, 0);
        assert_eq!((join.member_id.as_str(), join.member_epoch), ("abc", 0));
        // After a loss the member joins again under the same id.
        s.epoch = 0;
        let rejoin = request(&config(), &s, 1);
        assert_eq!((rejoin.member_id.as_str(), rejoin.member_epoch), ("abc", 0));
    }

    #[test]
    fn owned_is_reported_only_for_the_current_membership() {
        let mut s = Membership::new("abc".into());
        s.epoch = 4;
        s.owned = [("t".to_string(), 0), ("t".to_string(), 1)].into_iter().collect();
        let names =
            |r: &pb::GroupHeartbeatRequest| -> Vec<u32> { r.owned.iter().map(|tp| tp.partition).collect() };
        assert_eq!(names(&request(&config(), &s, 0)), [0, 1]);
        // Published before loss 1: what the consumer held then is gone.
        assert_eq!(names(&request(&config(), &s, 1)), Vec::<u32>::new());
        s.owned_lost = 1;
        assert_eq!(names(&request(&config(), &s, 1)), [0, 1]);
    }
}
