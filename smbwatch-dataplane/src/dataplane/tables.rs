//! The repeat filter and the source table: arrays of arrays of at most
//! 31 KiB each, so the kernel kmallocs every inner array into its directly
//! mapped memory instead of vmalloc'ing one large array in 4 KiB pages (`INNER_ARRAY_BYTES` in smbwatch-common says
//! why). The loader sizes the outer arrays; [`fill`] gives every slot its
//! inner array before the program can run, so no lookup finds an empty one.

use std::{
    collections::BTreeMap,
    mem::size_of,
    os::fd::{AsFd, AsRawFd as _, BorrowedFd},
    path::PathBuf,
};

use aya_obj::generated::bpf_map_type::BPF_MAP_TYPE_ARRAY;

use aya::{
    maps::{Array, ArrayOfMaps, Map, MapData},
    Ebpf, Pod,
};
use smbwatch_common::{
    Settings, SourceSlot, SEEN_INNER_LINES, SEEN_MAP, SOURCES_MAP, SOURCE_INNER_LINES,
};

use super::{map_err, DataplaneError};

/// One table: its name, inner arrays, and the bytes the kernel charges.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Table {
    /// The outer map's name.
    pub name: &'static str,
    /// Inner arrays.
    pub arrays: u32,
    /// Kernel memory of one inner array (its fdinfo `memlock`).
    pub inner_bytes: u64,
}

/// Creates and inserts every inner array of both tables, as the
/// settings size them. An error leaves the program unusable (it is not
/// attached yet) and names the table.
pub(crate) fn fill(ebpf: &mut Ebpf, s: &Settings) -> Result<Vec<Table>, DataplaneError> {
    Ok(vec![
        fill_one::<[u64; 2]>(ebpf, SEEN_MAP, s.seen_outer, SEEN_INNER_LINES)?,
        fill_one::<[SourceSlot; 2]>(ebpf, SOURCES_MAP, s.source_outer, SOURCE_INNER_LINES)?,
    ])
}

/// Inner arrays inserted per `BPF_MAP_UPDATE_BATCH`: every update of an
/// array of maps waits for an RCU grace period (the kernel makes sure no
/// program still sees the old value), about 10 ms on a loaded VM, so one
/// update per inner array made a load take 20 s; a batch waits once. The
/// batch's fds are open together: 128 stays far below the usual limit of
/// 1,024 open files.
const FILL_BATCH: usize = 128;

fn fill_one<V: Pod>(
    ebpf: &mut Ebpf,
    name: &'static str,
    arrays: u32,
    entries: u32,
) -> Result<Table, DataplaneError> {
    let map = ebpf
        .map_mut(name)
        .ok_or(DataplaneError::MissingMap { name })?;
    let outer = match map {
        Map::ArrayOfMaps(outer) => outer,
        // An object of another layout: the conversion's error names the
        // map type found.
        other => {
            return Err(
                ArrayOfMaps::<&MapData, Array<MapData, V>>::try_from(&*other)
                    .err()
                    .map_or(DataplaneError::MissingMap { name }, |source| {
                        map_err("open as an array of arrays", name, source)
                    }),
            )
        }
    };
    let len = outer
        .info()
        .map_err(|source| map_err("read", name, source))?;
    if len.max_entries() != arrays {
        // The loader sized it from the same settings; anything else would
        // leave slots the program indexes without an inner array.
        return Err(DataplaneError::Map {
            op: "size",
            name,
            source: aya::maps::MapError::OutOfBounds {
                index: arrays,
                max_entries: len.max_entries(),
            },
        });
    }
    let mut inner_bytes = 0;
    // Named after the table (`bpftool map` shows "PAIRS.in"); at most 15
    // characters.
    let inner_name = format!("{name}.in");
    let indices: Vec<u32> = (0..arrays).collect();
    for chunk in indices.chunks(FILL_BATCH) {
        let mut inners = Vec::with_capacity(chunk.len());
        for _ in chunk {
            let def = aya_obj::Map::new_from_params(
                BPF_MAP_TYPE_ARRAY as u32,
                size_of::<u32>() as u32,
                size_of::<V>() as u32,
                entries,
                0,
            );
            let data = MapData::create(def, &inner_name, None)
                .map_err(|source| map_err("create inner array of", name, source))?;
            if inner_bytes == 0 {
                inner_bytes = memlock(data.fd().as_fd())?;
            }
            inners.push(data);
        }
        let fds: Vec<u32> = inners
            .iter()
            .map(|d| d.fd().as_fd().as_raw_fd() as u32)
            .collect();
        update_batch(outer.fd().as_fd(), chunk, &fds).map_err(|source| DataplaneError::Io {
            op: "inserting inner arrays into",
            path: PathBuf::from(name),
            source,
        })?;
        // The kernel holds each inner array through the outer one; our fds
        // close here.
        drop(inners);
    }
    Ok(Table {
        name,
        arrays,
        inner_bytes,
    })
}

