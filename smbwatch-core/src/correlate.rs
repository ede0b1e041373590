//! Correlation: joins what the gateway saw (addresses, ports) with what the
//! Windows hosts logged (processes, users, shares).
//!
//! Pure and deterministic: time comes from the events, never the clock.
//! Inputs may arrive in any order — forwarders deliver host events seconds
//! or minutes after the gateway saw the packets — so both sides are kept for
//! a while ([`CorrelateConfig::retention`]) and matched whichever arrives
//! second. All state is capped (entries, and bytes: [`CorrelateConfig::max_bytes`])
//! and pruned by the reference clock: gateway time and
//! [`Correlator::advance`] (the daemon's wall clock, replay's capture
//! time). A host event never moves that clock — a host whose clock is years
//! ahead would otherwise expire everything else — and one dated more than
//! `max_ahead` ahead of it is rejected and counted ([`CorrelateStats::rejected_ahead`]).
//!
//! - **Attribution**: a gateway `NewPair` matches an outbound host network
//!   event (Sysmon 3 / Security 5156) with the same source address,
//!   destination address and port, and source port when the host event has
//!   one, within ±`clock_skew`. Several matching host records (Sysmon 3 and
//!   5156 of one connection) are merged into one [`Attribution`]. Inbound
//!   records (the server's view, always `System` for SMB) are not used.
//! - **Enrichment**: [`Correlator::enrich_alert`] fills a host-rule alert's
//!   missing process/user fields and the gateway's interface and VLAN;
//!   [`Correlator::enrich_scan_alert`] lists the processes seen opening SMB
//!   connections from a scanning source.
//! - **Process context** ([`process`]): 4688 and Sysmon 1 records are kept
//!   per host, so `suspicious_smb_client` and scan alerts carry the
//!   process's command line, parent and user; a process of a
//!   `[process_classes]` class (script interpreter, LOLBin, Office,
//!   browser) makes the alert high severity.
//! - **Chain** (`chain`): `lateral_movement_chain` fires when a source that
//!   raised a scan alert shows, on some target, administrative share access
//!   (5140/5145 with that `IpAddress`), a file written through a share, or
//!   a network logon (4624 type 3) from the scan's start (less the skew)
//!   until `chain_window` after the alert.
//! - **File drops** (`file_drop`): `remote_file_drop` for a 5145 write to
//!   `ADMIN$`/`C$` from a remote address or a Sysmon 11 executable created
//!   by the kernel's SMB server.
//! - **SMB on the wire** (`wire`): an `smb_*` alert and the host record of
//!   the same act are one alert carrying both; wire acts after a scan
//!   complete chains too.
//! - **Services and tasks** (`remote_exec`): a 7045/4697/4698 is tied to
//!   its client by its creator's logon session (or SID) and is the same
//!   act as the wire's `smb_remote_service`/`smb_remote_task`; alone, it
//!   raises that kind from the host's evidence.

mod chain;
mod config;
mod enrich;
mod file_drop;
pub mod process;
mod remote_exec;
mod wire;

pub use config::CorrelateConfig;
pub(crate) use file_drop::{is_executable, APPEND_DATA, WRITE_DATA};

use std::net::IpAddr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::alert::{Alert, ProcessInfo};
use crate::event::{GatewayEvent, GatewayEventKind};
use crate::hostlog::{Direction, HostEvent, HostRecord, NetworkConnection};
/// Why a host event was rejected (see [`Correlator::take_rejected`]).
pub use crate::timed::TooFarAhead;
use crate::timed::{
    self, add, delta, enforce_budget, total_bytes, Budgeted, HeapSize, RefClock, TimedIndex,
};
use chain::{ChainRec, FiredKey, ScanRec};
use process::{ProcessClassesConfig, ProcessTable};

/// The process (and account, and host) behind one gateway pair.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Attribution {
    /// Gateway time of the pair's first SYN.
    pub pair_ts: DateTime<Utc>,
    /// Host time of the first matching host record.
    pub host_ts: DateTime<Utc>,
    /// Client address.
    pub src: IpAddr,
    /// Server address.
    pub dst: IpAddr,
    /// Client port.
    pub sport: u16,
    /// Server port.
    pub dport: u16,
    /// The client process.
    pub process: ProcessInfo,
    /// Account of the process, when a record names it (Sysmon 3).
    pub user: Option<String>,
    /// The client's computer name.
    pub host: Option<String>,
    /// Event ids of the merged host records (e.g. `[5156, 3]`).
    pub event_ids: Vec<u32>,
    /// Gateway ingress interface.
    pub ifindex: u32,
    /// Gateway outer VLAN.
    pub vlan: Option<u16>,
}

/// Counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct CorrelateStats {
    /// Gateway NewPair events fed.
    pub pairs: u64,
    /// Host events fed.
    pub host_events: u64,
    /// Scan alerts fed.
    pub scan_alerts: u64,
    /// Pairs attributed (first match only).
    pub attributed: u64,
    /// Chain alerts raised.
    pub chains: u64,
    /// Process creations fed (4688, Sysmon 1).
    pub process_creations: u64,
    /// Alerts given process context (command line, parent) from them.
    pub with_process_context: u64,
    /// `remote_file_drop` alerts raised.
    pub file_drops: u64,
    /// Entries evicted by caps, entries or bytes (all tables).
    pub evicted: u64,
    /// Entries held now (all tables).
    pub held: u64,
    /// Accounted bytes held now (all tables; at most `max_bytes`).
    pub bytes: u64,
    /// Host events rejected: dated more than `max_ahead` ahead of the
    /// reference clock.
    pub rejected_ahead: u64,
    /// Wire alerts that waited for, and got, the host record of their act
    /// (one alert carrying both).
    pub joined: u64,
    /// Acts reported by both sides where the second came too late to be
    /// joined: the second report was not raised again.
    pub joined_late: u64,
    /// Service installs and task creations (7045, 4697, 4698) raised from
    /// the host's record alone (a remote client, no wire alert).
    pub remote_exec: u64,
    /// Service installs and task creations whose client could not be told
    /// (a local install, or several candidate addresses): not raised.
    pub local_exec: u64,
    /// Process creations evicted, by the cap reached (each from the host
    /// holding the most; part of `evicted`).
    pub process_evictions: process::ProcessEvictions,
    /// Hosts whose process creations are held now.
    pub process_hosts: u64,
}

type FlowKey = (IpAddr, IpAddr, u16);

#[derive(Debug)]
struct PairRec {
    sport: u16,
    ifindex: u32,
    vlan: Option<u16>,
    /// Boxed: most pairs are never attributed, and every pair is kept, so
    /// the record stays small (a flood of new pairs copies and caches it).
    attribution: Option<Box<Attribution>>,
}

#[derive(Debug, Clone)]
struct NetRec {
    src_port: Option<u16>,
    process: ProcessInfo,
    user: Option<String>,
    host: Option<String>,
    /// Sysmon `ProcessGuid`, to find the process's creation.
    guid: Option<String>,
    event_id: u32,
}

/// See the module documentation.
#[derive(Debug)]
pub struct Correlator {
    cfg: CorrelateConfig,
    skew: chrono::Duration,
    chain_window: chrono::Duration,
    pairs: TimedIndex<FlowKey, PairRec>,
    host_net: TimedIndex<FlowKey, NetRec>,
    chain_events: TimedIndex<IpAddr, ChainRec>,
    scans: TimedIndex<IpAddr, ScanRec>,
    /// Chains already raised, by alert time.
    fired: TimedIndex<FiredKey, ()>,
    /// Process creations.
    processes: ProcessTable,
    /// (host, file name) of file drops already raised.
    drops: TimedIndex<(String, String), ()>,
    classes: ProcessClassesConfig,
    clock: RefClock,
    /// The last rejected host event not yet reported.
    rejected: Option<TooFarAhead>,
    stats: CorrelateStats,
    /// How long a wire alert waits for its host record.
    host_wait: chrono::TimeDelta,
    /// Wire alerts waiting for their host record.
    waiting: wire::Waiting,
    /// Acts the wire reported (alerts out), for host records arriving late.
    wire_acts: TimedIndex<wire::ActKey, ()>,
    /// Acts host records reported, for wire alerts arriving late.
    host_acts: TimedIndex<wire::ActKey, ()>,
    /// The last host event fed reported an act the wire already alerted on.
    joined_wire: bool,
    /// Remote clients' logon sessions: (lower-case host, logon id) →
    /// client address (5140/5145, 4624 type 3), for 4697/4698.
    sessions: TimedIndex<(String, u64), IpAddr>,
    /// SMB samples arrive (host alerts of acts the wire reports wait).
    wire_inputs: bool,
}

