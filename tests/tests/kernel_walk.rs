//! The real XDP program's header walks on crafted frames: IPv4 options,
//! VLAN stacks, fragments, IPv6 extension chains to their bound and past
//! it (unparsed reports), truncation at every boundary, random frames.

use std::time::Duration;

use integration_tests::kernel::*;
use smbwatch::{
    dataplane::{addr_to_ip, testrun},
    packet::{tcp_flags, Ipv6Ext, Segment},
};
use smbwatch_common::{stat, MAX_IPV6_EXT, MAX_VLAN_TAGS};

#[test]
fn ipv4_with_options() {
    let mut k = Kernel::new();
    for (i, opts) in [4usize, 20, 40].into_iter().enumerate() {
        let mut s = v4_syn("203.0.113.10", "198.51.100.7", 40000, 445);
        s.dst = format!("198.51.100.{}", 10 + i).parse().unwrap();
        s.ipv4_options = opts;
        k.run(&s.frame());
    }
    assert_eq!(k.events().len(), 3);
    assert_eq!(k.stats().malformed(), 0);
}

#[test]
fn vlan_and_qinq() {
    let mut k = Kernel::new();
    let mut one = v4_syn("203.0.113.10", "198.51.100.7", 40000, 445);
    one.vlans = vec![42];
    let mut two = v4_syn("203.0.113.10", "198.51.100.8", 40000, 445);
    two.vlans = vec![100, 200];
    k.run(&one.frame());
    k.run(&two.frame());
    let ev = k.events();
    assert_eq!(ev.len(), 2);
    assert_eq!((ev[0].vlan, ev[0].flags & 1), (42, 1));
    assert_eq!(
        (ev[1].vlan, ev[1].flags & 1),
        (100, 1),
        "outer tag reported"
    );
    assert_eq!(k.stats().get(stat::VLAN), 2);
    // Three tags are walked like two.
    let mut three = v4_syn("203.0.113.10", "198.51.100.9", 40000, 445);
    three.vlans = vec![1, 2, 3];
    k.run(&three.frame());
    let ev = k.events();
    assert_eq!((ev.len(), ev[0].vlan), (1, 1), "{ev:?}");
    // The pre-standard 0x9100 QinQ TPID is a tag like 802.1ad.
    let mut old = v4_syn("203.0.113.10", "198.51.100.10", 40000, 445);
    old.vlans = vec![300, 5];
    old.tpids = Some(vec![0x9100, 0x8100]);
    k.run(&old.frame());
    let ev = k.events();
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0].vlan, 300);
}

#[test]
fn fragmented_syns_are_connection_attempts() {
    let mut k = Kernel::new();
    // nmap -f: 8 bytes of TCP (ports and sequence, no flags) in the first
    // fragment, padded to 60 bytes on the wire; nmap -ff: 16 bytes.
    for (i, bytes) in [8usize, 16].into_iter().enumerate() {
        let mut s = v4_syn(
            "203.0.113.10",
            &format!("198.51.100.{}", 20 + i),
            40000,
            445,
        );
        s.ipv4_fragment = Some((0, true));
        s.tcp_len = bytes;
        s.pad = true;
        k.run(&s.frame());
    }
    // IPv6: a first fragment with the whole header, more to follow.
    let mut v6 = Segment::syn(ip("2001:db8::10"), ip("2001:db8:1::7"), 40000, 445);
    v6.ipv6_ext = vec![Ipv6Ext::Fragment {
        offset: 0,
        more: true,
    }];
    k.run(&v6.frame());
    let ev = k.events();
    assert_eq!(ev.len(), 3, "{ev:?}");
    for e in &ev {
        assert_eq!(e.kind, EVENT_NEW_PAIR);
        assert_ne!(e.flags & smbwatch_common::EVENT_FLAG_FRAGMENTED, 0);
        assert_eq!(e.dport, 445);
    }
    let s = k.stats();
    assert_eq!(s.get(stat::FRAGMENTED_SYNS), 3);
    assert_eq!(s.malformed(), 0, "padding is never read as TCP");
    // A 16-byte first fragment that is not a SYN is not a connection attempt.
    let mut ack = Segment::new(
        ip("203.0.113.10"),
        ip("198.51.100.30"),
        40000,
        445,
        tcp_flags::ACK,
    );
    ack.ipv4_fragment = Some((0, true));
    ack.tcp_len = 16;
    k.run(&ack.frame());
    // Later fragments carry no TCP header: counted, not parsed.
    let mut later = v4_syn("203.0.113.10", "198.51.100.31", 40000, 445);
    later.ipv4_fragment = Some((1, false));
    k.run(&later.frame());
    assert!(k.events().is_empty());
    assert_eq!(k.stats().get(stat::LATER_FRAGMENTS), 1);
    // An unfragmented packet still needs its whole TCP header.
    let mut short = v4_syn("203.0.113.10", "198.51.100.32", 40000, 445);
    short.tcp_len = 8;
    short.pad = true;
    k.run(&short.frame());
    assert!(k.events().is_empty());
    assert_eq!(k.stats().get(stat::MALFORMED_TCP), 1);
}

