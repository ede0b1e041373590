//! Baseline alerts: what was found, and what the baseline knew.

use chrono::DateTime;

use super::learn::{Baseline, Finding};
use super::{key_addr, Role};
use crate::alert::{Alert, AlertKind, Severity};
use crate::community_id::{community_id_v1, PROTO_TCP};
use crate::event::GatewayEvent;

/// Servers named in a message.
const NAMED_SERVERS: usize = 4;

impl Baseline {
    /// The alert for a finding on `ev`.
    pub(super) fn alert(&self, f: &Finding, ev: &GatewayEvent) -> Alert {
        let src = key_addr(f.client);
        let dst = key_addr(f.server);
        let learned = self.learned_for(f.t);
        let (severity, message) = match f.kind {
            AlertKind::SmbNewClient => (
                Severity::Medium,
                format!(
                    "{} {src} (to {dst}, a {}){} in {learned} of learning; known servers: {}",
                    if f.days <= 1 { "first SMB from" } else { "SMB from" },
                    f.dst_role.name(),
                    self.later_day(f.days),
                    self.known_servers()
                ),
            ),
            AlertKind::SmbNewEdge => {
                let ws = f.src_role == Role::Workstation && f.dst_role == Role::Workstation;
                (
                    if ws { Severity::High } else { Severity::Medium },
                    format!(
                        "{src} ({}) used SMB on {dst} ({}) {} in {learned} of learning{}; usual servers: {}",
                        f.src_role.name(),
                        f.dst_role.name(),
                        if f.days <= 1 {
                            "for the first time".to_owned()
                        } else {
                            self.later_day(f.days).trim_start().to_owned()
                        },
                        if ws { ": workstation to workstation" } else { "" },
                        self.usual_servers(f.client)
                    ),
                )
            }
            _ => (
                Severity::Medium,
                format!(
                    "{src} used SMB on {dst} at {:02}:00 UTC, outside its usual hours ({} UTC, slack {}h) learned in {learned}; usual servers: {}",
                    f.hour,
                    self.usual_hours(f.client),
                    self.cfg.slack_hours(),
                    self.usual_servers(f.client)
                ),
            ),
        };
        let ts = DateTime::from_timestamp(f.t, 0).unwrap_or(ev.ts).max(ev.ts);
        let mut a = Alert::new(ts, f.kind, severity, message);
        a.source_ip = Some(ev.src);
        a.source_port = Some(ev.sport);
        a.destination_ip = Some(ev.dst);
        a.destination_port = Some(ev.dport);
        a.community_id = Some(community_id_v1(
            ev.src, ev.dst, ev.sport, ev.dport, PROTO_TCP, 0,
        ));
        a.ifindex = Some(ev.ifindex);
        a.vlan = ev.vlan;
        a
    }

    /// Nothing on the first day; on later ones, how far from normal it is.
    fn later_day(&self, days: u32) -> String {
        if days <= 1 {
            String::new()
        } else {
            format!(
                " on a {} day (normal after {} days)",
                ordinal(days),
                self.cfg.recurrence_days
            )
        }
    }

    /// How long the baseline has learned by `t`: "9 days", "20 hours".
    fn learned_for(&self, t: i64) -> String {
        let secs = self.meta.started.map_or(0, |s| t.saturating_sub(s)).max(0);
        let days = secs / 86_400;
        if days >= 1 {
            format!("{days} day{}", if days == 1 { "" } else { "s" })
        } else {
            format!("{} hours", secs / 3600)
        }
    }

    fn usual_servers(&self, client: u128) -> String {
        let listed = self.listed(client);
        let total = self
            .clients
            .get(&client)
            .map_or(0, |c| c.rec.servers as usize);
        list(listed.into_iter().map(key_addr), total)
    }

    fn known_servers(&self) -> String {
        let servers = self.servers();
        let n = servers.len();
        list(
            servers
                .into_iter()
                .take(NAMED_SERVERS)
                .map(|(k, _)| key_addr(k)),
            n,
        )
    }

    /// The client's usual hours as ranges, e.g. "08-09h, 13h".
    fn usual_hours(&self, client: u128) -> String {
        let mask = self.clients.get(&client).map_or(0, |c| c.rec.usual_hours);
        hour_ranges(mask)
    }
}

/// 2nd, 3rd, 4th, 21st …
fn ordinal(n: u32) -> String {
    let suffix = match (n % 10, n % 100) {
        (_, 11..=13) => "th",
        (1, _) => "st",
        (2, _) => "nd",
        (3, _) => "rd",
        _ => "th",
    };
    format!("{n}{suffix}")
}

/// Up to [`NAMED_SERVERS`] addresses, and how many more there are.
fn list(items: impl Iterator<Item = std::net::IpAddr>, total: usize) -> String {
    let named: Vec<String> = items.take(NAMED_SERVERS).map(|a| a.to_string()).collect();
    if named.is_empty() {
        return "none".into();
    }
    let more = total.saturating_sub(named.len());
    if more > 0 {
        format!("{} and {more} more", named.join(", "))
    } else {
        named.join(", ")
    }
}

/// Hours of a 24-bit mask as ranges: "08-09h, 13h"; "none" when empty.
pub fn hour_ranges(mask: u32) -> String {
    let mut out = Vec::new();
    let mut h = 0;
    while h < 24 {
        if mask & (1 << h) == 0 {
            h += 1;
            continue;
        }
        let start = h;
        while h + 1 < 24 && mask & (1 << (h + 1)) != 0 {
            h += 1;
        }
        out.push(if start == h {
            format!("{start:02}h")
        } else {
            format!("{start:02}-{h:02}h")
        });
        h += 1;
    }
    if out.is_empty() {
        "none".into()
    } else {
        out.join(", ")
    }
}
