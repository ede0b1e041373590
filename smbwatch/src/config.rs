//! The configuration file (TOML): every knob with its default, and
//! validation whose errors name the file, the key and the line.
//!
//! `docs/smbwatch.toml` lists every key with its default; a test keeps it
//! equal to [`Config::default`].
//!
//! Loading is two steps: serde parses (types, unknown keys, durations such
//! as `"90s"`; the toml crate reports where), then [`Config::validate`]
//! checks values and relations (θ1 < θ0, non-zero windows, CIDRs without
//! host bits...). A validation error is located in the text by walking the
//! document with `toml_edit`, which keeps the span of every key.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::alert::json::JsonTarget;
use crate::alert::sensor::Sensor;
use crate::alert::sink::{AlertSinks, SinkError, SinkSettings};
use crate::alert::syslog::SyslogConfig;
use crate::correlate::process::ProcessClassesConfig;
pub use crate::correlate::CorrelateConfig;
use crate::dataplane::{AttachMode, LoadOptions, ProgramClock};
use crate::detect::DetectConfig;
use crate::hostlog::rules::HostRulesConfig;
use crate::pipeline::PipelineConfig;
use smbwatch_core::settings::{invalid as bad, Invalid};

/// The whole configuration file. Every section and key is optional.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// `[detect]`: scan detection.
    pub detect: DetectConfig,
    /// `[dataplane]`: the XDP program and its maps.
    pub dataplane: DataplaneConfig,
    /// `[correlate]`: joining gateway pairs with host logs.
    pub correlate: CorrelateConfig,
    /// `[alert]`: where alerts go.
    pub alert: AlertConfig,
    /// `[syslog]`: the syslog transport (used when `alert.syslog` is true).
    pub syslog: SyslogConfig,
    /// `[hostlog]`: host-log inputs.
    pub hostlog: HostlogConfig,
    /// `[process_classes]`: client images that make an SMB alert high.
    pub process_classes: ProcessClassesConfig,
    /// `[metrics]`: the Prometheus metrics and `smbwatch top` endpoint.
    pub metrics: crate::metrics::MetricsConfig,
    /// `[baseline]`: the learned SMB baseline.
    pub baseline: crate::baseline::BaselineConfig,
    /// `[publish]`: the fleet's broker (gateways publish, aggregators read).
    pub publish: crate::fleet::PublishConfig,
    /// `[smb]`: SMB on the wire (the sampled payload's parser and rules).
    pub smb: smbwatch_core::smb::SmbSettings,
}

impl Config {
    /// The detection pipeline's settings: `[detect]`, `[hostlog.rules]`,
    /// `hostlog.max_ahead`, `[correlate]` and `[process_classes]`.
    pub fn pipeline(&self) -> PipelineConfig {
        PipelineConfig {
            detect: self.detect.clone(),
            rules: self.hostlog.rules.clone(),
            max_ahead: self.hostlog.max_ahead,
            correlate: self.correlate.clone(),
            process_classes: self.process_classes.clone(),
            smb: self.smb.clone(),
        }
    }

    /// The sinks the `[alert]` and `[syslog]` sections ask for.
    pub fn sinks(&self) -> SinkSettings {
        SinkSettings {
            json: self.alert.json.iter().cloned().collect(),
            syslog: self.alert.syslog.then(|| self.syslog.clone()),
            log_to_journal: crate::logging::to_journal(),
        }
    }

    /// The sinks of the `[alert]` and `[syslog]` sections, naming `sensor`.
    pub fn alert_sinks(&self, sensor: &Sensor) -> Result<AlertSinks, SinkError> {
        self.sinks().open(sensor)
    }
}

