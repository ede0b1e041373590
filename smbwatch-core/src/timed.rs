//! A bounded, time-pruned multimap: the state behind host-rule dedup and
//! correlation, with the byte accounting and the reference clock that
//! bound it.
//!
//! Entries are kept in one ring in insertion order, chained per key, so
//! evicting the oldest entry (cap reached)
//! or pruning old ones is O(1) per entry. Events may arrive out of time
//! order: pruning walks the insertion queue and stops at the first entry
//! newer than the cutoff, so an old entry queued behind a newer one lives a
//! little longer — the caps still bound memory.
//!
//! Two caps: entries, and bytes ([`HeapSize`] plus a fixed cost per
//! entry). Host records carry strings of attacker-chosen length (a 60 KB
//! image path is a valid record), so a count alone does not bound memory.
//! The byte budget of an owner with several tables is shared: see
//! [`enforce_budget`].

use std::collections::VecDeque;
use std::hash::Hash;
use std::mem::size_of;
use std::net::IpAddr;

use chrono::{DateTime, TimeDelta, Utc};

use crate::detect::index::Index;

/// Heap bytes a value owns beyond its inline size (what a byte budget
/// must count besides `size_of`).
pub(crate) trait HeapSize {
    /// Bytes allocated on the heap for this value.
    fn heap_size(&self) -> usize;
}

impl HeapSize for String {
    fn heap_size(&self) -> usize {
        self.capacity()
    }
}

impl<T: HeapSize> HeapSize for Option<T> {
    fn heap_size(&self) -> usize {
        self.as_ref().map_or(0, HeapSize::heap_size)
    }
}

impl<T: HeapSize> HeapSize for Box<T> {
    fn heap_size(&self) -> usize {
        size_of::<T>() + T::heap_size(self)
    }
}

impl<T: HeapSize> HeapSize for Vec<T> {
    fn heap_size(&self) -> usize {
        self.capacity() * size_of::<T>() + self.iter().map(HeapSize::heap_size).sum::<usize>()
    }
}

macro_rules! no_heap {
    ($($t:ty),*) => {$(
        impl HeapSize for $t {
            fn heap_size(&self) -> usize {
                0
            }
        }
    )*};
}
no_heap!((), bool, u8, u16, u32, u64, IpAddr, DateTime<Utc>);

macro_rules! tuple_heap {
    ($($n:tt $t:ident),+) => {
        impl<$($t: HeapSize),+> HeapSize for ($($t,)+) {
            fn heap_size(&self) -> usize {
                0 $(+ self.$n.heap_size())+
            }
        }
    };
}
tuple_heap!(0 A, 1 B);
tuple_heap!(0 A, 1 B, 2 C);
tuple_heap!(0 A, 1 B, 2 C, 3 D);

/// "No next entry of this key" in [`Slot::next`].
const NONE: u64 = u64::MAX;

/// One entry in the insertion ring.
#[derive(Debug)]
struct Slot<K, V> {
    entry: (DateTime<Utc>, V),
    key: K,
    /// The key's hash (the index's, kept for the removal).
    hash: u32,
    /// Sequence number of the next entry of the same key ([`NONE`]: last).
    next: u64,
    /// In the first entry of a key: the sequence number of its last.
    last: u64,
}

/// How many entries ahead of the oldest an insert prefetches the index
/// bucket of: the entry that insert evicts a few inserts later.
const EVICT_AHEAD: usize = 4;

