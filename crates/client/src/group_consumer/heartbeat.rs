//! The heartbeat task of a [`super::GroupConsumer`]: joins, stays in and
//! leaves the group at its coordinator, and publishes each assignment.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fjord_proto::pb;
use tokio::sync::{watch, Notify};

use super::{GroupConsumerConfig, Tp};
use crate::{Client, Error};

/// Wait before retrying a heartbeat that failed retriably.
const HEARTBEAT_RETRY: Duration = Duration::from_millis(200);

/// What the heartbeat task publishes.
#[derive(Debug, Clone, Default)]
pub(super) struct Assignment {
    /// Bumped when the membership is lost (fenced or expired): everything
    /// owned is gone without a commit.
    pub(super) lost: u64,
    pub(super) assigned: BTreeSet<Tp>,
    /// A failure the member cannot recover from (bad configuration).
    pub(super) fatal: Option<Error>,
}

/// State shared with the heartbeat task.
#[derive(Debug, Default)]
pub(super) struct Membership {
    pub(super) member_id: String,
    pub(super) epoch: i64,
    pub(super) coordinator: Option<String>,
    pub(super) owned: BTreeSet<Tp>,
}

/// Membership and signals shared by the consumer and its heartbeat task.
#[derive(Debug)]
pub(super) struct Shared {
    pub(super) state: Mutex<Membership>,
    pub(super) wake: Notify,
    pub(super) stop: watch::Sender<bool>,
}

/// One attempt per coordinator to leave (epoch -1); the session timeout
/// removes the member anyway if this fails.
pub(super) async fn leave_group(client: &Client, config: &GroupConsumerConfig, shared: &Shared) {
    let (member, hint) = {
        let s = shared.state.lock().expect("membership lock");
        (s.member_id.clone(), s.coordinator.clone())
    };
    if member.is_empty() {
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
    loop {
        if *stop.borrow() {
            return;
        }
        let (member_id, epoch, owned, hint) = {
            let s = shared.state.lock().expect("membership lock");
            (s.member_id.clone(), s.epoch, s.owned.clone(), s.coordinator.clone())
        };
        let req = pb::GroupHeartbeatRequest {
            group_id: config.group_id.clone(),
            member_id,
            member_epoch: epoch,
            topics: config.topics.clone(),
            owned: owned
                .iter()
                .map(|(t, p)| pb::TopicPartition { topic: t.clone(), partition: *p })
                .collect(),
            assignor: config.assignor.clone(),
            session_timeout_ms: config.session_timeout.as_millis().min(u32::MAX as u128) as u32,
            client_id: config.client_id.clone(),
        };
        let addr = match hint {
            Some(a) => Ok(a),
            None => client.find_coordinator_from(&config.group_id, failures).await,
        };
        let result = match addr {
            Ok(addr) => client.heartbeat_once(&addr, timeout, req).await.map(|r| (r, addr)),
            Err(e) => Err(e),
        };
        let mut wait = interval;
        match result {
            Ok((reply, addr)) => {
                failures = 0;
                {
                    let mut s = shared.state.lock().expect("membership lock");
                    s.member_id = reply.member_id;
                    s.epoch = reply.member_epoch;
                    s.coordinator = Some(addr);
                }
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
            Err(Error::StaleMemberEpoch { message } | Error::UnknownMember { message }) => {
                // Fenced or expired: everything owned is lost; rejoin now.
                tracing::warn!(group = %config.group_id, %message, "lost group membership; rejoining");
                {
                    let mut s = shared.state.lock().expect("membership lock");
                    s.member_id.clear();
                    s.epoch = 0;
                    s.owned.clear();
                }
                tx.send_modify(|a| {
                    a.lost += 1;
                    a.assigned.clear();
                });
                wait = Duration::ZERO;
            }
            Err(e @ (Error::InvalidArgument { .. } | Error::Config { .. })) => {
                tracing::error!(group = %config.group_id, error = %e, "the group refused this member");
                tx.send_modify(|a| a.fatal = Some(e));
                return;
            }
            Err(e) => {
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
