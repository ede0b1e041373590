//! Host-log inputs of the daemon, merged into one channel: files given with
//! `--host-log` (read once, or followed across rotation), stdin (`-`), and
//! the TCP listener for forwarders.

pub mod listener;

use std::{path::PathBuf, time::Duration};

use tokio::sync::mpsc;

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
/// slows the readers down rather than dropping events.
const CHANNEL: usize = 4096;

/// How often followed files are checked for new lines and rotation.
const FOLLOW_INTERVAL: Duration = Duration::from_millis(500);

/// Starts every configured input; returns the receiving end. The listener
/// binds here, so a port in use fails start-up with a clear error.
pub(crate) async fn spawn(
    cfg: &HostlogConfig,
    files: &[PathBuf],
) -> Result<mpsc::Receiver<HostEvent>, String> {
    let (tx, rx) = mpsc::channel(CHANNEL);
    for path in files {
        let tx = tx.clone();
        if path.as_os_str() == "-" {
            tokio::spawn(read_stdin(tx));
        } else if cfg.follow {
            let follower = Follower::new(path, true, cfg.max_line).map_err(|e| e.to_string())?;
            let name = path.display().to_string();
            tokio::spawn(async move {
                // The task ends with the runtime, at daemon shutdown.
                if let Err(e) = follow(follower, FOLLOW_INTERVAL, tx, std::future::pending()).await
                {
                    tracing::error!(error = %e, path = name, "following host log stopped");
                }
            });
        } else {
            tokio::spawn(read_once(path.clone(), tx));
        }
    }
    if let Some(lcfg) = ListenerConfig::from_hostlog(cfg) {
        let listener = Listener::bind(lcfg).await.map_err(|e| e.to_string())?;
        tracing::info!(addr = %listener.local_addr(), "listening for forwarded host events");
        tokio::spawn(listener.run(tx, std::future::pending()));
    }
    Ok(rx)
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

async fn read_stdin(tx: mpsc::Sender<HostEvent>) {
    use tokio::io::AsyncBufReadExt as _;
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let mut n = 0u64;
    while let Ok(Some(line)) = lines.next_line().await {
        n += 1;
        match hostlog::parse_line_at("stdin", n, &line) {
            Ok(Some(ev)) => {
                if tx.send(ev).await.is_err() {
                    return;
                }
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "bad host-log record"),
        }
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
