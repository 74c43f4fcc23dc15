//! The gRPC server: binds, serves the four Fjord services plus health and
//! reflection, bounds connections (`connections`), runs upkeep, and shuts
//! down gracefully.

use std::collections::HashSet;
use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;

use fjord_proto::http2;
use fjord_proto::pb::admin_server::AdminServer;
use fjord_proto::pb::consumer_server::ConsumerServer;
use fjord_proto::pb::groups_server::GroupsServer;
use fjord_proto::pb::producer_server::ProducerServer;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::broker::Broker;
use crate::config::{BrokerConfig, FETCH_BYTES_MAX, IN_FLIGHT_PER_CONNECTION_MAX, REQUEST_BYTES_MAX};
use crate::connections::{limited, ConnectionLimits, TrackStreamsLayer};
use crate::service::admin::AdminService;
use crate::service::consumer::ConsumerService;
use crate::service::groups::GroupsService;
use crate::service::producer::ProducerService;
use crate::transport::{Faults, RaftService};
use crate::{Error, Result};
use fjord_proto::internal::raft_server::RaftServer;
use fjord_proto::internal::replica_server::ReplicaServer;

/// Largest batch of Raft messages between brokers: append messages carry
/// up to 4 MiB of entries each, but at least one entry (a batch of up to
/// 64 MiB), and a wire batch holds up to a thousand messages; a
/// message beyond this fails its stream, which reconnects.
const RAFT_BATCH_BYTES_MAX: usize = 256 * 1024 * 1024;

/// How long a broker that is a cluster of one waits at start-up for its
/// metadata and partitions to be served before it announces itself anyway.
const READY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Largest response: a maximal fetch plus its other fields.
const RESPONSE_BYTES_MAX: usize = FETCH_BYTES_MAX as usize + 1024 * 1024;

