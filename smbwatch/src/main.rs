//! The smbwatch command line.

mod package_files;

use std::{path::PathBuf, process::ExitCode, time::Duration};

use anyhow::{Context as _, Result};
use clap::{Args, Parser, Subcommand};
use std::io::Write as _;

mod baseline_cmd;

use smbwatch::{
    alert::{ecs::Document, sensor::Sensor, Alert},
    config::Config,
    daemon::{self, RunOptions},
    dataplane::{AttachMode, MonotonicClock, PinnedMaps},
    hostlog,
    pipeline::{Pipeline, ReplayFeed},
    replay::ReplayOptions,
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
    Baseline(baseline_cmd::BaselineCommand),
    /// Run detection over the events every gateway publishes to NATS
    /// JetStream (`run --publish`): one detector for many routers.
    Aggregate(AggregateArgs),
}

#[derive(Args, Debug)]
struct AggregateArgs {
    /// The broker, nats://HOST:PORT or tls://HOST:PORT (comma-separated for a cluster).
    #[arg(long, value_name = "URL")]
    nats: String,
    /// Partitions this aggregator owns, e.g. 0-7 or 0,2,4 (default: all).
    /// Aggregators sharing a fleet own disjoint sets.
    #[arg(long, value_name = "LIST")]
    partitions: Option<String>,
    /// Durable consumer name prefix; unique per aggregator.
    #[arg(long, value_name = "NAME", default_value = "smbwatch-aggregate")]
    name: String,
    /// Configuration file: [detect], [correlate], [alert], [syslog] and
    /// [publish] (stream, partitions, credentials) apply.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(flatten)]
    detect: DetectArgs,
    /// Write alerts as ECS JSON lines to PATH (appended), or `-` for stdout.
    #[arg(long = "json", value_name = "PATH|-")]
    json: Option<PathBuf>,
    /// Send alerts to syslog (unix:///dev/log, udp://, tcp://, tls://HOST:PORT).
    #[arg(long, value_name = "URL")]
    syslog: Option<String>,
}

