//! Serving the webhook router over HTTP/1.1 with limits, so that slow or numerous clients cannot
//! exhaust `pipeforge serve` (file descriptors, memory, tasks).
//!
//! Everything HTTP is hyper's; this module only sets its limits and counts connections:
//!
//! - **connections**: at most [`Limits::max_connections`] at once (lowered to fit the process's
//!   file-descriptor limit); a connection over the limit is closed as soon as it is accepted,
//!   without an answer;
//! - **header timeout**: a connection must send a complete request head within
//!   [`Limits::header_timeout`] of opening, or of its previous answer (hyper's
//!   `header_read_timeout`); else it is closed without an answer;
//! - **idle timeout**: a kept-alive connection with no request in flight is closed after
//!   [`Limits::idle_timeout`];
//! - **header size**: a request head over 64 KiB is refused by hyper (431) and the connection
//!   closed;
//! - the body timeout and the bound on bodies buffered at once are the router's
//!   (`server::read_body`), since only it reads bodies.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use super::log::Log;

/// Largest request head (request line and headers), in bytes; hyper refuses larger ones (431).
pub const MAX_HEAD_BYTES: usize = 64 * 1024;

/// File descriptors kept free for everything else (git, AWS clients, checkouts).
const FD_RESERVE: usize = 64;

/// The server's limits; each is a `pipeforge serve` option.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Time to send a complete request head, from the connection's opening or its previous
    /// answer.
    pub header_timeout: Duration,
    /// Time to send a request body, once the server starts reading it.
    pub body_timeout: Duration,
    /// Time a kept-alive connection may wait, idle, for its next request.
    pub idle_timeout: Duration,
    /// Connections at once.
    pub max_connections: usize,
    /// Request bodies read at once (each up to 1 MiB): the bound on memory held by bodies.
    pub max_bodies: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(15),
            idle_timeout: Duration::from_secs(5),
            max_connections: 512,
            max_bodies: 32,
        }
    }
}

/// The soft limit on open files of this process (Linux: `/proc/self/limits`).
fn fd_limit() -> Option<usize> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// `max_connections`, lowered to leave 64 descriptors free under the process's
/// limit; logged when lowered.
pub fn connection_cap(max_connections: usize, log: &Log) -> usize {
    let Some(limit) = fd_limit() else {
        return max_connections.max(1);
    };
    let fits = limit.saturating_sub(FD_RESERVE).max(1);
    if max_connections > fits {
        log.warn(
            "fewer connections than asked: the open-file limit is low",
            json!({"max_connections": max_connections, "open_file_limit": limit,
                   "effective": fits}),
        );
        fits
    } else {
        max_connections.max(1)
    }
}

/// Requests in flight on one connection, and since when it has none.
struct Activity {
    in_flight: AtomicUsize,
    idle_since: std::sync::Mutex<Instant>,
}

/// Counts one request in flight until dropped.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn new(a: &Arc<Activity>) -> InFlight {
        a.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight(Arc::clone(a))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::SeqCst) == 1
            && let Ok(mut t) = self.0.idle_since.lock()
        {
            *t = Instant::now();
        }
    }
}

impl Activity {
    /// Resolves once the connection has had no request in flight for `idle`.
    async fn idle_for(&self, idle: Duration) {
        loop {
            let since = self
                .idle_since
                .lock()
                .map_or_else(|_| Instant::now(), |t| *t);
            let busy = self.in_flight.load(Ordering::SeqCst) > 0;
            if !busy && since.elapsed() >= idle {
                return;
            }
            let wait = if busy {
                idle
            } else {
                idle.saturating_sub(since.elapsed())
            };
            tokio::time::sleep(wait.max(Duration::from_millis(10))).await;
        }
    }
}

/// Serves one connection until it ends, its idle time runs out, or the server stops.
async fn connection(
    stream: tokio::net::TcpStream,
    router: Router,
    limits: Limits,
    mut stop: watch::Receiver<bool>,
) {
    let activity = Arc::new(Activity {
        in_flight: AtomicUsize::new(0),
        idle_since: std::sync::Mutex::new(Instant::now()),
    });
    let counted = Arc::clone(&activity);
    let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        let guard = InFlight::new(&counted);
        let router = router.clone();
        async move {
            let answer = tower::ServiceExt::oneshot(router, req).await;
            drop(guard);
            answer
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(MAX_HEAD_BYTES)
        .keep_alive(true);
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    let mut closing = false;
    loop {
        tokio::select! {
            _ = conn.as_mut() => break,
            () = activity.idle_for(limits.idle_timeout), if !closing => {
                closing = true;
                conn.as_mut().graceful_shutdown();
            }
            _ = stop.changed(), if !closing => {
                closing = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

/// Accepts connections on `listener` and serves `router` on each, within `limits`, until `stop`
/// turns true; then lets the open connections finish their requests (for at most the header
/// and body timeouts) and returns.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    log: Log,
    mut stop: watch::Receiver<bool>,
) {
    let cap = connection_cap(limits.max_connections, &log);
    let slots = Arc::new(Semaphore::new(cap));
    let mut open = JoinSet::new();
    let mut refused: u64 = 0;
    let mut last_warning: Option<Instant> = None;
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.changed() => break,
        };
        while open.try_join_next().is_some() {}
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors, or a connection reset before it was accepted.
                log.warn(
                    "cannot accept a connection",
                    json!({"error": e.to_string()}),
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            drop(stream);
            refused += 1;
            if last_warning.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
                log.warn(
                    "connection limit reached: connections closed at once",
                    json!({"max_connections": cap, "refused_since_last_warning": refused}),
                );
                refused = 0;
                last_warning = Some(Instant::now());
            }
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (router, stop) = (router.clone(), stop.clone());
        open.spawn(async move {
            connection(stream, router, limits, stop).await;
            drop(slot);
        });
    }
    let grace = limits.header_timeout + limits.body_timeout;
    let _ = tokio::time::timeout(grace, async { while open.join_next().await.is_some() {} }).await;
}
