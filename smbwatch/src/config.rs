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
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::alert::syslog::{SyslogConfig, SyslogError};
pub use crate::correlate::CorrelateConfig;
use crate::dataplane::{AttachMode, LoadOptions};
use crate::detect::DetectConfig;
use crate::hostlog::rules::HostRulesConfig;

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
}

/// `[dataplane]`: what the kernel side watches and how big its tables are.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DataplaneConfig {
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
    /// bpffs directory where maps are pinned; one per daemon.
    pub pin_dir: PathBuf,
}

impl Default for DataplaneConfig {
    fn default() -> Self {
        let load = LoadOptions::default();
        Self {
            ports: load.ports,
            max_sources: load.max_sources,
            max_pairs: load.max_pairs,
            events_per_cpu: load.events_per_cpu,
            answers: crate::dataplane::AnswerCheck::Auto,
            xdp_mode: AttachMode::Auto,
            stats_interval: Duration::from_secs(10),
            pin_dir: PathBuf::from("/sys/fs/bpf/smbwatch"),
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
    pub listen: Option<String>,
    /// Longest accepted line (bytes); longer lines are skipped and counted.
    pub max_line: usize,
    /// Most concurrent listener connections.
    pub max_connections: usize,
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
            follow: false,
            rules: HostRulesConfig::default(),
        }
    }
}

impl HostlogConfig {
    /// The listener's socket address, parsed from `listen`.
    pub fn listen_addr(&self) -> Result<Option<SocketAddr>, String> {
        let Some(url) = &self.listen else {
            return Ok(None);
        };
        let rest = url
            .strip_prefix("tcp://")
            .ok_or_else(|| format!("{url:?}: expected tcp://ADDR:PORT"))?;
        rest.parse::<SocketAddr>().map(Some).map_err(|_| {
            format!("{url:?}: expected tcp://ADDR:PORT with an IP address (IPv6 in brackets)")
        })
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
        let cfg: Config = toml::from_str(text).map_err(|e| {
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

    /// Check every value and the relations between them. Call it again
    /// after changing the configuration (e.g. from command-line flags).
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.check().map_err(|inv| ConfigError::Value {
            key: inv.key,
            message: inv.message,
        })
    }

    fn check(&self) -> Result<(), Invalid> {
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
        check_hostlog(&self.hostlog)
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
        if w.is_zero() {
            bad(key, "must be greater than 0")
        } else if w < d.response_timeout {
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

    if d.response_timeout.is_zero() {
        bad("detect.response_timeout", "must be greater than 0")?;
    }
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
    if d.events_per_cpu > 10_000_000 {
        bad(
            "dataplane.events_per_cpu",
            format!("{}: at most 10000000 (0 = no budget)", d.events_per_cpu),
        )?;
    }
    if d.stats_interval.is_zero() {
        bad("dataplane.stats_interval", "must be greater than 0")?;
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
    if c.chain_window.is_zero() {
        bad("correlate.chain_window", "must be greater than 0")?;
    }
    if c.retention.is_zero() {
        bad("correlate.retention", "must be greater than 0")?;
    }
    for (key, v) in [
        ("correlate.max_pairs", c.max_pairs),
        ("correlate.max_host_events", c.max_host_events),
        ("correlate.max_chain_events", c.max_chain_events),
        ("correlate.max_scan_sources", c.max_scan_sources),
    ] {
        if v == 0 || v > MAX_CAP {
            bad(key, format!("{v}: must be between 1 and {MAX_CAP}"))?;
        }
    }
    Ok(())
}

fn check_hostlog(h: &HostlogConfig) -> Result<(), Invalid> {
    if let Err(problem) = h.listen_addr() {
        bad("hostlog.listen", problem)?;
    }
    if h.max_line < 1024 {
        bad(
            "hostlog.max_line",
            format!("{}: must be at least 1024", h.max_line),
        )?;
    }
    if h.max_connections == 0 {
        bad("hostlog.max_connections", "must be at least 1")?;
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
    Ok(())
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

#[cfg(test)]
mod tests;
