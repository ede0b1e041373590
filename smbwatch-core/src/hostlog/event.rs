//! The host event: a header every record has (time, host, channel) and one
//! typed record per kind of Windows event smbwatch reads.
//!
//! Which Windows event ids exist and what they mean is [`WindowsEvent`]:
//! the one table of ids, used by the parsers' mapping (`fields`) and to
//! name a record's source in alerts. Nothing downstream matches on numbers.

use std::net::IpAddr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::cap_string;

pub use super::windows_event::{
    ConnectionLog, HostEventKind, ProcessLog, ServiceLog, ShareLog, WindowsEvent,
};

/// Direction of a network connection as seen by the logging host.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// The logging host initiated the connection.
    Outbound,
    /// The logging host accepted the connection.
    Inbound,
}

/// Where [`HostEvent::ts`] came from, best first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeSource {
    /// A field that is UTC by definition or carries its zone: Sysmon
    /// `UtcTime`, `System/TimeCreated/@SystemTime`, Winlogbeat `@timestamp`,
    /// or any time with `Z`/`±hh:mm`.
    Utc,
    /// NXLog `EventTime` (host local time without zone) converted with the
    /// host's UTC offset inferred from the record's `@timestamp` (rounded to
    /// 15 minutes, so valid while forwarding takes less than 7.5 minutes).
    LocalInferred,
    /// The collector's receive time (`@timestamp` of an NXLog/Logstash
    /// record): late by the forwarding delay.
    Collector,
    /// A time without zone and nothing to infer the zone from: taken as UTC.
    AssumedUtc,
}

/// An account as the record names it; any part may be absent.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Account {
    /// `SubjectDomainName`/`TargetDomainName`, the part before `\` of
    /// Sysmon's `User`, ECS `user.domain`.
    pub domain: Option<String>,
    /// The account name (`alice`, `SRV1$`).
    pub name: Option<String>,
    /// `SubjectUserSid`/`TargetUserSid` (never the null SID `S-1-0-0`).
    pub sid: Option<String>,
}

impl Account {
    /// `DOMAIN\name` (or `name` without a domain), as alerts carry it.
    pub fn qualified(&self) -> Option<String> {
        let name = self.name.as_deref()?;
        Some(match self.domain.as_deref() {
            Some(d) => format!("{d}\\{name}"),
            None => name.to_string(),
        })
    }

    /// An account from its `DOMAIN\name` form (Sysmon's `User`): split
    /// at the first `\`.
    pub fn from_qualified(user: String, sid: Option<String>) -> Self {
        match user.split_once('\\') {
            Some((d, n)) => Self {
                domain: Some(d.to_string()),
                name: Some(n.to_string()),
                sid,
            },
            None => Self {
                domain: None,
                name: Some(user),
                sid,
            },
        }
    }

    /// True when the name is a machine account's (ends in `$`).
    pub fn is_machine(&self) -> bool {
        self.name.as_deref().is_some_and(|u| u.ends_with('$'))
    }
}

/// A process as a record names it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Process {
    /// Process id (for a creation: the new process).
    pub pid: Option<u32>,
    /// Image path as logged (may be an NT device path or `System`).
    pub image: Option<String>,
    /// File name of `image`, e.g. `powershell.exe`.
    pub image_name: Option<String>,
    /// Sysmon `ProcessGuid`: names one process across pid reuse, and is
    /// all NXLog keeps of Sysmon's process identity.
    pub guid: Option<String>,
}

impl Process {
    /// The process as [`crate::alert::ProcessInfo`].
    pub fn info(&self) -> crate::alert::ProcessInfo {
        crate::alert::ProcessInfo {
            name: self.image_name.clone(),
            pid: self.pid,
            executable: self.image.clone(),
        }
    }
}

