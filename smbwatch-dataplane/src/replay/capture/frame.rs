//! Framing: the link types replay understands, and the Ethernet frame the
//! XDP program parses made from a record of each. Pure: no I/O.

use std::borrow::Cow;

use crate::packet::{ethernet_for_ip, ethernet_with_type};

/// Link types (LINKTYPE_* of the tcpdump.org registry) replay understands.
pub mod linktype {
    /// BSD loopback: a 4-byte address family in host byte order.
    pub const NULL: u32 = 0;
    /// Ethernet.
    pub const ETHERNET: u32 = 1;
    /// DLT_RAW as written by some systems (raw IPv4/IPv6).
    pub const RAW_12: u32 = 12;
    /// DLT_RAW as written by OpenBSD (raw IPv4/IPv6).
    pub const RAW_14: u32 = 14;
    /// Raw IPv4 or IPv6, version from the first nibble.
    pub const RAW: u32 = 101;
    /// OpenBSD loopback: a 4-byte address family in network byte order.
    pub const LOOP: u32 = 108;
    /// Linux cooked capture v1 (`tcpdump -i any` before libpcap 1.10).
    pub const LINUX_SLL: u32 = 113;
    /// Raw IPv4.
    pub const IPV4: u32 = 228;
    /// Raw IPv6.
    pub const IPV6: u32 = 229;
    /// Linux cooked capture v2 (`tcpdump -i any` since libpcap 1.10).
    pub const LINUX_SLL2: u32 = 276;

    /// Whether replay can frame packets of this link type.
    pub fn supported(lt: u32) -> bool {
        matches!(
            lt,
            NULL | ETHERNET | RAW_12 | RAW_14 | RAW | LOOP | LINUX_SLL | IPV4 | IPV6 | LINUX_SLL2
        )
    }

    /// A short name for messages.
    pub fn name(lt: u32) -> String {
        match lt {
            NULL => "null (BSD loopback)".into(),
            ETHERNET => "ethernet".into(),
            RAW_12 | RAW_14 | RAW => "raw IP".into(),
            LOOP => "loop (OpenBSD loopback)".into(),
            LINUX_SLL => "linux cooked (SLL)".into(),
            IPV4 => "raw IPv4".into(),
            IPV6 => "raw IPv6".into(),
            LINUX_SLL2 => "linux cooked v2 (SLL2)".into(),
            other => format!("link type {other}"),
        }
    }
}

/// Ethernet header length: shorter frames are not test-run (the kernel refuses them).
pub use smbwatch_common::proto::ETH_HLEN;
use smbwatch_common::proto::{ETH_P_IP, ETH_P_IPV6};
/// Linux cooked capture header (v1): packet type, ARPHRD, address length,
/// 8 address bytes, then the protocol (an ethertype).
const SLL_HLEN: usize = 16;
const SLL_PROTO: usize = 14;
/// Linux cooked capture header v2: the protocol first, then reserved,
/// ifindex, ARPHRD, packet type, address length, 8 address bytes.
const SLL2_HLEN: usize = 20;
const SLL2_PROTO: usize = 0;
/// BSD loopback (`NULL`, `LOOP`) header: the 4-byte address family.
const NULL_HLEN: usize = 4;

/// The big-endian 16-bit field at `at` of a header already cut to length.
fn be16_at(hdr: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([hdr[at], hdr[at + 1]])
}

/// Why a record was not turned into a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Skip {
    /// Shorter than the link header, or than an Ethernet header once framed.
    TooShort,
    /// A link type replay does not frame.
    UnsupportedLink(u32),
    /// Raw-IP or loopback link whose payload is neither IPv4 nor IPv6.
    NotIp,
}

/// The Ethernet frame for a record of link type `link`: the record itself for
/// Ethernet, otherwise an Ethernet header (zero MACs) with the ethertype the
/// link header or the IP version names, in front of the network-layer bytes.
pub fn ethernet_frame(link: u32, data: &[u8]) -> Result<Cow<'_, [u8]>, Skip> {
    let frame: Cow<'_, [u8]> = match link {
        linktype::ETHERNET => Cow::Borrowed(data),
        linktype::LINUX_SLL => {
            let hdr = data.get(..SLL_HLEN).ok_or(Skip::TooShort)?;
            let proto = be16_at(hdr, SLL_PROTO);
            // libpcap re-inserts a stripped VLAN tag after the SLL header with
            // protocol 0x8100, which is exactly Ethernet's layout after the type.
            Cow::Owned(ethernet_with_type(proto, &data[SLL_HLEN..]))
        }
        linktype::LINUX_SLL2 => {
            let hdr = data.get(..SLL2_HLEN).ok_or(Skip::TooShort)?;
            let proto = be16_at(hdr, SLL2_PROTO);
            Cow::Owned(ethernet_with_type(proto, &data[SLL2_HLEN..]))
        }
        linktype::RAW | linktype::RAW_12 | linktype::RAW_14 => {
            if data.is_empty() {
                return Err(Skip::TooShort);
            }
            Cow::Owned(ethernet_for_ip(data).ok_or(Skip::NotIp)?)
        }
        linktype::IPV4 => Cow::Owned(ethernet_with_type(ETH_P_IP, data)),
        linktype::IPV6 => Cow::Owned(ethernet_with_type(ETH_P_IPV6, data)),
        linktype::NULL | linktype::LOOP => {
            // The family's value differs between systems (AF_INET6 is 10,
            // 24, 28 or 30); the IP version nibble does not.
            let ip = data
                .get(NULL_HLEN..)
                .filter(|p| !p.is_empty())
                .ok_or(Skip::TooShort)?;
            Cow::Owned(ethernet_for_ip(ip).ok_or(Skip::NotIp)?)
        }
        other => return Err(Skip::UnsupportedLink(other)),
    };
    if frame.len() < ETH_HLEN {
        return Err(Skip::TooShort);
    }
    Ok(frame)
}
