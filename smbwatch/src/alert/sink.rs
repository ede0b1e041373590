//! Fan-out of alerts to every configured sink (JSON lines on stdout or in a
//! file, syslog), for the daemon and for replay.
//!
//! `send` never blocks on the network: JSON lines are written and flushed
//! in place (alerts are rare and small), syslog messages are queued for the
//! syslog task. A failing sink does not stop the others.

use super::json::{JsonError, JsonSink, JsonTarget};
use super::Alert;

/// Errors of the sink fan-out.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// A JSON lines sink failed.
    #[error(transparent)]
    Json(#[from] JsonError),
}

/// Every sink alerts go to.
#[derive(Debug, Default)]
pub struct AlertSinks {
    json: Vec<JsonSink>,
}

impl AlertSinks {
    /// No sinks: `send` is a no-op.
    pub fn new() -> Self {
        Self::default()
    }

    /// Opens the JSON targets (`--json -`, `--json PATH`, repeatable).
    pub fn from_config(json: &[JsonTarget]) -> Result<Self, SinkError> {
        let mut sinks = Self::new();
        for t in json {
            sinks.json.push(JsonSink::open(t)?);
        }
        Ok(sinks)
    }

    /// Adds a JSON lines sink (e.g. over a pipe or an in-memory buffer).
    pub fn add_json(&mut self, sink: JsonSink) {
        self.json.push(sink);
    }

    /// True when no sink is configured.
    pub fn is_empty(&self) -> bool {
        self.json.is_empty()
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
        first_err.map_or(Ok(()), Err)
    }
}
