//! The Fjord Rust client: cluster metadata and routing, admin calls, a
//! batching [`Producer`], a partition [`Consumer`] and a consumer-group
//! member, [`GroupConsumer`].
//!
//! This crate owns everything a program needs to talk to Fjord brokers over
//! gRPC: one channel per broker address, a cached view of which broker leads
//! which partition, typed errors decoded from the `ErrorDetail` that brokers
//! put in status details, and retries with backoff for the errors that say
//! "try again elsewhere or later". Records are built into batches with
//! `fjord-codec` on the way out and parsed (CRC checked) on the way in.
//!
//! It depends only on `fjord-proto` and `fjord-codec`. It must never import
//! the broker, storage or replication crates: a client that links the server
//! would drag its dependencies into every application.
//!
//! ```no_run
//! use fjord_client::{Client, ClientConfig, Producer, ProducerConfig, ProducerRecord};
//! # async fn demo() -> fjord_client::Result<()> {
//! let client = Client::connect(ClientConfig::from_bootstrap("127.0.0.1:9092")?).await?;
//! let producer = Producer::new(client.clone(), ProducerConfig::default())?;
//! let delivery = producer.send(ProducerRecord::new("events", "hello")).await?;
//! let meta = delivery.await?;
//! println!("partition {} offset {}", meta.partition, meta.offset);
//! producer.close().await?;
//! # Ok(()) }
//! ```

mod client;
mod cluster;
mod config;
mod consumer;
mod error;
mod group_consumer;
mod groups;
mod partitioner;
mod producer;
mod retry;
mod types;

pub use client::{Client, SCRUB_TIMEOUT};
pub use config::{
    parse_bootstrap, ClientConfig, BOOTSTRAP_ADDRESSES_MAX, CONNECT_TIMEOUT_DEFAULT,
    METADATA_MAX_AGE_DEFAULT, REQUEST_TIMEOUT_DEFAULT, RETRIES_MAX_DEFAULT, RETRY_BACKOFF_INITIAL,
    RETRY_BACKOFF_MAX, RETRY_DEADLINE_DEFAULT,
};
pub use consumer::{
    ConsumedRecord, Consumer, ConsumerConfig, Seek, ASSIGNED_PARTITIONS_MAX, FETCH_MAX_BYTES_DEFAULT,
    FETCH_WAIT_DEFAULT,
};
pub use error::{Error, Result};
pub use fjord_codec::Header;
pub use fjord_codec::{murmur2, partition_for_key};
pub use group_consumer::{
    AutoOffsetReset, GroupConsumer, GroupConsumerConfig, GroupEvent, AUTO_COMMIT_INTERVAL_DEFAULT,
    SESSION_TIMEOUT_DEFAULT,
};
pub use groups::{CommittedOffset, GroupDescription, GroupMember, GroupPartition, OffsetReset};
pub use producer::{
    Acks, Compression, Delivery, Producer, ProducerConfig, ProducerRecord, RecordMetadata,
    BATCH_BYTES_DEFAULT, BUFFER_BYTES_DEFAULT, LINGER_DEFAULT, LINGER_MAX, MAX_IN_FLIGHT_PER_PARTITION,
    MAX_IN_FLIGHT_REQUESTS_DEFAULT,
};
pub use types::{
    BrokerInfo, ClusterDescription, DamagedRange, Fetched, Metadata, OffsetSpec, Offsets,
    PartitionDescription, PartitionMetadata, ReplicaScrub, TopicDescription, TopicMetadata, TopicSettings,
    TopicSummary,
};
