//! Parser tests: every format, malformed records, and the real logs in
//! `../shared/data/logs` (skipped with a message when absent).

use std::net::IpAddr;
use std::path::PathBuf;

use chrono::{DateTime, Utc};

use super::*;

fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// The real logs, or `None` (with a message) when the data folder is absent.
pub(crate) fn data_file(name: &str) -> Option<PathBuf> {
    let p = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/data/logs"
    ))
    .join(name);
    if p.exists() {
        Some(p)
    } else {
        crate::test_support::skip(&format!(
            "{} not found (real test data absent)",
            p.display()
        ));
        None
    }
}

pub(crate) const EMPIRE: &str =
    "otrf_empire_smbexec_dcerpc_smb_svcctl_2020-09-20025716_smbsubset.jsonl";
pub(crate) const COVENANT: &str = "otrf_covenant_copy_smb_CreateRequest_2020-09-22145302.json";
pub(crate) const PSEXEC: &str =
    "evtx2mitre_ID4688-4697-5140-5145_PSexec_remote_execution_admin_share.evtx";

const KV_SAMPLE: &str = "\
EventID: 5156
TimeCreated: 2025-06-08T05:30:23.456Z
Channel: Security
Hostname: TARGET-SRV
ProcessId: 1752
Application: \\device\\harddiskvolume1\\windows\\system32\\dns.exe
Direction: Outbound
SourceAddress: 10.45.45.103
SourcePort: 50146
DestinationAddress: 10.45.45.104
DestinationPort: 445
Protocol: 6
FilterRunTimeId: 5
LayerName: Connect
LayerRunTimeId: 48
---
EventID: 3
UtcTime: 2025-06-08T05:30:23.789Z
ProcessGuid: {4a363fee-27c2-623c-decd-3f0000000000}
ProcessId: 1752
Image: C:\\Windows\\System32\\dns.exe
User: NT AUTHORITY\\SYSTEM
Protocol: tcp
SourceIp: 10.45.45.103
SourcePort: 50146
DestinationIp: 10.45.45.104
DestinationPort: 445
";

#[test]
fn key_value_seed_samples() {
    let (evs, sum) = parse_bytes("seed.txt", KV_SAMPLE.as_bytes(), Format::Auto).unwrap();
    assert_eq!(sum.format, Some(Format::KeyValue));
    assert_eq!((sum.total, sum.parsed, sum.skipped, sum.bad), (2, 2, 0, 0));
    let ev = &evs[0];
    assert_eq!(ev.event_id(), 5156);
    assert_eq!(ev.kind(), HostEventKind::NetworkConnection);
    assert_eq!(ev.ts, utc("2025-06-08T05:30:23.456Z"));
    assert_eq!(ev.time_source, TimeSource::Utc);
    assert_eq!(ev.host.as_deref(), Some("TARGET-SRV"));
    let wfp = ev.as_connection().unwrap();
    assert_eq!(wfp.log, ConnectionLog::Wfp);
    assert_eq!(wfp.process.pid, Some(1752));
    assert_eq!(wfp.process.image_name.as_deref(), Some("dns.exe"));
    assert_eq!(wfp.direction, Some(Direction::Outbound));
    assert_eq!(wfp.src_ip, Some(ip("10.45.45.103")));
    assert_eq!(wfp.src_port, Some(50146));
    assert_eq!(wfp.dst_ip, Some(ip("10.45.45.104")));
    assert_eq!(wfp.dst_port, Some(445));
    assert_eq!(wfp.protocol, Some(6));
    assert_eq!(wfp.account, Account::default(), "5156 names no account");
    assert_eq!(evs[1].event_id(), 3);
    assert_eq!(evs[1].ts, utc("2025-06-08T05:30:23.789Z"));
    let sysmon = evs[1].as_connection().unwrap();
    assert_eq!(sysmon.log, ConnectionLog::Sysmon);
    assert_eq!(
        sysmon.account.qualified().as_deref(),
        Some("NT AUTHORITY\\SYSTEM")
    );
    assert_eq!(sysmon.account.domain.as_deref(), Some("NT AUTHORITY"));
    assert_eq!(sysmon.account.name.as_deref(), Some("SYSTEM"));
    assert_eq!(
        sysmon.process.image.as_deref(),
        Some("C:\\Windows\\System32\\dns.exe")
    );
    assert_eq!(sysmon.protocol, Some(6));
    // No Initiated field: direction unknown.
    assert_eq!(sysmon.direction, None);
}

