//! `fjord bench`: load generators that measure a running cluster the way an
//! application sees it, through `fjord-client`.
//!
//! * `produce`: P producer tasks send N records; throughput, and latency
//!   from each record's send (or, with `--rate`, its due time on a fixed
//!   schedule; see [`schedule`]) to its acknowledgement.
//! * `consume`: one consumer reads N records from the beginning of every
//!   partition; throughput.
//! * `e2e`: both at once; latency from each record's send (or due) time,
//!   stamped in its value (see [`payload`]), to its receipt.
//! * `commit`: N offset commits of one group; commits/s and latency.
//!
//! Results print as lines for people or, with `--json`, as one JSON object
//! ([`report`]). A progress bar goes to stderr only when that is a terminal.

mod commit;
mod consume;
mod e2e;
mod load;
mod payload;
mod produce;
mod records;
mod report;
mod schedule;

use std::io::IsTerminal;
use std::time::Duration;

use anyhow::{anyhow, Context};
use clap::{Args, Subcommand};
use fjord_client::{Client, TopicSettings};
use indicatif::{ProgressBar, ProgressStyle};

use crate::args::AcksArg;
use report::Summary;
use schedule::Schedule;

/// Largest `--record-size`: 64 MiB, the codec's batch limit, which a
/// record must fit in with its batch header anyway.
const RECORD_SIZE_MAX: u32 = 64 * 1024 * 1024;
/// Most `--search-steps` of `bench e2e --find-max-rate`: each halves the
/// interval, so 10 already pins the rate to 0.1%.
const SEARCH_STEPS_MAX: u32 = 10;
/// Most `--concurrency` of `bench commit`: callers in flight at once.
const COMMIT_CONCURRENCY_MAX: u32 = 1024;
/// Most `--producers`: each is a task with its own batches and buffer
/// (32 MiB by default), so more would mostly measure memory pressure.
const PRODUCERS_MAX: u32 = 256;

/// `fjord bench ...`
#[derive(Debug, Subcommand)]
pub(crate) enum BenchCommand {
    /// Send N records and report throughput and send-to-ack latency.
    Produce(LoadArgs),
    /// Read N records from the beginning of every partition and report throughput.
    Consume(ConsumeArgs),
    /// Produce and consume at once; latency runs from each record's send time
    /// (stamped in its value) to its receipt by the consumer.
    E2e(LoadArgs),
    /// Commit offsets of one group N times and report commits/s and latency.
    Commit(CommitArgs),
}

/// Flags of `bench commit`.
#[derive(Debug, Clone, Args)]
pub(crate) struct CommitArgs {
    /// Group to commit for; it must have no members (admin commits).
    #[arg(long)]
    pub(crate) group: String,
    /// Topic whose partitions are committed; it must exist, and commits
    /// cycle through the offsets below its high watermarks.
    #[arg(long)]
    pub(crate) topic: String,
    /// Commits to make.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) commits: u64,
    /// Partitions each commit names (partitions 0..N of the topic).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) partitions_per_commit: u32,
    /// Commits in flight at once.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=COMMIT_CONCURRENCY_MAX as i64))]
    pub(crate) concurrency: u32,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub(crate) json: bool,
}

