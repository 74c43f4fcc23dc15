//! Storage benchmarks, each figure printed beside a reference measured in
//! the same run on the same disk:
//!
//! 1. append throughput of 1 KiB records in ~256 KiB batches, with an fsync
//!    per batch (`FlushPolicy::Always`) and without (`Never`), against
//!    `write_all` (plus `sync_data`) of the same bytes to a plain file;
//!    without fsync both within one segment and across rolls (a roll fsyncs);
//! 2. sequential read of the whole log in ~1 MiB reads, with and without
//!    CRC checks, against memcpy of as many bytes (first read after open,
//!    which faults the maps in, apart from later ones);
//! 3. lookup latency of `read` (locating one batch), `offset_for_timestamp`
//!    and `raft_entry` at random points of a multi-segment log;
//! 4. `Log::open` time of a large log of closed segments after an unclean
//!    stop (the `Log` is dropped; there is no clean close), with warm and,
//!    where the kernel lets us drop caches, cold page cache;
//! 5. compaction: MB/s of closed segments a `Log::compact` pass reads (and
//!    rewrites) in a log of keyed records, each key written many times,
//!    against a sequential read with CRC checks of the same log.
//!
//! A plain `main` rather than criterion, which takes too long to build here.
//! Run with `cargo bench -p fjord-storage --bench storage`. Scale with
//! environment variables (whole numbers):
//!
//! | variable                 | default | what                                           |
//! |--------------------------|---------|------------------------------------------------|
//! | `FJORD_BENCH_DIR`        | target/ | parent of the temporary data directory         |
//! | `FJORD_BENCH_GIB`        | 10      | size of the log read, looked up and reopened   |
//! | `FJORD_BENCH_APPEND_MIB` | 1024    | bytes per no-fsync append case                 |
//! | `FJORD_BENCH_FSYNC_MIB`  | 256     | bytes per fsync-per-batch append case          |
//! | `FJORD_BENCH_TAIL_MIB`   | 512     | unflushed tail for the recovery-scan reopen    |
//! | `FJORD_BENCH_LOOKUPS`    | 100000  | lookups of each kind                           |
//! | `FJORD_BENCH_COMPACT_MIB`| 512     | log compacted per run (0 skips it)             |
//! | `FJORD_BENCH_RUNS`       | 3       | repetitions of each throughput and open figure |
//!
//! Everything is written under one temporary directory, removed at the end.

use std::fs::File;
use std::hint::black_box;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use fjord_codec::{split_batches, verify_crc, BatchBuilder};
use fjord_storage::{CompactionConfig, FlushPolicy, Log, LogConfig, RaftPos, SEGMENT_BYTES_MAX};
use hdrhistogram::Histogram;

/// Bytes of one record in the batch, framing included.
const RECORD_BYTES: usize = 1024;
/// Bytes of each record's key (its sequence number).
const KEY_BYTES: usize = 8;
/// A batch holds as many records as fit in this.
const BATCH_BYTES_MAX: usize = 256 * 1024;
/// `max_bytes` of each sequential read.
const READ_CHUNK_BYTES: usize = 1024 * 1024;
/// Segment size of the large log: the default, so reopen sees whole closed segments.
const LARGE_SEGMENT_BYTES: u64 = 1 << 30;
/// Segment size of the append case that crosses rolls.
const ROLL_SEGMENT_BYTES: u64 = 128 << 20;
/// Source buffer of the memcpy reference: larger than any CPU cache, so it
/// streams from memory as reads of the page cache do.
const MEMCPY_SOURCE_BYTES: usize = 1 << 30;
/// Distinct keys of the compaction case: a 512 MiB log of 1 KiB records
/// writes each about 50 times.
const COMPACT_KEYS: u64 = 10_000;
/// Segment size of the compaction case: several closed segments to clean.
const COMPACT_SEGMENT_BYTES: u64 = 64 << 20;
/// Record `i` of a stream has timestamp `TIMESTAMP_BASE_MS + i`.
const TIMESTAMP_BASE_MS: i64 = 1_700_000_000_000;
/// Random bytes that record values are cut from.
const NOISE_BYTES: usize = 4 << 20;
const SEED: u64 = 0x5eed_f10d;
const MIB: u64 = 1 << 20;
/// Goals, as fractions of the reference.
const APPEND_GOAL_RATIO: f64 = 0.8;
const READ_GOAL_RATIO: f64 = 0.5;
const OPEN_GOAL_MS: f64 = 200.0;