/// `[dataplane]`: what the kernel side watches and how big its tables are.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DataplaneConfig {
    /// Interfaces to attach to (`--iface` replaces the list); the daemon
    /// refuses to start with none.
    pub interfaces: Vec<String>,
    /// Monitored TCP ports (1 to 4; 139 is the other SMB port).
    pub ports: Vec<u16>,
    /// Slots of the kernel's per-source sketch table (sources with two or
    /// more destinations; rounded up to whole inner arrays of 396 slots;
    /// 80 bytes each).
    pub max_sources: u32,
    /// Pairs the kernel's pair cache holds (rounded up to a power of two;
    /// 16 bytes each).
    pub max_pairs: u32,
    /// New-pair events per CPU per second before the kernel sheds events
    /// (it keeps counting into its sketches, and the daemon raises
    /// `smbwatch_degraded`); 0: no budget.
    pub events_per_cpu: u64,
    /// Which answers count: `auto` (other-ingress with two or more
    /// interfaces, else any), `other-ingress`, `any`.
    pub answers: crate::dataplane::AnswerSetting,
    /// `auto` (native, falling back to skb), `native` or `skb`.
    pub xdp_mode: AttachMode,
    /// How often the kernel's counters are read and reported.
    #[serde(with = "humantime_serde")]
    pub stats_interval: Duration,
    /// Activity epoch (1 min to 24 h): a known pair's first SYN in a later
    /// epoch than its latest report is reported again (`active`), with its
    /// answers. Events grow with active pairs × epochs.
    #[serde(with = "humantime_serde")]
    pub activity_epoch: Duration,
    /// bpffs directory where maps are pinned; one per daemon.
    pub pin_dir: PathBuf,
    /// `[dataplane.sampling]`: SMB payload sampling in the kernel.
    pub sampling: crate::dataplane::SampleOptions,
}

impl Default for DataplaneConfig {
    fn default() -> Self {
        let load = LoadOptions::default();
        Self {
            interfaces: Vec::new(),
            ports: load.ports,
            max_sources: load.max_sources,
            max_pairs: load.max_pairs,
            events_per_cpu: load.events_per_cpu,
            answers: crate::dataplane::AnswerSetting::Auto,
            xdp_mode: AttachMode::Auto,
            stats_interval: Duration::from_secs(10),
            activity_epoch: load.activity_epoch,
            pin_dir: PathBuf::from("/sys/fs/bpf/smbwatch"),
            sampling: load.sampling,
        }
    }
}

impl DataplaneConfig {
    /// The loader's options for a deployment on `ingresses` interfaces, with
    /// the fan-out window the detector uses.
    pub fn load_options(&self, ingresses: usize, fanout_window: Duration) -> LoadOptions {
        LoadOptions {
            ports: self.ports.clone(),
            max_sources: self.max_sources,
            max_pairs: self.max_pairs,
            events_per_cpu: self.events_per_cpu,
            answers: self.answers.resolve(ingresses),
            fanout_window,
            replay: false,
            hash_key: None,
            activity_epoch: self.activity_epoch,
            allow_short_epoch: false,
            sampling: self.sampling.clone(),
            clock: ProgramClock::Jiffies,
        }
    }
}

/// `[alert]`: which sinks receive alerts.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AlertConfig {
    /// ECS JSON lines to this file (appended), or `-` for stdout.
    pub json: Option<JsonTarget>,
    /// Send alerts to the `[syslog]` target.
    pub syslog: bool,
    /// Also print gateway event lines (`new_pair`, `accepted`, ...) on
    /// stdout (on anyway when no sink is configured, outside the journal).
    pub events: bool,
}

/// `[hostlog]`: inputs for Windows host logs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HostlogConfig {
    /// Listen for forwarded events, `tcp://ADDR:PORT` (e.g.
    /// `tcp://127.0.0.1:5514`); no listener when absent.
    pub listen: Option<ListenAddr>,
    /// Longest accepted line (bytes); longer lines are skipped and counted.
    pub max_line: usize,
    /// Most concurrent listener connections.
    pub max_connections: usize,
    /// Most concurrent listener connections from one peer address.
    pub max_connections_per_peer: usize,
    /// A listener connection whose started line is not complete within
    /// this time is closed (a slowloris sending a byte a second).
    #[serde(with = "humantime_serde")]
    pub line_timeout: Duration,
    /// A listener connection that sends no complete line for this long is
    /// closed, freeing its slot (forwarders reconnect when they next send).
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Host events dated further than this ahead of smbwatch's clock (the
    /// wall clock live, capture time in replay) are rejected and counted:
    /// one host with a wrong clock must not move time for everyone.
    #[serde(with = "humantime_serde")]
    pub max_ahead: Duration,
    /// The listener speaks TLS with this certificate chain (PEM) and
    /// requires client certificates; with `tls_key` and `tls_client_ca`.
    pub tls_cert: Option<PathBuf>,
    /// The private key of `tls_cert` (PEM).
    pub tls_key: Option<PathBuf>,
    /// CA certificates (PEM) that sign the forwarders' client certificates.
    pub tls_client_ca: Option<PathBuf>,
    /// Keep reading files given on the command line as they grow (tail -f).
    pub follow: bool,
    /// `[hostlog.rules]`: the host rules (allowlisted images, dedup).
    pub rules: HostRulesConfig,
}

