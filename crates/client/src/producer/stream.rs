//! Ordered produce requests to one broker over `Producer.ProduceStream`.
//!
//! A broker appends the requests of one stream in the order they were
//! sent and answers them in that order. Unary requests on one HTTP/2
//! connection have no such order (each is its own stream, and their
//! bodies interleave), so this is what lets an idempotent producer keep
//! several batches of one partition in flight: the broker sees their
//! sequences in order, and the partition's Raft group folds the batches
//! that arrive during one fsync into the next.
//!
//! One stream per broker address, opened on first use and replaced when it
//! breaks or lets a request time out. Each stream has a generation, so the
//! producer can tell whether the stream a partition's batches went out on
//! is still the one new requests would take (only then may more of that
//! partition follow them), and so that replacing a stream never closes
//! its successor. Requests wait in a FIFO for their answers; when the
//! stream ends, every request still waiting fails with the reason, and the
//! producer retries those batches in order.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use fjord_proto::pb;
use fjord_proto::pb::producer_client::ProducerClient;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::UnboundedReceiverStream;

use crate::cluster::at_broker;
use crate::{Client, Error, Result};

type Answer = oneshot::Sender<Result<pb::ProduceResponse>>;

/// The requests of one stream waiting for their answers, oldest first.
#[derive(Default)]
struct Waiting {
    /// Set when the stream has ended: nothing more may be queued on it.
    closed: bool,
    queue: VecDeque<(u64, Answer)>,
}

struct Stream {
    requests: mpsc::UnboundedSender<pb::ProduceRequest>,
    waiting: Arc<Mutex<Waiting>>,
    next_id: u64,
    generation: u64,
}

impl Stream {
    fn is_open(&self) -> bool {
        !self.waiting.lock().expect("poisoned").closed
    }
}

/// The producer's streams, one per broker address. Owned by the producer's
/// background task, which is what orders the requests.
#[derive(Default)]
pub(crate) struct Streams {
    by_addr: HashMap<String, Stream>,
    /// Streams opened so far, which numbers them.
    opened: u64,
}

impl Streams {
    /// Queues `req` on the stream to `addr` and returns the stream's
    /// generation and where the answer will arrive. The request goes out
    /// after every request queued on that stream before it. With
    /// `expected`, only on that generation; without, on the open stream,
    /// opening one if there is none or it has ended.
    ///
    /// # Errors
    /// A bad address; `Unavailable` if stream `expected` has ended.
    pub(crate) fn send(
        &mut self,
        client: &Client,
        addr: &str,
        mut req: pb::ProduceRequest,
        expected: Option<u64>,
    ) -> Result<(u64, oneshot::Receiver<Result<pb::ProduceResponse>>)> {
        let live = self.live(addr);
        if let Some(g) = expected.filter(|g| live != Some(*g)) {
            return Err(Error::Unavailable { message: format!("produce stream {g} was replaced") });
        }
        if live.is_none() {
            self.opened += 1;
            self.by_addr.insert(addr.to_string(), Stream::open(client, addr, self.opened)?);
        }
        let stream = self.by_addr.get_mut(addr).expect("inserted above");
        stream.next_id += 1;
        req.correlation_id = stream.next_id;
        let (tx, rx) = oneshot::channel();
        // Queued under the lock, so the stream's task cannot end between
        // our check of `closed` and the request reaching its queue.
        let mut waiting = stream.waiting.lock().expect("poisoned");
        if waiting.closed || stream.requests.send(req).is_err() {
            let _ =
                tx.send(Err(Error::Unavailable { message: format!("broker {addr}: produce stream closed") }));
        } else {
            waiting.queue.push_back((stream.next_id, tx));
        }
        Ok((stream.generation, rx))
    }

    /// The generation of the open stream to `addr`, the one the next
    /// request to `addr` would take; `None` if a request would open one.
    pub(crate) fn live(&self, addr: &str) -> Option<u64> {
        self.by_addr.get(addr).filter(|s| s.is_open()).map(|s| s.generation)
    }

    /// Stops sending on stream `generation` to `addr` (its requests in
    /// flight are still answered), so that the next request opens a new
    /// one. A stream that was already replaced is left alone: its
    /// successor is not the one that failed.
    pub(crate) fn close(&mut self, addr: &str, generation: u64) {
        if self.by_addr.get(addr).is_some_and(|s| s.generation == generation) {
            self.by_addr.remove(addr);
        }
    }
}

impl Stream {
    fn open(client: &Client, addr: &str, generation: u64) -> Result<Stream> {
        let channel = client.cluster.channel(addr)?;
        let (requests, rx) = mpsc::unbounded_channel();
        let waiting = Arc::new(Mutex::new(Waiting::default()));
        tokio::spawn(run(addr.to_string(), channel, rx, waiting.clone()));
        Ok(Stream { requests, waiting, next_id: 0, generation })
    }
}

/// Sends the stream's requests and hands each answer to its waiter; when
/// the stream ends, fails every waiter left.
async fn run(
    addr: String,
    channel: tonic::transport::Channel,
    requests: mpsc::UnboundedReceiver<pb::ProduceRequest>,
    waiting: Arc<Mutex<Waiting>>,
) {
    let ended = match serve(channel, requests, &waiting).await {
        Ok(()) => Error::Unavailable { message: "the broker ended the produce stream".into() },
        Err(e) => e,
    };
    let ended = at_broker(&addr, ended);
    let left = {
        let mut w = waiting.lock().expect("poisoned");
        w.closed = true;
        std::mem::take(&mut w.queue)
    };
    for (_, tx) in left {
        let _ = tx.send(Err(ended.clone()));
    }
}

async fn serve(
    channel: tonic::transport::Channel,
    requests: mpsc::UnboundedReceiver<pb::ProduceRequest>,
    waiting: &Mutex<Waiting>,
) -> Result<()> {
    let mut answers = ProducerClient::new(channel)
        .produce_stream(UnboundedReceiverStream::new(requests))
        .await?
        .into_inner();
    while let Some(resp) = answers.message().await? {
        let next = waiting.lock().expect("poisoned").queue.pop_front();
        match next {
            Some((id, tx)) if id == resp.correlation_id => {
                let _ = tx.send(Ok(resp));
            }
            next => {
                let message = format!(
                    "produce stream answered request {} when {:?} was next",
                    resp.correlation_id,
                    next.as_ref().map(|(id, _)| *id)
                );
                if let Some((_, tx)) = next {
                    let _ = tx.send(Err(Error::Unavailable { message: message.clone() }));
                }
                return Err(Error::Unavailable { message });
            }
        }
    }
    Ok(())
}
