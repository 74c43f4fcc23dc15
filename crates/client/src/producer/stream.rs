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
//! breaks. Requests wait in a FIFO for their answers; when the stream
//! ends, every request still waiting fails with the reason, and the
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
}

/// The producer's streams, one per broker address. Owned by the producer's
/// background task, which is what orders the requests.
#[derive(Default)]
pub(crate) struct Streams {
    by_addr: HashMap<String, Stream>,
}

impl Streams {
    /// Queues `req` on the stream to `addr` (opening one if there is none
    /// or it has ended) and returns where its answer will arrive. The
    /// request goes out after every request queued to `addr` before it.
    ///
    /// # Errors
    /// A bad address.
    pub(crate) fn send(
        &mut self,
        client: &Client,
        addr: &str,
        mut req: pb::ProduceRequest,
    ) -> Result<oneshot::Receiver<Result<pb::ProduceResponse>>> {
        let open = self.by_addr.get(addr).is_some_and(|s| !s.waiting.lock().expect("poisoned").closed);
        if !open {
            self.by_addr.insert(addr.to_string(), Stream::open(client, addr)?);
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
        Ok(rx)
    }
}

impl Streams {
    /// Stops sending on the stream to `addr` (its requests in flight are
    /// still answered); the next request opens a new one.
    pub(crate) fn close(&mut self, addr: &str) {
        self.by_addr.remove(addr);
    }
}

impl Stream {
    fn open(client: &Client, addr: &str) -> Result<Stream> {
        let channel = client.cluster.channel(addr)?;
        let (requests, rx) = mpsc::unbounded_channel();
        let waiting = Arc::new(Mutex::new(Waiting::default()));
        tokio::spawn(run(addr.to_string(), channel, rx, waiting.clone()));
        Ok(Stream { requests, waiting, next_id: 0 })
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
