//! What a reload (SIGHUP) may change in a running daemon, and what needs a
//! restart.
//!
//! Pure: configurations in, a [`ReloadPlan`] out. The settings a reload
//! may change are a type of their own, [`Live`]: the detector's thresholds,
//! windows, allowlists and per-subnet rules, the host rules, the alert
//! sinks and the host-log listener. The planned configuration is the
//! running one with the new file's [`Live`] settings put in; everything
//! else (the XDP program and its maps, table sizes, the followed files, the
//! baseline, the metrics endpoint, the publisher, and any key added later
//! unless it is made live here) keeps its running value and is reported as
//! needing a restart. Key names are found by comparing the serialised
//! configurations: that only names what changed, it decides nothing.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

use super::{Config, ConfigError, ListenAddr};
use crate::alert::json::JsonTarget;
use crate::alert::syslog::SyslogConfig;
use crate::detect::DetectConfig;
use crate::hostlog::rules::HostRulesConfig;

/// Why a key's change needs a restart, by dotted prefix (for the log and
/// the man page); a key under none of them is "read at start only".
pub const RESTART_KEYS: &[(&str, &str)] = &[
    (
        "dataplane",
        "the XDP program, its maps and attachments are set up at start",
    ),
    ("detect.max_sources", "detector table size"),
    ("detect.max_pairs", "detector table size"),
    ("detect.max_destinations_per_source", "detector table size"),
    ("detect.prefix.max_prefixes", "prefix table size"),
    ("detect.prefix.max_pairs", "prefix table size"),
    ("correlate", "correlation tables are sized at start"),
    (
        "process_classes",
        "the correlator's process classes are set up at start",
    ),
    (
        "hostlog.max_ahead",
        "the host-event clock is set up at start",
    ),
    ("hostlog.follow", "followed files are opened at start"),
    (
        "alert.events",
        "printing event lines on stdout is decided at start",
    ),
    ("hostlog.rules.max_dedup_entries", "dedup table size"),
    ("hostlog.rules.max_dedup_bytes", "dedup table size"),
    (
        "smb",
        "the SMB connection table and its rules are set up at start",
    ),
    (
        "baseline",
        "the baseline learner and its store are opened at start",
    ),
    ("metrics", "the metrics endpoint is bound at start"),
    ("publish", "the fleet publisher connects at start"),
];

/// The settings a reload may change, each component's from its own
/// section. Everything else in [`Config`] is a startup setting.
#[derive(Clone, Debug, PartialEq)]
pub struct Live {
    /// `[detect]` but its table sizes (the detector's reconfiguration).
    pub detect: DetectConfig,
    /// `[hostlog.rules]` but its dedup table sizes.
    pub rules: HostRulesConfig,
    /// `alert.json`, `alert.syslog` and `[syslog]`: the alert sinks.
    pub sinks: LiveSinks,
    /// The host-log listener's keys of `[hostlog]`.
    pub listener: LiveListener,
}

/// The alert sinks' live settings.
#[derive(Clone, Debug, PartialEq)]
pub struct LiveSinks {
    /// `alert.json`.
    pub json: Option<JsonTarget>,
    /// `alert.syslog`.
    pub syslog: bool,
    /// `[syslog]`.
    pub transport: SyslogConfig,
}

/// The host-log listener's live settings (the keys of `[hostlog]` it is
/// built from).
#[derive(Clone, Debug, PartialEq)]
pub struct LiveListener {
    /// `hostlog.listen`.
    pub listen: Option<ListenAddr>,
    /// `hostlog.max_line`.
    pub max_line: usize,
    /// `hostlog.max_connections`.
    pub max_connections: usize,
    /// `hostlog.max_connections_per_peer`.
    pub max_connections_per_peer: usize,
    /// `hostlog.line_timeout`.
    pub line_timeout: Duration,
    /// `hostlog.idle_timeout`.
    pub idle_timeout: Duration,
    /// `hostlog.tls_cert`, `hostlog.tls_key`, `hostlog.tls_client_ca`.
    pub tls: [Option<PathBuf>; 3],
}

