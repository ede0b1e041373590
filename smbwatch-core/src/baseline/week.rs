//! A scripted office week (time from the events): the fixture of the
//! learner's tests here and of the store's in the application.

use std::net::IpAddr;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::{Baseline, BaselineConfig};
use crate::alert::{Alert, AlertKind};
use crate::event::{GatewayEvent, GatewayEventKind};

/// Monday 2026-11-02 00:00 UTC plus `day` days and `hour`:`min`.
pub fn at(day: i64, hour: i64, min: i64) -> DateTime<Utc> {
    let monday = DateTime::parse_from_rfc3339("2026-11-02T00:00:00Z")
        .unwrap()
        .with_timezone(&Utc);
    monday + chrono::Duration::minutes(day * 1440 + hour * 60 + min)
}

/// An address written as text.
pub fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// A confirmed session (the client's ACK after the SYN-ACK) from `src` to `dst` on 445: what teaches.
pub fn acc(ts: DateTime<Utc>, src: &str, dst: &str) -> GatewayEvent {
    GatewayEvent::new(
        ts,
        GatewayEventKind::Confirmed,
        ip(src),
        ip(dst),
        50_000,
        445,
    )
}

/// The file servers.
pub const FS1: &str = "192.0.2.10";
/// The second file server.
pub const FS2: &str = "192.0.2.11";
/// The workstations.
pub const WS: [&str; 4] = ["192.0.2.21", "192.0.2.22", "192.0.2.23", "192.0.2.24"];

/// Six days of learning: the office week's first event is Monday 08:00,
/// so the next Monday's 03:00 is past it.
pub fn six_days() -> BaselineConfig {
    BaselineConfig {
        learn_for: Duration::from_secs(6 * 86_400),
        ..BaselineConfig::default()
    }
}

/// A baseline learning for [`six_days`].
pub fn baseline() -> Baseline {
    Baseline::new(six_days(), Vec::new(), Duration::from_secs(600))
}

/// A week of office hours: every workstation on both file servers at 08:xx
/// and 13:xx, Monday to Friday.
pub fn office_week(b: &mut Baseline) {
    for day in 0..7 {
        if day % 7 >= 5 {
            continue;
        }
        for (i, ws) in WS.iter().enumerate() {
            for (hour, fs) in [(8, FS1), (13, FS2)] {
                let a = b.observe(&acc(at(day, hour, i as i64), ws, fs));
                assert!(a.is_empty(), "no alerts while learning: {a:?}");
            }
        }
    }
}

/// The kinds of `a`, in order.
pub fn kinds(a: &[Alert]) -> Vec<AlertKind> {
    a.iter().map(|a| a.kind).collect()
}
