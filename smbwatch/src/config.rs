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

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::alert::json::JsonTarget;
use crate::alert::sensor::Sensor;
use crate::alert::sink::{AlertSinks, SinkError, SinkSettings};
use crate::alert::syslog::{SyslogConfig, SyslogError};
use crate::correlate::process::ProcessClassesConfig;
pub use crate::correlate::CorrelateConfig;
use crate::dataplane::{AttachMode, LoadOptions};
use crate::detect::DetectConfig;
use crate::hostlog::rules::HostRulesConfig;
use crate::pipeline::PipelineConfig;

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
            json: (self.alert.json.iter())
                .map(|p| JsonTarget::parse(&p.to_string_lossy()))
                .collect(),
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
    /// more destinations; rounded up to a power of two; 80 bytes each).
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
    pub answers: crate::dataplane::AnswerCheck,
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
            answers: crate::dataplane::AnswerCheck::Auto,
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
        }
    }
}

/// `[alert]`: which sinks receive alerts.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AlertConfig {
    /// ECS JSON lines to this file (appended), or `-` for stdout.
    pub json: Option<PathBuf>,
    /// Send alerts to the `[syslog]` target.
    pub syslog: bool,
    /// Also print `new_pair`/`response` event lines on stdout (always on
    /// when no sink is configured).
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

/// A TCP listen address, written `tcp://ADDR:PORT` (IPv6 in brackets);
/// parsed once, where the configuration or the command line is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ListenAddr(pub SocketAddr);

/// Why a listen address was refused.
#[derive(Debug, thiserror::Error)]
#[error("{input:?}: {problem}")]
pub struct ListenAddrError {
    /// The text as given.
    pub input: String,
    /// What is wrong.
    pub problem: &'static str,
}

impl FromStr for ListenAddr {
    type Err = ListenAddrError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |problem| ListenAddrError {
            input: s.to_owned(),
            problem,
        };
        let rest = s
            .strip_prefix("tcp://")
            .ok_or_else(|| err("expected tcp://ADDR:PORT"))?;
        rest.parse()
            .map(Self)
            .map_err(|_| err("expected tcp://ADDR:PORT with an IP address (IPv6 in brackets)"))
    }
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "tcp://{}", self.0)
    }
}

impl Serialize for ListenAddr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ListenAddr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
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

/// A bad value found by validation: dotted key and problem.
struct Invalid {
    key: String,
    message: String,
}

fn bad(key: impl Into<String>, message: impl Into<String>) -> Result<(), Invalid> {
    Err(Invalid {
        key: key.into(),
        message: message.into(),
    })
}

fn fmt_dur(d: Duration) -> humantime::FormattedDuration {
    humantime::format_duration(d)
}

const SEC: u64 = 1;
const MIN: u64 = 60 * SEC;
const HOUR: u64 = 60 * MIN;
const DAY: u64 = 24 * HOUR;

const fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// The allowed range of every duration in the configuration, by key
/// (`detect.subnet.window` stands for every `detect.subnet[i].window`).
/// Checked before anything else, so no later arithmetic can overflow.
/// `docs/smbwatch.toml` states each range next to its key; a test keeps
/// them equal.
pub const DURATION_RANGES: &[(&str, Duration, Duration)] = &[
    ("detect.window", secs(1), secs(7 * DAY)),
    ("detect.subnet.window", secs(1), secs(7 * DAY)),
    (
        "detect.response_timeout",
        Duration::from_millis(10),
        secs(5 * MIN),
    ),
    ("detect.hold_down", Duration::ZERO, secs(7 * DAY)),
    ("detect.fanout_scales.window", secs(1), secs(7 * DAY)),
    ("detect.subnet.fanout_scales.window", secs(1), secs(7 * DAY)),
    ("detect.evasion_window", secs(1), secs(DAY)),
    ("dataplane.stats_interval", secs(1), secs(DAY)),
    ("dataplane.activity_epoch", secs(MIN), secs(DAY)),
    ("correlate.clock_skew", Duration::ZERO, secs(HOUR)),
    ("correlate.chain_window", secs(1), secs(7 * DAY)),
    ("correlate.retention", secs(1), secs(DAY)),
    ("correlate.process_retention", secs(1), secs(30 * DAY)),
    ("syslog.backoff_min", Duration::from_millis(1), secs(HOUR)),
    ("syslog.backoff_max", Duration::from_millis(1), secs(DAY)),
    ("syslog.shutdown_timeout", Duration::ZERO, secs(10 * MIN)),
    ("hostlog.line_timeout", secs(1), secs(HOUR)),
    ("hostlog.idle_timeout", secs(1), secs(DAY)),
    ("hostlog.max_ahead", Duration::ZERO, secs(DAY)),
    ("hostlog.rules.connection_dedup", Duration::ZERO, secs(HOUR)),
    ("hostlog.rules.share_dedup", Duration::ZERO, secs(7 * DAY)),
    ("baseline.learn_for", secs(HOUR), secs(30 * DAY)),
    ("baseline.off_hours_slack", Duration::ZERO, secs(12 * HOUR)),
    ("baseline.flush_interval", secs(1), secs(HOUR)),
    ("smb.idle_timeout", secs(1), secs(DAY)),
    ("smb.enum_window", secs(1), secs(HOUR)),
    ("smb.dedup_window", secs(1), secs(7 * DAY)),
    ("smb.host_wait", Duration::ZERO, secs(10 * MIN)),
];

