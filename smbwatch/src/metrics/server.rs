//! A small HTTP/1.1 server for `GET /metrics` and `GET /top`, on the tokio
//! thread (never the drain thread).
//!
//! Bounded: at most [`MAX_CONNECTIONS`] connections at once (more are
//! closed at accept), a request head of at most [`MAX_REQUEST`] bytes that
//! must arrive within [`REQUEST_TIMEOUT`], the response written within
//! [`WRITE_TIMEOUT`], one request per connection. A scraper or a `top`
//! needs nothing more, and nothing here can be held open by a slow client.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
    sync::Semaphore,
};

use super::{expose::Scrape, top::TopCache, Metrics};

/// Most connections served at once.
pub const MAX_CONNECTIONS: usize = 8;
/// Longest request head accepted (bytes).
pub const MAX_REQUEST: usize = 4096;
/// A request head must be complete within this time.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// The response must be written within this time.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// Errors of the metrics server.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// The address could not be bound.
    #[error("metrics: cannot listen on {addr}: {source}")]
    Bind {
        /// The configured address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// A bound metrics server.
#[derive(Debug)]
pub struct MetricsServer {
    socket: TcpListener,
    metrics: Arc<Metrics>,
    /// [`REQUEST_TIMEOUT`] (shorter in tests).
    request_timeout: Duration,
}

impl MetricsServer {
    /// Binds `addr` (a port in use fails start-up with a clear error).
    pub async fn bind(addr: SocketAddr, metrics: Arc<Metrics>) -> Result<Self, MetricsError> {
        let socket = TcpListener::bind(addr)
            .await
            .map_err(|source| MetricsError::Bind { addr, source })?;
        if !addr.ip().is_loopback() {
            tracing::warn!(%addr, "metrics on a non-loopback address: plain HTTP without authentication, anyone who can reach it sees top sources and alerts");
        }
        Ok(Self {
            socket,
            metrics,
            request_timeout: REQUEST_TIMEOUT,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.socket.local_addr().ok()
    }

    /// Serves until the task is dropped or aborted.
    pub async fn run(self) {
        let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        let top = Arc::new(TopCache::default());
        loop {
            let (conn, peer) = match self.socket.accept().await {
                Ok(c) => c,
                Err(e) => {
                    // EMFILE and the like: wait rather than spin.
                    tracing::warn!(error = %e, "metrics: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Ok(permit) = permits.clone().try_acquire_owned() else {
                tracing::debug!(%peer, "metrics: connection limit reached, closed");
                continue;
            };
            let metrics = self.metrics.clone();
            let top = top.clone();
            let timeout = self.request_timeout;
            tokio::spawn(async move {
                if let Err(e) = serve(conn, &metrics, &top, timeout).await {
                    tracing::debug!(%peer, error = %e, "metrics: connection ended");
                }
                drop(permit);
            });
        }
    }
}

/// The request target of a `GET` head, or why there is none.
pub(crate) fn parse_request(head: &[u8]) -> Result<&str, (u16, &'static str)> {
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = std::str::from_utf8(line)
        .map_err(|_| (400, "bad request"))?
        .trim_end();
    let mut parts = line.split(' ');
    match (parts.next(), parts.next(), parts.next()) {
        (Some("GET"), Some(target), Some(v)) if v.starts_with("HTTP/1.") => Ok(target),
        (Some(_), Some(_), Some(v)) if v.starts_with("HTTP/1.") => Err((405, "only GET is served")),
        _ => Err((400, "bad request")),
    }
}

async fn serve(
    mut conn: TcpStream,
    metrics: &Arc<Metrics>,
    top: &TopCache,
    request_timeout: Duration,
) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let read = tokio::time::timeout(request_timeout, async {
        let mut buf = [0u8; 512];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && !head.ends_with(b"\n\n") {
            if head.len() >= MAX_REQUEST {
                return Ok(false);
            }
            let n = conn.read(&mut buf).await?;
            if n == 0 {
                return Ok(false);
            }
            head.extend_from_slice(&buf[..n]);
        }
        Ok::<_, std::io::Error>(true)
    })
    .await;
    let (status, ctype, body) = match read {
        Err(_) | Ok(Ok(false)) => (400, "text/plain", b"bad request\n".to_vec()),
        Ok(Err(e)) => return Err(e),
        Ok(Ok(true)) => match parse_request(&head) {
            Err((code, why)) => (code, "text/plain", format!("{why}\n").into_bytes()),
            // Query strings are ignored: there are no parameters.
            Ok(t) => match t.split('?').next().unwrap_or_default() {
                "/metrics" => (
                    200,
                    super::expose::CONTENT_TYPE,
                    Scrape::take(metrics).encode().into_bytes(),
                ),
                "/top" => (200, "application/json", top.get(metrics).await.to_vec()),
                _ => (
                    404,
                    "text/plain",
                    b"not found: GET /metrics or /top\n".to_vec(),
                ),
            },
        },
    };
    let reason = match status {
        200 => "OK",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Bad Request",
    };
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(&body);
    tokio::time::timeout(WRITE_TIMEOUT, async {
        conn.write_all(&out).await?;
        conn.shutdown().await
    })
    .await
    .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::timeout;

    async fn get(addr: SocketAddr, req: &[u8]) -> String {
        let mut c = TcpStream::connect(addr).await.unwrap();
        c.write_all(req).await.unwrap();
        let mut b = Vec::new();
        timeout(Duration::from_secs(5), c.read_to_end(&mut b))
            .await
            .unwrap()
            .unwrap();
        String::from_utf8_lossy(&b).into_owned()
    }

    /// Past the connection limit a connection is closed unanswered; a
    /// client that sends no request is answered 400 after the timeout and
    /// its slot freed; then requests are served again.
    #[tokio::test]
    async fn connections_and_time_are_bounded() {
        let m = Arc::new(Metrics::new("/nonexistent".into()));
        let mut s = MetricsServer::bind("127.0.0.1:0".parse().unwrap(), m)
            .await
            .unwrap();
        s.request_timeout = Duration::from_millis(500);
        let addr = s.local_addr().unwrap();
        let task = tokio::spawn(s.run());
        let mut idle = Vec::new();
        for _ in 0..MAX_CONNECTIONS {
            idle.push(TcpStream::connect(addr).await.unwrap());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut extra = TcpStream::connect(addr).await.unwrap();
        let mut b = Vec::new();
        let n = timeout(Duration::from_millis(400), extra.read_to_end(&mut b))
            .await
            .expect("closed at once, before the idle ones time out")
            .unwrap();
        assert_eq!(n, 0, "no answer past the limit");
        for c in &mut idle {
            let mut b = Vec::new();
            timeout(Duration::from_secs(3), c.read_to_end(&mut b))
                .await
                .unwrap()
                .unwrap();
            assert!(
                b.starts_with(b"HTTP/1.1 400"),
                "{}",
                String::from_utf8_lossy(&b)
            );
        }
        let ok = get(addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
        assert!(ok.contains(super::super::expose::CONTENT_TYPE), "{ok}");
        assert!(ok.contains("smbwatch_build_info"), "{ok}");
        let top = get(addr, b"GET /top HTTP/1.1\r\n\r\n").await;
        assert!(
            top.starts_with("HTTP/1.1 200") && top.contains("\"tracked_sources\":0"),
            "{top}"
        );
        let nf = get(addr, b"GET /nope HTTP/1.1\r\n\r\n").await;
        assert!(nf.starts_with("HTTP/1.1 404"), "{nf}");
        let long = format!(
            "GET /metrics HTTP/1.1\r\nX: {}\r\n\r\n",
            "a".repeat(MAX_REQUEST)
        );
        let big = get(addr, long.as_bytes()).await;
        assert!(big.starts_with("HTTP/1.1 400"), "{big}");
        task.abort();
    }

    #[test]
    fn request_lines() {
        assert_eq!(
            parse_request(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            Ok("/metrics")
        );
        assert_eq!(
            parse_request(b"GET /top?x=1 HTTP/1.0\r\n\r\n"),
            Ok("/top?x=1")
        );
        assert_eq!(
            parse_request(b"POST /metrics HTTP/1.1\r\n\r\n")
                .unwrap_err()
                .0,
            405
        );
        assert_eq!(parse_request(b"\xff\xfe\r\n\r\n").unwrap_err().0, 400);
        assert_eq!(parse_request(b"GET /metrics\r\n\r\n").unwrap_err().0, 400);
    }
}
