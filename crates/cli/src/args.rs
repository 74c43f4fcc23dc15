//! Command-line flags, parsed with clap's derive API. Flags of the
//! `broker` command live with their mapping in [`crate::cmd::broker`].

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::cmd::bench::BenchCommand;
use crate::cmd::broker::BrokerArgs;

/// Fjord: a partitioned, replicated commit log.
#[derive(Debug, Parser)]
#[command(name = "fjord", version, about, propagate_version = true)]
pub(crate) struct Cli {
    /// Bootstrap brokers, comma-separated host:port.
    #[arg(
        long,
        global = true,
        env = "FJORD_BROKER",
        default_value = "127.0.0.1:9092",
        value_name = "ADDR[,ADDR..]"
    )]
    pub(crate) broker: String,
    /// Log filter for stderr (error, warn, info, debug, trace, or a tracing
    /// directive). RUST_LOG, when set, takes precedence.
    #[arg(long, global = true, env = "FJORD_LOG_LEVEL", default_value = "info", value_parser = parse_log_level)]
    pub(crate) log_level: String,
    /// How log lines look on stderr: `text` for people, `json` (one object
    /// a line: timestamp, level, target, fields) for log shippers.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "FJORD_LOG_FORMAT")]
    pub(crate) log_format: LogFormat,
    /// Timeout of each request to a broker (humantime: 500ms, 30s, 2m).
    #[arg(long, global = true, default_value = "30s", value_parser = humantime::parse_duration)]
    pub(crate) timeout: Duration,
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run a broker until Ctrl-C or SIGTERM.
    Broker(BrokerArgs),
    /// Create, list, describe and delete topics.
    Topic {
        /// Output format.
        #[arg(long, global = true, value_enum, default_value_t = TableFormat::Table)]
        format: TableFormat,
        #[command(subcommand)]
        command: TopicCommand,
    },
    /// Inspect the cluster.
    Cluster {
        /// Output format.
        #[arg(long, global = true, value_enum, default_value_t = TableFormat::Table)]
        format: TableFormat,
        #[command(subcommand)]
        command: ClusterCommand,
    },
    /// Publish records to a topic: one per stdin line, or one given with --value.
    Publish(PublishArgs),
    /// Print records of a topic.
    Tail(TailArgs),
    /// List, describe, reset and delete consumer groups.
    Group {
        /// Output format.
        #[arg(long, global = true, value_enum, default_value_t = TableFormat::Table)]
        format: TableFormat,
        #[command(subcommand)]
        command: GroupCommand,
    },
    /// Measure throughput and latency of a running cluster.
    Bench {
        #[command(subcommand)]
        command: BenchCommand,
    },
}

/// Human tables or JSON for scripts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum TableFormat {
    /// Aligned columns.
    Table,
    /// One JSON document.
    Json,
}

/// `fjord topic ...`
#[derive(Debug, Subcommand)]
pub(crate) enum TopicCommand {
    /// Create a topic.
    Create(CreateTopicArgs),
    /// List topics.
    List,
    /// Show a topic's settings and partitions.
    ///
    /// Offsets can skip: every new leader (after an election or a restart)
    /// writes a control record that takes one offset and is never read, so
    /// HIGH-WATERMARK - LOG-START may exceed the number of records.
    Describe {
        /// Topic name.
        name: String,
    },
    /// Delete a topic and all its records.
    Delete {
        /// Topic name.
        name: String,
    },
    /// Change a topic's settings on every replica, without a restart.
    Alter(AlterTopicArgs),
    /// Re-read every closed segment of every replica of a topic now,
    /// checking each batch's CRC, offsets and index, and repair damage from
    /// another replica. Exits non-zero if damage remains unrepaired.
    Scrub {
        /// Topic name.
        name: String,
    },
}

