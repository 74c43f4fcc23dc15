//! `fjord broker`: its flags, their mapping onto [`BrokerConfig`], and the
//! shutdown signal. New broker flags go here and nowhere else.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use fjord_broker::BrokerConfig;
use tokio::signal::unix::{signal, SignalKind};

/// `fjord broker`
#[derive(Debug, Args)]
pub(crate) struct BrokerArgs {
    /// Directory holding topic metadata and partition logs.
    #[arg(long, env = "FJORD_DATA_DIR", default_value = "fjord-data")]
    pub(crate) data_dir: PathBuf,
    /// Address the gRPC server binds.
    #[arg(long, env = "FJORD_LISTEN", default_value = "127.0.0.1:9092")]
    pub(crate) listen: SocketAddr,
}

impl BrokerArgs {
    /// The broker settings these flags describe; everything else keeps its default.
    // `..Default::default()` stays even while every field is set here, so
    // fields the broker adds later keep compiling with their defaults.
    #[allow(clippy::needless_update)]
    pub(crate) fn config(&self) -> BrokerConfig {
        BrokerConfig { data_dir: self.data_dir.clone(), listen: self.listen, ..Default::default() }
    }
}

/// Runs a broker until Ctrl-C or SIGTERM.
pub(crate) async fn run(args: BrokerArgs) -> anyhow::Result<()> {
    let config = args.config();
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let shutdown = async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => tracing::info!("Ctrl-C received, shutting down"),
            _ = term.recv() => tracing::info!("SIGTERM received, shutting down"),
        }
    };
    tracing::info!(data_dir = %config.data_dir.display(), listen = %config.listen, "starting broker");
    fjord_broker::run(config, shutdown).await.context("broker")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::{Cli, Command};
    use clap::Parser;

    #[test]
    fn flags_map_onto_config() {
        let cli =
            Cli::try_parse_from(["fjord", "broker", "--data-dir", "/tmp/x", "--listen", "0.0.0.0:9100"])
                .unwrap();
        let Command::Broker(args) = cli.command else { panic!("not the broker command") };
        let c = args.config();
        assert_eq!(c.data_dir, PathBuf::from("/tmp/x"));
        assert_eq!(c.listen, "0.0.0.0:9100".parse::<SocketAddr>().unwrap());
    }
}
