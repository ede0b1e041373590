//! Which gateways saw each source, for the aggregator's alerts
//! (`observer.name`).
//!
//! Pure and bounded: gateway ids are interned (at most [`MAX_GATEWAYS`],
//! a bit each), sources live in two generations that rotate when the
//! newer one is full or a window old, so memory is fixed and a source seen
//! within the last window or two is remembered.

use std::{collections::HashMap, net::IpAddr};

use chrono::{DateTime, Utc};

/// Gateways told apart; more are counted and reported under the last name.
pub const MAX_GATEWAYS: usize = 64;

/// Bytes one remembered source costs (key, mask, map overhead).
const ENTRY_BYTES: usize = 64;

/// The gateways behind each recent source.
pub struct Observers {
    names: Vec<String>,
    current: HashMap<IpAddr, u64>,
    previous: HashMap<IpAddr, u64>,
    per_generation: usize,
    window: chrono::TimeDelta,
    rotated_at: Option<DateTime<Utc>>,
    /// Gateway ids past [`MAX_GATEWAYS`].
    pub overflow: u64,
}

impl Observers {
    /// At most `max_bytes` of sources, remembered for about `window`
    /// (at least one window, at most two).
    pub fn new(max_bytes: usize, window: std::time::Duration) -> Self {
        Self {
            names: Vec::new(),
            current: HashMap::new(),
            previous: HashMap::new(),
            per_generation: (max_bytes / ENTRY_BYTES / 2).max(1),
            window: chrono::TimeDelta::from_std(window).unwrap_or(chrono::TimeDelta::MAX),
            rotated_at: None,
            overflow: 0,
        }
    }

    fn bit(&mut self, gateway: &str) -> u64 {
        if let Some(i) = self.names.iter().position(|n| n == gateway) {
            return 1 << i;
        }
        if self.names.len() == MAX_GATEWAYS {
            self.overflow += 1;
            return 1 << (MAX_GATEWAYS - 1);
        }
        self.names.push(gateway.to_string());
        1 << (self.names.len() - 1)
    }

    /// `gateway` saw `src` at `ts`.
    pub fn saw(&mut self, src: IpAddr, gateway: &str, ts: DateTime<Utc>) {
        let rotated = *self.rotated_at.get_or_insert(ts);
        if self.current.len() >= self.per_generation || ts - rotated >= self.window {
            self.previous = std::mem::take(&mut self.current);
            self.rotated_at = Some(ts);
        }
        let bit = self.bit(gateway);
        *self.current.entry(src).or_insert(0) |= bit;
    }

    /// The gateways that saw `src`, in the order they were first heard of.
    pub fn of(&self, src: IpAddr) -> Vec<String> {
        let mask = self.current.get(&src).copied().unwrap_or(0)
            | self.previous.get(&src).copied().unwrap_or(0);
        self.names
            .iter()
            .enumerate()
            .filter(|(i, _)| mask & (1 << i) != 0)
            .map(|(_, n)| n.clone())
            .collect()
    }

    /// Sources remembered now.
    pub fn len(&self) -> usize {
        self.current.len() + self.previous.len()
    }

    /// Whether no source is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + s, 0).unwrap()
    }

    #[test]
    fn lists_every_gateway_that_saw_a_source() {
        let mut o = Observers::new(1 << 20, std::time::Duration::from_secs(60));
        let a: IpAddr = "203.0.113.10".parse().unwrap();
        let b: IpAddr = "203.0.113.11".parse().unwrap();
        o.saw(a, "gw1", t(0));
        o.saw(b, "gw2", t(1));
        o.saw(a, "gw2", t(2));
        o.saw(a, "gw1", t(3));
        assert_eq!(o.of(a), ["gw1", "gw2"]);
        assert_eq!(o.of(b), ["gw2"]);
        // Remembered for a window after a rotation, forgotten after two.
        o.saw(b, "gw1", t(70));
        assert_eq!(o.of(a), ["gw1", "gw2"]);
        o.saw(b, "gw1", t(140));
        assert!(o.of(a).is_empty());
    }

    #[test]
    fn bounded_by_bytes_under_source_churn() {
        let mut o = Observers::new(64 * 1000, std::time::Duration::from_secs(3600));
        for i in 0..100_000u32 {
            o.saw(IpAddr::from(i.to_be_bytes()), "gw1", t(0));
            assert!(o.len() <= 1000);
        }
    }

    #[test]
    fn gateway_ids_past_the_limit_share_the_last_bit() {
        let mut o = Observers::new(1 << 20, std::time::Duration::from_secs(60));
        let a: IpAddr = "203.0.113.10".parse().unwrap();
        for g in 0..70 {
            o.saw(a, &format!("gw{g}"), t(0));
        }
        assert_eq!(o.of(a).len(), MAX_GATEWAYS);
        assert_eq!(o.overflow, 6);
    }
}
