//! The program's two clocks compared in one run (`--only xdp-clock`):
//! jiffies × the tick (inlined by the JIT, what ships) against the
//! `bpf_ktime_get_coarse_ns` helper. The same object loaded with
//! `Settings::tick_ns` set or 0: the verifier drops the branch not taken,
//! so each load runs only its own clock.
//!
//! Every path that reads the clock is measured: a new pair (new source, or
//! a known scanner's), a first answer, a known pair's first SYN in a new
//! epoch, a new pair past the budget (shed), each in single runs on fresh
//! distinct frames, net of the empty program in the same single runs; and a
//! known pair (which reads no clock: the control) by repeat. Per round both
//! clocks are loaded fresh and measured one after the other, their order
//! swapped every round; the table gives medians over rounds of each and of
//! the per-round difference.

use anyhow::Result;
use serde_json::json;
use smbwatch::{
    dataplane::{LoadOptions, ProgramClock},
    packet::{tcp_flags, Segment},
};
use smbwatch_common::stat;

use super::xdp::{bench_dst_v4, bench_options, flood_v4, ip, tcp80, Loaded};
use super::{fmt_num, median, Effort, Section, Table};

const CLOCKS: [(ProgramClock, &str); 2] = [
    (ProgramClock::Jiffies, "jiffies × tick"),
    (ProgramClock::CoarseHelper, "coarse helper"),
];

const CASES: [&str; 6] = [
    "SYN to 445, known pair (repeat; reads no clock)",
    "SYN to 445, new pair, new source",
    "SYN to 445, new pair, known source (one scanner)",
    "SYN-ACK from 445, first answer of a pair",
    "SYN to 445, known pair in a new epoch",
    "new source past the event budget (shed)",
];

/// Net ns of each case (in [`CASES`] order but the new epoch's, filled
/// later) for one clock, on frames numbered from `base`.
fn measure(clock: ProgramClock, base: u32, k: usize, repeat: u32) -> Result<[f64; 6]> {
    let opts = LoadOptions {
        clock,
        ..bench_options()
    };
    let known = Segment::syn(ip("203.0.113.10"), ip("198.51.100.7"), 40000, 445).frame();
    let new_src: Vec<Vec<u8>> = (0..k as u32)
        .map(|i| Segment::syn(flood_v4(base + i), ip("198.51.100.7"), 40000, 445).frame())
        .collect();
    let new_dst: Vec<Vec<u8>> = (0..k as u32)
        .map(|j| Segment::syn(ip("203.0.113.99"), bench_dst_v4(base + j), 40000, 445).frame())
        .collect();
    let answers: Vec<Vec<u8>> = (0..k as u32)
        .map(|i| {
            Segment::new(
                ip("198.51.100.7"),
                flood_v4(base + i),
                445,
                40000,
                tcp_flags::SYN | tcp_flags::ACK,
            )
            .frame()
        })
        .collect();
    let mut out = [f64::NAN; 6];
    let mut l = Loaded::new(&opts)?;
    l.once(&known)?;
    l.drain();
    let (floor, _) = l.repeat(true, &tcp80(), repeat)?;
    let (known_ns, _) = l.repeat(false, &known, repeat)?;
    out[0] = known_ns - floor;
    let floor_single = l.singles(true, &new_src)?;
    out[1] = l.singles(false, &new_src)? - floor_single;
    out[2] = l.singles(false, &new_dst)? - floor_single;
    out[3] = l.singles(false, &answers)? - floor_single;
    drop(l);
    let mut shed = Loaded::new(&LoadOptions {
        events_per_cpu: 1,
        ..opts.clone()
    })?;
    let floor_shed = shed.singles(true, &new_src)?;
    out[5] = shed.singles(false, &new_src)? - floor_shed;
    Ok(out)
}

/// Runs the comparison.
pub fn run(effort: &Effort) -> Result<Section> {
    let k = effort.distinct;
    // [clock][case] -> per-round net ns.
    let mut per_round = vec![vec![Vec::new(); CASES.len()]; CLOCKS.len()];
    for round in 0..effort.rounds {
        eprintln!("xdp-clock: round {}/{}", round + 1, effort.rounds);
        let order: Vec<usize> = if round % 2 == 0 {
            vec![0, 1]
        } else {
            vec![1, 0]
        };
        for &c in &order {
            let base = ((round * CLOCKS.len() + c) * k) as u32;
            let r = measure(CLOCKS[c].0, base, k, effort.repeat)?;
            for (i, v) in r.iter().enumerate() {
                if !v.is_nan() {
                    per_round[c][i].push(*v);
                }
            }
        }
        // A known pair's first SYN in a new epoch: both clocks primed, one
        // pause across the (test-only short) epoch, then measured in this
        // round's order. A 1 s fan-out window keeps the sources one-shot.
        let epoch = std::time::Duration::from_millis(500);
        let base = ((round * CLOCKS.len()) * k) as u32;
        let frames: Vec<Vec<u8>> = (0..k as u32)
            .map(|i| Segment::syn(flood_v4(base + i), ip("198.51.100.7"), 40000, 445).frame())
            .collect();
        let mut loaded = Vec::new();
        for &c in &order {
            let mut v = Loaded::new(&LoadOptions {
                clock: CLOCKS[c].0,
                activity_epoch: epoch,
                allow_short_epoch: true,
                fanout_window: std::time::Duration::from_secs(1),
                ..bench_options()
            })?;
            v.singles(false, &frames)?;
            loaded.push((c, v));
        }
        std::thread::sleep(epoch + std::time::Duration::from_millis(100));
        for (c, v) in &mut loaded {
            let floor_v = v.singles(true, &frames)?;
            let before = v.dp.stats()?.get(stat::ACTIVE_PAIRS);
            let ns = v.singles(false, &frames)?;
            let active = v.dp.stats()?.get(stat::ACTIVE_PAIRS) - before;
            anyhow::ensure!(
                active == k as u64,
                "new-epoch case: {active} of {k} pairs reported again"
            );
            per_round[*c][4].push(ns - floor_v);
        }
    }
    let mut table = Table::new(&[
        "case (net ns over the empty program)",
        CLOCKS[0].1,
        CLOCKS[1].1,
        "difference (median of rounds)",
        "rounds' differences",
    ]);
    let mut rows = Vec::new();
    for (i, case) in CASES.iter().enumerate() {
        let a = &per_round[0][i];
        let b = &per_round[1][i];
        let diffs: Vec<f64> = a.iter().zip(b).map(|(x, y)| x - y).collect();
        table.row(vec![
            (*case).to_owned(),
            fmt_num(median(a)),
            fmt_num(median(b)),
            fmt_num(median(&diffs)),
            diffs
                .iter()
                .map(|d| fmt_num(*d))
                .collect::<Vec<_>>()
                .join(", "),
        ]);
        rows.push(json!({
            "case": case,
            "jiffies_per_round": a,
            "helper_per_round": b,
            "difference_per_round": diffs,
        }));
    }
    Ok(Section {
        title: "XDP: the program's clock, jiffies × tick against the coarse helper".into(),
        method: format!(
            "One object, loaded with each clock (Settings::tick_ns set, or 0 for bpf_ktime_get_coarse_ns); \
per round both measured on fresh tables, order swapped each round, {} rounds; single runs on {} distinct \
frames each (trimmed means), net of the empty program in the same single runs; the known pair by {} repeats.",
            effort.rounds, k, effort.repeat
        ),
        table,
        data: json!({ "rows": rows }),
        goals: Vec::new(),
    })
}
