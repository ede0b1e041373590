//! Frame construction: Ethernet, VLAN tags, IPv4 (with options), IPv6 (with
//! extension headers), TCP.
//!
//! Used wherever smbwatch makes packets instead of receiving them: the kernel
//! tests, the benchmarks, the traffic generator and replay (which puts an
//! Ethernet header in front of raw-IP and Linux-cooked captures).

use std::net::IpAddr;

/// TCP flag bits (the kernel parser's, from smbwatch-common).
pub use smbwatch_common::proto::tcp_flags;
use smbwatch_common::proto::{
    ETH_P_8021AD, ETH_P_8021Q, ETH_P_IP, ETH_P_IPV6, IPPROTO_DSTOPTS, IPPROTO_FRAGMENT,
    IPPROTO_HOPOPTS, IPPROTO_ROUTING, IPPROTO_TCP,
};

/// An IPv6 extension header to put between the fixed header and TCP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ipv6Ext {
    /// Hop-by-hop options (8 bytes of padding options).
    HopByHop,
    /// Routing header, type 0 segments-left 0 (8 bytes).
    Routing,
    /// Destination options (8 bytes).
    DestOpts,
    /// Fragment header with this offset (in 8-byte units) and more-fragments flag.
    Fragment {
        /// Fragment offset in 8-byte units; non-zero means "not the first fragment".
        offset: u16,
        /// More fragments follow.
        more: bool,
    },
}

/// A TCP segment to frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Segment {
    /// Source address (v4 and v6 must not be mixed).
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// Source port.
    pub sport: u16,
    /// Destination port.
    pub dport: u16,
    /// TCP flags (see [`tcp_flags`]).
    pub flags: u8,
    /// VLAN ids, outermost first (any number; with two or more the
    /// outermost uses 802.1ad, the rest 802.1Q).
    pub vlans: Vec<u16>,
    /// IPv4 options length in bytes (multiple of 4, at most 40).
    pub ipv4_options: usize,
    /// IPv6 extension headers, in order.
    pub ipv6_ext: Vec<Ipv6Ext>,
    /// IPv4 fragment: (offset in 8-byte units, more fragments). `None`: DF.
    pub ipv4_fragment: Option<(u16, bool)>,
    /// TCP header bytes the packet carries (20 normally; 8 or 16 for the
    /// first fragment of `nmap -f` / `-ff`).
    pub tcp_len: usize,
    /// TPIDs for the tags, outermost first, instead of the defaults
    /// (0x88a8 outer + 0x8100 inner for two tags, 0x8100 otherwise).
    pub tpids: Option<Vec<u16>>,
    /// Pad the frame to Ethernet's 60-byte minimum, as the wire does.
    pub pad: bool,
    /// Sequence number.
    pub seq: u32,
    /// Acknowledgement number (sent when the ACK flag is set).
    pub ack: u32,
    /// TCP payload, after the header.
    pub payload: Vec<u8>,
}

impl Segment {
    /// A segment with no tags, options or extension headers.
    pub fn new(src: IpAddr, dst: IpAddr, sport: u16, dport: u16, flags: u8) -> Self {
        Self {
            src,
            dst,
            sport,
            dport,
            flags,
            vlans: Vec::new(),
            ipv4_options: 0,
            ipv6_ext: Vec::new(),
            ipv4_fragment: None,
            tcp_len: 20,
            tpids: None,
            pad: false,
            seq: 0x1000_0000,
            ack: 0x2000_0001,
            payload: Vec::new(),
        }
    }

    /// A bare SYN.
    pub fn syn(src: IpAddr, dst: IpAddr, sport: u16, dport: u16) -> Self {
        Self::new(src, dst, sport, dport, tcp_flags::SYN)
    }

