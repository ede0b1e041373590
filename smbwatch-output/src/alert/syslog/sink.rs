//! The sink: a bounded queue that `send` fills without waiting, and one
//! tokio task that owns the connection and drains the queue.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::config::SyslogConfig;
use super::format::Formatter;
use super::queue::MessageQueue;
use super::target::Target;
use super::transport::{is_message_error, Conn, Endpoint, TlsClient};
use super::SyslogError;
use crate::alert::ecs::Document;

/// Give up a connection attempt after this long (a black-holed TCP connect
/// would otherwise take minutes).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection that lasted this long counts as healthy even if it carried
/// nothing: losing it reconnects at once rather than after a backoff.
const HEALTHY_CONNECTION: Duration = Duration::from_secs(10);
/// At most one "queue full" warning per this interval.
const DROP_WARN_INTERVAL: Duration = Duration::from_secs(10);

/// Exponential reconnect delay: `min`, doubling per failure, capped at `max`.
#[derive(Clone, Debug)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    /// Starts at `min`.
    pub fn new(min: Duration, max: Duration) -> Self {
        Self {
            min,
            max,
            next: min,
        }
    }

    /// The delay before the next attempt; doubles the one after.
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        d
    }

    /// Back to `min` once a connection proved itself.
    pub fn reset(&mut self) {
        self.next = self.min;
    }
}

/// Counters of a syslog sink.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SyslogStats {
    /// Messages written to the collector.
    pub sent: u64,
    /// Messages waiting (queue plus the one being sent).
    pub queued: u64,
    /// Bytes held in the queue (message text plus per-message overhead),
    /// at most `queue_bytes`.
    pub queued_bytes: u64,
    /// Messages dropped: oldest past the queue bounds, or rejected by the
    /// transport as too large.
    pub dropped: u64,
    /// Messages shortened to fit `max_message`.
    pub truncated: u64,
    /// Connections established after the first one.
    pub reconnects: u64,
    /// Connection attempts that failed.
    pub connect_failures: u64,
}

pub(super) struct Shared {
    queue: Mutex<MessageQueue>,
    /// The message the task has taken off the queue and not yet sent.
    in_flight: AtomicBool,
    notify: Notify,
    closing: AtomicBool,
    sent: AtomicU64,
    dropped: AtomicU64,
    truncated: AtomicU64,
    reconnects: AtomicU64,
    pub(super) connect_failures: AtomicU64,
    last_drop_warning: Mutex<Option<std::time::Instant>>,
}

impl Shared {
    fn lock_queue(&self) -> std::sync::MutexGuard<'_, MessageQueue> {
        // A panic while holding the lock cannot leave the deque inconsistent.
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Copies of the queued messages, oldest first.
    #[cfg(test)]
    pub(super) fn queued_messages(&self) -> Vec<Vec<u8>> {
        let mut q = self.lock_queue();
        let all: Vec<Vec<u8>> = std::iter::from_fn(|| q.pop()).collect();
        for m in &all {
            q.push(m.clone());
        }
        all
    }

    fn stats(&self) -> SyslogStats {
        let (queued, queued_bytes) = {
            let q = self.lock_queue();
            (q.len() as u64, q.bytes() as u64)
        };
        SyslogStats {
            sent: self.sent.load(Ordering::Relaxed),
            queued: queued + u64::from(self.in_flight.load(Ordering::Relaxed)),
            queued_bytes,
            dropped: self.dropped.load(Ordering::Relaxed),
            truncated: self.truncated.load(Ordering::Relaxed),
            reconnects: self.reconnects.load(Ordering::Relaxed),
            connect_failures: self.connect_failures.load(Ordering::Relaxed),
        }
    }
}

/// Alerts to a syslog collector through a bounded queue and a connection task.
pub struct SyslogSink {
    pub(super) shared: Arc<Shared>,
    formatter: Formatter,
    target: Target,
    queue_cap: usize,
    queue_bytes: usize,
    shutdown_timeout: Duration,
    /// `None` once shut down.
    task: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for SyslogSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyslogSink")
            .field("target", &self.target.to_string())
            .field("stats", &self.shared.stats())
            .finish()
    }
}

