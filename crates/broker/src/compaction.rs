//! Background compaction of compacted topics' partitions (issue #15).
//!
//! At each maintenance tick a partition of a topic whose cleanup policy
//! includes `compact` is compacted when its dirty ratio reaches the
//! topic's `min_cleanable_dirty_ratio`, or when its oldest uncompacted
//! record is older than `max_compaction_lag_ms`. The pass runs on a
//! blocking thread, one at a time per partition, below the high
//! watermark (nothing uncommitted is rewritten); each replica compacts on
//! its own (`storage-format.md` §2.5, §9).

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use crate::partition::Partition;
use crate::topics::TopicSettings;

/// Starts a compaction pass of `p` if it is due and none is running.
pub(crate) fn maybe_compact(p: &Arc<Partition>, settings: &TopicSettings, now_ms: i64) {
    if !settings.compacted() {
        return;
    }
    let d = p.log.dirtiness();
    let overdue = settings.max_compaction_lag_ms > 0
        && d.oldest_dirty_timestamp
            .is_some_and(|t| now_ms.saturating_sub(t) >= settings.max_compaction_lag_ms);
    let tombstones_due = d.tombstones_expire_at.is_some_and(|t| t <= now_ms);
    let dirty_enough = d.dirty_bytes > 0 && (d.ratio() >= settings.min_cleanable_dirty_ratio || overdue);
    if !dirty_enough && !tombstones_due {
        return;
    }
    if p.compaction.running.swap(true, Relaxed) {
        return;
    }
    let p = p.clone();
    let mut config = settings.compaction_config();
    if p.topic == crate::groups::OFFSETS_TOPIC {
        // Records written before the offsets topic was compacted are
        // keyed by group id and must stay (groups/records.rs).
        config.key_prefix = Some(crate::groups::records::COMPACTED_KEY_PREFIX.to_vec());
    }
    let limit = p.high_watermark();
    tokio::task::spawn_blocking(move || {
        let started = std::time::Instant::now();
        match p.log.compact(&config, limit, now_ms) {
            Ok(r) => {
                p.compaction.passes.fetch_add(1, Relaxed);
                p.compaction.bytes_read.fetch_add(r.bytes_read, Relaxed);
                p.compaction.records_removed.fetch_add(r.records_removed + r.tombstones_removed, Relaxed);
                p.compaction.last_ms.store(now_ms, Relaxed);
                if r.segments_cleaned > 0 {
                    tracing::info!(
                        topic = %p.topic, partition = p.id, segments = r.segments_cleaned,
                        bytes_before = r.bytes_before, bytes_after = r.bytes_after,
                        records_removed = r.records_removed, tombstones_removed = r.tombstones_removed,
                        ms = started.elapsed().as_millis() as u64, "compacted a partition"
                    );
                }
            }
            Err(e) => tracing::error!(topic = %p.topic, partition = p.id, error = %e, "compaction failed"),
        }
        p.compaction.running.store(false, Relaxed);
    });
}
