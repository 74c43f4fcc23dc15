//! [`Client`]: the handle every other part of the crate goes through, with
//! the admin calls, offset lookups, fetch and the produce call the
//! producer's sender uses.
//!
//! Every call runs through [`Client::with_retry`]: each attempt has a
//! deadline, retriable failures refresh metadata and back off, and the whole
//! call gives up at the configured retry count or deadline.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fjord_proto::pb;
use fjord_proto::pb::admin_client::AdminClient;
use fjord_proto::pb::consumer_client::ConsumerClient;
use fjord_proto::pb::producer_client::ProducerClient;
use tokio::time::Instant;

use crate::cluster::{at_broker, deadline, hedged, request, Cluster, HEDGE_AFTER};
use crate::retry::Backoff;
use crate::types::{
    ClusterDescription, Fetched, Metadata, OffsetSpec, Offsets, ReplicaScrub, TopicDescription,
    TopicSettings, TopicSummary,
};
use crate::{Acks, ClientConfig, Error, Result};

/// How long [`Client::scrub_topic`] waits: a scrub re-reads whole logs.
pub const SCRUB_TIMEOUT: Duration = Duration::from_secs(600);

/// Largest long-poll wait a fetch may ask for. Bounds how long a request
/// can legitimately stay unanswered on top of `request_timeout`.
const FETCH_WAIT_MAX: Duration = Duration::from_secs(60);
/// How long a produce waits for its answer before the client starts
/// checking whether the partition's leader has moved: a healthy broker
/// answers within a few fsyncs, and until then nothing is refreshed.
pub(crate) const LEADER_CHECK_AFTER: Duration = Duration::from_secs(1);
/// How often a produce still waiting after [`LEADER_CHECK_AFTER`] looks at
/// the leader again. Every waiter shares one metadata refresh per interval.
pub(crate) const LEADER_CHECK_INTERVAL: Duration = Duration::from_millis(500);

/// A connection to a Fjord cluster. Cheap to clone; clones share channels
/// and cached metadata.
///
/// ```no_run
/// use fjord_client::{Client, ClientConfig, TopicSettings};
/// # async fn demo() -> fjord_client::Result<()> {
/// let client = Client::connect(ClientConfig::from_bootstrap("127.0.0.1:9092,127.0.0.1:9093")?).await?;
/// client.create_topic("events", 3, 0, TopicSettings::default()).await?;
/// for t in client.list_topics().await? {
///     println!("{} ({} partitions)", t.name, t.partitions);
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Client {
    pub(crate) cluster: Arc<Cluster>,
}

/// What one attempt of a retried call may use: a leader hint from the
/// previous attempt's `NotLeader` error, and the attempt number.
#[derive(Debug, Clone, Default)]
pub(crate) struct Attempt {
    pub(crate) number: u32,
    pub(crate) hint: Option<String>,
}

impl Client {
    /// A client that connects on first use. No I/O happens here.
    ///
    /// # Errors
    /// [`Error::Config`] if `config` is invalid.
    pub fn new(config: ClientConfig) -> Result<Self> {
        config.validate()?;
        Ok(Client { cluster: Arc::new(Cluster::new(config)) })
    }

    /// A client that has fetched cluster metadata from the first bootstrap
    /// broker that answered.
    ///
    /// # Errors
    /// [`Error::Config`] for an invalid config, [`Error::NoBrokerAvailable`]
    /// if no bootstrap broker answered within its timeouts.
    pub async fn connect(config: ClientConfig) -> Result<Self> {
        let client = Self::new(config)?;
        // A broker that is up but still loading the cluster metadata (just
        // started, or no metadata leader yet) answers UNAVAILABLE: wait for
        // it within the retry deadline. Unreachable brokers fail at once.
        let deadline = Instant::now() + client.config().retry_deadline;
        let mut delay = client.config().retry_backoff_initial;
        loop {
            match client.cluster.refresh().await {
                Ok(_) => return Ok(client),
                Err(e) => {
                    let loading = match &e {
                        Error::NoBrokerAvailable { last, .. } => matches!(**last, Error::Unavailable { .. }),
                        Error::Unavailable { .. } => true,
                        _ => false,
                    };
                    if !loading || Instant::now() + delay > deadline {
                        return Err(e);
                    }
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(client.config().retry_backoff_max);
                }
            }
        }
    }

    /// The settings this client was built with.
    pub fn config(&self) -> &ClientConfig {
        &self.cluster.config
    }

