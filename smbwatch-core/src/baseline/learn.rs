//! The learner and scorer: one pass per answered pair.

use std::collections::HashMap;
use std::net::IpAddr;

use ahash::RandomState;
use ipnet::IpNet;

use super::hosts::{learn_end, Index, ServerInfo};
use super::rate::NewClientRate;
use super::record::{Batch, Client, Edge, Meta, Snapshot};
use super::{addr_key, BaselineConfig, BaselineStats, Role};
use crate::alert::{Alert, AlertKind, Severity};
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
    /// Its severity.
    pub severity: Severity,
    /// The same event is also outside the client's hours (a new edge at
    /// 03:00: one alert says both).
    pub also_off_hours: bool,
    /// Findings of this source held down since its previous alert, and
    /// the first servers they named.
    pub held: (u32, Vec<u128>),
}

/// One source's alerts within a hold-down: one alert, then only a worse
/// finding alerts again; the others are counted and listed in the next.
#[derive(Clone, Debug)]
struct Incident {
    last_alert: i64,
    worst: Severity,
    held: u32,
    servers: Vec<u128>,
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
    pub(super) stats: BaselineStats,
    /// Keys of records changed since the last batch (each once: its
    /// slot's `dirty` flag says it is queued).
    dirty_clients: Vec<u128>,
    dirty_edges: Vec<(u128, u128)>,
    deleted_clients: Vec<u128>,
    deleted_edges: Vec<(u128, u128)>,
    /// Per source, its alerts in the current hold-down.
    held: HashMap<u128, Incident, RandomState>,
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
        let learn_end = started.saturating_add(self.cfg.learn_for.as_secs() as i64);
        let learning = t < learn_end;
        let secs_of_day = t.rem_euclid(DAY);
        let hour = (secs_of_day / 3600) as u32;
        // 1970-01-01 was a Thursday: Monday is day 4 of that week.
        let weekday = (day + 3).rem_euclid(7);
        let weekend = weekday >= 5;
        let week_hour = (weekday * 24) as u32 + hour;
        let rec = self.cfg.recurrence_days;
        let slack = self.cfg.slack_hours();
        let office_ok = self.office_hour(weekend, hour);
        let manager_min = self.cfg.manager_min_targets;

        // The client.
        let c = &mut self.slot_client(client, t).rec;
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

    /// One alert for what scoring found (the first kind found names it,
    /// an off-hours finding beside it is said in its message), minus
    /// exempt sources and the source's hold-down.
    fn raise(&mut self, found: &[AlertKind], s: &Score, ev: &GatewayEvent) -> Vec<Alert> {
        let Some(&kind) = found.first() else {
            return Vec::new();
        };
        let src_role = self.role(ev.src, addr_key(ev.src), u32::MAX);
        if matches!(src_role, Role::Scanner | Role::Backup)
            || self.allow.iter().any(|n| n.contains(&ev.src))
        {
            self.stats.exempt += found.len() as u64;
            return Vec::new();
        }
        let dst_role = self.role(ev.dst, s.server, s.dst_clients_before);
        let severity = match kind {
            AlertKind::SmbNewEdge
                if src_role == Role::Workstation && dst_role == Role::Workstation =>
            {
                Severity::High
            }
            _ => Severity::Medium,
        };
        let Some(held) = self.hold(s.client, s.server, severity, s.t) else {
            self.stats.suppressed += 1;
            return Vec::new();
        };
        self.stats.alerts += 1;
        let f = Finding {
            kind,
            severity,
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
            also_off_hours: kind != AlertKind::SmbOffHours
                && found.contains(&AlertKind::SmbOffHours),
            held,
        };
        vec![self.alert(&f, ev)]
    }

    /// The source's hold-down: `None` when this finding is held down
    /// (counted, its server remembered for the next alert); else what was
    /// held since the source's previous alert.
    fn hold(
        &mut self,
        client: u128,
        server: u128,
        sev: Severity,
        t: i64,
    ) -> Option<(u32, Vec<u128>)> {
        let hold = self.hold_down;
        if let Some(inc) = self.held.get_mut(&client) {
            if t < inc.last_alert.saturating_add(hold) && sev <= inc.worst {
                inc.held += 1;
                if inc.servers.len() < super::record::LISTED_SERVERS
                    && !inc.servers.contains(&server)
                {
                    inc.servers.push(server);
                }
                return None;
            }
            let within = t < inc.last_alert.saturating_add(hold);
            let out = (inc.held, std::mem::take(&mut inc.servers));
            inc.held = 0;
            inc.last_alert = t;
            inc.worst = if within { inc.worst.max(sev) } else { sev };
            return Some(out);
        }
        if self.held.len() >= MAX_HELD {
            self.held
                .retain(|_, i| t < i.last_alert.saturating_add(hold));
        }
        self.held.insert(
            client,
            Incident {
                last_alert: t,
                worst: sev,
                held: 0,
                servers: Vec::new(),
            },
        );
        Some((0, Vec::new()))
    }

