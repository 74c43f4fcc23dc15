//! The Fjord broker (work in progress: the entry point below is the API the CLI builds against).

use std::net::SocketAddr;
use std::path::PathBuf;

/// Broker settings.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// Directory holding topic metadata and partition logs. Default `fjord-data`.
    pub data_dir: PathBuf,
    /// Address the gRPC server binds. Default `127.0.0.1:9092`.
    pub listen: SocketAddr,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig { data_dir: PathBuf::from("fjord-data"), listen: "127.0.0.1:9092".parse().unwrap() }
    }
}

/// Broker errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Placeholder until the broker lands.
    #[error("broker not built yet")]
    NotBuilt,
}

/// Runs a broker until `shutdown` resolves.
pub async fn run(config: BrokerConfig, shutdown: impl std::future::Future<Output = ()>) -> Result<(), Error> {
    let _ = (config, shutdown);
    Err(Error::NotBuilt)
}