/// See the module documentation.
///
/// Layout: every entry lives in one ring in insertion order (no allocation
/// per key or per entry), chained per key (`next`; the first entry of a
/// key also knows its last). A compact hash index ([`Index`], the
/// detector's, about 11–22 bytes per entry, so a table of 65,536 pairs
/// indexes in under 1.5 MiB that stays in cache) maps a key's hash to the
/// sequence number of its first entry; the ring holds the keys. Entries
/// only ever leave from the front (prune, eviction), and the front entry
/// is always the first of its key, so removing it is one index update that
/// reads no key. Under a flood of new keys (a new gateway pair per event)
/// an insert and an eviction each touch one index bucket (the evicted
/// entry's prefetched a few inserts ahead) and the ring's tail and head.
/// The previous layout (a `HashMap` of per-key `VecDeque`s) allocated four
/// values' buffer per key and spent most of its time in `malloc`, `free`,
/// `memmove` and cache misses on a map of several MiB.
pub(crate) struct TimedIndex<K, V> {
    /// Keys are attacker-controlled (addresses from spoofed packets and
    /// forwarded logs): a per-process keyed hasher.
    hasher: ahash::RandomState,
    index: Index,
    ring: VecDeque<Slot<K, V>>,
    /// Sequence number of `ring[0]`.
    base: u64,
    cap: usize,
    bytes: usize,
    evicted: u64,
}

impl<K: std::fmt::Debug, V: std::fmt::Debug> std::fmt::Debug for TimedIndex<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TimedIndex")
            .field("entries", &self.ring.len())
            .field("cap", &self.cap)
            .field("bytes", &self.bytes)
            .field("evicted", &self.evicted)
            .finish_non_exhaustive()
    }
}

impl<K: Hash + Eq + Clone + HeapSize, V: HeapSize> TimedIndex<K, V> {
    /// At most `cap` entries (at least 1).
    pub fn new(cap: usize) -> Self {
        let cap = cap.max(1);
        Self {
            hasher: ahash::RandomState::new(),
            index: Index::new(1, cap),
            ring: VecDeque::new(),
            base: 0,
            cap,
            bytes: 0,
            evicted: 0,
        }
    }

    /// Accounted size of one entry: its ring slot with the ring's slack
    /// (it doubles: up to two slots per entry), its share of the index
    /// while that grows, and the heap bytes of the key and the value. At
    /// or above the real use.
    fn cost(key: &K, v: &V) -> usize {
        2 * size_of::<Slot<K, V>>() + Index::MAX_BYTES_PER_ENTRY + key.heap_size() + v.heap_size()
    }

    /// Bytes a table holds beyond its entries' accounted cost, whatever
    /// its size: the index's first bucket and the ring's first allocation
    /// (four slots, of which one entry accounts two). For an owner of many
    /// small tables, which counts them itself.
    pub fn fixed_bytes() -> usize {
        Index::bytes_for(1) + 2 * size_of::<Slot<K, V>>()
    }

    fn hash(&self, key: &K) -> u32 {
        let h = self.hasher.hash_one(key);
        (h ^ (h >> 32)) as u32
    }

    fn pos(&self, seq: u64) -> usize {
        (seq - self.base) as usize
    }

    /// The sequence number of the live entry whose index slot is `slot`
    /// (the index holds sequence numbers modulo 2^32; fewer than 2^32
    /// entries are ever live).
    fn seq_of(&self, slot: u32) -> u64 {
        self.base + u64::from(slot.wrapping_sub(self.base as u32))
    }

    /// The sequence number of `key`'s first entry.
    fn first(&self, hash: u32, key: &K) -> Option<u64> {
        self.index
            .find(hash, |slot| {
                self.ring[self.pos(self.seq_of(slot))].key == *key
            })
            .map(|slot| self.seq_of(slot))
    }

    /// Starts fetching the index bucket `key` is looked up in (a caller
    /// with other work to do before its insert or lookup).
    pub fn prefetch(&self, key: &K) {
        self.index.prefetch(self.hash(key));
    }

    /// Add an entry, evicting the oldest-inserted one when full.
    pub fn insert(&mut self, ts: DateTime<Utc>, key: K, v: V) {
        if self.ring.len() >= self.cap {
            self.evict_oldest();
            if let Some(s) = self.ring.get(EVICT_AHEAD) {
                self.index.prefetch(s.hash);
            }
        }
        self.bytes += Self::cost(&key, &v);
        let seq = self.base + self.ring.len() as u64;
        let hash = self.hash(&key);
        let mut last = NONE;
        match self.first(hash, &key) {
            Some(first) => {
                let i = self.pos(first);
                let prev = std::mem::replace(&mut self.ring[i].last, seq);
                let j = self.pos(prev);
                self.ring[j].next = seq;
            }
            None => {
                let ring = &self.ring;
                let base = self.base;
                self.index.insert(hash, seq as u32, |slot| {
                    ring[(u64::from(slot.wrapping_sub(base as u32))) as usize].hash
                });
                last = seq;
            }
        }
        self.ring.push_back(Slot {
            entry: (ts, v),
            key,
            hash,
            next: NONE,
            last,
        });
    }

