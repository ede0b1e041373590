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
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SMBWATCH_LOG")
                // The NATS client logs every reconnect attempt at info.
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,async_nats=warn")),
        )
        .init();
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
            eprintln!("smbwatch: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
