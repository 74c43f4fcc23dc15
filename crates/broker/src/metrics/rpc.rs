//! Per-RPC latency and outcome, recorded by a tower layer around every
//! tonic service (keyed by the request path, so no handler knows about
//! metrics), and the count of open connections.
//!
//! What is timed is the time to the response's headers. For a unary RPC
//! tonic sends those once the handler has finished, so it is the whole
//! call; for a streaming RPC (`Subscribe`, `ReadStream`, `ProduceStream`,
//! Raft `Send`) it is the time to open the stream. The gRPC code is the
//! `grpc-status` header: tonic puts a handler's error there (a
//! "trailers-only" response), and a response without one succeeded as far
//! as its headers tell; a status a stream ends with later, in trailers, is
//! not seen.

use std::collections::HashSet;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_stream::Stream;
use tonic::codegen::http;
use tonic::transport::server::Connected;

use super::Metrics;

/// Distinct `method` label values kept; requests for further paths are
/// counted as `other`. The API has about 30 RPCs (with health, reflection
/// and Raft), so 64 leaves room to grow while a client that sends random
/// paths (each answered UNIMPLEMENTED) cannot grow the scrape without bound.
const RPC_METHODS_MAX: usize = 64;

/// Upper bounds of the latency buckets: 100 µs doubling to 13 s (18
/// buckets): a produce with fsync takes a few ms, a long-poll fetch up to
/// its 30 s wait (beyond the last bucket, counted in `+Inf`). 18 buckets ×
/// 64 methods bounds the family at 1,216 series.
const RPC_BUCKETS_FIRST_SECONDS: f64 = 0.000_1;
const RPC_BUCKETS: u16 = 18;

/// gRPC code names by number, as the gRPC spec spells them.
const CODE_NAMES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabels {
    method: Arc<str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    method: Arc<str>,
    code: &'static str,
}

fn rpc_histogram() -> Histogram {
    Histogram::new(exponential_buckets(RPC_BUCKETS_FIRST_SECONDS, 2.0, RPC_BUCKETS))
}

/// The RPC families.
#[derive(Debug)]
pub(super) struct RpcMetrics {
    duration: Family<MethodLabels, Histogram, fn() -> Histogram>,
    requests: Family<OutcomeLabels, Counter>,
    in_flight: Gauge,
    /// The `method` values handed out so far, at most [`RPC_METHODS_MAX`].
    methods: RwLock<HashSet<Arc<str>>>,
    other: Arc<str>,
}

impl Default for RpcMetrics {
    fn default() -> Self {
        RpcMetrics {
            duration: Family::new_with_constructor(rpc_histogram),
            requests: Family::default(),
            in_flight: Gauge::default(),
            methods: RwLock::default(),
            other: Arc::from("other"),
        }
    }
}

impl RpcMetrics {
    pub(super) fn register(&self, r: &mut Registry) {
        r.register(
            "fjord_rpc_duration_seconds",
            "gRPC request duration to the response headers (whole call for unary RPCs)",
            self.duration.clone(),
        );
        r.register(
            "fjord_rpc_requests",
            "gRPC requests answered, by method and gRPC code",
            self.requests.clone(),
        );
        r.register("fjord_rpc_in_flight", "gRPC requests being served", self.in_flight.clone());
    }

    /// The `method` label of a request path: `/fjord.v1.Producer/Produce`
    /// becomes `fjord.v1.Producer/Produce`; beyond the cap, `other`.
    fn method(&self, path: &str) -> Arc<str> {
        let name = path.strip_prefix('/').unwrap_or(path);
        if let Some(m) = self.methods.read().unwrap_or_else(|p| p.into_inner()).get(name) {
            return m.clone();
        }
        let mut methods = self.methods.write().unwrap_or_else(|p| p.into_inner());
        if let Some(m) = methods.get(name) {
            return m.clone();
        }
        if methods.len() >= RPC_METHODS_MAX {
            return self.other.clone();
        }
        let m: Arc<str> = Arc::from(name);
        methods.insert(m.clone());
        m
    }

    fn record(&self, method: Arc<str>, code: &'static str, seconds: f64) {
        self.duration.get_or_create(&MethodLabels { method: method.clone() }).observe(seconds);
        self.requests.get_or_create(&OutcomeLabels { method, code }).inc();
    }
}

