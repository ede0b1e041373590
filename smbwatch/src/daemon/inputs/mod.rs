//! Host-log inputs of the daemon, merged into one channel: files given with
//! `--host-log` (read once, or followed across rotation), stdin (`-`), and
//! the TCP listener for forwarders.

pub mod listener;
pub mod tls;

use std::{path::PathBuf, time::Duration};

use tokio::sync::{mpsc, watch};

use crate::{
    config::HostlogConfig,
    hostlog::{
        self,
        follow::{follow, Follower},
        Format, HostEvent,
    },
};
use listener::{Listener, ListenerConfig};

/// Events buffered between the inputs and the pipeline; a full channel
/// slows the readers down rather than dropping events. An event read from
/// a line holds at most about twice the line in strings, so with
/// `max_line` at 64 KiB the queue holds at most about 32 MiB.
const CHANNEL: usize = 256;

/// How often followed files are checked for new lines and rotation.
const FOLLOW_INTERVAL: Duration = Duration::from_millis(500);

/// The merged inputs: the receiving end, and the listener's counters.
pub(crate) struct Inputs {
    pub rx: mpsc::Receiver<HostEvent>,
    pub listener: Option<std::sync::Arc<listener::ListenerCounters>>,
}

/// Starts every configured input; returns the receiving end. The listener
/// binds here, so a port in use fails start-up with a clear error.
///
/// When `shutdown` turns true every input stops taking new data, hands over
/// what it has already accepted and drops its sender, so the channel closes
/// and the pipeline knows it has seen everything.
pub(crate) async fn spawn(
    cfg: &HostlogConfig,
    files: &[PathBuf],
    shutdown: watch::Receiver<bool>,
) -> Result<Inputs, String> {
    let (tx, rx) = mpsc::channel(CHANNEL);
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
    let mut counters = None;
    if let Some(lcfg) = ListenerConfig::from_hostlog(cfg) {
        let listener = Listener::bind(lcfg).await.map_err(|e| e.to_string())?;
        tracing::info!(addr = %listener.local_addr(), "listening for forwarded host events");
        counters = Some(listener.counters());
        tokio::spawn(listener.run(tx, stopped(shutdown)));
    }
    Ok(Inputs {
        rx,
        listener: counters,
    })
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
    match hostlog::lines::forward("stdin", tokio::io::stdin(), max_line, &tx).await {
        Ok(stats) => tracing::info!(?stats, "host log on stdin ended"),
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
