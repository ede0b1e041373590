//! What each alert kind means to a SIEM: one [`KindSpec`] per
//! [`AlertKind`], in [`AlertKind::spec`].
//!
//! Adding a kind is its enum variant, one arm in [`AlertKind::spec`] (the
//! compiler asks for it) and its entry in [`AlertKind::ALL`] (the tests
//! check every listed kind against the ECS definitions). Everything the
//! document says about a kind (`rule.*`, `event.category`/`type`,
//! `threat.*` with tactics) comes from here.

use serde::Serialize;

use super::AlertKind;

/// ECS `event.category` values smbwatch uses (ECS allowed values).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    /// Detection of an attack.
    IntrusionDetection,
    /// Network traffic.
    Network,
    /// A file (a share) was accessed or created.
    File,
    /// A process is involved.
    Process,
    /// Logons.
    Authentication,
    /// The host (here: the sensor itself).
    Host,
}

/// ECS `event.type` values smbwatch uses (ECS allowed values).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventType {
    /// Information about something seen.
    Info,
    /// Something was accessed.
    Access,
    /// A connection.
    Connection,
    /// Something started.
    Start,
    /// Something was created.
    Creation,
    /// An error condition.
    Error,
}

/// The ECS meaning of one alert kind.
#[derive(Debug)]
pub struct KindSpec {
    /// `rule.id`: the stable snake_case key (syslog MSGID too).
    pub rule_id: &'static str,
    /// `rule.name`.
    pub rule_name: &'static str,
    /// `rule.version`: raised when the rule's logic changes meaning.
    pub rule_version: &'static str,
    /// `event.category`.
    pub category: &'static [Category],
    /// `event.type`.
    pub types: &'static [EventType],
    /// MITRE ATT&CK technique ids (sub-techniques as `T1021.002`); each
    /// listed in [`super::attack::TECHNIQUES`].
    pub techniques: &'static [&'static str],
}

