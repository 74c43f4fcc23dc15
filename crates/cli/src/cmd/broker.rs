//! `fjord broker`: its flags, their mapping onto [`BrokerConfig`], and the
//! shutdown signal. New broker flags go here and nowhere else.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use fjord_broker::{BrokerConfig, FlushPolicy};
use tokio::signal::unix::{signal, SignalKind};

/// `fjord broker`. Every flag is also a key of the `--config` file (its
/// long name with `_`) and an environment variable `FJORD_<KEY>`; a flag
/// beats the environment, which beats the file (see [`crate::config_file`]).
#[derive(Debug, Args)]
pub(crate) struct BrokerArgs {
    /// A TOML file of settings: each key is a flag's long name with `_`
    /// (`data_dir = "/var/lib/fjord"`). Unknown keys are an error.
    #[arg(long, env = "FJORD_CONFIG", value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,
    /// Print the effective settings, each with where it came from (flag,
    /// environment, file or default), and exit.
    #[arg(long)]
    pub(crate) print_config: bool,
    /// Directory holding topic metadata and partition logs.
    #[arg(long, env = "FJORD_DATA_DIR", default_value = "fjord-data")]
    pub(crate) data_dir: PathBuf,
    /// Address the gRPC server binds (port 0 picks a free port; the address is printed on stdout).
    #[arg(long, env = "FJORD_LISTEN", default_value = "127.0.0.1:9092")]
    pub(crate) listen: SocketAddr,
    /// This broker's id (at least 1).
    #[arg(long, visible_alias = "id", env = "FJORD_BROKER_ID", default_value_t = 1)]
    pub(crate) broker_id: u64,
    /// When appends are fsynced: `always` (before acknowledging; the
    /// default), `never` (left to the OS), or an interval such as `200ms`.
    #[arg(long, env = "FJORD_FLUSH", default_value = "always", value_parser = parse_flush)]
    pub(crate) flush: FlushPolicy,
    /// Largest record batch accepted, in bytes (at most 64 MiB).
    #[arg(long, env = "FJORD_BATCH_BYTES_MAX", default_value_t = fjord_broker::BATCH_BYTES_MAX_DEFAULT)]
    pub(crate) batch_bytes_max: usize,
    /// Most concurrent client connections.
    #[arg(long, env = "FJORD_MAX_CONNECTIONS", default_value_t = fjord_broker::CONNECTIONS_MAX_DEFAULT)]
    pub(crate) max_connections: usize,
    /// Most concurrent connections from one IP address (the other brokers'
    /// are exempt). Default: a quarter of --max-connections.
    #[arg(long, env = "FJORD_MAX_CONNECTIONS_PER_SOURCE", value_name = "N")]
    pub(crate) max_connections_per_source: Option<usize>,
    /// Close a connection with no request in flight for this long, e.g. `10m`.
    #[arg(long, env = "FJORD_IDLE_CONNECTION_TIMEOUT", default_value = "10m", value_parser = humantime::parse_duration)]
    pub(crate) idle_connection_timeout: std::time::Duration,
    /// Every broker of the cluster, `ID=HOST:PORT,...` (client addresses; the
    /// same list on every broker). Without it the broker is a cluster of one.
    #[arg(long, env = "FJORD_PEERS", value_parser = parse_peers)]
    pub(crate) peers: Option<BTreeMap<u64, String>>,
    /// Replication factor of topics created without one (capped at the cluster size).
    #[arg(long, env = "FJORD_DEFAULT_REPLICATION_FACTOR", default_value_t = 3)]
    pub(crate) default_replication_factor: u32,
    /// Accept fault-injection requests from tests (network partitions). Never in production.
    #[arg(long, hide = true, env = "FJORD_ENABLE_FAULT_INJECTION")]
    pub(crate) enable_fault_injection: bool,
    /// Free bytes the data directory's filesystem must keep: below it,
    /// produce requests are refused (reads, commits and deletes go on).
    /// Default: the smaller of 1 GiB and 5% of the volume.
    #[arg(long, env = "FJORD_MIN_FREE_BYTES")]
    pub(crate) min_free_bytes: Option<u64>,
    /// How often retention and interval flushes run, e.g. `5s`.
    #[arg(long, env = "FJORD_MAINTENANCE_INTERVAL", default_value = "5s", value_parser = humantime::parse_duration)]
    pub(crate) maintenance_interval: std::time::Duration,
    /// How often a background scrub re-reads every closed segment of this
    /// broker's replicas and repairs damage from another replica, e.g.
    /// `24h`, or `none`.
    #[arg(long, env = "FJORD_SCRUB_INTERVAL", default_value = "24h", value_name = "DURATION|none",
          value_parser = parse_scrub_interval)]
    pub(crate) scrub_interval: ScrubInterval,
    /// Read rate of background scrubs in bytes per second; 0 for no limit.
    #[arg(long, env = "FJORD_SCRUB_BYTES_PER_SEC", default_value_t = fjord_broker::SCRUB_BYTES_PER_SEC_DEFAULT)]
    pub(crate) scrub_bytes_per_sec: u64,
    /// Segment size of the compacted `__consumer_offsets` topic, in bytes,
    /// applied when it is created: only closed segments are compacted.
    #[arg(long, env = "FJORD_OFFSETS_SEGMENT_BYTES", default_value_t = fjord_broker::OFFSETS_SEGMENT_BYTES_DEFAULT)]
    pub(crate) offsets_segment_bytes: u64,
    /// Address of the Prometheus metrics endpoint (`/metrics`), or `none`.
    /// Port 0 picks a free port, printed on stdout after the listening line.
    #[arg(long, env = "FJORD_METRICS_LISTEN", default_value = fjord_broker::METRICS_LISTEN_DEFAULT,
          value_name = "ADDR|none", value_parser = parse_metrics_listen)]
    pub(crate) metrics_listen: MetricsListen,
}

