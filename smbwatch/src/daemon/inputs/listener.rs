//! TCP listener for forwarded host events: one JSON object or one XML
//! `<Event>` per line, as Winlogbeat (`output.logstash`-less TCP), NXLog
//! (`om_tcp` + `to_json()`), or a syslog relay writes them.
//!
//! Plain TCP without authentication, so the default address is loopback;
//! a non-loopback address is accepted but warned about. Lines longer than
//! `max_line` are skipped (the rest of the line is discarded, the
//! connection stays up); connections beyond `max_connections` are closed at
//! once. Both are logged with a `warn!` that names the peer and the limit;
//! the listener keeps running either way.

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use crate::hostlog::{parse_line_at, HostEvent};

/// Listener settings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ListenerConfig {
    /// Address to listen on (default `127.0.0.1:5514`).
    pub listen: SocketAddr,
    /// Longest accepted line in bytes, newline excluded.
    pub max_line: usize,
    /// Most connections open at once.
    pub max_connections: usize,
}

impl Default for ListenerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 5514)),
            max_line: 65_536,
            max_connections: 64,
        }
    }
}

impl ListenerConfig {
    /// From the `[hostlog]` section: `None` when no `listen` is configured.
    pub fn from_hostlog(cfg: &crate::config::HostlogConfig) -> Result<Option<Self>, String> {
        Ok(cfg.listen_addr()?.map(|listen| Self {
            listen,
            max_line: cfg.max_line,
            max_connections: cfg.max_connections,
        }))
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
}

/// Counters (readable while running).
#[derive(Debug, Default)]
pub struct ListenerCounters {
    /// Connections accepted.
    pub accepted: AtomicU64,
    /// Connections refused (limit reached).
    pub refused: AtomicU64,
    /// Lines read (complete or oversized).
    pub lines: AtomicU64,
    /// Events forwarded on the channel.
    pub events: AtomicU64,
    /// Well-formed records of unused event ids.
    pub skipped: AtomicU64,
    /// Records that failed to parse.
    pub bad: AtomicU64,
    /// Lines longer than `max_line`, skipped.
    pub oversized: AtomicU64,
}

/// A snapshot of [`ListenerCounters`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ListenerStats {
    /// Connections accepted.
    pub accepted: u64,
    /// Connections refused (limit reached).
    pub refused: u64,
    /// Lines read.
    pub lines: u64,
    /// Events forwarded.
    pub events: u64,
    /// Records skipped (unused event ids).
    pub skipped: u64,
    /// Records that failed to parse.
    pub bad: u64,
    /// Oversized lines skipped.
    pub oversized: u64,
}

impl ListenerCounters {
    /// Current values.
    pub fn snapshot(&self) -> ListenerStats {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ListenerStats {
            accepted: g(&self.accepted),
            refused: g(&self.refused),
            lines: g(&self.lines),
            events: g(&self.events),
            skipped: g(&self.skipped),
            bad: g(&self.bad),
            oversized: g(&self.oversized),
        }
    }
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
    counters: Arc<ListenerCounters>,
}

impl Listener {
    /// Bind the configured address.
    pub async fn bind(cfg: ListenerConfig) -> Result<Self, ListenerError> {
        if cfg.max_line == 0 || cfg.max_connections == 0 {
            return Err(ListenerError::Config(
                "max_line and max_connections must be at least 1".into(),
            ));
        }
        let socket = TcpListener::bind(cfg.listen)
            .await
            .map_err(|source| ListenerError::Bind {
                addr: cfg.listen,
                source,
            })?;
        if !cfg.listen.ip().is_loopback() {
            warn!(
                addr = %cfg.listen,
                "host-log listener on a non-loopback address: plain TCP without authentication, \
                 anyone who can reach it can inject host events"
            );
        }
        Ok(Self {
            socket,
            cfg,
            counters: Arc::default(),
        })
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
        info!(%addr, max_line = self.cfg.max_line, max_connections = self.cfg.max_connections, "host-log listener up");
        let permits = Arc::new(Semaphore::new(self.cfg.max_connections));
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut tasks = JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
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
                    let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
                        inc(&self.counters.refused);
                        warn!(
                            %peer,
                            max_connections = self.cfg.max_connections,
                            "host-log listener: refusing connection from {peer}: {} connections already open \
                             (hostlog.max_connections)",
                            self.cfg.max_connections
                        );
                        drop(stream);
                        continue;
                    };
                    inc(&self.counters.accepted);
                    debug!(%peer, "host-log listener: connection accepted");
                    let conn = Connection {
                        peer,
                        max_line: self.cfg.max_line,
                        counters: Arc::clone(&self.counters),
                        tx: tx.clone(),
                    };
                    let stop = stop_rx.clone();
                    tasks.spawn(async move {
                        conn.serve(stream, stop).await;
                        drop(permit);
                    });
                }
            }
        }
        let _ = stop_tx.send(true);
        while tasks.join_next().await.is_some() {}
        let stats = self.counters.snapshot();
        info!(?stats, "host-log listener stopped");
        stats
    }
}

struct Connection {
    peer: SocketAddr,
    max_line: usize,
    counters: Arc<ListenerCounters>,
    tx: mpsc::Sender<HostEvent>,
}

