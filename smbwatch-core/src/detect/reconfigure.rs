//! New settings for a running detector (a daemon reload), keeping its state.

use super::{evasion, key_addr, nanos, scales, DetectConfig, Detector, Mode, Prefixes};

impl Detector {
    /// Takes new thresholds, windows, TRW parameters, hold-down, allowlist
    /// and per-subnet rules without forgetting anything: every tracked
    /// source keeps its destinations, walk and suppression, and is judged
    /// by the new limits from its next event on. The table caps
    /// (`max_sources`, `max_pairs`, `max_destinations_per_source`) size
    /// memory and keep their running values (a reload reports them as
    /// needing a restart). `cfg` is assumed validated.
    pub fn reconfigure(&mut self, cfg: DetectConfig) {
        let cfg = DetectConfig {
            max_sources: self.cfg.max_sources,
            max_pairs: self.cfg.max_pairs,
            max_destinations_per_source: self.cfg.max_destinations_per_source,
            ..cfg
        };
        self.timeout = nanos(cfg.response_timeout);
        self.hold_down = nanos(cfg.hold_down);
        self.trw = super::trw_for(&cfg, self.mode);
        let (overrides, rules) = scales::rules(&cfg);
        self.overrides = overrides;
        self.table.rules = rules;
        if self.mode == Mode::Address {
            // Turned on: a fresh detector; off: its state goes.
            match (self.prefixes.as_mut(), cfg.prefix.enabled()) {
                (Some(p), true) => p.reconfigure(&cfg),
                _ => self.prefixes = Prefixes::new(&cfg).map(Box::new),
            }
            match (self.evasion.as_mut(), cfg.evasion_destinations > 0) {
                (Some(e), true) => e.reconfigure(evasion::config(&cfg)),
                _ => self.evasion = evasion::detector(&cfg).map(Box::new),
            }
        }
        self.cfg = cfg;
        for slot in self.table.live_slots() {
            let src = key_addr(&self.table.sources[slot as usize].key);
            self.table.sources[slot as usize].rule = self.rule_for(src);
            self.table.rescale(slot);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use chrono::{DateTime, Utc};

    use super::*;
    use crate::alert::AlertKind;
    use crate::event::{GatewayEvent, GatewayEventKind};

    fn at(ms: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(1_790_000_000_000 + ms).unwrap()
    }

    fn syn(src: IpAddr, i: u8, ms: i64) -> GatewayEvent {
        GatewayEvent {
            ts: at(ms),
            kind: GatewayEventKind::NewPair,
            src,
            dst: IpAddr::V4(Ipv4Addr::new(198, 51, 100, i)),
            sport: 40_000 + u16::from(i),
            dport: 445,
            ifindex: 3,
            vlan: None,
            fragmented: false,
            after_accept: false,
            kernel_fanout: None,
            activity: None,
            src_mac: None,
        }
    }

    fn fanout(alerts: &[crate::alert::Alert]) -> usize {
        alerts
            .iter()
            .filter(|a| a.kind == AlertKind::SmbScanFanout)
            .count()
    }

    /// A source 15 destinations in, under threshold 20: lowering the
    /// threshold to 10 makes its next destination (the 16th, counted from
    /// before the reload) alert.
    #[test]
    fn lowered_threshold_applies_to_tracked_sources() {
        let src: IpAddr = "203.0.113.10".parse().unwrap();
        let mut d = Detector::new(DetectConfig::default());
        for i in 1..=15 {
            assert_eq!(fanout(&d.observe(&syn(src, i, i64::from(i) * 10))), 0);
        }
        d.reconfigure(DetectConfig {
            fanout_threshold: 10,
            ..DetectConfig::default()
        });
        assert_eq!(d.stats().tracked_pairs, 15, "state kept");
        let alerts = d.observe(&syn(src, 16, 200));
        assert_eq!(fanout(&alerts), 1);
        assert_eq!(alerts[0].scan.as_ref().unwrap().distinct_destinations, 16);
    }

    /// Allowlist and per-subnet rules apply to sources already tracked;
    /// the caps keep their running values.
    #[test]
    fn allowlist_subnets_apply_and_caps_are_kept() {
        let a: IpAddr = "203.0.113.10".parse().unwrap();
        let b: IpAddr = "192.0.2.7".parse().unwrap();
        let mut d = Detector::new(DetectConfig::default());
        for i in 1..=5 {
            d.observe(&syn(a, i, i64::from(i)));
            d.observe(&syn(b, i, i64::from(i)));
        }
        d.reconfigure(DetectConfig {
            allow: vec!["203.0.113.0/24".parse().unwrap()],
            subnet: vec![crate::detect::SubnetOverride {
                cidr: "192.0.2.0/24".parse().unwrap(),
                fanout_threshold: 6,
                window: None,
                fanout_scales: None,
            }],
            max_sources: 7,
            ..DetectConfig::default()
        });
        assert_eq!(d.config().max_sources, DetectConfig::default().max_sources);
        assert_eq!(fanout(&d.observe(&syn(a, 6, 100))), 0, "allowlisted now");
        assert_eq!(fanout(&d.observe(&syn(b, 6, 100))), 1, "subnet threshold 6");
    }
}
