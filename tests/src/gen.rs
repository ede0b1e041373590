//! Synthetic SMB traffic into a veth inside lab namespaces.
//!
//! Frames are built with [`smbwatch::packet::Segment`] and pushed with the
//! kernel's xdp-trafficgen method: `BPF_PROG_TEST_RUN` with
//! `BPF_F_TEST_XDP_LIVE_FRAMES` runs an XDP program that returns `XDP_TX`
//! "as if received" on one end of a veth pair, so every run really
//! transmits the frame into the other end. Each call sends one frame
//! `repeat` times (a burst); a plan is a list of such calls.
//!
//! Some kernels and sandboxes refuse live frames (EPERM: the capability
//! bounding set lacks CAP_SYS_RESOURCE). The generator then falls back to an
//! AF_PACKET socket of its own (`sendmmsg`, [`PacketSocket`]), which puts
//! the same frames on the same veth through the ordinary transmit path, and
//! says so: every [`Sent`] names the [`Method`] that sent it. Setting
//! [`METHOD_ENV`] forces a method, so the fallback is exercised on machines
//! that allow live frames too.
//!
//! The receiving end must have an XDP program attached (veth only takes XDP
//! frames then): smbwatch's, or the empty program for baselines
//! ([`attach_xdp`]).
//!
//! Addresses: sources 10.0.0.0/8, destinations 198.18.0.0/15 (RFC 2544
//! benchmarking), IPv6 in 2001:db8::/32. The frames exist only inside the
//! lab's namespaces: the generator's namespace has nothing but its veth, and
//! the receiver has no route anywhere.

use std::{
    collections::{BTreeMap, HashSet},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::fd::{AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd, RawFd},
    str::FromStr,
    time::{Duration, Instant},
};

use std::sync::OnceLock;

use anyhow::{bail, Context as _, Result};
use smbwatch::{
    dataplane::{test_programs::TestPrograms, testrun, Stats},
    packet::{tcp_flags, Segment},
};
use smbwatch_common::{stat, FLOOR_PROGRAM_NAME, TX_PROGRAM_NAME};

use crate::netns::{run, unique_tag, veth, NetNs};

/// The monitored port the generator targets.
pub const SMB_PORT: u16 = 445;
/// VLAN id of tagged frames.
pub const VLAN_ID: u16 = 100;
/// MAC address every generated frame is sent to (see [`Segment::frame`]);
/// the receiving veth takes it, so the stack sees the frames as its own.
pub const RX_MAC: &str = "02:00:00:00:00:02";

/// A kind of generated frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// IPv4 bare SYN to 445, source `i` to destination `j`.
    Syn,
    /// IPv4 SYN-ACK from 445 answering a pair of the `syn` stream.
    SynAck,
    /// IPv4 RST-ACK from 445 answering a pair of the `syn` stream.
    Rst,
    /// IPv4 TCP ACK to port 443 (not SMB).
    Background,
    /// IPv6 bare SYN to 445 (its own pairs, in 2001:db8::/32).
    Ipv6,
    /// 802.1Q-tagged (VLAN 100) IPv4 bare SYN to 445 (its own pairs: sources from 10.128.0.1).
    Vlan,
}

impl Kind {
    /// All kinds, in the order of the `--mix` documentation.
    pub const ALL: [Kind; 6] = [
        Kind::Syn,
        Kind::SynAck,
        Kind::Rst,
        Kind::Background,
        Kind::Ipv6,
        Kind::Vlan,
    ];

    /// The name used in `--mix`.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Syn => "syn",
            Kind::SynAck => "synack",
            Kind::Rst => "rst",
            Kind::Background => "background",
            Kind::Ipv6 => "ipv6",
            Kind::Vlan => "vlan",
        }
    }
}

impl FromStr for Kind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Kind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| {
                format!(
                    "unknown traffic kind {s:?}; kinds: {}",
                    Kind::ALL.map(Kind::name).join(", ")
                )
            })
    }
}

/// Weighted kinds: `syn,synack` (weight 1 each) or `syn=8,background=2`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mix(pub Vec<(Kind, u32)>);

