//! What a replay did: the counts of records, frames, events and samples,
//! the busiest sources, and the summary printed on stderr.

use std::{collections::BTreeMap, net::IpAddr, path::PathBuf, time::Duration};

use chrono::{DateTime, Utc};
use serde::Serialize;
use smbwatch_common::stat;

use super::capture::CaptureFormat;
use crate::dataplane::Stats;

/// Events delivered, by kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct EventCounts {
    /// `new_pair` events.
    pub new_pairs: u64,
    /// `active` events: known pairs in use again in a later activity epoch.
    pub active: u64,
    /// Answers with SYN-ACK.
    pub accepted: u64,
    /// Handshakes the client completed.
    pub confirmed: u64,
    /// Answers with RST.
    pub refused: u64,
    /// Packets the kernel could not walk to their TCP header.
    pub unparsed: u64,
}

/// One source, from the replay's own new-pair events (exact: replay sheds nothing).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SourceSummary {
    /// The address.
    pub addr: IpAddr,
    /// Distinct destinations it opened pairs to.
    pub pairs: u64,
}

/// New pairs per source, for the summary. Bounded: past
/// [`Destinations::MAX_SOURCES`] sources (a spoofed flood) new ones are
/// only counted in `overflow`.
#[derive(Default)]
pub(super) struct Destinations {
    pub(super) by_source: std::collections::HashMap<IpAddr, u64>,
    overflow: u64,
}

impl Destinations {
    /// 1M sources: about 48 MB at most.
    const MAX_SOURCES: usize = 1 << 20;

    pub(super) fn count(&mut self, src: IpAddr) {
        let n = self.by_source.len();
        match self.by_source.get_mut(&src) {
            Some(c) => *c += 1,
            None if n < Self::MAX_SOURCES => {
                self.by_source.insert(src, 1);
            }
            None => self.overflow += 1,
        }
    }

    pub(super) fn top(&self, n: usize) -> Vec<SourceSummary> {
        let mut v: Vec<SourceSummary> = self
            .by_source
            .iter()
            .map(|(&addr, &pairs)| SourceSummary { addr, pairs })
            .collect();
        v.sort_by(|a, b| b.pairs.cmp(&a.pairs).then(a.addr.cmp(&b.addr)));
        v.truncate(n);
        v
    }
}

/// What a replay did. Serialises as JSON; `Display` is the stderr summary.
/// It holds nothing that depends on when or where the replay ran.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ReplaySummary {
    /// The capture.
    pub path: PathBuf,
    /// Its container format.
    pub format: CaptureFormat,
    /// Packet records per link type (by name).
    pub link_types: BTreeMap<String, u64>,
    /// Packet records read.
    pub records: u64,
    /// Frames run through the XDP program.
    pub replayed: u64,
    /// Records skipped: shorter than their link header or than an Ethernet header.
    pub skipped_short: u64,
    /// Records skipped: link type not supported (pcapng interfaces only).
    pub skipped_link: u64,
    /// Records skipped: raw-IP or loopback payload neither IPv4 nor IPv6.
    pub skipped_not_ip: u64,
    /// pcapng blocks skipped as malformed or naming an undescribed interface.
    pub bad_blocks: u64,
    /// Frames cut to `max_frame` bytes (headers are at the start; see docs).
    pub cut_frames: u64,
    /// The longest frame the kernel test-runs here.
    pub max_frame: usize,
    /// Records whose timestamp was earlier than the latest seen (clamped).
    pub backwards_timestamps: u64,
    /// Records without a usable timestamp (pcapng simple packets; out of range).
    pub missing_timestamps: u64,
    /// Set when the file ended inside its last record.
    pub truncated: Option<String>,
    /// Capture time of the first record.
    pub first_ts: Option<DateTime<Utc>>,
    /// Capture time of the last record (after clamping).
    pub last_ts: Option<DateTime<Utc>>,
    /// Events delivered to the sink.
    pub events: EventCounts,
    /// Ring-buffer records that did not decode (never expected).
    pub bad_events: u64,
    /// SMB payload samples handed to the sink (SYN-ACK records not counted).
    pub smb_samples: u64,
    /// Sample records that did not decode (never expected).
    pub bad_samples: u64,
    /// The kernel's counters after the replay.
    pub kernel: Stats,
    /// Distinct sources that opened pairs.
    pub sources: usize,
    /// Up to 10 sources with the most destinations.
    pub top_sources: Vec<SourceSummary>,
    /// Alerts the sink raised, if it counts them.
    pub alerts: Option<u64>,
}

