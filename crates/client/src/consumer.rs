//! [`Consumer`]: reads assigned partitions concurrently and yields their
//! records in offset order per partition.
//!
//! Each assigned partition has at most one long-poll `Fetch` in flight, and
//! a new one is issued only once the records of the previous one have been
//! taken by the caller. Memory is therefore bounded by the number of
//! assigned partitions times `max_bytes` (plus one oversized batch each,
//! since a fetch always returns at least one whole batch).
//!
//! Positions are resolved lazily: a [`Seek`] to the beginning, end or a
//! timestamp becomes a `ListOffsets` call just before the partition's next
//! fetch. Every batch's CRC is checked, control batches are skipped, and
//! records below the requested offset (a batch is never split) are dropped.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fjord_codec::Header;
use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, Stream};
use futures::StreamExt;

use crate::types::{Fetched, OffsetSpec, Offsets};
use crate::{Client, Error, Result};

/// Default upper bound of one fetch response's batch bytes: 1 MiB.
pub const FETCH_MAX_BYTES_DEFAULT: u32 = 1024 * 1024;
/// Default long-poll wait of a fetch when no data is available.
pub const FETCH_WAIT_DEFAULT: Duration = Duration::from_millis(500);
/// Most partitions one consumer may be assigned. With the default
/// `max_bytes` the buffered data stays under 4 GiB even in the worst case;
/// real assignments are far smaller.
pub const ASSIGNED_PARTITIONS_MAX: usize = 4096;

/// Where to (re)start reading a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seek {
    /// The log start offset.
    Beginning,
    /// The high watermark: only records produced from now on.
    End,
    /// An exact offset. Reading fails with [`Error::OffsetOutOfRange`] if it
    /// is outside the log.
    Offset(u64),
    /// The first record with a timestamp at or after this time (ms since the
    /// Unix epoch), or the end if there is none.
    Timestamp(i64),
    /// `n` records before the end (or the log start if there are fewer),
    /// counted in records: control batches take offsets but are not records.
    FromEnd(u64),
}

/// Consumer settings.
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    /// Upper bound of each fetch response's batch bytes. Default [`FETCH_MAX_BYTES_DEFAULT`] (1 MiB).
    pub max_bytes: u32,
    /// A fetch waits until this many bytes are available... Default 1.
    pub min_bytes: u32,
    /// ...or this long has passed. Default [`FETCH_WAIT_DEFAULT`] (500 ms).
    pub max_wait: Duration,
    /// Position of a newly assigned partition. Default [`Seek::End`], as Kafka's `auto.offset.reset=latest`.
    pub start: Seek,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        ConsumerConfig {
            max_bytes: FETCH_MAX_BYTES_DEFAULT,
            min_bytes: 1,
            max_wait: FETCH_WAIT_DEFAULT,
            start: Seek::End,
        }
    }
}

/// One record read from a partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumedRecord {
    /// Topic it was read from (shared by every record of the topic: a
    /// consumer hands out millions of these).
    pub topic: Arc<str>,
    /// Partition it was read from.
    pub partition: u32,
    /// Its offset.
    pub offset: u64,
    /// Its timestamp, ms since the Unix epoch.
    pub timestamp: i64,
    /// Key, if any.
    pub key: Option<Bytes>,
    /// Value; `None` is a tombstone.
    pub value: Option<Bytes>,
    /// Headers in the order the producer gave them.
    pub headers: Vec<Header>,
}

type TopicPartition = (Arc<str>, u32);

#[derive(Debug, Clone, Copy)]
enum Position {
    Resolved(u64),
    Pending(Seek),
}

#[derive(Debug)]
struct PartitionState {
    position: Position,
    /// Bumped by every seek so the answer to an older fetch is ignored.
    generation: u64,
    fetching: bool,
    /// Records of this partition in the consumer's buffer.
    buffered: usize,
    /// Stopped after a non-retriable error until the next seek.
    failed: bool,
    /// Reading stops before this offset.
    stop_at: Option<u64>,
    high_watermark: Option<u64>,
}

struct FetchOutcome {
    key: TopicPartition,
    generation: u64,
    /// The offset fetched from, and the answer (`None` if the position was
    /// already at the stop offset and no fetch was sent).
    result: Result<(u64, Option<Fetched>)>,
}

