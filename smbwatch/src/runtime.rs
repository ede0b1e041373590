//! The application runtime the long-running commands share (`run` and
//! `aggregate`): the signals, the metrics endpoint, re-reading the
//! configuration on SIGHUP, and flushing the alert sinks at the end.
//!
//! Each command keeps its own loop (the daemon's drain thread and health
//! ticks, the aggregator's consumers) and takes these parts from here, so
//! both stop, reload and expose metrics the same way: handlers registered
//! first, a loop that selects on [`Signals::next`], then a graceful
//! shutdown (mini-redis's shape).

use std::{path::PathBuf, sync::Arc};

use tokio::{
    signal::unix::{self, SignalKind},
    task::JoinHandle,
};

pub use crate::metrics::counters::ReloadStats;
use crate::{
    alert::sink::AlertSinks,
    config::{
        reload::{plan, restart_reason, ReloadPlan},
        Config, ConfigError,
    },
    metrics::{
        server::{MetricsError, MetricsServer},
        Metrics, MetricsConfig,
    },
};

/// What a signal asks of a running command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    /// SIGTERM or SIGINT (named): stop gracefully.
    Stop(&'static str),
    /// SIGHUP: reopen the alert files and reload the configuration.
    Reload,
}

/// The handlers of SIGTERM, SIGINT and SIGHUP.
#[derive(Debug)]
pub struct Signals {
    term: unix::Signal,
    int: unix::Signal,
    hup: unix::Signal,
}

impl Signals {
    /// Registers the handlers. Do it first: a SIGTERM during setup must
    /// still end in a clean stop, not the default action.
    pub fn install() -> std::io::Result<Self> {
        Ok(Self {
            term: unix::signal(SignalKind::terminate())?,
            int: unix::signal(SignalKind::interrupt())?,
            hup: unix::signal(SignalKind::hangup())?,
        })
    }

    /// The next signal. Cancel-safe: usable as a `select!` branch.
    pub async fn next(&mut self) -> Signal {
        tokio::select! {
            _ = self.term.recv() => Signal::Stop("SIGTERM"),
            _ = self.int.recv() => Signal::Stop("SIGINT"),
            _ = self.hup.recv() => Signal::Reload,
        }
    }
}

/// Binds the metrics endpoint when `[metrics]` enables it. Separate from
/// [`serve_metrics`] so that a port in use fails start-up before anything
/// irreversible (the daemon binds before it attaches).
pub async fn bind_metrics(
    cfg: &MetricsConfig,
    metrics: &Arc<Metrics>,
) -> Result<Option<MetricsServer>, MetricsError> {
    match cfg.enabled {
        true => Ok(Some(
            MetricsServer::bind(cfg.listen, metrics.clone()).await?,
        )),
        false => Ok(None),
    }
}

/// Serves a bound endpoint (`paths` names what it serves, for the log).
pub fn serve_metrics(server: Option<MetricsServer>, paths: &str) -> Option<JoinHandle<()>> {
    server.map(|s| {
        if let Some(addr) = s.local_addr() {
            tracing::info!(%addr, "serving metrics on {paths}");
        }
        tokio::spawn(s.run())
    })
}

/// Stops the endpoint (scrapes in flight are cut: the command is ending).
pub fn stop_metrics(task: Option<JoinHandle<()>>) {
    if let Some(t) = task {
        t.abort();
    }
}

/// Flushes and closes the alert sinks (syslog gets its shutdown timeout).
pub async fn flush_sinks(sinks: AlertSinks) {
    if let Some(s) = sinks.shutdown().await {
        tracing::info!(
            sent = s.sent,
            unsent = s.queued,
            dropped = s.dropped,
            truncated = s.truncated,
            reconnects = s.reconnects,
            connect_failures = s.connect_failures,
            "syslog sink flushed"
        );
    }
}

/// How the command line changes a configuration read from the file; applied
/// again on every reload, so flags keep overriding the file.
#[derive(Clone)]
pub struct Overrides(pub Arc<dyn Fn(&mut Config) + Send + Sync>);

impl std::fmt::Debug for Overrides {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Overrides(..)")
    }
}

impl Default for Overrides {
    fn default() -> Self {
        Self(Arc::new(|_| {}))
    }
}

/// Why a reload was refused.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The command was started without `--config`.
    #[error("no configuration file was given (--config): nothing to reload")]
    NoFile,
    /// The file did not load or validate, or the merge did not.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A new alert sink could not be set up.
    #[error("new alert sinks: {0}")]
    Sink(#[from] crate::alert::sink::SinkError),
    /// The new listener could not be started.
    #[error("new host-log listener: {0}")]
    Listener(String),
    /// The drain thread has stopped taking settings.
    #[error("the drain thread is not taking new settings")]
    Drain,
}

/// Where a command's configuration comes from: the file and the flags
/// over it; re-read on SIGHUP, and the outcome counted.
#[derive(Clone, Debug, Default)]
pub struct ConfigSource {
    /// The configuration file (`--config`), if any.
    pub file: Option<PathBuf>,
    /// The command-line flags over it.
    pub overrides: Overrides,
    /// Reload counters (on /metrics).
    pub stats: Arc<ReloadStats>,
}

impl ConfigSource {
    /// Re-reads the file, applies the flags, validates, and plans the
    /// reload against the `running` configuration.
    pub fn reread(&self, running: &Config) -> Result<ReloadPlan, ReloadError> {
        let file = self.file.as_ref().ok_or(ReloadError::NoFile)?;
        let mut new = Config::load(file)?;
        (self.overrides.0)(&mut new);
        new.validate()?;
        Ok(plan(running, &new)?)
    }

    /// Logs a reload's outcome (each startup-only key that changed and was
    /// not applied, or why nothing was) and counts it.
    pub fn record(&self, result: &Result<ReloadPlan, ReloadError>) {
        match result {
            Ok(p) => {
                for key in &p.restart {
                    tracing::warn!(
                        key,
                        "{key} changed but needs a restart ({}): still running with the old value",
                        restart_reason(key)
                    );
                }
                tracing::info!(changed = ?p.changed, needs_restart = ?p.restart, "configuration reloaded");
            }
            Err(e) => tracing::error!(
                failures = self.stats.failed.load(std::sync::atomic::Ordering::Relaxed) + 1,
                "reload failed, keeping the running configuration: {e}"
            ),
        }
        self.stats.record(result.is_ok());
    }
}
