//! The broker's state: its topics and their partitions, topic creation and
//! deletion, and the background upkeep of every partition.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use fjord_proto::pb;

use crate::config::{BrokerConfig, PARTITIONS_MAX, TOPICS_MAX};
use crate::partition::Partition;
use crate::topics::{load_topics, store_topics, validate_topic_name, TopicMeta, TopicSettings};
use crate::{Error, Result};

/// Directory under the data directory that holds partition logs.
const TOPICS_DIR: &str = "topics";

/// A topic and its partitions on this broker.
#[derive(Debug)]
pub(crate) struct Topic {
    pub(crate) meta: TopicMeta,
    pub(crate) partitions: Vec<Arc<Partition>>,
}

/// The state shared by every service.
#[derive(Debug)]
pub(crate) struct Broker {
    pub(crate) config: BrokerConfig,
    /// Address clients reach this broker at.
    pub(crate) advertised: String,
    topics: RwLock<BTreeMap<String, Arc<Topic>>>,
    /// Serializes creations and deletions and the metadata file they write.
    admin: tokio::sync::Mutex<()>,
}

/// Wall-clock milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

impl Broker {
    /// Opens the broker's data directory: loads topic metadata, opens
    /// (recovering) every partition log, and removes partition directories
    /// that no topic owns (left by a crash during create or delete).
    /// Blocking: run it on a blocking thread.
    pub(crate) fn open(config: BrokerConfig, advertised: String) -> Result<Broker> {
        let root = config.data_dir.join(TOPICS_DIR);
        std::fs::create_dir_all(&root)
            .map_err(|e| Error::Metadata { path: root.clone(), reason: e.to_string() })?;
        let metas = load_topics(&config.data_dir)?;
        let mut topics = BTreeMap::new();
        for meta in metas {
            let topic = open_topic(&config, meta)?;
            topics.insert(topic.meta.name.clone(), Arc::new(topic));
        }
        for entry in std::fs::read_dir(&root)
            .map_err(|e| Error::Metadata { path: root.clone(), reason: e.to_string() })?
        {
            let Ok(entry) = entry else { continue };
            let name = entry.file_name().to_string_lossy().into_owned();
            if !topics.contains_key(&name) {
                tracing::warn!(dir = %entry.path().display(), "removing partition data of a topic that does not exist");
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
        tracing::info!(topics = topics.len(), "opened data directory");
        Ok(Broker { config, advertised, topics: RwLock::new(topics), admin: tokio::sync::Mutex::new(()) })
    }

    pub(crate) fn topic(&self, name: &str) -> Result<Arc<Topic>> {
        self.topics
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
            .ok_or_else(|| Error::UnknownTopic(name.to_owned()))
    }

    pub(crate) fn partition(&self, topic: &str, partition: u32) -> Result<Arc<Partition>> {
        let t = self.topic(topic)?;
        t.partitions.get(partition as usize).cloned().ok_or_else(|| Error::UnknownPartition {
            topic: topic.to_owned(),
            partition,
            count: t.meta.partitions,
        })
    }

    pub(crate) fn topics(&self) -> Vec<Arc<Topic>> {
        self.topics.read().unwrap_or_else(|p| p.into_inner()).values().cloned().collect()
    }

    /// Creates a topic: validates the request, creates and opens its
    /// partition logs, then persists the metadata (the topic exists from
    /// that moment on).
    pub(crate) async fn create_topic(&self, req: pb::CreateTopicRequest) -> Result<Arc<Topic>> {
        validate_topic_name(&req.name)?;
        let partitions = match req.partitions {
            0 => self.config.default_partitions,
            n if n > PARTITIONS_MAX => {
                return Err(Error::InvalidArgument(format!(
                    "partitions {n} exceeds the limit of {PARTITIONS_MAX}"
                )))
            }
            n => n,
        };
        let replication_factor = req.replication_factor.max(1);
        if replication_factor > 1 {
            return Err(Error::InvalidArgument(format!(
                "replication factor {replication_factor} exceeds the 1 broker in this cluster"
            )));
        }
        let settings = TopicSettings::from_request(req.config.as_ref())?;
        let _admin = self.admin.lock().await;
        if self.topic(&req.name).is_ok() {
            return Err(Error::TopicAlreadyExists(req.name));
        }
        if self.topics().len() >= TOPICS_MAX {
            return Err(Error::InvalidArgument(format!(
                "the broker already holds the limit of {TOPICS_MAX} topics"
            )));
        }
        let meta = TopicMeta { name: req.name.clone(), partitions, replication_factor, settings };
        let config = self.config.clone();
        let mut all: Vec<TopicMeta> = self.topics().iter().map(|t| t.meta.clone()).collect();
        all.push(meta.clone());
        let topic = blocking(move || {
            let topic = open_topic(&config, meta)?;
            store_topics(&config.data_dir, &all)?;
            Ok(topic)
        })
        .await?;
        let topic = Arc::new(topic);
        self.topics.write().unwrap_or_else(|p| p.into_inner()).insert(req.name.clone(), topic.clone());
        tracing::info!(topic = %req.name, partitions, "created topic");
        Ok(topic)
    }

    /// Deletes a topic: persists the metadata without it, forgets it (so
    /// waiting consumers are woken and told), then removes its files.
    pub(crate) async fn delete_topic(&self, name: &str) -> Result<()> {
        validate_topic_name(name)?;
        let _admin = self.admin.lock().await;
        self.topic(name)?;
        let rest: Vec<TopicMeta> =
            self.topics().iter().filter(|t| t.meta.name != name).map(|t| t.meta.clone()).collect();
        let config = self.config.clone();
        blocking(move || store_topics(&config.data_dir, &rest)).await?;
        if let Some(t) = self.topics.write().unwrap_or_else(|p| p.into_inner()).remove(name) {
            t.partitions.iter().for_each(|p| p.close());
        }
        let dir = self.topic_dir(name);
        blocking(move || {
            std::fs::remove_dir_all(&dir).map_err(|e| Error::Metadata { path: dir, reason: e.to_string() })
        })
        .await?;
        tracing::info!(topic = %name, "deleted topic");
        Ok(())
    }

    fn topic_dir(&self, name: &str) -> PathBuf {
        self.config.data_dir.join(TOPICS_DIR).join(name)
    }

    /// Runs retention and interval flushes on every partition once, logging
    /// what was deleted.
    pub(crate) async fn maintain(&self) {
        let partitions: Vec<Arc<Partition>> =
            self.topics().iter().flat_map(|t| t.partitions.clone()).collect();
        let result = blocking(move || {
            for p in partitions {
                match p.maintain(now_ms()) {
                    Ok(deleted) => {
                        for d in deleted {
                            tracing::info!(
                                topic = %p.topic,
                                partition = p.id,
                                base_offset = d.base_offset,
                                next_offset = d.next_offset,
                                bytes = d.size,
                                "retention deleted a segment"
                            );
                        }
                    }
                    Err(e) => {
                        tracing::error!(topic = %p.topic, partition = p.id, error = %e, "maintenance failed")
                    }
                }
            }
            Ok(())
        })
        .await;
        if let Err(e) = result {
            tracing::error!(error = %e, "maintenance failed");
        }
    }

    /// Flushes every partition, for a graceful shutdown.
    pub(crate) async fn flush_all(&self) {
        let partitions: Vec<Arc<Partition>> =
            self.topics().iter().flat_map(|t| t.partitions.clone()).collect();
        let _ = blocking(move || {
            for p in partitions {
                if let Err(e) = p.log.flush() {
                    tracing::error!(topic = %p.topic, partition = p.id, error = %e, "flush at shutdown failed");
                }
            }
            Ok(())
        })
        .await;
    }
}

fn open_topic(config: &BrokerConfig, meta: TopicMeta) -> Result<Topic> {
    let log_config = meta.settings.log_config(config.flush);
    let partitions = (0..meta.partitions)
        .map(|p| {
            let dir = config.data_dir.join(TOPICS_DIR).join(&meta.name).join(p.to_string());
            Partition::open(&dir, &meta.name, p, log_config.clone()).map(Arc::new)
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Topic { meta, partitions })
}

/// Runs blocking file work off the async threads.
pub(crate) async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Unavailable(format!("worker thread failed: {e}")))?
}
