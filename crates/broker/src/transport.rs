//! Raft messages between brokers: one long-lived gRPC stream per peer
//! carrying every group's messages in batches, and the service that
//! receives them and hands each to its group.
//!
//! Losing messages is allowed (Raft retransmits), so every queue here is
//! bounded and drops when full, and a peer that is down costs nothing but
//! a reconnect attempt every [`RECONNECT_BACKOFF`].

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use fjord_proto::http2;
use fjord_proto::internal::raft_client::RaftClient;
use fjord_proto::internal::raft_server::Raft;
use fjord_proto::internal::{Faults as FaultsPb, RaftAck, RaftBatch, RaftEnvelope};
use fjord_replication::{decode_message, encode_message, Message, Transport};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Endpoint;
use tonic::{Request, Response, Status, Streaming};

use crate::broker::Broker;

/// Messages queued for one peer before new ones are dropped.
pub(crate) const PEER_QUEUE: usize = 16 * 1024;
/// Most messages in one batch on the wire.
const BATCH_MESSAGES_MAX: usize = 1024;
/// Batches buffered on a peer's stream.
const STREAM_BUFFER: usize = 64;
/// Wait before reconnecting to a peer whose stream failed.
pub(crate) const RECONNECT_BACKOFF: Duration = Duration::from_millis(200);
/// Connect timeout to a peer.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// An idle link sends an empty batch this often, so each broker knows its
/// peers are alive even when every group is quiet.
const PING_INTERVAL: Duration = Duration::from_millis(200);
/// A peer not heard from for this long is taken for dead: the groups it
/// leads start ticking (and electing). The shortest election timeout.
const LIVENESS_TIMEOUT: Duration = Duration::from_secs(1);

/// Injected network faults (tests only; see `--enable-fault-injection`).
#[derive(Debug, Default)]
pub(crate) struct Faults {
    pub(crate) enabled: bool,
    isolated: RwLock<HashSet<u64>>,
    ack_delay_ms: std::sync::atomic::AtomicU32,
    /// Append messages still to corrupt on arrival.
    corrupt_appends: std::sync::atomic::AtomicU32,
}

impl Faults {
    pub(crate) fn new(enabled: bool) -> Faults {
        Faults { enabled, isolated: RwLock::default(), ..Faults::default() }
    }

    /// Flips a byte of the first batch in `msg` if it is an append carrying
    /// one and corruption was asked for.
    fn corrupt(&self, msg: &mut Message) {
        use std::sync::atomic::Ordering::Relaxed;
        if msg.get_msg_type() != fjord_replication::MessageType::MsgAppend
            || self.corrupt_appends.load(Relaxed) == 0
        {
            return;
        }
        let Some(e) =
            msg.mut_entries().iter_mut().find(|e| e.data.len() > fjord_codec::format::BATCH_HEADER_LEN)
        else {
            return;
        };
        if self.corrupt_appends.fetch_update(Relaxed, Relaxed, |n| n.checked_sub(1)).is_ok() {
            let mut data = e.data.to_vec();
            let last = data.len() - 1;
            data[last] ^= 0x01;
            e.data = data.into();
            tracing::warn!(index = e.index, "fault injection: corrupted an append on arrival");
        }
    }

    /// How long produce responses are held after commit (0: not at all).
    pub(crate) fn ack_delay(&self) -> Duration {
        Duration::from_millis(self.ack_delay_ms.load(std::sync::atomic::Ordering::Relaxed) as u64)
    }

    pub(crate) fn is_isolated(&self, peer: u64) -> bool {
        self.isolated.read().unwrap_or_else(|p| p.into_inner()).contains(&peer)
    }
}

/// Sends Raft messages to peers, one queue and one stream per peer, and
/// tracks when each peer was last heard from.
#[derive(Debug)]
pub(crate) struct PeerTransport {
    me: u64,
    queues: BTreeMap<u64, mpsc::Sender<(u64, Message)>>,
    pub(crate) faults: Arc<Faults>,
    /// Per peer: when it was last heard from, and its incarnation then.
    last_heard: RwLock<std::collections::HashMap<u64, (tokio::time::Instant, u64)>>,
}

/// This process's incarnation (see `RaftBatch.incarnation`): the clock's
/// nanoseconds mixed with the pid, so two starts of one broker differ.
fn new_incarnation() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos(),
    );
    h.write_u32(std::process::id());
    h.finish().max(1)
}

impl PeerTransport {
    /// Starts a sender task for every peer but `me` (inside the runtime).
    pub(crate) fn start(me: u64, peers: &BTreeMap<u64, String>, faults: Arc<Faults>) -> PeerTransport {
        let incarnation = new_incarnation();
        let mut queues = BTreeMap::new();
        for (&id, addr) in peers {
            if id == me {
                continue;
            }
            let (tx, rx) = mpsc::channel(PEER_QUEUE);
            tokio::spawn(run_peer(me, incarnation, id, addr.clone(), rx));
            queues.insert(id, tx);
        }
        PeerTransport { me, queues, faults, last_heard: RwLock::default() }
    }

    /// Records traffic from `peer`, sent by its process `incarnation`.
    pub(crate) fn heard_from(&self, peer: u64, incarnation: u64) {
        let now = tokio::time::Instant::now();
        let previous =
            self.last_heard.write().unwrap_or_else(|p| p.into_inner()).insert(peer, (now, incarnation));
        if previous.is_some_and(|(_, i)| i != incarnation) {
            tracing::info!(peer, "peer broker restarted; the groups it led elect anew");
        }
    }
}

