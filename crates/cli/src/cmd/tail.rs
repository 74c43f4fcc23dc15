//! `fjord tail`: prints records of a topic, in offset order per partition.
//!
//! Kafka console consumer semantics: without a position flag, start at the
//! end and follow. With one, stop at the high watermark observed at start
//! (so `tail --from-beginning` prints what exists and exits) unless
//! `--follow` is given. With `--group`, it is a consumer-group member
//! instead: the group decides partitions and positions.

use std::io::{BufWriter, Write};

use fjord_client::{
    AutoOffsetReset, Client, Consumer, ConsumerConfig, GroupConsumer, GroupConsumerConfig, GroupEvent,
    OffsetSpec, Seek,
};

use crate::args::{RecordFormat, TailArgs};
use crate::output::{write_json, write_text};

/// Runs `fjord tail`.
pub(crate) async fn run(client: Client, args: TailArgs) -> anyhow::Result<()> {
    if let Some(group) = args.group.clone() {
        return run_group(client, &group, args).await;
    }
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

/// `tail --group`: a group member that prints what it is handed, commits
/// every `--commit-interval`, and on `--limit`, Ctrl-C or SIGTERM commits
/// what it printed and leaves the group. Only records written to stdout
/// count as consumed: if writing one fails (`| head` closed the pipe), the
/// member seeks back to it, so the commit on leaving stops before it.
async fn run_group(client: Client, group: &str, args: TailArgs) -> anyhow::Result<()> {
    let mut config = GroupConsumerConfig::new(group, &[args.topic.as_str()]);
    config.session_timeout = args.session_timeout;
    config.auto_commit_interval = args.commit_interval;
    config.assignor = args.assignor.clone();
    config.client_id = format!("fjord-tail-{}", std::process::id());
    if args.from_beginning {
        config.auto_offset_reset = AutoOffsetReset::Earliest;
    }
    let mut consumer = GroupConsumer::new(client.clone(), config)?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut out = std::io::stdout();
    let mut line = Vec::new();
    let mut printed = 0u64;
    let result: anyhow::Result<()> = async {
        while args.limit.is_none_or(|limit| printed < limit) {
            let event = tokio::select! {
                ev = consumer.poll() => match ev {
                    Ok(ev) => ev,
                    Err(e) => return Err(explain_refusal(&client, group, &args.assignor, e).await),
                },
                _ = tokio::signal::ctrl_c() => break,
                _ = term.recv() => break,
            };
            match event {
                GroupEvent::Record(rec) => {
                    line.clear();
                    match args.format {
                        RecordFormat::Text => write_text(&mut line, &rec)?,
                        RecordFormat::Json => write_json(&mut line, &rec)?,
                    }
                    // Written and flushed before the next poll, which may commit it.
                    if let Err(e) = out.write_all(&line).and_then(|()| out.flush()) {
                        consumer.seek(&rec.topic, rec.partition, rec.offset)?;
                        return Err(anyhow::Error::new(e).context("writing to stdout"));
                    }
                    printed += 1;
                }
                GroupEvent::Assigned(ps) => tracing::info!(partitions = ?ps, "assigned"),
                GroupEvent::Revoked(ps) => tracing::info!(partitions = ?ps, "revoked"),
            }
        }
        Ok(())
    }
    .await;
    let closed = consumer.close().await;
    result?;
    Ok(closed?)
}

/// A refusal from the coordinator, worded for this command: a member
/// whose assignor differs from the group's is told the `--assignor` to pass.
async fn explain_refusal(client: &Client, group: &str, asked: &str, e: fjord_client::Error) -> anyhow::Error {
    let fjord_client::Error::InvalidArgument { message } = &e else { return e.into() };
    if !message.contains("assignor") {
        return e.into();
    }
    let asked =
        if asked.is_empty() { "the default assignor".to_string() } else { format!("--assignor {asked}") };
    let fix = match client.describe_group(group).await {
        Ok(d) if !d.assignor.is_empty() => format!("run with --assignor {}", d.assignor),
        _ => "run with the group's --assignor (see `fjord group describe`)".to_string(),
    };
    anyhow::Error::new(e).context(format!(
        "group {group:?} uses another assignor than {asked}; every member must use the group's: {fix}"
    ))
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
