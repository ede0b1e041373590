//! The field table every format fills, and the one place that decides what
//! the Windows fields mean.
//!
//! Format modules only locate fields (`EventData/Data[@Name]`, a flat JSON
//! key, `winlog.event_data.*`, a `Key: Value` line) and hand them to
//! [`Raw::set_system`] / [`Raw::set_data`] / [`Raw::set_flat`]; [`Raw::finish`]
//! then validates and normalises into a [`HostEvent`].

use std::borrow::Cow;
use std::net::IpAddr;

use super::time;
use super::{
    clip, image_file_name, Account, ConnectionLog, FileCreation, HostEvent, HostRecord, Logon,
    NetworkConnection, Outcome, Process, ProcessCreation, ProcessLog, RecordProblem,
    ServiceInstall, ServiceLog, ShareAccess, ShareLog, TaskCreation, WindowsEvent,
};

mod time_of;
mod values;

use values::{
    access, account, contains_ci, direction, ip, logon_id, pid, port, protocol, sid, task_command,
    text,
};

/// A field value as found: text, or a JSON scalar.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Val<'a> {
    Str(Cow<'a, str>),
    U64(u64),
    I64(i64),
    F64(f64),
    Bool(bool),
}

impl<'a> Val<'a> {
    pub fn str(s: &'a str) -> Self {
        Val::Str(Cow::Borrowed(s))
    }

    /// The value as text (numbers formatted).
    fn text(&self) -> Cow<'_, str> {
        match self {
            Val::Str(s) => Cow::Borrowed(s.as_ref()),
            Val::U64(n) => Cow::Owned(n.to_string()),
            Val::I64(n) => Cow::Owned(n.to_string()),
            Val::F64(n) => Cow::Owned(n.to_string()),
            Val::Bool(b) => Cow::Borrowed(if *b { "true" } else { "false" }),
        }
    }

    /// The value as text, with Windows' "no value" spellings (`-`, empty) as `None`.
    fn present(&self) -> Option<Cow<'_, str>> {
        let t = self.text();
        let trimmed = t.trim();
        if trimmed.is_empty() || trimmed == "-" {
            return None;
        }
        if trimmed.len() == t.len() {
            Some(t)
        } else {
            Some(Cow::Owned(trimmed.to_string()))
        }
    }

    /// An unsigned number written in decimal or `0x` hex (Security logs write
    /// pids as `0x1ec0`).
    fn number(&self, field: &'static str) -> Result<Option<u64>, RecordProblem> {
        match self {
            Val::U64(n) => Ok(Some(*n)),
            Val::I64(n) => u64::try_from(*n)
                .map(Some)
                .map_err(|_| invalid(field, &n.to_string())),
            Val::F64(_) | Val::Bool(_) => Err(invalid(field, &self.text())),
            Val::Str(_) => {
                let Some(t) = self.present() else {
                    return Ok(None);
                };
                let parsed = match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
                    Some(hex) => u64::from_str_radix(hex, 16),
                    None => t.parse::<u64>(),
                };
                parsed.map(Some).map_err(|_| invalid(field, &t))
            }
        }
    }
}

fn invalid(field: &'static str, value: &str) -> RecordProblem {
    RecordProblem::Invalid {
        field,
        value: clip(value),
    }
}

/// Which flavour of record the fields came from: decides what `@timestamp` means.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum Flavour {
    /// XML, EVTX, evtx_dump, `Key: Value`: times are `TimeCreated`/`UtcTime`.
    #[default]
    Windows,
    /// NXLog: `EventTime` is host local time, `@timestamp` the collector's.
    Nxlog,
    /// Winlogbeat: `@timestamp` is the event's creation time in UTC.
    Winlogbeat,
}