fn main() {
    let scale = Scale::from_env();
    std::fs::create_dir_all(&scale.dir).expect("create the bench parent directory");
    let tmp = tempfile::tempdir_in(&scale.dir).expect("create the bench directory");
    eprintln!("fjord-storage bench: data under {} ({scale:?})", tmp.path().display());
    let mut table = Table::default();
    let mut maker = BatchMaker::new(SEED);
    bench_append(&scale, tmp.path(), &mut maker, &mut table);
    bench_compaction(&scale, tmp.path(), &mut table);
    bench_large_log(&scale, &tmp.path().join("large"), &mut table);
    table.print(&scale);
    drop(tmp);
}

/// Scale of the run, from the environment.
#[derive(Debug)]
struct Scale {
    dir: PathBuf,
    large_gib: u64,
    append_mib: u64,
    fsync_mib: u64,
    tail_mib: u64,
    lookups: u64,
    compact_mib: u64,
    runs: usize,
}

impl Scale {
    fn from_env() -> Scale {
        let dir = std::env::var_os("FJORD_BENCH_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
        Scale {
            dir,
            large_gib: env_u64("FJORD_BENCH_GIB", 10).max(1),
            append_mib: env_u64("FJORD_BENCH_APPEND_MIB", 1024).max(1),
            fsync_mib: env_u64("FJORD_BENCH_FSYNC_MIB", 256).max(1),
            tail_mib: env_u64("FJORD_BENCH_TAIL_MIB", 512),
            lookups: env_u64("FJORD_BENCH_LOOKUPS", 100_000).max(1),
            compact_mib: env_u64("FJORD_BENCH_COMPACT_MIB", 512),
            runs: env_u64("FJORD_BENCH_RUNS", 3).max(1) as usize,
        }
    }
}

fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(s) => s.trim().parse().unwrap_or_else(|_| panic!("{name}={s:?} is not a whole number")),
        Err(_) => default,
    }
}

/// splitmix64: fast, seeded, good enough to vary record contents and pick lookups.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..hi` (`hi > lo`), near enough for a bench.
    fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo)
    }
}

/// Builds a stream of batches of 1 KiB records. Record `i` of the stream has
/// key `i`, timestamp `TIMESTAMP_BASE_MS + i`, and a value cut from random
/// noise at a random place, so no two records are alike.
struct BatchMaker {
    noise: Vec<u8>,
    rng: Rng,
    next_record: u64,
    /// Record `i`'s key is `i % keys`.
    keys: u64,
}

impl BatchMaker {
    fn new(seed: u64) -> BatchMaker {
        BatchMaker::keyed(seed, u64::MAX)
    }

    /// Records whose keys repeat every `keys` records.
    fn keyed(seed: u64, keys: u64) -> BatchMaker {
        let mut rng = Rng(seed);
        let noise = (0..NOISE_BYTES / 8).flat_map(|_| rng.next().to_le_bytes()).collect();
        BatchMaker { noise, rng, next_record: 0, keys }
    }

    fn next_batch(&mut self) -> Bytes {
        let value_len = RECORD_BYTES - BatchBuilder::record_len(Some(&[0; KEY_BYTES]), Some(&[]), &[]);
        let mut builder = BatchBuilder::new(BATCH_BYTES_MAX);
        loop {
            let at = self.rng.between(0, (self.noise.len() - value_len) as u64) as usize;
            let key = (self.next_record % self.keys).to_le_bytes();
            let ts = TIMESTAMP_BASE_MS + self.next_record as i64;
            match builder.push(Some(&key), Some(&self.noise[at..at + value_len]), &[], ts) {
                Ok(()) => self.next_record += 1,
                Err(_) => return builder.finish(),
            }
        }
    }

