//! The smbwatch command line: parsing and dispatch only; each command's
//! body is its own module of `commands/`.

mod commands;

use std::{path::PathBuf, process::ExitCode};

use anyhow::Context as _;
use clap::{Parser, Subcommand};

use commands::{
    aggregate::AggregateArgs, hostlog::HostlogCommand, replay::ReplayArgs, run::RunArgs,
    status::StatusArgs,
};

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
    Run(Box<RunArgs>),
    /// Show what a running daemon sees: top sources and kernel counters.
    Status(StatusArgs),
    /// Live terminal view of a running daemon (its metrics endpoint): top
    /// sources by distinct destinations, latest alerts, counters and rates.
    Top(smbwatch::top::TopArgs),
    /// Check a configuration file; errors name the key and the line.
    CheckConfig {
        /// The TOML file.
        file: PathBuf,
    },
    /// Replay a capture (pcap or pcapng) through the real XDP program and the
    /// same detection as `run`; alerts as JSON lines on stdout, a summary on stderr.
    Replay(ReplayArgs),
    /// Windows host logs without a gateway.
    #[command(subcommand)]
    Hostlog(HostlogCommand),
    /// Write the man pages and the commented conffile into DIR (for packaging).
    #[command(hide = true)]
    PackageFiles {
        /// Output directory.
        dir: PathBuf,
    },
    /// The learned SMB baseline: learn it from captures, show, export, import.
    #[command(subcommand)]
    Baseline(commands::baseline::BaselineCommand),
    /// Run detection over the events every gateway publishes to NATS
    /// JetStream (`run --publish`): one detector for many routers.
    Aggregate(AggregateArgs),
}

fn main() -> ExitCode {
    smbwatch::logging::init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => commands::run::run(*args),
        Command::Status(args) => commands::status::status(args),
        Command::Top(args) => smbwatch::top::run(&args).context("smbwatch top"),
        Command::CheckConfig { file } => commands::check_config(&file),
        Command::Replay(args) => commands::replay::replay(args),
        Command::Hostlog(HostlogCommand::Parse(args)) => commands::hostlog::parse(args),
        Command::Hostlog(HostlogCommand::Scan(args)) => commands::hostlog::scan(args),
        Command::PackageFiles { dir } => {
            commands::package_files::write(<Cli as clap::CommandFactory>::command(), &dir)
        }
        Command::Baseline(cmd) => commands::baseline::run(cmd),
        Command::Aggregate(args) => commands::aggregate::aggregate(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("smbwatch: error: {}", error_text(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes joined by `: `, each said once: a cause whose
/// text an outer message already contains (`... : Permission denied (os
/// error 13)` wrapping that same io::Error) is not repeated.
fn error_text(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cause the outer message already quotes is said once; distinct
    /// causes are all kept, outermost first.
    #[test]
    fn error_causes_are_said_once() {
        #[derive(Debug, thiserror::Error)]
        #[error("cannot open /x: {source}")]
        struct Quotes {
            source: std::io::Error,
        }
        let io = std::io::Error::from_raw_os_error(libc::EACCES);
        let e = anyhow::Error::new(Quotes { source: io }).context("smbwatch status");
        let text = error_text(&e);
        assert_eq!(text.matches("os error 13").count(), 1, "{text}");
        assert!(
            text.starts_with("smbwatch status: cannot open /x: "),
            "{text}"
        );
        let e = anyhow::anyhow!("inner").context("middle").context("outer");
        assert_eq!(error_text(&e), "outer: middle: inner");
    }
}
