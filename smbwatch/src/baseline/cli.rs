//! The `baseline` commands and the `--baseline` option of `run` and
//! `replay`: open a database, learn captures into it, show, export, import.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use chrono::DateTime;

use super::store::{Store, StoreError};
use super::writer::Commit;
use super::{is_host_key, is_name_key, jsonl, key_addr, Baseline, Client};
use crate::config::Config;
use crate::event::GatewayEvent;
use crate::replay::{ReplayError, ReplayOptions};

/// Errors of the baseline commands.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The database.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A capture.
    #[error(transparent)]
    Replay(#[from] ReplayError),
    /// An import file.
    #[error(transparent)]
    Import(#[from] jsonl::ImportError),
    /// The database already holds a baseline and `--replace` was not given.
    #[error("{}: already holds a baseline ({clients} clients, {edges} edges); pass --replace to overwrite it", path.display())]
    NotEmpty {
        /// The database.
        path: PathBuf,
        /// Its clients.
        clients: usize,
        /// Its edges.
        edges: usize,
    },
    /// Output failed.
    #[error("{op}: {source}")]
    Io {
        /// What was done.
        op: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Opens the configured database and loads it into a baseline with the
/// configuration's settings.
pub fn open(cfg: &Config, path: &Path) -> Result<(Store, Baseline), StoreError> {
    let store = Store::open(path)?;
    let snap = store.load()?;
    Ok((store, learner(cfg, snap)))
}

/// A baseline with the configuration's settings, from what a database held.
pub fn learner(cfg: &Config, snap: crate::baseline::Snapshot) -> Baseline {
    Baseline::new(
        cfg.baseline.clone(),
        cfg.detect.allow.clone(),
        cfg.detect.hold_down,
    )
    .from_snapshot(snap)
}

/// What `baseline learn` did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LearnReport {
    /// Gateway events replayed.
    pub events: u64,
    /// Batches committed by this run.
    pub batches: u64,
}

/// `baseline learn`: every capture through the real XDP program (as
/// `replay` does) into the baseline at `db`, a batch every `batch_events`
/// events. Batches are committed on this thread before learning goes on
/// (a CLI may wait for its disk): a crash, SIGKILL included, loses at most
/// the events since the last commit, fewer than one batch. `on_commit`
/// reports each commit (progress).
pub fn learn(
    cfg: &Config,
    db: &Path,
    pcaps: &[PathBuf],
    batch_events: u64,
    on_file: &mut dyn FnMut(&crate::replay::ReplaySummary, &Baseline),
    on_commit: &mut dyn FnMut(&Commit),
) -> Result<LearnReport, CliError> {
    let (mut store, mut b) = open(cfg, db)?;
    let opts = ReplayOptions {
        load: cfg.dataplane.load_options(1, cfg.detect.window),
        ..ReplayOptions::default()
    };
    let mut report = LearnReport::default();
    let mut commit = |b: &mut Baseline, report: &mut LearnReport| -> Result<(), StoreError> {
        let batch = b.take_batch();
        let start = std::time::Instant::now();
        store.write(&batch)?;
        report.batches += 1;
        on_commit(&Commit {
            batch: batch.meta.batches,
            records: batch.len(),
            learned: batch.meta.learned,
            took: start.elapsed(),
        });
        Ok(())
    };
    for pcap in pcaps {
        let mut since = 0u64;
        let mut failed = None;
        let mut sink = |ev: &GatewayEvent| {
            // Learning only: what the scorer would say is not printed.
            let _ = b.observe(ev);
            report.events += 1;
            since += 1;
            if since >= batch_events && failed.is_none() {
                since = 0;
                failed = commit(&mut b, &mut report).err();
            }
        };
        let summary = crate::replay::replay(pcap, &opts, &mut sink)?;
        if let Some(e) = failed {
            return Err(e.into());
        }
        on_file(&summary, &b);
    }
    if b.pending() > 0 {
        commit(&mut b, &mut report)?;
    }
    // Many batches leave many freed pages; give them back once at the end.
    store.compact()?;
    Ok(report)
}

/// `baseline show`: a summary, the servers and the busiest clients.
pub fn show(cfg: &Config, db: &Path, top: usize, out: &mut dyn Write) -> Result<(), CliError> {
    let (_, b) = open(cfg, db)?;
    let io = |source| CliError::Io {
        op: "writing".into(),
        source,
    };
    write_show(&b, db, top, out).map_err(io)
}

fn time(t: Option<i64>) -> String {
    t.and_then(|t| DateTime::from_timestamp(t, 0)).map_or_else(
        || "-".into(),
        |t| t.format("%Y-%m-%d %H:%M UTC").to_string(),
    )
}

fn write_show(b: &Baseline, db: &Path, top: usize, out: &mut dyn Write) -> std::io::Result<()> {
    let m = b.meta();
    let s = b.stats();
    let learn_end = m
        .started
        .map(|st| st.saturating_add(b.config().learn_for.as_secs() as i64));
    writeln!(out, "baseline {}", db.display())?;
    writeln!(
        out,
        "  learned {} answered SMB pairs from {} to {}; learning period ends {}{}",
        m.learned,
        time(m.started),
        time(m.last),
        time(learn_end),
        match (learn_end, m.last) {
            (Some(e), Some(l)) if l >= e => " (over: scoring)",
            (Some(_), _) => " (still learning)",
            _ => "",
        }
    )?;
    writeln!(
        out,
        "  {} clients, {} edges ({} clients and {} edges evicted at the caps), {} batches written",
        s.clients, s.edges, m.evicted_clients, m.evicted_edges, m.batches
    )?;
    let by = |f: &dyn Fn(u128, &Client) -> bool| b.clients().filter(|(k, c)| f(**k, c)).count();
    let is_router = |c: &Client| c.flags & Client::ROUTER != 0;
    let named = by(&|k, c| is_name_key(k) && !is_router(c));
    let by_mac = by(&|k, c| is_host_key(k) && !is_name_key(k) && !is_router(c));
    let routers = by(&|_, c| is_router(c));
    let min = b.config().manager_min_targets;
    let managers = by(&|_, c| min > 0 && c.usual_servers >= min);
    writeln!(
        out,
        "  hosts by first-hop MAC {by_mac}, by name {named}, by address {}; router MACs {routers}; management sources (at least {min} usual servers) {managers}",
        s.clients - by_mac - named - routers
    )?;
    let servers = b.servers();
    writeln!(
        out,
        "servers (at least {} clients): {}",
        b.config().server_min_clients,
        servers.len()
    )?;
    for (k, n) in servers.iter().take(top) {
        writeln!(out, "  {:<40} {n} clients", key_addr(*k).to_string())?;
    }
    let mut clients: Vec<_> = b.clients().collect();
    clients.sort_by(|a, c| c.1.events.cmp(&a.1.events).then(a.0.cmp(c.0)));
    writeln!(out, "clients (busiest first): {}", clients.len())?;
    writeln!(
        out,
        "  {:<40} {:>8} {:>5} {:>7}  {:<18} {:<18} USUAL HOURS (UTC)",
        "CLIENT", "PAIRS", "DAYS", "SERVERS", "FIRST SEEN", "LAST SEEN"
    )?;
    for (k, c) in clients.into_iter().take(top) {
        writeln!(
            out,
            "  {:<40} {:>8} {:>5} {:>7}  {:<18} {:<18} {}",
            key_addr(*k).to_string(),
            c.events,
            c.days,
            c.servers,
            time(Some(c.first_seen)),
            time(Some(c.last_seen)),
            super::message::hour_ranges(c.usual_hours)
        )?;
    }
    Ok(())
}

/// `baseline export`: JSON lines to `out`.
pub fn export(cfg: &Config, db: &Path, out: &mut dyn Write) -> Result<(), CliError> {
    let (_, b) = open(cfg, db)?;
    jsonl::export(&b.snapshot(), out)
        .and_then(|()| out.flush())
        .map_err(|source| CliError::Io {
            op: "writing the export".into(),
            source,
        })
}

/// `baseline import`: JSON lines from `input` (named `name` in errors)
/// into `db`, which must be empty unless `replace`. Returns (clients, edges).
pub fn import(
    db: &Path,
    input: impl BufRead,
    name: &str,
    replace: bool,
) -> Result<(usize, usize), CliError> {
    let snap = jsonl::import(input, name)?;
    let store = Store::open(db)?;
    let old = store.load()?;
    if !old.clients.is_empty() || !old.edges.is_empty() {
        if !replace {
            return Err(CliError::NotEmpty {
                path: db.to_owned(),
                clients: old.clients.len(),
                edges: old.edges.len(),
            });
        }
        store.clear()?;
    }
    let counts = (snap.clients.len(), snap.edges.len());
    store.write(&super::Batch {
        meta: snap.meta,
        clients: snap.clients,
        edges: snap.edges,
        deleted_clients: Vec::new(),
        deleted_edges: Vec::new(),
    })?;
    Ok(counts)
}
