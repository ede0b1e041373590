//! Header parsing with bounds-checked reads: Ethernet, up to
//! [`MAX_VLAN_TAGS`] VLAN tags, IPv4 (any IHL, fragments), IPv6 (up to
//! [`MAX_IPV6_EXT`] extension headers, fragments), and the TCP fields the
//! program needs. A packet past either bound is not dropped from view: the
//! parser says so ([`Stop`]) and the program reports it as unparsed.
//!
//! Every length that matters is taken from the IP header, not from the
//! frame: short frames are padded to 60 bytes on the wire, and padding must
//! never be read as TCP header bytes (that is how 8-byte first fragments
//! used to look like malformed TCP).

use aya_ebpf::programs::XdpContext;
use smbwatch_common::{
    proto::{
        ETH_HLEN, ETH_P_8021AD, ETH_P_8021Q, ETH_P_IP, ETH_P_IPV6, ETH_P_QINQ_9100, IPPROTO_AH,
        IPPROTO_DSTOPTS, IPPROTO_FRAGMENT, IPPROTO_HOPOPTS, IPPROTO_ROUTING, IPPROTO_TCP,
    },
    stat, EVENT_FLAG_VLAN, MAX_IPV6_EXT, MAX_VLAN_TAGS,
};

use crate::count;

/// Pointer to `len` bytes at `off`, or `None` when the frame is shorter.
#[inline(always)]
pub fn bytes_at(ctx: &XdpContext, off: usize, len: usize) -> Option<*const u8> {
    let start = ctx.data();
    if start + off + len > ctx.data_end() {
        return None;
    }
    Some((start + off) as *const u8)
}

/// A big-endian u16 at `p`.
///
/// # Safety
/// `p` and `p + 1` lie inside a range [`bytes_at`] returned (every call
/// below reads at most the length it asked `bytes_at` for).
#[inline(always)]
pub unsafe fn be16(p: *const u8) -> u16 {
    // SAFETY: the caller checked both bytes against the packet's end.
    unsafe { u16::from_be_bytes([*p, *p.add(1)]) }
}

#[inline(always)]
fn is_tpid(ethertype: u16) -> bool {
    ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD || ethertype == ETH_P_QINQ_9100
}

/// Why the parser stopped before a TCP header.
pub enum Stop {
    /// Not a packet the program looks at, or malformed (counted where seen).
    Done,
    /// More VLAN tags than [`MAX_VLAN_TAGS`]; `vlan` is the outer tag's id.
    VlanLimit { vlan: u16, mac: *const u8 },
    /// More IPv6 extension headers than [`MAX_IPV6_EXT`]; `addr` is the
    /// offset of the source address.
    Ipv6ExtLimit {
        addr: usize,
        vlan: u16,
        flags: u8,
        mac: *const u8,
    },
}

/// Where the L3 header starts and what it is, after the VLAN tags.
pub struct L2 {
    pub ethertype: u16,
    pub offset: usize,
    pub vlan: u16,
    pub flags: u8,
    /// The Ethernet source address (inside the checked header).
    pub src_mac: *const u8,
}

#[inline(always)]
pub fn parse_l2(ctx: &XdpContext) -> Result<L2, Stop> {
    let Some(eth) = bytes_at(ctx, 0, ETH_HLEN) else {
        count(stat::MALFORMED_ETH);
        return Err(Stop::Done);
    };
    let mut l2 = L2 {
        ethertype: unsafe { be16(eth.add(12)) },
        offset: ETH_HLEN,
        vlan: 0,
        flags: 0,
        src_mac: unsafe { eth.add(6) },
    };
    if !is_tpid(l2.ethertype) {
        return Ok(l2); // the common case: no tag
    }
    // The outer tag names the segment on a router trunk.
    count(stat::VLAN);
    l2.flags = EVENT_FLAG_VLAN;
    let mut tags = 0;
    while tags < MAX_VLAN_TAGS {
        let Some(tag) = bytes_at(ctx, l2.offset, 4) else {
            count(stat::MALFORMED_VLAN);
            return Err(Stop::Done);
        };
        if tags == 0 {
            l2.vlan = unsafe { be16(tag) } & 0x0fff;
        }
        l2.ethertype = unsafe { be16(tag.add(2)) };
        l2.offset += 4;
        if !is_tpid(l2.ethertype) {
            return Ok(l2);
        }
        tags += 1;
    }
    // One tag more than the walk: reported, never silently passed over.
    count(stat::VLAN_LIMIT);
    Err(Stop::VlanLimit {
        vlan: l2.vlan,
        mac: l2.src_mac,
    })
}

