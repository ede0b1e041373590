//! Fan-out of alerts to every configured sink (JSON lines on stdout or in a
//! file, syslog), for the daemon and for replay.
//!
//! `send` never blocks on the network: JSON lines are written and flushed
//! in place (alerts are rare and small), syslog messages are queued for the
//! syslog task. A failing sink does not stop the others.

use chrono::{DateTime, Utc};

use super::ecs::Document;
use super::json::{JsonError, JsonSink, JsonTarget};
use super::sensor::Sensor;
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
    sensor: Sensor,
}

/// Which sinks to open: the resolved `[alert]` and `[syslog]` settings.
#[derive(Clone, Debug, PartialEq)]
pub struct SinkSettings {
    /// JSON-lines targets (`alert.json`).
    pub json: Vec<JsonTarget>,
    /// The syslog transport, when `alert.syslog` is on.
    pub syslog: Option<SyslogConfig>,
}

impl SinkSettings {
    /// Opens the sinks, naming `sensor` in every alert.
    pub fn open(&self, sensor: &Sensor) -> Result<AlertSinks, SinkError> {
        Ok(AlertSinks::from_config(&self.json, self.syslog.as_ref())?.with_sensor(sensor.clone()))
    }
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

    /// Names the sensor in every alert (`observer.*`; see [`Sensor::local`]).
    pub fn with_sensor(mut self, sensor: Sensor) -> Self {
        self.sensor = sensor;
        self
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

    /// Delivers the alert, raised now (`event.created`), to every sink.
    /// Every sink is tried even if an earlier one fails; the first error is
    /// returned.
    pub fn send(&self, alert: &Alert) -> Result<(), SinkError> {
        self.send_created(alert, Utc::now())
    }

    /// [`AlertSinks::send`] with the time it was raised given: every sink
    /// gets the same document, built once.
    pub fn send_created(&self, alert: &Alert, created: DateTime<Utc>) -> Result<(), SinkError> {
        let doc = Document::new(alert, &self.sensor, created);
        let mut first_err = None;
        for s in &self.json {
            if let Err(e) = s.write(&doc) {
                first_err.get_or_insert(SinkError::from(e));
            }
        }
        if let Some(s) = &self.syslog {
            s.send(&doc);
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

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;
    use crate::alert::{AlertKind, Severity};

    /// The sinks build the document with the sensor they were given and
    /// the raise time passed in: both reach the line.
    #[test]
    fn the_line_names_the_sensor_and_the_raise_time() {
        let dir = std::env::temp_dir().join(format!("smbwatch-sinks-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("alerts.jsonl");
        let sinks = AlertSinks::from_config(&[JsonTarget::File(path.clone())], None)
            .unwrap()
            .with_sensor(Sensor::named(Some("GW1")).with_interface(4, "eth4"));
        let at = Utc.with_ymd_and_hms(2020, 9, 20, 6, 57, 46).unwrap();
        let mut a = Alert::new(at, AlertKind::SmbScanTrw, Severity::Medium, "m".into());
        a.ifindex = Some(4);
        let created = Utc.with_ymd_and_hms(2026, 11, 30, 12, 0, 0).unwrap();
        sinks.send_created(&a, created).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        let v: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(v["@timestamp"], "2020-09-20T06:57:46.000Z");
        assert_eq!(v["event"]["created"], "2026-11-30T12:00:00.000Z");
        assert_eq!(v["observer"]["hostname"], "gw1");
        assert_eq!(v["observer"]["ingress"]["interface"]["name"], "eth4");
        assert_eq!(v["rule"]["id"], "smb_scan_trw");
    }
}