/// `key`'s value against [`DURATION_RANGES`] (`key` may carry `[i]` indices).
fn check_duration(key: &str, v: Duration) -> Result<(), Invalid> {
    let generic: String = key
        .split('.')
        .map(|part| part.split('[').next().unwrap_or(part))
        .collect::<Vec<_>>()
        .join(".");
    let Some(&(_, min, max)) = DURATION_RANGES.iter().find(|(k, _, _)| *k == generic) else {
        // A duration without a range is a bug caught by the tests.
        return bad(key, "no allowed range is defined for this duration");
    };
    if v.is_zero() && !min.is_zero() {
        bad(key, "must be greater than 0")
    } else if v < min || v > max {
        bad(
            key,
            format!(
                "{}: must be between {} and {}",
                fmt_dur(v),
                fmt_dur(min),
                fmt_dur(max)
            ),
        )
    } else {
        Ok(())
    }
}

/// Table indices in the detector are u32; keep caps well inside.
const MAX_CAP: usize = 1 << 31;

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
            ConfigError::Invalid {
                file: name.to_string(),
                line,
                column,
                key: offset.and_then(|o| key_at(text, o)),
                message: e.message().trim_end().to_string(),
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
                message: inv.message,
            }
        })?;
        Ok(cfg)
    }

    /// Every duration in the configuration with its dotted key.
    fn durations(&self) -> Vec<(String, Duration)> {
        let (d, c, s, h) = (&self.detect, &self.correlate, &self.syslog, &self.hostlog);
        let mut out: Vec<(String, Duration)> = [
            ("detect.window", d.window),
            ("detect.response_timeout", d.response_timeout),
            ("detect.hold_down", d.hold_down),
            ("detect.evasion_window", d.evasion_window),
            ("dataplane.stats_interval", self.dataplane.stats_interval),
            ("dataplane.activity_epoch", self.dataplane.activity_epoch),
            ("correlate.clock_skew", c.clock_skew),
            ("correlate.chain_window", c.chain_window),
            ("correlate.retention", c.retention),
            ("correlate.process_retention", c.process_retention),
            ("syslog.backoff_min", s.backoff_min),
            ("syslog.backoff_max", s.backoff_max),
            ("syslog.shutdown_timeout", s.shutdown_timeout),
            ("hostlog.line_timeout", h.line_timeout),
            ("hostlog.idle_timeout", h.idle_timeout),
            ("hostlog.max_ahead", h.max_ahead),
            ("hostlog.rules.connection_dedup", h.rules.connection_dedup),
            ("hostlog.rules.share_dedup", h.rules.share_dedup),
            ("baseline.learn_for", self.baseline.learn_for),
            ("baseline.off_hours_slack", self.baseline.off_hours_slack),
            ("baseline.flush_interval", self.baseline.flush_interval),
            ("smb.idle_timeout", self.smb.idle_timeout),
            ("smb.enum_window", self.smb.enum_window),
            ("smb.dedup_window", self.smb.dedup_window),
            ("smb.host_wait", self.smb.host_wait),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        for (i, sc) in d.fanout_scales.iter().enumerate() {
            out.push((format!("detect.fanout_scales[{i}].window"), sc.window));
        }
        for (i, o) in d.subnet.iter().enumerate() {
            if let Some(w) = o.window {
                out.push((format!("detect.subnet[{i}].window"), w));
            }
            for (j, sc) in o.fanout_scales.iter().flatten().enumerate() {
                out.push((
                    format!("detect.subnet[{i}].fanout_scales[{j}].window"),
                    sc.window,
                ));
            }
        }
        out
    }

    /// Check every value and the relations between them. Call it again
    /// after changing the configuration (e.g. from command-line flags).
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.check().map_err(|inv| ConfigError::Value {
            key: inv.key,
            message: inv.message,
        })
    }

    fn check(&self) -> Result<(), Invalid> {
        // First: later checks and the pure modules do arithmetic on them.
        for (key, v) in self.durations() {
            check_duration(&key, v)?;
        }
        check_detect(&self.detect)?;
        check_dataplane(&self.dataplane)?;
        check_correlate(&self.correlate)?;
        if let Some(json) = &self.alert.json {
            if json.as_os_str().is_empty() {
                bad("alert.json", "empty path (use \"-\" for stdout)")?;
            }
        }
        self.syslog.validate().map(drop).or_else(|e| match e {
            SyslogError::Config { key, problem } => bad(format!("syslog.{key}"), problem),
            SyslogError::Target { problem, .. } => bad(
                "syslog.target",
                format!("{:?}: {problem}", self.syslog.target),
            ),
            other => bad("syslog", other.to_string()),
        })?;
        check_hostlog(&self.hostlog)?;
        if let Some((key, message)) = self.baseline.problems() {
            bad(key, message)?;
        }
        if let Some((key, message)) = self.publish.problem() {
            bad(key, message)?;
        }
        if let Err(e) = self.smb.validate() {
            bad(e.key(), e.to_string())?;
        }
        self.process_classes
            .validate()
            .or_else(|(key, problem)| bad(format!("process_classes.{key}"), problem))
    }
}

