//! The command bodies of the `smbwatch` binary, one module per command
//! (`main.rs` only parses and dispatches), and what they share: loading the
//! configuration, the detection flags, reading host-log files, printing
//! alerts.

pub(crate) mod aggregate;
pub(crate) mod baseline;
pub(crate) mod hostlog;
pub(crate) mod package_files;
pub(crate) mod replay;
pub(crate) mod run;
pub(crate) mod status;

use std::io::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use clap::Args;
use smbwatch::{
    alert::{ecs::Document, sensor::Sensor, Alert},
    config::Config,
};

/// Detection overrides shared by `run` and `replay`.
#[derive(Args, Debug, Default)]
pub(crate) struct DetectArgs {
    /// Distinct destinations within the window that make a source a scanner. Default: 20.
    #[arg(long, value_name = "N")]
    fanout_threshold: Option<u32>,
    /// Fan-out window (e.g. 60s, 90s, 2h). Default: 60s.
    #[arg(long, value_name = "DUR", value_parser = humantime::parse_duration)]
    window: Option<Duration>,
    /// Never alert on sources in this CIDR (repeatable), e.g. a backup server.
    #[arg(long = "allow", value_name = "CIDR")]
    allow: Vec<ipnet::IpNet>,
}

/// `--baseline PATH`: use that database.
pub(crate) fn set_baseline(cfg: &mut Config, path: Option<&PathBuf>) {
    if let Some(p) = path {
        cfg.baseline.enabled = true;
        cfg.baseline.path = p.clone();
    }
}

pub(crate) fn load_config(path: Option<&std::path::Path>) -> Result<Config> {
    Ok(match path {
        Some(p) => Config::load(p)?,
        None => Config::default(),
    })
}

pub(crate) fn apply_detect(cfg: &mut Config, d: &DetectArgs) {
    if let Some(n) = d.fanout_threshold {
        cfg.detect.fanout_threshold = n;
    }
    if let Some(w) = d.window {
        cfg.detect.window = w;
        cfg.detect.fit_default_scales();
    }
    cfg.detect.allow.extend(d.allow.iter().copied());
}

/// Loads and validates the file like `run` does, and refuses what `run`
/// refuses to start with: a file without interfaces (the service's unit
/// passes none on its command line).
pub(crate) fn check_config(file: &std::path::Path) -> Result<()> {
    let cfg = Config::load(file)?;
    if cfg.dataplane.interfaces.is_empty() {
        anyhow::bail!(
            "{}: no interfaces: `smbwatch run` refuses to start without one; set [dataplane] interfaces = [\"eth0\", ...] (or pass --iface to `run`)",
            file.display()
        );
    }
    // `run` fails at start on an alert file it cannot create; say so now
    // (the directory, not the permissions: those differ between the user
    // checking and the service).
    if let Some(smbwatch::alert::json::JsonTarget::File(p)) = &cfg.alert.json {
        let dir = p
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(std::path::Path::new("."));
        if !dir.is_dir() {
            anyhow::bail!(
                "{}: alert.json: {}: the directory {} does not exist, so `smbwatch run` could not create the alert file",
                file.display(),
                p.display(),
                dir.display()
            );
        }
    }
    println!("{}: ok", file.display());
    Ok(())
}

/// Reads every host-log file; bad records are reported on stderr and skipped.
pub(crate) fn read_host_logs(
    files: &[PathBuf],
    format: smbwatch::hostlog::Format,
) -> Result<Vec<smbwatch::hostlog::HostEvent>> {
    let mut all = Vec::new();
    for f in files {
        let (events, summary) = smbwatch::hostlog::parse_file(f, format)?;
        eprintln!(
            "{}: {} records: {} parsed, {} skipped (event ids smbwatch does not use), {} bad",
            f.display(),
            summary.total,
            summary.parsed,
            summary.skipped,
            summary.bad
        );
        for e in &summary.errors {
            eprintln!("  {e}");
        }
        all.extend(events);
    }
    Ok(all)
}

pub(crate) fn stdout_alerts(sensor: Sensor) -> impl FnMut(&Alert) {
    let mut out = std::io::stdout().lock();
    move |a: &Alert| {
        let doc = Document::new(a, &sensor, chrono::Utc::now());
        // A closed stdout (e.g. `| head`) ends the output, not the program.
        let _ = writeln!(out, "{}", smbwatch::alert::json::to_line(&doc));
    }
}
