//! Scan detection: gateway events in, scan alerts out.
//!
//! Pure logic: no I/O, no clock. Time is taken from the events
//! ([`GatewayEvent::ts`]) and from [`Detector::advance`], so the same event
//! sequence always gives the same alerts (replay and tests are exact).
//!
//! Two detectors share one per-source state table:
//! - fan-out: distinct destinations per source on monitored ports within
//!   sliding windows of several time scales ([`AlertKind::SmbScanFanout`];
//!   `scales.rs`);
//! - Threshold Random Walk (Jung, Paxson, Berger, Balakrishnan 2004) on pair
//!   outcomes ([`AlertKind::SmbScanTrw`]).
//!
//! The table is bounded in bytes by its caps and segmented by fan-out
//! class, so sources that touched one destination (a spoofed flood) evict
//! each other and never a source that touched many; a compact filter of
//! recent admissions recognises a source flushed before its second
//! destination. The same machinery, in second and third instances, judges
//! source prefixes (`prefix.rs`) and unparsed packets (`evasion.rs`,
//! [`AlertKind::SmbEvasionAttempt`]). See `docs/detection.md` for the
//! defaults and why.

use std::net::{IpAddr, Ipv6Addr};
use std::time::Duration;

use chrono::{DateTime, Utc};
use ipnet::IpNet;
use smbwatch_common::addr::from_mapped;

use crate::alert::Alert;
use crate::event::{GatewayEvent, GatewayEventKind};

mod alerting;
#[cfg(any(test, feature = "bench"))]
pub mod bench;
mod config;
mod contact;
mod evasion;
mod expiry;
/// Also the correlator's and the host rules' tables' index ([`crate::timed`]).
pub(crate) mod index;
mod prefix;
mod recent;
mod reconfigure;
mod scales;
mod stats;
mod table;
mod trw;

use crate::community_id::{community_id_v1, PROTO_TCP};
pub use config::{DetectConfig, FanoutScale, PrefixConfig, SubnetOverride};
use prefix::{Members, Prefixes};
use recent::Recent;
pub use stats::{Cap, CapNotice, DetectStats};
use table::{Key, Outcome, Table};
pub use table::{CLASSES, MAX_SCALES};
use trw::Trw;

/// What a detector's sources are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// Addresses; aggregates into the prefix and evasion detectors.
    Address,
    /// Source prefixes (their network address): members are tracked and
    /// an alert needs `prefix.min_members` of them.
    Prefix,
    /// Sources of unparsed packets: no TRW, evasion alerts.
    Evasion,
}

/// Probation (one destination) keeps at least 1/8 of `max_sources`, so a
/// new source has room to reach a second destination even when higher
/// classes fill the table.
const PROBATION_RESERVE_DIV: usize = 8;

/// Notices kept until taken; more are only counted (`cap_hits`).
const MAX_NOTICES: usize = 16;

/// The scan detector. Feed it every gateway event in time order.
///
/// Events slightly out of order (ring buffers of several CPUs) are taken at
/// the latest time seen, so state timestamps never go backwards.
pub struct Detector {
    cfg: DetectConfig,
    mode: Mode,
    timeout: i64,
    hold_down: i64,
    max_sources: usize,
    max_pairs: usize,
    max_per_source: u32,
    trw: Trw,
    /// `(prefix, rule)` (see [`table::Rule`]), most specific prefix first.
    overrides: Vec<(IpNet, u16)>,
    table: Table,
    /// Sources admitted recently, to recognise one that comes back after
    /// an eviction flushed its record.
    recent: Recent,
    /// Probation keeps at least this many sources before higher classes are evicted.
    probation_reserve: usize,

    /// Latest event time (ns); `i64::MIN` before the first.
    now: i64,
    stats: DetectStats,
    notices: Vec<CapNotice>,
    /// Whether the next hit of the sources / pairs cap is reported.
    armed: [bool; 2],
    /// Per source prefix (address detectors, unless disabled).
    prefixes: Option<Box<Prefixes>>,
    /// The evasion rule (address detectors, unless disabled).
    evasion: Option<Box<Detector>>,
    /// Prefix detectors: the members of each prefix, by slot.
    members: Vec<Members>,
    /// Prefix detectors: the address behind the current event, and whether
    /// the address detector just started tracking it.
    member: Option<(Key, bool)>,
    /// The current event's source was admitted (not tracked before).
    admitted: bool,
}

impl Detector {
    /// A detector with `cfg`. The configuration is assumed validated
    /// (see the application's `Config::validate`); degenerate caps are raised
    /// to 1 rather than panicking.
    pub fn new(cfg: DetectConfig) -> Self {
        Self::with_mode(cfg, Mode::Address)
    }