impl SyslogSink {
    /// Validates the configuration, loads the TLS CA if needed and starts
    /// the connection task (inside the current tokio runtime). An
    /// unreachable collector is not an error: it is logged and retried.
    pub fn start(cfg: &SyslogConfig) -> Result<Self, SyslogError> {
        let target = cfg.validate()?;
        let endpoint = target.clone().map_tls(|_, tls| TlsClient::load(tls))?;
        let rt = tokio::runtime::Handle::try_current().map_err(|_| SyslogError::NoRuntime)?;
        let shared = Arc::new(Shared {
            queue: Mutex::new(MessageQueue::new(cfg.queue, cfg.queue_bytes)),
            in_flight: AtomicBool::new(false),
            notify: Notify::new(),
            closing: AtomicBool::new(false),
            sent: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            truncated: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
            connect_failures: AtomicU64::new(0),
            last_drop_warning: Mutex::new(None),
        });
        let task = rt.spawn(
            Task {
                shared: shared.clone(),
                endpoint,
                backoff: Backoff::new(cfg.backoff_min, cfg.backoff_max),
                queue_cap: cfg.queue,
                queue_bytes: cfg.queue_bytes,
                pending: None,
                connected_once: false,
            }
            .run(),
        );
        Ok(Self {
            shared,
            formatter: Formatter::from_config(cfg, &target),
            target,
            queue_cap: cfg.queue,
            queue_bytes: cfg.queue_bytes,
            shutdown_timeout: cfg.shutdown_timeout,
            task: Some(task),
        })
    }

    /// The formatter in use.
    pub fn formatter(&self) -> &Formatter {
        &self.formatter
    }

    /// Formats the alert's document (at most `max_message` bytes) and
    /// queues it; never waits for the network.
    pub fn send(&self, doc: &Document<'_>) {
        let m = self.formatter.message(doc);
        if m.truncated {
            self.shared.truncated.fetch_add(1, Ordering::Relaxed);
        }
        let dropped = self.shared.lock_queue().push(m.text.into_bytes());
        self.shared.notify.notify_one();
        if dropped.messages > 0 {
            let total = self
                .shared
                .dropped
                .fetch_add(dropped.messages, Ordering::Relaxed)
                + dropped.messages;
            let mut last = self
                .shared
                .last_drop_warning
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if last.is_none_or(|t| t.elapsed() >= DROP_WARN_INTERVAL) {
                *last = Some(std::time::Instant::now());
                tracing::warn!(
                    "syslog queue for {} full (bounds: {} messages, {} bytes): dropped the oldest, {total} dropped so far",
                    self.target,
                    self.queue_cap,
                    self.queue_bytes,
                );
            }
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> SyslogStats {
        self.shared.stats()
    }

    /// Flushes the queue, waiting at most the configured `shutdown_timeout`.
    pub async fn shutdown(self) -> SyslogStats {
        let t = self.shutdown_timeout;
        self.shutdown_within(t).await
    }

    /// Flushes the queue, waiting at most `deadline`; what is still queued
    /// then is reported and abandoned. Returns the final counters.
    pub async fn shutdown_within(mut self, deadline: Duration) -> SyslogStats {
        self.shared.closing.store(true, Ordering::SeqCst);
        self.shared.notify.notify_one();
        if let Some(mut task) = self.task.take() {
            if tokio::time::timeout(deadline, &mut task).await.is_err() {
                task.abort();
                let _ = task.await;
            }
        }
        let stats = self.shared.stats();
        if stats.queued > 0 {
            tracing::warn!(
                "shutdown: {} alert(s) for {} not delivered within {}",
                stats.queued,
                self.target,
                humantime::format_duration(deadline)
            );
        }
        stats
    }
}

impl Drop for SyslogSink {
    /// Dropping without [`shutdown`](SyslogSink::shutdown) abandons the
    /// queue: the task is stopped rather than left retrying forever.
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let queued = self.shared.stats().queued;
            if queued > 0 {
                tracing::warn!(
                    "syslog sink for {} dropped without shutdown: {queued} alert(s) abandoned",
                    self.target
                );
            }
        }
    }
}

/// Where the connection task stands.
enum Link {
    /// Connect now; `failures` attempts in a row have failed so far.
    Connecting {
        /// Failed attempts in a row.
        failures: u32,
    },
    /// Wait until `until`, then connect.
    Backoff {
        /// When to try again.
        until: Instant,
        /// Failed attempts in a row.
        failures: u32,
    },
    /// A connection is open.
    Connected {
        /// The connection.
        conn: Conn,
        /// When it was opened.
        opened: Instant,
        /// Whether it carried a message yet.
        delivered: bool,
    },
}

/// The connection task: connects (with backoff), drains the queue, keeps a
/// failed message for the next connection, exits on shutdown once the
/// queue is empty.
struct Task {
    shared: Arc<Shared>,
    endpoint: Endpoint,
    backoff: Backoff,
    queue_cap: usize,
    queue_bytes: usize,
    /// The message taken off the queue and not yet sent; kept across
    /// reconnects.
    pending: Option<Vec<u8>>,
    /// Connections after the first are counted as reconnects.
    connected_once: bool,
}

impl Task {
    async fn run(mut self) {
        let mut link = Link::Connecting { failures: 0 };
        loop {
            if self.shared.closing.load(Ordering::SeqCst) && self.idle() {
                if let Link::Connected { conn, .. } = link {
                    conn.close().await;
                }
                return;
            }
            link = match link {
                Link::Backoff { until, failures } => {
                    self.sleep_unless_done(until).await;
                    Link::Connecting { failures }
                }
                Link::Connecting { failures } => self.connect(failures).await,
                Link::Connected {
                    conn,
                    opened,
                    delivered,
                } => self.step(conn, opened, delivered).await,
            };
        }
    }

