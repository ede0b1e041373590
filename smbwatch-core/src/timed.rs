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

use std::collections::{hash_map::Entry, HashMap, VecDeque};
use std::hash::Hash;
use std::mem::size_of;
use std::net::IpAddr;

use chrono::{DateTime, TimeDelta, Utc};

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
    /// Sequence number of the next entry of the same key ([`NONE`]: last).
    next: u64,
}

/// A key's entries in the ring: sequence numbers of its oldest and newest.
#[derive(Clone, Copy, Debug)]
struct Chain {
    first: u64,
    last: u64,
}

/// See the module documentation.
///
/// Layout: every entry lives in one ring in insertion order (no allocation
/// per key or per entry), and the map holds per key the sequence numbers
/// of its first and last entry; a key's entries are chained through the
/// ring. Entries only ever leave from the front (prune, eviction), and the
/// front entry is always the oldest of its key, so removing it is one map
/// update. Under a flood of new keys (a new gateway pair per event) an
/// insert and an eviction are one hash lookup each and copy nothing large;
/// the previous layout (a map of per-key `VecDeque`s) allocated a buffer
/// of four values per key and spent half its time in `malloc`, `free` and
/// `memmove`.
#[derive(Debug)]
pub(crate) struct TimedIndex<K, V> {
    /// Keys are attacker-controlled (addresses from spoofed packets and
    /// forwarded logs): a per-process keyed hasher, and aHash is several
    /// times cheaper than SipHash on these small keys.
    map: HashMap<K, Chain, ahash::RandomState>,
    ring: VecDeque<Slot<K, V>>,
    /// Sequence number of `ring[0]`.
    base: u64,
    cap: usize,
    bytes: usize,
    evicted: u64,
}

impl<K: Hash + Eq + Clone + HeapSize, V: HeapSize> TimedIndex<K, V> {
    /// At most `cap` entries (at least 1).
    pub fn new(cap: usize) -> Self {
        Self {
            map: HashMap::default(),
            ring: VecDeque::new(),
            base: 0,
            cap: cap.max(1),
            bytes: 0,
            evicted: 0,
        }
    }

    /// Accounted size of one entry: its ring slot and its key's map slot,
    /// each with the slack of its container (the ring doubles: up to two
    /// slots per entry; the map keeps at most 7/8 of a power of two of
    /// buckets full: up to 16/7 buckets of slot and control byte per key),
    /// and the heap bytes of the key (stored twice) and the value. At or
    /// above the real use.
    fn cost(key: &K, v: &V) -> usize {
        2 * size_of::<Slot<K, V>>()
            + (16 * (size_of::<(K, Chain)>() + 1)).div_ceil(7)
            + 2 * key.heap_size()
            + v.heap_size()
    }

    fn slot(&self, seq: u64) -> &Slot<K, V> {
        &self.ring[(seq - self.base) as usize]
    }

    fn slot_mut(&mut self, seq: u64) -> &mut Slot<K, V> {
        &mut self.ring[(seq - self.base) as usize]
    }