/// Every field smbwatch reads, as found.
#[derive(Debug, Default)]
pub(crate) struct Raw<'a> {
    pub flavour: Flavour,
    // System part.
    event_id: Option<Val<'a>>,
    channel: Option<Val<'a>>,
    provider: Option<Val<'a>>,
    computer: Option<Val<'a>>,
    record_id: Option<Val<'a>>,
    /// `TimeCreated/@SystemTime` or a `TimeCreated` line.
    system_time: Option<Val<'a>>,
    /// NXLog `EventTime`.
    event_time: Option<Val<'a>>,
    /// `@timestamp`.
    at_timestamp: Option<Val<'a>>,
    // Event data.
    utc_time: Option<Val<'a>>,
    image: Option<Val<'a>>,
    application: Option<Val<'a>>,
    new_process_name: Option<Val<'a>>,
    pid: Option<Val<'a>>,
    new_pid: Option<Val<'a>>,
    src_ip: Option<Val<'a>>,
    src_port: Option<Val<'a>>,
    dst_ip: Option<Val<'a>>,
    dst_port: Option<Val<'a>>,
    ip_address: Option<Val<'a>>,
    ip_port: Option<Val<'a>>,
    protocol: Option<Val<'a>>,
    direction: Option<Val<'a>>,
    initiated: Option<Val<'a>>,
    user: Option<Val<'a>>,
    subject_user: Option<Val<'a>>,
    subject_sid: Option<Val<'a>>,
    target_sid: Option<Val<'a>>,
    subject_domain: Option<Val<'a>>,
    target_user: Option<Val<'a>>,
    target_domain: Option<Val<'a>>,
    logon_type: Option<Val<'a>>,
    workstation: Option<Val<'a>>,
    share_name: Option<Val<'a>>,
    relative_target: Option<Val<'a>>,
    target_filename: Option<Val<'a>>,
    parent_image: Option<Val<'a>>,
    command_line: Option<Val<'a>>,
    process_guid: Option<Val<'a>>,
    parent_process_guid: Option<Val<'a>>,
    parent_pid: Option<Val<'a>>,
    access_mask: Option<Val<'a>>,
    access_list: Option<Val<'a>>,
    subject_logon_id: Option<Val<'a>>,
    target_logon_id: Option<Val<'a>>,
    service_name: Option<Val<'a>>,
    /// 7045 `ImagePath`, 4697 `ServiceFileName`.
    service_command: Option<Val<'a>>,
    task_name: Option<Val<'a>>,
    task_content: Option<Val<'a>>,
    /// `System/Security/@UserID` (NXLog `UserID`): the SID a 7045 names.
    user_id: Option<Val<'a>>,
    /// ECS fields (Winlogbeat), used only where the event data lacks a field.
    pub ecs: Ecs<'a>,
}

/// ECS fallbacks from Winlogbeat/Elastic Agent records.
#[derive(Debug, Default)]
pub(crate) struct Ecs<'a> {
    pub event_code: Option<Val<'a>>,
    pub host_name: Option<Val<'a>>,
    pub src_ip: Option<Val<'a>>,
    pub src_port: Option<Val<'a>>,
    pub dst_ip: Option<Val<'a>>,
    pub dst_port: Option<Val<'a>>,
    pub pid: Option<Val<'a>>,
    pub executable: Option<Val<'a>>,
    pub command_line: Option<Val<'a>>,
    pub parent_executable: Option<Val<'a>>,
    pub user_name: Option<Val<'a>>,
    pub user_domain: Option<Val<'a>>,
    pub direction: Option<Val<'a>>,
    /// `network.transport` (`tcp`, `udp`).
    pub transport: Option<Val<'a>>,
    /// `network.iana_number` (`6`).
    pub iana_number: Option<Val<'a>>,
}

impl<'a> Raw<'a> {
    pub fn new(flavour: Flavour) -> Self {
        Self {
            flavour,
            ..Self::default()
        }
    }

    /// A field of the `System` element. Returns false if the name is not one.
    pub fn set_system(&mut self, name: &str, v: Val<'a>) -> bool {
        let slot = match name {
            "EventID" => &mut self.event_id,
            "Channel" => &mut self.channel,
            "Computer" => &mut self.computer,
            "EventRecordID" => &mut self.record_id,
            "SystemTime" => &mut self.system_time,
            "Provider" | "ProviderName" => &mut self.provider,
            "UserID" => &mut self.user_id,
            _ => return false,
        };
        *slot = Some(v);
        true
    }