#[test]
fn key_value_bad_record_is_named_and_parsing_goes_on() {
    let text = "EventID: 5156\nTimeCreated: 2025-06-08T05:30:23Z\nDestinationPort: 99999\n\n\
                EventID: 4624\nthis line has no colon\nTimeCreated: 2025-06-08T05:30:23Z\n\n\
                EventID: 4634\nTimeCreated: 2025-06-08T05:30:23Z\n\n\
                EventID: 5140\nTimeCreated: 2025-06-08T05:31:00Z\nShareName: \\\\*\\C$\nIpAddress: 10.0.0.9\n";
    let (evs, sum) = parse_bytes("x.txt", text.as_bytes(), Format::KeyValue).unwrap();
    assert_eq!((sum.total, sum.parsed, sum.skipped, sum.bad), (4, 1, 1, 2));
    assert_eq!(sum.skipped_by_id.get(&4634), Some(&1));
    assert_eq!(
        evs[0].as_share_access().unwrap().share_name.as_deref(),
        Some("C$")
    );
    assert_eq!(
        sum.errors[0].to_string(),
        "x.txt: line 1: invalid DestinationPort: \"99999\""
    );
    assert_eq!(sum.errors[0].location, RecordLocation::Line(1));
    assert_eq!(sum.errors[1].location, RecordLocation::Line(5));
    assert!(matches!(
        sum.errors[1].problem,
        RecordProblem::NotKeyValue { line: 6, .. }
    ));
}

const XML_EVENTS: &str = r#"<?xml version="1.0" encoding="utf-8"?>
<Events>
<Event xmlns="http://schemas.microsoft.com/win/2004/08/events/event"><System><Provider Name="Microsoft-Windows-Security-Auditing" Guid="{54849625-5478-4994-a5ba-3e3b0328c30d}"/><EventID>5156</EventID><Version>1</Version><Level>0</Level><Task>12810</Task><Opcode>0</Opcode><Keywords>0x8020000000000000</Keywords><TimeCreated SystemTime="2020-09-20T06:57:46.1234567Z"/><EventRecordID>493214</EventRecordID><Correlation/><Execution ProcessID="4" ThreadID="7796"/><Channel>Security</Channel><Computer>WORKSTATION5.theshire.local</Computer><Security/></System><EventData><Data Name="ProcessID">8948</Data><Data Name="Application">\device\harddiskvolume2\windows\system32\windowspowershell\v1.0\powershell.exe</Data><Data Name="Direction">%%14593</Data><Data Name="SourceAddress">172.18.39.5</Data><Data Name="SourcePort">50504</Data><Data Name="DestAddress">172.18.39.6</Data><Data Name="DestPort">445</Data><Data Name="Protocol">6</Data><Data Name="FilterRTID">73106</Data><Data Name="LayerName">%%14611</Data><Data Name="LayerRTID">48</Data><Data Name="RemoteUserID">S-1-0-0</Data><Data Name="RemoteMachineID">S-1-0-0</Data></EventData><RenderingInfo Culture="en-US"><Message>The Windows Filtering Platform has permitted a connection.</Message></RenderingInfo></Event>
<Event xmlns="http://schemas.microsoft.com/win/2004/08/events/event"><System><Provider Name="Microsoft-Windows-Security-Auditing"/><EventID>5145</EventID><TimeCreated SystemTime="2020-09-22T18:53:30.5Z"/><EventRecordID>933025</EventRecordID><Channel>Security</Channel><Computer>WORKSTATION6.theshire.local</Computer></System><EventData><Data Name="SubjectUserSid">S-1-5-21-1</Data><Data Name="SubjectUserName">pgustavo</Data><Data Name="SubjectDomainName">THESHIRE</Data><Data Name="ObjectType">File</Data><Data Name="IpAddress">172.18.39.5</Data><Data Name="IpPort">62782</Data><Data Name="ShareName">\\*\C$</Data><Data Name="ShareLocalPath">\??\C:\</Data><Data Name="RelativeTargetName">ProgramData\GruntHTTP.exe</Data></EventData></Event>
<Event><System><EventID>5156</EventID><TimeCreated SystemTime="2020-09-20T06:57:46Z"/><Channel>Security</Channel></System><EventData><Data Name="DestPort">4 4 5</Data></EventData></Event>
<Event><System><EventID>4624</EventID><Channel>Security</Channel></System><EventData></Data></EventData></Event>
<Event><System><Provider Name="Service Control Manager"/><EventID Qualifiers="16384">7036</EventID><TimeCreated SystemTime="2020-09-20T06:57:47Z"/><Channel>System</Channel></System><EventData><Data Name="param1">PSEXESVC</Data><Data Name="param2">running</Data></EventData></Event>
<Event><System><Provider Name="Microsoft-Windows-Sysmon"/><EventID>3</EventID><TimeCreated SystemTime="2020-09-20T06:57:49Z"/><Channel>Microsoft-Windows-Sysmon/Operational</Channel><Computer>WORKSTATION5</Computer></System><EventData><Data Name="UtcTime">2020-09-20 06:57:48.481</Data><Data Name="ProcessId">8948</Data><Data Name="Image">C:\Windows\System32\WindowsPowerShell\v1.0\powershell.exe</Data><Data Name="User">THESHIRE\pgustavo</Data><Data Name="Protocol">tcp</Data><Data Name="Initiated">True</Data><Data Name="SourceIsIpv6">false</Data><Data Name="SourceIp">172.18.39.5</Data><Data Name="SourcePort">50504</Data><Data Name="DestinationIp">172.18.39.6</Data><Data Name="DestinationPort">445</Data><Data Name="CommandLine"><![CDATA[a & b]]></Data></EventData></Event>
</Events>
"#;