/// `--scrub-interval`: a duration, or none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ScrubInterval(Option<std::time::Duration>);

fn parse_scrub_interval(s: &str) -> Result<ScrubInterval, String> {
    if s.eq_ignore_ascii_case("none") {
        return Ok(ScrubInterval(None));
    }
    match humantime::parse_duration(s) {
        Ok(d) if d.as_millis() >= 1 => Ok(ScrubInterval(Some(d))),
        _ => Err(format!("expected a duration like 24h or none, got {s:?}")),
    }
}

/// `--metrics-listen`: an address, or none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct MetricsListen(Option<SocketAddr>);

fn parse_metrics_listen(s: &str) -> Result<MetricsListen, String> {
    if s.eq_ignore_ascii_case("none") {
        return Ok(MetricsListen(None));
    }
    s.parse().map(|a| MetricsListen(Some(a))).map_err(|_| format!("expected HOST:PORT or none, got {s:?}"))
}

fn parse_peers(s: &str) -> Result<BTreeMap<u64, String>, String> {
    let mut peers = BTreeMap::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (id, addr) =
            part.split_once('=').ok_or_else(|| format!("expected ID=HOST:PORT, got {part:?}"))?;
        let id: u64 = id.trim().parse().map_err(|_| format!("broker id {id:?} is not a number"))?;
        if id == 0 {
            return Err("broker ids start at 1".into());
        }
        if addr.trim().rsplit_once(':').is_none_or(|(_, port)| port.parse::<u16>().is_err()) {
            return Err(format!("address {addr:?} of broker {id} is not HOST:PORT"));
        }
        if peers.insert(id, addr.trim().to_string()).is_some() {
            return Err(format!("broker id {id} appears twice"));
        }
    }
    if peers.is_empty() {
        return Err("the peers list is empty".into());
    }
    Ok(peers)
}

fn parse_flush(s: &str) -> Result<FlushPolicy, String> {
    match s {
        "always" => Ok(FlushPolicy::Always),
        "never" => Ok(FlushPolicy::Never),
        other => match humantime::parse_duration(other) {
            Ok(d) if d.as_millis() >= 1 => Ok(FlushPolicy::IntervalMs(d.as_millis() as u64)),
            _ => Err(format!("expected always, never or an interval like 200ms, got {other:?}")),
        },
    }
}

impl BrokerArgs {
    /// The broker settings these flags describe; everything else keeps its default.
    pub(crate) fn config(&self) -> BrokerConfig {
        BrokerConfig {
            data_dir: self.data_dir.clone(),
            listen: self.listen,
            broker_id: self.broker_id,
            flush: self.flush,
            batch_bytes_max: self.batch_bytes_max,
            connections_max: self.max_connections,
            connections_per_source_max: self.max_connections_per_source,
            idle_connection_timeout: self.idle_connection_timeout,
            maintenance_interval: self.maintenance_interval,
            peers: self.peers.clone().unwrap_or_default(),
            default_replication_factor: self.default_replication_factor,
            fault_injection: self.enable_fault_injection,
            min_free_bytes: self.min_free_bytes,
            metrics_listen: self.metrics_listen.0,
            scrub_interval: self.scrub_interval.0,
            scrub_bytes_per_sec: self.scrub_bytes_per_sec,
            offsets_segment_bytes: self.offsets_segment_bytes,
            ..Default::default()
        }
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
        assert_eq!(c.flush, FlushPolicy::Always);
    }

    #[test]
    fn peers_parse_and_bad_lists_are_refused() {
        let p = parse_peers("1=127.0.0.1:9092, 2=127.0.0.1:9093").unwrap();
        assert_eq!(p.get(&2).map(String::as_str), Some("127.0.0.1:9093"));
        for bad in ["", "1", "x=a:1", "0=a:1", "1=a", "1=a:1,1=b:2"] {
            assert!(parse_peers(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn metrics_listen_is_an_address_or_none() {
        assert_eq!(parse_metrics_listen("none"), Ok(MetricsListen(None)));
        assert_eq!(
            parse_metrics_listen("127.0.0.1:0"),
            Ok(MetricsListen(Some("127.0.0.1:0".parse().unwrap())))
        );
        assert!(parse_metrics_listen("9644").is_err());
        let cli = Cli::try_parse_from(["fjord", "broker"]).unwrap();
        let Command::Broker(args) = cli.command else { panic!("not the broker command") };
        if std::env::var_os("FJORD_METRICS_LISTEN").is_none() {
            assert_eq!(
                args.config().metrics_listen,
                Some("127.0.0.1:9644".parse().unwrap()),
                "on by default"
            );
        }
    }

    #[test]
    fn flush_policies_parse() {
        assert_eq!(parse_flush("never"), Ok(FlushPolicy::Never));
        assert_eq!(parse_flush("250ms"), Ok(FlushPolicy::IntervalMs(250)));
        assert!(parse_flush("sometimes").is_err());
        assert!(parse_flush("0ms").is_err());
    }
}
