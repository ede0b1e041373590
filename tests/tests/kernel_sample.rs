//! The kernel's SMB payload sampling, through BPF_PROG_TEST_RUN on the real
//! program: records of both directions, the segment and byte caps, the flow
//! table's reuse, and what the budgets shed.

use std::{net::IpAddr, time::Duration};

use aya::maps::{MapData, RingBuf};
use integration_tests::kernel::{ip, run_frame, run_frame_at, TEST_HASH_KEY};
use integration_tests::require_root;
use smbwatch::{
    dataplane::{
        drain_samples, AnswerCheck, Dataplane, LoadOptions, SampleDirection, SampleOptions, Stats,
    },
    packet::{tcp_flags, Segment},
};
use smbwatch_common::stat;

const CLIENT: &str = "203.0.113.10";
const SERVER: &str = "198.51.100.7";
const CLIENT_ISN: u32 = 0x1000_0000;
const SERVER_ISN: u32 = 0x5000_0000;

/// What a test keeps of a record.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Rec {
    client: std::net::SocketAddr,
    server: std::net::SocketAddr,
    direction: SampleDirection,
    seq: u32,
    ack: u32,
    wire_len: u32,
    data: Vec<u8>,
    vlan: Option<u16>,
    syn: bool,
    fin_or_rst: bool,
    src_mac: [u8; 6],
    ts_ns: u64,
}

struct Kernel {
    dp: Dataplane,
    samples: RingBuf<MapData>,
}

impl Kernel {
    fn with(sampling: SampleOptions, replay: bool) -> Self {
        require_root();
        let mut dp = Dataplane::load(&LoadOptions {
            events_per_cpu: 0,
            answers: AnswerCheck::Any,
            replay,
            hash_key: Some(TEST_HASH_KEY),
            sampling,
            ..LoadOptions::default()
        })
        .expect("load XDP program");
        let samples = dp.take_samples().unwrap();
        Self { dp, samples }
    }

    fn new() -> Self {
        Self::with(SampleOptions::default(), false)
    }

    fn run(&self, frame: &[u8]) {
        run_frame(&self.dp, frame);
    }

    /// Replay-loaded programs: `frame` as captured `at` after the epoch.
    fn run_at(&self, frame: &[u8], at: Duration) {
        run_frame_at(&self.dp, frame, at);
    }

    fn records(&mut self) -> Vec<Rec> {
        let mut out = Vec::new();
        let n = drain_samples(&mut self.samples, 0, |s| {
            out.push(Rec {
                client: s.client,
                server: s.server,
                direction: s.direction,
                seq: s.seq,
                ack: s.ack,
                wire_len: s.wire_len,
                data: s.data.to_vec(),
                vlan: s.vlan,
                syn: s.syn,
                fin_or_rst: s.fin_or_rst,
                src_mac: s.src_mac,
                ts_ns: s.ts_ns,
            })
        });
        assert_eq!(n.malformed, 0, "every record decodes");
        out
    }

    fn stats(&self) -> Stats {
        self.dp.stats().unwrap()
    }
}

/// Payload bytes that say where they are: byte i of segment `n` is `n * 7 + i`.
fn payload(n: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| n.wrapping_mul(7).wrapping_add(i as u8))
        .collect()
}

/// A connection's frames, each side numbering its bytes from its ISN + 1.
struct Conn {
    client: IpAddr,
    server: IpAddr,
    cport: u16,
    to_server: u32,
    to_client: u32,
}

impl Conn {
    fn new(cport: u16) -> Self {
        Self::between(CLIENT, SERVER, cport)
    }

    fn between(client: &str, server: &str, cport: u16) -> Self {
        Self {
            client: ip(client),
            server: ip(server),
            cport,
            to_server: CLIENT_ISN + 1,
            to_client: SERVER_ISN + 1,
        }
    }

    fn syn(&self) -> Vec<u8> {
        let mut s = Segment::syn(self.client, self.server, self.cport, 445);
        s.seq = CLIENT_ISN;
        s.frame()
    }

    fn synack(&self) -> Vec<u8> {
        let mut s = Segment::new(
            self.server,
            self.client,
            445,
            self.cport,
            tcp_flags::SYN | tcp_flags::ACK,
        );
        s.seq = SERVER_ISN;
        s.ack = CLIENT_ISN + 1;
        s.frame()
    }

    /// A segment carrying `data` (ACK|PSH, plus `extra` flags).
    fn data(&mut self, to_server: bool, data: Vec<u8>, extra: u8) -> Segment {
        let flags = tcp_flags::ACK | tcp_flags::PSH | extra;
        let mut s = if to_server {
            Segment::new(self.client, self.server, self.cport, 445, flags)
        } else {
            Segment::new(self.server, self.client, 445, self.cport, flags)
        };
        let next = if to_server {
            &mut self.to_server
        } else {
            &mut self.to_client
        };
        s.seq = *next;
        *next = next.wrapping_add(data.len() as u32);
        s.payload = data;
        s
    }

