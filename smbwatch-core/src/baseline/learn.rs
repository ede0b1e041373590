//! The learner: the tables, and one pass per answered pair that learns it
//! and gathers what scoring needs (scoring itself: `score.rs`; identity:
//! `hosts.rs`; upkeep and batches: `tables.rs`).

use std::collections::HashMap;
use std::net::IpAddr;

use ahash::RandomState;
use ipnet::IpNet;

use super::finding::{Incident, Score};
use super::index::{learn_end, Index, ServerInfo};
use super::rate::NewClientRate;
use super::record::{Client, Edge, Meta, Snapshot};
use super::{addr_key, BaselineConfig, BaselineStats};
use crate::alert::{Alert, AlertKind};
use crate::event::{GatewayEvent, GatewayEventKind};

pub(super) const DAY: i64 = 86_400;

/// A record in a table, with whether it waits for the next batch: the
/// flag first, beside the table's key, so a session's check of it reads
/// a line the lookup already brought in (see [`Client`]'s layout).
#[repr(C)]
pub(super) struct Slot<T> {
    pub(super) dirty: bool,
    pub rec: T,
}

impl<T> Slot<T> {
    pub(super) fn clean(rec: T) -> Self {
        Self { dirty: false, rec }
    }
}

/// The learned SMB graph, and the rules that score against it.
pub struct Baseline {
    pub(super) cfg: BaselineConfig,
    /// `[detect] allow`: learned, never alerted on.
    pub(super) allow: Vec<IpNet>,
    pub(super) hold_down: i64,
    pub(super) clients: HashMap<u128, Slot<Client>, RandomState>,
    pub(super) edges: HashMap<(u128, u128), Slot<Edge>, RandomState>,
    /// Edges into each server held now: its client count.
    pub(super) server_clients: HashMap<u128, u32, RandomState>,
    pub(super) meta: Meta,
    pub(super) stats: BaselineStats,
    /// Keys of records changed since the last batch (each once: its
    /// slot's `dirty` flag says it is queued).
    pub(super) dirty_clients: Vec<u128>,
    pub(super) dirty_edges: Vec<(u128, u128)>,
    pub(super) deleted_clients: Vec<u128>,
    pub(super) deleted_edges: Vec<(u128, u128)>,
    /// Per source, its alerts in the current hold-down.
    pub(super) held: HashMap<u128, Incident, RandomState>,
    /// New clients learned per prefix this hour.
    pub(super) new_clients: NewClientRate,
    /// What scoring derives from the tables.
    pub(super) idx: Index,
}

impl Baseline {
    /// An empty baseline. `allow` and `hold_down` are `[detect]`'s: every
    /// alert kind shares them.
    pub fn new(cfg: BaselineConfig, allow: Vec<IpNet>, hold_down: std::time::Duration) -> Self {
        Self {
            allow,
            hold_down: i64::try_from(hold_down.as_secs()).unwrap_or(i64::MAX),
            clients: HashMap::default(),
            edges: HashMap::default(),
            server_clients: HashMap::default(),
            meta: Meta::default(),
            stats: BaselineStats::default(),
            dirty_clients: Vec::new(),
            dirty_edges: Vec::new(),
            deleted_clients: Vec::new(),
            deleted_edges: Vec::new(),
            held: HashMap::default(),
            new_clients: NewClientRate::new(&cfg),
            idx: Index::default(),
            cfg,
        }
    }

    /// A baseline holding `snap` (nothing dirty: it is what the database has).
    /// Past the caps, the least recently seen entries are evicted at once.
    pub fn from_snapshot(mut self, snap: Snapshot) -> Self {
        self.meta = snap.meta;
        let end = learn_end(&snap, self.cfg.learn_for);
        for (k, e) in snap.edges {
            *self.server_clients.entry(k.1).or_default() += 1;
            self.edges.insert(k, Slot::clean(e));
        }
        self.clients
            .extend(snap.clients.into_iter().map(|(k, c)| (k, Slot::clean(c))));
        self.evict_clients_if_full();
        self.evict_edges_if_full();
        self.reindex(end);
        self
    }

    /// The settings in force.
    pub fn config(&self) -> &BaselineConfig {
        &self.cfg
    }

    /// `[detect] allow` as given.
    pub fn allow(&self) -> &[IpNet] {
        &self.allow
    }

    /// `[detect] hold_down` as given.
    pub fn hold_down(&self) -> std::time::Duration {
        std::time::Duration::from_secs(u64::try_from(self.hold_down).unwrap_or(u64::MAX))
    }

    /// Counters and sizes.
    pub fn stats(&self) -> BaselineStats {
        BaselineStats {
            clients: self.clients.len(),
            edges: self.edges.len(),
            evicted_clients: self.meta.evicted_clients,
            evicted_edges: self.meta.evicted_edges,
            ..self.stats
        }
    }

    /// Every client held, by address key (unordered).
    pub fn clients(&self) -> impl Iterator<Item = (&u128, &Client)> {
        self.clients.iter().map(|(k, s)| (k, &s.rec))
    }

