//! The kernel counter table: the one place that names every slot of the
//! STATS map for `smbwatch status`, the Prometheus metrics and the table
//! in docs/operations.md (a test in the application keeps that table
//! equal to [`FAMILIES`]).
//!
//! A counter is a series of a metric family; a family of one series has no
//! label. [`crate::stat::NAMES`] is built from this table at compile time,
//! and the build fails if a [`crate::stat`] index is in no family or in two.

use crate::stat;

/// A metric family of kernel counters.
#[derive(Clone, Copy, Debug)]
pub struct Family {
    /// Metric name without the `smbwatch_` prefix and `_total` suffix.
    pub metric: &'static str,
    /// The metric's HELP text.
    pub help: &'static str,
    /// The `meaning` column of docs/operations.md's metrics table.
    pub doc: &'static str,
    /// The label the series differ by; empty for a family of one series.
    pub label: &'static str,
    /// The counters of the family.
    pub series: &'static [Series],
}

/// One kernel counter: a slot of the STATS map.
#[derive(Clone, Copy, Debug)]
pub struct Series {
    /// Its [`crate::stat`] index.
    pub index: u32,
    /// Its name in `smbwatch status` and the logs.
    pub name: &'static str,
    /// Its label value in the family (empty for an unlabelled family).
    pub label: &'static str,
}

const fn one(
    metric: &'static str,
    help: &'static str,
    doc: &'static str,
    series: &'static [Series],
) -> Family {
    Family {
        metric,
        help,
        doc,
        label: "",
        series,
    }
}

const fn s(index: u32, name: &'static str, label: &'static str) -> Series {
    Series { index, name, label }
}