impl ReplaySummary {
    /// Packets the kernel found malformed (summed over header kinds).
    pub fn malformed(&self) -> u64 {
        self.kernel.malformed()
    }
}

impl std::fmt::Display for ReplaySummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let k = |i| self.kernel.get(i);
        let links: Vec<String> = self.link_types.keys().cloned().collect();
        writeln!(
            f,
            "replayed {} ({}, {}): {} packets",
            self.path.display(),
            self.format,
            if links.is_empty() {
                "no packets".to_owned()
            } else {
                links.join(", ")
            },
            self.records
        )?;
        if let (Some(a), Some(b)) = (self.first_ts, self.last_ts) {
            let span = (b - a).to_std().unwrap_or_default();
            writeln!(
                f,
                "  capture time {} to {} ({})",
                a.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
                b.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
                humantime::format_duration(Duration::from_millis(span.as_millis() as u64))
            )?;
        }
        writeln!(
            f,
            "  monitored SYNs {}, pairs {}, responses {}, sources {}",
            k(stat::MONITORED_SYNS),
            k(stat::NEW_PAIRS),
            k(stat::RESPONSES),
            self.sources
        )?;
        for s in self.top_sources.iter().take(3) {
            writeln!(f, "    {}: {} destinations", s.addr, s.pairs)?;
        }
        writeln!(
            f,
            "  events: {} new pairs, {} active again, {} accepted, {} confirmed, {} refused, {} unparsed; alerts: {}",
            self.events.new_pairs,
            self.events.active,
            self.events.accepted,
            self.events.confirmed,
            self.events.refused,
            self.events.unparsed,
            self.alerts.map_or("not counted".into(), |n| n.to_string())
        )?;
        writeln!(
            f,
            "  SMB samples: {} segments of {} connections ({} payload bytes){}",
            self.smb_samples,
            k(stat::SAMPLE_FLOWS),
            k(stat::SAMPLE_BYTES),
            if self.bad_samples > 0 {
                format!(", {} records that did not decode", self.bad_samples)
            } else {
                String::new()
            }
        )?;
        writeln!(
            f,
            "  parse errors: {} malformed (eth {}, vlan {}, ipv4 {}, ipv6 {}, tcp {}), {} IPv6 chains and {} VLAN stacks past the walk's bound, {} lost events (ring buffer full)",
            self.malformed(),
            k(stat::MALFORMED_ETH),
            k(stat::MALFORMED_VLAN),
            k(stat::MALFORMED_IPV4),
            k(stat::MALFORMED_IPV6),
            k(stat::MALFORMED_TCP),
            k(stat::IPV6_EXT_LIMIT),
            k(stat::VLAN_LIMIT),
            k(stat::RINGBUF_FULL)
        )?;
        write!(
            f,
            "  skipped: {} too short, {} unsupported link, {} not IP, {} bad blocks; {} frames cut to the kernel's {}-byte test-run limit; {} timestamps went backwards (clamped), {} missing",
            self.skipped_short,
            self.skipped_link,
            self.skipped_not_ip,
            self.bad_blocks,
            self.cut_frames,
            self.max_frame,
            self.backwards_timestamps,
            self.missing_timestamps
        )?;
        if let Some(t) = &self.truncated {
            write!(f, "\n  warning: {t}")?;
        }
        Ok(())
    }
}
