//! The scrubber (issue #20): re-reads every closed segment of this
//! broker's replicas in the background, at `scrub_bytes_per_sec`, once
//! every `scrub_interval`, and on demand (`Admin.ScrubTopic`, `fjord topic
//! scrub T`). What a scrub finds damaged is refused to readers by the log
//! (`fjord_storage::Log::scrub`) and repaired from another replica of the
//! partition: the peer serves its copy of the range checked against its
//! CRCs (`Replica.ReadRange`), and the log writes it over the damage only
//! if it covers exactly the same offsets and bytes.
//!
//! A single-replica partition has no copy: its damage stays refused
//! (reads before and after it work) and is reported.

use std::sync::Arc;
use std::time::{Duration, Instant};

use fjord_proto::internal::replica_client::ReplicaClient;
use fjord_proto::internal::replica_server::Replica;
use fjord_proto::internal::{ReadRangeRequest, ReadRangeResponse, ScrubLocalRequest, ScrubLocalResponse};
use fjord_proto::pb;
use fjord_storage::{Damage, REPAIR_RANGE_BYTES_MAX};
use prost::Message as _;
use tokio::sync::watch;
use tonic::transport::Endpoint;
use tonic::{Request, Response, Status};

use crate::broker::{blocking, Broker};
use crate::partition::Partition;
use crate::{Error, Result};

/// How long a peer has to answer a repair or scrub request.
const PEER_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// A scrub of a peer's replicas reads all of them: give it time.
const PEER_SCRUB_TIMEOUT: Duration = Duration::from_secs(600);
const PEER_READ_TIMEOUT: Duration = Duration::from_secs(60);
/// Largest range message between replicas: the largest repairable range
/// plus its framing.
pub(crate) const RANGE_MESSAGE_BYTES_MAX: usize = REPAIR_RANGE_BYTES_MAX as usize + 1024 * 1024;

/// Scrubs one replica (blocking: run it off the async threads), pacing
/// reads to `bytes_per_sec` (0: as fast as the disk goes), and repairs what
/// it finds from the partition's other replicas.
async fn scrub_replica(broker: &Arc<Broker>, p: Arc<Partition>, bytes_per_sec: u64) -> pb::ReplicaScrub {
    let mut out = pb::ReplicaScrub { broker: broker.config.broker_id, partition: p.id, ..Default::default() };
    let log = p.log.clone();
    let scrubbed = blocking(move || {
        let started = Instant::now();
        let mut read = 0u64;
        let mut pace = |n: u64| {
            read += n;
            if bytes_per_sec > 0 {
                let due = Duration::from_secs_f64(read as f64 / bytes_per_sec as f64);
                if let Some(wait) = due.checked_sub(started.elapsed()) {
                    std::thread::sleep(wait);
                }
            }
        };
        Ok(log.scrub(&mut pace)?)
    })
    .await;
    let report = match scrubbed {
        Ok(r) => r,
        Err(e) => {
            out.error = e.to_string();
            return out;
        }
    };
    use std::sync::atomic::Ordering::Relaxed;
    p.traffic.scrubbed_bytes.fetch_add(report.bytes, Relaxed);
    p.traffic.damaged_ranges_found.fetch_add(report.damage.len() as u64, Relaxed);
    (out.segments, out.bytes, out.batches) = (report.segments, report.bytes, report.batches);
    out.index_damage = report.index_damage.clone();
    for line in &report.index_damage {
        tracing::error!(topic = %p.topic, partition = p.id, damage = %line, "scrub found a damaged offset index");
    }
    for d in report.damage {
        let mut range = pb::DamagedRange {
            start_offset: d.start_offset,
            end_offset: d.end_offset,
            bytes: d.len,
            reason: d.reason.clone(),
            ..Default::default()
        };
        match repair(broker, &p, &d).await {
            Ok(from) => {
                range.repaired = true;
                p.traffic.damaged_ranges_repaired.fetch_add(1, Relaxed);
                tracing::info!(topic = %p.topic, partition = p.id, from, start_offset = d.start_offset, end_offset = d.end_offset, "damaged range repaired from a peer");
            }
            Err(why) => {
                tracing::error!(topic = %p.topic, partition = p.id, start_offset = d.start_offset, end_offset = d.end_offset, error = %why, "damaged range not repaired; it is not served");
                range.repair_error = why;
            }
        }
        out.damaged.push(range);
    }
    out
}

