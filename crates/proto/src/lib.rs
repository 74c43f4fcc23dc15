//! Generated types and gRPC stubs for Fjord's public API (`proto/fjord/v1`).
//!
//! The only place protobuf code is generated. Brokers and clients convert
//! these types to their own at their edges; nothing deeper sees them.

#![allow(missing_docs, unreachable_pub, clippy::all)]

/// `fjord.v1`: messages, client stubs and server traits.
pub mod pb {
    tonic::include_proto!("fjord.v1");
}

/// `fjord.internal.v1`: the broker-to-broker Raft transport.
pub mod internal {
    tonic::include_proto!("fjord.internal.v1");
}

/// The encoded `FileDescriptorSet` of the public API (`fjord.v1`, not the
/// internal broker-to-broker service), for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/fjord_descriptor.bin"));

/// Type URL of [`pb::ErrorDetail`] inside a `google.protobuf.Any`.
pub const ERROR_DETAIL_TYPE_URL: &str = "type.googleapis.com/fjord.v1.ErrorDetail";

/// The bytes of a failed call's `grpc-status-details-bin` trailer, as the
/// gRPC convention has it: a `google.rpc.Status` whose first detail is the
/// [`pb::ErrorDetail`], so standard helpers (`grpc_status.rpc_status` in
/// Python, `tonic-types` in Rust, grpcurl) can read it.
pub fn encode_status_details(code: tonic::Code, detail: &pb::ErrorDetail) -> Vec<u8> {
    use prost::Message;
    let any = prost_types::Any { type_url: ERROR_DETAIL_TYPE_URL.to_owned(), value: detail.encode_to_vec() };
    tonic_types::pb::Status { code: code as i32, message: detail.message.clone(), details: vec![any] }
        .encode_to_vec()
}

/// The [`pb::ErrorDetail`] in a status's details, if it carries one.
pub fn decode_status_details(details: &[u8]) -> Option<pb::ErrorDetail> {
    use prost::Message;
    let status = tonic_types::pb::Status::decode(details).ok()?;
    let any = status.details.iter().find(|a| a.type_url == ERROR_DETAIL_TYPE_URL)?;
    pb::ErrorDetail::decode(any.value.as_slice()).ok()
}

/// Limits of the public API that clients and brokers must agree on, named
/// once here (the proto comments quote them).
pub mod limits {
    /// Most records in one `Publish` request. A request is decoded whole
    /// before it is validated, and each record costs about 100 bytes of
    /// bookkeeping beyond its bytes, so this bounds that overhead at about
    /// 10 MB per request; larger loads belong in more requests (or on
    /// `PublishStream`, which keeps many in flight).
    pub const PUBLISH_RECORDS_MAX: usize = 100_000;
    /// Records a `Read` answers when the request gives no `max_records`:
    /// Kafka's `max.poll.records`.
    pub const READ_RECORDS_DEFAULT: u32 = 500;
    /// Most records one `Read` response holds: with the 16 MiB bound on the
    /// bytes read it caps the per-record work (and response entries) of
    /// one call when records are tiny.
    pub const READ_RECORDS_MAX: u32 = 10_000;
}

/// HTTP/2 settings every Fjord endpoint (broker server, client channels,
/// broker-to-broker Raft channels) uses, so both ends of a connection agree.
///
/// h2's defaults (16 KiB frames, 64 KiB-1 MiB windows) cut a 1 MiB fetch
/// into 64 frames and stall a multi-MiB produce on window updates: each
/// frame is its own `writev` and wake-up. Measured with `fjord bench` on
/// one broker, 1M x 1 KiB records: replay 930 -> 1550 MB/s, produce
/// 330 -> 394 MB/s. The windows only allow what the message size limits
/// (`max_decoding_message_size`) already bound, so they add no memory
/// exposure of their own.
pub mod http2 {
    /// Largest frame a peer may send us (h2 allows up to 16 MiB - 1).
    pub const FRAME_BYTES_MAX: u32 = 1024 * 1024;
    /// Initial flow-control window of one stream (one request or response).
    pub const STREAM_WINDOW_BYTES: u32 = 8 * 1024 * 1024;
    /// Initial flow-control window of a connection, over all its streams.
    pub const CONNECTION_WINDOW_BYTES: u32 = 32 * 1024 * 1024;
}