impl Live {
    /// The live settings of `cfg`.
    pub fn of(cfg: &Config) -> Self {
        let h = &cfg.hostlog;
        Self {
            detect: cfg.detect.clone(),
            rules: h.rules.clone(),
            sinks: LiveSinks {
                json: cfg.alert.json.clone(),
                syslog: cfg.alert.syslog,
                transport: cfg.syslog.clone(),
            },
            listener: LiveListener {
                listen: h.listen,
                max_line: h.max_line,
                max_connections: h.max_connections,
                max_connections_per_peer: h.max_connections_per_peer,
                line_timeout: h.line_timeout,
                idle_timeout: h.idle_timeout,
                tls: [
                    h.tls_cert.clone(),
                    h.tls_key.clone(),
                    h.tls_client_ca.clone(),
                ],
            },
        }
    }

    /// `cfg` with these live settings put in; its table sizes stay.
    pub fn apply_to(self, cfg: &Config) -> Config {
        let mut out = cfg.clone();
        let (d, old) = (&mut out.detect, &cfg.detect);
        *d = self.detect;
        d.max_sources = old.max_sources;
        d.max_pairs = old.max_pairs;
        d.max_destinations_per_source = old.max_destinations_per_source;
        d.prefix.max_prefixes = old.prefix.max_prefixes;
        d.prefix.max_pairs = old.prefix.max_pairs;
        let h = &mut out.hostlog;
        h.rules = HostRulesConfig {
            max_dedup_entries: h.rules.max_dedup_entries,
            max_dedup_bytes: h.rules.max_dedup_bytes,
            ..self.rules
        };
        let l = self.listener;
        let [tls_cert, tls_key, tls_client_ca] = l.tls;
        (h.listen, h.max_line, h.max_connections) = (l.listen, l.max_line, l.max_connections);
        h.max_connections_per_peer = l.max_connections_per_peer;
        (h.line_timeout, h.idle_timeout) = (l.line_timeout, l.idle_timeout);
        (h.tls_cert, h.tls_key, h.tls_client_ca) = (tls_cert, tls_key, tls_client_ca);
        (out.alert.json, out.alert.syslog) = (self.sinks.json, self.sinks.syslog);
        out.syslog = self.sinks.transport;
        out
    }
}

/// The outcome of comparing the running configuration with a new one.
#[derive(Clone, Debug, PartialEq)]
pub struct ReloadPlan {
    /// The configuration to run with: the running one with the new
    /// file's [`Live`] settings.
    pub config: Config,
    /// Dotted keys that change now.
    pub changed: Vec<String>,
    /// Dotted keys whose change was not applied: they need a restart.
    pub restart: Vec<String>,
    /// The running live settings.
    pub old: Live,
    /// The live settings from now on.
    pub new: Live,
}

impl ReloadPlan {
    /// Whether the alert sinks change.
    pub fn sinks_change(&self) -> bool {
        self.old.sinks != self.new.sinks
    }

    /// Whether the host-log listener changes.
    pub fn listener_changes(&self) -> bool {
        self.old.listener != self.new.listener
    }
}

/// Whether dotted key `key` is `prefix` or lies under it.
fn under(key: &str, prefix: &str) -> bool {
    key.strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '[']))
}

/// Compares `running` with `new` (both validated) and plans the reload.
/// The planned configuration is validated again: a reloadable change can
/// contradict a kept one (a threshold above the running per-source cap).
pub fn plan(running: &Config, new: &Config) -> Result<ReloadPlan, ConfigError> {
    let live = Live::of(new);
    let config = live.clone().apply_to(running);
    config.validate()?;
    let (running_v, planned_v) = (to_value(running), to_value(&config));
    let mut changed = Vec::new();
    diff("", &running_v, &planned_v, &mut changed);
    let mut restart = Vec::new();
    diff("", &planned_v, &to_value(new), &mut restart);
    Ok(ReloadPlan {
        config,
        changed,
        restart,
        old: Live::of(running),
        new: live,
    })
}

/// Why `key` needs a restart (see [`RESTART_KEYS`]).
pub fn restart_reason(key: &str) -> &'static str {
    RESTART_KEYS
        .iter()
        .find(|(p, _)| under(key, p))
        .map_or("read at start only", |(_, why)| why)
}

fn to_value(cfg: &Config) -> Value {
    // Plain data with derived Serialize: cannot fail.
    serde_json::to_value(cfg).unwrap_or(Value::Null)
}

