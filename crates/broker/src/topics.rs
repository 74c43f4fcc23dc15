//! Topic metadata: names, settings, and the file that persists them.
//!
//! # Crash protocol
//! `topics.json` is replaced whole: written to `topics.json.tmp`, fsynced,
//! renamed, directory fsynced. A topic exists once its entry is in the
//! file; partition directories without an entry (a crash during create or
//! delete) are removed at start-up. (Issue: replicated metadata will move
//! this into the metadata Raft group.)

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use fjord_proto::pb;
use fjord_storage::{
    FlushPolicy, LogConfig, SEGMENT_BYTES_DEFAULT, SEGMENT_BYTES_MAX, SEGMENT_BYTES_MIN, SEGMENT_MS_DEFAULT,
};
use serde::{Deserialize, Serialize};

use crate::config::TOPIC_NAME_LEN_MAX;
use crate::{Error, Result};

/// Name of the metadata file in the data directory.
pub(crate) const TOPICS_FILE: &str = "topics.json";
/// Version of its layout.
const TOPICS_FILE_VERSION: u32 = 1;
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
        return Err(Error::InvalidArgument(format!("topic name {name:?} is not allowed")));
    }
    if let Some(c) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))) {
        return Err(Error::InvalidArgument(format!(
            "topic name {name:?} contains {c:?}; allowed are ASCII letters, digits, '.', '_' and '-'"
        )));
    }
    Ok(())
}

/// Per-topic settings with broker defaults filled in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct TopicSettings {
    /// ms; -1 keeps forever.
    pub(crate) retention_ms: i64,
    /// bytes per partition; -1 for no limit.
    pub(crate) retention_bytes: i64,
    pub(crate) segment_bytes: u64,
    /// ms.
    pub(crate) segment_ms: u64,
}

impl TopicSettings {
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
        };
        if s.retention_ms < -1 || s.retention_ms == 0 {
            return Err(Error::InvalidArgument(format!(
                "retention_ms must be -1 (forever) or at least 1, got {}",
                s.retention_ms
            )));
        }
        if s.retention_bytes < -1 || s.retention_bytes == 0 {
            return Err(Error::InvalidArgument(format!(
                "retention_bytes must be -1 (no limit) or at least 1, got {}",
                s.retention_bytes
            )));
        }
        if !(SEGMENT_BYTES_MIN..=SEGMENT_BYTES_MAX).contains(&s.segment_bytes) {
            return Err(Error::InvalidArgument(format!(
                "segment_bytes {} is outside {SEGMENT_BYTES_MIN}..={SEGMENT_BYTES_MAX}",
                s.segment_bytes
            )));
        }
        Ok(s)
    }

    /// The storage config of each partition of the topic.
    pub(crate) fn log_config(&self, flush: FlushPolicy) -> LogConfig {
        LogConfig {
            segment_bytes: self.segment_bytes,
            segment_ms: self.segment_ms,
            retention_ms: u64::try_from(self.retention_ms).ok(),
            retention_bytes: u64::try_from(self.retention_bytes).ok(),
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
        }
    }
}

/// One topic as persisted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct TopicMeta {
    pub(crate) name: String,
    pub(crate) partitions: u32,
    pub(crate) replication_factor: u32,
    pub(crate) settings: TopicSettings,
}

#[derive(Serialize, Deserialize)]
struct TopicsFile {
    version: u32,
    topics: Vec<TopicMeta>,
}

/// Reads the topics of the broker in `data_dir`; none if the file does not exist.
pub(crate) fn load_topics(data_dir: &Path) -> Result<Vec<TopicMeta>> {
    let path = data_dir.join(TOPICS_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(meta_err(&path, e)),
    };
    let file: TopicsFile = serde_json::from_slice(&bytes).map_err(|e| meta_err(&path, e))?;
    if file.version != TOPICS_FILE_VERSION {
        return Err(meta_err(&path, format!("unsupported version {}", file.version)));
    }
    for t in &file.topics {
        validate_topic_name(&t.name).map_err(|e| meta_err(&path, e))?;
    }
    Ok(file.topics)
}

/// Durably replaces the topics file (see the crash protocol).
pub(crate) fn store_topics(data_dir: &Path, topics: &[TopicMeta]) -> Result<()> {
    let path = data_dir.join(TOPICS_FILE);
    let tmp: PathBuf = data_dir.join(format!("{TOPICS_FILE}.tmp"));
    let body =
        serde_json::to_vec_pretty(&TopicsFile { version: TOPICS_FILE_VERSION, topics: topics.to_vec() })
            .map_err(|e| meta_err(&path, e))?;
    let write = || -> std::io::Result<()> {
        let mut f = File::create(&tmp)?;
        f.write_all(&body)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        File::open(data_dir)?.sync_all()
    };
    write().map_err(|e| meta_err(&path, e))
}

fn meta_err(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Metadata { path: path.to_owned(), reason: e.to_string() }
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
        ] {
            assert!(TopicSettings::from_request(Some(&bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn topics_file_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load_topics(dir.path()).unwrap().is_empty());
        let t = TopicMeta {
            name: "t".into(),
            partitions: 3,
            replication_factor: 1,
            settings: TopicSettings::from_request(None).unwrap(),
        };
        store_topics(dir.path(), std::slice::from_ref(&t)).unwrap();
        assert_eq!(load_topics(dir.path()).unwrap(), vec![t]);
        std::fs::write(dir.path().join(TOPICS_FILE), b"{not json").unwrap();
        assert!(matches!(load_topics(dir.path()), Err(Error::Metadata { .. })));
    }
}