impl FromStr for Mix {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let mut out: Vec<(Kind, u32)> = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, weight) = match part.split_once('=') {
                Some((n, w)) => (
                    n,
                    w.parse::<u32>().map_err(|_| {
                        format!("weight of {n:?} must be a whole number, got {w:?}")
                    })?,
                ),
                None => (part, 1),
            };
            let kind: Kind = name.parse()?;
            if out.iter().any(|(k, _)| *k == kind) {
                return Err(format!("{name:?} appears twice in the mix"));
            }
            if weight > 0 {
                out.push((kind, weight));
            }
        }
        if out.is_empty() {
            return Err("the mix is empty: name at least one kind (syn, synack, rst, background, ipv6, vlan)".into());
        }
        Ok(Mix(out))
    }
}

/// What to generate.
#[derive(Clone, Debug)]
pub struct Spec {
    /// Distinct sources (clients) per stream.
    pub sources: u32,
    /// Number of the first source (so a later plan can continue with new
    /// sources where an earlier one stopped).
    pub first_source: u32,
    /// Distinct destinations (servers) per stream.
    pub destinations: u32,
    /// Kinds and weights; frames interleave in weight order.
    pub mix: Mix,
    /// Total packets.
    pub count: u64,
    /// Packets per call: each distinct frame is sent this many times in a
    /// row (for SYNs: the same pair's retransmissions).
    pub burst: u32,
}

/// IPv4 source `i` of the untagged streams (10.0.0.1 onwards).
pub fn src_v4(i: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0x0a00_0001u32.wrapping_add(i)))
}

/// IPv4 source `i` of the VLAN stream (10.128.0.1 onwards).
pub fn src_vlan(i: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0x0a80_0001u32.wrapping_add(i)))
}

/// IPv4 destination `j` (198.18.0.1 onwards).
pub fn dst_v4(j: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0xc612_0001u32.wrapping_add(j)))
}

/// IPv6 source `i` (2001:db8:a::1 onwards).
pub fn src_v6(i: u32) -> IpAddr {
    IpAddr::V6(Ipv6Addr::from(
        0x2001_0db8_000a_0000_0000_0000_0000_0001u128 + u128::from(i),
    ))
}

/// IPv6 destination `j` (2001:db8:b::1 onwards).
pub fn dst_v6(j: u32) -> IpAddr {
    IpAddr::V6(Ipv6Addr::from(
        0x2001_0db8_000b_0000_0000_0000_0000_0001u128 + u128::from(j),
    ))
}

/// Client port of pair `p` (varies so the frames differ beyond addresses).
fn sport(p: u64) -> u16 {
    32768 + (p % 28000) as u16
}

/// The counters the data plane must show after the plan was received, as
/// long as its tables never evicted (sources and pairs under their caps).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Expected {
    /// Frames.
    pub packets: u64,
    /// IPv4 frames.
    pub ipv4: u64,
    /// IPv6 frames.
    pub ipv6: u64,
    /// VLAN-tagged frames.
    pub vlan: u64,
    /// Bare SYNs to 445.
    pub monitored_syns: u64,
    /// Distinct (source, destination) pairs among them.
    pub new_pairs: u64,
    /// Answers to a pair SYN'd earlier and not yet answered.
    pub responses: u64,
}

impl Expected {
    /// The same counters from a data plane's [`Stats`].
    pub fn from_stats(s: &Stats) -> Self {
        Self {
            packets: s.get(stat::PACKETS),
            ipv4: s.get(stat::IPV4),
            ipv6: s.get(stat::IPV6),
            vlan: s.get(stat::VLAN),
            monitored_syns: s.get(stat::MONITORED_SYNS),
            new_pairs: s.get(stat::NEW_PAIRS),
            responses: s.get(stat::RESPONSES),
        }
    }
}

/// Frames to send, each with its repeat count, and what they should count.
#[derive(Clone, Debug, Default)]
pub struct Plan {
    bytes: Vec<u8>,
    /// (offset, length, repeat) per call.
    calls: Vec<(u32, u16, u32)>,
    /// What the receiving data plane should count.
    pub expected: Expected,
    /// Packets per kind.
    pub per_kind: BTreeMap<Kind, u64>,
}

