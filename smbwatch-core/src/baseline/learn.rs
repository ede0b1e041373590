//! The learner and scorer: one pass per answered pair.

use std::collections::HashMap;
use std::net::IpAddr;

use ahash::RandomState;
use ipnet::IpNet;

use super::rate::NewClientRate;
use super::record::{Batch, Client, Edge, Meta, Snapshot};
use super::{addr_key, BaselineConfig, BaselineStats, Role};
use crate::alert::{Alert, AlertKind};
use crate::event::{GatewayEvent, GatewayEventKind};

const DAY: i64 = 86_400;

/// Hold-down entries kept before the stale ones are pruned.
const MAX_HELD: usize = 65_536;

/// A record in a table, with whether it waits for the next batch.
pub(super) struct Slot<T> {
    pub rec: T,
    dirty: bool,
}

impl<T> Slot<T> {
    fn clean(rec: T) -> Self {
        Self { rec, dirty: false }
    }
}

/// What scoring needs of an event besides the event.
struct Score {
    client: u128,
    server: u128,
    t: i64,
    hour: u32,
    dst_clients_before: u32,
    client_days: u32,
    edge_days: u32,
}

/// What an event found, for the alert messages.
pub(super) struct Finding {
    pub kind: AlertKind,
    pub t: i64,
    pub client: u128,
    pub server: u128,
    pub src_role: Role,
    pub dst_role: Role,
    pub hour: u32,
    /// Days the client (new client) or the edge (new edge) has been seen.
    pub days: u32,
}