impl Transport for PeerTransport {
    fn send(&self, to: u64, group: u64, msg: Message) {
        if self.faults.is_isolated(to) {
            return;
        }
        if let Some(q) = self.queues.get(&to) {
            let _ = q.try_send((group, msg));
        }
    }

    fn is_alive(&self, node: u64) -> bool {
        node == self.me
            || self
                .last_heard
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .get(&node)
                .is_some_and(|(t, _)| t.elapsed() <= LIVENESS_TIMEOUT)
    }

    fn incarnation(&self, node: u64) -> u64 {
        self.last_heard.read().unwrap_or_else(|p| p.into_inner()).get(&node).map_or(0, |(_, i)| *i)
    }
}

/// Drains a peer's queue into batches on one client stream, reconnecting
/// after failures.
async fn run_peer(
    me: u64,
    incarnation: u64,
    to: u64,
    addr: String,
    mut queue: mpsc::Receiver<(u64, Message)>,
) {
    let endpoint = match Endpoint::from_shared(format!("http://{addr}")) {
        Ok(e) => e
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .initial_stream_window_size(http2::STREAM_WINDOW_BYTES)
            .initial_connection_window_size(http2::CONNECTION_WINDOW_BYTES)
            .max_frame_size(http2::FRAME_BYTES_MAX),
        Err(e) => {
            tracing::error!(peer = to, %addr, error = %e, "bad peer address; no raft traffic to it");
            return;
        }
    };
    loop {
        let (stream_tx, stream_rx) = mpsc::channel::<RaftBatch>(STREAM_BUFFER);
        let channel = endpoint.connect_lazy();
        let call =
            tokio::spawn(async move { RaftClient::new(channel).send(ReceiverStream::new(stream_rx)).await });
        loop {
            let mut messages = Vec::with_capacity(8);
            match tokio::time::timeout(PING_INTERVAL, queue.recv()).await {
                Ok(Some(first)) => push(&mut messages, first),
                Ok(None) => return,
                Err(_) => {} // idle: an empty batch is the ping
            }
            while messages.len() < BATCH_MESSAGES_MAX {
                match queue.try_recv() {
                    Ok(m) => push(&mut messages, m),
                    Err(_) => break,
                }
            }
            if call.is_finished()
                || stream_tx.send(RaftBatch { from: me, messages, incarnation }).await.is_err()
            {
                break;
            }
        }
        match call.await {
            Ok(Err(status)) => tracing::debug!(peer = to, %addr, %status, "raft stream to peer ended"),
            Err(e) => tracing::debug!(peer = to, error = %e, "raft stream task failed"),
            Ok(Ok(_)) => {}
        }
        tokio::time::sleep(RECONNECT_BACKOFF).await;
    }
}

fn push(out: &mut Vec<RaftEnvelope>, (group, msg): (u64, Message)) {
    match encode_message(&msg) {
        Ok(bytes) => out.push(RaftEnvelope { group, message: bytes.into() }),
        Err(e) => tracing::error!(group, error = %e, "raft message could not be encoded"),
    }
}

/// Receives peers' Raft messages.
#[derive(Debug, Clone)]
pub(crate) struct RaftService {
    pub(crate) broker: Arc<Broker>,
    /// Becomes true at shutdown: inbound streams end so the server can stop.
    pub(crate) shutdown: tokio::sync::watch::Receiver<bool>,
}

#[tonic::async_trait]
impl Raft for RaftService {
    async fn send(&self, request: Request<Streaming<RaftBatch>>) -> Result<Response<RaftAck>, Status> {
        let mut stream = request.into_inner();
        let mut shutdown = self.shutdown.clone();
        loop {
            let batch = tokio::select! {
                batch = stream.message() => match batch? {
                    Some(b) => b,
                    None => break,
                },
                _ = shutdown.wait_for(|stop| *stop) => break,
            };
            if self.broker.faults.is_isolated(batch.from) {
                continue;
            }
            self.broker.heard_from(batch.from, batch.incarnation);
            for env in batch.messages {
                match decode_message(&env.message) {
                    Ok(mut msg) => {
                        if self.broker.faults.enabled {
                            self.broker.faults.corrupt(&mut msg);
                        }
                        self.broker.step(env.group, msg)
                    }
                    Err(e) => {
                        tracing::warn!(from = batch.from, group = env.group, error = %e, "bad raft message")
                    }
                }
            }
        }
        Ok(Response::new(RaftAck {}))
    }

    async fn set_faults(&self, request: Request<FaultsPb>) -> Result<Response<RaftAck>, Status> {
        if !self.broker.faults.enabled {
            return Err(Status::permission_denied(
                "fault injection is off; start the broker with --enable-fault-injection",
            ));
        }
        let faults = request.into_inner();
        let isolate: HashSet<u64> = faults.isolate.into_iter().collect();
        tracing::warn!(
            ?isolate,
            ack_delay_ms = faults.ack_delay_ms,
            corrupt_appends = faults.corrupt_appends,
            "fault injection"
        );
        self.broker
            .faults
            .corrupt_appends
            .store(faults.corrupt_appends, std::sync::atomic::Ordering::Relaxed);
        *self.broker.faults.isolated.write().unwrap_or_else(|p| p.into_inner()) = isolate;
        self.broker.faults.ack_delay_ms.store(faults.ack_delay_ms, std::sync::atomic::Ordering::Relaxed);
        Ok(Response::new(RaftAck {}))
    }
}