/// Sysmon 3 or Security 5156.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetworkConnection {
    /// Which log.
    pub log: ConnectionLog,
    /// Source address.
    pub src_ip: Option<IpAddr>,
    /// Source port.
    pub src_port: Option<u16>,
    /// Destination address.
    pub dst_ip: Option<IpAddr>,
    /// Destination port.
    pub dst_port: Option<u16>,
    /// IP protocol number (6 TCP, 17 UDP).
    pub protocol: Option<u8>,
    /// 5156 `Direction`, Sysmon `Initiated`.
    pub direction: Option<Direction>,
    /// The process that owns the connection.
    pub process: Process,
    /// Its account (Sysmon `User`; 5156 names none).
    pub account: Account,
}

/// Sysmon 1 or Security 4688.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessCreation {
    /// Which log.
    pub log: ProcessLog,
    /// The new process.
    pub process: Process,
    /// Parent process id (Sysmon 1 `ParentProcessId`, 4688 `ProcessId`).
    pub parent_pid: Option<u32>,
    /// Parent image (Sysmon 1 `ParentImage`, 4688 `ParentProcessName`).
    pub parent_image: Option<String>,
    /// Sysmon 1 `ParentProcessGuid`.
    pub parent_guid: Option<String>,
    /// Command line.
    pub command_line: Option<String>,
    /// The account the process runs as (4688: the target account when the
    /// new process runs as another, else the creator's).
    pub account: Account,
}

/// Sysmon 11.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileCreation {
    /// The process that created the file.
    pub process: Process,
    /// The file created (`TargetFilename`).
    pub target_filename: Option<String>,
    /// The process's account.
    pub account: Account,
}

/// Security 4624.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Logon {
    /// The remote client's address (`IpAddress`).
    pub src_ip: Option<IpAddr>,
    /// The remote client's port (`IpPort`).
    pub src_port: Option<u16>,
    /// The client's computer name as it gave it (`WorkstationName`).
    pub workstation: Option<String>,
    /// Logon type (3: network).
    pub logon_type: Option<u32>,
    /// The new logon session (`TargetLogonId`): what later records of the
    /// session (4697, 4698) name as `SubjectLogonId`.
    pub logon_id: Option<u64>,
    /// The account logged on (Target*).
    pub account: Account,
}

/// Security 5140 or 5145.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShareAccess {
    /// Which event.
    pub log: ShareLog,
    /// The remote client's address (`IpAddress`).
    pub src_ip: Option<IpAddr>,
    /// The remote client's port (`IpPort`).
    pub src_port: Option<u16>,
    /// Share name without the `\\*\` prefix, e.g. `C$`.
    pub share_name: Option<String>,
    /// Path relative to the share (5145 `RelativeTargetName`).
    pub relative_target: Option<String>,
    /// Requested access (`AccessMask`, or the rights named in
    /// `AccessList`), e.g. `0x2` for WriteData.
    pub access_mask: Option<u32>,
    /// The client's logon session (`SubjectLogonId`).
    pub logon_id: Option<u64>,
    /// The client's account (Subject*).
    pub account: Account,
}

/// System 7045 or Security 4697: a service was installed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceInstall {
    /// Which log.
    pub log: ServiceLog,
    /// `ServiceName`.
    pub service_name: Option<String>,
    /// What the service runs (7045 `ImagePath`, 4697 `ServiceFileName`).
    pub command: Option<String>,
    /// The creator's logon session (4697 `SubjectLogonId`; 7045 names none).
    pub logon_id: Option<u64>,
    /// The creator (4697 Subject*; 7045: the SID of `System/Security/@UserID`).
    pub account: Account,
}

/// Security 4698: a scheduled task was created.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskCreation {
    /// `TaskName` as logged (`\Microsoft\Windows\x`).
    pub task_name: Option<String>,
    /// The first `<Command>` of the task's XML (`TaskContent`) and its
    /// `<Arguments>`.
    pub command: Option<String>,
    /// The creator's logon session (`SubjectLogonId`).
    pub logon_id: Option<u64>,
    /// The creator (Subject*).
    pub account: Account,
}

/// What one host event reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostRecord {
    /// Sysmon 3, Security 5156.
    NetworkConnection(NetworkConnection),
    /// Sysmon 1, Security 4688.
    ProcessCreation(ProcessCreation),
    /// Sysmon 11.
    FileCreation(FileCreation),
    /// Security 4624.
    Logon(Logon),
    /// Security 5140, 5145.
    ShareAccess(ShareAccess),
    /// System 7045, Security 4697.
    ServiceInstall(ServiceInstall),
    /// Security 4698.
    TaskCreation(TaskCreation),
}

