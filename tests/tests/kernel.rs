//! The real XDP program on crafted frames, through BPF_PROG_TEST_RUN.

use std::net::IpAddr;

use aya::maps::{MapData, RingBuf};
use integration_tests::require_root;
use std::time::Duration;

use smbwatch::{
    dataplane::{
        addr_to_ip, drain, test_programs::TestPrograms, testrun, AnswerCheck, Dataplane,
        KernelClock, LoadOptions, ProgramClock, Stats,
    },
    packet::{tcp_flags, Ipv6Ext, Segment},
};
use smbwatch_common::{stat, Event, EventKind, ReplayMeta, MAX_IPV6_EXT, MAX_VLAN_TAGS};

const EVENT_NEW_PAIR: u8 = EventKind::NewPair as u8;
const EVENT_ACCEPTED: u8 = EventKind::Accepted as u8;
const EVENT_REFUSED: u8 = EventKind::Refused as u8;
const EVENT_ACTIVE: u8 = EventKind::Active as u8;
const EVENT_CONFIRMED: u8 = EventKind::Confirmed as u8;
const EVENT_UNPARSED: u8 = EventKind::Unparsed as u8;

const XDP_PASS: u32 = 2;

/// A pinned hash key: the sketches' estimates depend on which destination
/// hashes collide, so a random key per load made them vary between runs.
const TEST_HASH_KEY: u64 = 0x5eed_0f5b_4a7c_1e55;

struct Kernel {
    dp: Dataplane,
    ring: RingBuf<MapData>,
}

impl Kernel {
    /// The program with no event budget and answers from any ingress: test
    /// runs all come in on loopback. Budget and ingress have their own tests.
    fn new() -> Self {
        require_root();
        Self::with(LoadOptions {
            events_per_cpu: 0,
            answers: AnswerCheck::Any,
            ..LoadOptions::default()
        })
    }

    /// The program as replay loads it: the ingress comes with each frame.
    fn with_ingress(answers: AnswerCheck) -> Self {
        require_root();
        Self::with(LoadOptions {
            events_per_cpu: 0,
            answers,
            replay: true,
            ..LoadOptions::default()
        })
    }

    /// The program as replay loads it, with activity epochs of `epoch`
    /// driven by the times given to [`Kernel::run_at`].
    fn with_epoch(epoch: Duration) -> Self {
        require_root();
        Self::with(LoadOptions {
            events_per_cpu: 0,
            answers: AnswerCheck::Any,
            replay: true,
            activity_epoch: epoch,
            ..LoadOptions::default()
        })
    }

    /// Runs `frame` as if captured `at` after the Unix epoch.
    fn run_at(&self, frame: &[u8], at: Duration) {
        let meta = ReplayMeta {
            ingress: 1,
            _pad: 0,
            ts_ns: at.as_nanos() as u64,
        };
        let r =
            testrun::run_with_meta(self.dp.program_fd().unwrap(), frame, &meta).expect("test run");
        assert_eq!(r.retval, XDP_PASS, "every path must return XDP_PASS");
    }

    fn run_on(&self, frame: &[u8], ingress: u32) {
        let r = testrun::run_with_ingress(self.dp.program_fd().unwrap(), frame, ingress)
            .expect("test run");
        assert_eq!(r.retval, XDP_PASS, "every path must return XDP_PASS");
    }

    fn with(mut opts: LoadOptions) -> Self {
        opts.hash_key.get_or_insert(TEST_HASH_KEY);
        let mut dp = Dataplane::load(&opts).expect("load XDP program");
        let ring = dp.take_events().unwrap();
        Self { dp, ring }
    }

    fn run(&self, frame: &[u8]) {
        let r = testrun::run(self.dp.program_fd().unwrap(), frame, 1).expect("test run");
        assert_eq!(r.retval, XDP_PASS, "every path must return XDP_PASS");
    }

    fn events(&mut self) -> Vec<Event> {
        let mut out = Vec::new();
        let n = drain(&mut self.ring, |ev, _| out.push(*ev));
        assert_eq!(n.malformed, 0, "well-formed events only");
        out
    }