    /// What the baseline holds for the client at `ip` now (the host seen
    /// there last, by MAC or name, else the address).
    pub fn client(&self, ip: IpAddr) -> Option<&Client> {
        self.clients.get(&self.resolve(ip)).map(|s| &s.rec)
    }

    /// What the baseline holds for the edge from the client at `client`.
    pub fn edge(&self, client: IpAddr, server: IpAddr) -> Option<&Edge> {
        self.edges
            .get(&(self.resolve(client), addr_key(server)))
            .map(|s| &s.rec)
    }

    /// The client record of `key`, created (first seen at `t`) when absent,
    /// queued for the next batch.
    pub(super) fn slot_client(&mut self, key: u128, t: i64) -> &mut Slot<Client> {
        if self.clients.len() >= self.cfg.max_clients && !self.clients.contains_key(&key) {
            self.evict_clients(self.cfg.max_clients - self.cfg.max_clients / 16);
        }
        let slot = self
            .clients
            .entry(key)
            .or_insert_with(|| Slot::clean(Client::new(t)));
        if !slot.dirty {
            slot.dirty = true;
            self.dirty_clients.push(key);
        }
        slot
    }

    /// The whole-baseline facts.
    pub fn meta(&self) -> Meta {
        self.meta
    }

    /// Whether `t` (Unix seconds) falls in the learning period (true before
    /// anything was learned).
    pub fn learning_at(&self, t: i64) -> bool {
        self.meta.started.is_none_or(|s| {
            let end = s.saturating_add(self.cfg.learn_for.as_secs() as i64);
            t < end
        })
    }

