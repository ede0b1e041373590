//! What the view shows, updated from each `/top` document: rates come from
//! the difference of two documents over the time between them (their own
//! `ts`), so this is pure and testable.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    net::IpAddr,
};

use chrono::{DateTime, Utc};

use crate::metrics::top::TopDoc;

/// Rate samples kept per source and for the totals.
pub const HISTORY: usize = 60;

/// The view's state.
#[derive(Debug, Default)]
pub struct TopState {
    /// The latest document.
    pub doc: TopDoc,
    /// The latest poll error (cleared by a good poll).
    pub error: Option<String>,
    /// New pairs per second of each listed source, oldest first (only
    /// sources in the latest document: bounded by its list).
    pub source_rates: HashMap<IpAddr, VecDeque<f64>>,
    /// Per-second rate of each counter over the last interval.
    pub rates: BTreeMap<String, f64>,
    /// New pairs per second, all sources, oldest first.
    pub new_pairs_rate: VecDeque<u64>,
    prev_ts: Option<DateTime<Utc>>,
    prev_pairs: HashMap<IpAddr, u32>,
}

fn push<T>(q: &mut VecDeque<T>, v: T) {
    if q.len() == HISTORY {
        q.pop_front();
    }
    q.push_back(v);
}

impl TopState {
    /// Takes a new document.
    pub fn update(&mut self, doc: TopDoc) {
        self.error = None;
        let secs = match (self.prev_ts, doc.ts) {
            (Some(a), Some(b)) if b > a => (b - a).to_std().map_or(0.0, |d| d.as_secs_f64()),
            _ => 0.0,
        };
        if secs > 0.0 {
            self.rates = doc
                .counters
                .iter()
                .map(|(k, &v)| {
                    let before = self.doc.counters.get(k).copied().unwrap_or(v);
                    (k.clone(), v.saturating_sub(before) as f64 / secs)
                })
                .collect();
            let all = self.rates.get("new_pairs").copied().unwrap_or(0.0);
            push(&mut self.new_pairs_rate, all.round() as u64);
        }
        let mut rates = HashMap::with_capacity(doc.sources.len());
        let mut pairs = HashMap::with_capacity(doc.sources.len());
        for s in &doc.sources {
            let mut hist = self.source_rates.remove(&s.source).unwrap_or_default();
            if secs > 0.0 {
                // A source new to the list: if the kernel started tracking
                // it within the interval, all its pairs are this interval's;
                // otherwise its past is unknown and its rate starts at 0.
                let fresh = self.prev_ts.is_some_and(|p| s.first_seen > p);
                let before = match self.prev_pairs.get(&s.source) {
                    Some(&n) => n,
                    None if fresh => 0,
                    None => s.new_pairs,
                };
                push(
                    &mut hist,
                    f64::from(s.new_pairs.saturating_sub(before)) / secs,
                );
            }
            rates.insert(s.source, hist);
            pairs.insert(s.source, s.new_pairs);
        }
        self.source_rates = rates;
        self.prev_pairs = pairs;
        self.prev_ts = doc.ts;
        self.doc = doc;
    }
}

/// A one-line sparkline of `values` (block characters, scaled to their
/// maximum), at most `width` characters, the newest on the right.
pub fn sparkline(values: &VecDeque<f64>, width: usize) -> String {
    const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let skip = values.len().saturating_sub(width);
    let max = values.iter().copied().fold(0.0_f64, f64::max);
    values
        .iter()
        .skip(skip)
        .map(|&v| {
            if max <= 0.0 || v <= 0.0 {
                // The baseline, so a quiet source still shows its line.
                BARS[0]
            } else {
                BARS[(((v / max) * 7.0).round() as usize).min(7)]
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::top::TopSource;
    use chrono::TimeZone as _;

    fn doc(sec: u32, pairs: u32, counter: u64) -> TopDoc {
        let t = Utc.with_ymd_and_hms(2026, 11, 30, 10, 0, sec).unwrap();
        TopDoc {
            ts: Some(t),
            tracked_sources: 1,
            sources: vec![TopSource {
                source: "203.0.113.10".parse().unwrap(),
                distinct_destinations: pairs,
                new_pairs: pairs,
                first_seen: t,
                last_seen: t,
            }],
            alerts: vec![],
            counters: [("new_pairs".to_string(), counter)].into(),
        }
    }

    #[test]
    fn rates_come_from_document_times() {
        let mut s = TopState::default();
        s.update(doc(0, 5, 100));
        assert!(s.rates.is_empty(), "one document: no rate yet");
        s.update(doc(2, 25, 140));
        let ip: IpAddr = "203.0.113.10".parse().unwrap();
        assert_eq!(s.source_rates[&ip], VecDeque::from([10.0]));
        assert_eq!(s.rates["new_pairs"], 20.0);
        assert_eq!(s.new_pairs_rate, VecDeque::from([20]));
        // The source leaves the list: its history goes with it.
        let mut gone = doc(3, 0, 140);
        gone.sources.clear();
        s.update(gone);
        assert!(s.source_rates.is_empty());
    }

    /// A source the kernel started tracking within the interval gets its
    /// whole count as that interval's rate; one tracked before gets 0.
    #[test]
    fn a_source_new_to_the_list() {
        let ip: IpAddr = "203.0.113.10".parse().unwrap();
        let mut s = TopState::default();
        let mut d = doc(0, 0, 0);
        d.sources.clear();
        s.update(d);
        s.update(doc(2, 30, 30));
        assert_eq!(s.source_rates[&ip], VecDeque::from([15.0]));

        let mut s = TopState::default();
        let mut d = doc(4, 0, 0);
        d.sources.clear();
        s.update(d);
        let mut d = doc(6, 30, 30);
        d.sources[0].first_seen = Utc.with_ymd_and_hms(2026, 11, 30, 9, 0, 0).unwrap();
        s.update(d);
        assert_eq!(
            s.source_rates[&ip],
            VecDeque::from([0.0]),
            "first seen before"
        );
    }

    #[test]
    fn history_is_bounded() {
        let mut s = TopState::default();
        for i in 0..(HISTORY as u32 + 10) {
            let mut d = doc(0, i, u64::from(i));
            d.ts = Some(Utc.timestamp_opt(1_000_000 + i64::from(i), 0).unwrap());
            s.update(d);
        }
        assert_eq!(s.new_pairs_rate.len(), HISTORY);
        assert!(s.source_rates.values().all(|h| h.len() == HISTORY));
    }

    #[test]
    fn sparkline_scales_to_its_maximum() {
        let v = VecDeque::from([0.0, 1.0, 2.0, 4.0, 8.0]);
        assert_eq!(sparkline(&v, 10), "▁▂▃▅█");
        assert_eq!(sparkline(&v, 2), "▅█");
        assert_eq!(sparkline(&VecDeque::new(), 5), "");
    }
}