/// The frame's source and destination MAC addresses as modified EUI-64
/// link-local IPv6 addresses (RFC 4291 appendix A): what names the ends of
/// a frame whose IP header the walk did not reach.
#[inline(always)]
pub fn macs(ctx: &XdpContext) -> Option<(Addr, Addr)> {
    let eth = bytes_at(ctx, 0, ETH_HLEN)?;
    let eui = |m: *const u8| unsafe {
        Addr([
            u64::from_ne_bytes([0xfe, 0x80, 0, 0, 0, 0, 0, 0]),
            u64::from_ne_bytes([
                *m ^ 0x02,
                *m.add(1),
                *m.add(2),
                0xff,
                0xfe,
                *m.add(3),
                *m.add(4),
                *m.add(5),
            ]),
        ])
    };
    Some((eui(unsafe { eth.add(6) }), eui(eth)))
}

/// The IPv6 source and destination addresses at `addr`.
#[inline(always)]
pub fn ipv6_addrs(ctx: &XdpContext, addr: usize) -> Option<(Addr, Addr)> {
    let p = bytes_at(ctx, addr, 32)?;
    unsafe {
        Some((
            Addr([read_word::<u64>(p), read_word::<u64>(p.add(8))]),
            Addr([read_word::<u64>(p.add(16)), read_word::<u64>(p.add(24))]),
        ))
    }
}

/// A TCP packet's addresses and where its header is. Keys are built only
/// for the few packets that turn out to matter.
pub struct L3 {
    /// Offset of the source address; the destination follows it.
    pub addr: usize,
    pub v4: bool,
    /// Offset of the TCP header.
    pub tcp: usize,
    /// TCP bytes the IP header says the packet carries (not the frame's).
    pub l4_len: usize,
    /// A first fragment (more fragments follow).
    pub fragmented: bool,
}

/// An address as the two native-endian words of its 16-byte key (IPv4 in
/// its IPv4-mapped form): what the hashes, the tables and the events use,
/// loaded with word-sized reads instead of sixteen byte loads.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Addr(pub [u64; 2]);

impl Addr {
    /// `::ffff:a.b.c.d` from the address's four bytes read as a native u32.
    #[inline(always)]
    fn v4(raw: u32) -> Self {
        // Bytes 8..16 of the key are 00 00 ff ff a b c d.
        Self([
            0,
            u64::from_ne_bytes([0, 0, 0xff, 0xff, 0, 0, 0, 0]) | (u64::from(raw) << 32),
        ])
    }
}

impl L3 {
    /// (source, destination).
    #[inline(always)]
    pub fn addrs(&self, ctx: &XdpContext) -> Option<(Addr, Addr)> {
        // Word loads at any offset: the packet is not aligned for them, but
        // every architecture that runs XDP in production loads unaligned
        // words, and the verifier allows it there.
        if self.v4 {
            let p = bytes_at(ctx, self.addr, 8)?;
            let (s, d) = unsafe { (read_word::<u32>(p), read_word::<u32>(p.add(4))) };
            Some((Addr::v4(s), Addr::v4(d)))
        } else {
            ipv6_addrs(ctx, self.addr)
        }
    }
}

/// One word-sized load from packet memory.
#[inline(always)]
pub unsafe fn read_word<T: Copy>(p: *const u8) -> T {
    #[allow(clippy::cast_ptr_alignment)]
    unsafe {
        core::ptr::read(p as *const T)
    }
}

#[inline(always)]
pub fn parse_l3(ctx: &XdpContext, l2: &L2) -> Result<L3, Stop> {
    match l2.ethertype {
        ETH_P_IP => parse_ipv4(ctx, l2.offset).ok_or(Stop::Done),
        ETH_P_IPV6 => parse_ipv6(ctx, l2),
        _ => Err(Stop::Done),
    }
}

#[inline(always)]
fn parse_ipv4(ctx: &XdpContext, off: usize) -> Option<L3> {
    count(stat::IPV4);
    let Some(ip) = bytes_at(ctx, off, 20) else {
        count(stat::MALFORMED_IPV4);
        return None;
    };
    let ihl = (unsafe { *ip } & 0x0f) as usize * 4;
    let total = unsafe { be16(ip.add(2)) } as usize;
    if ihl < 20 || total < ihl || bytes_at(ctx, off, ihl).is_none() {
        count(stat::MALFORMED_IPV4);
        return None;
    }
    if unsafe { *ip.add(9) } != IPPROTO_TCP {
        return None;
    }
    let frag = unsafe { be16(ip.add(6)) };
    if frag & 0x1fff != 0 {
        // Later fragments carry payload only.
        count(stat::LATER_FRAGMENTS);
        return None;
    }
    Some(L3 {
        addr: off + 12,
        v4: true,
        tcp: off + ihl,
        l4_len: total - ihl,
        fragmented: frag & 0x2000 != 0,
    })
}

