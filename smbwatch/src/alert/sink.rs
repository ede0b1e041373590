//! Fan-out of alerts to every configured sink (JSON lines on stdout or in a
//! file, syslog), for the daemon and for replay.
//!
//! `send` never blocks on the network: JSON lines are written and flushed
//! in place (alerts are rare and small), syslog messages are queued for the
//! syslog task. A failing sink does not stop the others.

use super::json::{JsonError, JsonSink, JsonTarget};
use super::syslog::{SyslogConfig, SyslogError, SyslogSink, SyslogStats};
use super::Alert;

/// Errors of the sink fan-out.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// A JSON lines sink failed.
    #[error(transparent)]
    Json(#[from] JsonError),
    /// The syslog sink could not be set up.
    #[error(transparent)]
    Syslog(#[from] SyslogError),
}

/// Every sink alerts go to.
#[derive(Debug, Default)]
pub struct AlertSinks {
    json: Vec<JsonSink>,
    syslog: Option<SyslogSink>,
}

impl AlertSinks {
    /// Opens the JSON targets (`--json -`, `--json PATH`, repeatable) and,
    /// if configured, starts the syslog sink (needs a tokio runtime). An
    /// unreachable collector is not an error (it is retried); a bad URL, a
    /// bad key or an unreadable file is.
    pub fn from_config(
        json: &[JsonTarget],
        syslog: Option<&SyslogConfig>,
    ) -> Result<Self, SinkError> {
        let mut sinks = Self::default();
        for t in json {
            sinks.json.push(JsonSink::open(t)?);
        }
        if let Some(cfg) = syslog {
            sinks.syslog = Some(SyslogSink::start(cfg)?);
        }
        Ok(sinks)
    }

    /// The sinks of a configuration's `[alert]` and `[syslog]` sections.
    pub fn for_config(cfg: &crate::config::Config) -> Result<Self, SinkError> {
        let json: Vec<JsonTarget> = cfg
            .alert
            .json
            .iter()
            .map(|p| JsonTarget::parse(&p.to_string_lossy()))
            .collect();
        Self::from_config(&json, cfg.alert.syslog.then_some(&cfg.syslog))
    }

    /// True when no sink is configured.
    pub fn is_empty(&self) -> bool {
        self.json.is_empty() && self.syslog.is_none()
    }

    /// The syslog sink's counters (sent, queued, dropped, reconnects), if
    /// there is one.
    pub fn syslog_stats(&self) -> Option<SyslogStats> {
        self.syslog.as_ref().map(SyslogSink::stats)
    }

    /// Delivers the alert to every sink. Every sink is tried even if an
    /// earlier one fails; the first error is returned.
    pub fn send(&self, alert: &Alert) -> Result<(), SinkError> {
        let mut first_err = None;
        for s in &self.json {
            if let Err(e) = s.write(alert) {
                first_err.get_or_insert(SinkError::from(e));
            }
        }
        if let Some(s) = &self.syslog {
            s.send(alert);
        }
        first_err.map_or(Ok(()), Err)
    }

    /// Flushes the syslog queue within the configured `shutdown_timeout`;
    /// returns the final syslog counters. JSON sinks are already flushed.
    pub async fn shutdown(self) -> Option<SyslogStats> {
        match self.syslog {
            Some(s) => Some(s.shutdown().await),
            None => None,
        }
    }
}
