//! Hosts, not addresses: who a client is (its MAC where the router is its
//! first hop, its name where a logon gave one, else its address), and the
//! facts derived from the tables that scoring needs (rebuilt on load, so a
//! baseline saved and loaded scores like one that never stopped).

use std::collections::HashMap;
use std::net::IpAddr;

use ahash::RandomState;

use super::addr_key;
use super::index::{Index, ServerInfo};
use super::learn::Baseline;
use super::record::Client;
use crate::event::{GatewayEvent, MacAddr};

/// Host keys live in 100::/64 (RFC 6666, discard-only: never a real
/// client address): `100::` + MAC for hosts known by MAC, `100:0:0:1::` +
/// a hash of the upper-case name for hosts known by name.
const HOST_SPACE: u128 = 0x0100u128 << 112;
const NAME_TAG: u128 = 1u128 << 64;
const SPACE_MASK: u128 = !((1u128 << 64) - 1) & !NAME_TAG;

/// MACs tracked per day for the router test before the table is pruned.
const MAX_MACS: usize = 65_536;

/// The key of a host known by its MAC.
pub fn mac_key(mac: MacAddr) -> u128 {
    let mut b = [0u8; 8];
    b[2..].copy_from_slice(&mac.0);
    HOST_SPACE | u128::from(u64::from_be_bytes(b))
}

/// The key of a host known by its name (case-insensitive; FNV-1a, stable
/// across runs and builds).
pub fn name_key(name: &str) -> u128 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.trim().bytes() {
        h ^= u64::from(b.to_ascii_uppercase());
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    HOST_SPACE | NAME_TAG | u128::from(h)
}

/// Whether a key names a host (MAC or name) rather than an address.
pub fn is_host_key(k: u128) -> bool {
    k & SPACE_MASK == HOST_SPACE
}

/// Whether a key names a host known by name (from host logs).
pub fn is_name_key(k: u128) -> bool {
    is_host_key(k) && k & NAME_TAG != 0
}

impl Baseline {
    /// The host behind a confirmed session's client side: its MAC (unless
    /// that MAC is a router's), else the name a logon bound to the address
    /// within `name_ttl`, else the address.
    pub(super) fn host_of(&mut self, ev: &GatewayEvent, t: i64, day: i64) -> u128 {
        let addr = addr_key(ev.src);
        let max = self.cfg.mac_max_addresses;
        if let Some(mac) = ev
            .src_mac
            .filter(|m| max > 0 && *m != MacAddr::ZERO && !m.is_local())
        {
            let key = mac_key(mac);
            let router = self
                .clients
                .get(&key)
                .is_some_and(|c| c.rec.flags & Client::ROUTER != 0);
            if !router && self.track_mac(mac, addr, day) {
                return key;
            }
            if !router {
                self.flag_router(key, t);
            }
        }
        if self.idx.addr_host.is_empty() {
            return addr;
        }
        if let Some(&h) = self.idx.addr_host.get(&addr) {
            let ttl = self.cfg.name_ttl.as_secs() as i64;
            if is_name_key(h)
                && self
                    .clients
                    .get(&h)
                    .is_some_and(|c| c.rec.addr == addr && t <= c.rec.bound.saturating_add(ttl))
            {
                return h;
            }
        }
        addr
    }

    /// Counts `addr` for `mac` today; false once the MAC carried more than
    /// `mac_max_addresses` addresses today (a router's).
    fn track_mac(&mut self, mac: MacAddr, addr: u128, day: i64) -> bool {
        let days = &mut self.idx.mac_day;
        if days.len() >= MAX_MACS && !days.contains_key(&mac) {
            days.retain(|_, (d, _)| *d == day);
            if days.len() >= MAX_MACS {
                // A segment with this many MACs today: not trusted.
                return false;
            }
        }
        let e = days.entry(mac).or_insert((day, Vec::new()));
        if e.0 != day {
            *e = (day, Vec::new());
        }
        if !e.1.contains(&addr) {
            e.1.push(addr);
        }
        e.1.len() <= self.cfg.mac_max_addresses as usize
    }

