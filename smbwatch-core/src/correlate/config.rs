//! The correlator's settings (`[correlate]`).

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Correlation settings (`[correlate]`; every key optional).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CorrelateConfig {
    /// Tolerated difference between the gateway's and the hosts' clocks.
    #[serde(with = "humantime_serde")]
    pub clock_skew: Duration,
    /// How long after a scan alert share access or a network logon on a
    /// target counts as the next step of the same intrusion.
    #[serde(with = "humantime_serde")]
    pub chain_window: Duration,
    /// How long (by the reference clock) a gateway pair or host connection
    /// waits for its counterpart: covers forwarder delay.
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
    /// Most gateway pairs kept.
    pub max_pairs: usize,
    /// Most host network events kept.
    pub max_host_events: usize,
    /// Most share-access/logon events kept for chains (and most file
    /// drops remembered for their dedup).
    pub max_chain_events: usize,
    /// Most scan alerts kept for chains.
    pub max_scan_sources: usize,
    /// Most processes listed on a scan alert.
    pub max_processes_listed: usize,
    /// Most process-creation entries kept (4688, Sysmon 1; a record with
    /// both a GUID and a pid takes two).
    pub max_processes: usize,
    /// How long (by the reference clock) a process creation is kept: a
    /// process that opens SMB later than this after its creation gets no
    /// command line.
    #[serde(with = "humantime_serde")]
    pub process_retention: Duration,
    /// Bytes held by all the tables together (strings included); past it
    /// the oldest entries of the largest table go.
    pub max_bytes: usize,
}

impl Default for CorrelateConfig {
    fn default() -> Self {
        Self {
            clock_skew: Duration::from_secs(5),
            chain_window: Duration::from_secs(15 * 60),
            retention: Duration::from_secs(120),
            max_pairs: 65_536,
            max_host_events: 65_536,
            max_chain_events: 16_384,
            max_scan_sources: 4_096,
            max_processes_listed: 16,
            max_processes: 65_536,
            process_retention: Duration::from_secs(24 * 60 * 60),
            max_bytes: 64 << 20,
        }
    }
}