/// Flags of `bench produce` and `bench e2e`.
#[derive(Debug, Clone, Args)]
pub(crate) struct LoadArgs {
    /// Topic to write; created with --partitions if missing.
    #[arg(long)]
    pub(crate) topic: String,
    /// Records to send, over all producers (each step's own with --find-max-rate).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..), required_unless_present = "find_max_rate")]
    pub(crate) records: Option<u64>,
    /// Bytes of each record's value (at least 16: the send time and index).
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u32).range(payload::STAMP_BYTES as i64..=RECORD_SIZE_MAX as i64))]
    pub(crate) record_size: u32,
    /// Send on a fixed schedule of this many records/s (over all producers);
    /// latency then counts from each record's due time, so stalls are not hidden.
    #[arg(long, value_parser = parse_rate)]
    pub(crate) rate: Option<f64>,
    /// Producer tasks, each with its own producer, sharing the records.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=PRODUCERS_MAX as i64))]
    pub(crate) producers: u32,
    /// When the broker acknowledges.
    #[arg(long, value_enum, default_value_t = AcksArg::All)]
    pub(crate) acks: AcksArg,
    /// Batch size limit in bytes; also the largest record accepted.
    #[arg(long, default_value_t = fjord_client::BATCH_BYTES_DEFAULT)]
    pub(crate) batch_bytes: usize,
    /// How long a batch waits for more records, in ms.
    #[arg(long, default_value_t = 5)]
    pub(crate) linger_ms: u64,
    /// Compress batches: none, lz4 or zstd.
    #[arg(long, default_value = "none")]
    pub(crate) compression: fjord_client::Compression,
    /// Send without producer ids and sequences (at-least-once retries).
    #[arg(long)]
    pub(crate) no_idempotence: bool,
    /// Leave records due in the first DURATION of the run out of the
    /// latency figures; they are still sent, received and counted in the
    /// throughput. A run's first moments include creating the topic,
    /// electing its leaders and obtaining a producer id (humantime: 2s).
    #[arg(long, value_name = "DURATION", default_value = "0s", value_parser = humantime::parse_duration)]
    pub(crate) warmup: Duration,
    /// Partitions of the topic if it is created.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) partitions: u32,
    /// Replicas per partition if the topic is created (default: the broker's).
    #[arg(long)]
    pub(crate) replication_factor: Option<u32>,
    /// Key record `i` with `i % N` (in decimal), so that N keys repeat:
    /// for a compacted topic, which refuses keyless records. Keys pick
    /// partitions by their hash. Default: no keys.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) keys: Option<u64>,
    /// `bench e2e` only: a tail fetch waits until this many bytes are
    /// ready (Kafka's `fetch.min.bytes`)...
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) fetch_min_bytes: u32,
    /// ...or this long has passed (humantime; Kafka's `fetch.max.wait.ms`).
    #[arg(long, default_value = "500ms", value_parser = humantime::parse_duration)]
    pub(crate) fetch_max_wait: Duration,
    /// `bench e2e` only: search for the highest rate sustained with the
    /// p99 produce-to-consume latency at most --p99-ms: paced steps of
    /// --step-duration from --start-rate, doubling while a step holds,
    /// then --search-steps bisections between the last that held and the
    /// first that did not. A step holds when the consumer received every
    /// record within 5% of the schedule's time and the p99 of the records
    /// due after its first quarter is within the bound.
    #[arg(long)]
    pub(crate) find_max_rate: bool,
    /// The latency bound of --find-max-rate, ms.
    #[arg(long, default_value_t = 10.0, value_parser = parse_positive_ms)]
    pub(crate) p99_ms: f64,
    /// How long each step of --find-max-rate sends (humantime: 5s).
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub(crate) step_duration: Duration,
    /// First rate --find-max-rate tries, records/s.
    #[arg(long, default_value_t = 10_000.0, value_parser = parse_rate)]
    pub(crate) start_rate: f64,
    /// Highest rate --find-max-rate tries, records/s.
    #[arg(long, default_value_t = 10_000_000.0, value_parser = parse_rate)]
    pub(crate) max_rate: f64,
    /// Bisections of --find-max-rate after the first step that fails.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(0..=SEARCH_STEPS_MAX as i64))]
    pub(crate) search_steps: u32,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub(crate) json: bool,
    /// `bench produce` only: `batches` (the Rust producer, batches built by
    /// the client) or `records` (whole records on `PublishStream`, batches
    /// built by the broker, as a client in another language would).
    #[arg(long, value_enum, default_value_t = Api::Batches)]
    pub(crate) api: Api,
}

/// Which produce API `bench produce` drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Api {
    /// `Produce`/`ProduceStream` through `fjord_client::Producer`.
    Batches,
    /// `PublishStream`, one request per `--batch-bytes` of records.
    Records,
}

impl LoadArgs {
    /// Records to send: `--records` (clap requires it unless
    /// --find-max-rate, whose steps set it).
    pub(crate) fn records(&self) -> u64 {
        self.records.unwrap_or(0)
    }

    /// Who sends which record when.
    pub(crate) fn schedule(&self) -> Schedule {
        Schedule { records: self.records(), producers: u64::from(self.producers), rate: self.rate }
    }
}