/// Repairs `d` from the first other replica with a good copy; returns its id.
async fn repair(broker: &Arc<Broker>, p: &Arc<Partition>, d: &Damage) -> std::result::Result<u64, String> {
    let me = broker.config.broker_id;
    let others: Vec<u64> = p.replicas.iter().copied().filter(|&r| r != me).collect();
    if others.is_empty() {
        return Err("the partition has no other replica to repair from".into());
    }
    if d.len > REPAIR_RANGE_BYTES_MAX {
        return Err(format!(
            "the range is {} bytes, more than a repair moves ({REPAIR_RANGE_BYTES_MAX})",
            d.len
        ));
    }
    let mut failures = Vec::new();
    for peer in others {
        let copy = match read_range(broker, peer, &p.topic, p.id, d.start_offset, d.end_offset).await {
            Ok(c) => c,
            Err(e) => {
                failures.push(format!("broker {peer}: {e}"));
                continue;
            }
        };
        let (log, d2) = (p.log.clone(), d.clone());
        match blocking(move || Ok(log.repair(&d2, &copy)?)).await {
            Ok(()) => return Ok(peer),
            Err(e) => failures.push(format!("broker {peer}: {e}")),
        }
    }
    Err(failures.join("; "))
}

fn peer_endpoint(broker: &Broker, peer: u64) -> Result<Endpoint> {
    let addr =
        broker.peers.get(&peer).ok_or_else(|| Error::Unavailable(format!("broker {peer} is unknown")))?;
    Endpoint::from_shared(format!("http://{addr}"))
        .map(|e| e.connect_timeout(PEER_CONNECT_TIMEOUT))
        .map_err(|e| Error::Unavailable(format!("broker {peer} address {addr}: {e}")))
}

async fn read_range(
    broker: &Broker,
    peer: u64,
    topic: &str,
    partition: u32,
    start_offset: u64,
    end_offset: u64,
) -> std::result::Result<bytes::Bytes, String> {
    let endpoint = peer_endpoint(broker, peer).map_err(|e| e.to_string())?.timeout(PEER_READ_TIMEOUT);
    let channel = endpoint.connect().await.map_err(|e| format!("cannot connect: {e}"))?;
    let mut client = ReplicaClient::new(channel).max_decoding_message_size(RANGE_MESSAGE_BYTES_MAX);
    let req = ReadRangeRequest { topic: topic.to_owned(), partition, start_offset, end_offset };
    client.read_range(req).await.map(|r| r.into_inner().batches).map_err(|s| s.message().to_owned())
}

impl Broker {
    /// Scrubs this broker's replicas of `topic` now, unpaced, repairing
    /// from peers.
    pub(crate) async fn scrub_local(self: &Arc<Self>, topic: &str) -> Result<Vec<pb::ReplicaScrub>> {
        let t = self.topic(topic)?;
        let mut out = Vec::new();
        for (i, p) in t.partitions.iter().enumerate() {
            match p {
                Some(p) => out.push(scrub_replica(self, p.clone(), 0).await),
                None if t.meta.assignment[i].contains(&self.config.broker_id) => out.push(pb::ReplicaScrub {
                    broker: self.config.broker_id,
                    partition: i as u32,
                    error: "the replica is not open on this broker (see its log)".into(),
                    ..Default::default()
                }),
                None => {}
            }
        }
        Ok(out)
    }

