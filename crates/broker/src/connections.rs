//! Which client connections are accepted, and when idle ones are closed.
//!
//! Three rules keep one client from locking everyone out (issue #21, 4):
//!
//! * **A global limit** (`connections_max`) bounds file descriptors and
//!   memory: beyond it a new connection is closed at accept.
//! * **A per-source limit** (`connections_per_source_max`, below the
//!   global one) bounds what one IP address may hold, so a greedy or
//!   leaking client fills its own share, not the broker's.
//! * **A reserve for the other brokers**: connections from a peer's
//!   address may use [`PEER_CONNECTIONS_RESERVED_PER_PEER`] slots per peer
//!   beyond the global limit, and are not counted against the per-source
//!   limit, so Raft and coordinator traffic still connects while clients
//!   have filled the rest.
//!
//! And **an idle timeout**: a connection with no request in flight (no
//! open HTTP/2 stream, counting a streaming response until its body ends)
//! and no bytes received for `idle_connection_timeout` is closed, as
//! Kafka's `connections.max.idle.ms` does. Streams are counted by a tower
//! layer around every service ([`TrackStreamsLayer`]); the connection's
//! reads check the count when its idle timer fires.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Sleep;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_stream::StreamExt;
use tonic::codegen::http;
use tonic::transport::server::{Connected, TcpConnectInfo};

/// Connections from each peer broker's address admitted beyond the global
/// limit. A broker opens two channels to each peer (the Raft transport and
/// the coordinator's offset lookups), and a reconnect may briefly overlap
/// an old one: 8 leaves room for both twice over.
pub(crate) const PEER_CONNECTIONS_RESERVED_PER_PEER: usize = 8;

/// Why a new connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refused {
    /// This source holds its share already.
    PerSource,
    /// Every slot is taken.
    Global,
}

/// Admission of new connections: the global limit, the per-source limit
/// and the peers' reserve.
#[derive(Debug)]
struct Admission {
    clients: Arc<Semaphore>,
    peers_reserve: Arc<Semaphore>,
    /// Open connections per non-peer source. At most `connections_max`
    /// entries: an entry exists only while its source holds a connection.
    per_source: Mutex<HashMap<IpAddr, usize>>,
    per_source_max: usize,
    peer_ips: HashSet<IpAddr>,
}

/// A slot held by one open connection; dropping it frees the slot.
#[derive(Debug)]
struct Slot {
    _permit: OwnedSemaphorePermit,
    /// The source whose per-source count this connection holds (none for peers).
    source: Option<IpAddr>,
    admission: Arc<Admission>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(ip) = self.source {
            let mut map = self.admission.per_source.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(n) = map.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    map.remove(&ip);
                }
            }
        }
    }
}

impl Admission {
    fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Slot, Refused> {
        if self.peer_ips.contains(&ip) {
            let permit = self
                .clients
                .clone()
                .try_acquire_owned()
                .or_else(|_| self.peers_reserve.clone().try_acquire_owned())
                .map_err(|_| Refused::Global)?;
            return Ok(Slot { _permit: permit, source: None, admission: self.clone() });
        }
        let mut map = self.per_source.lock().unwrap_or_else(|p| p.into_inner());
        let held = map.get(&ip).copied().unwrap_or(0);
        if held >= self.per_source_max {
            return Err(Refused::PerSource);
        }
        let permit = self.clients.clone().try_acquire_owned().map_err(|_| Refused::Global)?;
        *map.entry(ip).or_insert(0) += 1;
        drop(map);
        Ok(Slot { _permit: permit, source: Some(ip), admission: self.clone() })
    }
}

/// Limits applied to accepted connections.
#[derive(Debug, Clone)]
pub(crate) struct ConnectionLimits {
    /// Global limit of client connections.
    pub(crate) max: usize,
    /// Limit per source address (peers exempt).
    pub(crate) per_source_max: usize,
    /// Addresses of the other brokers.
    pub(crate) peer_ips: HashSet<IpAddr>,
    /// Close a connection idle this long.
    pub(crate) idle_timeout: Duration,
}

