//! A small HTTP/1.1 server for `GET /metrics` and `GET /top`, on the tokio
//! thread (never the drain thread).
//!
//! Bounded: at most [`MAX_CONNECTIONS`] connections at once, a request head
//! of at most [`MAX_REQUEST`] bytes that must arrive within
//! [`REQUEST_TIMEOUT`], the response written within [`WRITE_TIMEOUT`], one
//! request per connection. When every slot is taken, a new connection
//! closes the oldest one still waiting for its request head: slow clients
//! (8 of them held every slot for 15 s) cannot keep a scraper out, since a
//! real scraper sends its request at once. A scraper or a `top` needs
//! nothing more.

use std::{
    collections::VecDeque,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
    sync::{oneshot, Semaphore},
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
        let waiting = Arc::new(Waiting::default());
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
            let permit = match permits.clone().try_acquire_owned() {
                Ok(p) => p,
                Err(_) if waiting.evict_oldest() => {
                    // The evicted task ends at once and frees its slot.
                    match tokio::time::timeout(EVICT_WAIT, permits.clone().acquire_owned()).await {
                        Ok(Ok(p)) => {
                            tracing::debug!(%peer, "metrics: all slots taken; closed the oldest connection still without a request");
                            p
                        }
                        _ => continue,
                    }
                }
                Err(_) => {
                    tracing::debug!(%peer, "metrics: connection limit reached, closed");
                    continue;
                }
            };
            let (id, evicted) = waiting.push();
            let metrics = self.metrics.clone();
            let top = top.clone();
            let waiting = waiting.clone();
            let timeout = self.request_timeout;
            let mut conn = conn;
            tokio::spawn(async move {
                let head = tokio::select! {
                    h = read_head(&mut conn, timeout) => Some(h),
                    _ = evicted => None,
                };
                waiting.remove(id);
                if let Some(head) = head {
                    if let Err(e) = serve(conn, head, &metrics, &top).await {
                        tracing::debug!(%peer, error = %e, "metrics: connection ended");
                    }
                }
                drop(permit);
            });
        }
    }
}

/// How long the accept loop waits for an evicted connection's slot.
const EVICT_WAIT: Duration = Duration::from_secs(1);

/// Connections still waiting for their request head, oldest first, each
/// with the sender that closes it.
#[derive(Debug, Default)]
struct Waiting(Mutex<WaitList>);

/// [`Waiting`]'s contents: the last id given, and the waiting connections.
#[derive(Debug, Default)]
struct WaitList {
    last_id: u64,
    queue: VecDeque<(u64, oneshot::Sender<()>)>,
}

impl Waiting {
    fn push(&self) -> (u64, oneshot::Receiver<()>) {
        let (tx, rx) = oneshot::channel();
        let mut g = self.0.lock().unwrap_or_else(|e| e.into_inner());
        g.last_id += 1;
        let id = g.last_id;
        g.queue.push_back((id, tx));
        (id, rx)
    }

    fn remove(&self, id: u64) {
        let mut g = self.0.lock().unwrap_or_else(|e| e.into_inner());
        g.queue.retain(|(i, _)| *i != id);
    }

    /// Closes the oldest waiting connection; false if none is waiting.
    fn evict_oldest(&self) -> bool {
        let mut g = self.0.lock().unwrap_or_else(|e| e.into_inner());
        while let Some((_, tx)) = g.queue.pop_front() {
            if tx.send(()).is_ok() {
                return true;
            }
        }
        false
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

/// The request head; `None` when it did not come whole within
/// `request_timeout` (or was too long, or the client closed).
async fn read_head(
    conn: &mut TcpStream,
    request_timeout: Duration,
) -> std::io::Result<Option<Vec<u8>>> {
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
    match read {
        Err(_) | Ok(Ok(false)) => Ok(None),
        Ok(Err(e)) => Err(e),
        Ok(Ok(true)) => Ok(Some(head)),
    }
}

/// Answers the request `head` ([`read_head`]'s result) on `conn`.
async fn serve(
    mut conn: TcpStream,
    head: std::io::Result<Option<Vec<u8>>>,
    metrics: &Arc<Metrics>,
    top: &TopCache,
) -> std::io::Result<()> {
    let (status, ctype, body) = match head? {
        None => (400, "text/plain", b"bad request\n".to_vec()),
        Some(head) => match parse_request(&head) {
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

    /// Past the connection limit the oldest connection still without a
    /// request is closed unanswered to make room; a client that sends no
    /// request is answered 400 after the timeout and its slot freed; then
    /// requests are served again.
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
        let extra = TcpStream::connect(addr).await.unwrap();
        let mut oldest = idle.remove(0);
        let mut b = Vec::new();
        let n = timeout(Duration::from_millis(400), oldest.read_to_end(&mut b))
            .await
            .expect("the oldest closed at once, before the idle ones time out")
            .unwrap();
        assert_eq!(n, 0, "no answer to the evicted one");
        idle.push(extra);
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

    /// Slow clients holding every slot do not keep a scraper out: it is
    /// answered at once, long before their request timeout.
    #[tokio::test]
    async fn slow_clients_do_not_block_a_scrape() {
        let m = Arc::new(Metrics::new("/nonexistent".into()));
        let s = MetricsServer::bind("127.0.0.1:0".parse().unwrap(), m)
            .await
            .unwrap();
        let addr = s.local_addr().unwrap();
        let task = tokio::spawn(s.run());
        let mut slow = Vec::new();
        for _ in 0..2 * MAX_CONNECTIONS {
            let mut c = TcpStream::connect(addr).await.unwrap();
            // Half a request head, never finished.
            c.write_all(b"GET /metr").await.unwrap();
            slow.push(c);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        for _ in 0..3 {
            let ok = timeout(
                Duration::from_secs(2),
                get(addr, b"GET /metrics HTTP/1.1\r\n\r\n"),
            )
            .await
            .expect("answered while slow clients hold the slots");
            assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
        }
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
