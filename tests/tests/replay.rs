//! Replay of real and crafted captures through the real XDP program.
//!
//! The real captures live in `../shared/data/pcap` (not in the repository);
//! tests that need them print a message and pass when it is absent.

use std::{
    net::IpAddr,
    path::{Path, PathBuf},
};

use integration_tests::{
    events,
    pcap::{pcap_header, pcap_record},
    require_root,
};
use smbwatch::{
    alert::{ecs::gateway::ToEventLine as _, Alert, AlertKind},
    detect::{DetectConfig, Detector},
    event::{GatewayEvent, GatewayEventKind},
    packet::{tcp_flags, Segment},
    replay::{Progress, Replay, ReplayOptions, ReplaySink, ReplaySummary},
};
use smbwatch_common::{addr::MacAddr, stat};

const PCAP_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/data/pcap");

fn data(name: &str) -> Option<PathBuf> {
    let p = Path::new(PCAP_DIR).join(name);
    if p.exists() {
        Some(p)
    } else {
        integration_tests::skip(&format!(
            "{} not found (the shared test captures are not part of the repository)",
            p.display()
        ));
        None
    }
}

fn opts() -> ReplayOptions {
    ReplayOptions {
        progress: Progress::Never,
        ..Default::default()
    }
}

/// Collects events and runs them through the scan detector with its defaults.
struct Collect {
    events: Vec<GatewayEvent>,
    detector: Detector,
    alerts: Vec<Alert>,
}

impl Collect {
    fn new() -> Self {
        Self {
            events: Vec::new(),
            detector: Detector::new(DetectConfig::default()),
            alerts: Vec::new(),
        }
    }

    fn fanout_sources(&self) -> Vec<IpAddr> {
        self.alerts
            .iter()
            .filter(|a| a.kind == AlertKind::SmbScanFanout)
            .filter_map(|a| a.source_ip)
            .collect()
    }
}

impl ReplaySink for Collect {
    fn event(&mut self, ev: &GatewayEvent) {
        self.events.push(ev.clone());
        let alerts = self.detector.observe(ev);
        self.alerts.extend(alerts);
    }

    fn advance(&mut self, now: chrono::DateTime<chrono::Utc>) {
        let alerts = self.detector.advance(now);
        self.alerts.extend(alerts);
    }

    fn alerts(&self) -> Option<u64> {
        Some(self.alerts.len() as u64)
    }
}