#[test]
fn ipv6_plain_and_extension_headers() {
    let mut k = Kernel::new();
    let base = Segment::syn(ip("2001:db8::10"), ip("2001:db8:1::7"), 40000, 445);
    k.run(&base.frame());
    let chains = [
        vec![Ipv6Ext::HopByHop],
        vec![Ipv6Ext::HopByHop, Ipv6Ext::Routing, Ipv6Ext::DestOpts],
        vec![
            Ipv6Ext::DestOpts,
            Ipv6Ext::Fragment {
                offset: 0,
                more: true,
            },
        ],
    ];
    for (i, chain) in chains.iter().enumerate() {
        let mut s = base.clone();
        s.dst = format!("2001:db8:1::{}", 20 + i).parse().unwrap();
        s.ipv6_ext = chain.clone();
        k.run(&s.frame());
    }
    let ev = k.events();
    assert_eq!(ev.len(), 4, "plain + three chains: {ev:?}");
    assert_eq!(
        smbwatch::dataplane::addr_to_ip(&ev[0].src),
        ip("2001:db8::10")
    );
    assert_eq!(k.stats().get(stat::IPV6), 4);
    assert_eq!(k.stats().malformed(), 0);
}

#[test]
fn ipv6_non_first_fragment_has_no_tcp() {
    let mut k = Kernel::new();
    let mut s = Segment::syn(ip("2001:db8::10"), ip("2001:db8:1::7"), 40000, 445);
    s.ipv6_ext = vec![Ipv6Ext::Fragment {
        offset: 185,
        more: false,
    }];
    k.run(&s.frame());
    assert!(
        k.events().is_empty(),
        "bytes after a non-first fragment header are payload"
    );
    assert_eq!(k.stats().malformed(), 0);
}

