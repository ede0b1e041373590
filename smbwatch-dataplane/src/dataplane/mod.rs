//! The kernel side, seen from user space: load and attach the XDP program,
//! pin its maps, decode ring-buffer events, read counters.
//!
//! Nothing here interprets events; that is `smbwatch_core::detect`'s job.

mod clock;
mod error;
mod pin;
pub mod privilege;
pub mod sample;
#[cfg(feature = "test-programs")]
pub mod test_programs;
pub mod testrun;

use std::{
    collections::BTreeMap,
    net::IpAddr,
    os::fd::{AsFd, BorrowedFd},
    path::{Path, PathBuf},
};

use aya::{
    maps::{Array, Map, MapData, PerCpuArray, RingBuf},
    programs::{Xdp, XdpMode},
    Ebpf, EbpfLoader,
};
use serde::Serialize;
use smbwatch_common::{
    addr::MacAddr,
    sample::{SAMPLES_MAP, SAMPLE_FLOWS_MAP},
    stat, AddrKey, Event, EventKind, Settings, SourceSlot, ANSWERS_ANY_INGRESS,
    ANSWERS_OTHER_INGRESS, DEFAULT_EVENTS_PER_CPU, DEFAULT_PAIR_BUCKETS, DEFAULT_SEEN_WORDS,
    DEFAULT_SETTINGS, DEFAULT_SOURCE_SLOTS, EVENTS_MAP, EVENT_FLAG_AFTER_ACCEPT,
    EVENT_FLAG_FRAGMENTED, EVENT_FLAG_REPEAT, EVENT_FLAG_SEEN_ACCEPTED, EVENT_FLAG_SEEN_CONFIRMED,
    EVENT_FLAG_SEEN_REFUSED, EVENT_FLAG_VLAN, MAX_PORTS, PAIRS_MAP, PAIR_WAYS, PROGRAM_NAME,
    SEEN_MAP, SETTINGS_GLOBAL, SOURCES_MAP, STATS_MAP,
};

pub use clock::MonotonicClock;
pub use error::DataplaneError;
pub use pin::{ensure_bpffs, PinDir};
pub use sample::{
    decode_sample, drain_samples, to_smb_sample, KernelSample, SampleDirection, SampleOptions,
    SamplesDrained,
};

use smbwatch_core::event::{GatewayEvent, GatewayEventKind, PairActivity};

/// Shortest activity epoch `[dataplane] activity_epoch` accepts.
pub const MIN_ACTIVITY_EPOCH: std::time::Duration = std::time::Duration::from_secs(60);
/// Longest activity epoch.
pub const MAX_ACTIVITY_EPOCH: std::time::Duration = std::time::Duration::from_secs(24 * 3600);
/// Default activity epoch: a pair in use is reported again at most hourly.
pub const DEFAULT_ACTIVITY_EPOCH: std::time::Duration = std::time::Duration::from_secs(3600);

/// The compiled XDP program, embedded at build time.
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/smbwatch"));

