//! Each section's values: bad ones are refused naming the key and the line
//! (detection, dataplane, syslog, host logs, budgets, process classes,
//! baseline, scales and prefixes).

use super::*;

#[test]
fn bad_cidr_names_key_and_line() {
    let (line, key, message) =
        error("[detect]\nallow = [\n  \"10.0.0.0/8\",\n  \"10.0.0.0/33\",\n]\n");
    assert_eq!((line, key.as_deref()), (4, Some("detect.allow[1]")));
    assert_eq!(
        message,
        "prefix length 33 in \"10.0.0.0/33\" is longer than an IPv4 address (32 bits)"
    );

    let (line, key, message) = error("[detect]\nallow = [\"192.0.2.0/24\", \"10.1.2.0/16\"]\n");
    assert_eq!((line, key.as_deref()), (2, Some("detect.allow[1]")));
    assert_eq!(
        message,
        "10.1.2.0/16 has host bits set; the network is 10.1.0.0/16"
    );

    let (line, key, message) =
        error("[[detect.subnet]]\ncidr = \"300.0.0.0/8\"\nfanout_threshold = 5\n");
    assert_eq!((line, key.as_deref()), (2, Some("detect.subnet[0].cidr")));
    assert!(
        message.starts_with("\"300.0.0.0\" in \"300.0.0.0/8\" is not an IP address"),
        "{message}"
    );
}

#[test]
fn trw_relations_are_checked() {
    let (line, key, message) = error("[detect]\ntrw_theta0 = 0.3\ntrw_theta1 = 0.5\n");
    assert_eq!((line, key.as_deref()), (3, Some("detect.trw_theta1")));
    assert!(
        message.contains("must be less than detect.trw_theta0 (0.3)"),
        "{message}"
    );

    let (line, key, _) = error("[detect]\ntrw_pd = 1.0\n");
    assert_eq!((line, key.as_deref()), (2, Some("detect.trw_pd")));

    let (line, key, _) = error("[detect]\ntrw_pf = nan\n");
    assert_eq!((line, key.as_deref()), (2, Some("detect.trw_pf")));

    // The key that is absent (default in force) is reported at its section.
    let (line, key, _) = error("\n[detect]\ntrw_theta0 = 0.1\n");
    assert_eq!((line, key.as_deref()), (2, Some("detect.trw_theta1")));
}

#[test]
fn thresholds_and_caps_are_checked() {
    let (line, key, message) = error("[detect]\nfanout_threshold = 1\n");
    assert_eq!((line, key.as_deref()), (2, Some("detect.fanout_threshold")));
    assert_eq!(message, "1: must be at least 2");

    let (_, key, message) =
        error("[detect]\nfanout_threshold = 100\nmax_destinations_per_source = 50\n");
    assert_eq!(key.as_deref(), Some("detect.fanout_threshold"));
    assert!(message.contains("can never be reached"), "{message}");

    let (line, key, _) = error("[detect]\nmax_sources = 0\n");
    assert_eq!((line, key.as_deref()), (2, Some("detect.max_sources")));

    let (line, key, _) = error("[detect]\nmax_sources = -1\n");
    assert_eq!((line, key.as_deref()), (2, Some("detect.max_sources")));

    let (line, key, message) = error(
        "[[detect.subnet]]\ncidr = \"10.0.0.0/8\"\nfanout_threshold = 5\n\n[[detect.subnet]]\ncidr = \"10.0.0.0/8\"\nfanout_threshold = 6\n",
    );
    assert_eq!((line, key.as_deref()), (6, Some("detect.subnet[1].cidr")));
    assert_eq!(message, "10.0.0.0/8 is already listed in detect.subnet[0]");

    let (line, key, _) = error("[[detect.subnet]]\ncidr = \"10.0.0.0/8\"\n");
    assert_eq!(
        (line, key.as_deref()),
        (1, Some("detect.subnet[0]")),
        "missing fanout_threshold"
    );
}

#[test]
fn subnet_overrides_parse() {
    let cfg = parse(
        "[detect]\nallow = [\"192.0.2.10/32\", \"2001:db8:b::/48\"]\n\
         [[detect.subnet]]\ncidr = \"10.0.0.0/8\"\nfanout_threshold = 50\n\
         [[detect.subnet]]\ncidr = \"2001:db8::/32\"\nfanout_threshold = 10\nwindow = \"1h\"\n",
    )
    .unwrap();
    assert_eq!(cfg.detect.allow.len(), 2);
    assert_eq!(cfg.detect.subnet[0].window, None);
    assert_eq!(cfg.detect.subnet[1].window, Some(Duration::from_secs(3600)));
}

