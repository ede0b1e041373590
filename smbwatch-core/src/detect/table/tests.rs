//! The table's lists, indexes, sums and scale cursors, checked after
//! every kind of operation.

use super::*;

fn key(n: u8) -> Key {
    let mut k = [0u8; 16];
    k[15] = n;
    k
}

/// Three scales: 2 in 5 ns, 4 in 40 ns, 8 in 300 ns (times are steps).
fn rules() -> Vec<Rule> {
    let mut r = Rule {
        n: 3,
        ..Rule::default()
    };
    for (i, (threshold, window)) in [(2, 5), (4, 40), (8, 300)].into_iter().enumerate() {
        r.scales[i] = Scale { threshold, window };
    }
    vec![r]
}

fn table(sources: usize, pairs: usize, a: usize, b: usize) -> Table {
    let mut t = Table::new(sources, pairs, a, b);
    t.rules = rules();
    t
}

/// Walks every list and checks it against the indexes and sums.
fn check(t: &Table) {
    let mut seen = 0;
    for c in 0..CLASSES {
        let mut cur = t.class_head[c];
        let mut prev = NIL;
        let mut len = 0;
        while cur != NIL {
            let s = &t.sources[cur as usize];
            assert_eq!(s.prev, prev);
            assert_eq!(s.class as usize, c);
            assert_eq!(t.source(&s.key), Some(cur));
            let ps: Vec<&Pair> = t.pairs_of(cur).collect();
            assert_eq!(ps.len(), s.distinct as usize);
            assert_eq!(ps.iter().map(|p| u64::from(p.syns)).sum::<u64>(), s.syns);
            let count = |o| ps.iter().filter(|p| p.outcome == o).count() as u32;
            assert_eq!(count(Outcome::Accepted), s.accepted);
            assert_eq!(count(Outcome::Failed), s.refused);
            assert_eq!(count(Outcome::Pending), s.pending);
            for p in &ps {
                assert!(t.pair(cur, &p.dst).is_some());
            }
            // Each scale counts exactly the pairs within its window.
            for (i, sc) in t.rule_of(cur).scales().iter().enumerate() {
                let within: Vec<&&Pair> = ps
                    .iter()
                    .filter(|p| p.ts + sc.window > s.scaled_at)
                    .collect();
                assert_eq!(s.count[i] as usize, within.len(), "scale {i}");
                let first = within.first().map(|p| (p.dst, p.ts));
                let cursor = (s.cursor[i] != NIL).then(|| {
                    let p = &t.pairs[s.cursor[i] as usize];
                    (p.dst, p.ts)
                });
                assert_eq!(cursor, first, "scale {i} cursor");
            }
            len += 1;
            prev = cur;
            cur = s.next;
        }
        assert_eq!(t.class_tail[c], prev);
        assert_eq!(t.class_len[c] as usize, len);
        seen += len;
    }
    assert_eq!(seen, t.source_count());
    let mut pend = 0;
    let mut cur = t.pend_head;
    while cur != NIL {
        assert_eq!(t.pairs[cur as usize].outcome, Outcome::Pending);
        pend += 1;
        cur = t.pairs[cur as usize].pnext;
    }
    assert_eq!(pend, t.pending_count());
}

#[test]
fn layout_is_three_and_one_cache_lines() {
    assert_eq!(std::mem::size_of::<Source>(), 192);
    assert_eq!(std::mem::size_of::<Pair>(), 64);
}

#[test]
fn classes_by_powers_of_two() {
    let classes: Vec<u8> = [0, 1, 2, 3, 4, 7, 8, 15, 16, 31, 32, 5000]
        .into_iter()
        .map(class_of)
        .collect();
    assert_eq!(classes, [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5]);
}