/// `fjord topic create`
#[derive(Debug, Args)]
pub(crate) struct CreateTopicArgs {
    /// Topic name: [a-zA-Z0-9._-], 1 to 249 characters.
    pub(crate) name: String,
    /// Number of partitions.
    #[arg(long, short = 'p')]
    pub(crate) partitions: u32,
    /// Replicas per partition (default: the broker's).
    #[arg(long, short = 'r')]
    pub(crate) replication_factor: Option<u32>,
    #[command(flatten)]
    pub(crate) settings: TopicSettingsArgs,
}

/// `fjord topic alter`
#[derive(Debug, Args)]
pub(crate) struct AlterTopicArgs {
    /// Topic name.
    pub(crate) name: String,
    #[command(flatten)]
    pub(crate) settings: TopicSettingsArgs,
    /// Raise the partition count to this (never lowered: partitions are
    /// only added). Keyed records may map to other partitions afterwards.
    #[arg(long, short = 'p')]
    pub(crate) partitions: Option<u32>,
}

/// Per-topic settings, as `topic create` sets and `topic alter` changes them.
#[derive(Debug, Args)]
pub(crate) struct TopicSettingsArgs {
    /// Delete closed segments older than this many ms; -1 keeps forever.
    #[arg(long, allow_negative_numbers = true)]
    pub(crate) retention_ms: Option<i64>,
    /// Delete the oldest segments while a partition exceeds this many bytes; -1 for no limit.
    #[arg(long, allow_negative_numbers = true)]
    pub(crate) retention_bytes: Option<i64>,
    /// Roll the active segment at this many bytes.
    #[arg(long)]
    pub(crate) segment_bytes: Option<u64>,
    /// Roll the active segment when its first record is older than this many ms.
    #[arg(long)]
    pub(crate) segment_ms: Option<i64>,
    /// Codec the topic stores every batch in: producer (as sent, the
    /// default), none, lz4 or zstd (the broker recompresses the rest).
    #[arg(long)]
    pub(crate) compression: Option<String>,
    /// delete (retention, the default), compact (keep the last record of
    /// each key; records need a key) or compact,delete.
    #[arg(long)]
    pub(crate) cleanup_policy: Option<String>,
    /// On a compacted topic, ms a tombstone that is last of its key is kept (default a day).
    #[arg(long)]
    pub(crate) delete_retention_ms: Option<i64>,
    /// Compact a partition once this share (0 to 1) of its closed bytes is new since its last compaction.
    #[arg(long)]
    pub(crate) min_cleanable_dirty_ratio: Option<f64>,
    /// Never compact records younger than this many ms.
    #[arg(long)]
    pub(crate) min_compaction_lag_ms: Option<i64>,
    /// Compact a partition whose oldest uncompacted record is older than this many ms; -1 for no limit.
    #[arg(long, allow_negative_numbers = true)]
    pub(crate) max_compaction_lag_ms: Option<i64>,
}

/// `fjord group ...`
#[derive(Debug, Subcommand)]
pub(crate) enum GroupCommand {
    /// List every consumer group of the cluster.
    List,
    /// Show a group's members, and per partition its committed offset, end and lag.
    Describe {
        /// Group id.
        group: String,
    },
    /// Move a group's committed offsets of a topic (the group must have no active members).
    ResetOffsets(ResetOffsetsArgs),
    /// Delete a group and its committed offsets (it must have no active members).
    Delete {
        /// Group id.
        group: String,
    },
}

/// `fjord group reset-offsets`
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("to").required(true)))]
pub(crate) struct ResetOffsetsArgs {
    /// Group id.
    pub(crate) group: String,
    /// Topic whose partitions' offsets move.
    #[arg(long)]
    pub(crate) topic: String,
    /// To the start of each partition.
    #[arg(long, group = "to")]
    pub(crate) to_earliest: bool,
    /// To the end of each partition (skip everything so far).
    #[arg(long, group = "to")]
    pub(crate) to_latest: bool,
    /// To this offset in every partition (clamped to each log).
    #[arg(long, group = "to", value_name = "N")]
    pub(crate) to_offset: Option<u64>,
    /// To the first record at or after TIME: RFC 3339 or a duration ago (10m), as tail's --since.
    #[arg(long, group = "to", value_name = "TIME", value_parser = parse_since)]
    pub(crate) to_time: Option<i64>,
}

