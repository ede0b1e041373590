use chrono::{TimeZone, Utc};
use serde_json::json;

use super::*;
use crate::alert::ecs::gateway::ToEventLine as _;
use crate::alert::ecs::Document;
use crate::alert::sensor::Sensor;
use crate::alert::{Alert, AlertKind, ProcessInfo, ScanEvidence, Severity};

/// An alert of `kind` with every field set, as the producers of that
/// kind fill them (and then some): the widest document each kind gives.
pub(crate) fn full_alert(kind: AlertKind) -> Alert {
    let ts = Utc.with_ymd_and_hms(2024, 5, 1, 12, 0, 7).unwrap();
    let mut a = Alert::new(ts, kind, Severity::High, "m".into());
    a.event_code = Some(5140);
    a.source_ip = Some("192.0.2.10".parse().unwrap());
    a.source_port = Some(50123);
    a.destination_ip = Some("2001:db8::7".parse().unwrap());
    a.destination_port = Some(445);
    a.community_id = Some("1:LQU9qZlK+B5F3KDmev6m5PMibrg=".into());
    a.ifindex = Some(3);
    a.vlan = Some(100);
    a.scan = Some(ScanEvidence {
        distinct_destinations: 2,
        destinations: vec!["198.51.100.1".parse().unwrap()],
        syns: 4,
        fragmented_syns: 1,
        accepted: 1,
        refused: 2,
        window_secs: 60,
        first_seen: ts,
        last_seen: ts,
        ..Default::default()
    });
    let p = ProcessInfo {
        name: Some("psexec.exe".into()),
        pid: Some(4242),
        executable: Some(r"C:\psexec.exe".into()),
    };
    a.process = Some(p.clone());
    a.processes = vec![p];
    a.user = Some(r"theshire\pgustavo".into());
    a.user_id = Some("S-1-5-21-1-2-3-1104".into());
    a.host = Some("WORKSTATION5.theshire.local".into());
    a.share = Some("ADMIN$".into());
    a.smb = Some(crate::alert::SmbEvidence {
        tree: Some(r"\\WORKSTATION6\ADMIN$".into()),
        file: Some(r"PSEXESVC.exe".into()),
        pipe: Some("svcctl".into()),
        interface: Some("svcctl".into()),
        operations: vec!["RCreateServiceW".into()],
        calls: Some(12),
        dialects: vec!["NT LM 0.12".into()],
        exploit: Some("eternalblue"),
        domain: Some("THESHIRE".into()),
        workstation: Some("WORKSTATION5".into()),
        logon: Some("guest"),
        host_events: vec![5145],
    });
    a.observers = vec!["edge-1".into(), "edge-2".into()];
    a.process_context = Some(crate::alert::ProcessContext {
        command_line: Some("python.exe -c \"import smb\"".into()),
        parent_executable: Some(r"C:\Windows\System32\cmd.exe".into()),
        parent_command_line: Some("cmd.exe /c run.bat".into()),
        class: Some(crate::alert::ProcessClass::ScriptInterpreter),
    });
    a
}

fn doc(a: &Alert) -> Value {
    let sensor = Sensor::named(Some("gw1")).with_interface(3, "eth1");
    let created = Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap();
    serde_json::to_value(Document::new(a, &sensor, created)).unwrap()
}

/// Every kind, with every field it can carry and with only the mandatory
/// ones, conforms to the table.
#[test]
fn every_alert_kind_conforms_to_the_ecs_definitions() {
    for &kind in AlertKind::ALL {
        for a in [
            full_alert(kind),
            Alert::new(Utc::now(), kind, Severity::Low, "m".into()),
        ] {
            let v = doc(&a);
            let errors = validate(&v);
            assert!(errors.is_empty(), "{kind:?}: {errors:#?}\n{v:#}");
            assert_eq!(v["ecs"]["version"], ECS_DEFINITIONS);
        }
    }
}

#[test]
fn undefined_fields_wrong_types_and_values_are_reported() {
    let v = json!({
        "@timestamp": "yesterday",
        "event": {"kind": "alarm", "category": "network", "severity": "high"},
        "source": {"ip": "not-an-ip", "port": 1.5},
        "related": {"ip": ["192.0.2.1", 7]},
        "rule": {"id": ["a"]},
        "smbwatch": {"made_up": 1, "processes": [{"name": "x", "color": "red"}]},
        "user": {"name": "a"},
    });
    let errors = validate(&v);
    for want in [
        "@timestamp: \"yesterday\" is not a Date",
        "event.kind: \"alarm\" is not an allowed value",
        "event.category: ECS wants a list",
        "event.severity: \"high\" is not a Long",
        "source.ip: \"not-an-ip\" is not a Ip",
        "source.port: 1.5 is not a Long",
        "related.ip: 7 is not a Ip",
        "rule.id: a list, but the field is single-valued",
        "smbwatch.made_up: not defined",
        "smbwatch.processes.color: not defined",
    ] {
        assert!(
            errors.iter().any(|e| e.starts_with(want)),
            "missing {want:?} in {errors:#?}"
        );
    }
    assert_eq!(errors.len(), 10, "{errors:#?}");
}

