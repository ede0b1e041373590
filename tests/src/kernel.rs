//! The real XDP program loaded for crafted frames through
//! BPF_PROG_TEST_RUN: the harness of the `kernel*` tests (`Kernel`) and
//! the frames they share.

use std::net::IpAddr;
use std::time::Duration;

use aya::maps::{MapData, RingBuf};
use smbwatch::{
    dataplane::{drain, testrun, AnswerCheck, Dataplane, LoadOptions, Stats},
    packet::{tcp_flags, Segment},
};
use smbwatch_common::{Event, EventKind, ReplayMeta};

use crate::require_root;

/// `EventKind`s as the record's byte.
pub const EVENT_NEW_PAIR: u8 = EventKind::NewPair as u8;
pub const EVENT_ACCEPTED: u8 = EventKind::Accepted as u8;
pub const EVENT_REFUSED: u8 = EventKind::Refused as u8;
pub const EVENT_ACTIVE: u8 = EventKind::Active as u8;
pub const EVENT_CONFIRMED: u8 = EventKind::Confirmed as u8;
pub const EVENT_UNPARSED: u8 = EventKind::Unparsed as u8;

/// What every path of the program must return.
pub const XDP_PASS: u32 = 2;

/// A pinned hash key: the sketches' estimates depend on which destination
/// hashes collide, so a random key per load made them vary between runs.
pub const TEST_HASH_KEY: u64 = 0x5eed_0f5b_4a7c_1e55;

/// The program loaded for test runs, with its event ring taken.
pub struct Kernel {
    /// The loaded program and its maps.
    pub dp: Dataplane,
    /// Its event ring.
    pub ring: RingBuf<MapData>,
}

// Not `Default`: loading needs root and a kernel.
#[allow(clippy::new_without_default)]
impl Kernel {
    /// The program with no event budget and answers from any ingress: test
    /// runs all come in on loopback. Budget and ingress have their own tests.
    pub fn new() -> Self {
        require_root();
        Self::with(LoadOptions {
            events_per_cpu: 0,
            answers: AnswerCheck::Any,
            ..LoadOptions::default()
        })
    }

    /// The program as replay loads it: the ingress comes with each frame.
    pub fn with_ingress(answers: AnswerCheck) -> Self {
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
    pub fn with_epoch(epoch: Duration) -> Self {
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
    pub fn run_at(&self, frame: &[u8], at: Duration) {
        run_frame_at(&self.dp, frame, at);
    }

    /// Runs `frame` as if it came in on `ingress`.
    pub fn run_on(&self, frame: &[u8], ingress: u32) {
        let r = testrun::run_with_ingress(self.dp.program_fd().unwrap(), frame, ingress)
            .expect("test run");
        assert_eq!(r.retval, XDP_PASS, "every path must return XDP_PASS");
    }

    /// The program loaded with `opts` (the test hash key unless one is set).
    pub fn with(mut opts: LoadOptions) -> Self {
        opts.hash_key.get_or_insert(TEST_HASH_KEY);
        let mut dp = Dataplane::load(&opts).expect("load XDP program");
        let ring = dp.take_events().unwrap();
        Self { dp, ring }
    }

    /// Runs `frame` on interface 1.
    pub fn run(&self, frame: &[u8]) {
        run_frame(&self.dp, frame);
    }

    /// The events sent since the last call (every one well formed).
    pub fn events(&mut self) -> Vec<Event> {
        let mut out = Vec::new();
        let n = drain(&mut self.ring, |ev, _| out.push(*ev));
        assert_eq!(n.malformed, 0, "well-formed events only");
        out
    }

    /// The program's counters.
    pub fn stats(&self) -> Stats {
        self.dp.stats().unwrap()
    }
}

/// Runs `frame` on interface 1 through `dp`'s program, which must pass it.
pub fn run_frame(dp: &Dataplane, frame: &[u8]) {
    let r = testrun::run(dp.program_fd().unwrap(), frame, 1).expect("test run");
    assert_eq!(r.retval, XDP_PASS, "every path must return XDP_PASS");
}

/// Runs `frame` through a replay-loaded program as if captured `at` after
/// the Unix epoch; it must pass it.
pub fn run_frame_at(dp: &Dataplane, frame: &[u8], at: Duration) {
    let meta = ReplayMeta {
        ingress: 1,
        _pad: 0,
        ts_ns: at.as_nanos() as u64,
    };
    let r = testrun::run_with_meta(dp.program_fd().unwrap(), frame, &meta).expect("test run");
    assert_eq!(r.retval, XDP_PASS, "every path must return XDP_PASS");
}

/// An address from a literal.
pub fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// A bare SYN.
pub fn v4_syn(src: &str, dst: &str, sport: u16, dport: u16) -> Segment {
    Segment::syn(ip(src), ip(dst), sport, dport)
}

/// A segment with `flags` from the server's port 445 back to the client.
pub fn answer(server: &str, client: &str, sport: u16, flags: u8) -> Vec<u8> {
    Segment::new(ip(server), ip(client), 445, sport, flags).frame()
}

/// `frame` as sent by `mac` (the Ethernet source address, bytes 6..12).
pub fn from_mac(mut frame: Vec<u8>, mac: [u8; 6]) -> Vec<u8> {
    frame[6..12].copy_from_slice(&mac);
    frame
}

/// The server's SYN-ACK.
pub fn synack(client: &str, server: &str, port: u16) -> Vec<u8> {
    answer(server, client, port, tcp_flags::SYN | tcp_flags::ACK)
}

/// A segment with `flags` from the client to the server's 445.
pub fn client_ack(client: &str, server: &str, port: u16, flags: u8) -> Vec<u8> {
    Segment::new(ip(client), ip(server), port, 445, flags).frame()
}