fn check_detect(d: &DetectConfig) -> Result<(), Invalid> {
    let per_source = d.max_destinations_per_source;
    let threshold = |key: &str, t: u32| {
        if t < 2 {
            bad(key, format!("{t}: must be at least 2"))
        } else if t as usize > per_source {
            bad(
                key,
                format!(
                    "{t} can never be reached: detect.max_destinations_per_source is {per_source}"
                ),
            )
        } else {
            Ok(())
        }
    };
    let window = |key: &str, w: Duration| {
        if w < d.response_timeout {
            bad(
                key,
                format!(
                    "{} is shorter than detect.response_timeout ({})",
                    fmt_dur(w),
                    fmt_dur(d.response_timeout)
                ),
            )
        } else {
            Ok(())
        }
    };
    let unit = |key: &str, x: f64| {
        if x > 0.0 && x < 1.0 {
            Ok(())
        } else {
            bad(key, format!("{x}: must be between 0 and 1 (exclusive)"))
        }
    };
    let cap = |key: &str, n: usize, min: usize| {
        if n < min {
            bad(key, format!("{n}: must be at least {min}"))
        } else if n > MAX_CAP {
            bad(key, format!("{n}: must be at most {MAX_CAP}"))
        } else {
            Ok(())
        }
    };

    window("detect.window", d.window)?;
    cap("detect.max_sources", d.max_sources, 1)?;
    cap("detect.max_pairs", d.max_pairs, 2)?;
    cap("detect.max_destinations_per_source", per_source, 2)?;
    if per_source > d.max_pairs {
        bad(
            "detect.max_destinations_per_source",
            format!(
                "{per_source} is more than detect.max_pairs ({})",
                d.max_pairs
            ),
        )?;
    }
    threshold("detect.fanout_threshold", d.fanout_threshold)?;
    scales("detect", d.window, &d.fanout_scales)?;
    unit("detect.trw_theta0", d.trw_theta0)?;
    unit("detect.trw_theta1", d.trw_theta1)?;
    if d.trw_theta1 >= d.trw_theta0 {
        bad(
            "detect.trw_theta1",
            format!(
                "{} must be less than detect.trw_theta0 ({}): scanners succeed less often than benign hosts",
                d.trw_theta1, d.trw_theta0
            ),
        )?;
    }
    unit("detect.trw_pd", d.trw_pd)?;
    unit("detect.trw_pf", d.trw_pf)?;
    if d.trw_pf >= d.trw_pd {
        bad(
            "detect.trw_pf",
            format!(
                "{} must be less than detect.trw_pd ({})",
                d.trw_pf, d.trw_pd
            ),
        )?;
    }
    for (i, net) in d.allow.iter().enumerate() {
        check_prefix(&format!("detect.allow[{i}]"), net)?;
    }
    for (i, o) in d.subnet.iter().enumerate() {
        let key = |k: &str| format!("detect.subnet[{i}].{k}");
        check_prefix(&key("cidr"), &o.cidr)?;
        if let Some(j) = d.subnet[..i].iter().position(|p| p.cidr == o.cidr) {
            bad(
                key("cidr"),
                format!("{} is already listed in detect.subnet[{j}]", o.cidr),
            )?;
        }
        threshold(&key("fanout_threshold"), o.fanout_threshold)?;
        if let Some(w) = o.window {
            window(&key("window"), w)?;
        }
        if let Some(more) = &o.fanout_scales {
            scales(
                &format!("detect.subnet[{i}]"),
                o.window.unwrap_or(d.window),
                more,
            )?;
        }
    }
    check_detect_prefix(d)?;
    if d.evasion_destinations > 64 {
        bad(
            "detect.evasion_destinations",
            format!("{}: must be between 0 (off) and 64", d.evasion_destinations),
        )?;
    }
    Ok(())
}

