//! Frame construction: Ethernet, VLAN tags, IPv4 (with options), IPv6 (with
//! extension headers), TCP.
//!
//! Used wherever smbwatch makes packets instead of receiving them: the kernel
//! tests, the benchmarks, the traffic generator and replay (which puts an
//! Ethernet header in front of raw-IP and Linux-cooked captures).
//!
//! Offsets and sizes come from the kernel parser's layouts
//! (`smbwatch_common::headers`), written field by field into byte buffers
//! (safe code: no header struct is ever cast from or to bytes).

use std::mem::{offset_of, size_of};
use std::net::IpAddr;

use smbwatch_common::headers::{
    EthHdr, Ipv4Hdr, Ipv6ExtHdr, Ipv6FragHdr, Ipv6Hdr, TcpHdr, VlanHdr, IP6_MF, IP6_OFFMASK, IP_DF,
    IP_MF, IP_OFFMASK, VLAN_VID_MASK,
};
/// TCP flag bits (the kernel parser's, from smbwatch-common).
pub use smbwatch_common::proto::tcp_flags;
use smbwatch_common::proto::{
    ETH_P_8021AD, ETH_P_8021Q, ETH_P_IP, ETH_P_IPV6, IPPROTO_DSTOPTS, IPPROTO_FRAGMENT,
    IPPROTO_HOPOPTS, IPPROTO_ROUTING, IPPROTO_TCP,
};

/// Ethernet's shortest frame without the FCS: shorter ones are padded.
pub const ETH_MIN_FRAME: usize = 60;

/// Writes `bytes` at `at` in `buf` (a field at its layout's offset).
fn put(buf: &mut [u8], at: usize, bytes: &[u8]) {
    buf[at..at + bytes.len()].copy_from_slice(bytes);
}

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
            tcp_len: size_of::<TcpHdr>(),
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
        let ethertype = if self.src.is_ipv4() {
            ETH_P_IP
        } else {
            ETH_P_IPV6
        };
        let tpid = |i: usize| match &self.tpids {
            Some(t) => t[i],
            None if i == 0 && self.vlans.len() >= 2 => ETH_P_8021AD,
            None => ETH_P_8021Q,
        };
        // Each protocol field names what follows: the first tag's TPID or
        // the ethertype, then per tag the next tag's TPID or the ethertype.
        let next = |i: usize| {
            if i < self.vlans.len() {
                tpid(i)
            } else {
                ethertype
            }
        };
        let mut f = vec![0u8; size_of::<EthHdr>()];
        put(&mut f, offset_of!(EthHdr, dst), &[0x02, 0, 0, 0, 0, 0x02]); // locally administered
        put(&mut f, offset_of!(EthHdr, src), &[0x02, 0, 0, 0, 0, 0x01]);
        put(&mut f, offset_of!(EthHdr, proto), &next(0).to_be_bytes());
        for (i, vlan) in self.vlans.iter().enumerate() {
            let mut tag = [0u8; size_of::<VlanHdr>()];
            put(
                &mut tag,
                offset_of!(VlanHdr, tci),
                &(vlan & VLAN_VID_MASK).to_be_bytes(),
            );
            put(
                &mut tag,
                offset_of!(VlanHdr, proto),
                &next(i + 1).to_be_bytes(),
            );
            f.extend_from_slice(&tag);
        }
        self.ip_packet_into(&mut f);
        if self.pad && f.len() < ETH_MIN_FRAME {
            f.resize(ETH_MIN_FRAME, 0);
        }
        f
    }

    /// The IP packet alone (no link header).
    pub fn ip_packet(&self) -> Vec<u8> {
        let mut p = Vec::with_capacity(128);
        self.ip_packet_into(&mut p);
        p
    }

    fn tcp_header(&self) -> [u8; size_of::<TcpHdr>()] {
        let mut t = [0u8; size_of::<TcpHdr>()];
        put(
            &mut t,
            offset_of!(TcpHdr, source),
            &self.sport.to_be_bytes(),
        );
        put(&mut t, offset_of!(TcpHdr, dest), &self.dport.to_be_bytes());
        put(&mut t, offset_of!(TcpHdr, seq), &self.seq.to_be_bytes());
        if self.flags & tcp_flags::ACK != 0 {
            put(&mut t, offset_of!(TcpHdr, ack_seq), &self.ack.to_be_bytes());
        }
        // Data offset in 32-bit words: no options.
        t[offset_of!(TcpHdr, doff)] = ((size_of::<TcpHdr>() / 4) as u8) << 4;
        t[offset_of!(TcpHdr, flags)] = self.flags;
        put(&mut t, offset_of!(TcpHdr, window), &64240u16.to_be_bytes());
        t
    }

    fn ip_packet_into(&self, f: &mut Vec<u8>) {
        let full = self.tcp_header();
        let mut tcp = full[..self.tcp_len.min(full.len())].to_vec();
        if self.tcp_len >= full.len() {
            tcp.extend_from_slice(&self.payload);
        }
        let tcp = &tcp[..];
        match (self.src, self.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                let ihl = size_of::<Ipv4Hdr>() + self.ipv4_options;
                let total = (ihl + tcp.len()) as u16;
                let frag: u16 = match self.ipv4_fragment {
                    None => IP_DF,
                    Some((off, more)) => (off & IP_OFFMASK) | if more { IP_MF } else { 0 },
                };
                let mut h = vec![0u8; ihl];
                h[offset_of!(Ipv4Hdr, version_ihl)] = 0x40 | (ihl / 4) as u8;
                put(&mut h, offset_of!(Ipv4Hdr, tot_len), &total.to_be_bytes());
                put(&mut h, offset_of!(Ipv4Hdr, id), &1u16.to_be_bytes());
                put(&mut h, offset_of!(Ipv4Hdr, frag_off), &frag.to_be_bytes());
                h[offset_of!(Ipv4Hdr, ttl)] = 64;
                h[offset_of!(Ipv4Hdr, protocol)] = IPPROTO_TCP;
                put(&mut h, offset_of!(Ipv4Hdr, saddr), &s.octets());
                put(&mut h, offset_of!(Ipv4Hdr, daddr), &d.octets());
                // NOPs: valid padding of any length.
                h[size_of::<Ipv4Hdr>()..].fill(1);
                let csum = checksum(&h);
                put(&mut h, offset_of!(Ipv4Hdr, check), &csum.to_be_bytes());
                f.extend_from_slice(&h);
                f.extend_from_slice(tcp);
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                let ext_len: usize = self.ipv6_ext.len() * size_of::<Ipv6ExtHdr>();
                let payload = (ext_len + tcp.len()) as u16;
                let first = self.ipv6_ext.first().map_or(IPPROTO_TCP, ext_proto);
                let mut h = [0u8; size_of::<Ipv6Hdr>()];
                h[offset_of!(Ipv6Hdr, version_flow)] = 0x60;
                put(
                    &mut h,
                    offset_of!(Ipv6Hdr, payload_len),
                    &payload.to_be_bytes(),
                );
                h[offset_of!(Ipv6Hdr, nexthdr)] = first;
                h[offset_of!(Ipv6Hdr, hop_limit)] = 64;
                put(&mut h, offset_of!(Ipv6Hdr, saddr), &s.octets());
                put(&mut h, offset_of!(Ipv6Hdr, daddr), &d.octets());
                f.extend_from_slice(&h);
                for (i, ext) in self.ipv6_ext.iter().enumerate() {
                    let next = self.ipv6_ext.get(i + 1).map_or(IPPROTO_TCP, ext_proto);
                    f.extend_from_slice(&ext_header(ext, next));
                }
                f.extend_from_slice(tcp);
            }
            _ => panic!("Segment mixes IPv4 and IPv6 addresses"),
        }
    }
}

