//! The `/metrics` HTTP endpoint: a small axum server on its own listener,
//! apart from the gRPC port, so that scrapes never compete with client
//! connections for their limit and the port can be firewalled separately.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

/// Scrapes encoded at once; more are answered 503 at once. A scrape of
/// 1,000 partitions takes milliseconds, and a Prometheus pair scrapes once
/// per interval each, so two is plenty while a flood of requests cannot
/// tie up the blocking threads that partition reads also need.
const SCRAPES_CONCURRENT_MAX: usize = 2;
/// The Prometheus text format 0.0.4, rather than OpenMetrics text: every
/// scraper reads it, and `promtool check metrics` lints it cleanly (it
/// reads an OpenMetrics counter's `_total` sample as lacking help).
use prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

struct Endpoint {
    registry: Registry,
    scrapes: Semaphore,
}

/// Serves `registry` at `/metrics` on `listener` until `stop` turns true.
pub(crate) async fn serve(listener: TcpListener, registry: Registry, mut stop: watch::Receiver<bool>) {
    let endpoint = Arc::new(Endpoint { registry, scrapes: Semaphore::new(SCRAPES_CONCURRENT_MAX) });
    let app = axum::Router::new().route("/metrics", axum::routing::get(scrape)).with_state(endpoint);
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = stop.wait_for(|stopped| *stopped).await;
        })
        .await;
    if let Err(e) = served {
        tracing::error!(error = %e, "metrics endpoint failed");
    }
}

async fn scrape(State(endpoint): State<Arc<Endpoint>>) -> Response {
    let Ok(permit) = endpoint.scrapes.try_acquire() else {
        return (StatusCode::SERVICE_UNAVAILABLE, "too many scrapes at once\n").into_response();
    };
    let encoding = endpoint.clone();
    // Encoding reads partition logs (for lag in seconds): off the async threads.
    let body = tokio::task::spawn_blocking(move || {
        let mut text = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut text, &encoding.registry).map(|()| text)
    })
    .await;
    drop(permit);
    match body {
        Ok(Ok(text)) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response(),
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "encoding the metrics failed\n").into_response(),
    }
}
