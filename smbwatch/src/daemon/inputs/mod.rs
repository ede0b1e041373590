//! Host-log inputs of the daemon, merged into one channel: files given with
//! `--host-log` (read once, or followed across rotation), stdin (`-`), and
//! the TCP listener for forwarders. The readers that wait for more (the
//! file follower, bounded line reading) are here, not in the pure
//! `hostlog` parsers.

pub mod follow;
pub mod lines;
pub mod listener;
pub mod tls;

use std::{path::PathBuf, time::Duration};

use tokio::sync::{mpsc, watch};

use crate::{
    config::HostlogConfig,
    hostlog::{self, Format, HostEvent},
};
use follow::{follow, Follower};
use listener::{Listener, ListenerConfig};

/// Events buffered between the inputs and the pipeline; a full channel
/// slows the readers down rather than dropping events. An event read from
/// a line holds at most about twice the line in strings, so with
/// `max_line` at 64 KiB the queue holds at most about 32 MiB.
const CHANNEL: usize = 256;

/// How often followed files are checked for new lines and rotation.
const FOLLOW_INTERVAL: Duration = Duration::from_millis(500);

/// The channel every input sends to; the receiving end goes to the drain
/// thread. It closes when every sender (each input's and the daemon's,
/// kept for listeners started by a reload) is gone.
pub(crate) fn channel() -> (mpsc::Sender<HostEvent>, mpsc::Receiver<HostEvent>) {
    mpsc::channel(CHANNEL)
}

/// Starts the file and stdin inputs, sending to `tx`.
///
/// When `shutdown` turns true every input stops taking new data, hands over
/// what it has already accepted and drops its sender.
pub(crate) fn spawn_files(
    cfg: &HostlogConfig,
    files: &[PathBuf],
    tx: &mpsc::Sender<HostEvent>,
    shutdown: watch::Receiver<bool>,
) -> Result<(), String> {
    for path in files {
        let tx = tx.clone();
        let stop = stopped(shutdown.clone());
        if path.as_os_str() == "-" {
            let max_line = cfg.max_line;
            tokio::spawn(async move {
                tokio::select! {
                    () = read_stdin(tx, max_line) => {}
                    () = stop => {}
                }
            });
        } else if cfg.follow {
            let follower = Follower::new(path, true, cfg.max_line).map_err(|e| e.to_string())?;
            let name = path.display().to_string();
            tokio::spawn(async move {
                if let Err(e) = follow(follower, FOLLOW_INTERVAL, tx, stop).await {
                    tracing::error!(error = %e, path = name, "following host log stopped");
                }
            });
        } else {
            // A file named on the command line was accepted as a whole: it
            // is handed over in full even across a stop (the pipeline's final
            // pass waits for it, within its grace period).
            drop(stop);
            tokio::spawn(read_once(path.clone(), tx));
        }
    }
    Ok(())
}

/// A running listener for forwarded host events, stopped on its own (a
/// reload replaces it) or at shutdown.
pub(crate) struct RunningListener {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<listener::ListenerStats>,
    /// Its live counters (for the metrics endpoint).
    pub counters: std::sync::Arc<listener::ListenerCounters>,
}

/// Binds and starts the listener `cfg` asks for, if any; a port in use is
/// an error here (at start-up, or a reload that keeps the old listener).
pub(crate) async fn start_listener(
    cfg: &HostlogConfig,
    tx: &mpsc::Sender<HostEvent>,
) -> Result<Option<RunningListener>, String> {
    let Some(lcfg) = ListenerConfig::from_hostlog(cfg) else {
        return Ok(None);
    };
    let listener = Listener::bind(lcfg).await.map_err(|e| e.to_string())?;
    tracing::info!(addr = %listener.local_addr(), "listening for forwarded host events");
    let (stop, rx) = watch::channel(false);
    let counters = listener.counters();
    let task = tokio::spawn(listener.run(tx.clone(), stopped(rx)));
    Ok(Some(RunningListener {
        stop,
        task,
        counters,
    }))
}

impl RunningListener {
    /// Stops taking connections, hands over accepted events, and waits
    /// (at most `grace`) until the socket is closed.
    pub(crate) async fn stop(self, grace: Duration) {
        let _ = self.stop.send(true);
        match tokio::time::timeout(grace, self.task).await {
            // The listener logs its own counts as it stops.
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "host-log listener task failed"),
            Err(_) => tracing::warn!("host-log listener did not stop within {grace:?}"),
        }
    }
}

/// Resolves once `shutdown` is true (or its sender is gone).
async fn stopped(mut shutdown: watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|&s| s).await;
}

async fn read_once(path: PathBuf, tx: mpsc::Sender<HostEvent>) {
    let p = path.clone();
    let parsed = tokio::task::spawn_blocking(move || hostlog::parse_file(&p, Format::Auto)).await;
    match parsed {
        Ok(Ok((mut events, summary))) => {
            report(&path.display().to_string(), &summary);
            // Correlation expects roughly time-ordered input.
            events.sort_by_key(|e| e.ts);
            for ev in events {
                if tx.send(ev).await.is_err() {
                    return;
                }
            }
        }
        Ok(Err(e)) => tracing::error!(error = %e, "host log not read"),
        Err(e) => tracing::error!(error = %e, path = %path.display(), "host-log reader failed"),
    }
}

async fn read_stdin(tx: mpsc::Sender<HostEvent>, max_line: usize) {
    match lines::forward("stdin", tokio::io::stdin(), max_line, &tx).await {
        Ok(s) => tracing::info!(
            lines = s.lines,
            events = s.events,
            skipped = s.skipped,
            bad = s.bad,
            oversized = s.oversized,
            "host log on stdin ended"
        ),
        Err(e) => tracing::error!(error = %e, "reading the host log on stdin failed"),
    }
}

fn report(name: &str, s: &hostlog::ParseSummary) {
    tracing::info!(
        input = name,
        total = s.total,
        parsed = s.parsed,
        skipped = s.skipped,
        bad = s.bad,
        "host log read"
    );
    for e in s.errors.iter().take(10) {
        tracing::warn!(error = %e, "bad host-log record");
    }
}
