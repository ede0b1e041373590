//! Prefix aggregation: fan-out and TRW per source prefix (default /24 for
//! IPv4, /64 for IPv6), so 25 addresses of one /24 sweeping together, or
//! one holder of a /64 probing from 250 of its 2^64 addresses, are one
//! scanner.
//!
//! A second [`Detector`] does it: its "sources" are prefixes (their
//! network address), fed every event of every address in them. It has the
//! same rules, scales, suppression and byte bounds, and the same eviction
//! by fan-out class: a spoofed flood spread over many prefixes puts each
//! prefix in probation (one destination) where they evict each other,
//! never a prefix that reached many destinations. Per prefix it also keeps
//! [`Members`]: how many addresses took part and the most active few.

use std::net::IpAddr;

use ipnet::IpNet;

use super::table::Key;
use super::{key_addr, DetectConfig, Detector};
use crate::event::GatewayEvent;

/// Most active members listed per prefix (and in its alerts).
pub const TOP_MEMBERS: usize = 4;

/// The addresses of one prefix that took part.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Members {
    /// Addresses the per-address table started tracking while this prefix
    /// was tracked (an address evicted there and back counts twice).
    pub admitted: u32,
    /// The most active members and their contacts (space-saving: when
    /// full, a new member replaces the least active and inherits its count
    /// plus one, so a member that is really among the top few stays).
    pub top: [(Key, u32); TOP_MEMBERS],
}

impl Members {
    /// One contact (or answer) of `member`; `new` when the per-address
    /// table just started tracking it.
    pub fn add(&mut self, member: &Key, new: bool) {
        if new {
            self.admitted = self.admitted.saturating_add(1);
        }
        if let Some(e) = self.top.iter_mut().find(|e| e.1 > 0 && e.0 == *member) {
            e.1 = e.1.saturating_add(1);
            return;
        }
        let min = self
            .top
            .iter_mut()
            .min_by_key(|e| e.1)
            .expect("TOP_MEMBERS > 0");
        *min = (*member, min.1.saturating_add(1));
    }

    /// Members that took part: at least the admitted ones and those listed.
    pub fn count(&self) -> u32 {
        let listed = self.top.iter().filter(|e| e.1 > 0).count() as u32;
        self.admitted.max(listed)
    }

    /// The listed members, most active first.
    pub fn top(&self) -> Vec<IpAddr> {
        let mut top: Vec<(Key, u32)> = self.top.iter().copied().filter(|e| e.1 > 0).collect();
        top.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        top.iter().map(|e| key_addr(&e.0)).collect()
    }
}

/// Prefix lengths and the aggregating detector.
pub(super) struct Prefixes {
    v4: u8,
    v6: u8,
    pub inner: Detector,
}

impl Prefixes {
    /// The aggregation `cfg.prefix` asks for; `None` when both lengths are 0.
    pub fn new(cfg: &DetectConfig) -> Option<Self> {
        let p = &cfg.prefix;
        if p.ipv4 == 0 && p.ipv6 == 0 {
            return None;
        }
        Some(Self {
            v4: p.ipv4,
            v6: p.ipv6,
            inner: Detector::with_mode(inner_config(cfg), super::Mode::Prefix),
        })
    }

    /// New settings (a reload), keeping the prefixes' state.
    pub fn reconfigure(&mut self, cfg: &DetectConfig) {
        self.v4 = cfg.prefix.ipv4;
        self.v6 = cfg.prefix.ipv6;
        self.inner.reconfigure(inner_config(cfg));
    }

    /// The prefix of `ip`, if its family is aggregated.
    pub fn prefix_of(&self, ip: IpAddr) -> Option<IpNet> {
        prefix_of(ip, self.v4, self.v6)
    }

    /// `ev` as an event of its source's prefix.
    pub fn event(&self, ev: &GatewayEvent) -> Option<GatewayEvent> {
        let net = self.prefix_of(ev.src.to_canonical())?;
        Some(GatewayEvent {
            src: net.network(),
            // The kernel's estimate is the address's, not the prefix's.
            kernel_fanout: None,
            ..ev.clone()
        })
    }
}

/// `ip`'s prefix of length `v4` or `v6` (0: none).
pub(super) fn prefix_of(ip: IpAddr, v4: u8, v6: u8) -> Option<IpNet> {
    match ip {
        IpAddr::V4(a) if v4 > 0 => ipnet::Ipv4Net::new(a, v4)
            .ok()
            .map(|n| IpNet::V4(n.trunc())),
        IpAddr::V6(a) if v6 > 0 => ipnet::Ipv6Net::new(a, v6)
            .ok()
            .map(|n| IpNet::V6(n.trunc())),
        _ => None,
    }
}

/// The aggregating detector's settings: the same rules, the prefix
/// table's caps and allowlist (its mode keeps it from aggregating again).
fn inner_config(cfg: &DetectConfig) -> DetectConfig {
    let p = &cfg.prefix;
    DetectConfig {
        max_sources: p.max_prefixes,
        max_pairs: p.max_pairs,
        max_destinations_per_source: cfg.max_destinations_per_source.min(p.max_pairs),
        allow: p.allow.clone(),
        ..cfg.clone()
    }
}
