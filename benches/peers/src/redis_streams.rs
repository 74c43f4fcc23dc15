//! Redis Streams: pipelined XADD to one stream, then XRANGE in pages.
//!
//! A window of `batch` records is sent as one pipeline; the next pipeline
//! goes out only when the previous one is answered. With `appendfsync
//! always` Redis fsyncs the AOF once per event-loop pass before it
//! replies, so one pipeline is one group commit, as one Fjord batch is.

use std::time::Instant;

use anyhow::Context;
use redis::streams::StreamRangeReply;
use redis::Value;

use crate::{latency_histogram, micros_since, Phase, Workload, READ_BATCH};

const STREAM: &str = "bench";
const FIELD: &str = "v";

/// Writes then reads `w.records` records.
pub(crate) async fn run(w: &Workload) -> anyhow::Result<(Phase, Phase)> {
    let client = redis::Client::open(w.url.as_str()).context("redis url")?;
    let mut con = client.get_multiplexed_async_connection().await.context("connecting to redis")?;
    let _: () = redis::cmd("DEL").arg(STREAM).query_async(&mut con).await?;
    let payload = vec![0x5a_u8; w.record_size];

    let mut latency = latency_histogram();
    let start = Instant::now();
    let mut sent = 0_u64;
    while sent < w.records {
        let n = (w.records - sent).min(w.batch as u64);
        let mut pipe = redis::pipe();
        for _ in 0..n {
            pipe.cmd("XADD").arg(STREAM).arg("*").arg(FIELD).arg(&payload[..]);
        }
        let t = Instant::now();
        let ids: Vec<String> = pipe.query_async(&mut con).await.context("XADD pipeline")?;
        anyhow::ensure!(ids.len() as u64 == n, "{} ids for {n} XADDs", ids.len());
        latency.record_n(micros_since(t), n)?;
        sent += n;
    }
    let write = Phase {
        kind: "produce",
        records: sent,
        bytes: sent * w.record_size as u64,
        elapsed: start.elapsed(),
        latency: Some(latency),
    };

    let start = Instant::now();
    let (mut records, mut bytes) = (0_u64, 0_u64);
    let mut from = "-".to_string();
    loop {
        let page: StreamRangeReply = redis::cmd("XRANGE")
            .arg(STREAM)
            .arg(&from)
            .arg("+")
            .arg("COUNT")
            .arg(READ_BATCH)
            .query_async(&mut con)
            .await
            .context("XRANGE")?;
        let Some(last) = page.ids.last() else { break };
        for entry in &page.ids {
            match entry.map.get(FIELD) {
                Some(Value::BulkString(v)) => bytes += v.len() as u64,
                other => anyhow::bail!("entry {}: field {FIELD} is {other:?}", entry.id),
            }
        }
        records += page.ids.len() as u64;
        from = format!("({}", last.id);
    }
    let read = Phase { kind: "consume", records, bytes, elapsed: start.elapsed(), latency: None };
    Ok((write, read))
}
