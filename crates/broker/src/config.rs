//! Broker settings and the limits it enforces.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use fjord_codec::format::BATCH_LEN_MAX;
use fjord_storage::FlushPolicy;

/// Default client port, as Kafka's.
pub const LISTEN_DEFAULT: &str = "127.0.0.1:9092";
/// Default address of the Prometheus metrics endpoint (Redpanda's port;
/// loopback, so that nothing is exposed until an operator says so).
pub const METRICS_LISTEN_DEFAULT: &str = "127.0.0.1:9644";
/// Default data directory, relative to the working directory.
pub const DATA_DIR_DEFAULT: &str = "fjord-data";

/// Largest gRPC message the broker decodes: one maximal batch plus room
/// for the request's other fields. Larger requests are refused by tonic
/// with RESOURCE_EXHAUSTED before they are buffered whole.
pub const REQUEST_BYTES_MAX: usize = BATCH_LEN_MAX + 1024 * 1024;
/// Default largest batch a producer may send (Kafka's `message.max.bytes` is 1 MiB;
/// 8 MiB leaves room for large batches of small records).
pub const BATCH_BYTES_MAX_DEFAULT: usize = 8 * 1024 * 1024;
/// Largest fetch response, whatever the client asks: bounds the memory one fetch pins.
pub const FETCH_BYTES_MAX: u32 = 16 * 1024 * 1024;
/// Fetch size when the client gives none.
pub const FETCH_BYTES_DEFAULT: u32 = 1024 * 1024;
/// Longest a fetch may long-poll.
pub const FETCH_WAIT_MS_MAX: u32 = 30_000;
/// Longest a produce may wait for durability when the client gives no timeout.
pub const PRODUCE_TIMEOUT_MS_DEFAULT: u32 = 30_000;
/// Longest produce timeout a client may ask for.
pub const PRODUCE_TIMEOUT_MS_MAX: u32 = 300_000;
/// Most partitions in one produce request.
pub const PRODUCE_PARTITIONS_MAX: usize = 4096;
/// Most partitions a topic may have.
pub const PARTITIONS_MAX: u32 = 4096;
/// Most topics a broker holds.
pub const TOPICS_MAX: usize = 10_000;
/// Longest topic name, as Kafka.
pub const TOPIC_NAME_LEN_MAX: usize = 249;
/// Concurrent client connections; further ones are closed at accept.
pub const CONNECTIONS_MAX_DEFAULT: usize = 1024;
/// Share of `connections_max` one source address may hold when
/// `connections_per_source_max` is not given: a quarter, so it takes four
/// greedy hosts, not one, to fill the broker.
pub const CONNECTIONS_PER_SOURCE_DIVISOR: usize = 4;
/// How long a connection with no request in flight and nothing received
/// stays open: 10 minutes, Kafka's `connections.max.idle.ms`. A live
/// client reconnects on its next call; a leaked or hostile one stops
/// holding a slot.
pub const IDLE_CONNECTION_TIMEOUT_DEFAULT: Duration = Duration::from_secs(600);
/// Requests in flight on one connection (HTTP/2 streams served at once).
pub const IN_FLIGHT_PER_CONNECTION_MAX: usize = 256;
/// Responses a `Subscribe` stream buffers before it waits for the client.
pub const SUBSCRIBE_BUFFER: usize = 4;
/// How often retention and interval flushes run.
pub const MAINTENANCE_INTERVAL: Duration = Duration::from_secs(5);

