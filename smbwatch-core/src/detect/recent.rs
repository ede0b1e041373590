//! A compact memory of recently admitted sources, so that a source
//! returning after an eviction flushed its record is recognised.
//!
//! Under a spoofed flood the probation class (sources with one destination)
//! turns over in `max_sources / flood rate` seconds (2.9 s at 100,000 and
//! 35,000 new sources/s): a slow scanner's first probe is gone before its
//! second. A full record costs about 200 bytes; this keeps 4 bytes per
//! admitted source (fingerprints: 22 bits of the source, 10 of its latest
//! new destination) in 16-way buckets, newest first, so it remembers the
//! last `8 × max_sources` or so admissions (about as many evictions under
//! a flood). A source admitted again with a different destination has
//! touched two: it goes into the 2–3 class, where one-shot sources cannot
//! evict it. Recording at admission rather than eviction costs one cache
//! line per new source instead of two.
//!
//! Fingerprints are keyed per process (the sources are attacker-chosen).
//! A false match (two sources sharing a bucket and a 22-bit fingerprint,
//! about 16 in 4 million new sources) only places one source a class
//! higher; two destinations sharing a 10-bit fingerprint (1 in 1,024)
//! make a returning source wait for its next new destination.

use super::table::Key;

/// Entries per bucket: one cache line.
const WAYS: usize = 16;

/// Bits of an entry that fingerprint the destination (the rest, the source).
const DST_BITS: u32 = 10;
const DST_MASK: u32 = (1 << DST_BITS) - 1;

/// Remembered admissions per source slot (`max_sources`).
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
        // Tests are exact: the same keys every run.
        #[cfg(test)]
        let state = ahash::RandomState::with_seeds(1, 2, 3, 4);
        #[cfg(not(test))]
        let state = ahash::RandomState::new();
        Self {
            // Zeroed, so pages are only touched as sources come in.
            buckets: vec![Bucket::default(); n],
            state,
        }
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.buckets.len() * std::mem::size_of::<Bucket>()
    }

    /// Bytes held for `max_sources`.
    pub fn bytes_for(max_sources: usize) -> usize {
        (max_sources.saturating_mul(PER_SOURCE) / WAYS).max(1) * std::mem::size_of::<Bucket>()
    }

    /// Bucket index and source fingerprint, in place in an entry (never
    /// 0: 0 marks a free way).
    fn locate(&self, src: &Key) -> (usize, u32) {
        let h = self.state.hash_one(u128::from_ne_bytes(*src));
        // Multiply-shift range reduction: any bucket count, no modulo.
        let bucket = ((u128::from(h as u32) * self.buckets.len() as u128) >> 32) as usize;
        let fp = ((h >> 42) as u32).max(1);
        (bucket, fp << DST_BITS)
    }

    fn dst_fp(&self, dst: &Key) -> u32 {
        (self.state.hash_one(u128::from_ne_bytes(*dst)) >> (64 - DST_BITS)) as u32
    }

    /// A new record for `src`, first towards `dst`: whether `src` was
    /// admitted before (and since evicted) with another destination, i.e.
    /// it has touched two. Remembers it with `dst` either way, as the
    /// newest entry of its bucket (the oldest is forgotten). One cache
    /// line per new source, nothing at eviction.
    pub fn admit(&mut self, src: &Key, dst: &Key) -> bool {
        let (b, fp) = self.locate(src);
        let dst_fp = self.dst_fp(dst);
        let ways = &mut self.buckets[b].0;
        // A bit per matching way, without branches (the compiler vectorises it).
        let hits = ways
            .iter()
            .enumerate()
            .fold(0u32, |m, (i, &e)| m | u32::from(e & !DST_MASK == fp) << i);
        let (found, end) = match hits.trailing_zeros() as usize {
            WAYS.. => (false, WAYS - 1),
            i => (ways[i] & DST_MASK != dst_fp, i),
        };
        ways.copy_within(0..end, 1);
        ways[0] = fp | dst_fp;
        found
    }

    /// Prefetch the bucket of `src` (it is read next).
    pub fn prefetch(&self, src: &Key) {
        let (b, _) = self.locate(src);
        super::prefetch(&self.buckets[b]);
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
    fn recalls_another_destination() {
        let mut r = Recent::new(1000);
        assert!(!r.admit(&key(1), &key(100)), "never seen");
        assert!(!r.admit(&key(2), &key(101)), "never seen");
        assert!(r.admit(&key(1), &key(101)), "second destination");
        assert!(!r.admit(&key(1), &key(101)), "same as the latest");
        assert!(r.admit(&key(1), &key(100)), "another again");
        assert!(r.admit(&key(2), &key(100)), "second destination");
    }

    #[test]
    fn remembers_about_per_source_times_the_slots() {
        // 1,000 slots: 8,000 entries in 500 buckets. After 2,000 later
        // admissions (4 per bucket on average, 16 would push it out) the
        // first source is still there.
        let mut r = Recent::new(1000);
        assert_eq!(r.bytes(), 1000 * PER_SOURCE * 4);
        r.admit(&key(7), &key(100));
        for i in 0..2000 {
            r.admit(&key(1_000_000 + i), &key(100));
        }
        assert!(r.admit(&key(7), &key(101)));
    }
}
