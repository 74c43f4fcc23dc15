//! Broker errors, and the one place they become gRPC statuses.

use std::sync::Arc;

use fjord_proto::pb::{ErrorCode, ErrorDetail};
use tonic::{Code, Status};

/// What went wrong serving a request.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No such topic.
    #[error("unknown topic {}", quoted(.0))]
    UnknownTopic(String),
    /// No such partition.
    #[error("topic {topic:?} has no partition {partition} (it has {count})")]
    UnknownPartition {
        /// Topic.
        topic: String,
        /// Partition asked for.
        partition: u32,
        /// Partitions the topic has.
        count: u32,
    },
    /// A request field is invalid; the message names it and the limit.
    #[error("{0}")]
    InvalidArgument(String),
    /// A batch is larger than the broker accepts.
    #[error("batch of {size} bytes exceeds the limit of {max} bytes (batch_bytes_max)")]
    MessageTooLarge {
        /// Its size.
        size: u64,
        /// The limit.
        max: u64,
    },
    /// One record of a record-level publish is larger than a batch may be.
    #[error("records[{index}]: record of {size} bytes exceeds the limit of {max} bytes (batch_bytes_max less the batch header)")]
    RecordTooLarge {
        /// Its index in the request.
        index: usize,
        /// Its encoded size (key, value, headers and framing).
        size: u64,
        /// The limit.
        max: u64,
    },
    /// Stored data failed its check when read: it is not served.
    #[error("{topic}/{partition}: stored batch at offset {offset} is corrupt: {source}")]
    CorruptData {
        /// Topic.
        topic: String,
        /// Partition.
        partition: u32,
        /// Base offset of the batch (or where reading started).
        offset: u64,
        /// What is wrong.
        #[source]
        source: fjord_codec::Error,
    },
    /// A scrub found this range of the replica damaged: it is not served
    /// until repaired from another replica; reads outside it still work.
    #[error(
        "{topic}/{partition}: offsets [{start_offset}, {end_offset}) are damaged on this broker's replica and \
         are not served until repaired from another replica; read from offset {end_offset} on to skip them \
         ({reason})"
    )]
    Damaged {
        /// Topic.
        topic: String,
        /// Partition.
        partition: u32,
        /// First damaged offset.
        start_offset: u64,
        /// The offset after the range.
        end_offset: u64,
        /// What the scrub found.
        reason: String,
    },
    /// A batch's bytes are malformed.
    #[error("corrupt batch for partition {partition}: {source}")]
    CorruptBatch {
        /// Partition it was sent to.
        partition: u32,
        /// What is wrong.
        #[source]
        source: fjord_codec::Error,
    },
    /// An offset outside the log.
    #[error(
        "offset {offset} is out of range for {topic}/{partition}: valid offsets are [{log_start}, {log_end}]"
    )]
    OffsetOutOfRange {
        /// Topic.
        topic: String,
        /// Partition.
        partition: u32,
        /// Offset asked for.
        offset: u64,
        /// First offset in the log.
        log_start: u64,
        /// Offset the next record will get.
        log_end: u64,
    },
    /// This broker does not lead the partition.
    #[error("broker is not the leader of {topic}/{partition}; {}", who("leader", *leader, leader_address))]
    NotLeader {
        /// Topic.
        topic: String,
        /// Partition.
        partition: u32,
        /// Leader's broker id (0 if unknown).
        leader: u64,
        /// Its client address ("" if unknown).
        leader_address: String,
    },
    /// Topic changes go through the metadata leader, and this broker is not it.
    #[error("this broker does not lead the cluster metadata; {}", who("leader", *leader, leader_address))]
    NotMetadataLeader {
        /// Leader's broker id (0 if unknown).
        leader: u64,
        /// Its client address ("" if unknown).
        leader_address: String,
    },
    /// Replication failed in a way that is not the client's to fix.
    #[error("replication: {0}")]
    Replication(String),
    /// The topic already exists.
    #[error("topic {} already exists", quoted(.0))]
    TopicAlreadyExists(String),
    /// The storage engine failed outside a partition (the metadata log).
    #[error("storage failure: {0}")]
    Storage(#[source] Arc<fjord_storage::Error>),
    /// A partition's storage failed, as the storage engine said: its code
    /// follows the failure (a full disk is DISK_FULL, a damaged range
    /// CORRUPT_DATA, a poisoned log STORAGE_FAILED).
    #[error("{topic}/{partition}: {source}{}", storage_hint(source))]
    PartitionStorage {
        /// Topic.
        topic: String,
        /// Partition.
        partition: u32,
        /// What failed.
        #[source]
        source: Arc<fjord_storage::Error>,
    },
    /// The disk is nearly full: produce is refused until space is freed.
    #[error(
        "disk nearly full: {free} bytes free on {}, below min_free_bytes {min_free_bytes}; produce is refused \
         until space is freed (delete a topic or lower retention); reads and commits still work",
        dir.display()
    )]
    DiskFull {
        /// The data directory.
        dir: std::path::PathBuf,
        /// Bytes free.
        free: u64,
        /// The threshold.
        min_free_bytes: u64,
    },
    /// The request did not complete in time.
    #[error("{0}")]
    Timeout(String),
    /// The broker is shutting down or the partition is gone.
    #[error("{0}")]
    Unavailable(String),
    /// Topic metadata could not be read or written.
    #[error("metadata {path}: {reason}")]
    Metadata {
        /// The file.
        path: std::path::PathBuf,
        /// What failed.
        reason: String,
    },
    /// An idempotent producer's batch does not continue its sequence.
    #[error(
        "{topic}/{partition}: producer {producer_id} sent sequence {got}; the next expected is {expected}"
    )]
    OutOfOrderSequence {
        /// Topic.
        topic: String,
        /// Partition.
        partition: u32,
        /// The producer.
        producer_id: i64,
        /// The sequence the partition expects next.
        expected: i32,
        /// The batch's first sequence.
        got: i32,
    },
    /// An idempotent producer's batch carries an epoch older than the log's.
    #[error("{topic}/{partition}: producer {producer_id} epoch {epoch} is fenced by epoch {current_epoch}")]
    ProducerFenced {
        /// Topic.
        topic: String,
        /// Partition.
        partition: u32,
        /// The producer.
        producer_id: i64,
        /// The batch's epoch.
        epoch: i16,
        /// The newest epoch the partition holds for it.
        current_epoch: i16,
    },
    /// This broker does not coordinate the consumer group.
    #[error("broker is not the coordinator of group {group:?}; {}", who("coordinator", *coordinator, coordinator_address))]
    NotCoordinator {
        /// Group.
        group: String,
        /// Coordinator's broker id (0 if unknown).
        coordinator: u64,
        /// Its client address ("" if unknown).
        coordinator_address: String,
    },
    /// No such consumer group.
    #[error("unknown group {}", quoted(.0))]
    UnknownGroup(String),
    /// The group has active members, and the operation needs none.
    #[error("group {group:?} has {members} active member(s); stop them first")]
    GroupNotEmpty {
        /// Group.
        group: String,
        /// Its active members.
        members: usize,
    },
    /// A member's epoch is stale, or it commits a partition it does not own.
    #[error("{0}")]
    StaleMemberEpoch(String),
    /// The member is not in the group (it expired, left, or never joined).
    #[error("member {member:?} is not in group {group:?}; rejoin")]
    UnknownMember {
        /// Group.
        group: String,
        /// Member id given.
        member: String,
    },
}

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, Error>;