    fn handshake(&self, k: &Kernel) {
        k.run(&self.syn());
        k.run(&self.synack());
        let mut ack = Segment::new(self.client, self.server, self.cport, 445, tcp_flags::ACK);
        ack.seq = CLIENT_ISN + 1;
        k.run(&ack.frame());
    }
}

#[test]
fn both_directions_are_sampled_with_their_sequence_numbers() {
    let mut k = Kernel::new();
    let mut c = Conn::new(40000);
    c.handshake(&k);
    k.run(&c.data(true, payload(1, 100), 0).frame());
    k.run(&c.data(false, payload(2, 2000), 0).frame());
    let r = k.records();
    assert_eq!(r.len(), 2, "one segment each way: {r:?}");
    let client = "203.0.113.10:40000".parse().unwrap();
    let server = "198.51.100.7:445".parse().unwrap();
    for rec in &r {
        assert_eq!((rec.client, rec.server), (client, server));
        assert_ne!(rec.ts_ns, 0);
        assert!(!rec.syn, "the SYN-ACK claims the flow, it sends no record");
    }
    assert_eq!(r[0].direction, SampleDirection::ToServer);
    assert_eq!((r[0].seq, r[0].wire_len), (CLIENT_ISN + 1, 100));
    assert_eq!(r[0].data, payload(1, 100));
    assert_eq!(r[0].src_mac, [0x02, 0, 0, 0, 0, 0x01]);
    // Longer than the default 1 KiB: the first 1,024 bytes, the wire length.
    assert_eq!(r[1].direction, SampleDirection::ToClient);
    assert_eq!((r[1].seq, r[1].wire_len), (SERVER_ISN + 1, 2000));
    assert_eq!(r[1].data, payload(2, 1024));
    let st = k.stats();
    assert_eq!(st.get(stat::SAMPLES), 2);
    assert_eq!(st.get(stat::SAMPLE_BYTES), 1124);
    assert_eq!(st.get(stat::SAMPLE_FLOWS), 1);
    // The contact events are unchanged by sampling.
    assert_eq!(st.get(stat::NEW_PAIRS), 1);
    assert_eq!(st.get(stat::CONFIRMED), 1);
}

#[test]
fn segment_and_byte_caps_hold_per_direction() {
    let mut k = Kernel::with(
        SampleOptions {
            segments: 3,
            bytes: 10,
            ..SampleOptions::default()
        },
        false,
    );
    let mut c = Conn::new(40001);
    c.handshake(&k);
    for n in 0..6 {
        k.run(&c.data(true, payload(n, 50), 0).frame());
        k.run(&c.data(false, payload(n + 100, 5), 0).frame());
    }
    let r = k.records();
    let to_server: Vec<_> = r
        .iter()
        .filter(|r| r.direction == SampleDirection::ToServer)
        .collect();
    let to_client: Vec<_> = r
        .iter()
        .filter(|r| r.direction == SampleDirection::ToClient && !r.syn)
        .collect();
    assert_eq!(to_server.len(), 3, "three segments each way: {r:?}");
    assert_eq!(to_client.len(), 3);
    for (n, rec) in to_server.iter().enumerate() {
        assert_eq!(rec.data, payload(n as u8, 10), "the first 10 bytes");
        assert_eq!(rec.wire_len, 50);
        assert_eq!(rec.seq, CLIENT_ISN + 1 + 50 * n as u32);
    }
    for (n, rec) in to_client.iter().enumerate() {
        assert_eq!(
            rec.data,
            payload(n as u8 + 100, 5),
            "shorter than the cap: whole"
        );
    }
    // A FIN past the cap is not sampled either.
    k.run(&c.data(true, vec![], tcp_flags::FIN).frame());
    assert!(k.records().is_empty());
}

#[test]
fn a_cap_of_one_segment_holds_from_the_claim() {
    // The data segment that claims the slot fills its direction at once;
    // the other direction still has its segment.
    let mut k = Kernel::with(
        SampleOptions {
            segments: 1,
            ..SampleOptions::default()
        },
        false,
    );
    let mut c = Conn::new(40003);
    for n in 0..3 {
        k.run(&c.data(true, payload(n, 20), 0).frame());
    }
    k.run(&c.data(false, payload(9, 20), 0).frame());
    k.run(&c.data(false, payload(10, 20), 0).frame());
    let r = k.records();
    let dirs: Vec<_> = r.iter().map(|r| (r.direction, r.data[0])).collect();
    assert_eq!(
        dirs,
        [
            (SampleDirection::ToServer, payload(0, 1)[0]),
            (SampleDirection::ToClient, payload(9, 1)[0])
        ]
    );
    assert_eq!(k.stats().get(stat::SAMPLE_FLOWS), 1);
}

