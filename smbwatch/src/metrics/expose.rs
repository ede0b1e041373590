//! The `/metrics` exposition: one [`Scrape`] (a copy of every counter,
//! taken at request time) encoded in the Prometheus text format (0.0.4)
//! by `prometheus-client`.
//!
//! Labels take only fixed values (kinds, codes, outcomes, the version):
//! never an address, so the series count stays fixed whatever the traffic.

use std::{fmt, sync::Arc};

use chrono::{DateTime, Utc};
use prometheus_client::{
    collector::Collector,
    encoding::{prometheus_text, DescriptorEncoder, EncodeGaugeValue, NoLabelSet},
    metrics::MetricType,
    registry::Registry,
};
use smbwatch_common::counters::FAMILIES as KERNEL;

use super::counters::ListenerStats;
use super::{AlertLog, DrainSnapshot, Metrics, KINDS, LATENCY_BUCKETS};
use crate::{
    alert::syslog::SyslogStats,
    dataplane::{PinnedMaps, Stats},
    hostlog::{LineFormat, LineOutcome},
};

/// The `Content-Type` of the exposition.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// Every counter, copied at one moment.
#[derive(Clone, Debug)]
pub struct Scrape {
    /// The kernel's counters; `None` when the pinned maps cannot be read.
    pub kernel: Option<Stats>,
    /// The drain thread's latest publication.
    pub drain: DrainSnapshot,
    /// Alerts handed to the sinks.
    pub alerts: AlertLog,
    /// The syslog sink, if any.
    pub syslog: Option<SyslogStats>,
    /// The host-log listener, if any.
    pub listener: Option<ListenerStats>,
    /// SIGHUP reloads: succeeded, failed, last attempt (Unix s), last ok.
    pub reload: Option<(u64, u64, u64, bool)>,
    /// Daemon start.
    pub started: DateTime<Utc>,
    /// The fleet (publishing or aggregating), if this process takes part.
    pub fleet: Option<Arc<dyn Families>>,
}

/// Families a part above the metrics adds to the exposition (the fleet's
/// `crate::fleet::stats::FleetMetrics`), written at scrape time. The
/// metrics know only this trait, so they import nothing of what fills them.
pub trait Families: fmt::Debug + Send + Sync {
    /// Writes the families.
    fn encode(&self, e: &mut DescriptorEncoder) -> fmt::Result;
}

impl Scrape {
    /// Copies everything now; the kernel's counters come from the pinned
    /// STATS map (a handful of reads).
    pub fn take(m: &Metrics) -> Self {
        let kernel = match PinnedMaps::open(m.pin_dir()).and_then(|p| p.stats()) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::debug!(error = %e, "metrics: kernel counters not read");
                None
            }
        };
        Self {
            kernel,
            drain: m.drain(),
            alerts: m.alerts(),
            syslog: m.syslog(),
            listener: m.listener().map(|l| l.snapshot()),
            reload: m.reload().map(|r| {
                use std::sync::atomic::Ordering::Relaxed;
                (
                    r.succeeded.load(Relaxed),
                    r.failed.load(Relaxed),
                    r.last_unix_secs.load(Relaxed),
                    r.last_ok.load(Relaxed),
                )
            }),
            started: m.started(),
            fleet: m.fleet().cloned(),
        }
    }

    /// The exposition text.
    pub fn encode(self) -> String {
        let mut registry = Registry::with_prefix("smbwatch");
        registry.register_collector(Box::new(self));
        let mut out = String::with_capacity(16 * 1024);
        // Writing to a String cannot fail.
        let _ = prometheus_text::encode(&mut out, &registry);
        out
    }
}

/// The rows of docs/operations.md's metrics table for the kernel's
/// counters, from the one counter table (a test keeps the docs equal).
pub fn kernel_docs_rows() -> String {
    let mut out = String::new();
    for f in KERNEL {
        let labels = if f.label.is_empty() {
            String::new()
        } else {
            let values: Vec<&str> = f.series.iter().map(|s| s.label).collect();
            format!("`{}` ({})", f.label, values.join(", "))
        };
        let sep = if labels.is_empty() { "" } else { " " };
        out.push_str(&format!(
            "| `{}_total` | counter | {labels}{sep}| {} |\n",
            f.metric, f.doc
        ));
    }
    out
}

/// Writes one family of counters (`label` empty: one unlabelled series).
pub(crate) fn counters(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    label: &str,
    series: &[(&str, u64)],
) -> fmt::Result {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (value, v) in series {
        if label.is_empty() {
            m.encode_counter::<NoLabelSet, _, u64>(v, None)?;
        } else {
            m.encode_family(&[(label, *value)])?
                .encode_counter::<NoLabelSet, _, u64>(v, None)?;
        }
    }
    Ok(())
}

