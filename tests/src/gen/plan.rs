//! What to send: the kinds of frame, their mix, the address streams, and
//! the plan of frames built from a spec with the counters it should leave
//! in the data plane. Pure: builds bytes, sends nothing.

use std::{
    collections::{BTreeMap, HashSet},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    str::FromStr,
};

use anyhow::{bail, Result};
use smbwatch::{
    dataplane::Stats,
    packet::{tcp_flags, Segment},
};
use smbwatch_common::stat;

use super::{SMB_PORT, VLAN_ID};

/// A kind of generated frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// IPv4 bare SYN to 445, source `i` to destination `j`.
    Syn,
    /// IPv4 SYN-ACK from 445 answering a pair of the `syn` stream.
    SynAck,
    /// IPv4 RST-ACK from 445 answering a pair of the `syn` stream.
    Rst,
    /// IPv4 TCP ACK to port 443 (not SMB).
    Background,
    /// IPv6 bare SYN to 445 (its own pairs, in 2001:db8::/32).
    Ipv6,
    /// 802.1Q-tagged (VLAN 100) IPv4 bare SYN to 445 (its own pairs: sources from 10.128.0.1).
    Vlan,
}

impl Kind {
    /// All kinds, in the order of the `--mix` documentation.
    pub const ALL: [Kind; 6] = [
        Kind::Syn,
        Kind::SynAck,
        Kind::Rst,
        Kind::Background,
        Kind::Ipv6,
        Kind::Vlan,
    ];

    /// The name used in `--mix`.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Syn => "syn",
            Kind::SynAck => "synack",
            Kind::Rst => "rst",
            Kind::Background => "background",
            Kind::Ipv6 => "ipv6",
            Kind::Vlan => "vlan",
        }
    }
}

impl FromStr for Kind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Kind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| {
                format!(
                    "unknown traffic kind {s:?}; kinds: {}",
                    Kind::ALL.map(Kind::name).join(", ")
                )
            })
    }
}

/// Weighted kinds: `syn,synack` (weight 1 each) or `syn=8,background=2`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mix(pub Vec<(Kind, u32)>);

impl FromStr for Mix {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let mut out: Vec<(Kind, u32)> = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, weight) = match part.split_once('=') {
                Some((n, w)) => (
                    n,
                    w.parse::<u32>().map_err(|_| {
                        format!("weight of {n:?} must be a whole number, got {w:?}")
                    })?,
                ),
                None => (part, 1),
            };
            let kind: Kind = name.parse()?;
            if out.iter().any(|(k, _)| *k == kind) {
                return Err(format!("{name:?} appears twice in the mix"));
            }
            if weight > 0 {
                out.push((kind, weight));
            }
        }
        if out.is_empty() {
            return Err("the mix is empty: name at least one kind (syn, synack, rst, background, ipv6, vlan)".into());
        }
        Ok(Mix(out))
    }
}

/// What to generate.
#[derive(Clone, Debug)]
pub struct Spec {
    /// Distinct sources (clients) per stream.
    pub sources: u32,
    /// Number of the first source (so a later plan can continue with new
    /// sources where an earlier one stopped).
    pub first_source: u32,
    /// Distinct destinations (servers) per stream.
    pub destinations: u32,
    /// Kinds and weights; frames interleave in weight order.
    pub mix: Mix,
    /// Total packets.
    pub count: u64,
    /// Packets per call: each distinct frame is sent this many times in a
    /// row (for SYNs: the same pair's retransmissions).
    pub burst: u32,
}

/// IPv4 source `i` of the untagged streams (10.0.0.1 onwards).
pub fn src_v4(i: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0x0a00_0001u32.wrapping_add(i)))
}

/// IPv4 source `i` of the VLAN stream (10.128.0.1 onwards).
pub fn src_vlan(i: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0x0a80_0001u32.wrapping_add(i)))
}

/// IPv4 destination `j` (198.18.0.1 onwards).
pub fn dst_v4(j: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0xc612_0001u32.wrapping_add(j)))
}

/// IPv6 source `i` (2001:db8:a::1 onwards).
pub fn src_v6(i: u32) -> IpAddr {
    IpAddr::V6(Ipv6Addr::from(
        0x2001_0db8_000a_0000_0000_0000_0000_0001u128 + u128::from(i),
    ))
}

/// IPv6 destination `j` (2001:db8:b::1 onwards).
pub fn dst_v6(j: u32) -> IpAddr {
    IpAddr::V6(Ipv6Addr::from(
        0x2001_0db8_000b_0000_0000_0000_0000_0001u128 + u128::from(j),
    ))
}

/// Client port of pair `p` (varies so the frames differ beyond addresses).
fn sport(p: u64) -> u16 {
    32768 + (p % 28000) as u16
}

