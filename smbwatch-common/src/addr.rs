//! The one 16-byte form of an IP address and back: IPv6 as is, IPv4 as an
//! IPv4-mapped IPv6 address (`::ffff:a.b.c.d`). The kernel's map keys, the
//! detector's and the baseline's tables and the fleet's wire format all
//! use it, through these functions only.

use core::net::{IpAddr, Ipv6Addr};

use crate::AddrKey;

/// The 16-byte form of `ip`: IPv4 becomes IPv4-mapped IPv6.
#[inline]
pub fn to_mapped(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

/// The address a 16-byte form holds: IPv4-mapped addresses become IPv4
/// (and only those: an IPv4-compatible `::a.b.c.d` stays IPv6).
#[inline]
pub fn from_mapped(a: Ipv6Addr) -> IpAddr {
    match a.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(a),
    }
}

impl AddrKey {
    /// The key of an address (see [`to_mapped`]).
    #[inline]
    pub fn from_ip(ip: IpAddr) -> Self {
        Self {
            addr: to_mapped(ip).octets(),
        }
    }

    /// The address of a key (see [`from_mapped`]).
    #[inline]
    pub fn ip(&self) -> IpAddr {
        from_mapped(Ipv6Addr::from(self.addr))
    }
}

#[cfg(test)]
mod tests {
    use core::net::{Ipv4Addr, Ipv6Addr};

    use super::*;

    #[test]
    fn both_families_round_trip() {
        let v4 = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7));
        let v6: IpAddr = "2001:db8::7".parse().unwrap();
        for ip in [v4, v6] {
            assert_eq!(from_mapped(to_mapped(ip)), ip);
            assert_eq!(AddrKey::from_ip(ip).ip(), ip);
        }
        assert_eq!(AddrKey::from_ip(v4), AddrKey::from_v4([192, 0, 2, 7]));
        // IPv4-compatible (deprecated) addresses are IPv6, not IPv4.
        let compat = Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0xc000, 0x0207);
        assert_eq!(from_mapped(compat), IpAddr::V6(compat));
    }
}

/// An Ethernet (MAC) address, as the kernel read it from a frame's header.
#[repr(transparent)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// All zeroes: what a record carries when no frame header was read.
    pub const ZERO: MacAddr = MacAddr([0; 6]);

    /// A locally administered address (bit 1 of the first octet): randomised
    /// Wi-Fi addresses and virtual interfaces, which do not name a host for long.
    pub fn is_local(self) -> bool {
        self.0[0] & 0x02 != 0
    }

    /// A group (multicast or broadcast) address, never a frame's sender.
    pub fn is_group(self) -> bool {
        self.0[0] & 0x01 != 0
    }
}

impl core::fmt::Display for MacAddr {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}