impl HeapSize for ProcessInfo {
    fn heap_size(&self) -> usize {
        self.name.heap_size() + self.executable.heap_size()
    }
}

impl HeapSize for Attribution {
    fn heap_size(&self) -> usize {
        self.process.heap_size()
            + self.user.heap_size()
            + self.host.heap_size()
            + self.event_ids.heap_size()
    }
}

impl HeapSize for PairRec {
    fn heap_size(&self) -> usize {
        // The box and its strings.
        self.attribution.heap_size()
    }
}

impl HeapSize for NetRec {
    fn heap_size(&self) -> usize {
        self.process.heap_size()
            + self.user.heap_size()
            + self.host.heap_size()
            + self.guid.heap_size()
    }
}

/// Fill `slot` from `v` if empty; true if it changed.
fn fill<T: Clone>(slot: &mut Option<T>, v: &Option<T>) -> bool {
    if slot.is_none() && v.is_some() {
        slot.clone_from(v);
        true
    } else {
        false
    }
}

impl Correlator {
    /// A correlator with these settings.
    pub fn new(cfg: CorrelateConfig) -> Self {
        Self {
            skew: delta(cfg.clock_skew),
            chain_window: delta(cfg.chain_window),
            pairs: TimedIndex::new(cfg.max_pairs),
            host_net: TimedIndex::new(cfg.max_host_events),
            chain_events: TimedIndex::new(cfg.max_chain_events),
            scans: TimedIndex::new(cfg.max_scan_sources),
            fired: TimedIndex::new(cfg.max_scan_sources),
            processes: ProcessTable::new(cfg.max_processes),
            drops: TimedIndex::new(cfg.max_chain_events),
            classes: ProcessClassesConfig::default(),
            clock: RefClock::new(timed::DEFAULT_MAX_AHEAD),
            rejected: None,
            stats: CorrelateStats::default(),
            host_wait: chrono::TimeDelta::zero(),
            waiting: wire::Waiting::default(),
            wire_acts: TimedIndex::new(cfg.max_chain_events),
            host_acts: TimedIndex::new(cfg.max_chain_events),
            joined_wire: false,
            sessions: TimedIndex::new(cfg.max_chain_events),
            wire_inputs: false,
            cfg,
        }
    }

    /// Host events dated more than `d` ahead of the reference clock are
    /// rejected (`[hostlog] max_ahead`; 5 minutes unless set).
    #[must_use]
    pub fn with_max_ahead(mut self, d: Duration) -> Self {
        self.clock = RefClock::new(d);
        self
    }

    /// The process classes that raise severity (`[process_classes]`).
    #[must_use]
    pub fn with_process_classes(mut self, classes: ProcessClassesConfig) -> Self {
        self.classes = classes;
        self
    }

    fn tables(&self) -> [&dyn Budgeted; 10] {
        [
            &self.pairs,
            &self.host_net,
            &self.chain_events,
            &self.scans,
            &self.fired,
            &self.processes,
            &self.drops,
            &self.wire_acts,
            &self.host_acts,
            &self.sessions,
        ]
    }

    /// Evict until the tables fit `max_bytes` together.
    fn enforce_budget(&mut self) {
        enforce_budget(
            self.cfg.max_bytes,
            &mut [
                &mut self.pairs,
                &mut self.host_net,
                &mut self.chain_events,
                &mut self.scans,
                &mut self.fired,
                &mut self.processes,
                &mut self.drops,
                &mut self.wire_acts,
                &mut self.host_acts,
                &mut self.sessions,
            ],
        );
    }

    /// The last host event rejected as too far ahead, with the number of
    /// rejections so far, once per rejection (for the daemon's log: one
    /// line per report, not one per event).
    pub fn take_rejected(&mut self) -> Option<(TooFarAhead, u64)> {
        self.rejected.take().map(|r| (r, self.stats.rejected_ahead))
    }

    /// The settings.
    pub fn config(&self) -> &CorrelateConfig {
        &self.cfg
    }

