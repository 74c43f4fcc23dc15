//! Generated types and gRPC stubs for Fjord's public API (`proto/fjord/v1`).
//!
//! The only place protobuf code is generated. Brokers and clients convert
//! these types to their own at their edges; nothing deeper sees them.

#![allow(missing_docs, unreachable_pub, clippy::all)]

/// `fjord.v1`: messages, client stubs and server traits.
pub mod pb {
    tonic::include_proto!("fjord.v1");
}

/// The encoded `FileDescriptorSet` of the API, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/fjord_descriptor.bin"));
