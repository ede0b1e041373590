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
}

impl WindowsEvent {
    /// Every event, for tests and tables.
    pub const ALL: [Self; 8] = [
        Self::SysmonProcessCreate,
        Self::SysmonNetworkConnect,
        Self::SysmonFileCreate,
        Self::Logon,
        Self::ProcessCreated,
        Self::ShareAccessed,
        Self::ShareObjectChecked,
        Self::ConnectionPermitted,
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