impl Plan {
    /// Builds the frames of `spec`. Streams are independent: each kind walks
    /// its own (source, destination) sequence, sources fastest, so `syn`
    /// frames `0..N·M` are all distinct pairs and every source reaches every
    /// destination; answers walk the `syn` stream's pairs in the same order.
    pub fn build(spec: &Spec) -> Result<Self> {
        if spec.sources == 0 || spec.destinations == 0 || spec.burst == 0 {
            bail!("--sources, --destinations and --burst must be at least 1");
        }
        let pairs = u64::from(spec.sources) * u64::from(spec.destinations);
        let pattern: Vec<Kind> = spec
            .mix
            .0
            .iter()
            .flat_map(|(k, w)| std::iter::repeat_n(*k, *w as usize))
            .collect();
        let mut plan = Plan::default();
        let mut cursor: BTreeMap<Kind, u64> = BTreeMap::new();
        // Answers share one cursor over the syn stream's pairs.
        let mut answer_cursor = 0u64;
        let mut syn_seen: HashSet<u64> = HashSet::new();
        let mut v6_seen: HashSet<u64> = HashSet::new();
        let mut vlan_seen: HashSet<u64> = HashSet::new();
        let mut answered: HashSet<u64> = HashSet::new();
        let e = &mut plan.expected;
        let mut left = spec.count;
        let mut n = 0usize;
        while left > 0 {
            let kind = pattern[n % pattern.len()];
            n += 1;
            let repeat = u64::from(spec.burst).min(left) as u32;
            left -= u64::from(repeat);
            let r = u64::from(repeat);
            let c = if matches!(kind, Kind::SynAck | Kind::Rst) {
                &mut answer_cursor
            } else {
                cursor.entry(kind).or_default()
            };
            let p = *c % pairs;
            *c += 1;
            let (i, j) = (
                spec.first_source + (p % u64::from(spec.sources)) as u32,
                (p / u64::from(spec.sources)) as u32,
            );
            let seg = match kind {
                Kind::Syn => {
                    e.ipv4 += r;
                    e.monitored_syns += r;
                    if syn_seen.insert(p) {
                        e.new_pairs += 1;
                    }
                    Segment::syn(src_v4(i), dst_v4(j), sport(p), SMB_PORT)
                }
                Kind::SynAck | Kind::Rst => {
                    e.ipv4 += r;
                    if syn_seen.contains(&p) && answered.insert(p) {
                        e.responses += 1;
                    }
                    let flags = if kind == Kind::SynAck {
                        tcp_flags::SYN | tcp_flags::ACK
                    } else {
                        tcp_flags::RST | tcp_flags::ACK
                    };
                    Segment::new(dst_v4(j), src_v4(i), SMB_PORT, sport(p), flags)
                }
                Kind::Background => {
                    e.ipv4 += r;
                    Segment::new(
                        src_v4(i),
                        dst_v4(j),
                        sport(p),
                        443,
                        tcp_flags::ACK | tcp_flags::PSH,
                    )
                }
                Kind::Ipv6 => {
                    e.ipv6 += r;
                    e.monitored_syns += r;
                    if v6_seen.insert(p) {
                        e.new_pairs += 1;
                    }
                    Segment::syn(src_v6(i), dst_v6(j), sport(p), SMB_PORT)
                }
                Kind::Vlan => {
                    e.ipv4 += r;
                    e.vlan += r;
                    e.monitored_syns += r;
                    if vlan_seen.insert(p) {
                        e.new_pairs += 1;
                    }
                    let mut s = Segment::syn(src_vlan(i), dst_v4(j), sport(p), SMB_PORT);
                    s.vlans = vec![VLAN_ID];
                    s
                }
            };
            e.packets += r;
            *plan.per_kind.entry(kind).or_default() += r;
            let frame = seg.frame();
            plan.calls
                .push((plan.bytes.len() as u32, frame.len() as u16, repeat));
            plan.bytes.extend_from_slice(&frame);
        }
        Ok(plan)
    }

    /// A plan of these frames, each sent once (hand-made traffic such as a
    /// scanner's probes; counts are not predicted).
    pub fn from_frames(frames: &[Vec<u8>]) -> Self {
        let mut p = Self::default();
        for f in frames {
            p.calls.push((p.bytes.len() as u32, f.len() as u16, 1));
            p.bytes.extend_from_slice(f);
        }
        p
    }