    /// The whole Ethernet frame.
    pub fn frame(&self) -> Vec<u8> {
        let mut f = Vec::with_capacity(128);
        f.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x02]); // dst MAC (locally administered)
        f.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x01]); // src MAC
        let ethertype = if self.src.is_ipv4() {
            ETH_P_IP
        } else {
            ETH_P_IPV6
        };
        for (i, vlan) in self.vlans.iter().enumerate() {
            let tpid: u16 = match &self.tpids {
                Some(t) => t[i],
                None if i == 0 && self.vlans.len() >= 2 => ETH_P_8021AD,
                None => ETH_P_8021Q,
            };
            f.extend_from_slice(&tpid.to_be_bytes());
            f.extend_from_slice(&(vlan & 0x0fff).to_be_bytes());
        }
        f.extend_from_slice(&ethertype.to_be_bytes());
        self.ip_packet_into(&mut f);
        if self.pad && f.len() < 60 {
            f.resize(60, 0);
        }
        f
    }

    /// The IP packet alone (no link header).
    pub fn ip_packet(&self) -> Vec<u8> {
        let mut p = Vec::with_capacity(128);
        self.ip_packet_into(&mut p);
        p
    }

    fn tcp_header(&self) -> [u8; 20] {
        let mut t = [0u8; 20];
        t[0..2].copy_from_slice(&self.sport.to_be_bytes());
        t[2..4].copy_from_slice(&self.dport.to_be_bytes());
        t[4..8].copy_from_slice(&self.seq.to_be_bytes());
        if self.flags & tcp_flags::ACK != 0 {
            t[8..12].copy_from_slice(&self.ack.to_be_bytes());
        }
        t[12] = 5 << 4;
        t[13] = self.flags;
        t[14..16].copy_from_slice(&64240u16.to_be_bytes());
        t
    }

    fn ip_packet_into(&self, f: &mut Vec<u8>) {
        let full = self.tcp_header();
        let mut tcp = full[..self.tcp_len.min(20)].to_vec();
        if self.tcp_len >= 20 {
            tcp.extend_from_slice(&self.payload);
        }
        let tcp = &tcp[..];
        match (self.src, self.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                let ihl = 20 + self.ipv4_options;
                let total = (ihl + tcp.len()) as u16;
                let start = f.len();
                f.push(0x40 | (ihl / 4) as u8);
                f.push(0);
                f.extend_from_slice(&total.to_be_bytes());
                let frag: u16 = match self.ipv4_fragment {
                    None => 0x4000, // DF
                    Some((off, more)) => (off & 0x1fff) | if more { 0x2000 } else { 0 },
                };
                f.extend_from_slice(&[0, 1]); // id 1
                f.extend_from_slice(&frag.to_be_bytes());
                f.push(64);
                f.push(IPPROTO_TCP);
                f.extend_from_slice(&[0, 0]);
                f.extend_from_slice(&s.octets());
                f.extend_from_slice(&d.octets());
                // NOPs then end-of-options: valid padding of any length.
                f.extend(std::iter::repeat_n(1u8, self.ipv4_options));
                let csum = checksum(&f[start..start + ihl]);
                f[start + 10..start + 12].copy_from_slice(&csum.to_be_bytes());
                f.extend_from_slice(tcp);
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                let ext_len: usize = self.ipv6_ext.len() * 8;
                let payload = (ext_len + tcp.len()) as u16;
                f.extend_from_slice(&[0x60, 0, 0, 0]);
                f.extend_from_slice(&payload.to_be_bytes());
                let first = self.ipv6_ext.first().map_or(IPPROTO_TCP, ext_proto);
                f.push(first);
                f.push(64);
                f.extend_from_slice(&s.octets());
                f.extend_from_slice(&d.octets());
                for (i, ext) in self.ipv6_ext.iter().enumerate() {
                    let next = self.ipv6_ext.get(i + 1).map_or(IPPROTO_TCP, ext_proto);
                    match ext {
                        Ipv6Ext::Fragment { offset, more } => {
                            let off = (offset << 3) | u16::from(*more);
                            f.push(next);
                            f.push(0);
                            f.extend_from_slice(&off.to_be_bytes());
                            f.extend_from_slice(&0x1234_5678u32.to_be_bytes());
                        }
                        Ipv6Ext::Routing => {
                            f.extend_from_slice(&[next, 0, 0, 0, 0, 0, 0, 0]);
                        }
                        Ipv6Ext::HopByHop | Ipv6Ext::DestOpts => {
                            // PadN option filling the 6 remaining bytes.
                            f.extend_from_slice(&[next, 0, 1, 4, 0, 0, 0, 0]);
                        }
                    }
                }
                f.extend_from_slice(tcp);
            }
            _ => panic!("Segment mixes IPv4 and IPv6 addresses"),
        }
    }
}