    /// Fresh cluster metadata (also updating the cache used for routing).
    ///
    /// # Errors
    /// [`Error::NoBrokerAvailable`] if no broker answered.
    pub async fn metadata(&self) -> Result<Metadata> {
        Ok((*self.cluster.refresh().await?).clone())
    }

    /// Number of partitions of `topic`, from cached metadata when present.
    ///
    /// # Errors
    /// [`Error::UnknownTopic`] if the cluster does not know it.
    pub async fn partition_count(&self, topic: &str) -> Result<u32> {
        // Every send asks: answer from the cache without setting up retries,
        // refreshing it in the background once it is older than
        // `metadata_max_age` (partitions may have been added).
        if let Some(n) = self.cluster.cached_partition_count(topic) {
            self.cluster.refresh_in_background_if_older(self.config().metadata_max_age);
            return Ok(n);
        }
        // A broker that is starting (metadata not loaded yet) is worth the
        // usual retries, as for any other call, rather than failing a send.
        self.with_retry(true, |_| async {
            self.cluster.partition_count(topic).await.map_err(|e| match e {
                Error::NoBrokerAvailable { last, .. } if last.is_retriable() => *last,
                e => e,
            })
        })
        .await
    }

    /// Creates a topic. `replication_factor` 0 takes the broker default.
    /// Retried only on errors that prove the broker did not act on it.
    ///
    /// # Errors
    /// [`Error::TopicAlreadyExists`], [`Error::InvalidArgument`] naming the
    /// bad field, or a transport/availability error after retries.
    pub async fn create_topic(
        &self,
        name: &str,
        partitions: u32,
        replication_factor: u32,
        settings: TopicSettings,
    ) -> Result<TopicDescription> {
        let msg = pb::CreateTopicRequest {
            name: name.to_string(),
            partitions,
            replication_factor,
            config: Some(settings.into()),
        };
        let resp =
            self.admin(false, msg, |ch, r| async move { AdminClient::new(ch).create_topic(r).await }).await?;
        let topic = resp.topic.ok_or_else(|| missing("CreateTopicResponse.topic"))?;
        // The new topic is not in the routing cache yet; make the next call see it.
        let _ = self.cluster.refresh().await;
        Ok(topic.into())
    }

    /// Obtains a producer id (and epoch 0) for an idempotent producer from
    /// the cluster's metadata leader. [`Producer`](crate::Producer) does
    /// this itself; it is public for clients that build batches by hand.
    ///
    /// # Errors
    /// A transport/availability error after retries.
    pub async fn init_producer(&self) -> Result<(i64, i16)> {
        let msg = pb::InitProducerRequest {};
        let call = |ch, r| async move { ProducerClient::new(ch).init_producer(r).await };
        // Retried (and hedged) after timeouts too: a second answer only
        // allocates an id nobody uses, while giving up fails every record.
        let resp = self.admin(true, msg, call).await?;
        let epoch = i16::try_from(resp.producer_epoch)
            .map_err(|_| missing("an InitProducerResponse.producer_epoch that fits 16 bits"))?;
        Ok((resp.producer_id, epoch))
    }

    /// Changes a topic's settings (the fields `settings` sets; the others
    /// keep their values). Every replica applies them without a restart.
    ///
    /// # Errors
    /// [`Error::UnknownTopic`], [`Error::InvalidArgument`] naming the bad
    /// field (or that none is set), or a transport/availability error after retries.
    pub async fn alter_topic(&self, name: &str, settings: TopicSettings) -> Result<TopicDescription> {
        let msg =
            pb::AlterTopicRequest { name: name.to_string(), config: Some(settings.into()), partitions: None };
        // A change goes to the metadata leader alone (following NOT_LEADER
        // hints), not hedged across brokers as reads are.
        let resp =
            self.admin(false, msg, |ch, r| async move { AdminClient::new(ch).alter_topic(r).await }).await?;
        Ok(resp.topic.ok_or_else(|| missing("AlterTopicResponse.topic"))?.into())
    }