    /// Calls (distinct frames) in the plan.
    pub fn calls(&self) -> usize {
        self.calls.len()
    }

    /// `(frame, repeat)` for every call, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], u32)> + '_ {
        self.calls
            .iter()
            .map(|&(o, l, r)| (&self.bytes[o as usize..o as usize + l as usize], r))
    }
}

/// Moves the calling thread into the network namespace at `path`
/// (`/var/run/netns/NAME`). Only this thread moves.
pub fn enter_netns(path: &str) -> Result<()> {
    let f = std::fs::File::open(path).with_context(|| format!("opening {path}"))?;
    // SAFETY: setns(2) on an open namespace file; affects this thread only.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(std::io::Error::last_os_error()).with_context(|| format!("setns {path}"));
    }
    Ok(())
}

/// The index of `iface` in the calling thread's network namespace.
pub fn ifindex(iface: &str) -> Result<u32> {
    let name = std::ffi::CString::new(iface)?;
    // SAFETY: NUL-terminated name.
    let i = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if i == 0 {
        bail!("no interface {iface} in this network namespace");
    }
    Ok(i)
}

/// Attaches `prog` (an XDP program fd) to interface `ifindex` of the calling
/// thread's network namespace in driver mode, as a BPF link: it stays
/// attached until the returned fd is closed.
pub fn attach_xdp(prog: BorrowedFd<'_>, ifindex: u32) -> Result<OwnedFd> {
    const BPF_LINK_CREATE: libc::c_long = 28;
    const BPF_XDP: u32 = 37;
    const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;
    #[repr(C)]
    struct LinkCreate {
        prog_fd: u32,
        target_ifindex: u32,
        attach_type: u32,
        flags: u32,
        _rest: [u64; 4],
    }
    let mut attr = LinkCreate {
        prog_fd: prog.as_raw_fd() as u32,
        target_ifindex: ifindex,
        attach_type: BPF_XDP,
        flags: XDP_FLAGS_DRV_MODE,
        _rest: [0; 4],
    };
    // SAFETY: a zero-padded bpf_attr prefix of the size given.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_LINK_CREATE,
            &mut attr as *mut LinkCreate,
            std::mem::size_of::<LinkCreate>(),
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error()).context(format!(
            "attaching XDP to ifindex {ifindex} (BPF_LINK_CREATE)"
        ));
    }
    // SAFETY: the kernel returned a new fd we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// CPU time the calling thread has used.
pub fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid pointer; the clock always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Two namespaces joined by a veth: the generator transmits from `gen`'s
/// `gt0` into `rx`'s `gr0`. IPv6 is off in both, so nothing but generated
/// frames crosses the link; `gr0` has the MAC the frames are addressed to.
pub struct GenLab {
    /// Where the generator runs.
    pub gen: NetNs,
    /// Where the frames arrive.
    pub rx: NetNs,
}

/// Generator-side interface.
pub const TX_IF: &str = "gt0";
/// Receiving interface.
pub const RX_IF: &str = "gr0";
/// Spare interface in the generator namespace that keeps the XDP_TX program attached.
pub const ANCHOR_IF: &str = "gx0";

impl GenLab {
    /// Creates the pair.
    pub fn new() -> Result<Self> {
        let tag = unique_tag();
        let gen = NetNs::new(&format!("smbw-{tag}-gen"))?;
        let rx = NetNs::new(&format!("smbw-{tag}-rx"))?;
        for ns in [&gen, &rx] {
            ns.sysctl("net.ipv6.conf.all.disable_ipv6", "1")?;
            ns.sysctl("net.ipv6.conf.default.disable_ipv6", "1")?;
        }
        veth(&gen, TX_IF, &rx, RX_IF)?;
        rx.ip(&["link", "set", RX_IF, "address", RX_MAC])?;
        // A spare veth pair, left down, to hold the XDP_TX program attached
        // (see `Generator::anchor`).
        gen.ip(&[
            "link", "add", ANCHOR_IF, "type", "veth", "peer", "name", "gx1",
        ])?;
        Ok(Self { gen, rx })
    }

