//! `smbwatch replay`: a capture through the real XDP program and the same
//! detection as `run`.

use std::io::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, Result};
use clap::Args;
use smbwatch::{
    alert::{ecs::gateway::ToEventLine as _, Alert},
    hostlog,
    pipeline::{Pipeline, ReplayFeed},
    replay::ReplayOptions,
};
use smbwatch_core::smb::SmbEvent;
use smbwatch_output::alert::ecs::smb::SmbLine;

use super::{apply_detect, load_config, read_host_logs, set_baseline, stdout_alerts, DetectArgs};

#[derive(Args, Debug)]
pub(crate) struct ReplayArgs {
    /// The capture (pcap or pcapng; Ethernet, Linux cooked SLL/SLL2 or raw IP link types).
    #[arg(value_name = "CAPTURE", required_unless_present = "pcap")]
    capture: Option<PathBuf>,
    /// The capture, as a flag (the same as CAPTURE).
    #[arg(long, value_name = "FILE", conflicts_with = "capture")]
    pcap: Option<PathBuf>,
    /// Windows host-log files to correlate with (repeatable).
    #[arg(long = "host-log", value_name = "FILE")]
    host_logs: Vec<PathBuf>,
    /// Configuration file; its [detect], [correlate] and [dataplane] ports apply.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Tolerated clock difference between the capture and the host logs (e.g. 5s, 2m).
    #[arg(long, value_name = "DUR", value_parser = humantime::parse_duration)]
    clock_skew: Option<Duration>,
    #[command(flatten)]
    detect: DetectArgs,
    /// Also print the events as JSON lines: new_pair, accepted, refused..., and what the
    /// sampled SMB payload showed (smb_tree_connect, rpc_call...).
    #[arg(long)]
    events: bool,
    /// Learn into and score against this baseline database.
    #[arg(long, value_name = "PATH")]
    baseline: Option<PathBuf>,
}

impl ReplayArgs {
    /// The capture, given as CAPTURE or `--pcap` (clap requires one).
    fn capture(&self) -> &std::path::Path {
        match (&self.capture, &self.pcap) {
            (Some(p), _) | (None, Some(p)) => p,
            (None, None) => unreachable!("clap requires CAPTURE or --pcap"),
        }
    }
}

pub(crate) fn replay(args: ReplayArgs) -> Result<()> {
    let mut cfg = load_config(args.config.as_deref())?;
    apply_detect(&mut cfg, &args.detect);
    if let Some(s) = args.clock_skew {
        cfg.correlate.clock_skew = s;
    }
    set_baseline(&mut cfg, args.baseline.as_ref());
    cfg.validate()
        .context("invalid setting (after applying command-line flags)")?;
    let host = read_host_logs(&args.host_logs, hostlog::Format::Auto)?;
    let mut print = stdout_alerts(smbwatch::replay::sensor::of_capture(args.capture()));
    let mut on_alert = |a: &Alert| print(a);
    let mut print_event = |ev: &smbwatch::event::GatewayEvent| {
        let _ = writeln!(std::io::stdout(), "{}", ev.to_json());
    };
    let mut pipeline = Pipeline::new(cfg.pipeline());
    let store = if cfg.baseline.enabled {
        let (store, b) = smbwatch::baseline::cli::open(&cfg, &cfg.baseline.path)?;
        pipeline = pipeline.with_baseline(b);
        Some(store)
    } else {
        None
    };
    let mut print_smb = |ev: &SmbEvent| {
        let _ = writeln!(std::io::stdout(), "{}", SmbLine::new(ev).to_json());
    };
    let mut feed = ReplayFeed::new(pipeline, host, &mut on_alert);
    if args.events {
        feed = feed
            .with_events(&mut print_event)
            .with_smb_events(&mut print_smb);
    }
    // A capture is one link unless the user says its pcapng interfaces are
    // the two sides of a gateway (`answers = "other-ingress"`).
    let opts = ReplayOptions {
        load: cfg.dataplane.load_options(1, cfg.detect.window),
        ..ReplayOptions::default()
    };
    let summary = smbwatch::replay::replay(args.capture(), &opts, &mut feed)?;
    let mut pipeline = feed.finish();
    if let (Some(store), Some(b)) = (store, pipeline.baseline_mut()) {
        // Learning goes on in replay too: what it learned is kept.
        store.write(&b.take_batch())?;
        let s = b.stats();
        eprintln!(
            "baseline {}: {} alerts ({} held down); {} clients, {} edges",
            store.path().display(),
            s.alerts,
            s.suppressed,
            s.clients,
            s.edges
        );
    }
    eprintln!("{summary}");
    let d = pipeline.detector_stats();
    let c = pipeline.correlator().stats();
    eprintln!(
        "scan detection: {} alerts ({} suppressed); correlation: {} pairs attributed to host processes, {} chains",
        d.alerts, d.suppressed, c.attributed, c.chains
    );
    Ok(())
}