    fn stats(&self) -> Stats {
        self.dp.stats().unwrap()
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn v4_syn(src: &str, dst: &str, sport: u16, dport: u16) -> Segment {
    Segment::syn(ip(src), ip(dst), sport, dport)
}

#[test]
fn ipv4_syn_counted_once_per_pair() {
    let mut k = Kernel::new();
    let syn = v4_syn("203.0.113.10", "198.51.100.7", 40000, 445).frame();
    for _ in 0..3 {
        k.run(&syn); // the retransmissions
    }
    // Same pair, another connection (new source port): still one pair.
    k.run(&v4_syn("203.0.113.10", "198.51.100.7", 40001, 445).frame());
    let ev = k.events();
    assert_eq!(ev.len(), 1, "one NewPair per pair: {ev:?}");
    assert_eq!(ev[0].kind, EVENT_NEW_PAIR);
    assert_eq!(ev[0].sport, 40000);
    assert_eq!(ev[0].dport, 445);
    assert_eq!(
        smbwatch::dataplane::addr_to_ip(&ev[0].src),
        ip("203.0.113.10")
    );
    assert_eq!(
        smbwatch::dataplane::addr_to_ip(&ev[0].dst),
        ip("198.51.100.7")
    );
    let s = k.stats();
    assert_eq!(s.get(stat::MONITORED_SYNS), 4);
    assert_eq!(s.get(stat::NEW_PAIRS), 1);
    assert_eq!(s.get(stat::IPV4), 4);
    // One destination: not a tracked (multi-destination) source.
    assert!(k.dp.sources().unwrap().is_empty());
    assert_eq!(ev[0].flags & smbwatch_common::EVENT_FLAG_REPEAT, 0);
}

#[test]
fn a_source_with_many_destinations_is_tracked_with_its_fanout() {
    let mut k = Kernel::new();
    for i in 0..30 {
        let dst = format!("198.51.100.{}", 10 + i);
        k.run(&v4_syn("203.0.113.10", &dst, 40000 + i, 445).frame());
        // Repeated SYNs to the same host never inflate the estimate.
        k.run(&v4_syn("203.0.113.10", &dst, 50000 + i, 445).frame());
    }
    let ev = k.events();
    assert_eq!(ev.len(), 30);
    assert_eq!(ev[0].fanout, 0, "first sighting: not tracked yet");
    assert_ne!(ev[1].flags & smbwatch_common::EVENT_FLAG_REPEAT, 0);
    let last = ev[29].fanout;
    assert!(
        (27..=33).contains(&last),
        "estimate of 30 destinations: {last}"
    );
    let sources = k.dp.sources().unwrap();
    assert_eq!(sources.len(), 1);
    assert_eq!(sources[0].0, ip("203.0.113.10"));
    let est = sources[0].1.distinct_estimate();
    assert!(
        (26..=32).contains(&est),
        "bitmap estimate (first pair is the filter's): {est}"
    );
    assert_eq!(sources[0].1.new_pairs, 30);
}

#[test]
fn synack_and_rst_answer_pairs_once() {
    let mut k = Kernel::new();
    k.run(&v4_syn("203.0.113.10", "198.51.100.7", 40000, 445).frame());
    k.run(&v4_syn("203.0.113.10", "198.51.100.8", 40001, 445).frame());
    let synack = Segment::new(
        ip("198.51.100.7"),
        ip("203.0.113.10"),
        445,
        40000,
        tcp_flags::SYN | tcp_flags::ACK,
    );
    let rst = Segment::new(
        ip("198.51.100.8"),
        ip("203.0.113.10"),
        445,
        40001,
        tcp_flags::RST | tcp_flags::ACK,
    );
    k.run(&synack.frame());
    k.run(&synack.frame()); // retransmitted answer: not reported again
    k.run(&rst.frame());
    // An answer to a pair never seen: ignored.
    k.run(
        &Segment::new(
            ip("198.51.100.9"),
            ip("203.0.113.10"),
            445,
            1,
            tcp_flags::RST,
        )
        .frame(),
    );
    let ev = k.events();
    let kinds: Vec<u8> = ev.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        vec![
            EVENT_NEW_PAIR,
            EVENT_NEW_PAIR,
            EVENT_ACCEPTED,
            EVENT_REFUSED
        ]
    );
    // Responses name the pair client -> server.
    assert_eq!(
        smbwatch::dataplane::addr_to_ip(&ev[2].src),
        ip("203.0.113.10")
    );
    assert_eq!(
        smbwatch::dataplane::addr_to_ip(&ev[2].dst),
        ip("198.51.100.7")
    );
    assert_eq!(ev[2].dport, 445);
    assert_eq!(ev[2].sport, 40000);
    assert_eq!(k.stats().get(stat::RESPONSES), 2);
}

#[test]
fn syn_to_other_port_ignored() {
    let mut k = Kernel::new();
    k.run(&v4_syn("203.0.113.10", "198.51.100.7", 40000, 80).frame());
    k.run(&v4_syn("203.0.113.10", "198.51.100.7", 40000, 139).frame());
    // A SYN *from* 445 is not a client SYN.
    k.run(&v4_syn("198.51.100.7", "203.0.113.10", 445, 40000).frame());
    assert!(k.events().is_empty());
    assert_eq!(k.stats().get(stat::MONITORED_SYNS), 0);
    assert_eq!(k.stats().get(stat::PACKETS), 3);
}

#[test]
fn port_139_when_configured() {
    require_root();
    let mut k = Kernel::with(LoadOptions {
        ports: vec![445, 139],
        ..LoadOptions::default()
    });
    k.run(&v4_syn("203.0.113.10", "198.51.100.7", 40000, 139).frame());
    let ev = k.events();
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0].dport, 139);
}

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