#[test]
fn deep_ipv6_chains_and_vlan_stacks_are_walked() {
    let mut k = Kernel::new();
    // 7 headers were past the old walk of 6; Linux accepts all of these.
    for (i, n) in [7usize, 12, MAX_IPV6_EXT].into_iter().enumerate() {
        let mut s = Segment::syn(ip("2001:db8::10"), ip("2001:db8:1::7"), 40000, 445);
        s.dst = format!("2001:db8:1::{}", 30 + i).parse().unwrap();
        s.ipv6_ext = vec![Ipv6Ext::DestOpts; n];
        k.run(&s.frame());
    }
    for (i, n) in [4usize, MAX_VLAN_TAGS].into_iter().enumerate() {
        let mut s = v4_syn(
            "203.0.113.10",
            &format!("198.51.100.{}", 40 + i),
            40000,
            445,
        );
        s.vlans = (1..=n as u16).map(|t| 100 + t).collect();
        k.run(&s.frame());
    }
    // An IPv6 SYN behind 4 tags and 16 extension headers at once.
    let mut both = Segment::syn(ip("2001:db8::10"), ip("2001:db8:1::50"), 40000, 445);
    both.vlans = vec![7, 8, 9, 10];
    both.ipv6_ext = vec![Ipv6Ext::HopByHop; 1]
        .into_iter()
        .chain(std::iter::repeat_n(Ipv6Ext::DestOpts, MAX_IPV6_EXT - 1))
        .collect();
    k.run(&both.frame());
    let ev = k.events();
    let got: Vec<(u8, String, u16)> = ev
        .iter()
        .map(|e| (e.kind, addr_to_ip(&e.dst).to_string(), e.vlan))
        .collect();
    assert_eq!(
        got,
        vec![
            (EVENT_NEW_PAIR, "2001:db8:1::30".into(), 0),
            (EVENT_NEW_PAIR, "2001:db8:1::31".into(), 0),
            (EVENT_NEW_PAIR, "2001:db8:1::32".into(), 0),
            (EVENT_NEW_PAIR, "198.51.100.40".into(), 101),
            (EVENT_NEW_PAIR, "198.51.100.41".into(), 101),
            (EVENT_NEW_PAIR, "2001:db8:1::50".into(), 7),
        ]
    );
    let s = k.stats();
    assert_eq!(s.get(stat::IPV6_EXT_LIMIT) + s.get(stat::VLAN_LIMIT), 0);
    assert_eq!(s.malformed(), 0);
}

