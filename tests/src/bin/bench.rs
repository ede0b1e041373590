//! `cargo xtask bench`: the benchmark driver. See BENCHMARKS.md.

use std::path::PathBuf;

use anyhow::{Context as _, Result};
use clap::Parser;
use integration_tests::{
    bench::{self, Effort, Report},
    require_root,
};

#[derive(Parser)]
#[command(
    name = "bench",
    about = "smbwatch benchmarks: XDP cost, end to end through veth, user space"
)]
struct Args {
    /// Shorter runs and fewer rounds (same method).
    #[arg(long)]
    quick: bool,
    /// Run only these parts (comma-separated or repeated): xdp, e2e, user, flood, baseline, fleet, smb; xdp-clock (the program's two clocks compared) only by name.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Rounds (default: 5, or 3 with --quick).
    #[arg(long)]
    rounds: Option<usize>,
    /// Where report.json and report.md go.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../target/bench"))]
    out: PathBuf,
    /// Also replace the table in BENCHMARKS.md (between its bench markers).
    #[arg(long)]
    update_benchmarks_md: bool,
}

fn main() -> Result<()> {
    let args = Args::parse();
    require_root();
    if std::env::var_os("SMBWATCH_BIN").is_none() {
        // The daemon built next to this binary (cargo xtask bench builds both).
        let bin = std::env::current_exe()?.with_file_name("smbwatch");
        // SAFETY: no other thread runs yet.
        unsafe { std::env::set_var("SMBWATCH_BIN", bin) };
    }
    let mut effort = if args.quick {
        Effort::quick()
    } else {
        Effort::full()
    };
    if let Some(r) = args.rounds {
        effort.rounds = r.max(1);
    }
    let wants = |part: &str| args.only.is_empty() || args.only.iter().any(|p| p == part);
    let machine = bench::machine();
    let mut sections = Vec::new();
    if wants("xdp") {
        sections.push(bench::xdp::run(&effort).context("XDP benchmark")?);
    }
    // The clock comparison only when asked for by name (not in a full run).
    if args.only.iter().any(|p| p == "xdp-clock") {
        sections.push(bench::xdp_clock::run(&effort).context("XDP clock comparison")?);
    }
    if wants("e2e") {
        sections.push(bench::e2e::run(&effort).context("end-to-end benchmark")?);
    }
    if wants("user") {
        sections.push(bench::user::run(&effort).context("user-space benchmark")?);
    }
    if wants("flood") {
        sections.push(bench::flood::run(&effort).context("flood benchmark")?);
    }
    if wants("baseline") {
        sections.push(bench::baseline::run(&effort).context("baseline benchmark")?);
    }
    if wants("fleet") {
        sections.push(bench::fleet::run(&effort).context("fleet benchmark")?);
    }
    if wants("smb") {
        sections.push(bench::smb::run(&effort).context("SMB parser benchmark")?);
    }
    let report = Report {
        machine,
        effort,
        sections,
    };
    report.write(&args.out)?;
    let md = report.markdown();
    println!("{md}");
    eprintln!("wrote {}/report.json and report.md", args.out.display());
    if args.update_benchmarks_md {
        let file = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../BENCHMARKS.md"));
        bench::update_marked(&file, &md).with_context(|| format!("updating {}", file.display()))?;
        eprintln!("updated {}", file.display());
    }
    Ok(())
}
