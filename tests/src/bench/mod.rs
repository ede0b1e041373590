//! The benchmarks behind `cargo xtask bench`: one run, everything side by
//! side, written to `target/bench/report.json` and `report.md`.
//!
//! - [`xdp`]: per-packet cost of the XDP program under `BPF_PROG_TEST_RUN`;
//! - [`e2e`]: generator → veth → smbwatch / nftables / tcpdump, counted and CPU;
//! - [`user`]: ring-buffer drain, detector and host-log parse rates, memory,
//!   and a spoofed-source flood;
//! - [`baseline`]: learning rate, the baseline database's batch cost and size.
//! - [`fleet`]: publishing to NATS JetStream, and the aggregator's rate.
//! - [`smb`]: the SMB parser's segments per second.
//!
//! Goals are reported, never asserted: this machine is shared and noisy, so
//! every figure is a median over interleaved rounds and compared as a ratio
//! where a ratio is what matters. Method notes live in BENCHMARKS.md.

pub mod baseline;
pub mod e2e;
pub mod fleet;
pub mod flood;
mod frames;
pub mod procs;
pub mod smb;
pub mod tcpdump;
pub mod user;
pub mod xdp;
pub mod xdp_clock;

use std::{fmt::Write as _, path::Path};

use serde_json::{json, Value};

/// How long and how often to measure.
#[derive(Clone, Copy, Debug)]
pub struct Effort {
    /// Interleaved rounds; medians are taken over them.
    pub rounds: usize,
    /// `BPF_PROG_TEST_RUN` repeats per measurement (at least 1,000,000).
    pub repeat: u32,
    /// Distinct frames per single-run measurement (new pairs).
    pub distinct: usize,
    /// Packets per end-to-end run.
    pub e2e_packets: u64,
    /// Whether this is the `--quick` profile.
    pub quick: bool,
}

impl Effort {
    /// The full profile (a few minutes on two cores).
    pub fn full() -> Self {
        Self {
            rounds: 5,
            repeat: 10_000_000,
            distinct: 100_000,
            e2e_packets: 4_000_000,
            quick: false,
        }
    }

    /// `--quick`: fewer rounds and shorter runs, same method.
    pub fn quick() -> Self {
        Self {
            rounds: 3,
            repeat: 1_000_000,
            distinct: 20_000,
            e2e_packets: 1_000_000,
            quick: true,
        }
    }
}

/// A markdown table.
#[derive(Clone, Debug, Default)]
pub struct Table {
    /// Column titles.
    pub header: Vec<String>,
    /// Cells, row by row.
    pub rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column titles.
    pub fn new(header: &[&str]) -> Self {
        Self {
            header: header.iter().map(|s| s.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row.
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// GitHub-flavoured markdown.
    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "| {} |", self.header.join(" | "));
        let _ = writeln!(
            s,
            "|{}",
            self.header.iter().map(|_| "---|").collect::<String>()
        );
        for r in &self.rows {
            let cells: Vec<String> = r.iter().map(|c| c.replace('|', "\\|")).collect();
            let _ = writeln!(s, "| {} |", cells.join(" | "));
        }
        s
    }
}

/// One goal of the issue, as measured.
#[derive(Clone, Debug)]
pub struct Goal {
    /// What is promised.
    pub name: String,
    /// The target, in words (`≤ 40 ns`).
    pub target: String,
    /// What was measured, in words.
    pub measured: String,
    /// Met, missed, or not measured (`None`).
    pub met: Option<bool>,
    /// By how much it was met or missed, and what bounds it.
    pub note: String,
}

impl Goal {
    /// Goal "value ≤ limit" (lower is better).
    pub fn at_most(name: &str, value: f64, limit: f64, unit: &str, note: &str) -> Self {
        let met = value <= limit;
        let by = if met {
            format!("met with {:.0}% to spare", (1.0 - value / limit) * 100.0)
        } else {
            format!("missed by {:.0}%", (value / limit - 1.0) * 100.0)
        };
        Self {
            name: name.into(),
            target: format!("≤ {} {unit}", fmt_num(limit)),
            measured: format!("{} {unit}", fmt_num(value)),
            met: Some(met),
            note: join_note(&by, note),
        }
    }

    /// Goal "value ≥ limit" (higher is better).
    pub fn at_least(name: &str, value: f64, limit: f64, unit: &str, note: &str) -> Self {
        let met = value >= limit;
        let by = if met {
            format!("met, {:.2}× the target", value / limit)
        } else {
            format!("missed: {:.0}% of the target", value / limit * 100.0)
        };
        Self {
            name: name.into(),
            target: format!("≥ {} {unit}", fmt_num(limit)),
            measured: format!("{} {unit}", fmt_num(value)),
            met: Some(met),
            note: join_note(&by, note),
        }
    }

    /// A goal this run could not measure, and why.
    pub fn not_measured(name: &str, target: &str, why: &str) -> Self {
        Self {
            name: name.into(),
            target: target.into(),
            measured: "—".into(),
            met: None,
            note: why.into(),
        }
    }