/// `fjord cluster ...`
#[derive(Debug, Subcommand)]
pub(crate) enum ClusterCommand {
    /// List the brokers and the controller.
    Describe,
}

/// Acknowledgement level of `publish`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum AcksArg {
    /// A quorum of replicas holds the batch durably.
    All,
    /// The leader has appended it.
    Leader,
}

/// `fjord publish`
#[derive(Debug, Args)]
pub(crate) struct PublishArgs {
    /// Topic to publish to.
    pub(crate) topic: String,
    /// Publish this one value instead of reading stdin.
    #[arg(long, conflicts_with = "key_separator")]
    pub(crate) value: Option<String>,
    /// Key of every record.
    #[arg(long, conflicts_with = "key_separator")]
    pub(crate) key: Option<String>,
    /// Split each line at the first SEP into key and value; a line without SEP is an error.
    #[arg(long, value_name = "SEP", value_parser = clap::builder::NonEmptyStringValueParser::new())]
    pub(crate) key_separator: Option<String>,
    /// A header k=v added to every record; repeatable.
    #[arg(long = "header", value_name = "K=V", value_parser = parse_header)]
    pub(crate) headers: Vec<(String, String)>,
    /// Partition to write to (default: by key hash, or sticky for keyless records).
    #[arg(long)]
    pub(crate) partition: Option<u32>,
    /// When the broker acknowledges.
    #[arg(long, value_enum, default_value_t = AcksArg::All)]
    pub(crate) acks: AcksArg,
    /// How long a batch waits for more records, in ms.
    #[arg(long, default_value_t = 5)]
    pub(crate) linger_ms: u64,
    /// Batch size limit in bytes; also the largest record accepted.
    #[arg(long, default_value_t = fjord_client::BATCH_BYTES_DEFAULT)]
    pub(crate) batch_bytes: usize,
    /// Compress batches: none, lz4 or zstd (consumers decompress).
    #[arg(long, default_value = "none")]
    pub(crate) compression: fjord_client::Compression,
    /// Send without a producer id and sequence numbers: a retried batch may
    /// then be stored twice (at least once). By default a retry is stored once.
    #[arg(long)]
    pub(crate) no_idempotence: bool,
}

/// Output format of `tail`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum RecordFormat {
    /// Each value as raw bytes followed by a newline.
    Text,
    /// One JSON object per line: partition, offset, timestamp, key, headers,
    /// value. Keys and values that are not UTF-8 appear base64-encoded as
    /// "key_base64" / "value_base64" instead.
    Json,
}

/// `fjord tail`
#[derive(Debug, Args)]
#[command(after_help = "Without a position flag, tail starts at the end and follows, like \
kafka-console-consumer. With one, it prints what exists up to the high watermark seen at start \
and exits, unless --follow is given.\n\nJSON lines look like \
{\"partition\":0,\"offset\":7,\"timestamp\":1700000000000,\"key\":\"k\"|null,\"headers\":{\"h\":\"v\"},\"value\":\"v\"}; \
a key or value that is not valid UTF-8 is emitted as \"key_base64\" / \"value_base64\" instead.")]
pub(crate) struct TailArgs {
    /// Topic to read.
    pub(crate) topic: String,
    /// Read only this partition (default: all).
    #[arg(long)]
    pub(crate) partition: Option<u32>,
    /// Start at the beginning of each partition.
    #[arg(long, group = "position")]
    pub(crate) from_beginning: bool,
    /// Start at this offset (in every selected partition).
    #[arg(long, group = "position")]
    pub(crate) offset: Option<u64>,
    /// Start at the first record at or after TIME: RFC 3339 (2024-05-01T12:00:00Z) or a duration ago (10m).
    #[arg(long, group = "position", value_name = "TIME", value_parser = parse_since)]
    pub(crate) since: Option<i64>,
    /// Start N records before the end of each partition (records, not
    /// offsets: control records are not counted).
    #[arg(long, group = "position", value_name = "N")]
    pub(crate) last: Option<u64>,
    /// Keep waiting for new records (the default when no position flag is given).
    #[arg(long)]
    pub(crate) follow: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t = RecordFormat::Text)]
    pub(crate) format: RecordFormat,
    /// Stop after N records.
    #[arg(long, value_name = "N")]
    pub(crate) limit: Option<u64>,
    /// Consume as a member of this consumer group: read the partitions the
    /// group assigns, from its committed offsets, committing as it goes.
    /// Follows until --limit or Ctrl-C/SIGTERM (then commits and leaves);
    /// --from-beginning starts partitions without a committed offset at
    /// their beginning instead of their end.
    #[arg(long, value_name = "GROUP", conflicts_with_all = ["partition", "offset", "since", "last"])]
    pub(crate) group: Option<String>,
    /// With --group: the member is removed if the coordinator does not hear from it for this long.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = humantime::parse_duration, requires = "group")]
    pub(crate) session_timeout: Duration,
    /// With --group: commit the position of printed records this often.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = humantime::parse_duration, requires = "group")]
    pub(crate) commit_interval: Duration,
    /// With --group: the group's partition assignor (range, round-robin, sticky).
    #[arg(long, default_value = "", hide_default_value = true, requires = "group")]
    pub(crate) assignor: String,
}