    /// Batches totalling at least `bytes`.
    fn batches(&mut self, bytes: u64) -> Vec<Bytes> {
        let mut out = Vec::new();
        let mut total = 0;
        while total < bytes {
            let b = self.next_batch();
            total += b.len() as u64;
            out.push(b);
        }
        out
    }
}

fn log_config(segment_bytes: u64, flush: FlushPolicy) -> LogConfig {
    LogConfig { segment_bytes, flush, retention_ms: None, ..LogConfig::default() }
}

// ---------------------------------------------------------------- append

fn bench_append(scale: &Scale, parent: &Path, maker: &mut BatchMaker, table: &mut Table) {
    eprintln!("building {} MiB of batches", scale.append_mib);
    let batches = maker.batches(scale.append_mib * MIB);
    let mut fsync_count = 0;
    let mut fsync_bytes = 0;
    while fsync_count < batches.len() && fsync_bytes < scale.fsync_mib * MIB {
        fsync_bytes += batches[fsync_count].len() as u64;
        fsync_count += 1;
    }
    let cases: [(&str, &[Bytes], FlushPolicy, u64); 3] = [
        (
            "append, fsync per ~256 KiB batch",
            &batches[..fsync_count],
            FlushPolicy::Always,
            LARGE_SEGMENT_BYTES,
        ),
        // Segments as large as allowed, so the default 1 GiB does not roll:
        // a roll fsyncs the closed segment, which the next case measures.
        ("append, no fsync, no roll", &batches, FlushPolicy::Never, SEGMENT_BYTES_MAX),
        ("append, no fsync, 128 MiB segments (8 rolls)", &batches, FlushPolicy::Never, ROLL_SEGMENT_BYTES),
    ];
    for (what, batches, flush, segment_bytes) in cases {
        let bytes: u64 = batches.iter().map(|b| b.len() as u64).sum();
        let sync = flush == FlushPolicy::Always;
        eprintln!("{what}: {} MiB x {} runs", bytes / MIB, scale.runs);
        let (mut fjord, mut raw) = (Vec::new(), Vec::new());
        for run in 0..scale.runs {
            // Alternate which goes first, so neither always meets the other's write-back.
            if run % 2 == 0 {
                raw.push(append_raw(parent, batches, sync));
                fjord.push(append_log(parent, batches, log_config(segment_bytes, flush)));
            } else {
                fjord.push(append_log(parent, batches, log_config(segment_bytes, flush)));
                raw.push(append_raw(parent, batches, sync));
            }
        }
        let reference = if sync { "raw write_all+sync_data" } else { "raw write_all" };
        table.throughput(
            &format!("{what} ({} MiB)", bytes / MIB),
            Rate::of(bytes, &fjord),
            reference,
            Rate::of(bytes, &raw),
            APPEND_GOAL_RATIO,
        );
    }
}

/// Appends `batches` to a fresh log; returns the time of the appends alone.
/// The log is flushed afterwards, untimed, so the next run starts without a
/// backlog of dirty pages.
fn append_log(parent: &Path, batches: &[Bytes], config: LogConfig) -> Duration {
    let dir = tempfile::tempdir_in(parent).expect("create a log directory");
    let log = Log::open(dir.path(), config).expect("open a fresh log");
    let start = Instant::now();
    for (i, batch) in batches.iter().enumerate() {
        log.append_durable(batch, RaftPos { term: 1, index: i as u64 + 1 }).expect("append");
    }
    let took = start.elapsed();
    log.flush().expect("flush");
    let records: u64 = batches.iter().map(record_count).sum();
    assert_eq!(log.log_end_offset(), records, "the log holds every record appended");
    took
}