/// Flags of `bench consume`.
#[derive(Debug, Clone, Args)]
pub(crate) struct ConsumeArgs {
    /// Topic to read.
    #[arg(long)]
    pub(crate) topic: String,
    /// Records to read (default: all of them, up to the high watermarks at start).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) records: Option<u64>,
    /// Read as a member of this consumer group (from its committed offsets,
    /// else the beginning), committing as it goes; needs --records, since a
    /// group's partitions have no end to stop at.
    #[arg(long, requires = "records")]
    pub(crate) group: Option<String>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub(crate) json: bool,
}

/// Runs `fjord bench`. `timeout` bounds each request and, in `e2e`, the wait
/// for the consumer after the producers are done.
pub(crate) async fn run(client: Client, command: BenchCommand, timeout: Duration) -> anyhow::Result<()> {
    match command {
        BenchCommand::Produce(args) if args.find_max_rate => Err(anyhow!(
            "--find-max-rate is for bench e2e: it searches the rate at a produce-to-consume latency"
        )),
        BenchCommand::Produce(args)
            if args.fetch_min_bytes != 1 || args.fetch_max_wait != fjord_client::FETCH_WAIT_DEFAULT =>
        {
            Err(anyhow!("--fetch-min-bytes and --fetch-max-wait are for bench e2e, whose consumer fetches"))
        }
        BenchCommand::Produce(args) if args.api == Api::Records => records::run(client, args, timeout).await,
        BenchCommand::Produce(args) => produce::run(client, args, timeout).await,
        BenchCommand::E2e(args) if args.api == Api::Records => {
            Err(anyhow!("bench e2e drives the batch API only; --api records is for bench produce"))
        }
        BenchCommand::Consume(args) => consume::run(client, args).await,
        BenchCommand::E2e(args) if args.find_max_rate => e2e::find_max_rate(client, args, timeout).await,
        BenchCommand::E2e(args) => e2e::run(client, args, timeout).await,
        BenchCommand::Commit(args) => commit::run(client, args).await,
    }
}

/// A positive, finite number of ms.
fn parse_positive_ms(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if r.is_finite() && r > 0.0 => Ok(r),
        _ => Err(format!("expected a positive number of milliseconds, got {s:?}")),
    }
}

/// A positive, finite rate.
fn parse_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if r.is_finite() && r > 0.0 => Ok(r),
        _ => Err(format!("expected a positive number of records per second, got {s:?}")),
    }
}

/// Creates the topic unless it exists.
async fn ensure_topic(client: &Client, args: &LoadArgs) -> anyhow::Result<()> {
    let rf = args.replication_factor.unwrap_or(0);
    match client.create_topic(&args.topic, args.partitions, rf, TopicSettings::default()).await {
        Ok(t) => tracing::info!(topic = %args.topic, partitions = t.partitions.len(), "created the topic"),
        Err(fjord_client::Error::TopicAlreadyExists { .. }) => {
            let n = client.partition_count(&args.topic).await.context("reading the topic's metadata")?;
            if n != args.partitions {
                tracing::info!(topic = %args.topic, partitions = n, "the topic exists; --partitions ignored");
            }
        }
        Err(e) => return Err(e).context(format!("creating topic {}", args.topic)),
    }
    Ok(())
}

/// A bar counting records on stderr, if that is a terminal.
fn progress_bar(total: u64, what: &'static str) -> Option<ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = ProgressBar::new(total);
    let style =
        ProgressStyle::with_template("{bar:30} {human_pos}/{human_len} records {msg}, {per_sec}, eta {eta}")
            .expect("valid template");
    bar.set_style(style);
    bar.set_message(what);
    Some(bar)
}

/// Prints the summary in the format asked for.
fn print(summary: &Summary, json: bool) {
    if json {
        println!("{}", summary.to_json());
    } else {
        println!("{}", summary.render_text());
    }
}