    /// Drop entries older than `cutoff` (in insertion order, see above).
    pub fn prune(&mut self, cutoff: DateTime<Utc>) {
        while self.ring.front().is_some_and(|s| s.entry.0 < cutoff) {
            self.pop_oldest();
        }
    }

    /// Evict the oldest-inserted entry (counted); false when empty.
    pub fn evict_oldest(&mut self) -> bool {
        let popped = self.pop_oldest();
        if popped {
            self.evicted += 1;
        }
        popped
    }

    fn pop_oldest(&mut self) -> bool {
        let Some(slot) = self.ring.pop_front() else {
            return false;
        };
        let seq = self.base;
        self.base += 1;
        self.bytes -= Self::cost(&slot.key, &slot.entry.1);
        // The front entry is the first of its key: the index points at it.
        self.index.remove(slot.hash, seq as u32);
        if slot.next != NONE {
            let i = self.pos(slot.next);
            self.ring[i].last = slot.last;
            // The key's next entry becomes its first (the index does not
            // grow here: it re-places an entry it just removed).
            let (ring, base) = (&self.ring, self.base);
            self.index.insert(slot.hash, slot.next as u32, |s| {
                ring[(u64::from(s.wrapping_sub(base as u32))) as usize].hash
            });
        }
        true
    }

    /// Sequence numbers of one key's entries, oldest first.
    fn chain(&self, key: &K) -> impl Iterator<Item = u64> + '_ {
        let mut at = self.first(self.hash(key), key);
        std::iter::from_fn(move || {
            let seq = at?;
            let next = self.ring[self.pos(seq)].next;
            at = (next != NONE).then_some(next);
            Some(seq)
        })
    }

    /// Entries of one key, oldest first.
    pub fn get(&self, key: &K) -> impl Iterator<Item = &(DateTime<Utc>, V)> {
        self.chain(key).map(|seq| &self.ring[self.pos(seq)].entry)
    }

    /// Change the entries of one key in place, oldest first; their sizes
    /// are accounted again afterwards.
    pub fn modify(&mut self, key: &K, mut f: impl FnMut(DateTime<Utc>, &mut V)) {
        let mut at = self.first(self.hash(key), key);
        while let Some(seq) = at {
            let i = self.pos(seq);
            let slot = &mut self.ring[i];
            let before = Self::cost(key, &slot.entry.1);
            f(slot.entry.0, &mut slot.entry.1);
            let after = Self::cost(key, &slot.entry.1);
            at = (slot.next != NONE).then_some(slot.next);
            self.bytes = self.bytes - before + after;
        }
    }

    /// Every entry, in insertion order.
    pub fn iter(&self) -> impl Iterator<Item = (&K, &(DateTime<Utc>, V))> {
        self.ring.iter().map(|s| (&s.key, &s.entry))
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.ring.len()
    }

    /// Time of the oldest-inserted entry (the next to prune or evict).
    pub fn oldest(&self) -> Option<DateTime<Utc>> {
        self.ring.front().map(|s| s.entry.0)
    }

    /// Entries evicted because a cap (entries or bytes) was reached.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }
}

/// A table whose bytes count against a shared budget.
pub(crate) trait Budgeted {
    /// Accounted bytes held now.
    fn bytes(&self) -> usize;
    /// Evict the oldest entry (counted by the table); false when empty.
    fn evict_oldest(&mut self) -> bool;
}

