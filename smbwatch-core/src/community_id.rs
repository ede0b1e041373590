//! Community ID v1 flow hashes (<https://github.com/corelight/community-id-spec>),
//! so an alert can be joined to the same flow in Zeek, Suricata or Elastic.

use std::net::IpAddr;

use base64::Engine as _;
use sha1::{Digest, Sha1};

/// IP protocol number of TCP.
pub const PROTO_TCP: u8 = 6;

/// Community ID v1 of a port-based flow (TCP, UDP, SCTP):
/// `"1:" + base64(sha1(seed ‖ addr_lo ‖ addr_hi ‖ proto ‖ 0 ‖ port_lo ‖ port_hi))`,
/// where the endpoints are ordered so the result is the same in both
/// directions. ICMP flows need the spec's type/code mapping first: pass the
/// mapped values as ports.
///
/// Mixed families (one IPv4, one IPv6 address) cannot occur in one flow; an
/// IPv4-mapped IPv6 address is hashed as IPv4 so the kernel's 16-byte keys
/// and plain IPv4 give the same ID.
pub fn community_id_v1(
    src: IpAddr,
    dst: IpAddr,
    sport: u16,
    dport: u16,
    proto: u8,
    seed: u16,
) -> String {
    let (src, dst) = (src.to_canonical(), dst.to_canonical());
    // The spec orders by address, then port, comparing the bytes in
    // network order (IpAddr's Ord does exactly that within a family).
    let ((a, ap), (b, bp)) = if (src, sport) <= (dst, dport) {
        ((src, sport), (dst, dport))
    } else {
        ((dst, dport), (src, sport))
    };
    let mut h = Sha1::new();
    h.update(seed.to_be_bytes());
    for ip in [a, b] {
        match ip {
            IpAddr::V4(v4) => h.update(v4.octets()),
            IpAddr::V6(v6) => h.update(v6.octets()),
        }
    }
    h.update([proto, 0]);
    h.update(ap.to_be_bytes());
    h.update(bp.to_be_bytes());
    let digest = h.finalize();
    let mut out = String::with_capacity(30);
    out.push_str("1:");
    base64::engine::general_purpose::STANDARD.encode_string(digest, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    // Vectors from the spec's README and its reference implementations'
    // test data (Zeek's community-id plugin tests).
    #[test]
    fn spec_vectors() {
        let cases = [
            (
                "128.232.110.120",
                "66.35.250.204",
                34855,
                80,
                6,
                0,
                "1:LQU9qZlK+B5F3KDmev6m5PMibrg=",
            ),
            (
                "1.2.3.4",
                "5.6.7.8",
                1122,
                3344,
                6,
                0,
                "1:wCb3OG7yAFWelaUydu0D+125CLM=",
            ),
            (
                "1.2.3.4",
                "5.6.7.8",
                1122,
                3344,
                17,
                0,
                "1:0Mu9InQx6z4ZiCZM/7HXi2WMhOg=",
            ),
            (
                "1.2.3.4",
                "5.6.7.8",
                1122,
                3344,
                6,
                1,
                "1:HhA1B+6CoLbiKPEs5nhNYN4XWfk=",
            ),
            (
                "1.2.3.4",
                "5.6.7.8",
                1122,
                3344,
                17,
                1,
                "1:OShq+iKDAMVouh/4bMxB9Sz4amw=",
            ),
            // ICMPv6 echo request/reply, ports = mapped type/code.
            (
                "fe80:1:203:405:607:809:a0b:c0d",
                "fe80:1011:1213:1415:1617:1819:1a1b:1c1d",
                128,
                129,
                58,
                0,
                "1:0bf7hyMJUwt3fMED7z8LIfRpBeo=",
            ),
            (
                "fe80:1:203:405:607:809:a0b:c0d",
                "fe80:1011:1213:1415:1617:1819:1a1b:1c1d",
                128,
                129,
                58,
                1,
                "1:IO27GQzPuCtNnwFvjWALMHu5tJE=",
            ),
        ];
        for (s, d, sp, dp, proto, seed, want) in cases {
            assert_eq!(
                community_id_v1(ip(s), ip(d), sp, dp, proto, seed),
                want,
                "{s}:{sp} -> {d}:{dp}"
            );
            // Same ID from the other direction.
            assert_eq!(
                community_id_v1(ip(d), ip(s), dp, sp, proto, seed),
                want,
                "{d}:{dp} -> {s}:{sp}"
            );
        }
    }

    #[test]
    fn ipv4_mapped_hashes_as_ipv4() {
        assert_eq!(
            community_id_v1(
                ip("::ffff:128.232.110.120"),
                ip("::ffff:66.35.250.204"),
                34855,
                80,
                PROTO_TCP,
                0
            ),
            "1:LQU9qZlK+B5F3KDmev6m5PMibrg="
        );
    }

    #[test]
    fn same_address_orders_by_port() {
        let a = community_id_v1(ip("192.0.2.1"), ip("192.0.2.1"), 50000, 445, PROTO_TCP, 0);
        let b = community_id_v1(ip("192.0.2.1"), ip("192.0.2.1"), 445, 50000, PROTO_TCP, 0);
        assert_eq!(a, b);
        assert_ne!(
            a,
            community_id_v1(ip("192.0.2.1"), ip("192.0.2.1"), 50001, 445, PROTO_TCP, 0)
        );
    }
}
