//! Issue 16 in replay: kernel activity epochs driven by capture time, and
//! the baseline learning from confirmed handshakes only: one capture
//! holding a week learns like seven daily captures, and a SYN forged with a
//! known client's address teaches nothing.

use std::path::{Path, PathBuf};

use integration_tests::{
    daemon::{json_lines, run_cli},
    require_root,
    week::{self, Capture},
    Findings, Scratch,
};
use serde_json::Value;

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// Replay: one capture holding 7 days of one pair's hourly use (08:00 to
/// 17:00 every day) learns 7 days and those hours, exactly as the same
/// traffic cut into 7 daily captures does.
#[test]
fn one_week_long_capture_learns_like_seven_daily_ones() {
    require_root();
    let dir = Scratch::new("weeklong");
    let (client, server) = (week::workstation(0), week::SERVERS[0]);
    let mut whole = Capture::default();
    let mut daily = Vec::new();
    for day in 1..=7 {
        let mut c = Capture::default();
        for hour in 8..=17 {
            whole.connect(week::at(day, hour, 5, 0), client, server);
            c.connect(week::at(day, hour, 5, 0), client, server);
        }
        let p = dir.0.join(format!("day{day}.pcap"));
        c.write(&p).unwrap();
        daily.push(p);
    }
    assert_eq!(whole.connections(), 70);
    let week_pcap = dir.0.join("week.pcap");
    whole.write(&week_pcap).unwrap();

    let learn = |db: &Path, pcaps: &[PathBuf]| -> Vec<Value> {
        let mut args = vec!["baseline", "learn", "--db", s(db)];
        for p in pcaps {
            args.extend(["--pcap", s(p)]);
        }
        let out = run_cli(&args);
        eprintln!("{}", String::from_utf8_lossy(&out.stderr));
        json_lines(&run_cli(&["baseline", "export", "--db", s(db)]).stdout)
    };
    let one = learn(&dir.0.join("one.redb"), &[week_pcap]);
    let seven = learn(&dir.0.join("seven.redb"), &daily);
    let rec = |rows: &[Value], t: &str| -> Vec<Value> {
        rows.iter().filter(|r| r["type"] == t).cloned().collect()
    };
    let mut f = Findings::default();
    let (c1, c7) = (rec(&one, "client"), rec(&seven, "client"));
    f.check(c1.len() == 1 && c7.len() == 1, || {
        format!("one client each: {c1:#?} {c7:#?}")
    });
    if let (Some(c1), Some(c7)) = (c1.first(), c7.first()) {
        let usual: u64 = (8..=17).map(|h| 1u64 << h).sum();
        for (name, c) in [("one capture", c1), ("seven captures", c7)] {
            f.check(c["days"] == 7, || format!("{name}: 7 days learned: {c}"));
            f.check(c["usual_hours"] == usual, || {
                format!("{name}: usual hours 08h-17h: {c}")
            });
            f.check(c["events"] == 70, || {
                format!("{name}: all 70 hourly sessions learned: {c}")
            });
        }
        f.check(c1 == c7, || {
            format!("the same client record either way:\none: {c1}\nseven: {c7}")
        });
    }
    let (e1, e7) = (rec(&one, "edge"), rec(&seven, "edge"));
    f.check(e1 == e7 && e1.len() == 1, || {
        format!("the same edge either way:\none: {e1:#?}\nseven: {e7:#?}")
    });
    if let Some(e) = e1.first() {
        f.check(e["days"] == 7 && e["count"] == 70, || {
            format!("edge: 7 days, 70 sessions: {e}")
        });
    }
    f.assert_none();
}

/// Replay: a SYN forged with a known client's address at 03:00, during
/// learning, answered by the server and reset by the real client, teaches
/// no 03h: only confirmed handshakes teach (else anyone could make any
/// hour usual for a client before using it then).
#[test]
fn a_spoofed_syn_from_a_known_client_teaches_no_hour() {
    require_root();
    let dir = Scratch::new("spoofhour");
    let (client, server) = (week::workstation(0), week::SERVERS[0]);
    let mut c = Capture::default();
    for day in 1..=3 {
        c.connect(week::at(day, 9, 0, 0), client, server);
        c.spoofed_syn(week::at(day, 3, 0, 0), client, server);
    }
    let pcap = dir.0.join("spoof.pcap");
    c.write(&pcap).unwrap();
    let db = dir.0.join("b.redb");
    run_cli(&["baseline", "learn", "--db", s(&db), "--pcap", s(&pcap)]);
    let rows = json_lines(&run_cli(&["baseline", "export", "--db", s(&db)]).stdout);
    let clients: Vec<&Value> = rows.iter().filter(|r| r["type"] == "client").collect();
    assert_eq!(clients.len(), 1, "{rows:#?}");
    let hours = clients[0]["usual_hours"].as_u64().unwrap_or(0);
    assert_eq!(
        hours,
        1 << 9,
        "usual hours 09h only (bits {hours:#b}): {}",
        clients[0]
    );
    assert_eq!(
        clients[0]["events"], 3,
        "three real sessions: {}",
        clients[0]
    );
}
