//! Connections and routing: one lazily connected channel per broker
//! address, and the cached cluster metadata used to find partition leaders.
//!
//! Metadata refreshes are serialized behind one async mutex and deduplicated
//! by an epoch counter: when twenty in-flight produce calls all hit
//! `NotLeader` at once, one `Metadata` request goes out, not twenty.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use futures::stream::{FuturesUnordered, StreamExt};

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

/// How long a request any broker can answer (metadata, admin calls,
/// `InitProducer`) waits for one broker before it is also sent to the
/// next. A healthy broker answers in milliseconds; a paused or overloaded
/// one accepts the connection and never answers, and without hedging every
/// call would wait out its whole `request_timeout` there first. 500 ms is
/// far above a healthy answer and far below the failover time (~2.5 s).
pub(crate) const HEDGE_AFTER: Duration = Duration::from_millis(500);

/// Shared connection state behind every [`crate::Client`] clone.
#[derive(Debug)]
pub(crate) struct Cluster {
    pub(crate) config: ClientConfig,
    channels: Mutex<HashMap<String, Channel>>,
    metadata: RwLock<Arc<Metadata>>,
    epoch: AtomicU64,
    refresh_lock: tokio::sync::Mutex<()>,
    created: Instant,
    /// ms after `created` of the last successful refresh (0: none yet).
    refreshed_ms: AtomicU64,
    /// A background refresh is under way ([`Cluster::refresh_in_background_if_older`]).
    refreshing: AtomicBool,
}

impl Cluster {
    pub(crate) fn new(config: ClientConfig) -> Self {
        Cluster {
            config,
            channels: Mutex::new(HashMap::new()),
            metadata: RwLock::new(Arc::new(Metadata::default())),
            epoch: AtomicU64::new(0),
            refresh_lock: tokio::sync::Mutex::new(()),
            created: Instant::now(),
            refreshed_ms: AtomicU64::new(0),
            refreshing: AtomicBool::new(false),
        }
    }

    /// Whether the cache was refreshed less than `age` ago.
    fn is_younger_than(&self, age: Duration) -> bool {
        let at = self.refreshed_ms.load(Ordering::Acquire);
        at > 0 && self.created.elapsed().saturating_sub(Duration::from_millis(at)) < age
    }

    /// Starts one refresh on the runtime if the cache is `age` old or
    /// older and none is under way; the caller goes on with the cache.
    pub(crate) fn refresh_in_background_if_older(self: &Arc<Self>, age: Duration) {
        if self.is_younger_than(age) || self.refreshing.swap(true, Ordering::AcqRel) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            self.refreshing.store(false, Ordering::Release);
            return;
        };
        let cluster = self.clone();
        runtime.spawn(async move {
            if let Err(e) = cluster.refresh().await {
                tracing::debug!(error = %e, "background metadata refresh failed");
            }
            cluster.refreshing.store(false, Ordering::Release);
        });
    }

    /// The cached metadata if it was refreshed less than `age` ago, else
    /// fresh metadata (the cache if no broker answers). Many waiters polling
    /// for a leader change share one refresh per `age`.
    pub(crate) async fn refresh_if_older(&self, age: Duration) -> Arc<Metadata> {
        if self.is_younger_than(age) {
            return self.metadata();
        }
        self.refresh().await.unwrap_or_else(|_| self.metadata())
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
        let attempt = |addr: String| async move {
            let call = async {
                let mut admin = AdminClient::new(self.channel(&addr)?);
                let req = request(pb::MetadataRequest { topics: vec![] }, self.config.request_timeout);
                Ok::<_, Error>(admin.metadata(req).await?.into_inner())
            };
            deadline(self.config.request_timeout, call).await.map_err(|e| {
                tracing::debug!(broker = %addr, error = %e, "metadata request failed");
                e
            })
        };
        match hedged(addrs.clone(), HEDGE_AFTER, attempt).await {
            Ok(resp) => {
                let meta = Arc::new(Metadata::from(resp));
                *self.metadata.write().expect("metadata lock poisoned") = meta.clone();
                self.epoch.fetch_add(1, Ordering::AcqRel);
                let now = (self.created.elapsed().as_millis() as u64).max(1);
                self.refreshed_ms.store(now, Ordering::Release);
                tracing::debug!(topics = meta.topics.len(), "metadata refreshed");
                Ok(meta)
            }
            Err(mut errors) => Err(Error::NoBrokerAvailable {
                tried: addrs.join(","),
                last: Box::new(errors.pop().unwrap_or(Error::Config { message: "no broker address".into() })),
            }),
        }
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

/// Runs `attempt` on the first of `addrs`, and on the next one each time
/// `after` passes without an answer or an attempt fails, until one
/// succeeds: its answer is returned and the others are dropped
/// (cancelled). Only for requests that may safely be answered twice.
/// Every attempt needs its own deadline.
///
/// Once every address has been tried and the last failure is `after`
/// old, the attempts still running are given up too: when every broker
/// that answers says "not me" (a leader hint to a paused broker, say),
/// the caller's retry and backoff should decide what comes next, not the
/// deadline of the one that never answers.
///
/// # Errors
/// Every failed attempt's error, in the order they failed, if none succeeded.
pub(crate) async fn hedged<T, F, Fut>(
    addrs: Vec<String>,
    after: Duration,
    attempt: F,
) -> std::result::Result<T, Vec<Error>>
where
    F: Fn(String) -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let mut untried = addrs.into_iter();
    let mut running = FuturesUnordered::new();
    let mut errors = Vec::new();
    let mut give_up_at = None;
    running.extend(untried.next().map(&attempt));
    while !running.is_empty() {
        let give_up = async {
            match give_up_at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            done = running.next() => match done.expect("not empty") {
                Ok(v) => return Ok(v),
                Err(e) => {
                    errors.push(e);
                    running.extend(untried.next().map(&attempt));
                    if untried.len() == 0 {
                        give_up_at = Some(tokio::time::Instant::now() + after);
                    }
                }
            },
            () = tokio::time::sleep(after), if untried.len() > 0 => {
                running.extend(untried.next().map(&attempt));
            }
            () = give_up => break,
        }
    }
    Err(errors)
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

#[cfg(test)]
mod tests {
    use super::*;

    async fn broker(addr: String) -> Result<u32> {
        match addr.as_str() {
            "silent" => {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                Ok(0)
            }
            "refuses" => Err(Error::Unavailable { message: "not me".into() }),
            _ => Ok(7),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn hedged_requests_pass_a_silent_broker_and_give_up_when_the_rest_refuse() {
        let start = tokio::time::Instant::now();
        let got = hedged(vec!["silent".into(), "answers".into()], HEDGE_AFTER, broker).await;
        assert_eq!((got.ok(), start.elapsed()), (Some(7), HEDGE_AFTER));

        let start = tokio::time::Instant::now();
        let order = vec!["silent".into(), "refuses".into(), "refuses".into()];
        let errors = hedged(order, HEDGE_AFTER, broker).await.unwrap_err();
        // Both refusals came at HEDGE_AFTER; the silent one is given up one HEDGE_AFTER later.
        assert_eq!((errors.len(), start.elapsed()), (2, HEDGE_AFTER * 2));

        let start = tokio::time::Instant::now();
        let got = hedged(vec!["refuses".into(), "answers".into()], HEDGE_AFTER, broker).await;
        assert_eq!((got.ok(), start.elapsed()), (Some(7), Duration::ZERO), "a refusal moves on at once");
    }
}