/// Reads records from assigned partitions.
///
/// ```no_run
/// use fjord_client::{Client, Consumer, ConsumerConfig, Seek};
/// # async fn demo(client: Client) -> fjord_client::Result<()> {
/// let mut consumer = Consumer::new(client, ConsumerConfig::default());
/// consumer.assign("events", None).await?;
/// consumer.seek_all(Seek::Beginning);
/// consumer.stop_at_high_watermark().await?; // read what exists now, then end
/// while let Some(rec) = consumer.next().await {
///     let rec = rec?;
///     println!("{}/{} {:?}", rec.partition, rec.offset, rec.value);
/// }
/// # Ok(()) }
/// ```
pub struct Consumer {
    client: Client,
    config: ConsumerConfig,
    partitions: BTreeMap<TopicPartition, PartitionState>,
    buffer: VecDeque<ConsumedRecord>,
    fetches: FuturesUnordered<BoxFuture<'static, FetchOutcome>>,
}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("partitions", &self.partitions)
            .field("buffered", &self.buffer.len())
            .field("fetches", &self.fetches.len())
            .finish()
    }
}

impl Consumer {
    /// A consumer with no assignment.
    pub fn new(client: Client, config: ConsumerConfig) -> Self {
        Consumer {
            client,
            config,
            partitions: BTreeMap::new(),
            buffer: VecDeque::new(),
            fetches: FuturesUnordered::new(),
        }
    }

    /// Adds partitions of `topic` (all of them for `None`) to the
    /// assignment, each starting at `ConsumerConfig::start`. Partitions
    /// already assigned keep their position.
    ///
    /// # Errors
    /// [`Error::UnknownTopic`], [`Error::UnknownPartition`], or
    /// [`Error::InvalidArgument`] past [`ASSIGNED_PARTITIONS_MAX`].
    pub async fn assign(&mut self, topic: &str, partitions: Option<&[u32]>) -> Result<()> {
        let mut count = self.client.partition_count(topic).await?;
        if partitions.is_some_and(|ps| ps.iter().any(|p| *p >= count)) {
            // Partitions may have been added since the cache was filled (a
            // group coordinator assigns from the broker's count): ask again.
            if let Ok(t) = self.client.cluster.refresh().await.and_then(|m| m.topic(topic).cloned()) {
                count = t.partitions.len() as u32;
            }
        }
        let list: Vec<u32> = match partitions {
            Some(ps) => ps.to_vec(),
            None => (0..count).collect(),
        };
        if let Some(p) = list.iter().find(|p| **p >= count) {
            return Err(Error::UnknownPartition {
                message: format!("topic {topic} has no partition {p} ({count} partitions)"),
            });
        }
        if self.partitions.len() + list.len() > ASSIGNED_PARTITIONS_MAX {
            return Err(Error::InvalidArgument {
                message: format!("assignment would exceed {ASSIGNED_PARTITIONS_MAX} partitions"),
            });
        }
        for p in list {
            self.partitions.entry((Arc::from(topic), p)).or_insert(PartitionState {
                position: Position::Pending(self.config.start),
                generation: 0,
                fetching: false,
                buffered: 0,
                failed: false,
                stop_at: None,
                high_watermark: None,
            });
        }
        Ok(())
    }

    /// Removes a partition from the assignment and drops its buffered records.
    pub fn unassign(&mut self, topic: &str, partition: u32) {
        self.partitions.remove(&(Arc::from(topic), partition));
        self.buffer.retain(|r| !(r.partition == partition && &*r.topic == topic));
    }

    /// The assigned partitions, in order.
    pub fn assignment(&self) -> Vec<(String, u32)> {
        self.partitions.keys().map(|(t, p)| (t.to_string(), *p)).collect()
    }

    /// Moves a partition's position; buffered records of it are dropped and
    /// a partition stopped by an error resumes.
    ///
    /// # Errors
    /// [`Error::UnknownPartition`] if the partition is not assigned.
    pub fn seek(&mut self, topic: &str, partition: u32, to: Seek) -> Result<()> {
        let state = self.partitions.get_mut(&(Arc::from(topic), partition)).ok_or_else(|| {
            Error::UnknownPartition {
                message: format!("{topic}/{partition} is not assigned to this consumer"),
            }
        })?;
        state.position = match to {
            Seek::Offset(o) => Position::Resolved(o),
            other => Position::Pending(other),
        };
        state.generation += 1;
        state.fetching = false;
        state.failed = false;
        state.buffered = 0;
        self.buffer.retain(|r| !(r.partition == partition && &*r.topic == topic));
        Ok(())
    }

    /// [`seek`](Self::seek) on every assigned partition.
    pub fn seek_all(&mut self, to: Seek) {
        for (topic, p) in self.assignment() {
            self.seek(&topic, p, to).expect("partition is assigned");
        }
    }

