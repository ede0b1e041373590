//! The alert schema shared by every detector, and its sinks.
//!
//! Every detector (gateway scan detection, host-log rules, correlation)
//! produces [`Alert`]s; sinks serialise them (ECS JSON lines, syslog).

pub mod ecs;
pub mod json;
pub mod sink;
pub mod syslog;

use std::net::IpAddr;

use chrono::{DateTime, Utc};
use serde::Serialize;

/// Alert kinds; the string form is `event.code` in JSON and the syslog MSGID.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    /// One source reached many distinct destinations on SMB ports in a window.
    SmbScanFanout,
    /// Threshold Random Walk on pair outcomes crossed the scanner bound.
    SmbScanTrw,
    /// A Windows process other than PID 4 opened an outbound SMB connection.
    SuspiciousSmbClient,
    /// Access to an administrative share (C$, ADMIN$, IPC$).
    AdminShareAccess,
    /// A scanning source then used a share or logged on to a target.
    LateralMovementChain,
    /// smbwatch itself: the kernel is shedding events (a flood), or stopped.
    SmbwatchDegraded,
}

impl AlertKind {
    /// The snake_case code, as in `event.code`.
    pub fn code(self) -> &'static str {
        match self {
            Self::SmbScanFanout => "smb_scan_fanout",
            Self::SmbScanTrw => "smb_scan_trw",
            Self::SuspiciousSmbClient => "suspicious_smb_client",
            Self::AdminShareAccess => "admin_share_access",
            Self::LateralMovementChain => "lateral_movement_chain",
            Self::SmbwatchDegraded => "smbwatch_degraded",
        }
    }

    /// Human-readable rule name (`rule.name`).
    pub fn rule_name(self) -> &'static str {
        match self {
            Self::SmbScanFanout => "SMB scan: fan-out to many hosts",
            Self::SmbScanTrw => "SMB scan: failed-connection random walk",
            Self::SuspiciousSmbClient => "SMB connection by a non-System process",
            Self::AdminShareAccess => "Administrative share access",
            Self::LateralMovementChain => "SMB scan followed by share access or network logon",
            Self::SmbwatchDegraded => "smbwatch degraded: events shed under load",
        }
    }
}

/// Severity, ordered. `number()` is ECS `event.severity`; `syslog()` the
/// RFC 5424 severity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Informational.
    Low,
    /// Worth a look.
    Medium,
    /// Likely malicious.
    High,
    /// Act now.
    Critical,
}

impl Severity {
    /// ECS `event.severity` (higher is worse).
    pub fn number(self) -> u8 {
        match self {
            Self::Low => 21,
            Self::Medium => 47,
            Self::High => 73,
            Self::Critical => 99,
        }
    }

    /// Lower-case name (`low` ... `critical`), as in syslog structured data.
    pub fn name(self) -> &'static str {
        match self {
            Self::Low => "low",
            Self::Medium => "medium",
            Self::High => "high",
            Self::Critical => "critical",
        }
    }

    /// RFC 5424 severity code (lower is worse).
    pub fn syslog(self) -> u8 {
        match self {
            Self::Low => 5,      // notice
            Self::Medium => 4,   // warning
            Self::High => 3,     // error
            Self::Critical => 2, // critical
        }
    }
}

/// Evidence of a scan alert.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ScanEvidence {
    /// Distinct destinations in the window.
    pub distinct_destinations: usize,
    /// Up to a cap, the destinations themselves (first seen first).
    pub destinations: Vec<IpAddr>,
    /// SYNs (new pairs) seen from the source in the window.
    pub syns: u64,
    /// Of those, SYNs that came as first IP fragments (an evasion attempt).
    pub fragmented_syns: u64,
    /// Pairs answered with SYN-ACK.
    pub accepted: u64,
    /// Pairs answered with RST or not answered in time.
    pub refused: u64,
    /// Window length in seconds.
    pub window_secs: u64,
    /// First event of the source in the window.
    pub first_seen: DateTime<Utc>,
    /// Latest event of the source.
    pub last_seen: DateTime<Utc>,
}

/// A Windows process named by host logs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize)]
pub struct ProcessInfo {
    /// File name, e.g. `powershell.exe`.
    pub name: Option<String>,
    /// Process id.
    pub pid: Option<u32>,
    /// Full path as logged.
    pub executable: Option<String>,
}

/// One alert, whatever raised it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Alert {
    /// When the alerting condition held (event time, not wall clock).
    pub ts: DateTime<Utc>,
    /// What fired.
    pub kind: AlertKind,
    /// How bad.
    pub severity: Severity,
    /// MITRE ATT&CK technique ids.
    pub techniques: Vec<&'static str>,
    /// One-line human summary.
    pub message: String,
    /// Source address (the scanner or SMB client).
    pub source_ip: Option<IpAddr>,
    /// Destination address.
    pub destination_ip: Option<IpAddr>,
    /// Destination port.
    pub destination_port: Option<u16>,
    /// Community ID of the first flow.
    pub community_id: Option<String>,
    /// Ingress interface index.
    pub ifindex: Option<u32>,
    /// Outer VLAN id.
    pub vlan: Option<u16>,
    /// Scan evidence (scan alerts).
    pub scan: Option<ScanEvidence>,
    /// The process behind the flow (host-log alerts, correlated alerts).
    pub process: Option<ProcessInfo>,
    /// Processes seen for the source (correlated scan alerts).
    pub processes: Vec<ProcessInfo>,
    /// User name from host logs.
    pub user: Option<String>,
    /// Host name from host logs.
    pub host: Option<String>,
    /// Share name (share-access alerts).
    pub share: Option<String>,
    /// The gateways that saw the source (`observer.name`; set by the
    /// fleet aggregator).
    pub observers: Vec<String>,
}

impl Alert {
    /// An alert with only the mandatory fields set.
    pub fn new(ts: DateTime<Utc>, kind: AlertKind, severity: Severity, message: String) -> Self {
        Self {
            ts,
            kind,
            severity,
            techniques: Vec::new(),
            message,
            source_ip: None,
            destination_ip: None,
            destination_port: None,
            community_id: None,
            ifindex: None,
            vlan: None,
            scan: None,
            process: None,
            processes: Vec::new(),
            user: None,
            host: None,
            share: None,
            observers: Vec::new(),
        }
    }
}
