//! The connection table: one parser session per SMB connection, bounded
//! in bytes, finished on FIN/RST, idleness or eviction (never dropped
//! without its last observations).

use std::collections::{HashMap, VecDeque};
use std::mem::size_of;
use std::net::SocketAddr;
use std::time::SystemTime;

use chrono::{DateTime, Utc};
use smbwatch_smb::{Direction, Observation, Seen, Segment, Session};

use super::rules::{Context, FlowRules, Rules};
use super::{kind_index, Account, SmbCounters, SmbEvent, SmbOutput, SmbSample, SmbSettings};
use crate::event::MacAddr;
use crate::timed::delta;

/// (client, server).
type FlowKey = (SocketAddr, SocketAddr);

/// Fixed cost of a connection besides its parser's heap: the entry, its
/// slot in the age queue and hash-map slack (a round figure above the
/// real use, as in `crate::timed`).
const FLOW_OVERHEAD: usize = size_of::<(FlowKey, Flow)>() + size_of::<(FlowKey, u64)>() + 64;

#[derive(Debug)]
struct Flow {
    session: Session,
    /// Distinguishes this connection from an earlier one of the same key
    /// in the age queue.
    id: u64,
    last: DateTime<Utc>,
    client_mac: Option<MacAddr>,
    vlan: Option<u16>,
    account: Option<Account>,
    rules: FlowRules,
    /// Bytes accounted for this connection.
    cost: usize,
}

impl Flow {
    fn measure(&self) -> usize {
        FLOW_OVERHEAD
            + self.session.heap_bytes()
            + self.account.as_ref().map_or(0, |a| {
                a.user.capacity() + a.domain.capacity() + a.workstation.capacity()
            })
            + self.rules.heap_size()
    }
}

/// See the module documentation of [`super`].
#[derive(Debug)]
pub struct SmbMonitor {
    settings: SmbSettings,
    flows: HashMap<FlowKey, Flow, ahash::RandomState>,
    /// Connections by age (first sample), oldest first; entries of
    /// connections already gone are skipped.
    age: VecDeque<(FlowKey, u64)>,
    next_id: u64,
    bytes: usize,
    rules: Rules,
    counters: SmbCounters,
    /// The latest time seen (samples and expiry), for pruning rule state.
    clock: Option<DateTime<Utc>>,
}

fn system_time(t: DateTime<Utc>) -> SystemTime {
    SystemTime::from(t)
}

fn utc(t: SystemTime) -> DateTime<Utc> {
    DateTime::<Utc>::from(t)
}

impl SmbMonitor {
    /// A monitor with these settings (see [`SmbSettings::validate`]).
    pub fn new(settings: SmbSettings) -> Self {
        Self {
            settings,
            flows: HashMap::default(),
            age: VecDeque::new(),
            next_id: 0,
            bytes: 0,
            rules: Rules::new(),
            counters: SmbCounters::default(),
            clock: None,
        }
    }

    /// The settings.
    pub fn settings(&self) -> &SmbSettings {
        &self.settings
    }

    /// Counters so far.
    pub fn counters(&self) -> SmbCounters {
        SmbCounters {
            flows: self.flows.len() as u64,
            bytes: self.bytes as u64,
            rule_evicted: self.rules.evicted(),
            ..self.counters
        }
    }

    /// One sampled segment: its observations as events, and the alerts they
    /// raise, appended to `out` in order.
    pub fn observe(&mut self, sample: &SmbSample<'_>, out: &mut Vec<SmbOutput>) {
        self.counters.samples += 1;
        self.counters.sample_bytes += sample.data.len() as u64;
        if !self.settings.enabled {
            self.counters.disabled += 1;
            return;
        }
        self.tick(sample.ts);
        let key = (sample.client, sample.server);
        if !self.flows.contains_key(&key) {
            let id = self.next_id;
            self.next_id += 1;
            self.counters.flows_opened += 1;
            self.age.push_back((key, id));
            let flow = Flow {
                session: Session::new(),
                id,
                last: sample.ts,
                client_mac: None,
                vlan: sample.vlan,
                account: None,
                rules: FlowRules::default(),
                cost: 0,
            };
            self.flows.insert(key, flow);
        }
        let flow = self.flows.get_mut(&key).expect("inserted above");
        flow.last = flow.last.max(sample.ts);
        if sample.direction == Direction::ToServer && sample.src_mac.is_some() {
            flow.client_mac = sample.src_mac;
        }
        flow.vlan = flow.vlan.or(sample.vlan);
        let seen = flow.session.segment(
            sample.direction,
            Segment {
                seq: sample.seq,
                data: sample.data,
                wire_len: sample.wire_len,
            },
            system_time(sample.ts),
        );
        self.emit(key, seen, out);
        if sample.fin_or_rst {
            self.counters.flows_closed += 1;
            self.close(key, sample.ts, out);
        } else {
            self.account(key);
        }
        self.enforce_budget(sample.ts, out);
    }