impl AlertKind {
    /// Every kind (for tests and documentation).
    pub const ALL: &'static [AlertKind] = &[
        Self::SmbScanFanout,
        Self::SmbScanTrw,
        Self::SuspiciousSmbClient,
        Self::AdminShareAccess,
        Self::LateralMovementChain,
        Self::RemoteFileDrop,
        Self::SmbNewClient,
        Self::SmbNewEdge,
        Self::SmbOffHours,
        Self::SmbNewServer,
        Self::SmbEvasionAttempt,
        Self::SmbwatchDegraded,
        Self::SmbAdminShare,
        Self::SmbFileDrop,
        Self::SmbRemoteService,
        Self::SmbRemoteTask,
        Self::SmbDcsync,
        Self::SmbV1,
        Self::SmbEnum,
        Self::SmbExploit,
        Self::SmbCoercion,
        Self::SmbRegistryDump,
    ];

    /// The kind's ECS mapping.
    pub fn spec(self) -> &'static KindSpec {
        use Category::*;
        use EventType::*;
        match self {
            Self::SmbScanFanout => &KindSpec {
                rule_id: "smb_scan_fanout",
                rule_name: "SMB scan: fan-out to many hosts",
                rule_version: "1",
                category: &[IntrusionDetection, Network],
                types: &[Info],
                techniques: &["T1046", "T1210"],
            },
            Self::SmbScanTrw => &KindSpec {
                rule_id: "smb_scan_trw",
                rule_name: "SMB scan: failed-connection random walk",
                rule_version: "1",
                category: &[IntrusionDetection, Network],
                types: &[Info],
                techniques: &["T1046", "T1210"],
            },
            Self::SuspiciousSmbClient => &KindSpec {
                rule_id: "suspicious_smb_client",
                rule_name: "SMB connection by a non-System process",
                rule_version: "1",
                category: &[IntrusionDetection, Network, Process],
                types: &[Info],
                techniques: &["T1210"],
            },
            Self::AdminShareAccess => &KindSpec {
                rule_id: "admin_share_access",
                rule_name: "Administrative share access",
                rule_version: "1",
                category: &[IntrusionDetection, Network, File],
                types: &[Info],
                techniques: &["T1021.002"],
            },
            Self::LateralMovementChain => &KindSpec {
                rule_id: "lateral_movement_chain",
                rule_name: "SMB scan followed by share access or network logon",
                rule_version: "1",
                category: &[IntrusionDetection, Network],
                types: &[Info],
                techniques: &["T1046", "T1021.002"],
            },
            Self::RemoteFileDrop => &KindSpec {
                rule_id: "remote_file_drop",
                rule_name: "File written through an administrative share",
                rule_version: "1",
                category: &[IntrusionDetection, File],
                types: &[Creation],
                techniques: &["T1021.002", "T1570"],
            },
            Self::SmbNewClient => &KindSpec {
                rule_id: "smb_new_client",
                rule_name: "Baseline: new SMB client",
                rule_version: "1",
                category: &[IntrusionDetection, Network],
                types: &[Connection],
                techniques: &["T1021.002"],
            },
            Self::SmbNewEdge => &KindSpec {
                rule_id: "smb_new_edge",
                rule_name: "Baseline: SMB client on a server it never used",
                rule_version: "1",
                category: &[IntrusionDetection, Network],
                types: &[Connection],
                techniques: &["T1021.002"],
            },
            Self::SmbOffHours => &KindSpec {
                rule_id: "smb_off_hours",
                rule_name: "Baseline: SMB outside the client's usual hours",
                rule_version: "1",
                category: &[IntrusionDetection, Network],
                types: &[Connection],
                techniques: &["T1021.002"],
            },
            // Usually a server put in service; also where an intruder
            // stages files for many hosts (T1570).
            Self::SmbNewServer => &KindSpec {
                rule_id: "smb_new_server",
                rule_name: "Baseline: new SMB server with many clients",
                rule_version: "1",
                category: &[IntrusionDetection, Network],
                types: &[Info],
                techniques: &["T1021.002", "T1570"],
            },
            // The packets hide a sweep of SMB hosts (discovery) from the
            // sensor; ATT&CK has no technique for evading a network
            // sensor with crafted headers.
            Self::SmbEvasionAttempt => &KindSpec {
                rule_id: "smb_evasion_attempt",
                rule_name: "SMB packets crafted past the sensor's parser",
                rule_version: "1",
                category: &[IntrusionDetection, Network],
                types: &[Info],
                techniques: &["T1046"],
            },
            Self::SmbAdminShare => &KindSpec {
                rule_id: "smb_admin_share",
                rule_name: "SMB on the wire: administrative share or remote-administration pipe",
                rule_version: "1",
                category: &[IntrusionDetection, Network, File],
                types: &[Access],
                techniques: &["T1021.002"],
            },
            Self::SmbFileDrop => &KindSpec {
                rule_id: "smb_file_drop",
                rule_name: "SMB on the wire: executable written to an administrative share",
                rule_version: "1",
                category: &[IntrusionDetection, Network, File],
                types: &[Creation],
                techniques: &["T1021.002", "T1570"],
            },
            Self::SmbRemoteService => &KindSpec {
                rule_id: "smb_remote_service",
                rule_name: "SMB on the wire: remote service creation or start (svcctl)",
                rule_version: "1",
                category: &[IntrusionDetection, Network, Process],
                types: &[Start],
                techniques: &["T1569.002", "T1021.002"],
            },
            Self::SmbRemoteTask => &KindSpec {
                rule_id: "smb_remote_task",
                rule_name: "SMB on the wire: remote scheduled task (atsvc, task scheduler)",
                rule_version: "1",
                category: &[IntrusionDetection, Network, Process],
                types: &[Creation],
                techniques: &["T1053.005", "T1021.002"],
            },
            Self::SmbDcsync => &KindSpec {
                rule_id: "smb_dcsync",
                rule_name: "SMB on the wire: directory replication from a non-DC (DCSync)",
                rule_version: "1",
                category: &[IntrusionDetection, Network],
                types: &[Access],
                techniques: &["T1003.006"],
            },
            // SMB1 in use is an exposure (EternalBlue's protocol), not an
            // act of an adversary: no technique.
            Self::SmbV1 => &KindSpec {
                rule_id: "smb_v1",
                rule_name: "SMB on the wire: SMB1 in use",
                rule_version: "1",
                category: &[Network],
                types: &[Info],
                techniques: &[],
            },
            Self::SmbEnum => &KindSpec {
                rule_id: "smb_enum",
                rule_name: "SMB on the wire: account, share or session enumeration burst",
                rule_version: "1",
                category: &[IntrusionDetection, Network],
                types: &[Info],
                techniques: &["T1087.002", "T1135"],
            },
            Self::SmbExploit => &KindSpec {
                rule_id: "smb_exploit",
                rule_name: "SMB on the wire: MS17-010 exploit or DoublePulsar implant (SMB1)",
                rule_version: "1",
                category: &[IntrusionDetection, Network],
                types: &[Info],
                techniques: &["T1210"],
            },
            Self::SmbCoercion => &KindSpec {
                rule_id: "smb_coercion",
                rule_name: "SMB on the wire: authentication coercion (PetitPotam, DFSCoerce, ShadowCoerce, printer bug)",
                rule_version: "1",
                category: &[IntrusionDetection, Network, Authentication],
                types: &[Info],
                techniques: &["T1187"],
            },
            Self::SmbRegistryDump => &KindSpec {
                rule_id: "smb_registry_dump",
                rule_name: "SMB on the wire: registry hive saved by a remote client (winreg BaseRegSaveKey)",
                rule_version: "1",
                category: &[IntrusionDetection, Network],
                types: &[Access],
                techniques: &["T1003.002", "T1003.004"],
            },
            Self::SmbwatchDegraded => &KindSpec {
                rule_id: "smbwatch_degraded",
                rule_name: "smbwatch degraded: events shed under load",
                rule_version: "1",
                category: &[Host],
                types: &[Error],
                techniques: &[],
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_a_unique_rule_id_and_known_techniques() {
        let mut ids: Vec<_> = AlertKind::ALL.iter().map(|k| k.spec().rule_id).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), AlertKind::ALL.len());
        for k in AlertKind::ALL {
            let s = k.spec();
            // The serde name (`Alert`'s own JSON) is the rule id.
            assert_eq!(serde_json::to_value(k).unwrap(), s.rule_id);
            assert!(!s.category.is_empty() && !s.types.is_empty(), "{k:?}");
            for t in s.techniques {
                assert!(super::super::attack::technique(t).is_some(), "{k:?}: {t}");
            }
        }
    }
}
