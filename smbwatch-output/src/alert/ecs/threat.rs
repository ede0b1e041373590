//! `threat.*`: the alert's ATT&CK techniques with their names, references
//! and tactics, resolved from [`crate::alert::attack`].

use serde::Serialize;

use super::{empty, Empty};
use crate::alert::attack::{self, Tactic, Technique};

/// `threat.framework` when there are techniques.
pub const THREAT_FRAMEWORK: &str = "MITRE ATT&CK";

/// Parallel arrays `id`, `name`, `reference`, as ECS lays out `threat.*`
/// lists (element i of each describes the same item).
#[derive(Debug, Default, Serialize)]
pub struct Refs {
    /// Ids.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub id: Vec<&'static str>,
    /// Names.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub name: Vec<&'static str>,
    /// URLs.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub reference: Vec<&'static str>,
}

impl Refs {
    fn push(&mut self, id: &'static str, name: &'static str, reference: &'static str) {
        if !self.id.contains(&id) {
            self.id.push(id);
            self.name.push(name);
            self.reference.push(reference);
        }
    }

    fn push_technique(&mut self, t: &'static Technique) {
        self.push(t.id, t.name, t.reference);
    }

    fn push_tactic(&mut self, t: &'static Tactic) {
        self.push(t.id, t.name, t.reference);
    }
}

/// `threat.technique.*`: parent techniques, sub-techniques beneath.
#[derive(Debug, Default, Serialize)]
pub struct Techniques {
    /// `threat.technique.id/name/reference` (`T1021`).
    #[serde(flatten)]
    pub refs: Refs,
    /// `threat.technique.subtechnique.*` (`T1021.002`).
    #[serde(skip_serializing_if = "empty")]
    pub subtechnique: Refs,
}

/// `threat.*`.
#[derive(Debug, Default, Serialize)]
pub struct Threat {
    /// [`THREAT_FRAMEWORK`] when there are techniques.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub framework: Option<&'static str>,
    /// `threat.tactic.*`.
    #[serde(skip_serializing_if = "empty")]
    pub tactic: Refs,
    /// `threat.technique.*`.
    #[serde(skip_serializing_if = "empty")]
    pub technique: Techniques,
}

impl Empty for Refs {
    fn is_empty(&self) -> bool {
        self.id.is_empty() && self.name.is_empty() && self.reference.is_empty()
    }
}

impl Empty for Techniques {
    fn is_empty(&self) -> bool {
        self.refs.is_empty() && self.subtechnique.is_empty()
    }
}

impl Empty for Threat {
    fn is_empty(&self) -> bool {
        self.framework.is_none() && self.tactic.is_empty() && self.technique.is_empty()
    }
}

impl Threat {
    /// The threat of these technique ids. A sub-technique also names its
    /// parent in `technique.*` (ECS: the parent goes there, the
    /// sub-technique beneath). Ids missing from the ATT&CK table are left
    /// out (every kind's are listed; a unit test checks).
    pub fn of(ids: &[&str]) -> Self {
        let mut t = Self::default();
        for tech in ids.iter().filter_map(|id| attack::technique(id)) {
            t.technique.refs.push_technique(tech.parent());
            if tech.is_sub() {
                t.technique.subtechnique.push_technique(tech);
            }
            for tactic in tech.tactics {
                t.tactic.push_tactic(tactic);
            }
        }
        if !t.technique.refs.id.is_empty() {
            t.framework = Some(THREAT_FRAMEWORK);
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn sub_techniques_sit_under_their_parent_with_tactics() {
        let v = serde_json::to_value(Threat::of(&["T1046", "T1021.002"])).unwrap();
        assert_eq!(
            v,
            json!({
                "framework": "MITRE ATT&CK",
                "tactic": {
                    "id": ["TA0007", "TA0008"],
                    "name": ["Discovery", "Lateral Movement"],
                    "reference": [
                        "https://attack.mitre.org/tactics/TA0007/",
                        "https://attack.mitre.org/tactics/TA0008/"
                    ]
                },
                "technique": {
                    "id": ["T1046", "T1021"],
                    "name": ["Network Service Discovery", "Remote Services"],
                    "reference": [
                        "https://attack.mitre.org/techniques/T1046/",
                        "https://attack.mitre.org/techniques/T1021/"
                    ],
                    "subtechnique": {
                        "id": ["T1021.002"],
                        "name": ["SMB/Windows Admin Shares"],
                        "reference": ["https://attack.mitre.org/techniques/T1021/002/"]
                    }
                }
            })
        );
        assert_eq!(serde_json::to_value(Threat::of(&[])).unwrap(), json!({}));
    }
}