fn ext_proto(e: &Ipv6Ext) -> u8 {
    match e {
        Ipv6Ext::HopByHop => IPPROTO_HOPOPTS,
        Ipv6Ext::Routing => IPPROTO_ROUTING,
        Ipv6Ext::DestOpts => IPPROTO_DSTOPTS,
        Ipv6Ext::Fragment { .. } => IPPROTO_FRAGMENT,
    }
}

/// The Internet checksum (RFC 1071).
pub fn checksum(data: &[u8]) -> u16 {
    let mut sum = 0u32;
    for c in data.chunks(2) {
        let w = u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]);
        sum += u32::from(w);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An Ethernet header (zero MACs) in front of a raw IP packet; the
/// ethertype comes from the IP version nibble. `None` if it is neither 4 nor 6.
pub fn ethernet_for_ip(ip: &[u8]) -> Option<Vec<u8>> {
    let ethertype: u16 = match ip.first()? >> 4 {
        4 => ETH_P_IP,
        6 => ETH_P_IPV6,
        _ => return None,
    };
    Some(ethernet_with_type(ethertype, ip))
}

/// An Ethernet header (zero MACs) with `ethertype` in front of `payload`.
pub fn ethernet_with_type(ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(14 + payload.len());
    f.extend_from_slice(&[0u8; 12]);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ipv4_syn_layout() {
        let f = Segment::syn(ip("192.0.2.1"), ip("198.51.100.7"), 40000, 445).frame();
        assert_eq!(f.len(), 14 + 20 + 20);
        assert_eq!(&f[12..14], &[0x08, 0x00]);
        assert_eq!(checksum(&f[14..34]), 0, "header checksum verifies");
        assert_eq!(u16::from_be_bytes([f[36], f[37]]), 445);
        assert_eq!(f[47], tcp_flags::SYN);
    }

    #[test]
    fn qinq_and_options() {
        let mut s = Segment::syn(ip("192.0.2.1"), ip("198.51.100.7"), 1, 445);
        s.vlans = vec![100, 200];
        s.ipv4_options = 8;
        let f = s.frame();
        assert_eq!(&f[12..18], &[0x88, 0xa8, 0, 100, 0x81, 0x00]);
        assert_eq!(&f[18..22], &[0, 200, 0x08, 0x00]);
        assert_eq!(f[22] & 0x0f, 7);
        assert_eq!(f.len(), 22 + 28 + 20);
    }

    #[test]
    fn deep_vlan_stack_and_ipv6_chain() {
        let mut s = Segment::syn(ip("2001:db8::1"), ip("2001:db8::2"), 1, 445);
        s.vlans = vec![1, 2, 3, 4];
        s.ipv6_ext = vec![Ipv6Ext::DestOpts; 16];
        let f = s.frame();
        assert_eq!(&f[12..14], &[0x88, 0xa8]);
        for i in 1..4 {
            assert_eq!(&f[12 + 4 * i..14 + 4 * i], &[0x81, 0x00], "tag {i}");
        }
        let ip6 = 14 + 16;
        assert_eq!(&f[ip6 - 2..ip6], &[0x86, 0xdd]);
        assert_eq!(f[ip6 + 6], 60, "first next-header: destination options");
        assert_eq!(f[ip6 + 40 + 15 * 8], 6, "the 16th points to TCP");
        assert_eq!(f.len(), ip6 + 40 + 16 * 8 + 20);
    }

    #[test]
    fn ipv6_ext_chain() {
        let mut s = Segment::syn(ip("2001:db8::1"), ip("2001:db8::2"), 1, 445);
        s.ipv6_ext = vec![
            Ipv6Ext::HopByHop,
            Ipv6Ext::Fragment {
                offset: 0,
                more: true,
            },
        ];
        let f = s.frame();
        assert_eq!(f[14 + 6], 0, "first next-header is hop-by-hop");
        assert_eq!(f[54], 44, "hop-by-hop points to fragment");
        assert_eq!(f[62], 6, "fragment points to TCP");
        assert_eq!(f.len(), 14 + 40 + 16 + 20);
    }
}
