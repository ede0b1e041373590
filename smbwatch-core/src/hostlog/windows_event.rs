//! Which Windows events smbwatch reads ([`WindowsEvent`]: the one table of
//! ids), what each reports ([`HostEventKind`]) and which log a record of a
//! shared kind came from.

use serde::{Deserialize, Serialize};

/// What a host event reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HostEventKind {
    /// Sysmon 3, Security 5156.
    NetworkConnection,
    /// Sysmon 1, Security 4688.
    ProcessCreation,
    /// Sysmon 11.
    FileCreate,
    /// Security 4624.
    Logon,
    /// Security 5140, 5145.
    ShareAccess,
    /// System 7045, Security 4697.
    ServiceInstall,
    /// Security 4698.
    TaskCreation,
}

/// The Windows events smbwatch reads, by provider and id: the one place
/// the ids are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WindowsEvent {
    /// Sysmon 1: process creation.
    SysmonProcessCreate,
    /// Sysmon 3: network connection.
    SysmonNetworkConnect,
    /// Sysmon 11: file create.
    SysmonFileCreate,
    /// Security 4624: an account logged on.
    Logon,
    /// Security 4688: a process was created.
    ProcessCreated,
    /// Security 5140: a network share was accessed.
    ShareAccessed,
    /// Security 5145: a share object was checked for access.
    ShareObjectChecked,
    /// Security 5156: the Windows Filtering Platform permitted a connection.
    ConnectionPermitted,
    /// System 7045 (Service Control Manager): a service was installed.
    ServiceInstalled,
    /// Security 4697: a service was installed in the system.
    SecurityServiceInstalled,
    /// Security 4698: a scheduled task was created.
    TaskCreated,
}

impl WindowsEvent {
    /// Every event, for tests and tables.
    pub const ALL: [Self; 11] = [
        Self::SysmonProcessCreate,
        Self::SysmonNetworkConnect,
        Self::SysmonFileCreate,
        Self::Logon,
        Self::ProcessCreated,
        Self::ShareAccessed,
        Self::ShareObjectChecked,
        Self::ConnectionPermitted,
        Self::ServiceInstalled,
        Self::SecurityServiceInstalled,
        Self::TaskCreated,
    ];

    /// The event id as Windows logs it.
    pub const fn id(self) -> u32 {
        match self {
            Self::SysmonProcessCreate => 1,
            Self::SysmonNetworkConnect => 3,
            Self::SysmonFileCreate => 11,
            Self::Logon => 4624,
            Self::ProcessCreated => 4688,
            Self::ShareAccessed => 5140,
            Self::ShareObjectChecked => 5145,
            Self::ConnectionPermitted => 5156,
            Self::ServiceInstalled => 7045,
            Self::SecurityServiceInstalled => 4697,
            Self::TaskCreated => 4698,
        }
    }

    /// The event of an id, if smbwatch reads it.
    pub fn from_id(id: u32) -> Option<Self> {
        Self::ALL.into_iter().find(|e| e.id() == id)
    }

    /// True for Sysmon's events (the Operational channel), false for the
    /// Security log's.
    pub const fn is_sysmon(self) -> bool {
        matches!(
            self,
            Self::SysmonProcessCreate | Self::SysmonNetworkConnect | Self::SysmonFileCreate
        )
    }

    /// What a record's channel or provider must contain (ASCII, any case)
    /// for the id to mean this event: ids are reused across providers
    /// (System channel event 1 is common).
    pub const fn log_names(self) -> (&'static str, &'static str) {
        match self {
            Self::SysmonProcessCreate | Self::SysmonNetworkConnect | Self::SysmonFileCreate => {
                ("sysmon", "sysmon")
            }
            Self::ServiceInstalled => ("system", "service control manager"),
            _ => ("security", "security"),
        }
    }

    /// What the event reports.
    pub const fn kind(self) -> HostEventKind {
        match self {
            Self::SysmonProcessCreate | Self::ProcessCreated => HostEventKind::ProcessCreation,
            Self::SysmonNetworkConnect | Self::ConnectionPermitted => {
                HostEventKind::NetworkConnection
            }
            Self::SysmonFileCreate => HostEventKind::FileCreate,
            Self::Logon => HostEventKind::Logon,
            Self::ShareAccessed | Self::ShareObjectChecked => HostEventKind::ShareAccess,
            Self::ServiceInstalled | Self::SecurityServiceInstalled => {
                HostEventKind::ServiceInstall
            }
            Self::TaskCreated => HostEventKind::TaskCreation,
        }
    }

    /// The name alerts cite: `Sysmon 3`, `Security 5156`.
    pub const fn label(self) -> &'static str {
        match self {
            Self::SysmonProcessCreate => "Sysmon 1",
            Self::SysmonNetworkConnect => "Sysmon 3",
            Self::SysmonFileCreate => "Sysmon 11",
            Self::Logon => "Security 4624",
            Self::ProcessCreated => "Security 4688",
            Self::ShareAccessed => "Security 5140",
            Self::ShareObjectChecked => "Security 5145",
            Self::ConnectionPermitted => "Security 5156",
            Self::ServiceInstalled => "System 7045",
            Self::SecurityServiceInstalled => "Security 4697",
            Self::TaskCreated => "Security 4698",
        }
    }
}

/// Which log a network connection came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConnectionLog {
    /// Sysmon 3 (names the process's GUID and account).
    Sysmon,
    /// Security 5156 (names no account).
    Wfp,
}

impl ConnectionLog {
    /// The log of a connection event (Sysmon 3 unless 5156).
    pub(crate) fn of(e: WindowsEvent) -> Self {
        if e == WindowsEvent::ConnectionPermitted {
            Self::Wfp
        } else {
            Self::Sysmon
        }
    }
}

/// Which log a process creation came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProcessLog {
    /// Sysmon 1.
    Sysmon,
    /// Security 4688.
    Security,
}

impl ProcessLog {
    /// The log of a process-creation event (Sysmon 1 unless 4688).
    pub(crate) fn of(e: WindowsEvent) -> Self {
        if e == WindowsEvent::ProcessCreated {
            Self::Security
        } else {
            Self::Sysmon
        }
    }
}

/// Which Security event a share access came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ShareLog {
    /// 5140: the share was opened (once per session).
    Share,
    /// 5145: an object on the share was checked (per file, with
    /// `RelativeTargetName` and the access asked for).
    Object,
}

impl ShareLog {
    /// The event of a share access (5140 unless 5145).
    pub(crate) fn of(e: WindowsEvent) -> Self {
        if e == WindowsEvent::ShareObjectChecked {
            Self::Object
        } else {
            Self::Share
        }
    }
}

/// Which event a service install came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ServiceLog {
    /// System 7045 (names the creator by SID only, and no logon session).
    System,
    /// Security 4697 (names the creator's logon session).
    Security,
}

impl ServiceLog {
    /// The log of a service-install event (7045 unless 4697).
    pub(crate) fn of(e: WindowsEvent) -> Self {
        if e == WindowsEvent::SecurityServiceInstalled {
            Self::Security
        } else {
            Self::System
        }
    }
}
