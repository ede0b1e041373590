//! The kernel's counters and tracked sources, read from the loaded
//! program's maps or, for `smbwatch status`, from a running daemon's pins.

use std::{net::IpAddr, path::Path};

use aya::maps::{Map, MapData, PerCpuArray};
use serde::Serialize;
use smbwatch_common::{stat, SourceSlot, SOURCES_MAP, STATS_MAP};

use super::{addr_to_ip, map_err, DataplaneError};

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
    let mut out = Vec::new();
    super::tables::source_slots(map, |slot| {
        if slot.first_seen_ns != 0 {
            out.push((addr_to_ip(&slot.addr), slot));
        }
    })?;
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