/// Accepted connections under `limits`: a refused one is closed at once
/// (and logged).
pub(crate) fn limited(
    listener: TcpListener,
    limits: ConnectionLimits,
) -> impl tokio_stream::Stream<Item = io::Result<LimitedConn>> + Send + 'static {
    let peers = limits.peer_ips.len();
    let admission = Arc::new(Admission {
        clients: Arc::new(Semaphore::new(limits.max)),
        peers_reserve: Arc::new(Semaphore::new(peers * PEER_CONNECTIONS_RESERVED_PER_PEER)),
        per_source: Mutex::new(HashMap::new()),
        per_source_max: limits.per_source_max,
        peer_ips: limits.peer_ips,
    });
    let idle_timeout = limits.idle_timeout;
    TcpListenerStream::new(listener).filter_map(move |conn| match conn {
        Ok(stream) => {
            let peer = stream.peer_addr().ok()?;
            match admission.admit(peer.ip()) {
                Ok(slot) => {
                    let _ = stream.set_nodelay(true);
                    Some(Ok(LimitedConn::new(stream, slot, idle_timeout)))
                }
                Err(Refused::PerSource) => {
                    tracing::warn!(%peer, max = admission.per_source_max, "per-source connection limit reached; closing new connection");
                    None
                }
                Err(Refused::Global) => {
                    tracing::warn!(%peer, max = limits.max, "connection limit reached; closing new connection");
                    None
                }
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "accept failed");
            None
        }
    })
}

/// What one connection is doing, shared by its reads and the requests on it.
#[derive(Debug)]
pub(crate) struct Activity {
    opened: Instant,
    /// Requests in flight, streaming responses until their body ends.
    in_flight: AtomicUsize,
    /// ms since `opened` of the last byte read or request finished.
    idle_since_ms: AtomicU64,
}