fn answer(server: &str, client: &str, sport: u16, flags: u8) -> Vec<u8> {
    Segment::new(ip(server), ip(client), 445, sport, flags).frame()
}

/// `frame` as sent by `mac` (the Ethernet source address, bytes 6..12).
fn from_mac(mut frame: Vec<u8>, mac: [u8; 6]) -> Vec<u8> {
    frame[6..12].copy_from_slice(&mac);
    frame
}

#[test]
fn events_carry_the_source_mac_of_their_frame() {
    const CLIENT: [u8; 6] = [0x00, 0x1b, 0x21, 0x0a, 0x0b, 0x0c];
    const SERVER: [u8; 6] = [0x3c, 0xec, 0xef, 0x01, 0x02, 0x03];
    let mut k = Kernel::new();
    let (c, srv) = ("203.0.113.10", "198.51.100.7");
    k.run(&from_mac(v4_syn(c, srv, 40000, 445).frame(), CLIENT));
    k.run(&from_mac(synack(c, srv, 40000), SERVER));
    k.run(&from_mac(client_ack(c, srv, 40000, tcp_flags::ACK), CLIENT));
    // IPv6 behind a VLAN tag: the MAC still comes from the Ethernet header.
    let mut v6 = Segment::syn(ip("2001:db8:a::10"), ip("2001:db8:b::7"), 40000, 445);
    v6.vlans = vec![42];
    k.run(&from_mac(v6.frame(), SERVER));
    let got: Vec<(u8, [u8; 6], [u8; 2])> = k
        .events()
        .iter()
        .map(|e| (e.kind, e.mac.0, e._pad))
        .collect();
    assert_eq!(
        got,
        [
            (EVENT_NEW_PAIR, CLIENT, [0, 0]),
            (EVENT_ACCEPTED, SERVER, [0, 0]),
            (EVENT_CONFIRMED, CLIENT, [0, 0]),
            (EVENT_NEW_PAIR, SERVER, [0, 0]),
        ],
        "the client's MAC on its SYN and ACK, the server's on its answer; padding zeroed"
    );
}

#[test]
fn answers_from_the_syns_own_side_are_forged() {
    const CLIENT_SIDE: u32 = 1;
    const SERVER_SIDE: u32 = 2;
    let mut k = Kernel::with_ingress(AnswerCheck::OtherIngress);
    k.run_on(
        &v4_syn("203.0.113.10", "198.51.100.7", 40000, 445).frame(),
        CLIENT_SIDE,
    );
    // The scanner injects a SYN-ACK "from" the target on its own side.
    let synack = answer(
        "198.51.100.7",
        "203.0.113.10",
        40000,
        tcp_flags::SYN | tcp_flags::ACK,
    );
    k.run_on(&synack, CLIENT_SIDE);
    // The real answer comes from the server's side.
    let rst = answer(
        "198.51.100.7",
        "203.0.113.10",
        40000,
        tcp_flags::RST | tcp_flags::ACK,
    );
    k.run_on(&rst, SERVER_SIDE);
    let ev = k.events();
    let kinds: Vec<u8> = ev.iter().map(|e| e.kind).collect();
    assert_eq!(kinds, vec![EVENT_NEW_PAIR, EVENT_REFUSED]);
    assert_eq!(ev[0].ifindex, CLIENT_SIDE);
    assert_eq!(ev[1].ifindex, SERVER_SIDE);
    assert_eq!(k.stats().get(stat::ANSWERS_SAME_INGRESS), 1);

    // With `any` (one interface) the first answer wins, as before.
    let mut any = Kernel::with_ingress(AnswerCheck::Any);
    any.run_on(
        &v4_syn("203.0.113.10", "198.51.100.7", 40000, 445).frame(),
        CLIENT_SIDE,
    );
    any.run_on(&synack, CLIENT_SIDE);
    let kinds: Vec<u8> = any.events().iter().map(|e| e.kind).collect();
    assert_eq!(kinds, vec![EVENT_NEW_PAIR, EVENT_ACCEPTED]);
}

