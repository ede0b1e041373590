//! The alert schema shared by every detector.
//!
//! Every detector (gateway scan detection, host-log rules, correlation)
//! produces [`Alert`]s; the sinks of `smbwatch-output` serialise them (ECS
//! JSON lines, syslog).

pub mod attack;
pub mod kinds;

use std::net::IpAddr;

use chrono::{DateTime, Utc};
use serde::Serialize;

/// Alert kinds; the string form is `rule.id` in JSON and the syslog MSGID.
/// What each means to a SIEM is its [`kinds::KindSpec`].
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
    /// A remote client wrote a file through an administrative share
    /// (5145 WriteData/AppendData on `ADMIN$`/`C$`), or the kernel created
    /// an executable on behalf of one (Sysmon 11 by `System`).
    RemoteFileDrop,
    /// smbwatch itself: the kernel is shedding events (a flood), or stopped.
    SmbwatchDegraded,
    /// Baseline: a source never seen as an SMB client starts SMB.
    SmbNewClient,
    /// Baseline: a known client uses a server it never used.
    SmbNewEdge,
    /// Baseline: SMB outside the client's learned hours.
    SmbOffHours,
    /// Baseline: a server without history gained many clients at once.
    SmbNewServer,
    /// A source sent packets the kernel could not parse (headers past its
    /// bound) to several destinations.
    SmbEvasionAttempt,
    /// On the wire: a tree connect to an administrative share (`ADMIN$`,
    /// `C$`…), or a sensitive pipe opened on `IPC$`.
    SmbAdminShare,
    /// On the wire: an executable or script written to an administrative
    /// share.
    SmbFileDrop,
    /// On the wire: a service created, changed or started over svcctl (or,
    /// without the wire's report, the target's 7045/4697 of a service
    /// installed by a remote client).
    SmbRemoteService,
    /// On the wire: a scheduled task registered or run (atsvc,
    /// ITaskSchedulerService; or, without the wire's report, the target's
    /// 4698 of a task created by a remote client).
    SmbRemoteTask,
    /// On the wire: directory replication (DRSGetNCChanges) asked by a host
    /// that is not a configured domain controller.
    SmbDcsync,
    /// On the wire: a client speaking SMB1.
    SmbV1,
    /// On the wire: a burst of account, group, share or session
    /// enumeration calls (samr, lsarpc, srvsvc, wkssvc).
    SmbEnum,
    /// On the wire: an MS17-010 exploit (EternalBlue's transaction) or the
    /// DoublePulsar implant's command or answer, over SMB1.
    SmbExploit,
    /// On the wire: a call that makes the server authenticate to a host
    /// the caller names (PetitPotam's MS-EFSR, DFSCoerce's MS-DFSNM,
    /// ShadowCoerce's MS-FSRVP, the printer bug against a domain
    /// controller), the first step of an NTLM relay.
    SmbCoercion,
    /// On the wire: a registry hive saved on the server by a remote client
    /// (winreg BaseRegSaveKey), as secretsdump does to read SAM, SYSTEM and
    /// SECURITY.
    SmbRegistryDump,
}

impl AlertKind {
    /// The snake_case code, as in `rule.id`.
    pub fn code(self) -> &'static str {
        self.spec().rule_id
    }

    /// Human-readable rule name (`rule.name`).
    pub fn rule_name(self) -> &'static str {
        self.spec().rule_name
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
    /// Fan-out alerts: the time scale that fired (its window, `10m`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scale: Option<String>,
    /// Prefix alerts: the prefix and its members.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prefix: Option<PrefixEvidence>,
}

/// Evidence of a prefix alert (fan-out or TRW of a source prefix).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PrefixEvidence {
    /// The source prefix (`203.0.113.0/24`).
    pub prefix: ipnet::IpNet,
    /// Member addresses that took part (at least this many).
    pub members: u32,
    /// The most active members, most active first.
    pub top_members: Vec<IpAddr>,
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

