//! Capture reading, framing and time handling on crafted files (no kernel).

use std::{net::IpAddr, time::Duration};

use super::capture::{ethernet_frame, linktype, CaptureFormat, CaptureReader, OpenProblem, Skip};
use super::CaptureClock;
use crate::packet::Segment;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn v4_syn() -> Segment {
    Segment::syn(ip("192.0.2.1"), ip("198.51.100.7"), 40000, 445)
}

fn v6_syn() -> Segment {
    Segment::syn(ip("2001:db8::1"), ip("2001:db8::2"), 40000, 445)
}

/// The frame must be an Ethernet header with `ethertype` followed by `payload`.
fn assert_framed(frame: &[u8], ethertype: u16, payload: &[u8]) {
    assert_eq!(&frame[12..14], &ethertype.to_be_bytes(), "ethertype");
    assert_eq!(&frame[14..], payload, "payload after the Ethernet header");
}

#[test]
fn ethernet_records_pass_through_unchanged() {
    let f = v4_syn().frame();
    assert_eq!(&ethernet_frame(linktype::ETHERNET, &f).unwrap()[..], &f[..]);
    assert_eq!(
        ethernet_frame(linktype::ETHERNET, &f[..13]),
        Err(Skip::TooShort)
    );
}

#[test]
fn sll_uses_its_protocol_field() {
    let ipkt = v4_syn().ip_packet();
    let mut rec = vec![0, 0, 0, 1, 0, 6, 2, 0, 0, 0, 0, 1, 0, 0, 0x08, 0x00];
    rec.extend_from_slice(&ipkt);
    assert_framed(
        &ethernet_frame(linktype::LINUX_SLL, &rec).unwrap(),
        0x0800,
        &ipkt,
    );
    // A VLAN tag libpcap put back after the SLL header: protocol 0x8100,
    // then TCI and the inner type, as in an Ethernet frame.
    let mut tagged = rec[..14].to_vec();
    tagged.extend_from_slice(&[0x81, 0x00, 0x00, 0x64, 0x08, 0x00]);
    tagged.extend_from_slice(&ipkt);
    let f = ethernet_frame(linktype::LINUX_SLL, &tagged).unwrap();
    assert_framed(&f, 0x8100, &tagged[16..]);
    assert_eq!(&f[14..18], &[0x00, 0x64, 0x08, 0x00]);
    assert_eq!(
        ethernet_frame(linktype::LINUX_SLL, &rec[..15]),
        Err(Skip::TooShort)
    );
}

#[test]
fn sll2_uses_its_protocol_field() {
    let ipkt = v6_syn().ip_packet();
    let mut rec = vec![
        0x86, 0xdd, 0, 0, 0, 0, 0, 3, 0, 1, 4, 6, 2, 0, 0, 0, 0, 1, 0, 0,
    ];
    rec.extend_from_slice(&ipkt);
    assert_framed(
        &ethernet_frame(linktype::LINUX_SLL2, &rec).unwrap(),
        0x86dd,
        &ipkt,
    );
    assert_eq!(
        ethernet_frame(linktype::LINUX_SLL2, &rec[..19]),
        Err(Skip::TooShort)
    );
}

#[test]
fn raw_ip_links_take_the_version_or_the_link_type() {
    let v4 = v4_syn().ip_packet();
    let v6 = v6_syn().ip_packet();
    for lt in [linktype::RAW, linktype::RAW_12, linktype::RAW_14] {
        assert_framed(&ethernet_frame(lt, &v4).unwrap(), 0x0800, &v4);
        assert_framed(&ethernet_frame(lt, &v6).unwrap(), 0x86dd, &v6);
        assert_eq!(ethernet_frame(lt, &[0x50; 40]), Err(Skip::NotIp));
        assert_eq!(ethernet_frame(lt, &[]), Err(Skip::TooShort));
    }
    assert_framed(&ethernet_frame(linktype::IPV4, &v4).unwrap(), 0x0800, &v4);
    assert_framed(&ethernet_frame(linktype::IPV6, &v6).unwrap(), 0x86dd, &v6);
    // Loopback: 4-byte family (any value) then IP.
    let mut lo = 30u32.to_le_bytes().to_vec();
    lo.extend_from_slice(&v6);
    assert_framed(&ethernet_frame(linktype::NULL, &lo).unwrap(), 0x86dd, &v6);
    assert_eq!(
        ethernet_frame(linktype::LOOP, &lo[..4]),
        Err(Skip::TooShort)
    );
    assert_eq!(ethernet_frame(147, &v4), Err(Skip::UnsupportedLink(147)));
}

