//! Client errors, decoded from gRPC statuses into variants a program can
//! react to by type.
//!
//! Brokers put a prost-encoded `ErrorDetail` in the status details; its code
//! picks the variant. A status without details (a proxy, a transport
//! failure, an older broker) is classified by its gRPC code alone.

use std::sync::Arc;

use fjord_proto::pb;
use tonic::{Code, Status};

/// Everything a client call can fail with. Cloneable so one failed batch can
/// fail each of its records' deliveries.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// The topic does not exist.
    #[error("unknown topic: {message}")]
    UnknownTopic {
        /// The broker's (or client's) explanation.
        message: String,
    },
    /// The partition does not exist in the topic.
    #[error("unknown partition: {message}")]
    UnknownPartition {
        /// The explanation, naming the partition.
        message: String,
    },
    /// A request field is invalid; the message names it and the limit.
    #[error("invalid argument: {message}")]
    InvalidArgument {
        /// The explanation.
        message: String,
    },
    /// A batch or record is larger than a broker limit.
    #[error("message too large: {message}")]
    MessageTooLarge {
        /// The explanation, naming the limit.
        message: String,
    },
    /// A record is larger than this producer's batch limit; it was not sent.
    #[error("record of {size} bytes exceeds the producer batch limit of {max} bytes")]
    RecordTooLarge {
        /// Bytes the record takes in a batch, batch header included.
        size: usize,
        /// `ProducerConfig::batch_bytes`.
        max: usize,
    },
    /// The broker found a batch malformed or its CRC wrong.
    #[error("corrupt batch: {message}")]
    CorruptBatch {
        /// The explanation.
        message: String,
    },
    /// Bytes received from a broker are not valid batches (CRC mismatch, bad header).
    #[error("corrupt data from broker")]
    Codec(#[source] fjord_codec::Error),
    /// The offset is outside the partition's `[log_start, log_end]`.
    #[error("offset out of range [{log_start}, {log_end}]: {message}")]
    OffsetOutOfRange {
        /// First offset still in the log.
        log_start: u64,
        /// Offset the next record will get.
        log_end: u64,
        /// The explanation.
        message: String,
    },
    /// The broker asked does not lead the partition.
    #[error("not the leader (leader hint: id {leader_id:?}, address {leader_address:?})")]
    NotLeader {
        /// The broker believed to lead, if known.
        leader_id: Option<u64>,
        /// Its client address, if known.
        leader_address: Option<String>,
    },
    /// The topic already exists.
    #[error("topic already exists: {message}")]
    TopicAlreadyExists {
        /// The explanation.
        message: String,
    },
    /// The partition stopped accepting writes after a storage failure.
    #[error("storage failed on the broker: {message}")]
    StorageFailed {
        /// The explanation.
        message: String,
    },
    /// Data the broker stored failed its check when read; the broker does
    /// not serve it (another replica may hold a good copy).
    #[error("corrupt data on the broker: {message}")]
    CorruptData {
        /// Which partition and offset, and what failed.
        message: String,
    },
    /// The broker's disk is nearly full and it refuses produce requests
    /// until space is freed; nothing was written.
    #[error("broker disk full: {message}")]
    DiskFull {
        /// Free bytes and the threshold.
        message: String,
    },
    /// The request did not complete within its timeout.
    #[error("request timed out: {message}")]
    Timeout {
        /// What timed out.
        message: String,
    },
    /// A broker limit (connections, in-flight requests) is reached.
    #[error("broker busy: {message}")]
    Busy {
        /// The explanation.
        message: String,
    },
    /// The broker is unreachable, shutting down, or the partition not ready.
    #[error("unavailable: {message}")]
    Unavailable {
        /// The explanation.
        message: String,
    },
    /// Establishing a connection failed.
    #[error("transport error")]
    Transport(#[source] Arc<tonic::transport::Error>),
    /// Any other gRPC failure.
    #[error("{code:?}: {message}")]
    Other {
        /// The gRPC status code.
        code: Code,
        /// The status message.
        message: String,
    },
    /// A client setting is invalid.
    #[error("invalid client configuration: {message}")]
    Config {
        /// The explanation, naming the setting.
        message: String,
    },
    /// No bootstrap or known broker answered.
    #[error("no broker reachable (tried {tried})")]
    NoBrokerAvailable {
        /// The addresses tried, comma-separated.
        tried: String,
        /// The last failure.
        #[source]
        last: Box<Error>,
    },
    /// The producer was closed (or its background task ended) before the record was acknowledged.
    #[error("producer is closed")]
    ProducerClosed,
    /// An idempotent producer's batch did not continue its sequence on the
    /// partition (a batch before it failed for good). The producer starts
    /// that partition's sequence over with its next batch.
    #[error("out of order sequence: {message}")]
    OutOfOrderSequence {
        /// The broker's explanation, naming the expected sequence.
        message: String,
    },
    /// An idempotent producer's epoch is older than the partition's.
    #[error("producer fenced: {message}")]
    ProducerFenced {
        /// The broker's explanation.
        message: String,
    },
    /// The broker asked does not coordinate the consumer group.
    #[error("not the group coordinator (coordinator hint: id {coordinator_id:?}, address {coordinator_address:?})")]
    NotCoordinator {
        /// The coordinator's broker id, if known.
        coordinator_id: Option<u64>,
        /// Its client address, if known.
        coordinator_address: Option<String>,
    },
    /// The consumer group does not exist.
    #[error("unknown group: {message}")]
    UnknownGroup {
        /// The explanation, naming the group.
        message: String,
    },
    /// The group has active members and the operation needs none.
    #[error("group not empty: {message}")]
    GroupNotEmpty {
        /// The explanation.
        message: String,
    },
    /// The member's epoch is stale or it does not own a partition it commits.
    #[error("stale member epoch: {message}")]
    StaleMemberEpoch {
        /// The explanation.
        message: String,
    },
    /// The member is not in the group (expired or never joined).
    #[error("unknown member: {message}")]
    UnknownMember {
        /// The explanation.
        message: String,
    },
    /// The group consumer was closed.
    #[error("group consumer is closed")]
    ConsumerClosed,
}

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// Whether retrying the same request (perhaps at another broker, after a
    /// metadata refresh) may succeed.
    pub fn is_retriable(&self) -> bool {
        matches!(
            self,
            Error::NotLeader { .. }
                | Error::Unavailable { .. }
                | Error::Timeout { .. }
                | Error::Busy { .. }
                | Error::Transport(_)
                | Error::NotCoordinator { .. }
        )
    }

    /// Whether the error says the request was refused before it took effect,
    /// so that even a non-idempotent request (create topic) may be retried.
    pub(crate) fn is_refused(&self) -> bool {
        matches!(
            self,
            Error::NotLeader { .. }
                | Error::Unavailable { .. }
                | Error::Busy { .. }
                | Error::NotCoordinator { .. }
        )
    }

    /// Whether cached metadata may be stale after this error (a broker
    /// that does not answer may have lost its leadership meanwhile).
    pub(crate) fn needs_metadata_refresh(&self) -> bool {
        matches!(
            self,
            Error::NotLeader { .. }
                | Error::Unavailable { .. }
                | Error::Timeout { .. }
                | Error::Transport(_)
                | Error::UnknownPartition { .. }
        )
    }
}