impl Default for HostlogConfig {
    fn default() -> Self {
        Self {
            listen: None,
            max_line: 65_536,
            max_connections: 64,
            max_connections_per_peer: 8,
            line_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(10 * 60),
            max_ahead: crate::timed::DEFAULT_MAX_AHEAD,
            tls_cert: None,
            tls_key: None,
            tls_client_ca: None,
            follow: false,
            rules: HostRulesConfig::default(),
        }
    }
}

/// A configuration error.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The text is not valid TOML, has an unknown key or a bad value.
    /// `line`/`column` are 1-based; 0 when the place is unknown.
    #[error("{}", located(file, *line, *column, key.as_deref(), message))]
    Invalid {
        /// File name as given.
        file: String,
        /// Line of the offending key or value.
        line: usize,
        /// Column.
        column: usize,
        /// Dotted key (`detect.subnet[1].cidr`), when known.
        key: Option<String>,
        /// What is wrong.
        message: String,
    },
    /// A value is invalid (configuration built in code or changed by
    /// command-line flags, so there is no line).
    #[error("{key}: {message}")]
    Value {
        /// Dotted key.
        key: String,
        /// What is wrong.
        message: String,
    },
}

fn located(file: &str, line: usize, column: usize, key: Option<&str>, message: &str) -> String {
    let place = if line == 0 {
        file.to_string()
    } else {
        format!("{file}:{line}:{column}")
    };
    match key {
        Some(key) => format!("{place}: {key}: {message}"),
        None => format!("{place}: {message}"),
    }
}

fn fmt_dur(d: Duration) -> humantime::FormattedDuration {
    humantime::format_duration(d)
}

impl Config {
    /// Read and validate a configuration file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_str_named(&text, &path.display().to_string())
    }

    /// Parse and validate configuration text; `name` (usually the file
    /// name) prefixes error messages.
    pub fn from_str_named(text: &str, name: &str) -> Result<Self, ConfigError> {
        let mut cfg: Config = toml::from_str(text).map_err(|e| {
            let offset = e.span().map(|s| s.start);
            let (line, column) = offset.map_or((0, 0), |o| line_col(text, o));
            let mut message = e.message().trim_end().to_string();
            // humantime_serde says only "expected a duration": show the form.
            if message.ends_with("expected a duration") {
                message.push_str(" with a unit, e.g. \"90s\", \"15m\", \"2h\", \"1500ms\"");
            }
            // ipnet's message is the same for every mistake: name it.
            if message == networks::IPNET_MESSAGE {
                if let Some(value) = offset.and_then(|o| networks::quoted_at(text, o)) {
                    message = networks::explain(value);
                }
            }
            ConfigError::Invalid {
                file: name.to_string(),
                line,
                column,
                key: offset.and_then(|o| key_at(text, o)),
                message,
            }
        })?;
        cfg.detect.fit_default_scales();
        cfg.check().map_err(|inv| {
            let (line, column) = locate(text, &inv.key).map_or((0, 0), |o| line_col(text, o));
            ConfigError::Invalid {
                file: name.to_string(),
                line,
                column,
                key: Some(inv.key),
                message: inv.why,
            }
        })?;
        Ok(cfg)
    }

    /// Check every value and the relations between them. Call it again
    /// after changing the configuration (e.g. from command-line flags).
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.check().map_err(|inv| ConfigError::Value {
            key: inv.key,
            message: inv.why,
        })
    }

    /// Every section's check, in one error shape: the first problem.
    fn check(&self) -> Result<(), Invalid> {
        // First: later checks and the pure modules do arithmetic on them.
        durations::check(self)?;
        validate::check_detect(&self.detect)?;
        validate::check_dataplane(&self.dataplane)?;
        validate::check_correlate(&self.correlate)?;
        self.syslog.validate()?;
        validate::check_hostlog(&self.hostlog)?;
        self.baseline.validate()?;
        self.publish.validate()?;
        self.smb.validate()?;
        self.process_classes.validate()
    }
}

pub mod docs;
pub mod durations;
mod listen;
mod locate;
mod networks;
pub mod reload;
mod validate;

pub use durations::{DurationKey, DURATIONS};
pub use listen::{ListenAddr, ListenAddrError};
use locate::{key_at, line_col, locate};

#[cfg(test)]
mod tests;
