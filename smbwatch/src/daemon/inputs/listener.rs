//! TCP listener for forwarded host events: one JSON object or one XML
//! `<Event>` per line, as Winlogbeat (`output.logstash`-less TCP), NXLog
//! (`om_tcp` + `to_json()`), or a syslog relay writes them.
//!
//! Plain TCP without authentication, so the default address is loopback;
//! a non-loopback address is accepted but warned about, unless the listener
//! speaks TLS and requires client certificates ([`super::tls`]). Lines longer than
//! `max_line` are skipped (the rest of the line is discarded, the
//! connection stays up). Connections beyond `max_connections`, or beyond
//! `max_connections_per_peer` from one address, are closed at once. A
//! connection whose started line is not complete within `line_timeout` (a
//! slowloris sending a byte a second), or that completes no line for
//! `idle_timeout`, is closed, so slow peers cannot hold every slot. Each
//! is logged with a `warn!` that names the peer and the limit, refusals
//! and timeouts at most once per [`REPORT_INTERVAL`] with a count; the
//! listener keeps running either way.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::tls::{self, TlsError, TlsFiles};
use crate::hostlog::{parse_line_at, HostEvent, LineFormat, LineOutcome};
pub use crate::metrics::counters::{ListenerCounters, ListenerStats};

/// Listener settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenerConfig {
    /// Address to listen on (default `127.0.0.1:5514`).
    pub listen: SocketAddr,
    /// Longest accepted line in bytes, newline excluded.
    pub max_line: usize,
    /// Most connections open at once.
    pub max_connections: usize,
    /// Most connections open at once from one peer address.
    pub max_connections_per_peer: usize,
    /// A started line must be complete within this time.
    pub line_timeout: Duration,
    /// A connection must complete a line at least this often.
    pub idle_timeout: Duration,
    /// TLS with client certificates; plain TCP when `None`.
    pub tls: Option<TlsFiles>,
}

impl Default for ListenerConfig {
    fn default() -> Self {
        let h = crate::config::HostlogConfig::default();
        Self {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 5514)),
            max_line: h.max_line,
            max_connections: h.max_connections,
            max_connections_per_peer: h.max_connections_per_peer,
            line_timeout: h.line_timeout,
            idle_timeout: h.idle_timeout,
            tls: None,
        }
    }
}

impl ListenerConfig {
    /// From the `[hostlog]` section: `None` when no `listen` is configured.
    pub fn from_hostlog(cfg: &crate::config::HostlogConfig) -> Option<Self> {
        cfg.listen.map(|listen| Self {
            listen: listen.0,
            max_line: cfg.max_line,
            max_connections: cfg.max_connections,
            max_connections_per_peer: cfg.max_connections_per_peer,
            line_timeout: cfg.line_timeout,
            idle_timeout: cfg.idle_timeout,
            tls: match (&cfg.tls_cert, &cfg.tls_key, &cfg.tls_client_ca) {
                (Some(cert), Some(key), Some(ca)) => Some(TlsFiles {
                    cert: cert.clone(),
                    key: key.clone(),
                    client_ca: ca.clone(),
                }),
                // Validation refuses a partial set.
                _ => None,
            },
        })
    }
}

/// Refusals and timeouts are logged at most once per this interval, with
/// the number that were not logged since: a flood of connections must not
/// become a flood of log lines.
pub const REPORT_INTERVAL: Duration = Duration::from_secs(10);

/// Rate limit for one kind of warning: the first occurrence is logged, the
/// next ones within [`REPORT_INTERVAL`] are only counted, and the count
/// goes out with the next line (or at the next [`flush`](Self::flush)).
#[derive(Debug, Default)]
struct RateLimit {
    last: Option<Instant>,
    suppressed: u64,
}

impl RateLimit {
    /// `Some(suppressed since the last line)` when this occurrence may be
    /// logged now.
    fn note(&mut self, now: Instant) -> Option<u64> {
        if self.last.is_some_and(|l| now < l + REPORT_INTERVAL) {
            self.suppressed += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.suppressed))
    }

    /// The count not yet logged, once the interval has passed.
    fn flush(&mut self, now: Instant) -> Option<u64> {
        if self.suppressed == 0 || self.last.is_some_and(|l| now < l + REPORT_INTERVAL) {
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.suppressed))
    }
}

/// Open connections per peer address; a [`PeerSlot`] gives its place back
/// when dropped, however its connection task ends.
#[derive(Debug, Default)]
struct PeerCounts(Mutex<HashMap<IpAddr, usize>>);