#[test]
fn xml_events_with_bad_ones() {
    let (evs, sum) = parse_bytes("wef.xml", XML_EVENTS.as_bytes(), Format::Auto).unwrap();
    assert_eq!(sum.format, Some(Format::Xml));
    assert_eq!(
        (sum.total, sum.parsed, sum.skipped, sum.bad),
        (6, 3, 1, 2),
        "{:?}",
        sum.errors
    );
    assert_eq!(evs[0].ts, utc("2020-09-20T06:57:46.1234567Z"));
    assert_eq!(evs[0].record_id, Some(493214));
    assert_eq!(evs[0].host.as_deref(), Some("WORKSTATION5.theshire.local"));
    let wfp = evs[0].as_connection().unwrap();
    assert_eq!(wfp.process.pid, Some(8948));
    assert_eq!(wfp.process.image_name.as_deref(), Some("powershell.exe"));
    assert_eq!(wfp.direction, Some(Direction::Outbound));
    assert_eq!(evs[1].kind(), HostEventKind::ShareAccess);
    let share = evs[1].as_share_access().unwrap();
    assert_eq!(share.log, ShareLog::Object);
    assert_eq!(share.share_name.as_deref(), Some("C$"));
    assert_eq!(
        share.relative_target.as_deref(),
        Some("ProgramData\\GruntHTTP.exe")
    );
    assert_eq!(
        share.account,
        Account {
            domain: Some("THESHIRE".into()),
            name: Some("pgustavo".into()),
            sid: Some("S-1-5-21-1".into()),
        }
    );
    assert_eq!(share.src_ip, Some(ip("172.18.39.5")));
    // UtcTime wins over TimeCreated (Sysmon logs network events late).
    assert_eq!(evs[2].ts, utc("2020-09-20T06:57:48.481Z"));
    let sysmon = evs[2].as_connection().unwrap();
    assert_eq!(sysmon.direction, Some(Direction::Outbound));
    assert_eq!(sum.skipped_by_id.get(&7036), Some(&1));
    assert_eq!(
        sum.errors[0].to_string(),
        "wef.xml: line 5: invalid DestinationPort: \"4 4 5\""
    );
    assert_eq!(sum.errors[1].location, RecordLocation::Line(6));
    assert!(matches!(sum.errors[1].problem, RecordProblem::Xml(_)));
}