impl Activity {
    fn touch(&self) {
        self.idle_since_ms.store(self.opened.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// When the connection, idle now, may be closed; `None` while a request is in flight.
    fn idle_deadline(&self, timeout: Duration) -> Option<Instant> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let since = Duration::from_millis(self.idle_since_ms.load(Ordering::Relaxed));
        Some(self.opened + since + timeout)
    }
}

/// Counts one request in flight until dropped.
#[derive(Debug)]
struct InFlight(Arc<Activity>);

impl InFlight {
    fn new(activity: Arc<Activity>) -> Self {
        activity.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(activity)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The connect info of a [`LimitedConn`]: tonic's, plus the activity.
#[derive(Debug, Clone)]
pub(crate) struct ConnInfo {
    tcp: TcpConnectInfo,
    activity: Arc<Activity>,
}

/// A connection holding a slot until it closes, closed once idle.
pub(crate) struct LimitedConn {
    stream: TcpStream,
    _slot: Slot,
    activity: Arc<Activity>,
    idle_timeout: Duration,
    idle_timer: Pin<Box<Sleep>>,
}

impl LimitedConn {
    fn new(stream: TcpStream, slot: Slot, idle_timeout: Duration) -> Self {
        let activity = Arc::new(Activity {
            opened: Instant::now(),
            in_flight: AtomicUsize::new(0),
            idle_since_ms: AtomicU64::new(0),
        });
        let idle_timer = Box::pin(tokio::time::sleep(idle_timeout));
        LimitedConn { stream, _slot: slot, activity, idle_timeout, idle_timer }
    }

    /// Whether the idle timer says to close; re-arms it otherwise (which
    /// registers the waker of `cx`).
    fn idle_expired(&mut self, cx: &mut Context<'_>) -> bool {
        loop {
            if self.idle_timer.as_mut().poll(cx).is_pending() {
                return false;
            }
            let now = Instant::now();
            let next = match self.activity.idle_deadline(self.idle_timeout) {
                Some(deadline) if deadline <= now => return true,
                Some(deadline) => deadline,
                None => now + self.idle_timeout, // busy: look again later
            };
            self.idle_timer.as_mut().reset(next.into());
        }
    }
}

impl Connected for LimitedConn {
    type ConnectInfo = ConnInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        ConnInfo { tcp: self.stream.connect_info(), activity: self.activity.clone() }
    }
}

impl AsyncRead for LimitedConn {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.stream).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    this.activity.touch();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending if this.idle_expired(cx) => {
                tracing::debug!(peer = ?this.stream.peer_addr().ok(), "closing idle connection");
                Poll::Ready(Ok(())) // end of stream: the server closes the connection
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncWrite for LimitedConn {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// Counts each request on its connection's [`Activity`] until its response
/// body ends, and puts tonic's own [`TcpConnectInfo`] into the request so
/// `Request::remote_addr` keeps working.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct TrackStreamsLayer;

impl<S> tower_layer::Layer<S> for TrackStreamsLayer {
    type Service = TrackStreams<S>;

    fn layer(&self, inner: S) -> Self::Service {
        TrackStreams { inner }
    }
}

/// The service of [`TrackStreamsLayer`].
#[derive(Debug, Clone)]
pub(crate) struct TrackStreams<S> {
    inner: S,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

impl<S, B> tower_service::Service<http::Request<B>> for TrackStreams<S>
where
    S: tower_service::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        let guard = req.extensions().get::<ConnInfo>().cloned().map(|info| {
            req.extensions_mut().insert(info.tcp);
            InFlight::new(info.activity)
        });
        let fut = self.inner.call(req);
        Box::pin(async move {
            let resp = fut.await?;
            Ok(match guard {
                Some(guard) => resp.map(|body| tonic::body::Body::new(Guarded { body, _guard: guard })),
                None => resp,
            })
        })
    }
}

/// A response body that keeps its request counted until it ends.
struct Guarded {
    body: tonic::body::Body,
    _guard: InFlight,
}

impl http_body::Body for Guarded {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admission(per_source_max: usize, max: usize, peers: &[&str]) -> Arc<Admission> {
        let peer_ips: HashSet<IpAddr> = peers.iter().map(|p| p.parse().unwrap()).collect();
        Arc::new(Admission {
            clients: Arc::new(Semaphore::new(max)),
            peers_reserve: Arc::new(Semaphore::new(peer_ips.len() * PEER_CONNECTIONS_RESERVED_PER_PEER)),
            per_source: Mutex::new(HashMap::new()),
            per_source_max,
            peer_ips,
        })
    }

    #[test]
    fn one_source_fills_only_its_share_and_peers_keep_a_reserve() {
        let a = admission(2, 3, &["10.0.0.9"]);
        let (greedy, other, peer): (IpAddr, IpAddr, IpAddr) =
            ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap(), "10.0.0.9".parse().unwrap());
        let g1 = a.admit(greedy).unwrap();
        let _g2 = a.admit(greedy).unwrap();
        assert_eq!(a.admit(greedy).unwrap_err(), Refused::PerSource);
        let o1 = a.admit(other).unwrap();
        assert_eq!(a.admit(other).unwrap_err(), Refused::Global, "three client slots in all");
        // The peer gets its reserve although every client slot is taken.
        let peers: Vec<Slot> =
            (0..PEER_CONNECTIONS_RESERVED_PER_PEER).map(|_| a.admit(peer).unwrap()).collect();
        assert_eq!(a.admit(peer).unwrap_err(), Refused::Global);
        drop(g1);
        let _g3 = a.admit(greedy).expect("a closed connection frees its source's share");
        drop((o1, peers));
        assert_eq!(
            a.per_source.lock().unwrap().get(&other),
            None,
            "no entry for a source without connections"
        );
    }
}
