//! `fjord cluster describe`: the brokers and the controller.

use fjord_client::Client;
use serde_json::json;

use crate::args::{ClusterCommand, TableFormat};
use crate::output::{print_json, Table};

/// Runs a `cluster` subcommand.
pub(crate) async fn run(client: &Client, format: TableFormat, command: ClusterCommand) -> anyhow::Result<()> {
    match command {
        ClusterCommand::Describe => {
            let c = client.describe_cluster().await?;
            match format {
                TableFormat::Json => print_json(&json!({
                    "broker_id": c.broker_id,
                    "controller_id": c.controller_id,
                    "brokers": c.brokers.iter().map(|b| json!({"id": b.id, "address": b.address, "alive": b.alive})).collect::<Vec<_>>(),
                })),
                TableFormat::Table => {
                    let controller = c.controller_id.map_or("none".to_string(), |id| id.to_string());
                    println!("answered by broker {}, controller {controller}", c.broker_id);
                    let mut t = Table::new(&["ID", "ADDRESS", "ALIVE"]);
                    for b in &c.brokers {
                        t.row(vec![b.id.to_string(), b.address.clone(), b.alive.to_string()]);
                    }
                    print!("{}", t.render());
                    Ok(())
                }
            }
        }
    }
}
