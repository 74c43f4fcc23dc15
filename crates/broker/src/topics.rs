//! Topic names and per-topic settings. The topics themselves live in the
//! cluster metadata (`meta`).

use fjord_codec::Compression;
use fjord_proto::pb;
use fjord_storage::{
    FlushPolicy, LogConfig, SEGMENT_BYTES_DEFAULT, SEGMENT_BYTES_MAX, SEGMENT_BYTES_MIN, SEGMENT_MS_DEFAULT,
};
use serde::{Deserialize, Serialize};

use crate::config::TOPIC_NAME_LEN_MAX;
use crate::error::quoted;
use crate::{Error, Result};

/// Default retention: 7 days, as Kafka.
pub(crate) const RETENTION_MS_DEFAULT: i64 = 7 * 24 * 3600 * 1000;

/// Checks a topic name against Kafka's rules: 1 to 249 characters of
/// `[a-zA-Z0-9._-]`, and not `.` or `..` (they would name directories).
pub(crate) fn validate_topic_name(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > TOPIC_NAME_LEN_MAX {
        return Err(Error::InvalidArgument(format!(
            "topic name must be 1 to {TOPIC_NAME_LEN_MAX} characters, got {}",
            name.len()
        )));
    }
    if name == "." || name == ".." {
        return Err(Error::InvalidArgument(format!("topic name {} is not allowed", quoted(name))));
    }
    if let Some(c) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))) {
        return Err(Error::InvalidArgument(format!(
            "topic name {} contains {c:?}; allowed are ASCII letters, digits, '.', '_' and '-'",
            quoted(name)
        )));
    }
    Ok(())
}

/// Topic names starting with this are the broker's own (`__consumer_offsets`).
pub(crate) const RESERVED_TOPIC_PREFIX: &str = "__";

/// Refuses invalid names, and names of internal topics in requests from
/// users: they may not create, delete or produce to them.
pub(crate) fn check_user_topic(name: &str) -> Result<()> {
    validate_topic_name(name)?;
    if name.starts_with(RESERVED_TOPIC_PREFIX) {
        return Err(Error::InvalidArgument(format!(
            "topic name {} is reserved: names starting with {RESERVED_TOPIC_PREFIX:?} are internal topics",
            quoted(name)
        )));
    }
    Ok(())
}

/// Per-topic settings with broker defaults filled in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct TopicSettings {
    /// ms; -1 keeps forever.
    pub(crate) retention_ms: i64,
    /// bytes per partition; -1 for no limit.
    pub(crate) retention_bytes: i64,
    pub(crate) segment_bytes: u64,
    /// ms.
    pub(crate) segment_ms: u64,
    /// "producer" (store as sent) or a codec every batch is stored in.
    /// Topics created before the setting existed read as "producer".
    #[serde(default = "compression_default")]
    pub(crate) compression: String,
    /// "delete", "compact" or "compact,delete". Topics created before the
    /// setting existed read as "delete" (as do the fields below, their
    /// defaults), so their metadata log entries still apply.
    #[serde(default = "cleanup_policy_default")]
    pub(crate) cleanup_policy: String,
    /// ms a tombstone that is last of its key is kept on a compacted topic.
    #[serde(default = "delete_retention_ms_default")]
    pub(crate) delete_retention_ms: u64,
    /// Share of a partition's closed bytes written since its last
    /// compaction at which it is compacted again.
    #[serde(default = "min_cleanable_dirty_ratio_default")]
    pub(crate) min_cleanable_dirty_ratio: f64,
    /// ms; records younger than this are never compacted.
    #[serde(default)]
    pub(crate) min_compaction_lag_ms: u64,
    /// ms; -1 for no limit.
    #[serde(default = "max_compaction_lag_ms_default")]
    pub(crate) max_compaction_lag_ms: i64,
}

/// Retention deletes old segments; nothing is compacted. Kafka's default.
pub(crate) const CLEANUP_POLICY_DEFAULT: &str = "delete";
/// Kafka's `min.cleanable.dirty.ratio` default.
pub(crate) const MIN_CLEANABLE_DIRTY_RATIO_DEFAULT: f64 = 0.5;

fn cleanup_policy_default() -> String {
    CLEANUP_POLICY_DEFAULT.to_owned()
}
fn delete_retention_ms_default() -> u64 {
    fjord_storage::DELETE_RETENTION_MS_DEFAULT
}
fn min_cleanable_dirty_ratio_default() -> f64 {
    MIN_CLEANABLE_DIRTY_RATIO_DEFAULT
}
fn max_compaction_lag_ms_default() -> i64 {
    -1
}