/// A classic pcap: header then `(ts_sec, ts_frac, data, orig_len)` records.
fn pcap(big: bool, nanos: bool, link: u32, recs: &[(u32, u32, &[u8], u32)]) -> Vec<u8> {
    let w32 = |v: &mut Vec<u8>, x: u32| {
        v.extend_from_slice(&if big {
            x.to_be_bytes()
        } else {
            x.to_le_bytes()
        })
    };
    let w16 = |v: &mut Vec<u8>, x: u16| {
        v.extend_from_slice(&if big {
            x.to_be_bytes()
        } else {
            x.to_le_bytes()
        })
    };
    let mut v = Vec::new();
    w32(&mut v, if nanos { 0xa1b2_3c4d } else { 0xa1b2_c3d4 });
    w16(&mut v, 2);
    w16(&mut v, 4);
    w32(&mut v, 0);
    w32(&mut v, 0);
    w32(&mut v, 96); // snap length: records below are cut to it
    w32(&mut v, link);
    for (sec, frac, data, orig) in recs {
        w32(&mut v, *sec);
        w32(&mut v, *frac);
        w32(&mut v, data.len() as u32);
        w32(&mut v, *orig);
        v.extend_from_slice(data);
    }
    v
}

type Owned = (u64, Option<Duration>, u32, Vec<u8>);

fn read_all(bytes: &[u8]) -> (Vec<Owned>, Vec<String>) {
    let mut r = CaptureReader::new(bytes, Some(bytes.len() as u64))
        .unwrap_or_else(|e| panic!("open: {e:?}"));
    let mut recs = Vec::new();
    let mut problems = Vec::new();
    while let Some(item) = r.next_record() {
        match item {
            Ok(rec) => recs.push((rec.number, rec.ts, rec.link, rec.data.to_vec())),
            Err(p) => problems.push(format!("{p:?}")),
        }
    }
    (recs, problems)
}

#[test]
fn pcap_both_byte_orders_and_resolutions() {
    let f = v4_syn().frame();
    for big in [false, true] {
        for nanos in [false, true] {
            let bytes = pcap(
                big,
                nanos,
                1,
                &[(1_700_000_000, 250, &f, 54), (1_700_000_001, 0, &f, 54)],
            );
            let mut r = CaptureReader::new(&bytes[..], None).unwrap();
            assert_eq!(r.format(), CaptureFormat::Pcap);
            assert_eq!(r.pcap_link(), Some(1));
            let rec = r.next_record().unwrap().unwrap();
            let frac = if nanos { 250 } else { 250_000 };
            assert_eq!(rec.ts, Some(Duration::new(1_700_000_000, frac)));
            assert_eq!(rec.data, &f[..]);
            assert_eq!(rec.number, 1);
            assert_eq!(rec.offset, 24);
            let rec = r.next_record().unwrap().unwrap();
            assert_eq!(rec.number, 2);
            assert_eq!(rec.offset, 24 + 16 + f.len() as u64);
            assert!(r.next_record().is_none());
        }
    }
}

#[test]
fn pcap_records_cut_to_the_snap_length_are_read() {
    // tcpdump -s 96: orig_len above the snap length, which pcap-file's
    // validated reader would reject.
    let f = v4_syn().frame();
    let bytes = pcap(false, false, 1, &[(1, 0, &f, 1514)]);
    let (recs, problems) = read_all(&bytes);
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(recs.len(), 1);
}

#[test]
fn truncated_last_record_is_reported_after_the_good_ones() {
    let f = v4_syn().frame();
    let bytes = pcap(false, false, 1, &[(1, 0, &f, 54), (2, 0, &f, 54)]);
    for cut in [1, 10, 17, 40] {
        let (recs, problems) = read_all(&bytes[..bytes.len() - cut]);
        assert_eq!(recs.len(), 1, "cut {cut}: the first record survives");
        assert_eq!(problems.len(), 1, "cut {cut}: {problems:?}");
        assert!(
            problems[0].starts_with("Truncated { offset: 94"),
            "cut {cut}: {problems:?}"
        );
    }
}

#[test]
fn a_damaged_length_in_the_middle_is_corruption_not_truncation() {
    let f = v4_syn().frame();
    let filler = vec![0u8; 300 * 1024];
    let mut bytes = pcap(false, false, 1, &[(1, 0, &f, 54), (2, 0, &filler, 54)]);
    // Second record's incl_len: far beyond the file.
    let at = 24 + 16 + f.len() + 8;
    bytes[at..at + 4].copy_from_slice(&0x7fff_ffffu32.to_le_bytes());
    let (recs, problems) = read_all(&bytes);
    assert_eq!(recs.len(), 1);
    assert_eq!(problems.len(), 1);
    assert!(problems[0].starts_with("Corrupt"), "{problems:?}");
}

