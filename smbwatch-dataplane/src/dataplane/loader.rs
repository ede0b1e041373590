//! The loaded program: load it with its options, attach it to interfaces,
//! pin it, hand out its ring buffers, and read its maps.

use std::{
    collections::BTreeMap,
    net::IpAddr,
    os::fd::{AsFd, BorrowedFd},
    path::Path,
};

use aya::{
    maps::{Map, MapData, RingBuf},
    programs::{Xdp, XdpMode},
    Ebpf, EbpfLoader,
};
use serde::Serialize;
use smbwatch_common::{
    sample::{SAMPLES_MAP, SAMPLE_FLOWS_MAP},
    SourceSlot, EVENTS_MAP, PAIRS_MAP, PROGRAM_NAME, SEEN_MAP, SETTINGS_GLOBAL, SOURCES_MAP,
    STATS_MAP,
};

use super::{
    map_err, pin, read_sources, read_stats, tables, DataplaneError, LoadOptions, PinDir, Stats,
};

/// The compiled XDP program, embedded at build time.
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/smbwatch"));

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
    /// The arrays of arrays and their inner arrays' size, for [`Self::map_memory`].
    tables: Vec<tables::Table>,
}

impl Dataplane {
    /// Loads the embedded program with `opts` (not attached anywhere yet).
    pub fn load(opts: &LoadOptions) -> Result<Self, DataplaneError> {
        Self::load_object(EBPF_OBJECT, opts)
    }

    /// Loads another build of the program (an object file of the same
    /// layout) with `opts`: benchmarks compare builds with it.
    pub fn load_object(object: &[u8], opts: &LoadOptions) -> Result<Self, DataplaneError> {
        if object.is_empty() {
            return Err(DataplaneError::EmptyObject);
        }
        opts.check()?;
        let settings = opts.settings();
        let mut ebpf = EbpfLoader::new()
            .override_global(SETTINGS_GLOBAL, &settings, true)
            .map_max_entries(SOURCES_MAP, settings.source_outer)
            .map_max_entries(PAIRS_MAP, settings.pair_mask + 1)
            .map_max_entries(SEEN_MAP, settings.seen_outer)
            .map_max_entries(SAMPLE_FLOWS_MAP, settings.sample_flow_mask + 1)
            .map_max_entries(SAMPLES_MAP, opts.sampling.ring_bytes)
            .load(object)
            .map_err(|source| DataplaneError::Load {
                source: Box::new(source),
            })?;
        // Every outer slot gets its inner array before the program is
        // loaded: it can never run on an empty one.
        let tables = tables::fill(&mut ebpf, &settings)?;
        let prog: &mut Xdp = program(&mut ebpf)?;
        prog.load()
            .map_err(|source| DataplaneError::Program { op: "load", source })?;
        Ok(Self { ebpf, tables })
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
    /// [`drain_samples`](super::drain_samples).
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

    /// Kernel memory (bytes) the program's maps take, from their fdinfo;
    /// an array of arrays counts its inner arrays.
    pub fn map_memory(&self) -> Result<BTreeMap<String, u64>, DataplaneError> {
        let mut out = BTreeMap::new();
        for (name, map) in self.ebpf.maps() {
            let memlock = tables::memlock(map_data(map).fd().as_fd())?;
            out.insert(name.to_owned(), memlock);
        }
        tables::add_inner_memory(&mut out, &self.tables);
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
        | Map::PerCpuLruHashMap(d)
        | Map::ArrayOfMaps(d) => d,
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