/// Refuses a setting that must be -1 (`meaning`) or at least 1.
fn unset_or_positive(name: &str, value: i64, meaning: &str) -> Result<()> {
    if value < -1 || value == 0 {
        return Err(Error::InvalidArgument(format!(
            "{name} must be -1 ({meaning}) or at least 1, got {value}"
        )));
    }
    Ok(())
}

/// Batches are stored compressed as the producer sent them.
const COMPRESSION_PRODUCER: &str = "producer";

fn compression_default() -> String {
    COMPRESSION_PRODUCER.to_owned()
}

impl TopicSettings {
    /// These settings with the fields `c` sets replaced, validated.
    pub(crate) fn altered(&self, c: &pb::TopicConfig) -> Result<TopicSettings> {
        let changes = [
            c.retention_ms.is_some(),
            c.retention_bytes.is_some(),
            c.segment_bytes.is_some(),
            c.segment_ms.is_some(),
            c.compression.is_some(),
            c.cleanup_policy.is_some(),
            c.delete_retention_ms.is_some(),
            c.min_cleanable_dirty_ratio.is_some(),
            c.min_compaction_lag_ms.is_some(),
            c.max_compaction_lag_ms.is_some(),
        ];
        if !changes.contains(&true) {
            return Err(Error::InvalidArgument("config: set at least one setting to change".into()));
        }
        let current = self.to_pb();
        let merged = pb::TopicConfig {
            retention_ms: c.retention_ms.or(current.retention_ms),
            retention_bytes: c.retention_bytes.or(current.retention_bytes),
            segment_bytes: c.segment_bytes.or(current.segment_bytes),
            segment_ms: c.segment_ms.or(current.segment_ms),
            compression: c.compression.clone().or(current.compression),
            cleanup_policy: c.cleanup_policy.clone().or(current.cleanup_policy),
            delete_retention_ms: c.delete_retention_ms.or(current.delete_retention_ms),
            min_cleanable_dirty_ratio: c.min_cleanable_dirty_ratio.or(current.min_cleanable_dirty_ratio),
            min_compaction_lag_ms: c.min_compaction_lag_ms.or(current.min_compaction_lag_ms),
            max_compaction_lag_ms: c.max_compaction_lag_ms.or(current.max_compaction_lag_ms),
        };
        TopicSettings::from_request(Some(&merged))
    }

    /// Settings from a create request, validated; unset fields take defaults.
    pub(crate) fn from_request(c: Option<&pb::TopicConfig>) -> Result<TopicSettings> {
        let c = c.cloned().unwrap_or_default();
        let s = TopicSettings {
            retention_ms: c.retention_ms.unwrap_or(RETENTION_MS_DEFAULT),
            retention_bytes: c.retention_bytes.unwrap_or(-1),
            segment_bytes: c.segment_bytes.unwrap_or(SEGMENT_BYTES_DEFAULT),
            segment_ms: match c.segment_ms {
                Some(ms) if ms < 1 => {
                    return Err(Error::InvalidArgument(format!("segment_ms must be at least 1, got {ms}")))
                }
                Some(ms) => ms as u64,
                None => SEGMENT_MS_DEFAULT,
            },
            compression: c.compression.unwrap_or_else(compression_default),
            cleanup_policy: c.cleanup_policy.unwrap_or_else(cleanup_policy_default),
            delete_retention_ms: match c.delete_retention_ms {
                Some(ms) if ms < 0 => {
                    return Err(Error::InvalidArgument(format!(
                        "delete_retention_ms must be at least 0, got {ms}"
                    )))
                }
                Some(ms) => ms as u64,
                None => delete_retention_ms_default(),
            },
            min_cleanable_dirty_ratio: c
                .min_cleanable_dirty_ratio
                .unwrap_or(MIN_CLEANABLE_DIRTY_RATIO_DEFAULT),
            min_compaction_lag_ms: match c.min_compaction_lag_ms {
                Some(ms) if ms < 0 => {
                    return Err(Error::InvalidArgument(format!(
                        "min_compaction_lag_ms must be at least 0, got {ms}"
                    )))
                }
                Some(ms) => ms as u64,
                None => 0,
            },
            max_compaction_lag_ms: c.max_compaction_lag_ms.unwrap_or(-1),
        };
        if !matches!(s.cleanup_policy.as_str(), "delete" | "compact" | "compact,delete") {
            return Err(Error::InvalidArgument(format!(
                "cleanup_policy {} is not one of delete, compact, compact,delete",
                quoted(&s.cleanup_policy)
            )));
        }
        if !(0.0..=1.0).contains(&s.min_cleanable_dirty_ratio) {
            return Err(Error::InvalidArgument(format!(
                "min_cleanable_dirty_ratio must be within 0..=1, got {}",
                s.min_cleanable_dirty_ratio
            )));
        }
        unset_or_positive("max_compaction_lag_ms", s.max_compaction_lag_ms, "no limit")?;
        if s.compression != COMPRESSION_PRODUCER && s.compression.parse::<Compression>().is_err() {
            return Err(Error::InvalidArgument(format!(
                "compression {:?} is not one of producer, none, lz4, zstd",
                s.compression
            )));
        }
        unset_or_positive("retention_ms", s.retention_ms, "forever")?;
        unset_or_positive("retention_bytes", s.retention_bytes, "no limit")?;
        if !(SEGMENT_BYTES_MIN..=SEGMENT_BYTES_MAX).contains(&s.segment_bytes) {
            return Err(Error::InvalidArgument(format!(
                "segment_bytes {} is outside {SEGMENT_BYTES_MIN}..={SEGMENT_BYTES_MAX}",
                s.segment_bytes
            )));
        }
        Ok(s)
    }

