//! `smbwatch run`: its flags, their merge over the configuration file (at
//! start and on every reload), and the daemon's start.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, Result};
use clap::Args;
use smbwatch::{
    config::Config,
    daemon::{self, RunOptions},
    dataplane::AttachMode,
};

use super::{apply_detect, load_config, set_baseline, DetectArgs};

#[derive(Args, Debug)]
pub(crate) struct RunArgs {
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
    answers: Option<smbwatch::dataplane::AnswerSetting>,
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
    publish: Option<smbwatch::fleet::config::BrokerUrls>,
    /// This gateway's id in the fleet (letters, digits, '-', '_'). Default: the host name.
    #[arg(long, value_name = "NAME")]
    gateway_id: Option<smbwatch::fleet::config::GatewayId>,
}

/// Where alerts go.
#[derive(Args, Debug, Default)]
pub(crate) struct AlertArgs {
    /// Write alerts as ECS JSON lines to PATH (appended), or `-` for stdout.
    #[arg(long = "json", value_name = "PATH|-")]
    json: Option<PathBuf>,
    /// Send alerts to syslog: unix:///dev/log, udp://HOST:PORT, tcp://HOST:PORT or tls://HOST:PORT.
    #[arg(long, value_name = "URL")]
    syslog: Option<smbwatch::alert::syslog::Target<()>>,
    /// Syslog message format. Default: rfc3164 for unix:// (journald,
    /// imuxsock), rfc5424 for network targets.
    #[arg(long, value_enum)]
    syslog_format: Option<SyslogFormatArg>,
    /// Also print event lines (new_pair, active, accepted, confirmed,
    /// refused, unparsed) on stdout; the default when no alert sink is set,
    /// except under systemd (the log is the journal).
    #[arg(long)]
    events: bool,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub(crate) enum SyslogFormatArg {
    Rfc5424,
    Rfc3164,
}

/// Host-log inputs.
#[derive(Args, Debug, Default)]
pub(crate) struct HostLogArgs {
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

/// `run`'s flags applied to a configuration read from the file (at start
/// and again on every reload).
pub(crate) fn apply_run_flags(cfg: &mut Config, args: &RunArgs) {
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
        cfg.alert.json = Some(j.clone().into());
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

pub(crate) fn run(args: RunArgs) -> Result<()> {
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
        source: smbwatch::runtime::ConfigSource {
            file,
            overrides: smbwatch::runtime::Overrides(std::sync::Arc::new(
                move |cfg: &mut Config| apply_run_flags(cfg, &args),
            )),
            stats: smbwatch::runtime::ReloadStats::new(),
        },
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
