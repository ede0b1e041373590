//! Header parsing with a cursor, in the style of xdp-tools'
//! `parsing_helpers.h`: a [`Cursor`] walks typed headers (the layouts of
//! [`smbwatch_common::headers`]), each behind one bounds check, through
//! Ethernet, up to [`MAX_VLAN_TAGS`] VLAN tags, IPv4 (any IHL, fragments),
//! IPv6 (up to [`MAX_IPV6_EXT`] extension headers, fragments) and the TCP
//! fields the program needs. A packet past either bound is not dropped from
//! view: the parser says so ([`Stop`]) and the program reports it as unparsed.
//!
//! Every length that matters is taken from the IP header, not from the
//! frame: short frames are padded to 60 bytes on the wire, and padding must
//! never be read as TCP header bytes (that is how 8-byte first fragments
//! used to look like malformed TCP).

use core::mem::size_of;

use aya_ebpf::programs::XdpContext;
use smbwatch_common::{
    headers::{
        Be16, EthHdr, Ipv4Hdr, Ipv6ExtHdr, Ipv6FragHdr, Ipv6Hdr, TcpHdr, VlanHdr, IP6_MF,
        IP6_OFFMASK, IP_MF, IP_OFFMASK, TCP_FLAGS_END, VLAN_VID_MASK,
    },
    proto::{
        ETH_P_8021AD, ETH_P_8021Q, ETH_P_IP, ETH_P_IPV6, ETH_P_QINQ_9100, IPPROTO_AH,
        IPPROTO_DSTOPTS, IPPROTO_FRAGMENT, IPPROTO_HOPOPTS, IPPROTO_ROUTING, IPPROTO_TCP,
        IPV4_HLEN,
    },
    stat, EVENT_FLAG_VLAN, MAX_IPV6_EXT, MAX_VLAN_TAGS,
};

use crate::count;

/// Where the parser is in the packet, and where the packet ends
/// (xdp-tools' `hdr_cursor`, with `data_end` kept beside it).
///
/// The position is an offset from the packet's start, not a pointer: each
/// read makes its pointer afresh from `data + off`. With a pointer carried
/// through the IPv6 walk, every order of extension headers left the
/// verifier a packet pointer of another range, no two states matched, and
/// verification ran past a million instructions; an offset is a plain
/// number the verifier need not track exactly, as before the cursor.
#[derive(Clone, Copy)]
pub struct Cursor {
    data: usize,
    off: usize,
    end: usize,
}

impl Cursor {
    /// At the packet's first byte.
    #[inline(always)]
    pub fn new(ctx: &XdpContext) -> Self {
        Self {
            data: ctx.data(),
            off: 0,
            end: ctx.data_end(),
        }
    }

    /// The header of type `H` at the cursor, moving past it; `None` when
    /// the packet ends first. The one bounds check every read of the
    /// header relies on (the verifier refuses the program without it).
    #[inline(always)]
    pub fn next<H>(&mut self) -> Option<Hdr<H>> {
        let p = self.data + self.off;
        if p + size_of::<H>() > self.end {
            return None;
        }
        self.off += size_of::<H>();
        Some(Hdr(p as *const H))
    }

    /// Offset of `h` (a header this cursor's walk made) from the packet's
    /// start. A packet pointer minus the packet's start is a plain number to
    /// the verifier; read back through a volatile load so the compiler
    /// cannot fold a caller's constant in before the subtraction (constant
    /// minus packet pointer is refused).
    #[inline(always)]
    pub fn offset_of<H>(&self, h: Hdr<H>) -> usize {
        let off = h.0 as usize - self.data;
        // SAFETY: a read of a local.
        unsafe { core::ptr::read_volatile(&off) }
    }

    /// Offset of the cursor from the packet's start.
    #[inline(always)]
    pub fn offset(&self) -> usize {
        self.off
    }