    /// Raises a topic's partition count to `partitions` (Kafka's
    /// `createPartitions`); partitions are never removed. Refreshes this
    /// client's metadata, so its producers use the new partitions at once
    /// (other clients within their `metadata_max_age`).
    ///
    /// # Errors
    /// [`Error::UnknownTopic`], [`Error::InvalidArgument`] if `partitions`
    /// is not above the current count or over the limit, or a
    /// transport/availability error after retries.
    pub async fn add_partitions(&self, name: &str, partitions: u32) -> Result<TopicDescription> {
        let msg =
            pb::AlterTopicRequest { name: name.to_string(), config: None, partitions: Some(partitions) };
        let resp =
            self.admin(false, msg, |ch, r| async move { AdminClient::new(ch).alter_topic(r).await }).await?;
        let _ = self.cluster.refresh().await;
        Ok(resp.topic.ok_or_else(|| missing("AlterTopicResponse.topic"))?.into())
    }

    /// Deletes a topic and all its records.
    ///
    /// # Errors
    /// [`Error::UnknownTopic`], or a transport/availability error after retries.
    pub async fn delete_topic(&self, name: &str) -> Result<()> {
        let msg = pb::DeleteTopicRequest { name: name.to_string() };
        self.admin(false, msg, |ch, r| async move { AdminClient::new(ch).delete_topic(r).await }).await?;
        let _ = self.cluster.refresh().await;
        Ok(())
    }

    /// Every topic, sorted by name.
    ///
    /// # Errors
    /// A transport/availability error after retries.
    pub async fn list_topics(&self) -> Result<Vec<TopicSummary>> {
        let resp = self
            .admin(true, pb::ListTopicsRequest {}, |ch, r| async move {
                AdminClient::new(ch).list_topics(r).await
            })
            .await?;
        let mut topics: Vec<TopicSummary> = resp
            .topics
            .into_iter()
            .map(|t| TopicSummary {
                name: t.name,
                partitions: t.partitions,
                replication_factor: t.replication_factor,
            })
            .collect();
        topics.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(topics)
    }

    /// Scrubs every replica of `topic` now (see `Admin.ScrubTopic`): every
    /// closed segment is re-read and checked, damage repaired from another
    /// replica where one has a good copy. Reads whole logs, so it may take
    /// up to [`SCRUB_TIMEOUT`]; tried on each known broker until one answers.
    ///
    /// # Errors
    /// An unknown topic, or no broker answering.
    pub async fn scrub_topic(&self, topic: &str) -> Result<Vec<ReplicaScrub>> {
        let msg = pb::ScrubTopicRequest { topic: topic.to_string() };
        let mut last = None;
        for addr in self.cluster.any_addresses() {
            let call = async {
                let mut admin = AdminClient::new(self.cluster.channel(&addr)?);
                Ok(admin.scrub_topic(request(msg.clone(), SCRUB_TIMEOUT)).await?.into_inner())
            };
            match deadline(SCRUB_TIMEOUT, call).await.map_err(|e| at_broker(&addr, e)) {
                Ok(r) => return Ok(r.replicas.into_iter().map(ReplicaScrub::from).collect()),
                Err(e) if e.is_retriable() => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| Error::Unavailable { message: "no broker to ask".into() }))
    }

    /// A topic's settings and partition states.
    ///
    /// # Errors
    /// [`Error::UnknownTopic`], or a transport/availability error after retries.
    pub async fn describe_topic(&self, name: &str) -> Result<TopicDescription> {
        let msg = pb::DescribeTopicRequest { name: name.to_string() };
        let resp = self
            .admin(true, msg.clone(), |ch, r| async move { AdminClient::new(ch).describe_topic(r).await })
            .await?;
        let mut desc: TopicDescription =
            resp.topic.ok_or_else(|| missing("DescribeTopicResponse.topic"))?.into();
        // Offsets, high watermarks and in-sync replicas are known exactly by
        // each partition's leader: ask every leader about the partitions it
        // leads (best effort; a leader that does not answer leaves the first view).
        let leaders: std::collections::BTreeSet<u64> =
            desc.partitions.iter().filter_map(|p| p.leader).collect();
        let brokers = self.metadata().await.map(|m| m.brokers).unwrap_or_default();
        let timeout = self.config().request_timeout;
        for leader in leaders {
            let Some(addr) = brokers.get(&leader).map(|b| b.address.clone()) else { continue };
            let Ok(channel) = self.cluster.channel(&addr) else { continue };
            let mut admin = AdminClient::new(channel);
            let call = admin.describe_topic(request(msg.clone(), timeout));
            let Ok(Ok(resp)) = tokio::time::timeout(timeout, call).await else { continue };
            let Some(theirs) = resp.into_inner().topic else { continue };
            let theirs: TopicDescription = theirs.into();
            for p in theirs.partitions {
                if p.leader == Some(leader) && !p.in_sync_replicas.is_empty() {
                    if let Some(slot) = desc.partitions.get_mut(p.partition as usize) {
                        *slot = p;
                    }
                }
            }
        }
        Ok(desc)
    }

