//! `fjord topic create|list|describe|delete`.

use fjord_client::{Client, TopicDescription, TopicSettings};
use serde_json::{json, Value};

use crate::args::{CreateTopicArgs, TableFormat, TopicCommand, TopicSettingsArgs};
use crate::output::{print_json, Table};

/// Runs a `topic` subcommand.
pub(crate) async fn run(client: &Client, format: TableFormat, command: TopicCommand) -> anyhow::Result<()> {
    match command {
        TopicCommand::Create(args) => create(client, format, args).await,
        TopicCommand::List => {
            let topics = client.list_topics().await?;
            if format == TableFormat::Json {
                let list: Vec<Value> = topics
                    .iter()
                    .map(|t| json!({"name": t.name, "partitions": t.partitions, "replication_factor": t.replication_factor}))
                    .collect();
                return print_json(&Value::Array(list));
            }
            let mut t = Table::new(&["NAME", "PARTITIONS", "REPLICATION"]);
            for topic in topics {
                t.row(vec![topic.name, topic.partitions.to_string(), topic.replication_factor.to_string()]);
            }
            print!("{}", t.render());
            Ok(())
        }
        TopicCommand::Describe { name } => {
            let d = client.describe_topic(&name).await?;
            match format {
                TableFormat::Json => print_json(&description_json(&d)),
                TableFormat::Table => {
                    print!("{}", description_text(&d));
                    Ok(())
                }
            }
        }
        TopicCommand::Alter(args) => {
            let s = settings(args.settings);
            let d = match args.partitions {
                Some(n) if s == TopicSettings::default() => client.add_partitions(&args.name, n).await?,
                Some(n) => {
                    client.alter_topic(&args.name, s).await?;
                    client.add_partitions(&args.name, n).await?
                }
                None => client.alter_topic(&args.name, s).await?,
            };
            match format {
                TableFormat::Json => print_json(&description_json(&d)),
                TableFormat::Table => {
                    print!("{}", description_text(&d));
                    Ok(())
                }
            }
        }
        TopicCommand::Scrub { name } => scrub(client, format, &name).await,
        TopicCommand::Delete { name } => {
            client.delete_topic(&name).await?;
            match format {
                TableFormat::Json => print_json(&json!({"deleted": name})),
                TableFormat::Table => {
                    println!("deleted topic {name}");
                    Ok(())
                }
            }
        }
    }
}

/// `fjord topic scrub`: one row per replica, one line per damaged range.
async fn scrub(client: &Client, format: TableFormat, name: &str) -> anyhow::Result<()> {
    let replicas = client.scrub_topic(name).await?;
    let unrepaired = replicas.iter().flat_map(|r| &r.damaged).filter(|d| !d.repaired).count();
    let failed = replicas.iter().filter(|r| r.error.is_some()).count();
    match format {
        TableFormat::Json => {
            let list: Vec<Value> = replicas
                .iter()
                .map(|r| {
                    json!({
                        "broker": r.broker, "partition": r.partition, "segments": r.segments,
                        "bytes": r.bytes, "batches": r.batches, "error": r.error,
                        "index_damage": r.index_damage,
                        "damaged": r.damaged.iter().map(|d| json!({
                            "start_offset": d.start_offset, "end_offset": d.end_offset, "bytes": d.bytes,
                            "reason": d.reason, "repaired": d.repaired, "repair_error": d.repair_error,
                        })).collect::<Vec<_>>(),
                    })
                })
                .collect();
            print_json(&Value::Array(list))?;
        }
        TableFormat::Table => {
            let mut t =
                Table::new(&["PARTITION", "BROKER", "SEGMENTS", "BYTES", "BATCHES", "DAMAGED", "REPAIRED"]);
            for r in &replicas {
                let repaired = r.damaged.iter().filter(|d| d.repaired).count();
                t.row(vec![
                    r.partition.to_string(),
                    r.broker.to_string(),
                    r.segments.to_string(),
                    r.bytes.to_string(),
                    r.batches.to_string(),
                    r.damaged.len().to_string(),
                    repaired.to_string(),
                ]);
            }
            print!("{}", t.render());
            for r in &replicas {
                let at = format!("partition {} on broker {}", r.partition, r.broker);
                if let Some(e) = &r.error {
                    println!("{at}: not scrubbed: {e}");
                }
                for d in &r.damaged {
                    let outcome = match (&d.repaired, &d.repair_error) {
                        (true, _) => "repaired from another replica".to_string(),
                        (false, Some(e)) => format!("NOT repaired, not served: {e}"),
                        (false, None) => "NOT repaired, not served".to_string(),
                    };
                    println!(
                        "{at}: offsets [{}, {}) ({} bytes) damaged: {}; {outcome}",
                        d.start_offset, d.end_offset, d.bytes, d.reason
                    );
                }
                for line in &r.index_damage {
                    println!("{at}: {line}");
                }
            }
        }
    }
    if unrepaired > 0 || failed > 0 {
        anyhow::bail!("{unrepaired} damaged range(s) not repaired and {failed} replica(s) not scrubbed");
    }
    Ok(())
}

fn settings(a: TopicSettingsArgs) -> TopicSettings {
    TopicSettings {
        retention_ms: a.retention_ms,
        retention_bytes: a.retention_bytes,
        segment_bytes: a.segment_bytes,
        segment_ms: a.segment_ms,
        compression: a.compression,
        cleanup_policy: a.cleanup_policy,
        delete_retention_ms: a.delete_retention_ms,
        min_cleanable_dirty_ratio: a.min_cleanable_dirty_ratio,
        min_compaction_lag_ms: a.min_compaction_lag_ms,
        max_compaction_lag_ms: a.max_compaction_lag_ms,
    }
}

