//! The frames the XDP benchmarks run: non-SMB traffic, data segments and
//! each round's distinct contacts (new sources, new destinations, first
//! answers).

use smbwatch::packet::{ethernet_with_type, tcp_flags, Segment};

pub(super) fn ip(s: &str) -> std::net::IpAddr {
    s.parse().expect("literal address")
}

/// An ARP request (non-IP traffic).
pub(super) fn arp_frame() -> Vec<u8> {
    let mut arp = vec![0, 1, 8, 0, 6, 4, 0, 1];
    arp.extend_from_slice(&[2, 0, 0, 0, 0, 1, 203, 0, 113, 10]);
    arp.extend_from_slice(&[0, 0, 0, 0, 0, 0, 203, 0, 113, 1]);
    let mut f = ethernet_with_type(0x0806, &arp);
    f[..6].copy_from_slice(&[0xff; 6]);
    f
}

pub(super) fn tcp80() -> Vec<u8> {
    Segment::syn(ip("203.0.113.10"), ip("198.51.100.80"), 40000, 80).frame()
}

/// Source number `i` of a flood: 10.0.0.0/8 from 10.0.0.1. Spoofed
/// addresses only ever exist inside test_run or the lab's namespaces.
pub fn flood_v4(i: u32) -> std::net::IpAddr {
    std::net::IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0001u32 + i))
}

/// Destination number `j`: 198.18.0.0/15 (RFC 2544 benchmarking) from 198.18.0.1.
pub fn bench_dst_v4(j: u32) -> std::net::IpAddr {
    std::net::IpAddr::V4(std::net::Ipv4Addr::from(0xc612_0001u32 + j))
}

/// A client's data segment to 445 with `len` bytes of payload.
pub(super) fn data_segment(client: std::net::IpAddr, len: usize) -> Vec<u8> {
    let mut s = Segment::new(
        client,
        ip("198.51.100.7"),
        40000,
        445,
        tcp_flags::ACK | tcp_flags::PSH,
    );
    s.payload = vec![0xfe; len];
    s.frame()
}

/// The server's data segment from 445 to `client` (another path in the
/// sampler: no pair-cache role, hashed in its run).
pub(super) fn server_segment(client: std::net::IpAddr, len: usize) -> Vec<u8> {
    let mut s = Segment::new(
        ip("198.51.100.7"),
        client,
        445,
        40000,
        tcp_flags::ACK | tcp_flags::PSH,
    );
    s.payload = vec![0xfe; len];
    s.frame()
}

/// Distinct frames of one round's contact cases (fresh tables: each is
/// new): `k` new sources, `k` new destinations of one scanner, and the
/// servers' first answers to the new sources.
pub(super) struct Contacts {
    /// SYNs of `k` new sources to one server.
    pub new_src: Vec<Vec<u8>>,
    /// SYNs of one scanner to `k` new destinations.
    pub new_dst: Vec<Vec<u8>>,
    /// The server's SYN-ACK to each new source.
    pub answers: Vec<Vec<u8>>,
}

impl Contacts {
    /// Sources from `base`, destinations from `dst_base`.
    pub(super) fn new(base: u32, dst_base: u32, k: usize) -> Self {
        let server = ip("198.51.100.7");
        let range = 0..k as u32;
        Self {
            new_src: range
                .clone()
                .map(|i| Segment::syn(flood_v4(base + i), server, 40000, 445).frame())
                .collect(),
            new_dst: range
                .clone()
                .map(|j| {
                    Segment::syn(ip("203.0.113.99"), bench_dst_v4(dst_base + j), 40000, 445).frame()
                })
                .collect(),
            answers: range
                .map(|i| {
                    let synack = tcp_flags::SYN | tcp_flags::ACK;
                    Segment::new(server, flood_v4(base + i), 445, 40000, synack).frame()
                })
                .collect(),
        }
    }
}