/// The counters the data plane must show after the plan was received, as
/// long as its tables never evicted (sources and pairs under their caps).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Expected {
    /// Frames.
    pub packets: u64,
    /// IPv4 frames.
    pub ipv4: u64,
    /// IPv6 frames.
    pub ipv6: u64,
    /// VLAN-tagged frames.
    pub vlan: u64,
    /// Bare SYNs to 445.
    pub monitored_syns: u64,
    /// Distinct (source, destination) pairs among them.
    pub new_pairs: u64,
    /// Answers to a pair SYN'd earlier and not yet answered.
    pub responses: u64,
}

impl Expected {
    /// The same counters from a data plane's [`Stats`].
    pub fn from_stats(s: &Stats) -> Self {
        Self {
            packets: s.get(stat::PACKETS),
            ipv4: s.get(stat::IPV4),
            ipv6: s.get(stat::IPV6),
            vlan: s.get(stat::VLAN),
            monitored_syns: s.get(stat::MONITORED_SYNS),
            new_pairs: s.get(stat::NEW_PAIRS),
            responses: s.get(stat::RESPONSES),
        }
    }
}

/// Frames to send, each with its repeat count, and what they should count.
#[derive(Clone, Debug, Default)]
pub struct Plan {
    bytes: Vec<u8>,
    /// (offset, length, repeat) per call.
    calls: Vec<(u32, u16, u32)>,
    /// What the receiving data plane should count.
    pub expected: Expected,
    /// Packets per kind.
    pub per_kind: BTreeMap<Kind, u64>,
}

impl Plan {
    /// Builds the frames of `spec`. Streams are independent: each kind walks
    /// its own (source, destination) sequence, sources fastest, so `syn`
    /// frames `0..N·M` are all distinct pairs and every source reaches every
    /// destination; answers walk the `syn` stream's pairs in the same order.
    pub fn build(spec: &Spec) -> Result<Self> {
        if spec.sources == 0 || spec.destinations == 0 || spec.burst == 0 {
            bail!("--sources, --destinations and --burst must be at least 1");
        }
        let pairs = u64::from(spec.sources) * u64::from(spec.destinations);
        let pattern: Vec<Kind> = spec
            .mix
            .0
            .iter()
            .flat_map(|(k, w)| std::iter::repeat_n(*k, *w as usize))
            .collect();
        let mut plan = Plan::default();
        let mut cursor: BTreeMap<Kind, u64> = BTreeMap::new();
        // Answers share one cursor over the syn stream's pairs.
        let mut answer_cursor = 0u64;
        let mut syn_seen: HashSet<u64> = HashSet::new();
        let mut v6_seen: HashSet<u64> = HashSet::new();
        let mut vlan_seen: HashSet<u64> = HashSet::new();
        let mut answered: HashSet<u64> = HashSet::new();
        let e = &mut plan.expected;
        let mut left = spec.count;
        let mut n = 0usize;
        while left > 0 {
            let kind = pattern[n % pattern.len()];
            n += 1;
            let repeat = u64::from(spec.burst).min(left) as u32;
            left -= u64::from(repeat);
            let r = u64::from(repeat);
            let c = if matches!(kind, Kind::SynAck | Kind::Rst) {
                &mut answer_cursor
            } else {
                cursor.entry(kind).or_default()
            };
            let p = *c % pairs;
            *c += 1;
            let (i, j) = (
                spec.first_source + (p % u64::from(spec.sources)) as u32,
                (p / u64::from(spec.sources)) as u32,
            );
            let seg = match kind {
                Kind::Syn => {
                    e.ipv4 += r;
                    e.monitored_syns += r;
                    if syn_seen.insert(p) {
                        e.new_pairs += 1;
                    }
                    Segment::syn(src_v4(i), dst_v4(j), sport(p), SMB_PORT)
                }
                Kind::SynAck | Kind::Rst => {
                    e.ipv4 += r;
                    if syn_seen.contains(&p) && answered.insert(p) {
                        e.responses += 1;
                    }
                    let flags = if kind == Kind::SynAck {
                        tcp_flags::SYN | tcp_flags::ACK
                    } else {
                        tcp_flags::RST | tcp_flags::ACK
                    };
                    Segment::new(dst_v4(j), src_v4(i), SMB_PORT, sport(p), flags)
                }
                Kind::Background => {
                    e.ipv4 += r;
                    Segment::new(
                        src_v4(i),
                        dst_v4(j),
                        sport(p),
                        443,
                        tcp_flags::ACK | tcp_flags::PSH,
                    )
                }
                Kind::Ipv6 => {
                    e.ipv6 += r;
                    e.monitored_syns += r;
                    if v6_seen.insert(p) {
                        e.new_pairs += 1;
                    }
                    Segment::syn(src_v6(i), dst_v6(j), sport(p), SMB_PORT)
                }
                Kind::Vlan => {
                    e.ipv4 += r;
                    e.vlan += r;
                    e.monitored_syns += r;
                    if vlan_seen.insert(p) {
                        e.new_pairs += 1;
                    }
                    let mut s = Segment::syn(src_vlan(i), dst_v4(j), sport(p), SMB_PORT);
                    s.vlans = vec![VLAN_ID];
                    s
                }
            };
            e.packets += r;
            *plan.per_kind.entry(kind).or_default() += r;
            let frame = seg.frame();
            plan.calls
                .push((plan.bytes.len() as u32, frame.len() as u16, repeat));
            plan.bytes.extend_from_slice(&frame);
        }
        Ok(plan)
    }

