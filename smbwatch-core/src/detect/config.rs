//! The detector's settings: the `[detect]` section of the configuration file.

use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::recent::Recent;
use super::table::Table;

/// Detector settings: the `[detect]` section of the configuration file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DetectConfig {
    /// Distinct destinations within `window` that make a source a scanner.
    pub fanout_threshold: u32,
    /// Sliding window of the fan-out count (at least `response_timeout`).
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// A pair with no SYN-ACK or RST within this time is a failed probe.
    #[serde(with = "humantime_serde")]
    pub response_timeout: Duration,
    /// TRW θ0: probability that a benign source's first contact succeeds.
    pub trw_theta0: f64,
    /// TRW θ1: probability that a scanner's first contact succeeds.
    pub trw_theta1: f64,
    /// TRW P_D: desired detection probability.
    pub trw_pd: f64,
    /// TRW P_F: tolerated false-positive probability.
    pub trw_pf: f64,
    /// After an alert, further alerts for the source are held back this long
    /// unless the fan-out doubles or another alert kind fires.
    #[serde(with = "humantime_serde")]
    pub hold_down: Duration,
    /// Most sources tracked at once. When full, the least recently active
    /// source of the lowest fan-out class is evicted (see docs/detection.md).
    pub max_sources: usize,
    /// Most destinations tracked per source within its window; the count
    /// saturates here (the oldest destination is dropped).
    pub max_destinations_per_source: usize,
    /// Most (source, destination) pairs tracked across all sources.
    pub max_pairs: usize,
    /// Most destinations listed in an alert's evidence.
    pub max_destinations_listed: usize,
    /// Sources never tracked or alerted on (backup servers, scanners you run).
    pub allow: Vec<IpNet>,
    /// Per-subnet overrides; the most specific prefix containing the source wins.
    pub subnet: Vec<SubnetOverride>,
}

/// Threshold override for sources inside one prefix (`[[detect.subnet]]`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubnetOverride {
    /// Source prefix this override applies to.
    pub cidr: IpNet,
    /// Fan-out threshold for sources in `cidr`.
    pub fanout_threshold: u32,
    /// Fan-out window for sources in `cidr` (default: `[detect] window`).
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub window: Option<Duration>,
}

impl DetectConfig {
    /// Most bytes the detector's state holds with these caps (sources,
    /// pairs, their indexes and free lists, the recent-sources filter);
    /// see docs/detection.md for the per-entry sizes.
    pub fn memory_bound(&self) -> usize {
        let (sources, pairs) = (self.max_sources.max(1), self.max_pairs.max(1));
        Table::bytes_at(sources, pairs) + Recent::bytes_for(sources)
    }
}

impl Default for DetectConfig {
    fn default() -> Self {
        Self {
            fanout_threshold: 20,
            window: Duration::from_secs(60),
            response_timeout: Duration::from_secs(3),
            trw_theta0: 0.8,
            trw_theta1: 0.2,
            trw_pd: 0.99,
            trw_pf: 0.01,
            hold_down: Duration::from_secs(600),
            max_sources: 100_000,
            max_destinations_per_source: 4096,
            max_pairs: 262_144,
            max_destinations_listed: 50,
            allow: Vec::new(),
            subnet: Vec::new(),
        }
    }
}
