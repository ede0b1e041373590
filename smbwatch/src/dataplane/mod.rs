//! The kernel side, seen from user space: load and attach the XDP program,
//! pin its maps, decode ring-buffer events, read counters.
//!
//! Nothing here interprets events; that is [`crate::detect`]'s job.

mod clock;
mod error;
mod pin;
pub mod privilege;
pub mod testrun;

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv6Addr},
    os::fd::{AsFd, BorrowedFd},
    path::{Path, PathBuf},
};

use aya::{
    maps::{HashMap, Map, MapData, PerCpuArray, RingBuf},
    programs::{Xdp, XdpMode},
    Ebpf, EbpfLoader,
};
use serde::Serialize;
use smbwatch_common::{
    stat, AddrKey, Event, PairKey, PairState, SourceStats, DEFAULT_MAX_PAIRS, DEFAULT_MAX_SOURCES,
    EVENTS_MAP, EVENT_ACCEPTED, EVENT_FLAG_VLAN, EVENT_NEW_PAIR, EVENT_REFUSED, MAX_PORTS,
    PAIRS_MAP, PORTS_GLOBAL, PROGRAM_NAME, SOURCES_MAP, STATS_MAP,
};

pub use clock::MonotonicClock;
pub use error::DataplaneError;
pub use pin::{ensure_bpffs, PinDir};

use crate::event::{GatewayEvent, GatewayEventKind};

/// The compiled XDP program, embedded at build time.
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/smbwatch"));

/// What to load: the monitored ports and the table sizes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadOptions {
    /// Monitored TCP ports (1 to [`MAX_PORTS`] of them).
    pub ports: Vec<u16>,
    /// Capacity of the per-source table.
    pub max_sources: u32,
    /// Capacity of the (source, destination) pair table.
    pub max_pairs: u32,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            ports: vec![445],
            max_sources: DEFAULT_MAX_SOURCES,
            max_pairs: DEFAULT_MAX_PAIRS,
        }
    }
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
        if opts.ports.is_empty() || opts.ports.len() > MAX_PORTS || opts.ports.contains(&0) {
            return Err(DataplaneError::Ports {
                ports: opts.ports.clone(),
            });
        }
        let mut ports = [0u16; MAX_PORTS];
        ports[..opts.ports.len()].copy_from_slice(&opts.ports);
        let mut ebpf = EbpfLoader::new()
            .override_global(PORTS_GLOBAL, &ports, true)
            .map_max_entries(SOURCES_MAP, opts.max_sources)
            .map_max_entries(PAIRS_MAP, opts.max_pairs)
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

    /// The program's file descriptor (for `BPF_PROG_TEST_RUN`).
    pub fn program_fd(&self) -> Result<BorrowedFd<'_>, DataplaneError> {
        let prog: &Xdp = self
            .ebpf
            .program(PROGRAM_NAME)
            .ok_or(DataplaneError::MissingProgram)?
            .try_into()
            .map_err(|source| DataplaneError::Program {
                op: "lookup",
                source,
            })?;
        let fd = prog
            .fd()
            .map_err(|source| DataplaneError::Program { op: "fd", source })?;
        Ok(fd.as_fd())
    }

    /// Loads one of the object's helper programs ([`smbwatch_common::FLOOR_PROGRAM_NAME`],
    /// [`smbwatch_common::TX_PROGRAM_NAME`]) and returns its fd, for
    /// benchmarks and the traffic generator.
    pub fn load_aux(&mut self, name: &'static str) -> Result<BorrowedFd<'_>, DataplaneError> {
        let prog = program_named(&mut self.ebpf, name)?;
        if prog.fd().is_err() {
            prog.load()
                .map_err(|source| DataplaneError::Program { op: "load", source })?;
        }
        let fd = prog
            .fd()
            .map_err(|source| DataplaneError::Program { op: "fd", source })?;
        Ok(fd.as_fd())
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

    /// Current counters, summed over CPUs.
    pub fn stats(&self) -> Result<Stats, DataplaneError> {
        let map = self.map(STATS_MAP)?;
        read_stats(map)
    }

    /// Every source the kernel tracks.
    pub fn sources(&self) -> Result<Vec<(IpAddr, SourceStats)>, DataplaneError> {
        let map = self.map(SOURCES_MAP)?;
        read_sources(map)
    }

    /// Every pair the kernel tracks.
    pub fn pairs(&self) -> Result<Vec<(PairKey, PairState)>, DataplaneError> {
        let map = self.map(PAIRS_MAP)?;
        let map: HashMap<_, PairKey, PairState> =
            HashMap::try_from(map).map_err(|source| map_err("open", PAIRS_MAP, source))?;
        map.iter()
            .collect::<Result<Vec<_>, _>>()
            .map_err(|source| map_err("iterate", PAIRS_MAP, source))
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
        .ok_or(DataplaneError::MissingProgram)?
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

pub(crate) fn read_sources(map: &Map) -> Result<Vec<(IpAddr, SourceStats)>, DataplaneError> {
    let map: HashMap<_, AddrKey, SourceStats> =
        HashMap::try_from(map).map_err(|source| map_err("open", SOURCES_MAP, source))?;
    map.iter()
        .map(|r| r.map(|(k, v)| (addr_to_ip(&k), v)))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| map_err("iterate", SOURCES_MAP, source))
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
    let v6 = Ipv6Addr::from(k.addr);
    match v6.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(v6),
    }
}

/// The 16-byte key for an address.
pub fn ip_to_addr(ip: IpAddr) -> AddrKey {
    match ip {
        IpAddr::V4(v4) => AddrKey::from_v4(v4.octets()),
        IpAddr::V6(v6) => AddrKey { addr: v6.octets() },
    }
}

/// Decodes one ring-buffer record; `None` for a record of the wrong size or kind.
pub fn decode_event(bytes: &[u8]) -> Option<Event> {
    if bytes.len() < std::mem::size_of::<Event>() {
        return None;
    }
    // SAFETY: Event is repr(C) plain data and the length was checked; the
    // ring buffer only guarantees 8-byte alignment, so read unaligned anyway.
    let ev = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<Event>()) };
    matches!(ev.kind, EVENT_NEW_PAIR | EVENT_ACCEPTED | EVENT_REFUSED).then_some(ev)
}

/// Turns a kernel event into a gateway event stamped with `ts`.
pub fn to_gateway_event(ev: &Event, ts: chrono::DateTime<chrono::Utc>) -> GatewayEvent {
    GatewayEvent {
        ts,
        kind: match ev.kind {
            EVENT_NEW_PAIR => GatewayEventKind::NewPair,
            EVENT_ACCEPTED => GatewayEventKind::Accepted,
            _ => GatewayEventKind::Refused,
        },
        src: addr_to_ip(&ev.src),
        dst: addr_to_ip(&ev.dst),
        sport: ev.sport,
        dport: ev.dport,
        ifindex: ev.ifindex,
        vlan: (ev.flags & EVENT_FLAG_VLAN != 0).then_some(ev.vlan),
    }
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
            if !path.exists() {
                return Err(DataplaneError::NotRunning {
                    dir: dir.to_owned(),
                });
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
    pub fn sources(&self) -> Result<Vec<(IpAddr, SourceStats)>, DataplaneError> {
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
}
