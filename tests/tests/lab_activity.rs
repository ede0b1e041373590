//! Issue 16 end to end: activity, not first contact. The namespace lab with
//! the real daemon on the gateway: kernel activity epochs, multi-scale and
//! prefix fan-out, deep header walks, baseline learning from confirmed
//! handshakes only (replay: `replay_activity.rs`).
//!
//! Wall time is kept small: one lab carries the cases that take minutes
//! (two sweeps an epoch apart and a slow sweep run side by side), the rest
//! take seconds each.

use std::{
    net::IpAddr,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use integration_tests::{
    alerts,
    daemon::{json_lines, run_cli, Daemon},
    events,
    listen::listen_445,
    netns::{send_frames, Lab, ATTACKER_V4, GW_ATTACKER_IF, GW_SERVERS_IF},
    require_root,
    samba::Smbd,
    Findings, Scratch,
};
use serde_json::Value;
use smbwatch::packet::{Ipv6Ext, Segment};

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// Writes `body` as the daemon's configuration file in `dir`.
fn config(dir: &Path, body: &str) -> PathBuf {
    let p = dir.join("smbwatch.toml");
    std::fs::write(&p, body).unwrap();
    p
}

/// Alerts of kind `rule` about source `src` (the source's own alerts, not
/// a prefix's).
fn of<'a>(alerts: &'a [Value], rule: &str, src: &str) -> Vec<&'a Value> {
    alerts
        .iter()
        .filter(|a| alerts::rule_id(a) == rule && a["source"]["ip"] == src && prefix(a).is_none())
        .collect()
}

/// The source prefix a prefix alert names (`smbwatch.prefix`), if any.
fn prefix(a: &Value) -> Option<&str> {
    a["smbwatch"]["prefix"].as_str()
}

/// The scale a fan-out alert says fired (`smbwatch.scale`: `1m`, `10m`, `1h`).
fn scale(a: &Value) -> &str {
    a["smbwatch"]["scale"].as_str().unwrap_or("")
}

/// Event lines with `action` whose source is `src`.
fn events_of<'a>(lines: &'a [Value], action: &str, src: &str) -> Vec<&'a Value> {
    lines
        .iter()
        .filter(|l| events::action(l) == action && l["source"]["ip"] == src)
        .collect()
}

/// `nmap -sS -p445` of `targets` from the namespace of `ns`, optionally
/// from the extra address `from` of interface `iface`; how many ports it
/// found open.
fn nmap(
    ns: &integration_tests::netns::NetNs,
    from: Option<(&str, &str)>,
    targets: &[IpAddr],
) -> usize {
    let mut args: Vec<String> = ["-n", "-Pn", "-sS", "-p445"].map(String::from).to_vec();
    if targets.first().is_some_and(IpAddr::is_ipv6) {
        args.push("-6".into());
    }
    if let Some((addr, iface)) = from {
        args.extend(["-S".into(), addr.into(), "-e".into(), iface.into()]);
    }
    args.extend(targets.iter().map(IpAddr::to_string));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = ns.exec("nmap", &args).expect("nmap");
    String::from_utf8_lossy(&out.stdout)
        .matches("445/tcp open")
        .count()
}

