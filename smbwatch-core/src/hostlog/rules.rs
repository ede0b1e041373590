//! Host rules: detection on Windows host events alone, no gateway needed.
//!
//! - [`suspicious_smb_client`]: a process other than the kernel SMB client
//!   (PID 4, `System`) opened an outbound connection to port 445 — the
//!   seed write-up's Sigma rule and Elastic's "Direct Outbound SMB
//!   Connection", implemented as their shared intent (see
//!   [`sigma_literal_reading`] for why not literally).
//! - [`admin_share_access`]: Security 5140/5145 on an administrative share.
//!
//! The functions are pure and judge one event. [`HostRules`] runs both and
//! removes duplicates: one connection logged by both Sysmon 3 and Security
//! 5156 gives one alert, and one SMB session's many 5145 records on a share
//! give one alert per window.
//!
//! The dedup tables are capped in entries and in bytes
//! ([`HostRulesConfig::max_dedup_bytes`]) and pruned by the reference clock
//! the caller gives ([`HostRules::advance`]), never by a host event's own
//! time: one record dated years ahead would otherwise expire everything.

use std::net::IpAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{
    ConnectionLog, Direction, HostEvent, HostRecord, NetworkConnection, Process, ShareAccess,
};
use crate::alert::{Alert, AlertKind, Severity};
use crate::timed::{self, enforce_budget, HeapSize, RefClock, TimedIndex, TooFarAhead};

/// The destination port of SMB over TCP.
pub const SMB_PORT: u16 = 445;
/// The kernel's process id; its SMB redirector is the normal SMB client.
pub const SYSTEM_PID: u32 = 4;

/// Host-rule settings (a `[hostlog.rules]`-style section; every key optional).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HostRulesConfig {
    /// Image file names never reported by `suspicious_smb_client`
    /// (case-insensitive, e.g. `["veeamagent.exe"]`).
    pub allow_images: Vec<String>,
    /// A second record of the same connection (same host, 5-tuple,
    /// compatible pid and image) within this time is a duplicate.
    #[serde(with = "humantime_serde")]
    pub connection_dedup: Duration,
    /// Share access by the same user from the same address to the same
    /// share of the same host within this time is one alert (0 disables).
    #[serde(with = "humantime_serde")]
    pub share_dedup: Duration,
    /// Most remembered connections/share accesses for dedup, each.
    pub max_dedup_entries: usize,
    /// Bytes held by both dedup tables together (strings included); past
    /// it the oldest entries of the larger table go.
    pub max_dedup_bytes: usize,
}

impl Default for HostRulesConfig {
    fn default() -> Self {
        Self {
            allow_images: Vec::new(),
            // Sysmon 3 is logged late and NXLog's 5156 time has whole
            // seconds: the empire log's two records of one connection are
            // 2.5 s apart.
            connection_dedup: Duration::from_secs(5),
            share_dedup: Duration::from_secs(600),
            max_dedup_entries: 65_536,
            max_dedup_bytes: 64 << 20,
        }
    }
}

/// True for 127.0.0.0/8 and ::1.
fn is_loopback(ip: Option<IpAddr>) -> bool {
    ip.is_some_and(|a| a.is_loopback())
}

/// The kernel SMB client: PID 4, or, when the record carries no pid (NXLog
/// drops Sysmon's `ProcessId`), the image `System`.
pub fn is_kernel_client(p: &Process) -> bool {
    match p.pid {
        Some(pid) => pid == SYSTEM_PID,
        None => p
            .image
            .as_deref()
            .is_some_and(|i| i.eq_ignore_ascii_case("System")),
    }
}

/// The seed's Sigma rule read literally:
/// `selection: {EventID: 5156, DestinationPort: 445}`,
/// `filter: {DestinationAddress: [127.0.0.1, ::1], ProcessId: 4}`,
/// `condition: selection and not filter`. Fields within one Sigma map are
/// ANDed, so the filter only removes *System connecting to loopback*: every
/// normal kernel SMB connection to a remote host (PID 4) would alert, and a
/// non-System process to loopback too. Kept to show the difference in
/// tests; smbwatch uses [`smb_client_intent`].
pub fn sigma_literal_reading(ev: &HostEvent) -> bool {
    let Some(c) = ev.as_connection() else {
        return false;
    };
    let selection = c.log == ConnectionLog::Wfp && c.dst_port == Some(SMB_PORT);
    let filter = is_loopback(c.dst_ip) && c.process.pid == Some(SYSTEM_PID);
    selection && !filter
}