    /// A field of `EventData` (names as Windows writes them, plus the
    /// Sigma-style aliases `DestinationAddress`/`Application`).
    pub fn set_data(&mut self, name: &str, v: Val<'a>) {
        let slot = match name {
            "UtcTime" => &mut self.utc_time,
            "Image" => &mut self.image,
            "Application" => &mut self.application,
            "NewProcessName" => &mut self.new_process_name,
            "ProcessId" | "ProcessID" => &mut self.pid,
            "NewProcessId" => &mut self.new_pid,
            "SourceIp" | "SourceAddress" => &mut self.src_ip,
            "SourcePort" => &mut self.src_port,
            "DestinationIp" | "DestAddress" | "DestinationAddress" => &mut self.dst_ip,
            "DestinationPort" | "DestPort" => &mut self.dst_port,
            "IpAddress" => &mut self.ip_address,
            "IpPort" => &mut self.ip_port,
            "Protocol" => &mut self.protocol,
            "Direction" => &mut self.direction,
            "Initiated" => &mut self.initiated,
            "User" => &mut self.user,
            "SubjectUserName" => &mut self.subject_user,
            "SubjectUserSid" => &mut self.subject_sid,
            "TargetUserSid" => &mut self.target_sid,
            "SubjectDomainName" => &mut self.subject_domain,
            "TargetUserName" => &mut self.target_user,
            "TargetDomainName" => &mut self.target_domain,
            "LogonType" => &mut self.logon_type,
            "WorkstationName" => &mut self.workstation,
            "ShareName" => &mut self.share_name,
            "RelativeTargetName" => &mut self.relative_target,
            "TargetFilename" => &mut self.target_filename,
            "ParentImage" | "ParentProcessName" => &mut self.parent_image,
            "CommandLine" => &mut self.command_line,
            "ProcessGuid" => &mut self.process_guid,
            "ParentProcessGuid" => &mut self.parent_process_guid,
            "ParentProcessId" => &mut self.parent_pid,
            "AccessMask" => &mut self.access_mask,
            "AccessList" => &mut self.access_list,
            "SubjectLogonId" => &mut self.subject_logon_id,
            "TargetLogonId" => &mut self.target_logon_id,
            "ServiceName" => &mut self.service_name,
            "ImagePath" | "ServiceFileName" => &mut self.service_command,
            "TaskName" => &mut self.task_name,
            "TaskContent" => &mut self.task_content,
            _ => return,
        };
        *slot = Some(v);
    }

    /// A key of a flat record (NXLog JSON, `Key: Value`): system names
    /// (including NXLog's `Hostname`, `EventTime`, `SourceName`,
    /// `RecordNumber`) first, then event data.
    pub fn set_flat(&mut self, name: &str, v: Val<'a>) {
        let slot = match name {
            "EventID" | "EventId" | "event_id" => &mut self.event_id,
            "Channel" => &mut self.channel,
            "Hostname" | "Computer" | "ComputerName" => &mut self.computer,
            "RecordNumber" | "EventRecordID" => &mut self.record_id,
            "TimeCreated" | "SystemTime" => &mut self.system_time,
            "EventTime" => &mut self.event_time,
            "@timestamp" => &mut self.at_timestamp,
            "SourceName" | "ProviderName" | "Provider" => &mut self.provider,
            "UserID" => &mut self.user_id,
            _ => return self.set_data(name, v),
        };
        *slot = Some(v);
    }

    /// `@timestamp` of a nested (Winlogbeat) record.
    pub fn set_at_timestamp(&mut self, v: Val<'a>) {
        self.at_timestamp = Some(v);
    }