impl Connection {
    async fn serve(self, stream: TcpStream, mut stop: watch::Receiver<bool>) {
        let mut reader = BufReader::with_capacity(64 * 1024, stream);
        let mut line: Vec<u8> = Vec::new();
        let mut line_no = 0u64;
        let mut discarding = false;
        let mut bad_here = 0u64;
        let input = self.peer.to_string();
        loop {
            let buf = tokio::select! {
                r = reader.fill_buf() => match r {
                    Ok(b) => b,
                    Err(e) => {
                        debug!(peer = %self.peer, error = %e, "host-log listener: read failed");
                        return;
                    }
                },
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
            if complete {
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
            }
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
        match parse_line_at(input, line_no, text) {
            Ok(Some(ev)) => {
                inc(&self.counters.events);
                self.tx.send(ev).await.is_ok()
            }
            Ok(None) => {
                inc(&self.counters.skipped);
                true
            }
            Err(e) => {
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
mod tests {
    use std::io::Write;
    use std::sync::Mutex;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::sync::oneshot;

    use super::*;

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
        type Writer = Captured;
        fn make_writer(&'a self) -> Captured {
            self.clone()
        }
    }

    const EV: &str = r#"{"EventID":3,"Channel":"Microsoft-Windows-Sysmon/Operational","UtcTime":"2020-09-20 06:57:48.481","Image":"C:\\x\\python.exe","Initiated":"true","SourceIp":"192.0.2.5","SourcePort":"50504","DestinationIp":"192.0.2.6","DestinationPort":"445"}"#;

    // current_thread: spawned connection tasks run on this thread and see
    // the test's log subscriber.
    #[tokio::test(flavor = "current_thread")]
    async fn oversized_lines_and_excess_connections_are_refused_and_logged() {
        let logs = Captured::default();
        let sub = tracing_subscriber::fmt()
            .with_writer(logs.clone())
            .with_ansi(false)
            .finish();
        let _guard = tracing::subscriber::set_default(sub);

        let cfg = ListenerConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            max_line: 1024,
            max_connections: 1,
        };
        let listener = Listener::bind(cfg).await.unwrap();
        let addr = listener.local_addr();
        let (tx, mut rx) = mpsc::channel(16);
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let server = tokio::spawn(listener.run(tx, async {
            let _ = stop_rx.await;
        }));

        let mut a = TcpStream::connect(addr).await.unwrap();
        let long = format!("{{\"EventID\":3,\"pad\":\"{}\"}}\n", "x".repeat(5000));
        let xml = r#"<Event><System><EventID>5140</EventID><TimeCreated SystemTime="2020-09-20T06:57:47Z"/><Channel>Security</Channel></System><EventData><Data Name="ShareName">\\*\C$</Data><Data Name="IpAddress">192.0.2.5</Data></EventData></Event>"#;
        let payload = format!("{EV}\r\n{long}not json at all\n{xml}\n{{\"EventID\":4634,\"Channel\":\"Security\",\"EventTime\":\"2020-01-01 00:00:00\"}}\n{EV}");
        a.write_all(payload.as_bytes()).await.unwrap();
        let first = rx.recv().await.unwrap();
        assert_eq!(first.image_name.as_deref(), Some("python.exe"));
        let second = rx.recv().await.unwrap();
        assert_eq!(second.share_name.as_deref(), Some("C$"));

        // `a` holds the only slot: a second connection is closed at once.
        let mut b = TcpStream::connect(addr).await.unwrap();
        let mut buf = [0u8; 16];
        assert_eq!(
            b.read(&mut buf).await.unwrap(),
            0,
            "refused connection is closed"
        );

        // The first connection still works; its last line ends at EOF.
        a.shutdown().await.unwrap();
        drop(a);
        let third = rx.recv().await.unwrap();
        assert_eq!(third.event_id, 3);

        // The listener kept running: a new connection is served once `a` is gone.
        let mut c = loop {
            // The slot frees when `a`'s task ends; until then `c` may be refused.
            let mut c = TcpStream::connect(addr).await.unwrap();
            let _ = c.write_all(format!("{EV}\n").as_bytes()).await;
            if let Ok(Some(ev)) = tokio::time::timeout(Duration::from_secs(2), rx.recv()).await {
                assert_eq!(ev.event_id, 3);
                break c;
            }
        };
        let _ = c.shutdown().await;

        stop_tx.send(()).unwrap();
        let stats = server.await.unwrap();
        assert_eq!(stats.oversized, 1);
        assert!(stats.refused >= 1);
        assert_eq!(stats.bad, 1);
        assert_eq!(stats.skipped, 1);
        assert_eq!(stats.events, 4);
        let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
        assert!(
            text.contains("is longer than 1024 bytes (hostlog.max_line): skipped"),
            "{text}"
        );
        assert!(
            text.contains("refusing connection from 127.0.0.1:"),
            "{text}"
        );
        assert!(
            text.contains("1 connections already open (hostlog.max_connections)"),
            "{text}"
        );
        assert!(text.contains("bad record: 127.0.0.1:"), "{text}");
        assert!(text.contains("line 3: invalid JSON"), "{text}");
    }

    #[tokio::test]
    async fn bind_errors_are_clear() {
        let first = Listener::bind(ListenerConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            ..ListenerConfig::default()
        })
        .await
        .unwrap();
        let taken = ListenerConfig {
            listen: first.local_addr(),
            ..ListenerConfig::default()
        };
        let err = Listener::bind(taken).await.unwrap_err();
        assert!(
            err.to_string()
                .starts_with("host-log listener: cannot listen on 127.0.0.1:"),
            "{err}"
        );
        let zero = ListenerConfig {
            max_connections: 0,
            ..ListenerConfig::default()
        };
        assert!(matches!(
            Listener::bind(zero).await,
            Err(ListenerError::Config(_))
        ));
    }

    #[test]
    fn config_from_hostlog_section() {
        let mut h = crate::config::HostlogConfig::default();
        assert_eq!(ListenerConfig::from_hostlog(&h).unwrap(), None);
        h.listen = Some("tcp://127.0.0.1:5514".into());
        let c = ListenerConfig::from_hostlog(&h).unwrap().unwrap();
        assert_eq!(c, ListenerConfig::default());
    }
}