/// One normalised Windows host event: the header every record has, and
/// the typed record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostEvent {
    /// Event time in UTC (see [`TimeSource`] for which field it came from).
    pub ts: DateTime<Utc>,
    /// Which field `ts` came from.
    pub time_source: TimeSource,
    /// Computer name as logged (`Computer`, `Hostname`, `winlog.computer_name`).
    pub host: Option<String>,
    /// Event log channel as logged (`Security`, `Microsoft-Windows-Sysmon/Operational`).
    pub channel: Option<String>,
    /// Event record id, when the format carries it.
    pub record_id: Option<u64>,
    /// What the event reports.
    pub record: HostRecord,
}

/// Longest host, channel, domain, account, share, workstation and image
/// file name kept (bytes).
pub const MAX_NAME_BYTES: usize = 256;
/// Longest SID kept (bytes): `S-1-` and 15 sub-authorities of 10 digits,
/// the most a SID can have.
pub const MAX_SID_BYTES: usize = 184;
/// Longest image, parent image, file and share-relative path kept (bytes).
pub const MAX_PATH_BYTES: usize = 1024;
/// Longest command line kept (bytes).
pub const MAX_COMMAND_LINE_BYTES: usize = 4096;
/// Longest Sysmon process GUID kept (bytes; a real one is 38).
pub const MAX_GUID_BYTES: usize = 64;

// Documented (docs/operations.md, docs/hostlogs.md): fail to compile if
// the event grows past the 10 KiB the docs promise.
const _: () = assert!(HostEvent::MAX_BYTES <= 10 * 1024);

const fn max(a: usize, b: usize) -> usize {
    if a > b {
        a
    } else {
        b
    }
}

/// Most heap bytes of an account: domain, name, SID.
const ACCOUNT_BYTES: usize = 2 * MAX_NAME_BYTES + MAX_SID_BYTES;
/// Most heap bytes of a process: image, image name, GUID.
const PROCESS_BYTES: usize = MAX_PATH_BYTES + MAX_NAME_BYTES + MAX_GUID_BYTES;

/// Calls `$f(field, cap)` for every string field of `$ev` (borrowed as
/// `[&]` or `[&mut]`): one list of fields and caps for reading and
/// capping.
macro_rules! for_each_string {
    ($ev:expr, [$($r:tt)+], $f:expr) => {{
        let mut f = $f;
        let ev = $($r)+ *$ev;
        f($($r)+ ev.host, MAX_NAME_BYTES);
        f($($r)+ ev.channel, MAX_NAME_BYTES);
        let (process, account) = match $($r)+ ev.record {
            HostRecord::NetworkConnection(r) => (Some($($r)+ r.process), $($r)+ r.account),
            HostRecord::ProcessCreation(r) => {
                f($($r)+ r.parent_image, MAX_PATH_BYTES);
                f($($r)+ r.parent_guid, MAX_GUID_BYTES);
                f($($r)+ r.command_line, MAX_COMMAND_LINE_BYTES);
                (Some($($r)+ r.process), $($r)+ r.account)
            }
            HostRecord::FileCreation(r) => {
                f($($r)+ r.target_filename, MAX_PATH_BYTES);
                (Some($($r)+ r.process), $($r)+ r.account)
            }
            HostRecord::Logon(r) => {
                f($($r)+ r.workstation, MAX_NAME_BYTES);
                (None, $($r)+ r.account)
            }
            HostRecord::ShareAccess(r) => {
                f($($r)+ r.share_name, MAX_NAME_BYTES);
                f($($r)+ r.relative_target, MAX_PATH_BYTES);
                (None, $($r)+ r.account)
            }
            HostRecord::ServiceInstall(r) => {
                f($($r)+ r.service_name, MAX_NAME_BYTES);
                f($($r)+ r.command, MAX_COMMAND_LINE_BYTES);
                (None, $($r)+ r.account)
            }
            HostRecord::TaskCreation(r) => {
                f($($r)+ r.task_name, MAX_PATH_BYTES);
                f($($r)+ r.command, MAX_COMMAND_LINE_BYTES);
                (None, $($r)+ r.account)
            }
        };
        if let Some(p) = process {
            f($($r)+ p.image, MAX_PATH_BYTES);
            f($($r)+ p.image_name, MAX_NAME_BYTES);
            f($($r)+ p.guid, MAX_GUID_BYTES);
        }
        f($($r)+ account.domain, MAX_NAME_BYTES);
        f($($r)+ account.name, MAX_NAME_BYTES);
        f($($r)+ account.sid, MAX_SID_BYTES);
    }};
}