/// The longer fan-out scales under `section` (`detect` or
/// `detect.subnet[i]`), beside its base `window`.
fn scales(
    section: &str,
    base: Duration,
    more: &[crate::detect::FanoutScale],
) -> Result<(), Invalid> {
    let max = crate::detect::MAX_SCALES - 1;
    if more.len() > max {
        bad(
            format!("{section}.fanout_scales"),
            format!(
                "{} scales: give at most {max} (beside `window`)",
                more.len()
            ),
        )?;
    }
    let mut before = (format!("{section}.window"), base);
    for (i, sc) in more.iter().enumerate() {
        let key = format!("{section}.fanout_scales[{i}]");
        if sc.window <= before.1 {
            bad(
                format!("{key}.window"),
                format!(
                    "{} must be longer than {} ({}): scales go from short to long",
                    fmt_dur(sc.window),
                    before.0,
                    fmt_dur(before.1)
                ),
            )?;
        }
        if sc.threshold < 2 {
            bad(
                format!("{key}.threshold"),
                format!("{}: must be at least 2", sc.threshold),
            )?;
        }
        before = (format!("{key}.window"), sc.window);
    }
    Ok(())
}

fn check_detect_prefix(d: &DetectConfig) -> Result<(), Invalid> {
    let p = &d.prefix;
    if p.ipv4 > 32 {
        bad(
            "detect.prefix.ipv4",
            format!("{}: must be between 0 (off) and 32", p.ipv4),
        )?;
    }
    if p.ipv6 > 128 {
        bad(
            "detect.prefix.ipv6",
            format!("{}: must be between 0 (off) and 128", p.ipv6),
        )?;
    }
    for (i, net) in p.allow.iter().enumerate() {
        check_prefix(&format!("detect.prefix.allow[{i}]"), net)?;
    }
    for (key, n, min) in [
        ("detect.prefix.max_prefixes", p.max_prefixes, 1),
        ("detect.prefix.max_pairs", p.max_pairs, 2),
    ] {
        if n < min || n > MAX_CAP {
            bad(key, format!("{n}: must be between {min} and {MAX_CAP}"))?;
        }
    }
    if !(1..=10_000).contains(&p.min_members) {
        bad(
            "detect.prefix.min_members",
            format!("{}: must be between 1 and 10000", p.min_members),
        )?;
    }
    Ok(())
}

/// A prefix with host bits set (`10.1.2.0/16`) is almost always a typo for
/// another network; refuse it rather than guess.
fn check_prefix(key: &str, net: &IpNet) -> Result<(), Invalid> {
    if net.addr() != net.network() {
        bad(
            key,
            format!("{net} has host bits set; the network is {}", net.trunc()),
        )
    } else {
        Ok(())
    }
}

