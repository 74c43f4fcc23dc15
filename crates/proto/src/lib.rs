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

/// The encoded `FileDescriptorSet` of the API, for gRPC server reflection.
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