#[test]
fn sampling_off_sends_nothing() {
    let mut k = Kernel::with(
        SampleOptions {
            segments: 0,
            ..SampleOptions::default()
        },
        false,
    );
    let mut c = Conn::new(40002);
    c.handshake(&k);
    k.run(&c.data(true, payload(1, 100), 0).frame());
    assert!(k.records().is_empty());
    assert_eq!(k.stats().get(stat::SAMPLE_FLOWS), 0);
}

#[test]
fn the_flow_table_is_reused_after_close_and_when_idle() {
    // One slot: every connection collides.
    let mut k = Kernel::with(
        SampleOptions {
            flows: 1,
            ..SampleOptions::default()
        },
        true,
    );
    let t = |ms: u64| Duration::from_secs(1_700_000_000) + Duration::from_millis(ms);
    let mut a = Conn::new(41000);
    let mut b = Conn::new(41001);
    k.run_at(&a.synack(), t(0));
    k.run_at(&a.data(true, payload(1, 20), 0).frame(), t(1));
    // B's SYN-ACK while A is sampled: B is not.
    k.run_at(&b.synack(), t(2));
    k.run_at(&b.data(true, payload(2, 20), 0).frame(), t(3));
    assert_eq!(k.stats().get(stat::SAMPLE_FLOWS_BUSY), 1);
    let r = k.records();
    assert!(r.iter().all(|r| r.client.port() == 41000), "{r:?}");
    assert_eq!(
        r.len(),
        1,
        "A's segment (its SYN-ACK claimed, sent nothing)"
    );
    // A closes (its FIN is sampled and says so); B's retransmitted SYN-ACK
    // then takes the slot.
    k.run_at(&a.data(true, vec![], tcp_flags::FIN).frame(), t(4));
    let r = k.records();
    assert_eq!(r.len(), 1);
    assert!(r[0].fin_or_rst);
    k.run_at(&b.synack(), t(5));
    k.run_at(&b.data(true, payload(3, 20), 0).frame(), t(6));
    let r = k.records();
    assert_eq!(r.len(), 1, "{r:?}");
    assert!(r.iter().all(|r| r.client.port() == 41001));
    // A's later data does not take the slot back while B is fresh...
    k.run_at(&a.data(true, payload(4, 20), 0).frame(), t(7));
    assert!(k.records().is_empty());
    // ...but a connection seen only mid-stream (no SYN-ACK) takes it once B
    // has been idle past the stale time (about 17 s).
    let mut c = Conn::new(41002);
    k.run_at(&c.data(false, payload(5, 30), 0).frame(), t(7_000));
    assert!(k.records().is_empty(), "B idle 7 s: still its slot");
    k.run_at(&c.data(false, payload(6, 30), 0).frame(), t(30_000));
    let r = k.records();
    assert_eq!(r.len(), 1, "{r:?}");
    assert_eq!(r[0].client.port(), 41002);
    assert_eq!(r[0].data, payload(6, 30));
    assert_eq!(k.stats().get(stat::SAMPLE_FLOWS), 3, "A, B, then C");
}

#[test]
fn a_connection_without_its_handshake_is_sampled_from_its_first_data_segment() {
    let mut k = Kernel::new();
    let mut c = Conn::new(42000);
    // The pure ACK carries nothing: not sampled, no slot.
    let mut ack = Segment::new(c.client, c.server, c.cport, 445, tcp_flags::ACK);
    ack.seq = CLIENT_ISN + 1;
    k.run(&ack.frame());
    assert_eq!(k.stats().get(stat::SAMPLE_FLOWS), 0);
    k.run(&c.data(false, payload(9, 64), 0).frame());
    k.run(&c.data(true, payload(8, 64), 0).frame());
    let r = k.records();
    assert_eq!(r.len(), 2);
    assert_eq!(r[0].direction, SampleDirection::ToClient);
    assert_eq!(r[1].direction, SampleDirection::ToServer);
    assert_eq!(k.stats().get(stat::SAMPLE_FLOWS), 1);
}

#[test]
fn ipv6_and_vlan_segments_are_sampled() {
    let mut k = Kernel::new();
    let mut c = Conn::between("2001:db8::10", "2001:db8::445", 43000);
    let mut s = c.data(true, payload(3, 40), 0);
    s.vlans = vec![42];
    k.run(&s.frame());
    let r = k.records();
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].client, "[2001:db8::10]:43000".parse().unwrap());
    assert_eq!(r[0].vlan, Some(42));
    assert_eq!(r[0].data, payload(3, 40));
}