#[inline(always)]
fn parse_ipv6(ctx: &XdpContext, l2: &L2) -> Result<L3, Stop> {
    let off = l2.offset;
    count(stat::IPV6);
    let Some(ip) = bytes_at(ctx, off, 40) else {
        count(stat::MALFORMED_IPV6);
        return Err(Stop::Done);
    };
    // Payload length 0 is a jumbogram (hop-by-hop option): take the frame's.
    let payload = unsafe { be16(ip.add(4)) } as usize;
    let end = if payload == 0 {
        ctx.data_end() - ctx.data()
    } else {
        off + 40 + payload
    };
    let mut next = unsafe { *ip.add(6) };
    let mut pos = off + 40;
    let mut fragmented = false;
    // A bounded walk keeps the verifier happy and a hostile chain cheap;
    // one header more than the bound is reported, not passed over.
    let mut i = 0;
    while i <= MAX_IPV6_EXT {
        match next {
            IPPROTO_TCP => {
                if end < pos {
                    count(stat::MALFORMED_IPV6);
                    return Err(Stop::Done);
                }
                return Ok(L3 {
                    addr: off + 8,
                    v4: false,
                    tcp: pos,
                    l4_len: end - pos,
                    fragmented,
                });
            }
            IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_DSTOPTS | IPPROTO_AH | IPPROTO_FRAGMENT
                if i < MAX_IPV6_EXT =>
            {
                let Some(ext) = bytes_at(ctx, pos, 8) else {
                    count(stat::MALFORMED_IPV6);
                    return Err(Stop::Done);
                };
                let (nh, len) = unsafe { (*ext, *ext.add(1) as usize) };
                let hlen = match next {
                    IPPROTO_FRAGMENT => {
                        let field = unsafe { be16(ext.add(2)) };
                        if field & 0xfff8 != 0 {
                            count(stat::LATER_FRAGMENTS);
                            return Err(Stop::Done);
                        }
                        fragmented = field & 1 != 0;
                        8
                    }
                    IPPROTO_AH => (len + 2) * 4,
                    _ => (len + 1) * 8,
                };
                next = nh;
                pos += hlen;
            }
            IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_DSTOPTS | IPPROTO_AH | IPPROTO_FRAGMENT => {
                break;
            }
            _ => return Err(Stop::Done),
        }
        i += 1;
    }
    count(stat::IPV6_EXT_LIMIT);
    Err(Stop::Ipv6ExtLimit {
        addr: off + 8,
        vlan: l2.vlan,
        flags: l2.flags,
        mac: l2.src_mac,
    })
}

/// The TCP fields the program acts on.
pub struct Tcp {
    pub sport: u16,
    pub dport: u16,
    /// FIN/SYN/RST/ACK bits; a fragment too short to hold them reads as a
    /// bare SYN (see [`parse_tcp`]).
    pub flags: u8,
}

use smbwatch_common::proto::tcp_flags::FIN as TCP_FIN;
pub use smbwatch_common::proto::tcp_flags::{ACK as TCP_ACK, RST as TCP_RST, SYN as TCP_SYN};
/// The flag bits the program acts on.
const TCP_FIN_SYN_RST_ACK: u8 = TCP_FIN | TCP_SYN | TCP_RST | TCP_ACK;

/// Reads ports and flags. Unfragmented packets need a whole TCP header; a
/// first fragment needs only the ports: one that stops before the flags
/// byte (nmap `-f`, 8 bytes) is taken as a connection attempt, because a
/// SYN has no legitimate reason to be fragmented.
#[inline(always)]
pub fn parse_tcp(ctx: &XdpContext, l3: &L3) -> Option<Tcp> {
    let Some(p) = bytes_at(ctx, l3.tcp, 4) else {
        count(stat::MALFORMED_TCP);
        return None;
    };
    if l3.l4_len < 4 {
        count(stat::MALFORMED_TCP);
        return None;
    }
    let sport = unsafe { be16(p) };
    let dport = unsafe { be16(p.add(2)) };
    if l3.fragmented && l3.l4_len < 14 {
        return Some(Tcp {
            sport,
            dport,
            flags: TCP_SYN,
        });
    }
    let need = if l3.fragmented { 14 } else { 20 };
    let Some(h) = bytes_at(ctx, l3.tcp, need) else {
        count(stat::MALFORMED_TCP);
        return None;
    };
    if l3.l4_len < need {
        count(stat::MALFORMED_TCP);
        return None;
    }
    let doff = unsafe { *h.add(12) } >> 4;
    if doff < 5 {
        count(stat::MALFORMED_TCP);
        return None;
    }
    Some(Tcp {
        sport,
        dport,
        flags: unsafe { *h.add(13) } & TCP_FIN_SYN_RST_ACK,
    })
}