/// What to load: the monitored ports, the table sizes, the event budget
/// and how answers are checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadOptions {
    /// Monitored TCP ports (1 to [`MAX_PORTS`] of them).
    pub ports: Vec<u16>,
    /// Slots of the per-source sketch table (rounded up to a power of two).
    pub max_sources: u32,
    /// Pairs the pair cache holds (rounded up to a power of two, at least 4).
    pub max_pairs: u32,
    /// New-pair events per CPU per second before events are shed (the
    /// sketches keep counting); the same again for tracked multi-destination
    /// sources. 0: no budget.
    pub events_per_cpu: u64,
    /// Which answers count ([`AnswerSetting::resolve`] turns the
    /// configuration's `auto` into one for the interfaces attached).
    pub answers: AnswerCheck,
    /// The fan-out window; the kernel's destination bitmaps rotate at half of it.
    pub fanout_window: std::time::Duration,
    /// Replay: the ingress comes from XDP metadata (the capture's interface id).
    pub replay: bool,
    /// The hash key; `None` (always, in production) draws a fresh secret at
    /// load. Tests pin it so that slot collisions, and so the sketches'
    /// estimates, are the same on every run.
    pub hash_key: Option<u64>,
    /// Activity epoch: a known pair's first SYN in a later epoch than its
    /// latest report is reported again ([`MIN_ACTIVITY_EPOCH`] to
    /// [`MAX_ACTIVITY_EPOCH`]). In replay the capture's clock drives it.
    pub activity_epoch: std::time::Duration,
    /// Test only: accept an `activity_epoch` below [`MIN_ACTIVITY_EPOCH`]
    /// (down to one kernel tick), so that kernel tests can cross epochs of
    /// the live clock between `BPF_PROG_TEST_RUN` calls. Never set in
    /// production: the configuration cannot reach it.
    pub allow_short_epoch: bool,
    /// SMB payload sampling ([`SampleOptions`]).
    pub sampling: SampleOptions,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            ports: vec![445],
            max_sources: DEFAULT_SOURCE_SLOTS,
            max_pairs: DEFAULT_PAIR_BUCKETS * PAIR_WAYS as u32,
            events_per_cpu: DEFAULT_EVENTS_PER_CPU,
            answers: AnswerCheck::Any,
            fanout_window: std::time::Duration::from_secs(60),
            replay: false,
            hash_key: None,
            activity_epoch: DEFAULT_ACTIVITY_EPOCH,
            allow_short_epoch: false,
            sampling: SampleOptions::default(),
        }
    }
}

/// The kernel's tick (one jiffy) in ns: the resolution of the coarse
/// clocks, which is `TICK_NSEC` (1e9 / CONFIG_HZ, rounded).
fn tick_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid timespec to write into.
    let rc = unsafe { libc::clock_getres(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    let ns = ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64;
    if rc != 0 || ns == 0 {
        // CLOCK_MONOTONIC_COARSE exists on every kernel with BPF; HZ=250
        // is the common default should it ever fail.
        return 4_000_000;
    }
    ns
}

/// Which SYN-ACKs and RSTs count as a server's answer, as configured:
/// `auto` depends on the interfaces attached, and is resolved into an
/// [`AnswerCheck`] before it reaches the loader.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Default, clap::ValueEnum, serde::Deserialize, Serialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum AnswerSetting {
    /// `other-ingress` when attached to two or more interfaces, else `any`.
    #[default]
    Auto,
    /// See [`AnswerCheck::OtherIngress`].
    OtherIngress,
    /// See [`AnswerCheck::Any`].
    Any,
}

impl AnswerSetting {
    /// `auto` resolved for a deployment watching `ingresses` interfaces.
    pub fn resolve(self, ingresses: usize) -> AnswerCheck {
        match self {
            Self::Auto if ingresses >= 2 => AnswerCheck::OtherIngress,
            Self::Auto | Self::Any => AnswerCheck::Any,
            Self::OtherIngress => AnswerCheck::OtherIngress,
        }
    }
}

/// Which SYN-ACKs and RSTs the program counts as a server's answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum AnswerCheck {
    /// Only answers that arrive on another interface or VLAN than their SYN:
    /// a router sees a server's answer come in on the server's side, so one
    /// from the client's side is forged.
    OtherIngress,
    /// Answers from any ingress: one interface, a SPAN port, a capture of
    /// one link (and replay and test runs: never call a real answer forged).
    #[default]
    Any,
}

