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

use super::{Direction, HostEvent, HostEventKind};
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
pub fn is_kernel_client(ev: &HostEvent) -> bool {
    match ev.pid {
        Some(pid) => pid == SYSTEM_PID,
        None => ev
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
    let selection = ev.event_id == 5156 && ev.dst_port == Some(SMB_PORT);
    let filter = is_loopback(ev.dst_ip) && ev.pid == Some(SYSTEM_PID);
    selection && !filter
}

/// The intent shared by the Sigma rule's description and Elastic's query
/// (`destination.port:445 and not process.pid:4 and not destination.ip:(127.0.0.1 or "::1")`):
/// a 5156 or Sysmon 3 connection to port 445, not inbound, not by the
/// kernel client, not to loopback — either exclusion suffices. A record
/// without a direction (Sysmon without `Initiated`, flat samples) is taken
/// as outbound, as both rules do.
pub fn smb_client_intent(ev: &HostEvent) -> bool {
    matches!(ev.event_id, 3 | 5156)
        && ev.kind == HostEventKind::NetworkConnection
        && ev.dst_port == Some(SMB_PORT)
        && ev.direction != Some(Direction::Inbound)
        && !is_loopback(ev.dst_ip)
        && !is_kernel_client(ev)
}

fn source_name(ev: &HostEvent) -> &'static str {
    match ev.event_id {
        3 => "Sysmon 3",
        5156 => "Security 5156",
        5140 => "Security 5140",
        5145 => "Security 5145",
        _ => "host log",
    }
}