/// The learned SMB graph, and the rules that score against it.
pub struct Baseline {
    pub(super) cfg: BaselineConfig,
    /// `[detect] allow`: learned, never alerted on.
    allow: Vec<IpNet>,
    hold_down: i64,
    pub(super) clients: HashMap<u128, Slot<Client>, RandomState>,
    pub(super) edges: HashMap<(u128, u128), Slot<Edge>, RandomState>,
    /// Edges into each server held now: its client count.
    pub(super) server_clients: HashMap<u128, u32, RandomState>,
    pub(super) meta: Meta,
    stats: BaselineStats,
    /// Keys of records changed since the last batch (each once: its
    /// slot's `dirty` flag says it is queued).
    dirty_clients: Vec<u128>,
    dirty_edges: Vec<(u128, u128)>,
    deleted_clients: Vec<u128>,
    deleted_edges: Vec<(u128, u128)>,
    /// Last alert per (client, kind), for the hold-down.
    held: HashMap<(u128, AlertKind), i64, RandomState>,
    /// New clients learned per prefix this hour.
    new_clients: NewClientRate,
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
            cfg,
        }
    }

    /// A baseline holding `snap` (nothing dirty: it is what the database has).
    /// Past the caps, the least recently seen entries are evicted at once.
    pub fn from_snapshot(mut self, snap: Snapshot) -> Self {
        self.meta = snap.meta;
        for (k, e) in snap.edges {
            *self.server_clients.entry(k.1).or_default() += 1;
            self.edges.insert(k, Slot::clean(e));
        }
        self.clients
            .extend(snap.clients.into_iter().map(|(k, c)| (k, Slot::clean(c))));
        self.evict_clients_if_full();
        self.evict_edges_if_full();
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

    /// A logon naming the workstation at `ip` (4624 `WorkstationName` with
    /// `IpAddress`) at `t` (Unix seconds).
    pub fn observe_logon(&mut self, _t: i64, _ip: IpAddr, _name: &str) {}

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

    /// What the baseline holds for a client.
    pub fn client(&self, ip: IpAddr) -> Option<&Client> {
        self.clients.get(&addr_key(ip)).map(|s| &s.rec)
    }

    /// What the baseline holds for an edge.
    pub fn edge(&self, client: IpAddr, server: IpAddr) -> Option<&Edge> {
        self.edges
            .get(&(addr_key(client), addr_key(server)))
            .map(|s| &s.rec)
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
        let (client, server) = (addr_key(ev.src), addr_key(ev.dst));
        if !self.clients.contains_key(&client) && !self.new_clients.admit(ev.src, t) {
            // Past the per-prefix rate of new clients: not learned (it
            // would evict real clients), still scored below as unknown.
            self.stats.new_clients_limited += 1;
            return self.score_unlearned(ev, client, server, t);
        }
        self.stats.learned += 1;
        self.meta.learned += 1;
        let started = *self.meta.started.get_or_insert(t);
        self.meta.last = Some(self.meta.last.map_or(t, |l| l.max(t)));
        let learning = t < started.saturating_add(self.cfg.learn_for.as_secs() as i64);
        let day = t.div_euclid(DAY);
        let secs_of_day = t.rem_euclid(DAY);
        let hour = (secs_of_day / 3600) as u32;
        // 1970-01-01 was a Thursday: Monday is day 4 of that week.
        let week_hour = ((day + 3).rem_euclid(7) * 24) as u32 + hour;
        let rec = self.cfg.recurrence_days;
        let slack = self.cfg.slack_hours();

        // The client.
        if self.clients.len() >= self.cfg.max_clients && !self.clients.contains_key(&client) {
            self.evict_clients(self.cfg.max_clients - self.cfg.max_clients / 16);
        }
        let slot = self
            .clients
            .entry(client)
            .or_insert_with(|| Slot::clean(Client::new(t)));
        if !slot.dirty {
            slot.dirty = true;
            self.dirty_clients.push(client);
        }
        let c = &mut slot.rec;
        let client_new = c.events == 0;
        let client_was_established = c.established;
        let client_new_day = c.last_day != day;
        c.events += 1;
        c.last_seen = c.last_seen.max(t);
        if client_new_day {
            c.days = c.days.saturating_add(1);
            c.last_day = day;
            c.day_hours = 0;
        }
        if c.day_hours & (1 << hour) == 0 {
            c.day_hours |= 1 << hour;
            c.hour_days[hour as usize] = c.hour_days[hour as usize].saturating_add(1);
        }
        c.week_hours[(week_hour / 64) as usize] |= 1 << (week_hour % 64);
        let off_hours = client_was_established && !learning && !near(c.usual_hours, hour, slack);
        if learning || u32::from(c.hour_days[hour as usize]) >= rec {
            c.usual_hours |= 1 << hour;
        }
        if !c.established && (learning || c.days >= rec) {
            c.established = true;
        }

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
        if !edge_exists || edge_now_established {
            let n = self.server_clients.entry(server).or_default();
            dst_clients_before = *n;
            if !edge_exists {
                *n += 1;
            }
            if let Some(c) = self.clients.get_mut(&client) {
                let c = &mut c.rec;
                if !edge_exists {
                    c.servers += 1;
                }
                if edge_now_established && !c.listed.contains(&server) {
                    if let Some(slot) = c.listed.iter_mut().find(|s| **s == 0) {
                        *slot = server;
                    }
                }
            }
        } else if !learning {
            dst_clients_before = self.server_clients.get(&server).copied().unwrap_or(0);
        }

        if learning {
            return Vec::new();
        }
        // Scoring: what the baseline knew before this event.
        let mut found = Vec::new();
        if !client_was_established {
            if client_new || client_new_day {
                found.push(AlertKind::SmbNewClient);
            }
        } else {
            if !edge_was_established && (!edge_exists || edge_new_day) {
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
        self.raise(&found, &score, ev)
    }

    /// A new client past its prefix's learning rate: not learned, but
    /// after learning it is still a new client (and a new edge).
    fn score_unlearned(
        &mut self,
        ev: &GatewayEvent,
        client: u128,
        server: u128,
        t: i64,
    ) -> Vec<Alert> {
        if self.learning_at(t) {
            return Vec::new();
        }
        let score = Score {
            client,
            server,
            t,
            hour: (t.rem_euclid(DAY) / 3600) as u32,
            dst_clients_before: self.server_clients.get(&server).copied().unwrap_or(0),
            client_days: 1,
            edge_days: 1,
        };
        self.raise(&[AlertKind::SmbNewClient], &score, ev)
    }

    /// Alerts for what scoring found, minus exempt sources and hold-down.
    fn raise(&mut self, found: &[AlertKind], s: &Score, ev: &GatewayEvent) -> Vec<Alert> {
        if found.is_empty() {
            return Vec::new();
        }
        let src_role = self.role(ev.src, s.client, u32::MAX);
        if matches!(src_role, Role::Scanner | Role::Backup)
            || self.allow.iter().any(|n| n.contains(&ev.src))
        {
            self.stats.exempt += found.len() as u64;
            return Vec::new();
        }
        let dst_role = self.role(ev.dst, s.server, s.dst_clients_before);
        let mut out = Vec::with_capacity(found.len());
        for &kind in found {
            if self.held(s.client, kind, s.t) {
                self.stats.suppressed += 1;
                continue;
            }
            self.stats.alerts += 1;
            let f = Finding {
                kind,
                t: s.t,
                client: s.client,
                server: s.server,
                src_role,
                dst_role,
                hour: s.hour,
                days: if kind == AlertKind::SmbNewClient {
                    s.client_days
                } else {
                    s.edge_days
                },
            };
            out.push(self.alert(&f, ev));
        }
        out
    }

    /// A host's role: configured by CIDR, else inferred from its clients
    /// (`clients`, or the table's count when `u32::MAX`).
    pub fn role(&self, ip: IpAddr, key: u128, clients: u32) -> Role {
        let listed = |nets: &[IpNet]| nets.iter().any(|n| n.contains(&ip));
        if listed(&self.cfg.scanners) {
            return Role::Scanner;
        }
        if listed(&self.cfg.backup) {
            return Role::Backup;
        }
        if listed(&self.cfg.servers) {
            return Role::Server;
        }
        let n = if clients == u32::MAX {
            self.server_clients.get(&key).copied().unwrap_or(0)
        } else {
            clients
        };
        if n >= self.cfg.server_min_clients {
            Role::Server
        } else {
            Role::Workstation
        }
    }

    /// Whether an alert of `kind` for `client` at `t` is held down; records
    /// it when not.
    fn held(&mut self, client: u128, kind: AlertKind, t: i64) -> bool {
        let hold = self.hold_down;
        if let Some(&last) = self.held.get(&(client, kind)) {
            if t < last.saturating_add(hold) {
                return true;
            }
        }
        if self.held.len() >= MAX_HELD {
            self.held.retain(|_, last| t < last.saturating_add(hold));
        }
        self.held.insert((client, kind), t);
        false
    }

    fn evict_clients_if_full(&mut self) {
        if self.clients.len() > self.cfg.max_clients {
            self.evict_clients(self.cfg.max_clients);
        }
    }

    fn evict_edges_if_full(&mut self) {
        if self.edges.len() > self.cfg.max_edges {
            self.evict_edges(self.cfg.max_edges);
        }
    }

    /// Evicts the least recently seen clients down to `keep`: a sixteenth
    /// at a time, so the scan is paid once per many inserts.
    fn evict_clients(&mut self, keep: usize) {
        let n = self.clients.len().saturating_sub(keep);
        if n == 0 {
            return;
        }
        let mut ages: Vec<(i64, u128)> = self
            .clients
            .iter()
            .map(|(k, c)| (c.rec.last_seen, *k))
            .collect();
        ages.select_nth_unstable(n - 1);
        for &(_, k) in &ages[..n] {
            self.clients.remove(&k);
            self.deleted_clients.push(k);
        }
        self.meta.evicted_clients += n as u64;
    }

    /// Evicts the least recently seen edges down to `keep`.
    fn evict_edges(&mut self, keep: usize) {
        let n = self.edges.len().saturating_sub(keep);
        if n == 0 {
            return;
        }
        let mut ages: Vec<(i64, (u128, u128))> = self
            .edges
            .iter()
            .map(|(k, e)| (e.rec.last_seen, *k))
            .collect();
        ages.select_nth_unstable(n - 1);
        for &(_, k) in &ages[..n] {
            self.edges.remove(&k);
            self.deleted_edges.push(k);
            if let Some(c) = self.server_clients.get_mut(&k.1) {
                *c -= 1;
                if *c == 0 {
                    self.server_clients.remove(&k.1);
                }
            }
            if let Some(c) = self.clients.get_mut(&k.0) {
                c.rec.servers = c.rec.servers.saturating_sub(1);
                if let Some(slot) = c.rec.listed.iter_mut().find(|s| **s == k.1) {
                    *slot = 0;
                }
                if !c.dirty {
                    c.dirty = true;
                    self.dirty_clients.push(k.0);
                }
            }
        }
        self.meta.evicted_edges += n as u64;
    }

    /// Changes since the last batch, for the database. The batch counter
    /// in its meta counts it.
    pub fn take_batch(&mut self) -> Batch {
        self.meta.batches += 1;
        let clients = self
            .dirty_clients
            .drain(..)
            .filter_map(|k| {
                let s = self.clients.get_mut(&k)?;
                s.dirty = false;
                Some((k, s.rec))
            })
            .collect();
        let edges = self
            .dirty_edges
            .drain(..)
            .filter_map(|k| {
                let s = self.edges.get_mut(&k)?;
                s.dirty = false;
                Some((k, s.rec))
            })
            .collect();
        Batch {
            meta: self.meta,
            clients,
            edges,
            deleted_clients: std::mem::take(&mut self.deleted_clients),
            deleted_edges: std::mem::take(&mut self.deleted_edges),
        }
    }

    /// A batch the writer could not take: its records go back into the
    /// next one (their current values are written then).
    pub fn restore(&mut self, b: Batch) {
        self.meta.batches -= 1;
        for (k, _) in b.clients {
            if let Some(s) = self.clients.get_mut(&k).filter(|s| !s.dirty) {
                s.dirty = true;
                self.dirty_clients.push(k);
            }
        }
        for (k, _) in b.edges {
            if let Some(s) = self.edges.get_mut(&k).filter(|s| !s.dirty) {
                s.dirty = true;
                self.dirty_edges.push(k);
            }
        }
        // Deletions first in the next batch too: a re-added key is then
        // written after its deletion.
        let mut dc = b.deleted_clients;
        dc.append(&mut self.deleted_clients);
        self.deleted_clients = dc;
        let mut de = b.deleted_edges;
        de.append(&mut self.deleted_edges);
        self.deleted_edges = de;
    }

    /// Changes waiting for the next batch.
    pub fn pending(&self) -> usize {
        self.dirty_clients.len()
            + self.dirty_edges.len()
            + self.deleted_clients.len()
            + self.deleted_edges.len()
    }

    /// Everything, for an export.
    pub fn snapshot(&self) -> Snapshot {
        let mut clients: Vec<_> = self.clients.iter().map(|(k, c)| (*k, c.rec)).collect();
        let mut edges: Vec<_> = self.edges.iter().map(|(k, e)| (*k, e.rec)).collect();
        clients.sort_by_key(|(k, _)| *k);
        edges.sort_by_key(|(k, _)| *k);
        Snapshot {
            meta: self.meta,
            clients,
            edges,
        }
    }

    /// Servers by clients (most first), as the baseline sees them now.
    pub fn servers(&self) -> Vec<(u128, u32)> {
        let min = self.cfg.server_min_clients;
        let mut v: Vec<(u128, u32)> = self
            .server_clients
            .iter()
            .filter(|(_, n)| **n >= min)
            .map(|(k, n)| (*k, *n))
            .collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        v
    }

    /// The servers listed for a client (established edges), at most
    /// [`super::record::LISTED_SERVERS`].
    pub(super) fn listed(&self, client: u128) -> Vec<u128> {
        self.clients
            .get(&client)
            .map(|c| c.rec.listed.iter().copied().filter(|s| *s != 0).collect())
            .unwrap_or_default()
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
