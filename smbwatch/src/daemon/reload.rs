//! SIGHUP: re-read the configuration file, validate it whole, and swap
//! what may change while running (see [`crate::config::reload`]) without
//! detaching XDP or losing detector state.
//!
//! Detection settings go to the drain thread over a channel it polls (it
//! never waits for one); new alert sinks go to the sink task; a changed
//! listener is replaced. A file that fails to load or validate changes
//! nothing: the error (with file:line) is logged and counted in
//! [`ReloadStats`].

use std::{sync::Arc, time::Duration};

use tokio::sync::mpsc;

use super::inputs::{self, RunningListener};
pub use crate::runtime::{Overrides, ReloadError, ReloadStats};
use crate::{
    alert::{sensor::Sensor, sink::AlertSinks},
    config::{reload::ReloadPlan, Config},
    hostlog::HostEvent,
    runtime::ConfigSource,
};

/// What the drain thread takes from a reload.
#[derive(Debug)]
pub(crate) struct Settings {
    /// The configuration now in force.
    pub config: Box<Config>,
    /// Whether host events can arrive (files, stdin or a listener).
    pub host_inputs: bool,
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
    /// The file and flags, re-read on SIGHUP.
    pub source: ConfigSource,
    pub running: Config,
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
        self.source.record(&result);
        result.map(drop)
    }

    async fn try_reload(&mut self) -> Result<ReloadPlan, ReloadError> {
        let p = self.source.reread(&self.running)?;
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
