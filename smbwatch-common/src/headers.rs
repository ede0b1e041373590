//! Wire layouts of the headers the XDP parser walks (the kernel's `ethhdr`,
//! `vlan_hdr`, `iphdr`, `ipv6hdr`, `ipv6_opt_hdr`, `frag_hdr`, `tcphdr`).
//!
//! Every field is a byte or a byte array, so each layout has alignment 1:
//! a header can sit at any offset of a frame (an IPv4 header after a
//! 14-byte Ethernet header is only 2-aligned). Multi-byte fields are in
//! network order ([`Be16`]). The sizes are checked against [`crate::proto`].

use crate::proto::{ETH_HLEN, IPV4_HLEN, IPV6_HLEN, TCP_HLEN, VLAN_HLEN};

/// A 16-bit field in network byte order.
#[repr(transparent)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Be16(pub [u8; 2]);

impl Be16 {
    /// The value in host order.
    #[inline(always)]
    pub const fn get(self) -> u16 {
        u16::from_be_bytes(self.0)
    }
}

/// Ethernet II header.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EthHdr {
    /// Destination MAC.
    pub dst: [u8; 6],
    /// Source MAC.
    pub src: [u8; 6],
    /// Ethertype (or the TPID of a VLAN tag).
    pub proto: Be16,
}

/// A VLAN tag as it follows the TPID: the tag control information and the
/// ethertype (or next TPID) after it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VlanHdr {
    /// Priority, drop eligibility and the 12-bit VLAN id.
    pub tci: Be16,
    /// The encapsulated ethertype, or the next tag's TPID.
    pub proto: Be16,
}

/// IPv4 header without options.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ipv4Hdr {
    /// Version (high nibble) and header length in 32-bit words (low nibble).
    pub version_ihl: u8,
    /// DSCP and ECN.
    pub tos: u8,
    /// Total length of the packet, header included.
    pub tot_len: Be16,
    /// Identification.
    pub id: Be16,
    /// Flags (0x2000: more fragments) and fragment offset (low 13 bits).
    pub frag_off: Be16,
    /// Time to live.
    pub ttl: u8,
    /// Protocol of the payload.
    pub protocol: u8,
    /// Header checksum.
    pub check: Be16,
    /// Source address.
    pub saddr: [u8; 4],
    /// Destination address.
    pub daddr: [u8; 4],
}

/// IPv6 fixed header.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ipv6Hdr {
    /// Version, traffic class and flow label.
    pub version_flow: [u8; 4],
    /// Payload length (extension headers included); 0 for a jumbogram.
    pub payload_len: Be16,
    /// The first extension header's or the payload's protocol.
    pub nexthdr: u8,
    /// Hop limit.
    pub hop_limit: u8,
    /// Source address.
    pub saddr: [u8; 16],
    /// Destination address.
    pub daddr: [u8; 16],
}

/// The first 8 bytes every IPv6 extension header starts with (hop-by-hop,
/// routing, destination options, AH; the fragment header is all of
/// [`Ipv6FragHdr`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ipv6ExtHdr {
    /// The next header's protocol.
    pub nexthdr: u8,
    /// Length: in 8-byte units not counting the first 8 (AH: 4-byte units
    /// not counting the first 8).
    pub hdrlen: u8,
    /// The header's first data bytes.
    pub data: [u8; 6],
}

/// IPv6 fragment header.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ipv6FragHdr {
    /// The fragmented payload's protocol.
    pub nexthdr: u8,
    /// Reserved.
    pub reserved: u8,
    /// Offset in 8-byte units (high 13 bits) and the more-fragments flag (bit 0).
    pub frag_off: Be16,
    /// Identification.
    pub identification: [u8; 4],
}

/// TCP header without options.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpHdr {
    /// Source port.
    pub source: Be16,
    /// Destination port.
    pub dest: Be16,
    /// Sequence number.
    pub seq: [u8; 4],
    /// Acknowledgement number.
    pub ack_seq: [u8; 4],
    /// Data offset in 32-bit words (high nibble).
    pub doff: u8,
    /// Flag bits ([`crate::proto::tcp_flags`]).
    pub flags: u8,
    /// Window.
    pub window: Be16,
    /// Checksum.
    pub check: Be16,
    /// Urgent pointer.
    pub urg_ptr: Be16,
}

/// The VLAN id bits of [`VlanHdr::tci`].
pub const VLAN_VID_MASK: u16 = 0x0fff;
/// [`Ipv4Hdr::frag_off`]: don't fragment.
pub const IP_DF: u16 = 0x4000;
/// [`Ipv4Hdr::frag_off`]: more fragments follow.
pub const IP_MF: u16 = 0x2000;
/// [`Ipv4Hdr::frag_off`]: the offset, in 8-byte units.
pub const IP_OFFMASK: u16 = 0x1fff;
/// [`Ipv6FragHdr::frag_off`]: the offset, in 8-byte units shifted left by 3.
pub const IP6_OFFMASK: u16 = 0xfff8;
/// [`Ipv6FragHdr::frag_off`]: more fragments follow.
pub const IP6_MF: u16 = 0x0001;

/// Bytes of a TCP header up to and including the flags byte: what a first
/// fragment must carry to be read as more than its ports.
pub const TCP_FLAGS_END: usize = core::mem::offset_of!(TcpHdr, flags) + 1;

const _: () = {
    use core::mem::{align_of, size_of};
    assert!(size_of::<EthHdr>() == ETH_HLEN && align_of::<EthHdr>() == 1);
    assert!(size_of::<VlanHdr>() == VLAN_HLEN && align_of::<VlanHdr>() == 1);
    assert!(size_of::<Ipv4Hdr>() == IPV4_HLEN && align_of::<Ipv4Hdr>() == 1);
    assert!(size_of::<Ipv6Hdr>() == IPV6_HLEN && align_of::<Ipv6Hdr>() == 1);
    assert!(size_of::<Ipv6ExtHdr>() == 8 && align_of::<Ipv6ExtHdr>() == 1);
    assert!(size_of::<Ipv6FragHdr>() == 8 && align_of::<Ipv6FragHdr>() == 1);
    assert!(size_of::<TcpHdr>() == TCP_HLEN && align_of::<TcpHdr>() == 1);
    assert!(TCP_FLAGS_END == 14);
};