    /// Whether `len` more bytes lie in the packet.
    #[inline(always)]
    pub fn has(&self, len: usize) -> bool {
        self.data + self.off + len <= self.end
    }

    /// Moves `len` bytes on without reading them (a header of variable
    /// length, from its start); the next [`Cursor::next`] checks the bounds.
    #[inline(always)]
    pub fn skip(&mut self, len: usize) {
        self.off += len;
    }

    /// Makes the offset a number the verifier knows only by its bound
    /// (`max`): the same after any walk, so everything after a walk is
    /// verified once rather than once per depth the walk can end at.
    /// A packet pointer minus the packet's start is a plain number to the
    /// verifier (see [`Cursor::offset_of`]); the volatile read keeps the
    /// compiler from folding the subtraction away. `false` past `max`.
    #[inline(always)]
    pub fn forget(&mut self, max: usize) -> bool {
        let p = self.data + self.off;
        // SAFETY: a read of a local.
        let p = unsafe { core::ptr::read_volatile(&p) };
        let off = p.wrapping_sub(self.data);
        if off > max {
            return false;
        }
        self.off = off;
        true
    }

    /// Bytes from the cursor to the packet's end; `None` when a skip went
    /// past it.
    #[inline(always)]
    pub fn remaining(&self) -> Option<usize> {
        (self.end - self.data).checked_sub(self.off)
    }
}

/// A header of type `H` that a [`Cursor`] checked to lie inside the packet.
/// Only [`Cursor::next`] makes one, so its field reads need no check.
pub struct Hdr<H>(*const H);

impl<H> Clone for Hdr<H> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<H> Copy for Hdr<H> {}

/// Reads `field` of a checked header with one of [`Hdr`]'s loaders, which
/// the field's type must match: `read!(ip, tot_len, be16)`.
macro_rules! read {
    ($hdr:expr, $field:ident, $how:ident) => {
        // SAFETY: only the field's address is taken (a projection inside
        // the checked header); the loader reads it.
        $hdr.$how(|h| unsafe { &raw const (*h).$field })
    };
}

impl<H> Hdr<H> {
    /// A field of the header: `f` maps the header pointer to the field's
    /// (`|h| &raw const (*h).field`, no read; see [`read!`]).
    #[inline(always)]
    fn field<T>(self, f: impl FnOnce(*const H) -> *const T) -> *const T {
        f(self.0)
    }

    /// A byte field.
    #[inline(always)]
    pub fn u8(self, f: impl FnOnce(*const H) -> *const u8) -> u8 {
        // SAFETY: the field lies inside the header, which the cursor checked.
        unsafe { load(self.field(f)) }
    }

    /// A 16-bit network-order field, in host order.
    #[inline(always)]
    pub fn be16(self, f: impl FnOnce(*const H) -> *const Be16) -> u16 {
        // SAFETY: as for `u8`; Be16 and u16 have the same size.
        u16::from_be(unsafe { load(self.field(f).cast::<u16>()) })
    }

    /// A 4-byte field (an IPv4 address) as one native word.
    #[inline(always)]
    pub fn word4(self, f: impl FnOnce(*const H) -> *const [u8; 4]) -> u32 {
        // SAFETY: as for `u8`; [u8; 4] and u32 have the same size.
        unsafe { load(self.field(f).cast::<u32>()) }
    }

    /// A 16-byte field (an IPv6 address) as two native words.
    #[inline(always)]
    pub fn words16(self, f: impl FnOnce(*const H) -> *const [u8; 16]) -> [u64; 2] {
        let p = self.field(f).cast::<u64>();
        // SAFETY: as for `u8`; both words lie inside the 16-byte field.
        unsafe { [load(p), load(p.add(1))] }
    }