/// `BPF_MAP_UPDATE_BATCH` of `keys[i] -> values[i]` (u32 both), all or an error.
fn update_batch(map: BorrowedFd<'_>, keys: &[u32], values: &[u32]) -> std::io::Result<()> {
    /// `union bpf_attr`'s `batch` member.
    #[repr(C)]
    #[derive(Default)]
    struct BatchAttr {
        in_batch: u64,
        out_batch: u64,
        keys: u64,
        values: u64,
        count: u32,
        map_fd: u32,
        elem_flags: u64,
        flags: u64,
    }
    const BPF_MAP_UPDATE_BATCH: libc::c_long = 26;
    let mut attr = BatchAttr {
        keys: keys.as_ptr() as u64,
        values: values.as_ptr() as u64,
        count: keys.len().min(values.len()) as u32,
        map_fd: map.as_raw_fd() as u32,
        ..Default::default()
    };
    let want = attr.count;
    // SAFETY: attr points at a valid bpf_attr prefix of its own size; the
    // kernel reads `count` keys and values from the two slices.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_MAP_UPDATE_BATCH,
            &raw mut attr,
            size_of::<BatchAttr>() as u32,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    if attr.count != want {
        return Err(std::io::Error::other(format!(
            "{} of {want} inner arrays inserted",
            attr.count
        )));
    }
    Ok(())
}

/// The kernel's `memlock` figure for a map fd (bytes it charges the map).
pub(crate) fn memlock(fd: BorrowedFd<'_>) -> Result<u64, DataplaneError> {
    let path = format!("/proc/self/fdinfo/{}", fd.as_raw_fd());
    let info = std::fs::read_to_string(&path).map_err(|source| DataplaneError::Io {
        op: "read",
        path: PathBuf::from(&path),
        source,
    })?;
    Ok(info
        .lines()
        .find_map(|l| l.strip_prefix("memlock:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0))
}

/// Adds each table's inner arrays to its outer map's figure in `memory`.
pub(crate) fn add_inner_memory(memory: &mut BTreeMap<String, u64>, tables: &[Table]) {
    for t in tables {
        *memory.entry(t.name.to_owned()).or_default() += u64::from(t.arrays) * t.inner_bytes;
    }
}

/// Every slot of the source table, by line of two: `SOURCES` as an array
/// of arrays, or as the plain array an earlier version pinned (`smbwatch
/// status` of a daemon not yet restarted after an upgrade).
pub(crate) fn source_slots(
    map: &Map,
    mut each: impl FnMut(SourceSlot),
) -> Result<(), DataplaneError> {
    let name = SOURCES_MAP;
    if let Map::Array(_) = map {
        let arr: Array<_, SourceSlot> =
            Array::try_from(map).map_err(|source| map_err("open", name, source))?;
        for slot in arr.iter() {
            each(slot.map_err(|source| map_err("read", name, source))?);
        }
        return Ok(());
    }
    let outer: ArrayOfMaps<&MapData, Array<MapData, [SourceSlot; 2]>> =
        ArrayOfMaps::try_from(map).map_err(|source| map_err("open", name, source))?;
    for i in 0..outer.len() {
        let inner = outer
            .get(&i, 0)
            .map_err(|source| map_err("open inner array of", name, source))?;
        for line in inner.iter() {
            let [a, b] = line.map_err(|source| map_err("read", name, source))?;
            each(a);
            each(b);
        }
    }
    Ok(())
}
