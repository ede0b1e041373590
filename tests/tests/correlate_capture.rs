//! Correlation on real data: the OTRF Empire smbexec capture replayed
//! through the real XDP program, joined with the same intrusion's Windows
//! log. The log's clock differs from the capture's; the skew setting absorbs
//! it (the data is not edited).

use std::path::{Path, PathBuf};

use integration_tests::require_root;
use smbwatch::{
    alert::{Alert, AlertKind},
    config::Config,
    event::{GatewayEvent, GatewayEventKind},
    hostlog::{self, Format},
    pipeline::{Pipeline, ReplayFeed},
    replay::{replay, ReplayOptions},
};

fn data() -> Option<PathBuf> {
    let d = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/data"));
    if d.is_dir() {
        Some(d.to_owned())
    } else {
        integration_tests::skip(&format!(
            "{} absent (public captures and logs; see its README)",
            d.display()
        ));
        None
    }
}

/// Replays the capture with the log; returns alerts, events and the pipeline.
fn run(cfg: &Config, pcap: &Path, log: &Path) -> (Vec<Alert>, Vec<GatewayEvent>, Pipeline) {
    let (host, summary) = hostlog::parse_file(log, Format::Auto).expect("parse log");
    assert_eq!(summary.bad, 0);
    let mut alerts = Vec::new();
    let mut on_alert = |a: &Alert| alerts.push(a.clone());
    let mut events = Vec::new();
    let mut keep = |ev: &GatewayEvent| events.push(ev.clone());
    let mut feed = ReplayFeed::new(Pipeline::new(cfg), host, &mut on_alert).with_events(&mut keep);
    replay(pcap, &ReplayOptions::default(), &mut feed).expect("replay");
    let pipeline = feed.finish();
    (alerts, events, pipeline)
}

#[test]
fn empire_pair_is_attributed_to_powershell() {
    require_root();
    let Some(d) = data() else { return };
    let pcap =
        d.join("pcap/otrf_empire_smbexec_dcerpc_smb_svcctl_WORKSTATION5_2020-09-20025716.cap");
    let log = d.join("logs/otrf_empire_smbexec_dcerpc_smb_svcctl_2020-09-20025716_smbsubset.jsonl");
    let cfg = Config::default();
    let (alerts, events, pipeline) = run(&cfg, &pcap, &log);

    let pairs: Vec<_> = events
        .iter()
        .filter(|e| e.kind == GatewayEventKind::NewPair)
        .collect();
    assert_eq!(pairs.len(), 1, "one SMB pair in the capture");
    let p = pairs[0];
    assert_eq!(
        (
            p.src.to_string().as_str(),
            p.dst.to_string().as_str(),
            p.dport
        ),
        ("172.18.39.5", "172.18.39.6", 445)
    );

    let a = pipeline
        .correlator()
        .attribution(p.src, p.dst, p.sport, p.dport)
        .expect("the gateway pair is attributed to a host process");
    assert_eq!(a.process.name.as_deref(), Some("powershell.exe"));
    // The clocks really differ, within the default 5 s skew.
    let skew = (a.host_ts - a.pair_ts).num_milliseconds().abs();
    assert!(
        skew > 0 && skew <= 5_000,
        "host/capture clock difference {skew} ms"
    );

    let client: Vec<_> = alerts
        .iter()
        .filter(|a| a.kind == AlertKind::SuspiciousSmbClient)
        .collect();
    assert_eq!(client.len(), 1, "{alerts:#?}");
    assert_eq!(
        client[0].process.as_ref().unwrap().name.as_deref(),
        Some("powershell.exe")
    );

    // With a skew tighter than the clock difference, nothing is attributed:
    // the match really rests on the skew setting.
    let mut tight = Config::default();
    tight.correlate.clock_skew = std::time::Duration::from_millis(skew as u64 / 2);
    let (_, _, p2) = run(&tight, &pcap, &log);
    assert!(p2
        .correlator()
        .attribution(p.src, p.dst, p.sport, p.dport)
        .is_none());
}