    /// `gr0`'s received and dropped packet counters (kernel interface
    /// statistics), to explain a gap between sent and counted.
    pub fn rx_counters(&self) -> Result<(u64, u64)> {
        let out = run(
            "ip",
            [
                "-n",
                self.rx.name(),
                "-s",
                "-j",
                "link",
                "show",
                "dev",
                RX_IF,
            ],
        )?;
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        let rx = &v[0]["stats64"]["rx"];
        Ok((
            rx["packets"].as_u64().unwrap_or(0),
            rx["dropped"].as_u64().unwrap_or(0),
        ))
    }
}

/// How fast to send.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Pace {
    /// As fast as the kernel takes the calls.
    Max,
    /// About this many packets per second (sleeps between calls).
    Pps(u64),
}

/// What a send did.
#[derive(Clone, Copy, Debug, Default)]
pub struct Sent {
    /// Packets handed to the kernel.
    pub packets: u64,
    /// Calls made.
    pub calls: u64,
    /// Wall time of the sending loop.
    pub elapsed: Duration,
    /// CPU time of the sending thread (on this kernel it includes the
    /// receive softirq, which runs on the sender's CPU when its bottom
    /// halves are re-enabled).
    pub cpu: Duration,
    /// How the frames were put on the wire.
    pub method: Method,
    /// AF_PACKET sends the veth refused for a moment (ENOBUFS: the peer's
    /// queue was full) and that were sent again; 0 with live frames.
    pub retried: u64,
}

impl Sent {
    /// Packets per second.
    pub fn pps(&self) -> f64 {
        self.packets as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Environment variable that forces the generator's [`Method`]: `live` or
/// `af_packet` (unset: live frames, falling back to AF_PACKET when the
/// kernel refuses them).
pub const METHOD_ENV: &str = "SMBWATCH_GEN_METHOD";

/// How the generator puts frames on the wire.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Method {
    /// `BPF_PROG_TEST_RUN` with `BPF_F_TEST_XDP_LIVE_FRAMES` of an XDP_TX
    /// program (the receiver needs an XDP program attached).
    #[default]
    LiveFrames,
    /// An AF_PACKET raw socket, `sendmmsg` batches (the ordinary transmit path).
    PacketSocket,
}

impl Method {
    /// The name [`METHOD_ENV`] takes.
    pub fn name(self) -> &'static str {
        match self {
            Method::LiveFrames => "live",
            Method::PacketSocket => "af_packet",
        }
    }

    /// What it is, for reports.
    pub fn describe(self) -> &'static str {
        match self {
            Method::LiveFrames => "live XDP_TX test runs (BPF_F_TEST_XDP_LIVE_FRAMES)",
            Method::PacketSocket => "AF_PACKET raw socket (sendmmsg)",
        }
    }

    /// The method [`METHOD_ENV`] forces, if any; an unknown value is an error
    /// naming the variable.
    pub fn forced() -> Result<Option<Self>> {
        match std::env::var(METHOD_ENV) {
            Err(std::env::VarError::NotPresent) => Ok(None),
            Ok(v) if v.is_empty() => Ok(None),
            Ok(v) => v
                .parse()
                .map(Some)
                .map_err(|e| anyhow::anyhow!("{METHOD_ENV}: {e}")),
            Err(e) => bail!("{METHOD_ENV}: {e}"),
        }
    }
}

impl FromStr for Method {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        [Method::LiveFrames, Method::PacketSocket]
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| format!("{s:?} is not a generator method; methods: live, af_packet"))
    }
}

/// The XDP_TX program, loaded and ready to transmit plans.
pub struct Generator {
    programs: TestPrograms,
    tx: RawFd,
    floor: RawFd,
    anchor: Option<OwnedFd>,
    /// `batch_size` of the live test runs (frames per kernel batch, ≤ 256),
    /// and messages per `sendmmsg` with AF_PACKET.
    pub batch: u32,
    /// Decided by [`METHOD_ENV`] or by the first send (live frames unless the
    /// kernel refuses them).
    method: OnceLock<Method>,
}

