//! The program's two clocks compared in one run (`--only xdp-clock`):
//! jiffies × the tick (inlined by the JIT, what ships) against the
//! `bpf_ktime_get_coarse_ns` helper. The same object loaded with
//! `Settings::tick_ns` set or 0: the verifier drops the branch not taken,
//! so each load runs only its own clock.
//!
//! Every path that reads the clock is measured: a new pair (new source, or
//! a known scanner's), a first answer, a known pair's first SYN in a new
//! epoch, a new pair past the budget (shed), each in single runs on fresh
//! distinct frames; and a known pair (which reads no clock: the control)
//! by repeat. Both clocks are loaded side by side on their own tables and
//! the single runs interleaved frame by frame with the empty program's
//! (jiffies, helper, empty, rotating), so that the machine's load at any
//! moment weighs on the three alike; net = trimmed mean − the empty
//! program's. Medians over rounds, of each and of the per-round difference.

use anyhow::Result;
use serde_json::json;
use std::os::fd::BorrowedFd;

use smbwatch::{
    dataplane::{testrun, LoadOptions, ProgramClock},
    packet::Segment,
};
use smbwatch_common::stat;

use super::frames::{ip, tcp80, Contacts};
use super::xdp::{bench_options, trimmed_mean, Loaded};
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

/// Trimmed means of single runs of `progs[p]` on `frames[i]`, the three
/// programs interleaved frame by frame in rotating order.
fn interleaved(progs: [BorrowedFd<'_>; 3], frames: &[Vec<u8>]) -> Result<[f64; 3]> {
    let mut d: [Vec<u32>; 3] = Default::default();
    for (i, f) in frames.iter().enumerate() {
        for j in 0..3 {
            let p = (i + j) % 3;
            d[p].push(testrun::run(progs[p], f, 1)?.duration_ns);
        }
    }
    Ok(d.map(|mut v| trimmed_mean(&mut v)))
}

/// Net ns of the two clocks' programs (`a`, `b`) on `frames`, single runs.
fn net(a: &mut Loaded, b: &mut Loaded, frames: &[Vec<u8>]) -> Result<[f64; 2]> {
    let [x, y, floor] = interleaved([a.fd(false), b.fd(false), a.fd(true)], frames)?;
    a.drain();
    b.drain();
    Ok([x - floor, y - floor])
}

/// Loads each clock's program with `opts`.
fn pair(opts: &LoadOptions) -> Result<(Loaded, Loaded)> {
    let load = |clock| {
        Loaded::new(&LoadOptions {
            clock,
            ..opts.clone()
        })
    };
    Ok((load(CLOCKS[0].0)?, load(CLOCKS[1].0)?))
}

/// One round: each case's net ns for each clock.
fn round(base: u32, k: usize, repeat: u32) -> Result<[[f64; 2]; 6]> {
    let known = Segment::syn(ip("203.0.113.10"), ip("198.51.100.7"), 40000, 445).frame();
    let Contacts {
        new_src,
        new_dst,
        answers,
    } = Contacts::new(base, base, k);
    let mut out = [[f64::NAN; 2]; 6];
    let (mut a, mut b) = pair(&bench_options())?;
    a.once(&known)?;
    b.once(&known)?;
    a.drain();
    b.drain();
    // The control, by repeat: alternated twice, means.
    let mut known_ns = [0.0; 2];
    for _ in 0..2 {
        let (floor, _) = a.repeat(true, &tcp80(), repeat)?;
        known_ns[0] += (a.repeat(false, &known, repeat)?.0 - floor) / 2.0;
        known_ns[1] += (b.repeat(false, &known, repeat)?.0 - floor) / 2.0;
    }
    out[0] = known_ns;
    out[1] = net(&mut a, &mut b, &new_src)?;
    out[2] = net(&mut a, &mut b, &new_dst)?;
    out[3] = net(&mut a, &mut b, &answers)?;
    drop((a, b));
    let (mut a, mut b) = pair(&LoadOptions {
        events_per_cpu: 1,
        ..bench_options()
    })?;
    out[5] = net(&mut a, &mut b, &new_src)?;
    drop((a, b));
    // A known pair's first SYN in a new epoch: both primed, one pause
    // across the (test-only short) epoch. A 1 s fan-out window keeps the
    // sources one-shot, as in the main XDP bench.
    let epoch = std::time::Duration::from_millis(500);
    let (mut a, mut b) = pair(&LoadOptions {
        activity_epoch: epoch,
        allow_short_epoch: true,
        fanout_window: std::time::Duration::from_secs(1),
        ..bench_options()
    })?;
    a.singles(false, &new_src)?;
    b.singles(false, &new_src)?;
    std::thread::sleep(epoch + std::time::Duration::from_millis(100));
    let before = [&a, &b].map(|l| l.dp.stats().map(|s| s.get(stat::ACTIVE_PAIRS)));
    out[4] = net(&mut a, &mut b, &new_src)?;
    for (l, before) in [&a, &b].into_iter().zip(before) {
        let active = l.dp.stats()?.get(stat::ACTIVE_PAIRS) - before?;
        anyhow::ensure!(
            active == k as u64,
            "new-epoch case: {active} of {k} pairs reported again"
        );
    }
    Ok(out)
}

/// Runs the comparison.
pub fn run(effort: &Effort) -> Result<Section> {
    let k = effort.distinct;
    // [clock][case] -> per-round net ns.
    let mut per_round = vec![vec![Vec::new(); CASES.len()]; CLOCKS.len()];
    for r in 0..effort.rounds {
        eprintln!("xdp-clock: round {}/{}", r + 1, effort.rounds);
        let out = round((r * k) as u32, k, effort.repeat)?;
        for (i, case) in out.iter().enumerate() {
            for c in 0..CLOCKS.len() {
                per_round[c][i].push(case[c]);
            }
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
            "One object, loaded with each clock (Settings::tick_ns set, or 0 for bpf_ktime_get_coarse_ns) \
side by side on fresh tables each round, {} rounds; single runs on {} distinct frames, the two clocks and \
the empty program interleaved frame by frame (trimmed means, net of the empty program's); the known pair \
by {} repeats, alternated twice.",
            effort.rounds, k, effort.repeat
        ),
        table,
        data: json!({ "rows": rows }),
        goals: Vec::new(),
    })
}
