//! Service installs (System 7045, Security 4697) and task creations
//! (Security 4698): parsed from the real logs and from Windows' XML, with
//! the logon sessions that tie them to a client.

use super::tests::{data_file, EMPIRE, PSEXEC};
use super::*;

fn services(evs: &[HostEvent]) -> Vec<(&HostEvent, &ServiceInstall)> {
    evs.iter()
        .filter_map(|e| e.as_service_install().map(|s| (e, s)))
        .collect()
}

/// Empire's smbexec on WORKSTATION6: its 4697 names the logon session of
/// the IPC$ 5140/5145 from 172.18.39.5; its 7045 names the creator's SID
/// only (NXLog's `AccountName` is not taken as the creator).
#[test]
fn empire_service_install_records() {
    let Some(p) = data_file(EMPIRE) else { return };
    let (evs, sum) = parse_file(&p, Format::Auto).unwrap();
    assert_eq!(sum.bad, 0);
    let svc = services(&evs);
    assert_eq!(svc.len(), 2, "a 4697 and a 7045");
    let (e4697, s) = svc
        .iter()
        .find(|(e, _)| e.event_id() == 4697)
        .copied()
        .unwrap();
    assert_eq!(s.log, ServiceLog::Security);
    assert_eq!(s.service_name.as_deref(), Some("PGUJLOAKFQFVOMHGFQPX"));
    assert!(s
        .command
        .as_deref()
        .is_some_and(|c| c.starts_with("%COMSPEC% /C \"%COMSPEC% /C start /b")));
    assert_eq!(s.logon_id, Some(0x2074186));
    assert_eq!(s.account.qualified().as_deref(), Some("THESHIRE\\pgustavo"));
    assert_eq!(e4697.host.as_deref(), Some("WORKSTATION6.theshire.local"));
    assert_eq!(e4697.kind(), HostEventKind::ServiceInstall);
    let (e7045, s) = svc
        .iter()
        .find(|(e, _)| e.event_id() == 7045)
        .copied()
        .unwrap();
    assert_eq!(s.log, ServiceLog::System);
    assert_eq!(s.service_name.as_deref(), Some("PGUJLOAKFQFVOMHGFQPX"));
    assert_eq!(s.logon_id, None);
    assert_eq!(
        s.account,
        Account {
            sid: Some("S-1-5-21-4228717743-1032521047-1810997296-1104".into()),
            ..Account::default()
        }
    );
    assert_eq!(e7045.channel.as_deref(), Some("System"));
    // The IPC$ share access of the same session.
    let ipc = evs
        .iter()
        .filter_map(HostEvent::as_share_access)
        .find(|s| s.share_name.as_deref() == Some("IPC$"))
        .unwrap();
    assert_eq!(ipc.logon_id, Some(0x2074186));
    assert_eq!(ipc.src_ip, Some("172.18.39.5".parse().unwrap()));
}

/// PsExec's EVTX: the 4697 of PSEXESVC and the 4624 of its session.
#[test]
fn psexec_evtx_service_install_names_its_session() {
    let Some(p) = data_file(PSEXEC) else { return };
    let (evs, _) = parse_file(&p, Format::Auto).unwrap();
    let svc = services(&evs);
    assert_eq!(svc.len(), 1);
    let (e, s) = svc[0];
    assert_eq!(e.event_id(), 4697);
    assert_eq!(s.service_name.as_deref(), Some("PSEXESVC"));
    assert_eq!(s.command.as_deref(), Some("%SystemRoot%\\PSEXESVC.exe"));
    let id = s.logon_id.expect("SubjectLogonId");
    // PsExec's service session is a network logon of its own (4624 type 3
    // from the client), not the one its ADMIN$ write used.
    let logon = evs
        .iter()
        .filter_map(HostEvent::as_logon)
        .find(|l| l.logon_id == Some(id))
        .expect("the 4624 of the session");
    assert_eq!(logon.logon_type, Some(3));
    assert_eq!(logon.src_ip, Some("10.23.42.22".parse().unwrap()));
}

/// A 7045 as Windows writes it: the creator is `Security/@UserID`; the
/// `AccountName` is the account the service runs as.
#[test]
fn xml_7045_takes_the_creator_from_the_system_part() {
    let xml = r#"<Event xmlns="http://schemas.microsoft.com/win/2004/08/events/event"><System><Provider Name="Service Control Manager" Guid="{555908d1-a6d7-4695-8e1e-26931d2012f4}" EventSourceName="Service Control Manager"/><EventID Qualifiers="16384">7045</EventID><TimeCreated SystemTime="2024-05-01T12:00:01.5Z"/><EventRecordID>9</EventRecordID><Channel>System</Channel><Computer>SRV1.example.org</Computer><Security UserID="S-1-5-21-1-2-3-1104"/></System><EventData><Data Name="ServiceName">PSEXESVC</Data><Data Name="ImagePath">%SystemRoot%\PSEXESVC.exe</Data><Data Name="ServiceType">user mode service</Data><Data Name="StartType">demand start</Data><Data Name="AccountName">LocalSystem</Data></EventData></Event>"#;
    let (evs, sum) = parse_bytes("7045.xml", xml.as_bytes(), Format::Auto).unwrap();
    assert_eq!(sum.bad, 0, "{:?}", sum.errors);
    let s = evs[0].as_service_install().unwrap();
    assert_eq!(s.service_name.as_deref(), Some("PSEXESVC"));
    assert_eq!(s.command.as_deref(), Some("%SystemRoot%\\PSEXESVC.exe"));
    assert_eq!(s.account.sid.as_deref(), Some("S-1-5-21-1-2-3-1104"));
    assert_eq!(s.account.name, None, "LocalSystem is not the creator");
    assert_eq!(evs[0].windows_event().label(), "System 7045");
    // Event 7045 of another provider is not a service install.
    let other = xml.replace("Service Control Manager", "Some-App");
    let other = other.replace(
        "<Channel>System</Channel>",
        "<Channel>Application</Channel>",
    );
    let (evs, sum) = parse_bytes("x.xml", other.as_bytes(), Format::Auto).unwrap();
    assert!(evs.is_empty());
    assert_eq!(sum.skipped, 1);
}