impl LoadOptions {
    /// The program's read-only settings, with a fresh secret hash key.
    fn settings(&self) -> Settings {
        let mut ports = [0u16; MAX_PORTS];
        ports[..self.ports.len()].copy_from_slice(&self.ports);
        let buckets = pair_buckets(self.max_pairs);
        let half = (self.fanout_window.as_nanos() / 2).clamp(1_000_000, u64::MAX as u128) as u64;
        // The repeat horizon is one to two generations; a generation of an
        // eighth of the window (a power of two of ns) keeps a source that
        // probes a few times per window recognised.
        let gen_shift = (half / 4).max(1).ilog2().clamp(20, 40);
        // 0 events per second means no budget (cost 0).
        let cost = 1_000_000_000u64
            .checked_div(self.events_per_cpu)
            .map_or(0, |c| c.max(1));
        let mut s = Settings {
            ports,
            hash_key: self.hash_key.unwrap_or_else(random_u64),
            pair_mask: buckets - 1,
            source_mask: self.max_sources.max(2).next_power_of_two() - 1,
            seen_mask: DEFAULT_SEEN_WORDS - 1,
            answers: match self.answers {
                AnswerCheck::OtherIngress => ANSWERS_OTHER_INGRESS,
                AnswerCheck::Any => ANSWERS_ANY_INGRESS,
            },
            event_cost_ns: cost,
            // A tenth of a second of events may come at once.
            burst_ns: DEFAULT_SETTINGS.burst_ns,
            half_window_ns: half,
            seen_gen_shift: gen_shift,
            replay: u32::from(self.replay),
            epoch_ticks: self.epoch_ticks(),
            ..DEFAULT_SETTINGS
        };
        self.sampling.apply(&mut s, self.replay);
        s
    }

    /// The epoch in the program's ticks: capture ns in replay, else jiffies.
    fn epoch_ticks(&self) -> u64 {
        let ns = self.activity_epoch.as_nanos().min(u128::from(u64::MAX)) as u64;
        if self.replay {
            ns.max(1)
        } else {
            (ns / tick_ns()).max(1)
        }
    }

    /// Checks what the configuration cannot already have checked.
    fn check(&self) -> Result<(), DataplaneError> {
        if self.ports.is_empty() || self.ports.len() > MAX_PORTS || self.ports.contains(&0) {
            return Err(DataplaneError::Ports {
                ports: self.ports.clone(),
            });
        }
        let e = self.activity_epoch;
        if e > MAX_ACTIVITY_EPOCH || (e < MIN_ACTIVITY_EPOCH && !self.allow_short_epoch) {
            return Err(DataplaneError::ActivityEpoch { epoch: e });
        }
        Ok(self.sampling.validate()?)
    }
}

/// Buckets for `max_pairs` pairs: a power of two, at least one.
fn pair_buckets(max_pairs: u32) -> u32 {
    (max_pairs.div_ceil(PAIR_WAYS as u32))
        .max(1)
        .next_power_of_two()
}

/// A random number from the kernel: the secret key for the program's
/// hashes (so an attacker cannot aim sources or pairs at one slot).
pub(crate) fn random_u64() -> u64 {
    let mut b = [0u8; 8];
    // SAFETY: b is a valid 8-byte buffer.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    if n != 8 {
        // getrandom(2) does not fail for 8 bytes once the pool is
        // initialised; fall back to the clock rather than refuse to start.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        return t ^ u64::from(std::process::id()).rotate_left(32);
    }
    u64::from_ne_bytes(b)
}

/// How to attach: `auto` tries native (driver) XDP first and falls back to
/// generic (skb) XDP with a warning.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Default, clap::ValueEnum, serde::Deserialize, Serialize,
)]
#[serde(rename_all = "lowercase")]
pub enum AttachMode {
    /// Native first, then skb.
    #[default]
    Auto,
    /// Driver (native) mode only.
    Native,
    /// Generic (skb) mode only: works everywhere, slower.
    Skb,
}

/// The mode an interface actually got.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AttachedMode {
    /// Driver (native) XDP.
    Native,
    /// Generic (skb) XDP.
    Skb,
}

impl std::fmt::Display for AttachedMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Native => "native",
            Self::Skb => "skb",
        })
    }
}

/// The loaded XDP program and its maps.
pub struct Dataplane {
    ebpf: Ebpf,
}