    /// Validate and normalise.
    pub fn finish(self) -> Result<Outcome, RecordProblem> {
        let event_id = match self.event_id.as_ref().or(self.ecs.event_code.as_ref()) {
            Some(v) => {
                let n = v
                    .number("EventID")?
                    .ok_or(RecordProblem::Missing("EventID"))?;
                u32::try_from(n).map_err(|_| invalid("EventID", &n.to_string()))?
            }
            None => return Err(RecordProblem::Missing("EventID")),
        };
        let Some(event) = self.event_of(event_id) else {
            return Ok(Outcome::Skipped(event_id));
        };
        let (ts, time_source) = self.time()?;
        // Each field was checked as read; a zone inferred for a local time
        // near the bounds can still carry it out.
        if !time::in_range(ts) {
            return Err(RecordProblem::TimeOutOfRange {
                field: "event time",
                value: ts.to_rfc3339(),
            });
        }
        let record_id = match &self.record_id {
            Some(v) => v.number("EventRecordID")?,
            None => None,
        };
        let process = |pid_field: &'static str,
                       pid_val: Option<&Val<'a>>,
                       image: &Option<Val<'a>>|
         -> Result<Process, RecordProblem> {
            let image = text(image).or_else(|| text(&self.ecs.executable));
            Ok(Process {
                pid: pid(pid_field, pid_val)?,
                image_name: image.as_deref().map(|p| image_file_name(p).to_string()),
                image,
                guid: text(&self.process_guid),
            })
        };
        let own_pid = self.pid.as_ref().or(self.ecs.pid.as_ref());
        let record = match event {
            WindowsEvent::SysmonNetworkConnect | WindowsEvent::ConnectionPermitted => {
                let image = if event == WindowsEvent::SysmonNetworkConnect {
                    &self.image
                } else {
                    &self.application
                };
                HostRecord::NetworkConnection(NetworkConnection {
                    log: ConnectionLog::of(event),
                    src_ip: ip(
                        "SourceIp",
                        self.src_ip.as_ref().or(self.ecs.src_ip.as_ref()),
                    )?,
                    src_port: port(
                        "SourcePort",
                        self.src_port.as_ref().or(self.ecs.src_port.as_ref()),
                    )?,
                    dst_ip: ip(
                        "DestinationIp",
                        self.dst_ip.as_ref().or(self.ecs.dst_ip.as_ref()),
                    )?,
                    dst_port: port(
                        "DestinationPort",
                        self.dst_port.as_ref().or(self.ecs.dst_port.as_ref()),
                    )?,
                    protocol: protocol(
                        self.protocol
                            .as_ref()
                            .or(self.ecs.transport.as_ref())
                            .or(self.ecs.iana_number.as_ref()),
                    )?,
                    direction: direction(
                        self.direction
                            .as_ref()
                            .or(self.initiated.as_ref())
                            .or(self.ecs.direction.as_ref()),
                    ),
                    process: process("ProcessId", own_pid, image)?,
                    account: self.sysmon_account(),
                })
            }
            WindowsEvent::SysmonProcessCreate => HostRecord::ProcessCreation(ProcessCreation {
                log: ProcessLog::Sysmon,
                process: process("ProcessId", own_pid, &self.image)?,
                parent_pid: pid("ParentProcessId", self.parent_pid.as_ref())?,
                parent_image: text(&self.parent_image)
                    .or_else(|| text(&self.ecs.parent_executable)),
                parent_guid: text(&self.parent_process_guid),
                command_line: text(&self.command_line).or_else(|| text(&self.ecs.command_line)),
                account: self.sysmon_account(),
            }),
            WindowsEvent::SysmonFileCreate => HostRecord::FileCreation(FileCreation {
                process: process("ProcessId", own_pid, &self.image)?,
                target_filename: text(&self.target_filename),
                account: self.sysmon_account(),
            }),
            WindowsEvent::ProcessCreated => {
                // The creator's account: TargetUserName is `-` unless the
                // new process runs under a different account.
                let target = account(&self.target_domain, &self.target_user);
                let sid = if target.is_some() {
                    sid(&self.target_sid)
                } else {
                    sid(&self.subject_sid)
                };
                let account = target
                    .or_else(|| account(&self.subject_domain, &self.subject_user))
                    .or_else(|| self.ecs_account())
                    .unwrap_or_default();
                HostRecord::ProcessCreation(ProcessCreation {
                    log: ProcessLog::Security,
                    process: Process {
                        // 4688's `ProcessId` is the creator's (the parent).
                        guid: None,
                        ..process(
                            "NewProcessId",
                            self.new_pid.as_ref().or(self.ecs.pid.as_ref()),
                            &self.new_process_name,
                        )?
                    },
                    parent_pid: pid("ProcessId", self.pid.as_ref())?,
                    parent_image: text(&self.parent_image)
                        .or_else(|| text(&self.ecs.parent_executable)),
                    parent_guid: None,
                    command_line: text(&self.command_line).or_else(|| text(&self.ecs.command_line)),
                    account: Account { sid, ..account },
                })
            }
            WindowsEvent::Logon => HostRecord::Logon(Logon {
                src_ip: self.client_ip()?,
                src_port: self.client_port()?,
                workstation: text(&self.workstation),
                logon_type: match &self.logon_type {
                    Some(v) => v
                        .number("LogonType")?
                        .map(|n| u32::try_from(n).map_err(|_| invalid("LogonType", &n.to_string())))
                        .transpose()?,
                    None => None,
                },
                logon_id: logon_id("TargetLogonId", &self.target_logon_id)?,
                account: Account {
                    sid: sid(&self.target_sid),
                    ..account(&self.target_domain, &self.target_user)
                        .or_else(|| self.ecs_account())
                        .unwrap_or_default()
                },
            }),
            WindowsEvent::ShareAccessed | WindowsEvent::ShareObjectChecked => {
                HostRecord::ShareAccess(ShareAccess {
                    log: ShareLog::of(event),
                    src_ip: self.client_ip()?,
                    src_port: self.client_port()?,
                    share_name: text(&self.share_name)
                        .map(|s| super::bare_share_name(&s).to_string()),
                    relative_target: text(&self.relative_target),
                    access_mask: access(self.access_mask.as_ref(), self.access_list.as_ref())?,
                    logon_id: logon_id("SubjectLogonId", &self.subject_logon_id)?,
                    account: self.subject_account(),
                })
            }
            WindowsEvent::ServiceInstalled | WindowsEvent::SecurityServiceInstalled => {
                let log = ServiceLog::of(event);
                // 7045's `AccountName` is the account the service runs as
                // (NXLog overwrites it with the creator's name): only the
                // creator's SID, from the record's System part, is taken.
                let account = match log {
                    ServiceLog::System => Account {
                        sid: sid(&self.user_id),
                        ..Account::default()
                    },
                    ServiceLog::Security => self.subject_account(),
                };
                HostRecord::ServiceInstall(ServiceInstall {
                    log,
                    service_name: text(&self.service_name),
                    command: text(&self.service_command),
                    logon_id: logon_id("SubjectLogonId", &self.subject_logon_id)?,
                    account,
                })
            }
            WindowsEvent::TaskCreated => HostRecord::TaskCreation(TaskCreation {
                task_name: text(&self.task_name),
                command: self
                    .task_content
                    .as_ref()
                    .and_then(|v| v.present())
                    .and_then(|xml| task_command(&xml)),
                logon_id: logon_id("SubjectLogonId", &self.subject_logon_id)?,
                account: self.subject_account(),
            }),
        };
        let mut ev = HostEvent {
            ts,
            time_source,
            host: text(&self.computer).or_else(|| text(&self.ecs.host_name)),
            channel: text(&self.channel),
            record_id,
            record,
        };
        let truncated = ev.cap_fields();
        Ok(Outcome::Event {
            event: Box::new(ev),
            truncated,
        })
    }