impl From<tonic::transport::Error> for Error {
    fn from(e: tonic::transport::Error) -> Self {
        Error::Transport(Arc::new(e))
    }
}

impl From<Status> for Error {
    fn from(status: Status) -> Self {
        if !status.details().is_empty() {
            if let Some(detail) = fjord_proto::decode_status_details(status.details()) {
                if let Some(e) = from_detail(detail) {
                    return e;
                }
            }
        }
        from_code(status.code(), status.message().to_string())
    }
}

/// Maps an `ErrorDetail` (unary status details or in-band stream error) to
/// a variant; `None` if its code is unspecified or unknown to this client.
pub(crate) fn from_detail(d: pb::ErrorDetail) -> Option<Error> {
    use pb::ErrorCode as C;
    let message = d.message;
    Some(match C::try_from(d.code).ok()? {
        C::Unspecified => return None,
        C::UnknownTopic => Error::UnknownTopic { message },
        C::UnknownPartition => Error::UnknownPartition { message },
        C::InvalidRequest => Error::InvalidArgument { message },
        C::MessageTooLarge => Error::MessageTooLarge { message },
        C::CorruptBatch => Error::CorruptBatch { message },
        C::OffsetOutOfRange => {
            Error::OffsetOutOfRange { log_start: d.log_start_offset, log_end: d.log_end_offset, message }
        }
        C::NotLeader => Error::NotLeader {
            leader_id: (d.leader_id != 0).then_some(d.leader_id),
            leader_address: (!d.leader_address.is_empty()).then_some(d.leader_address),
        },
        C::TopicAlreadyExists => Error::TopicAlreadyExists { message },
        C::StorageFailed => Error::StorageFailed { message },
        C::CorruptData => Error::CorruptData { message },
        C::DiskFull => Error::DiskFull { message },
        C::Timeout => Error::Timeout { message },
        C::Busy => Error::Busy { message },
        C::Unavailable => Error::Unavailable { message },
        C::OutOfOrderSequence => Error::OutOfOrderSequence { message },
        C::ProducerFenced => Error::ProducerFenced { message },
        C::NotCoordinator => Error::NotCoordinator {
            coordinator_id: (d.leader_id != 0).then_some(d.leader_id),
            coordinator_address: (!d.leader_address.is_empty()).then_some(d.leader_address),
        },
        C::UnknownGroup => Error::UnknownGroup { message },
        C::GroupNotEmpty => Error::GroupNotEmpty { message },
        C::StaleMemberEpoch => Error::StaleMemberEpoch { message },
        C::UnknownMember => Error::UnknownMember { message },
    })
}