impl Dataplane {
    /// Loads the embedded program with `opts` (not attached anywhere yet).
    pub fn load(opts: &LoadOptions) -> Result<Self, DataplaneError> {
        if EBPF_OBJECT.is_empty() {
            return Err(DataplaneError::EmptyObject);
        }
        opts.check()?;
        let settings = opts.settings();
        let mut ebpf = EbpfLoader::new()
            .override_global(SETTINGS_GLOBAL, &settings, true)
            .map_max_entries(SOURCES_MAP, settings.source_mask + 1)
            .map_max_entries(PAIRS_MAP, settings.pair_mask + 1)
            .map_max_entries(SEEN_MAP, 2 * (settings.seen_mask + 1))
            .map_max_entries(SAMPLE_FLOWS_MAP, settings.sample_flow_mask + 1)
            .map_max_entries(SAMPLES_MAP, opts.sampling.ring_bytes)
            .load(EBPF_OBJECT)
            .map_err(|source| DataplaneError::Load {
                source: Box::new(source),
            })?;
        let prog: &mut Xdp = program(&mut ebpf)?;
        prog.load()
            .map_err(|source| DataplaneError::Program { op: "load", source })?;
        Ok(Self { ebpf })
    }

    fn map(&self, name: &'static str) -> Result<&Map, DataplaneError> {
        self.ebpf
            .map(name)
            .ok_or(DataplaneError::MissingMap { name })
    }

    /// The loaded XDP program.
    fn program(&self) -> Result<&Xdp, DataplaneError> {
        self.ebpf
            .program(PROGRAM_NAME)
            .ok_or(DataplaneError::MissingProgram {
                name: PROGRAM_NAME.to_owned(),
            })?
            .try_into()
            .map_err(|source| DataplaneError::Program {
                op: "lookup",
                source,
            })
    }