    /// A plan of these frames, each sent once (hand-made traffic such as a
    /// scanner's probes; counts are not predicted).
    pub fn from_frames(frames: &[Vec<u8>]) -> Self {
        let mut p = Self::default();
        for f in frames {
            p.calls.push((p.bytes.len() as u32, f.len() as u16, 1));
            p.bytes.extend_from_slice(f);
        }
        p
    }

    /// Calls (distinct frames) in the plan.
    pub fn calls(&self) -> usize {
        self.calls.len()
    }

    /// `(frame, repeat)` for every call, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], u32)> + '_ {
        self.calls
            .iter()
            .map(|&(o, l, r)| (&self.bytes[o as usize..o as usize + l as usize], r))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(mix: &str, count: u64, burst: u32) -> Spec {
        Spec {
            sources: 3,
            first_source: 0,
            destinations: 2,
            mix: mix.parse().unwrap(),
            count,
            burst,
        }
    }

    #[test]
    fn mix_parsing() {
        assert_eq!(
            "syn=3,background".parse::<Mix>().unwrap(),
            Mix(vec![(Kind::Syn, 3), (Kind::Background, 1)])
        );
        assert!("syn,syn".parse::<Mix>().is_err());
        assert!("smb".parse::<Mix>().unwrap_err().contains("kinds: syn"));
        assert!("".parse::<Mix>().is_err());
        assert!("syn=x".parse::<Mix>().is_err());
    }

    #[test]
    fn syn_stream_visits_every_pair_once_then_repeats() {
        let p = Plan::build(&spec("syn", 10, 1)).unwrap();
        assert_eq!(p.calls(), 10);
        assert_eq!(p.expected.monitored_syns, 10);
        assert_eq!(p.expected.new_pairs, 6, "3 sources × 2 destinations");
        let p = Plan::build(&spec("syn", 10, 4)).unwrap();
        assert_eq!(p.calls(), 3, "bursts of 4, 4, 2");
        assert_eq!(p.iter().map(|(_, r)| r).collect::<Vec<_>>(), vec![4, 4, 2]);
        assert_eq!(p.expected.new_pairs, 3);
    }

    #[test]
    fn answers_count_only_for_pairs_already_opened() {
        // syn, synack alternate: the answer to pair k follows its SYN.
        let p = Plan::build(&spec("syn,synack", 12, 1)).unwrap();
        assert_eq!(p.expected.responses, 6);
        // Each answer precedes its pair's SYN: none counts.
        let p = Plan::build(&spec("rst,syn", 4, 1)).unwrap();
        assert_eq!(p.expected.responses, 0);
        // Answering the same pair twice counts once.
        let p = Plan::build(&spec("syn=6,synack=2", 8, 1)).unwrap();
        assert_eq!(p.expected.responses, 2);
    }

    #[test]
    fn every_kind_counts_where_the_program_counts_it() {
        let p = Plan::build(&spec("syn,synack,rst,background,ipv6,vlan", 60, 1)).unwrap();
        let e = p.expected;
        assert_eq!(e.packets, 60);
        assert_eq!(e.ipv6, 10);
        assert_eq!(e.vlan, 10);
        assert_eq!(e.ipv4, 50);
        assert_eq!(e.monitored_syns, 30);
        assert_eq!(e.new_pairs, 6 + 6 + 6);
        assert!(p.per_kind.values().all(|&n| n == 10));
        // Frames really are what their kind says.
        let frames: Vec<&[u8]> = p.iter().map(|(f, _)| f).collect();
        assert_eq!(&frames[4][12..14], &[0x86, 0xdd], "ipv6");
        assert_eq!(&frames[5][12..14], &[0x81, 0x00], "vlan");
        assert_eq!(frames[1][47], tcp_flags::SYN | tcp_flags::ACK);
        assert_eq!(frames[2][47], tcp_flags::RST | tcp_flags::ACK);
    }
}