#[test]
fn a_source_past_its_rate_is_shed_and_counted() {
    let mut k = Kernel::with(
        SampleOptions {
            source_flows: 2,
            ..SampleOptions::default()
        },
        false,
    );
    for port in 44000..44005 {
        let c = Conn::new(port);
        k.run(&c.synack());
    }
    let st = k.stats();
    assert_eq!(st.get(stat::SAMPLE_FLOWS), 2, "two connections a window");
    assert_eq!(st.get(stat::SAMPLE_FLOWS_SHED), 3);
    assert!(
        k.records().is_empty(),
        "a SYN-ACK claims, it sends no record"
    );
    // Another source is not held back by this one.
    k.run(&Conn::between("203.0.113.11", SERVER, 44000).synack());
    assert_eq!(k.stats().get(stat::SAMPLE_FLOWS), 3);
}

#[test]
fn past_the_byte_budget_records_are_shed_and_counted() {
    // 4,000 ring bytes a second: the quarter-second burst holds about
    // 1,000 bytes, three records of 336.
    let mut k = Kernel::with(
        SampleOptions {
            bytes_per_cpu: 4000,
            ..SampleOptions::default()
        },
        false,
    );
    let mut c = Conn::new(45000);
    for n in 0..10 {
        k.run(&c.data(true, payload(n, 100), 0).frame());
    }
    let sent = k.records().len() as u64;
    let st = k.stats();
    assert_eq!(st.get(stat::SAMPLES), sent);
    assert_eq!(
        sent + st.get(stat::SAMPLES_SHED),
        10,
        "every segment accounted"
    );
    assert!((1..=4).contains(&sent), "the burst, not more: {sent}");
}

#[test]
fn a_full_sample_ring_is_counted_and_passes() {
    // One page of ring: a 4 KiB record never fits, a small one does.
    let mut k = Kernel::with(
        SampleOptions {
            bytes: 4096,
            ring_bytes: 4096,
            ..SampleOptions::default()
        },
        false,
    );
    let mut c = Conn::new(46000);
    k.run(&c.data(true, payload(1, 3000), 0).frame());
    k.run(&c.data(true, payload(2, 100), 0).frame());
    assert_eq!(k.stats().get(stat::SAMPLE_RING_FULL), 1);
    let r = k.records();
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].data, payload(2, 100));
}

#[test]
fn every_port_slot_in_use_still_loads_and_samples() {
    // Four monitored ports is the most the program holds: the verifier
    // walks the most branches then.
    require_root();
    let mut dp = Dataplane::load(&LoadOptions {
        ports: vec![445, 139, 8445, 1445],
        events_per_cpu: 0,
        answers: AnswerCheck::Any,
        ..LoadOptions::default()
    })
    .expect("load with four ports");
    let samples = dp.take_samples().unwrap();
    let mut k = Kernel { dp, samples };
    let mut s = Segment::new(ip(CLIENT), ip(SERVER), 40000, 1445, tcp_flags::ACK);
    s.payload = payload(1, 10);
    k.run(&s.frame());
    let r = k.records();
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].server.port(), 1445);
}

#[test]
fn a_segment_larger_than_a_page_is_sampled_up_to_the_cap() {
    // Captures of hosts with segmentation offload hold such segments.
    let mut k = Kernel::with(
        SampleOptions {
            bytes: 4096,
            ..SampleOptions::default()
        },
        false,
    );
    let mut c = Conn::new(47000);
    k.run(&c.data(true, payload(4, 11_892), 0).frame());
    let r = k.records();
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].wire_len, 11_892);
    assert_eq!(r[0].data.len(), 4096, "{} bytes", r[0].data.len());
    assert_eq!(r[0].data, payload(4, 4096));
}

#[test]
fn replay_samples_segments_larger_than_a_page() {
    // Replay hands frames with XDP metadata in front.
    let mut k = Kernel::with(
        SampleOptions {
            bytes: 4096,
            ..SampleOptions::default()
        },
        true,
    );
    let mut c = Conn::new(47001);
    for len in [1901, 3287, 11_892] {
        k.run_at(
            &c.data(true, payload(5, len), 0).frame(),
            Duration::from_secs(1_700_000_000),
        );
    }
    let r = k.records();
    let lens: Vec<(u32, usize)> = r.iter().map(|r| (r.wire_len, r.data.len())).collect();
    assert_eq!(
        lens,
        [(1901, 1901), (3287, 3287), (11_892, 4096)],
        "{:?}",
        k.stats()
    );
}
