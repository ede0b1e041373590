//! `smbwatch aggregate`: detection over every gateway's published events.

use std::path::PathBuf;

use anyhow::{Context as _, Result};
use clap::Args;

use super::{apply_detect, load_config, DetectArgs};

#[derive(Args, Debug)]
pub(crate) struct AggregateArgs {
    /// The broker, nats://HOST:PORT or tls://HOST:PORT (comma-separated for a cluster).
    #[arg(long, value_name = "URL")]
    nats: smbwatch::fleet::config::BrokerUrls,
    /// Partitions this aggregator owns, e.g. 0-7 or 0,2,4 (default: all).
    /// Aggregators sharing a fleet own disjoint sets.
    #[arg(long, value_name = "LIST")]
    partitions: Option<smbwatch::fleet::PartitionList>,
    /// Durable consumer name prefix; unique per aggregator.
    #[arg(long, value_name = "NAME", default_value = "smbwatch-aggregate")]
    name: smbwatch::fleet::config::GatewayId,
    /// Configuration file: [detect], [correlate], [alert], [syslog] and
    /// [publish] (stream, partitions, credentials) apply; SIGHUP re-reads
    /// it (detection settings and sinks change, the rest needs a restart).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(flatten)]
    detect: DetectArgs,
    /// Write alerts as ECS JSON lines to PATH (appended), or `-` for stdout.
    #[arg(long = "json", value_name = "PATH|-")]
    json: Option<PathBuf>,
    /// Send alerts to syslog (unix:///dev/log, udp://, tcp://, tls://HOST:PORT).
    #[arg(long, value_name = "URL")]
    syslog: Option<smbwatch::alert::syslog::Target<()>>,
    /// Serve Prometheus metrics on /metrics at ADDR; without ADDR at
    /// [metrics] listen (default 127.0.0.1:9445).
    #[arg(long, value_name = "ADDR", num_args = 0..=1)]
    metrics: Option<Option<std::net::SocketAddr>>,
}

/// `aggregate`'s flags applied to a configuration read from the file (at
/// start and again on every reload).
fn apply_aggregate_flags(cfg: &mut smbwatch::config::Config, args: &AggregateArgs) {
    apply_detect(cfg, &args.detect);
    if let Some(j) = &args.json {
        cfg.alert.json = Some(j.clone().into());
    }
    if let Some(url) = &args.syslog {
        cfg.syslog.target = url.clone();
        cfg.alert.syslog = true;
    }
    cfg.publish.url = Some(args.nats.clone());
    if let Some(addr) = args.metrics {
        cfg.metrics.enabled = true;
        cfg.metrics.listen = addr.unwrap_or(cfg.metrics.listen);
    }
}

pub(crate) fn aggregate(args: AggregateArgs) -> Result<()> {
    let mut cfg = load_config(args.config.as_deref())?;
    apply_aggregate_flags(&mut cfg, &args);
    cfg.validate()
        .context("invalid setting (after applying command-line flags)")?;
    let n = cfg.publish.partitions;
    let partitions = match &args.partitions {
        Some(list) => list
            .resolve(n)
            .map_err(|e| anyhow::anyhow!("--partitions {e}"))?,
        None => (0..n).collect(),
    };
    let (url, name, file) = (
        args.nats.to_string(),
        args.name.to_string(),
        args.config.clone(),
    );
    let args = std::sync::Arc::new(args);
    let opts = smbwatch::fleet::aggregate::AggregateOptions {
        url,
        partitions,
        name,
        config: cfg,
        source: smbwatch::runtime::ConfigSource {
            file,
            overrides: smbwatch::runtime::Overrides(std::sync::Arc::new(move |cfg| {
                apply_aggregate_flags(cfg, &args)
            })),
            stats: smbwatch::runtime::ReloadStats::new(),
        },
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let report = rt.block_on(smbwatch::fleet::aggregate::run(&opts))?;
    tracing::info!(?report, "aggregator stopped");
    Ok(())
}
