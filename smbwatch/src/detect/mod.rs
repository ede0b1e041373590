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

use std::net::{IpAddr, Ipv6Addr};
use std::time::Duration;

use chrono::{DateTime, Utc};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::alert::{Alert, AlertKind, ScanEvidence, Severity};
use crate::event::{GatewayEvent, GatewayEventKind};

mod table;
mod trw;

use crate::community_id::{community_id_v1, PROTO_TCP};
use table::{Key, Outcome, Table};
use trw::{Decision, Trw};

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
    /// Most sources tracked at once (least recently active evicted first).
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

/// Notices kept until taken; more are only counted (`cap_hits`).
const MAX_NOTICES: usize = 16;

/// MITRE ATT&CK: Network Service Discovery, Exploitation of Remote Services.
const TECHNIQUES: [&str; 2] = ["T1046", "T1210"];

/// Bits of `Source::alerted_kinds`.
const FANOUT_BIT: u8 = 1;
const TRW_BIT: u8 = 2;

/// The scan detector. Feed it every gateway event in time order.
///
/// Events slightly out of order (ring buffers of several CPUs) are taken at
/// the latest time seen, so state timestamps never go backwards.
pub struct Detector {
    cfg: DetectConfig,
    window: i64,
    timeout: i64,
    hold_down: i64,
    max_sources: usize,
    max_pairs: usize,
    max_per_source: u32,
    trw: Trw,
    /// `(prefix, threshold, window ns)`, most specific prefix first.
    overrides: Vec<(IpNet, u32, i64)>,
    table: Table,
    /// Latest event time (ns); `i64::MIN` before the first.
    now: i64,
    stats: DetectStats,
    notices: Vec<CapNotice>,
    /// Whether the next hit of the sources / pairs cap is reported.
    armed: [bool; 2],
}