    /// A 6-byte field (a MAC) as the low 48 bits of a native word, in
    /// memory order (two loads; the high 16 bits are zero).
    #[inline(always)]
    pub fn mac(self, f: impl FnOnce(*const H) -> *const [u8; 6]) -> u64 {
        let p = self.field(f).cast::<u8>();
        // SAFETY: as for `u8`; 4 + 2 bytes inside the 6-byte field.
        unsafe {
            let lo: u32 = load(p.cast());
            let hi: u16 = load(p.add(4).cast());
            u64::from(lo) | (u64::from(hi) << 32)
        }
    }
}

/// One load of a `T` from packet memory, at whatever alignment the packet
/// has.
///
/// # Safety
/// `p` and the `size_of::<T>()` bytes after it lie inside a header a
/// [`Cursor`] checked against the packet's end. Alignment is not required
/// by the machine: the kernel allows unaligned packet access on every
/// architecture that runs XDP in production, and the JIT emits a plain
/// load. (A `read_unaligned` would be split into byte loads by the BPF
/// backend, several times the instructions on every packet.)
#[inline(always)]
unsafe fn load<T: Copy>(p: *const T) -> T {
    #[allow(clippy::cast_ptr_alignment)]
    // SAFETY: see the function's contract.
    unsafe {
        core::ptr::read(p)
    }
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
    VlanLimit { vlan: u16, eth: Hdr<EthHdr> },
    /// More IPv6 extension headers than [`MAX_IPV6_EXT`].
    Ipv6ExtLimit { ip: Hdr<Ipv6Hdr>, l2: L2 },
}

/// The link layer: the Ethernet header, the outer VLAN and what follows
/// the tags; the cursor stands at the L3 header.
#[derive(Clone, Copy)]
pub struct L2 {
    pub eth: Hdr<EthHdr>,
    pub ethertype: u16,
    pub vlan: u16,
    pub flags: u8,
}

#[inline(always)]
pub fn parse_l2(c: &mut Cursor) -> Result<L2, Stop> {
    let Some(eth) = c.next::<EthHdr>() else {
        count(stat::MALFORMED_ETH);
        return Err(Stop::Done);
    };
    let mut l2 = L2 {
        eth,
        ethertype: read!(eth, proto, be16),
        vlan: 0,
        flags: 0,
    };
    if !is_tpid(l2.ethertype) {
        return Ok(l2); // the common case: no tag
    }
    // The outer tag names the segment on a router trunk.
    count(stat::VLAN);
    l2.flags = EVENT_FLAG_VLAN;
    let mut tags = 0;
    while tags < MAX_VLAN_TAGS {
        let Some(tag) = c.next::<VlanHdr>() else {
            count(stat::MALFORMED_VLAN);
            return Err(Stop::Done);
        };
        if tags == 0 {
            l2.vlan = read!(tag, tci, be16) & VLAN_VID_MASK;
        }
        l2.ethertype = read!(tag, proto, be16);
        if !is_tpid(l2.ethertype) {
            if !c.forget(L2_MAX) {
                count(stat::MALFORMED_VLAN);
                return Err(Stop::Done);
            }
            return Ok(l2);
        }
        tags += 1;
    }
    // One tag more than the walk: reported, never silently passed over.
    count(stat::VLAN_LIMIT);
    Err(Stop::VlanLimit { vlan: l2.vlan, eth })
}

/// An address as the two native-endian words of its 16-byte key (IPv4 in
/// its IPv4-mapped form): what the hashes, the tables and the events use,
/// loaded with word-sized reads instead of sixteen byte loads.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Addr(pub [u64; 2]);

impl Addr {
    /// `::ffff:a.b.c.d` from the address's four bytes read as a native u32.
    #[inline(always)]
    pub(crate) fn v4(raw: u32) -> Self {
        // Bytes 8..16 of the key are 00 00 ff ff a b c d.
        Self([
            0,
            u64::from_ne_bytes([0, 0, 0xff, 0xff, 0, 0, 0, 0]) | (u64::from(raw) << 32),
        ])
    }