    /// One gateway event: learned when it proves a real session (the
    /// client's ACK after the SYN-ACK, which the kernel reports once per
    /// activity epoch the pair is used in), and scored once learning is
    /// over. A SYN-ACK alone is only counted: it answers spoofed SYNs too.
    /// An `Active` (a known pair's SYN in a later epoch) teaches nothing
    /// either: a spoofed SYN from a known client's address would otherwise
    /// teach its usual hours; the same use's `Confirmed` does. Returns the
    /// alerts it raised.
    pub fn observe(&mut self, ev: &GatewayEvent) -> Vec<Alert> {
        self.stats.events += 1;
        match ev.kind {
            GatewayEventKind::Confirmed => {}
            GatewayEventKind::Accepted => {
                self.stats.syn_acks += 1;
                return Vec::new();
            }
            _ => return Vec::new(),
        }
        let t = ev.ts.timestamp();
        let day = t.div_euclid(DAY);
        let addr = addr_key(ev.src);
        let server = addr_key(ev.dst);
        let client = self.host_of(ev, t, day);
        let secs_of_day = t.rem_euclid(DAY);
        let hour = (secs_of_day / 3600) as u32;
        // 1970-01-01 was a Thursday: Monday is day 4 of that week.
        let weekday = (day + 3).rem_euclid(7);
        let weekend = weekday >= 5;
        let week_hour = (weekday * 24) as u32 + hour;
        let office_ok = self.office_hour(weekend, hour);
        // The client: one lookup for a known one (the table's line is the
        // event's first cache miss).
        let slot = match self.clients.get_mut(&client) {
            Some(slot) => {
                if !slot.dirty {
                    slot.dirty = true;
                    self.dirty_clients.push(client);
                }
                slot
            }
            None if !self.new_clients.admit(ev.src, t) => {
                // Past the per-prefix rate of new clients: not learned (it
                // would evict real clients), still scored below as unknown.
                self.stats.new_clients_limited += 1;
                return self.score_unlearned(ev, client, server, t);
            }
            None => {
                // `slot_client`'s insert, borrowing the table alone.
                if self.clients.len() >= self.cfg.max_clients {
                    self.evict_clients(self.cfg.max_clients - self.cfg.max_clients / 16);
                }
                self.dirty_clients.push(client);
                let slot = self
                    .clients
                    .entry(client)
                    .or_insert_with(|| Slot::clean(Client::new(t)));
                slot.dirty = true;
                slot
            }
        };
        self.stats.learned += 1;
        self.meta.learned += 1;
        let started = *self.meta.started.get_or_insert(t);
        self.meta.last = Some(self.meta.last.map_or(t, |l| l.max(t)));
        let learn_end = started.saturating_add(self.cfg.learn_for.as_secs() as i64);
        let learning = t < learn_end;
        let rec = self.cfg.recurrence_days;
        let slack = self.cfg.slack_hours();
        let manager_min = self.cfg.manager_min_targets;

        let c = &mut slot.rec;
        let client_new = c.events == 0;
        let client_was_established = c.established;
        let manager = manager_min > 0 && c.usual_servers >= manager_min;
        let client_new_day = c.last_day != day;
        c.events += 1;
        c.last_seen = c.last_seen.max(t);
        if client_new_day {
            c.days = c.days.saturating_add(1);
            c.last_day = day;
            c.day_hours = 0;
        }
        let (usual, hour_days) = if weekend {
            (&mut c.weekend_hours, &mut c.weekend_hour_days)
        } else {
            (&mut c.usual_hours, &mut c.hour_days)
        };
        if c.day_hours & (1 << hour) == 0 {
            c.day_hours |= 1 << hour;
            hour_days[hour as usize] = hour_days[hour as usize].saturating_add(1);
        }
        c.week_hours[(week_hour / 64) as usize] |= 1 << (week_hour % 64);
        // Off hours: away from the client's own hours of this part of the
        // week and, for an ordinary client, from the office's; a
        // management source's hours are its schedule.
        let own = near(*usual, hour, slack);
        let off_hours = client_was_established && !learning && !own && (manager || !office_ok);
        let newly_usual =
            *usual & (1 << hour) == 0 && (learning || u32::from(hour_days[hour as usize]) >= rec);
        if newly_usual {
            *usual |= 1 << hour;
        }
        let now_established = !c.established && (learning || c.days >= rec);
        if now_established {
            c.established = true;
        }
        let established = c.established;
        // Copied only when it turns normal (the record is ~300 bytes).
        let turned = now_established.then_some(*c);
        if let Some(c) = turned {
            self.idx.established += 1;
            self.idx.add_office(&c, 1);
        } else if newly_usual && established {
            self.idx.office[usize::from(weekend)][hour as usize] += 1;
        }
        self.bind(client, addr);

        // The edge.
        let key = (client, server);
        if self.edges.len() >= self.cfg.max_edges && !self.edges.contains_key(&key) {
            self.evict_edges(self.cfg.max_edges - self.cfg.max_edges / 16);
        }
        let mut edge_exists = true;
        let slot = self.edges.entry(key).or_insert_with(|| {
            edge_exists = false;
            Slot::clean(Edge::new(t))
        });
        if !slot.dirty {
            slot.dirty = true;
            self.dirty_edges.push(key);
        }
        let e = &mut slot.rec;
        let edge_was_established = e.established;
        let edge_new_day = e.last_day != day;
        e.count += 1;
        e.last_seen = e.last_seen.max(t);
        if edge_new_day {
            e.days = e.days.saturating_add(1);
            e.last_day = day;
        }
        let edge_now_established = !e.established && (learning || e.days >= rec);
        if edge_now_established {
            e.established = true;
        }
        let edge_days = e.days;
        let mut dst_clients_before = 0;
        let mut introduced = false;
        if !edge_exists || edge_now_established {
            let n = self.server_clients.entry(server).or_default();
            dst_clients_before = *n;
            if !edge_exists {
                *n += 1;
                let count = *n;
                let info = self.idx.servers.entry(server).or_insert(ServerInfo {
                    first: t,
                    intro: None,
                });
                // A server first seen after learning that gains its
                // clients quickly: one alert, then its edges learn.
                let window = self.cfg.new_server_window.as_secs() as i64;
                if info.intro.is_none()
                    && info.first >= learn_end
                    && count == self.cfg.new_server_clients.max(1)
                    && t - info.first <= window
                {
                    info.intro = Some(t);
                    introduced = true;
                }
            }
            if let Some(c) = self.clients.get_mut(&client) {
                let c = &mut c.rec;
                if !edge_exists {
                    c.servers += 1;
                }
                if edge_now_established {
                    c.usual_servers += 1;
                    if !c.listed.contains(&server) {
                        if let Some(slot) = c.listed.iter_mut().find(|s| **s == 0) {
                            *slot = server;
                        }
                    }
                }
            }
            if edge_now_established {
                self.idx.by_client.entry(client).or_default().push(server);
            }
        } else if !learning {
            dst_clients_before = self.server_clients.get(&server).copied().unwrap_or(0);
        }

        if learning {
            return Vec::new();
        }
        // Scoring: what the baseline knew before this event.
        let mut found = Vec::new();
        // A new client or edge alerts at its first session; it then learns
        // (normal after `recurrence_days` days) without alerting daily.
        if !client_was_established {
            if client_new {
                found.push(AlertKind::SmbNewClient);
            }
        } else {
            if !edge_was_established
                && !edge_exists
                && !self.edge_expected(client, server, manager, t, day)
            {
                found.push(AlertKind::SmbNewEdge);
            }
            if off_hours {
                found.push(AlertKind::SmbOffHours);
            }
        }
        let client_days = self.clients.get(&client).map_or(1, |c| c.rec.days);
        let score = Score {
            client,
            server,
            t,
            hour,
            dst_clients_before,
            client_days,
            edge_days,
        };
        let mut out = self.raise(&found, &score, ev);
        if introduced {
            out.push(self.new_server_alert(server, t, ev));
        }
        out
    }
}

/// Whether any usual hour lies within `slack` hours of `hour` (wrapping
/// around midnight).
fn near(usual: u32, hour: u32, slack: u32) -> bool {
    let slack = slack.min(12) as i32;
    (-slack..=slack).any(|d| {
        let h = (hour as i32 + d).rem_euclid(24);
        usual & (1 << h) != 0
    })
}
