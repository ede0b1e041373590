//! The ECS documents of alerts raised from real Windows logs (the PsExec
//! EVTX, Empire's OTRF logs) through the real parsers and the pipeline:
//! what smbwatch-core's correlation tests assert on the alerts, seen in
//! the document a SIEM receives.

use std::path::PathBuf;

use chrono::{DateTime, Utc};
use smbwatch_core::alert::{Alert, AlertKind};
use smbwatch_core::hostlog::{parse_file, Format, HostEvent, HostRecord};
use smbwatch_core::pipeline::{Pipeline, PipelineConfig};
use smbwatch_output::alert::ecs::Document;
use smbwatch_output::alert::sensor::Sensor;

const PSEXEC: &str = "evtx2mitre_ID4688-4697-5140-5145_PSexec_remote_execution_admin_share.evtx";
const EMPIRE: &str = "otrf_empire_smbexec_dcerpc_smb_svcctl_2020-09-20025716_smbsubset.jsonl";

fn ts(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

/// The parsed log, or `None` (a skip, a failure under `CI=true`).
fn events(name: &str) -> Option<Vec<HostEvent>> {
    let p = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/data/logs"
    ))
    .join(name);
    if !p.exists() {
        smbwatch_core::test_support::skip(&format!(
            "{} not found (real test data absent)",
            p.display()
        ));
        return None;
    }
    Some(parse_file(&p, Format::Auto).unwrap().0)
}

/// A pipeline with default settings whose clock is at `now`.
fn pipeline_at(now: &str) -> Pipeline {
    let mut p = Pipeline::new(PipelineConfig::default());
    p.advance(ts(now));
    p
}

fn ecs(a: &Alert) -> serde_json::Value {
    let sensor = Sensor::named(Some("gw1"));
    serde_json::to_value(Document::new(a, &sensor, ts("2026-01-02T03:04:05Z"))).unwrap()
}

#[test]
fn psexec_file_drop_document() {
    let Some(evs) = events(PSEXEC) else { return };
    let mut pipe = pipeline_at("2021-04-21T09:45:00Z");
    let alerts: Vec<Alert> = evs.iter().flat_map(|e| pipe.host_event(e)).collect();
    let d = alerts
        .iter()
        .find(|a| a.kind == AlertKind::RemoteFileDrop)
        .expect("a remote_file_drop");
    let v = ecs(d);
    assert_eq!(v["rule"]["id"], "remote_file_drop");
    assert_eq!(v["event"]["code"], "5145");
    assert_eq!(v["user"]["name"], "admmig");
    assert_eq!(v["user"]["domain"], "OFFSEC");
    assert_eq!(v["source"]["ip"], "10.23.42.22");
}

#[test]
fn sysmon_process_context_document() {
    let Some(evs) = events(EMPIRE) else { return };
    // Empire's launcher's Sysmon 3 (port 80 as logged) rewritten to 445,
    // as in smbwatch-core's correlation tests.
    let guid = "{d273d0f0-fd6c-5f66-7605-000000000800}";
    let mut conn = evs
        .iter()
        .find(|e| e.event_id() == 3 && e.process().unwrap().guid.as_deref() == Some(guid))
        .expect("the launcher's Sysmon 3")
        .clone();
    let HostRecord::NetworkConnection(net) = &mut conn.record else {
        panic!("not a connection")
    };
    net.dst_port = Some(445);
    let mut pipe = pipeline_at("2020-09-20T07:00:00Z");
    for e in &evs {
        pipe.host_event(e);
    }
    let alerts = pipe.host_event(&conn);
    let a = alerts
        .iter()
        .find(|a| a.kind == AlertKind::SuspiciousSmbClient)
        .expect("a suspicious_smb_client");
    let ctx = a.process_context.as_ref().expect("context");
    let v = ecs(a);
    assert_eq!(
        v["process"]["command_line"],
        ctx.command_line.as_deref().unwrap()
    );
    assert_eq!(
        v["process"]["parent"]["executable"],
        r"C:\Windows\System32\cmd.exe"
    );
    assert_eq!(
        v["process"]["parent"]["command_line"],
        ctx.parent_command_line.as_deref().unwrap()
    );
    assert_eq!(v["smbwatch"]["process_class"], "script_interpreter");
}