    /// Marks a MAC as a router's for good (kept as a flagged record).
    fn flag_router(&mut self, key: u128, t: i64) {
        let slot = self.slot_client(key, t);
        slot.rec.flags |= Client::ROUTER;
        let addr = slot.rec.addr;
        self.stats.router_macs += 1;
        if self.idx.addr_host.get(&addr) == Some(&key) {
            self.idx.addr_host.remove(&addr);
        }
    }

    /// Points `addr` at `host` (a MAC or name host), forgetting its
    /// previous address.
    pub(super) fn bind(&mut self, host: u128, addr: u128) {
        if !is_host_key(host) {
            return;
        }
        let Some(c) = self.clients.get_mut(&host) else {
            return;
        };
        let old = c.rec.addr;
        if old != addr {
            c.rec.addr = addr;
            if self.idx.addr_host.get(&old) == Some(&host) {
                self.idx.addr_host.remove(&old);
            }
        }
        self.idx.addr_host.insert(addr, host);
    }

    /// A logon naming the workstation at `ip` (4624 `WorkstationName`
    /// with `IpAddress`, or a Sysmon/Winlogbeat host name with its
    /// address) at `t` (Unix seconds): for `name_ttl`, sessions from that
    /// address without a first-hop MAC are the named host's. A new name
    /// counts against the prefix's rate of new clients like any client.
    pub fn observe_logon(&mut self, t: i64, ip: IpAddr, name: &str) {
        if name.trim().is_empty() || name.trim() == "-" {
            return;
        }
        let key = name_key(name);
        if !self.clients.contains_key(&key) && !self.new_clients.admit(ip, t) {
            self.stats.new_clients_limited += 1;
            return;
        }
        self.stats.logons += 1;
        let slot = self.slot_client(key, t);
        slot.rec.bound = slot.rec.bound.max(t);
        self.bind(key, addr_key(ip));
    }

    /// Whether an address is a known host's (a client's, by address, MAC
    /// or name): a destination with that address is not a new server.
    pub(super) fn known_host(&self, addr: u128) -> bool {
        self.idx.addr_host.contains_key(&addr)
            || self.clients.get(&addr).is_some_and(|c| c.rec.events > 0)
    }

    /// The host key an address stands for now (its MAC or name host, else
    /// the address).
    pub(super) fn resolve(&self, ip: IpAddr) -> u128 {
        let a = addr_key(ip);
        self.idx.addr_host.get(&a).copied().unwrap_or(a)
    }

    /// Rebuilds the derived facts from the tables (after a load).
    pub(super) fn reindex(&mut self, snap_learn_end: i64) {
        let mut idx = Index::default();
        let mut latest: HashMap<u128, i64, RandomState> = HashMap::default();
        for (k, s) in &self.clients {
            let c = &s.rec;
            if c.flags & Client::ROUTER != 0 {
                continue;
            }
            if c.established {
                idx.established += 1;
                idx.add_office(c, 1);
            }
            if is_host_key(*k) && c.addr != 0 {
                let seen = c.last_seen.max(c.bound);
                if latest.get(&c.addr).is_none_or(|l| seen >= *l) {
                    latest.insert(c.addr, seen);
                    idx.addr_host.insert(c.addr, *k);
                }
            }
        }
        let mut firsts: HashMap<u128, Vec<i64>, RandomState> = HashMap::default();
        for ((c, s), e) in self.edges.iter().map(|(k, e)| (k, &e.rec)) {
            if e.established {
                idx.by_client.entry(*c).or_default().push(*s);
            }
            firsts.entry(*s).or_default().push(e.first_seen);
        }
        let n = self.cfg.new_server_clients.max(1) as usize;
        let window = self.cfg.new_server_window.as_secs() as i64;
        for (s, mut f) in firsts {
            f.sort_unstable();
            let first = f[0];
            let intro = (first >= snap_learn_end && f.len() >= n && f[n - 1] - first <= window)
                .then(|| f[n - 1]);
            idx.servers.insert(s, ServerInfo { first, intro });
        }
        self.idx = idx;
    }
}