/// The intent shared by the Sigma rule's description and Elastic's query
/// (`destination.port:445 and not process.pid:4 and not destination.ip:(127.0.0.1 or "::1")`):
/// a 5156 or Sysmon 3 connection to port 445, not inbound, not by the
/// kernel client, not to loopback — either exclusion suffices. A record
/// without a direction (Sysmon without `Initiated`, flat samples) is taken
/// as outbound, as both rules do.
pub fn smb_client_intent(ev: &HostEvent) -> bool {
    ev.as_connection().is_some_and(|c| {
        c.dst_port == Some(SMB_PORT)
            && c.direction != Some(Direction::Inbound)
            && !is_loopback(c.dst_ip)
            && !is_kernel_client(&c.process)
    })
}

/// `suspicious_smb_client` for one event, unless its image is allowlisted.
pub fn suspicious_smb_client(ev: &HostEvent, cfg: &HostRulesConfig) -> Option<Alert> {
    if !smb_client_intent(ev) {
        return None;
    }
    let c = ev.as_connection()?;
    if let Some(name) = &c.process.image_name {
        if cfg
            .allow_images
            .iter()
            .any(|a| a.eq_ignore_ascii_case(name))
        {
            return None;
        }
    }
    let who = c.process.image_name.as_deref().unwrap_or("unknown process");
    let pid = c
        .process
        .pid
        .map(|p| format!(" (pid {p})"))
        .unwrap_or_default();
    let host = ev
        .host
        .as_deref()
        .map(|h| format!(" on {h}"))
        .unwrap_or_default();
    let dst = match c.dst_ip {
        Some(IpAddr::V6(a)) => format!("[{a}]:{SMB_PORT}"),
        Some(a) => format!("{a}:{SMB_PORT}"),
        None => format!("port {SMB_PORT}"),
    };
    let msg = format!(
        "{who}{pid}{host} opened an SMB connection to {dst}; the normal SMB client is System (pid 4) [{}]",
        ev.windows_event().label()
    );
    let mut a = Alert::new(ev.ts, AlertKind::SuspiciousSmbClient, Severity::Medium, msg);
    a.event_code = Some(ev.event_id());
    a.source_ip = c.src_ip;
    a.source_port = c.src_port;
    a.destination_ip = c.dst_ip;
    a.destination_port = c.dst_port;
    a.process = Some(c.process.info());
    a.user = c.account.qualified();
    a.user_id = c.account.sid.clone();
    a.host = ev.host.clone();
    if let (Some(s), Some(d), Some(sp), Some(dp)) = (c.src_ip, c.dst_ip, c.src_port, c.dst_port) {
        if c.protocol.unwrap_or(crate::community_id::PROTO_TCP) == crate::community_id::PROTO_TCP {
            a.community_id = Some(crate::community_id::community_id_v1(
                s,
                d,
                sp,
                dp,
                crate::community_id::PROTO_TCP,
                0,
            ));
        }
    }
    Some(a)
}

/// Which administrative share, if any: `ADMIN$`, a drive share (`C$`,
/// `D$`…) or `IPC$`.
fn admin_share(share: &str) -> Option<ShareClass> {
    let b = share.as_bytes();
    if share.eq_ignore_ascii_case("ADMIN$")
        || (b.len() == 2 && b[0].is_ascii_alphabetic() && b[1] == b'$')
    {
        Some(ShareClass::Admin)
    } else if share.eq_ignore_ascii_case("IPC$") {
        Some(ShareClass::Ipc)
    } else {
        None
    }
}

