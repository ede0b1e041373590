//! What a reload (SIGHUP) may change in a running daemon, and what needs a
//! restart: the diff of the running configuration against the new one.
//!
//! Pure: configurations in, a [`ReloadPlan`] out. Settings that size or
//! load something fixed at start (the XDP program and its maps, the
//! detector's and correlator's tables, the followed files) are kept at
//! their running values and reported as needing a restart; everything
//! else (thresholds, windows, allowlists, per-subnet rules, sinks, the
//! host-log listener) is taken from the new file.

use serde_json::Value;

use super::{Config, ConfigError};

/// Keys (dotted prefixes) whose change needs a restart, and why.
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
];

/// The outcome of comparing the running configuration with a new one.
#[derive(Clone, Debug, PartialEq)]
pub struct ReloadPlan {
    /// The configuration to run with: the new one, except for the keys in
    /// `restart`, which keep their running values.
    pub config: Config,
    /// Dotted keys that change now.
    pub changed: Vec<String>,
    /// Dotted keys whose change was not applied: they need a restart.
    pub restart: Vec<String>,
}

impl ReloadPlan {
    /// Whether any applied change is under `prefix` (a section such as
    /// `alert`, or a key).
    pub fn touches(&self, prefix: &str) -> bool {
        self.changed.iter().any(|k| under(k, prefix))
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
    let old_v = to_value(running);
    let mut new_v = to_value(new);
    let mut diffs = Vec::new();
    diff("", &old_v, &new_v, &mut diffs);
    let (restart, changed): (Vec<String>, Vec<String>) = diffs
        .into_iter()
        .partition(|k| RESTART_KEYS.iter().any(|(p, _)| under(k, p)));
    for (prefix, _) in RESTART_KEYS {
        if restart.iter().any(|k| under(k, prefix)) {
            let old = lookup(&old_v, prefix).cloned().unwrap_or(Value::Null);
            set(&mut new_v, prefix, old);
        }
    }
    let config: Config = serde_json::from_value(new_v).map_err(|e| ConfigError::Value {
        key: "(reload)".into(),
        message: format!("internal: the merged configuration does not parse: {e}"),
    })?;
    config.validate()?;
    Ok(ReloadPlan {
        config,
        changed,
        restart,
    })
}

/// Why `key` needs a restart (see [`RESTART_KEYS`]).
pub fn restart_reason(key: &str) -> &'static str {
    RESTART_KEYS
        .iter()
        .find(|(p, _)| under(key, p))
        .map_or("", |(_, why)| why)
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

fn lookup<'a>(v: &'a Value, dotted: &str) -> Option<&'a Value> {
    dotted.split('.').try_fold(v, |v, k| v.get(k))
}

fn set(v: &mut Value, dotted: &str, new: Value) {
    let mut parts: Vec<&str> = dotted.split('.').collect();
    let Some(last) = parts.pop() else { return };
    let mut cur = v;
    for k in parts {
        match cur.get_mut(k) {
            Some(next) => cur = next,
            None => return,
        }
    }
    if let Some(obj) = cur.as_object_mut() {
        obj.insert(last.to_owned(), new);
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
        assert!(p.touches("alert") && p.touches("hostlog") && !p.touches("syslog"));
        assert!(!p.touches("hostlog.rules"));
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