/// Writes one family of gauges (`label` empty: one unlabelled series).
pub(crate) fn gauges<V: EncodeGaugeValue>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    label: &str,
    series: &[(&str, V)],
) -> fmt::Result {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (value, v) in series {
        if label.is_empty() {
            m.encode_gauge(v)?;
        } else {
            m.encode_family(&[(label, *value)])?.encode_gauge(v)?;
        }
    }
    Ok(())
}

impl Collector for Scrape {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        let e = &mut enc;
        gauges(
            e,
            "build_info",
            "smbwatch build; the value is always 1.",
            "version",
            &[(env!("CARGO_PKG_VERSION"), 1u64)],
        )?;
        gauges(
            e,
            "start_time_seconds",
            "When the daemon started (Unix time).",
            "",
            &[("", self.started.timestamp())],
        )?;
        if let Some(k) = &self.kernel {
            for f in KERNEL {
                let series: Vec<(&str, u64)> =
                    f.series.iter().map(|s| (s.label, k.get(s.index))).collect();
                counters(e, f.metric, f.help, f.label, &series)?;
            }
        }
        self.drain_metrics(e)?;
        self.alert_metrics(e)?;
        if let Some(f) = &self.fleet {
            f.encode(e)?;
        }
        if let Some((ok, failed, last, last_ok)) = self.reload {
            counters(
                e,
                "reload",
                "Configuration reloads (SIGHUP) by result; a failed one keeps the running configuration.",
                "result",
                &[("ok", ok), ("failed", failed)],
            )?;
            gauges(
                e,
                "reload_last_timestamp_seconds",
                "When the latest reload was attempted (Unix time; 0 before any).",
                "",
                &[("", last as i64)],
            )?;
            gauges(
                e,
                "reload_last_success",
                "1 if the latest reload succeeded (or none was tried), else 0.",
                "",
                &[("", i64::from(last_ok))],
            )?;
        }
        if let Some(l) = &self.listener {
            counters(
                e,
                "listener_connections",
                "Host-log listener connections by outcome (refused: a connection limit was reached).",
                "outcome",
                &[
                    ("accepted", l.accepted),
                    ("refused", l.refused),
                    ("timed_out", l.timed_out),
                    ("tls_failed", l.tls_failed),
                ],
            )?;
            let mut m = e.encode_descriptor(
                "host_events",
                "Records the host-log listener received, by format (json, xml, other) and \
                 outcome (forwarded, skipped: unused event id, bad).",
                None,
                MetricType::Counter,
            )?;
            for (f, row) in LineFormat::RECORDS.iter().zip(l.by_format) {
                for (o, n) in LineOutcome::ALL.iter().zip(row) {
                    m.encode_family(&[("format", f.name()), ("outcome", o.name())])?
                        .encode_counter::<NoLabelSet, _, u64>(&n, None)?;
                }
            }
            counters(
                e,
                "listener_oversized_lines",
                "Lines longer than hostlog.max_line, skipped by the listener.",
                "",
                &[("", l.oversized)],
            )?;
            counters(
                e,
                "listener_lines",
                "Lines read by the host-log listener.",
                "",
                &[("", l.lines)],
            )?;
        }
        if let Some(s) = &self.syslog {
            gauges(
                e,
                "syslog_queue_messages",
                "Syslog messages waiting to be sent.",
                "",
                &[("", s.queued)],
            )?;
            gauges(
                e,
                "syslog_queue_bytes",
                "Bytes held by the syslog queue.",
                "",
                &[("", s.queued_bytes)],
            )?;
            counters(
                e,
                "syslog_sent",
                "Syslog messages written to the collector.",
                "",
                &[("", s.sent)],
            )?;
            counters(
                e,
                "syslog_dropped",
                "Syslog messages dropped (queue bounds, or too large for the transport).",
                "",
                &[("", s.dropped)],
            )?;
            counters(
                e,
                "syslog_truncated",
                "Syslog messages shortened to fit max_message.",
                "",
                &[("", s.truncated)],
            )?;
            counters(
                e,
                "syslog_reconnects",
                "Syslog connections established after the first.",
                "",
                &[("", s.reconnects)],
            )?;
            counters(
                e,
                "syslog_connect_failures",
                "Syslog connection attempts that failed.",
                "",
                &[("", s.connect_failures)],
            )?;
        }
        Ok(())
    }
}