    fn with_mode(cfg: DetectConfig, mode: Mode) -> Self {
        let (overrides, rules) = scales::rules(&cfg);
        let max_sources = cfg.max_sources.max(1);
        let max_pairs = cfg.max_pairs.max(1);
        let mut table = Table::new(max_sources, max_pairs, 4096, 16384);
        table.rules = rules;
        let address = mode == Mode::Address;
        Self {
            mode,
            prefixes: address.then(|| Prefixes::new(&cfg).map(Box::new)).flatten(),
            evasion: address
                .then(|| evasion::detector(&cfg).map(Box::new))
                .flatten(),
            members: Vec::new(),
            member: None,
            admitted: false,
            timeout: nanos(cfg.response_timeout),
            hold_down: nanos(cfg.hold_down),
            max_sources,
            max_pairs,
            max_per_source: u32::try_from(cfg.max_destinations_per_source)
                .unwrap_or(u32::MAX)
                .max(1),
            trw: trw_for(&cfg, mode),
            overrides,
            // Start small; the slabs grow to the caps only if traffic needs it.
            table,
            recent: Recent::new(max_sources),
            probation_reserve: max_sources / PROBATION_RESERVE_DIV,

            now: i64::MIN,
            stats: DetectStats::default(),
            notices: Vec::new(),
            armed: [true; 2],
            cfg,
        }
    }

    /// The configuration in use.
    pub fn config(&self) -> &DetectConfig {
        &self.cfg
    }

    /// Process one event; returns the alerts it raised (usually none, and
    /// then nothing is allocated).
    pub fn observe(&mut self, ev: &GatewayEvent) -> Vec<Alert> {
        self.stats.events += 1;
        let now = self.clock(ev.ts);
        let mut alerts = Vec::new();
        self.expire_pending(now, &mut alerts);
        // Before the event: its source, if idle too long, starts afresh.
        // (After it, this would read the next eviction's record right when
        // it was prefetched, instead of one event later.)
        self.expire_idle(now);
        let src = ev.src.to_canonical();
        if self.is_allowed(src) {
            self.stats.allowlisted += 1;
            return alerts;
        }
        self.admitted = false;
        match ev.kind {
            GatewayEventKind::NewPair | GatewayEventKind::Active => {
                self.new_pair(src, ev, now, &mut alerts)
            }
            GatewayEventKind::Accepted => self.response(src, ev.dst, true, now, &mut alerts),
            GatewayEventKind::Refused => self.response(src, ev.dst, false, now, &mut alerts),
            // The handshake's completion adds nothing to scan evidence
            // (the SYN-ACK already counted as success).
            GatewayEventKind::Confirmed => return alerts,
            GatewayEventKind::Unparsed => {
                self.stats.unparsed += 1;
                if let Some(e) = self.evasion.as_mut() {
                    let found = e.observe(&evasion::contact(ev));
                    self.stats.evasion_alerts += found.len() as u64;
                    self.stats.alerts += found.len() as u64;
                    alerts.extend(found);
                }
                return alerts;
            }
        }
        if let Some(p) = self.prefixes.as_mut() {
            if let Some(pev) = p.event(ev) {
                p.inner.member = Some((addr_key(src), self.admitted));
                let found = p.inner.observe(&pev);
                p.inner.member = None;
                self.stats.prefix_alerts += found.len() as u64;
                self.stats.alerts += found.len() as u64;
                alerts.extend(found);
            }
        }
        alerts
    }

    /// Advance time to `now` without an event: pairs left unanswered for
    /// longer than `response_timeout` become TRW failures, idle sources are
    /// forgotten. Call it periodically (e.g. every second); a `now` earlier
    /// than the latest event is ignored.
    pub fn advance(&mut self, now: DateTime<Utc>) -> Vec<Alert> {
        let ts = now;
        let now = self.clock(now);
        let mut alerts = Vec::new();
        self.expire_pending(now, &mut alerts);
        self.expire_idle(now);
        if let Some(p) = self.prefixes.as_mut() {
            let found = p.inner.advance(ts);
            self.stats.prefix_alerts += found.len() as u64;
            self.stats.alerts += found.len() as u64;
            alerts.extend(found);
        }
        if let Some(e) = self.evasion.as_mut() {
            e.advance(ts);
        }
        alerts
    }

    /// Current counters.
    pub fn stats(&self) -> DetectStats {
        let mut memory = self.table.bytes() + self.recent.bytes();
        memory += self.members.capacity() * std::mem::size_of::<Members>();
        let (mut prefixes, mut prefix_evictions) = (0, 0);
        if let Some(p) = &self.prefixes {
            let inner = p.inner.stats();
            memory += inner.memory_bytes;
            prefixes = inner.tracked_sources;
            prefix_evictions = inner.source_evictions;
        }
        if let Some(e) = &self.evasion {
            memory += e.stats().memory_bytes;
        }
        DetectStats {
            tracked_sources: self.table.source_count(),
            tracked_pairs: self.table.pair_count(),
            pending_pairs: self.table.pending_count(),
            memory_bytes: memory,
            tracked_prefixes: prefixes,
            prefix_evictions,
            ..self.stats
        }
    }