    /// Stops reading a partition before `offset`: once its position reaches
    /// it, no more records of it are returned. When every assigned partition
    /// has stopped, [`next`](Self::next) returns `None`.
    ///
    /// # Errors
    /// [`Error::UnknownPartition`] if the partition is not assigned.
    pub fn stop_at(&mut self, topic: &str, partition: u32, offset: u64) -> Result<()> {
        let state = self.partitions.get_mut(&(Arc::from(topic), partition)).ok_or_else(|| {
            Error::UnknownPartition {
                message: format!("{topic}/{partition} is not assigned to this consumer"),
            }
        })?;
        state.stop_at = Some(offset);
        Ok(())
    }

    /// Stops every assigned partition at its current high watermark, so the
    /// consumer reads what is committed now and then ends.
    ///
    /// # Errors
    /// The first `ListOffsets` failure.
    pub async fn stop_at_high_watermark(&mut self) -> Result<()> {
        for (topic, p) in self.assignment() {
            let hw = self.client.list_offsets(&topic, p, OffsetSpec::Latest).await?.high_watermark;
            self.stop_at(&topic, p, hw)?;
        }
        Ok(())
    }

    /// The offset of the next record this consumer will fetch from a
    /// partition, once resolved (`None` while a seek is pending).
    pub fn position(&self, topic: &str, partition: u32) -> Option<u64> {
        match self.partitions.get(&(Arc::from(topic), partition))?.position {
            Position::Resolved(o) => Some(o),
            Position::Pending(_) => None,
        }
    }

    /// The position of a partition all of whose fetched records were handed
    /// out: past every record read and past the control batches (Raft
    /// no-ops) that followed them, which no record reports. `None` while
    /// records of it are buffered or a seek is pending.
    pub fn drained_position(&self, topic: &str, partition: u32) -> Option<u64> {
        let state = self.partitions.get(&(Arc::from(topic), partition))?;
        match state.position {
            Position::Resolved(o) if state.buffered == 0 => Some(o),
            _ => None,
        }
    }

    /// Partitions stopped by a non-retriable error until their next [`seek`](Self::seek).
    pub fn failed(&self) -> Vec<(String, u32)> {
        self.partitions.iter().filter(|(_, s)| s.failed).map(|((t, p), _)| (t.to_string(), *p)).collect()
    }

    /// The high watermark the last fetch of a partition reported.
    pub fn high_watermark(&self, topic: &str, partition: u32) -> Option<u64> {
        self.partitions.get(&(Arc::from(topic), partition))?.high_watermark
    }

    /// The next record, in offset order per partition; `None` when nothing
    /// is left to read (no assignment, or every partition stopped by
    /// [`stop_at`](Self::stop_at) or by an earlier error).
    ///
    /// An error stops only the partition it came from (for a non-retriable
    /// one, until the next [`seek`](Self::seek)); [`Error::OffsetOutOfRange`]
    /// carries the valid range so the caller can seek into it.
    pub async fn next(&mut self) -> Option<Result<ConsumedRecord>> {
        loop {
            if let Some(rec) = self.buffer.pop_front() {
                if let Some(s) = self.partitions.get_mut(&(rec.topic.clone(), rec.partition)) {
                    s.buffered -= 1;
                }
                return Some(Ok(rec));
            }
            self.start_fetches();
            let outcome = self.fetches.next().await?;
            if let Some(e) = self.absorb(outcome) {
                return Some(Err(e));
            }
        }
    }