#[test]
fn lists_stay_consistent() {
    let mut t = table(4, 4, 4, 4);
    let a = t.insert_source(key(1), t.addr_hash(&key(1)), 0, 0);
    let b = t.insert_source(key(2), t.addr_hash(&key(2)), 0, 0);
    assert_eq!(t.class_tail(0), Some(a));
    let p1 = t.insert_pair(a, key(10), 1, 5000, 445);
    let p2 = t.insert_pair(a, key(11), 2, 5001, 445);
    let p3 = t.insert_pair(b, key(10), 3, 5002, 445);
    check(&t);
    t.touch(a, class_of(2));
    assert_eq!((t.class_tail(0), t.class_tail(1)), (Some(b), Some(a)));
    // Probation over its reserve gives the victim; else the lowest class.
    assert_eq!(t.victim(0, NIL), Some(b));
    assert_eq!(t.victim(1, NIL), Some(a));
    assert_eq!(t.victim(1, a), Some(b), "never the source being served");
    t.resolve(p2, Outcome::Accepted);
    t.advance_scales(a, 4);
    t.refresh_pair(p1, 4, 5003);
    assert_eq!(t.sources[a as usize].head, p2);
    assert_eq!(t.pending_head(), Some(p1));
    check(&t);
    t.accepted_to_failed(p2);
    check(&t);
    t.remove_pair(p2);
    check(&t);
    t.remove_source(a);
    check(&t);
    assert_eq!(t.source_count(), 1);
    assert_eq!(t.pair_count(), 1);
    assert_eq!(t.pending_head(), Some(p3));
    // Freed slots are reused.
    let c = t.insert_source(key(3), t.addr_hash(&key(3)), 0, 5);
    assert_eq!(c, a);
    t.insert_pair(c, key(12), 5, 5004, 445);
    assert!(t.pairs.len() <= 3);
    check(&t);
}

#[test]
fn random_operations_keep_every_list_and_index_consistent() {
    // A fixed pseudo-random sequence of every operation, checked often.
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut rnd = |n: u32| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x % u64::from(n)) as u32
    };
    let addr = |i: u32| {
        let mut k = [0u8; 16];
        k[12..].copy_from_slice(&i.to_be_bytes());
        k
    };
    let mut t = table(64, 256, 4, 4);
    let mut peak = (0, 0);
    for step in 0..20_000u32 {
        let live: Vec<u32> = (0..CLASSES)
            .flat_map(|c| {
                let mut v = Vec::new();
                let mut cur = t.class_head[c];
                while cur != NIL {
                    v.push(cur);
                    cur = t.sources[cur as usize].next;
                }
                v
            })
            .collect();
        let pick = |r: u32| live.get(r as usize % live.len().max(1)).copied();
        match rnd(8) {
            0 | 1 if t.source_count() < 64 => {
                let k = addr(rnd(200));
                if t.source(&k).is_none() {
                    t.insert_source(k, t.addr_hash(&k), 0, i64::from(step));
                }
            }
            2 | 3 => {
                if let (Some(s), true) = (pick(rnd(1000)), t.pair_count() < 256) {
                    let d = addr(rnd(12));
                    t.advance_scales(s, i64::from(step));
                    match t.pair(s, &d) {
                        None => {
                            t.insert_pair(s, d, i64::from(step), 1, 445);
                        }
                        Some(p) => t.refresh_pair(p, i64::from(step), 2),
                    }
                }
            }
            4 => {
                if let Some(s) = pick(rnd(1000)) {
                    t.touch(s, class_of(rnd(40)));
                    t.advance_scales(s, i64::from(step));
                }
            }
            5 => {
                if let Some(p) = t.pending_head() {
                    t.resolve(
                        p,
                        if rnd(2) == 0 {
                            Outcome::Accepted
                        } else {
                            Outcome::Failed
                        },
                    );
                }
            }
            6 => {
                if let Some(s) = pick(rnd(1000)) {
                    let head = t.sources[s as usize].head;
                    if head != NIL {
                        match t.pairs[head as usize].outcome {
                            Outcome::Accepted if rnd(2) == 0 => t.accepted_to_failed(head),
                            _ => t.remove_pair(head),
                        }
                    }
                }
            }
            _ => {
                if let Some(s) = pick(rnd(1000)) {
                    if rnd(4) == 0 {
                        t.remove_source(s);
                    }
                }
            }
        }
        if step % 97 == 0 {
            check(&t);
        }
        peak = (peak.0.max(t.source_count()), peak.1.max(t.pair_count()));
    }
    check(&t);
    // The walk reached both caps' neighbourhood (full tables, indexed sources).
    assert!(peak.0 >= 60 && peak.1 >= 100, "{peak:?}");
    assert!(t.sources.capacity() <= 64 && t.pairs.capacity() <= 256);
}

#[test]
fn slabs_stop_growing_at_the_caps() {
    let mut t = table(1000, 1500, 16, 16);
    for i in 0..1000u32 {
        let mut k = [0u8; 16];
        k[12..].copy_from_slice(&i.to_be_bytes());
        let s = t.insert_source(k, t.addr_hash(&k), 0, 0);
        t.insert_pair(s, key(1), 0, 1, 445);
    }
    assert_eq!(t.sources.capacity(), 1000);
    assert!(t.pairs.capacity() <= 1500);
}
