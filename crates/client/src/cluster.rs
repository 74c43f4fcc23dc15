//! Connections and routing: one lazily connected channel per broker
//! address, and the cached cluster metadata used to find partition leaders.
//!
//! Metadata refreshes are serialized behind one async mutex and deduplicated
//! by an epoch counter: when twenty in-flight produce calls all hit
//! `NotLeader` at once, one `Metadata` request goes out, not twenty.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use fjord_proto::http2;
use fjord_proto::pb;
use fjord_proto::pb::admin_client::AdminClient;
use tonic::transport::{Channel, Endpoint};

use crate::types::Metadata;
use crate::{ClientConfig, Error, Result};

/// Most channels kept open at once. Clusters are far smaller; the bound only
/// stops a stream of bogus leader hints from growing the map forever. When
/// reached, the map is cleared and channels reconnect on demand.
const CHANNELS_MAX: usize = 256;

/// Shared connection state behind every [`crate::Client`] clone.
#[derive(Debug)]
pub(crate) struct Cluster {
    pub(crate) config: ClientConfig,
    channels: Mutex<HashMap<String, Channel>>,
    metadata: RwLock<Arc<Metadata>>,
    epoch: AtomicU64,
    refresh_lock: tokio::sync::Mutex<()>,
}

impl Cluster {
    pub(crate) fn new(config: ClientConfig) -> Self {
        Cluster {
            config,
            channels: Mutex::new(HashMap::new()),
            metadata: RwLock::new(Arc::new(Metadata::default())),
            epoch: AtomicU64::new(0),
            refresh_lock: tokio::sync::Mutex::new(()),
        }
    }

    /// The channel to `addr`, created (without connecting) on first use.
    pub(crate) fn channel(&self, addr: &str) -> Result<Channel> {
        let mut channels = self.channels.lock().expect("channel map poisoned");
        if let Some(c) = channels.get(addr) {
            return Ok(c.clone());
        }
        if channels.len() >= CHANNELS_MAX {
            channels.clear();
        }
        let endpoint = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| Error::Config { message: format!("broker address {addr:?}: {e}") })?
            .connect_timeout(self.config.connect_timeout)
            .tcp_nodelay(true)
            .initial_stream_window_size(http2::STREAM_WINDOW_BYTES)
            .initial_connection_window_size(http2::CONNECTION_WINDOW_BYTES)
            .max_frame_size(http2::FRAME_BYTES_MAX)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(10));
        let channel = endpoint.connect_lazy();
        channels.insert(addr.to_string(), channel.clone());
        Ok(channel)
    }

    /// The cached metadata (empty before the first refresh).
    pub(crate) fn metadata(&self) -> Arc<Metadata> {
        self.metadata.read().expect("metadata lock poisoned").clone()
    }

    /// Addresses to send a request any broker can answer to: live brokers
    /// from metadata first, then the bootstrap list.
    pub(crate) fn any_addresses(&self) -> Vec<String> {
        let meta = self.metadata();
        let mut addrs: Vec<String> = meta
            .brokers
            .values()
            .filter(|b| b.alive && !b.address.is_empty())
            .map(|b| b.address.clone())
            .collect();
        for b in &self.config.bootstrap {
            if !addrs.contains(b) {
                addrs.push(b.clone());
            }
        }
        addrs
    }

    /// Fetches fresh metadata from the first broker that answers, unless
    /// another task refreshed it while this one waited for the lock.
    ///
    /// # Errors
    /// [`Error::NoBrokerAvailable`] with the last failure if none answered.
    pub(crate) async fn refresh(&self) -> Result<Arc<Metadata>> {
        let seen = self.epoch.load(Ordering::Acquire);
        let _guard = self.refresh_lock.lock().await;
        if self.epoch.load(Ordering::Acquire) != seen {
            return Ok(self.metadata());
        }
        let addrs = self.any_addresses();
        let mut last = None;
        for addr in &addrs {
            let attempt = async {
                let mut admin = AdminClient::new(self.channel(addr)?);
                let req = request(pb::MetadataRequest { topics: vec![] }, self.config.request_timeout);
                let resp = admin.metadata(req).await?;
                Ok::<_, Error>(resp.into_inner())
            };
            match deadline(self.config.request_timeout, attempt).await {
                Ok(resp) => {
                    let meta = Arc::new(Metadata::from(resp));
                    *self.metadata.write().expect("metadata lock poisoned") = meta.clone();
                    self.epoch.fetch_add(1, Ordering::AcqRel);
                    tracing::debug!(broker = %addr, topics = meta.topics.len(), "metadata refreshed");
                    return Ok(meta);
                }
                Err(e) => {
                    tracing::debug!(broker = %addr, error = %e, "metadata request failed");
                    last = Some(e);
                }
            }
        }
        Err(Error::NoBrokerAvailable {
            tried: addrs.join(","),
            last: Box::new(last.unwrap_or(Error::Config { message: "no broker address".into() })),
        })
    }

    /// The leader address of a partition, refreshing metadata once if the
    /// topic or partition is not in the cache yet.
    pub(crate) async fn leader_address(&self, topic: &str, partition: u32) -> Result<String> {
        let meta = self.metadata();
        match meta.leader_address(topic, partition) {
            Ok(a) => Ok(a.to_string()),
            Err(Error::UnknownTopic { .. } | Error::UnknownPartition { .. }) => {
                self.refresh().await?.leader_address(topic, partition).map(str::to_string)
            }
            Err(e) => Err(e),
        }
    }

    /// The number of partitions of `topic`, refreshing metadata once if unknown.
    /// A topic's partition count from the cache, without a refresh.
    pub(crate) fn cached_partition_count(&self, topic: &str) -> Option<u32> {
        let meta = self.metadata.read().expect("metadata lock poisoned");
        meta.topics.get(topic).map(|t| t.partitions.len() as u32)
    }

    pub(crate) async fn partition_count(&self, topic: &str) -> Result<u32> {
        if let Ok(t) = self.metadata().topic(topic) {
            return Ok(t.partitions.len() as u32);
        }
        Ok(self.refresh().await?.topic(topic)?.partitions.len() as u32)
    }
}

/// A request carrying `timeout` as its gRPC deadline, so the broker stops
/// working on it when the client has given up.
pub(crate) fn request<T>(msg: T, timeout: Duration) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    req.set_timeout(timeout);
    req
}

/// Names the broker in errors that are about reaching it, so "connection
/// refused" says where.
pub(crate) fn at_broker(addr: &str, e: Error) -> Error {
    match e {
        Error::Unavailable { message } => Error::Unavailable { message: format!("broker {addr}: {message}") },
        Error::Timeout { message } => Error::Timeout { message: format!("broker {addr}: {message}") },
        e => e,
    }
}

/// Runs `fut` with a client-side deadline: even if a broker accepts the
/// connection and never answers, the caller gets [`Error::Timeout`].
pub(crate) async fn deadline<T>(timeout: Duration, fut: impl Future<Output = Result<T>>) -> Result<T> {
    match tokio::time::timeout(timeout, fut).await {
        Ok(r) => r,
        Err(_) => Err(Error::Timeout { message: format!("no answer within {timeout:?}") }),
    }
}