#[test]
fn not_a_capture_and_short_files_are_named() {
    match CaptureReader::new(&b"GET / HTTP/1.1\r\n"[..], None) {
        Err(OpenProblem::NotACapture { magic }) => assert_eq!(&magic, b"GET "),
        other => panic!("{:?}", other.err()),
    }
    assert!(matches!(
        CaptureReader::new(&[0xd4, 0xc3, 0xb2][..], None),
        Err(OpenProblem::BadHeader(_))
    ));
    let header = pcap(false, false, 1, &[]);
    assert!(matches!(
        CaptureReader::new(&header[..20], None),
        Err(OpenProblem::BadHeader(_))
    ));
}

/// pcapng writer for tests: blocks in the given byte order.
struct Ng {
    big: bool,
    out: Vec<u8>,
}

impl Ng {
    fn new(big: bool) -> Self {
        let mut ng = Self {
            big,
            out: Vec::new(),
        };
        // SHB body: byte-order magic, version 1.0, section length -1.
        let mut body = ng.u32(0x1a2b_3c4d);
        body.extend(ng.u16(1));
        body.extend(ng.u16(0));
        body.extend_from_slice(&[0xff; 8]);
        ng.block(0x0a0d_0d0a, &body);
        ng
    }
    fn u32(&self, x: u32) -> Vec<u8> {
        (if self.big {
            x.to_be_bytes()
        } else {
            x.to_le_bytes()
        })
        .to_vec()
    }
    fn u16(&self, x: u16) -> Vec<u8> {
        (if self.big {
            x.to_be_bytes()
        } else {
            x.to_le_bytes()
        })
        .to_vec()
    }
    fn block(&mut self, kind: u32, body: &[u8]) {
        let mut body = body.to_vec();
        while !body.len().is_multiple_of(4) {
            body.push(0);
        }
        let len = body.len() as u32 + 12;
        let (k, l) = (self.u32(kind), self.u32(len));
        self.out.extend(k);
        self.out.extend(l.clone());
        self.out.extend(body);
        self.out.extend(l);
    }
    fn idb(&mut self, link: u16, tsresol: Option<u8>) {
        let mut b = self.u16(link);
        b.extend(self.u16(0));
        b.extend(self.u32(65535));
        if let Some(r) = tsresol {
            b.extend(self.u16(9));
            b.extend(self.u16(1));
            b.extend_from_slice(&[r, 0, 0, 0]);
            b.extend(self.u16(0));
            b.extend(self.u16(0));
        }
        self.block(1, &b);
    }
    /// An Ethernet interface description with `if_name`.
    fn idb_named(&mut self, name: &str) {
        let mut b = self.u16(1);
        b.extend(self.u16(0));
        b.extend(self.u32(65535));
        b.extend(self.u16(2));
        b.extend(self.u16(name.len() as u16));
        b.extend_from_slice(name.as_bytes());
        while !b.len().is_multiple_of(4) {
            b.push(0);
        }
        b.extend(self.u16(0));
        b.extend(self.u16(0));
        self.block(1, &b);
    }
    fn epb(&mut self, iface: u32, ticks: u64, data: &[u8]) {
        let mut b = self.u32(iface);
        b.extend(self.u32((ticks >> 32) as u32));
        b.extend(self.u32(ticks as u32));
        b.extend(self.u32(data.len() as u32));
        b.extend(self.u32(data.len() as u32));
        b.extend_from_slice(data);
        self.block(6, &b);
    }
    fn spb(&mut self, data: &[u8]) {
        let mut b = self.u32(data.len() as u32);
        b.extend_from_slice(data);
        self.block(3, &b);
    }
}

