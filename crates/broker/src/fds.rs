//! The file-descriptor budget: a topic is created only if this broker's
//! replicas of it fit in what `RLIMIT_NOFILE` leaves.
//!
//! Running out of descriptors is not a clean failure: the metadata apply
//! that opens the new partitions fails half way, and partitions already
//! serving fail their next fsync or segment roll (issue #21, 3). So the
//! metadata leader counts before it proposes: the descriptors open now,
//! plus [`FDS_PER_REPLICA`] for each replica the topic would place here,
//! must stay below the soft limit minus what connections and the broker's
//! own files need ([`fd_reserve`]). The count is this broker's; brokers of
//! one cluster are expected to run with the same limit.

use std::io;

use crate::config::BrokerConfig;
use crate::connections::PEER_CONNECTIONS_RESERVED_PER_PEER;
use crate::{Error, Result};

/// Descriptors one partition replica holds open: its active segment's log,
/// offset index and time index, and one for the `raft-state` and recovery
/// point files it rewrites. A closed segment holds three more only until it
/// is sealed (the next flush or maintenance pass), after which it is read
/// through its maps alone (`fjord_storage`'s `handle` module).
pub(crate) const FDS_PER_REPLICA: u64 = 4;
/// Descriptors kept for everything but partitions and connections: the
/// listener, the runtime's epoll and eventfds, the metadata log, logs,
/// files opened while serving (a segment roll opens three before it
/// closes any), and the channels this broker opens to its peers.
pub(crate) const FDS_RESERVED_BASE: u64 = 256;

/// Raises the soft `RLIMIT_NOFILE` to the hard limit and returns the soft
/// limit in force (Kafka's and Redpanda's start scripts do the same: the
/// default soft limit of 1024 fits 250 partitions).
pub(crate) fn raise_fd_limit() -> u64 {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        limit.current = limit.maximum;
        if let Err(e) = setrlimit(Resource::Nofile, limit) {
            tracing::warn!(error = %e, "could not raise the soft RLIMIT_NOFILE to the hard limit");
        }
    }
    soft_fd_limit()
}

/// The soft `RLIMIT_NOFILE` (`u64::MAX` when unlimited).
fn soft_fd_limit() -> u64 {
    rustix::process::getrlimit(rustix::process::Resource::Nofile).current.unwrap_or(u64::MAX)
}

/// Descriptors kept for connections and the broker's own files: what
/// they may need, but at most half of `limit`, so that a broker run with a
/// small limit still takes topics (and then runs out at fewer connections
/// than `connections_max`, which are refused at accept, harmlessly).
pub(crate) fn fd_reserve(config: &BrokerConfig, limit: u64) -> u64 {
    let peers = config.peers.len().saturating_sub(1) as u64;
    let wanted =
        config.connections_max as u64 + peers * PEER_CONNECTIONS_RESERVED_PER_PEER as u64 + FDS_RESERVED_BASE;
    wanted.min(limit / 2)
}

/// Descriptors this process has open now.
fn open_fds() -> io::Result<u64> {
    Ok(std::fs::read_dir("/proc/self/fd")?.count() as u64)
}

/// Refuses to create `topic` with `replicas` of its partitions on this
/// broker when they would not fit in the descriptor budget.
///
/// # Errors
/// [`Error::InvalidArgument`] naming the need, the budget and the limit.
pub(crate) fn check_fd_budget(config: &BrokerConfig, topic: &str, replicas: u64) -> Result<()> {
    let limit = soft_fd_limit();
    let Ok(open) = open_fds() else { return Ok(()) }; // no /proc: nothing to count with
    let reserve = fd_reserve(config, limit);
    let budget = limit - reserve;
    let need = replicas * FDS_PER_REPLICA;
    if open + need > budget {
        return Err(Error::InvalidArgument(format!(
            "topic {}: its {replicas} partition replica(s) on broker {} need about {need} file descriptors \
             ({FDS_PER_REPLICA} each), but {open} are open and the fd budget is {budget} \
             (RLIMIT_NOFILE {limit} minus {} kept for connections and the broker's own files); \
             raise `ulimit -n` or create fewer partitions",
            crate::error::quoted(topic),
            config.broker_id,
            reserve
        )));
    }
    Ok(())
}