    /// A hint: start fetching what [`Self::observe`] of `ev` will read
    /// first (its source's index and recent-filter buckets). Under churn
    /// most of an event's cost is waiting for those lines; a caller holding
    /// a batch (the daemon drains the ring buffer in batches) can call this
    /// a few events ahead of `observe` to overlap the waits. Changes no state.
    pub fn prefetch(&self, ev: &GatewayEvent) {
        if ev.kind.is_contact() {
            let key = addr_key(ev.src.to_canonical());
            self.table.prefetch_source(self.table.addr_hash(&key));
            self.recent.prefetch(&key);
        }
    }

    /// The oldest capacity notice not yet taken, if any (see [`CapNotice`]).
    pub fn take_cap_notice(&mut self) -> Option<CapNotice> {
        (!self.notices.is_empty()).then(|| self.notices.remove(0))
    }

    fn clock(&mut self, ts: DateTime<Utc>) -> i64 {
        self.now = self.now.max(ts_nanos(ts));
        self.now
    }

    fn is_allowed(&self, src: IpAddr) -> bool {
        self.cfg.allow.iter().any(|net| net.contains(&src))
    }

    /// Prefix detectors: note the current event's member in `slot`'s
    /// prefix (the member count and the most active members).
    pub(super) fn note_member(&mut self, slot: u32) {
        if let Some((key, new)) = self.member {
            if let Some(m) = self.members.get_mut(slot as usize) {
                m.add(&key, new);
            }
        }
    }

    /// Prefix detectors: whether `slot`'s prefix has enough members to
    /// alert (always, in other detectors).
    pub(super) fn members_ok(&self, slot: u32) -> bool {
        self.mode != Mode::Prefix
            || self
                .members
                .get(slot as usize)
                .is_some_and(|m| m.count() >= self.cfg.prefix.min_members)
    }
}

/// Ask for the cache line(s) of `*x` ahead of use: under churn every event
/// reads a few records at random places in tables larger than the cache,
/// and fetching the next ones while this event is processed hides part of
/// that latency. A hint only: it changes no state.
#[inline]
pub(crate) fn prefetch<T>(x: &T) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let p = (x as *const T).cast::<i8>();
        for line in (0..std::mem::size_of::<T>()).step_by(64) {
            // SAFETY: SSE is part of the x86_64 baseline, and a prefetch
            // never faults or reads into the program (the address is in
            // `x`'s own allocation anyway).
            unsafe { _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(line)) };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = x;
}

/// How far a prefix's random walk goes before it decides, relative to an
/// address's: a prefix holds many hosts, and one-shot noise (spoofed SYNs,
/// a few dead mappings across an office) adds up in it. With the default
/// TRW parameters: seven net failures instead of four.
const PREFIX_TRW_WIDTH: f64 = 2.0;

/// The random walk's steps and bounds for a detector of `mode`.
fn trw_for(cfg: &DetectConfig, mode: Mode) -> Trw {
    let trw = Trw::new(cfg.trw_theta0, cfg.trw_theta1, cfg.trw_pd, cfg.trw_pf);
    if mode == Mode::Prefix {
        trw.widened(PREFIX_TRW_WIDTH)
    } else {
        trw
    }
}

/// A duration in nanoseconds, saturating.
fn nanos(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

/// An event time in nanoseconds since the epoch, saturating outside
/// 1677..2262 (chrono cannot represent those in i64 nanoseconds).
fn ts_nanos(ts: DateTime<Utc>) -> i64 {
    ts.timestamp_nanos_opt().unwrap_or(if ts.timestamp() < 0 {
        i64::MIN + 1
    } else {
        i64::MAX
    })
}

/// `ip` as the tables' key: `to_mapped(ip).octets()`, computed as one
/// 128-bit value. Built byte by byte (what `Ipv4Addr::to_ipv6_mapped`
/// compiles to) and read back as words by the hashes, the key stalled store
/// forwarding on every event: a sixth of the detector's time under churn.
#[inline]
fn addr_key(ip: IpAddr) -> Key {
    match ip {
        IpAddr::V4(a) => (0xffff_u128 << 32 | u128::from(u32::from(a))).to_be_bytes(),
        IpAddr::V6(a) => a.octets(),
    }
}

fn key_addr(key: &Key) -> IpAddr {
    from_mapped(Ipv6Addr::from(*key))
}

#[cfg(test)]
mod sweep_tests;
#[cfg(test)]
mod tests;