#[test]
fn dataplane_ports_are_checked() {
    let (line, key, _) = error("[dataplane]\nports = [445, 0]\n");
    assert_eq!((line, key.as_deref()), (2, Some("dataplane.ports[1]")));
    let (_, key, message) = error("[dataplane]\nports = [1, 2, 3, 4, 5]\n");
    assert_eq!(key.as_deref(), Some("dataplane.ports"));
    assert_eq!(message, "5 ports: give 1 to 4");
    let (_, key, _) = error("[dataplane]\nports = [445, 445]\n");
    assert_eq!(key.as_deref(), Some("dataplane.ports[1]"));
    let (line, key, _) = error("[dataplane]\nports = [70000]\n");
    assert_eq!((line, key.as_deref()), (2, Some("dataplane.ports[0]")));
    let (_, key, _) = error("[dataplane]\nxdp_mode = \"turbo\"\n");
    assert_eq!(key.as_deref(), Some("dataplane.xdp_mode"));
    assert_eq!(
        parse("[dataplane]\nports = [445, 139]\n")
            .unwrap()
            .dataplane
            .load_options(1, std::time::Duration::from_secs(60))
            .ports,
        [445, 139]
    );
}

#[test]
fn syslog_and_hostlog_values_are_checked() {
    let (line, key, _) = error("[syslog]\nfacility = \"local4\"\ntarget = \"smtp://x\"\n");
    assert_eq!((line, key.as_deref()), (3, Some("syslog.target")));
    let (line, key, _) = error("[syslog]\ntarget = \"tls://logs.example.net:6514\"\n");
    assert_eq!(
        (line, key.as_deref()),
        (1, Some("syslog.tls_ca")),
        "absent key: its section"
    );
    let (line, key, _) = error("[syslog]\nfacility = \"local9\"\n");
    assert_eq!((line, key.as_deref()), (2, Some("syslog.facility")));
    let (line, key, message) = error("[hostlog]\nlisten = \"127.0.0.1:5514\"\n");
    assert_eq!((line, key.as_deref()), (2, Some("hostlog.listen")));
    assert!(message.contains("tcp://ADDR:PORT"), "{message}");
    let cfg = parse("[hostlog]\nlisten = \"tcp://[::1]:5514\"\n").unwrap();
    assert_eq!(
        cfg.hostlog.listen,
        Some(ListenAddr("[::1]:5514".parse().unwrap()))
    );
    let (line, key, message) = error("[hostlog]\nlisten = \"tcp://localhost:5514\"\n");
    assert_eq!((line, key.as_deref()), (2, Some("hostlog.listen")));
    assert_eq!(
        message,
        "\"tcp://localhost:5514\": expected tcp://ADDR:PORT with an IP address (IPv6 in brackets)"
    );
    // The one parser serves the file and the command line alike.
    assert_eq!(
        "tcp://127.0.0.1:5514"
            .parse::<ListenAddr>()
            .unwrap()
            .to_string(),
        "tcp://127.0.0.1:5514"
    );
    let (_, key, _) = error("[hostlog]\nmax_connections = 4\nmax_connections_per_peer = 5\n");
    assert_eq!(key.as_deref(), Some("hostlog.max_connections_per_peer"));
    let (_, key, _) = error("[alert]\njson = \"\"\n");
    assert_eq!(key.as_deref(), Some("alert.json"));
    let (line, key, message) = error("[hostlog]\ntls_cert = \"/a.pem\"\ntls_key = \"/a.key\"\n");
    assert_eq!((line, key.as_deref()), (1, Some("hostlog.tls_client_ca")));
    assert_eq!(
        message,
        "missing: tls_cert, tls_key and tls_client_ca go together"
    );
}

#[test]
fn byte_budgets_are_checked() {
    let (line, key, message) = error("[correlate]\nmax_bytes = 1000\n");
    assert_eq!((line, key.as_deref()), (2, Some("correlate.max_bytes")));
    assert_eq!(
        message,
        "1000: must be between 65536 (64 KiB) and 68719476736 (64 GiB)"
    );
    let (_, key, _) = error("[hostlog.rules]\nmax_dedup_bytes = 0\n");
    assert_eq!(key.as_deref(), Some("hostlog.rules.max_dedup_bytes"));
    let d = Config::default();
    assert_eq!(
        (d.correlate.max_bytes, d.hostlog.rules.max_dedup_bytes),
        (64 << 20, 64 << 20)
    );
}

#[test]
fn process_class_problems_name_the_key() {
    // The lists' own validation is smbwatch-core's (correlate's tests); the
    // file's error names file, key and problem.
    let e = Config::from_str_named("[process_classes]\nbrowsers = [\"a/b.exe\"]\n", "t.toml")
        .unwrap_err()
        .to_string();
    assert!(e.contains("process_classes.browsers[0]"), "{e}");
}

