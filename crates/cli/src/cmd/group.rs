//! `fjord group list|describe|reset-offsets|delete`: consumer groups.

use fjord_client::{Client, GroupDescription, OffsetReset};
use serde_json::{json, Value};

use crate::args::{GroupCommand, ResetOffsetsArgs, TableFormat};
use crate::output::{print_json, Table};

/// Runs a `group` subcommand.
pub(crate) async fn run(client: &Client, format: TableFormat, command: GroupCommand) -> anyhow::Result<()> {
    match command {
        GroupCommand::List => {
            let groups = client.list_groups().await?;
            match format {
                TableFormat::Json => print_json(&json!(groups)),
                TableFormat::Table => {
                    for g in groups {
                        println!("{g}");
                    }
                    Ok(())
                }
            }
        }
        GroupCommand::Describe { group } => {
            let d = client.describe_group(&group).await?;
            match format {
                TableFormat::Json => print_json(&description_json(&d)),
                TableFormat::Table => {
                    print!("{}", description_text(&d));
                    Ok(())
                }
            }
        }
        GroupCommand::ResetOffsets(args) => reset(client, format, args).await,
        GroupCommand::Delete { group } => {
            client.delete_group(&group).await?;
            match format {
                TableFormat::Json => print_json(&json!({"deleted": group})),
                TableFormat::Table => {
                    println!("deleted group {group}");
                    Ok(())
                }
            }
        }
    }
}

async fn reset(client: &Client, format: TableFormat, args: ResetOffsetsArgs) -> anyhow::Result<()> {
    let to = if args.to_earliest {
        OffsetReset::Earliest
    } else if args.to_latest {
        OffsetReset::Latest
    } else if let Some(o) = args.to_offset {
        OffsetReset::Offset(o)
    } else if let Some(ts) = args.to_time {
        OffsetReset::Timestamp(ts)
    } else {
        anyhow::bail!("give one of --to-earliest, --to-latest, --to-offset N, --to-time TIME");
    };
    let offsets = client.reset_offsets(&args.group, &args.topic, to).await?;
    match format {
        TableFormat::Json => print_json(&Value::Array(
            offsets
                .iter()
                .map(|o| json!({"topic": o.topic, "partition": o.partition, "offset": o.offset}))
                .collect(),
        )),
        TableFormat::Table => {
            let mut t = Table::new(&["TOPIC", "PARTITION", "NEW-OFFSET"]);
            for o in offsets {
                t.row(vec![o.topic, o.partition.to_string(), o.offset.to_string()]);
            }
            print!("{}", t.render());
            Ok(())
        }
    }
}

fn pairs_json(list: &[(String, u32)]) -> Value {
    Value::Array(list.iter().map(|(t, p)| json!({"topic": t, "partition": p})).collect())
}

fn description_json(d: &GroupDescription) -> Value {
    json!({
        "group_id": d.group_id,
        "state": d.state,
        "group_epoch": d.group_epoch,
        "assignor": d.assignor,
        "coordinator_id": d.coordinator_id,
        "members": d.members.iter().map(|m| json!({
            "member_id": m.member_id,
            "member_epoch": m.member_epoch,
            "client_id": m.client_id,
            "client_host": m.client_host,
            "topics": m.topics,
            "owned": pairs_json(&m.owned),
            "assigned": pairs_json(&m.assigned),
        })).collect::<Vec<_>>(),
        "partitions": d.partitions.iter().map(|p| json!({
            "topic": p.topic,
            "partition": p.partition,
            "member_id": p.member_id,
            "committed": p.committed,
            "log_end": p.log_end,
            "lag": p.lag,
            "lag_ms": p.lag_ms,
        })).collect::<Vec<_>>(),
    })
}

fn description_text(d: &GroupDescription) -> String {
    let dash = |v: Option<u64>| v.map_or("-".to_string(), |v| v.to_string());
    let mut out = format!(
        "group {}: {}, epoch {}, assignor {}, coordinator broker {}, {} member(s)\n",
        d.group_id,
        d.state,
        d.group_epoch,
        if d.assignor.is_empty() { "-" } else { &d.assignor },
        d.coordinator_id,
        d.members.len()
    );
    let mut t = Table::new(&["TOPIC", "PARTITION", "MEMBER", "COMMITTED", "END", "LAG", "LAG_S"]);
    for p in &d.partitions {
        t.row(vec![
            p.topic.clone(),
            p.partition.to_string(),
            p.member_id.clone().unwrap_or_else(|| "-".into()),
            dash(p.committed),
            dash(p.log_end),
            dash(p.lag),
            p.lag_ms.map_or("-".to_string(), |ms| format!("{:.1}", ms as f64 / 1000.0)),
        ]);
    }
    out.push_str(&t.render());
    if !d.members.is_empty() {
        let mut t = Table::new(&["MEMBER", "EPOCH", "CLIENT", "HOST", "OWNED"]);
        for m in &d.members {
            let owned: Vec<String> = m.owned.iter().map(|(t, p)| format!("{t}/{p}")).collect();
            t.row(vec![
                m.member_id.clone(),
                m.member_epoch.to_string(),
                m.client_id.clone(),
                m.client_host.clone(),
                owned.join(","),
            ]);
        }
        out.push('\n');
        out.push_str(&t.render());
    }
    out
}