impl Detector {
    /// A detector with `cfg`. The configuration is assumed validated
    /// (see [`crate::config::Config::validate`]); degenerate caps are raised
    /// to 1 rather than panicking.
    pub fn new(cfg: DetectConfig) -> Self {
        let mut overrides: Vec<(IpNet, u32, i64)> = cfg
            .subnet
            .iter()
            .map(|o| {
                (
                    o.cidr.trunc(),
                    o.fanout_threshold,
                    nanos(o.window.unwrap_or(cfg.window)),
                )
            })
            .collect();
        // Longest prefix first; a stable sort keeps file order among equals.
        overrides.sort_by_key(|o| std::cmp::Reverse(o.0.prefix_len()));
        let max_sources = cfg.max_sources.max(1);
        let max_pairs = cfg.max_pairs.max(1);
        Self {
            window: nanos(cfg.window),
            timeout: nanos(cfg.response_timeout),
            hold_down: nanos(cfg.hold_down),
            max_sources,
            max_pairs,
            max_per_source: u32::try_from(cfg.max_destinations_per_source)
                .unwrap_or(u32::MAX)
                .max(1),
            trw: Trw::new(cfg.trw_theta0, cfg.trw_theta1, cfg.trw_pd, cfg.trw_pf),
            overrides,
            // Start small; the slabs grow to the caps only if traffic needs it.
            table: Table::with_capacity(max_sources.min(4096), max_pairs.min(16384)),
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
        let src = ev.src.to_canonical();
        if self.is_allowed(src) {
            self.stats.allowlisted += 1;
        } else {
            match ev.kind {
                GatewayEventKind::NewPair => self.new_pair(src, ev, now, &mut alerts),
                GatewayEventKind::Accepted => self.response(src, ev.dst, true, now, &mut alerts),
                GatewayEventKind::Refused => self.response(src, ev.dst, false, now, &mut alerts),
            }
        }
        self.expire_idle(now);
        alerts
    }

    /// Advance time to `now` without an event: pairs left unanswered for
    /// longer than `response_timeout` become TRW failures, idle sources are
    /// forgotten. Call it periodically (e.g. every second); a `now` earlier
    /// than the latest event is ignored.
    pub fn advance(&mut self, now: DateTime<Utc>) -> Vec<Alert> {
        let now = self.clock(now);
        let mut alerts = Vec::new();
        self.expire_pending(now, &mut alerts);
        self.expire_idle(now);
        alerts
    }

    /// Current counters.
    pub fn stats(&self) -> DetectStats {
        DetectStats {
            tracked_sources: self.table.source_count(),
            tracked_pairs: self.table.pair_count(),
            pending_pairs: self.table.pending_count(),
            ..self.stats
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

    /// Fan-out threshold and window for a new source.
    fn limits(&self, src: IpAddr) -> (u32, i64) {
        self.overrides
            .iter()
            .find(|(net, _, _)| net.contains(&src))
            .map_or((self.cfg.fanout_threshold, self.window), |&(_, t, w)| {
                (t, w)
            })
    }

    fn new_pair(&mut self, src: IpAddr, ev: &GatewayEvent, now: i64, alerts: &mut Vec<Alert>) {
        let key = addr_key(src);
        let slot = match self.table.source(&key) {
            Some(slot) => {
                self.table.touch(slot);
                slot
            }
            None => {
                while self.table.source_count() >= self.max_sources {
                    self.cap_hit(Cap::Sources, now, src);
                    let lru = self
                        .table
                        .lru_tail()
                        .expect("sources at cap, so one exists");
                    self.table.remove_source(lru);
                    self.stats.source_evictions += 1;
                }
                let (threshold, window) = self.limits(src);
                self.table.insert_source(key, threshold, window, now)
            }
        };
        {
            let s = &mut self.table.sources[slot as usize];
            s.last_seen = now;
            s.ifindex = ev.ifindex;
            s.vlan = ev.vlan;
        }
        self.prune(slot, now);
        let dst = addr_key(ev.dst.to_canonical());
        if let Some(p) = self.table.pair(slot, &dst) {
            // Seen again within the window (a retransmission the kernel
            // reported twice, or a reconnect): still one destination.
            self.table.refresh_pair(p, now, ev.sport);
            return;
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
            match self.table.lru_tail() {
                // The current source was just touched, so the tail is
                // another one unless it is the only source left.
                Some(lru) if lru != slot => {
                    self.table.remove_source(lru);
                    self.stats.source_evictions += 1;
                }
                _ => {
                    let oldest = self.table.sources[slot as usize].head;
                    self.table.remove_pair(oldest);
                    self.stats.destination_evictions += 1;
                }
            }
        }
        self.table.insert_pair(slot, dst, now, ev.sport, ev.dport);
        let s = &self.table.sources[slot as usize];
        if s.distinct >= s.threshold {
            if let Some(alert) = self.maybe_alert(slot, AlertKind::SmbScanFanout, now) {
                alerts.push(alert);
            }
        }
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
        if self.table.pairs[p as usize].outcome != Outcome::Pending {
            // A late answer (after the timeout counted it as failed) or a
            // second answer: the first decision stands.
            return;
        }
        self.table.touch(slot);
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
        let decision = self
            .trw
            .step(&mut self.table.sources[slot as usize].llr, success);
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
        while let Some(lru) = self.table.lru_tail() {
            let s = &self.table.sources[lru as usize];
            let keep = s.window.max(self.hold_down);
            if s.pending > 0 || s.last_seen.saturating_add(keep) > now {
                break;
            }
            self.table.remove_source(lru);
            self.stats.idle_expired += 1;
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

    /// Suppression: one alert per source per hold-down, unless this kind
    /// has not fired in it yet or the fan-out doubled since the last alert.
    fn maybe_alert(&mut self, slot: u32, kind: AlertKind, at: i64) -> Option<Alert> {
        let hold_down = self.hold_down;
        let s = &mut self.table.sources[slot as usize];
        let held = s.last_alert != i64::MIN && at < s.last_alert.saturating_add(hold_down);
        if !held {
            s.alerted_kinds = 0;
        }
        let bit = if kind == AlertKind::SmbScanFanout {
            FANOUT_BIT
        } else {
            TRW_BIT
        };
        let doubled = kind == AlertKind::SmbScanFanout
            && held
            && s.alerted_kinds & FANOUT_BIT != 0
            && u64::from(s.distinct) >= 2 * u64::from(s.alerted_distinct);
        if held && s.alerted_kinds & bit != 0 && !doubled {
            self.stats.suppressed += 1;
            return None;
        }
        let previous = s.alerted_distinct;
        s.last_alert = at;
        s.alerted_kinds |= bit;
        s.alerted_distinct = s.distinct;
        self.stats.alerts += 1;
        Some(self.build_alert(slot, kind, at, doubled.then_some(previous)))
    }

    fn build_alert(&self, slot: u32, kind: AlertKind, at: i64, doubled_from: Option<u32>) -> Alert {
        let s = &self.table.sources[slot as usize];
        let src = key_addr(&s.key);
        let first = self.table.pairs_of(slot).next();
        let port = first.map(|p| p.dport);
        let window = Duration::from_nanos(u64::try_from(s.window).unwrap_or(0));
        let window_text = humantime::format_duration(window);
        let port_text = port.map_or_else(String::new, |p| format!(" on port {p}"));
        let (severity, message) = match (kind, doubled_from) {
            (AlertKind::SmbScanFanout, None) => (
                Severity::High,
                format!(
                    "{src} connected to {} distinct hosts{port_text} within {window_text}",
                    s.distinct
                ),
            ),
            (AlertKind::SmbScanFanout, Some(before)) => (
                Severity::Critical,
                format!(
                    "{src} connected to {} distinct hosts{port_text} within {window_text} \
                     (fan-out doubled since the last alert, from {before})",
                    s.distinct
                ),
            ),
            _ => (
                Severity::Medium,
                format!(
                    "{src} looks like a scanner: its connection attempts{port_text} mostly fail \
                     ({} failed, {} accepted, {} unanswered yet, {} hosts within {window_text})",
                    s.refused, s.accepted, s.pending, s.distinct
                ),
            ),
        };
        let mut alert = Alert::new(DateTime::from_timestamp_nanos(at), kind, severity, message);
        alert.techniques = TECHNIQUES.to_vec();
        alert.source_ip = Some(src);
        alert.destination_port = port;
        alert.community_id =
            first.map(|p| community_id_v1(src, key_addr(&p.dst), p.sport, p.dport, PROTO_TCP, 0));
        alert.ifindex = Some(s.ifindex);
        alert.vlan = s.vlan;
        alert.scan = Some(ScanEvidence {
            distinct_destinations: s.distinct as usize,
            destinations: self
                .table
                .pairs_of(slot)
                .take(self.cfg.max_destinations_listed)
                .map(|p| key_addr(&p.dst))
                .collect(),
            syns: s.syns,
            accepted: u64::from(s.accepted),
            refused: u64::from(s.refused),
            window_secs: window.as_secs(),
            first_seen: DateTime::from_timestamp_nanos(first.map_or(s.last_seen, |p| p.ts)),
            last_seen: DateTime::from_timestamp_nanos(s.last_seen),
        });
        alert
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
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

fn key_addr(key: &Key) -> IpAddr {
    Ipv6Addr::from(*key).to_canonical()
}

#[cfg(test)]
mod tests;