    /// The modified EUI-64 link-local IPv6 address of a MAC (RFC 4291
    /// appendix A), from [`Hdr::mac`]'s word: what names the end of a frame
    /// whose IP header the walk did not reach.
    #[inline(always)]
    fn eui64(mac: u64) -> Self {
        let m = mac.to_le_bytes();
        Self([
            u64::from_ne_bytes([0xfe, 0x80, 0, 0, 0, 0, 0, 0]),
            u64::from_ne_bytes([m[0] ^ 0x02, m[1], m[2], 0xff, 0xfe, m[3], m[4], m[5]]),
        ])
    }
}

impl Hdr<EthHdr> {
    /// The frame's source MAC as the low 48 bits of a word, in memory order.
    #[inline(always)]
    pub fn src_mac(self) -> u64 {
        read!(self, src, mac)
    }
}

/// The frame's source and destination MAC addresses as link-local
/// addresses ([`Addr::eui64`]).
#[inline(always)]
pub fn macs(eth: Hdr<EthHdr>) -> (Addr, Addr) {
    (
        Addr::eui64(read!(eth, src, mac)),
        Addr::eui64(read!(eth, dst, mac)),
    )
}

/// The IPv6 source and destination addresses.
#[inline(always)]
pub fn ipv6_addrs(ip: Hdr<Ipv6Hdr>) -> (Addr, Addr) {
    (
        Addr(read!(ip, saddr, words16)),
        Addr(read!(ip, daddr, words16)),
    )
}

/// The IP header of a TCP packet. Keys are built from it only for the few
/// packets that turn out to matter.
#[derive(Clone, Copy)]
pub enum Ip {
    V4(Hdr<Ipv4Hdr>),
    V6(Hdr<Ipv6Hdr>),
}

/// A TCP packet's IP header and its TCP bytes; the cursor stands at the
/// TCP header.
pub struct L3 {
    pub ip: Ip,
    /// TCP bytes the IP header says the packet carries (not the frame's).
    pub l4_len: usize,
    /// A first fragment (more fragments follow).
    pub fragmented: bool,
}

impl L3 {
    /// (source, destination).
    #[inline(always)]
    pub fn addrs(&self) -> (Addr, Addr) {
        match self.ip {
            Ip::V4(ip) => (
                Addr::v4(read!(ip, saddr, word4)),
                Addr::v4(read!(ip, daddr, word4)),
            ),
            Ip::V6(ip) => ipv6_addrs(ip),
        }
    }
}

#[inline(always)]
pub fn parse_l3(ctx: &XdpContext, c: &mut Cursor, l2: &L2) -> Result<L3, Stop> {
    match l2.ethertype {
        ETH_P_IP => parse_ipv4(ctx, c).ok_or(Stop::Done),
        ETH_P_IPV6 => parse_ipv6(c, l2),
        _ => Err(Stop::Done),
    }
}

#[inline(always)]
fn parse_ipv4(ctx: &XdpContext, c: &mut Cursor) -> Option<L3> {
    count(stat::IPV4);
    let start = *c;
    let Some(ip) = c.next::<Ipv4Hdr>() else {
        count(stat::MALFORMED_IPV4);
        return None;
    };
    let ihl = (read!(ip, version_ihl, u8) & 0x0f) as usize * 4;
    let mut total = read!(ip, tot_len, be16) as usize;
    if total == 0 && crate::setting!(replay) != 0 {
        // A capture taken on a host with segmentation offload records 0 for
        // the segments its NIC split (tshark presumes the same): the frame's,
        // fragments of a multi-buffer test run included.
        let len = unsafe { aya_ebpf::helpers::bpf_xdp_get_buff_len(ctx.ctx) } as usize;
        total = len.saturating_sub(start.off) & 0xffff;
    }
    if ihl < IPV4_HLEN || total < ihl || !start.has(ihl) {
        count(stat::MALFORMED_IPV4);
        return None;
    }
    if read!(ip, protocol, u8) != IPPROTO_TCP {
        return None;
    }
    let frag = read!(ip, frag_off, be16);
    if frag & IP_OFFMASK != 0 {
        // Later fragments carry payload only.
        count(stat::LATER_FRAGMENTS);
        return None;
    }
    // Past the options: from the header's start, by a length bounded by
    // construction (at most 60), which the verifier can follow.
    *c = start;
    c.skip(ihl);
    Some(L3 {
        ip: Ip::V4(ip),
        l4_len: total - ihl,
        fragmented: frag & IP_MF != 0,
    })
}

