//! Many routers, one detector: gateways publish their events to a NATS
//! JetStream stream, and `smbwatch aggregate` runs the same pipeline over
//! every gateway's events.
//!
//! - [`wire`]: the message format (versioned, documented in `docs/fleet.md`).
//! - [`config`]: `[publish]`, shared by gateways and aggregators.
//! - [`outbox`]: the gateway's bounded buffer between the drain thread and
//!   the broker.
//! - [`transport`]: the broker behind a trait ([`transport::Transport`]),
//!   with the JetStream implementation.
//! - [`publisher`]: the gateway's publish task.
//! - [`aggregate`]: the aggregator (its pullers in `consume`).
//!
//! Subjects are `smbwatch.events.<gateway>.<partition>`, the partition a
//! hash of the client address, so every event of one source lands in one
//! partition and an aggregator that owns the partition sees all of them.

pub mod aggregate;
pub mod config;
mod consume;
pub mod observers;
pub mod outbox;
pub mod publisher;
pub mod stats;
pub mod transport;
pub mod wire;

use std::net::IpAddr;

pub use config::PublishConfig;

/// The subject prefix of every event.
pub const SUBJECT_PREFIX: &str = "smbwatch.events";

/// The partition of a client address: FNV-1a over its 16-byte form, so
/// every gateway and aggregator, of any version, agrees.
pub fn partition(src: IpAddr, partitions: u16) -> u16 {
    let mut h: u32 = 0x811c_9dc5;
    for b in wire::v6(src).octets() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    (h % u32::from(partitions.max(1))) as u16
}

/// The partition of events every aggregator reads: host events without an
/// address (process and file creations), which any partition's
/// correlation may need. Its subject token is `all`.
pub const ALL: u16 = u16::MAX;

/// The subject token of partition `p`.
pub fn partition_token(p: u16) -> String {
    if p == ALL {
        "all".into()
    } else {
        p.to_string()
    }
}

/// The subject a gateway publishes an event of partition `p` on.
pub fn subject(gateway: &str, p: u16) -> String {
    format!("{SUBJECT_PREFIX}.{gateway}.{}", partition_token(p))
}

/// The gateway id in a subject (`smbwatch.events.<gateway>.<partition>`).
pub fn gateway_of(subject: &str) -> Option<&str> {
    let rest = subject.strip_prefix(SUBJECT_PREFIX)?.strip_prefix('.')?;
    let (gw, p) = rest.rsplit_once('.')?;
    if p != "all" {
        p.parse::<u16>().ok()?;
    }
    Some(gw)
}

/// Checks a gateway id: one NATS subject token of letters, digits, `-`
/// and `_`, at most 64 bytes (it becomes part of every subject).
pub fn check_gateway_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > 64 {
        return Err(format!("{id:?}: 1 to 64 characters"));
    }
    if let Some(c) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
    {
        return Err(format!(
            "{id:?}: {c:?} is not allowed (letters, digits, '-' and '_' only)"
        ));
    }
    Ok(())
}

/// The default gateway id: this host's name, reduced to the allowed set.
pub fn default_gateway_id() -> String {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let id: String = name
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    if id.is_empty() {
        "gateway".into()
    } else {
        id
    }
}

/// A partition list as given on the command line (`0-7,12,15`): its
/// syntax is checked where it is read; [`PartitionList::resolve`] checks
/// it against the stream's partition count, known once the configuration is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionList {
    /// The ranges, each with its text for errors.
    ranges: Vec<(u16, u16, String)>,
    /// The text as given.
    text: String,
}

impl std::str::FromStr for PartitionList {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let mut ranges = Vec::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (a, b) = match part.split_once('-') {
                Some((a, b)) => (a.trim(), b.trim()),
                None => (part, part),
            };
            let num = |s: &str| {
                s.parse::<u16>()
                    .map_err(|_| format!("{part:?}: not a partition number or range"))
            };
            let (a, b) = (num(a)?, num(b)?);
            if a > b {
                return Err(format!("{part:?}: a range goes from low to high"));
            }
            ranges.push((a, b, part.to_owned()));
        }
        if ranges.is_empty() {
            return Err(format!("{text:?}: no partition"));
        }
        Ok(Self {
            ranges,
            text: text.to_owned(),
        })
    }
}

impl PartitionList {
    /// The partitions listed, sorted and once each, all below `partitions`.
    pub fn resolve(&self, partitions: u16) -> Result<Vec<u16>, String> {
        let mut out = Vec::new();
        for (a, b, part) in &self.ranges {
            if *b >= partitions {
                return Err(format!(
                    "{part:?}: partitions are 0 to {} ([publish] partitions = {partitions})",
                    partitions.saturating_sub(1)
                ));
            }
            out.extend(*a..=*b);
        }
        out.sort_unstable();
        out.dedup();
        if out.is_empty() {
            return Err(format!("{:?}: no partition", self.text));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_partitions(text: &str, partitions: u16) -> Result<Vec<u16>, String> {
        text.parse::<PartitionList>()?.resolve(partitions)
    }

    #[test]
    fn partition_is_stable_and_spreads() {
        let a: IpAddr = "203.0.113.10".parse().unwrap();
        // Fixed forever: gateways and aggregators of any version agree.
        assert_eq!(partition(a, 16), partition(a, 16));
        let v4_mapped: IpAddr = "::ffff:203.0.113.10".parse().unwrap();
        assert_eq!(partition(a, 16), partition(v4_mapped, 16));
        let mut seen = [0u32; 16];
        for i in 0..=255u8 {
            seen[partition(IpAddr::from([198, 51, 100, i]), 16) as usize] += 1;
        }
        assert!(seen.iter().all(|&n| n > 4), "{seen:?}");
        assert_eq!(partition(a, 1), 0);
    }

    #[test]
    fn subjects_carry_the_gateway() {
        assert_eq!(subject("gw-1", 3), "smbwatch.events.gw-1.3");
        assert_eq!(gateway_of("smbwatch.events.gw-1.3"), Some("gw-1"));
        assert_eq!(subject("gw-1", ALL), "smbwatch.events.gw-1.all");
        assert_eq!(gateway_of("smbwatch.events.gw-1.all"), Some("gw-1"));
        assert_eq!(gateway_of("smbwatch.events.gw-1.x"), None);
        assert_eq!(gateway_of("other.gw.1"), None);
    }

    #[test]
    fn gateway_ids_are_single_tokens() {
        assert!(check_gateway_id("edge-router_2").is_ok());
        for bad in ["", "a.b", "a b", "*", ">", &"x".repeat(65)] {
            assert!(check_gateway_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn partition_lists() {
        assert_eq!(parse_partitions("0-3,7", 16), Ok(vec![0, 1, 2, 3, 7]));
        assert_eq!(parse_partitions("3,1-2,2", 16), Ok(vec![1, 2, 3]));
        assert!(parse_partitions("16", 16).unwrap_err().contains("0 to 15"));
        assert!(parse_partitions("5-2", 16).is_err());
        assert!(parse_partitions("x", 16).is_err());
        assert!(parse_partitions("", 16).is_err());
    }
}