/// An 8-byte extension header followed by `next`.
fn ext_header(ext: &Ipv6Ext, next: u8) -> [u8; size_of::<Ipv6ExtHdr>()] {
    let mut e = [0u8; size_of::<Ipv6ExtHdr>()];
    match ext {
        Ipv6Ext::Fragment { offset, more } => {
            let off = ((offset << 3) & IP6_OFFMASK) | if *more { IP6_MF } else { 0 };
            e[offset_of!(Ipv6FragHdr, nexthdr)] = next;
            put(
                &mut e,
                offset_of!(Ipv6FragHdr, frag_off),
                &off.to_be_bytes(),
            );
            put(
                &mut e,
                offset_of!(Ipv6FragHdr, identification),
                &0x1234_5678u32.to_be_bytes(),
            );
        }
        // Type 0, segments left 0: hdrlen 0 says 8 bytes in all.
        Ipv6Ext::Routing => e[offset_of!(Ipv6ExtHdr, nexthdr)] = next,
        Ipv6Ext::HopByHop | Ipv6Ext::DestOpts => {
            e[offset_of!(Ipv6ExtHdr, nexthdr)] = next;
            // PadN option filling the 6 remaining bytes.
            put(&mut e, offset_of!(Ipv6ExtHdr, data), &[1, 4, 0, 0, 0, 0]);
        }
    }
    e
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
    // The version is the high nibble of the first byte in both families.
    const _: () = assert!(offset_of!(Ipv4Hdr, version_ihl) == offset_of!(Ipv6Hdr, version_flow));
    let ethertype: u16 = match ip.get(offset_of!(Ipv4Hdr, version_ihl))? >> 4 {
        4 => ETH_P_IP,
        6 => ETH_P_IPV6,
        _ => return None,
    };
    Some(ethernet_with_type(ethertype, ip))
}

/// An Ethernet header (zero MACs) with `ethertype` in front of `payload`.
pub fn ethernet_with_type(ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0u8; size_of::<EthHdr>()];
    put(&mut f, offset_of!(EthHdr, proto), &ethertype.to_be_bytes());
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