impl<K: Hash + Eq + Clone + HeapSize, V: HeapSize> Budgeted for TimedIndex<K, V> {
    fn bytes(&self) -> usize {
        self.bytes
    }
    fn evict_oldest(&mut self) -> bool {
        TimedIndex::evict_oldest(self)
    }
}

/// Bring the tables together under `budget` bytes by evicting the oldest
/// entries of whichever table holds the most: the table an attacker
/// inflates with large records pays first. A single entry larger than the
/// budget is evicted too, so the total never stays above it.
pub(crate) fn enforce_budget(budget: usize, tables: &mut [&mut dyn Budgeted]) {
    loop {
        let total: usize = tables.iter().map(|t| t.bytes()).sum();
        if total <= budget {
            return;
        }
        let Some(largest) = tables.iter_mut().max_by_key(|t| t.bytes()) else {
            return;
        };
        if !largest.evict_oldest() {
            return;
        }
    }
}

/// Sum of the tables' accounted bytes.
pub(crate) fn total_bytes(tables: &[&dyn Budgeted]) -> usize {
    tables.iter().map(|t| t.bytes()).sum()
}

/// How far a host event may be dated ahead of the reference clock unless
/// configured (`[hostlog] max_ahead`): forwarders' and hosts' clocks drift
/// by seconds; minutes ahead is a wrong clock.
pub const DEFAULT_MAX_AHEAD: std::time::Duration = std::time::Duration::from_secs(5 * 60);

/// A host event dated too far ahead of the reference clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "host event dated {ts} is {ahead} ahead of smbwatch's clock ({now}); \
     more than hostlog.max_ahead ({limit}) allows: rejected (is the host's clock wrong?)",
    ahead = humantime::format_duration(std::time::Duration::from_secs((*ts - *now).num_seconds().max(0) as u64)),
    limit = humantime::format_duration(*limit)
)]
pub struct TooFarAhead {
    /// The event's time.
    pub ts: DateTime<Utc>,
    /// The reference clock.
    pub now: DateTime<Utc>,
    /// The allowed lead.
    pub limit: std::time::Duration,
}

/// The reference clock of a pure module: moved only by its caller (the
/// daemon's wall clock, replay's capture time) and by gateway events,
/// which are stamped with that same clock — never by a host event, whose
/// time comes from a host that may be wrong.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RefClock {
    now: Option<DateTime<Utc>>,
    max_ahead: std::time::Duration,
}

impl RefClock {
    /// No reference yet; host events may lead it by `max_ahead`.
    pub fn new(max_ahead: std::time::Duration) -> Self {
        Self {
            now: None,
            max_ahead,
        }
    }

    /// Move the clock to `now` (never backwards: a stepped-back wall clock
    /// does not resurrect pruned state).
    pub fn advance(&mut self, now: DateTime<Utc>) {
        self.now = Some(self.now.map_or(now, |n| n.max(now)));
    }

    /// Whether a host event dated `ts` may be used. Without a reference
    /// yet, every time is accepted (it moves nothing).
    pub fn admit(&self, ts: DateTime<Utc>) -> Result<(), TooFarAhead> {
        let Some(now) = self.now else { return Ok(()) };
        let limit = delta(self.max_ahead);
        match now.checked_add_signed(limit) {
            Some(latest) if ts > latest => Err(TooFarAhead {
                ts,
                now,
                limit: self.max_ahead,
            }),
            _ => Ok(()),
        }
    }

    /// `now - d`, when there is a reference and it does not underflow.
    pub fn cutoff(&self, d: TimeDelta) -> Option<DateTime<Utc>> {
        self.now?.checked_sub_signed(d)
    }
}

/// A std duration as a chrono one, saturating (configuration ranges keep
/// real values far below the limit).
pub(crate) fn delta(d: std::time::Duration) -> TimeDelta {
    TimeDelta::from_std(d).unwrap_or(TimeDelta::MAX)
}

/// `a + b`, saturating.
pub(crate) fn add(a: TimeDelta, b: TimeDelta) -> TimeDelta {
    a.checked_add(&b).unwrap_or(TimeDelta::MAX)
}

#[cfg(test)]
mod tests;