impl Generator {
    /// Loads the helper programs from the test-only object.
    pub fn new() -> Result<Self> {
        let mut programs = TestPrograms::load()
            .context("loading the test XDP object (is it built with its eBPF programs?)")?;
        let tx = programs.fd(TX_PROGRAM_NAME)?.as_raw_fd();
        let floor = programs.fd(FLOOR_PROGRAM_NAME)?.as_raw_fd();
        let method = OnceLock::new();
        if let Some(m) = Method::forced()? {
            let _ = method.set(m);
        }
        Ok(Self {
            programs,
            tx,
            floor,
            anchor: None,
            batch: 64,
            method,
        })
    }

    /// Makes every later send use `method` (what [`METHOD_ENV`] does for a
    /// whole process; a test sets it on its own generator).
    pub fn set_method(&mut self, method: Method) {
        self.method = OnceLock::from(method);
    }

    /// The method sends use: forced by [`METHOD_ENV`] or found by a send so
    /// far; `None` before the first send decided it.
    pub fn method(&self) -> Option<Method> {
        self.method.get().copied()
    }

    /// Attaches the XDP_TX program to a spare interface (down, receiving
    /// nothing) and keeps it there while the generator lives.
    ///
    /// Why: a test run with repeat > 1 registers its program with the
    /// kernel's XDP dispatcher for the duration of the call, and that
    /// update waits for an RCU grace period (about 30 ms here) unless the
    /// program is already registered, which attaching it does. Without the
    /// anchor every burst costs those 30 ms of idle wall time.
    pub fn anchor(&mut self, netns: &str, iface: &str) -> Result<()> {
        let tx = self.tx;
        let link = in_netns(netns, || {
            // SAFETY: `self.programs` keeps the program loaded.
            attach_xdp(unsafe { BorrowedFd::borrow_raw(tx) }, ifindex(iface)?)
        })?;
        self.anchor = Some(link);
        Ok(())
    }

    /// The empty XDP program, for attaching to a receiver as a baseline.
    pub fn floor(&self) -> BorrowedFd<'_> {
        let _ = &self.programs;
        // SAFETY: `self.programs` keeps the program loaded while self lives.
        unsafe { BorrowedFd::borrow_raw(self.floor) }
    }

    fn tx(&self) -> BorrowedFd<'_> {
        // SAFETY: as above.
        unsafe { BorrowedFd::borrow_raw(self.tx) }
    }

    /// Sends `plan` out of `iface` in the namespace at `netns` (a path such
    /// as `/var/run/netns/NAME`), from a thread that enters it. The first
    /// send tries live frames unless a method is forced; if the kernel
    /// refuses them (EPERM, EOPNOTSUPP) it says so on stderr and this send
    /// and every later one use an AF_PACKET socket.
    pub fn send(&self, netns: &str, iface: &str, plan: &Plan, pace: Pace) -> Result<Sent> {
        std::thread::scope(|s| {
            s.spawn(|| -> Result<Sent> {
                enter_netns(netns)?;
                let index = ifindex(iface)?;
                let cpu0 = thread_cpu();
                let start = Instant::now();
                let mut sent = Sent::default();
                let mut calls = plan.iter().peekable();
                if self.method().is_none() {
                    // Probe with the plan's first call: it is sent either way.
                    if let Some(&(frame, repeat)) = calls.peek() {
                        match testrun::run_live(self.tx(), frame, repeat, index, self.batch) {
                            Ok(_) => {
                                let _ = self.method.set(Method::LiveFrames);
                                sent.packets += u64::from(repeat);
                                sent.calls += 1;
                                calls.next();
                            }
                            Err(e)
                                if matches!(
                                    e.raw_os_error(),
                                    Some(libc::EPERM | libc::EOPNOTSUPP)
                                ) =>
                            {
                                eprintln!(
                                    "generator: the kernel refuses live frames ({e}); falling back to {}",
                                    Method::PacketSocket.describe()
                                );
                                let _ = self.method.set(Method::PacketSocket);
                            }
                            Err(e) => {
                                return Err(e).with_context(|| {
                                    format!("live test run on {iface} (ifindex {index})")
                                })
                            }
                        }
                    }
                }
                sent.method = self.method().unwrap_or_default();
                let socket = match sent.method {
                    Method::PacketSocket => Some(PacketSocket::open(index)?),
                    Method::LiveFrames => None,
                };
                for (frame, repeat) in calls {
                    if let Pace::Pps(pps) = pace {
                        let due = Duration::from_secs_f64(sent.packets as f64 / pps as f64);
                        if let Some(wait) = due.checked_sub(start.elapsed()) {
                            std::thread::sleep(wait);
                        }
                    }
                    match &socket {
                        Some(sock) => {
                            sent.retried += sock
                                .send(frame, repeat, self.batch)
                                .with_context(|| format!("AF_PACKET send on {iface}"))?;
                        }
                        None => {
                            testrun::run_live(self.tx(), frame, repeat, index, self.batch)
                                .with_context(|| {
                                    format!("live test run on {iface} (ifindex {index})")
                                })?;
                        }
                    }
                    sent.packets += u64::from(repeat);
                    sent.calls += 1;
                }
                sent.elapsed = start.elapsed();
                sent.cpu = thread_cpu() - cpu0;
                Ok(sent)
            })
            .join()
            .expect("generator thread panicked")
        })
    }
}