    /// `smb_new_server`: `server` (first seen after learning) gained
    /// `new_server_clients` clients within `new_server_window`.
    fn new_server_alert(&mut self, server: u128, t: i64, ev: &GatewayEvent) -> Alert {
        self.stats.alerts += 1;
        let first = self.idx.servers.get(&server).map_or(t, |s| s.first);
        let clients = self.server_clients.get(&server).copied().unwrap_or(0);
        self.new_server(server, first, clients, t, ev)
    }

    /// Whether a new edge of an established client is expected: a server
    /// just introduced (its own learning period), a member of a group the
    /// client already uses, a management source's usual prefix, or the
    /// client's one first contact today with a server without history.
    fn edge_expected(
        &mut self,
        client: u128,
        server: u128,
        manager: bool,
        t: i64,
        day: i64,
    ) -> bool {
        let info = self.idx.servers.get(&server).copied();
        let learn_for = self.cfg.learn_for.as_secs() as i64;
        if let Some(i) = info.and_then(|i| i.intro) {
            if t < i.saturating_add(learn_for) {
                return true;
            }
        }
        let mine = self
            .idx
            .by_client
            .get(&client)
            .map_or(&[][..], |v| v.as_slice());
        if let Some(g) = self.peer_group(server) {
            if mine
                .iter()
                .any(|s| *s != server && self.peer_group(*s) == Some(g))
            {
                return true;
            }
        }
        if self.shared(server) && mine.iter().any(|s| *s != server && self.shared(*s)) {
            return true;
        }
        if manager {
            let kind = self.target_kind(server);
            if kind.is_some() && mine.iter().any(|s| self.target_kind(*s) == kind) {
                return true;
            }
        }
        let learn_end = self
            .meta
            .started
            .map_or(i64::MAX, |s| s.saturating_add(learn_for));
        let window = self.cfg.new_server_window.as_secs() as i64;
        let pending =
            info.is_none_or(|i| i.intro.is_none() && i.first >= learn_end && t - i.first <= window);
        if pending && !self.known_host(server) {
            let today = &mut self.idx.unknown_today;
            if today.len() >= self.cfg.max_clients && !today.contains_key(&client) {
                // Bounded like the clients: earlier days' entries go.
                today.retain(|_, (d, _)| *d == day);
            }
            let e = today.entry(client).or_insert((day, server));
            if e.0 != day {
                *e = (day, server);
            }
            return e.1 == server;
        }
        false
    }

    /// The configured peer group of a server, if any.
    fn peer_group(&self, server: u128) -> Option<usize> {
        let ip = super::key_addr(server);
        self.cfg
            .peer_groups
            .iter()
            .position(|g| g.iter().any(|n| n.contains(&ip)))
    }

    /// Whether a server is shared infrastructure: used by at least
    /// `shared_server_percent` of the established clients.
    fn shared(&self, server: u128) -> bool {
        let pct = self.cfg.shared_server_percent;
        if pct == 0 {
            return false;
        }
        let need = (u64::from(self.idx.established) * u64::from(pct) / 100)
            .max(u64::from(self.cfg.server_min_clients));
        u64::from(self.server_clients.get(&server).copied().unwrap_or(0)) >= need
    }

    /// What a management source's target is: a server (`Some(true)`), a
    /// known workstation (`Some(false)`), or unknown.
    fn target_kind(&self, host: u128) -> Option<bool> {
        if self.server_clients.get(&host).copied().unwrap_or(0) >= self.cfg.server_min_clients {
            Some(true)
        } else if self.known_host(host) {
            Some(false)
        } else {
            None
        }
    }

    /// Whether `hour` is office hours (weekdays or weekends): at least
    /// `office_hours_permille` of the established clients (and 3) usually
    /// work then.
    fn office_hour(&self, weekend: bool, hour: u32) -> bool {
        let pm = self.cfg.office_hours_permille;
        if pm == 0 {
            return false;
        }
        let need = (u64::from(self.idx.established) * u64::from(pm) / 1000).max(3);
        u64::from(self.idx.office[usize::from(weekend)][hour as usize]) >= need
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
            if let Some(c) = self.clients.remove(&k) {
                if c.rec.established && c.rec.flags & Client::ROUTER == 0 {
                    self.idx.established = self.idx.established.saturating_sub(1);
                    self.idx.add_office(&c.rec, -1);
                }
                if self.idx.addr_host.get(&c.rec.addr) == Some(&k) {
                    self.idx.addr_host.remove(&c.rec.addr);
                }
            }
            self.idx.by_client.remove(&k);
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
            let established = self.edges.remove(&k).is_some_and(|e| e.rec.established);
            self.deleted_edges.push(k);
            if let Some(c) = self.server_clients.get_mut(&k.1) {
                *c -= 1;
                if *c == 0 {
                    self.server_clients.remove(&k.1);
                    self.idx.servers.remove(&k.1);
                }
            }
            if established {
                if let Some(v) = self.idx.by_client.get_mut(&k.0) {
                    v.retain(|s| *s != k.1);
                }
            }
            if let Some(c) = self.clients.get_mut(&k.0) {
                c.rec.servers = c.rec.servers.saturating_sub(1);
                if established {
                    c.rec.usual_servers = c.rec.usual_servers.saturating_sub(1);
                }
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