    /// The supported event of an id, or `None` (skip). Sysmon ids are
    /// small numbers other providers reuse (System channel event 1 is
    /// common), so a known channel or provider must be Sysmon's; Security
    /// ids must come from the Security channel or auditing provider. A
    /// record naming neither (the flat `Key: Value` samples) is taken by id.
    fn event_of(&self, id: u32) -> Option<WindowsEvent> {
        let event = WindowsEvent::from_id(id)?;
        let channel = self.channel.as_ref().map(|v| v.text());
        let provider = self.provider.as_ref().map(|v| v.text());
        let (in_channel, in_provider) = event.log_names();
        let c = channel.as_deref().map(|c| contains_ci(c, in_channel));
        let p = provider.as_deref().map(|p| contains_ci(p, in_provider));
        match (c, p) {
            (None, None) => Some(event),
            (c, p) => (c == Some(true) || p == Some(true)).then_some(event),
        }
    }

    /// Sysmon's `User` (`DOMAIN\\name`), else the ECS user.
    fn sysmon_account(&self) -> Account {
        match text(&self.user) {
            Some(u) => Account::from_qualified(u, None),
            None => self.ecs_account().unwrap_or_default(),
        }
    }

    /// The Subject* account (5140/5145, 4697, 4698), else the ECS user.
    fn subject_account(&self) -> Account {
        Account {
            sid: sid(&self.subject_sid),
            ..account(&self.subject_domain, &self.subject_user)
                .or_else(|| self.ecs_account())
                .unwrap_or_default()
        }
    }

    fn ecs_account(&self) -> Option<Account> {
        account(&self.ecs.user_domain, &self.ecs.user_name)
    }

    /// The client of a logon or share access (4624, 5140, 5145):
    /// `IpAddress`, else the ECS source.
    fn client_ip(&self) -> Result<Option<IpAddr>, RecordProblem> {
        ip(
            "IpAddress",
            self.ip_address.as_ref().or(self.ecs.src_ip.as_ref()),
        )
    }

    /// The client's port: `IpPort`, else the ECS source port.
    fn client_port(&self) -> Result<Option<u16>, RecordProblem> {
        port(
            "IpPort",
            self.ip_port.as_ref().or(self.ecs.src_port.as_ref()),
        )
    }
}
