//! The program's load-time settings and the table sizes and bounds it is
//! built with: what the loader writes into the read-only global and what
//! the daemon's sizing and docs derive from.

use crate::sample;

/// The program's load-time settings, one read-only global ([`SETTINGS_GLOBAL`]):
/// the verifier folds them into constants.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settings {
    /// Monitored TCP ports in host byte order, 0 = unused slot.
    pub ports: [u16; MAX_PORTS],
    /// Secret per-load hash key: an attacker who cannot see it cannot aim
    /// sources or pairs at one slot.
    pub hash_key: u64,
    /// Pair buckets minus one (a power of two minus one).
    pub pair_mask: u32,
    /// Inner arrays of the source table (each [`SOURCE_INNER_LINES`] lines of two slots).
    pub source_outer: u32,
    /// Inner arrays of the repeat filter (each [`SEEN_INNER_LINES`] lines).
    pub seen_outer: u32,
    /// [`ANSWERS_OTHER_INGRESS`] or [`ANSWERS_ANY_INGRESS`].
    pub answers: u32,
    /// Nanoseconds of budget credit one event costs (`1e9 / events per
    /// second per CPU`); 0 = no budget.
    pub event_cost_ns: u64,
    /// Most credit that accumulates (the burst), ns.
    pub burst_ns: u64,
    /// Half the fan-out window: the distinct-destination bitmaps rotate at it.
    pub half_window_ns: u64,
    /// Length of one repeat-filter generation (ns, a power of two): a
    /// source counts as repeating when seen within one to two generations.
    pub seen_gen_shift: u32,
    /// 1 when run by replay: the ingress and the packet's time come from
    /// [`ReplayMeta`] in front of the frame.
    pub replay: u32,
    /// Length of an activity epoch in the program's clock ticks: jiffies
    /// (`bpf_jiffies64`, inlined by the JIT: no helper call on the known-pair
    /// path), or in replay nanoseconds of capture time.
    pub epoch_ticks: u64,
    /// Nanoseconds per jiffy (the kernel's tick, `TICK_NSEC`): the program's
    /// clock for events, budgets and windows is `bpf_jiffies64() × tick_ns`,
    /// inlined by the JIT (a load and a multiply, no helper call). Its
    /// origin is not boot (jiffies start at `INITIAL_JIFFIES`): the daemon
    /// calibrates it against CLOCK_MONOTONIC (`dataplane::KernelClock`).
    /// 0 = the `bpf_ktime_get_coarse_ns` helper instead (CLOCK_MONOTONIC_COARSE,
    /// the same tick resolution): only for the benchmark's same-object
    /// comparison; the configuration cannot select it.
    pub tick_ns: u64,
    /// Sampling ([`sample`](crate::sample)): segments sampled per direction of a
    /// connection; 0 = sampling off.
    pub sample_segments: u32,
    /// Bytes sampled of each segment (at most [`sample::SAMPLE_MAX_BYTES`](crate::sample::SAMPLE_MAX_BYTES)).
    pub sample_bytes: u32,
    /// Sampling flow-table slots minus one (a power of two minus one).
    pub sample_flow_mask: u32,
    /// New sampled connections per source per window; 0 = no limit.
    pub sample_source_flows: u32,
    /// Budget credit (ns) 1 KiB of sample ring costs; 0 = no budget.
    pub sample_ns_per_kib: u64,
    /// Most sample credit that accumulates (the burst), ns.
    pub sample_burst_ns: u64,
}

/// XDP metadata replay puts in front of each frame: where the packet came
/// in and when (the capture's clock drives the activity epochs).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReplayMeta {
    /// The capture's interface id (plus one) standing in for the ingress.
    pub ingress: u32,
    /// Explicit padding.
    pub _pad: u32,
    /// The packet's capture timestamp, ns since the Unix epoch.
    pub ts_ns: u64,
}

/// Answers count only when they arrive on another ingress (interface or
/// VLAN) than their SYN: forged answers from the client's side are ignored.
pub const ANSWERS_OTHER_INGRESS: u32 = 0;
/// Answers count from any ingress (single-interface deployments, SPAN ports).
pub const ANSWERS_ANY_INGRESS: u32 = 1;

impl Default for Settings {
    fn default() -> Self {
        DEFAULT_SETTINGS
    }
}

