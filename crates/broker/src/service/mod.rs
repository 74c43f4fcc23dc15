//! The gRPC services, one file per family. Handlers convert `pb` types at
//! the edge and call into [`crate::broker::Broker`].

pub(crate) mod admin;
pub(crate) mod consumer;
pub(crate) mod groups;
pub(crate) mod producer;
pub(crate) mod publish;
pub(crate) mod read;
