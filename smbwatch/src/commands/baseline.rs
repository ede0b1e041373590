//! `smbwatch baseline ...`: the command line of the learned baseline (the
//! work is in `smbwatch::baseline::cli`).

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::{Context as _, Result};
use clap::{Args, Subcommand};

use smbwatch::baseline::{cli, writer::Commit};

#[derive(Subcommand, Debug)]
pub(crate) enum BaselineCommand {
    /// Learn captures (through the real XDP program, as replay does) into a database.
    Learn {
        #[command(flatten)]
        db: BaselineDb,
        /// Captures to learn, in time order.
        #[arg(value_name = "CAPTURE", required_unless_present = "pcaps")]
        captures: Vec<PathBuf>,
        /// A capture to learn, as a flag (repeatable, in time order; not
        /// mixed with CAPTURE, whose order against it would be unclear).
        #[arg(long = "pcap", value_name = "FILE", conflicts_with = "captures")]
        pcaps: Vec<PathBuf>,
        /// Write a batch to the database every N events.
        #[arg(long, value_name = "N", default_value_t = 100_000)]
        batch_events: u64,
    },
    /// Summary, servers and busiest clients.
    Show {
        #[command(flatten)]
        db: BaselineDb,
        /// How many servers and clients to list.
        #[arg(long, default_value_t = 20)]
        top: usize,
    },
    /// The whole baseline as JSON lines on stdout.
    Export {
        #[command(flatten)]
        db: BaselineDb,
    },
    /// Load JSON lines (from `baseline export`) into a database.
    Import {
        #[command(flatten)]
        db: BaselineDb,
        /// The JSON-lines file, or `-` for stdin.
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// Overwrite a database that already holds a baseline.
        #[arg(long)]
        replace: bool,
    },
}

#[derive(Args, Debug)]
pub(crate) struct BaselineDb {
    /// The baseline database (redb; learn and import create it when absent,
    /// show and export need an existing one).
    #[arg(long, value_name = "PATH")]
    db: PathBuf,
    /// Configuration file; its [baseline] and [detect] settings apply.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

impl BaselineDb {
    /// Reading commands refuse a missing database: opening one creates it
    /// (and its directory), and a mistyped path then showed an empty
    /// baseline as if nothing had been learned.
    fn must_exist(&self) -> Result<()> {
        if !self.db.exists() {
            anyhow::bail!(
                "{}: no baseline database there (`smbwatch baseline learn`, `import` or `run --baseline` create one)",
                self.db.display()
            );
        }
        Ok(())
    }
}

pub(crate) fn run(cmd: BaselineCommand) -> Result<()> {
    match cmd {
        BaselineCommand::Learn {
            db,
            captures,
            pcaps,
            batch_events,
        } => {
            let pcaps = if captures.is_empty() { pcaps } else { captures };
            let cfg = super::load_config(db.config.as_deref())?;
            let started = std::time::Instant::now();
            // Progress: one line per committed batch and per capture.
            let mut on_commit = |c: &Commit| {
                eprintln!(
                    "baseline: batch {} committed: {} records in {:.1} ms, {} pairs learned so far",
                    c.batch,
                    c.records,
                    c.took.as_secs_f64() * 1e3,
                    c.learned
                );
            };
            let mut on_file = |s: &smbwatch::replay::ReplaySummary,
                               b: &smbwatch::baseline::Baseline| {
                let st = b.stats();
                eprintln!(
                    "learned {}: {} packets, {} answered pairs; baseline now {} clients, {} edges",
                    s.path.display(),
                    s.records,
                    s.events.accepted,
                    st.clients,
                    st.edges
                );
            };
            let r = cli::learn(
                &cfg,
                &db.db,
                &pcaps,
                batch_events.max(1),
                &mut on_file,
                &mut on_commit,
            )?;
            eprintln!(
                "baseline {}: {} events from {} captures in {:.1}s, {} batches written",
                db.db.display(),
                r.events,
                pcaps.len(),
                started.elapsed().as_secs_f64(),
                r.batches
            );
            Ok(())
        }
        BaselineCommand::Show { db, top } => {
            db.must_exist()?;
            let cfg = super::load_config(db.config.as_deref())?;
            let mut out = std::io::stdout().lock();
            cli::show(&cfg, &db.db, top, &mut out)?;
            Ok(())
        }
        BaselineCommand::Export { db } => {
            db.must_exist()?;
            let cfg = super::load_config(db.config.as_deref())?;
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            cli::export(&cfg, &db.db, &mut out)?;
            out.flush().ok();
            Ok(())
        }
        BaselineCommand::Import { db, file, replace } => {
            let (clients, edges) = if file.as_os_str() == "-" {
                cli::import(&db.db, std::io::stdin().lock(), "stdin", replace)?
            } else {
                let f = std::fs::File::open(&file)
                    .with_context(|| format!("cannot open {}", file.display()))?;
                cli::import(
                    &db.db,
                    std::io::BufReader::new(f),
                    &file.display().to_string(),
                    replace,
                )?
            };
            eprintln!(
                "{}: imported {clients} clients and {edges} edges",
                db.db.display()
            );
            Ok(())
        }
    }
}