    /// The program's file descriptor (for `BPF_PROG_TEST_RUN`).
    pub fn program_fd(&self) -> Result<BorrowedFd<'_>, DataplaneError> {
        let prog = self.program()?;
        let fd = prog
            .fd()
            .map_err(|source| DataplaneError::Program { op: "fd", source })?;
        Ok(fd.as_fd())
    }

    /// Instructions the verifier processed to accept the program (the
    /// kernel's `verified_insns`, 5.16 and later; `None` before), against
    /// its limit of a million: how close a configuration is to not loading.
    pub fn verified_instructions(&self) -> Result<Option<u32>, DataplaneError> {
        let prog = self.program()?;
        let info = prog
            .info()
            .map_err(|source| DataplaneError::Program { op: "info", source })?;
        Ok(info.verified_instruction_count())
    }

    /// Attaches to `iface`. Refuses when another XDP program is attached
    /// there, unless `force`, which detaches it first.
    pub fn attach(
        &mut self,
        iface: &str,
        mode: AttachMode,
        force: bool,
    ) -> Result<AttachedMode, DataplaneError> {
        let ifindex = pin::interface_index(iface)?;
        if let Some(existing) = pin::attached_xdp(iface)? {
            if !force {
                return Err(DataplaneError::AlreadyAttached {
                    iface: iface.to_owned(),
                    existing,
                });
            }
            tracing::warn!(iface, existing = %existing, "--force: detaching the XDP program already attached");
            pin::detach_foreign(iface)?;
        }
        let prog: &mut Xdp = program(&mut self.ebpf)?;
        let try_mode = |prog: &mut Xdp, m: XdpMode| prog.attach_to_if_index(ifindex, m).map(|_| ());
        match mode {
            AttachMode::Native => try_mode(prog, XdpMode::Driver)
                .map(|()| AttachedMode::Native)
                .map_err(|source| attach_err(iface, "native", source)),
            AttachMode::Skb => try_mode(prog, XdpMode::Skb)
                .map(|()| AttachedMode::Skb)
                .map_err(|source| attach_err(iface, "skb", source)),
            AttachMode::Auto => match try_mode(prog, XdpMode::Driver) {
                Ok(()) => Ok(AttachedMode::Native),
                Err(native) => {
                    let mode = try_mode(prog, XdpMode::Skb)
                        .map(|()| AttachedMode::Skb)
                        .map_err(|source| attach_err(iface, "skb", source))?;
                    tracing::warn!(
                        iface,
                        error = %native,
                        "native XDP not available; attached in skb (generic) mode, which runs later in the stack and costs more per packet"
                    );
                    Ok(mode)
                }
            },
        }
    }

    /// Pins the program and its maps under `dir` (see [`PinDir`]).
    pub fn pin(&mut self, dir: &Path) -> Result<PinDir, DataplaneError> {
        PinDir::create(dir, &mut self.ebpf)
    }

    /// Takes the event ring buffer (once).
    pub fn take_events(&mut self) -> Result<RingBuf<MapData>, DataplaneError> {
        let map = self
            .ebpf
            .take_map(EVENTS_MAP)
            .ok_or(DataplaneError::MissingMap { name: EVENTS_MAP })?;
        RingBuf::try_from(map).map_err(|source| map_err("open", EVENTS_MAP, source))
    }

    /// Takes the sample ring buffer (once): SMB payload samples, read with
    /// [`drain_samples`].
    pub fn take_samples(&mut self) -> Result<RingBuf<MapData>, DataplaneError> {
        let map = self
            .ebpf
            .take_map(SAMPLES_MAP)
            .ok_or(DataplaneError::MissingMap { name: SAMPLES_MAP })?;
        RingBuf::try_from(map).map_err(|source| map_err("open", SAMPLES_MAP, source))
    }

    /// Current counters, summed over CPUs.
    pub fn stats(&self) -> Result<Stats, DataplaneError> {
        let map = self.map(STATS_MAP)?;
        read_stats(map)
    }

    /// Every source the kernel tracks (sources with two or more
    /// destinations within the repeat horizon).
    pub fn sources(&self) -> Result<Vec<(IpAddr, SourceSlot)>, DataplaneError> {
        let map = self.map(SOURCES_MAP)?;
        read_sources(map)
    }

    /// Kernel memory (bytes) the program's maps take, from their fdinfo.
    pub fn map_memory(&self) -> Result<BTreeMap<String, u64>, DataplaneError> {
        let mut out = BTreeMap::new();
        for (name, map) in self.ebpf.maps() {
            let data = map_data(map);
            let fd = data.fd().as_fd();
            let path = format!("/proc/self/fdinfo/{}", std::os::fd::AsRawFd::as_raw_fd(&fd));
            let info = std::fs::read_to_string(&path).map_err(|source| DataplaneError::Io {
                op: "read",
                path: PathBuf::from(&path),
                source,
            })?;
            let memlock = info
                .lines()
                .find_map(|l| l.strip_prefix("memlock:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            out.insert(name.to_owned(), memlock);
        }
        Ok(out)
    }
}

fn map_data(map: &Map) -> &MapData {
    match map {
        Map::Array(d)
        | Map::LruHashMap(d)
        | Map::HashMap(d)
        | Map::PerCpuArray(d)
        | Map::RingBuf(d)
        | Map::PerCpuHashMap(d)
        | Map::PerCpuLruHashMap(d) => d,
        other => panic!("smbwatch program has an unexpected map type: {other:?}"),
    }
}

fn program(ebpf: &mut Ebpf) -> Result<&mut Xdp, DataplaneError> {
    program_named(ebpf, PROGRAM_NAME)
}

/// One of the object's XDP programs by name.
pub(crate) fn program_named<'e>(
    ebpf: &'e mut Ebpf,
    name: &str,
) -> Result<&'e mut Xdp, DataplaneError> {
    ebpf.program_mut(name)
        .ok_or(DataplaneError::MissingProgram {
            name: name.to_owned(),
        })?
        .try_into()
        .map_err(|source| DataplaneError::Program {
            op: "lookup",
            source,
        })
}

fn attach_err(
    iface: &str,
    mode: &'static str,
    source: aya::programs::ProgramError,
) -> DataplaneError {
    DataplaneError::Attach {
        iface: iface.to_owned(),
        mode,
        source,
    }
}

fn map_err(op: &'static str, name: &'static str, source: aya::maps::MapError) -> DataplaneError {
    DataplaneError::Map { op, name, source }
}