    /// Add an entry, evicting the oldest-inserted one when full.
    pub fn insert(&mut self, ts: DateTime<Utc>, key: K, v: V) {
        if self.ring.len() >= self.cap {
            self.evict_oldest();
        }
        self.bytes += Self::cost(&key, &v);
        let seq = self.base + self.ring.len() as u64;
        match self.map.entry(key.clone()) {
            Entry::Occupied(mut e) => {
                let last = std::mem::replace(&mut e.get_mut().last, seq);
                self.ring[(last - self.base) as usize].next = seq;
            }
            Entry::Vacant(e) => {
                e.insert(Chain {
                    first: seq,
                    last: seq,
                });
            }
        }
        self.ring.push_back(Slot {
            entry: (ts, v),
            key,
            next: NONE,
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
        self.base += 1;
        self.bytes -= Self::cost(&slot.key, &slot.entry.1);
        // The front entry is the oldest of its key: the first of its chain.
        if let Entry::Occupied(mut e) = self.map.entry(slot.key) {
            if slot.next == NONE {
                e.remove();
            } else {
                e.get_mut().first = slot.next;
            }
        }
        true
    }

    /// Sequence numbers of one key's entries, oldest first.
    fn chain(&self, key: &K) -> impl Iterator<Item = u64> + '_ {
        let mut at = self.map.get(key).map(|c| c.first);
        std::iter::from_fn(move || {
            let seq = at?;
            let next = self.slot(seq).next;
            at = (next != NONE).then_some(next);
            Some(seq)
        })
    }

    /// Entries of one key, oldest first.
    pub fn get(&self, key: &K) -> impl Iterator<Item = &(DateTime<Utc>, V)> {
        self.chain(key).map(|seq| &self.slot(seq).entry)
    }

    /// Change the entries of one key in place, oldest first; their sizes
    /// are accounted again afterwards.
    pub fn modify(&mut self, key: &K, mut f: impl FnMut(DateTime<Utc>, &mut V)) {
        let mut at = self.map.get(key).map(|c| c.first);
        while let Some(seq) = at {
            let slot = self.slot_mut(seq);
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
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(s: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(s, 0).unwrap()
    }

    #[test]
    fn cap_evicts_oldest_inserted() {
        let mut ix = TimedIndex::new(2);
        ix.insert(t(10), "a".to_string(), 1u32);
        ix.insert(t(5), "b".to_string(), 2);
        ix.insert(t(20), "a".to_string(), 3);
        assert_eq!(ix.len(), 2);
        assert_eq!(ix.evicted(), 1);
        let a = "a".to_string();
        assert_eq!(ix.get(&a).map(|e| e.1).collect::<Vec<_>>(), vec![3]);
        assert_eq!(ix.get(&"b".to_string()).count(), 1);
    }

    #[test]
    fn prune_by_time_in_insertion_order() {
        let mut ix = TimedIndex::new(10);
        ix.insert(t(1), 1u8, ());
        ix.insert(t(2), 2u8, ());
        ix.insert(t(9), 3u8, ());
        ix.insert(t(3), 4u8, ());
        ix.prune(t(5));
        // 1 and 2 go; 4 is queued behind 9 and waits for it.
        assert_eq!(ix.len(), 2);
        assert_eq!(ix.get(&1).count(), 0);
        ix.prune(t(10));
        assert_eq!(ix.len(), 0);
        assert_eq!(ix.iter().count(), 0);
        assert_eq!(ix.bytes, 0, "accounting returns to zero");
    }

    /// 60 KB strings, the size that grew the old count-capped tables to
    /// gigabytes: the accounted bytes stay within the budget, the oldest
    /// entries go, and the newest stay.
    #[test]
    fn byte_budget_evicts_oldest_large_entries() {
        const BUDGET: usize = 1 << 20;
        let mut big = TimedIndex::new(1_000_000);
        let mut small = TimedIndex::new(1_000_000);
        small.insert(t(0), 7u16, ());
        let small_bytes = small.bytes;
        for i in 0..100u32 {
            big.insert(t(i64::from(i)), i, "x".repeat(60_000));
            enforce_budget(BUDGET, &mut [&mut big, &mut small]);
            assert!(big.bytes + small.bytes <= BUDGET, "after insert {i}");
        }
        let kept: Vec<u32> = {
            let mut k: Vec<u32> = big.iter().map(|(k, _)| *k).collect();
            k.sort();
            k
        };
        assert!(kept.len() >= 15 && kept.len() <= 17, "{}", kept.len());
        assert_eq!(*kept.last().unwrap(), 99, "the newest stays");
        assert_eq!(kept[0], 100 - kept.len() as u32, "the oldest went");
        assert_eq!(big.evicted(), 100 - kept.len() as u64);
        assert_eq!(small.len(), 1, "the small table was not the largest");
        assert_eq!(small.bytes, small_bytes);
        assert_eq!(
            total_bytes(&[&big, &small]),
            big.bytes + small.bytes,
            "sum of the tables"
        );
        // One entry bigger than the whole budget does not stay either.
        big.insert(t(200), 1000, "y".repeat(2 * BUDGET));
        enforce_budget(BUDGET, &mut [&mut big, &mut small]);
        assert!(big.bytes + small.bytes <= BUDGET);
        assert_eq!(big.get(&1000).count(), 0);
    }

    #[test]
    fn modify_reaccounts_the_entry() {
        let mut ix: TimedIndex<u8, Option<String>> = TimedIndex::new(4);
        ix.insert(t(1), 1, None);
        let before = ix.bytes;
        ix.modify(&1, |_, v| *v = Some("z".repeat(1000)));
        assert_eq!(ix.bytes, before + 1000);
        ix.prune(t(2));
        assert_eq!(ix.bytes, 0);
    }

    #[test]
    fn ref_clock_admits_up_to_max_ahead_and_only_the_caller_moves_it() {
        let mut c = RefClock::new(std::time::Duration::from_secs(300));
        assert_eq!(c.admit(t(4_102_444_800)), Ok(()), "no reference yet");
        c.advance(t(1000));
        assert_eq!(c.admit(t(1300)), Ok(()));
        let err = c.admit(t(1301)).unwrap_err();
        assert_eq!(err.now, t(1000));
        assert!(
            err.to_string()
                .contains("is 5m 1s ahead of smbwatch's clock"),
            "{err}"
        );
        c.advance(t(900));
        assert!(c.admit(t(1301)).is_err(), "never backwards");
        assert_eq!(c.cutoff(TimeDelta::seconds(100)), Some(t(900)));
        assert_eq!(c.cutoff(TimeDelta::MAX), None);
    }
}
