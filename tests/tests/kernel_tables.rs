//! The repeat filter and the source table as arrays of arrays of at most
//! 31 KiB each: every outer slot holds an inner array of the template's
//! size, sized from the load options; the pins `smbwatch status` reads work
//! through them; pins of the earlier plain-array layout are still read,
//! and are replaced when a new daemon takes the directory over.

use std::path::PathBuf;

use aya::maps::{Array, ArrayOfMaps, Map, MapData, PerCpuArray};
use integration_tests::{netns::unique_tag, require_root};
use smbwatch::{
    dataplane::{testrun, AnswerCheck, Dataplane, LoadOptions, PinnedMaps},
    packet::Segment,
};
use smbwatch_common::{
    stat, AddrKey, PairBucket, SourceSlot, PAIRS_MAP, SEEN_INNER_LINES, SEEN_MAP, SOURCES_MAP,
    SOURCE_INNER_LINES, STATS_MAP,
};

/// A directory on the BPF file system, removed with whatever is in it.
struct BpfDir(PathBuf);

impl BpfDir {
    fn new(what: &str) -> Self {
        let dir = PathBuf::from(format!("/sys/fs/bpf/smbw-{what}-{}", unique_tag()));
        smbwatch::dataplane::ensure_bpffs(&dir).expect("bpffs");
        Self(dir)
    }
}

impl Drop for BpfDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn opts() -> LoadOptions {
    LoadOptions {
        // 500 source lines: 3 inner arrays of 198.
        max_pairs: 40_000,
        max_sources: 1_000,
        events_per_cpu: 0,
        answers: AnswerCheck::Any,
        ..LoadOptions::default()
    }
}

/// Lengths of every inner array of the pinned table `name`; an empty slot
/// fails the lookup.
fn inner_lengths<V: aya::Pod>(dir: &BpfDir, name: &str) -> Vec<u32> {
    let map = Map::from_map_data(MapData::from_pin(dir.0.join(name)).unwrap()).unwrap();
    let outer: ArrayOfMaps<MapData, Array<MapData, V>> = map.try_into().unwrap();
    (0..outer.len())
        .map(|i| {
            outer
                .get(&i, 0)
                .unwrap_or_else(|e| panic!("{name}[{i}]: {e}"))
                .len()
        })
        .collect()
}

#[test]
fn every_outer_slot_holds_an_inner_array_sized_from_the_options() {
    require_root();
    let dir = BpfDir::new("tables");
    let mut dp = Dataplane::load(&opts()).expect("load");
    let _pins = dp.pin(&dir.0).expect("pin");
    // SOURCES is pinned; SEEN is checked through its memory. The pair
    // cache stays one plain array (16,384 buckets for 40,000 pairs).
    let pairs = Map::from_map_data(MapData::from_pin(dir.0.join(PAIRS_MAP)).unwrap()).unwrap();
    let pairs: Array<MapData, PairBucket> = pairs.try_into().unwrap();
    assert_eq!(pairs.len(), 1 << 14);
    assert_eq!(
        inner_lengths::<[SourceSlot; 2]>(&dir, SOURCES_MAP),
        vec![SOURCE_INNER_LINES; 3]
    );
    // The kernel charges each inner array its values plus the array header.
    let mem = dp.map_memory().expect("memory");
    let seen = mem[SEEN_MAP];
    let seen_values = 1058 * u64::from(SEEN_INNER_LINES) * 16;
    assert!(
        seen > seen_values && seen < seen_values + 1058 * 1024 + 16384,
        "SEEN {seen} bytes"
    );

    // One source to three hosts: tracked in SOURCES, read through the pins
    // as `smbwatch status` does.
    let fd = dp.program_fd().unwrap();
    let src: std::net::IpAddr = "203.0.113.50".parse().unwrap();
    for host in ["198.51.100.1", "198.51.100.2", "198.51.100.3"] {
        let f = Segment::syn(src, host.parse().unwrap(), 40000, 445).frame();
        testrun::run(fd, &f, 1).unwrap();
    }
    let pinned = PinnedMaps::open(&dir.0).expect("open pins");
    let sources = pinned.sources().expect("sources");
    assert_eq!(sources.len(), 1, "{sources:?}");
    assert_eq!(sources[0].0, src);
    assert_eq!(sources[0].1.new_pairs, 3);
    assert_eq!(pinned.stats().unwrap().get(stat::NEW_PAIRS), 3);
}

/// An upgrade: the earlier version pinned plain arrays. `status` still
/// reads them while that daemon runs; the new daemon replaces them with
/// arrays of arrays when it takes the directory over.
#[test]
fn pins_of_the_plain_array_layout_are_read_and_replaced() {
    require_root();
    let dir = BpfDir::new("oldpins");
    std::fs::create_dir_all(&dir.0).unwrap();
    Array::<MapData, PairBucket>::create(1 << 10, 0)
        .unwrap()
        .pin(dir.0.join(PAIRS_MAP))
        .unwrap();
    let mut sources = Array::<MapData, SourceSlot>::create(64, 0).unwrap();
    let slot = SourceSlot {
        addr: AddrKey::from_v4([192, 0, 2, 9]),
        first_seen_ns: 1,
        new_pairs: 7,
        ..SourceSlot::default()
    };
    sources.set(5, slot, 0).unwrap();
    sources.pin(dir.0.join(SOURCES_MAP)).unwrap();
    PerCpuArray::<MapData, u64>::create(stat::COUNT, 0)
        .unwrap()
        .pin(dir.0.join(STATS_MAP))
        .unwrap();

    let old = PinnedMaps::open(&dir.0).expect("open old pins");
    let read = old.sources().expect("old SOURCES");
    assert_eq!(read.len(), 1);
    assert_eq!(read[0].0, "192.0.2.9".parse::<std::net::IpAddr>().unwrap());
    assert_eq!(read[0].1.new_pairs, 7);
    drop(old);

    let mut dp = Dataplane::load(&opts()).expect("load");
    let _pins = dp.pin(&dir.0).expect("pin over the old layout");
    let map = Map::from_map_data(MapData::from_pin(dir.0.join(SOURCES_MAP)).unwrap()).unwrap();
    assert!(matches!(map, Map::ArrayOfMaps(_)), "{map:?}");
    let fresh = PinnedMaps::open(&dir.0).expect("open new pins");
    assert!(fresh.sources().unwrap().is_empty(), "a fresh table");
}
