//! A fixed-size hash index from 32-bit hashes to slab slots.
//!
//! Under churn every event looks up a new source, inserts it and removes
//! the evicted one, so the index's cache misses are most of the cost. Here
//! an entry's tag and slot sit in the same 64-byte bucket (10 entries and
//! an overflow count), so a lookup, an insert into the same bucket or a
//! removal is one cache line, which can be prefetched. The bucket array
//! starts small (a compact index is a cached index) and doubles at 60 %
//! load up to its size for the cap, about 11 bytes per entry of the cap;
//! from there it never grows or rehashes, so at the cap every operation is
//! O(1) expected and allocation-free.
//!
//! Probing goes on to the next bucket only while the bucket passed has a
//! non-zero overflow count (entries whose home is at or before it but that
//! live after it), so a miss usually reads one bucket; a removal decrements
//! the counts its entry incremented.

/// Entries per bucket.
const WAYS: usize = 10;

/// Entries per bucket on average at capacity (60 % load).
const LOAD: usize = 6;

#[derive(Clone, Copy, Default)]
#[repr(C, align(64))]
struct Bucket {
    /// 16 bits of the hash (never 0); 0 marks a free way.
    tags: [u16; WAYS],
    /// Entries that passed this bucket full (saturates, then stays).
    overflow: u16,
    _pad: u16,
    slots: [u32; WAYS],
}

impl Bucket {
    /// A bit per way holding `tag`, without branches (vectorised).
    fn matches(&self, tag: u16) -> u32 {
        self.tags
            .iter()
            .enumerate()
            .fold(0, |m, (i, &t)| m | u32::from(t == tag) << i)
    }
}

/// See the module documentation.
pub(crate) struct Index {
    buckets: Vec<Bucket>,
    len: usize,
    /// Buckets at the cap: growth stops there.
    max_buckets: usize,
}

fn tag(hash: u32) -> u16 {
    // The low bits; the home bucket comes from the high ones.
    (hash as u16).max(1)
}

impl Index {
    /// An index for at most `capacity` entries, allocated for `initial`.
    pub fn new(initial: usize, capacity: usize) -> Self {
        let max_buckets = Self::buckets_for(capacity);
        Self {
            buckets: vec![Bucket::default(); Self::buckets_for(initial).min(max_buckets)],
            len: 0,
            max_buckets,
        }
    }

    fn buckets_for(entries: usize) -> usize {
        entries.div_ceil(LOAD).max(1)
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.buckets.len() * std::mem::size_of::<Bucket>()
    }

    /// Most bytes the index holds per entry while it grows (it doubles at
    /// 60 % load, so at most 2 × 10/6 of an entry's share of a bucket).
    pub const MAX_BYTES_PER_ENTRY: usize = (2 * std::mem::size_of::<Bucket>()).div_ceil(LOAD);

    /// Most bytes an index for `capacity` entries holds.
    pub fn bytes_for(capacity: usize) -> usize {
        Self::buckets_for(capacity) * std::mem::size_of::<Bucket>()
    }

    fn home(&self, hash: u32) -> usize {
        // Multiply-shift range reduction: any bucket count, no modulo.
        ((u64::from(hash) * self.buckets.len() as u64) >> 32) as usize
    }

    fn next(&self, b: usize) -> usize {
        if b + 1 == self.buckets.len() {
            0
        } else {
            b + 1
        }
    }

    /// Prefetch the bucket `hash` is looked up in (see [`super::prefetch`]).
    pub fn prefetch(&self, hash: u32) {
        super::prefetch(&self.buckets[self.home(hash)]);
    }

    /// The slot with `hash` for which `eq` holds.
    pub fn find(&self, hash: u32, mut eq: impl FnMut(u32) -> bool) -> Option<u32> {
        let tag = tag(hash);
        let mut b = self.home(hash);
        for _ in 0..self.buckets.len() {
            let bucket = &self.buckets[b];
            let mut hits = bucket.matches(tag);
            while hits != 0 {
                let i = hits.trailing_zeros() as usize;
                if eq(bucket.slots[i]) {
                    return Some(bucket.slots[i]);
                }
                hits &= hits - 1;
            }
            if bucket.overflow == 0 {
                return None;
            }
            b = self.next(b);
        }
        None
    }