/// What the process-creation records (4688, Sysmon 1) said about an
/// alert's process.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ProcessContext {
    /// Command line of the process.
    pub command_line: Option<String>,
    /// Full path of its parent.
    pub parent_executable: Option<String>,
    /// Command line of its parent, when its creation was seen too.
    pub parent_command_line: Option<String>,
    /// The process class of its image (`[process_classes]`), if any.
    pub class: Option<ProcessClass>,
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
    /// MITRE ATT&CK technique ids (the kind's, from [`kinds::KindSpec`]).
    pub techniques: Vec<&'static str>,
    /// One-line human summary.
    pub message: String,
    /// The source event's code (a Windows event id: 5140, 4624, Sysmon 3),
    /// for alerts raised from host logs.
    pub event_code: Option<u32>,
    /// Source address (the scanner or SMB client).
    pub source_ip: Option<IpAddr>,
    /// Source port (of the first flow, for scans).
    pub source_port: Option<u16>,
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
    /// Creation record of `process` (correlated alerts).
    pub process_context: Option<ProcessContext>,
    /// User name from host logs, as logged (`DOMAIN\user`, `user@domain`
    /// or bare); the document splits it.
    pub user: Option<String>,
    /// The user's security identifier (SID), from host logs.
    pub user_id: Option<String>,
    /// Host name from host logs.
    pub host: Option<String>,
    /// Share name (share-access alerts).
    pub share: Option<String>,
    /// What the wire showed (SMB alerts, and host alerts joined with them).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub smb: Option<SmbEvidence>,
    /// The gateways that saw the source (`observer.name`; set by the fleet
    /// aggregator). Left out of the record when empty, so a single router's
    /// `event.id`s do not depend on the fleet.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub observers: Vec<String>,
}

impl Alert {
    /// An alert with only the mandatory fields set.
    pub fn new(ts: DateTime<Utc>, kind: AlertKind, severity: Severity, message: String) -> Self {
        Self {
            ts,
            kind,
            severity,
            techniques: kind.spec().techniques.to_vec(),
            message,
            event_code: None,
            source_ip: None,
            source_port: None,
            destination_ip: None,
            destination_port: None,
            community_id: None,
            ifindex: None,
            vlan: None,
            scan: None,
            process: None,
            processes: Vec::new(),
            process_context: None,
            user: None,
            user_id: None,
            host: None,
            share: None,
            smb: None,
            observers: Vec::new(),
        }
    }
}

/// What an SMB connection showed on the wire behind an alert.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SmbEvidence {
    /// `\\server\share` of the act.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tree: Option<String>,
    /// The file created or written (share-relative).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// The named pipe.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pipe: Option<String>,
    /// The RPC interface (`svcctl`, or its UUID).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
    /// RPC operations seen (the act's, or the burst's distinct ones).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub operations: Vec<String>,
    /// Enumeration calls counted in the burst.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub calls: Option<u32>,
    /// SMB1 dialects the client offered.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub dialects: Vec<String>,
    /// The MS17-010 sign seen (`eternalblue`, `doublepulsar_command`,
    /// `doublepulsar_answer`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exploit: Option<&'static str>,
    /// The NTLMSSP domain of the logon.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// The NTLMSSP workstation: the client's computer name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workstation: Option<String>,
    /// The logon was anonymous (null session) or guest.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logon: Option<&'static str>,
    /// Host-log records that reported the same act (Windows event ids),
    /// when joined.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub host_events: Vec<u32>,
}

/// A class of client process that has no business speaking SMB itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProcessClass {
    /// powershell, pwsh, python, wscript, cscript, mshta...
    ScriptInterpreter,
    /// Living-off-the-land binaries: rundll32, regsvr32, certutil...
    Lolbin,
    /// Office applications: winword, excel...
    Office,
    /// Web browsers.
    Browser,
}

impl ProcessClass {
    /// The snake_case code (`smbwatch.process_class`).
    pub fn code(self) -> &'static str {
        match self {
            Self::ScriptInterpreter => "script_interpreter",
            Self::Lolbin => "lolbin",
            Self::Office => "office",
            Self::Browser => "browser",
        }
    }

    /// Words for alert messages.
    pub fn label(self) -> &'static str {
        match self {
            Self::ScriptInterpreter => "a script interpreter",
            Self::Lolbin => "a LOLBin",
            Self::Office => "an Office application",
            Self::Browser => "a browser",
        }
    }
}