struct PeerSlot {
    counts: Arc<PeerCounts>,
    ip: IpAddr,
}

/// What the per-peer cap counts: an IPv4 address, or an IPv6 address's /64
/// (one host holds a whole /64 and can pick a new address per connection;
/// 8 addresses of one /64 held all 64 slots and refused a real forwarder).
/// An IPv4-mapped IPv6 address counts as its IPv4 address.
pub(crate) fn peer_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !(u128::from(u64::MAX))).into()),
        },
    }
}

/// The peer as the cap counts it, for messages (`2001:db8::/64`).
fn peer_label(ip: IpAddr) -> String {
    match peer_key(ip) {
        k @ IpAddr::V6(_) => format!("{k}/64"),
        k => k.to_string(),
    }
}

impl PeerCounts {
    /// A slot for `ip` (counted by [`peer_key`]), or the number already
    /// open when `limit` is reached.
    fn acquire(self: &Arc<Self>, ip: IpAddr, limit: usize) -> Result<PeerSlot, usize> {
        let ip = peer_key(ip);
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let n = m.entry(ip).or_default();
        if *n >= limit {
            return Err(*n);
        }
        *n += 1;
        Ok(PeerSlot {
            counts: Arc::clone(self),
            ip,
        })
    }
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        let mut m = self.counts.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = m.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.ip);
            }
        }
    }
}

/// Listener errors (only binding is fatal).
#[derive(Debug, thiserror::Error)]
pub enum ListenerError {
    /// The address could not be bound.
    #[error("host-log listener: cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The configuration cannot work.
    #[error("host-log listener: {0}")]
    Config(String),
    /// The TLS files cannot be used.
    #[error(transparent)]
    Tls(#[from] TlsError),
}

fn inc(a: &AtomicU64) {
    a.fetch_add(1, Ordering::Relaxed);
}

/// Bad records logged per connection at `warn`; the rest at `debug`.
const WARN_BAD_PER_CONNECTION: u64 = 10;

/// A bound listener (bind first to learn the port, then [`run`](Self::run)).
#[derive(Debug)]
pub struct Listener {
    socket: TcpListener,
    cfg: ListenerConfig,
    tls: Option<Arc<rustls::ServerConfig>>,
    counters: Arc<ListenerCounters>,
}

impl Listener {
    /// Bind the configured address.
    pub async fn bind(cfg: ListenerConfig) -> Result<Self, ListenerError> {
        if cfg.max_line == 0
            || cfg.max_connections == 0
            || cfg.max_connections_per_peer == 0
            || cfg.line_timeout.is_zero()
            || cfg.idle_timeout.is_zero()
        {
            return Err(ListenerError::Config(
                "max_line, max_connections, max_connections_per_peer, line_timeout and \
                 idle_timeout must be greater than 0"
                    .into(),
            ));
        }
        let tls = cfg.tls.as_ref().map(tls::server_config).transpose()?;
        let socket = TcpListener::bind(cfg.listen)
            .await
            .map_err(|source| ListenerError::Bind {
                addr: cfg.listen,
                source,
            })?;
        if !cfg.listen.ip().is_loopback() && tls.is_none() {
            warn!(
                addr = %cfg.listen,
                "host-log listener on a non-loopback address: plain TCP without authentication, \
                 anyone who can reach it can inject host events"
            );
        }
        Ok(Self {
            socket,
            cfg,
            tls,
            counters: Arc::default(),
        })
    }

    /// Its live counters (for the metrics endpoint).
    pub fn counters(&self) -> Arc<ListenerCounters> {
        self.counters.clone()
    }

    /// The bound address (the real port when configured with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.socket.local_addr().unwrap_or(self.cfg.listen)
    }

