//! What the detector tells about itself: its counters and the notices of
//! a capacity limit reached.

use std::net::IpAddr;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::CLASSES;

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
    /// Bytes held by the state now (at most [`DetectConfig::memory_bound`]).
    pub memory_bytes: usize,
    /// Sources evicted because `max_sources` or `max_pairs` was reached.
    pub source_evictions: u64,
    /// The same by fan-out class of the evicted source: 1 destination,
    /// 2–3, 4–7, 8–15, 16–31, 32 or more.
    pub source_evictions_by_class: [u64; CLASSES],
    /// New records of evicted sources that came back to another destination
    /// (admitted in the 2–3 class instead of probation).
    pub recalled_sources: u64,
    /// Pairs counted accepted then refused (RST after the SYN-ACK): made failures.
    pub accepted_then_refused: u64,
    /// New sources the kernel already tracked (their earlier pair's event
    /// shed or their record flushed): one destination counted unseen.
    pub unseen_destinations: u64,
    /// Destinations dropped because a source reached
    /// `max_destinations_per_source` (or was the only source left at `max_pairs`).
    pub destination_evictions: u64,
    /// Inserts that found a cap full (each caused an eviction).
    pub cap_hits: u64,
    /// Sources forgotten after being idle for their window and the hold-down.
    pub idle_expired: u64,
    /// Events from allowlisted sources (ignored).
    pub allowlisted: u64,
    /// Answers for pairs not tracked (evicted, or older than the detector).
    pub unmatched_responses: u64,
    /// Alerts raised.
    pub alerts: u64,
    /// Alerts held back (TRW's `hold_down`; a fan-out scale crossing while
    /// a longer scale's alert holds).
    pub suppressed: u64,
    /// Prefix alerts raised (included in `alerts`).
    pub prefix_alerts: u64,
    /// Prefixes tracked now.
    pub tracked_prefixes: usize,
    /// Prefixes evicted by `detect.prefix.max_prefixes` / `max_pairs`.
    pub prefix_evictions: u64,
    /// Unparsed events (packets the kernel could not walk to TCP).
    pub unparsed: u64,
    /// `smb_evasion_attempt` alerts raised (included in `alerts`).
    pub evasion_alerts: u64,
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

impl Cap {
    /// The configuration key of this cap.
    pub fn key(self) -> &'static str {
        match self {
            Self::Sources => "detect.max_sources",
            Self::Pairs => "detect.max_pairs",
            Self::DestinationsPerSource => "detect.max_destinations_per_source",
        }
    }
}

/// A capacity limit was reached: state is being evicted from here on.
///
/// [`Detector::take_cap_notice`] returns one per episode: for `Sources` and
/// `Pairs`, again only after usage fell below half the cap; for
/// `DestinationsPerSource`, once per source (while it is tracked).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct CapNotice {
    /// Event time when the cap was reached.
    pub ts: DateTime<Utc>,
    /// Which cap.
    pub cap: Cap,
    /// Its configured value.
    pub limit: usize,
    /// The source whose event found the cap full.
    pub source: IpAddr,
}
