//! A bounded, time-pruned multimap: the state behind host-rule dedup and
//! correlation.
//!
//! Entries are kept per key in insertion order, and a global queue keeps the
//! insertion order across keys, so evicting the oldest entry (cap reached)
//! or pruning old ones is O(1) per entry. Events may arrive out of time
//! order: pruning walks the insertion queue and stops at the first entry
//! newer than the cutoff, so an old entry queued behind a newer one lives a
//! little longer — the cap still bounds memory.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;

use chrono::{DateTime, Utc};

/// See the module documentation.
#[derive(Debug)]
pub(crate) struct TimedIndex<K, V> {
    map: HashMap<K, VecDeque<(DateTime<Utc>, V)>>,
    order: VecDeque<(DateTime<Utc>, K)>,
    cap: usize,
    evicted: u64,
}

impl<K: Hash + Eq + Clone, V> TimedIndex<K, V> {
    /// At most `cap` entries (at least 1).
    pub fn new(cap: usize) -> Self {
        Self {
            map: HashMap::new(),
            order: VecDeque::new(),
            cap: cap.max(1),
            evicted: 0,
        }
    }

    /// Add an entry, evicting the oldest-inserted one when full.
    pub fn insert(&mut self, ts: DateTime<Utc>, key: K, v: V) {
        if self.order.len() >= self.cap {
            self.pop_oldest();
            self.evicted += 1;
        }
        self.map.entry(key.clone()).or_default().push_back((ts, v));
        self.order.push_back((ts, key));
    }

    /// Drop entries older than `cutoff` (in insertion order, see above).
    pub fn prune(&mut self, cutoff: DateTime<Utc>) {
        while self.order.front().is_some_and(|(ts, _)| *ts < cutoff) {
            self.pop_oldest();
        }
    }

    fn pop_oldest(&mut self) {
        if let Some((_, k)) = self.order.pop_front() {
            if let Some(list) = self.map.get_mut(&k) {
                list.pop_front();
                if list.is_empty() {
                    self.map.remove(&k);
                }
            }
        }
    }

    /// Entries of one key, oldest first.
    pub fn get(&self, key: &K) -> impl Iterator<Item = &(DateTime<Utc>, V)> {
        self.map.get(key).into_iter().flatten()
    }

    /// Entries of one key, mutable.
    pub fn get_mut(&mut self, key: &K) -> impl Iterator<Item = &mut (DateTime<Utc>, V)> {
        self.map.get_mut(key).into_iter().flatten()
    }

    /// Every entry (no particular order across keys).
    pub fn iter(&self) -> impl Iterator<Item = (&K, &(DateTime<Utc>, V))> {
        self.map
            .iter()
            .flat_map(|(k, l)| l.iter().map(move |e| (k, e)))
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Entries evicted because the cap was reached.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }
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
        ix.insert(t(10), "a", 1);
        ix.insert(t(5), "b", 2);
        ix.insert(t(20), "a", 3);
        assert_eq!(ix.len(), 2);
        assert_eq!(ix.evicted(), 1);
        assert_eq!(ix.get(&"a").map(|e| e.1).collect::<Vec<_>>(), vec![3]);
        assert_eq!(ix.get(&"b").count(), 1);
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
    }
}