/// Writes `batches` to a plain file, with `sync_data` after each if `sync`.
fn append_raw(parent: &Path, batches: &[Bytes], sync: bool) -> Duration {
    let dir = tempfile::tempdir_in(parent).expect("create a raw directory");
    let mut file = File::create(dir.path().join("raw")).expect("create the raw file");
    let start = Instant::now();
    for batch in batches {
        file.write_all(batch).expect("raw write");
        if sync {
            file.sync_data().expect("raw sync");
        }
    }
    let took = start.elapsed();
    file.sync_data().expect("raw sync");
    took
}

fn record_count(batch: &Bytes) -> u64 {
    let (header, _) = split_batches(batch.clone()).next().expect("one batch").expect("a valid batch");
    header.record_count as u64
}

// ---------------------------------------------------------- compaction

/// Per run, a fresh log of `compact_mib` of keyed records: a sequential
/// read with CRCs (which also brings it into the page cache), then one
/// compaction pass over its closed segments.
fn bench_compaction(scale: &Scale, parent: &Path, table: &mut Table) {
    let what = "compaction pass, MB/s of closed segments read";
    if scale.compact_mib == 0 {
        table.skipped(what, "FJORD_BENCH_COMPACT_MIB=0");
        return;
    }
    eprintln!("compaction: {} MiB logs of {COMPACT_KEYS} keys, {} runs", scale.compact_mib, scale.runs);
    let config = log_config(COMPACT_SEGMENT_BYTES, FlushPolicy::Never);
    let (mut reads, mut passes) = (Vec::new(), Vec::new());
    let (mut read_bytes, mut input, mut before, mut after) = (0, 0, 0, 0);
    for run in 0..scale.runs {
        let dir = parent.join(format!("compact-{run}"));
        let log = Log::open(&dir, config.clone()).expect("open the compaction log");
        let mut maker = BatchMaker::keyed(SEED + 2 + run as u64, COMPACT_KEYS);
        append_stream(&log, &mut maker, scale.compact_mib * MIB);
        log.flush().expect("flush");
        log.seal_closed().expect("seal the closed segments");
        read_bytes = log.size_bytes();
        reads.push(read_all(&log, true));
        let now_ms = TIMESTAMP_BASE_MS + maker.next_record as i64;
        let start = Instant::now();
        let report =
            log.compact(&CompactionConfig::default(), log.log_end_offset(), now_ms).expect("compact");
        passes.push((start.elapsed(), report.bytes_read));
        (input, before, after) = (report.bytes_read, report.bytes_before, report.bytes_after);
        drop(log);
        std::fs::remove_dir_all(&dir).expect("remove the compaction log");
    }
    // Every run reads the same amount (same sizes, same segment rolls).
    let times: Vec<Duration> = passes.iter().map(|p| p.0).collect();
    assert!(passes.iter().all(|p| p.1 == input), "each pass read the same bytes: {passes:?}");
    let read = Rate::of(read_bytes, &reads);
    table.throughput_only(
        what,
        Rate::of(input, &times),
        &format!(
            "sequential read with CRC of the same log: {read}; {:.0} MB of closed segments became {:.1} MB",
            before as f64 / 1e6,
            after as f64 / 1e6
        ),
    );
    let ratio = Rate::of(input, &times).median / read.median;
    table.rows.push([
        "  compaction / sequential read".into(),
        format!("{ratio:.2}x"),
        String::new(),
        String::new(),
    ]);
}

// ---------------------------------------------------------- large log

