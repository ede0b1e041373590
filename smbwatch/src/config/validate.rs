//! The checks of values and of the relations between them, section by
//! section; each error is a dotted key and the problem ([`Invalid`]).

use std::time::Duration;

use ipnet::IpNet;

use super::{bad, fmt_dur, CorrelateConfig, DataplaneConfig, HostlogConfig, Invalid};
use crate::detect::DetectConfig;

/// Table indices in the detector are u32; keep caps well inside.
pub(super) const MAX_CAP: usize = 1 << 31;

pub(super) fn check_detect(d: &DetectConfig) -> Result<(), Invalid> {
    let per_source = d.max_destinations_per_source;
    let threshold = |key: &str, t: u32| {
        if t < 2 {
            bad(key, format!("{t}: must be at least 2"))
        } else if t as usize > per_source {
            bad(
                key,
                format!(
                    "{t} can never be reached: detect.max_destinations_per_source is {per_source}"
                ),
            )
        } else {
            Ok(())
        }
    };
    let window = |key: &str, w: Duration| {
        if w < d.response_timeout {
            bad(
                key,
                format!(
                    "{} is shorter than detect.response_timeout ({})",
                    fmt_dur(w),
                    fmt_dur(d.response_timeout)
                ),
            )
        } else {
            Ok(())
        }
    };
    let unit = |key: &str, x: f64| {
        if x > 0.0 && x < 1.0 {
            Ok(())
        } else {
            bad(key, format!("{x}: must be between 0 and 1 (exclusive)"))
        }
    };
    let cap = |key: &str, n: usize, min: usize| {
        if n < min {
            bad(key, format!("{n}: must be at least {min}"))
        } else if n > MAX_CAP {
            bad(key, format!("{n}: must be at most {MAX_CAP}"))
        } else {
            Ok(())
        }
    };

    window("detect.window", d.window)?;
    cap("detect.max_sources", d.max_sources, 1)?;
    cap("detect.max_pairs", d.max_pairs, 2)?;
    cap("detect.max_destinations_per_source", per_source, 2)?;
    if per_source > d.max_pairs {
        bad(
            "detect.max_destinations_per_source",
            format!(
                "{per_source} is more than detect.max_pairs ({})",
                d.max_pairs
            ),
        )?;
    }
    threshold("detect.fanout_threshold", d.fanout_threshold)?;
    scales("detect", d.window, &d.fanout_scales)?;
    unit("detect.trw_theta0", d.trw_theta0)?;
    unit("detect.trw_theta1", d.trw_theta1)?;
    if d.trw_theta1 >= d.trw_theta0 {
        bad(
            "detect.trw_theta1",
            format!(
                "{} must be less than detect.trw_theta0 ({}): scanners succeed less often than benign hosts",
                d.trw_theta1, d.trw_theta0
            ),
        )?;
    }
    unit("detect.trw_pd", d.trw_pd)?;
    unit("detect.trw_pf", d.trw_pf)?;
    if d.trw_pf >= d.trw_pd {
        bad(
            "detect.trw_pf",
            format!(
                "{} must be less than detect.trw_pd ({})",
                d.trw_pf, d.trw_pd
            ),
        )?;
    }
    for (i, net) in d.allow.iter().enumerate() {
        check_prefix(&format!("detect.allow[{i}]"), net)?;
    }
    for (i, o) in d.subnet.iter().enumerate() {
        let key = |k: &str| format!("detect.subnet[{i}].{k}");
        check_prefix(&key("cidr"), &o.cidr)?;
        if let Some(j) = d.subnet[..i].iter().position(|p| p.cidr == o.cidr) {
            bad(
                key("cidr"),
                format!("{} is already listed in detect.subnet[{j}]", o.cidr),
            )?;
        }
        threshold(&key("fanout_threshold"), o.fanout_threshold)?;
        if let Some(w) = o.window {
            window(&key("window"), w)?;
        }
        if let Some(more) = &o.fanout_scales {
            scales(
                &format!("detect.subnet[{i}]"),
                o.window.unwrap_or(d.window),
                more,
            )?;
        }
    }
    check_detect_prefix(d)?;
    if d.evasion_destinations > 64 {
        bad(
            "detect.evasion_destinations",
            format!("{}: must be between 0 (off) and 64", d.evasion_destinations),
        )?;
    }
    Ok(())
}