    /// Add `slot` under `hash`; `hash_of` gives the hash of any slot held,
    /// for the rehash when the index doubles. The caller keeps `len` within
    /// the capacity (the index has room for 10/6 of it, so a free way
    /// always exists).
    pub fn insert(&mut self, hash: u32, slot: u32, hash_of: impl Fn(u32) -> u32) {
        if self.len >= self.buckets.len() * LOAD && self.buckets.len() < self.max_buckets {
            self.grow(hash_of);
        }
        self.place(hash, slot);
    }

    /// Double the buckets (at most to the cap's) and re-place every entry.
    fn grow(&mut self, hash_of: impl Fn(u32) -> u32) {
        let n = (self.buckets.len() * 2).min(self.max_buckets);
        let old = std::mem::replace(&mut self.buckets, vec![Bucket::default(); n]);
        self.len = 0;
        for bucket in &old {
            for i in 0..WAYS {
                if bucket.tags[i] != 0 {
                    self.place(hash_of(bucket.slots[i]), bucket.slots[i]);
                }
            }
        }
    }

    fn place(&mut self, hash: u32, slot: u32) {
        let tag = tag(hash);
        let mut b = self.home(hash);
        for _ in 0..self.buckets.len() {
            let bucket = &mut self.buckets[b];
            if let Some(i) = bucket.tags.iter().position(|&t| t == 0) {
                bucket.tags[i] = tag;
                bucket.slots[i] = slot;
                self.len += 1;
                return;
            }
            bucket.overflow = bucket.overflow.saturating_add(1);
            b = self.next(b);
        }
        unreachable!("index over capacity");
    }

    /// Remove `slot`, stored under `hash`; whether it was there.
    pub fn remove(&mut self, hash: u32, slot: u32) -> bool {
        let tag = tag(hash);
        let home = self.home(hash);
        let mut b = home;
        for _ in 0..self.buckets.len() {
            let bucket = &mut self.buckets[b];
            let hits = bucket.matches(tag);
            if let Some(i) = (0..WAYS).find(|&i| hits >> i & 1 != 0 && bucket.slots[i] == slot) {
                bucket.tags[i] = 0;
                self.len -= 1;
                let mut c = home;
                while c != b {
                    let o = &mut self.buckets[c].overflow;
                    if *o != u16::MAX {
                        *o -= 1;
                    }
                    c = self.next(c);
                }
                return true;
            }
            if bucket.overflow == 0 {
                return false;
            }
            b = self.next(b);
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_is_one_cache_line() {
        assert_eq!(std::mem::size_of::<Bucket>(), 64);
    }

    #[test]
    fn overflowing_buckets_stay_findable_and_recover() {
        // Two buckets; every hash homes in bucket 0, so it overflows into 1.
        let mut ix = Index::new(12, 12);
        let hash = |i: u32| 0x0000_0100 + i; // high bits 0: home bucket 0
        for i in 0..15 {
            ix.insert(hash(i), i, |_| unreachable!("no growth"));
        }
        assert_eq!(ix.len(), 15);
        for i in 0..15 {
            assert_eq!(ix.find(hash(i), |s| s == i), Some(i), "{i}");
        }
        assert_eq!(ix.buckets[0].overflow, 5);
        assert_eq!(ix.find(hash(99), |_| true), None);
        // Removing the overflowed ones resets the count.
        for i in 10..15 {
            assert!(ix.remove(hash(i), i));
        }
        assert_eq!(ix.buckets[0].overflow, 0);
        assert!(!ix.remove(hash(12), 12));
        for i in 0..10 {
            assert!(ix.remove(hash(i), i));
        }
        assert_eq!(ix.len(), 0);
    }

    #[test]
    fn churn_keeps_it_consistent() {
        // A sliding set of 1,000 live keys over 100,000 inserts.
        // Starts at 2 buckets and grows to the cap's 167.
        let mut ix = Index::new(12, 1000);
        let h = |i: u32| i.wrapping_mul(0x9e37_79b9);
        for i in 0..100_000u32 {
            if i >= 1000 {
                assert!(ix.remove(h(i - 1000), i - 1000));
            }
            ix.insert(h(i), i, h);
        }
        assert_eq!(ix.bytes(), Index::bytes_for(1000));
        assert_eq!(ix.len(), 1000);
        for i in 99_000..100_000 {
            assert_eq!(ix.find(h(i), |s| s == i), Some(i));
        }
        assert_eq!(ix.find(h(5), |s| s == 5), None);
    }
}