impl HostEvent {
    /// Most heap bytes the strings of one parsed event hold: the header's
    /// host and channel, and the largest record at its caps (a process
    /// creation): 7,736. With the struct itself ([`HostEvent::MAX_BYTES`])
    /// this bounds what one event costs a table downstream.
    pub const MAX_HEAP_BYTES: usize = 2 * MAX_NAME_BYTES
        + max(
            max(
                // Connection.
                PROCESS_BYTES + ACCOUNT_BYTES,
                // Process creation: the process, parent image and GUID,
                // command line.
                PROCESS_BYTES
                    + MAX_PATH_BYTES
                    + MAX_GUID_BYTES
                    + MAX_COMMAND_LINE_BYTES
                    + ACCOUNT_BYTES,
            ),
            max(
                // File creation.
                PROCESS_BYTES + MAX_PATH_BYTES + ACCOUNT_BYTES,
                max(
                    // Logon.
                    MAX_NAME_BYTES + ACCOUNT_BYTES,
                    // Share access; a service install (name, command) and a
                    // task (path, command) are within a process creation.
                    MAX_NAME_BYTES + MAX_PATH_BYTES + ACCOUNT_BYTES,
                ),
            ),
        );

    /// Most bytes one parsed event occupies, inline and on the heap
    /// (under 10 KiB).
    pub const MAX_BYTES: usize = std::mem::size_of::<HostEvent>() + Self::MAX_HEAP_BYTES;

    /// Which Windows event this record came from.
    pub fn windows_event(&self) -> WindowsEvent {
        match &self.record {
            HostRecord::NetworkConnection(c) => match c.log {
                ConnectionLog::Sysmon => WindowsEvent::SysmonNetworkConnect,
                ConnectionLog::Wfp => WindowsEvent::ConnectionPermitted,
            },
            HostRecord::ProcessCreation(p) => match p.log {
                ProcessLog::Sysmon => WindowsEvent::SysmonProcessCreate,
                ProcessLog::Security => WindowsEvent::ProcessCreated,
            },
            HostRecord::FileCreation(_) => WindowsEvent::SysmonFileCreate,
            HostRecord::Logon(_) => WindowsEvent::Logon,
            HostRecord::ShareAccess(s) => match s.log {
                ShareLog::Share => WindowsEvent::ShareAccessed,
                ShareLog::Object => WindowsEvent::ShareObjectChecked,
            },
            HostRecord::ServiceInstall(s) => match s.log {
                ServiceLog::System => WindowsEvent::ServiceInstalled,
                ServiceLog::Security => WindowsEvent::SecurityServiceInstalled,
            },
            HostRecord::TaskCreation(_) => WindowsEvent::TaskCreated,
        }
    }

    /// The Windows event id (for alerts' `event.code`).
    pub fn event_id(&self) -> u32 {
        self.windows_event().id()
    }

    /// What the event reports.
    pub fn kind(&self) -> HostEventKind {
        self.windows_event().kind()
    }

    /// The connection, if the event is one.
    pub fn as_connection(&self) -> Option<&NetworkConnection> {
        match &self.record {
            HostRecord::NetworkConnection(r) => Some(r),
            _ => None,
        }
    }

    /// The process creation, if the event is one.
    pub fn as_process_creation(&self) -> Option<&ProcessCreation> {
        match &self.record {
            HostRecord::ProcessCreation(r) => Some(r),
            _ => None,
        }
    }