/// A 4698 as Windows writes it (atexec's task): the task's XML is an
/// escaped string; its first command and arguments are kept.
#[test]
fn xml_4698_keeps_the_task_and_its_command() {
    let xml = r#"<Event xmlns="http://schemas.microsoft.com/win/2004/08/events/event"><System><Provider Name="Microsoft-Windows-Security-Auditing"/><EventID>4698</EventID><TimeCreated SystemTime="2024-05-01T12:00:02Z"/><Channel>Security</Channel><Computer>SRV1.example.org</Computer></System><EventData><Data Name="SubjectUserSid">S-1-5-21-1-2-3-1104</Data><Data Name="SubjectUserName">alice</Data><Data Name="SubjectDomainName">EXAMPLE</Data><Data Name="SubjectLogonId">0x3e4f21</Data><Data Name="TaskName">\ZtUVbHak</Data><Data Name="TaskContent">&lt;?xml version="1.0" encoding="UTF-16"?&gt;&lt;Task&gt;&lt;Actions Context="LocalSystem"&gt;&lt;Exec&gt;&lt;Command&gt;cmd.exe&lt;/Command&gt;&lt;Arguments&gt;/C whoami &amp;gt; %windir%\Temp\ZtUVbHak.tmp 2&amp;gt;&amp;amp;1&lt;/Arguments&gt;&lt;/Exec&gt;&lt;/Actions&gt;&lt;/Task&gt;</Data></EventData></Event>"#;
    let (evs, sum) = parse_bytes("4698.xml", xml.as_bytes(), Format::Auto).unwrap();
    assert_eq!(sum.bad, 0, "{:?}", sum.errors);
    let e = &evs[0];
    assert_eq!(e.kind(), HostEventKind::TaskCreation);
    let t = e.as_task_creation().unwrap();
    assert_eq!(t.task_name.as_deref(), Some("\\ZtUVbHak"));
    assert_eq!(
        t.command.as_deref(),
        Some("cmd.exe /C whoami > %windir%\\Temp\\ZtUVbHak.tmp 2>&1")
    );
    assert_eq!(t.logon_id, Some(0x3e4f21));
    assert_eq!(t.account.qualified().as_deref(), Some("EXAMPLE\\alice"));
    assert_eq!(e.logon_id(), Some(0x3e4f21));
    // The JSON form carries it and reads back as itself.
    let json = serde_json::to_string(e).unwrap();
    assert!(json.contains(r#""task_name":"\\ZtUVbHak""#), "{json}");
    assert!(json.contains(r#""logon_id":4083489"#), "{json}");
    assert_eq!(serde_json::from_str::<HostEvent>(&json).unwrap(), *e);
}

/// Hostile records: a command of 100 KiB is cut to the cap (with the
/// record's other strings), and a logon session that is no number is an
/// error naming the field and the value.
#[test]
fn hostile_service_and_task_records_are_bounded() {
    let big = "A".repeat(100 * 1024);
    let line = format!(
        r#"{{"EventID":4697,"Channel":"Security","Hostname":"SRV1","TimeCreated":"2024-05-01T12:00:00Z","SubjectLogonId":"0x3e7","ServiceName":"x","ServiceFileName":"{big}"}}"#
    );
    let ev = parse_line(&line).unwrap().unwrap();
    let s = ev.as_service_install().unwrap();
    assert!(s.command.as_ref().unwrap().len() <= MAX_COMMAND_LINE_BYTES);
    assert!(ev.heap_bytes() <= HostEvent::MAX_HEAP_BYTES);
    let task = format!(
        r#"{{"EventID":4698,"Channel":"Security","Hostname":"SRV1","TimeCreated":"2024-05-01T12:00:00Z","TaskName":"\\t","TaskContent":"<Task><Exec><Command>{big}</Command></Exec></Task>"}}"#
    );
    let ev = parse_line(&task).unwrap().unwrap();
    let t = ev.as_task_creation().unwrap();
    assert!(t.command.as_ref().unwrap().len() <= MAX_COMMAND_LINE_BYTES);
    let bad = r#"{"EventID":4698,"Channel":"Security","TimeCreated":"2024-05-01T12:00:00Z","SubjectLogonId":"session-7"}"#;
    let err = parse_line(bad).unwrap_err();
    assert!(
        err.to_string()
            .contains("invalid SubjectLogonId: \"session-7\""),
        "{err}"
    );
}
