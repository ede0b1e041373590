//! A spoofed-source SYN flood at the generator's top rate, with a slow
//! scanner inside, through veth into the real daemon in its production
//! configuration: does the scanner get alerted, is the degradation notice
//! raised and cleared, and how much memory does the daemon take.

use std::{
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use serde_json::{json, Value};
use smbwatch::packet::Segment;

use super::{
    fmt_num,
    procs::{pid_with_arg, status_bytes},
    Effort, Goal, Section, Table,
};
use crate::{
    daemon::Daemon,
    gen::{self, GenLab, Generator, Pace, Plan, Spec, ANCHOR_IF, RX_IF, TX_IF},
};

/// The scanner: a documentation address no flood source can take (the
/// flood's sources are 10.0.0.0/8).
const SCANNER: &str = "192.0.2.66";

/// The event budget the daemon runs with here (see where it is used).
const EVENTS_PER_CPU: u32 = 10_000;

/// Runs the flood; see the module documentation.
pub fn run(effort: &Effort) -> Result<Section> {
    // 20 hosts over 60 s (3 s apart); --quick: 20 hosts 1 s apart.
    let targets = 20u32;
    let gap = if effort.quick {
        Duration::from_secs(1)
    } else {
        Duration::from_secs(3)
    };
    let lab = GenLab::new()?;
    let mut generator = Generator::new()?;
    generator.anchor(&lab.gen.path(), ANCHOR_IF)?;
    let dir = std::env::temp_dir().join(format!("smbwbench-flood-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let json_path = dir.join("alerts.json");
    let daemon = Daemon::start(
        &lab.rx,
        &[
            "--iface",
            RX_IF,
            "--json",
            json_path.to_str().expect("utf-8"),
            "--stats-interval",
            "1h",
            // One call per distinct frame caps the generator at some tens
            // of thousands of new sources per second here, under the
            // default budget (100,000 per CPU): a tenth of it makes this
            // flood exceed the budget, as a faster one would the default.
            "--events-per-cpu",
            &EVENTS_PER_CPU.to_string(),
        ],
    )?;
    let pid = pid_with_arg(daemon.pin_dir.to_str().expect("utf-8")).context("the daemon's pid")?;
    let gen_path = lab.gen.path();
    let done = AtomicBool::new(false);
    let start = Instant::now();
    eprintln!(
        "flood: distinct spoofed sources at the generator's top rate, a scanner probing {targets} hosts {gap:?} apart"
    );
    let (flood_sent, flood_secs) = std::thread::scope(|s| -> Result<(u64, f64)> {
        let flood = s.spawn(|| -> Result<(u64, f64)> {
            // Batches of fresh sources: every frame is a new source, forever.
            let batch = 200_000u32;
            let mut pass = 0u32;
            let mut sent = 0u64;
            let t0 = Instant::now();
            while !done.load(Ordering::Relaxed) {
                let plan = Plan::build(&Spec {
                    sources: batch,
                    first_source: pass * batch,
                    destinations: 1,
                    mix: "syn".parse().expect("mix"),
                    count: u64::from(batch),
                    burst: 1,
                })?;
                sent += generator.send(&gen_path, TX_IF, &plan, Pace::Max)?.packets;
                pass += 1;
            }
            Ok((sent, t0.elapsed().as_secs_f64()))
        });
        // Let the flood reach its rate, then scan slowly inside it.
        std::thread::sleep(Duration::from_secs(2));
        for j in 0..targets {
            let probe = Segment::syn(
                SCANNER.parse().expect("literal"),
                gen::dst_v4(100 + j),
                50_000,
                445,
            )
            .frame();
            generator.send(&gen_path, TX_IF, &Plan::from_frames(&[probe]), Pace::Max)?;
            std::thread::sleep(gap);
        }
        done.store(true, Ordering::Relaxed);
        flood.join().expect("flood thread")
    })?;
    let scan_secs = start.elapsed().as_secs_f64();
    let rss_flood = status_bytes(pid, "VmHWM");
    // The notice clears after five quiet seconds.
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut got = crate::alerts::read(&json_path);
    while Instant::now() < deadline
        && got
            .iter()
            .filter(|a| crate::alerts::rule_id(a) == "smbwatch_degraded")
            .count()
            < 2
    {
        std::thread::sleep(Duration::from_millis(500));
        got = crate::alerts::read(&json_path);
    }
    let stats: Value = {
        let out = std::process::Command::new(crate::daemon::smbwatch_bin())
            .args(["status", "--json", "--pin-dir"])
            .arg(&daemon.pin_dir)
            .output()?;
        serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
    };
    let stat = |k: &str| stats["stats"][k].as_u64().unwrap_or(0);
    let rss_end = status_bytes(pid, "VmHWM");
    daemon.stop()?;
    let _ = std::fs::remove_dir_all(&dir);

    let scanner_alerted = got
        .iter()
        .any(|a| crate::alerts::rule_id(a) == "smb_scan_fanout" && a["source"]["ip"] == SCANNER);
    let notices: Vec<&str> = got
        .iter()
        .filter(|a| crate::alerts::rule_id(a) == "smbwatch_degraded")
        .map(|a| a["message"].as_str().unwrap_or(""))
        .collect();
    let raised = notices.iter().any(|m| m.contains("degraded"));
    let cleared = notices.iter().any(|m| m.contains("recovered"));
    let rate = flood_sent as f64 / flood_secs.max(1e-9);

    let mut table = Table::new(&["measure", "value"]);
    for (k, v) in [
        (
            "flood frames sent (every one a new source)",
            fmt_num(flood_sent as f64),
        ),
        ("flood rate (frames/s, generator's top rate)", fmt_num(rate)),
        (
            "scan: hosts / duration",
            format!("{targets} / {scan_secs:.0} s"),
        ),
        ("kernel new pairs", fmt_num(stat("new_pairs") as f64)),
        ("kernel events shed", fmt_num(stat("events_shed") as f64)),
        (
            "kernel repeat sources",
            fmt_num(stat("repeat_sources") as f64),
        ),
        ("ring buffer full", fmt_num(stat("ringbuf_full") as f64)),
        (
            "scanner alerted (smb_scan_fanout)",
            scanner_alerted.to_string(),
        ),
        (
            "smbwatch_degraded raised / cleared",
            format!("{raised} / {cleared}"),
        ),
        (
            "daemon peak RSS",
            format!("{:.1} MiB", rss_end as f64 / 1048576.0),
        ),
    ] {
        table.row(vec![k.to_owned(), v]);
    }
    let goals = vec![
        Goal {
            name: "flood at the top rate with a slow scanner: scanner alerted".into(),
            target: "alerted".into(),
            measured: scanner_alerted.to_string(),
            met: Some(scanner_alerted),
            note: format!(
                "{} spoofed sources at {}/s; the scanner's probes after its first are a tracked source's and use the priority budget",
                fmt_num(flood_sent as f64),
                fmt_num(rate)
            ),
        },
        Goal {
            name: "degradation notice raised and cleared".into(),
            target: "both".into(),
            measured: format!("raised {raised}, cleared {cleared}"),
            met: Some(raised && cleared),
            note: format!("{} events shed", fmt_num(stat("events_shed") as f64)),
        },
        Goal::at_most(
            "daemon peak RSS during the flood",
            rss_flood.max(rss_end) as f64 / 1048576.0,
            256.0,
            "MiB",
            "bounded by the detector's and correlator's caps (docs/sizing.md: under a flood)",
        ),
    ];
    let generator_method = generator.method().unwrap_or_default().describe();
    Ok(Section {
        title: "Spoofed flood with a slow scanner, through the daemon".into(),
        method: format!(
            "Generator ({generator_method}) → veth → smbwatch run with a JSON alert sink and an event budget of {EVENTS_PER_CPU} per CPU per second \
(a tenth of the default: one call per distinct frame keeps the generator below the default budget on this machine); \
batches of 200,000 fresh spoofed sources back to back while a scanner sends one SYN to a new host every {gap:?}; \
alerts read from the JSON file, counters from `smbwatch status --json`, peak RSS from /proc (VmHWM).\n"
        ),
        table,
        data: json!({
            "flood_sent": flood_sent,
            "flood_rate": rate,
            "scan_seconds": scan_secs,
            "scanner_alerted": scanner_alerted,
            "degraded_raised": raised,
            "degraded_cleared": cleared,
            "peak_rss_bytes": rss_end,
            "kernel": stats["stats"],
        }),
        goals,
    })
}