/// Builds the large log, then measures reopen, sequential reads and lookups on it.
fn bench_large_log(scale: &Scale, dir: &Path, table: &mut Table) {
    let config = log_config(LARGE_SEGMENT_BYTES, FlushPolicy::Never);
    let bytes = scale.large_gib << 30;
    eprintln!("writing a {} GiB log (FlushPolicy::Never, 1 GiB segments)", scale.large_gib);
    let start = Instant::now();
    let mut maker = BatchMaker::new(SEED + 1);
    {
        let log = Log::open(dir, config.clone()).expect("open the large log");
        append_stream(&log, &mut maker, bytes);
        log.flush().expect("flush");
        // Dropped without any close: every open below is an unclean one.
    }
    eprintln!("  written in {:.1} s", start.elapsed().as_secs_f64());
    let what = format!("open {} GiB log, unclean stop, after flush", scale.large_gib);
    let log = bench_open(scale, dir, &config, &what, false, table);
    bench_read(scale, &log, table);
    bench_lookups(scale, &log, maker.next_record, table);
    drop(log);
    bench_open(scale, dir, &config, &what, true, table);
    if scale.tail_mib > 0 {
        eprintln!("appending {} MiB without flushing", scale.tail_mib);
        let log = Log::open(dir, config.clone()).expect("open the large log");
        append_stream(&log, &mut maker, scale.tail_mib * MIB);
        drop(log);
        let what = format!("open, {} MiB unflushed tail (recovery scan)", scale.tail_mib);
        bench_open(scale, dir, &config, &what, false, table);
        bench_open(scale, dir, &config, &what, true, table);
    }
}

/// Appends fresh batches from `maker` until `bytes` more are in the log.
fn append_stream(log: &Log, maker: &mut BatchMaker, bytes: u64) {
    let target = log.size_bytes() + bytes;
    let mut index = log.last_raft().map_or(0, |r| r.index);
    while log.size_bytes() < target {
        index += 1;
        log.append(&maker.next_batch(), RaftPos { term: 1, index }).expect("append");
    }
}

/// Times `Log::open` of `dir` after an unclean stop (the previous `Log` was
/// dropped), with warm or cold page cache; returns the last log opened. If
/// caches cannot be dropped, the cold figure is reported as skipped.
fn bench_open(
    scale: &Scale,
    dir: &Path,
    config: &LogConfig,
    what: &str,
    cold: bool,
    table: &mut Table,
) -> Log {
    let label = format!("{what}, {} cache", if cold { "cold" } else { "warm" });
    eprintln!("{label}: {} runs", scale.runs);
    let mut times = Vec::new();
    let mut log = None;
    for _ in 0..scale.runs {
        drop(log.take());
        if cold {
            if let Err(e) = drop_caches() {
                table.skipped(&label, &format!("cannot drop caches: {e}"));
                return Log::open(dir, config.clone()).expect("reopen");
            }
        }
        let start = Instant::now();
        let opened = Log::open(dir, config.clone()).expect("reopen after an unclean stop");
        times.push(start.elapsed());
        log = Some(opened);
    }
    let log = log.expect("at least one run");
    table.latency_ms(&label, &times, &format!("{} segments", log.segment_count()), OPEN_GOAL_MS);
    log
}

/// Writes dirty pages back, then asks the kernel to drop clean caches.
fn drop_caches() -> std::io::Result<()> {
    rustix::fs::sync();
    std::fs::write("/proc/sys/vm/drop_caches", "3\n")
}

// ---------------------------------------------------------------- reads

fn bench_read(scale: &Scale, log: &Log, table: &mut Table) {
    let total = log.size_bytes();
    eprintln!("sequential reads of {} MiB x {} runs", total / MIB, scale.runs);
    let source: Vec<u8> = (0..MEMCPY_SOURCE_BYTES.min(total as usize)).map(|i| (i * 7) as u8).collect();
    // The log was just opened: its first read also faults in every page of the maps.
    let first = read_all(log, true);
    let (mut crc, mut no_crc, mut memcpy) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..scale.runs {
        crc.push(read_all(log, true));
        no_crc.push(read_all(log, false));
        memcpy.push(copy_all(&source, total));
    }
    let reference = "memcpy, 1 MiB chunks";
    let memcpy = Rate::of(total, &memcpy);
    let what = "sequential read, 1 MiB reads, CRC checked";
    table.throughput(
        &format!("{what}, first after open"),
        Rate::of(total, &[first]),
        reference,
        memcpy,
        READ_GOAL_RATIO,
    );
    table.throughput(
        &format!("{what}, maps warm"),
        Rate::of(total, &crc),
        reference,
        memcpy,
        READ_GOAL_RATIO,
    );
    let zero_copy = "zero-copy: reads only batch headers, not the data";
    table.throughput_only("sequential read, 1 MiB reads, no CRC", Rate::of(total, &no_crc), zero_copy);
}

