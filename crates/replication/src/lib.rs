//! Raft replication of Fjord's logs, driven by raft-rs.
//!
//! Each replicated log (a partition, or the cluster metadata) is a Raft
//! group whose Raft log *is* its segment log ([`store::GroupStore`]): a
//! proposed batch is appended once, fsynced once, replicated, and
//! acknowledged at commit; the commit point is the high watermark readers
//! stop at. [`group::start`] runs a group's driver task.
//!
//! This crate owns consensus and nothing else: it depends on
//! `fjord-storage` and raft-rs, never on tonic or the broker. Messages
//! leave through the [`Transport`] the broker provides, and raft-rs's
//! protobuf types are encoded to bytes ([`encode_message`]) before they
//! meet any other protobuf library.

pub mod group;
pub mod producers;
mod raft_log;
pub mod store;

pub use group::{start, Ack, Committed, GroupConfig, GroupHandle, GroupStatus};
pub use raft::prelude::{Message, MessageType};
pub use store::GroupStore;

/// Sends Raft messages to other nodes. Implementations queue and batch;
/// `send` must not block.
pub trait Transport: Send + Sync + 'static {
    /// Queues `msg` of group `group` for node `to`. Losing it is allowed:
    /// Raft retransmits.
    fn send(&self, to: u64, group: u64, msg: Message);

    /// Whether node `node` was heard from recently (any traffic: the
    /// transport keeps links alive with pings). Settled groups stop ticking
    /// while every node they depend on is alive; see `group`'s quiescence.
    fn is_alive(&self, node: u64) -> bool;

    /// Which process of node `node` was last heard from (0 if unknown or
    /// not tracked). A change means the node restarted, so a follower
    /// whose leader it was must not stay quiet on the strength of its
    /// liveness: the new process leads nothing.
    fn incarnation(&self, _node: u64) -> u64 {
        0
    }
}

/// Encodes a Raft message for the wire.
///
/// # Errors
/// Never in practice; protobuf encoding of an in-memory message cannot fail
/// except for sizes beyond 2 GiB.
pub fn encode_message(msg: &Message) -> Result<Vec<u8>> {
    protobuf::Message::write_to_bytes(msg).map_err(|e| Error::Raft(e.to_string()))
}

/// Decodes a Raft message from the wire.
///
/// # Errors
/// [`Error::Corrupt`] for bytes that are not a Raft message.
pub fn decode_message(bytes: &[u8]) -> Result<Message> {
    protobuf::Message::parse_from_bytes(bytes).map_err(|e| Error::Corrupt(format!("raft message: {e}")))
}

/// Why a replication call failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// This node does not lead the group; `leader` is the leader's id, 0 if unknown.
    #[error("not the leader (leader is {leader})")]
    NotLeader {
        /// The leader's node id, 0 if unknown.
        leader: u64,
    },
    /// The group's task has stopped.
    #[error("the raft group has stopped")]
    Stopped,
    /// The log failed, as the storage engine said (shared: an error is
    /// handed to every pending proposal). A full filesystem
    /// ([`Error::is_no_space`]) is retriable: the write was cut off and the
    /// group waits for space (see `group`'s "A full disk").
    #[error("storage: {0}")]
    Storage(#[source] std::sync::Arc<fjord_storage::Error>),
    /// raft-rs refused something.
    #[error("raft: {0}")]
    Raft(String),
    /// Stored or received bytes are not what they must be.
    #[error("corrupt: {0}")]
    Corrupt(String),
    /// A batch a leader sent for Raft index `index` fails its own check
    /// (CRC, length); the follower refuses the whole append.
    #[error("entry at raft index {index} is corrupt: {source}")]
    CorruptEntry {
        /// The entry's Raft index.
        index: u64,
        /// What failed.
        #[source]
        source: fjord_codec::Error,
    },
    /// This node leads the group but has not committed an entry of its
    /// term yet, so it cannot check idempotent producers' sequences. Retriable.
    #[error("the leader is not serving yet")]
    NotServing,
    /// An idempotent producer's batch carries an epoch older than the one
    /// the log holds for it: an older incarnation of the producer.
    #[error("producer {producer_id} epoch {epoch} is fenced: the log holds epoch {current_epoch}")]
    ProducerFenced {
        /// The producer.
        producer_id: i64,
        /// The batch's epoch.
        epoch: i16,
        /// The newest epoch the log holds for it.
        current_epoch: i16,
    },
    /// An idempotent producer's batch does not continue its sequence.
    #[error("producer {producer_id}: sequence {got} is out of order; the next expected is {expected}")]
    OutOfOrderSequence {
        /// The producer.
        producer_id: i64,
        /// The sequence the log expects next.
        expected: i32,
        /// The batch's first sequence.
        got: i32,
    },
    /// The batch repeats one that is in the log but not committed yet;
    /// retry to get its offsets once it is.
    #[error("an earlier copy of this batch is still being replicated")]
    DuplicateInFlight,
}

impl From<fjord_storage::Error> for Error {
    fn from(e: fjord_storage::Error) -> Self {
        Error::Storage(std::sync::Arc::new(e))
    }
}

impl Error {
    /// Whether the log's filesystem is full (see [`Error::Storage`]).
    pub fn is_no_space(&self) -> bool {
        matches!(self, Error::Storage(e) if e.is_no_space())
    }
}

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, Error>;

#[cfg(test)]
mod tests;