#[test]
fn baseline_problems_name_the_key() {
    let bad = |text: &str| {
        Config::from_str_named(text, "t.toml")
            .unwrap_err()
            .to_string()
    };
    assert!(
        bad("[baseline]\nmax_edges = 3\n").contains("baseline.max_edges: 3: must be between 16")
    );
    assert!(bad("[baseline]\noff_hours_slack = \"90m\"\n").contains("must be whole hours"));
    assert!(bad("[baseline]\nlearn_for = \"1m\"\n").contains("baseline.learn_for"));
    assert!(bad("[baseline]\nservers = [\"192.0.2.1/24\"]\n").contains("baseline.servers[0]"));
    let ok = Config::from_str_named(
        "[baseline]\nenabled = true\nlearn_for = \"9d\"\nscanners = [\"203.0.113.0/24\"]\n",
        "t.toml",
    )
    .unwrap();
    assert_eq!(ok.baseline.learn_for, Duration::from_secs(9 * 86_400));
}

/// The issue-16 detection keys: bad values are refused naming the key.
#[test]
fn scales_prefixes_and_evasion_are_checked_by_key() {
    for (text, key, words) in [
        (
            "[detect]\nfanout_scales = [{ window = \"30s\", threshold = 50 }]\n",
            "detect.fanout_scales[0].window",
            "must be longer than detect.window (1m)",
        ),
        (
            "[detect]\nfanout_scales = [{ window = \"1h\", threshold = 50 }, { window = \"10m\", threshold = 90 }]\n",
            "detect.fanout_scales[1].window",
            "must be longer than detect.fanout_scales[0].window (1h)",
        ),
        (
            "[detect]\nfanout_scales = [{ window = \"10m\", threshold = 1 }]\n",
            "detect.fanout_scales[0].threshold",
            "1: must be at least 2",
        ),
        (
            "[detect]\nfanout_scales = [{ window = \"2m\", threshold = 9 }, { window = \"3m\", threshold = 9 }, { window = \"4m\", threshold = 9 }, { window = \"5m\", threshold = 9 }]\n",
            "detect.fanout_scales",
            "4 scales: give at most 3",
        ),
        (
            "[detect]\nfanout_scales = [{ window = \"8days\", threshold = 9 }]\n",
            "detect.fanout_scales[0].window",
            "must be between 1s and 7days",
        ),
        (
            "[[detect.subnet]]\ncidr = \"192.0.2.0/24\"\nfanout_threshold = 5\nwindow = \"1h\"\nfanout_scales = [{ window = \"10m\", threshold = 50 }]\n",
            "detect.subnet[0].fanout_scales[0].window",
            "must be longer than detect.subnet[0].window (1h)",
        ),
        ("[detect.prefix]\nipv4 = 33\n", "detect.prefix.ipv4", "33: must be between 0 (off) and 32"),
        ("[detect.prefix]\nipv6 = 129\n", "detect.prefix.ipv6", "between 0 (off) and 128"),
        (
            "[detect.prefix]\nallow = [\"192.0.2.1/24\"]\n",
            "detect.prefix.allow[0]",
            "has host bits set",
        ),
        ("[detect.prefix]\nmin_members = 0\n", "detect.prefix.min_members", "between 1 and 10000"),
        ("[detect.prefix]\nmax_prefixes = 0\n", "detect.prefix.max_prefixes", "0: must be between 1"),
        ("[detect]\nevasion_destinations = 65\n", "detect.evasion_destinations", "between 0 (off) and 64"),
        ("[detect]\nevasion_window = \"2days\"\n", "detect.evasion_window", "between 1s and 1day"),
        ("[baseline]\nnew_client_prefix_v4 = 40\n", "baseline.new_client_prefix_v4", "between 0 and 32"),
    ] {
        let (_, k, message) = error(text);
        assert_eq!(k.as_deref(), Some(key), "{text}");
        assert!(message.contains(words), "{text}: {message}");
    }
    // Off switches and empty scale lists are fine.
    parse("[detect]\nfanout_scales = []\nevasion_destinations = 0\n[detect.prefix]\nipv4 = 0\nipv6 = 0\n")
        .unwrap();
}

/// A window of 10 min or more without scales of its own (a file written
/// before the scales existed) keeps the default scales that fit above it;
/// explicit scales are still judged as given.
#[test]
fn a_long_window_keeps_the_default_scales_that_fit() {
    let windows = |text: &str| -> Vec<u64> {
        Config::from_str_named(text, "t.toml")
            .unwrap()
            .detect
            .fanout_scales
            .iter()
            .map(|s| s.window.as_secs())
            .collect()
    };
    assert_eq!(windows("[detect]\nwindow = \"1m\"\n"), [600, 3600]);
    assert_eq!(windows("[detect]\nwindow = \"10m\"\n"), [3600]);
    assert_eq!(windows("[detect]\nwindow = \"2h\"\n"), Vec::<u64>::new());
    let e = Config::from_str_named(
        "[detect]\nwindow = \"10m\"\nfanout_scales = [{ window = \"5m\", threshold = 50 }]\n",
        "t.toml",
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("detect.fanout_scales[0].window"), "{e}");
}