/// With a 1 min activity epoch: the same nmap sweep twice, 2 min apart,
/// raises two fan-out alerts (the second sweep's pairs are reported again,
/// `active`); a server that refuses first and accepts later (smbd started
/// after the first attempt) gets an `accepted` report after its `refused`
/// one; alongside, a sweep of 60 answered hosts at one per 4 s raises a
/// fan-out alert on the 10 min scale and none on the 1 min scale.
#[test]
fn epochs_report_second_sweeps_late_answers_and_slow_sweeps() {
    require_root();
    let dir = Scratch::new("activity");
    // 60 answered hosts for the slow sweep (the first 30 are also the nmap
    // sweep's), one more that refuses, then accepts.
    let lab = Lab::new(61).expect("lab");
    let clients = lab.add_clients(2).expect("clients");
    let (late_client, slow) = (&clients[0], &clients[1]);
    let late_server = lab.server_v4[60];
    let _listeners = listen_445(&lab.servers, &lab.server_v4[..60]).expect("listeners");
    lab.wait_reachable(late_server).unwrap();
    // A 1 min epoch; the 10 min scale at 50 hosts, so 60 cross it while 15
    // a minute stay under the 1 min scale's 20. Nothing else changed: a
    // second sweep must alert again by the detector's own rules.
    let cfg = config(
        &dir.0,
        "[dataplane]\nactivity_epoch = \"1m\"\n\
         [detect]\nfanout_scales = [{ window = \"10m\", threshold = 50 }, { window = \"1h\", threshold = 300 }]\n",
    );
    let json = dir.0.join("alerts.json");
    let mut args = vec!["--events".to_string(), "--config".into(), s(&cfg).into()];
    for c in &clients {
        args.extend(["--iface".into(), c.gw_if.clone()]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let daemon = Daemon::on_gateway(&lab, &json, &args).expect("daemon");
    let mut f = Findings::default();

    std::thread::scope(|scope| {
        // The slow sweep: one new answered host every 4 s, 60 hosts.
        let slow_sweep = scope.spawn(|| {
            let start = Instant::now();
            let mut open = 0;
            for (i, host) in lab.server_v4[..60].iter().enumerate() {
                if let Some(wait) = (Duration::from_secs(4) * i as u32).checked_sub(start.elapsed())
                {
                    std::thread::sleep(wait);
                }
                open += nmap(&slow.ns, None, &[*host]);
            }
            (open, start.elapsed())
        });

        // Refused, then accepted: nothing listens on the late server yet.
        let late = late_client.addr.to_string();
        let srv = late_server.to_string();
        let refused = late_client
            .ns
            .exec("bash", &["-c", &format!("exec 3<>/dev/tcp/{srv}/445")]);
        f.check(refused.is_err(), || {
            "the late server refused at first".into()
        });
        let lines = daemon.lines_when(Duration::from_secs(10), |l| {
            !events_of(l, "refused", &late).is_empty()
        });
        f.check(!events_of(&lines, "refused", &late).is_empty(), || {
            format!("a refused report for {late} -> {srv}")
        });
        let smbd = Smbd::start(&lab.servers, &[late_server]).expect("smbd");
        let out = late_client
            .ns
            .exec(
                "smbclient",
                &[
                    &format!("//{srv}/public"),
                    "-N",
                    "-c",
                    "get hello.txt /dev/stdout",
                ],
            )
            .expect("smbclient");
        assert!(String::from_utf8_lossy(&out.stdout).contains("hello from the lab"));
        let lines = daemon.lines_when(Duration::from_secs(10), |l| {
            !events_of(l, "accepted", &late).is_empty()
        });
        let pair = |l: &&Value| l["destination"]["ip"] == srv.as_str();
        let refused_at = lines.iter().position(|l| {
            events::action(l) == "refused" && l["source"]["ip"] == late.as_str() && pair(&l)
        });
        let accepted_at = lines.iter().rposition(|l| {
            events::action(l) == "accepted" && l["source"]["ip"] == late.as_str() && pair(&l)
        });
        f.check(
            matches!((refused_at, accepted_at), (Some(r), Some(a)) if a > r),
            || {
                format!(
                    "an accepted report for {late} -> {srv} after its refused one (refused at line {refused_at:?}, accepted at {accepted_at:?}): {:#?}",
                    lines.iter().filter(|l| l["source"]["ip"] == late.as_str()).collect::<Vec<_>>()
                )
            },
        );
        drop(smbd);

        // The same sweep twice, 2 min apart.
        let first = Instant::now();
        assert_eq!(lab.sweep_30(&[]).expect("nmap"), 30, "nmap probed 30 hosts");
        let a = alerts::wait(&json, Duration::from_secs(10), |a| {
            !of(a, "smb_scan_fanout", ATTACKER_V4).is_empty()
        });
        f.check(of(&a, "smb_scan_fanout", ATTACKER_V4).len() == 1, || {
            format!("one fan-out alert after the first sweep: {a:#?}")
        });
        let before_second = daemon.lines_when(Duration::ZERO, |_| true).len();
        std::thread::sleep(Duration::from_secs(120).saturating_sub(first.elapsed()));
        assert_eq!(
            lab.sweep_30(&[]).expect("nmap"),
            30,
            "nmap probed 30 hosts again"
        );
        let a = alerts::wait(&json, Duration::from_secs(10), |a| {
            of(a, "smb_scan_fanout", ATTACKER_V4).len() >= 2
        });
        f.check(of(&a, "smb_scan_fanout", ATTACKER_V4).len() == 2, || {
            format!("two fan-out alerts after the second sweep, 2 min (two epochs) later: {a:#?}")
        });
        f.check(
            of(&a, "smb_scan_fanout", ATTACKER_V4)
                .iter()
                .all(|x| scale(x) == "1m"),
            || format!("both sweeps alerted on the 1 min scale: {a:#?}"),
        );
        let lines = daemon.lines_when(Duration::from_secs(5), |l| {
            events_of(&l[before_second..], "active", ATTACKER_V4).len() >= 30
        });
        let active = events_of(&lines[before_second..], "active", ATTACKER_V4).len();
        f.check(active >= 20, || {
            format!("the second sweep's pairs reported again as active: {active} active lines")
        });

        let (open, took) = slow_sweep.join().expect("slow sweep thread");
        eprintln!("slow sweep: {open} of 60 hosts open, {took:?}");
        f.check(open == 60, || {
            format!("all 60 slow-sweep hosts answered (open: {open})")
        });
        let slow_src = slow.addr.to_string();
        let a = alerts::wait(&json, Duration::from_secs(10), |a| {
            !of(a, "smb_scan_fanout", &slow_src).is_empty()
        });
        let fan = of(&a, "smb_scan_fanout", &slow_src);
        f.check(
            fan.len() == 1 && scale(fan[0]) == "10m",
            || format!("one fan-out alert on the 10 min scale for the slow sweep from {slow_src}: {fan:#?}"),
        );
        f.check(
            fan.iter()
                .all(|a| a["smbwatch"]["distinct_destinations"].as_u64() >= Some(50)),
            || format!("the 10 min alert fires at its threshold of 50 hosts: {fan:#?}"),
        );
    });
    let (code, said) = daemon.stop_with_stderr().unwrap();
    f.check(code == 0, || format!("clean stop: {said}"));
    f.assert_none();
}

/// 30 lab attacker addresses in one /24 (and 30 in one /64) sweeping 30
/// answered hosts together, each probing 3 of them (source i hosts i, i+1,
/// i+2): no member crosses a threshold alone, their prefix does (30 hosts:
/// past 20, short of the doubling that would raise again), and raises one
/// alert naming the prefix.
#[test]
fn thirty_sources_of_one_prefix_raise_one_prefix_alert() {
    require_root();
    let dir = Scratch::new("prefix");
    let lab = Lab::new(30).expect("lab");
    let v4: Vec<String> = (100..130).map(|i| format!("203.0.113.{i}")).collect();
    let v6: Vec<String> = (0x100..0x11e)
        .map(|i| format!("2001:db8:a::{i:x}"))
        .collect();
    for a in &v4 {
        lab.attacker
            .ip(&["addr", "add", &format!("{a}/24"), "dev", "a0"])
            .unwrap();
    }
    for a in &v6 {
        lab.attacker
            .ip(&[
                "-6",
                "addr",
                "add",
                &format!("{a}/64"),
                "dev",
                "a0",
                "nodad",
            ])
            .unwrap();
    }
    let all: Vec<IpAddr> = lab
        .server_v4
        .iter()
        .chain(&lab.server_v6)
        .copied()
        .collect();
    let _listeners = listen_445(&lab.servers, &all).expect("listeners");
    lab.wait_reachable(lab.server_v4[0]).unwrap();
    let json = dir.0.join("alerts.json");
    let daemon = Daemon::on_gateway(&lab, &json, &["--events"]).expect("daemon");
    // Six nmaps at a time: all 60 sources within the 1 min window.
    let three = |hosts: &[IpAddr], i: usize| -> Vec<IpAddr> {
        (i..i + 3).map(|k| hosts[k % hosts.len()]).collect()
    };
    let jobs: Vec<(&String, Vec<IpAddr>)> = v4
        .iter()
        .enumerate()
        .map(|(i, src)| (src, three(&lab.server_v4, i)))
        .chain(
            v6.iter()
                .enumerate()
                .map(|(i, src)| (src, three(&lab.server_v6, i))),
        )
        .collect();
    let start = Instant::now();
    let mut open = 0;
    for batch in jobs.chunks(6) {
        open += std::thread::scope(|sc| {
            let hs: Vec<_> = batch
                .iter()
                .map(|(src, targets)| sc.spawn(|| nmap(&lab.attacker, Some((src, "a0")), targets)))
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).sum::<usize>()
        });
    }
    eprintln!(
        "60 sources sent 180 probes ({open} open) in {:?}",
        start.elapsed()
    );
    let mut f = Findings::default();
    f.check(open == 180, || {
        format!("every probe answered (open: {open} of 180)")
    });
    alerts::wait(&json, Duration::from_secs(10), |a| {
        a.iter().filter(|a| prefix(a).is_some()).count() >= 2
    });
    // Give a second, wrong alert time to show up.
    std::thread::sleep(Duration::from_secs(2));
    let a = &alerts::read(&json);
    for (net, members) in [("203.0.113.0/24", &v4), ("2001:db8:a::/64", &v6)] {
        let named: Vec<_> = a.iter().filter(|x| prefix(x) == Some(net)).collect();
        f.check(named.len() == 1, || {
            format!("one alert naming {net}: {a:#?}")
        });
        for x in &named {
            let n = x["smbwatch"]["prefix_members"].as_u64().unwrap_or(0);
            f.check(n >= 2, || {
                format!("{net}: member sources counted ({n}): {x:#}")
            });
            let top: Vec<&str> = x["smbwatch"]["prefix_top_members"]
                .as_array()
                .map(|v| v.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            f.check(
                !top.is_empty() && top.iter().all(|t| members.iter().any(|m| m == t)),
                || format!("{net}: top members listed, all of them members: {x:#}"),
            );
        }
        let alone: Vec<_> = a
            .iter()
            .filter(|x| {
                prefix(x).is_none() && members.iter().any(|m| x["source"]["ip"] == m.as_str())
            })
            .collect();
        f.check(alone.is_empty(), || {
            format!("no member of {net} alerted alone: {alone:#?}")
        });
    }
    let (code, said) = daemon.stop_with_stderr().unwrap();
    f.check(code == 0, || format!("clean stop: {said}"));
    f.assert_none();
}

/// SYN sweeps behind none (the control), 7, 12 and 16 IPv6 extension headers, 4 VLAN tags, and
/// a chain longer than any bound (180 headers: a full frame): every source
/// is reported (its pairs, or itself as unparsed) and every sweep alerts.
/// Sent live from the attacker's namespace over its veth to the gateway,
/// where the daemon's XDP program is attached.
#[test]
fn deep_header_sweeps_are_reported_and_alert() {
    require_root();
    let dir = Scratch::new("deep");
    let lab = Lab::new(30).expect("lab");
    lab.wait_reachable(lab.server_v4[0]).unwrap();
    let json = dir.0.join("alerts.json");
    let daemon = Daemon::on_gateway(&lab, &json, &["--events"]).expect("daemon");
    // (what, source, how many extension headers, VLAN tags)
    let cases: [(&str, &str, usize, usize); 6] = [
        // The control: plain IPv6, so a failure below is the headers' doing.
        ("no extension header", "2001:db8:a::200", 0, 0),
        ("7 extension headers", "2001:db8:a::207", 7, 0),
        ("12 extension headers", "2001:db8:a::212", 12, 0),
        ("16 extension headers", "2001:db8:a::216", 16, 0),
        ("180 extension headers", "2001:db8:a::380", 180, 0),
        ("4 VLAN tags", "203.0.113.44", 0, 4),
    ];
    let mut frames = Vec::new();
    for (_, src, ext, tags) in cases {
        let src: IpAddr = src.parse().unwrap();
        let targets = if src.is_ipv6() {
            &lab.server_v6
        } else {
            &lab.server_v4
        };
        for (k, &dst) in targets.iter().enumerate() {
            let mut seg = Segment::syn(src, dst, 40_000 + k as u16, 445);
            seg.ipv6_ext = vec![Ipv6Ext::DestOpts; ext];
            seg.vlans = (1..=tags as u16).map(|t| 100 * t).collect();
            frames.push(seg.frame());
        }
    }
    assert!(
        frames.iter().all(|f| f.len() <= 1514),
        "every frame fits the link"
    );
    send_frames(&lab.attacker, "a0", &frames).expect("send");
    let srcs: Vec<&str> = cases.iter().map(|c| c.1).collect();
    // Done when each source has all its pairs or an unparsed report.
    let reported = |l: &[Value], s: &str| {
        events_of(l, "new_pair", s).len() >= 30 || !events_of(l, "unparsed", s).is_empty()
    };
    let lines = daemon.lines_when(Duration::from_secs(10), |l| {
        srcs.iter().all(|s| reported(l, s))
    });
    let a = alerts::wait(&json, Duration::from_secs(10), |a| {
        srcs.iter().all(|s| {
            !of(a, "smb_scan_fanout", s).is_empty() || !of(a, "smb_evasion_attempt", s).is_empty()
        })
    });
    let mut f = Findings::default();
    for (what, src, ext, tags) in cases {
        let pairs = events_of(&lines, "new_pair", src).len();
        let unparsed = events_of(&lines, "unparsed", src).len();
        eprintln!("{what}: {pairs} pairs, {unparsed} unparsed reports");
        f.check(pairs > 0 || unparsed > 0, || {
            format!("{what} ({src}): neither pairs nor unparsed reported")
        });
        if ext <= 16 && tags == 0 {
            // The bound: at least 16 headers walked.
            f.check(pairs == 30, || {
                format!("{what} ({src}): 30 pairs reported (bound ≥ 16), got {pairs}")
            });
        }
        let rule = if pairs > 0 {
            "smb_scan_fanout"
        } else {
            "smb_evasion_attempt"
        };
        f.check(of(&a, rule, src).len() == 1, || {
            format!("{what} ({src}): one {rule} alert: {a:#?}")
        });
    }
    let (code, said) = daemon.stop_with_stderr().unwrap();
    f.check(code == 0, || format!("clean stop: {said}"));
    f.assert_none();
}

/// `hping3 -S --rand-source` at an open server for 10 s while the daemon
/// learns a baseline: the server answers the spoofed SYNs, no spoofed
/// client is learned (none completes a handshake); a real smbclient session
/// in the middle of the flood is.
#[test]
fn spoofed_syns_teach_the_baseline_nothing_but_a_real_session_does() {
    require_root();
    let dir = Scratch::new("spoofed");
    let db = dir.0.join("baseline.redb");
    let lab = Lab::new(1).expect("lab");
    let clients = lab.add_clients(1).expect("client");
    let client = &clients[0];
    let server = lab.server_v4[0];
    let _smbd = Smbd::start(&lab.servers, &[server]).expect("smbd");
    let daemon = Daemon::start(
        &lab.gateway,
        &[
            "--iface",
            GW_ATTACKER_IF,
            "--iface",
            GW_SERVERS_IF,
            "--iface",
            &client.gw_if,
            "--events",
            "--baseline",
            s(&db),
        ],
    )
    .expect("daemon");
    let mut flood = lab
        .attacker
        .command("hping3")
        .args([
            "-S",
            "--rand-source",
            "-p",
            "445",
            "-i",
            "u500",
            &server.to_string(),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("hping3");
    std::thread::sleep(Duration::from_secs(4));
    let out = client
        .ns
        .exec(
            "smbclient",
            &[
                &format!("//{server}/public"),
                "-N",
                "-c",
                "get hello.txt /dev/stdout",
            ],
        )
        .expect("smbclient");
    assert!(String::from_utf8_lossy(&out.stdout).contains("hello from the lab"));
    std::thread::sleep(Duration::from_secs(6));
    let _ = flood.kill();
    let _ = flood.wait();
    let me = client.addr.to_string();
    let lines = daemon.lines_when(Duration::from_secs(5), |l| {
        !events_of(l, "confirmed", &me).is_empty()
    });
    let mut f = Findings::default();
    let spoofed_answered = lines
        .iter()
        .filter(|l| events::action(l) == "accepted" && l["source"]["ip"] != me.as_str())
        .count();
    eprintln!("{spoofed_answered} spoofed SYNs answered and reported");
    f.check(spoofed_answered >= 1000, || {
        format!("the server answered the spoofed SYNs and the daemon saw it: {spoofed_answered} accepted reports")
    });
    f.check(!events_of(&lines, "confirmed", &me).is_empty(), || {
        format!("the smbclient session's handshake confirmed for {me}")
    });
    let (code, said) = daemon.stop_with_stderr().unwrap();
    f.check(code == 0, || format!("clean stop: {said}"));
    let rows = json_lines(&run_cli(&["baseline", "export", "--db", s(&db)]).stdout);
    let learned: Vec<&str> = rows
        .iter()
        .filter(|r| r["type"] == "client")
        .filter_map(|r| r["addr"].as_str())
        .collect();
    f.check(learned == [me.as_str()], || {
        format!(
            "only the real client learned: {} clients, first: {:?}",
            learned.len(),
            &learned[..learned.len().min(5)]
        )
    });
    let edges: Vec<(&str, &str)> = rows
        .iter()
        .filter(|r| r["type"] == "edge")
        .map(|r| {
            (
                r["client"].as_str().unwrap_or(""),
                r["server"].as_str().unwrap_or(""),
            )
        })
        .collect();
    let srv = server.to_string();
    f.check(edges == [(me.as_str(), srv.as_str())], || {
        format!(
            "one edge, the real session's: {} edges, first: {:?}",
            edges.len(),
            &edges[..edges.len().min(5)]
        )
    });
    f.assert_none();
}
