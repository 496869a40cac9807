//! Accepting and driving HTTP/1 connections under [`Limits`]: a cap on connections
//! open at once, a deadline for request headers, and an idle timeout. axum's own
//! `serve` has none of these, and without them a few hundred idle or dripping
//! connections use up the process's file descriptors (and with them the archive and
//! the health checks).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::Limits;

/// Serves `app` on `listener` until `stop`, then waits for open connections to finish
/// what they are doing.
pub async fn run(listener: TcpListener, app: Router, limits: Limits, stop: CancellationToken) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(limits.header_timeout);
    loop {
        let stream = tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors, most likely: the connection waits in the
                    // backlog, and accepting again at once would only spin.
                    tracing::warn!(error = %e, "could not accept a connection");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        // Past the cap a connection is closed at once: it holds a descriptor for no
        // time, and the connections already open keep working.
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::debug!(max = limits.max_connections, "connection refused: too many open");
            drop(stream);
            continue;
        };
        let connection = http.clone();
        let service = TowerToHyperService::new(app.clone());
        let stop = stop.clone();
        tokio::spawn(async move {
            drive(stream, &connection, service, limits, &stop).await;
            drop(slot);
        });
    }
    // Every slot back means every connection has finished.
    let _ = slots.acquire_many(u32::try_from(limits.max_connections).unwrap_or(u32::MAX)).await;
}

async fn drive(
    stream: TcpStream,
    http: &hyper::server::conn::http1::Builder,
    service: TowerToHyperService<Router>,
    limits: Limits,
    stop: &CancellationToken,
) {
    let started = Instant::now();
    let activity = Arc::new(AtomicU64::new(0));
    let io = TokioIo::new(Watched { inner: stream, started, activity: activity.clone() });
    let connection = http.serve_connection(io, service);
    tokio::pin!(connection);
    let mut closing = false;
    loop {
        let last = started + std::time::Duration::from_millis(activity.load(Ordering::Relaxed));
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            () = tokio::time::sleep_until(last + limits.idle_timeout) => {
                let moved = started + std::time::Duration::from_millis(activity.load(Ordering::Relaxed));
                if moved > last {
                    continue;
                }
                if closing {
                    // Still silent a whole idle period after being asked to close.
                    return;
                }
                // Closes at once when no request is in flight, or after the one that is.
                connection.as_mut().graceful_shutdown();
                closing = true;
                activity.store(elapsed_ms(started), Ordering::Relaxed);
            }
            () = stop.cancelled(), if !closing => {
                connection.as_mut().graceful_shutdown();
                closing = true;
            }
        }
    }
}

fn elapsed_ms(started: Instant) -> u64 {
    u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// A connection that notes when a byte last moved either way.
struct Watched {
    inner: TcpStream,
    started: Instant,
    activity: Arc<AtomicU64>,
}

impl Watched {
    fn moved(&self) {
        self.activity.store(elapsed_ms(self.started), Ordering::Relaxed);
    }
}

impl AsyncRead for Watched {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let result = Pin::new(&mut this.inner).poll_read(cx, buf);
        if matches!(result, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.moved();
        }
        result
    }
}

impl AsyncWrite for Watched {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_write(cx, data);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            this.moved();
        }
        result
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            this.moved();
        }
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
