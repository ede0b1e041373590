//! Learning cost, for `cargo xtask bench --only baseline`: confirmed-session
//! events of an office-like graph through [`Baseline::observe`].

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use chrono::DateTime;

use super::{Baseline, BaselineConfig};
use crate::event::{GatewayEvent, GatewayEventKind};

/// `n` confirmed sessions: `clients` clients (10.x.y.z, 64 per /24 so
/// the default new-client rate bound learns them all) each using 8 of 64
/// servers (172.16.0.x), one event every `step_ms` from `start` (Unix
/// seconds), clients in turn, so every event finds its client and edge
/// after the first round: the steady state of a learning router.
pub fn office_events(n: usize, clients: u32, start: i64, step_ms: i64) -> Vec<GatewayEvent> {
    let t0 = DateTime::from_timestamp(start, 0).expect("valid time");
    (0..n)
        .map(|i| {
            let k = i as u32;
            let c = k % clients;
            let s = (c + (k / clients) % 8) % 64;
            GatewayEvent::new(
                t0 + chrono::Duration::milliseconds(i as i64 * step_ms),
                GatewayEventKind::Confirmed,
                IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + (c / 64) * 256 + c % 64 + 1)),
                IpAddr::V4(Ipv4Addr::new(172, 16, 0, s as u8 + 1)),
                40000 + (i % 20000) as u16,
                445,
            )
        })
        .collect()
}

/// Time to feed `events` through `b`, and the alerts raised.
pub fn feed(b: &mut Baseline, events: &[GatewayEvent]) -> (Duration, usize) {
    let start = Instant::now();
    let mut alerts = 0;
    for ev in events {
        alerts += b.observe(ev).len();
    }
    (start.elapsed(), alerts)
}

/// A baseline with default settings (no allowlist, ten-minute hold-down).
pub fn fresh(cfg: BaselineConfig) -> Baseline {
    Baseline::new(cfg, Vec::new(), Duration::from_secs(600))
}