#[test]
fn a_server_reset_after_an_unconfirmed_synack_is_a_failure() {
    let mut k = Kernel::new();
    let synack = |c: &str, s: &str, p| answer(s, c, p, tcp_flags::SYN | tcp_flags::ACK);
    let rst = |c: &str, s: &str, p| answer(s, c, p, tcp_flags::RST);
    // Pair 1: SYN, (forged) SYN-ACK, then the server's RST: refused.
    k.run(&v4_syn("203.0.113.10", "198.51.100.7", 40000, 445).frame());
    k.run(&synack("203.0.113.10", "198.51.100.7", 40000));
    k.run(&rst("203.0.113.10", "198.51.100.7", 40000));
    // Pair 2: a real handshake (client ACK), then a reset: not a refusal.
    k.run(&v4_syn("203.0.113.10", "198.51.100.8", 40001, 445).frame());
    k.run(&synack("203.0.113.10", "198.51.100.8", 40001));
    k.run(
        &Segment::new(
            ip("203.0.113.10"),
            ip("198.51.100.8"),
            40001,
            445,
            tcp_flags::ACK,
        )
        .frame(),
    );
    k.run(&rst("203.0.113.10", "198.51.100.8", 40001));
    // Pair 3: a refusal, then a SYN-ACK: the outcome changed (the server
    // came up), so the acceptance is reported too.
    k.run(&v4_syn("203.0.113.10", "198.51.100.9", 40002, 445).frame());
    k.run(&rst("203.0.113.10", "198.51.100.9", 40002));
    k.run(&synack("203.0.113.10", "198.51.100.9", 40002));
    let ev = k.events();
    let got: Vec<(u8, u8, u8)> = ev
        .iter()
        .map(|e| {
            (
                e.kind,
                e.dst.addr[15],
                e.flags & smbwatch_common::EVENT_FLAG_AFTER_ACCEPT,
            )
        })
        .collect();
    let after = smbwatch_common::EVENT_FLAG_AFTER_ACCEPT;
    assert_eq!(
        got,
        vec![
            (EVENT_NEW_PAIR, 7, 0),
            (EVENT_ACCEPTED, 7, 0),
            (EVENT_REFUSED, 7, after),
            (EVENT_NEW_PAIR, 8, 0),
            (EVENT_ACCEPTED, 8, 0),
            (EVENT_CONFIRMED, 8, 0),
            (EVENT_NEW_PAIR, 9, 0),
            (EVENT_REFUSED, 9, 0),
            (EVENT_ACCEPTED, 9, 0),
        ]
    );
    assert_eq!(k.stats().get(stat::RESETS_AFTER_ACCEPT), 1);
}

