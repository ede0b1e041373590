//! The real XDP program on crafted frames, through BPF_PROG_TEST_RUN:
//! pairs, answers, the event budget and ring, the object's shape. The
//! header walks are in `kernel_walk.rs`, epochs and clocks in
//! `kernel_epochs.rs`; the harness is `integration_tests::kernel`.

use std::net::IpAddr;

use integration_tests::kernel::*;
use integration_tests::require_root;
use smbwatch::{
    dataplane::{test_programs::TestPrograms, testrun, AnswerCheck, LoadOptions},
    packet::{tcp_flags, Segment},
};
use smbwatch_common::{stat, Event};

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