pub(crate) fn read_stats(map: &Map) -> Result<Stats, DataplaneError> {
    let arr: PerCpuArray<_, u64> =
        PerCpuArray::try_from(map).map_err(|source| map_err("open", STATS_MAP, source))?;
    let mut values = [0u64; stat::COUNT as usize];
    for (i, v) in values.iter_mut().enumerate() {
        let per_cpu = arr
            .get(&(i as u32), 0)
            .map_err(|source| map_err("read", STATS_MAP, source))?;
        *v = per_cpu.iter().sum();
    }
    Ok(Stats(values))
}

pub(crate) fn read_sources(map: &Map) -> Result<Vec<(IpAddr, SourceSlot)>, DataplaneError> {
    let arr: Array<_, SourceSlot> =
        Array::try_from(map).map_err(|source| map_err("open", SOURCES_MAP, source))?;
    let mut out = Vec::new();
    for slot in arr.iter() {
        let slot = slot.map_err(|source| map_err("read", SOURCES_MAP, source))?;
        if slot.first_seen_ns != 0 {
            out.push((addr_to_ip(&slot.addr), slot));
        }
    }
    Ok(out)
}

/// The kernel's per-CPU counters, summed, in [`stat`] index order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats(pub [u64; stat::COUNT as usize]);

impl Stats {
    /// One counter by its [`stat`] index.
    pub fn get(&self, index: u32) -> u64 {
        self.0[index as usize]
    }

    /// Counters by name, in index order, as printed in logs and `status`.
    pub fn named(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        stat::NAMES.iter().copied().zip(self.0)
    }

    /// Sum of the malformed-by-header counters.
    pub fn malformed(&self) -> u64 {
        [
            stat::MALFORMED_ETH,
            stat::MALFORMED_VLAN,
            stat::MALFORMED_IPV4,
            stat::MALFORMED_IPV6,
            stat::MALFORMED_TCP,
        ]
        .iter()
        .map(|&i| self.get(i))
        .sum()
    }
}

impl Serialize for Stats {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.named())
    }
}

impl std::fmt::Display for Stats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, (name, v)) in stat::NAMES.iter().zip(self.0).enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{name}={v}")?;
        }
        Ok(())
    }
}

/// The address a 16-byte key holds; IPv4-mapped keys become IPv4.
pub fn addr_to_ip(k: &AddrKey) -> IpAddr {
    k.ip()
}

/// The 16-byte key for an address.
pub fn ip_to_addr(ip: IpAddr) -> AddrKey {
    AddrKey::from_ip(ip)
}

/// Decodes one ring-buffer record; `None` for a record of the wrong size or kind.
pub fn decode_event(bytes: &[u8]) -> Option<(Event, EventKind)> {
    if bytes.len() < std::mem::size_of::<Event>() {
        return None;
    }
    // SAFETY: Event is repr(C) plain data and the length was checked; the
    // ring buffer only guarantees 8-byte alignment, so read unaligned anyway.
    let ev = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<Event>()) };
    let kind = EventKind::try_from(ev.kind).ok()?;
    Some((ev, kind))
}

/// Turns a kernel event into a gateway event stamped with `ts`.
pub fn to_gateway_event(
    ev: &Event,
    kind: EventKind,
    ts: chrono::DateTime<chrono::Utc>,
) -> GatewayEvent {
    let activity = (kind == EventKind::Active).then(|| PairActivity {
        syns: u32::from(ev.syns),
        accepted: ev.flags & EVENT_FLAG_SEEN_ACCEPTED != 0,
        confirmed: ev.flags & EVENT_FLAG_SEEN_CONFIRMED != 0,
        refused: ev.flags & EVENT_FLAG_SEEN_REFUSED != 0,
    });
    GatewayEvent {
        ts,
        kind: match kind {
            EventKind::NewPair => GatewayEventKind::NewPair,
            EventKind::Active => GatewayEventKind::Active,
            EventKind::Accepted => GatewayEventKind::Accepted,
            EventKind::Confirmed => GatewayEventKind::Confirmed,
            EventKind::Refused => GatewayEventKind::Refused,
            EventKind::Unparsed => GatewayEventKind::Unparsed,
        },
        src: addr_to_ip(&ev.src),
        dst: addr_to_ip(&ev.dst),
        sport: ev.sport,
        dport: ev.dport,
        ifindex: ev.ifindex,
        vlan: (ev.flags & EVENT_FLAG_VLAN != 0).then_some(ev.vlan),
        fragmented: ev.flags & EVENT_FLAG_FRAGMENTED != 0,
        after_accept: ev.flags & EVENT_FLAG_AFTER_ACCEPT != 0,
        kernel_fanout: (ev.flags & EVENT_FLAG_REPEAT != 0).then_some(ev.fanout),
        activity,
        // All zero: no Ethernet header behind the record (replay of raw-IP
        // and Linux-cooked captures frames them with zero MACs).
        src_mac: (ev.mac != MacAddr::ZERO).then_some(ev.mac),
    }
}

