//! The `[baseline]` section of the configuration file.

use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::settings::{invalid, Invalid};

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
    /// A frame's source MAC names its host (the router is the host's first
    /// hop) unless that MAC carries more than this many source addresses in
    /// one UTC day: then it is a router's, never trusted again. 0: MACs are
    /// never used.
    pub mac_max_addresses: u32,
    /// How long a logon (4624 `WorkstationName` with `IpAddress`) binds its
    /// address to the workstation's name, where no MAC names the host.
    #[serde(with = "humantime_serde")]
    pub name_ttl: Duration,
    /// Server groups by CIDR (domain controllers, file servers, ...): a
    /// client using one member may use the others.
    pub peer_groups: Vec<Vec<IpNet>>,
    /// A server used by at least this percent of the clients (and by
    /// `server_min_clients`) is shared infrastructure (domain controllers,
    /// file servers, software distribution): a client of one shared server
    /// may use another. 0: no learned group.
    pub shared_server_percent: u32,
    /// A client with at least this many usual servers is a management
    /// source (SCCM, backup, jump host): a new target of the kind it
    /// already reaches (servers, or workstations) is normal; its own hours
    /// (no office fallback) are its schedule.
    pub manager_min_targets: u32,
    /// A server first seen after learning that gains this many clients
    /// within `new_server_window` raises one `smb_new_server`; its edges
    /// then learn for `learn_for` without alerts.
    pub new_server_clients: u32,
    /// The period in which a new server must gain `new_server_clients`.
    #[serde(with = "humantime_serde")]
    pub new_server_window: Duration,
    /// Office hours: an hour at which at least this many per mille of the
    /// established clients (and 3) usually work (weekdays and weekends
    /// apart) is not "off hours" for an ordinary client. 0: each client's
    /// own hours only.
    pub office_hours_permille: u32,
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
            mac_max_addresses: 4,
            name_ttl: Duration::from_secs(16 * 3600),
            peer_groups: Vec::new(),
            shared_server_percent: 10,
            manager_min_targets: 10,
            new_server_clients: 5,
            new_server_window: Duration::from_secs(86_400),
            office_hours_permille: 5,
        }
    }
}

/// Largest `max_clients` / `max_edges`: about 1.2 GB of edges.
pub const MAX_ENTRIES: usize = 1 << 24;

impl BaselineConfig {
    /// Values and relations the types do not check; the first problem,
    /// naming its key. Durations are range-checked with the rest of the
    /// configuration.
    pub fn validate(&self) -> Result<(), Invalid> {
        let p = |k: &str, m: String| invalid(format!("baseline.{k}"), m);
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
        for (k, v, max) in [
            ("shared_server_percent", self.shared_server_percent, 100),
            ("office_hours_permille", self.office_hours_permille, 1000),
            ("mac_max_addresses", self.mac_max_addresses, 1000),
            ("manager_min_targets", self.manager_min_targets, 100_000),
            ("new_server_clients", self.new_server_clients, 100_000),
        ] {
            if v > max {
                return p(k, format!("{v}: must be between 0 and {max}"));
            }
        }
        let groups = self.peer_groups.iter().enumerate().flat_map(|(g, nets)| {
            nets.iter()
                .enumerate()
                .map(move |(i, n)| (format!("peer_groups[{g}][{i}]"), n))
        });
        let lists = [
            ("servers", &self.servers),
            ("scanners", &self.scanners),
            ("backup", &self.backup),
        ];
        let listed = lists.iter().flat_map(|(k, nets)| {
            nets.iter()
                .enumerate()
                .map(move |(i, n)| (format!("{k}[{i}]"), n))
        });
        for (k, net) in listed.chain(groups) {
            if net.addr() != net.network() {
                return p(
                    &k,
                    format!("{net} has host bits set; the network is {}", net.trunc()),
                );
            }
        }
        Ok(())
    }

    /// Slack in whole hours.
    pub fn slack_hours(&self) -> u32 {
        (self.off_hours_slack.as_secs() / 3600) as u32
    }
}
