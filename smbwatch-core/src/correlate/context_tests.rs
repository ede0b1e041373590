//! Process context and `remote_file_drop`: the real PsExec EVTX and OTRF
//! logs through the real parsers, scripted events (time from the events)
//! for classes, bounds and hostile input.

use super::process::{ProcessClass, ProcessClassesConfig};
use super::*;
use crate::alert::{AlertKind, ProcessContext, Severity};
use crate::hostlog::tests::{data_file, EMPIRE, PSEXEC};
use crate::hostlog::{parse_file, parse_line, Format, MAX_COMMAND_LINE_BYTES};
use crate::pipeline::{Pipeline, PipelineConfig};

fn ts(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// A pipeline with default settings whose clock is at `now`.
fn pipeline_at(now: &str) -> Pipeline {
    let mut p = Pipeline::new(PipelineConfig::default());
    p.advance(ts(now));
    p
}

/// Every alert the pipeline raises for these host events.
fn feed(p: &mut Pipeline, evs: &[HostEvent]) -> Vec<Alert> {
    evs.iter().flat_map(|e| p.host_event(e)).collect()
}

fn of_kind(alerts: &[Alert], kind: AlertKind) -> Vec<&Alert> {
    alerts.iter().filter(|a| a.kind == kind).collect()
}

#[test]
fn psexec_evtx_raises_remote_file_drop_for_psexesvc() {
    let Some(p) = data_file(PSEXEC) else { return };
    let (evs, sum) = parse_file(&p, Format::Auto).unwrap();
    assert_eq!(sum.bad, 0);
    // The 5145 writes carry their access mask as logged (0x2 = WriteData).
    assert!(evs
        .iter()
        .filter_map(HostEvent::as_share_access)
        .any(|e| e.log == crate::hostlog::ShareLog::Object
            && e.relative_target.as_deref() == Some("PSEXESVC.exe")
            && e.access_mask == Some(0x2)));
    let mut pipe = pipeline_at("2021-04-21T09:45:00Z");
    let alerts = feed(&mut pipe, &evs);
    let drops = of_kind(&alerts, AlertKind::RemoteFileDrop);
    // Two files written through ADMIN$ (two 5145 records each): PsExec's
    // service binary and cmd.exe; nothing through IPC$ (its pipes).
    assert_eq!(drops.len(), 2, "{drops:#?}");
    let d = drops[0];
    assert!(
        d.message.contains(r"\\*\ADMIN$\PSEXESVC.exe"),
        "{}",
        d.message
    );
    assert_eq!(d.source_ip, Some(ip("10.23.42.22")));
    assert_eq!(d.share.as_deref(), Some("ADMIN$"));
    assert_eq!(d.user.as_deref(), Some(r"OFFSEC\admmig"));
    assert_eq!(d.severity, Severity::Critical);
    assert_eq!(d.ts, ts("2021-04-21T09:40:32.3433557Z"));
    assert!(drops[1].message.contains(r"ADMIN$\cmd.exe"));
    // Its ECS document: smbwatch-output's tests/real_logs.rs.
}

#[test]
fn psexec_after_a_scan_chains_scan_logon_and_share_write() {
    let Some(p) = data_file(PSEXEC) else { return };
    let (evs, _) = parse_file(&p, Format::Auto).unwrap();
    let mut c = Correlator::new(CorrelateConfig::default());
    let mut scan = Alert::new(
        ts("2021-04-21T09:40:20Z"),
        AlertKind::SmbScanFanout,
        Severity::High,
        "scan".into(),
    );
    scan.source_ip = Some(ip("10.23.42.22"));
    assert!(c.on_scan_alert(&scan).is_empty());
    let all: Vec<Alert> = evs.iter().flat_map(|e| c.on_host_event(e)).collect();
    let chains = of_kind(&all, AlertKind::LateralMovementChain);
    // The logon opens the chain; the write to ADMIN$ is its own step.
    assert_eq!(chains.len(), 2, "{chains:#?}");
    assert!(chains[0]
        .message
        .contains("logged on over the network (4624"));
    let w = chains[1];
    assert!(
        w.message
            .contains(r"then logged on over the network and then wrote \\*\ADMIN$ (PSEXESVC.exe)"),
        "{}",
        w.message
    );
    assert_eq!(w.severity, Severity::Critical);
    assert!(w.techniques.contains(&"T1570"));
    assert_eq!(c.stats().file_drops, 2);
}

#[test]
fn real_sysmon1_command_line_and_parent_reach_the_alert() {
    let Some(p) = data_file(EMPIRE) else { return };
    let (evs, _) = parse_file(&p, Format::Auto).unwrap();
    // Empire's launcher on WORKSTATION6 (Sysmon 1, ProcessGuid ...7605)
    // called home on port 80 (its Sysmon 3, as logged, has no pid). Derived
    // record: the same Sysmon 3 with the port rewritten to 445.
    let guid = "{d273d0f0-fd6c-5f66-7605-000000000800}";
    let mut conn = evs
        .iter()
        .find(|e| e.event_id() == 3 && e.process().unwrap().guid.as_deref() == Some(guid))
        .expect("the launcher's Sysmon 3")
        .clone();
    let HostRecord::NetworkConnection(net) = &mut conn.record else {
        panic!("not a connection")
    };
    assert_eq!(net.dst_port, Some(80));
    net.dst_port = Some(445);
    let mut pipe = pipeline_at("2020-09-20T07:00:00Z");
    feed(&mut pipe, &evs);
    let alerts = pipe.host_event(&conn);
    let a = of_kind(&alerts, AlertKind::SuspiciousSmbClient)[0];
    let ctx = a.process_context.as_ref().expect("context");
    let cmd = ctx.command_line.as_deref().unwrap();
    assert!(
        cmd.starts_with(
            r"C:\Windows\System32\WindowsPowershell\v1.0\powershell  -noP -sta -w 1 -enc"
        ),
        "{cmd}"
    );
    assert_eq!(
        ctx.parent_executable.as_deref(),
        Some(r"C:\Windows\System32\cmd.exe")
    );
    // The parent cmd.exe's own Sysmon 1 (ParentProcessGuid ...7405).
    let parent = ctx.parent_command_line.as_deref().unwrap();
    assert!(parent.contains("/C start /b"), "{parent}");
    assert_eq!(ctx.class, Some(ProcessClass::ScriptInterpreter));
    assert_eq!(a.severity, Severity::High);
    assert!(a
        .message
        .ends_with("powershell.exe is a script interpreter"));
    assert_eq!(a.user.as_deref(), Some(r"NT AUTHORITY\SYSTEM"));
    // Its ECS document: smbwatch-output's tests/real_logs.rs.
}

/// A 5156 from `host` by `pid` to 445 (the record the real 4688s are
/// joined with by host and pid).
fn wfp_445(host: &str, pid: u32, at: &str, image: &str) -> HostEvent {
    let line = format!(
        r#"{{"EventID":5156,"Channel":"Security","Hostname":"{host}","TimeCreated":"{at}","ProcessId":"{pid}","Application":"{image}","Direction":"%%14593","SourceAddress":"192.0.2.5","SourcePort":"50001","DestAddress":"192.0.2.6","DestPort":"445","Protocol":"6"}}"#
    );
    parse_line(&line).unwrap().unwrap()
}

#[test]
fn real_4688_command_line_by_host_and_pid_with_parent() {
    let Some(p) = data_file(PSEXEC) else { return };
    let (evs, _) = parse_file(&p, Format::Auto).unwrap();
    let host = evs
        .iter()
        .find(|e| e.windows_event() == crate::hostlog::WindowsEvent::ProcessCreated)
        .and_then(|e| e.host.clone())
        .unwrap();
    // PsExec's cmd.exe (4688 NewProcessId 0x15d4, parent PSEXESVC.exe
    // 0xc24, itself in a 4688). Scripted: that process opening 445.
    let conn = wfp_445(
        &host.to_ascii_uppercase(),
        0x15d4,
        "2021-04-21T09:40:35Z",
        r"\\device\\harddiskvolume2\\windows\\cmd.exe",
    );
    let mut pipe = pipeline_at("2021-04-21T09:45:00Z");
    feed(&mut pipe, &evs);
    let alerts = pipe.host_event(&conn);
    let a = of_kind(&alerts, AlertKind::SuspiciousSmbClient)[0];
    let ctx = a.process_context.as_ref().unwrap();
    assert_eq!(
        ctx.command_line.as_deref(),
        Some(r#""cmd.exe" -u demo\admmig -p Admin1235 -accepteula"#),
        "as logged, less the trailing blank the parser trims"
    );
    assert_eq!(
        ctx.parent_executable.as_deref(),
        Some(r"C:\Windows\PSEXESVC.exe")
    );
    assert_eq!(
        ctx.parent_command_line.as_deref(),
        Some(r"C:\Windows\PSEXESVC.exe"),
        "found by the parent pid 0xc24"
    );
    assert_eq!(ctx.class, None);
    assert_eq!(a.severity, Severity::Medium, "cmd.exe is in no class");
    assert_eq!(
        a.user.as_deref(),
        Some(r"OFFSEC\SRVDEFENDER01$"),
        "5156 names none"
    );
    assert_eq!(pipe.correlator().stats().with_process_context, 1);
}

/// A scripted process creation (Sysmon 1 JSON through the real parser).
fn sysmon1(host: &str, pid: u32, at: &str, image: &str, cmd: &str) -> HostEvent {
    let v = serde_json::json!({
        "EventID": 1, "Channel": "Microsoft-Windows-Sysmon/Operational",
        "Hostname": host, "UtcTime": at, "ProcessId": pid.to_string(),
        "Image": image, "CommandLine": cmd, "User": "CORP\\alice",
        "ParentImage": "C:\\Windows\\explorer.exe", "ParentProcessId": "100",
    });
    parse_line(&v.to_string()).unwrap().unwrap()
}

fn smb_client(c: &mut Correlator, host: &str, pid: u32, at: &str, name: &str) -> Alert {
    let ev = wfp_445(host, pid, at, &format!(r"\\device\\x\\{name}"));
    c.on_host_event(&ev);
    let mut a = crate::hostlog::rules::suspicious_smb_client(&ev, &Default::default()).unwrap();
    c.enrich_alert(&mut a);
    a
}

#[test]
fn classes_set_severity_and_the_lists_come_from_config() {
    let mut c = Correlator::new(CorrelateConfig::default());
    for (pid, name, class) in [
        (10, "WINWORD.EXE", Some(ProcessClass::Office)),
        (11, "msedge.exe", Some(ProcessClass::Browser)),
        (12, "rundll32.exe", Some(ProcessClass::Lolbin)),
        (13, "mshta.exe", Some(ProcessClass::ScriptInterpreter)),
        (14, "backup.exe", None),
    ] {
        let a = smb_client(&mut c, "WS1", pid, "2024-05-01T12:00:00Z", name);
        let want = if class.is_some() {
            Severity::High
        } else {
            Severity::Medium
        };
        assert_eq!(a.severity, want, "{name}");
        assert_eq!(a.process_context.and_then(|x| x.class), class, "{name}");
    }
    // A site's own list replaces the default one.
    let classes = ProcessClassesConfig {
        lolbins: vec!["Backup.EXE".into()],
        ..ProcessClassesConfig::default()
    };
    let mut c = Correlator::new(CorrelateConfig::default()).with_process_classes(classes);
    let a = smb_client(&mut c, "WS1", 14, "2024-05-01T12:00:00Z", "backup.exe");
    assert_eq!(a.severity, Severity::High);
    let a = smb_client(&mut c, "WS1", 12, "2024-05-01T12:00:01Z", "rundll32.exe");
    assert_eq!(a.severity, Severity::Medium, "no longer listed");
}

#[test]
fn class_lists_are_validated_naming_the_key() {
    let bad = |cfg: ProcessClassesConfig| cfg.validate().unwrap_err();
    assert!(ProcessClassesConfig::default().validate().is_ok());
    let e = bad(ProcessClassesConfig {
        browsers: vec![r"C:\x\chrome.exe".into()],
        ..Default::default()
    });
    assert_eq!(e.key, "process_classes.browsers[0]");
    assert!(e.why.contains("not a path"), "{e}");
    let e = bad(ProcessClassesConfig {
        office: vec!["excel.exe".into(), "PowerShell.exe".into()],
        ..Default::default()
    });
    assert_eq!(e.key, "process_classes.office[1]");
    assert!(
        e.why
            .contains("also listed in process_classes.script_interpreters"),
        "{e}"
    );
    let e = bad(ProcessClassesConfig {
        lolbins: vec![" ".into()],
        ..Default::default()
    });
    assert_eq!(e.key, "process_classes.lolbins[0]");
    // Through the config file: the application's config tests.
}

#[test]
fn pid_reuse_takes_the_newest_creation_before_the_connection() {
    let mut c = Correlator::new(CorrelateConfig::default());
    c.on_host_event(&sysmon1(
        "WS1",
        500,
        "2024-05-01 11:00:00.000",
        r"C:\a\old.exe",
        "old",
    ));
    c.on_host_event(&sysmon1(
        "WS1",
        500,
        "2024-05-01 12:00:00.000",
        r"C:\a\new.exe",
        "new",
    ));
    // Another host's pid 500 is another process.
    c.on_host_event(&sysmon1(
        "WS2",
        500,
        "2024-05-01 12:00:01.000",
        r"C:\a\x.exe",
        "ws2",
    ));
    let a = smb_client(&mut c, "ws1", 500, "2024-05-01T11:30:00Z", "old.exe");
    assert_eq!(
        a.process_context.unwrap().command_line.as_deref(),
        Some("old")
    );
    let a = smb_client(&mut c, "ws1", 500, "2024-05-01T12:10:00Z", "new.exe");
    let ctx = a.process_context.unwrap();
    assert_eq!(ctx.command_line.as_deref(), Some("new"));
    assert_eq!(
        ctx.parent_executable.as_deref(),
        Some(r"C:\Windows\explorer.exe")
    );
    assert_eq!(a.user.as_deref(), Some(r"CORP\alice"));
    // A creation after the connection (beyond the skew) is not its process.
    let a = smb_client(&mut c, "ws1", 500, "2024-05-01T10:00:00Z", "old.exe");
    assert_eq!(a.process_context, None);
}

#[test]
fn scan_alert_carries_the_classed_process_with_its_command_line() {
    let mut c = Correlator::new(CorrelateConfig::default());
    c.on_host_event(&sysmon1(
        "WS1",
        700,
        "2024-05-01 11:59:00.000",
        r"C:\Python\python.exe",
        "python.exe sweep.py 192.0.2.0/24",
    ));
    // The kernel client and the script both connected during the scan.
    for (pid, name) in [(4, "System"), (700, "python.exe")] {
        let ev = wfp_445(
            "WS1",
            pid,
            "2024-05-01T12:00:02Z",
            &format!(r"\\device\\x\\{name}"),
        );
        c.on_host_event(&ev);
    }
    let mut scan = Alert::new(
        ts("2024-05-01T12:00:05Z"),
        AlertKind::SmbScanFanout,
        Severity::Medium,
        "scan".into(),
    );
    scan.source_ip = Some(ip("192.0.2.5"));
    c.enrich_scan_alert(&mut scan);
    assert_eq!(scan.processes.len(), 2);
    let p = scan.process.as_ref().unwrap();
    assert_eq!(p.pid, Some(700));
    let ctx = scan.process_context.as_ref().unwrap();
    assert_eq!(
        ctx.command_line.as_deref(),
        Some("python.exe sweep.py 192.0.2.0/24")
    );
    assert_eq!(scan.user.as_deref(), Some(r"CORP\alice"));
    assert_eq!(
        scan.severity,
        Severity::High,
        "a script interpreter scanned"
    );
}

#[test]
fn process_table_is_bounded_in_bytes_and_huge_command_lines_are_capped() {
    let cfg = CorrelateConfig {
        max_bytes: 64 << 10,
        ..CorrelateConfig::default()
    };
    let mut c = Correlator::new(cfg);
    // 64 KiB command lines: the parser keeps 4 KiB of each.
    let huge = "A".repeat(64 << 10);
    for pid in 0..200u32 {
        let at = format!("2024-05-01 12:00:{:02}.{:03}", pid / 100, pid % 100);
        let ev = sysmon1("WS1", 1000 + pid, &at, r"C:\x\a.exe", &huge);
        let p = ev.as_process_creation().unwrap();
        assert!(p.command_line.as_ref().unwrap().len() <= MAX_COMMAND_LINE_BYTES);
        c.on_host_event(&ev);
        assert!(c.stats().bytes <= 64 << 10, "{:?}", c.stats());
    }
    let st = c.stats();
    assert!(st.evicted > 150, "{st:?}");
    assert_eq!(st.process_creations, 200);
    // The newest are kept and still found.
    let a = smb_client(&mut c, "WS1", 1199, "2024-05-01T12:00:03Z", "a.exe");
    let cmd = a.process_context.unwrap().command_line.unwrap();
    assert!(cmd.len() <= MAX_COMMAND_LINE_BYTES && cmd.starts_with("AAAA"));
    // And dropped after process_retention by the reference clock.
    c.advance(ts("2024-05-03T00:00:00Z"));
    let a = smb_client(&mut c, "WS1", 1199, "2024-05-03T00:00:00Z", "a.exe");
    assert_eq!(a.process_context, None);
}

#[test]
fn a_process_creation_from_the_future_is_rejected() {
    let mut c = Correlator::new(CorrelateConfig::default());
    c.advance(ts("2024-05-01T12:00:00Z"));
    c.on_host_event(&sysmon1(
        "WS1",
        9,
        "2024-05-01 11:59:00.000",
        r"C:\x\a.exe",
        "kept",
    ));
    c.on_host_event(&sysmon1(
        "WS1",
        10,
        "2199-01-01 00:00:00.000",
        r"C:\x\b.exe",
        "future",
    ));
    assert_eq!(c.stats().rejected_ahead, 1);
    assert_eq!(c.stats().process_creations, 1);
    let a = smb_client(&mut c, "WS1", 10, "2024-05-01T12:00:00Z", "b.exe");
    assert_eq!(a.process_context, None, "not kept");
    let a = smb_client(&mut c, "WS1", 9, "2024-05-01T12:00:00Z", "a.exe");
    let want = ProcessContext {
        command_line: Some("kept".into()),
        parent_executable: Some(r"C:\Windows\explorer.exe".into()),
        parent_command_line: None,
        class: None,
    };
    assert_eq!(a.process_context, Some(want), "nothing expired by it");
}

/// A 5145 as a flat `Key: Value` record.
fn share_write(at: &str, src: &str, share: &str, target: &str, access: &str) -> HostEvent {
    let text = format!(
        "EventID: 5145\nChannel: Security\nTimeCreated: {at}\nComputer: SRV1\nSubjectUserName: bob\nSubjectDomainName: CORP\nIpAddress: {src}\nShareName: \\\\*\\{share}\nRelativeTargetName: {target}\n{access}\n"
    );
    let (evs, sum) = crate::hostlog::parse_bytes("t", text.as_bytes(), Format::KeyValue).unwrap();
    assert_eq!(sum.bad, 0, "{:?}", sum.errors);
    evs.into_iter().next().unwrap()
}

#[test]
fn share_write_rule() {
    let mut c = Correlator::new(CorrelateConfig::default());
    let drops = |c: &mut Correlator, ev: &HostEvent| {
        c.on_host_event(ev)
            .into_iter()
            .filter(|a| a.kind == AlertKind::RemoteFileDrop)
            .count()
    };
    let t = "2024-05-01T12:00:00Z";
    // AccessList alone (no AccessMask): %%4418 AppendData.
    let ev = share_write(
        t,
        "192.0.2.9",
        "C$",
        r"Temp\x.ps1",
        "AccessList: %%4416 %%4418",
    );
    assert_eq!(ev.as_share_access().unwrap().access_mask, Some(0x5));
    assert_eq!(drops(&mut c, &ev), 1);
    // The same file again within the window: one drop.
    assert_eq!(drops(&mut c, &ev), 0);
    // Read only; IPC$; loopback; the share root; no access at all.
    for ev in [
        share_write(t, "192.0.2.9", "ADMIN$", "a.exe", "AccessMask: 0x1"),
        share_write(t, "192.0.2.9", "IPC$", "svcctl", "AccessMask: 0x3"),
        share_write(t, "127.0.0.1", "ADMIN$", "b.exe", "AccessMask: 0x2"),
        share_write(t, "192.0.2.9", "ADMIN$", r"\", "AccessMask: 0x2"),
        share_write(t, "192.0.2.9", "ADMIN$", "c.exe", "ObjectType: File"),
        share_write(t, "192.0.2.9", "data", "d.exe", "AccessMask: 0x2"),
    ] {
        assert_eq!(drops(&mut c, &ev), 0, "{ev:?}");
    }
    // A non-executable is high, not critical.
    let ev = share_write(t, "192.0.2.9", "D$", r"x\notes.txt", "AccessMask: 0x2");
    let a = c.on_host_event(&ev);
    assert_eq!(a[0].severity, Severity::High);
}

/// A Sysmon 11 by `image` (pid 4 when `System`).
fn sysmon11(at: &str, image: &str, file: &str) -> HostEvent {
    let pid = if image == "System" { "4" } else { "900" };
    let v = serde_json::json!({
        "EventID": 11, "Channel": "Microsoft-Windows-Sysmon/Operational",
        "Hostname": "SRV1", "UtcTime": at, "ProcessId": pid,
        "Image": image, "TargetFilename": file,
    });
    parse_line(&v.to_string()).unwrap().unwrap()
}

fn logon(at: &str, src: &str) -> HostEvent {
    let text = format!(
        "EventID: 4624\nChannel: Security\nTimeCreated: {at}\nComputer: srv1\nLogonType: 3\nTargetUserName: bob\nTargetDomainName: CORP\nIpAddress: {src}\n"
    );
    crate::hostlog::parse_bytes("t", text.as_bytes(), Format::KeyValue)
        .unwrap()
        .0
        .remove(0)
}

#[test]
fn kernel_created_executable_takes_the_sole_recent_source() {
    let mut c = Correlator::new(CorrelateConfig::default());
    c.on_host_event(&logon("2024-05-01T12:00:00Z", "192.0.2.9"));
    let got = c.on_host_event(&sysmon11(
        "2024-05-01 12:00:03.000",
        "System",
        r"\\?\C:\Windows\PSEXESVC.exe",
    ));
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].kind, AlertKind::RemoteFileDrop);
    assert_eq!(got[0].source_ip, Some(ip("192.0.2.9")));
    assert_eq!(got[0].user.as_deref(), Some(r"CORP\bob"));
    assert_eq!(got[0].severity, Severity::Critical);
    // Not by the kernel, or not an executable: no alert.
    for ev in [
        sysmon11("2024-05-01 12:00:04.000", r"C:\x\setup.exe", r"C:\x\y.exe"),
        sysmon11("2024-05-01 12:00:04.000", "System", r"C:\Windows\x.etl"),
    ] {
        assert!(c.on_host_event(&ev).is_empty(), "{ev:?}");
    }
    // Two sources logged on: which one wrote is unknown, so none is named.
    c.on_host_event(&logon("2024-05-01T12:00:05Z", "192.0.2.10"));
    let got = c.on_host_event(&sysmon11(
        "2024-05-01 12:00:06.000",
        "System",
        r"C:\ProgramData\z.dll",
    ));
    assert_eq!(got[0].source_ip, None);
    assert!(
        got[0].message.contains("unknown address"),
        "{}",
        got[0].message
    );
}

#[test]
fn guids_are_capped_at_parse_time_and_a_self_parent_is_none() {
    let v = serde_json::json!({
        "EventID": 1, "Channel": "Microsoft-Windows-Sysmon/Operational",
        "Hostname": "WS1", "UtcTime": "2024-05-01 12:00:00.000",
        "ProcessGuid": "{".repeat(10_000), "ParentProcessGuid": "{".repeat(10_000),
        "ProcessId": "42", "ParentProcessId": "42", "Image": "C:\\x\\a.exe",
        "CommandLine": "a",
    });
    let ev = parse_line(&v.to_string()).unwrap().unwrap();
    let p = ev.as_process_creation().unwrap();
    assert!(p.process.guid.as_ref().unwrap().len() <= crate::hostlog::MAX_GUID_BYTES);
    assert!(p.parent_guid.as_ref().unwrap().len() <= crate::hostlog::MAX_GUID_BYTES);
    let mut c = Correlator::new(CorrelateConfig::default());
    c.on_host_event(&ev);
    let a = smb_client(&mut c, "WS1", 42, "2024-05-01T12:00:01Z", "a.exe");
    let ctx = a.process_context.unwrap();
    assert_eq!(ctx.command_line.as_deref(), Some("a"));
    assert_eq!(ctx.parent_command_line, None, "its own parent");
}