    /// Finishes and drops the connections idle for `idle_timeout` at `now`
    /// (their last observations and alerts go to `out`); prunes rule state.
    pub fn expire(&mut self, now: DateTime<Utc>, out: &mut Vec<SmbOutput>) {
        self.tick(now);
        let idle = delta(self.settings.idle_timeout);
        let mut gone: Vec<(FlowKey, DateTime<Utc>)> = self
            .flows
            .iter()
            .filter(|(_, f)| now - f.last >= idle)
            .map(|(k, f)| (*k, f.last))
            .collect();
        // Oldest first, so the output is in time order whatever the map's.
        gone.sort_by_key(|(k, t)| (*t, *k));
        for (key, last) in gone {
            self.counters.flows_expired += 1;
            self.close(key, last, out);
        }
        self.compact_age();
    }

    /// Finishes and drops every connection (the end of input), oldest
    /// first.
    pub fn finish_all(&mut self, out: &mut Vec<SmbOutput>) {
        let mut all: Vec<(FlowKey, DateTime<Utc>)> =
            self.flows.iter().map(|(k, f)| (*k, f.last)).collect();
        all.sort_by_key(|(k, t)| (*t, *k));
        for (key, last) in all {
            self.counters.flows_expired += 1;
            self.close(key, last, out);
        }
        self.age.clear();
    }

    /// Moves the rules' clock and prunes their windows.
    fn tick(&mut self, now: DateTime<Utc>) {
        if self.clock.is_none_or(|c| now > c) {
            self.clock = Some(now);
            self.rules.prune(&self.settings, now);
        }
    }

    /// Re-measures one connection after it changed.
    fn account(&mut self, key: FlowKey) {
        if let Some(f) = self.flows.get_mut(&key) {
            let cost = f.measure();
            self.bytes = self.bytes - f.cost + cost;
            f.cost = cost;
        }
    }

    /// Finishes a connection and drops it.
    fn close(&mut self, key: FlowKey, at: DateTime<Utc>, out: &mut Vec<SmbOutput>) {
        let Some(flow) = self.flows.get_mut(&key) else {
            return;
        };
        let seen = flow.session.finish(system_time(at));
        self.emit(key, seen, out);
        if let Some(f) = self.flows.remove(&key) {
            self.bytes -= f.cost;
        }
    }

    /// Evicts the oldest connections (finishing them) until the table fits.
    fn enforce_budget(&mut self, now: DateTime<Utc>, out: &mut Vec<SmbOutput>) {
        while self.bytes > self.settings.max_bytes {
            let Some((key, id)) = self.age.pop_front() else {
                break;
            };
            if self.flows.get(&key).is_some_and(|f| f.id == id) {
                self.counters.evicted += 1;
                self.close(key, now, out);
            }
        }
        self.compact_age();
    }

    /// Keeps the age queue from growing with connections already gone.
    fn compact_age(&mut self) {
        if self.age.len() > 2 * self.flows.len() + 64 {
            let flows = &self.flows;
            self.age
                .retain(|(k, id)| flows.get(k).is_some_and(|f| f.id == *id));
        }
    }

    /// Events and alerts for what one connection's session yielded.
    fn emit(&mut self, key: FlowKey, seen: Vec<Seen>, out: &mut Vec<SmbOutput>) {
        let Some(flow) = self.flows.get_mut(&key) else {
            return;
        };
        let mut alerts = Vec::new();
        for s in seen {
            self.counters.observations[kind_index(&s.observation)] += 1;
            if let Observation::Auth {
                user,
                domain,
                workstation,
                anonymous,
                guest,
                ..
            } = &s.observation
            {
                flow.account = Some(Account {
                    user: user.clone(),
                    domain: domain.clone(),
                    workstation: workstation.clone(),
                    anonymous: *anonymous,
                    guest: *guest,
                });
            }
            let ts = utc(s.at);
            let cx = Context {
                ts,
                client: key.0,
                server: key.1,
                vlan: flow.vlan,
                account: flow.account.as_ref(),
                share: s.share.as_deref(),
                pipe: s.pipe.as_deref(),
            };
            self.rules.check(
                &self.settings,
                &mut self.counters,
                &mut flow.rules,
                &cx,
                &s.observation,
                &mut alerts,
            );
            out.push(SmbOutput::Event(SmbEvent {
                ts,
                client: key.0,
                server: key.1,
                direction: s.direction,
                client_mac: flow.client_mac,
                vlan: flow.vlan,
                account: flow.account.clone(),
                share: s.share,
                pipe: s.pipe,
                observation: s.observation,
            }));
            out.extend(alerts.drain(..).map(|a| SmbOutput::Alert(Box::new(a))));
        }
    }
}
