//! Every duration of the configuration with its allowed range, in one
//! list: the key, the range and where its values are sit in one row, so a
//! new duration cannot be checked without a range or ranged without being
//! checked.
//!
//! Checked before anything else, so no later arithmetic can overflow.
//! `docs/smbwatch.toml` states each range next to its key; a test keeps
//! them equal.

use std::time::Duration;

use super::{bad, fmt_dur, Config, Invalid};

const SEC: u64 = 1;
const MIN: u64 = 60 * SEC;
const HOUR: u64 = 60 * MIN;
const DAY: u64 = 24 * HOUR;

const fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// A duration key: its allowed range and its values in a configuration.
#[derive(Clone, Copy)]
pub struct DurationKey {
    /// Dotted key; `detect.subnet.window` stands for every
    /// `detect.subnet[i].window`.
    pub key: &'static str,
    /// Shortest allowed.
    pub min: Duration,
    /// Longest allowed.
    pub max: Duration,
    /// The values `key` has in a configuration, each with its dotted key
    /// (indices included); none for an absent optional one.
    values: fn(&Config) -> Vec<(String, Duration)>,
}

/// A key with one value.
macro_rules! one {
    ($key:literal, $min:expr, $max:expr, |$c:ident| $v:expr) => {
        DurationKey {
            key: $key,
            min: $min,
            max: $max,
            values: |$c| vec![($key.to_owned(), $v)],
        }
    };
}

/// Every duration of the configuration.
pub const DURATIONS: &[DurationKey] = &[
    one!("detect.window", secs(1), secs(7 * DAY), |c| c.detect.window),
    one!(
        "detect.response_timeout",
        Duration::from_millis(10),
        secs(5 * MIN),
        |c| c.detect.response_timeout
    ),
    one!("detect.hold_down", Duration::ZERO, secs(7 * DAY), |c| c
        .detect
        .hold_down),
    one!("detect.evasion_window", secs(1), secs(DAY), |c| c
        .detect
        .evasion_window),
    one!("dataplane.stats_interval", secs(1), secs(DAY), |c| c
        .dataplane
        .stats_interval),
    one!("dataplane.activity_epoch", secs(MIN), secs(DAY), |c| c
        .dataplane
        .activity_epoch),
    one!("correlate.clock_skew", Duration::ZERO, secs(HOUR), |c| c
        .correlate
        .clock_skew),
    one!("correlate.chain_window", secs(1), secs(7 * DAY), |c| c
        .correlate
        .chain_window),
    one!("correlate.retention", secs(1), secs(DAY), |c| c
        .correlate
        .retention),
    one!(
        "correlate.process_retention",
        secs(1),
        secs(30 * DAY),
        |c| c.correlate.process_retention
    ),
    one!(
        "syslog.backoff_min",
        Duration::from_millis(1),
        secs(HOUR),
        |c| c.syslog.backoff_min
    ),
    one!(
        "syslog.backoff_max",
        Duration::from_millis(1),
        secs(DAY),
        |c| c.syslog.backoff_max
    ),
    one!(
        "syslog.shutdown_timeout",
        Duration::ZERO,
        secs(10 * MIN),
        |c| c.syslog.shutdown_timeout
    ),
    one!("hostlog.line_timeout", secs(1), secs(HOUR), |c| c
        .hostlog
        .line_timeout),
    one!("hostlog.idle_timeout", secs(1), secs(DAY), |c| c
        .hostlog
        .idle_timeout),
    one!("hostlog.max_ahead", Duration::ZERO, secs(DAY), |c| c
        .hostlog
        .max_ahead),
    one!(
        "hostlog.rules.connection_dedup",
        Duration::ZERO,
        secs(HOUR),
        |c| c.hostlog.rules.connection_dedup
    ),
    one!(
        "hostlog.rules.share_dedup",
        Duration::ZERO,
        secs(7 * DAY),
        |c| c.hostlog.rules.share_dedup
    ),
    one!("baseline.learn_for", secs(HOUR), secs(30 * DAY), |c| c
        .baseline
        .learn_for),
    one!(
        "baseline.off_hours_slack",
        Duration::ZERO,
        secs(12 * HOUR),
        |c| c.baseline.off_hours_slack
    ),
    one!("baseline.flush_interval", secs(1), secs(HOUR), |c| c
        .baseline
        .flush_interval),
    one!("baseline.name_ttl", secs(MIN), secs(7 * DAY), |c| c
        .baseline
        .name_ttl),
    one!(
        "baseline.new_server_window",
        secs(MIN),
        secs(30 * DAY),
        |c| c.baseline.new_server_window
    ),
    one!("smb.idle_timeout", secs(1), secs(DAY), |c| c
        .smb
        .idle_timeout),
    one!("smb.enum_window", secs(1), secs(HOUR), |c| c
        .smb
        .enum_window),
    one!("smb.dedup_window", secs(1), secs(7 * DAY), |c| c
        .smb
        .dedup_window),
    one!("smb.host_wait", Duration::ZERO, secs(10 * MIN), |c| c
        .smb
        .host_wait),
    // Indexed keys last, as they were checked before the list was one.
    DurationKey {
        key: "detect.fanout_scales.window",
        min: secs(1),
        max: secs(7 * DAY),
        values: |c| {
            (c.detect.fanout_scales.iter().enumerate())
                .map(|(i, sc)| (format!("detect.fanout_scales[{i}].window"), sc.window))
                .collect()
        },
    },
    DurationKey {
        key: "detect.subnet.window",
        min: secs(1),
        max: secs(7 * DAY),
        values: |c| {
            (c.detect.subnet.iter().enumerate())
                .filter_map(|(i, o)| Some((format!("detect.subnet[{i}].window"), o.window?)))
                .collect()
        },
    },
    DurationKey {
        key: "detect.subnet.fanout_scales.window",
        min: secs(1),
        max: secs(7 * DAY),
        values: |c| {
            let mut out = Vec::new();
            for (i, o) in c.detect.subnet.iter().enumerate() {
                for (j, sc) in o.fanout_scales.iter().flatten().enumerate() {
                    out.push((
                        format!("detect.subnet[{i}].fanout_scales[{j}].window"),
                        sc.window,
                    ));
                }
            }
            out
        },
    },
];

/// Every duration value of `cfg`, by dotted key, with its range.
pub(super) fn durations(cfg: &Config) -> Vec<(String, Duration, &'static DurationKey)> {
    DURATIONS
        .iter()
        .flat_map(|d| (d.values)(cfg).into_iter().map(move |(k, v)| (k, v, d)))
        .collect()
}

/// Every duration of `cfg` within its range.
pub(super) fn check(cfg: &Config) -> Result<(), Invalid> {
    for (key, v, range) in durations(cfg) {
        if v.is_zero() && !range.min.is_zero() {
            bad(key, "must be greater than 0")?;
        } else if v < range.min || v > range.max {
            bad(
                key,
                format!(
                    "{}: must be between {} and {}",
                    fmt_dur(v),
                    fmt_dur(range.min),
                    fmt_dur(range.max)
                ),
            )?;
        }
    }
    Ok(())
}
