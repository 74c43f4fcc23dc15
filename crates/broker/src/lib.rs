//! The Fjord broker: serves the public gRPC API (`proto/fjord/v1`) over
//! the partition logs of `fjord-storage`.
//!
//! It owns topic metadata, the partition write path (validate, append,
//! commit, then make visible), long-poll and streaming reads bounded by the
//! high watermark, retention upkeep, and the mapping of every error to a
//! gRPC status. It must never depend on `fjord-client`: clients and broker
//! meet only in `fjord-proto`.

mod broker;
mod compaction;
mod config;
mod connections;
mod disk;
mod error;
mod fds;
mod groups;
mod meta;
mod metrics;
mod partition;
mod scrub;
mod server;
mod service;
mod topics;
mod transport;

pub use config::*;
pub use disk::{MIN_FREE_BYTES_DEFAULT, MIN_FREE_PERCENT_DEFAULT};
pub use error::{Error, Result};
pub use fjord_storage::FlushPolicy;
pub use server::run;
