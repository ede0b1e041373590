//! `smbwatch.*`: what ECS has no field for (the share, the scan evidence,
//! the processes seen for the source, the process class).

use std::net::IpAddr;

use serde::Serialize;

#[cfg(doc)]
use super::Timestamp;
use super::{Empty, Process};
use crate::alert::ScanEvidence;

/// `smbwatch.*`.
#[derive(Debug, Default, Serialize)]
pub struct Smbwatch<'a> {
    /// Share name (share-access alerts).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub share: Option<&'a str>,
    /// Scan evidence (scan alerts).
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub scan: Option<Scan>,
    /// Processes seen for the source (correlated scan alerts).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub processes: Vec<Process<'a>>,
    /// The process class of `process.name` (`script_interpreter`,
    /// `lolbin`, `office`, `browser`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub process_class: Option<&'static str>,
    /// The alert's own time when `@timestamp` had to be clamped (see
    /// [`Timestamp`]), as chrono writes it (`+10000-01-01T00:00:00Z`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub original_timestamp: Option<String>,
}

/// Scan evidence, under `smbwatch.*` (its time span is `event.start` and
/// `event.end`).
#[derive(Debug, Serialize)]
pub struct Scan {
    /// Distinct destinations in the window.
    pub distinct_destinations: usize,
    /// The destinations (capped, first seen first).
    pub destinations: Vec<IpAddr>,
    /// SYNs (new pairs) in the window.
    pub syns: u64,
    /// SYNs that came as first IP fragments (left out when none).
    #[serde(skip_serializing_if = "is_zero")]
    pub fragmented_syns: u64,
    /// Pairs answered with SYN-ACK.
    pub accepted: u64,
    /// Pairs refused or unanswered.
    pub refused: u64,
    /// Window length in seconds.
    pub window_secs: u64,
    /// Fan-out alerts: the time scale that fired (its window, `10m`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scale: Option<String>,
    /// Prefix alerts: the source prefix.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// Prefix alerts: member addresses that took part (at least).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prefix_members: Option<u32>,
    /// Prefix alerts: the most active members.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub prefix_top_members: Vec<IpAddr>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl From<&ScanEvidence> for Scan {
    fn from(ev: &ScanEvidence) -> Self {
        Self {
            distinct_destinations: ev.distinct_destinations,
            destinations: ev.destinations.clone(),
            syns: ev.syns,
            fragmented_syns: ev.fragmented_syns,
            accepted: ev.accepted,
            refused: ev.refused,
            window_secs: ev.window_secs,
            scale: ev.scale.clone(),
            prefix: ev.prefix.as_ref().map(|p| p.prefix.to_string()),
            prefix_members: ev.prefix.as_ref().map(|p| p.members),
            prefix_top_members: ev
                .prefix
                .as_ref()
                .map(|p| p.top_members.clone())
                .unwrap_or_default(),
        }
    }
}

impl Empty for Smbwatch<'_> {
    fn is_empty(&self) -> bool {
        self.share.is_none()
            && self.scan.is_none()
            && self.processes.is_empty()
            && self.process_class.is_none()
            && self.original_timestamp.is_none()
    }
}