    /// The codec every batch of the topic is stored in, if the topic forces one.
    pub(crate) fn forced_compression(&self) -> Option<Compression> {
        self.compression.parse().ok()
    }

    /// Whether the topic keeps the last record of each key.
    pub(crate) fn compacted(&self) -> bool {
        self.cleanup_policy.starts_with("compact")
    }

    /// Whether retention deletes the topic's old segments.
    fn deletes(&self) -> bool {
        self.cleanup_policy.ends_with("delete")
    }

    /// What one compaction pass of a partition may do.
    pub(crate) fn compaction_config(&self) -> fjord_storage::CompactionConfig {
        fjord_storage::CompactionConfig {
            delete_retention_ms: self.delete_retention_ms,
            min_compaction_lag_ms: self.min_compaction_lag_ms,
            ..Default::default()
        }
    }

    /// The storage config of each partition of the topic: a topic that
    /// only compacts deletes nothing by age or size, as in Kafka.
    pub(crate) fn log_config(&self, flush: FlushPolicy) -> LogConfig {
        let deletes = self.deletes();
        LogConfig {
            segment_bytes: self.segment_bytes,
            segment_ms: self.segment_ms,
            retention_ms: u64::try_from(self.retention_ms).ok().filter(|_| deletes),
            retention_bytes: u64::try_from(self.retention_bytes).ok().filter(|_| deletes),
            flush,
            ..LogConfig::default()
        }
    }

    pub(crate) fn to_pb(&self) -> pb::TopicConfig {
        pb::TopicConfig {
            retention_ms: Some(self.retention_ms),
            retention_bytes: Some(self.retention_bytes),
            segment_bytes: Some(self.segment_bytes),
            segment_ms: Some(self.segment_ms as i64),
            compression: Some(self.compression.clone()),
            cleanup_policy: Some(self.cleanup_policy.clone()),
            delete_retention_ms: Some(self.delete_retention_ms as i64),
            min_cleanable_dirty_ratio: Some(self.min_cleanable_dirty_ratio),
            min_compaction_lag_ms: Some(self.min_compaction_lag_ms as i64),
            max_compaction_lag_ms: Some(self.max_compaction_lag_ms),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names_follow_kafka_rules() {
        for ok in ["a", "orders", "Orders.v2_x-1", &"x".repeat(249)] {
            validate_topic_name(ok).unwrap();
        }
        for bad in ["", ".", "..", "a b", "a/b", "é", &"x".repeat(250)] {
            let err = validate_topic_name(bad).unwrap_err();
            assert!(matches!(err, Error::InvalidArgument(_)), "{bad:?}: {err}");
        }
    }

    #[test]
    fn settings_are_validated_and_defaulted() {
        let s = TopicSettings::from_request(None).unwrap();
        assert_eq!(
            (s.retention_ms, s.retention_bytes, s.segment_bytes),
            (RETENTION_MS_DEFAULT, -1, SEGMENT_BYTES_DEFAULT)
        );
        for bad in [
            pb::TopicConfig { segment_bytes: Some(10), ..Default::default() },
            pb::TopicConfig { retention_ms: Some(-5), ..Default::default() },
            pb::TopicConfig { retention_bytes: Some(0), ..Default::default() },
            pb::TopicConfig { segment_ms: Some(0), ..Default::default() },
            pb::TopicConfig { cleanup_policy: Some("compacted".into()), ..Default::default() },
            pb::TopicConfig { min_cleanable_dirty_ratio: Some(1.5), ..Default::default() },
            pb::TopicConfig { max_compaction_lag_ms: Some(0), ..Default::default() },
        ] {
            assert!(TopicSettings::from_request(Some(&bad)).is_err(), "{bad:?}");
        }
    }
}