/// Settings of one broker. Each field gives its default.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// Directory holding topic metadata and partition logs. Default `fjord-data`.
    pub data_dir: PathBuf,
    /// Address the gRPC server binds. Default `127.0.0.1:9092`; port 0 picks a free one.
    pub listen: SocketAddr,
    /// This broker's id. Default 1.
    pub broker_id: u64,
    /// When appended data is fsynced. Default: before acknowledging.
    pub flush: FlushPolicy,
    /// Largest batch accepted. Default 8 MiB, at most 64 MiB.
    pub batch_bytes_max: usize,
    /// Concurrent client connections. Default 1024.
    pub connections_max: usize,
    /// Concurrent connections from one IP address (the other brokers'
    /// addresses are exempt). Default `None`: `connections_max` /
    /// [`CONNECTIONS_PER_SOURCE_DIVISOR`] (at least 1).
    pub connections_per_source_max: Option<usize>,
    /// Close a connection after this long with no request in flight and
    /// nothing received. Default [`IDLE_CONNECTION_TIMEOUT_DEFAULT`] (10 min).
    pub idle_connection_timeout: Duration,
    /// Default partition count when a create request gives 0. Default 1.
    pub default_partitions: u32,
    /// Default replication factor when a create request gives 0 (capped at
    /// the cluster size). Default 3.
    pub default_replication_factor: u32,
    /// Every broker of the cluster: id → client address, the same on every
    /// broker. Empty means a cluster of one (this broker at its listen address).
    pub peers: std::collections::BTreeMap<u64, String>,
    /// Accept fault-injection requests (tests only). Default off.
    pub fault_injection: bool,
    /// How often retention runs. Default 5 s.
    pub maintenance_interval: Duration,
    /// Free bytes the data directory's filesystem must keep; below it
    /// produce is refused. Default (`None`): the smaller of 1 GiB and 5%
    /// of the volume.
    pub min_free_bytes: Option<u64>,
    /// Address of the HTTP endpoint serving Prometheus metrics at
    /// `/metrics`; `None` serves none. Default `127.0.0.1:9644`; port 0
    /// picks a free one (printed on stdout after the listening line).
    pub metrics_listen: Option<SocketAddr>,
    /// How often a background scrub re-reads every closed segment of this
    /// broker's replicas (CRC, offsets, index) and repairs damage from a
    /// peer; `None` runs none (`fjord topic scrub` still works). Default
    /// [`SCRUB_INTERVAL_DEFAULT`].
    pub scrub_interval: Option<Duration>,
    /// Read rate of background scrubs, bytes per second; 0 for no limit.
    /// Default [`SCRUB_BYTES_PER_SEC_DEFAULT`].
    pub scrub_bytes_per_sec: u64,
    /// Segment size of the compacted `__consumer_offsets` topic, set when
    /// it is created (or first compacted): only closed segments are
    /// compacted, so this bounds what a coordinator replays beyond the
    /// live state. Default [`OFFSETS_SEGMENT_BYTES_DEFAULT`].
    pub offsets_segment_bytes: u64,
    /// Told how long each log fsync took. The server sets it to feed its
    /// fsync histogram; default none.
    pub fsync_observer: fjord_storage::FsyncObserver,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            data_dir: PathBuf::from(DATA_DIR_DEFAULT),
            listen: LISTEN_DEFAULT.parse().expect("valid default address"),
            broker_id: 1,
            flush: FlushPolicy::Always,
            batch_bytes_max: BATCH_BYTES_MAX_DEFAULT,
            connections_max: CONNECTIONS_MAX_DEFAULT,
            connections_per_source_max: None,
            idle_connection_timeout: IDLE_CONNECTION_TIMEOUT_DEFAULT,
            default_partitions: 1,
            default_replication_factor: 3,
            peers: std::collections::BTreeMap::new(),
            fault_injection: false,
            maintenance_interval: MAINTENANCE_INTERVAL,
            min_free_bytes: None,
            metrics_listen: Some(METRICS_LISTEN_DEFAULT.parse().expect("valid default address")),
            fsync_observer: fjord_storage::FsyncObserver::default(),
            scrub_interval: Some(SCRUB_INTERVAL_DEFAULT),
            scrub_bytes_per_sec: SCRUB_BYTES_PER_SEC_DEFAULT,
            offsets_segment_bytes: OFFSETS_SEGMENT_BYTES_DEFAULT,
        }
    }
}

impl BrokerConfig {
    /// The per-source connection limit in force.
    pub fn connections_per_source(&self) -> usize {
        self.connections_per_source_max
            .unwrap_or((self.connections_max / CONNECTIONS_PER_SOURCE_DIVISOR).max(1))
    }

    /// Checks every field against its range.
    ///
    /// # Errors
    /// A message naming the field and its limit.
    pub fn validate(&self) -> Result<(), String> {
        if self.broker_id == 0 {
            return Err("broker id must be at least 1 (0 means \"none\" on the wire)".into());
        }
        if self.batch_bytes_max == 0 || self.batch_bytes_max > BATCH_LEN_MAX {
            return Err(format!("batch_bytes_max {} is outside 1..={BATCH_LEN_MAX}", self.batch_bytes_max));
        }
        if self.connections_max == 0 {
            return Err("connections_max must be at least 1".into());
        }
        if let Some(n) = self.connections_per_source_max {
            if n == 0 || n > self.connections_max {
                return Err(format!(
                    "connections_per_source_max {n} is outside 1..=connections_max ({})",
                    self.connections_max
                ));
            }
        }
        if self.idle_connection_timeout < Duration::from_secs(1) {
            return Err("idle_connection_timeout must be at least 1 s".into());
        }
        if self.default_partitions == 0 || self.default_partitions > PARTITIONS_MAX {
            return Err(format!(
                "default_partitions {} is outside 1..={PARTITIONS_MAX}",
                self.default_partitions
            ));
        }
        if !self.peers.is_empty() && !self.peers.contains_key(&self.broker_id) {
            return Err(format!("the peers list does not include this broker's id {}", self.broker_id));
        }
        if self.peers.contains_key(&0) {
            return Err("broker ids start at 1".into());
        }
        let segment = fjord_storage::SEGMENT_BYTES_MIN..=fjord_storage::SEGMENT_BYTES_MAX;
        if !segment.contains(&self.offsets_segment_bytes) {
            return Err(format!(
                "offsets_segment_bytes {} is outside {}..={}",
                self.offsets_segment_bytes,
                segment.start(),
                segment.end()
            ));
        }
        if let FlushPolicy::IntervalMs(0) = self.flush {
            return Err("a flush interval must be at least 1 ms".into());
        }
        Ok(())
    }
}

/// Default segment size of `__consumer_offsets`: 100 MiB, Kafka's
/// `offsets.topic.segment.bytes`, small beside the 1 GiB of other topics
/// so that commits are compacted while still few.
pub const OFFSETS_SEGMENT_BYTES_DEFAULT: u64 = 100 * 1024 * 1024;

/// Default time between background scrub passes: a day, so a 1 TB broker
/// at the default rate spends about a third of it scrubbing.
pub const SCRUB_INTERVAL_DEFAULT: Duration = Duration::from_secs(24 * 3600);
/// Default read rate of background scrubs: 32 MiB/s, a small share of a
/// disk's bandwidth.
pub const SCRUB_BYTES_PER_SEC_DEFAULT: u64 = 32 * 1024 * 1024;
