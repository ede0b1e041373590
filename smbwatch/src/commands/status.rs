//! `smbwatch status`: what a running daemon's pinned maps hold.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use smbwatch::dataplane::{KernelClock, PinnedMaps};

#[derive(Args, Debug)]
pub(crate) struct PinArgs {
    /// bpffs directory for this daemon's pinned maps (one per daemon).
    #[arg(long, value_name = "DIR", default_value = "/sys/fs/bpf/smbwatch")]
    pin_dir: PathBuf,
}

#[derive(Args, Debug)]
pub(crate) struct StatusArgs {
    #[command(flatten)]
    pin: PinArgs,
    /// How many sources to list.
    #[arg(long, default_value_t = 20)]
    top: usize,
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
}

pub(crate) fn status(args: StatusArgs) -> Result<()> {
    let maps = PinnedMaps::open(&args.pin.pin_dir)?;
    let stats = maps.stats()?;
    let mut sources = maps.sources()?;
    // Top sources by distinct destinations (the kernel's linear-counting
    // estimate over the last half to whole fan-out window), then new pairs.
    let total = sources.len();
    smbwatch::metrics::top::rank_sources(&mut sources, args.top);
    let clock = KernelClock::live()?;
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
                    "distinct_destinations": s.distinct_estimate(),
                    "new_pairs": s.new_pairs,
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
    println!("tracked sources (two or more destinations): {total}");
    println!(
        "{:<40} {:>12} {:>10}  {:<20}  {:<20}",
        "SOURCE", "DESTINATIONS", "NEW PAIRS", "FIRST SEEN", "LAST SEEN"
    );
    for (ip, s) in &sources {
        println!(
            "{:<40} {:>12} {:>10}  {:<20}  {:<20}",
            ip.to_string(),
            s.distinct_estimate(),
            s.new_pairs,
            ts(s.first_seen_ns),
            ts(s.last_seen_ns)
        );
    }
    println!();
    // Aligned on the longest name (`answers_same_ingress`, 20 characters).
    let width = stats.named().map(|(n, _)| n.len()).max().unwrap_or(0);
    for (name, v) in stats.named() {
        println!("{name:<width$} {v}");
    }
    Ok(())
}