#[test]
fn pcapng_interfaces_link_types_and_timestamp_resolution() {
    let eth = v4_syn().frame();
    let ipkt = v6_syn().ip_packet();
    let mut sll = vec![0, 0, 0, 1, 0, 6, 2, 0, 0, 0, 0, 1, 0, 0, 0x86, 0xdd];
    sll.extend_from_slice(&ipkt);
    for big in [false, true] {
        let mut ng = Ng::new(big);
        ng.idb(1, None); // Ethernet, microseconds (the default)
        ng.idb(113, Some(9)); // SLL, nanoseconds
        ng.idb(101, Some(0x80 | 10)); // raw, 2^-10 s
        ng.epb(0, 1_700_000_000_123_456, &eth);
        ng.epb(1, 1_700_000_001_000_000_007, &sll);
        ng.epb(2, (1_700_000_002u64 << 10) | 512, &ipkt);
        ng.epb(7, 0, &eth); // no such interface: skipped, reading goes on
        ng.block(4, &[0, 0, 0, 0]); // name resolution: ignored
        ng.spb(&eth);
        let (recs, problems) = read_all(&ng.out);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].starts_with("UnknownInterface"), "{problems:?}");
        let summary: Vec<_> = recs.iter().map(|r| (r.0, r.1, r.2)).collect();
        assert_eq!(
            summary,
            vec![
                (1, Some(Duration::new(1_700_000_000, 123_456_000)), 1),
                (2, Some(Duration::new(1_700_000_001, 7)), 113),
                (3, Some(Duration::new(1_700_000_002, 500_000_000)), 101),
                (4, None, 1),
            ],
            "big endian: {big}"
        );
        assert_eq!(recs[1].3, sll);
        assert_eq!(recs[3].3, eth, "simple packet trimmed to its length");
    }
}

#[test]
fn pcapng_new_section_resets_interfaces_and_byte_order() {
    let eth = v4_syn().frame();
    let mut a = Ng::new(false);
    a.idb(1, None);
    a.epb(0, 1_000_000, &eth);
    let mut b = Ng::new(true);
    b.idb(113, Some(9));
    let mut sll = vec![0u8; 14];
    sll.extend_from_slice(&[0x08, 0x00]);
    sll.extend_from_slice(&v4_syn().ip_packet());
    b.epb(0, 2_000_000_000, &sll);
    let mut bytes = a.out;
    bytes.extend(b.out);
    let (recs, problems) = read_all(&bytes);
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(recs.len(), 2);
    assert_eq!((recs[0].1, recs[0].2), (Some(Duration::from_secs(1)), 1));
    assert_eq!((recs[1].1, recs[1].2), (Some(Duration::from_secs(2)), 113));
}

#[test]
fn pcapng_truncated_last_block() {
    let eth = v4_syn().frame();
    let mut ng = Ng::new(false);
    ng.idb(1, None);
    ng.epb(0, 1, &eth);
    ng.epb(0, 2, &eth);
    let (recs, problems) = read_all(&ng.out[..ng.out.len() - 6]);
    assert_eq!(recs.len(), 1);
    assert_eq!(problems.len(), 1);
    assert!(problems[0].starts_with("Truncated"), "{problems:?}");
}

#[test]
fn capture_clock_clamps_backwards_and_fills_missing() {
    let mut c = CaptureClock::default();
    let s = |secs| Some(Duration::from_secs(secs));
    let t = |secs| chrono::DateTime::from_timestamp(secs, 0).unwrap();
    assert_eq!(c.stamp(None), t(0), "before any timestamp: the epoch");
    assert_eq!(c.stamp(s(100)), t(100));
    assert_eq!(c.stamp(s(90)), t(100), "backwards: clamped");
    assert_eq!(c.stamp(s(100)), t(100), "equal is not backwards");
    assert_eq!(c.stamp(None), t(100));
    assert_eq!(c.stamp(s(101)), t(101));
    assert_eq!(c.stamp(Some(Duration::from_secs(u64::MAX))), t(101));
    assert_eq!((c.backwards, c.missing), (1, 3));
    assert_eq!(c.latest(), Some(t(101)));
}

/// A pcapng's interface names are read with its first packet (the
/// application's `replay::sensor` names the ingress after them: interface
/// id 0 is ingress index 1).
#[test]
fn pcapng_interface_names_are_read_with_the_first_packet() {
    let eth = v4_syn().frame();
    for big in [false, true] {
        let mut ng = Ng::new(big);
        ng.idb_named("eth1");
        ng.idb(1, None);
        ng.idb_named("wan0");
        ng.epb(0, 1, &eth);
        let path = std::env::temp_dir().join(format!(
            "smbwatch-ifnames-{}-{big}.pcapng",
            std::process::id()
        ));
        std::fs::write(&path, &ng.out).unwrap();
        let file = std::fs::File::open(&path).unwrap();
        let mut reader = CaptureReader::new(std::io::BufReader::new(file), None).unwrap();
        assert!(reader.next_record().is_some());
        std::fs::remove_file(&path).unwrap();
        assert_eq!(
            reader.interface_names(),
            [Some("eth1"), None, Some("wan0")],
            "big endian: {big}"
        );
    }
}