/// The longer fan-out scales under `section` (`detect` or
/// `detect.subnet[i]`), beside its base `window`.
fn scales(
    section: &str,
    base: Duration,
    more: &[crate::detect::FanoutScale],
) -> Result<(), Invalid> {
    let max = crate::detect::MAX_SCALES - 1;
    if more.len() > max {
        bad(
            format!("{section}.fanout_scales"),
            format!(
                "{} scales: give at most {max} (beside `window`)",
                more.len()
            ),
        )?;
    }
    let mut before = (format!("{section}.window"), base);
    for (i, sc) in more.iter().enumerate() {
        let key = format!("{section}.fanout_scales[{i}]");
        if sc.window <= before.1 {
            bad(
                format!("{key}.window"),
                format!(
                    "{} must be longer than {} ({}): scales go from short to long",
                    fmt_dur(sc.window),
                    before.0,
                    fmt_dur(before.1)
                ),
            )?;
        }
        if sc.threshold < 2 {
            bad(
                format!("{key}.threshold"),
                format!("{}: must be at least 2", sc.threshold),
            )?;
        }
        before = (format!("{key}.window"), sc.window);
    }
    Ok(())
}

fn check_detect_prefix(d: &DetectConfig) -> Result<(), Invalid> {
    let p = &d.prefix;
    if p.ipv4 > 32 {
        bad(
            "detect.prefix.ipv4",
            format!("{}: must be between 0 (off) and 32", p.ipv4),
        )?;
    }
    if p.ipv6 > 128 {
        bad(
            "detect.prefix.ipv6",
            format!("{}: must be between 0 (off) and 128", p.ipv6),
        )?;
    }
    for (i, net) in p.allow.iter().enumerate() {
        check_prefix(&format!("detect.prefix.allow[{i}]"), net)?;
    }
    for (key, n, min) in [
        ("detect.prefix.max_prefixes", p.max_prefixes, 1),
        ("detect.prefix.max_pairs", p.max_pairs, 2),
    ] {
        if n < min || n > MAX_CAP {
            bad(key, format!("{n}: must be between {min} and {MAX_CAP}"))?;
        }
    }
    if !(1..=10_000).contains(&p.min_members) {
        bad(
            "detect.prefix.min_members",
            format!("{}: must be between 1 and 10000", p.min_members),
        )?;
    }
    Ok(())
}

/// A prefix with host bits set (`10.1.2.0/16`) is almost always a typo for
/// another network; refuse it rather than guess.
fn check_prefix(key: &str, net: &IpNet) -> Result<(), Invalid> {
    if net.addr() != net.network() {
        bad(
            key,
            format!("{net} has host bits set; the network is {}", net.trunc()),
        )
    } else {
        Ok(())
    }
}

pub(super) fn check_dataplane(d: &DataplaneConfig) -> Result<(), Invalid> {
    for (i, name) in d.interfaces.iter().enumerate() {
        let key = format!("dataplane.interfaces[{i}]");
        // IFNAMSIZ is 16 with the NUL; '/' and whitespace are never in names.
        if name.is_empty() || name.len() > 15 || name.contains(['/', ' ', '\t', '\n']) {
            bad(
                &key,
                format!("{name:?}: not an interface name (1 to 15 characters, no '/' or spaces)"),
            )?;
        }
        if d.interfaces[..i].contains(name) {
            bad(&key, format!("{name} is listed twice"))?;
        }
    }
    if d.ports.is_empty() || d.ports.len() > 4 {
        bad(
            "dataplane.ports",
            format!("{} ports: give 1 to 4", d.ports.len()),
        )?;
    }
    for (i, &p) in d.ports.iter().enumerate() {
        if p == 0 {
            bad(format!("dataplane.ports[{i}]"), "0: ports are 1-65535")?;
        }
        if d.ports[..i].contains(&p) {
            bad(
                format!("dataplane.ports[{i}]"),
                format!("{p} is listed twice"),
            )?;
        }
    }
    // Kernel tables are arrays allocated whole at load: cap them so a typo
    // cannot ask the kernel for gigabytes.
    if !(2..=1 << 22).contains(&d.max_sources) {
        bad(
            "dataplane.max_sources",
            format!("{}: must be 2 to 4194304 (80 bytes each)", d.max_sources),
        )?;
    }
    if !(4..=1 << 24).contains(&d.max_pairs) {
        bad(
            "dataplane.max_pairs",
            format!("{}: must be 4 to 16777216 (16 bytes each)", d.max_pairs),
        )?;
    }
    d.sampling.validate()?;
    if d.events_per_cpu > 10_000_000 {
        bad(
            "dataplane.events_per_cpu",
            format!("{}: at most 10000000 (0 = no budget)", d.events_per_cpu),
        )?;
    }
    if !d.pin_dir.is_absolute() {
        bad(
            "dataplane.pin_dir",
            format!("{}: must be an absolute path", d.pin_dir.display()),
        )?;
    }
    Ok(())
}