fn check_dataplane(d: &DataplaneConfig) -> Result<(), Invalid> {
    for (i, name) in d.interfaces.iter().enumerate() {
        let key = format!("dataplane.interfaces[{i}]");
        // IFNAMSIZ is 16 with the NUL; '/' and whitespace are never in names.
        if name.is_empty() || name.len() > 15 || name.contains(['/', ' ', '\t', '\n']) {
            bad(
                &key,
                format!("{name:?}: not an interface name (1 to 15 characters, no '/' or spaces)"),
            )?;
        }
        if d.interfaces[..i].contains(name) {
            bad(&key, format!("{name} is listed twice"))?;
        }
    }
    if d.ports.is_empty() || d.ports.len() > 4 {
        bad(
            "dataplane.ports",
            format!("{} ports: give 1 to 4", d.ports.len()),
        )?;
    }
    for (i, &p) in d.ports.iter().enumerate() {
        if p == 0 {
            bad(format!("dataplane.ports[{i}]"), "0: ports are 1-65535")?;
        }
        if d.ports[..i].contains(&p) {
            bad(
                format!("dataplane.ports[{i}]"),
                format!("{p} is listed twice"),
            )?;
        }
    }
    // Kernel tables are arrays allocated whole at load: cap them so a typo
    // cannot ask the kernel for gigabytes.
    if !(2..=1 << 22).contains(&d.max_sources) {
        bad(
            "dataplane.max_sources",
            format!("{}: must be 2 to 4194304 (80 bytes each)", d.max_sources),
        )?;
    }
    if !(4..=1 << 24).contains(&d.max_pairs) {
        bad(
            "dataplane.max_pairs",
            format!("{}: must be 4 to 16777216 (16 bytes each)", d.max_pairs),
        )?;
    }
    if let Err(crate::dataplane::DataplaneError::Sampling {
        what,
        value,
        allowed,
    }) = d.sampling.check()
    {
        bad(
            format!("dataplane.sampling.{what}"),
            format!("{value}: give {allowed}"),
        )?;
    }
    if d.events_per_cpu > 10_000_000 {
        bad(
            "dataplane.events_per_cpu",
            format!("{}: at most 10000000 (0 = no budget)", d.events_per_cpu),
        )?;
    }
    if !d.pin_dir.is_absolute() {
        bad(
            "dataplane.pin_dir",
            format!("{}: must be an absolute path", d.pin_dir.display()),
        )?;
    }
    Ok(())
}

fn check_correlate(c: &CorrelateConfig) -> Result<(), Invalid> {
    check_bytes("correlate.max_bytes", c.max_bytes)?;
    for (key, v) in [
        ("correlate.max_pairs", c.max_pairs),
        ("correlate.max_host_events", c.max_host_events),
        ("correlate.max_chain_events", c.max_chain_events),
        ("correlate.max_scan_sources", c.max_scan_sources),
        ("correlate.max_processes", c.max_processes),
    ] {
        if v == 0 || v > MAX_CAP {
            bad(key, format!("{v}: must be between 1 and {MAX_CAP}"))?;
        }
    }
    Ok(())
}

fn check_hostlog(h: &HostlogConfig) -> Result<(), Invalid> {
    if h.max_line < 1024 {
        bad(
            "hostlog.max_line",
            format!("{}: must be at least 1024", h.max_line),
        )?;
    }
    if h.max_connections == 0 {
        bad("hostlog.max_connections", "must be at least 1")?;
    }
    if h.line_timeout > h.idle_timeout {
        bad(
            "hostlog.line_timeout",
            format!(
                "{} is longer than hostlog.idle_timeout ({})",
                fmt_dur(h.line_timeout),
                fmt_dur(h.idle_timeout)
            ),
        )?;
    }
    if h.max_connections_per_peer == 0 || h.max_connections_per_peer > h.max_connections {
        bad(
            "hostlog.max_connections_per_peer",
            format!(
                "{}: must be between 1 and hostlog.max_connections ({})",
                h.max_connections_per_peer, h.max_connections
            ),
        )?;
    }
    let tls = [
        ("hostlog.tls_cert", &h.tls_cert),
        ("hostlog.tls_key", &h.tls_key),
        ("hostlog.tls_client_ca", &h.tls_client_ca),
    ];
    if tls.iter().any(|(_, v)| v.is_some()) {
        for (key, v) in tls {
            match v {
                None => bad(
                    key,
                    "missing: tls_cert, tls_key and tls_client_ca go together",
                )?,
                Some(p) if p.as_os_str().is_empty() => bad(key, "empty path")?,
                Some(_) => {}
            }
        }
    }
    if h.rules.max_dedup_entries == 0 || h.rules.max_dedup_entries > MAX_CAP {
        bad(
            "hostlog.rules.max_dedup_entries",
            format!(
                "{}: must be between 1 and {MAX_CAP}",
                h.rules.max_dedup_entries
            ),
        )?;
    }
    check_bytes("hostlog.rules.max_dedup_bytes", h.rules.max_dedup_bytes)
}

