//! The rate of new clients learned per source prefix: whoever holds a /64
//! (or a /24) can complete handshakes from many addresses, and each new
//! client learned would take a place in the baseline (evicting a real
//! client at `max_clients`). Past `new_client_rate` new clients in one
//! prefix within one clock hour, further new clients are not learned
//! (counted as `new_clients_limited`).

use std::collections::HashMap;
use std::net::IpAddr;

use ahash::RandomState;

use super::BaselineConfig;

/// Prefixes counted at once; past it, prefixes of earlier hours are
/// dropped, and if all are of this hour, a new prefix is refused (counted
/// like a prefix over its rate: a table full of this hour's prefixes means
/// thousands of prefixes each adding clients, which is not a normal hour).
/// (About 40 bytes each with the hash table's overhead: 2.6 MB at most.)
pub const MAX_PREFIXES: usize = 65_536;

const HOUR: i64 = 3600;

/// New clients learned per prefix in the current clock hour.
pub(super) struct NewClientRate {
    per_hour: u32,
    v4: u8,
    v6: u8,
    /// Prefix (as a masked address key) to (hour, clients learned in it).
    counts: HashMap<u128, (i64, u32), RandomState>,
}

impl NewClientRate {
    /// The bound from the `[baseline]` settings.
    pub fn new(cfg: &BaselineConfig) -> Self {
        Self {
            per_hour: cfg.new_client_rate,
            v4: cfg.new_client_prefix_v4,
            v6: cfg.new_client_prefix_v6,
            counts: HashMap::default(),
        }
    }

    /// Whether a new client at `ip`, at `t` (Unix seconds), may be learned;
    /// counts it when it may.
    pub fn admit(&mut self, ip: IpAddr, t: i64) -> bool {
        if self.per_hour == 0 {
            return true;
        }
        let Some(prefix) = prefix_key(ip, self.v4, self.v6) else {
            return true;
        };
        let hour = t.div_euclid(HOUR);
        if self.counts.len() >= MAX_PREFIXES && !self.counts.contains_key(&prefix) {
            self.counts.retain(|_, (h, _)| *h >= hour);
            if self.counts.len() >= MAX_PREFIXES {
                return false;
            }
        }
        let (h, n) = self.counts.entry(prefix).or_insert((hour, 0));
        if *h != hour {
            // Events a little out of order keep the later hour's count.
            if *h < hour {
                (*h, *n) = (hour, 0);
            }
        }
        if *n >= self.per_hour {
            return false;
        }
        *n += 1;
        true
    }
}

/// `ip` masked to its family's prefix length, as an address key; `None`
/// when that length is 0 (no bound for the family).
fn prefix_key(ip: IpAddr, v4: u8, v6: u8) -> Option<u128> {
    let net = match ip {
        IpAddr::V4(a) if v4 > 0 => ipnet::IpNet::from(ipnet::Ipv4Net::new(a, v4).ok()?),
        IpAddr::V6(a) if v6 > 0 => ipnet::IpNet::from(ipnet::Ipv6Net::new(a, v6).ok()?),
        _ => return None,
    };
    Some(super::addr_key(net.network()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(n: u32) -> NewClientRate {
        NewClientRate::new(&BaselineConfig {
            new_client_rate: n,
            ..BaselineConfig::default()
        })
    }

    #[test]
    fn bound_per_prefix_and_hour() {
        for (n, v6) in [(3u32, false), (16, true), (64, false)] {
            let mut r = rate(n);
            let addr = |i: u32| -> IpAddr {
                if v6 {
                    format!("2001:db8:0:7::{i:x}").parse().unwrap()
                } else {
                    format!("198.51.100.{}", i % 250 + 1).parse().unwrap()
                }
            };
            let t0 = 1_790_000_000 / HOUR * HOUR;
            let admitted = (0..n + 5)
                .filter(|&i| r.admit(addr(i), t0 + i64::from(i)))
                .count();
            assert_eq!(admitted, n as usize, "{n} per hour");
            // Another prefix of the family is not affected.
            let other: IpAddr = if v6 { "2001:db8:0:8::1" } else { "192.0.2.1" }
                .parse()
                .unwrap();
            assert!(r.admit(other, t0 + 10));
            // The next hour starts afresh.
            assert!(r.admit(addr(0), t0 + HOUR));
        }
        let mut unbounded = rate(0);
        assert!(
            (0..1000).all(|i| unbounded.admit(format!("192.0.2.{}", i % 250).parse().unwrap(), i))
        );
    }
}