/// True for the shares `admin_share_access` reports: `ADMIN$`, drive
/// shares (`C$`…) and `IPC$` (bare names, as in [`ShareAccess::share_name`]).
pub fn is_admin_share(share: &str) -> bool {
    admin_share(share).is_some()
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum ShareClass {
    Admin,
    Ipc,
}

/// `admin_share_access` for one 5140/5145 event: `ADMIN$` and drive shares
/// are High (Medium for a machine account), `IPC$` is Low (every SMB
/// session opens it; worth keeping for the chain, not for a page).
pub fn admin_share_access(ev: &HostEvent) -> Option<Alert> {
    let HostRecord::ShareAccess(s) = &ev.record else {
        return None;
    };
    let share = s.share_name.as_deref()?;
    let class = admin_share(share)?;
    let machine = s.account.is_machine();
    let severity = match (class, machine) {
        (ShareClass::Admin, false) => Severity::High,
        (ShareClass::Admin, true) => Severity::Medium,
        (ShareClass::Ipc, _) => Severity::Low,
    };
    let user = s.account.qualified();
    let who = user.as_deref().unwrap_or("unknown user");
    let from = s.src_ip.map(|a| format!(" from {a}")).unwrap_or_default();
    let host = ev
        .host
        .as_deref()
        .map(|h| format!(" on {h}"))
        .unwrap_or_default();
    let target = s
        .relative_target
        .as_deref()
        .map(|t| format!(" ({t})"))
        .unwrap_or_default();
    let msg = format!(
        "{who}{from} accessed administrative share \\\\*\\{share}{target}{host} [{}]",
        ev.windows_event().label()
    );
    let mut a = Alert::new(ev.ts, AlertKind::AdminShareAccess, severity, msg);
    a.event_code = Some(ev.event_id());
    a.source_ip = s.src_ip;
    a.source_port = s.src_port;
    a.user = user;
    a.user_id = s.account.sid.clone();
    a.host = ev.host.clone();
    a.share = Some(share.to_string());
    Some(a)
}

/// Counters of a [`HostRules`] run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct HostRuleStats {
    /// Events judged.
    pub events: u64,
    /// Alerts returned.
    pub alerts: u64,
    /// Connection alerts dropped as duplicates (Sysmon 3 + 5156).
    pub duplicate_connections: u64,
    /// Share alerts dropped within `share_dedup`.
    pub duplicate_shares: u64,
    /// Dedup entries evicted by the caps (entries or bytes).
    pub evicted: u64,
    /// Accounted bytes held by the dedup tables now.
    pub bytes: u64,
    /// Events rejected: dated more than `max_ahead` ahead of the reference
    /// clock.
    pub rejected_ahead: u64,
}

/// One remembered connection alert.
#[derive(Debug)]
struct SeenConn {
    host: Option<String>,
    pid: Option<u32>,
    image_name: Option<String>,
}

impl HeapSize for SeenConn {
    fn heap_size(&self) -> usize {
        self.host.heap_size() + self.image_name.heap_size()
    }
}

type ConnKey = (Option<IpAddr>, Option<u16>, Option<IpAddr>, Option<u16>);
type ShareKey = (Option<String>, Option<IpAddr>, Option<String>, String);

/// Both rules with dedup; pure (time from the events and the caller's
/// reference clock).
///
/// Dedup of connections: an alert is a duplicate of an earlier one when the
/// 5-tuple is equal, the times are within `connection_dedup`, and host,
/// pid and image name agree wherever both records have them (NXLog's
/// Sysmon 3 has no pid; 5156 has no user). The first record wins; its
/// alert is not revised by the second.
#[derive(Debug)]
pub struct HostRules {
    cfg: HostRulesConfig,
    conns: TimedIndex<ConnKey, SeenConn>,
    shares: TimedIndex<ShareKey, ()>,
    clock: RefClock,
    /// The last rejected event not yet reported.
    rejected: Option<TooFarAhead>,
    stats: HostRuleStats,
}

fn same_opt<T: PartialEq>(a: &Option<T>, b: &Option<T>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => a == b,
        _ => true,
    }
}

fn same_ci(a: &Option<String>, b: &Option<String>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => a.eq_ignore_ascii_case(b),
        _ => true,
    }
}

impl HostRules {
    /// Rules with these settings.
    pub fn new(cfg: HostRulesConfig) -> Self {
        let cap = cfg.max_dedup_entries;
        Self {
            cfg,
            conns: TimedIndex::new(cap),
            shares: TimedIndex::new(cap),
            clock: RefClock::new(timed::DEFAULT_MAX_AHEAD),
            rejected: None,
            stats: HostRuleStats::default(),
        }
    }

    /// New allowlisted images and dedup times (a daemon reload); the dedup
    /// tables keep what they remember, and their sizes.
    pub fn reconfigure(&mut self, cfg: HostRulesConfig) {
        self.cfg = HostRulesConfig {
            max_dedup_entries: self.cfg.max_dedup_entries,
            max_dedup_bytes: self.cfg.max_dedup_bytes,
            ..cfg
        };
    }

    /// Events dated more than `d` ahead of the reference clock are rejected
    /// (`[hostlog] max_ahead`; 5 minutes unless set).
    #[must_use]
    pub fn with_max_ahead(mut self, d: Duration) -> Self {
        self.clock = RefClock::new(d);
        self
    }

