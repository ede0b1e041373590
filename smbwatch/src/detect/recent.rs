//! A compact memory of sources whose records were evicted, so that a source
//! returning after its record was flushed is recognised.
//!
//! Under a spoofed flood the probation class (sources with one destination)
//! turns over in `max_sources / flood rate` seconds (2.9 s at 100,000 and
//! 35,000 new sources/s): a slow scanner's first probe is gone before its
//! second. A full record costs about 200 bytes; this keeps 4 bytes per
//! evicted source (16-bit fingerprints of the source and of its newest
//! destination) in 16-way buckets, newest first, so it remembers about
//! `8 × max_sources` evictions. A source found here with a different
//! destination has touched two: it is re-admitted into the 2–3 class,
//! where one-shot sources cannot evict it.
//!
//! Fingerprints are keyed per process (the sources are attacker-chosen).
//! A false match (two sources sharing a bucket and a 16-bit fingerprint,
//! about 16 / 65,536 per lookup) only places one source a class higher.

use super::table::Key;

/// Entries per bucket: one cache line.
const WAYS: usize = 16;

/// Remembered evictions per source slot (`max_sources`).
pub(super) const PER_SOURCE: usize = 8;

#[derive(Clone, Copy, Default)]
#[repr(align(64))]
struct Bucket([u32; WAYS]);

/// See the module documentation.
pub(super) struct Recent {
    buckets: Vec<Bucket>,
    state: ahash::RandomState,
}

impl Recent {
    /// Room for about `PER_SOURCE × max_sources` evicted sources
    /// (`4 × PER_SOURCE` bytes per source slot).
    pub fn new(max_sources: usize) -> Self {
        let n = (max_sources.saturating_mul(PER_SOURCE) / WAYS).max(1);
        Self {
            // Zeroed: the pages are only touched once a flood evicts.
            buckets: vec![Bucket::default(); n],
            state: ahash::RandomState::new(),
        }
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.buckets.len() * std::mem::size_of::<Bucket>()
    }

    /// Bucket index and source fingerprint (never 0: 0 marks a free way).
    fn locate(&self, src: &Key) -> (usize, u32) {
        let h = self.state.hash_one(u128::from_ne_bytes(*src));
        // Multiply-shift range reduction: any bucket count, no modulo.
        let bucket = ((u128::from(h as u32) * self.buckets.len() as u128) >> 32) as usize;
        (bucket, ((h >> 48) as u32 | 1) << 16)
    }

    fn dst_fp(&self, dst: &Key) -> u32 {
        (self.state.hash_one(u128::from_ne_bytes(*dst)) >> 48) as u32
    }

    /// Remember that `src`, last seen towards `dst`, was evicted; the
    /// oldest entry of its bucket is forgotten.
    pub fn remember(&mut self, src: &Key, dst: &Key) {
        let (b, fp) = self.locate(src);
        let entry = fp | self.dst_fp(dst);
        let ways = &mut self.buckets[b].0;
        ways.copy_within(0..WAYS - 1, 1);
        ways[0] = entry;
    }

    /// Whether `src` was evicted recently with a destination other than
    /// `dst` (it has touched two); forgets the entry either way.
    pub fn recall(&mut self, src: &Key, dst: &Key) -> bool {
        let (b, fp) = self.locate(src);
        let ways = &mut self.buckets[b].0;
        let Some(i) = ways.iter().position(|&e| e & 0xffff_0000 == fp) else {
            return false;
        };
        let other = ways[i] & 0xffff != self.dst_fp(dst);
        let ways = &mut self.buckets[b].0;
        ways.copy_within(i + 1.., i);
        ways[WAYS - 1] = 0;
        other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u32) -> Key {
        let mut k = [0u8; 16];
        k[12..].copy_from_slice(&n.to_be_bytes());
        k
    }

    #[test]
    fn recalls_another_destination_once() {
        let mut r = Recent::new(1000);
        r.remember(&key(1), &key(100));
        assert!(!r.recall(&key(2), &key(101)), "never evicted");
        assert!(r.recall(&key(1), &key(101)), "second destination");
        assert!(!r.recall(&key(1), &key(102)), "taken");
        r.remember(&key(1), &key(100));
        assert!(!r.recall(&key(1), &key(100)), "same destination again");
        assert!(!r.recall(&key(1), &key(101)), "taken");
    }

    #[test]
    fn remembers_about_per_source_times_the_slots() {
        // 1,000 slots: 8,000 entries in 500 buckets. After 2,000 later
        // evictions (4 per bucket on average, 16 would push it out) the
        // first evicted source is still there.
        let mut r = Recent::new(1000);
        assert_eq!(r.bytes(), 1000 * PER_SOURCE * 4);
        r.remember(&key(7), &key(100));
        for i in 0..2000 {
            r.remember(&key(1_000_000 + i), &key(100));
        }
        assert!(r.recall(&key(7), &key(101)));
    }
}