#[test]
fn the_table_names_each_field_once() {
    let mut names: Vec<_> = FIELDS.iter().map(|f| f.name).collect();
    names.sort_unstable();
    let n = names.len();
    names.dedup();
    assert_eq!(names.len(), n);
}

/// The index template in docs/siem.md maps every `smbwatch.*` field of the
/// table, with the table's type, and nothing else.
#[test]
fn the_siem_template_maps_the_smbwatch_fields() {
    let doc = include_str!("../../../../docs/siem.md");
    let at = doc.find("<!-- smbwatch-fields").expect("template marker");
    let start = at + doc[at..].find("```json\n").expect("json block") + 8;
    let end = start + doc[start..].find("```").expect("block end");
    let t: Value = serde_json::from_str(&doc[start..end]).expect("template is JSON");
    let mut mapped = Vec::new();
    fn walk(prefix: &str, props: &Value, out: &mut Vec<(String, String)>) {
        for (k, v) in props.as_object().expect("properties") {
            let name = format!("{prefix}.{k}");
            match (&v["type"], &v["properties"]) {
                (Value::String(ty), _) => out.push((name, ty.clone())),
                (_, p @ Value::Object(_)) => {
                    out.push((name.clone(), "object".into()));
                    walk(&name, p, out);
                }
                _ => panic!("{name}: neither type nor properties"),
            }
        }
    }
    // smbwatch's own fields, and the SMB ones ECS has no name for.
    const OURS: [&str; 3] = ["smbwatch", "smb", "rpc"];
    for top in OURS {
        walk(
            top,
            &t["template"]["mappings"]["properties"][top]["properties"],
            &mut mapped,
        );
    }
    let want: Vec<(String, String)> = FIELDS
        .iter()
        .filter(|f| OURS.iter().any(|t| f.name.starts_with(&format!("{t}."))))
        .map(|f| {
            let ty = match f.ty {
                Type::Keyword => "keyword",
                Type::Wildcard => "wildcard",
                Type::Long => "long",
                Type::Ip => "ip",
                Type::Boolean => "boolean",
                Type::Object => "object",
                other => panic!("{}: {other:?} not expected under smbwatch", f.name),
            };
            (f.name.to_owned(), ty.to_owned())
        })
        .collect();
    let (mut mapped, mut want) = (mapped, want);
    mapped.sort();
    want.sort();
    assert_eq!(mapped, want);
}

/// Every hand-written [`Empty`] check agrees with what its object
/// serialises to, on the documents of every kind (all fields, none) and on
/// event lines: a field added without its check fails here.
#[test]
fn empty_checks_match_serialisation() {
    use crate::alert::ecs::{serializes_to_nothing, Empty};
    fn same<T: Empty + serde::Serialize>(what: &str, v: &T) {
        assert_eq!(v.is_empty(), serializes_to_nothing(v), "{what}");
    }
    let sensor = Sensor::named(Some("gw1")).with_interface(3, "eth1");
    for &kind in AlertKind::ALL {
        for a in [
            full_alert(kind),
            Alert::new(Utc::now(), kind, Severity::Low, "m".into()),
        ] {
            let d = Document::new(&a, &sensor, Utc::now());
            same("source", &d.source);
            same("destination", &d.destination);
            same("network", &d.network);
            same("threat", &d.threat);
            same("threat.tactic", &d.threat.tactic);
            same("threat.technique", &d.threat.technique);
            same(
                "threat.technique.subtechnique",
                &d.threat.technique.subtechnique,
            );
            same("observer.ingress", &d.observer.ingress);
            same("observer.ingress.interface", &d.observer.ingress.interface);
            same("observer.ingress.vlan", &d.observer.ingress.vlan);
            same("process", &d.process);
            same("user", &d.user);
            same("host", &d.host);
            same("related", &d.related);
            same("file", &d.file);
            same("smb", &d.smb);
            same("rpc", &d.rpc);
            same("rpc.interface", &d.rpc.interface);
            same("smbwatch", &d.smbwatch);
            for p in &d.smbwatch.processes {
                same("smbwatch.processes[]", p);
            }
        }
    }
    let ev = smbwatch_core::event::GatewayEvent::new(
        Utc::now(),
        smbwatch_core::event::GatewayEventKind::Accepted,
        "192.0.2.1".parse().unwrap(),
        "192.0.2.2".parse().unwrap(),
        1,
        445,
    );
    for kind in [
        smbwatch_core::event::GatewayEventKind::NewPair,
        smbwatch_core::event::GatewayEventKind::Accepted,
        smbwatch_core::event::GatewayEventKind::Refused,
    ] {
        let line = smbwatch_core::event::GatewayEvent { kind, ..ev.clone() }.to_ecs();
        same("event line smbwatch", &line.smbwatch);
        same("event line vlan", &line.observer.ingress.vlan);
    }
}
