//! The HTTP port's server, with limits no client can push past: connections at once (in all
//! and per source address, an IPv6 /64 counting as one), the time to send a request's headers,
//! the time a request may take (its body included), how long a connection may sit idle, and
//! how long it may live. Whatever a client sends,
//! a replica holds at most [`Limits::max_connections`] connections, each for a bounded time.
//!
//! Connections are served by hyper (HTTP/1.1 and HTTP/2, as the IC's agents use them) with
//! the router of the IC HTTP interface, the gateway and, on a local subnet, the admin API.

use std::collections::HashMap;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::extract::Request;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::envelope::MAX_REQUEST_BYTES;
use crate::metrics::ReasonLabel;

/// What one HTTP port allows.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Connections open at once; beyond, new ones are closed as they come.
    pub max_connections: usize,
    /// Connections open at once from one source address.
    pub max_per_source: usize,
    /// Time to send a request's headers (HTTP/1.1; also how long a kept-alive connection may
    /// wait for its next request).
    pub header_timeout: Duration,
    /// Time a request may take, from its headers to the response (its body included): a
    /// client that trickles a body gets a 408 then.
    pub request_timeout: Duration,
    /// A connection with no byte read or written for this long is closed.
    pub idle_timeout: Duration,
    /// A connection is closed (gracefully: its requests finish) once this old, whatever it
    /// does: pings alone cannot hold a slot for ever.
    pub max_connection_age: Duration,
    /// Queries (and gateway requests) executing at once, and waiting for a turn; beyond,
    /// a query is refused with a transient reject.
    pub max_queries: usize,
    pub max_waiting_queries: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 2048,
            max_per_source: 256,
            header_timeout: Duration::from_secs(10),
            // A synchronous call waits for its certificate (seconds) within it.
            request_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(120),
            max_connection_age: Duration::from_secs(600),
            // Query threads a replica's cores can keep busy; a thousand more may queue.
            max_queries: 2 * std::thread::available_parallelism().map_or(2, usize::from),
            max_waiting_queries: 1024,
        }
    }
}

/// A connection's share of the limits, given back when it closes.
struct Slot {
    source: IpAddr,
    open: Arc<Mutex<Open>>,
}

#[derive(Default)]
struct Open {
    total: usize,
    by_source: HashMap<IpAddr, usize>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Ok(mut o) = self.open.lock() {
            o.total -= 1;
            if let Some(n) = o.by_source.get_mut(&self.source) {
                *n -= 1;
                if *n == 0 {
                    o.by_source.remove(&self.source);
                }
            }
        }
    }
}

/// The source a connection counts against: its IPv4 address, or its IPv6 /64 (what one host
/// is usually given).
fn source_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
        },
        v4 => v4,
    }
}

/// A slot for a connection from `source`, or the limit it would pass.
fn admit(open: &Arc<Mutex<Open>>, source: IpAddr, limits: &Limits) -> Result<Slot, &'static str> {
    let source = source_of(source);
    let mut o = open.lock().map_err(|_| "total")?;
    if o.total >= limits.max_connections {
        return Err("total");
    }
    let n = o.by_source.entry(source).or_default();
    if *n >= limits.max_per_source {
        return Err("per_source");
    }
    *n += 1;
    o.total += 1;
    Ok(Slot {
        source,
        open: open.clone(),
    })
}

/// A TCP stream that notes when it last moved a byte.
struct Watched {
    tcp: TcpStream,
    /// Milliseconds since `since` of the last read or write.
    last: Arc<AtomicU64>,
    since: Instant,
}

impl Watched {
    fn touch(&self) {
        self.last
            .store(self.since.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.tcp).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.touch();
        }
        r
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.tcp).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

/// Serves `app` on `listener` within `limits` until `shutdown` flips; connections refused
/// are counted in `refused` by the limit they met.
pub async fn serve(
    listener: TcpListener,
    app: axum::Router,
    limits: Limits,
    refused: Family<ReasonLabel, Counter>,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let open = Arc::new(Mutex::new(Open::default()));
    loop {
        let (tcp, addr) = tokio::select! {
            a = listener.accept() => match a {
                Ok(x) => x,
                Err(e) => {
                    // Out of descriptors, most likely: let connections close first.
                    tracing::warn!(error = %e, "HTTP accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => return Ok(()),
        };
        let slot = match admit(&open, addr.ip(), &limits) {
            Ok(s) => s,
            Err(reason) => {
                refused.get_or_create(&ReasonLabel { reason }).inc();
                tracing::debug!(%addr, reason, "HTTP connection refused");
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let (app, stop) = (app.clone(), shutdown.clone());
        tokio::spawn(connection(tcp, app, limits, slot, stop));
    }
}

/// Serves one connection until it ends, idles past the limit, or the server stops.
async fn connection(
    tcp: TcpStream,
    app: axum::Router,
    limits: Limits,
    _slot: Slot,
    mut stop: watch::Receiver<bool>,
) {
    let last = Arc::new(AtomicU64::new(0));
    let since = Instant::now();
    let io = TokioIo::new(Watched {
        tcp,
        last: last.clone(),
        since,
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(128);
    let conn = builder.serve_connection(io, TowerToHyperService::new(app));
    tokio::pin!(conn);
    let check = (limits.idle_timeout / 4).max(Duration::from_millis(100));
    let mut closing: Option<tokio::time::Instant> = None;
    let mut stopping = *stop.borrow();
    loop {
        tokio::select! {
            _ = conn.as_mut() => return,
            _ = tokio::time::sleep(check) => {}
            changed = stop.changed(), if !stopping => {
                // The server stopped, or went away without a word.
                stopping = changed.is_err() || *stop.borrow();
            }
        }
        let idle = since
            .elapsed()
            .saturating_sub(Duration::from_millis(last.load(Ordering::Relaxed)));
        let old = since.elapsed() >= limits.max_connection_age;
        if closing.is_none() && (stopping || idle >= limits.idle_timeout || old) {
            conn.as_mut().graceful_shutdown();
            closing = Some(tokio::time::Instant::now() + Duration::from_secs(5));
        }
        // A connection that does not finish closing in time is dropped.
        if closing.is_some_and(|t| tokio::time::Instant::now() >= t) {
            return;
        }
    }
}

/// The request limits of the router: a body declaring more than the port accepts is refused
/// before it is read (413), and a request that does not complete in `timeout` gets a 408.
pub async fn bounded(
    axum::extract::State(timeout): axum::extract::State<Duration>,
    req: Request,
    next: Next,
) -> Response {
    let declared = req
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(n) = declared.filter(|n| *n > MAX_REQUEST_BYTES as u64) {
        return (
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body declares {n} bytes; at most {MAX_REQUEST_BYTES} are accepted\n"),
        )
            .into_response();
    }
    match tokio::time::timeout(timeout, next.run(req)).await {
        Ok(r) => r,
        Err(_) => (
            StatusCode::REQUEST_TIMEOUT,
            format!(
                "the request did not complete within {} s\n",
                timeout.as_secs_f64()
            ),
        )
            .into_response(),
    }
}
