//! SIGHUP: re-read the configuration file, validate it whole, and swap
//! what may change while running (see [`crate::config::reload`]) without
//! detaching XDP or losing detector state.
//!
//! Detection settings go to the drain thread over a channel it polls (it
//! never waits for one); new alert sinks go to the sink task; a changed
//! listener is replaced. A file that fails to load or validate changes
//! nothing: the error (with file:line) is logged and counted in
//! [`ReloadStats`].

use std::{
    path::PathBuf,
    sync::{atomic::Ordering, Arc},
    time::Duration,
};

use tokio::sync::mpsc;

use super::inputs::{self, RunningListener};
pub use crate::metrics::counters::ReloadStats;
use crate::{
    alert::{sensor::Sensor, sink::AlertSinks},
    config::{
        reload::{plan, restart_reason, ReloadPlan},
        Config, ConfigError,
    },
    hostlog::HostEvent,
};

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

/// What the drain thread takes from a reload.
#[derive(Debug)]
pub(crate) struct Settings {
    /// The configuration now in force.
    pub config: Box<Config>,
    /// Whether host events can arrive (files, stdin or a listener).
    pub host_inputs: bool,
}

/// Why a reload was refused.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// `run` was started without `--config`.
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

/// What SIGHUP asks of the sink task.
#[derive(Debug)]
pub(crate) enum SinkUpdate {
    /// Reopen the JSON alert files by path (logrotate moved them).
    Reopen,
    /// Use these sinks from now on (the reload changed `[alert]` or `[syslog]`).
    Replace(Box<AlertSinks>),
}

/// Holds what a reload replaces.
pub(crate) struct Reloader {
    pub file: Option<PathBuf>,
    pub overrides: Overrides,
    pub running: Config,
    pub stats: Arc<ReloadStats>,
    pub has_files: bool,
    pub sinks: mpsc::Sender<SinkUpdate>,
    pub settings: mpsc::Sender<Settings>,
    pub host_tx: mpsc::Sender<HostEvent>,
    pub listener: Option<RunningListener>,
    /// The sensor new sinks name (`observer.*`).
    pub sensor: Sensor,
    /// Follows the listener a reload starts.
    pub metrics: Arc<crate::metrics::Metrics>,
}

/// How long an old listener may take to hand over and close.
const LISTENER_GRACE: Duration = Duration::from_secs(5);

impl Reloader {
    /// Whether host events can arrive with `cfg`.
    pub fn host_inputs(&self, cfg: &Config) -> bool {
        self.has_files || cfg.hostlog.listen.is_some()
    }

    /// Asks the sink task to reopen the alert files. Done on every SIGHUP
    /// before the file is read, whether or not it is good: rotation must
    /// not depend on the configuration being edited at that moment.
    pub async fn reopen_files(&self) {
        let _ = self.sinks.send(SinkUpdate::Reopen).await;
    }

    /// One reload: logs the outcome and counts it.
    pub async fn reload(&mut self) -> Result<(), ReloadError> {
        let result = self.try_reload().await;
        match &result {
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
                failures = self.stats.failed.load(Ordering::Relaxed) + 1,
                "reload failed, keeping the running configuration: {e}"
            ),
        }
        self.stats.record(result.is_ok());
        result.map(drop)
    }

    async fn try_reload(&mut self) -> Result<ReloadPlan, ReloadError> {
        let file = self.file.as_ref().ok_or(ReloadError::NoFile)?;
        let mut new = Config::load(file)?;
        (self.overrides.0)(&mut new);
        new.validate()?;
        let p = plan(&self.running, &new)?;
        // Everything fallible first; nothing is swapped until all succeeded.
        let sinks = if p.sinks_change() {
            Some(p.config.alert_sinks(&self.sensor)?)
        } else {
            None
        };
        if p.listener_changes() {
            if let Err(e) = self.replace_listener(&p.config).await {
                if let Some(s) = sinks {
                    tokio::spawn(s.shutdown());
                }
                return Err(e);
            }
        }
        self.settings
            .try_send(Settings {
                config: Box::new(p.config.clone()),
                host_inputs: self.host_inputs(&p.config),
            })
            .map_err(|_| ReloadError::Drain)?;
        if let Some(s) = sinks {
            // The sink task shuts the old ones down (flushing syslog).
            self.sinks
                .send(SinkUpdate::Replace(Box::new(s)))
                .await
                .map_err(|_| ReloadError::Drain)?;
        }
        self.running = p.config.clone();
        Ok(p)
    }

    /// Stops the running listener and starts the one `cfg` asks for (the
    /// same address may be re-bound only once the old socket is closed);
    /// if that fails, the old settings' listener is started again.
    async fn replace_listener(&mut self, cfg: &Config) -> Result<(), ReloadError> {
        if let Some(old) = self.listener.take() {
            old.stop(LISTENER_GRACE).await;
        }
        let result = match inputs::start_listener(&cfg.hostlog, &self.host_tx).await {
            Ok(l) => {
                self.listener = l;
                Ok(())
            }
            Err(e) => {
                self.listener = inputs::start_listener(&self.running.hostlog, &self.host_tx)
                    .await
                    .unwrap_or_else(|e| {
                        tracing::error!("restarting the previous host-log listener failed: {e}");
                        None
                    });
                Err(ReloadError::Listener(e))
            }
        };
        self.metrics
            .set_listener(self.listener.as_ref().map(|l| l.counters.clone()));
        result
    }

    /// At shutdown: stop the listener and let the host channel close.
    pub async fn shutdown(mut self) {
        if let Some(l) = self.listener.take() {
            l.stop(LISTENER_GRACE).await;
        }
    }
}