fn from_code(code: Code, message: String) -> Error {
    match code {
        Code::DeadlineExceeded => Error::Timeout { message },
        Code::Unavailable => Error::Unavailable { message },
        Code::ResourceExhausted => Error::Busy { message },
        Code::InvalidArgument => Error::InvalidArgument { message },
        Code::AlreadyExists => Error::TopicAlreadyExists { message },
        // A broker never answers UNKNOWN or CANCELLED itself: tonic reports
        // a connection that broke mid-call (a broker dying) that way, and
        // the call may be retried elsewhere like any unavailability.
        Code::Unknown | Code::Cancelled => {
            Error::Unavailable { message: format!("connection lost: {message}") }
        }
        code => Error::Other { code, message },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn status(code: Code, detail: pb::ErrorDetail) -> Status {
        Status::with_details(
            code,
            "from broker",
            Bytes::from(fjord_proto::encode_status_details(code, &detail)),
        )
    }

    fn detail(code: pb::ErrorCode) -> pb::ErrorDetail {
        pb::ErrorDetail { code: code as i32, message: "m".into(), ..Default::default() }
    }

    #[test]
    fn a_connection_lost_mid_call_is_retriable() {
        for code in [Code::Unknown, Code::Cancelled] {
            let e = Error::from(Status::new(code, "transport error"));
            assert!(e.is_retriable(), "{code:?}: {e}");
        }
        assert!(!Error::from(Status::new(Code::PermissionDenied, "no")).is_retriable());
    }

    #[test]
    fn decodes_not_leader_with_hint() {
        let d = pb::ErrorDetail {
            leader_id: 3,
            leader_address: "10.0.0.3:9092".into(),
            ..detail(pb::ErrorCode::NotLeader)
        };
        match Error::from(status(Code::Unavailable, d)) {
            Error::NotLeader { leader_id, leader_address } => {
                assert_eq!(leader_id, Some(3));
                assert_eq!(leader_address.as_deref(), Some("10.0.0.3:9092"));
            }
            other => panic!("got {other:?}"),
        }
        let e = Error::from(status(Code::Unavailable, detail(pb::ErrorCode::NotLeader)));
        match e {
            Error::NotLeader { leader_id: None, leader_address: None } => assert!(e.is_retriable()),
            other => panic!("got {other:?}"),
        }
    }

    #[test]
    fn decodes_offset_out_of_range() {
        let d = pb::ErrorDetail {
            log_start_offset: 10,
            log_end_offset: 42,
            ..detail(pb::ErrorCode::OffsetOutOfRange)
        };
        let e = Error::from(status(Code::OutOfRange, d));
        match &e {
            Error::OffsetOutOfRange { log_start: 10, log_end: 42, message } => assert_eq!(message, "m"),
            other => panic!("got {other:?}"),
        }
        assert!(!e.is_retriable());
    }

    #[test]
    fn every_code_maps_to_its_variant() {
        use pb::ErrorCode as C;
        let table: &[(C, Code, &str, bool)] = &[
            (C::UnknownTopic, Code::NotFound, "unknown topic: m", false),
            (C::UnknownPartition, Code::NotFound, "unknown partition: m", false),
            (C::InvalidRequest, Code::InvalidArgument, "invalid argument: m", false),
            (C::MessageTooLarge, Code::InvalidArgument, "message too large: m", false),
            (C::CorruptBatch, Code::InvalidArgument, "corrupt batch: m", false),
            (C::TopicAlreadyExists, Code::AlreadyExists, "topic already exists: m", false),
            (C::StorageFailed, Code::Internal, "storage failed on the broker: m", false),
            (C::Timeout, Code::DeadlineExceeded, "request timed out: m", true),
            (C::Busy, Code::ResourceExhausted, "broker busy: m", true),
            (C::Unavailable, Code::Unavailable, "unavailable: m", true),
            (C::UnknownGroup, Code::NotFound, "unknown group: m", false),
            (C::GroupNotEmpty, Code::FailedPrecondition, "group not empty: m", false),
            (C::StaleMemberEpoch, Code::FailedPrecondition, "stale member epoch: m", false),
            (C::UnknownMember, Code::NotFound, "unknown member: m", false),
        ];
        for (code, grpc, text, retriable) in table {
            let e = Error::from(status(*grpc, detail(*code)));
            assert_eq!(e.to_string(), *text, "{code:?}");
            assert_eq!(e.is_retriable(), *retriable, "{code:?}");
        }
    }

    #[test]
    fn status_without_details_uses_grpc_code() {
        let e = Error::from(Status::unavailable("connection refused"));
        assert_eq!(e.to_string(), "unavailable: connection refused");
        assert!(e.is_retriable());
        let e = Error::from(Status::deadline_exceeded("slow"));
        assert!(matches!(e, Error::Timeout { .. }) && e.is_retriable());
        match Error::from(Status::permission_denied("no")) {
            Error::Other { code: Code::PermissionDenied, message } => assert_eq!(message, "no"),
            other => panic!("got {other:?}"),
        }
        // Garbage details fall back to the code rather than failing.
        let s = Status::with_details(Code::NotFound, "x", Bytes::from_static(&[0xff, 0xff, 0xff]));
        assert!(matches!(Error::from(s), Error::Other { code: Code::NotFound, .. }));
    }
}