    /// The brokers of the cluster and its controller.
    ///
    /// # Errors
    /// A transport/availability error after retries.
    pub async fn describe_cluster(&self) -> Result<ClusterDescription> {
        let msg = pb::DescribeClusterRequest {};
        let resp = self
            .admin(true, msg, |ch, r| async move { AdminClient::new(ch).describe_cluster(r).await })
            .await?;
        Ok(resp.into())
    }

    /// Looks up an offset of a partition at its leader.
    ///
    /// # Errors
    /// [`Error::UnknownTopic`], [`Error::UnknownPartition`], or a
    /// transport/availability error after retries.
    pub async fn list_offsets(&self, topic: &str, partition: u32, spec: OffsetSpec) -> Result<Offsets> {
        let (spec, timestamp_ms) = match spec {
            OffsetSpec::Earliest => (pb::OffsetSpec::Earliest, 0),
            OffsetSpec::Latest => (pb::OffsetSpec::Latest, 0),
            OffsetSpec::Timestamp(ts) => (pb::OffsetSpec::Timestamp, ts),
        };
        let msg =
            pb::ListOffsetsRequest { topic: topic.to_string(), partition, spec: spec as i32, timestamp_ms };
        let timeout = self.config().request_timeout;
        let resp = self
            .at_leader(topic, partition, timeout, msg, |mut c, r| async move { c.list_offsets(r).await })
            .await?;
        Ok(Offsets {
            offset: resp.offset,
            log_start_offset: resp.log_start_offset,
            high_watermark: resp.high_watermark,
        })
    }

    /// Reads whole batches of a partition from `offset` at its leader,
    /// long-polling up to `max_wait` until `min_bytes` are available.
    /// Use [`Fetched::records`] to get CRC-checked user records.
    ///
    /// # Errors
    /// [`Error::OffsetOutOfRange`] with the valid range,
    /// [`Error::UnknownTopic`], [`Error::UnknownPartition`], or a
    /// transport/availability error after retries.
    pub async fn fetch(
        &self,
        topic: &str,
        partition: u32,
        offset: u64,
        max_bytes: u32,
        min_bytes: u32,
        max_wait: Duration,
    ) -> Result<Fetched> {
        let max_wait = max_wait.min(FETCH_WAIT_MAX);
        let msg = pb::FetchRequest {
            topic: topic.to_string(),
            partition,
            offset,
            max_bytes,
            min_bytes,
            max_wait_ms: max_wait.as_millis() as u32,
        };
        let timeout = self.config().request_timeout + max_wait;
        let resp = self
            .at_leader(topic, partition, timeout, msg, |mut c, r| async move { c.fetch(r).await })
            .await?;
        Ok(Fetched {
            batches: resp.batches,
            next_offset: resp.next_offset,
            high_watermark: resp.high_watermark,
            log_start_offset: resp.log_start_offset,
        })
    }

    /// One attempt, bounded by `timeout`, to append `batch` to a partition
    /// at its leader; returns the base offset. The producer's sender owns retries so that it can
    /// keep them in partition order.
    pub(crate) async fn produce_once(
        &self,
        topic: &str,
        partition: u32,
        batch: Bytes,
        acks: Acks,
        hint: Option<String>,
        timeout: Duration,
    ) -> Result<u64> {
        let (addr, _) = self.leader_channel(topic, partition, hint).await?;
        let mut results = self.produce_to(&addr, topic, vec![(partition, batch)], acks, timeout).await?;
        results.pop().expect("one result per batch")
    }

    /// One attempt, bounded by `timeout`, to append batches of several
    /// partitions of `topic` in one request to the broker at `addr`.
    /// `Err` if the request as a whole failed (the broker writes nothing of
    /// a request it refuses); otherwise each partition's base offset or
    /// error, in the order of `batches`.
    pub(crate) async fn produce_to(
        &self,
        addr: &str,
        topic: &str,
        batches: Vec<(u32, Bytes)>,
        acks: Acks,
        timeout: Duration,
    ) -> Result<Vec<Result<u64>>> {
        let channel = self.cluster.channel(addr)?;
        let partitions: Vec<u32> = batches.iter().map(|(p, _)| *p).collect();
        let req = request(produce_request(topic, batches, acks, timeout), timeout);
        let call =
            deadline(timeout, async { Ok(ProducerClient::new(channel).produce(req).await?.into_inner()) });
        let resp = tokio::select! {
            resp = call => resp.map_err(|e| at_broker(addr, e))?,
            moved = self.leader_moved(topic, &partitions, addr) => return Err(moved),
        };
        produce_results(&partitions, resp)
    }

