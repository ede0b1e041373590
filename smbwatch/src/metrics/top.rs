//! The `/top` document that `smbwatch top` polls: the kernel's top sources
//! by distinct destinations, the latest alerts, and the counters.
//!
//! Sources come from the kernel's pinned sketch table, as `smbwatch
//! status` shows them, not from the drain thread: the kernel counts every
//! source even while events are shed under a flood, and reading it costs
//! the drain thread nothing. A read walks the whole table (one syscall per
//! slot), so it runs on the blocking pool and its result is kept for
//! [`TOP_TTL`]: any number of viewers cost at most one walk per second.

use std::{
    net::IpAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use smbwatch_common::SourceSlot;

use super::{Metrics, RecentAlert, KINDS};
use crate::dataplane::{KernelClock, PinnedMaps};

/// Sources listed.
pub const TOP_SOURCES: usize = 20;
/// How long one walk of the kernel's table serves `/top` requests.
pub const TOP_TTL: Duration = Duration::from_secs(1);

/// One source as `status` and `top` show it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopSource {
    /// The source address.
    pub source: IpAddr,
    /// Distinct destinations in the last half to whole fan-out window
    /// (the kernel's linear-counting estimate).
    pub distinct_destinations: u32,
    /// New pairs since the kernel started tracking it.
    pub new_pairs: u32,
    /// When the kernel started tracking it.
    pub first_seen: DateTime<Utc>,
    /// Its latest new pair.
    pub last_seen: DateTime<Utc>,
}

/// The `/top` document.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TopDoc {
    /// When it was taken.
    pub ts: Option<DateTime<Utc>>,
    /// Sources the kernel tracks (two or more destinations).
    pub tracked_sources: usize,
    /// The top [`TOP_SOURCES`] by distinct destinations, then new pairs.
    pub sources: Vec<TopSource>,
    /// The newest alerts, oldest first.
    pub alerts: Vec<RecentAlert>,
    /// Counters by name: the kernel's (`packets`, `new_pairs`, ...) and the
    /// daemon's (`events_consumed`, `alerts`, `alerts_dropped`).
    pub counters: std::collections::BTreeMap<String, u64>,
}

/// Sorts sources by distinct destinations, then new pairs, then address,
/// and keeps the first `n` (for `status` and `/top`).
pub fn rank_sources(sources: &mut Vec<(IpAddr, SourceSlot)>, n: usize) {
    sources.sort_by(|a, b| {
        (b.1.distinct_estimate(), b.1.new_pairs)
            .cmp(&(a.1.distinct_estimate(), a.1.new_pairs))
            .then(a.0.cmp(&b.0))
    });
    sources.truncate(n);
}

/// One ranked source, with kernel times turned into UTC.
pub fn top_source(clock: &KernelClock, ip: IpAddr, s: &SourceSlot) -> TopSource {
    TopSource {
        source: ip,
        distinct_destinations: s.distinct_estimate(),
        new_pairs: s.new_pairs,
        first_seen: clock.to_utc(s.first_seen_ns),
        last_seen: clock.to_utc(s.last_seen_ns),
    }
}

/// Takes the document (walks the kernel's table: call off the runtime).
fn take(metrics: &Metrics) -> TopDoc {
    let mut doc = TopDoc {
        ts: Some(Utc::now()),
        ..TopDoc::default()
    };
    match PinnedMaps::open(metrics.pin_dir()) {
        Ok(maps) => {
            if let Ok(stats) = maps.stats() {
                for (name, v) in stats.named() {
                    doc.counters.insert(name.to_owned(), v);
                }
            }
            match maps.sources() {
                Ok(mut all) => {
                    doc.tracked_sources = all.len();
                    rank_sources(&mut all, TOP_SOURCES);
                    match KernelClock::live() {
                        Ok(clock) => {
                            doc.sources = all
                                .iter()
                                .map(|(ip, s)| top_source(&clock, *ip, s))
                                .collect();
                        }
                        Err(e) => tracing::debug!(error = %e, "top: kernel clock not read"),
                    }
                }
                Err(e) => tracing::debug!(error = %e, "top: sources not read"),
            }
        }
        Err(e) => tracing::debug!(error = %e, "top: pinned maps not opened"),
    }
    let drain = metrics.drain();
    let alerts = metrics.alerts();
    doc.counters
        .insert("events_consumed".into(), drain.report.records);
    doc.counters
        .insert("alerts_dropped".into(), drain.report.alerts_dropped);
    doc.counters
        .insert("alerts_suppressed".into(), drain.detect.suppressed);
    doc.counters
        .insert("alerts".into(), alerts.by_kind.iter().sum());
    for (k, n) in KINDS.iter().zip(alerts.by_kind) {
        doc.counters.insert(format!("alerts_{}", k.code()), n);
    }
    doc.alerts = alerts.recent.into_iter().collect();
    doc
}

/// The last `/top` document and when it was taken; one walk at a time.
#[derive(Debug, Default)]
pub struct TopCache {
    last: tokio::sync::Mutex<Option<(Instant, Arc<Vec<u8>>)>>,
}

impl TopCache {
    /// The document as JSON, at most [`TOP_TTL`] old.
    pub async fn get(&self, metrics: &Arc<Metrics>) -> Arc<Vec<u8>> {
        let mut last = self.last.lock().await;
        if let Some((at, body)) = last.as_ref() {
            if at.elapsed() < TOP_TTL {
                return body.clone();
            }
        }
        let m = metrics.clone();
        let doc = tokio::task::spawn_blocking(move || take(&m))
            .await
            .unwrap_or_default();
        let body = Arc::new(serde_json::to_vec(&doc).unwrap_or_default());
        *last = Some((Instant::now(), body.clone()));
        body
    }
}
