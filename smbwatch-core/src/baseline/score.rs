//! Scoring after learning: one alert per finding minus exempt sources and
//! the hold-down, whether a new edge is expected (a server just introduced,
//! a peer group, shared servers, a management source's usual kind of
//! target), office hours and roles.

use std::net::IpAddr;

use ipnet::IpNet;

use super::finding::{Finding, Incident, Score};
use super::learn::{Baseline, DAY};
use super::{addr_key, Role};
use crate::alert::{Alert, AlertKind, Severity};
use crate::event::GatewayEvent;

/// Hold-down entries kept before the stale ones are pruned.
const MAX_HELD: usize = 65_536;

impl Baseline {
    /// A new client past its prefix's learning rate: not learned, but
    /// after learning it is still a new client (and a new edge).
    pub(super) fn score_unlearned(
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
    pub(super) fn raise(
        &mut self,
        found: &[AlertKind],
        s: &Score,
        ev: &GatewayEvent,
    ) -> Vec<Alert> {
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
    pub(super) fn hold(
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
    pub(super) fn new_server_alert(&mut self, server: u128, t: i64, ev: &GatewayEvent) -> Alert {
        self.stats.alerts += 1;
        let first = self.idx.servers.get(&server).map_or(t, |s| s.first);
        let clients = self.server_clients.get(&server).copied().unwrap_or(0);
        self.new_server(server, first, clients, t, ev)
    }

    /// Whether a new edge of an established client is expected: a server
    /// just introduced (its own learning period), a member of a group the
    /// client already uses, a management source's usual prefix, or the
    /// client's one first contact today with a server without history.
    pub(super) fn edge_expected(
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
    pub(super) fn peer_group(&self, server: u128) -> Option<usize> {
        let ip = super::key_addr(server);
        self.cfg
            .peer_groups
            .iter()
            .position(|g| g.iter().any(|n| n.contains(&ip)))
    }

    /// Whether a server is shared infrastructure: used by at least
    /// `shared_server_percent` of the established clients.
    pub(super) fn shared(&self, server: u128) -> bool {
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
    pub(super) fn target_kind(&self, host: u128) -> Option<bool> {
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
    pub(super) fn office_hour(&self, weekend: bool, hour: u32) -> bool {
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
}
