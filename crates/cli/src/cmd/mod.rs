//! One module per command family; [`run`] dispatches to them and builds the
//! client they share.

pub(crate) mod bench;
pub(crate) mod broker;
mod cluster;
mod group;
mod publish;
mod tail;
mod topic;

use anyhow::Context;
use fjord_client::{Client, ClientConfig};

use crate::args::{Cli, Command};

/// Runs the parsed command.
pub(crate) async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Broker(args) => broker::run(args).await,
        Command::Topic { format, command } => {
            topic::run(&connect(&cli.broker, cli.timeout)?, format, command).await
        }
        Command::Cluster { format, command } => {
            cluster::run(&connect(&cli.broker, cli.timeout)?, format, command).await
        }
        Command::Publish(args) => publish::run(connect(&cli.broker, cli.timeout)?, args, cli.timeout).await,
        Command::Tail(args) => tail::run(connect(&cli.broker, cli.timeout)?, args).await,
        Command::Group { format, command } => {
            group::run(&connect(&cli.broker, cli.timeout)?, format, command).await
        }
        Command::Bench { command } => {
            bench::run(connect(&cli.broker, cli.timeout)?, command, cli.timeout).await
        }
    }
}

/// A lazily connecting client: the first request reports an unreachable
/// broker, with the addresses tried.
fn connect(brokers: &str, timeout: std::time::Duration) -> anyhow::Result<Client> {
    let bootstrap = fjord_client::parse_bootstrap(brokers).context("--broker")?;
    // Bound retries by the same timeout so a dead cluster fails in about --timeout, not a minute.
    let config =
        ClientConfig { bootstrap, request_timeout: timeout, retry_deadline: timeout, ..Default::default() };
    Ok(Client::new(config)?)
}