#[test]
fn past_the_walks_bounds_the_source_is_reported_unparsed() {
    let mut k = Kernel::new();
    let mut deep = Segment::syn(ip("2001:db8::66"), ip("2001:db8:1::7"), 40000, 445);
    deep.ipv6_ext = vec![Ipv6Ext::DestOpts; MAX_IPV6_EXT + 1];
    k.run(&deep.frame());
    // The same pair again: within its rate limit.
    k.run(&deep.frame());
    // The same source to another host: reported (a hidden sweep shows
    // every host it reaches).
    deep.dst = ip("2001:db8:1::8");
    k.run(&deep.frame());
    // Another source is reported on its own.
    deep.src = ip("2001:db8::67");
    k.run(&deep.frame());
    let mut tags = v4_syn("203.0.113.10", "198.51.100.7", 40000, 445);
    tags.vlans = (1..=MAX_VLAN_TAGS as u16 + 1).collect();
    k.run(&tags.frame());
    let ev = k.events();
    let got: Vec<(u8, String, String, u16, u16)> = ev
        .iter()
        .map(|e| {
            (
                e.kind,
                addr_to_ip(&e.src).to_string(),
                addr_to_ip(&e.dst).to_string(),
                e.sport,
                e.dport,
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (
                EVENT_UNPARSED,
                "2001:db8::66".into(),
                "2001:db8:1::7".into(),
                0,
                0
            ),
            (
                EVENT_UNPARSED,
                "2001:db8::66".into(),
                "2001:db8:1::8".into(),
                0,
                0
            ),
            (
                EVENT_UNPARSED,
                "2001:db8::67".into(),
                "2001:db8:1::8".into(),
                0,
                0
            ),
            // No IP header reached: the MACs (02:00:00:00:00:01 ->
            // 02:00:00:00:00:02) as modified EUI-64 link-local addresses.
            (
                EVENT_UNPARSED,
                "fe80::ff:fe00:1".into(),
                "fe80::ff:fe00:2".into(),
                0,
                0
            ),
        ]
    );
    assert_eq!(ev[3].vlan, 1, "outer tag");
    let s = k.stats();
    assert_eq!(s.get(stat::IPV6_EXT_LIMIT), 4, "every one counted");
    assert_eq!(s.get(stat::VLAN_LIMIT), 1);
    assert_eq!(s.get(stat::UNPARSED_REPORTS), 4);
    assert_eq!(s.get(stat::NEW_PAIRS), 0);
}

#[test]
fn unparsed_reports_are_rate_limited_per_pair_by_window() {
    let mut k = Kernel::with_epoch(Duration::from_secs(3600));
    let mut deep = Segment::syn(ip("2001:db8::66"), ip("2001:db8:1::7"), 40000, 445);
    deep.ipv6_ext = vec![Ipv6Ext::DestOpts; MAX_IPV6_EXT + 1];
    // At the start of a rate-limit window.
    let t0 = Duration::from_nanos((1_800_000_000_000_000_000u64 >> 36) << 36);
    for s in [0, 1, 30] {
        k.run_at(&deep.frame(), t0 + Duration::from_secs(s));
    }
    assert_eq!(k.events().len(), 1, "one report per window");
    // The window is 2^36 ns (about 69 s): two windows later, again.
    k.run_at(&deep.frame(), t0 + Duration::from_secs(140));
    assert_eq!(k.events().len(), 1);
    assert_eq!(k.stats().get(stat::IPV6_EXT_LIMIT), 4);
}

#[test]
fn truncated_at_every_header_boundary() {
    let mut k = Kernel::new();
    // (frame, header boundaries inside it, counter each cut must hit)
    let mut v4 = v4_syn("203.0.113.10", "198.51.100.7", 40000, 445);
    v4.vlans = vec![7];
    let mut v6 = Segment::syn(ip("2001:db8::10"), ip("2001:db8:1::7"), 40000, 445);
    v6.ipv6_ext = vec![Ipv6Ext::HopByHop];
    let cases = [
        // 802.1Q tag cut: 14..18
        (v4.frame(), 15usize, stat::MALFORMED_VLAN),
        (v4.frame(), 17, stat::MALFORMED_VLAN),
        // IPv4 header cut: 18..38
        (v4.frame(), 18, stat::MALFORMED_IPV4),
        (v4.frame(), 37, stat::MALFORMED_IPV4),
        // TCP header cut: 38..58
        (v4.frame(), 38, stat::MALFORMED_TCP),
        (v4.frame(), 57, stat::MALFORMED_TCP),
        // IPv6 fixed header cut: 14..54
        (v6.frame(), 14, stat::MALFORMED_IPV6),
        (v6.frame(), 53, stat::MALFORMED_IPV6),
        // IPv6 extension header cut: 54..62
        (v6.frame(), 54, stat::MALFORMED_IPV6),
        (v6.frame(), 61, stat::MALFORMED_IPV6),
        // TCP after the extension: 62..82
        (v6.frame(), 62, stat::MALFORMED_TCP),
        (v6.frame(), 81, stat::MALFORMED_TCP),
    ];
    for (frame, cut, counter) in cases {
        let before = k.stats().get(counter);
        k.run(&frame[..cut]);
        assert_eq!(
            k.stats().get(counter),
            before + 1,
            "cut at {cut} must count {}",
            stat::NAMES[counter as usize]
        );
    }
    assert!(k.events().is_empty());
    // Shorter than an Ethernet header cannot be tested: the kernel's test
    // run refuses it (EINVAL), and no NIC delivers one.
    assert!(testrun::run(k.dp.program_fd().unwrap(), &[0u8; 13], 1).is_err());
}

#[test]
fn random_frames_all_pass() {
    let k = Kernel::new();
    // xorshift: deterministic, no dependency.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let templates = [
        v4_syn("203.0.113.10", "198.51.100.7", 40000, 445).frame(),
        Segment::syn(ip("2001:db8::10"), ip("2001:db8:1::7"), 40000, 445).frame(),
    ];
    for i in 0..10_000 {
        let len = 14 + (next() % 200) as usize;
        let mut f: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        // Half keep a valid prefix so the parser gets deep into the frame.
        if i % 2 == 0 {
            let t = &templates[i / 2 % 2];
            let keep = (next() as usize % t.len()).min(f.len());
            f[..keep].copy_from_slice(&t[..keep]);
        }
        k.run(&f);
    }
    assert_eq!(k.stats().get(stat::PACKETS), 10_000);
}