/// An AF_PACKET raw socket bound to one interface of the calling thread's
/// network namespace: frames go out whole, Ethernet header included, through
/// the interface's ordinary transmit path (no qdisc: `PACKET_QDISC_BYPASS`).
/// Sends only; protocol 0 receives nothing.
pub struct PacketSocket {
    fd: OwnedFd,
    addr: libc::sockaddr_ll,
}

impl PacketSocket {
    /// Opens a socket sending out of interface `ifindex`.
    pub fn open(ifindex: u32) -> Result<Self> {
        // SAFETY: plain socket(2); the fd is owned below.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error()).context("AF_PACKET socket");
        }
        // SAFETY: fd was just opened and is ours.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        const PACKET_QDISC_BYPASS: libc::c_int = 20;
        let one: libc::c_int = 1;
        // SAFETY: an int option of the size given. Failing only costs the qdisc.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_PACKET,
                PACKET_QDISC_BYPASS,
                (&one as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as u32,
            )
        };
        // SAFETY: sockaddr_ll is plain data; zero is a valid start.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_ifindex = ifindex as i32;
        addr.sll_halen = 6;
        Ok(Self { fd, addr })
    }

    /// Sends `frame` `repeat` times, up to `batch` per `sendmmsg`. When the
    /// interface refuses a frame for a moment (ENOBUFS, EAGAIN: the veth
    /// peer's queue is full) it waits briefly and sends that frame again;
    /// returns how many such retries there were.
    pub fn send(&self, frame: &[u8], repeat: u32, batch: u32) -> Result<u64> {
        let batch = batch.clamp(1, 1024) as usize;
        let mut iov = libc::iovec {
            iov_base: frame.as_ptr() as *mut libc::c_void,
            iov_len: frame.len(),
        };
        let iov_ptr: *mut libc::iovec = &mut iov;
        let msgs: Vec<libc::mmsghdr> = (0..batch.min(repeat as usize))
            .map(|_| {
                // SAFETY: mmsghdr is plain data; zero is a valid start.
                let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
                m.msg_hdr.msg_name = (&self.addr as *const libc::sockaddr_ll) as *mut libc::c_void;
                m.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_ll>() as u32;
                m.msg_hdr.msg_iov = iov_ptr;
                m.msg_hdr.msg_iovlen = 1;
                m
            })
            .collect();
        let mut msgs = msgs;
        let mut left = repeat as usize;
        let mut retried = 0u64;
        // A veth whose peer never drains would make this spin: give up
        // after a second of consecutive refusals.
        let mut refused_in_a_row = 0u32;
        while left > 0 {
            let n = left.min(msgs.len());
            // SAFETY: n initialised headers pointing at `iov`, `frame` and
            // `self.addr`, all alive for the call.
            let rc = unsafe { libc::sendmmsg(self.fd.as_raw_fd(), msgs.as_mut_ptr(), n as u32, 0) };
            if rc < 0 {
                let e = std::io::Error::last_os_error();
                match e.raw_os_error() {
                    Some(libc::ENOBUFS | libc::EAGAIN) if refused_in_a_row < 20_000 => {
                        retried += 1;
                        refused_in_a_row += 1;
                        std::thread::sleep(Duration::from_micros(50));
                        continue;
                    }
                    _ => return Err(e).context("sendmmsg on an AF_PACKET socket"),
                }
            }
            refused_in_a_row = 0;
            left -= rc as usize;
        }
        Ok(retried)
    }
}

