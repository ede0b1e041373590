//! `smbwatch hostlog parse|scan`: Windows host logs without a gateway.

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Subcommand};
use smbwatch::{alert::sensor::Sensor, hostlog, pipeline::Pipeline};

use super::{load_config, read_host_logs, stdout_alerts};

#[derive(Subcommand, Debug)]
pub(crate) enum HostlogCommand {
    /// Print normalised host events as JSON lines; counts and errors on stderr.
    Parse(HostlogFiles),
    /// Apply the host rules (suspicious_smb_client, admin_share_access, remote_file_drop, and smb_remote_service / smb_remote_task from 7045, 4697 and 4698 of a remote client) and print alerts as JSON lines.
    Scan(HostlogFiles),
}

#[derive(Args, Debug)]
pub(crate) struct HostlogFiles {
    /// Host-log files (EVTX, event XML, Winlogbeat/NXLog/evtx_dump JSON, Key: Value).
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,
    /// Input format: auto (detected per record), evtx, xml, winlogbeat (or
    /// ecs), nxlog, evtx-dump, kv.
    #[arg(long, default_value = "auto")]
    format: hostlog::Format,
    /// Configuration file; its [hostlog.rules], [correlate] and [process_classes] apply.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

pub(crate) fn parse(args: HostlogFiles) -> Result<()> {
    let events = read_host_logs(&args.files, args.format)?;
    let mut out = std::io::stdout().lock();
    for ev in &events {
        if writeln!(out, "{}", serde_json::to_string(ev)?).is_err() {
            break;
        }
    }
    Ok(())
}

pub(crate) fn scan(args: HostlogFiles) -> Result<()> {
    let cfg = load_config(args.config.as_deref())?;
    let mut events = read_host_logs(&args.files, args.format)?;
    events.sort_by_key(|e| e.ts);
    let mut pipeline = Pipeline::new(cfg.pipeline());
    let mut print = stdout_alerts(Sensor::local(&[]));
    let mut n = 0;
    for ev in &events {
        for a in pipeline.host_event(ev) {
            print(&a);
            n += 1;
        }
    }
    eprintln!("{n} alerts from {} host events", events.len());
    Ok(())
}