/// The defaults, as a constant the kernel program can be built with.
pub const DEFAULT_SETTINGS: Settings = Settings {
    ports: [445, 0, 0, 0],
    hash_key: 0x5bd1_e995_9e37_79b9,
    pair_mask: DEFAULT_PAIR_BUCKETS - 1,
    source_outer: outer_arrays(DEFAULT_SOURCE_SLOTS / 2, SOURCE_INNER_LINES),
    seen_outer: outer_arrays(DEFAULT_SEEN_WORDS, SEEN_INNER_LINES),
    answers: ANSWERS_OTHER_INGRESS,
    event_cost_ns: 1_000_000_000 / DEFAULT_EVENTS_PER_CPU,
    burst_ns: 100_000_000,
    half_window_ns: 30_000_000_000,
    seen_gen_shift: 33,
    replay: 0,
    // One hour at HZ=250; the loader sets it from the configured epoch and
    // the kernel's tick.
    epoch_ticks: 3600 * 250,
    // HZ=250; the loader sets the kernel's.
    tick_ns: 4_000_000,
    sample_segments: sample::DEFAULT_SAMPLE_SEGMENTS,
    sample_bytes: sample::DEFAULT_SAMPLE_BYTES,
    sample_flow_mask: sample::DEFAULT_SAMPLE_FLOWS - 1,
    sample_source_flows: sample::DEFAULT_SAMPLE_SOURCE_FLOWS,
    sample_ns_per_kib: 1_000_000_000 * 1024 / sample::DEFAULT_SAMPLE_BYTES_PER_CPU,
    sample_burst_ns: 250_000_000,
};

/// Name of the read-only global holding [`Settings`].
pub const SETTINGS_GLOBAL: &str = "SETTINGS";

/// How many monitored ports the program can hold; 0 marks an unused slot.
pub const MAX_PORTS: usize = 4;
/// Default pair-cache buckets (×4 ways = 1,048,576 pairs, 16 MiB).
pub const DEFAULT_PAIR_BUCKETS: u32 = 1 << 18;
/// Default source-table slots asked for (×80 B = 10 MiB; 331 inner arrays).
pub const DEFAULT_SOURCE_SLOTS: u32 = 1 << 17;
/// Default repeat-filter words per generation (×2 generations × 8 B = 32 MiB;
/// 56 usable bits per word: 117 million bits per generation; 1,058 inner arrays).
pub const DEFAULT_SEEN_WORDS: u32 = 1 << 21;
/// Most bytes of values one inner array of a large table holds. The repeat
/// filter and the source table are arrays of arrays because the kernel
/// allocates an array map whose whole allocation (its `struct bpf_array`
/// header, 312 bytes on 6.18, plus the values) is at most 32 KiB
/// (`PAGE_SIZE << PAGE_ALLOC_COSTLY_ORDER`) with kmalloc, in the direct
/// map, which it maps with huge pages; a larger one is vmalloc'd in 4 KiB
/// pages, where a random line costs a TLB miss and a page walk
/// (BENCHMARKS.md, "Arrays of arrays", for what that saved: less than
/// hoped). 31 KiB leaves 1 KiB for the header.
pub const INNER_ARRAY_BYTES: u32 = 31 * 1024;
/// Repeat-filter lines (two generations' 8-byte words side by side) per
/// inner array.
pub const SEEN_INNER_LINES: u32 = INNER_ARRAY_BYTES / 16;
/// Source-table lines per inner array: a line is a source's two candidate
/// slots (2 × 80 bytes), one value of the inner array.
pub const SOURCE_INNER_LINES: u32 = INNER_ARRAY_BYTES / 160;
/// Inner arrays needed for `entries` entries at `inner` per array (at least one).
pub const fn outer_arrays(entries: u32, inner: u32) -> u32 {
    let n = entries.div_ceil(inner);
    if n == 0 {
        1
    } else {
        n
    }
}

/// Default event budget per CPU per second (normal class; the priority
/// class gets the same again).
pub const DEFAULT_EVENTS_PER_CPU: u64 = 100_000;
/// Bits of a repeat-filter word that hold set bits; the top 8 hold the generation.
pub const SEEN_BITS_PER_WORD: u32 = 56;
/// Default ring-buffer size in bytes (a power of two, a multiple of the page size).
pub const DEFAULT_RING_BYTES: u32 = 8 << 20;
/// Unread ring-buffer bytes past which the program wakes the reader at
/// once; below it the daemon drains every [`RING_DRAIN_INTERVAL_MS`].
pub const RING_WAKEUP_BYTES: u64 = 256 * 1024;
/// How often the daemon drains the ring buffer without a wake-up.
pub const RING_DRAIN_INTERVAL_MS: u64 = 20;
/// How many IPv6 extension headers the program walks before giving up and
/// reporting the packet as unparsed. Linux walks any number; a chain this
/// long has no legitimate use (RFC 8504 lets hosts cap it far lower).
pub const MAX_IPV6_EXT: usize = 16;
/// How many VLAN tags the program walks before giving up and reporting the
/// frame as unparsed (802.1Q, 802.1ad and 0x9100 TPIDs alike).
pub const MAX_VLAN_TAGS: usize = 16;
/// Slots of the unparsed-report rate limiter (8 bytes each).
pub const UNPARSED_SLOTS: u32 = 4096;
/// A source past the walk's bounds is reported at most once per window of
/// 2^36 ns (about 69 s), per rate-limiter slot.
pub const UNPARSED_WINDOW_SHIFT: u32 = 36;
/// Tracked sources whose estimate is below this use the priority budget;
/// past it the source has long been alerted on and competes like any other.
pub const PRIORITY_FANOUT_CAP: u16 = 64;