/// Reads the whole log in `READ_CHUNK_BYTES` reads following `next_offset`,
/// checking offsets are contiguous and, if `verify`, every batch's CRC.
fn read_all(log: &Log, verify: bool) -> Duration {
    let end = log.log_end_offset();
    let mut offset = log.log_start_offset();
    let mut bytes = 0u64;
    let start = Instant::now();
    while offset < end {
        let read = log.read(offset, READ_CHUNK_BYTES, end).expect("read");
        assert!(read.next_offset > offset, "a read below the end advances");
        bytes += read.batches.len() as u64;
        for item in split_batches(read.batches) {
            let (header, batch) = item.expect("a whole batch");
            assert_eq!(header.base_offset, offset, "batches are contiguous");
            if verify {
                verify_crc(&batch, &header).expect("CRC");
            }
            offset = header.next_offset();
        }
    }
    let took = start.elapsed();
    assert_eq!(bytes, log.size_bytes(), "read back every byte");
    took
}

/// Copies `total` bytes from `source` (cycling through it) into a 1 MiB buffer.
fn copy_all(source: &[u8], total: u64) -> Duration {
    let mut dst = vec![0u8; READ_CHUNK_BYTES];
    let (mut done, mut at) = (0u64, 0usize);
    let start = Instant::now();
    while done < total {
        let n = READ_CHUNK_BYTES.min(source.len() - at).min((total - done) as usize);
        dst[..n].copy_from_slice(&source[at..at + n]);
        black_box(&mut dst);
        done += n as u64;
        at = if at + n == source.len() { 0 } else { at + n };
    }
    start.elapsed()
}

// -------------------------------------------------------------- lookups

/// Random lookups of each kind. Every record `i` has offset `i` and
/// timestamp `TIMESTAMP_BASE_MS + i`, so each answer is checked exactly.
fn bench_lookups(scale: &Scale, log: &Log, records: u64, table: &mut Table) {
    let end = log.log_end_offset();
    assert_eq!(end, records, "one offset per record");
    let last_index = log.last_raft().expect("a non-empty log").index;
    let segments = log.segment_count();
    eprintln!("{} lookups of each kind over {segments} segments", scale.lookups);
    let mut rng = Rng(SEED + 2);
    let read = time_each(scale.lookups, &mut rng, |rng| {
        let offset = rng.between(0, end);
        let r = log.read(offset, 1, end).expect("read");
        assert!(r.next_offset > offset && !r.batches.is_empty(), "read at {offset}");
    });
    let by_time = time_each(scale.lookups, &mut rng, |rng| {
        let i = rng.between(0, end);
        let found = log.offset_for_timestamp(TIMESTAMP_BASE_MS + i as i64, end).expect("by timestamp");
        assert_eq!(found, Some(i), "offset of timestamp base + {i}");
    });
    let by_raft = time_each(scale.lookups, &mut rng, |rng| {
        let index = rng.between(1, last_index + 1);
        let (header, _) = log.raft_entry(index).expect("raft entry").expect("entry in the log");
        assert_eq!(header.raft_index, index);
    });
    let context = format!("{segments} segments");
    table.histogram("lookup: read(offset, 1 byte) locate", &read, &context);
    table.histogram("lookup: offset_for_timestamp", &by_time, &context);
    table.histogram("lookup: raft_entry(index)", &by_raft, &context);
}

/// Runs `op` `n` times and returns a histogram of its latencies in ns.
fn time_each(n: u64, rng: &mut Rng, mut op: impl FnMut(&mut Rng)) -> Histogram<u64> {
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).expect("histogram bounds");
    for _ in 0..n {
        let start = Instant::now();
        op(rng);
        hist.saturating_record(start.elapsed().as_nanos() as u64);
    }
    hist
}

// ---------------------------------------------------------------- table