/// The furthest the link layer can end: Ethernet and every VLAN tag.
const L2_MAX: usize = size_of::<EthHdr>() + MAX_VLAN_TAGS * size_of::<VlanHdr>();
/// The furthest an IPv6 walk can end: every extension header at its
/// largest (2,048 bytes).
const L3_MAX: usize = L2_MAX + size_of::<Ipv6Hdr>() + MAX_IPV6_EXT * 2048;

#[inline(always)]
fn parse_ipv6(c: &mut Cursor, l2: &L2) -> Result<L3, Stop> {
    count(stat::IPV6);
    let Some(ip) = c.next::<Ipv6Hdr>() else {
        count(stat::MALFORMED_IPV6);
        return Err(Stop::Done);
    };
    // Payload length 0 is a jumbogram (hop-by-hop option): take the frame's.
    let payload = read!(ip, payload_len, be16) as usize;
    let mut next = read!(ip, nexthdr, u8);
    // Extension-header bytes walked so far.
    let mut used = 0;
    let mut fragmented = false;
    // A bounded walk keeps the verifier happy and a hostile chain cheap;
    // one header more than the bound is reported, not passed over.
    let mut i = 0;
    while i <= MAX_IPV6_EXT {
        match next {
            IPPROTO_TCP => {
                if i > 0 && !c.forget(L3_MAX) {
                    count(stat::MALFORMED_IPV6);
                    return Err(Stop::Done);
                }
                let l4_len = if payload == 0 {
                    c.remaining()
                } else {
                    payload.checked_sub(used)
                };
                let Some(l4_len) = l4_len else {
                    count(stat::MALFORMED_IPV6);
                    return Err(Stop::Done);
                };
                return Ok(L3 {
                    ip: Ip::V6(ip),
                    l4_len,
                    fragmented,
                });
            }
            IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_DSTOPTS | IPPROTO_AH | IPPROTO_FRAGMENT
                if i < MAX_IPV6_EXT =>
            {
                let hlen = if next == IPPROTO_FRAGMENT {
                    let Some(frag) = c.next::<Ipv6FragHdr>() else {
                        count(stat::MALFORMED_IPV6);
                        return Err(Stop::Done);
                    };
                    let field = read!(frag, frag_off, be16);
                    if field & IP6_OFFMASK != 0 {
                        count(stat::LATER_FRAGMENTS);
                        return Err(Stop::Done);
                    }
                    fragmented = field & IP6_MF != 0;
                    next = read!(frag, nexthdr, u8);
                    size_of::<Ipv6FragHdr>()
                } else {
                    let start = *c;
                    let Some(ext) = c.next::<Ipv6ExtHdr>() else {
                        count(stat::MALFORMED_IPV6);
                        return Err(Stop::Done);
                    };
                    let len = read!(ext, hdrlen, u8) as usize;
                    let hlen = if next == IPPROTO_AH {
                        (len + 2) * 4
                    } else {
                        (len + 1) * 8
                    };
                    next = read!(ext, nexthdr, u8);
                    *c = start;
                    c.skip(hlen); // at most 2,048 bytes
                    hlen
                };
                used += hlen;
            }
            IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_DSTOPTS | IPPROTO_AH | IPPROTO_FRAGMENT => {
                break;
            }
            _ => return Err(Stop::Done),
        }
        i += 1;
    }
    count(stat::IPV6_EXT_LIMIT);
    Err(Stop::Ipv6ExtLimit { ip, l2: *l2 })
}