/// `suspicious_smb_client` for one event, unless its image is allowlisted.
pub fn suspicious_smb_client(ev: &HostEvent, cfg: &HostRulesConfig) -> Option<Alert> {
    if !smb_client_intent(ev) {
        return None;
    }
    if let Some(name) = &ev.image_name {
        if cfg
            .allow_images
            .iter()
            .any(|a| a.eq_ignore_ascii_case(name))
        {
            return None;
        }
    }
    let who = ev.image_name.as_deref().unwrap_or("unknown process");
    let pid = ev.pid.map(|p| format!(" (pid {p})")).unwrap_or_default();
    let host = ev
        .host
        .as_deref()
        .map(|h| format!(" on {h}"))
        .unwrap_or_default();
    let dst = match ev.dst_ip {
        Some(IpAddr::V6(a)) => format!("[{a}]:{SMB_PORT}"),
        Some(a) => format!("{a}:{SMB_PORT}"),
        None => format!("port {SMB_PORT}"),
    };
    let msg = format!(
        "{who}{pid}{host} opened an SMB connection to {dst}; the normal SMB client is System (pid 4) [{}]",
        source_name(ev)
    );
    let mut a = Alert::new(ev.ts, AlertKind::SuspiciousSmbClient, Severity::Medium, msg);
    a.techniques = vec!["T1210"];
    a.source_ip = ev.src_ip;
    a.destination_ip = ev.dst_ip;
    a.destination_port = ev.dst_port;
    a.process = Some(ev.process_info());
    a.user = ev.user.clone();
    a.host = ev.host.clone();
    if let (Some(s), Some(d), Some(sp), Some(dp)) = (ev.src_ip, ev.dst_ip, ev.src_port, ev.dst_port)
    {
        if ev.protocol.unwrap_or(crate::community_id::PROTO_TCP) == crate::community_id::PROTO_TCP {
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
/// shares (`C$`…) and `IPC$` (bare names, as in [`HostEvent::share_name`]).
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
    if ev.kind != HostEventKind::ShareAccess {
        return None;
    }
    let share = ev.share_name.as_deref()?;
    let class = admin_share(share)?;
    let machine = ev.is_machine_account();
    let severity = match (class, machine) {
        (ShareClass::Admin, false) => Severity::High,
        (ShareClass::Admin, true) => Severity::Medium,
        (ShareClass::Ipc, _) => Severity::Low,
    };
    let who = ev.user.as_deref().unwrap_or("unknown user");
    let from = ev.src_ip.map(|a| format!(" from {a}")).unwrap_or_default();
    let host = ev
        .host
        .as_deref()
        .map(|h| format!(" on {h}"))
        .unwrap_or_default();
    let target = ev
        .relative_target
        .as_deref()
        .map(|t| format!(" ({t})"))
        .unwrap_or_default();
    let msg = format!(
        "{who}{from} accessed administrative share \\\\*\\{share}{target}{host} [{}]",
        source_name(ev)
    );
    let mut a = Alert::new(ev.ts, AlertKind::AdminShareAccess, severity, msg);
    a.techniques = vec!["T1021.002"];
    a.source_ip = ev.src_ip;
    a.user = ev.user.clone();
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
        let alert = if let Some(a) = suspicious_smb_client(ev, &self.cfg) {
            self.dedup_connection(ev).then_some(a)
        } else if let Some(a) = admin_share_access(ev) {
            self.dedup_share(ev, &a).then_some(a)
        } else {
            None
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

    /// True if `ev` is a new connection (and remembers it).
    fn dedup_connection(&mut self, ev: &HostEvent) -> bool {
        let key = (ev.src_ip, ev.src_port, ev.dst_ip, ev.dst_port);
        let window = timed::delta(self.cfg.connection_dedup);
        let dup = self.conns.get(&key).any(|(ts, seen)| {
            (*ts - ev.ts).abs() <= window
                && same_ci(&seen.host, &ev.host)
                && same_opt(&seen.pid, &ev.pid)
                && same_ci(&seen.image_name, &ev.image_name)
        });
        if dup {
            self.stats.duplicate_connections += 1;
            return false;
        }
        self.conns.insert(
            ev.ts,
            key,
            SeenConn {
                host: ev.host.clone(),
                pid: ev.pid,
                image_name: ev.image_name.clone(),
            },
        );
        true
    }

    /// True if this share access is new within `share_dedup`.
    fn dedup_share(&mut self, ev: &HostEvent, a: &Alert) -> bool {
        if self.cfg.share_dedup.is_zero() {
            return true;
        }
        let key = (
            ev.host.as_ref().map(|h| h.to_ascii_lowercase()),
            ev.src_ip,
            ev.user.as_ref().map(|u| u.to_ascii_lowercase()),
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
mod tests {
    use super::*;
    use crate::hostlog::tests::{data_file, COVENANT, EMPIRE, PSEXEC};
    use crate::hostlog::{parse_bytes, parse_file, parse_line, Format, TimeSource};
    use chrono::{DateTime, Utc};

    fn ts(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn conn(event_id: u32, pid: Option<u32>, image: &str, dst: &str) -> HostEvent {
        HostEvent {
            ts: ts("2025-06-08T05:30:23Z"),
            time_source: TimeSource::Utc,
            host: Some("TARGET-SRV".into()),
            channel: Some("Security".into()),
            event_id,
            kind: HostEventKind::NetworkConnection,
            record_id: None,
            src_ip: Some("10.45.45.103".parse().unwrap()),
            src_port: Some(50146),
            dst_ip: Some(dst.parse().unwrap()),
            dst_port: Some(445),
            protocol: Some(6),
            direction: Some(Direction::Outbound),
            pid,
            image: Some(image.into()),
            image_name: Some(crate::hostlog::image_file_name(image).into()),
            user: None,
            logon_type: None,
            share_name: None,
            relative_target: None,
            target_filename: None,
            parent_image: None,
            command_line: None,
        }
    }

    #[test]
    fn seed_sample_dns_exe_alerts() {
        let ev = conn(
            5156,
            Some(1752),
            "\\device\\harddiskvolume1\\windows\\system32\\dns.exe",
            "10.45.45.104",
        );
        let a = suspicious_smb_client(&ev, &HostRulesConfig::default()).unwrap();
        assert_eq!(a.kind, AlertKind::SuspiciousSmbClient);
        assert_eq!(a.techniques, vec!["T1210"]);
        let p = a.process.as_ref().unwrap();
        assert_eq!((p.name.as_deref(), p.pid), (Some("dns.exe"), Some(1752)));
        assert_eq!(a.destination_ip, Some("10.45.45.104".parse().unwrap()));
        assert_eq!(a.destination_port, Some(445));
        assert_eq!(a.host.as_deref(), Some("TARGET-SRV"));
        assert!(a
            .community_id
            .as_deref()
            .is_some_and(|c| c.starts_with("1:")));
        assert_eq!(
            a.message,
            "dns.exe (pid 1752) on TARGET-SRV opened an SMB connection to 10.45.45.104:445; \
             the normal SMB client is System (pid 4) [Security 5156]"
        );
    }

    /// The literal Sigma reading ANDs its filter fields; the intent excludes either.
    #[test]
    fn sigma_literal_versus_intent() {
        // System (pid 4) to a remote host: the everyday kernel SMB client.
        let system = conn(5156, Some(4), "System", "10.45.45.104");
        assert!(
            sigma_literal_reading(&system),
            "literal reading alerts on every kernel SMB connection"
        );
        assert!(!smb_client_intent(&system));
        // A tool to loopback (a local relay/tunnel test): excluded by intent too.
        let local = conn(5156, Some(1752), "C:\\tools\\python.exe", "127.0.0.1");
        assert!(sigma_literal_reading(&local));
        assert!(!smb_client_intent(&local));
        let local6 = conn(5156, Some(1752), "C:\\tools\\python.exe", "::1");
        assert!(!smb_client_intent(&local6));
        // Both readings drop System to loopback, and both keep dns.exe to a remote host.
        let both = conn(5156, Some(4), "System", "127.0.0.1");
        assert!(!sigma_literal_reading(&both) && !smb_client_intent(&both));
        let dns = conn(5156, Some(1752), "dns.exe", "10.45.45.104");
        assert!(sigma_literal_reading(&dns) && smb_client_intent(&dns));
    }

    #[test]
    fn inbound_other_ports_and_allowlist() {
        let mut ev = conn(3, Some(1752), "C:\\x\\python.exe", "10.0.0.2");
        ev.direction = Some(Direction::Inbound);
        assert!(suspicious_smb_client(&ev, &HostRulesConfig::default()).is_none());
        ev.direction = None;
        assert!(suspicious_smb_client(&ev, &HostRulesConfig::default()).is_some());
        ev.dst_port = Some(139);
        assert!(suspicious_smb_client(&ev, &HostRulesConfig::default()).is_none());
        ev.dst_port = Some(445);
        let cfg = HostRulesConfig {
            allow_images: vec!["PYTHON.EXE".into()],
            ..HostRulesConfig::default()
        };
        assert!(suspicious_smb_client(&ev, &cfg).is_none());
        // No pid in the record: the image `System` identifies the kernel client.
        let mut sys = conn(3, None, "System", "10.0.0.2");
        assert!(suspicious_smb_client(&sys, &HostRulesConfig::default()).is_none());
        sys.image = Some("C:\\x\\evil.exe".into());
        sys.image_name = Some("evil.exe".into());
        assert!(suspicious_smb_client(&sys, &HostRulesConfig::default()).is_some());
    }

    #[test]
    fn share_severity_by_share_and_account() {
        let kv = "EventID: 5140\nTimeCreated: 2025-06-08T05:31:00Z\nShareName: \\\\*\\C$\nIpAddress: 10.0.0.9\n\
                  SubjectUserName: bob\nSubjectDomainName: CORP\n\n\
                  EventID: 5140\nTimeCreated: 2025-06-08T05:31:00Z\nShareName: \\\\*\\ADMIN$\nIpAddress: 10.0.0.9\n\
                  SubjectUserName: WS1$\nSubjectDomainName: CORP\n\n\
                  EventID: 5140\nTimeCreated: 2025-06-08T05:31:00Z\nShareName: \\\\*\\IPC$\nIpAddress: 10.0.0.9\n\n\
                  EventID: 5140\nTimeCreated: 2025-06-08T05:31:00Z\nShareName: \\\\*\\SYSVOL\nIpAddress: 10.0.0.9\n";
        let (evs, _) = parse_bytes("s", kv.as_bytes(), Format::KeyValue).unwrap();
        let sev: Vec<_> = evs
            .iter()
            .map(|e| admin_share_access(e).map(|a| a.severity))
            .collect();
        assert_eq!(
            sev,
            vec![
                Some(Severity::High),
                Some(Severity::Medium),
                Some(Severity::Low),
                None
            ]
        );
        let a = admin_share_access(&evs[0]).unwrap();
        assert_eq!(a.techniques, vec!["T1021.002"]);
        assert_eq!(a.user.as_deref(), Some("CORP\\bob"));
        assert_eq!(a.source_ip, Some("10.0.0.9".parse().unwrap()));
        assert_eq!(
            a.message,
            "CORP\\bob from 10.0.0.9 accessed administrative share \\\\*\\C$ [Security 5140]"
        );
    }

    #[test]
    fn one_connection_logged_twice_is_one_alert() {
        let mut rules = HostRules::new(HostRulesConfig::default());
        let wfp = conn(
            5156,
            Some(8948),
            "\\device\\harddiskvolume2\\powershell.exe",
            "172.18.39.6",
        );
        let mut sysmon = conn(3, None, "C:\\Windows\\powershell.exe", "172.18.39.6");
        sysmon.ts = wfp.ts + chrono::Duration::milliseconds(2481);
        assert!(rules.check(&sysmon).is_some());
        assert!(rules.check(&wfp).is_none(), "either order");
        // A new source port is a new connection.
        let mut again = wfp.clone();
        again.src_port = Some(50505);
        assert!(rules.check(&again).is_some());
        // Same tuple, both pids known and different: not the same record.
        let mut fresh = HostRules::new(HostRulesConfig::default());
        assert!(fresh.check(&wfp).is_some());
        let mut other = wfp.clone();
        other.pid = Some(1);
        assert!(fresh.check(&other).is_some());
        assert!(
            fresh.check(&sysmon).is_none(),
            "no pid: a duplicate of either"
        );
        // Same tuple much later: port reuse, a new connection.
        let mut later = wfp.clone();
        later.ts += chrono::Duration::seconds(60);
        assert!(rules.check(&later).is_some());
        assert_eq!(rules.stats().duplicate_connections, 1);
        assert_eq!(rules.stats().alerts, 3);
    }

    #[test]
    fn dedup_state_is_bounded() {
        let cfg = HostRulesConfig {
            max_dedup_entries: 8,
            ..HostRulesConfig::default()
        };
        let mut rules = HostRules::new(cfg);
        for port in 1000..1100u16 {
            let mut ev = conn(5156, Some(9), "x.exe", "10.0.0.2");
            ev.src_port = Some(port);
            assert!(rules.check(&ev).is_some());
        }
        assert!(rules.conns.len() <= 8);
        assert_eq!(rules.stats().evicted, 92);
    }

    #[test]
    fn real_empire_log_powershell_not_system() {
        let Some(p) = data_file(EMPIRE) else { return };
        let (evs, _) = parse_file(&p, Format::Auto).unwrap();
        let mut rules = HostRules::new(HostRulesConfig::default());
        let alerts = rules.check_all(&evs);
        let smb: Vec<_> = alerts
            .iter()
            .filter(|a| a.kind == AlertKind::SuspiciousSmbClient)
            .collect();
        assert_eq!(smb.len(), 1, "{smb:#?}");
        let a = smb[0];
        let p = a.process.as_ref().unwrap();
        assert_eq!(p.name.as_deref(), Some("powershell.exe"));
        assert_eq!(a.destination_ip, Some("172.18.39.6".parse().unwrap()));
        assert_eq!(a.destination_port, Some(445));
        assert_eq!(a.source_ip, Some("172.18.39.5".parse().unwrap()));
        assert_eq!(
            rules.stats().duplicate_connections,
            1,
            "5156 and Sysmon 3 are one connection"
        );
        // System's records of the same connection are never reported.
        let system: Vec<_> = evs
            .iter()
            .filter(|e| e.image.as_deref() == Some("System"))
            .collect();
        assert!(!system.is_empty());
        assert!(system
            .iter()
            .all(|e| suspicious_smb_client(e, &HostRulesConfig::default()).is_none()));
        assert!(alerts
            .iter()
            .all(|a| a.process.as_ref().and_then(|p| p.name.as_deref()) != Some("System")));
        // Target side: IPC$ by pgustavo from the attacker.
        assert!(alerts.iter().any(|a| a.kind == AlertKind::AdminShareAccess
            && a.share.as_deref() == Some("IPC$")
            && a.source_ip == Some("172.18.39.5".parse().unwrap())));
    }

    #[test]
    fn real_covenant_log_c_share() {
        let Some(p) = data_file(COVENANT) else { return };
        let (evs, _) = parse_file(&p, Format::Auto).unwrap();
        let alerts = HostRules::new(HostRulesConfig::default()).check_all(&evs);
        let c: Vec<_> = alerts
            .iter()
            .filter(|a| a.kind == AlertKind::AdminShareAccess && a.share.as_deref() == Some("C$"))
            .collect();
        assert_eq!(c.len(), 1, "5140 and 5145 on C$ in one session: one alert");
        assert_eq!(c[0].severity, Severity::High);
        assert_eq!(c[0].user.as_deref(), Some("THESHIRE\\pgustavo"));
        assert_eq!(c[0].source_ip, Some("172.18.39.5".parse().unwrap()));
        // Its SMB connections are all System's.
        assert!(!alerts
            .iter()
            .any(|a| a.kind == AlertKind::SuspiciousSmbClient));
    }

    #[test]
    fn real_psexec_evtx_admin_share() {
        let Some(p) = data_file(PSEXEC) else { return };
        let (evs, _) = parse_file(&p, Format::Auto).unwrap();
        let alerts = HostRules::new(HostRulesConfig::default()).check_all(&evs);
        let admin: Vec<_> = alerts
            .iter()
            .filter(|a| a.share.as_deref() == Some("ADMIN$"))
            .collect();
        assert_eq!(admin.len(), 1);
        assert_eq!(admin[0].source_ip, Some("10.23.42.22".parse().unwrap()));
        assert_eq!(admin[0].user.as_deref(), Some("OFFSEC\\admmig"));
        assert_eq!(admin[0].host.as_deref(), Some("srvdefender01.offsec.lan"));
    }

    #[test]
    fn parse_line_then_rule() {
        let line = r#"{"EventID":3,"Channel":"Microsoft-Windows-Sysmon/Operational","UtcTime":"2020-09-20 06:57:48.481","Image":"C:\\Python39\\python.exe","Initiated":"True","SourceIp":"10.1.1.1","SourcePort":"5000","DestinationIp":"10.1.1.2","DestinationPort":"445"}"#;
        let ev = parse_line(line).unwrap().unwrap();
        assert!(suspicious_smb_client(&ev, &HostRulesConfig::default()).is_some());
    }

    /// One record dated 2100 used to become "now": every dedup entry was
    /// pruned on arrival and Sysmon 3 + 5156 of one connection alerted twice.
    #[test]
    fn a_record_from_the_future_does_not_break_dedup() {
        let wfp = conn(5156, Some(8948), "powershell.exe", "172.18.39.6");
        let mut sysmon = conn(3, None, "C:\\x\\powershell.exe", "172.18.39.6");
        sysmon.ts = wfp.ts + chrono::Duration::milliseconds(2481);
        let mut future = conn(5156, Some(1), "evil.exe", "172.18.39.7");
        future.ts = ts("2100-01-01T00:00:00Z");

        // With a reference clock: rejected, counted, explained.
        let mut rules = HostRules::new(HostRulesConfig::default());
        rules.advance(wfp.ts);
        assert!(rules.check(&wfp).is_some());
        assert!(rules.check(&future).is_none());
        let (why, n) = rules.take_rejected().unwrap();
        assert_eq!((n, rules.stats().rejected_ahead), (1, 1));
        assert!(why.to_string().contains("hostlog.max_ahead"), "{why}");
        assert!(rules.check(&sysmon).is_none(), "still one alert");

        // Before any reference: judged, but it moves no clock.
        let mut rules = HostRules::new(HostRulesConfig::default());
        assert!(rules.check(&wfp).is_some());
        assert!(rules.check(&future).is_some());
        assert!(rules.check(&sysmon).is_none(), "still one alert");
        assert_eq!(rules.stats().duplicate_connections, 1);
    }

    #[test]
    fn dedup_state_is_bounded_in_bytes() {
        const BUDGET: usize = 1 << 20;
        let cfg = HostRulesConfig {
            max_dedup_bytes: BUDGET,
            ..HostRulesConfig::default()
        };
        let mut rules = HostRules::new(cfg);
        let pad = "x".repeat(60_000);
        for port in 0..100u16 {
            let mut ev = conn(5156, Some(9), &format!("C:\\{pad}.exe"), "10.0.0.2");
            ev.host = Some(pad.clone());
            ev.src_port = Some(port);
            assert!(rules.check(&ev).is_some());
            assert!(rules.stats().bytes as usize <= BUDGET, "after {port}");
        }
        // About 120 KB each: eight fit.
        assert!(
            rules.conns.len() >= 6 && rules.conns.len() <= 9,
            "{}",
            rules.conns.len()
        );
        assert_eq!(rules.stats().evicted, 100 - rules.conns.len() as u64);
        // The newest is remembered: its second record is a duplicate.
        let mut again = conn(3, None, &format!("C:\\{pad}.exe"), "10.0.0.2");
        again.host = Some(pad.clone());
        again.src_port = Some(99);
        assert!(rules.check(&again).is_none());
    }
}
