//! Duration keys: their parsing, their ranges (zero, negative, too large),
//! and `docs/smbwatch.toml` stating each range next to its key.

use super::*;

#[test]
fn durations_parse() {
    let cfg = parse(
        "[detect]\nwindow = \"90s\"\nhold_down = \"2h\"\nresponse_timeout = \"1500ms\"\n\
         [correlate]\nchain_window = \"15m\"\nclock_skew = \"0s\"\n",
    )
    .unwrap();
    assert_eq!(cfg.detect.window, Duration::from_secs(90));
    assert_eq!(cfg.detect.hold_down, Duration::from_secs(7200));
    assert_eq!(cfg.detect.response_timeout, Duration::from_millis(1500));
    assert_eq!(cfg.correlate.chain_window, Duration::from_secs(900));
    assert_eq!(cfg.correlate.clock_skew, Duration::ZERO);
}

#[test]
fn zero_and_negative_durations_are_rejected() {
    let (line, key, message) = error("[detect]\nfanout_threshold = 10\nwindow = \"0s\"\n");
    assert_eq!((line, key.as_deref()), (3, Some("detect.window")));
    assert_eq!(message, "must be greater than 0");

    let (line, key, _) = error("[detect]\nwindow = \"-5s\"\n");
    assert_eq!((line, key.as_deref()), (2, Some("detect.window")));

    let (line, key, message) = error("[detect]\nwindow = \"2s\"\n");
    assert_eq!((line, key.as_deref()), (2, Some("detect.window")));
    assert_eq!(message, "2s is shorter than detect.response_timeout (3s)");

    let (line, key, _) = error("[dataplane]\nstats_interval = \"0s\"\n");
    assert_eq!(
        (line, key.as_deref()),
        (2, Some("dataplane.stats_interval"))
    );

    let (line, key, _) = error("[correlate]\nchain_window = \"0s\"\n");
    assert_eq!((line, key.as_deref()), (2, Some("correlate.chain_window")));

    let (line, key, _) =
        error("[[detect.subnet]]\ncidr = \"10.0.0.0/8\"\nfanout_threshold = 5\nwindow = \"0s\"\n");
    assert_eq!((line, key.as_deref()), (4, Some("detect.subnet[0].window")));
}

/// These passed `check-config` and panicked at the first host event
/// (chrono overflow in the correlator and the host rules).
#[test]
fn huge_durations_are_refused_with_key_and_range() {
    let (line, key, message) = error("[correlate]\nretention = \"500000000000y\"\n");
    assert_eq!((line, key.as_deref()), (2, Some("correlate.retention")));
    assert!(
        message.ends_with(": must be between 1s and 1day"),
        "{message}"
    );
    let (line, key, message) = error("[hostlog.rules]\nconnection_dedup = \"500000000000y\"\n");
    assert_eq!(
        (line, key.as_deref()),
        (2, Some("hostlog.rules.connection_dedup"))
    );
    assert!(
        message.ends_with(": must be between 0s and 1h"),
        "{message}"
    );
    let (_, key, message) = error(
        "[[detect.subnet]]\ncidr = \"10.0.0.0/8\"\nfanout_threshold = 5\nwindow = \"30days\"\n",
    );
    assert_eq!(key.as_deref(), Some("detect.subnet[0].window"));
    assert_eq!(message, "30days: must be between 1s and 7days");
    // Set in code or by a flag: the same check.
    let mut cfg = Config::default();
    cfg.correlate.chain_window = Duration::MAX;
    let err = cfg.validate().unwrap_err().to_string();
    assert!(err.starts_with("correlate.chain_window: "), "{err}");
    assert!(err.ends_with(": must be between 1s and 7days"), "{err}");
    // The bounds themselves are accepted.
    parse("[correlate]\nretention = \"1day\"\nclock_skew = \"0s\"\n").unwrap();
    let (_, key, _) = error("[hostlog]\nline_timeout = \"20m\"\nidle_timeout = \"10m\"\n");
    assert_eq!(key.as_deref(), Some("hostlog.line_timeout"));
}

/// Every duration the configuration has is in `DURATIONS` and
/// checked, and `docs/smbwatch.toml` states each range next to its key.
#[test]
fn every_duration_has_a_documented_range() {
    let mut cfg = Config::default();
    cfg.detect.subnet.push(crate::detect::SubnetOverride {
        cidr: "10.0.0.0/8".parse().unwrap(),
        fanout_threshold: 5,
        window: Some(Duration::from_secs(60)),
        fanout_scales: Some(vec![crate::detect::FanoutScale {
            window: Duration::from_secs(600),
            threshold: 50,
        }]),
    });
    // Every string value that reads as a duration, by dotted key.
    fn walk(prefix: &str, v: &toml::Value, out: &mut Vec<String>) {
        match v {
            toml::Value::Table(t) => {
                for (k, v) in t {
                    let p = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    walk(&p, v, out);
                }
            }
            toml::Value::Array(a) => a.iter().for_each(|v| walk(prefix, v, out)),
            toml::Value::String(s) if humantime::parse_duration(s).is_ok() => {
                out.push(prefix.to_owned())
            }
            _ => {}
        }
    }
    let mut found = Vec::new();
    walk("", &toml::Value::try_from(&cfg).unwrap(), &mut found);
    let checked: Vec<String> = durations::durations(&cfg)
        .into_iter()
        .map(|(k, _, _)| k.replace("[0]", "").replace("[1]", ""))
        .collect();
    found.sort();
    found.dedup();
    for key in &found {
        assert!(checked.contains(key), "{key} is not checked");
    }
    assert_eq!(found.len(), DURATIONS.len(), "{found:?}");

    let text = include_str!("../../../../docs/smbwatch.toml");
    for DurationKey { key, min, max, .. } in DURATIONS {
        let want = format!("Range: {} to {}", fmt_dur(*min), fmt_dur(*max));
        // Scales are inline arrays: their range sits above `fanout_scales`.
        let (section, leaf) = match key.strip_suffix(".fanout_scales.window") {
            Some(section) => (section, "fanout_scales"),
            None => key.rsplit_once('.').unwrap(),
        };
        let header = if section == "detect.subnet" {
            "# [[detect.subnet]]".to_owned()
        } else {
            format!("\n[{section}]\n")
        };
        let start = text
            .find(&header)
            .unwrap_or_else(|| panic!("{header} missing"));
        let rest = &text[start..];
        let at = rest
            .find(&format!("\n{leaf} = "))
            .or_else(|| rest.find(&format!("\n# {leaf} = ")))
            .unwrap_or_else(|| panic!("{key} missing"));
        // The comment block right above the key.
        let comment: Vec<&str> = rest[..at]
            .lines()
            .rev()
            .take_while(|l| l.starts_with('#'))
            .collect();
        let comment = comment.join("\n");
        assert!(
            comment.contains(&want),
            "{key}: docs/smbwatch.toml should say {want:?} above it; has:\n{comment}"
        );
    }
}