/// Throughput over several runs of the same number of bytes.
#[derive(Clone, Copy)]
struct Rate {
    median: f64,
    min: f64,
    max: f64,
}

impl Rate {
    /// MB/s (10^6 bytes) of moving `bytes` in each of `times`.
    fn of(bytes: u64, times: &[Duration]) -> Rate {
        let mut rates: Vec<f64> = times.iter().map(|t| bytes as f64 / 1e6 / t.as_secs_f64()).collect();
        rates.sort_by(f64::total_cmp);
        Rate { median: rates[rates.len() / 2], min: rates[0], max: rates[rates.len() - 1] }
    }
}

impl std::fmt::Display for Rate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:.0} MB/s ({:.0}-{:.0})", self.median, self.min, self.max)
    }
}

#[derive(Default)]
struct Table {
    rows: Vec<[String; 4]>,
}

impl Table {
    /// A throughput beside its reference; `goal` is the least ratio to it.
    fn throughput(&mut self, what: &str, fjord: Rate, reference: &str, raw: Rate, goal: f64) {
        let ratio = fjord.median / raw.median;
        let verdict = format!("{ratio:.2}x (goal >= {goal}x: {})", pass(ratio >= goal));
        self.rows.push([what.into(), fjord.to_string(), format!("{reference}: {raw}"), verdict]);
    }

    /// A throughput with no meaningful reference.
    fn throughput_only(&mut self, what: &str, fjord: Rate, note: &str) {
        self.rows.push([what.into(), fjord.to_string(), note.into(), String::new()]);
    }

    /// A wall time over runs, median and range, in ms.
    fn latency_ms(&mut self, what: &str, times: &[Duration], context: &str, goal_ms: f64) {
        let mut ms: Vec<f64> = times.iter().map(|t| t.as_secs_f64() * 1e3).collect();
        ms.sort_by(f64::total_cmp);
        let median = ms[ms.len() / 2];
        let fjord = format!("{median:.1} ms ({:.1}-{:.1})", ms[0], ms[ms.len() - 1]);
        let verdict = format!("goal <= {goal_ms} ms: {}", pass(median <= goal_ms));
        self.rows.push([what.into(), fjord, context.into(), verdict]);
    }

    fn histogram(&mut self, what: &str, h: &Histogram<u64>, context: &str) {
        let us = |q: f64| h.value_at_quantile(q) as f64 / 1e3;
        let fjord = format!("p50 {:.2} us, p99 {:.2} us", us(0.5), us(0.99));
        let tail = format!("p99.9 {:.1} us, max {:.1} us", us(0.999), h.max() as f64 / 1e3);
        self.rows.push([what.into(), fjord, format!("{} lookups, {context}", h.len()), tail]);
    }

    fn skipped(&mut self, what: &str, why: &str) {
        self.rows.push([what.into(), "skipped".into(), why.into(), String::new()]);
    }

    fn print(&self, scale: &Scale) {
        println!();
        println!(
            "fjord-storage bench: {} GiB log, append {} MiB (fsync {} MiB), {} runs, {} lookups",
            scale.large_gib, scale.append_mib, scale.fsync_mib, scale.runs, scale.lookups
        );
        let header = ["measurement", "fjord (median, range)", "reference / context", "ratio / goal"];
        let widths: Vec<usize> = (0..4)
            .map(|c| self.rows.iter().map(|r| r[c].len()).chain([header[c].len()]).max().unwrap_or(0))
            .collect();
        let line = |r: &[&str]| {
            let cells: Vec<String> = r.iter().zip(&widths).map(|(s, w)| format!("{s:<w$}")).collect();
            println!("| {} |", cells.join(" | "));
        };
        line(&header);
        let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
        for row in std::iter::once(&rule[..]).chain(self.rows.iter().map(|r| &r[..])) {
            line(&row.iter().map(String::as_str).collect::<Vec<_>>());
        }
    }
}

fn pass(ok: bool) -> &'static str {
    if ok {
        "ok"
    } else {
        "MISSED"
    }
}
