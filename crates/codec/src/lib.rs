//! The Fjord record-batch format: pure encoding and decoding, no I/O, no async.
//!
//! A record batch is the unit of produce, replication, storage and fetch. The
//! producer builds it with [`BatchBuilder`], the broker validates it with
//! [`validate_batch`] and stamps the fields only it may set
//! ([`verified_stamped_prefix`], which checks the CRC the batch arrived with
//! and computes the new one over the stamped fields too), the
//! log stores the bytes, the producer's part unchanged, and a consumer
//! walks them with [`records`]. Nothing is ever re-encoded on the way.
//!
//! Keyed records are placed on partitions by [`partition_for_key`], Kafka's
//! murmur2 partitioner, here so that the client and the broker agree.
//!
//! Every byte layout Fjord writes (batches here, and the storage crate's
//! index and hard-state files) is defined in [`format`], which mirrors
//! `storage-format.md` at the repository root.
//!
//! This crate must stay free of I/O, async runtimes, gRPC and Raft types so
//! that both the client and the storage engine can depend on it.

mod batch;
mod compact;
mod compression;
mod error;
pub mod format;
pub mod le;
mod partition;
mod record;

pub use batch::{
    restamp_producer, sequence_add, split_batches, stamp_batch, validate_batch, verified_stamped_prefix,
    verify_crc, BatchBuilder, BatchHeader, BatchIter,
};
pub use compact::{compact_batch, for_each_record_key, record_keys_of_valid, RecordKey};
pub use compression::{recompress, Compression, ZSTD_LEVEL};
pub use error::{Error, Result};
pub use partition::{murmur2, partition_for_key};
pub use record::{records, Header, Record, RecordIter};

#[cfg(test)]
mod tests;
