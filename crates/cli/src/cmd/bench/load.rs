//! The producer side shared by `bench produce` and `bench e2e`: P tasks,
//! each with its own [`Producer`], sending their share of the records on
//! the [`Schedule`] and timing each record from its due time to its ack.
//!
//! Each task sends from one loop with [`Producer::send_with`]: the
//! callback reads the clock when the record's acknowledgement arrives and
//! records the latency, so no future per record is kept or polled (a
//! `Delivery` per record and a `FuturesUnordered` to await them cost a
//! sixth of the load generator's CPU, which it shares with the broker on
//! small machines). Awaiting deliveries in send order instead would charge
//! a record for the slower partitions sent before it.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use fjord_client::{Acks, Client, Producer, ProducerConfig, ProducerRecord};
use hdrhistogram::Histogram;
use indicatif::ProgressBar;
use tokio::time::Instant;

use super::payload::Payloads;
use super::report::{latency_histogram, LATENCY_US_MAX};
use super::schedule::Schedule;
use super::LoadArgs;
use crate::args::AcksArg;

/// The time origin of a run: the same moment on the monotonic clock (for
/// latencies measured in this process) and on the wall clock (for the due
/// time stamped into records, which `e2e` compares with its own wall clock).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Origin {
    pub(crate) at: Instant,
    pub(crate) wall_us: u64,
}

impl Origin {
    /// Now.
    pub(crate) fn now() -> Self {
        Origin { at: Instant::now(), wall_us: wall_clock_us() }
    }
}

/// What the producer tasks saw.
#[derive(Debug)]
pub(crate) struct Sent {
    /// Records acknowledged.
    pub(crate) acked: u64,
    /// Records refused, by `send` or through their delivery.
    pub(crate) failed: u64,
    /// The first refusal.
    pub(crate) first_error: Option<anyhow::Error>,
    /// Due time (or send time) to ack, µs.
    pub(crate) latency: Histogram<u64>,
    /// When the last ack arrived.
    pub(crate) last_ack: Option<Instant>,
}

impl Sent {
    fn merge(&mut self, other: Sent) {
        self.acked += other.acked;
        self.failed += other.failed;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        self.latency.add(&other.latency).expect("histograms share their bounds");
        self.last_ack = self.last_ack.max(other.last_ack);
    }

    fn empty() -> Self {
        Sent { acked: 0, failed: 0, first_error: None, latency: latency_histogram(), last_ack: None }
    }

    fn fail(&mut self, e: anyhow::Error) {
        self.failed += 1;
        self.first_error.get_or_insert(e);
    }
}

/// The producer settings the flags describe.
pub(crate) fn producer_config(args: &LoadArgs, timeout: Duration) -> ProducerConfig {
    ProducerConfig {
        linger: Duration::from_millis(args.linger_ms),
        batch_bytes: args.batch_bytes,
        acks: match args.acks {
            AcksArg::All => Acks::All,
            AcksArg::Leader => Acks::Leader,
        },
        request_timeout: timeout,
        compression: args.compression,
        idempotent: !args.no_idempotence,
        ..Default::default()
    }
}

/// Runs the producer tasks to completion: every record acknowledged or
/// failed, every producer closed. `progress` advances by one per ack.
///
/// # Errors
/// An invalid producer configuration. Refused records are counted in
/// [`Sent`], not returned here.
pub(crate) async fn run(
    client: &Client,
    args: &LoadArgs,
    timeout: Duration,
    origin: Origin,
    progress: Option<ProgressBar>,
) -> anyhow::Result<Sent> {
    let schedule = args.schedule();
    let payloads = Payloads::new(args.record_size as usize);
    let topic: Arc<str> = args.topic.as_str().into();
    let mut tasks = tokio::task::JoinSet::new();
    for task in 0..schedule.producers {
        let producer = Producer::new(client.clone(), producer_config(args, timeout)).context("producer")?;
        let job = Job {
            schedule,
            task,
            origin,
            measure_from: origin.at + args.warmup,
            payloads: payloads.clone(),
            topic: topic.clone(),
            keys: args.keys,
        };
        tasks.spawn(job.run(producer, progress.clone()));
    }
    let mut sent = Sent::empty();
    while let Some(outcome) = tasks.join_next().await {
        sent.merge(outcome.context("a producer task panicked")?);
    }
    Ok(sent)
}

/// One producer task's part of the run.
struct Job {
    schedule: Schedule,
    task: u64,
    origin: Origin,
    /// Records due before this are sent but not timed (`--warmup`).
    measure_from: Instant,
    payloads: Payloads,
    topic: Arc<str>,
    /// `--keys`: record `i` is keyed `i % keys`, else keyless.
    keys: Option<u64>,
}

impl Job {
    async fn run(self, producer: Producer, progress: Option<ProgressBar>) -> Sent {
        // Filled by the callbacks, which run on the producer's own task.
        let acked = Arc::new(Mutex::new(Sent::empty()));
        let mut refused = Sent::empty();
        for k in 0..self.schedule.share(self.task) {
            let index = self.schedule.index(self.task, k);
            let (due, due_wall_us) = match self.schedule.due(index) {
                Some(offset) => {
                    let due = self.origin.at + offset;
                    // Behind schedule, send at once: no timer, no yield.
                    if due > Instant::now() {
                        tokio::time::sleep_until(due).await;
                    }
                    (due, self.origin.wall_us + offset.as_micros() as u64)
                }
                None => (Instant::now(), wall_clock_us()),
            };
            let mut record = ProducerRecord::new(&*self.topic, self.payloads.value(index, due_wall_us));
            if let Some(keys) = self.keys {
                record = record.with_key((index % keys).to_string());
            }
            let (acked, progress, measure_from) = (acked.clone(), progress.clone(), self.measure_from);
            let on_ack = move |outcome: fjord_client::Result<_>| {
                let now = Instant::now();
                let mut sent = acked.lock().expect("a callback panicked");
                match outcome {
                    Ok(_) => {
                        sent.acked += 1;
                        if due >= measure_from {
                            sent.latency.saturating_record(micros(now.saturating_duration_since(due)));
                        }
                        sent.last_ack = Some(now);
                        if let Some(p) = &progress {
                            p.inc(1);
                        }
                    }
                    Err(e) => sent.fail(anyhow::Error::new(e).context("delivery")),
                }
            };
            if let Err(e) = producer.send_with(record, on_ack).await {
                // Refused before sending (too large, unknown topic, closed):
                // every later record would be refused the same way.
                refused.fail(anyhow::Error::new(e).context(format!("sending record {index}")));
                break;
            }
        }
        // Closing waits for every record's outcome, so every callback has run.
        if let Err(e) = producer.close().await {
            refused.fail(anyhow::Error::new(e).context("closing the producer"));
        }
        let mut sent = std::mem::replace(&mut *acked.lock().expect("a callback panicked"), Sent::empty());
        sent.merge(refused);
        sent
    }
}

/// A duration in µs, clamped to what the histogram holds.
pub(crate) fn micros(d: Duration) -> u64 {
    (d.as_micros() as u64).min(LATENCY_US_MAX)
}

/// Wall-clock µs since the Unix epoch (0 before it).
pub(crate) fn wall_clock_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0)
}
