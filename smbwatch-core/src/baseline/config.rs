//! The `[baseline]` section of the configuration file.

use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// Learned-baseline settings: the `[baseline]` section.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BaselineConfig {
    /// Learn and score in `run` and `replay` (also set by `--baseline PATH`).
    pub enabled: bool,
    /// The database file (redb).
    pub path: PathBuf,
    /// Learning period, from the first event the database holds: no
    /// baseline alerts before it ends (learning goes on afterwards).
    #[serde(with = "humantime_serde")]
    pub learn_for: Duration,
    /// Most clients kept; the least recently seen are evicted (counted).
    pub max_clients: usize,
    /// Most (client, server) edges kept; the least recently seen are
    /// evicted (counted).
    pub max_edges: usize,
    /// A host that accepted SMB from at least this many clients is a server;
    /// otherwise a workstation.
    pub server_min_clients: u32,
    /// Hours either side of a client's usual hours that are not yet "off
    /// hours" (whole hours).
    #[serde(with = "humantime_serde")]
    pub off_hours_slack: Duration,
    /// After learning, a new edge, client or hour becomes normal once seen
    /// on this many distinct days (UTC).
    pub recurrence_days: u32,
    /// How often the daemon writes a batch of changes to the database; a
    /// crash (even SIGKILL) loses at most this much learning.
    #[serde(with = "humantime_serde")]
    pub flush_interval: Duration,
    /// Most new clients learned per source prefix (`new_client_prefix_v4`
    /// / `_v6`) per clock hour; more are not learned (counted). 0: no bound.
    pub new_client_rate: u32,
    /// IPv4 prefix length of that bound (0: no bound for IPv4).
    pub new_client_prefix_v4: u8,
    /// IPv6 prefix length of that bound (0: no bound for IPv6).
    pub new_client_prefix_v6: u8,
    /// Hosts that are servers whatever was learned.
    pub servers: Vec<IpNet>,
    /// Scanners you run: learned, never alerted on as clients.
    pub scanners: Vec<IpNet>,
    /// Backup hosts: learned, never alerted on as clients.
    pub backup: Vec<IpNet>,
}

impl Default for BaselineConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            path: PathBuf::from("/var/lib/smbwatch/baseline.redb"),
            learn_for: Duration::from_secs(7 * 86_400),
            max_clients: 100_000,
            max_edges: 1_000_000,
            server_min_clients: 3,
            off_hours_slack: Duration::from_secs(3600),
            recurrence_days: 3,
            flush_interval: Duration::from_secs(5),
            new_client_rate: 64,
            new_client_prefix_v4: 24,
            new_client_prefix_v6: 64,
            servers: Vec::new(),
            scanners: Vec::new(),
            backup: Vec::new(),
        }
    }
}

/// Largest `max_clients` / `max_edges`: about 1.2 GB of edges.
pub const MAX_ENTRIES: usize = 1 << 24;

impl BaselineConfig {
    /// Values and relations the types do not check: `(key, problem)`.
    /// Durations are range-checked with the rest of the configuration.
    pub fn problems(&self) -> Option<(String, String)> {
        let p = |k: &str, m: String| Some((format!("baseline.{k}"), m));
        if self.path.as_os_str().is_empty() {
            return p("path", "empty path".into());
        }
        for (k, v) in [
            ("max_clients", self.max_clients),
            ("max_edges", self.max_edges),
        ] {
            if !(16..=MAX_ENTRIES).contains(&v) {
                return p(k, format!("{v}: must be between 16 and {MAX_ENTRIES}"));
            }
        }
        if !(1..=10_000).contains(&self.server_min_clients) {
            return p(
                "server_min_clients",
                format!("{}: must be between 1 and 10000", self.server_min_clients),
            );
        }
        if !(1..=60).contains(&self.recurrence_days) {
            return p(
                "recurrence_days",
                format!("{}: must be between 1 and 60", self.recurrence_days),
            );
        }
        if self.new_client_prefix_v4 > 32 {
            return p(
                "new_client_prefix_v4",
                format!("{}: must be between 0 and 32", self.new_client_prefix_v4),
            );
        }
        if self.new_client_prefix_v6 > 128 {
            return p(
                "new_client_prefix_v6",
                format!("{}: must be between 0 and 128", self.new_client_prefix_v6),
            );
        }
        if !self.off_hours_slack.as_secs().is_multiple_of(3600)
            || self.off_hours_slack.subsec_nanos() != 0
        {
            return p(
                "off_hours_slack",
                format!(
                    "{}: must be whole hours (e.g. \"1h\")",
                    humantime::format_duration(self.off_hours_slack)
                ),
            );
        }
        for (k, nets) in [
            ("servers", &self.servers),
            ("scanners", &self.scanners),
            ("backup", &self.backup),
        ] {
            for (i, net) in nets.iter().enumerate() {
                if net.addr() != net.network() {
                    return p(
                        &format!("{k}[{i}]"),
                        format!("{net} has host bits set; the network is {}", net.trunc()),
                    );
                }
            }
        }
        None
    }

    /// Slack in whole hours.
    pub fn slack_hours(&self) -> u32 {
        (self.off_hours_slack.as_secs() / 3600) as u32
    }
}
