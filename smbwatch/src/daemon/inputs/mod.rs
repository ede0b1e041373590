//! Host-log inputs of the daemon, merged into one channel: files given with
//! `--host-log` (read once, or followed across rotation), stdin (`-`), and
//! the TCP listener for forwarders.

pub mod listener;
pub mod tls;

use std::{path::PathBuf, time::Duration};

use tokio::io::{AsyncBufRead, AsyncBufReadExt as _, AsyncReadExt as _};
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
/// slows the readers down rather than dropping events. An event read from
/// a line holds at most about twice the line in strings, so with
/// `max_line` at 64 KiB the queue holds at most about 32 MiB.
const CHANNEL: usize = 256;

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
            let stdin = tokio::io::BufReader::new(tokio::io::stdin());
            tokio::spawn(read_lines("stdin", stdin, cfg.max_line, tx));
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

/// One record per line from `reader` (stdin) until EOF. A line longer
/// than `max_line` is skipped without being held in memory.
async fn read_lines<R: AsyncBufRead + Unpin>(
    name: &str,
    mut reader: R,
    max_line: usize,
    tx: mpsc::Sender<HostEvent>,
) {
    let mut buf = Vec::new();
    let mut n = 0u64;
    loop {
        buf.clear();
        let limit = max_line as u64 + 1;
        match (&mut reader).take(limit).read_until(b'\n', &mut buf).await {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) => {
                tracing::error!(error = %e, input = name, "host-log input stopped");
                return;
            }
        }
        n += 1;
        let complete = buf.last() == Some(&b'\n');
        if !complete && buf.len() > max_line {
            tracing::warn!(
                input = name,
                "host-log input {name}: line {n} is longer than {max_line} bytes (hostlog.max_line): skipped"
            );
            // Discard the rest of the line, a buffer at a time.
            loop {
                buf.clear();
                match (&mut reader).take(limit).read_until(b'\n', &mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) if buf.last() == Some(&b'\n') => break,
                    Ok(_) => {}
                }
            }
            continue;
        }
        let text = String::from_utf8_lossy(&buf);
        match hostlog::parse_line_at(name, n, text.trim_end_matches(['\n', '\r'])) {
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

#[cfg(test)]
mod tests {
    use super::*;

    const EV: &str = r#"{"EventID":3,"Channel":"Microsoft-Windows-Sysmon/Operational","UtcTime":"2020-09-20 06:57:48.481","Image":"C:\\x\\python.exe","Initiated":"true","SourceIp":"192.0.2.5","SourcePort":"50504","DestinationIp":"192.0.2.6","DestinationPort":"445"}"#;

    /// stdin lines had no length limit: one endless line was held whole.
    #[tokio::test]
    async fn stdin_lines_longer_than_max_line_are_skipped() {
        // A valid record, padded past max_line: skipped, not parsed.
        let long = EV.replacen('{', &format!("{{\"pad\":\"{}\",", "x".repeat(10_000)), 1);
        assert!(matches!(hostlog::parse_line(&long), Ok(Some(_))));
        let input = format!("{EV}\r\n{long}\n{EV}\n{long}");
        let (tx, mut rx) = mpsc::channel(8);
        read_lines("stdin", input.as_bytes(), 1024, tx).await;
        let mut got = Vec::new();
        while let Ok(ev) = rx.try_recv() {
            got.push(ev);
        }
        assert_eq!(got.len(), 2, "the two short lines, around the long one");
        assert!(got
            .iter()
            .all(|e| e.image_name.as_deref() == Some("python.exe")));
    }
}