pub(super) fn check_correlate(c: &CorrelateConfig) -> Result<(), Invalid> {
    check_bytes("correlate.max_bytes", c.max_bytes)?;
    for (key, v) in [
        ("correlate.max_pairs", c.max_pairs),
        ("correlate.max_host_events", c.max_host_events),
        ("correlate.max_chain_events", c.max_chain_events),
        ("correlate.max_scan_sources", c.max_scan_sources),
        ("correlate.max_processes", c.max_processes),
    ] {
        if v == 0 || v > MAX_CAP {
            bad(key, format!("{v}: must be between 1 and {MAX_CAP}"))?;
        }
    }
    Ok(())
}

pub(super) fn check_hostlog(h: &HostlogConfig) -> Result<(), Invalid> {
    if h.max_line < 1024 {
        bad(
            "hostlog.max_line",
            format!("{}: must be at least 1024", h.max_line),
        )?;
    }
    if h.max_connections == 0 {
        bad("hostlog.max_connections", "must be at least 1")?;
    }
    if h.line_timeout > h.idle_timeout {
        bad(
            "hostlog.line_timeout",
            format!(
                "{} is longer than hostlog.idle_timeout ({})",
                fmt_dur(h.line_timeout),
                fmt_dur(h.idle_timeout)
            ),
        )?;
    }
    if h.max_connections_per_peer == 0 || h.max_connections_per_peer > h.max_connections {
        bad(
            "hostlog.max_connections_per_peer",
            format!(
                "{}: must be between 1 and hostlog.max_connections ({})",
                h.max_connections_per_peer, h.max_connections
            ),
        )?;
    }
    let tls = [
        ("hostlog.tls_cert", &h.tls_cert),
        ("hostlog.tls_key", &h.tls_key),
        ("hostlog.tls_client_ca", &h.tls_client_ca),
    ];
    if tls.iter().any(|(_, v)| v.is_some()) {
        for (key, v) in tls {
            match v {
                None => bad(
                    key,
                    "missing: tls_cert, tls_key and tls_client_ca go together",
                )?,
                Some(p) if p.as_os_str().is_empty() => bad(key, "empty path")?,
                Some(_) => {}
            }
        }
    }
    if h.rules.max_dedup_entries == 0 || h.rules.max_dedup_entries > MAX_CAP {
        bad(
            "hostlog.rules.max_dedup_entries",
            format!(
                "{}: must be between 1 and {MAX_CAP}",
                h.rules.max_dedup_entries
            ),
        )?;
    }
    check_bytes("hostlog.rules.max_dedup_bytes", h.rules.max_dedup_bytes)
}

/// Byte budgets of in-memory tables: at least 64 KiB (a few large
/// records), at most 64 GiB.
const MIN_BYTES: usize = 64 << 10;
const MAX_BYTES: u64 = 64 << 30;

fn check_bytes(key: &str, v: usize) -> Result<(), Invalid> {
    if v < MIN_BYTES || v as u64 > MAX_BYTES {
        bad(
            key,
            format!("{v}: must be between {MIN_BYTES} (64 KiB) and {MAX_BYTES} (64 GiB)"),
        )
    } else {
        Ok(())
    }
}