    /// Judge one event; at most one alert. An event dated more than
    /// `max_ahead` ahead of the reference clock is rejected (counted, see
    /// [`take_rejected`](Self::take_rejected)) and gives none.
    pub fn check(&mut self, ev: &HostEvent) -> Option<Alert> {
        if let Err(e) = self.clock.admit(ev.ts) {
            self.stats.rejected_ahead += 1;
            self.rejected = Some(e);
            return None;
        }
        self.stats.events += 1;
        let alert = match &ev.record {
            HostRecord::NetworkConnection(c) => suspicious_smb_client(ev, &self.cfg)
                .filter(|_| self.dedup_connection(ev.ts, ev.host.as_ref(), c)),
            HostRecord::ShareAccess(s) => {
                admin_share_access(ev).filter(|a| self.dedup_share(ev, s, a))
            }
            _ => None,
        };
        if alert.is_some() {
            self.stats.alerts += 1;
        }
        enforce_budget(
            self.cfg.max_dedup_bytes,
            &mut [&mut self.conns, &mut self.shares],
        );
        alert
    }

    /// The last event rejected as too far ahead, with the number of
    /// rejections so far, once per rejection (for the daemon's log).
    pub fn take_rejected(&mut self) -> Option<(TooFarAhead, u64)> {
        self.rejected.take().map(|r| (r, self.stats.rejected_ahead))
    }

    /// Judge many events (e.g. a parsed file), in order.
    pub fn check_all<'a>(&mut self, events: impl IntoIterator<Item = &'a HostEvent>) -> Vec<Alert> {
        events.into_iter().filter_map(|e| self.check(e)).collect()
    }

    /// Counters so far.
    pub fn stats(&self) -> HostRuleStats {
        HostRuleStats {
            evicted: self.conns.evicted() + self.shares.evicted(),
            bytes: timed::total_bytes(&[&self.conns, &self.shares]) as u64,
            ..self.stats
        }
    }

    /// Move the reference clock to `now` (the daemon's wall clock, replay's
    /// capture time) and forget what can no longer be a duplicate. Without
    /// a reference, nothing is pruned by time (the caps still hold).
    pub fn advance(&mut self, now: chrono::DateTime<chrono::Utc>) {
        self.clock.advance(now);
        // Twice the window: a duplicate may arrive late by up to a window.
        let keep = |d: Duration| timed::add(timed::delta(d), timed::delta(d));
        if let Some(c) = self.clock.cutoff(keep(self.cfg.connection_dedup)) {
            self.conns.prune(c);
        }
        if let Some(c) = self.clock.cutoff(keep(self.cfg.share_dedup)) {
            self.shares.prune(c);
        }
    }

    /// True if connection `c` of `host` at `at` is new (and remembers it).
    fn dedup_connection(
        &mut self,
        at: chrono::DateTime<chrono::Utc>,
        host: Option<&String>,
        c: &NetworkConnection,
    ) -> bool {
        let key = (c.src_ip, c.src_port, c.dst_ip, c.dst_port);
        let window = timed::delta(self.cfg.connection_dedup);
        let host = host.cloned();
        let dup = self.conns.get(&key).any(|(ts, seen)| {
            (*ts - at).abs() <= window
                && same_ci(&seen.host, &host)
                && same_opt(&seen.pid, &c.process.pid)
                && same_ci(&seen.image_name, &c.process.image_name)
        });
        if dup {
            self.stats.duplicate_connections += 1;
            return false;
        }
        self.conns.insert(
            at,
            key,
            SeenConn {
                host,
                pid: c.process.pid,
                image_name: c.process.image_name.clone(),
            },
        );
        true
    }

    /// True if this share access is new within `share_dedup`.
    fn dedup_share(&mut self, ev: &HostEvent, s: &ShareAccess, a: &Alert) -> bool {
        if self.cfg.share_dedup.is_zero() {
            return true;
        }
        let key = (
            ev.host.as_ref().map(|h| h.to_ascii_lowercase()),
            s.src_ip,
            a.user.as_ref().map(|u| u.to_ascii_lowercase()),
            a.share.clone().unwrap_or_default().to_ascii_uppercase(),
        );
        let window = timed::delta(self.cfg.share_dedup);
        if self
            .shares
            .get(&key)
            .any(|(ts, ())| (*ts - ev.ts).abs() <= window)
        {
            self.stats.duplicate_shares += 1;
            return false;
        }
        self.shares.insert(ev.ts, key, ());
        true
    }
}

#[cfg(test)]
mod tests;
