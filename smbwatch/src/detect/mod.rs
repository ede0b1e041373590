//! Scan detection: gateway events in, scan alerts out.
//!
//! Pure logic: no I/O, no clock. Time is taken from the events
//! ([`GatewayEvent::ts`]) and from [`Detector::advance`], so the same event
//! sequence always gives the same alerts (replay and tests are exact).
//!
//! Two detectors share one per-source state table:
//! - fan-out: distinct destinations per source on monitored ports within a
//!   sliding window ([`AlertKind::SmbScanFanout`]);
//! - Threshold Random Walk (Jung, Paxson, Berger, Balakrishnan 2004) on pair
//!   outcomes ([`AlertKind::SmbScanTrw`]).
//!
//! See `docs/detection.md` for the defaults and why.

use std::net::IpAddr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::alert::Alert;
use crate::event::GatewayEvent;

mod community_id;

pub use community_id::{community_id_v1, PROTO_TCP};

/// Detector settings: the `[detect]` section of the configuration file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DetectConfig {
    /// Distinct destinations within `window` that make a source a scanner.
    pub fanout_threshold: u32,
    /// Sliding window of the fan-out count.
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
    /// Most sources tracked at once (least recently active evicted first).
    pub max_sources: usize,
    /// Most destinations tracked per source within its window.
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

/// Counters describing the detector's state and work.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct DetectStats {
    /// Events observed.
    pub events: u64,
    /// Sources tracked now.
    pub tracked_sources: usize,
    /// (source, destination) pairs tracked now.
    pub tracked_pairs: usize,
    /// Pairs still waiting for an answer.
    pub pending_pairs: usize,
    /// Sources evicted because `max_sources` or `max_pairs` was reached.
    pub source_evictions: u64,
    /// Destinations dropped because a source reached `max_destinations_per_source`.
    pub destination_evictions: u64,
    /// Times a cap was reached (after usage had fallen below half of it).
    pub cap_hits: u64,
    /// Events from allowlisted sources (ignored).
    pub allowlisted: u64,
    /// Alerts raised.
    pub alerts: u64,
    /// Alerts held back by `hold_down`.
    pub suppressed: u64,
}

/// Which capacity limit was reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Cap {
    /// `max_sources`.
    Sources,
    /// `max_pairs`.
    Pairs,
    /// `max_destinations_per_source`.
    DestinationsPerSource,
}

/// A capacity limit was reached: state is being evicted from here on.
/// Returned once per episode by [`Detector::take_cap_notice`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct CapNotice {
    /// Event time when the cap was reached.
    pub ts: DateTime<Utc>,
    /// Which cap.
    pub cap: Cap,
    /// Its configured value.
    pub limit: usize,
    /// The source that pushed it over (the scanner, for the per-source cap).
    pub source: IpAddr,
}

/// The scan detector. Feed it every gateway event in time order.
pub struct Detector {
    cfg: DetectConfig,
    stats: DetectStats,
}

impl Detector {
    /// A detector with `cfg`. The configuration is assumed validated
    /// (see [`crate::config::Config::validate`]).
    pub fn new(cfg: DetectConfig) -> Self {
        Self {
            cfg,
            stats: DetectStats::default(),
        }
    }

    /// The configuration in use.
    pub fn config(&self) -> &DetectConfig {
        &self.cfg
    }

    /// Process one event; returns the alerts it raised (usually none).
    pub fn observe(&mut self, ev: &GatewayEvent) -> Vec<Alert> {
        let _ = ev;
        self.stats.events += 1;
        Vec::new()
    }

    /// Advance time to `now` without an event: pairs left unanswered for
    /// `response_timeout` become TRW failures. Call it periodically (e.g.
    /// every second) when events are sparse.
    pub fn advance(&mut self, now: DateTime<Utc>) -> Vec<Alert> {
        let _ = now;
        Vec::new()
    }

    /// Current counters.
    pub fn stats(&self) -> DetectStats {
        self.stats
    }

    /// The first time a cap is reached (and again after usage fell below
    /// half of it), a notice to log; `None` otherwise.
    pub fn take_cap_notice(&mut self) -> Option<CapNotice> {
        None
    }
}