    /// Resolves, with the `NotLeader` error to retry with, once metadata
    /// names a leader other than `addr` for one of `partitions`: looked at
    /// [`LEADER_CHECK_AFTER`] after the request went out, then every
    /// [`LEADER_CHECK_INTERVAL`]. A request waiting on a broker that was
    /// paused or cut off is then abandoned and resent to the new leader,
    /// as it would be at once if the broker had died, instead of waiting
    /// out its timeout (or the pause). Never resolves while the leader stays.
    pub(crate) async fn leader_moved(&self, topic: &str, partitions: &[u32], addr: &str) -> Error {
        tokio::time::sleep(LEADER_CHECK_AFTER).await;
        loop {
            let meta = self.cluster.refresh_if_older(LEADER_CHECK_INTERVAL).await;
            let moved =
                partitions.iter().find_map(|p| meta.leader_address(topic, *p).ok().filter(|a| *a != addr));
            if let Some(leader) = moved {
                tracing::debug!(%topic, from = %addr, to = %leader, "leader moved; resending");
                return Error::NotLeader { leader_id: None, leader_address: Some(leader.to_string()) };
            }
            tokio::time::sleep(LEADER_CHECK_INTERVAL).await;
        }
    }

    /// The leader address of a partition from cached metadata, without I/O;
    /// `None` if the cache does not know it.
    pub(crate) fn cached_leader(&self, topic: &str, partition: u32) -> Option<String> {
        self.cluster.metadata().leader_address(topic, partition).ok().map(str::to_string)
    }

    /// Refreshes metadata after an error that suggests it is stale; a
    /// failure is only logged because the retry that follows reports it.
    pub(crate) async fn refresh_after(&self, error: &Error) {
        if error.needs_metadata_refresh() {
            if let Err(e) = self.cluster.refresh().await {
                tracing::debug!(error = %e, "metadata refresh failed");
            }
        }
    }

    /// Runs `op` until it succeeds, fails with a non-retriable error, or the
    /// retry count or deadline is used up. A call that is not `idempotent`
    /// is retried only when the broker refused it (`NotLeader`,
    /// `Unavailable`, `Busy`), never after a timeout that may hide success.
    pub(crate) async fn with_retry<T, F, Fut>(&self, idempotent: bool, mut op: F) -> Result<T>
    where
        F: FnMut(Attempt) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let mut backoff = Backoff::new(self.config(), Instant::now());
        let mut attempt = Attempt::default();
        loop {
            let error = match op(attempt.clone()).await {
                Ok(v) => return Ok(v),
                Err(e) => e,
            };
            let retriable = if idempotent { error.is_retriable() } else { error.is_refused() };
            let delay = match backoff.next_delay(Instant::now()) {
                Some(d) if retriable => d,
                _ => return Err(error),
            };
            tracing::debug!(error = %error, attempt = attempt.number, ?delay, "retrying");
            self.refresh_after(&error).await;
            attempt.hint = match &error {
                Error::NotLeader { leader_address: Some(a), .. } => Some(a.clone()),
                _ => None,
            };
            attempt.number += 1;
            tokio::time::sleep(delay).await;
        }
    }

    /// The address of and channel to a partition's leader (or to `hint` if given).
    pub(crate) async fn leader_channel(
        &self,
        topic: &str,
        partition: u32,
        hint: Option<String>,
    ) -> Result<(String, tonic::transport::Channel)> {
        let addr = match hint {
            Some(a) => a,
            None => self.cluster.leader_address(topic, partition).await?,
        };
        let channel = self.cluster.channel(&addr)?;
        Ok((addr, channel))
    }

    /// Sends a consumer request to a partition's leader, following leader
    /// hints and retrying retriable failures; each attempt is bounded by `timeout`.
    async fn at_leader<Req, Resp, F, Fut>(
        &self,
        topic: &str,
        partition: u32,
        timeout: Duration,
        msg: Req,
        call: F,
    ) -> Result<Resp>
    where
        Req: Clone,
        F: Fn(ConsumerClient<tonic::transport::Channel>, tonic::Request<Req>) -> Fut,
        Fut: Future<Output = std::result::Result<tonic::Response<Resp>, tonic::Status>>,
    {
        self.with_retry(true, |attempt| {
            let msg = msg.clone();
            let call = &call;
            async move {
                let (addr, channel) = self.leader_channel(topic, partition, attempt.hint).await?;
                let fut = call(ConsumerClient::new(channel), request(msg, timeout));
                deadline(timeout, async { Ok(fut.await?.into_inner()) })
                    .await
                    .map_err(|e| at_broker(&addr, e))
            }
        })
        .await
    }

    /// Sends a request that any broker answers (or redirects to the
    /// metadata leader), moving on to the next known address (or the
    /// leader hint) after a retriable failure.
    async fn admin<Req, Resp, F, Fut>(&self, idempotent: bool, msg: Req, call: F) -> Result<Resp>
    where
        Req: Clone,
        F: Fn(tonic::transport::Channel, tonic::Request<Req>) -> Fut,
        Fut: Future<Output = std::result::Result<tonic::Response<Resp>, tonic::Status>>,
    {
        let timeout = self.config().request_timeout;
        let one = |addr: String| {
            let msg = msg.clone();
            let call = &call;
            async move {
                let fut = call(self.cluster.channel(&addr)?, request(msg, timeout));
                deadline(timeout, async { Ok(fut.await?.into_inner()) })
                    .await
                    .map_err(|e| at_broker(&addr, e))
            }
        };
        self.with_retry(idempotent, |attempt| {
            // The hint first, else the known addresses from a different
            // one each attempt; the others after it when hedging.
            let mut order = self.cluster.any_addresses();
            let first = attempt.number as usize % order.len();
            order.rotate_left(first);
            if let Some(hint) = attempt.hint {
                order.retain(|a| *a != hint);
                order.insert(0, hint);
            }
            let one = &one;
            async move {
                if !idempotent {
                    // Sent once per attempt: a second copy might act twice.
                    return one(order.swap_remove(0)).await;
                }
                // A broker that does not answer is not waited out.
                hedged(order, HEDGE_AFTER, one).await.map_err(most_useful)
            }
        })
        .await
    }
}

