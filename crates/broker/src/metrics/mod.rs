//! Prometheus metrics of one broker, served at `/metrics` on their own
//! listener (`--metrics-listen`). `docs/metrics.md` is the table of every
//! family; keep the two in step.
//!
//! Built on `prometheus-client`, the Prometheus project's own Rust client:
//! typed families with label sets, the Prometheus text format, and a
//! [`Collector`] hook, so that nothing here formats exposition text by hand.
//!
//! Two kinds of metric, kept apart on purpose:
//! - **Events** (RPC latency and outcome, fsync latency, open connections)
//!   are recorded as they happen into the instruments of [`Metrics`]: a
//!   histogram update or an atomic add, nothing that allocates per call
//!   once a label set exists.
//! - **State** (partitions, offsets, sizes, Raft, consumer groups, disk)
//!   is read from the broker when Prometheus scrapes ([`state`]), so the
//!   hot paths pay nothing for it and a scrape always shows the present.
//!   Produce and fetch counters live as plain atomics in each partition
//!   (`Partition::traffic`) and are read the same way.
//!
//! [`Collector`]: prometheus_client::collector::Collector

mod http;
mod rpc;
mod state;

use std::net::SocketAddr;
use std::sync::Arc;

use fjord_storage::FsyncObserver;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::broker::Broker;
use crate::groups::Coordinator;
use crate::{Error, Result};

pub(crate) use rpc::{CountedConns, RpcLayer};

/// Upper bounds of the fsync latency buckets: 50 µs doubling to 1.6 s
/// (16 buckets). An NVMe fdatasync takes tens of µs, a cloud volume a few
/// ms, and anything near a second is an incident.
const FSYNC_BUCKETS_FIRST_SECONDS: f64 = 0.000_05;
const FSYNC_BUCKETS: u16 = 16;

/// The event instruments of one broker, shared by the RPC layer, the
/// connection counter and the storage fsync hook.
#[derive(Debug)]
pub(crate) struct Metrics {
    rpc: rpc::RpcMetrics,
    fsync_seconds: Histogram,
    connections_open: Gauge,
}

impl Metrics {
    pub(crate) fn new() -> Arc<Metrics> {
        Arc::new(Metrics {
            rpc: rpc::RpcMetrics::default(),
            fsync_seconds: Histogram::new(exponential_buckets(
                FSYNC_BUCKETS_FIRST_SECONDS,
                2.0,
                FSYNC_BUCKETS,
            )),
            connections_open: Gauge::default(),
        })
    }

    /// The hook that storage calls with each fsync's duration.
    pub(crate) fn fsync_observer(&self) -> FsyncObserver {
        let h = self.fsync_seconds.clone();
        FsyncObserver::new(move |d| h.observe(d.as_secs_f64()))
    }

    /// The tower layer that times every gRPC request.
    pub(crate) fn rpc_layer(self: &Arc<Self>) -> RpcLayer {
        RpcLayer::new(self.clone())
    }

    /// Wraps accepted connections so that `fjord_connections_open` counts them.
    pub(crate) fn count_connections<S>(self: &Arc<Self>, incoming: S) -> CountedConns<S> {
        CountedConns::new(incoming, self.connections_open.clone())
    }

    /// A registry of every family: these instruments plus the state read
    /// at scrape time from `broker` and `coordinator`.
    pub(crate) fn registry(&self, broker: Arc<Broker>, coordinator: Arc<Coordinator>) -> Registry {
        let mut r = Registry::default();
        self.rpc.register(&mut r);
        r.register(
            "fjord_fsync_duration_seconds",
            "Duration of data fsyncs of partition and metadata logs (group commits and segment seals)",
            self.fsync_seconds.clone(),
        );
        r.register(
            "fjord_connections_open",
            "Client and peer connections open",
            self.connections_open.clone(),
        );
        r.register_collector(Box::new(state::StateCollector::new(broker, coordinator)));
        r
    }
}

/// Binds the metrics endpoint's address (before the broker starts, so that
/// a taken port fails the start rather than going unnoticed).
///
/// # Errors
/// [`Error::Unavailable`] naming the address when it cannot be bound.
pub(crate) async fn bind(addr: Option<SocketAddr>) -> Result<Option<TcpListener>> {
    let Some(addr) = addr else { return Ok(None) };
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| Error::Unavailable(format!("cannot listen for metrics on {addr}: {e}")))?;
    Ok(Some(listener))
}

/// Serves the metrics of `broker` and `coordinator` on `listener` (if any)
/// until `stop`, and says where on stdout: `fjord broker <id> metrics on
/// http://<addr>/metrics`, the line after `listening on`.
pub(crate) fn start(
    listener: Option<TcpListener>,
    metrics: &Metrics,
    broker: Arc<Broker>,
    coordinator: Arc<Coordinator>,
    stop: watch::Receiver<bool>,
) -> Option<tokio::task::JoinHandle<()>> {
    let listener = listener?;
    let addr = listener.local_addr().map_or_else(|e| e.to_string(), |a| a.to_string());
    let id = broker.config.broker_id;
    let registry = metrics.registry(broker, coordinator);
    println!("fjord broker {id} metrics on http://{addr}/metrics");
    tracing::info!("fjord broker {id} metrics on http://{addr}/metrics");
    Some(tokio::spawn(http::serve(listener, registry, stop)))
}