fn replay(path: &Path) -> (ReplaySummary, Collect) {
    require_root();
    let mut sink = Collect::new();
    let summary = Replay::open(path, &opts())
        .unwrap_or_else(|e| panic!("open {}: {e:#}", path.display()))
        .run(&mut sink)
        .unwrap_or_else(|e| panic!("replay {}: {e:#}", path.display()));
    eprintln!("{summary}");
    (summary, sink)
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn eternalblue_is_one_source_one_destination_47_syns_no_fanout() {
    let Some(path) = data("eternalblue-success-unpatched-win7.pcap") else {
        return;
    };
    let (s, c) = replay(&path);
    assert_eq!(s.records, 576);
    assert_eq!(s.replayed, 576);
    assert_eq!(s.kernel.get(stat::PACKETS), 576);
    assert_eq!(s.kernel.get(stat::MONITORED_SYNS), 47);
    assert_eq!(s.kernel.get(stat::NEW_PAIRS), 1);
    assert_eq!(s.sources, 1);
    assert_eq!(s.top_sources[0].addr, ip("192.168.198.204"));
    assert_eq!(s.top_sources[0].pairs, 1);
    let new_pairs: Vec<_> = c
        .events
        .iter()
        .filter(|e| e.kind == GatewayEventKind::NewPair)
        .collect();
    assert_eq!(new_pairs.len(), 1);
    assert_eq!(new_pairs[0].src, ip("192.168.198.204"));
    assert_eq!(new_pairs[0].dport, 445);
    // The frames' Ethernet source addresses (tshark: eth.src of the SYN and
    // of the SYN-ACK): the client's on the pair, the server's on its answer.
    assert_eq!(
        new_pairs[0].src_mac,
        Some(MacAddr([0x00, 0x0c, 0x29, 0xa3, 0x01, 0xb7]))
    );
    let accepted = c
        .events
        .iter()
        .find(|e| e.kind == GatewayEventKind::Accepted)
        .expect("the SYN-ACK");
    assert_eq!(
        accepted.src_mac,
        Some(MacAddr([0x00, 0x0c, 0x29, 0x68, 0x24, 0x5a]))
    );
    // Stamped with the capture's time, not the replay's.
    let (first, last) = (s.first_ts.unwrap(), s.last_ts.unwrap());
    assert!(
        first <= new_pairs[0].ts && new_pairs[0].ts <= last,
        "capture time: {}",
        new_pairs[0].ts
    );
    assert!((last - first).num_seconds() < 120, "{first} to {last}");
    assert_eq!(
        s.events.accepted, 1,
        "the first answer of the pair is a SYN-ACK"
    );
    assert_eq!(s.kernel.malformed(), 0);
    assert_eq!(s.backwards_timestamps, 0);
    assert!(s.truncated.is_none());
    assert!(c.fanout_sources().is_empty(), "no fan-out: {:?}", c.alerts);
    assert_eq!(s.alerts, Some(c.alerts.len() as u64));
}

#[test]
fn smb2_peter_is_one_benign_pair() {
    let Some(path) = data("suricata-verify_smb2-peter.pcap") else {
        return;
    };
    let (s, c) = replay(&path);
    assert_eq!(s.records, 792);
    assert_eq!(s.kernel.get(stat::NEW_PAIRS), 1);
    assert_eq!(s.kernel.get(stat::MONITORED_SYNS), 1);
    assert_eq!(s.top_sources[0].addr, ip("10.3.1.2"));
    assert!(c.alerts.is_empty(), "benign SMB: {:?}", c.alerts);
}

#[test]
fn telnet_sweep_without_rewrite_is_not_smb() {
    let Some(path) = data("scanng_23-tcp-scan.pcap") else {
        return;
    };
    let (s, c) = replay(&path);
    assert_eq!(s.records, 31_933);
    assert_eq!(s.kernel.get(stat::MONITORED_SYNS), 0);
    assert!(c.events.is_empty());
}

/// A temporary file removed on drop.
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn temp_path(name: &str) -> TempFile {
    TempFile(std::env::temp_dir().join(format!("smbwatch-replay-{}-{name}", std::process::id())))
}

/// Rewrites TCP port 23 to 445 in every Ethernet/IPv4 record of a classic
/// little- or big-endian pcap (SYNs: destination port; answers: source port).
/// The TCP checksum is left stale: the XDP program never checks it.
fn rewrite_telnet_to_smb(pcap: &[u8]) -> (Vec<u8>, usize) {
    let mut out = pcap.to_vec();
    let le = match &pcap[..4] {
        [0xd4, 0xc3, 0xb2, 0xa1] | [0x4d, 0x3c, 0xb2, 0xa1] => true,
        [0xa1, 0xb2, 0xc3, 0xd4] | [0xa1, 0xb2, 0x3c, 0x4d] => false,
        other => panic!("not a classic pcap: {other:02x?}"),
    };
    let u32_at = |b: &[u8], i: usize| {
        let a = [b[i], b[i + 1], b[i + 2], b[i + 3]];
        if le {
            u32::from_le_bytes(a)
        } else {
            u32::from_be_bytes(a)
        }
    };
    assert_eq!(u32_at(pcap, 20) & 0xffff, 1, "Ethernet capture");
    let mut pos = 24;
    let mut rewritten = 0;
    while pos + 16 <= out.len() {
        let incl = u32_at(&out, pos + 8) as usize;
        let rec = pos + 16;
        let end = rec + incl;
        let mut l3 = rec + 14;
        let mut ethertype = u16::from_be_bytes([out[rec + 12], out[rec + 13]]);
        if ethertype == 0x8100 {
            ethertype = u16::from_be_bytes([out[rec + 16], out[rec + 17]]);
            l3 += 4;
        }
        if ethertype == 0x0800 && l3 + 20 <= end && out[l3 + 9] == 6 {
            let tcp = l3 + usize::from(out[l3] & 0x0f) * 4;
            if tcp + 4 <= end {
                for port in [tcp, tcp + 2] {
                    if out[port..port + 2] == 23u16.to_be_bytes() {
                        out[port..port + 2].copy_from_slice(&445u16.to_be_bytes());
                        rewritten += 1;
                    }
                }
            }
        }
        pos = end;
    }
    (out, rewritten)
}

#[test]
fn telnet_sweep_rewritten_to_445_is_a_fanout_scan() {
    let Some(path) = data("scanng_23-tcp-scan.pcap") else {
        return;
    };
    let (bytes, rewritten) = rewrite_telnet_to_smb(&std::fs::read(&path).unwrap());
    // The capture holds the scanner's side only: SYNs, no answers.
    assert_eq!(rewritten, 31_933, "SYNs rewritten");
    let tmp = temp_path("scanng-445.pcap");
    std::fs::write(&tmp.0, bytes).unwrap();
    let (s, c) = replay(&tmp.0);
    assert_eq!(s.kernel.get(stat::MONITORED_SYNS), 31_933);
    let scanner = ip("200.125.200.2");
    assert_eq!(s.top_sources[0].addr, scanner);
    assert_eq!(s.top_sources[0].pairs, 12_007, "distinct destinations");
    assert_eq!(s.events.new_pairs, 12_007);
    assert_eq!(s.kernel.get(stat::RINGBUF_FULL), 0);
    let fanout = c.fanout_sources();
    assert!(
        fanout.contains(&scanner),
        "fan-out alert for the scanner: {fanout:?}"
    );
    assert!(fanout.iter().all(|a| *a == scanner), "{fanout:?}");
}

#[test]
fn the_same_capture_replays_to_the_same_output() {
    let Some(path) = data("eternalblue-success-unpatched-win7.pcap") else {
        return;
    };
    let (s1, c1) = replay(&path);
    let (s2, c2) = replay(&path);
    assert_eq!(s1, s2);
    assert_eq!(c1.events, c2.events);
    let json =
        |c: &Collect| -> Vec<String> { c.events.iter().map(|e| e.to_json().to_string()).collect() };
    assert_eq!(json(&c1), json(&c2));
}

/// A classic little-endian microsecond pcap of `link` with `(ts, data)` records.
fn write_pcap(path: &Path, link: u32, recs: &[(u32, &[u8])]) {
    let mut v = pcap_header(link);
    for (ts, data) in recs {
        pcap_record(&mut v, *ts, 0, data);
    }
    std::fs::write(path, v).unwrap();
}

#[test]
fn crafted_sll_capture_with_backwards_time_short_and_jumbo_records() {
    require_root();
    let syn = |src: &str| Segment::syn(ip(src), ip("198.51.100.7"), 40000, 445);
    let sll = |ipkt: &[u8]| {
        let mut r = vec![0, 0, 0, 1, 0, 6, 2, 0, 0, 0, 0, 1, 0, 0, 0x08, 0x00];
        r.extend_from_slice(ipkt);
        r
    };
    let a = sll(&syn("203.0.113.1").ip_packet());
    let b = sll(&syn("203.0.113.2").ip_packet());
    // A 9000-byte packet whose headers are a SYN: cut, still counted.
    let mut jumbo_ip = syn("203.0.113.3").ip_packet();
    jumbo_ip.resize(9000, 0);
    let jumbo = sll(&jumbo_ip);
    let answer = sll(&Segment::new(
        ip("198.51.100.7"),
        ip("203.0.113.1"),
        445,
        40000,
        tcp_flags::SYN | tcp_flags::ACK,
    )
    .ip_packet());
    let tmp = temp_path("crafted-sll.pcap");
    write_pcap(
        &tmp.0,
        113,
        &[
            (1_000, &a),
            (990, &b),           // backwards: taken at 1000
            (1_001, &[0u8; 10]), // shorter than the SLL header: skipped
            (1_002, &jumbo),
            (1_003, &answer),
        ],
    );
    let (s, c) = replay(&tmp.0);
    assert_eq!(s.records, 5);
    assert_eq!(s.replayed, 4);
    assert_eq!(s.skipped_short, 1);
    assert_eq!(s.backwards_timestamps, 1);
    // Kernels that test-run multi-buffer frames take it whole (the program
    // sees the first page); others refuse it and replay cuts it.
    let cut = u64::from(jumbo.len() + 14 - 16 > s.max_frame);
    assert_eq!(s.cut_frames, cut, "max frame {}", s.max_frame);
    assert_eq!(s.kernel.get(stat::MONITORED_SYNS), 3);
    assert_eq!(s.kernel.get(stat::RESPONSES), 1);
    let got: Vec<(i64, GatewayEventKind, IpAddr)> = c
        .events
        .iter()
        .map(|e| (e.ts.timestamp(), e.kind, e.src))
        .collect();
    assert_eq!(
        got,
        vec![
            (1_000, GatewayEventKind::NewPair, ip("203.0.113.1")),
            (1_000, GatewayEventKind::NewPair, ip("203.0.113.2")),
            (1_002, GatewayEventKind::NewPair, ip("203.0.113.3")),
            (1_003, GatewayEventKind::Accepted, ip("203.0.113.1")),
        ]
    );
    assert_eq!(s.first_ts.unwrap().timestamp(), 1_000);
    assert_eq!(s.last_ts.unwrap().timestamp(), 1_003);
}

#[test]
fn truncated_capture_is_a_warning_and_keeps_what_was_read() {
    require_root();
    let a = Segment::syn(ip("203.0.113.1"), ip("198.51.100.7"), 1, 445).frame();
    let b = Segment::syn(ip("203.0.113.2"), ip("198.51.100.7"), 1, 445).frame();
    let tmp = temp_path("truncated.pcap");
    write_pcap(&tmp.0, 1, &[(1, &a), (2, &b)]);
    let bytes = std::fs::read(&tmp.0).unwrap();
    std::fs::write(&tmp.0, &bytes[..bytes.len() - 7]).unwrap();
    let (s, c) = replay(&tmp.0);
    assert_eq!(s.records, 1);
    assert_eq!(c.events.len(), 1);
    let warning = s.truncated.expect("a truncation warning");
    assert!(warning.contains("cut short"), "{warning}");
}

#[test]
fn unsupported_link_type_and_non_capture_are_clear_errors() {
    require_root();
    let tmp = temp_path("wifi.pcap");
    write_pcap(&tmp.0, 105, &[(1, &[0u8; 40])]);
    let err = Replay::open(&tmp.0, &opts()).err().expect("802.11 refused");
    assert!(err.to_string().contains("not supported"), "{err}");
    std::fs::write(&tmp.0, b"hello, this is not a capture").unwrap();
    let err = Replay::open(&tmp.0, &opts()).err().expect("text refused");
    assert!(err.to_string().contains("not a pcap or pcapng"), "{err}");
}

/// Lines of `smbwatch` output: events (`event.action`) and ECS alerts
/// (`rule.id`).
fn event_set(lines: &[serde_json::Value]) -> std::collections::BTreeSet<String> {
    lines
        .iter()
        .filter_map(|l| {
            let (src, dst) = (&l["source"]["ip"], &l["destination"]["ip"]);
            match events::action(l) {
                "new_pair" => Some(format!("new_pair {src} {dst} {}", l["destination"]["port"])),
                a @ ("accepted" | "refused") => Some(format!("response {src} {dst} {a}")),
                _ => None,
            }
        })
        .collect()
}

fn alert_set(lines: &[serde_json::Value]) -> std::collections::BTreeSet<String> {
    lines
        .iter()
        .filter(|l| l["event"]["kind"] == "alert")
        .inspect(|l| integration_tests::alerts::check_ecs(l))
        .map(|l| format!("{} {}", l["rule"]["id"], l["source"]["ip"]))
        .collect()
}

/// A capture taken live in the lab's gateway (ingress on both interfaces,
/// which is what XDP sees; `tcpdump -i any` writes Linux cooked v2) while
/// nmap sweeps, replayed with `smbwatch replay`, gives the events and alerts
/// the live daemon printed.
#[test]
fn live_lab_capture_replays_to_what_the_daemon_raised() {
    use integration_tests::{
        daemon::{smbwatch_bin, Daemon},
        netns::{Lab, GW_ATTACKER_IF, GW_SERVERS_IF},
        samba::Smbd,
    };
    use std::time::Duration;
    require_root();
    const N: usize = 8;
    let lab = Lab::new(N).expect("lab");
    let targets = lab.server_v4.clone();
    lab.wait_reachable(targets[0]).unwrap();
    let _smbd = Smbd::start(&lab.servers, &targets[..3]).expect("smbd");
    let detect = ["--fanout-threshold", "5", "--window", "1m"];
    let mut args = vec![
        "--iface",
        GW_ATTACKER_IF,
        "--iface",
        GW_SERVERS_IF,
        "--stats-interval",
        "1s",
        "--json",
        "-",
        "--events",
    ];
    args.extend(detect);
    let daemon = Daemon::start(&lab.gateway, &args).expect("daemon");

    let pcap = temp_path("lab-live.pcap");
    let mut tcpdump = lab
        .gateway
        .command("tcpdump")
        // Immediate mode: packets reach tcpdump (and the file) as they come,
        // not when a ring block fills or times out. It gives each packet a
        // snaplen-sized ring slot, so a small snaplen (headers are all replay
        // needs) keeps nmap's burst from overflowing the default buffer.
        .args([
            "-i",
            "any",
            "-Q",
            "in",
            "--immediate-mode",
            "-s",
            "128",
            "-U",
            "-n",
            "-w",
        ])
        .arg(&pcap.0)
        .arg("tcp port 445")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("tcpdump");
    // tcpdump says "listening on any" once its socket is bound.
    let mut err = std::io::BufReader::new(tcpdump.stderr.take().unwrap());
    let mut line = String::new();
    while !line.contains("listening on") {
        line.clear();
        assert!(
            std::io::BufRead::read_line(&mut err, &mut line).unwrap() > 0,
            "tcpdump exited"
        );
    }

    let mut nmap = vec!["-n", "-Pn", "-sS", "-p445", "--max-retries", "1"];
    let t: Vec<String> = targets.iter().map(|a| a.to_string()).collect();
    nmap.extend(t.iter().map(String::as_str));
    lab.attacker.exec("nmap", &nmap).expect("nmap");
    let live = daemon.lines_when(Duration::from_secs(10), |l| {
        l.iter().filter(|x| events::is_answer(x)).count() >= N && !alert_set(l).is_empty()
    });
    std::thread::sleep(Duration::from_millis(500));
    // SAFETY: signalling our own child.
    unsafe { libc::kill(tcpdump.id() as i32, libc::SIGINT) };
    tcpdump.wait().unwrap();
    let mut tcpdump_said = String::new();
    std::io::Read::read_to_string(&mut err, &mut tcpdump_said).unwrap();
    eprintln!("tcpdump: {tcpdump_said}");
    daemon.stop().unwrap();

    let out = std::process::Command::new(smbwatch_bin())
        // The capture as a plain argument (other tests pass `--pcap`).
        .args(["replay", "--events"])
        .arg(&pcap.0)
        .args(detect)
        .output()
        .expect("smbwatch replay");
    let summary = String::from_utf8_lossy(&out.stderr);
    eprintln!("{summary}");
    assert!(out.status.success(), "replay failed: {summary}");
    assert!(
        summary.contains("linux cooked v2 (SLL2)"),
        "{summary}\ntcpdump: {tcpdump_said}"
    );
    let replayed: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    let live_events = event_set(&live);
    assert_eq!(live_events.len(), 2 * N, "{live_events:#?}");
    assert_eq!(event_set(&replayed), live_events);
    let live_alerts = alert_set(&live);
    assert!(
        live_alerts
            .iter()
            .any(|a| a.starts_with("\"smb_scan_fanout\"")),
        "{live_alerts:?}"
    );
    assert_eq!(alert_set(&replayed), live_alerts, "{summary}");
}

/// A generated capture: a slow scanner (21 refused probes 3 s apart: alone
/// it raises fan-out and TRW) inside a SYN flood of one-shot spoofed
/// sources, ten times the detector's source table between two probes
/// (the 35,000 per second against 100,000 sources, scaled down
/// tenfold so the test stays quick). Replay sheds nothing, so what is
/// tested is that one-shot sources cannot flush the scanner's state.
#[test]
fn a_slow_scanner_inside_a_spoofed_flood_alerts_in_replay() {
    require_root();
    const FLOOD_PER_SEC: u32 = 3_500;
    const PROBES: u32 = 21;
    let tmp = temp_path("flood.pcap");
    let scanner = ip("192.0.2.66");
    let mut v = pcap_header(1);
    let mut rec = |t_us: u64, frame: &[u8]| {
        let sec = 1_800_000_000 + (t_us / 1_000_000) as u32;
        pcap_record(&mut v, sec, (t_us % 1_000_000) as u32, frame);
    };
    let mut spoofed = 0u32;
    for s in 0..PROBES * 3 {
        for k in 0..FLOOD_PER_SEC {
            let t = u64::from(s) * 1_000_000 + u64::from(k) * 1_000_000 / u64::from(FLOOD_PER_SEC);
            // 10.0.0.0/8 from 10.0.0.1: never a real address in a test.
            let src = std::net::Ipv4Addr::from(0x0a00_0001u32 + spoofed);
            spoofed += 1;
            let dst = std::net::Ipv4Addr::from(0xc633_6400u32 + 200 + (k % 50));
            rec(t, &Segment::syn(src.into(), dst.into(), 40000, 445).frame());
            if k == FLOOD_PER_SEC / 2 && s % 3 == 0 {
                let target: IpAddr = format!("198.51.100.{}", 10 + s / 3).parse().unwrap();
                rec(t + 1, &Segment::syn(scanner, target, 50000, 445).frame());
                let rst =
                    Segment::new(target, scanner, 445, 50000, tcp_flags::RST | tcp_flags::ACK);
                rec(t + 300, &rst.frame());
            }
        }
    }
    std::fs::write(&tmp.0, v).unwrap();
    let mut sink = Collect {
        events: Vec::new(),
        detector: Detector::new(DetectConfig {
            max_sources: 10_000,
            ..DetectConfig::default()
        }),
        alerts: Vec::new(),
    };
    let summary = Replay::open(&tmp.0, &opts())
        .unwrap()
        .run(&mut sink)
        .unwrap();
    assert_eq!(summary.events.new_pairs, u64::from(spoofed + PROBES));
    assert_eq!(summary.events.refused, u64::from(PROBES));
    let kinds: Vec<AlertKind> = sink
        .alerts
        .iter()
        .filter(|a| a.source_ip == Some(scanner))
        .map(|a| a.kind)
        .collect();
    assert!(
        kinds.contains(&AlertKind::SmbScanFanout) && kinds.contains(&AlertKind::SmbScanTrw),
        "the scanner is alerted (fan-out and TRW) inside {spoofed} spoofed sources: {kinds:?}"
    );
}