    /// The file creation, if the event is one.
    pub fn as_file_creation(&self) -> Option<&FileCreation> {
        match &self.record {
            HostRecord::FileCreation(r) => Some(r),
            _ => None,
        }
    }

    /// The logon (with the client's workstation name and address), if the
    /// event is one.
    pub fn as_logon(&self) -> Option<&Logon> {
        match &self.record {
            HostRecord::Logon(r) => Some(r),
            _ => None,
        }
    }

    /// The service install, if the event is one.
    pub fn as_service_install(&self) -> Option<&ServiceInstall> {
        match &self.record {
            HostRecord::ServiceInstall(r) => Some(r),
            _ => None,
        }
    }

    /// The task creation, if the event is one.
    pub fn as_task_creation(&self) -> Option<&TaskCreation> {
        match &self.record {
            HostRecord::TaskCreation(r) => Some(r),
            _ => None,
        }
    }

    /// The logon session a record names (4624's new session; the
    /// client's or creator's for 5140/5145, 4697, 4698).
    pub fn logon_id(&self) -> Option<u64> {
        match &self.record {
            HostRecord::Logon(r) => r.logon_id,
            HostRecord::ShareAccess(r) => r.logon_id,
            HostRecord::ServiceInstall(r) => r.logon_id,
            HostRecord::TaskCreation(r) => r.logon_id,
            _ => None,
        }
    }

    /// The share access, if the event is one.
    pub fn as_share_access(&self) -> Option<&ShareAccess> {
        match &self.record {
            HostRecord::ShareAccess(r) => Some(r),
            _ => None,
        }
    }

    /// The account the record names.
    pub fn account(&self) -> &Account {
        match &self.record {
            HostRecord::NetworkConnection(r) => &r.account,
            HostRecord::ProcessCreation(r) => &r.account,
            HostRecord::FileCreation(r) => &r.account,
            HostRecord::Logon(r) => &r.account,
            HostRecord::ShareAccess(r) => &r.account,
            HostRecord::ServiceInstall(r) => &r.account,
            HostRecord::TaskCreation(r) => &r.account,
        }
    }

    /// The process the record names (the new one for a creation); logons
    /// share accesses, service installs and task creations name none.
    pub fn process(&self) -> Option<&Process> {
        match &self.record {
            HostRecord::NetworkConnection(r) => Some(&r.process),
            HostRecord::ProcessCreation(r) => Some(&r.process),
            HostRecord::FileCreation(r) => Some(&r.process),
            HostRecord::Logon(_)
            | HostRecord::ShareAccess(_)
            | HostRecord::ServiceInstall(_)
            | HostRecord::TaskCreation(_) => None,
        }
    }

    /// The source address: a connection's source, a logon's or share
    /// access's remote client; `None` for the rest (a service install or
    /// task names its creator's logon session, not its address).
    pub fn src_ip(&self) -> Option<IpAddr> {
        match &self.record {
            HostRecord::NetworkConnection(r) => r.src_ip,
            HostRecord::Logon(r) => r.src_ip,
            HostRecord::ShareAccess(r) => r.src_ip,
            HostRecord::ProcessCreation(_)
            | HostRecord::FileCreation(_)
            | HostRecord::ServiceInstall(_)
            | HostRecord::TaskCreation(_) => None,
        }
    }

    /// Heap bytes held by this event's strings (their capacities).
    pub fn heap_bytes(&self) -> usize {
        let mut n = 0;
        for_each_string!(self, [&], |s: &Option<String>, _max| {
            n += s.as_ref().map_or(0, String::capacity);
        });
        n
    }

    /// Cut every string field to its cap (on a char boundary, ending in
    /// `…`) and drop spare capacity. True when a field was cut.
    pub fn cap_fields(&mut self) -> bool {
        let mut cut = false;
        for_each_string!(self, [&mut], |field: &mut Option<String>, max| {
            if let Some(s) = field {
                cut |= cap_string(s, max);
            }
        });
        cut
    }

    /// True when the account is a machine account (ends in `$`).
    pub fn is_machine_account(&self) -> bool {
        self.account().is_machine()
    }
}
