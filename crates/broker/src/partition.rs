//! One partition of a topic on this broker: its log, its high watermark,
//! and the write path every produce goes through.
//!
//! The write path is shaped for replication: `append` hands a batch to the
//! partition, which gives it the next Raft position, makes it durable as
//! configured and only then advances the high watermark that consumers
//! read up to. On a single broker the partition is a Raft group of one:
//! its own durable append is the quorum, so commit follows at once.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use fjord_storage::{Appended, DeletedSegment, FlushPolicy, Log, LogConfig, RaftPos, RaftState};
use tokio::sync::watch;

use crate::Result;

/// Term of every entry on a single broker, a group of one that never elects.
const SINGLE_NODE_TERM: u64 = 1;

/// A partition replica on this broker.
#[derive(Debug)]
pub(crate) struct Partition {
    pub(crate) topic: String,
    pub(crate) id: u32,
    pub(crate) log: Arc<Log>,
    /// Serializes Raft index assignment with the append that uses it.
    append_lock: Mutex<()>,
    /// Raft index of the first entry when the log holds none (after
    /// retention emptied it), from the persisted snapshot index.
    raft_floor: Mutex<u64>,
    /// Offsets below it are committed and visible to consumers. Consumers
    /// waiting for data watch it; dropping the partition wakes them.
    hw: watch::Sender<u64>,
    /// Set when the topic is deleted; readers holding the partition stop.
    closed: AtomicBool,
}

impl Partition {
    /// Opens (or creates) the partition's log in `dir`. Everything that
    /// survived recovery is made durable and counts as committed: on a
    /// single broker the local log is the whole quorum.
    pub(crate) fn open(dir: &Path, topic: &str, id: u32, config: LogConfig) -> Result<Partition> {
        let log = Log::open(dir, config)?;
        log.flush()?;
        let state = RaftState::load(dir)?.unwrap_or_default();
        let end = log.log_end_offset();
        Ok(Partition {
            topic: topic.to_owned(),
            id,
            log: Arc::new(log),
            append_lock: Mutex::new(()),
            raft_floor: Mutex::new(state.snapshot_index + 1),
            hw: watch::Sender::new(end),
            closed: AtomicBool::new(false),
        })
    }

    /// The high watermark.
    pub(crate) fn high_watermark(&self) -> u64 {
        *self.hw.borrow()
    }

    /// Marks the partition deleted and wakes everyone waiting on it.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.hw.send_modify(|_| {});
    }

    /// Whether the partition's topic was deleted.
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// A receiver that sees every advance of the high watermark.
    pub(crate) fn watch_hw(&self) -> watch::Receiver<u64> {
        self.hw.subscribe()
    }

    /// Appends a validated batch (blocking: call from a blocking thread).
    /// With `wait_commit` it returns once the batch is committed (durable
    /// as the flush policy says) and visible; without, once appended, with
    /// the commit left to [`Partition::commit`].
    pub(crate) fn append(&self, batch: &[u8], wait_commit: bool) -> Result<Appended> {
        let appended = {
            let _guard = self.append_lock.lock().unwrap_or_else(|p| p.into_inner());
            if self.is_closed() {
                return Err(crate::Error::UnknownTopic(self.topic.clone()));
            }
            let floor = *self.raft_floor.lock().unwrap_or_else(|p| p.into_inner());
            let index = self.log.last_raft().map_or(floor, |r| r.index + 1);
            self.log.append(batch, RaftPos { term: SINGLE_NODE_TERM, index })?
        };
        if wait_commit {
            self.commit(appended.next_offset)?;
        }
        Ok(appended)
    }

    /// Waits for the offsets below `next_offset` to be durable as the flush
    /// policy says, then makes them visible.
    pub(crate) fn commit(&self, next_offset: u64) -> Result<()> {
        if self.log.config().flush == FlushPolicy::Always {
            self.log.sync_through(next_offset)?;
        }
        self.hw.send_if_modified(|hw| {
            let advance = next_offset > *hw;
            if advance {
                *hw = next_offset;
            }
            advance
        });
        Ok(())
    }

    /// Retention and interval flushes (blocking). Returns deleted segments.
    pub(crate) fn maintain(&self, now_ms: i64) -> Result<Vec<DeletedSegment>> {
        self.log.flush_if_due(now_ms.max(0) as u64)?;
        let deleted = self.log.maintain(now_ms, self.high_watermark())?;
        if let Some(last) = deleted.iter().rev().find_map(|d| d.last_raft) {
            // The log may now be empty: remember where Raft indexes resume.
            let dir = self.log.dir();
            let mut state = RaftState::load(dir)?.unwrap_or_default();
            state.snapshot_index = last.index;
            state.snapshot_term = last.term;
            state.store(dir)?;
            *self.raft_floor.lock().unwrap_or_else(|p| p.into_inner()) = last.index + 1;
        }
        Ok(deleted)
    }
}