    /// Scrubs every replica of `topic`: this broker's, and each other
    /// broker's holding one (asked over `Replica.ScrubLocal`).
    pub(crate) async fn scrub_topic(self: &Arc<Self>, topic: &str) -> Result<pb::ScrubTopicResponse> {
        let t = self.topic(topic)?;
        let me = self.config.broker_id;
        let mut holders: Vec<u64> =
            t.meta.assignment.iter().flatten().copied().filter(|&b| b != me).collect();
        holders.sort_unstable();
        holders.dedup();
        let mut replicas = self.scrub_local(topic).await?;
        for peer in holders {
            match scrub_peer(self, peer, topic).await {
                Ok(r) => replicas.extend(r),
                Err(e) => {
                    for (i, a) in t.meta.assignment.iter().enumerate() {
                        if a.contains(&peer) {
                            replicas.push(pb::ReplicaScrub {
                                broker: peer,
                                partition: i as u32,
                                error: e.clone(),
                                ..Default::default()
                            });
                        }
                    }
                }
            }
        }
        replicas.sort_by_key(|r| (r.partition, r.broker));
        Ok(pb::ScrubTopicResponse { replicas })
    }
}

async fn scrub_peer(
    broker: &Broker,
    peer: u64,
    topic: &str,
) -> std::result::Result<Vec<pb::ReplicaScrub>, String> {
    let endpoint = peer_endpoint(broker, peer).map_err(|e| e.to_string())?.timeout(PEER_SCRUB_TIMEOUT);
    let channel = endpoint.connect().await.map_err(|e| format!("broker {peer} unreachable: {e}"))?;
    let resp = ReplicaClient::new(channel)
        .scrub_local(ScrubLocalRequest { topic: topic.to_owned() })
        .await
        .map_err(|s| format!("broker {peer}: {}", s.message()))?;
    pb::ScrubTopicResponse::decode(resp.into_inner().report)
        .map(|r| r.replicas)
        .map_err(|e| format!("broker {peer} sent an unreadable report: {e}"))
}

/// Background scrubs: every `interval`, every replica on this broker in
/// turn, paced to `bytes_per_sec`.
pub(crate) async fn scrub_loop(broker: Arc<Broker>, interval: Duration, mut stop: watch::Receiver<bool>) {
    let bytes_per_sec = broker.config.scrub_bytes_per_sec;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stop.changed() => return,
        }
        let started = Instant::now();
        let (mut replicas, mut bytes, mut damaged) = (0u64, 0u64, 0usize);
        for t in broker.topics() {
            for p in t.partitions.iter().flatten() {
                if *stop.borrow() {
                    return;
                }
                let r = scrub_replica(&broker, p.clone(), bytes_per_sec).await;
                replicas += 1;
                bytes += r.bytes;
                damaged += r.damaged.len();
            }
        }
        tracing::info!(
            replicas,
            bytes,
            damaged,
            seconds = started.elapsed().as_secs_f64(),
            "scrub pass done"
        );
    }
}

/// The broker-to-broker `Replica` service.
#[derive(Debug)]
pub(crate) struct ReplicaService {
    pub(crate) broker: Arc<Broker>,
}

#[tonic::async_trait]
impl Replica for ReplicaService {
    async fn read_range(
        &self,
        request: Request<ReadRangeRequest>,
    ) -> std::result::Result<Response<ReadRangeResponse>, Status> {
        let r = request.into_inner();
        let p = self.broker.partition(&r.topic, r.partition)?;
        let log = p.log.clone();
        let batches = blocking(move || Ok(log.read_verified(r.start_offset, r.end_offset)?)).await?;
        Ok(Response::new(ReadRangeResponse { batches }))
    }

    async fn scrub_local(
        &self,
        request: Request<ScrubLocalRequest>,
    ) -> std::result::Result<Response<ScrubLocalResponse>, Status> {
        let replicas = self.broker.scrub_local(&request.into_inner().topic).await?;
        let report = pb::ScrubTopicResponse { replicas }.encode_to_vec().into();
        Ok(Response::new(ScrubLocalResponse { report }))
    }
}