/// Reads every record in the ring buffer, in order, handing each decoded
/// event to `f`; the one reader for the daemon, replay and the kernel tests.
/// Returns how many records were read and how many of them were malformed.
pub fn drain(rb: &mut RingBuf<MapData>, mut f: impl FnMut(&Event, EventKind)) -> Drained {
    let mut n = Drained::default();
    while let Some(item) = rb.next() {
        n.records += 1;
        match decode_event(&item) {
            Some((ev, kind)) => f(&ev, kind),
            None => n.malformed += 1,
        }
    }
    n
}

/// What one [`drain`] read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Drained {
    /// Records read.
    pub records: u64,
    /// Records of the wrong size or an unknown kind (skipped).
    pub malformed: u64,
}

/// A running daemon's maps, opened from their pins (for `smbwatch status`).
pub struct PinnedMaps {
    sources: Map,
    stats: Map,
}

impl PinnedMaps {
    /// Opens the maps pinned under `dir`.
    pub fn open(dir: &Path) -> Result<Self, DataplaneError> {
        let open = |name: &'static str| -> Result<Map, DataplaneError> {
            let path = dir.join(name);
            // A directory we may not enter is not "nothing pinned".
            match path.try_exists() {
                Ok(true) => {}
                Ok(false) => {
                    return Err(DataplaneError::NotRunning {
                        dir: dir.to_owned(),
                    })
                }
                Err(source) => {
                    return Err(DataplaneError::PinsUnreadable {
                        dir: dir.to_owned(),
                        source,
                    })
                }
            }
            let data = MapData::from_pin(&path).map_err(|source| DataplaneError::Map {
                op: "open pinned",
                name,
                source,
            })?;
            Map::from_map_data(data).map_err(|source| map_err("open pinned", name, source))
        };
        Ok(Self {
            sources: open(SOURCES_MAP)?,
            stats: open(STATS_MAP)?,
        })
    }

    /// Current counters.
    pub fn stats(&self) -> Result<Stats, DataplaneError> {
        read_stats(&self.stats)
    }

    /// Every tracked source.
    pub fn sources(&self) -> Result<Vec<(IpAddr, SourceSlot)>, DataplaneError> {
        read_sources(&self.sources)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_round_trip() {
        for ip in ["192.0.2.1", "2001:db8::7", "::1"] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(addr_to_ip(&ip_to_addr(ip)), ip);
        }
    }

    #[test]
    fn decode_rejects_short_and_unknown() {
        assert!(decode_event(&[0u8; 10]).is_none());
        let ev = Event {
            kind: 9,
            ..Default::default()
        };
        let bytes = unsafe {
            std::slice::from_raw_parts(
                (&ev as *const Event).cast::<u8>(),
                std::mem::size_of::<Event>(),
            )
        };
        assert!(decode_event(bytes).is_none());
    }

    #[test]
    fn settings_round_table_sizes_up_and_key_the_hash() {
        let opts = LoadOptions {
            max_pairs: 1000,
            max_sources: 3000,
            ..Default::default()
        };
        let a = opts.settings();
        assert_eq!(
            a.pair_mask + 1,
            256,
            "1000 pairs / 4 ways -> 250 -> 256 buckets"
        );
        assert_eq!(a.source_mask + 1, 4096);
        assert_eq!(a.event_cost_ns, 10_000, "100k events/s per CPU");
        assert_eq!(a.half_window_ns, 30_000_000_000);
        assert_ne!(a.hash_key, opts.settings().hash_key, "a fresh key per load");
        let unlimited = LoadOptions {
            events_per_cpu: 0,
            ..Default::default()
        };
        assert_eq!(unlimited.settings().event_cost_ns, 0);
    }

    #[test]
    fn activity_epoch_is_bounded_and_in_ticks() {
        let at = |secs: u64| LoadOptions {
            activity_epoch: std::time::Duration::from_secs(secs),
            ..Default::default()
        };
        assert!(at(60).check().is_ok());
        assert!(at(86_400).check().is_ok());
        let err = at(59).check().unwrap_err().to_string();
        assert!(
            err.contains("activity epoch") && err.contains("59s"),
            "{err}"
        );
        assert!(at(86_401).check().is_err());
        let short = LoadOptions {
            allow_short_epoch: true,
            ..at(0)
        };
        assert!(short.check().is_ok(), "tests may go below a minute");
        assert_eq!(short.epoch_ticks(), 1, "never zero ticks");
        // Jiffies: an hour is 3600 × HZ ticks.
        let hz = 1_000_000_000 / tick_ns();
        assert!([100, 250, 300, 1000].contains(&hz), "HZ={hz}");
        assert_eq!(at(3600).settings().epoch_ticks, 3600 * hz);
        // Replay: capture nanoseconds.
        let replay = LoadOptions {
            replay: true,
            ..at(3600)
        };
        assert_eq!(replay.settings().epoch_ticks, 3_600_000_000_000);
    }

    #[test]
    fn kernel_kinds_decode_to_gateway_kinds() {
        let ts = chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let ev = Event {
            syns: 7,
            flags: EVENT_FLAG_SEEN_ACCEPTED | EVENT_FLAG_SEEN_CONFIRMED,
            ..Default::default()
        };
        let active = to_gateway_event(&ev, EventKind::Active, ts);
        assert_eq!(active.kind, GatewayEventKind::Active);
        assert_eq!(
            active.activity,
            Some(PairActivity {
                syns: 7,
                accepted: true,
                confirmed: true,
                refused: false,
            })
        );
        for (k, g) in [
            (EventKind::NewPair, GatewayEventKind::NewPair),
            (EventKind::Accepted, GatewayEventKind::Accepted),
            (EventKind::Confirmed, GatewayEventKind::Confirmed),
            (EventKind::Refused, GatewayEventKind::Refused),
            (EventKind::Unparsed, GatewayEventKind::Unparsed),
        ] {
            let e = to_gateway_event(&ev, k, ts);
            assert_eq!((e.kind, e.activity), (g, None));
        }
    }

    #[test]
    fn the_frame_mac_decodes_and_zero_means_none() {
        let ts = chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let mac = MacAddr([0x00, 0x1b, 0x21, 0x3c, 0x4d, 0x5e]);
        let ev = Event {
            kind: EventKind::NewPair as u8,
            mac,
            ..Default::default()
        };
        let e = to_gateway_event(&ev, EventKind::NewPair, ts);
        assert_eq!(e.src_mac, Some(mac));
        let none = to_gateway_event(&Event::default(), EventKind::NewPair, ts);
        assert_eq!(none.src_mac, None, "all-zero MAC: no header was read");
    }

    #[test]
    fn answer_check_auto_depends_on_interfaces() {
        assert_eq!(AnswerSetting::Auto.resolve(1), AnswerCheck::Any);
        assert_eq!(AnswerSetting::Auto.resolve(2), AnswerCheck::OtherIngress);
        assert_eq!(AnswerSetting::Any.resolve(3), AnswerCheck::Any);
        assert_eq!(
            AnswerSetting::OtherIngress.resolve(1),
            AnswerCheck::OtherIngress
        );
    }
}