/// Dotted keys of the leaves (arrays count as one leaf) that differ.
fn diff(path: &str, a: &Value, b: &Value, out: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(a), Value::Object(b)) => {
            let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                let (x, y) = (a.get(k), b.get(k));
                diff(
                    &p,
                    x.unwrap_or(&Value::Null),
                    y.unwrap_or(&Value::Null),
                    out,
                );
            }
        }
        _ if a != b => out.push(path.to_owned()),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(text: &str) -> Config {
        Config::from_str_named(text, "test.toml").unwrap()
    }

    #[test]
    fn thresholds_allowlists_subnets_and_sinks_apply_now() {
        let running = Config::default();
        let new = cfg(r#"
            [detect]
            fanout_threshold = 10
            allow = ["192.0.2.10/32"]
            [[detect.subnet]]
            cidr = "198.51.100.0/24"
            fanout_threshold = 40
            [alert]
            json = "/tmp/alerts.json"
            [hostlog]
            listen = "tcp://127.0.0.1:5514"
        "#);
        let p = plan(&running, &new).unwrap();
        assert!(p.restart.is_empty(), "{:?}", p.restart);
        assert_eq!(
            p.changed,
            [
                "alert.json",
                "detect.allow",
                "detect.fanout_threshold",
                "detect.subnet",
                "hostlog.listen"
            ]
        );
        assert_eq!(p.config, new);
        assert!(p.sinks_change() && p.listener_changes());
        assert_eq!(p.old.rules, p.new.rules);
    }

    #[test]
    fn table_sizes_ports_and_interfaces_keep_running_values() {
        let running = cfg("[dataplane]\ninterfaces = [\"g0\"]\n");
        let new = cfg(r#"
            [detect]
            fanout_threshold = 30
            max_sources = 5000
            [dataplane]
            interfaces = ["g0", "g1"]
            ports = [445, 139]
            [correlate]
            max_pairs = 1000
        "#);
        let p = plan(&running, &new).unwrap();
        assert_eq!(p.changed, ["detect.fanout_threshold"]);
        assert_eq!(
            p.restart,
            [
                "correlate.max_pairs",
                "dataplane.interfaces",
                "dataplane.ports",
                "detect.max_sources"
            ]
        );
        assert_eq!(p.config.detect.fanout_threshold, 30);
        assert_eq!(p.config.detect.max_sources, running.detect.max_sources);
        assert_eq!(p.config.dataplane, running.dataplane);
        assert_eq!(p.config.correlate, running.correlate);
        assert_eq!(restart_reason("dataplane.ports"), RESTART_KEYS[0].1);
        assert!(!p.sinks_change() && !p.listener_changes());
    }

    /// Sections no component takes on a reload are reported, not claimed
    /// as applied: the metrics endpoint, the publisher, the baseline and
    /// the process classes are set up at start.
    #[test]
    fn sections_set_up_at_start_need_a_restart() {
        let running = Config::default();
        let new = cfg(r#"
            [metrics]
            enabled = true
            [process_classes]
            lolbins = ["evil.exe"]
            [detect]
            hold_down = "5m"
        "#);
        let p = plan(&running, &new).unwrap();
        assert_eq!(p.changed, ["detect.hold_down"]);
        assert_eq!(p.restart, ["metrics.enabled", "process_classes.lolbins"]);
        assert_eq!(p.config.metrics, running.metrics);
        assert_eq!(
            restart_reason("metrics.enabled"),
            "the metrics endpoint is bound at start"
        );
        assert_eq!(restart_reason("a.key.added.later"), "read at start only");
    }

    #[test]
    fn no_change_is_an_empty_plan() {
        let c = cfg("[detect]\nfanout_threshold = 7\n");
        let p = plan(&c, &c.clone()).unwrap();
        assert!(p.changed.is_empty() && p.restart.is_empty());
    }

    /// A new threshold above the per-source cap the daemon keeps running
    /// with is refused, naming the key, not applied half-way.
    #[test]
    fn a_change_contradicting_a_kept_value_is_refused() {
        let running = cfg("[detect]\nmax_destinations_per_source = 64\n");
        let new = cfg("[detect]\nmax_destinations_per_source = 128\nfanout_threshold = 100\n");
        let e = plan(&running, &new).unwrap_err().to_string();
        assert!(e.contains("detect.fanout_threshold"), "{e}");
        assert!(e.contains("64"), "{e}");
    }

    #[test]
    fn under_matches_whole_keys_only() {
        assert!(under("dataplane.ports", "dataplane"));
        assert!(under("detect.subnet", "detect.subnet"));
        assert!(!under("detect.max_sources_x", "detect.max_sources"));
        assert!(!under(
            "hostlog.rules.allow_images",
            "hostlog.rules.max_dedup_entries"
        ));
    }
}