impl Scrape {
    fn drain_metrics(&self, e: &mut DescriptorEncoder) -> fmt::Result {
        let DrainSnapshot {
            report: r,
            detect: d,
            correlate: c,
            rules: h,
        } = &self.drain;
        counters(
            e,
            "events_consumed",
            "Ring-buffer records read by the drain thread.",
            "",
            &[("", r.records)],
        )?;
        counters(
            e,
            "ring_malformed_records",
            "Ring-buffer records skipped as malformed.",
            "",
            &[("", r.malformed)],
        )?;
        counters(
            e,
            "host_events_pipeline",
            "Host events put through the pipeline (every input).",
            "",
            &[("", r.host_events)],
        )?;
        counters(
            e,
            "host_events_rejected_ahead",
            "Host events rejected as dated more than hostlog.max_ahead ahead.",
            "",
            &[("", h.rejected_ahead)],
        )?;
        counters(
            e,
            "smb_sample_records",
            "SMB payload sample records read from the sample ring, by outcome (ok: handed to the SMB monitor; malformed: skipped).",
            "outcome",
            &[
                ("ok", r.samples - r.samples_malformed),
                ("malformed", r.samples_malformed),
            ],
        )?;
        counters(
            e,
            "alerts_dropped",
            "Alerts dropped because the sinks were behind.",
            "",
            &[("", r.alerts_dropped)],
        )?;
        counters(
            e,
            "alerts_suppressed",
            "Scan alerts held back (TRW's hold_down; a fan-out scale crossing at the same event as a longer one).",
            "",
            &[("", d.suppressed)],
        )?;
        counters(
            e,
            "detector_events",
            "Gateway events the scan detector observed.",
            "",
            &[("", d.events)],
        )?;
        gauges(
            e,
            "detector_entries",
            "Entries in the scan detector's tables.",
            "table",
            &[
                ("sources", d.tracked_sources as u64),
                ("pairs", d.tracked_pairs as u64),
                ("pending_pairs", d.pending_pairs as u64),
                ("prefixes", d.tracked_prefixes as u64),
            ],
        )?;
        gauges(
            e,
            "detector_memory_bytes",
            "Bytes held by the scan detector's state.",
            "",
            &[("", d.memory_bytes as u64)],
        )?;
        counters(
            e,
            "detector_evictions",
            "Scan-detector entries evicted by their caps (source: max_sources/max_pairs; destination: max_destinations_per_source; prefix: detect.prefix caps).",
            "kind",
            &[
                ("source", d.source_evictions),
                ("destination", d.destination_evictions),
                ("prefix", d.prefix_evictions),
            ],
        )?;
        counters(
            e,
            "detector_unparsed_events",
            "Packets the kernel could not walk to TCP (the evasion rule's input).",
            "",
            &[("", d.unparsed)],
        )?;
        counters(
            e,
            "detector_idle_expired",
            "Sources forgotten after being idle.",
            "",
            &[("", d.idle_expired)],
        )?;
        counters(
            e,
            "detector_allowlisted_events",
            "Events from allowlisted sources (ignored).",
            "",
            &[("", d.allowlisted)],
        )?;
        counters(
            e,
            "detector_unmatched_answers",
            "Answers for pairs the detector does not track.",
            "",
            &[("", d.unmatched_responses)],
        )?;
        gauges(
            e,
            "correlator_entries",
            "Entries held by the correlator's tables.",
            "",
            &[("", c.held)],
        )?;
        gauges(
            e,
            "correlator_bytes",
            "Bytes held by the correlator's tables.",
            "",
            &[("", c.bytes)],
        )?;
        counters(
            e,
            "correlator_evictions",
            "Correlator entries evicted by its caps.",
            "",
            &[("", c.evicted)],
        )?;
        counters(
            e,
            "correlator_process_evictions",
            "Process creations evicted, each from the host holding the most (entries: correlate.max_processes; bytes: correlate.max_bytes).",
            "reason",
            &[
                ("entries", c.process_evictions.entries),
                ("bytes", c.process_evictions.bytes),
            ],
        )?;
        gauges(
            e,
            "correlator_process_hosts",
            "Hosts whose process creations the correlator holds.",
            "",
            &[("", c.process_hosts)],
        )?;
        counters(
            e,
            "correlator_attributed_pairs",
            "Gateway pairs attributed to a host process.",
            "",
            &[("", c.attributed)],
        )?;
        gauges(
            e,
            "host_rules_bytes",
            "Bytes held by the host rules' dedup tables.",
            "",
            &[("", h.bytes)],
        )?;
        counters(
            e,
            "host_rules_evictions",
            "Host-rule dedup entries evicted by their caps.",
            "",
            &[("", h.evicted)],
        )
    }

    fn alert_metrics(&self, e: &mut DescriptorEncoder) -> fmt::Result {
        let a = &self.alerts;
        let by_code: Vec<(&str, u64)> = KINDS
            .iter()
            .zip(a.by_kind)
            .map(|(k, n)| (k.code(), n))
            .collect();
        counters(
            e,
            "alerts",
            "Alerts handed to the sinks, by rule.id.",
            "code",
            &by_code,
        )?;
        let mut buckets: Vec<(f64, u64)> = LATENCY_BUCKETS
            .iter()
            .copied()
            .zip(a.latency_buckets)
            .collect();
        buckets.push((f64::INFINITY, a.latency_buckets[LATENCY_BUCKETS.len()]));
        let mut m = e.encode_descriptor(
            "detection_latency_seconds",
            "Scan alerts: time from the source's first SYN in the window to the alert (event time).",
            None,
            MetricType::Histogram,
        )?;
        m.encode_histogram::<NoLabelSet>(a.latency_sum, a.latency_count(), &buckets, None)
    }
}
