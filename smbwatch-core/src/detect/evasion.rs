//! `smb_evasion_attempt`: a source whose packets the kernel could not
//! parse (an IPv6 extension chain or VLAN stack past its bound: the
//! `unparsed` events) reached several destinations within a window.
//!
//! One packet like that may be a broken stack; the same source sending
//! them to `evasion_destinations` hosts is hiding a sweep from the parser.
//! A third [`Detector`] counts it: its contacts are the unparsed events,
//! its one scale `evasion_destinations` within `evasion_window`, no TRW
//! (these packets get no answer the kernel can match). Its tables are
//! small and bounded like the others ([`SOURCES`], [`PAIRS`]), with the
//! same eviction by fan-out class, so a flood of unparsed packets from
//! spoofed sources cannot evict a source that reached several hosts.

use super::{DetectConfig, Detector, Mode};
use crate::event::{GatewayEvent, GatewayEventKind};

/// Sources tracked by the evasion rule.
pub const SOURCES: usize = 4096;
/// (source, destination) pairs tracked by the evasion rule.
pub const PAIRS: usize = 16_384;
/// Destinations kept per source (a count saturates here).
const PER_SOURCE: usize = 64;

/// The evasion rule's settings, from `[detect]`; `None` when disabled.
pub(super) fn detector(cfg: &DetectConfig) -> Option<Detector> {
    (cfg.evasion_destinations > 0).then(|| Detector::with_mode(config(cfg), Mode::Evasion))
}

/// The inner detector's configuration.
pub(super) fn config(cfg: &DetectConfig) -> DetectConfig {
    DetectConfig {
        fanout_threshold: cfg.evasion_destinations,
        window: cfg.evasion_window,
        fanout_scales: Vec::new(),
        subnet: Vec::new(),
        max_sources: SOURCES,
        max_pairs: PAIRS,
        max_destinations_per_source: PER_SOURCE,
        ..cfg.clone()
    }
}

/// An unparsed packet as a contact of the evasion detector.
pub(super) fn contact(ev: &GatewayEvent) -> GatewayEvent {
    GatewayEvent {
        kind: GatewayEventKind::NewPair,
        kernel_fanout: None,
        ..ev.clone()
    }
}