    fn json(&self) -> Value {
        json!({
            "goal": self.name,
            "target": self.target,
            "measured": self.measured,
            "met": self.met,
            "note": self.note,
        })
    }
}

fn join_note(a: &str, b: &str) -> String {
    if b.is_empty() {
        a.to_owned()
    } else {
        format!("{a}; {b}")
    }
}

/// A section of the report: a table, a note on the method, raw data.
#[derive(Clone, Debug)]
pub struct Section {
    /// Heading.
    pub title: String,
    /// How it was measured, in a sentence or two.
    pub method: String,
    /// The table.
    pub table: Table,
    /// Everything measured, per round, for report.json.
    pub data: Value,
    /// Goals this section measured.
    pub goals: Vec<Goal>,
}

/// The machine the benchmark ran on.
pub fn machine() -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_owned())
        .unwrap_or_else(|| "unknown".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_owned();
    let load = std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ");
    let mem_kb: u64 = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    json!({
        "cpu": cpu,
        "cores": cores,
        "memory_gib": (mem_kb as f64 / 1024.0 / 1024.0 * 10.0).round() / 10.0,
        "kernel": kernel,
        "date": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "load_average_at_start": load,
    })
}

/// The whole report.
pub struct Report {
    /// [`machine`].
    pub machine: Value,
    /// The effort profile.
    pub effort: Effort,
    /// Sections in order.
    pub sections: Vec<Section>,
}

impl Report {
    /// report.json.
    pub fn json(&self) -> Value {
        let goals: Vec<Value> = self
            .sections
            .iter()
            .flat_map(|s| s.goals.iter().map(Goal::json))
            .collect();
        json!({
            "machine": self.machine,
            "effort": {
                "rounds": self.effort.rounds,
                "repeat": self.effort.repeat,
                "distinct_frames": self.effort.distinct,
                "e2e_packets": self.effort.e2e_packets,
                "quick": self.effort.quick,
            },
            "goals": goals,
            "sections": self.sections.iter().map(|s| json!({
                "title": s.title,
                "method": s.method,
                "header": s.table.header,
                "rows": s.table.rows,
                "data": s.data,
            })).collect::<Vec<_>>(),
        })
    }

    /// report.md: machine, goals, then every section's table and method.
    pub fn markdown(&self) -> String {
        let m = &self.machine;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "Machine: {} ({} cores, {} GiB), Linux {}; {} UTC; load average at start {}{}.\n",
            m["cpu"].as_str().unwrap_or("?"),
            m["cores"],
            m["memory_gib"],
            m["kernel"].as_str().unwrap_or("?"),
            m["date"].as_str().unwrap_or("?"),
            m["load_average_at_start"].as_str().unwrap_or("?"),
            if self.effort.quick {
                "; --quick profile"
            } else {
                ""
            }
        );
        let mut goals = Table::new(&["goal", "target", "measured", "result", "note"]);
        for g in self.sections.iter().flat_map(|s| &s.goals) {
            goals.row(vec![
                g.name.clone(),
                g.target.clone(),
                g.measured.clone(),
                match g.met {
                    Some(true) => "met".into(),
                    Some(false) => "**missed**".into(),
                    None => "not measured".into(),
                },
                g.note.clone(),
            ]);
        }
        let _ = writeln!(s, "### Goals\n\n{}", goals.markdown());
        for sec in &self.sections {
            let _ = writeln!(
                s,
                "### {}\n\n{}\n{}",
                sec.title,
                sec.table.markdown(),
                sec.method
            );
        }
        s
    }

    /// Writes report.json and report.md into `dir`.
    pub fn write(&self, dir: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        std::fs::write(
            dir.join("report.json"),
            serde_json::to_string_pretty(&self.json())? + "\n",
        )?;
        std::fs::write(dir.join("report.md"), self.markdown())
    }
}

/// Replaces the text between `<!-- bench:begin -->` and `<!-- bench:end -->`
/// in `file` with `body`.
pub fn update_marked(file: &Path, body: &str) -> std::io::Result<()> {
    const BEGIN: &str = "<!-- bench:begin -->";
    const END: &str = "<!-- bench:end -->";
    let text = std::fs::read_to_string(file)?;
    let (Some(b), Some(e)) = (text.find(BEGIN), text.find(END)) else {
        return Err(std::io::Error::other(format!(
            "{} has no {BEGIN} … {END} markers",
            file.display()
        )));
    };
    let new = format!("{}{BEGIN}\n{body}\n{}", &text[..b], &text[e..]);
    std::fs::write(file, new)
}

/// The median of `v` (mean of the middle two for even lengths); NaN if empty.
pub fn median(v: &[f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

/// A number for tables: thousands separated, one decimal below 100.
pub fn fmt_num(v: f64) -> String {
    if !v.is_finite() {
        return "—".into();
    }
    if v.abs() < 100.0 {
        return if v.fract() == 0.0 {
            format!("{v:.0}")
        } else {
            format!("{v:.1}")
        };
    }
    let n = v.round() as i128;
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 {
        out.insert(0, '-');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_medians() {
        assert_eq!(fmt_num(1_234_567.4), "1,234,567");
        assert_eq!(fmt_num(12.34), "12.3");
        assert_eq!(fmt_num(0.0), "0");
        let mut t = Table::new(&["a"]);
        t.row(vec!["x | y".into()]);
        assert_eq!(t.markdown().lines().last(), Some("| x \\| y |"));
        assert_eq!(fmt_num(100.0), "100");
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
    }

    #[test]
    fn goals_say_by_how_much() {
        let g = Goal::at_most("known pair", 50.0, 40.0, "ns", "");
        assert_eq!(g.met, Some(false));
        assert!(g.note.contains("missed by 25%"), "{}", g.note);
        let g = Goal::at_least("events", 2_000_000.0, 1_000_000.0, "events/s", "x");
        assert_eq!(g.met, Some(true));
        assert!(g.note.starts_with("met, 2.00×"), "{}", g.note);
    }
}