    /// Accept connections until `shutdown` completes, sending parsed events
    /// on `tx`; then stop reading and wait for connection tasks to end.
    /// A full channel slows the readers down (TCP back-pressure on the
    /// forwarders) rather than dropping events.
    pub async fn run(
        self,
        tx: mpsc::Sender<HostEvent>,
        shutdown: impl Future<Output = ()>,
    ) -> ListenerStats {
        let addr = self.local_addr();
        info!(
            %addr,
            max_line = self.cfg.max_line,
            max_connections = self.cfg.max_connections,
            max_connections_per_peer = self.cfg.max_connections_per_peer,
            "host-log listener up"
        );
        let permits = Arc::new(Semaphore::new(self.cfg.max_connections));
        let peers = Arc::new(PeerCounts::default());
        let refusals = Mutex::new(RateLimit::default());
        let timeouts = Arc::new(Mutex::new(RateLimit::default()));
        let mut report = tokio::time::interval(REPORT_INTERVAL);
        report.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut tasks = JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
                _ = report.tick() => {
                    let now = Instant::now();
                    if let Some(n) = lock(&refusals).flush(now) {
                        warn!(count = n, "host-log listener: refused {n} more connections in the last {}s (limits above)", REPORT_INTERVAL.as_secs());
                    }
                    if let Some(n) = lock(&timeouts).flush(now) {
                        warn!(count = n, "host-log listener: closed {n} more connections for slowness in the last {}s", REPORT_INTERVAL.as_secs());
                    }
                }
                accepted = self.socket.accept() => {
                    let (stream, peer) = match accepted {
                        Ok(x) => x,
                        Err(e) => {
                            // EMFILE and friends: keep serving the open connections.
                            warn!(error = %e, "host-log listener: accept failed; retrying in 100 ms");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            continue;
                        }
                    };
                    let refuse = |why: String| {
                        inc(&self.counters.refused);
                        if let Some(earlier) = lock(&refusals).note(Instant::now()) {
                            let more = if earlier > 0 {
                                format!(" ({earlier} more refused since the last report)")
                            } else {
                                String::new()
                            };
                            warn!(%peer, "host-log listener: refusing connection from {peer}: {why}{more}");
                        }
                    };
                    // The per-peer check first: one noisy address is named
                    // as such even when it has also filled the listener.
                    let slot = match peers.acquire(peer.ip(), self.cfg.max_connections_per_peer) {
                        Ok(slot) => slot,
                        Err(open) => {
                            refuse(format!(
                                "{open} connections from {} already open (hostlog.max_connections_per_peer)",
                                peer_label(peer.ip())
                            ));
                            continue;
                        }
                    };
                    let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
                        refuse(format!(
                            "{} connections already open (hostlog.max_connections)",
                            self.cfg.max_connections
                        ));
                        continue;
                    };
                    inc(&self.counters.accepted);
                    debug!(%peer, "host-log listener: connection accepted");
                    let conn = Connection {
                        peer,
                        max_line: self.cfg.max_line,
                        line_timeout: self.cfg.line_timeout,
                        idle_timeout: self.cfg.idle_timeout,
                        counters: Arc::clone(&self.counters),
                        timeouts: Arc::clone(&timeouts),
                        tx: tx.clone(),
                    };
                    let stop = stop_rx.clone();
                    let tls = self.tls.clone();
                    tasks.spawn(async move {
                        match tls {
                            None => conn.serve(stream, stop).await,
                            Some(config) => {
                                // The handshake is a line too: bounded by line_timeout.
                                let acceptor = tokio_rustls::TlsAcceptor::from(config);
                                match tokio::time::timeout(conn.line_timeout, acceptor.accept(stream)).await {
                                    Ok(Ok(s)) => conn.serve(s, stop).await,
                                    Ok(Err(e)) => conn.tls_failed(&e),
                                    Err(_) => conn.timed_out(true),
                                }
                            }
                        }
                        drop((permit, slot));
                    });
                }
            }
        }
        let _ = stop_tx.send(true);
        while tasks.join_next().await.is_some() {}
        let stats = self.counters.snapshot();
        info!(
            accepted = stats.accepted,
            refused = stats.refused,
            timed_out = stats.timed_out,
            tls_failed = stats.tls_failed,
            lines = stats.lines,
            events = stats.events,
            skipped = stats.skipped,
            bad = stats.bad,
            oversized = stats.oversized,
            "host-log listener stopped"
        );
        stats
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

struct Connection {
    peer: SocketAddr,
    max_line: usize,
    line_timeout: Duration,
    idle_timeout: Duration,
    counters: Arc<ListenerCounters>,
    timeouts: Arc<Mutex<RateLimit>>,
    tx: mpsc::Sender<HostEvent>,
}