/// Runs `f` on a thread inside the namespace at `netns`.
pub fn in_netns<T: Send>(netns: &str, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    std::thread::scope(|s| {
        s.spawn(|| {
            enter_netns(netns)?;
            f()
        })
        .join()
        .expect("namespace thread panicked")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(mix: &str, count: u64, burst: u32) -> Spec {
        Spec {
            sources: 3,
            first_source: 0,
            destinations: 2,
            mix: mix.parse().unwrap(),
            count,
            burst,
        }
    }

    #[test]
    fn method_names_round_trip() {
        for m in [Method::LiveFrames, Method::PacketSocket] {
            assert_eq!(m.name().parse::<Method>(), Ok(m));
        }
        assert!("sendmmsg"
            .parse::<Method>()
            .unwrap_err()
            .contains("live, af_packet"));
    }

    #[test]
    fn mix_parsing() {
        assert_eq!(
            "syn=3,background".parse::<Mix>().unwrap(),
            Mix(vec![(Kind::Syn, 3), (Kind::Background, 1)])
        );
        assert!("syn,syn".parse::<Mix>().is_err());
        assert!("smb".parse::<Mix>().unwrap_err().contains("kinds: syn"));
        assert!("".parse::<Mix>().is_err());
        assert!("syn=x".parse::<Mix>().is_err());
    }

    #[test]
    fn syn_stream_visits_every_pair_once_then_repeats() {
        let p = Plan::build(&spec("syn", 10, 1)).unwrap();
        assert_eq!(p.calls(), 10);
        assert_eq!(p.expected.monitored_syns, 10);
        assert_eq!(p.expected.new_pairs, 6, "3 sources × 2 destinations");
        let p = Plan::build(&spec("syn", 10, 4)).unwrap();
        assert_eq!(p.calls(), 3, "bursts of 4, 4, 2");
        assert_eq!(p.iter().map(|(_, r)| r).collect::<Vec<_>>(), vec![4, 4, 2]);
        assert_eq!(p.expected.new_pairs, 3);
    }

    #[test]
    fn answers_count_only_for_pairs_already_opened() {
        // syn, synack alternate: the answer to pair k follows its SYN.
        let p = Plan::build(&spec("syn,synack", 12, 1)).unwrap();
        assert_eq!(p.expected.responses, 6);
        // Each answer precedes its pair's SYN: none counts.
        let p = Plan::build(&spec("rst,syn", 4, 1)).unwrap();
        assert_eq!(p.expected.responses, 0);
        // Answering the same pair twice counts once.
        let p = Plan::build(&spec("syn=6,synack=2", 8, 1)).unwrap();
        assert_eq!(p.expected.responses, 2);
    }

    #[test]
    fn every_kind_counts_where_the_program_counts_it() {
        let p = Plan::build(&spec("syn,synack,rst,background,ipv6,vlan", 60, 1)).unwrap();
        let e = p.expected;
        assert_eq!(e.packets, 60);
        assert_eq!(e.ipv6, 10);
        assert_eq!(e.vlan, 10);
        assert_eq!(e.ipv4, 50);
        assert_eq!(e.monitored_syns, 30);
        assert_eq!(e.new_pairs, 6 + 6 + 6);
        assert!(p.per_kind.values().all(|&n| n == 10));
        // Frames really are what their kind says.
        let frames: Vec<&[u8]> = p.iter().map(|(f, _)| f).collect();
        assert_eq!(&frames[4][12..14], &[0x86, 0xdd], "ipv6");
        assert_eq!(&frames[5][12..14], &[0x81, 0x00], "vlan");
        assert_eq!(frames[1][47], tcp_flags::SYN | tcp_flags::ACK);
        assert_eq!(frames[2][47], tcp_flags::RST | tcp_flags::ACK);
    }
}