#[derive(Args, Debug)]
struct ReplayArgs {
    /// The capture (Ethernet, Linux cooked SLL/SLL2 or raw IP link types).
    #[arg(long, value_name = "FILE")]
    pcap: PathBuf,
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
    /// Also print the new_pair/response events as JSON lines.
    #[arg(long)]
    events: bool,
    /// Learn into and score against this baseline database.
    #[arg(long, value_name = "PATH")]
    baseline: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
enum HostlogCommand {
    /// Print normalised host events as JSON lines; counts and errors on stderr.
    Parse(HostlogFiles),
    /// Apply the host rules (suspicious_smb_client, admin_share_access) and print alerts as JSON lines.
    Scan(HostlogFiles),
}

#[derive(Args, Debug)]
struct HostlogFiles {
    /// Host-log files (EVTX, event XML, Winlogbeat/NXLog/evtx_dump JSON, Key: Value).
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,
    /// Input format (default: detected per file).
    #[arg(long, default_value = "auto")]
    format: hostlog::Format,
    /// Configuration file; its [hostlog.rules], [correlate] and [process_classes] apply.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

#[derive(Args, Debug)]
struct RunArgs {
    /// Interface to attach to (repeat for each interface). Default: `[dataplane] interfaces`.
    #[arg(long = "iface", short = 'i', value_name = "IF")]
    ifaces: Vec<String>,
    /// Configuration file (TOML; see docs/smbwatch.toml). Flags override it.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// XDP attach mode: auto tries native (driver) first, then skb (generic) with a warning.
    #[arg(long, value_enum)]
    xdp_mode: Option<AttachMode>,
    /// Replace an XDP program someone else attached to an interface.
    #[arg(long)]
    force: bool,
    /// Monitored TCP port (repeat; at most 4). Default: 445.
    #[arg(long = "port", value_name = "PORT")]
    ports: Vec<u16>,
    /// Log kernel counters this often, at DEBUG (e.g. 10s, 1m). Default: 10s.
    #[arg(long, value_parser = humantime::parse_duration)]
    stats_interval: Option<Duration>,
    /// Slots of the kernel's per-source sketch table (80 bytes each). Default: 131072.
    #[arg(long)]
    max_sources: Option<u32>,
    /// Pairs the kernel's pair cache holds (16 bytes each). Default: 1048576.
    #[arg(long)]
    max_pairs: Option<u32>,
    /// New-pair events per CPU per second before the kernel sheds events
    /// and smbwatch reports itself degraded (0: no budget). Default: 100000.
    #[arg(long, value_name = "N")]
    events_per_cpu: Option<u64>,
    /// Which answers count: auto (other-ingress on two or more interfaces),
    /// other-ingress (forged answers from the client's side are ignored), any.
    #[arg(long, value_enum)]
    answers: Option<smbwatch::dataplane::AnswerCheck>,
    /// bpffs directory for this daemon's pinned maps (one per daemon).
    /// Default: /sys/fs/bpf/smbwatch.
    #[arg(long, value_name = "DIR")]
    pin_dir: Option<PathBuf>,
    /// Serve Prometheus metrics on /metrics (and `smbwatch top` on /top) at
    /// ADDR; without ADDR at [metrics] listen (default 127.0.0.1:9445).
    #[arg(long, value_name = "ADDR", num_args = 0..=1)]
    metrics: Option<Option<std::net::SocketAddr>>,
    #[command(flatten)]
    detect: DetectArgs,
    #[command(flatten)]
    alerts: AlertArgs,
    #[command(flatten)]
    hostlog: HostLogArgs,
    /// Learn into and score against this baseline database.
    #[arg(long, value_name = "PATH")]
    baseline: Option<PathBuf>,
    /// Also publish events to NATS JetStream for `smbwatch aggregate`
    /// (nats://HOST:PORT or tls://HOST:PORT); detection here goes on as usual.
    #[arg(long, value_name = "URL")]
    publish: Option<String>,
    /// This gateway's id in the fleet (letters, digits, '-', '_'). Default: the host name.
    #[arg(long, value_name = "NAME")]
    gateway_id: Option<String>,
}

/// Detection overrides shared by `run` and `replay`.
#[derive(Args, Debug, Default)]
struct DetectArgs {
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

/// Where alerts go.
#[derive(Args, Debug, Default)]
struct AlertArgs {
    /// Write alerts as ECS JSON lines to PATH (appended), or `-` for stdout.
    #[arg(long = "json", value_name = "PATH|-")]
    json: Option<PathBuf>,
    /// Send alerts to syslog: unix:///dev/log, udp://HOST:PORT, tcp://HOST:PORT or tls://HOST:PORT.
    #[arg(long, value_name = "URL")]
    syslog: Option<String>,
    /// Syslog message format. Default: rfc3164 for unix:// (journald,
    /// imuxsock), rfc5424 for network targets.
    #[arg(long, value_enum)]
    syslog_format: Option<SyslogFormatArg>,
    /// Also print new_pair/response event lines on stdout (the default when no alert sink is set).
    #[arg(long)]
    events: bool,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum SyslogFormatArg {
    Rfc5424,
    Rfc3164,
}

/// Host-log inputs.
#[derive(Args, Debug, Default)]
struct HostLogArgs {
    /// Windows host-log file to read (EVTX, event XML, Winlogbeat/NXLog/evtx_dump JSON, Key: Value; repeatable; `-` for stdin).
    #[arg(long = "host-log", value_name = "PATH")]
    host_logs: Vec<PathBuf>,
    /// Keep reading --host-log files as they grow, across rotation.
    #[arg(long)]
    follow: bool,
    /// Listen for forwarded events, one JSON or XML event per line (e.g. tcp://127.0.0.1:5514).
    #[arg(long, value_name = "URL")]
    host_log_listen: Option<smbwatch::config::ListenAddr>,
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
    smbwatch::logging::init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => run(*args),
        Command::Status(args) => status(args),
        Command::Top(args) => smbwatch::top::run(&args).context("smbwatch top"),
        Command::CheckConfig { file } => check_config(&file),
        Command::Replay(args) => replay(args),
        Command::Hostlog(HostlogCommand::Parse(args)) => hostlog_parse(args),
        Command::Hostlog(HostlogCommand::Scan(args)) => hostlog_scan(args),
        Command::PackageFiles { dir } => {
            package_files::write(<Cli as clap::CommandFactory>::command(), &dir)
        }
        Command::Baseline(cmd) => baseline_cmd::run(cmd),
        Command::Aggregate(args) => aggregate(args),
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

/// `run`'s flags applied to a configuration read from the file (at start
/// and again on every reload).
fn apply_run_flags(cfg: &mut Config, args: &RunArgs) {
    let d = &mut cfg.dataplane;
    if !args.ifaces.is_empty() {
        d.interfaces = args.ifaces.clone();
    }
    if let Some(m) = args.xdp_mode {
        d.xdp_mode = m;
    }
    if !args.ports.is_empty() {
        d.ports = args.ports.clone();
    }
    if let Some(v) = args.stats_interval {
        d.stats_interval = v;
    }
    if let Some(v) = args.max_sources {
        d.max_sources = v;
    }
    if let Some(v) = args.max_pairs {
        d.max_pairs = v;
    }
    if let Some(v) = args.events_per_cpu {
        d.events_per_cpu = v;
    }
    if let Some(v) = args.answers {
        d.answers = v;
    }
    if let Some(v) = &args.pin_dir {
        d.pin_dir = v.clone();
    }
    if let Some(addr) = args.metrics {
        cfg.metrics.enabled = true;
        cfg.metrics.listen = addr.unwrap_or(cfg.metrics.listen);
    }
    apply_detect(cfg, &args.detect);
    let a = &args.alerts;
    if let Some(j) = &a.json {
        cfg.alert.json = Some(j.clone());
    }
    cfg.alert.events |= a.events;
    if let Some(url) = &a.syslog {
        cfg.syslog.target = url.clone();
        cfg.alert.syslog = true;
    }
    if let Some(f) = a.syslog_format {
        cfg.syslog.format = Some(match f {
            SyslogFormatArg::Rfc5424 => smbwatch::alert::syslog::SyslogFormat::Rfc5424,
            SyslogFormatArg::Rfc3164 => smbwatch::alert::syslog::SyslogFormat::Rfc3164,
        });
    }
    if let Some(url) = &args.publish {
        cfg.publish.url = Some(url.clone());
    }
    if let Some(id) = &args.gateway_id {
        cfg.publish.gateway_id = Some(id.clone());
    }
    cfg.hostlog.follow |= args.hostlog.follow;
    if let Some(l) = &args.hostlog.host_log_listen {
        cfg.hostlog.listen = Some(*l);
    }
    set_baseline(cfg, args.baseline.as_ref());
}

/// `--baseline PATH`: use that database.
fn set_baseline(cfg: &mut Config, path: Option<&PathBuf>) {
    if let Some(p) = path {
        cfg.baseline.enabled = true;
        cfg.baseline.path = p.clone();
    }
}

fn load_config(path: Option<&std::path::Path>) -> Result<Config> {
    Ok(match path {
        Some(p) => Config::load(p)?,
        None => Config::default(),
    })
}

fn apply_detect(cfg: &mut Config, d: &DetectArgs) {
    if let Some(n) = d.fanout_threshold {
        cfg.detect.fanout_threshold = n;
    }
    if let Some(w) = d.window {
        cfg.detect.window = w;
    }
    cfg.detect.allow.extend(d.allow.iter().copied());
}

fn run(args: RunArgs) -> Result<()> {
    let mut config = load_config(args.config.as_deref())?;
    apply_run_flags(&mut config, &args);
    config
        .validate()
        .context("invalid setting (after applying command-line flags)")?;
    let (file, force, host_logs) = (
        args.config.clone(),
        args.force,
        args.hostlog.host_logs.clone(),
    );
    let args = std::sync::Arc::new(args);
    let opts = RunOptions {
        ifaces: config.dataplane.interfaces.clone(),
        config,
        config_file: file,
        overrides: daemon::reload::Overrides(std::sync::Arc::new(move |cfg: &mut Config| {
            apply_run_flags(cfg, &args)
        })),
        reload_stats: daemon::reload::ReloadStats::new(),
        force,
        host_logs,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(daemon::run(&opts))?;
    Ok(())
}

fn aggregate(args: AggregateArgs) -> Result<()> {
    let mut cfg = load_config(args.config.as_deref())?;
    apply_detect(&mut cfg, &args.detect);
    if let Some(j) = &args.json {
        cfg.alert.json = Some(j.clone());
    }
    if let Some(url) = &args.syslog {
        cfg.syslog.target = url.clone();
        cfg.alert.syslog = true;
    }
    cfg.publish.url = Some(args.nats.clone());
    cfg.validate()
        .context("invalid setting (after applying command-line flags)")?;
    let n = cfg.publish.partitions;
    let partitions = match &args.partitions {
        Some(list) => smbwatch::fleet::parse_partitions(list, n)
            .map_err(|e| anyhow::anyhow!("--partitions {e}"))?,
        None => (0..n).collect(),
    };
    smbwatch::fleet::check_gateway_id(&args.name).map_err(|e| anyhow::anyhow!("--name {e}"))?;
    let opts = smbwatch::fleet::aggregate::AggregateOptions {
        url: args.nats,
        partitions,
        name: args.name,
        config: cfg,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let report = rt.block_on(smbwatch::fleet::aggregate::run(&opts))?;
    tracing::info!(?report, "aggregator stopped");
    Ok(())
}

/// Loads and validates the file like `run` does, and refuses what `run`
/// refuses to start with: a file without interfaces (the service's unit
/// passes none on its command line).
fn check_config(file: &std::path::Path) -> Result<()> {
    let cfg = Config::load(file)?;
    if cfg.dataplane.interfaces.is_empty() {
        anyhow::bail!(
            "{}: no interfaces: `smbwatch run` refuses to start without one; set [dataplane] interfaces = [\"eth0\", ...] (or pass --iface to `run`)",
            file.display()
        );
    }
    println!("{}: ok", file.display());
    Ok(())
}

/// Reads every host-log file; bad records are reported on stderr and skipped.
fn read_host_logs(files: &[PathBuf], format: hostlog::Format) -> Result<Vec<hostlog::HostEvent>> {
    let mut all = Vec::new();
    for f in files {
        let (events, summary) = hostlog::parse_file(f, format)?;
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

fn stdout_alerts(sensor: Sensor) -> impl FnMut(&Alert) {
    let mut out = std::io::stdout().lock();
    move |a: &Alert| {
        let doc = Document::new(a, &sensor, chrono::Utc::now());
        // A closed stdout (e.g. `| head`) ends the output, not the program.
        let _ = writeln!(out, "{}", smbwatch::alert::json::to_line(&doc));
    }
}

fn replay(args: ReplayArgs) -> Result<()> {
    let mut cfg = load_config(args.config.as_deref())?;
    apply_detect(&mut cfg, &args.detect);
    if let Some(s) = args.clock_skew {
        cfg.correlate.clock_skew = s;
    }
    set_baseline(&mut cfg, args.baseline.as_ref());
    cfg.validate()
        .context("invalid setting (after applying command-line flags)")?;
    let host = read_host_logs(&args.host_logs, hostlog::Format::Auto)?;
    let mut print = stdout_alerts(smbwatch::replay::sensor::of_capture(&args.pcap));
    let mut on_alert = |a: &Alert| print(a);
    let mut print_event = |ev: &smbwatch::event::GatewayEvent| {
        let _ = writeln!(std::io::stdout(), "{}", ev.to_json());
    };
    let mut pipeline = Pipeline::new(&cfg);
    let store = if cfg.baseline.enabled {
        let (store, b) = smbwatch::baseline::cli::open(&cfg, &cfg.baseline.path)?;
        pipeline = pipeline.with_baseline(b);
        Some(store)
    } else {
        None
    };
    let mut feed = ReplayFeed::new(pipeline, host, &mut on_alert);
    if args.events {
        feed = feed.with_events(&mut print_event);
    }
    // A capture is one link unless the user says its pcapng interfaces are
    // the two sides of a gateway (`answers = "other-ingress"`).
    let opts = ReplayOptions {
        load: cfg.dataplane.load_options(1, cfg.detect.window),
        ..ReplayOptions::default()
    };
    let summary = smbwatch::replay::replay(&args.pcap, &opts, &mut feed)?;
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
        "detection: {} alerts ({} suppressed); correlation: {} pairs attributed to host processes, {} chains",
        d.alerts, d.suppressed, c.attributed, c.chains
    );
    Ok(())
}

fn hostlog_parse(args: HostlogFiles) -> Result<()> {
    let events = read_host_logs(&args.files, args.format)?;
    let mut out = std::io::stdout().lock();
    for ev in &events {
        if writeln!(out, "{}", serde_json::to_string(ev)?).is_err() {
            break;
        }
    }
    Ok(())
}

fn hostlog_scan(args: HostlogFiles) -> Result<()> {
    let cfg = load_config(args.config.as_deref())?;
    let mut events = read_host_logs(&args.files, args.format)?;
    events.sort_by_key(|e| e.ts);
    let mut pipeline = Pipeline::new(&cfg);
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

fn status(args: StatusArgs) -> Result<()> {
    let maps = PinnedMaps::open(&args.pin.pin_dir)?;
    let stats = maps.stats()?;
    let mut sources = maps.sources()?;
    // Top sources by distinct destinations (the kernel's linear-counting
    // estimate over the last half to whole fan-out window), then new pairs.
    let total = sources.len();
    smbwatch::metrics::top::rank_sources(&mut sources, args.top);
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
    for (name, v) in stats.named() {
        println!("{name:<16} {v}");
    }
    Ok(())
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
