//! TimedIndex, the byte accounting and the reference clock.

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

/// The ring and its index against a plain model (a map of per-key
/// queues and one insertion queue) over a long run with many entries
/// per key, evictions by cap and by bytes, prunes out of time order,
/// and in-place changes: every key's entries, in order, stay the same.
#[test]
fn ring_index_matches_a_plain_model_under_churn() {
    use std::collections::HashMap;
    const CAP: usize = 300;
    let mut ix: TimedIndex<u32, u64> = TimedIndex::new(CAP);
    let mut model: HashMap<u32, VecDeque<(DateTime<Utc>, u64)>> = HashMap::new();
    let mut order: VecDeque<u32> = VecDeque::new();
    let pop = |model: &mut HashMap<u32, VecDeque<(DateTime<Utc>, u64)>>,
               order: &mut VecDeque<u32>| {
        let k = order.pop_front().unwrap();
        let list = model.get_mut(&k).unwrap();
        list.pop_front();
        if list.is_empty() {
            model.remove(&k);
        }
    };
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for i in 0..200_000u64 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        // Few keys early (long chains), more later (index growth).
        let keys = if i < 50_000 { 40 } else { 2_000 };
        let key = (x % keys) as u32;
        // Times mostly rising, sometimes out of order.
        let ts = t(i as i64 / 10 - (x >> 60) as i64);
        if order.len() >= CAP {
            pop(&mut model, &mut order);
        }
        ix.insert(ts, key, i);
        model.entry(key).or_default().push_back((ts, i));
        order.push_back(key);
        match x >> 56 {
            0..=2 => {
                let cutoff = t(i as i64 / 10 - 20);
                ix.prune(cutoff);
                while let Some(k) = order.front() {
                    if model[k].front().unwrap().0 >= cutoff {
                        break;
                    }
                    pop(&mut model, &mut order);
                }
            }
            3 => {
                assert!(ix.evict_oldest());
                pop(&mut model, &mut order);
            }
            4 => {
                ix.modify(&key, |_, v| *v += 1);
                model
                    .get_mut(&key)
                    .unwrap()
                    .iter_mut()
                    .for_each(|e| e.1 += 1);
            }
            _ => {}
        }
        if i % 997 == 0 || i > 199_000 {
            assert_eq!(ix.len(), order.len(), "at {i}");
            for k in 0..keys as u32 {
                let got: Vec<_> = ix.get(&k).copied().collect();
                let want: Vec<_> = model
                    .get(&k)
                    .map(|l| l.iter().copied().collect())
                    .unwrap_or_default();
                assert_eq!(got, want, "key {k} at {i}");
            }
            let all: Vec<u32> = ix.iter().map(|(k, _)| *k).collect();
            assert_eq!(all, Vec::from(order.clone()), "insertion order at {i}");
        }
    }
    while ix.evict_oldest() {}
    assert_eq!(ix.bytes, 0, "accounting returns to zero");
    assert_eq!(ix.get(&1).count(), 0);
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