/// The TCP fields the program acts on.
#[derive(Default)]
pub struct Tcp {
    pub sport: u16,
    pub dport: u16,
    /// FIN/SYN/RST/ACK bits; a fragment too short to hold them reads as a
    /// bare SYN (see [`parse_tcp`]).
    pub flags: u8,
    /// TCP header length in bytes (from its data offset; 0 for a fragment
    /// too short to hold it).
    pub hlen: u8,
}

use smbwatch_common::proto::tcp_flags::FIN as TCP_FIN;
pub use smbwatch_common::proto::tcp_flags::{ACK as TCP_ACK, RST as TCP_RST, SYN as TCP_SYN};
/// The flag bits the program acts on.
const TCP_FIN_SYN_RST_ACK: u8 = TCP_FIN | TCP_SYN | TCP_RST | TCP_ACK;

/// The TCP ports, as the first header of a TCP segment.
#[repr(C)]
struct TcpPorts {
    source: Be16,
    dest: Be16,
}

/// The TCP header up to its flags byte: all a first fragment must carry.
#[repr(C)]
struct TcpToFlags {
    _head: [u8; TCP_FLAGS_END - 2],
    doff: u8,
    flags: u8,
}

/// Reads ports and flags into `tcp`; `false` for a malformed segment
/// (counted). Unfragmented packets need a whole TCP header; a first
/// fragment needs only the ports: one that stops before the flags byte
/// (nmap `-f`, 8 bytes) is taken as a connection attempt, because a SYN
/// has no legitimate reason to be fragmented. An out-parameter rather than
/// an `Option`: the 6-byte `Option<Tcp>` travelled packed in one register
/// through the exits' join and was unpacked after (about 20 instructions
/// on every TCP packet).
#[inline(always)]
pub fn parse_tcp(c: &Cursor, l3: &L3, tcp: &mut Tcp) -> bool {
    if !l3.fragmented {
        // The common case: one bounds check covers the ports and the flags
        // (checking the ports first cost every packet a second check).
        let Some(t) = { *c }.next::<TcpHdr>() else {
            count(stat::MALFORMED_TCP);
            return false;
        };
        let doff = read!(t, doff, u8);
        if l3.l4_len < size_of::<TcpHdr>() || doff >> 4 < 5 {
            count(stat::MALFORMED_TCP);
            return false;
        }
        *tcp = Tcp {
            sport: read!(t, source, be16),
            dport: read!(t, dest, be16),
            flags: read!(t, flags, u8) & TCP_FIN_SYN_RST_ACK,
            hlen: (doff >> 4) * 4,
        };
        return true;
    }
    // Both reads start at the TCP header: each from a copy of the cursor.
    let Some(ports) = { *c }.next::<TcpPorts>() else {
        count(stat::MALFORMED_TCP);
        return false;
    };
    if l3.l4_len < size_of::<TcpPorts>() {
        count(stat::MALFORMED_TCP);
        return false;
    }
    let sport = read!(ports, source, be16);
    let dport = read!(ports, dest, be16);
    if l3.l4_len < TCP_FLAGS_END {
        *tcp = Tcp {
            sport,
            dport,
            flags: TCP_SYN,
            hlen: 0,
        };
        return true;
    }
    let Some(t) = { *c }.next::<TcpToFlags>() else {
        count(stat::MALFORMED_TCP);
        return false;
    };
    let (doff, flags) = (read!(t, doff, u8), read!(t, flags, u8));
    if doff >> 4 < 5 {
        count(stat::MALFORMED_TCP);
        return false;
    }
    *tcp = Tcp {
        sport,
        dport,
        flags: flags & TCP_FIN_SYN_RST_ACK,
        hlen: (doff >> 4) * 4,
    };
    true
}
