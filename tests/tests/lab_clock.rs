//! The events' wall times from a live run. The program stamps events with
//! jiffies × the tick (no clock helper call); the daemon turns that into
//! UTC with an offset it calibrates against CLOCK_MONOTONIC. A wrong
//! offset, tick or origin (jiffies start near 2^32, not at boot) moves
//! every event by seconds to months; this pins them to the tick.

use std::{net::IpAddr, time::Duration};

use chrono::{DateTime, Utc};
use integration_tests::{
    daemon::{smbwatch_bin, Daemon},
    events,
    netns::{send_frames, Lab, ATTACKER_V4, GW_ATTACKER_IF, GW_SERVERS_IF},
    require_root,
};
use smbwatch::{dataplane::KernelClock, packet::Segment};

#[test]
fn live_event_times_are_within_a_tick_of_the_real_time() {
    require_root();
    let lab = Lab::new(1).expect("lab");
    let daemon = Daemon::start(
        &lab.gateway,
        &["--iface", GW_ATTACKER_IF, "--iface", GW_SERVERS_IF],
    )
    .expect("start smbwatch in the gateway namespace");
    let tick = KernelClock::live().expect("kernel clock").tick_ns();
    assert!(
        (1_000_000..=10_000_000).contains(&tick),
        "HZ 100 to 1000: {tick} ns"
    );
    // SYNs a prime number of ms apart: they land at every phase of the tick.
    const N: usize = 12;
    let mut sent: Vec<(IpAddr, DateTime<Utc>, DateTime<Utc>)> = Vec::new();
    for k in 0..N {
        let dst: IpAddr = format!("198.51.100.{}", 100 + k).parse().unwrap();
        let frame = Segment::syn(ATTACKER_V4.parse().unwrap(), dst, 40_000, 445).frame();
        let before = Utc::now();
        send_frames(&lab.attacker, "a0", &[frame]).expect("send");
        let after = Utc::now();
        sent.push((dst, before, after));
        std::thread::sleep(Duration::from_millis(137));
    }
    let lines = daemon.lines_when(Duration::from_secs(10), |l| {
        l.iter().filter(|v| events::is_new_pair(v)).count() >= N
    });
    // An event's time is the start of its tick, written to the ms
    // (truncated); the calibration is good to a few µs, 1 ms is slack.
    let early = chrono::Duration::nanoseconds(tick as i64) + chrono::Duration::milliseconds(2);
    let late = chrono::Duration::milliseconds(1);
    for &(dst, before, after) in &sent {
        let ev = lines
            .iter()
            .find(|v| events::is_new_pair(v) && v["destination"]["ip"] == dst.to_string())
            .unwrap_or_else(|| panic!("no new_pair to {dst}: {lines:#?}"));
        let ts = DateTime::parse_from_rfc3339(ev["@timestamp"].as_str().unwrap())
            .unwrap()
            .to_utc();
        assert!(
            before - early <= ts && ts <= after + late,
            "event to {dst} at {ts}, sent between {before} and {after} (tick {tick} ns)"
        );
    }
    // `smbwatch status` shows the source table's times (its own, quicker
    // calibration; written to the second, truncated): the attacker's slot
    // was claimed at its second SYN (the first only taught the repeat
    // filter), last touched at its last.
    let out = lab
        .gateway
        .command(smbwatch_bin().to_str().unwrap())
        .args(["status", "--json", "--pin-dir"])
        .arg(&daemon.pin_dir)
        .output()
        .expect("smbwatch status");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status JSON");
    let top = &doc["top_sources"][0];
    assert_eq!(top["source"], ATTACKER_V4, "{doc:#}");
    let second = chrono::Duration::seconds(1);
    for (field, (_, before, after)) in [("first_seen", sent[1]), ("last_seen", sent[N - 1])] {
        let t = DateTime::parse_from_rfc3339(top[field].as_str().unwrap())
            .unwrap()
            .to_utc();
        assert!(
            before - second <= t && t <= after,
            "{field} {t}: that SYN was sent between {before} and {after}"
        );
    }
    assert_eq!(daemon.stop().unwrap(), 0);
}