    /// Counters so far.
    pub fn stats(&self) -> CorrelateStats {
        CorrelateStats {
            evicted: self.pairs.evicted()
                + self.host_net.evicted()
                + self.chain_events.evicted()
                + self.scans.evicted()
                + self.fired.evicted()
                + self.processes.evicted()
                + self.drops.evicted()
                + self.wire_acts.evicted()
                + self.host_acts.evicted()
                + self.sessions.evicted(),
            held: (self.pairs.len()
                + self.host_net.len()
                + self.chain_events.len()
                + self.scans.len()
                + self.fired.len()
                + self.processes.len()
                + self.drops.len()
                + self.wire_acts.len()
                + self.host_acts.len()
                + self.sessions.len()
                + self.waiting_len()) as u64,
            bytes: total_bytes(&self.tables()) as u64,
            process_evictions: self.processes.evictions(),
            process_hosts: self.processes.hosts() as u64,
            ..self.stats
        }
    }

    /// Move the reference clock to `now` (the daemon's wall clock, replay's
    /// capture time) and drop what can no longer match. Gateway events and
    /// scan alerts move it too: they are stamped with the same clock.
    pub fn advance(&mut self, now: DateTime<Utc>) {
        self.clock.advance(now);
        let short = add(delta(self.cfg.retention), self.skew);
        let long = add(short, self.chain_window);
        if let Some(c) = self.clock.cutoff(short) {
            self.pairs.prune(c);
            self.host_net.prune(c);
            self.wire_acts.prune(c);
            self.host_acts.prune(c);
        }
        if let Some(c) = self.clock.cutoff(long) {
            self.chain_events.prune(c);
            self.sessions.prune(c);
            self.scans.prune(c);
            self.fired.prune(c);
            self.drops.prune(c);
        }
        if let Some(c) = self.clock.cutoff(delta(self.cfg.process_retention)) {
            self.processes.prune(c);
        }
    }

    /// Starts fetching what [`Self::on_gateway_event`] will look up for
    /// `ev` (its pair's index bucket), so the cache miss overlaps the
    /// caller's other work (the detector).
    pub fn prefetch(&self, ev: &GatewayEvent) {
        if ev.kind == GatewayEventKind::NewPair {
            self.pairs.prefetch(&(ev.src, ev.dst, ev.dport));
        }
    }

    /// Feed a gateway event. A `NewPair` is matched against host network
    /// events already seen and kept for later ones; other kinds only
    /// advance time. Returns whether the pair was attributed (the
    /// attribution itself is kept: [`Self::attribution`], and alerts are
    /// enriched from it).
    pub fn on_gateway_event(&mut self, ev: &GatewayEvent) -> bool {
        self.advance(ev.ts);
        if ev.kind != GatewayEventKind::NewPair {
            return false;
        }
        self.stats.pairs += 1;
        let key = (ev.src, ev.dst, ev.dport);
        let mut rec = PairRec {
            sport: ev.sport,
            ifindex: ev.ifindex,
            vlan: ev.vlan,
            attribution: None,
        };
        for (hts, net) in self.host_net.get(&key) {
            if net.src_port.is_none_or(|p| p == ev.sport) && (*hts - ev.ts).abs() <= self.skew {
                merge(&mut rec, ev.ts, key, *hts, net);
            }
        }
        let attributed = rec.attribution.is_some();
        if attributed {
            self.stats.attributed += 1;
        }
        self.pairs.insert(ev.ts, key, rec);
        self.enforce_budget();
        attributed
    }

    /// Feed a host event: network events are matched against pairs already
    /// seen; share access and network logons are checked for chains. The
    /// event's time does not move the reference clock; an event dated more
    /// than `max_ahead` ahead of it is rejected (counted, see
    /// [`take_rejected`](Self::take_rejected)).
    /// Returns the `lateral_movement_chain` alerts it completes; an
    /// attribution it makes is kept ([`Self::attribution`]) for the alerts
    /// that are enriched from it.
    pub fn on_host_event(&mut self, ev: &HostEvent) -> Vec<Alert> {
        if let Err(e) = self.clock.admit(ev.ts) {
            self.stats.rejected_ahead += 1;
            self.rejected = Some(e);
            return Vec::new();
        }
        self.stats.host_events += 1;
        self.joined_wire = false;
        let out = match &ev.record {
            HostRecord::NetworkConnection(c) => {
                self.host_connection(ev, c);
                Vec::new()
            }
            HostRecord::ShareAccess(_) | HostRecord::Logon(_) | HostRecord::FileCreation(_) => {
                self.host_chain_event(ev)
            }
            HostRecord::ServiceInstall(_) | HostRecord::TaskCreation(_) => {
                self.host_remote_exec(ev)
            }
            HostRecord::ProcessCreation(p) => {
                self.stats.process_creations += 1;
                self.processes.insert(ev.ts, ev.host.as_deref(), p);
                Vec::new()
            }
        };
        self.enforce_budget();
        out
    }