    /// Nothing pending and nothing queued.
    fn idle(&self) -> bool {
        self.pending.is_none() && self.shared.lock_queue().is_empty()
    }

    async fn connect(&mut self, failures: u32) -> Link {
        let target = &self.endpoint;
        let attempt = tokio::time::timeout(CONNECT_TIMEOUT, Conn::connect(target))
            .await
            .unwrap_or_else(|_| {
                Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "connect timed out",
                ))
            });
        match attempt {
            Ok(conn) => {
                if self.connected_once {
                    self.shared.reconnects.fetch_add(1, Ordering::Relaxed);
                }
                if failures > 0 {
                    tracing::info!(
                        "syslog: connected to {target} after {failures} failed attempt(s)"
                    );
                } else {
                    tracing::debug!("syslog: connected to {target}");
                }
                self.connected_once = true;
                Link::Connected {
                    conn,
                    opened: Instant::now(),
                    delivered: false,
                }
            }
            Err(e) => {
                self.shared.connect_failures.fetch_add(1, Ordering::Relaxed);
                let failures = failures + 1;
                let delay = self.backoff.next_delay();
                if failures == 1 {
                    tracing::warn!(
                        "syslog: cannot reach {target}: {e}; retrying with backoff, alerts are queued (up to {} messages, {} bytes)",
                        self.queue_cap,
                        self.queue_bytes
                    );
                } else {
                    tracing::debug!("syslog: attempt {failures} to reach {target} failed: {e}; next in {delay:?}");
                }
                Link::Backoff {
                    until: Instant::now() + delay,
                    failures,
                }
            }
        }
    }

    /// Sends the pending message (taking the next one off the queue if
    /// needed), or waits for work while watching the connection.
    async fn step(&mut self, mut conn: Conn, opened: Instant, mut delivered: bool) -> Link {
        let target = &self.endpoint;
        if self.pending.is_none() {
            self.pending = self.shared.lock_queue().pop();
            self.shared
                .in_flight
                .store(self.pending.is_some(), Ordering::Relaxed);
        }
        let Some(msg) = self.pending.as_deref() else {
            // Idle: wait for work, and notice a collector that goes away
            // meanwhile so the next alert finds a fresh connection.
            let closed = tokio::select! {
                () = self.shared.notify.notified() => false,
                () = conn.wait_closed() => true,
            };
            if closed {
                tracing::warn!("syslog: {target} closed the connection; reconnecting");
                return self.lost(opened, delivered);
            }
            return Link::Connected {
                conn,
                opened,
                delivered,
            };
        };
        if conn.lost().await {
            tracing::warn!("syslog: {target} closed the connection; reconnecting");
            return self.lost(opened, delivered);
        }
        match conn.send(msg).await {
            Ok(()) => {
                self.shared.sent.fetch_add(1, Ordering::Relaxed);
                self.pending = None;
                self.shared.in_flight.store(false, Ordering::Relaxed);
                delivered = true;
            }
            Err(e) if is_message_error(&e) => {
                tracing::error!(
                    "syslog: {target} rejected a {}-byte message: {e}; dropped",
                    msg.len()
                );
                self.shared.dropped.fetch_add(1, Ordering::Relaxed);
                self.pending = None;
                self.shared.in_flight.store(false, Ordering::Relaxed);
            }
            Err(e) => {
                // Keep `pending`: it is re-sent on the next connection.
                tracing::warn!("syslog: write to {target} failed: {e}; reconnecting");
                return self.lost(opened, delivered);
            }
        }
        Link::Connected {
            conn,
            opened,
            delivered,
        }
    }

    /// The connection died. One that proved itself (carried a message, or
    /// lived long enough) is replaced at once with the backoff reset; one
    /// that died young without delivering (a collector that accepts and
    /// hangs up, e.g. past its session limit) backs off further, so such a
    /// collector is not hammered.
    fn lost(&mut self, opened: Instant, delivered: bool) -> Link {
        if delivered || opened.elapsed() >= HEALTHY_CONNECTION {
            self.backoff.reset();
            Link::Connecting { failures: 0 }
        } else {
            Link::Backoff {
                until: Instant::now() + self.backoff.next_delay(),
                failures: 0,
            }
        }
    }

    /// Sleeps until `until`, but returns early when shutdown is requested
    /// and there is nothing left to send.
    async fn sleep_unless_done(&self, until: Instant) {
        loop {
            tokio::select! {
                () = tokio::time::sleep_until(until) => return,
                () = self.shared.notify.notified() => {
                    if self.shared.closing.load(Ordering::SeqCst) && self.idle() {
                        return;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_the_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let ms: Vec<u128> = (0..6).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(ms, [100, 200, 400, 800, 1000, 1000]);
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_millis(100));
    }
}
