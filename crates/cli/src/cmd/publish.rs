//! `fjord publish`: one record per stdin line (or one `--value`), sent
//! through the batching producer with many records in flight.
//!
//! Stdin is streamed line by line, never read whole. Deliveries are awaited
//! in the background up to [`OUTSTANDING_MAX`] at a time so a slow broker
//! slows the reader instead of growing memory.

use std::io::IsTerminal;
use std::time::Duration;

use anyhow::{anyhow, bail};
use bytes::Bytes;
use fjord_client::{Acks, Client, Delivery, Producer, ProducerConfig, ProducerRecord};
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use indicatif::{ProgressBar, ProgressStyle};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::args::{AcksArg, PublishArgs};

/// Deliveries awaited at once. Each holds a oneshot channel; the producer's
/// own buffer (32 MiB) bounds the record bytes.
const OUTSTANDING_MAX: usize = 100_000;

/// Counts of what the broker said, and the first failure.
#[derive(Debug, Default)]
struct Tally {
    acked: u64,
    failed: u64,
    first_error: Option<fjord_client::Error>,
}

impl Tally {
    fn absorb(&mut self, result: fjord_client::Result<fjord_client::RecordMetadata>) {
        match result {
            Ok(_) => self.acked += 1,
            Err(e) => {
                self.failed += 1;
                self.first_error.get_or_insert(e);
            }
        }
    }
}

/// Runs `fjord publish`.
pub(crate) async fn run(client: Client, args: PublishArgs, timeout: Duration) -> anyhow::Result<()> {
    let config = ProducerConfig {
        linger: Duration::from_millis(args.linger_ms),
        batch_bytes: args.batch_bytes,
        compression: args.compression,
        idempotent: !args.no_idempotence,
        acks: match args.acks {
            AcksArg::All => Acks::All,
            AcksArg::Leader => Acks::Leader,
        },
        request_timeout: timeout,
        ..Default::default()
    };
    let producer = Producer::new(client, config)?;
    let progress = std::io::stderr().is_terminal().then(spinner);
    let mut pending: FuturesUnordered<Delivery> = FuturesUnordered::new();
    let mut tally = Tally::default();
    let input = read_and_send(&producer, &args, &mut pending, &mut tally, progress.as_ref()).await;
    while let Some(r) = pending.next().await {
        tally.absorb(r);
    }
    producer.close().await?;
    if let Some(p) = progress {
        p.finish_and_clear();
    }
    println!("{} records acknowledged", tally.acked);
    input?;
    if let Some(e) = tally.first_error {
        let total = tally.acked + tally.failed;
        return Err(anyhow!(e).context(format!("{} of {total} records failed; the first", tally.failed)));
    }
    Ok(())
}

fn spinner() -> ProgressBar {
    let p = ProgressBar::new_spinner();
    p.set_style(ProgressStyle::with_template("{spinner} {pos} records sent, {msg}").expect("valid template"));
    p.enable_steady_tick(Duration::from_millis(120));
    p
}

/// Sends every input record; stops at the first input or send error.
async fn read_and_send(
    producer: &Producer,
    args: &PublishArgs,
    pending: &mut FuturesUnordered<Delivery>,
    tally: &mut Tally,
    progress: Option<&ProgressBar>,
) -> anyhow::Result<()> {
    let headers: Vec<(String, Option<Bytes>)> =
        args.headers.iter().map(|(k, v)| (k.clone(), Some(Bytes::from(v.clone())))).collect();
    let make = |key: Option<Bytes>, value: Bytes| ProducerRecord {
        topic: args.topic.clone(),
        partition: args.partition,
        key: key.or_else(|| args.key.clone().map(Bytes::from)),
        value: Some(value),
        headers: headers.clone(),
        timestamp: None,
    };
    if let Some(v) = &args.value {
        pending.push(producer.send(make(None, Bytes::from(v.clone()))).await?);
        return Ok(());
    }
    let mut stdin = BufReader::new(tokio::io::stdin());
    let mut line = Vec::new();
    let mut number = 0u64;
    loop {
        line.clear();
        if stdin.read_until(b'\n', &mut line).await? == 0 {
            return Ok(());
        }
        number += 1;
        let (key, value) = split_line(strip_newline(&line), args.key_separator.as_deref(), number)?;
        pending.push(producer.send(make(key, value)).await?);
        while pending.len() >= OUTSTANDING_MAX {
            let r = pending.next().await.expect("pending is not empty");
            tally.absorb(r);
        }
        while let Some(Some(r)) = pending.next().now_or_never() {
            tally.absorb(r);
        }
        if let Some(p) = progress {
            p.set_position(number);
            p.set_message(format!("{} acknowledged", tally.acked));
        }
    }
}

fn strip_newline(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Splits a line into key and value at the first `sep`, if a separator is set.
fn split_line(line: &[u8], sep: Option<&str>, number: u64) -> anyhow::Result<(Option<Bytes>, Bytes)> {
    let Some(sep) = sep else {
        return Ok((None, Bytes::copy_from_slice(line)));
    };
    let sep = sep.as_bytes();
    match line.windows(sep.len()).position(|w| w == sep) {
        Some(at) => {
            Ok((Some(Bytes::copy_from_slice(&line[..at])), Bytes::copy_from_slice(&line[at + sep.len()..])))
        }
        None => bail!("line {number} has no key separator {:?}", String::from_utf8_lossy(sep)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_split_at_the_first_separator() {
        assert_eq!(strip_newline(b"a\r\n"), b"a");
        assert_eq!(strip_newline(b"a"), b"a");
        let (k, v) = split_line(b"user-1::a::b", Some("::"), 1).unwrap();
        assert_eq!((k.as_deref(), &v[..]), (Some(&b"user-1"[..]), &b"a::b"[..]));
        let (k, v) = split_line(b":v", Some(":"), 1).unwrap();
        assert_eq!((k.as_deref(), &v[..]), (Some(&b""[..]), &b"v"[..]));
        let (k, v) = split_line(b"plain", None, 1).unwrap();
        assert_eq!((k, &v[..]), (None, &b"plain"[..]));
        let err = split_line(b"no-sep", Some("\t"), 42).unwrap_err();
        assert_eq!(err.to_string(), "line 42 has no key separator \"\\t\"");
    }
}