    fn host_connection(&mut self, ev: &HostEvent, c: &NetworkConnection) {
        // The server side's record names the server process (System for
        // SMB): never the client we are looking for.
        if c.direction == Some(Direction::Inbound) {
            return;
        }
        let (Some(src), Some(dst), Some(dport)) = (c.src_ip, c.dst_ip, c.dst_port) else {
            return;
        };
        let key = (src, dst, dport);
        let net = NetRec {
            src_port: c.src_port,
            process: c.process.info(),
            user: c.account.qualified(),
            host: ev.host.clone(),
            guid: c.process.guid.clone(),
            event_id: ev.event_id(),
        };
        let (skew, mut attributed) = (self.skew, 0);
        self.pairs.modify(&key, |pts, pair| {
            if net.src_port.is_none_or(|p| p == pair.sport) && (ev.ts - pts).abs() <= skew {
                let first = pair.attribution.is_none();
                if merge(pair, pts, key, ev.ts, &net) && first {
                    attributed += 1;
                }
            }
        });
        self.stats.attributed += attributed;
        self.host_net.insert(ev.ts, key, net);
    }

    /// Whether the last host event fed reported an act an SMB alert from
    /// the wire already carries (or is now released carrying): its
    /// host-rule alert is then not raised. Cleared by reading.
    pub fn take_joined_wire(&mut self) -> bool {
        std::mem::take(&mut self.joined_wire)
    }

    fn waiting_len(&self) -> usize {
        self.wire_waiting()
    }

    /// The attribution of one pair, if known.
    pub fn attribution(
        &self,
        src: IpAddr,
        dst: IpAddr,
        sport: u16,
        dport: u16,
    ) -> Option<&Attribution> {
        self.pairs
            .get(&(src, dst, dport))
            .filter(|(_, p)| p.sport == sport)
            .find_map(|(_, p)| p.attribution.as_deref())
    }
}

fn same_process(a: &ProcessInfo, b: &ProcessInfo) -> bool {
    let names = match (&a.name, &b.name) {
        (Some(x), Some(y)) => x.eq_ignore_ascii_case(y),
        _ => true,
    };
    let pids = match (a.pid, b.pid) {
        (Some(x), Some(y)) => x == y,
        _ => true,
    };
    names && pids
}

/// Merge a host record into a pair's attribution; true if anything changed.
fn merge(
    pair: &mut PairRec,
    pair_ts: DateTime<Utc>,
    key: FlowKey,
    host_ts: DateTime<Utc>,
    net: &NetRec,
) -> bool {
    match &mut pair.attribution {
        None => {
            pair.attribution = Some(Box::new(Attribution {
                pair_ts,
                host_ts,
                src: key.0,
                dst: key.1,
                sport: pair.sport,
                dport: key.2,
                process: net.process.clone(),
                user: net.user.clone(),
                host: net.host.clone(),
                event_ids: vec![net.event_id],
                ifindex: pair.ifindex,
                vlan: pair.vlan,
            }));
            true
        }
        Some(a) => {
            // A different process on the same 5-tuple would contradict the
            // first record: keep the first rather than mixing two.
            if !same_process(&a.process, &net.process) {
                return false;
            }
            let mut changed = fill(&mut a.process.pid, &net.process.pid);
            changed |= fill(&mut a.process.name, &net.process.name);
            changed |= fill(&mut a.process.executable, &net.process.executable);
            changed |= fill(&mut a.user, &net.user);
            changed |= fill(&mut a.host, &net.host);
            if !a.event_ids.contains(&net.event_id) {
                a.event_ids.push(net.event_id);
                changed = true;
            }
            changed
        }
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod context_tests;

#[cfg(test)]
mod fair_tests;

#[cfg(test)]
mod remote_exec_tests;

#[cfg(test)]
mod share_wait_tests;