/// Runs a broker until `shutdown` resolves: in-flight requests finish,
/// long polls and subscriptions end, every partition is flushed.
///
/// Prints `fjord broker <id> listening on <addr>` on stdout once it
/// accepts connections, so scripts and tests that asked for port 0 learn
/// the port.
///
/// # Errors
/// An invalid config, a data directory that cannot be opened, or an
/// address that cannot be bound.
pub async fn run(config: BrokerConfig, shutdown: impl Future<Output = ()> + Send) -> Result<()> {
    config.validate().map_err(Error::InvalidArgument)?;
    let fd_limit = crate::fds::raise_fd_limit();
    let fd_reserve = crate::fds::fd_reserve(&config, fd_limit);
    tracing::info!(fd_limit, fd_reserve, "file descriptor limit; the rest is the partitions' budget");
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|e| Error::Unavailable(format!("cannot listen on {}: {e}", config.listen)))?;
    let addr = listener.local_addr().map_err(|e| Error::Unavailable(e.to_string()))?;
    let metrics_listener = crate::metrics::bind(config.metrics_listen).await?;
    let metrics = crate::metrics::Metrics::new();
    let config = BrokerConfig { fsync_observer: metrics.fsync_observer(), ..config };
    let mut peers = config.peers.clone();
    if peers.is_empty() {
        peers.insert(config.broker_id, addr.to_string());
    }
    let faults = Arc::new(Faults::new(config.fault_injection));
    let broker = Broker::start(config.clone(), Arc::new(peers), faults).await?;

    let (stop_tx, stop_rx) = watch::channel(false);
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<ProducerServer<ProducerService>>().await;
    health.set_serving::<ConsumerServer<ConsumerService>>().await;
    health.set_serving::<AdminServer<AdminService>>().await;
    health.set_serving::<GroupsServer<GroupsService>>().await;
    // Reflection in both versions: grpcurl 1.8, Python's grpcio-reflection
    // and most GUI tools speak only v1alpha, newer tools v1.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(fjord_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_error = |e| Error::Unavailable(format!("reflection service: {e}"));
    let reflection_v1 = reflection().build_v1().map_err(reflection_error)?;
    let reflection_v1alpha = reflection().build_v1alpha().map_err(reflection_error)?;

    let upkeep = tokio::spawn(upkeep(broker.clone(), stop_rx.clone()));
    let coordinator = crate::groups::Coordinator::new(broker.clone());
    let group_upkeep = tokio::spawn(coordinator.clone().upkeep(stop_rx.clone()));
    let metrics_coordinator = coordinator.clone();
    let groups = GroupsService { coordinator };
    let producer = ProducerService { broker: broker.clone() };
    let consumer = ConsumerService { broker: broker.clone(), shutdown: stop_rx.clone() };
    let admin = AdminService { broker: broker.clone() };
    let raft = RaftService { broker: broker.clone(), shutdown: stop_rx.clone() };
    let replica = crate::scrub::ReplicaService { broker: broker.clone() };
    let scrubber = config
        .scrub_interval
        .map(|every| tokio::spawn(crate::scrub::scrub_loop(broker.clone(), every, stop_rx.clone())));
    broker.wait_ready(READY_TIMEOUT).await;
    let limits = ConnectionLimits {
        max: config.connections_max,
        per_source_max: config.connections_per_source(),
        peer_ips: peer_ips(&config).await,
        idle_timeout: config.idle_connection_timeout,
    };
    let incoming = limited(listener, limits);
    println!("fjord broker {} listening on {addr}", config.broker_id);
    tracing::info!(%addr, broker_id = config.broker_id, data_dir = %config.data_dir.display(), "broker ready");
    let metrics_endpoint = crate::metrics::start(
        metrics_listener,
        &metrics,
        broker.clone(),
        metrics_coordinator,
        stop_rx.clone(),
    );

    let serve = tonic::transport::Server::builder()
        .concurrency_limit_per_connection(IN_FLIGHT_PER_CONNECTION_MAX)
        .tcp_nodelay(true)
        .initial_stream_window_size(http2::STREAM_WINDOW_BYTES)
        .initial_connection_window_size(http2::CONNECTION_WINDOW_BYTES)
        .max_frame_size(http2::FRAME_BYTES_MAX)
        .layer(TrackStreamsLayer)
        .layer(metrics.rpc_layer())
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(
            ProducerServer::new(producer)
                .max_decoding_message_size(REQUEST_BYTES_MAX)
                .max_encoding_message_size(RESPONSE_BYTES_MAX),
        )
        .add_service(
            ConsumerServer::new(consumer)
                .max_decoding_message_size(REQUEST_BYTES_MAX)
                .max_encoding_message_size(RESPONSE_BYTES_MAX),
        )
        .add_service(AdminServer::new(admin).max_decoding_message_size(REQUEST_BYTES_MAX))
        .add_service(GroupsServer::new(groups).max_decoding_message_size(REQUEST_BYTES_MAX))
        .add_service(
            RaftServer::new(raft)
                .max_decoding_message_size(RAFT_BATCH_BYTES_MAX)
                .max_encoding_message_size(RAFT_BATCH_BYTES_MAX),
        )
        .add_service(
            ReplicaServer::new(replica)
                .max_decoding_message_size(REQUEST_BYTES_MAX)
                .max_encoding_message_size(crate::scrub::RANGE_MESSAGE_BYTES_MAX),
        )
        .serve_with_incoming_shutdown(metrics.count_connections(incoming), async move {
            shutdown.await;
            tracing::info!("shutting down: finishing in-flight requests");
            let _ = stop_tx.send(true);
        });
    let served = serve.await;
    let _ = upkeep.await;
    let _ = group_upkeep.await;
    if let Some(scrubber) = scrubber {
        let _ = scrubber.await;
    }
    if let Some(endpoint) = metrics_endpoint {
        let _ = endpoint.await;
    }
    broker.flush_all().await;
    tracing::info!("broker stopped");
    served.map_err(|e| Error::Unavailable(format!("server failed: {e}")))
}

/// The IP addresses of the other brokers, whose connections get the
/// peers' reserve (a name that does not resolve is logged and skipped:
/// that peer's traffic then counts as a client's).
async fn peer_ips(config: &BrokerConfig) -> HashSet<IpAddr> {
    let mut ips = HashSet::new();
    for (id, addr) in &config.peers {
        if *id == config.broker_id {
            continue;
        }
        match tokio::net::lookup_host(addr.as_str()).await {
            Ok(found) => ips.extend(found.map(|a| a.ip())),
            Err(e) => tracing::warn!(peer = id, %addr, error = %e, "cannot resolve a peer's address"),
        }
    }
    ips
}

/// Retention and interval flushes, every `maintenance_interval`.
async fn upkeep(broker: Arc<Broker>, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(broker.config.maintenance_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => broker.maintain().await,
            _ = stop.changed() => return,
        }
    }
}