impl Connection {
    async fn serve<S: AsyncRead + Unpin>(&self, stream: S, mut stop: watch::Receiver<bool>) {
        let mut reader = BufReader::with_capacity(64 * 1024, stream);
        let mut line: Vec<u8> = Vec::new();
        let mut line_no = 0u64;
        let mut discarding = false;
        let mut bad_here = 0u64;
        let input = self.peer.to_string();
        // The last complete line (or the connection), and the first byte of
        // the line not yet complete.
        let mut last_line = Instant::now();
        let mut line_start: Option<Instant> = None;
        loop {
            let idle_deadline = last_line + self.idle_timeout;
            let deadline = line_start.map_or(idle_deadline, |t| {
                (t + self.line_timeout).min(idle_deadline)
            });
            let buf = tokio::select! {
                r = reader.fill_buf() => match r {
                    Ok(b) => b,
                    Err(e) => {
                        debug!(peer = %self.peer, error = %e, "host-log listener: read failed");
                        return;
                    }
                },
                () = tokio::time::sleep_until(deadline) => {
                    self.timed_out(line_start.is_some_and(|t| t + self.line_timeout <= deadline));
                    return;
                }
                _ = stop.changed() => return,
            };
            if buf.is_empty() {
                // EOF: a last line without newline is still a line.
                if !line.is_empty() && !discarding {
                    line_no += 1;
                    self.handle(&input, line_no, &line, &mut bad_here).await;
                }
                return;
            }
            let (chunk, used, complete) = match buf.iter().position(|&b| b == b'\n') {
                Some(i) => (&buf[..i], i + 1, true),
                None => (buf, buf.len(), false),
            };
            if !discarding {
                if line.len() + chunk.len() > self.max_line {
                    discarding = true;
                    line.clear();
                    inc(&self.counters.oversized);
                    warn!(
                        peer = %self.peer,
                        line = line_no + 1,
                        max_line = self.max_line,
                        "host-log listener: line {} from {} is longer than {} bytes (hostlog.max_line): skipped",
                        line_no + 1,
                        self.peer,
                        self.max_line
                    );
                } else {
                    line.extend_from_slice(chunk);
                }
            }
            reader.consume(used);
            if !complete {
                line_start.get_or_insert_with(Instant::now);
                continue;
            }
            line_no += 1;
            if discarding {
                inc(&self.counters.lines);
                discarding = false;
            } else {
                let l = std::mem::take(&mut line);
                if !self.handle(&input, line_no, &l, &mut bad_here).await {
                    return;
                }
                line = l;
                line.clear();
            }
            // After handling: time spent waiting on a full channel is ours,
            // not the peer's.
            last_line = Instant::now();
            line_start = None;
        }
    }

    /// Log (rate-limited, with the timeouts) and count a failed handshake.
    fn tls_failed(&self, e: &std::io::Error) {
        inc(&self.counters.tls_failed);
        if let Some(earlier) = lock(&self.timeouts).note(Instant::now()) {
            warn!(
                peer = %self.peer,
                "host-log listener: TLS handshake with {} failed: {e} ({earlier} other connections closed since the last report)",
                self.peer
            );
        }
    }

    /// Log (rate-limited) and count a connection closed for slowness.
    fn timed_out(&self, mid_line: bool) {
        inc(&self.counters.timed_out);
        let Some(earlier) = lock(&self.timeouts).note(Instant::now()) else {
            return;
        };
        let more = if earlier > 0 {
            format!(" ({earlier} more closed since the last report)")
        } else {
            String::new()
        };
        if mid_line {
            warn!(
                peer = %self.peer,
                "host-log listener: closing connection from {}: a line took longer than {} (hostlog.line_timeout){more}",
                self.peer,
                humantime::format_duration(self.line_timeout)
            );
        } else {
            warn!(
                peer = %self.peer,
                "host-log listener: closing connection from {}: no complete line for {} (hostlog.idle_timeout){more}",
                self.peer,
                humantime::format_duration(self.idle_timeout)
            );
        }
    }

    /// Parse and forward one line; false when the receiver is gone.
    async fn handle(&self, input: &str, line_no: u64, raw: &[u8], bad_here: &mut u64) -> bool {
        inc(&self.counters.lines);
        let text = String::from_utf8_lossy(raw);
        let text = text.trim_end_matches('\r');
        if text.trim().is_empty() {
            return true;
        }
        let format = &self.counters.by_format[LineFormat::of(text).slot()];
        match parse_line_at(input, line_no, text) {
            Ok(Some(ev)) => {
                inc(&format[LineOutcome::Forwarded as usize]);
                inc(&self.counters.events);
                self.tx.send(ev).await.is_ok()
            }
            Ok(None) => {
                inc(&format[LineOutcome::Skipped as usize]);
                inc(&self.counters.skipped);
                true
            }
            Err(e) => {
                inc(&format[LineOutcome::Bad as usize]);
                inc(&self.counters.bad);
                *bad_here += 1;
                if *bad_here <= WARN_BAD_PER_CONNECTION {
                    warn!("host-log listener: bad record: {e}");
                } else {
                    debug!("host-log listener: bad record: {e}");
                }
                true
            }
        }
    }
}

#[cfg(test)]
mod tests;