async fn create(client: &Client, format: TableFormat, args: CreateTopicArgs) -> anyhow::Result<()> {
    let settings = settings(args.settings);
    let d = client
        .create_topic(&args.name, args.partitions, args.replication_factor.unwrap_or(0), settings)
        .await?;
    match format {
        TableFormat::Json => print_json(&description_json(&d)),
        TableFormat::Table => {
            println!(
                "created topic {} with {} partitions, replication factor {}",
                d.name,
                d.partitions.len(),
                d.replication_factor
            );
            Ok(())
        }
    }
}

fn settings_json(s: &TopicSettings) -> Value {
    json!({
        "retention_ms": s.retention_ms,
        "retention_bytes": s.retention_bytes,
        "segment_bytes": s.segment_bytes,
        "segment_ms": s.segment_ms,
        "compression": s.compression,
        "cleanup_policy": s.cleanup_policy,
        "delete_retention_ms": s.delete_retention_ms,
        "min_cleanable_dirty_ratio": s.min_cleanable_dirty_ratio,
        "min_compaction_lag_ms": s.min_compaction_lag_ms,
        "max_compaction_lag_ms": s.max_compaction_lag_ms,
    })
}

fn description_json(d: &TopicDescription) -> Value {
    let partitions: Vec<Value> = d
        .partitions
        .iter()
        .map(|p| {
            json!({
                "partition": p.partition,
                "leader": p.leader,
                "replicas": p.replicas,
                "in_sync_replicas": p.in_sync_replicas,
                "log_start_offset": p.log_start_offset,
                "log_end_offset": p.log_end_offset,
                "high_watermark": p.high_watermark,
                "size_bytes": p.size_bytes,
                "dirty_ratio": p.dirty_ratio,
                "last_compaction_ms": p.last_compaction_ms,
                "damaged": p.damaged.iter().map(|d| json!({
                    "start_offset": d.start_offset,
                    "end_offset": d.end_offset,
                    "bytes": d.bytes,
                    "reason": d.reason,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({
        "name": d.name,
        "replication_factor": d.replication_factor,
        "config": settings_json(&d.settings),
        "partitions": partitions,
    })
}

fn description_text(d: &TopicDescription) -> String {
    let opt = |v: Option<String>| v.unwrap_or_else(|| "default".into());
    let s = &d.settings;
    let mut out = format!(
        "topic {}  replication factor {}\nretention.ms={} retention.bytes={} segment.bytes={} segment.ms={} compression={} cleanup.policy={}\n",
        d.name,
        d.replication_factor,
        opt(s.retention_ms.map(|v| v.to_string())),
        opt(s.retention_bytes.map(|v| v.to_string())),
        opt(s.segment_bytes.map(|v| v.to_string())),
        opt(s.segment_ms.map(|v| v.to_string())),
        opt(s.compression.clone()),
        opt(s.cleanup_policy.clone()),
    );
    let ids = |v: &[u64]| v.iter().map(u64::to_string).collect::<Vec<_>>().join(",");
    let mut t = Table::new(&[
        "PARTITION",
        "LEADER",
        "REPLICAS",
        "ISR",
        "LOG-START",
        "LOG-END",
        "HIGH-WATERMARK",
        "SIZE",
    ]);
    for p in &d.partitions {
        t.row(vec![
            p.partition.to_string(),
            p.leader.map_or("none".into(), |l| l.to_string()),
            ids(&p.replicas),
            ids(&p.in_sync_replicas),
            p.log_start_offset.to_string(),
            p.log_end_offset.to_string(),
            p.high_watermark.to_string(),
            p.size_bytes.to_string(),
        ]);
    }
    out.push_str(&t.render());
    for p in &d.partitions {
        for r in &p.damaged {
            out.push_str(&format!(
                "partition {}: offsets [{}, {}) ({} bytes) damaged on this broker's replica, not served until \
                 repaired (fjord topic scrub {}): {}\n",
                p.partition, r.start_offset, r.end_offset, r.bytes, d.name, r.reason
            ));
        }
    }
    out.push_str(OFFSETS_NOTE);
    out.push('\n');
    out
}

/// Printed under the partition table: a reader who subtracts offsets to
/// count records gets a wrong answer after any leader election.
const OFFSETS_NOTE: &str = "offsets can skip: each new leader (after an election or a restart) \
writes a control record that takes an offset but is never read, so HIGH-WATERMARK - LOG-START \
can exceed the number of records";

#[cfg(test)]
mod tests {
    use super::*;
    use fjord_client::PartitionDescription;

    #[test]
    fn describe_renders_partitions() {
        let d = TopicDescription {
            name: "events".into(),
            replication_factor: 3,
            settings: TopicSettings { retention_ms: Some(-1), ..Default::default() },
            partitions: vec![PartitionDescription {
                partition: 0,
                leader: Some(2),
                replicas: vec![1, 2, 3],
                in_sync_replicas: vec![2, 3],
                log_start_offset: 0,
                log_end_offset: 10,
                high_watermark: 9,
                size_bytes: 4096,
                damaged: Vec::new(),
                dirty_ratio: 0.0,
                last_compaction_ms: None,
            }],
        };
        let text = description_text(&d);
        assert!(
            text.starts_with("topic events  replication factor 3\nretention.ms=-1 retention.bytes=default")
        );
        assert!(
            text.ends_with(&format!(
                "0          2       1,2,3     2,3  0          10       9               4096\n{OFFSETS_NOTE}\n"
            )),
            "{text}"
        );
        let j = description_json(&d);
        assert_eq!(j["partitions"][0]["in_sync_replicas"], json!([2, 3]));
        assert_eq!(j["config"]["retention_ms"], json!(-1));
        assert_eq!(j["config"]["segment_ms"], Value::Null);
    }
}
