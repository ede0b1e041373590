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
use serde::Serialize;
use smbwatch_common::addr::{from_mapped, to_mapped};

use crate::alert::{Alert, AlertKind};
use crate::event::{GatewayEvent, GatewayEventKind};

mod alerting;
#[cfg(any(test, feature = "bench"))]
pub mod bench;
mod config;
mod evasion;
mod index;
mod prefix;
mod recent;
mod reconfigure;
mod scales;
mod table;
mod trw;

use crate::community_id::{community_id_v1, PROTO_TCP};
pub use config::{DetectConfig, FanoutScale, PrefixConfig, SubnetOverride};
use prefix::{Members, Prefixes};
use recent::Recent;
use table::{class_of, Key, Outcome, Table};
pub use table::{CLASSES, MAX_SCALES};
use trw::{Decision, Trw};

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
    fn note_member(&mut self, slot: u32) {
        if let Some((key, new)) = self.member {
            if let Some(m) = self.members.get_mut(slot as usize) {
                m.add(&key, new);
            }
        }
    }

    /// Prefix detectors: whether `slot`'s prefix has enough members to
    /// alert (always, in other detectors).
    fn members_ok(&self, slot: u32) -> bool {
        self.mode != Mode::Prefix
            || self
                .members
                .get(slot as usize)
                .is_some_and(|m| m.count() >= self.cfg.prefix.min_members)
    }

    fn new_pair(&mut self, src: IpAddr, ev: &GatewayEvent, now: i64, alerts: &mut Vec<Alert>) {
        let key = addr_key(src);
        let dst = addr_key(ev.dst.to_canonical());
        let hash = self.table.addr_hash(&key);
        // Under churn (a spoofed flood) this event reads three lines at
        // random: the source's index bucket, its `recent` bucket, and the
        // index bucket of the source it evicts. Ask for all three at once.
        self.table.prefetch_source(hash);
        self.recent.prefetch(&key);
        if self.table.source_count() >= self.max_sources {
            self.table.prefetch_victim_index(self.probation_reserve);
        }
        let slot = match self.table.source_hashed(&key, hash) {
            Some(slot) => {
                self.seen(slot, ev, now);
                self.advance_scales(slot, now);
                self.prune(slot, now);
                if let Some(p) = self.table.pair(slot, &dst) {
                    // Seen again while kept (a retransmission the kernel
                    // reported twice, a reconnect, or the pair active in a
                    // later epoch): still one destination, but back within
                    // the shorter scales it had left.
                    self.table.refresh_pair(p, now, ev.sport);
                    self.note_member(slot);
                    self.touch(slot);
                    self.check_scales(slot, now, alerts);
                    return;
                }
                slot
            }
            None => {
                let slot = self.admit(key, hash, &dst, src, now);
                self.admitted = true;
                self.seen(slot, ev, now);
                // The kernel tracks the source (it opened another pair a few
                // seconds ago) but the detector never heard of it: that
                // pair's event was shed, or its record flushed. Count it.
                if ev.kernel_fanout.is_some() {
                    self.table.sources[slot as usize].unseen = 1;
                    self.stats.unseen_destinations += 1;
                }
                slot
            }
        };
        self.note_member(slot);
        if ev.fragmented {
            let s = &mut self.table.sources[slot as usize];
            s.fragmented = s.fragmented.saturating_add(1);
        }
        if self.table.sources[slot as usize].distinct >= self.max_per_source {
            // Keep the newest destinations: the count saturates at the cap.
            if !self.table.sources[slot as usize].dest_cap_noticed {
                self.table.sources[slot as usize].dest_cap_noticed = true;
                self.notice(Cap::DestinationsPerSource, now, src);
            }
            self.stats.cap_hits += 1;
            let oldest = self.table.sources[slot as usize].head;
            self.table.remove_pair(oldest);
            self.stats.destination_evictions += 1;
        }
        while self.table.pair_count() >= self.max_pairs {
            self.cap_hit(Cap::Pairs, now, src);
            match self.table.victim(self.probation_reserve, slot) {
                Some(victim) => self.evict(victim),
                // The only source left: drop its own oldest destination.
                None => {
                    let oldest = self.table.sources[slot as usize].head;
                    self.table.remove_pair(oldest);
                    self.stats.destination_evictions += 1;
                }
            }
        }
        self.table.insert_pair(slot, dst, now, ev.sport, ev.dport);
        self.touch(slot);
        self.check_scales(slot, now, alerts);
    }

    /// Start tracking a new source, evicting one if the table is full. A
    /// source admitted recently (and evicted since) with another destination
    /// comes back with that destination counted in its class.
    fn admit(&mut self, key: Key, hash: u32, dst: &Key, src: IpAddr, now: i64) -> u32 {
        let recalled = self.recent.admit(&key, dst);
        while self.table.source_count() >= self.max_sources {
            self.cap_hit(Cap::Sources, now, src);
            let victim = self
                .table
                .victim(self.probation_reserve, table::NIL)
                .expect("sources at cap, so one exists");
            self.evict(victim);
        }
        let rule = self.rule_for(src);
        let slot = self.table.insert_source(key, hash, rule, now);
        if self.mode == Mode::Prefix {
            let i = slot as usize;
            if self.members.len() <= i {
                self.members.resize(i + 1, Members::default());
            }
            self.members[i] = Members::default();
        }
        if recalled {
            self.table.sources[slot as usize].carried = 1;
            self.stats.recalled_sources += 1;
        }
        if self.table.source_count() >= self.max_sources {
            // Under churn the next event evicts again.
            self.table.prefetch_victim(self.probation_reserve);
        }
        slot
    }

    /// Evict a source to make room.
    fn evict(&mut self, slot: u32) {
        self.stats.source_evictions += 1;
        self.stats.source_evictions_by_class[usize::from(self.table.class(slot))] += 1;
        self.table.remove_source(slot);
    }

    /// The source's event at `now`: latest activity, interface and VLAN.
    fn seen(&mut self, slot: u32, ev: &GatewayEvent, now: i64) {
        let s = &mut self.table.sources[slot as usize];
        s.last_seen = now;
        s.ifindex = ev.ifindex;
        s.vlan = ev.vlan;
    }

    /// Make the source the most recently active of its (possibly new) class.
    fn touch(&mut self, slot: u32) {
        let class = self.class(slot);
        self.table.touch(slot, class);
    }

    /// A source's fan-out class: destinations in its window (plus one
    /// remembered from before an eviction), or the net failures of its
    /// random walk if more (a slow scanner's probes outside the window).
    fn class(&self, slot: u32) -> u8 {
        let s = &self.table.sources[slot as usize];
        let walk = if s.llr > 0.0 {
            // Tolerance: a sum of n equal steps divided by the step.
            (s.llr / self.trw.failure + 1e-9) as u32
        } else {
            0
        };
        class_of((s.fanout() + u32::from(s.carried)).max(walk))
    }

    fn response(
        &mut self,
        src: IpAddr,
        dst: IpAddr,
        accepted: bool,
        now: i64,
        alerts: &mut Vec<Alert>,
    ) {
        let pair = self
            .table
            .source(&addr_key(src))
            .and_then(|slot| Some((slot, self.table.pair(slot, &addr_key(dst.to_canonical()))?)));
        let Some((slot, p)) = pair else {
            self.stats.unmatched_responses += 1;
            return;
        };
        match (self.table.pairs[p as usize].outcome, accepted) {
            (Outcome::Pending, _) => {
                self.table.sources[slot as usize].last_seen = now;
                self.table.resolve(
                    p,
                    if accepted {
                        Outcome::Accepted
                    } else {
                        Outcome::Failed
                    },
                );
                self.trw_step(slot, accepted, now, alerts);
            }
            (Outcome::Accepted, false) => {
                // RST after the SYN-ACK with no ACK between (the kernel
                // reports it as Refused for a pair it reported Accepted):
                // the contact failed after all.
                self.table.sources[slot as usize].last_seen = now;
                let same_walk =
                    self.table.pairs[p as usize].walk == self.table.sources[slot as usize].walk;
                self.table.accepted_to_failed(p);
                self.stats.accepted_then_refused += 1;
                let decision = self
                    .trw
                    .correct(&mut self.table.sources[slot as usize].llr, same_walk);
                self.trw_decided(slot, decision, now, alerts);
            }
            // A late answer (after the timeout counted it as failed), a
            // second answer, or a SYN-ACK after a RST: the first decision stands.
            _ => return,
        }
        self.touch(slot);
    }

    /// Pairs unanswered for longer than the timeout are failures, decided
    /// at their deadline.
    fn expire_pending(&mut self, now: i64, alerts: &mut Vec<Alert>) {
        while let Some(p) = self.table.pending_head() {
            let pair = &self.table.pairs[p as usize];
            let deadline = pair.first_ts.saturating_add(self.timeout);
            if deadline >= now {
                break;
            }
            let slot = pair.src;
            self.table.resolve(p, Outcome::Failed);
            self.trw_step(slot, false, deadline, alerts);
        }
    }

    fn trw_step(&mut self, slot: u32, success: bool, at: i64, alerts: &mut Vec<Alert>) {
        if self.mode == Mode::Evasion {
            // Unparsed packets get no answer the kernel can match.
            return;
        }
        let decision = self
            .trw
            .step(&mut self.table.sources[slot as usize].llr, success);
        self.trw_decided(slot, decision, at, alerts);
    }

    /// After a walk moved: a decision restarts it (a later correction of an
    /// outcome counted before the restart goes to the new walk); a scanner
    /// decision alerts.
    fn trw_decided(&mut self, slot: u32, decision: Decision, at: i64, alerts: &mut Vec<Alert>) {
        if decision == Decision::Continue {
            return;
        }
        let s = &mut self.table.sources[slot as usize];
        s.walk = s.walk.wrapping_add(1);
        if decision == Decision::Scanner {
            self.prune(slot, at);
            if let Some(alert) = self.maybe_alert(slot, AlertKind::SmbScanTrw, at) {
                alerts.push(alert);
            }
        }
    }

    /// Drop the source's destinations last seen a window ago or earlier.
    /// A still-pending pair stops the walk: its outcome is owed to TRW, and
    /// it is decided within `response_timeout` (no longer than the window).
    fn prune(&mut self, slot: u32, now: i64) {
        self.table.advance_scales(slot, now);
        let window = self.table.sources[slot as usize].window;
        loop {
            let head = self.table.sources[slot as usize].head;
            if head == table::NIL {
                break;
            }
            let p = &self.table.pairs[head as usize];
            if p.outcome == Outcome::Pending || p.ts.saturating_add(window) > now {
                break;
            }
            self.table.remove_pair(head);
        }
    }

    /// Forget sources idle for longer than both their window and the
    /// hold-down: nothing of them is in a window any more and a new alert
    /// would not be suppressed, so only the TRW walk is lost.
    fn expire_idle(&mut self, now: i64) {
        // Each class list is ordered by latest activity.
        for c in 0..CLASSES {
            while let Some(lru) = self.table.class_tail(c) {
                let s = &self.table.sources[lru as usize];
                let keep = s.window.max(self.hold_down);
                if s.pending > 0 || s.last_seen.saturating_add(keep) > now {
                    break;
                }
                self.table.remove_source(lru);
                self.stats.idle_expired += 1;
            }
        }
        // Re-arm the global cap notices once usage has fallen well below.
        if self.table.source_count() < self.max_sources / 2 {
            self.armed[0] = true;
        }
        if self.table.pair_count() < self.max_pairs / 2 {
            self.armed[1] = true;
        }
    }

    fn cap_hit(&mut self, cap: Cap, now: i64, src: IpAddr) {
        self.stats.cap_hits += 1;
        let i = usize::from(cap == Cap::Pairs);
        if std::mem::take(&mut self.armed[i]) {
            self.notice(cap, now, src);
        }
    }

    fn notice(&mut self, cap: Cap, now: i64, source: IpAddr) {
        if self.notices.len() < MAX_NOTICES {
            let limit = match cap {
                Cap::Sources => self.max_sources,
                Cap::Pairs => self.max_pairs,
                Cap::DestinationsPerSource => self.max_per_source as usize,
            };
            self.notices.push(CapNotice {
                ts: DateTime::from_timestamp_nanos(now),
                cap,
                limit,
                source,
            });
        }
    }
}

/// Ask for the cache line(s) of `*x` ahead of use: under churn every event
/// reads a few records at random places in tables larger than the cache,
/// and fetching the next ones while this event is processed hides part of
/// that latency. A hint only: it changes no state.
#[inline]
fn prefetch<T>(x: &T) {
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

fn addr_key(ip: IpAddr) -> Key {
    to_mapped(ip).octets()
}

fn key_addr(key: &Key) -> IpAddr {
    from_mapped(Ipv6Addr::from(*key))
}

#[cfg(test)]
mod sweep_tests;
#[cfg(test)]
mod tests;
