//! What the metrics scrape reads of the coordinator: each loaded group's
//! members, state and committed offsets, taken without waiting.
//!
//! A shard whose lock is held (a commit or heartbeat being written, or a
//! replay after a failover) is skipped for this scrape rather than waited
//! for: a scrape must never stall behind a quorum write, and the next one,
//! a few seconds later, sees it. Only shards loaded in the term this broker
//! serves are read, so a deposed coordinator reports nothing stale.

use super::limits::OFFSETS_TOPIC_PARTITIONS;
use super::{Coordinator, OFFSETS_TOPIC};

/// Committed offsets reported per scrape, over all groups: beyond it the
/// rest are left out (and `truncated` says so). At ~120 bytes for each of
/// the three series of a committed offset, 20,000 keep a scrape's group
/// part near 7 MB; 1,000 groups of 20 partitions fit.
pub(crate) const GROUP_OFFSETS_SCRAPED_MAX: usize = 20_000;

/// One group as a scrape sees it.
#[derive(Debug)]
pub(crate) struct GroupSnapshot {
    pub(crate) group: String,
    pub(crate) state: &'static str,
    pub(crate) members: usize,
    /// (topic, partition, committed next offset to read).
    pub(crate) offsets: Vec<(String, u32, u64)>,
}

/// Every group this broker coordinates now, as far as the bound allows.
#[derive(Debug, Default)]
pub(crate) struct Snapshot {
    pub(crate) groups: Vec<GroupSnapshot>,
    /// Offsets were left out by [`GROUP_OFFSETS_SCRAPED_MAX`].
    pub(crate) truncated: bool,
    /// Shards skipped because they were busy.
    pub(crate) busy_shards: usize,
}

impl Coordinator {
    /// The groups of the offsets partitions this broker serves, read with
    /// `try_lock` (see the module doc).
    pub(crate) fn snapshot(&self) -> Snapshot {
        let mut out = Snapshot::default();
        let Ok(topic) = self.broker.topic(OFFSETS_TOPIC) else { return out };
        let mut offsets_left = GROUP_OFFSETS_SCRAPED_MAX;
        for i in 0..OFFSETS_TOPIC_PARTITIONS as usize {
            let Some(Some(p)) = topic.partitions.get(i) else { continue };
            let status = p.group.status();
            if !status.is_serving() {
                continue;
            }
            let Ok(shard) = self.shards[i].try_lock() else {
                out.busy_shards += 1;
                continue;
            };
            if shard.term != Some(status.term()) {
                continue;
            }
            for (id, g) in &shard.groups {
                let take = g.offsets.len().min(offsets_left);
                out.truncated |= take < g.offsets.len();
                offsets_left -= take;
                out.groups.push(GroupSnapshot {
                    group: id.clone(),
                    state: g.state().name(),
                    members: g.meta.members.len(),
                    offsets: g
                        .offsets
                        .iter()
                        .take(take)
                        .map(|(tp, c)| (tp.topic.clone(), tp.partition, c.offset))
                        .collect(),
                });
            }
        }
        out
    }
}

impl Coordinator {
    /// Age in ms of the oldest record a group has not consumed in a
    /// partition: 0 when `lag` is 0 or only control batches lie past
    /// `committed`, else now minus the timestamp of the first record at
    /// or after `committed`, read from this broker's serving replica
    /// (`None` when it has none, or the record cannot be read). One batch
    /// read from the page cache; `DescribeGroup` and scrapes call it.
    pub(crate) fn lag_ms(&self, topic: &str, partition: u32, committed: u64, lag: u64) -> Option<i64> {
        if lag == 0 {
            return Some(0);
        }
        let p = self.broker.partition(topic, partition).ok()?;
        if !p.group.status().is_serving() {
            return None;
        }
        // Only control batches left to read: nothing a consumer would get.
        let ts = p.timestamp_at(committed, p.high_watermark())?;
        Some(ts.map_or(0, |ts| (super::now_ms() - ts).max(0)))
    }
}
