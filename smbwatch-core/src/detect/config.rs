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
    /// Distinct destinations within `window` that make a source a scanner
    /// (the shortest fan-out scale).
    pub fanout_threshold: u32,
    /// Sliding window of the fan-out count (at least `response_timeout`).
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// Longer fan-out scales (at most three, windows longer than `window`
    /// and increasing): slow sweeps, answered or not.
    pub fanout_scales: Vec<FanoutScale>,
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
    /// Fan-out and TRW per source prefix (`[detect.prefix]`).
    pub prefix: PrefixConfig,
    /// `smb_evasion_attempt`: unparsed packets (headers past the kernel's
    /// bound) from one source to this many destinations within
    /// `evasion_window`. 0 disables the rule.
    pub evasion_destinations: u32,
    /// Window of the evasion rule.
    #[serde(with = "humantime_serde")]
    pub evasion_window: Duration,
}

/// One longer fan-out scale (`[[detect.fanout_scales]]`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FanoutScale {
    /// Sliding window of this scale.
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// Distinct destinations within `window` that alert.
    pub threshold: u32,
}

/// Aggregation per source prefix: the `[detect.prefix]` section.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PrefixConfig {
    /// IPv4 prefix length (0: no aggregation for IPv4).
    pub ipv4: u8,
    /// IPv6 prefix length (0: no aggregation for IPv6).
    pub ipv6: u8,
    /// Prefixes never aggregated (their addresses are still judged one by
    /// one): a NAT pool, a busy client network.
    pub allow: Vec<IpNet>,
    /// Most prefixes tracked at once (evicted like sources).
    pub max_prefixes: usize,
    /// Most (prefix, destination) pairs tracked.
    pub max_pairs: usize,
    /// A prefix alerts only when at least this many of its addresses took
    /// part (one address alone raises its own alert).
    pub min_members: u32,
}

impl Default for PrefixConfig {
    fn default() -> Self {
        Self {
            ipv4: 24,
            ipv6: 64,
            allow: Vec::new(),
            max_prefixes: 16_384,
            max_pairs: 65_536,
            min_members: 2,
        }
    }
}

impl PrefixConfig {
    /// Whether any family is aggregated.
    pub fn enabled(&self) -> bool {
        self.ipv4 > 0 || self.ipv6 > 0
    }
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
    /// Longer fan-out scales for sources in `cidr` (default: `[detect]
    /// fanout_scales`; `[]` for none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fanout_scales: Option<Vec<FanoutScale>>,
}

impl DetectConfig {
    /// Most bytes the detector's state holds with these caps (sources,
    /// pairs, their indexes and free lists, the recent-sources filter);
    /// see docs/detection.md for the per-entry sizes.
    pub fn memory_bound(&self) -> usize {
        let table = |sources: usize, pairs: usize| {
            let (sources, pairs) = (sources.max(1), pairs.max(1));
            Table::bytes_at(sources, pairs) + Recent::bytes_for(sources)
        };
        let mut bytes = table(self.max_sources, self.max_pairs);
        if self.prefix.enabled() {
            bytes += table(self.prefix.max_prefixes, self.prefix.max_pairs)
                + self.prefix.max_prefixes.max(1) * std::mem::size_of::<super::prefix::Members>();
        }
        if self.evasion_destinations > 0 {
            bytes += table(super::evasion::SOURCES, super::evasion::PAIRS);
        }
        bytes
    }
}

impl DetectConfig {
    /// Keeps only the default longer scales that fit above `window`: a
    /// configuration that sets `window` to 10 min or more (in the file or
    /// with `--window`) and no scales of its own keeps the longer defaults,
    /// since a file valid before the scales existed must stay valid. Scales
    /// given explicitly (anything but the defaults) are left as they are,
    /// for validation to judge.
    pub fn fit_default_scales(&mut self) {
        if self.fanout_scales == Self::default().fanout_scales {
            let base = self.window;
            self.fanout_scales.retain(|s| s.window > base);
        }
    }
}

impl Default for DetectConfig {
    fn default() -> Self {
        Self {
            fanout_threshold: 20,
            window: Duration::from_secs(60),
            fanout_scales: vec![
                FanoutScale {
                    window: Duration::from_secs(600),
                    threshold: 100,
                },
                FanoutScale {
                    window: Duration::from_secs(3600),
                    threshold: 300,
                },
            ],
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
            prefix: PrefixConfig::default(),
            evasion_destinations: 3,
            evasion_window: Duration::from_secs(600),
        }
    }
}
