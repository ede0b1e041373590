//! The smbwatch command line.

use std::{path::PathBuf, process::ExitCode, time::Duration};

use anyhow::{Context as _, Result};
use clap::{Args, Parser, Subcommand};
use smbwatch::{
    daemon::{self, RunOptions, StdoutEvents},
    dataplane::{AttachMode, LoadOptions, MonotonicClock, PinnedMaps},
};
use smbwatch_common::{DEFAULT_MAX_PAIRS, DEFAULT_MAX_SOURCES};

/// Watch TCP 445 (SMB) crossing a Linux router with XDP and catch lateral
/// movement: scan fan-out, suspicious SMB clients, admin-share use.
#[derive(Parser, Debug)]
#[command(name = "smbwatch", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Attach the XDP program to interfaces and report SMB connection events.
    ///
    /// Attach to every interface between the segments you watch: a scanner's
    /// SYNs and the targets' answers arrive on different interfaces.
    Run(RunArgs),
    /// Show what a running daemon sees: top sources and kernel counters.
    Status(StatusArgs),
}

#[derive(Args, Debug)]
struct RunArgs {
    /// Interface to attach to (repeat for each interface).
    #[arg(long = "iface", short = 'i', value_name = "IF", required = true)]
    ifaces: Vec<String>,
    /// XDP attach mode: auto tries native (driver) first, then skb (generic) with a warning.
    #[arg(long, value_enum, default_value_t = AttachMode::Auto)]
    xdp_mode: AttachMode,
    /// Replace an XDP program someone else attached to an interface.
    #[arg(long)]
    force: bool,
    /// Monitored TCP port (repeat; at most 4). Default: 445.
    #[arg(long = "port", value_name = "PORT", default_values_t = [445u16])]
    ports: Vec<u16>,
    /// Log kernel counters this often (e.g. 10s, 1m).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    stats_interval: Duration,
    /// Capacity of the kernel's per-source table.
    #[arg(long, default_value_t = DEFAULT_MAX_SOURCES)]
    max_sources: u32,
    /// Capacity of the kernel's (source, destination) pair table.
    #[arg(long, default_value_t = DEFAULT_MAX_PAIRS)]
    max_pairs: u32,
    #[command(flatten)]
    pin: PinArgs,
}

#[derive(Args, Debug)]
struct PinArgs {
    /// bpffs directory for this daemon's pinned maps (one per daemon).
    #[arg(long, value_name = "DIR", default_value = "/sys/fs/bpf/smbwatch")]
    pin_dir: PathBuf,
}

#[derive(Args, Debug)]
struct StatusArgs {
    #[command(flatten)]
    pin: PinArgs,
    /// How many sources to list.
    #[arg(long, default_value_t = 20)]
    top: usize,
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SMBWATCH_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => run(args),
        Command::Status(args) => status(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("smbwatch: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: RunArgs) -> Result<()> {
    let opts = RunOptions {
        ifaces: args.ifaces,
        mode: args.xdp_mode,
        force: args.force,
        load: LoadOptions {
            ports: args.ports,
            max_sources: args.max_sources,
            max_pairs: args.max_pairs,
        },
        stats_interval: args.stats_interval,
        pin_dir: args.pin.pin_dir,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let mut sink = StdoutEvents::new();
    rt.block_on(daemon::run(&opts, &mut sink))?;
    Ok(())
}

fn status(args: StatusArgs) -> Result<()> {
    let maps = PinnedMaps::open(&args.pin.pin_dir)?;
    let stats = maps.stats()?;
    let mut sources = maps.sources()?;
    sources.sort_by(|a, b| {
        (b.1.pairs, b.1.syns)
            .cmp(&(a.1.pairs, a.1.syns))
            .then(a.0.cmp(&b.0))
    });
    let total = sources.len();
    sources.truncate(args.top);
    let clock = MonotonicClock::new();
    let ts = |ns: u64| {
        clock
            .to_utc(ns)
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    };
    if args.json {
        let top: Vec<_> = sources
            .iter()
            .map(|(ip, s)| {
                serde_json::json!({
                    "source": ip,
                    "distinct_destinations": s.pairs,
                    "syns": s.syns,
                    "first_seen": ts(s.first_seen_ns),
                    "last_seen": ts(s.last_seen_ns),
                })
            })
            .collect();
        let out =
            serde_json::json!({ "tracked_sources": total, "top_sources": top, "stats": stats });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!("tracked sources: {total}");
    println!(
        "{:<40} {:>12} {:>10}  {:<20}  {:<20}",
        "SOURCE", "DESTINATIONS", "SYNS", "FIRST SEEN", "LAST SEEN"
    );
    for (ip, s) in &sources {
        println!(
            "{:<40} {:>12} {:>10}  {:<20}  {:<20}",
            ip.to_string(),
            s.pairs,
            s.syns,
            ts(s.first_seen_ns),
            ts(s.last_seen_ns)
        );
    }
    println!();
    for (name, v) in stats.named() {
        println!("{name:<16} {v}");
    }
    Ok(())
}