/// `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

fn parse_log_level(s: &str) -> Result<String, String> {
    tracing_subscriber::EnvFilter::try_new(s).map(|_| s.to_string()).map_err(|e| e.to_string())
}

fn parse_header(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some(("", _)) => Err("header key is empty".into()),
        Some((k, v)) => Ok((k.to_string(), v.to_string())),
        None => Err(format!("expected K=V, got {s:?}")),
    }
}

/// RFC 3339 time, or a humantime duration meaning that long ago; in ms since the epoch.
fn parse_since(s: &str) -> Result<i64, String> {
    let time = match humantime::parse_rfc3339_weak(s) {
        Ok(t) => t,
        Err(_) => {
            let ago = humantime::parse_duration(s)
                .map_err(|_| format!("{s:?} is neither an RFC 3339 time nor a duration like 10m"))?;
            SystemTime::now().checked_sub(ago).ok_or_else(|| format!("{s:?} reaches before 1970"))?
        }
    };
    let ms = time.duration_since(UNIX_EPOCH).map_err(|_| format!("{s:?} is before 1970"))?.as_millis();
    i64::try_from(ms).map_err(|_| format!("{s:?} is too far in the future"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn headers_and_times() {
        assert_eq!(parse_header("a=b=c").unwrap(), ("a".into(), "b=c".into()));
        assert_eq!(parse_header("a=").unwrap(), ("a".into(), "".into()));
        assert!(parse_header("ab").is_err());
        assert!(parse_header("=b").is_err());
        assert_eq!(parse_since("2024-05-01T12:00:00Z").unwrap(), 1_714_564_800_000);
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64;
        let ten_min_ago = parse_since("10m").unwrap();
        assert!((now - 600_000 - ten_min_ago).abs() < 5_000);
        assert!(parse_since("yesterday").is_err());
    }

    #[test]
    fn tail_position_flags_exclude_each_other() {
        assert!(Cli::try_parse_from(["fjord", "tail", "t", "--from-beginning", "--last", "3"]).is_err());
        let cli = Cli::try_parse_from(["fjord", "tail", "t", "--last", "3", "--format", "json"]).unwrap();
        match cli.command {
            Command::Tail(t) => {
                assert_eq!((t.last, t.format, t.follow), (Some(3), RecordFormat::Json, false))
            }
            other => panic!("parsed {other:?}"),
        }
        let cli = Cli::try_parse_from(["fjord", "topic", "create", "t", "-p", "3", "--retention-ms", "-1"])
            .unwrap();
        match cli.command {
            Command::Topic { command: TopicCommand::Create(c), .. } => {
                assert_eq!((c.partitions, c.settings.retention_ms), (3, Some(-1)))
            }
            other => panic!("parsed {other:?}"),
        }
    }
}