#[test]
fn over_budget_events_are_shed_but_counted() {
    require_root();
    // 1,000 events per second per CPU: the burst (0.1 s) is 100 events.
    let mut k = Kernel::with(LoadOptions {
        events_per_cpu: 1_000,
        answers: AnswerCheck::Any,
        ..LoadOptions::default()
    });
    // A flood of one-shot sources, then a scanner: a test run stays on one
    // CPU, so one budget.
    for i in 0..2_000u32 {
        let src = std::net::Ipv4Addr::from(0xcb00_7100u32 + i);
        k.run(&Segment::syn(src.into(), ip("198.51.100.1"), 40000, 445).frame());
    }
    let s = k.stats();
    assert_eq!(s.get(stat::NEW_PAIRS), 2_000, "every pair is counted");
    let shed = s.get(stat::EVENTS_SHED);
    let delivered = k.events().len() as u64;
    assert!(shed >= 1_800, "most of the flood is shed: {shed}");
    assert_eq!(delivered + shed, 2_000);
    // A scanner's second and later probes are a tracked source's: they use
    // the priority class, which the one-shot flood did not touch.
    for j in 0..20u32 {
        let dst = std::net::Ipv4Addr::from(0xc633_6400u32 + 10 + j);
        k.run(&Segment::syn(ip("192.0.2.66"), dst.into(), 40000, 445).frame());
    }
    let ev = k.events();
    let scanner: Vec<&Event> = ev
        .iter()
        .filter(|e| smbwatch::dataplane::addr_to_ip(&e.src) == ip("192.0.2.66"))
        .collect();
    assert!(
        scanner.len() >= 19,
        "tracked source kept: {}",
        scanner.len()
    );
    assert!(scanner.last().unwrap().fanout >= 18);
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

/// Two destinations whose key words differ only in their top bits (address
/// bytes 7 and 15 xor 0x80) once hashed to the same pair for any key: the
/// first word was xored into the source's hash and the second added, and
/// flipping the top bit of each is the same addition. A sender could then
/// hide a pair behind a decoy sent first. Both must be new pairs, whatever
/// the key.
#[test]
fn destinations_crafted_to_collide_are_both_reported() {
    require_root();
    for key in [TEST_HASH_KEY, 1, 0x0123_4567_89ab_cdef] {
        let mut k = Kernel::with(LoadOptions {
            events_per_cpu: 0,
            answers: AnswerCheck::Any,
            hash_key: Some(key),
            ..LoadOptions::default()
        });
        let real = ip("2001:db8::7");
        let IpAddr::V6(v6) = real else { unreachable!() };
        let mut bytes = v6.octets();
        bytes[7] ^= 0x80;
        bytes[15] ^= 0x80;
        let decoy = IpAddr::from(bytes);
        assert_eq!(decoy, ip("2001:db8:0:80::87"));
        let client = ip("2001:db8::10");
        k.run(&Segment::syn(client, decoy, 40000, 445).frame());
        k.run(&Segment::syn(client, real, 40001, 445).frame());
        let ev = k.events();
        let dsts: Vec<IpAddr> = ev
            .iter()
            .filter(|e| e.kind == EVENT_NEW_PAIR)
            .map(|e| smbwatch::dataplane::addr_to_ip(&e.dst))
            .collect();
        assert_eq!(dsts, [decoy, real], "key {key:#x}: {ev:?}");
    }
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

#[test]
fn helper_programs_load_from_the_test_object_only() {
    require_root();
    let mut t = TestPrograms::load().unwrap();
    let frame = v4_syn("203.0.113.10", "198.51.100.7", 40000, 445).frame();
    let floor = t.fd(smbwatch_common::FLOOR_PROGRAM_NAME).unwrap();
    assert_eq!(testrun::run(floor, &frame, 1).unwrap().retval, XDP_PASS);
    let tx = t.fd(smbwatch_common::TX_PROGRAM_NAME).unwrap();
    assert_eq!(testrun::run(tx, &frame, 1).unwrap().retval, 3, "XDP_TX");
    let pass = testrun::PassProgram::load().unwrap();
    assert_eq!(testrun::run(pass.fd(), &frame, 1).unwrap().retval, XDP_PASS);
    // The shipped object holds the monitor alone.
    let shipped = aya::Ebpf::load(smbwatch::dataplane::EBPF_OBJECT).unwrap();
    let names: Vec<&str> = shipped.programs().map(|(name, _)| name).collect();
    assert_eq!(names, [smbwatch_common::PROGRAM_NAME]);
}

/// The program's body is inlined into its section's entry: once LLVM left
/// it a function of its own (the program had grown), every packet paid a
/// BPF-to-BPF call and its return (ARP 1.20x -> 1.46x the empty program).
#[test]
fn the_program_body_is_one_function_in_its_section() {
    use object::{Object, ObjectSection, ObjectSymbol, SymbolKind};
    let elf = object::File::parse(smbwatch::dataplane::EBPF_OBJECT).unwrap();
    let entry = elf
        .symbols()
        .find(|s| s.name() == Ok(smbwatch_common::PROGRAM_NAME))
        .expect("the program's symbol");
    let section = elf
        .section_by_index(entry.section_index().unwrap())
        .unwrap();
    assert_eq!(section.name(), Ok("xdp"));
    // The whole program, not a call stub.
    assert!(entry.size() > 4096, "entry is {} bytes", entry.size());
    // Nothing else of size in .text but the compiler's mem* builtins.
    let others: Vec<String> = elf
        .symbols()
        .filter(|s| s.kind() == SymbolKind::Text && s.size() > 256)
        .filter_map(|s| s.name().ok().map(str::to_owned))
        .filter(|n| n != smbwatch_common::PROGRAM_NAME && !n.starts_with("mem"))
        .collect();
    assert!(others.is_empty(), "functions besides the entry: {others:?}");
}

#[test]
fn ring_buffer_full_is_counted_and_passes() {
    let mut k = Kernel::new();
    // 8 MiB of 64-byte records (+8-byte headers) hold ~116k events; send
    // more new pairs than that without draining.
    let n: u32 = 150_000;
    let fd = k.dp.program_fd().unwrap();
    for i in 0..n {
        let src = std::net::Ipv4Addr::from(0xcb00_7100u32 + (i >> 8)); // 203.0.113.0 upwards
        let dst = std::net::Ipv4Addr::from(0xc633_6400u32 + (i & 0xff));
        let f = Segment::syn(src.into(), dst.into(), 40000, 445).frame();
        assert_eq!(testrun::run(fd, &f, 1).unwrap().retval, XDP_PASS);
    }
    let s = k.stats();
    assert_eq!(
        s.get(stat::NEW_PAIRS),
        u64::from(n),
        "every pair is still counted"
    );
    let full = s.get(stat::RINGBUF_FULL);
    assert!(full > 0, "ring buffer overflowed");
    let delivered = k.events().len() as u64;
    assert_eq!(
        delivered + full,
        u64::from(n),
        "every event is delivered or counted as lost"
    );
}

fn synack(client: &str, server: &str, port: u16) -> Vec<u8> {
    answer(server, client, port, tcp_flags::SYN | tcp_flags::ACK)
}

fn client_ack(client: &str, server: &str, port: u16, flags: u8) -> Vec<u8> {
    Segment::new(ip(client), ip(server), port, 445, flags).frame()
}

#[test]
fn a_pair_is_reported_again_in_each_later_epoch_with_its_activity() {
    let mut k = Kernel::with_epoch(Duration::from_secs(60));
    let (c, srv) = ("203.0.113.10", "198.51.100.7");
    let syn = v4_syn(c, srv, 40000, 445).frame();
    let at = |s: u64| Duration::from_secs(1_800_000_000 + s);
    // Epoch 1: a whole handshake, then two more connections.
    k.run_at(&syn, at(0));
    k.run_at(&synack(c, srv, 40000), at(0));
    k.run_at(&client_ack(c, srv, 40000, tcp_flags::ACK), at(0));
    for s in [10, 20] {
        k.run_at(&syn, at(s));
        k.run_at(&synack(c, srv, 40000), at(s));
        k.run_at(&client_ack(c, srv, 40000, tcp_flags::ACK), at(s));
    }
    let kinds = |k: &mut Kernel| k.events().iter().map(|e| e.kind).collect::<Vec<_>>();
    assert_eq!(
        kinds(&mut k),
        vec![EVENT_NEW_PAIR, EVENT_ACCEPTED, EVENT_CONFIRMED],
        "within an epoch a pair and its outcome are reported once"
    );
    // Epoch 2 (60 s on): reported again with what happened since, and its
    // answers again.
    k.run_at(&syn, at(61));
    k.run_at(&synack(c, srv, 40000), at(61));
    k.run_at(&client_ack(c, srv, 40000, tcp_flags::ACK), at(61));
    let ev = k.events();
    assert_eq!(
        ev.iter().map(|e| e.kind).collect::<Vec<_>>(),
        vec![EVENT_ACTIVE, EVENT_ACCEPTED, EVENT_CONFIRMED]
    );
    let active =
        smbwatch::dataplane::to_gateway_event(&ev[0], EventKind::Active, Default::default());
    let act = active.activity.expect("Active carries its activity");
    assert_eq!(act.syns, 3, "two SYNs after the first report, and this one");
    assert!(act.accepted && act.confirmed && !act.refused, "{act:?}");
    // Epoch 4: the server refuses, then comes up: both outcomes reported.
    k.run_at(&syn, at(200));
    k.run_at(
        &answer(srv, c, 40000, tcp_flags::RST | tcp_flags::ACK),
        at(200),
    );
    k.run_at(&syn, at(201));
    k.run_at(&synack(c, srv, 40000), at(201));
    let ev = k.events();
    assert_eq!(
        ev.iter().map(|e| e.kind).collect::<Vec<_>>(),
        vec![EVENT_ACTIVE, EVENT_REFUSED, EVENT_ACCEPTED]
    );
    assert_eq!(ev[0].syns, 1);
    // Epoch 5: the refusal and the acceptance are in the activity.
    k.run_at(&syn, at(240));
    let ev = k.events();
    let act = smbwatch::dataplane::to_gateway_event(&ev[0], EventKind::Active, Default::default())
        .activity
        .unwrap();
    assert!(act.accepted && act.refused && !act.confirmed, "{act:?}");
    assert_eq!(act.syns, 2);
    let s = k.stats();
    assert_eq!(s.get(stat::NEW_PAIRS), 1);
    assert_eq!(s.get(stat::ACTIVE_PAIRS), 3);
    assert_eq!(s.get(stat::CONFIRMED), 2);
}

#[test]
fn hourly_use_for_seven_days_is_reported_every_hour() {
    let mut k = Kernel::with_epoch(Duration::from_secs(3600));
    let syn = v4_syn("203.0.113.10", "198.51.100.7", 40000, 445).frame();
    let start = 1_800_000_000u64 / 3600 * 3600 + 60;
    let hours = 7 * 24;
    for h in 0..hours {
        // Twice an hour, at :01 and :31.
        for m in [0, 30] {
            k.run_at(&syn, Duration::from_secs(start + h * 3600 + m * 60));
        }
    }
    let ev = k.events();
    assert_eq!(ev.len() as u64, hours);
    assert_eq!(ev[0].kind, EVENT_NEW_PAIR);
    assert!(ev[1..]
        .iter()
        .all(|e| e.kind == EVENT_ACTIVE && e.syns == 2));
}

#[test]
fn only_the_clients_ack_confirms_a_handshake() {
    let mut k = Kernel::new();
    // A spoofed SYN: the forged client answers the SYN-ACK with RST.
    k.run(&v4_syn("203.0.113.10", "198.51.100.7", 40000, 445).frame());
    k.run(&synack("203.0.113.10", "198.51.100.7", 40000));
    k.run(&client_ack(
        "203.0.113.10",
        "198.51.100.7",
        40000,
        tcp_flags::RST,
    ));
    // An ACK with no SYN-ACK before it confirms nothing either.
    k.run(&v4_syn("203.0.113.11", "198.51.100.7", 40000, 445).frame());
    k.run(&client_ack(
        "203.0.113.11",
        "198.51.100.7",
        40000,
        tcp_flags::ACK,
    ));
    // A real client: SYN, SYN-ACK, ACK, then data (ACK|PSH) and FIN.
    k.run(&v4_syn("203.0.113.12", "198.51.100.7", 40000, 445).frame());
    k.run(&synack("203.0.113.12", "198.51.100.7", 40000));
    k.run(&client_ack(
        "203.0.113.12",
        "198.51.100.7",
        40000,
        tcp_flags::ACK,
    ));
    k.run(&client_ack(
        "203.0.113.12",
        "198.51.100.7",
        40000,
        tcp_flags::ACK | tcp_flags::PSH,
    ));
    let ev = k.events();
    let confirmed: Vec<String> = ev
        .iter()
        .filter(|e| e.kind == EVENT_CONFIRMED)
        .map(|e| addr_to_ip(&e.src).to_string())
        .collect();
    assert_eq!(confirmed, vec!["203.0.113.12".to_string()]);
    let c = ev.iter().find(|e| e.kind == EVENT_CONFIRMED).unwrap();
    assert_eq!((c.sport, c.dport), (40000, 445));
    assert_eq!(k.stats().get(stat::CONFIRMED), 1);
}

#[test]
fn live_clock_epochs_report_a_pair_again() {
    require_root();
    // The test-only short epoch: a few kernel ticks, crossed by sleeping.
    let mut k = Kernel::with(LoadOptions {
        events_per_cpu: 0,
        answers: AnswerCheck::Any,
        activity_epoch: Duration::from_millis(40),
        allow_short_epoch: true,
        ..LoadOptions::default()
    });
    let syn = v4_syn("203.0.113.10", "198.51.100.7", 40000, 445).frame();
    k.run(&syn);
    k.run(&syn);
    std::thread::sleep(Duration::from_millis(100));
    k.run(&syn);
    let kinds: Vec<u8> = k.events().iter().map(|e| e.kind).collect();
    assert_eq!(kinds, vec![EVENT_NEW_PAIR, EVENT_ACTIVE]);
}

#[test]
fn event_and_source_times_convert_to_the_wall_clock() {
    require_root();
    let tick = KernelClock::live().expect("kernel clock").tick_ns();
    // Early by the tick (a time is its tick's start), plus slack.
    let early = chrono::Duration::nanoseconds(tick as i64) + chrono::Duration::milliseconds(1);
    let late = chrono::Duration::milliseconds(1);
    // Jiffies (what ships) and the coarse helper (the benchmark's other
    // side): each with the clock that converts its timestamps.
    for clock in [ProgramClock::Jiffies, ProgramClock::CoarseHelper] {
        let mut k = Kernel::with(LoadOptions {
            events_per_cpu: 0,
            answers: AnswerCheck::Any,
            clock,
            ..LoadOptions::default()
        });
        let kc = KernelClock::for_program(clock).expect("calibrate");
        if clock == ProgramClock::Jiffies {
            let cal = kc.calibration().expect("calibrated");
            eprintln!("calibration: {cal:?}, tick {tick} ns");
            assert!(cal.error_ns < tick / 4, "{cal:?}");
        }
        let before = chrono::Utc::now();
        k.run(&v4_syn("203.0.113.10", "198.51.100.1", 40000, 445).frame());
        std::thread::sleep(Duration::from_millis(30));
        k.run(&v4_syn("203.0.113.10", "198.51.100.2", 40000, 445).frame());
        let after = chrono::Utc::now();
        let within = |t: chrono::DateTime<chrono::Utc>, what: &str| {
            assert!(
                before - early <= t && t <= after + late,
                "{clock:?}: {what} at {t}, not between {before} and {after} (tick {tick} ns)"
            );
        };
        let ev = k.events();
        assert_eq!(ev.len(), 2);
        for e in &ev {
            within(kc.to_utc(e.ts_ns), "event");
        }
        let gap = ev[1].ts_ns - ev[0].ts_ns;
        assert!(
            (30_000_000 - tick..30_000_000 + 20 * tick).contains(&gap),
            "{clock:?}: 30 ms apart in ns: {gap}"
        );
        let sources = k.dp.sources().unwrap();
        assert_eq!(sources.len(), 1, "the second pair's source is tracked");
        within(kc.to_utc(sources[0].1.first_seen_ns), "first seen");
        within(kc.to_utc(sources[0].1.last_seen_ns), "last seen");
    }
}

#[test]
fn replay_counts_and_stamps_by_capture_time() {
    // Replayed in a few ms, an hour of capture must not look like one
    // fan-out window: the repeat filter and the sources' windows follow the
    // packets' capture times, as the epochs do.
    let mut k = Kernel::with_epoch(Duration::from_secs(24 * 3600));
    let t0 = Duration::from_secs(1_700_000_000);
    let at = |secs: u64, dst: &str| {
        (
            t0 + Duration::from_secs(secs),
            v4_syn("203.0.113.10", dst, 40000, 445),
        )
    };
    for (t, syn) in [
        at(0, "198.51.100.1"),
        at(3600, "198.51.100.2"), // an hour later: one-shot again
        at(3601, "198.51.100.3"), // a second after that: a repeat
    ] {
        k.run_at(&syn.frame(), t);
    }
    k.run_at(
        &synack("203.0.113.10", "198.51.100.3", 445),
        t0 + Duration::from_secs(3602),
    );
    let ev = k.events();
    // Every event, answers too, is stamped with its packet's capture time.
    let times: Vec<u64> = ev.iter().map(|e| e.ts_ns).collect();
    let want: Vec<u64> = [0, 3600, 3601, 3602]
        .iter()
        .map(|s| (t0 + Duration::from_secs(*s)).as_nanos() as u64)
        .collect();
    assert_eq!(times, want);
    let fanouts: Vec<u16> = ev[..3].iter().map(|e| e.fanout).collect();
    assert_eq!(
        fanouts[..2],
        [0, 0],
        "an hour apart in capture time: {fanouts:?}"
    );
    assert!(fanouts[2] >= 2, "a second apart: tracked: {fanouts:?}");
    let sources = k.dp.sources().unwrap();
    assert_eq!(sources.len(), 1);
    let first = Duration::from_nanos(sources[0].1.first_seen_ns);
    assert_eq!(first, t0 + Duration::from_secs(3601), "capture time");
}

#[test]
fn activity_epochs_out_of_range_are_refused() {
    require_root();
    for secs in [59, 86_401] {
        let err = Dataplane::load(&LoadOptions {
            activity_epoch: Duration::from_secs(secs),
            ..LoadOptions::default()
        })
        .err()
        .expect("refused");
        assert!(err.to_string().contains("activity epoch"), "{err}");
    }
}