#[test]
fn xml_truncated_and_garbage() {
    let (_, sum) = parse_bytes(
        "t.xml",
        b"<Event><System><EventID>4624</EventID>",
        Format::Xml,
    )
    .unwrap();
    assert_eq!((sum.total, sum.bad), (1, 1));
    let (_, sum) = parse_bytes("t.xml", b"<root>nothing here</root>", Format::Xml).unwrap();
    assert_eq!((sum.total, sum.bad), (1, 1));
    assert!(sum.errors[0].to_string().contains("no <Event> element"));
}

const WINLOGBEAT: &str = r#"{"@timestamp":"2020-09-20T06:57:46.123Z","event":{"code":"5156","kind":"event","provider":"Microsoft-Windows-Security-Auditing","action":"connection-allowed"},"winlog":{"channel":"Security","computer_name":"WORKSTATION5.theshire.local","event_id":"5156","provider_name":"Microsoft-Windows-Security-Auditing","record_id":493214,"process":{"pid":4,"thread":{"id":7796}},"event_data":{"ProcessID":"8948","Application":"\\device\\harddiskvolume2\\windows\\system32\\windowspowershell\\v1.0\\powershell.exe","Direction":"%%14593","SourceAddress":"172.18.39.5","SourcePort":"50504","DestAddress":"172.18.39.6","DestPort":"445","Protocol":"6"}},"host":{"name":"workstation5"},"message":"The Windows Filtering Platform has permitted a connection."}
{"@timestamp":"2020-09-20T06:57:48.481Z","event":{"code":"3","module":"sysmon"},"winlog":{"channel":"Microsoft-Windows-Sysmon/Operational","computer_name":"WORKSTATION5","event_id":3,"provider_name":"Microsoft-Windows-Sysmon","event_data":{"RuleName":"-","UtcTime":"2020-09-20 06:57:48.481","ProcessGuid":"{x}","Image":"C:\\Windows\\System32\\WindowsPowerShell\\v1.0\\powershell.exe","User":"THESHIRE\\pgustavo","Protocol":"tcp","Initiated":"true","DestinationPort":"445"}},"process":{"pid":8948,"executable":"C:\\Windows\\System32\\WindowsPowerShell\\v1.0\\powershell.exe"},"source":{"ip":"172.18.39.5","port":50504},"destination":{"ip":"172.18.39.6","port":445}}
{"@timestamp":"2020-09-20T06:57:50Z","winlog":{"channel":"Security","computer_name":"WORKSTATION6","event_id":4624,"event_data":{"LogonType":"3","TargetUserName":"pgustavo","TargetDomainName":"THESHIRE","IpAddress":"::ffff:172.18.39.5","IpPort":"50504"}}}
{"@timestamp":"2020-09-20T06:57:50Z","winlog":{"channel":"Security","event_id":4634}}
{"@timestamp":"2020-09-20T06:57:50Z","winlog":{"channel":"Security","event_id":4624,"event_data":{"IpAddress":"not-an-ip"}}}
{"@timestamp":"2020-09-20T06:57:50Z","winlog":{"channel":"Security","event_id":4624
"#;

#[test]
fn winlogbeat_records() {
    let (evs, sum) = parse_bytes("beat.json", WINLOGBEAT.as_bytes(), Format::Auto).unwrap();
    assert_eq!(sum.format, Some(Format::Winlogbeat));
    assert_eq!(
        (sum.total, sum.parsed, sum.skipped, sum.bad),
        (6, 3, 1, 2),
        "{:?}",
        sum.errors
    );
    assert_eq!(evs[0].ts, utc("2020-09-20T06:57:46.123Z"));
    assert_eq!(evs[0].time_source, TimeSource::Utc);
    assert_eq!(evs[0].process().unwrap().pid, Some(8948));
    assert_eq!(evs[0].record_id, Some(493214));
    assert_eq!(evs[0].host.as_deref(), Some("WORKSTATION5.theshire.local"));
    // Sysmon fields missing from event_data come from the ECS fields.
    let s = evs[1].as_connection().unwrap();
    assert_eq!(
        (s.process.pid, s.src_ip, s.src_port, s.dst_ip),
        (
            Some(8948),
            Some(ip("172.18.39.5")),
            Some(50504),
            Some(ip("172.18.39.6"))
        )
    );
    assert_eq!(s.direction, Some(Direction::Outbound));
    let logon = evs[2].as_logon().unwrap();
    assert_eq!(logon.logon_type, Some(3));
    assert_eq!(
        logon.account.qualified().as_deref(),
        Some("THESHIRE\\pgustavo")
    );
    // IPv4-mapped addresses are normalised to IPv4, as gateway events are.
    assert_eq!(logon.src_ip, Some(ip("172.18.39.5")));
    assert_eq!(sum.errors[0].location, RecordLocation::Line(5));
    assert!(sum.errors[0].to_string().contains("invalid IpAddress"));
    assert_eq!(sum.errors[1].location, RecordLocation::Line(6));
    assert!(matches!(sum.errors[1].problem, RecordProblem::Json(_)));
}

#[test]
fn nxlog_time_is_local_and_zone_is_inferred() {
    // The empire 5156: no UTC field, EventTime is host local (UTC-4).
    let line = r#"{"EventReceivedTime":"2020-09-20 02:57:47","EventID":5156,"Channel":"Security","Hostname":"WORKSTATION5.theshire.local","EventTime":"2020-09-20 02:57:46","@timestamp":"2020-09-20T06:57:47.846Z","ProcessId":"8948","Application":"\\device\\harddiskvolume2\\windows\\system32\\windowspowershell\\v1.0\\powershell.exe","Direction":"%%14593","SourceAddress":"172.18.39.5","SourcePort":"50504","DestAddress":"172.18.39.6","DestPort":"445","Protocol":"6","Message":"The Windows Filtering Platform has permitted a connection.\r\n"}"#;
    let ev = parse_line(line).unwrap().unwrap();
    assert_eq!(ev.ts, utc("2020-09-20T06:57:46Z"));
    assert_eq!(ev.time_source, TimeSource::LocalInferred);
    // Without @timestamp nothing tells the zone: assumed UTC, and said so.
    let bare = line.replace(r#""@timestamp":"2020-09-20T06:57:47.846Z","#, "");
    let ev = parse_line(&bare).unwrap().unwrap();
    assert_eq!(ev.ts, utc("2020-09-20T02:57:46Z"));
    assert_eq!(ev.time_source, TimeSource::AssumedUtc);
    // NXLog `integer($EventTime)`: microseconds since the epoch, UTC.
    let epoch = bare.replace(r#""2020-09-20 02:57:46""#, "1600585066000000");
    let ev = parse_line(&epoch).unwrap().unwrap();
    assert_eq!(ev.ts, utc("2020-09-20T06:57:46Z"));
    assert_eq!(ev.time_source, TimeSource::Utc);
    // A zoned EventTime is used as written.
    let zoned = bare.replace("2020-09-20 02:57:46", "2020-09-20T02:57:46-04:00");
    assert_eq!(
        parse_line(&zoned).unwrap().unwrap().ts,
        utc("2020-09-20T06:57:46Z")
    );
}

#[test]
fn evtx_dump_jsonl_and_blocks() {
    let rec = r##"{"Event":{"#attributes":{"xmlns":"http://schemas.microsoft.com/win/2004/08/events/event"},"System":{"Provider":{"#attributes":{"Name":"Microsoft-Windows-Security-Auditing","Guid":"{54849625}"}},"EventID":5140,"Version":1,"TimeCreated":{"#attributes":{"SystemTime":"2019-03-19T23:34:26.123456Z"}},"EventRecordID":7,"Channel":"Security","Computer":"WIN10"},"EventData":{"SubjectUserName":"IEUser","SubjectDomainName":"WIN10","IpAddress":"10.23.42.22","IpPort":"49156","ShareName":"\\\\*\\ADMIN$"}}}"##;
    let qualified = rec.replace(
        r#""EventID":5140"#,
        r##""EventID":{"#attributes":{"Qualifiers":0},"#text":5145}"##,
    );
    let jsonl = format!("{rec}\n{qualified}\n{{\"Event\": 1}}\n");
    let (evs, sum) = parse_bytes("dump.jsonl", jsonl.as_bytes(), Format::Auto).unwrap();
    assert_eq!(sum.format, Some(Format::EvtxDump));
    assert_eq!((sum.total, sum.parsed, sum.bad), (3, 2, 1));
    assert_eq!(
        evs[0].as_share_access().unwrap().share_name.as_deref(),
        Some("ADMIN$")
    );
    assert_eq!(evs[0].ts, utc("2019-03-19T23:34:26.123456Z"));
    assert_eq!(evs[1].event_id(), 5145);
    assert_eq!(
        sum.errors[0].to_string(),
        "dump.jsonl: line 3: missing EventID"
    );

    let pretty: serde_json::Value = serde_json::from_str(rec).unwrap();
    let pretty = serde_json::to_string_pretty(&pretty).unwrap();
    let blocks =
        format!("Record 7\n{pretty}\nRecord 8\n{{\n  \"Event\": oops\n}}\nRecord 9\n{pretty}\n");
    let (evs, sum) = parse_bytes("dump.json", blocks.as_bytes(), Format::Auto).unwrap();
    assert_eq!(sum.format, Some(Format::EvtxDump));
    assert_eq!((sum.total, sum.parsed, sum.bad), (3, 2, 1));
    assert_eq!(evs.len(), 2);
    let hdr = 2 + pretty.lines().count() as u64;
    assert_eq!(sum.errors[0].location, RecordLocation::Line(hdr));
}

#[test]
fn parse_line_accepts_json_and_xml() {
    let xml_line = XML_EVENTS.lines().nth(3).unwrap();
    let ev = parse_line(xml_line).unwrap().unwrap();
    assert_eq!(ev.event_id(), 5145);
    assert_eq!(parse_line("").unwrap(), None);
    let e = parse_line_at("10.0.0.1:5555", 7, "EventID: 3").unwrap_err();
    assert_eq!(e.location, RecordLocation::Line(7));
    assert!(e.to_string().starts_with("10.0.0.1:5555: line 7:"));
    let two = format!("{xml_line}{xml_line}");
    assert!(parse_line(&two).is_err());
}

#[test]
fn channel_must_match_event_id_family() {
    // System channel event 1 is not Sysmon process creation.
    let line = r#"{"EventID":1,"Channel":"System","SourceName":"Microsoft-Windows-Kernel-General","EventTime":"2020-01-01 00:00:00"}"#;
    assert_eq!(parse_line(line).unwrap(), None);
    let sec = r#"{"EventID":4624,"Channel":"security","EventTime":"2020-01-01 00:00:00","LogonType":"3"}"#;
    assert_eq!(
        parse_line(sec)
            .unwrap()
            .unwrap()
            .as_logon()
            .unwrap()
            .logon_type,
        Some(3)
    );
}

#[test]
fn format_override_and_names() {
    assert_eq!("ECS".parse::<Format>().unwrap(), Format::Winlogbeat);
    assert_eq!("evtx_dump".parse::<Format>().unwrap(), Format::EvtxDump);
    assert!("csv".parse::<Format>().is_err());
    // A Winlogbeat record read as NXLog: its @timestamp is then collector time.
    let line = WINLOGBEAT.lines().next().unwrap();
    let (evs, _) = parse_bytes("x", line.as_bytes(), Format::Nxlog).unwrap();
    assert_eq!(evs[0].time_source, TimeSource::Collector);
    let err = parse_bytes("x.json", b"ElfFile\0rest", Format::Nxlog).unwrap_err();
    assert!(matches!(err, HostLogError::FormatMismatch { .. }));
    let err = parse_bytes("x.evtx", b"ElfFile\0rest", Format::Auto).unwrap_err();
    assert!(matches!(err, HostLogError::EvtxHeader { .. }), "{err}");
}

#[test]
fn helpers() {
    assert_eq!(
        image_file_name("\\device\\harddiskvolume2\\windows\\system32\\dns.exe"),
        "dns.exe"
    );
    assert_eq!(image_file_name("System"), "System");
    assert_eq!(bare_share_name("\\\\*\\IPC$"), "IPC$");
    assert_eq!(bare_share_name("\\\\WORKSTATION6\\C$"), "C$");
    assert_eq!(bare_share_name("ADMIN$"), "ADMIN$");
}

#[test]
fn real_empire_log() {
    let Some(p) = data_file(EMPIRE) else { return };
    let (evs, sum) = parse_file(&p, Format::Auto).unwrap();
    assert_eq!(sum.format, Some(Format::Nxlog));
    assert_eq!(sum.bad, 0, "{:?}", sum.errors);
    assert_eq!(sum.total, 37);
    assert_eq!(sum.parsed + sum.skipped, 37);
    // Every event is one smbwatch reads (4697 and 7045: service_tests).
    assert_eq!(sum.skipped, 0);
    let ps: Vec<_> = evs
        .iter()
        .filter_map(|e| Some((e, e.as_connection()?)))
        .filter(|(_, c)| c.dst_port == Some(445))
        .filter(|(_, c)| c.process.image_name.as_deref() == Some("powershell.exe"))
        .collect();
    assert_eq!(ps.len(), 2, "5156 and Sysmon 3");
    for (e, c) in &ps {
        assert_eq!(c.direction, Some(Direction::Outbound));
        assert_eq!(c.dst_ip, Some(ip("172.18.39.6")));
        assert_eq!(c.src_port, Some(50504));
        assert!(matches!(
            e.time_source,
            TimeSource::Utc | TimeSource::LocalInferred
        ));
    }
    let (wfp, c) = ps
        .iter()
        .find(|(_, c)| c.log == ConnectionLog::Wfp)
        .unwrap();
    assert_eq!(wfp.ts, utc("2020-09-20T06:57:46Z"));
    assert_eq!(c.process.pid, Some(8948));
    let (sysmon, c) = ps
        .iter()
        .find(|(_, c)| c.log == ConnectionLog::Sysmon)
        .unwrap();
    assert_eq!(sysmon.ts, utc("2020-09-20T06:57:48.481Z"));
    assert_eq!(c.account.qualified().as_deref(), Some("THESHIRE\\pgustavo"));
    // A network logon names the client's computer (what the baseline
    // learns a host's name from); `-` is no name.
    let logons: Vec<_> = evs.iter().filter_map(HostEvent::as_logon).collect();
    let named: Vec<_> = logons.iter().filter(|l| l.workstation.is_some()).collect();
    assert_eq!(named.len(), 1, "{logons:?}");
    assert_eq!(named[0].workstation.as_deref(), Some("WORKSTATION5"));
    assert_eq!(named[0].src_ip, Some(ip("172.18.39.5")));
    assert_eq!(named[0].logon_type, Some(3));
}

#[test]
fn real_covenant_log() {
    let Some(p) = data_file(COVENANT) else { return };
    let (evs, sum) = parse_file(&p, Format::Auto).unwrap();
    assert_eq!(sum.bad, 0, "{:?}", sum.errors);
    assert_eq!(sum.total, 506);
    let shares: Vec<_> = evs.iter().filter_map(HostEvent::as_share_access).collect();
    assert_eq!(shares.len(), 5);
    assert!(shares.iter().any(|e| e.share_name.as_deref() == Some("C$")
        && e.relative_target.as_deref() == Some("ProgramData\\GruntHTTP.exe")));
}

#[test]
fn real_psexec_evtx_accounts_for_every_record() {
    let Some(p) = data_file(PSEXEC) else { return };
    let (evs, sum) = parse_file(&p, Format::Auto).unwrap();
    assert_eq!(sum.format, Some(Format::Evtx));
    // Count the file's records independently: the evtx crate's own iterator.
    let mut parser = ::evtx::EvtxParser::from_path(&p).unwrap();
    let total = parser.records().count() as u64;
    assert!(total > 0);
    assert_eq!(sum.total, total);
    assert_eq!(sum.parsed + sum.skipped + sum.bad, total);
    assert_eq!(sum.bad, 0, "{:?}", sum.errors);
    assert!(evs
        .iter()
        .filter_map(HostEvent::as_share_access)
        .any(|s| s.log == ShareLog::Share && s.share_name.as_deref() == Some("ADMIN$")));
    assert!(evs
        .iter()
        .filter_map(HostEvent::as_logon)
        .any(|l| l.logon_type == Some(3) && l.src_ip == Some(ip("10.23.42.22"))));
    assert!(evs.iter().all(|e| e.time_source == TimeSource::Utc));
}