/// Every kernel counter, each in exactly one family, in the order the
/// metrics and the docs list them.
#[rustfmt::skip]
pub const FAMILIES: &[Family] = &[
    one("kernel_packets", "Frames the XDP program saw.",
        "frames the XDP program saw",
        &[s(stat::PACKETS, "packets", "")]),
    Family {
        metric: "kernel_ip_packets",
        help: "IP packets by family.",
        doc: "IP packets",
        label: "family",
        series: &[s(stat::IPV4, "ipv4", "ipv4"), s(stat::IPV6, "ipv6", "ipv6")],
    },
    one("kernel_vlan_frames", "Frames with VLAN tags.",
        "frames with VLAN tags",
        &[s(stat::VLAN, "vlan", "")]),
    one("kernel_monitored_syns", "Bare SYNs to a monitored port (first fragments included).",
        "bare SYNs to a monitored port",
        &[s(stat::MONITORED_SYNS, "monitored_syns", "")]),
    one("kernel_fragmented_syns", "TCP first fragments to a monitored port.",
        "TCP first fragments to a monitored port",
        &[s(stat::FRAGMENTED_SYNS, "fragmented_syns", "")]),
    one("kernel_later_fragments", "Non-first IP fragments (not inspected).",
        "non-first IP fragments (not inspected)",
        &[s(stat::LATER_FRAGMENTS, "later_fragments", "")]),
    one("kernel_new_pairs", "New (source, destination) pairs.",
        "new (source, destination) pairs",
        &[s(stat::NEW_PAIRS, "new_pairs", "")]),
    one("kernel_active_pairs", "Known pairs reported again: their first SYN in a later activity epoch.",
        "known pairs reported again: their first SYN in a later activity epoch (`active` events)",
        &[s(stat::ACTIVE_PAIRS, "active_pairs", "")]),
    one("kernel_confirmed", "Handshakes the client completed (its ACK after the SYN-ACK), reported.",
        "handshakes the client completed (its ACK after the SYN-ACK), reported (`confirmed` events)",
        &[s(stat::CONFIRMED, "confirmed", "")]),
    one("kernel_unparsed_reports", "Packets past the header walk's bounds reported as unparsed (one per source per minute).",
        "packets past the header walk's bounds reported as `unparsed` (one per source per minute)",
        &[s(stat::UNPARSED_REPORTS, "unparsed_reports", "")]),
    one("kernel_answers", "Answers (SYN-ACK or RST) to known pairs, reported.",
        "SYN-ACK/RST answers to known pairs, reported",
        &[s(stat::RESPONSES, "responses", "")]),
    one("kernel_answers_same_ingress", "Answers ignored: they arrived on the SYN's own ingress (forged from the client's side).",
        "answers ignored: from the SYN's own ingress",
        &[s(stat::ANSWERS_SAME_INGRESS, "answers_same_ingress", "")]),
    one("kernel_resets_after_accept", "Server resets after a SYN-ACK the client never confirmed.",
        "server resets after an unconfirmed SYN-ACK",
        &[s(stat::RESETS_AFTER_ACCEPT, "resets_after_accept", "")]),
    one("kernel_repeat_sources", "New pairs from sources seen within the repeat horizon.",
        "new pairs from recently seen sources",
        &[s(stat::REPEAT_SOURCES, "repeat_sources", "")]),
    Family {
        metric: "kernel_malformed",
        help: "Frames skipped as malformed, by the header that was truncated or invalid.",
        doc: "malformed frames by header",
        label: "kind",
        series: &[
            s(stat::MALFORMED_ETH, "malformed_eth", "eth"),
            s(stat::MALFORMED_VLAN, "malformed_vlan", "vlan"),
            s(stat::MALFORMED_IPV4, "malformed_ipv4", "ipv4"),
            s(stat::MALFORMED_IPV6, "malformed_ipv6", "ipv6"),
            s(stat::MALFORMED_TCP, "malformed_tcp", "tcp"),
        ],
    },
    Family {
        metric: "kernel_walk_limit",
        help: "Frames with more headers than the program walks (IPv6 extension headers, VLAN tags).",
        doc: "more than 16 IPv6 extension headers or VLAN tags: not walked to TCP, reported as `unparsed` (rate-limited)",
        label: "kind",
        series: &[
            s(stat::IPV6_EXT_LIMIT, "ipv6_ext_limit", "ipv6_ext"),
            s(stat::VLAN_LIMIT, "vlan_limit", "vlan"),
        ],
    },
    one("kernel_ringbuf_full", "Events lost because the ring buffer was full.",
        "events lost: ring buffer full",
        &[s(stat::RINGBUF_FULL, "ringbuf_full", "")]),
    one("kernel_sources_full", "New pairs whose source slot could not be claimed (sketch table update failed).",
        "source slot not claimed (sketch table update failed)",
        &[s(stat::SOURCES_FULL, "sources_full", "")]),
    one("kernel_events_shed", "New-pair events not sent: the per-CPU event budget was spent (the sketches still counted them).",
        "events shed by the per-CPU budget",
        &[s(stat::EVENTS_SHED, "events_shed", "")]),
    one("kernel_samples", "SMB payload sample records sent (segments of sampled connections).",
        "SMB payload sample records sent ([smb.md](smb.md), \"Kernel sampling\")",
        &[s(stat::SAMPLES, "samples", "")]),
    one("kernel_sample_bytes", "Payload bytes in SMB sample records sent.",
        "payload bytes in sample records sent",
        &[s(stat::SAMPLE_BYTES, "sample_bytes", "")]),
    one("kernel_sample_flows", "Connections that took a slot of the sampling flow table.",
        "connections that took a slot of the sampling flow table",
        &[s(stat::SAMPLE_FLOWS, "sample_flows", "")]),
    Family {
        metric: "kernel_sample_flows_refused",
        help: "Connections not sampled, by reason: their slot held a connection still sampled (busy), their source was past its rate (shed).",
        doc: "connections not sampled: slot held by a connection still sampled, or source past its rate",
        label: "reason",
        series: &[s(stat::SAMPLE_FLOWS_BUSY, "sample_flows_busy", "busy"), s(stat::SAMPLE_FLOWS_SHED, "sample_flows_shed", "shed")],
    },
    Family {
        metric: "kernel_samples_lost",
        help: "Sample records not sent, by reason: the per-CPU sample budget was spent (shed), the sample ring was full (ring_full).",
        doc: "sample records not sent: per-CPU sample budget spent, or sample ring full",
        label: "reason",
        series: &[s(stat::SAMPLES_SHED, "samples_shed", "shed"), s(stat::SAMPLE_RING_FULL, "sample_ring_full", "ring_full")],
    },
];

/// The counters' names in [`crate::stat`] index order. Evaluated at
/// compile time: an index in no family, or in two, fails the build.
pub const fn names() -> [&'static str; stat::COUNT as usize] {
    let mut out = [""; stat::COUNT as usize];
    let mut f = 0;
    while f < FAMILIES.len() {
        let series = FAMILIES[f].series;
        let mut i = 0;
        while i < series.len() {
            let at = series[i].index as usize;
            assert!(at < out.len(), "a counter index is past stat::COUNT");
            assert!(out[at].is_empty(), "a counter is in two families");
            out[at] = series[i].name;
            i += 1;
        }
        f += 1;
    }
    let mut i = 0;
    while i < out.len() {
        assert!(
            !out[i].is_empty(),
            "a stat index is in no family of counters::FAMILIES"
        );
        i += 1;
    }
    out
}