/// The gRPC code a response's headers carry (`OK` when none).
fn code_of(headers: &http::HeaderMap) -> &'static str {
    let Some(v) = headers.get("grpc-status") else { return "OK" };
    let n: usize = v.to_str().ok().and_then(|s| s.parse().ok()).unwrap_or(2);
    CODE_NAMES.get(n).copied().unwrap_or("UNKNOWN")
}

/// The layer that wraps every service of the server in an [`RpcService`].
#[derive(Debug, Clone)]
pub(crate) struct RpcLayer {
    metrics: Arc<Metrics>,
}

impl RpcLayer {
    pub(super) fn new(metrics: Arc<Metrics>) -> RpcLayer {
        RpcLayer { metrics }
    }
}

impl<S> tower_layer::Layer<S> for RpcLayer {
    type Service = RpcService<S>;

    fn layer(&self, inner: S) -> RpcService<S> {
        RpcService { inner, metrics: self.metrics.clone() }
    }
}

/// A service that times each request to `inner` and counts its outcome.
#[derive(Debug, Clone)]
pub(crate) struct RpcService<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

/// Keeps `fjord_rpc_in_flight` raised while a request is served, also when
/// its future is dropped (the client went away).
struct InFlight(Gauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl<S, B, R> tower_service::Service<http::Request<B>> for RpcService<S>
where
    S: tower_service::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let method = self.metrics.rpc.method(req.uri().path());
        let start = Instant::now();
        self.metrics.rpc.in_flight.inc();
        let in_flight = InFlight(self.metrics.rpc.in_flight.clone());
        let served = self.inner.call(req);
        let metrics = self.metrics.clone();
        Box::pin(async move {
            let result = served.await;
            let code = match &result {
                Ok(resp) => code_of(resp.headers()),
                Err(_) => "UNKNOWN",
            };
            metrics.rpc.record(method, code, start.elapsed().as_secs_f64());
            drop(in_flight);
            result
        })
    }
}

/// Accepted connections, each wrapped in a [`Counted`].
pub(crate) struct CountedConns<S> {
    inner: Pin<Box<S>>,
    open: Gauge,
}

impl<S> CountedConns<S> {
    pub(super) fn new(incoming: S, open: Gauge) -> CountedConns<S> {
        CountedConns { inner: Box::pin(incoming), open }
    }
}

impl<S, C, E> Stream for CountedConns<S>
where
    S: Stream<Item = Result<C, E>>,
{
    type Item = Result<Counted<C>, E>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let open = self.open.clone();
        self.inner.as_mut().poll_next(cx).map(|conn| {
            conn.map(|c| {
                c.map(|conn| {
                    open.inc();
                    Counted { conn, open }
                })
            })
        })
    }
}

/// A connection counted in `fjord_connections_open` until it is dropped.
pub(crate) struct Counted<C> {
    conn: C,
    open: Gauge,
}

impl<C> Drop for Counted<C> {
    fn drop(&mut self) {
        self.open.dec();
    }
}

impl<C: Connected> Connected for Counted<C> {
    type ConnectInfo = C::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.conn.connect_info()
    }
}

impl<C: AsyncRead + Unpin> AsyncRead for Counted<C> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().conn).poll_read(cx, buf)
    }
}

impl<C: AsyncWrite + Unpin> AsyncWrite for Counted<C> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().conn).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().conn).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().conn).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().conn).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.conn.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_come_from_the_grpc_status_header() {
        let mut h = http::HeaderMap::new();
        assert_eq!(code_of(&h), "OK");
        h.insert("grpc-status", http::HeaderValue::from_static("14"));
        assert_eq!(code_of(&h), "UNAVAILABLE");
        h.insert("grpc-status", http::HeaderValue::from_static("99"));
        assert_eq!(code_of(&h), "UNKNOWN");
    }

    #[test]
    fn method_labels_are_capped() {
        let m = RpcMetrics::default();
        assert_eq!(&*m.method("/fjord.v1.Producer/Produce"), "fjord.v1.Producer/Produce");
        for i in 0..RPC_METHODS_MAX * 2 {
            m.method(&format!("/x.Y/Junk{i}"));
        }
        assert_eq!(&*m.method("/x.Y/Another"), "other", "no new label past the cap");
        assert_eq!(&*m.method("/fjord.v1.Producer/Produce"), "fjord.v1.Producer/Produce", "known ones stay");
        assert_eq!(m.methods.read().unwrap().len(), RPC_METHODS_MAX);
    }
}
