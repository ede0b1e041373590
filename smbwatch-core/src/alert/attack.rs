//! The MITRE ATT&CK techniques and tactics alerts name: ids, names and
//! references, so `threat.*` carries what ATT&CK views in a SIEM group by.
//!
//! A technique id used by an alert kind (see [`super::kinds`]) must be
//! listed here; a unit test checks every kind's ids resolve.

/// An ATT&CK tactic (the adversary's goal).
#[derive(Debug, PartialEq, Eq)]
pub struct Tactic {
    /// `TA0008`.
    pub id: &'static str,
    /// `Lateral Movement`.
    pub name: &'static str,
    /// `https://attack.mitre.org/tactics/TA0008/` (a test checks it
    /// against the id).
    pub reference: &'static str,
}

/// TA0007.
pub const DISCOVERY: Tactic = Tactic {
    id: "TA0007",
    name: "Discovery",
    reference: "https://attack.mitre.org/tactics/TA0007/",
};
/// TA0008.
pub const LATERAL_MOVEMENT: Tactic = Tactic {
    id: "TA0008",
    name: "Lateral Movement",
    reference: "https://attack.mitre.org/tactics/TA0008/",
};
/// TA0002.
pub const EXECUTION: Tactic = Tactic {
    id: "TA0002",
    name: "Execution",
    reference: "https://attack.mitre.org/tactics/TA0002/",
};

/// TA0006.
pub const CREDENTIAL_ACCESS: Tactic = Tactic {
    id: "TA0006",
    name: "Credential Access",
    reference: "https://attack.mitre.org/tactics/TA0006/",
};
/// TA0003.
pub const PERSISTENCE: Tactic = Tactic {
    id: "TA0003",
    name: "Persistence",
    reference: "https://attack.mitre.org/tactics/TA0003/",
};

/// An ATT&CK technique or sub-technique (`T1021.002`).
#[derive(Debug, PartialEq, Eq)]
pub struct Technique {
    /// `T1021` or `T1021.002`.
    pub id: &'static str,
    /// Name as ATT&CK gives it.
    pub name: &'static str,
    /// `https://attack.mitre.org/techniques/T1021/002/` (a test checks it
    /// against the id).
    pub reference: &'static str,
    /// The tactics it serves.
    pub tactics: &'static [Tactic],
}

impl Technique {
    /// True for a sub-technique (`T1021.002`).
    pub fn is_sub(&self) -> bool {
        self.id.contains('.')
    }

    /// The parent technique of a sub-technique (itself otherwise).
    pub fn parent(&self) -> &'static Technique {
        let parent = self.id.split('.').next().unwrap_or(self.id);
        technique(parent).expect("every sub-technique's parent is listed")
    }
}

/// Every technique smbwatch names (ATT&CK Enterprise).
pub const TECHNIQUES: &[Technique] = &[
    Technique {
        id: "T1046",
        name: "Network Service Discovery",
        reference: "https://attack.mitre.org/techniques/T1046/",
        tactics: &[DISCOVERY],
    },
    Technique {
        id: "T1135",
        name: "Network Share Discovery",
        reference: "https://attack.mitre.org/techniques/T1135/",
        tactics: &[DISCOVERY],
    },
    Technique {
        id: "T1210",
        name: "Exploitation of Remote Services",
        reference: "https://attack.mitre.org/techniques/T1210/",
        tactics: &[LATERAL_MOVEMENT],
    },
    Technique {
        id: "T1021",
        name: "Remote Services",
        reference: "https://attack.mitre.org/techniques/T1021/",
        tactics: &[LATERAL_MOVEMENT],
    },
    Technique {
        id: "T1021.002",
        name: "SMB/Windows Admin Shares",
        reference: "https://attack.mitre.org/techniques/T1021/002/",
        tactics: &[LATERAL_MOVEMENT],
    },
    Technique {
        id: "T1570",
        name: "Lateral Tool Transfer",
        reference: "https://attack.mitre.org/techniques/T1570/",
        tactics: &[LATERAL_MOVEMENT],
    },
    Technique {
        id: "T1569",
        name: "System Services",
        reference: "https://attack.mitre.org/techniques/T1569/",
        tactics: &[EXECUTION],
    },
    Technique {
        id: "T1569.002",
        name: "Service Execution",
        reference: "https://attack.mitre.org/techniques/T1569/002/",
        tactics: &[EXECUTION],
    },
    Technique {
        id: "T1053",
        name: "Scheduled Task/Job",
        reference: "https://attack.mitre.org/techniques/T1053/",
        tactics: &[EXECUTION, PERSISTENCE],
    },
    Technique {
        id: "T1053.005",
        name: "Scheduled Task",
        reference: "https://attack.mitre.org/techniques/T1053/005/",
        tactics: &[EXECUTION, PERSISTENCE],
    },
    Technique {
        id: "T1003",
        name: "OS Credential Dumping",
        reference: "https://attack.mitre.org/techniques/T1003/",
        tactics: &[CREDENTIAL_ACCESS],
    },
    Technique {
        id: "T1003.002",
        name: "Security Account Manager",
        reference: "https://attack.mitre.org/techniques/T1003/002/",
        tactics: &[CREDENTIAL_ACCESS],
    },
    Technique {
        id: "T1003.004",
        name: "LSA Secrets",
        reference: "https://attack.mitre.org/techniques/T1003/004/",
        tactics: &[CREDENTIAL_ACCESS],
    },
    Technique {
        id: "T1187",
        name: "Forced Authentication",
        reference: "https://attack.mitre.org/techniques/T1187/",
        tactics: &[CREDENTIAL_ACCESS],
    },
    Technique {
        id: "T1003.006",
        name: "DCSync",
        reference: "https://attack.mitre.org/techniques/T1003/006/",
        tactics: &[CREDENTIAL_ACCESS],
    },
    Technique {
        id: "T1087",
        name: "Account Discovery",
        reference: "https://attack.mitre.org/techniques/T1087/",
        tactics: &[DISCOVERY],
    },
    Technique {
        id: "T1087.002",
        name: "Domain Account",
        reference: "https://attack.mitre.org/techniques/T1087/002/",
        tactics: &[DISCOVERY],
    },
];

/// The technique with this id, if listed.
pub fn technique(id: &str) -> Option<&'static Technique> {
    TECHNIQUES.iter().find(|t| t.id == id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sub_techniques_have_listed_parents_and_references() {
        for t in TECHNIQUES {
            assert!(!t.parent().is_sub(), "{}", t.id);
            assert!(!t.tactics.is_empty(), "{}", t.id);
            assert_eq!(
                t.reference,
                format!(
                    "https://attack.mitre.org/techniques/{}/",
                    t.id.replace('.', "/")
                )
            );
            for ta in t.tactics {
                assert_eq!(
                    ta.reference,
                    format!("https://attack.mitre.org/tactics/{}/", ta.id)
                );
            }
        }
        let smb = technique("T1021.002").unwrap();
        assert!(smb.is_sub());
        assert_eq!(smb.parent().id, "T1021");
        assert_eq!(
            smb.reference,
            "https://attack.mitre.org/techniques/T1021/002/"
        );
        assert!(technique("T9999").is_none());
    }
}