    /// The records as a stream; see [`next`](Self::next).
    pub fn stream(&mut self) -> impl Stream<Item = Result<ConsumedRecord>> + '_ {
        futures::stream::unfold(self, |c| async move { c.next().await.map(|r| (r, c)) })
    }

    /// Issues a fetch for every partition that has none in flight, no
    /// records buffered, and has not stopped.
    fn start_fetches(&mut self) {
        for (key, state) in self.partitions.iter_mut() {
            if state.fetching || state.failed || state.buffered > 0 {
                continue;
            }
            if let (Position::Resolved(pos), Some(stop)) = (state.position, state.stop_at) {
                if pos >= stop {
                    continue;
                }
            }
            state.fetching = true;
            let (client, config, key, position) =
                (self.client.clone(), self.config.clone(), key.clone(), state.position);
            let (generation, stop) = (state.generation, state.stop_at);
            self.fetches.push(Box::pin(async move {
                let result = fetch_from(&client, &config, &key, position, stop).await;
                FetchOutcome { key, generation, result }
            }));
        }
    }

    /// Takes a fetch's answer into the buffer; returns its error, if any.
    fn absorb(&mut self, outcome: FetchOutcome) -> Option<Error> {
        let state = self.partitions.get_mut(&outcome.key)?;
        if state.generation != outcome.generation {
            return None;
        }
        state.fetching = false;
        let (from, fetched) = match outcome.result {
            Ok((from, Some(fetched))) => (from, fetched),
            Ok((from, None)) => {
                state.position = Position::Resolved(from);
                return None;
            }
            Err(e) => {
                state.failed = !e.is_retriable();
                return Some(e);
            }
        };
        let records = match fetched.records(from) {
            Ok(r) => r,
            Err(e) => {
                state.failed = true;
                return Some(e);
            }
        };
        let stop = state.stop_at.unwrap_or(u64::MAX);
        let mut next = fetched.next_offset.max(from);
        let (topic, partition) = outcome.key;
        for r in records {
            next = next.max(r.offset + 1);
            if r.offset >= stop {
                continue;
            }
            state.buffered += 1;
            self.buffer.push_back(ConsumedRecord {
                topic: topic.clone(),
                partition,
                offset: r.offset,
                timestamp: r.timestamp,
                key: r.key,
                value: r.value,
                headers: r.headers,
            });
        }
        state.position = Position::Resolved(next);
        state.high_watermark = Some(fetched.high_watermark);
        None
    }
}

/// Resolves a pending position, then fetches from it unless that is already
/// at the stop offset (an empty partition read to its end must not wait out
/// a long poll). Returns the offset fetched from with the answer.
async fn fetch_from(
    client: &Client,
    config: &ConsumerConfig,
    (topic, partition): &TopicPartition,
    position: Position,
    stop: Option<u64>,
) -> Result<(u64, Option<Fetched>)> {
    let from = match position {
        Position::Resolved(o) => o,
        Position::Pending(seek) => resolve(client, config.max_bytes, topic, *partition, seek).await?,
    };
    if stop.is_some_and(|stop| from >= stop) {
        return Ok((from, None));
    }
    let fetched =
        client.fetch(topic, *partition, from, config.max_bytes, config.min_bytes, config.max_wait).await?;
    Ok((from, Some(fetched)))
}

async fn resolve(client: &Client, max_bytes: u32, topic: &str, partition: u32, seek: Seek) -> Result<u64> {
    let spec = match seek {
        Seek::Offset(o) => return Ok(o),
        Seek::Beginning => OffsetSpec::Earliest,
        Seek::End | Seek::FromEnd(_) => OffsetSpec::Latest,
        Seek::Timestamp(ts) => OffsetSpec::Timestamp(ts),
    };
    let o = client.list_offsets(topic, partition, spec).await?;
    Ok(match seek {
        Seek::FromEnd(n) => start_of_last(client, max_bytes, topic, partition, n, o).await?,
        _ => o.offset,
    })
}

/// The offset of the `n`th user record before the high watermark, or the
/// log start if there are fewer. Offsets are not records: control batches
/// (a new leader's Raft no-op after every election or restart) take
/// offsets too, so this counts the records of windows walked backwards
/// from the end, each window twice as wide as the last, instead of
/// subtracting `n` from the high watermark.
async fn start_of_last(
    client: &Client,
    max_bytes: u32,
    topic: &str,
    partition: u32,
    n: u64,
    o: Offsets,
) -> Result<u64> {
    let (log_start, end) = (o.log_start_offset, o.high_watermark);
    if n == 0 {
        return Ok(end);
    }
    if n >= end.saturating_sub(log_start) {
        return Ok(log_start); // fewer offsets than n: every record is wanted
    }
    // Records counted so far lie in [upper, end); `needed` more are wanted.
    let (mut upper, mut needed, mut window) = (end, n, n);
    while upper > log_start {
        let lower = upper.saturating_sub(window).max(log_start);
        // The last `needed` record offsets of [lower, upper), oldest first.
        let mut last = VecDeque::new();
        let mut count = 0u64;
        let mut from = lower;
        while from < upper {
            let fetched = client.fetch(topic, partition, from, max_bytes, 0, Duration::ZERO).await?;
            for r in fetched.records(from)? {
                if r.offset >= upper {
                    break;
                }
                count += 1;
                last.push_back(r.offset);
                if last.len() as u64 > needed {
                    last.pop_front();
                }
            }
            if fetched.next_offset <= from {
                break; // nothing more readable below the high watermark
            }
            from = fetched.next_offset;
        }
        if count >= needed {
            return Ok(*last.front().expect("needed > 0 offsets were kept"));
        }
        needed -= count;
        upper = lower;
        window = window.saturating_mul(2);
    }
    Ok(log_start)
}