/// Byte budgets of in-memory tables: at least 64 KiB (a few large
/// records), at most 64 GiB.
const MIN_BYTES: usize = 64 << 10;
const MAX_BYTES: u64 = 64 << 30;

fn check_bytes(key: &str, v: usize) -> Result<(), Invalid> {
    if v < MIN_BYTES || v as u64 > MAX_BYTES {
        bad(
            key,
            format!("{v}: must be between {MIN_BYTES} (64 KiB) and {MAX_BYTES} (64 GiB)"),
        )
    } else {
        Ok(())
    }
}

/// 1-based line and column (in characters) of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..text.floor_char_boundary(offset)];
    let line = before.matches('\n').count() + 1;
    let start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[start..].chars().count() + 1)
}

/// Every key (and array element) of a document with its dotted path: the
/// span to report (the key) and the span it covers (key through value).
fn spans(text: &str) -> Vec<(String, usize, Range<usize>)> {
    use toml_edit::{ImDocument, Item, TableLike, Value};

    fn value(path: String, v: &Value, out: &mut Vec<(String, usize, Range<usize>)>) {
        match v {
            Value::Array(a) => {
                for (i, e) in a.iter().enumerate() {
                    let p = format!("{path}[{i}]");
                    if let Some(s) = e.span() {
                        out.push((p.clone(), s.start, s.clone()));
                    }
                    value(p, e, out);
                }
            }
            Value::InlineTable(t) => table(&path, t, out),
            _ => {}
        }
    }
    fn table(prefix: &str, t: &dyn TableLike, out: &mut Vec<(String, usize, Range<usize>)>) {
        for (k, item) in t.iter() {
            let path = if prefix.is_empty() {
                k.to_string()
            } else {
                format!("{prefix}.{k}")
            };
            let key_span = t.get_key_value(k).and_then(|(key, _)| key.span());
            match item {
                Item::Value(v) => {
                    if let (Some(ks), Some(vs)) = (key_span, v.span()) {
                        out.push((path.clone(), ks.start, ks.start..vs.end));
                    }
                    value(path, v, out);
                }
                Item::Table(sub) => {
                    if let Some(s) = sub.span() {
                        out.push((path.clone(), s.start, s));
                    }
                    table(&path, sub, out);
                }
                Item::ArrayOfTables(a) => {
                    for (i, sub) in a.iter().enumerate() {
                        let p = format!("{path}[{i}]");
                        if let Some(s) = sub.span() {
                            out.push((p.clone(), s.start, s));
                        }
                        table(&p, sub, out);
                    }
                }
                Item::None => {}
            }
        }
    }

    let Ok(doc) = ImDocument::parse(text) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    table("", doc.as_table(), &mut out);
    out
}

/// The most specific key whose text covers `offset`.
fn key_at(text: &str, offset: usize) -> Option<String> {
    spans(text)
        .into_iter()
        .filter(|(_, _, cover)| cover.contains(&offset) || cover.start == offset)
        .min_by_key(|(_, _, cover)| cover.len())
        .map(|(path, _, _)| path)
}

/// Offset of `key` in the text; for a key that is absent (its default is
/// in force), the nearest enclosing table or element that is present.
fn locate(text: &str, key: &str) -> Option<usize> {
    let all = spans(text);
    let mut key = key;
    loop {
        if let Some((_, at, _)) = all.iter().find(|(p, _, _)| p == key) {
            return Some(*at);
        }
        key = &key[..key.rfind(['.', '['])?];
    }
}

pub mod docs;
pub mod reload;

#[cfg(test)]
mod tests;