/// An error if any record failed, naming how many and the first failure.
fn failures(failed: u64, total: u64, first: Option<anyhow::Error>) -> anyhow::Result<()> {
    match (failed, first) {
        (0, _) => Ok(()),
        (n, Some(e)) => Err(e.context(format!("{n} of {total} records failed; the first"))),
        (n, None) => Err(anyhow!("{n} of {total} records failed")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::{Cli, Command};
    use clap::Parser;

    fn parse(argv: &[&str]) -> Result<BenchCommand, clap::Error> {
        let cli = Cli::try_parse_from(["fjord", "bench"].iter().chain(argv))?;
        match cli.command {
            Command::Bench { command } => Ok(command),
            other => panic!("parsed {other:?}"),
        }
    }

    #[test]
    fn produce_flags_and_defaults() {
        let BenchCommand::Produce(a) = parse(&["produce", "--topic", "t", "--records", "10"]).unwrap() else {
            panic!("not produce")
        };
        assert_eq!((a.topic.as_str(), a.records, a.record_size, a.producers), ("t", Some(10), 1024, 1));
        assert_eq!((a.rate, a.acks, a.linger_ms, a.partitions), (None, AcksArg::All, 5, 8));
        assert_eq!((a.batch_bytes, a.replication_factor, a.json), (256 * 1024, None, false));
        assert_eq!(a.warmup, Duration::ZERO);
        let BenchCommand::E2e(a) = parse(&[
            "e2e",
            "--topic",
            "t",
            "--records",
            "1000",
            "--record-size",
            "100",
            "--rate",
            "2500.5",
            "--producers",
            "4",
            "--acks",
            "leader",
            "--batch-bytes",
            "65536",
            "--linger-ms",
            "0",
            "--partitions",
            "3",
            "--replication-factor",
            "1",
            "--warmup",
            "1500ms",
            "--json",
        ])
        .unwrap() else {
            panic!("not e2e")
        };
        assert_eq!((a.record_size, a.rate, a.producers, a.acks), (100, Some(2500.5), 4, AcksArg::Leader));
        assert_eq!((a.batch_bytes, a.linger_ms, a.partitions, a.replication_factor), (65536, 0, 3, Some(1)));
        assert!(a.json);
        assert_eq!(a.warmup, Duration::from_millis(1500));
        assert_eq!(a.schedule(), Schedule { records: 1000, producers: 4, rate: Some(2500.5) });
    }

    #[test]
    fn bad_produce_flags_are_refused() {
        let base = ["produce", "--topic", "t", "--records", "10"];
        let with = |extra: &[&str]| parse(&[&base[..], extra].concat());
        assert!(with(&[]).is_ok());
        for bad in [
            &["--record-size", "15"][..],
            &["--record-size", "67108865"],
            &["--rate", "0"],
            &["--rate", "-5"],
            &["--rate", "inf"],
            &["--rate", "fast"],
            &["--producers", "0"],
            &["--producers", "257"],
            &["--partitions", "0"],
            &["--acks", "none"],
            &["--warmup", "soon"],
        ] {
            assert!(with(bad).is_err(), "{bad:?} was accepted");
        }
        assert!(parse(&["produce", "--topic", "t"]).is_err(), "--records is required");
        assert!(parse(&["produce", "--topic", "t", "--records", "0"]).is_err());
    }

    #[test]
    fn consume_flags() {
        let BenchCommand::Consume(a) = parse(&["consume", "--topic", "t"]).unwrap() else { panic!() };
        assert_eq!((a.topic.as_str(), a.records, a.json), ("t", None, false));
        let BenchCommand::Consume(a) =
            parse(&["consume", "--topic", "t", "--records", "5", "--json"]).unwrap()
        else {
            panic!()
        };
        assert_eq!((a.records, a.json), (Some(5), true));
        // A group member has no end to stop at: --group needs --records.
        assert!(parse(&["consume", "--topic", "t", "--group", "g"]).is_err());
        let BenchCommand::Consume(a) =
            parse(&["consume", "--topic", "t", "--group", "g", "--records", "9"]).unwrap()
        else {
            panic!()
        };
        assert_eq!((a.group.as_deref(), a.records), (Some("g"), Some(9)));
    }

    #[test]
    fn failures_name_the_count_and_first_error() {
        assert!(failures(0, 10, None).is_ok());
        let e = failures(2, 10, Some(anyhow!("disk full"))).unwrap_err();
        assert_eq!(format!("{e:#}"), "2 of 10 records failed; the first: disk full");
        assert_eq!(failures(1, 3, None).unwrap_err().to_string(), "1 of 3 records failed");
    }
}