/// Most bytes of a client-supplied string (a topic name, a group id) an
/// error message quotes. A name is echoed so the user sees which one was
/// wrong; 64 bytes identify it, and a longer echo only grows the status
/// trailers (tonic clients refuse trailers over 8 KiB, hiding the error).
pub(crate) const QUOTED_BYTES_MAX: usize = 64;
/// Most bytes of any status message, whatever it quotes: far below the
/// 8 KiB default metadata limit of gRPC clients, which the message and its
/// base64 copy in `grpc-status-details-bin` (4/3 of it) must share.
pub(crate) const STATUS_MESSAGE_BYTES_MAX: usize = 1024;

/// `s` in quotes as `{:?}` prints it, cut to its first [`QUOTED_BYTES_MAX`]
/// bytes (at a character boundary) with its full length when longer.
pub(crate) fn quoted(s: &str) -> String {
    if s.len() <= QUOTED_BYTES_MAX {
        return format!("{s:?}");
    }
    format!("{:?}…({} bytes)", truncated(s, QUOTED_BYTES_MAX), s.len())
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary.
fn truncated(s: &str, max: usize) -> &str {
    let mut end = max.min(s.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// "the leader is broker 2 at 10.0.0.2:9092", or that it is not known yet.
fn who(role: &str, id: u64, address: &str) -> String {
    match (id, address) {
        (0, _) => format!("the {role} is not known yet; retry"),
        (id, "") => format!("the {role} is broker {id}"),
        (id, address) => format!("the {role} is broker {id} at {address}"),
    }
}

impl Error {
    fn code(&self) -> (Code, ErrorCode) {
        match self {
            Error::UnknownTopic(_) => (Code::NotFound, ErrorCode::UnknownTopic),
            Error::UnknownPartition { .. } => (Code::NotFound, ErrorCode::UnknownPartition),
            Error::InvalidArgument(_) => (Code::InvalidArgument, ErrorCode::InvalidRequest),
            Error::MessageTooLarge { .. } | Error::RecordTooLarge { .. } => {
                (Code::InvalidArgument, ErrorCode::MessageTooLarge)
            }
            Error::CorruptData { .. } | Error::Damaged { .. } => (Code::DataLoss, ErrorCode::CorruptData),
            Error::CorruptBatch { .. } => (Code::InvalidArgument, ErrorCode::CorruptBatch),
            Error::OffsetOutOfRange { .. } => (Code::OutOfRange, ErrorCode::OffsetOutOfRange),
            Error::TopicAlreadyExists(_) => (Code::AlreadyExists, ErrorCode::TopicAlreadyExists),
            Error::Timeout(_) => (Code::DeadlineExceeded, ErrorCode::Timeout),
            Error::DiskFull { .. } => (Code::ResourceExhausted, ErrorCode::DiskFull),
            Error::Unavailable(_) => (Code::Unavailable, ErrorCode::Unavailable),
            Error::NotLeader { .. } | Error::NotMetadataLeader { .. } => {
                (Code::Unavailable, ErrorCode::NotLeader)
            }
            Error::Replication(_) => (Code::Internal, ErrorCode::StorageFailed),
            Error::Storage(s) | Error::PartitionStorage { source: s, .. } => storage_code(s),
            Error::Metadata { .. } => (Code::Internal, ErrorCode::StorageFailed),
            Error::OutOfOrderSequence { .. } => (Code::FailedPrecondition, ErrorCode::OutOfOrderSequence),
            Error::ProducerFenced { .. } => (Code::FailedPrecondition, ErrorCode::ProducerFenced),
            Error::NotCoordinator { .. } => (Code::Unavailable, ErrorCode::NotCoordinator),
            Error::UnknownGroup(_) => (Code::NotFound, ErrorCode::UnknownGroup),
            Error::GroupNotEmpty { .. } => (Code::FailedPrecondition, ErrorCode::GroupNotEmpty),
            Error::StaleMemberEpoch(_) => (Code::FailedPrecondition, ErrorCode::StaleMemberEpoch),
            Error::UnknownMember { .. } => (Code::NotFound, ErrorCode::UnknownMember),
        }
    }

    /// The wire form: a status whose details carry an encoded [`ErrorDetail`].
    pub fn detail(&self) -> ErrorDetail {
        let (_, code) = self.code();
        let mut message = self.to_string();
        if message.len() > STATUS_MESSAGE_BYTES_MAX {
            // A backstop: every quoted input should already be short.
            let full = message.len();
            message = format!("{}…({full} bytes)", truncated(&message, STATUS_MESSAGE_BYTES_MAX));
        }
        let mut detail = ErrorDetail { code: code as i32, message, ..ErrorDetail::default() };
        match self {
            Error::OffsetOutOfRange { log_start, log_end, .. } => {
                detail.log_start_offset = *log_start;
                detail.log_end_offset = *log_end;
            }
            Error::Damaged { start_offset, end_offset, .. } => {
                detail.damaged_start_offset = *start_offset;
                detail.damaged_end_offset = *end_offset;
            }
            Error::Storage(s) | Error::PartitionStorage { source: s, .. } => {
                if let fjord_storage::Error::Damaged { start_offset, end_offset, .. } = **s {
                    detail.damaged_start_offset = start_offset;
                    detail.damaged_end_offset = end_offset;
                }
            }
            Error::NotLeader { leader, leader_address, .. }
            | Error::NotMetadataLeader { leader, leader_address } => {
                detail.leader_id = *leader;
                detail.leader_address = leader_address.clone();
            }
            Error::NotCoordinator { coordinator, coordinator_address, .. } => {
                detail.leader_id = *coordinator;
                detail.leader_address = coordinator_address.clone();
            }
            _ => {}
        }
        detail
    }
}

impl From<fjord_storage::Error> for Error {
    fn from(e: fjord_storage::Error) -> Self {
        Error::Storage(Arc::new(e))
    }
}

/// The code of a storage failure: by what failed, not where.
fn storage_code(e: &fjord_storage::Error) -> (Code, ErrorCode) {
    use fjord_storage::Error as S;
    match e {
        S::NoSpace { .. } => (Code::ResourceExhausted, ErrorCode::DiskFull),
        S::Damaged { .. } | S::Corrupt { .. } => (Code::DataLoss, ErrorCode::CorruptData),
        S::InvalidBatch(_) => (Code::InvalidArgument, ErrorCode::CorruptBatch),
        _ => (Code::Internal, ErrorCode::StorageFailed),
    }
}

/// What a client should know beyond the storage engine's words.
fn storage_hint(e: &fjord_storage::Error) -> &'static str {
    match e {
        fjord_storage::Error::NoSpace { .. } => {
            "; the write was cut off on this broker and not acknowledged (another replica may still commit \
             it, as after a timeout); retry once space is freed (delete a topic or lower retention)"
        }
        fjord_storage::Error::Poisoned { .. } => "; the replica takes no writes until the broker restarts",
        _ => "",
    }
}

impl From<Error> for Status {
    fn from(e: Error) -> Status {
        let (code, _) = e.code();
        let detail = e.detail();
        if matches!(code, Code::Internal | Code::DataLoss) {
            tracing::error!(error = %e, "request failed");
        }
        Status::with_details(
            code,
            detail.message.clone(),
            fjord_proto::encode_status_details(code, &detail).into(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn statuses_carry_code_message_and_detail() {
        let e =
            Error::OffsetOutOfRange { topic: "t".into(), partition: 2, offset: 9, log_start: 3, log_end: 7 };
        let s = Status::from(e);
        assert_eq!(s.code(), Code::OutOfRange);
        assert!(s.message().contains("[3, 7]"), "{}", s.message());
        let d = fjord_proto::decode_status_details(s.details()).unwrap();
        assert_eq!((d.code(), d.log_start_offset, d.log_end_offset), (ErrorCode::OffsetOutOfRange, 3, 7));
        let s = Status::from(Error::UnknownTopic("nope".into()));
        assert_eq!(s.code(), Code::NotFound);
        assert_eq!(fjord_proto::decode_status_details(s.details()).unwrap().code(), ErrorCode::UnknownTopic);
        let standard = tonic_types::pb::Status::decode(s.details()).unwrap();
        assert_eq!((standard.code, standard.details.len()), (Code::NotFound as i32, 1));
    }

    /// A partition's storage failure keeps its kind through replication
    /// to the client: the code follows what failed, the message names the
    /// partition, and a damaged range's offsets travel in the detail.
    #[test]
    fn partition_storage_failures_are_typed_by_what_failed_and_name_the_partition() {
        use fjord_storage::Error as S;
        let via_replication = |e: S| {
            let r: fjord_replication::Error = e.into();
            let peers = Arc::new(std::collections::BTreeMap::new());
            crate::partition::partition_err("t", 3, &peers, r)
        };
        let cases = [
            (
                S::Poisoned { dir: "/d".into(), reason: "fdatasync failed".into() },
                Code::Internal,
                ErrorCode::StorageFailed,
                "restarts",
            ),
            (
                S::NoSpace {
                    op: "write",
                    path: "/d/0.log".into(),
                    source: std::io::Error::from_raw_os_error(28),
                },
                Code::ResourceExhausted,
                ErrorCode::DiskFull,
                "retry once space is freed",
            ),
            (
                S::Damaged { dir: "/d".into(), start_offset: 10, end_offset: 20, reason: "CRC".into() },
                Code::DataLoss,
                ErrorCode::CorruptData,
                "[10, 20)",
            ),
        ];
        for (e, code, detail_code, says) in cases {
            let err = via_replication(e);
            let detail = err.detail();
            let s = Status::from(err);
            assert_eq!(s.code(), code, "{}", s.message());
            assert_eq!(detail.code, detail_code as i32, "{}", s.message());
            assert!(s.message().starts_with("t/3: ") && s.message().contains(says), "{}", s.message());
            if detail_code == ErrorCode::CorruptData {
                assert_eq!((detail.damaged_start_offset, detail.damaged_end_offset), (10, 20));
            }
        }
    }

    #[test]
    fn quoted_inputs_and_messages_are_capped() {
        assert_eq!(quoted("abc"), "\"abc\"");
        let long = "é".repeat(1000); // 2 bytes a character: the cut falls on a boundary
        assert_eq!(quoted(&long), format!("{:?}…(2000 bytes)", "é".repeat(32)));
        let s = Status::from(Error::UnknownTopic("x".repeat(10_000)));
        assert!(s.message().len() < 100 && s.message().ends_with("…(10000 bytes)"), "{}", s.message());
        let s = Status::from(Error::InvalidArgument("y".repeat(100_000)));
        assert!(s.message().len() <= STATUS_MESSAGE_BYTES_MAX + 20, "{} bytes", s.message().len());
        assert!(s.message().ends_with("…(100000 bytes)"));
    }
}
