//! `fjord tail`: prints records of a topic, in offset order per partition.
//!
//! Kafka console consumer semantics: without a position flag, start at the
//! end and follow. With one, stop at the high watermark observed at start
//! (so `tail --from-beginning` prints what exists and exits) unless
//! `--follow` is given.

use std::io::{BufWriter, Write};

use fjord_client::{Client, Consumer, ConsumerConfig, OffsetSpec, Seek};

use crate::args::{RecordFormat, TailArgs};
use crate::output::{write_json, write_text};

/// Runs `fjord tail`.
pub(crate) async fn run(client: Client, args: TailArgs) -> anyhow::Result<()> {
    let (start, follow) = position(&args);
    let mut consumer = Consumer::new(client.clone(), ConsumerConfig { start, ..Default::default() });
    let partitions = args.partition.map(|p| vec![p]);
    consumer.assign(&args.topic, partitions.as_deref()).await?;
    if let Some(offset) = args.offset {
        // An explicit offset outside a partition's log is a mistake to
        // report, not a position to wait at.
        for (topic, p) in consumer.assignment() {
            let o = client.list_offsets(&topic, p, OffsetSpec::Earliest).await?;
            if offset < o.log_start_offset || offset > o.high_watermark {
                anyhow::bail!(
                    "offset {offset} is out of range for {topic}/{p}: valid offsets are [{}, {}]",
                    o.log_start_offset,
                    o.high_watermark
                );
            }
        }
    }
    if !follow {
        consumer.stop_at_high_watermark().await?;
    }
    let mut out = BufWriter::new(std::io::stdout());
    let mut printed = 0u64;
    while args.limit.is_none_or(|limit| printed < limit) {
        let Some(rec) = consumer.next().await else { break };
        let rec = rec?;
        match args.format {
            RecordFormat::Text => write_text(&mut out, &rec)?,
            RecordFormat::Json => write_json(&mut out, &rec)?,
        }
        printed += 1;
        if follow {
            out.flush()?;
        }
    }
    out.flush()?;
    Ok(())
}

/// Where to start, and whether to keep following after the current end.
fn position(args: &TailArgs) -> (Seek, bool) {
    let start = if args.from_beginning {
        Seek::Beginning
    } else if let Some(o) = args.offset {
        Seek::Offset(o)
    } else if let Some(ts) = args.since {
        Seek::Timestamp(ts)
    } else if let Some(n) = args.last {
        Seek::FromEnd(n)
    } else {
        return (Seek::End, true);
    };
    (start, args.follow)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::{Cli, Command};
    use clap::Parser;

    fn parse(flags: &[&str]) -> (Seek, bool) {
        let argv = ["fjord", "tail", "t"].iter().chain(flags).copied();
        let Command::Tail(args) = Cli::try_parse_from(argv).unwrap().command else { panic!("not tail") };
        position(&args)
    }

    #[test]
    fn positions_follow_kafka_console_consumer() {
        assert_eq!(parse(&[]), (Seek::End, true));
        assert_eq!(parse(&["--follow"]), (Seek::End, true));
        assert_eq!(parse(&["--from-beginning"]), (Seek::Beginning, false));
        assert_eq!(parse(&["--from-beginning", "--follow"]), (Seek::Beginning, true));
        assert_eq!(parse(&["--offset", "5"]), (Seek::Offset(5), false));
        assert_eq!(parse(&["--last", "3"]), (Seek::FromEnd(3), false));
        assert_eq!(parse(&["--since", "2024-05-01T12:00:00Z"]), (Seek::Timestamp(1_714_564_800_000), false));
    }
}
