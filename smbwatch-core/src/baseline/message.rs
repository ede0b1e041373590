//! Baseline alerts: what was found, and what the baseline knew.

use chrono::DateTime;

use super::finding::Finding;
use super::learn::Baseline;
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
        let src = if super::is_host_key(f.client) {
            format!("{} ({})", ev.src, host_name(f.client))
        } else {
            src.to_string()
        };
        let dst = key_addr(f.server);
        let learned = self.learned_for(f.t);
        let mut message = match f.kind {
            AlertKind::SmbNewClient => format!(
                "{} {src} (to {dst}, a {}){} in {learned} of learning; known servers: {}",
                if f.days <= 1 { "first SMB from" } else { "SMB from" },
                f.dst_role.name(),
                self.later_day(f.days),
                self.known_servers()
            ),
            AlertKind::SmbNewEdge => {
                let ws = f.src_role == Role::Workstation && f.dst_role == Role::Workstation;
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
                )
            }
            _ => format!(
                "{src} used SMB on {dst} at {:02}:00 UTC, outside its usual hours ({}) learned in {learned}; usual servers: {}",
                f.hour,
                self.usual_hours(f.client),
                self.usual_servers(f.client)
            ),
        };
        if f.also_off_hours {
            message.push_str(&format!(
                "; at {:02}:00 UTC, outside its usual hours ({})",
                f.hour,
                self.usual_hours(f.client)
            ));
        }
        if f.held.0 > 0 {
            message.push_str(&format!(
                "; {} more finding{} of this source held down since its previous alert (servers: {})",
                f.held.0,
                if f.held.0 == 1 { "" } else { "s" },
                list(f.held.1.iter().map(|k| key_addr(*k)), f.held.1.len())
            ));
        }
        self.finish(
            Alert::new(self.time(f.t, ev), f.kind, f.severity, message),
            ev,
        )
    }

    /// `smb_new_server`: one low alert when a server without history gains
    /// its clients; its edges then learn.
    pub(super) fn new_server(
        &self,
        server: u128,
        first: i64,
        clients: u32,
        t: i64,
        ev: &GatewayEvent,
    ) -> Alert {
        let since = DateTime::from_timestamp(first, 0)
            .map_or_else(String::new, |d| d.format("%Y-%m-%d %H:%M UTC").to_string());
        let message = format!(
            "new SMB server {}: {clients} clients since its first at {since} (latest {}); its clients' edges now learn for {} without alerts",
            key_addr(server),
            ev.src,
            humantime::format_duration(self.cfg.learn_for)
        );
        self.finish(
            Alert::new(
                self.time(t, ev),
                AlertKind::SmbNewServer,
                Severity::Low,
                message,
            ),
            ev,
        )
    }

    fn time(&self, t: i64, ev: &GatewayEvent) -> DateTime<chrono::Utc> {
        DateTime::from_timestamp(t, 0).unwrap_or(ev.ts).max(ev.ts)
    }

    /// The event's addresses, ports and flow id on `a`.
    fn finish(&self, mut a: Alert, ev: &GatewayEvent) -> Alert {
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
        // Established edges only: not those the anomaly itself just made.
        let total = self
            .clients
            .get(&client)
            .map_or(0, |c| c.rec.usual_servers as usize);
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

    /// The client's usual hours as ranges, e.g. "08-09h, 13h UTC,
    /// weekends 10h UTC, slack 1h".
    fn usual_hours(&self, client: u128) -> String {
        let (wd, we) = self
            .clients
            .get(&client)
            .map_or((0, 0), |c| (c.rec.usual_hours, c.rec.weekend_hours));
        let weekend = if we == 0 {
            String::new()
        } else {
            format!(", weekends {} UTC", hour_ranges(we))
        };
        format!(
            "{} UTC{weekend}, slack {}h",
            hour_ranges(wd),
            self.cfg.slack_hours()
        )
    }
}

/// A host key as text: `mac 3c:52:…` or `name #…` (names are hashed).
fn host_name(k: u128) -> String {
    let low = k as u64;
    if super::is_name_key(k) {
        format!("host by name #{low:016x}")
    } else {
        let b = low.to_be_bytes();
        format!(
            "host by MAC {:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[2], b[3], b[4], b[5], b[6], b[7]
        )
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