/// Of the errors of a hedged request's attempts, the one that tells the
/// retry most: a leader hint to follow, else the last.
fn most_useful(mut errors: Vec<Error>) -> Error {
    let hinted = errors.iter().rposition(|e| matches!(e, Error::NotLeader { leader_address: Some(_), .. }));
    match hinted {
        Some(i) => errors.swap_remove(i),
        None => errors.pop().unwrap_or(Error::Config { message: "no broker address".into() }),
    }
}

fn missing(field: &str) -> Error {
    Error::Other { code: tonic::Code::Internal, message: format!("broker response lacks {field}") }
}

/// A produce request for `batches` of one topic, one per partition.
pub(crate) fn produce_request(
    topic: &str,
    batches: Vec<(u32, Bytes)>,
    acks: Acks,
    timeout: Duration,
) -> pb::ProduceRequest {
    pb::ProduceRequest {
        correlation_id: 0,
        topic: topic.to_string(),
        batches: batches
            .into_iter()
            .map(|(partition, batch)| pb::PartitionBatch { partition, batch })
            .collect(),
        acks: match acks {
            Acks::All => pb::Acks::All,
            Acks::Leader => pb::Acks::Leader,
        } as i32,
        timeout_ms: timeout.as_millis().min(u32::MAX as u128) as u32,
    }
}

/// Each partition's base offset or error from a produce response, in the
/// order of `partitions`; the request-wide error a stream reports in band.
pub(crate) fn produce_results(partitions: &[u32], resp: pb::ProduceResponse) -> Result<Vec<Result<u64>>> {
    let from_detail = |detail: pb::ErrorDetail| {
        let code = detail.code;
        crate::error::from_detail(detail)
            .unwrap_or(Error::Other { code: tonic::Code::Unknown, message: format!("error code {code}") })
    };
    if let Some(detail) = resp.error {
        return Err(from_detail(detail));
    }
    let mut results: std::collections::HashMap<u32, pb::PartitionResult> =
        resp.results.into_iter().map(|r| (r.partition, r)).collect();
    let outcome = |partition: &u32| {
        let result =
            results.remove(partition).ok_or_else(|| missing("ProduceResponse.results[partition]"))?;
        match result.error {
            Some(detail) => Err(from_detail(detail)),
            None => Ok(result.base_offset),
        }
    };
    Ok(partitions.iter().map(outcome).collect())
}
