//! Parse-throughput helpers for benchmarks (`cargo xtask bench` or the
//! `#[ignore]`d report test below).
//!
//! [`synthetic_input`] writes a realistic mix of records in a text format
//! (Sysmon 3, Security 5156, 4624, 5140/5145, 4688, Sysmon 1 and one
//! skipped 4634 in every eight, with `Message` texts and field counts like
//! the real NXLog/Winlogbeat records in `../shared/data/logs`, 1–2 KB each);
//! binary EVTX cannot be synthesised, so EVTX is measured on a real file.
//! [`measure`] parses an input repeatedly on the calling thread and reports
//! records per second.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::{parse_bytes_into, Format, HostLogError};

/// One measurement.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Throughput {
    /// Format measured.
    pub format: Format,
    /// Records in the input (parsed + skipped + bad).
    pub records: u64,
    /// Input size.
    pub bytes: usize,
    /// Times the input was parsed.
    pub iterations: u64,
    /// Wall time spent parsing.
    pub elapsed: Duration,
    /// Records per second.
    pub records_per_sec: f64,
    /// Input megabytes (10^6) per second.
    pub mb_per_sec: f64,
}

/// Parse `bytes` as `format` repeatedly for at least `min_time` (and at
/// least once) on this thread.
pub fn measure(
    format: Format,
    bytes: &[u8],
    min_time: Duration,
) -> Result<Throughput, HostLogError> {
    let mut out = Vec::new();
    let mut iterations = 0u64;
    let start = Instant::now();
    let records = loop {
        out.clear();
        let s = parse_bytes_into("bench", bytes, format, &mut out)?;
        iterations += 1;
        if start.elapsed() >= min_time {
            break s.total;
        }
    };
    let elapsed = start.elapsed();
    let secs = elapsed.as_secs_f64().max(1e-9);
    Ok(Throughput {
        format,
        records,
        bytes: bytes.len(),
        iterations,
        elapsed,
        records_per_sec: (records * iterations) as f64 / secs,
        mb_per_sec: (bytes.len() as u64 * iterations) as f64 / secs / 1e6,
    })
}

const MSG_5156: &str = "The Windows Filtering Platform has permitted a connection.\r\n\r\nApplication Information:\r\n\tProcess ID:\t\t8948\r\n\tApplication Name:\t\\device\\harddiskvolume2\\windows\\system32\\windowspowershell\\v1.0\\powershell.exe\r\n\r\nNetwork Information:\r\n\tDirection:\t\tOutbound\r\n\tSource Address:\t\t172.18.39.5\r\n\tSource Port:\t\t50504\r\n\tDestination Address:\t172.18.39.6\r\n\tDestination Port:\t\t445\r\n\tProtocol:\t\t6\r\n\r\nFilter Information:\r\n\tFilter Run-Time ID:\t73106\r\n\tLayer Name:\t\tConnect\r\n\tLayer Run-Time ID:\t48";
const MSG_4624: &str = "An account was successfully logged on.\r\n\r\nSubject:\r\n\tSecurity ID:\t\tS-1-0-0\r\n\tAccount Name:\t\t-\r\n\tAccount Domain:\t\t-\r\n\tLogon ID:\t\t0x0\r\n\r\nLogon Information:\r\n\tLogon Type:\t\t3\r\n\tRestricted Admin Mode:\t-\r\n\tVirtual Account:\t\tNo\r\n\tElevated Token:\t\tYes\r\n\r\nImpersonation Level:\t\tImpersonation\r\n\r\nNew Logon:\r\n\tSecurity ID:\t\tS-1-5-21-4228717743-1032521047-1810997296-1104\r\n\tAccount Name:\t\tpgustavo\r\n\tAccount Domain:\t\tTHESHIRE\r\n\tLogon ID:\t\t0x2074186\r\n\r\nNetwork Information:\r\n\tWorkstation Name:\tWORKSTATION5\r\n\tSource Network Address:\t172.18.39.5\r\n\tSource Port:\t\t50504";

/// One record of the mix, as (event id, EventData fields).
fn mix(i: usize) -> (u32, &'static str, Vec<(&'static str, String)>) {
    let sport = (49152 + (i * 7) % 16000).to_string();
    let src = format!("10.{}.{}.{}", (i / 65536) % 256, (i / 256) % 256, i % 256);
    let sec = "Security";
    let sysmon = "Microsoft-Windows-Sysmon/Operational";
    match i % 8 {
        0 | 1 => (
            3,
            sysmon,
            vec![
                ("RuleName", "-".into()),
                ("UtcTime", "2020-09-20 06:57:48.481".into()),
                ("ProcessGuid", "{d273d0f0-e84d-5f64-0100-000000000800}".into()),
                ("ProcessId", "8948".into()),
                ("Image", "C:\\Windows\\System32\\WindowsPowerShell\\v1.0\\powershell.exe".into()),
                ("User", "THESHIRE\\pgustavo".into()),
                ("Protocol", "tcp".into()),
                ("Initiated", "true".into()),
                ("SourceIsIpv6", "false".into()),
                ("SourceIp", src),
                ("SourceHostname", "-".into()),
                ("SourcePort", sport),
                ("SourcePortName", "-".into()),
                ("DestinationIsIpv6", "false".into()),
                ("DestinationIp", "172.18.39.6".into()),
                ("DestinationHostname", "-".into()),
                ("DestinationPort", "445".into()),
                ("DestinationPortName", "microsoft-ds".into()),
            ],
        ),
        2 | 3 => (
            5156,
            sec,
            vec![
                ("ProcessID", "4".into()),
                ("Application", "System".into()),
                ("Direction", "%%14593".into()),
                ("SourceAddress", src),
                ("SourcePort", sport),
                ("DestAddress", "172.18.39.6".into()),
                ("DestPort", "445".into()),
                ("Protocol", "6".into()),
                ("FilterRTID", "73106".into()),
                ("LayerName", "%%14611".into()),
                ("LayerRTID", "48".into()),
                ("RemoteUserID", "S-1-0-0".into()),
                ("RemoteMachineID", "S-1-0-0".into()),
            ],
        ),
        4 => (
            4624,
            sec,
            vec![
                ("SubjectUserSid", "S-1-0-0".into()),
                ("SubjectUserName", "-".into()),
                ("SubjectDomainName", "-".into()),
                ("SubjectLogonId", "0x0".into()),
                ("TargetUserSid", "S-1-5-21-4228717743-1032521047-1810997296-1104".into()),
                ("TargetUserName", "pgustavo".into()),
                ("TargetDomainName", "THESHIRE".into()),
                ("TargetLogonId", "0x2074186".into()),
                ("LogonType", "3".into()),
                ("LogonProcessName", "NtLmSsp ".into()),
                ("AuthenticationPackageName", "NTLM".into()),
                ("WorkstationName", "WORKSTATION5".into()),
                ("LogonGuid", "{00000000-0000-0000-0000-000000000000}".into()),
                ("ProcessId", "0x0".into()),
                ("ProcessName", "-".into()),
                ("IpAddress", src),
                ("IpPort", sport),
            ],
        ),
        5 => (
            5145,
            sec,
            vec![
                ("SubjectUserSid", "S-1-5-21-4228717743-1032521047-1810997296-1104".into()),
                ("SubjectUserName", "pgustavo".into()),
                ("SubjectDomainName", "THESHIRE".into()),
                ("SubjectLogonId", "0x4e13b2e".into()),
                ("ObjectType", "File".into()),
                ("IpAddress", src),
                ("IpPort", sport),
                ("ShareName", "\\\\*\\C$".into()),
                ("ShareLocalPath", "\\??\\C:\\".into()),
                ("RelativeTargetName", "ProgramData\\GruntHTTP.exe".into()),
                ("AccessMask", "0x80".into()),
                ("AccessList", "%%4423".into()),
            ],
        ),
        6 => (
            4688,
            sec,
            vec![
                ("SubjectUserSid", "S-1-5-18".into()),
                ("SubjectUserName", "WORKSTATION6$".into()),
                ("SubjectDomainName", "THESHIRE".into()),
                ("SubjectLogonId", "0x3e7".into()),
                ("NewProcessId", "0x126c".into()),
                ("NewProcessName", "C:\\Windows\\System32\\cmd.exe".into()),
                ("TokenElevationType", "%%1936".into()),
                ("ProcessId", "0x2c0".into()),
                ("CommandLine", "C:\\windows\\system32\\cmd.exe /C start /b powershell -noP -sta -w 1 -enc SQBGACgAJABQAFMAVgBFAFIAcwBpAG8ATgBUAGEAQgBMAEUALgBQAFMAVgBFAHIAcwBJAE8AbgAuAE0AYQBqAE8AUgAgAC0AZwBlACAAMwApAHsA".into()),
                ("TargetUserSid", "S-1-0-0".into()),
                ("TargetUserName", "-".into()),
                ("TargetDomainName", "-".into()),
                ("ParentProcessName", "C:\\Windows\\System32\\services.exe".into()),
                ("MandatoryLabel", "S-1-16-16384".into()),
            ],
        ),
        _ => (
            4634,
            sec,
            vec![
                ("TargetUserSid", "S-1-5-21-1".into()),
                ("TargetUserName", "pgustavo".into()),
                ("TargetDomainName", "THESHIRE".into()),
                ("TargetLogonId", "0x2074186".into()),
                ("LogonType", "3".into()),
            ],
        ),
    }
}

fn message(id: u32) -> &'static str {
    match id {
        5156 => MSG_5156,
        4624 => MSG_4624,
        _ => "Event text as rendered by the collector.",
    }
}

fn json_str(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// `records` records of the mix in a text format; `None` for EVTX (and Auto).
pub fn synthetic_input(format: Format, records: usize) -> Option<Vec<u8>> {
    let mut s = String::new();
    for i in 0..records {
        let (id, channel, data) = mix(i);
        let sec = i % 60;
        let provider = if id < 100 {
            "Microsoft-Windows-Sysmon"
        } else {
            "Microsoft-Windows-Security-Auditing"
        };
        match format {
            Format::Nxlog => {
                let _ = write!(
                    s,
                    "{{\"EventTime\":\"2020-09-20 02:57:{sec:02}\",\"EventReceivedTime\":\"2020-09-20 02:57:{sec:02}\",\
                     \"Hostname\":\"WORKSTATION5.theshire.local\",\"Keywords\":-9214364837600034816,\"EventType\":\"AUDIT_SUCCESS\",\
                     \"SeverityValue\":2,\"Severity\":\"INFO\",\"EventID\":{id},\"SourceName\":\"{provider}\",\
                     \"ProviderGuid\":\"{{54849625-5478-4994-A5BA-3E3B0328C30D}}\",\"Version\":1,\"Task\":12810,\"OpcodeValue\":0,\
                     \"RecordNumber\":{},\"ExecutionProcessID\":4,\"ThreadID\":7796,\"Channel\":\"{channel}\",\
                     \"Message\":{},\"Category\":\"Filtering Platform Connection\",\"Opcode\":\"Info\",",
                    493214 + i,
                    json_str(message(id))
                );
                for (k, v) in &data {
                    let _ = write!(s, "\"{k}\":{},", json_str(v));
                }
                let _ = writeln!(
                    s,
                    "\"SourceModuleName\":\"eventlog\",\"SourceModuleType\":\"im_msvistalog\",\
                     \"@timestamp\":\"2020-09-20T06:57:{sec:02}.846Z\",\"@version\":\"1\",\"host\":\"wec.internal.cloudapp.net\",\"port\":64545}}"
                );
            }
            Format::Winlogbeat => {
                let _ = write!(
                    s,
                    "{{\"@timestamp\":\"2020-09-20T06:57:{sec:02}.123Z\",\"agent\":{{\"type\":\"winlogbeat\",\"version\":\"8.12.0\",\
                     \"hostname\":\"WORKSTATION5\"}},\"ecs\":{{\"version\":\"8.0.0\"}},\"event\":{{\"code\":\"{id}\",\"kind\":\"event\",\
                     \"provider\":\"{provider}\",\"created\":\"2020-09-20T06:57:50.000Z\"}},\"host\":{{\"name\":\"workstation5\",\
                     \"os\":{{\"family\":\"windows\",\"version\":\"10.0\"}}}},\"log\":{{\"level\":\"information\"}},\
                     \"message\":{},\"winlog\":{{\"channel\":\"{channel}\",\"computer_name\":\"WORKSTATION5.theshire.local\",\
                     \"event_id\":\"{id}\",\"provider_name\":\"{provider}\",\"record_id\":{},\"process\":{{\"pid\":4,\
                     \"thread\":{{\"id\":7796}}}},\"event_data\":{{",
                    json_str(message(id)),
                    493214 + i
                );
                for (n, (k, v)) in data.iter().enumerate() {
                    let comma = if n == 0 { "" } else { "," };
                    let _ = write!(s, "{comma}\"{k}\":{}", json_str(v));
                }
                s.push_str("}}}\n");
            }
            Format::EvtxDump => {
                let _ = write!(
                    s,
                    "{{\"Event\":{{\"#attributes\":{{\"xmlns\":\"http://schemas.microsoft.com/win/2004/08/events/event\"}},\
                     \"System\":{{\"Provider\":{{\"#attributes\":{{\"Name\":\"{provider}\",\"Guid\":\"{{54849625-5478-4994-a5ba-3e3b0328c30d}}\"}}}},\
                     \"EventID\":{id},\"Version\":1,\"Level\":0,\"Task\":12810,\"Opcode\":0,\"Keywords\":\"0x8020000000000000\",\
                     \"TimeCreated\":{{\"#attributes\":{{\"SystemTime\":\"2020-09-20T06:57:{sec:02}.1234567Z\"}}}},\
                     \"EventRecordID\":{},\"Correlation\":null,\"Execution\":{{\"#attributes\":{{\"ProcessID\":4,\"ThreadID\":7796}}}},\
                     \"Channel\":\"{channel}\",\"Computer\":\"WORKSTATION5.theshire.local\",\"Security\":null}},\"EventData\":{{",
                    493214 + i
                );
                for (n, (k, v)) in data.iter().enumerate() {
                    let comma = if n == 0 { "" } else { "," };
                    let _ = write!(s, "{comma}\"{k}\":{}", json_str(v));
                }
                s.push_str("}}}\n");
            }
            Format::Xml => {
                let _ = write!(
                    s,
                    "<Event xmlns=\"http://schemas.microsoft.com/win/2004/08/events/event\"><System><Provider Name=\"{provider}\" \
                     Guid=\"{{54849625-5478-4994-a5ba-3e3b0328c30d}}\"/><EventID>{id}</EventID><Version>1</Version><Level>0</Level>\
                     <Task>12810</Task><Opcode>0</Opcode><Keywords>0x8020000000000000</Keywords>\
                     <TimeCreated SystemTime=\"2020-09-20T06:57:{sec:02}.1234567Z\"/><EventRecordID>{}</EventRecordID><Correlation/>\
                     <Execution ProcessID=\"4\" ThreadID=\"7796\"/><Channel>{channel}</Channel>\
                     <Computer>WORKSTATION5.theshire.local</Computer><Security/></System><EventData>",
                    493214 + i
                );
                for (k, v) in &data {
                    let _ = write!(s, "<Data Name=\"{k}\">{}</Data>", xml_escape(v));
                }
                let _ = writeln!(
                    s,
                    "</EventData><RenderingInfo Culture=\"en-US\"><Message>{}</Message><Level>Information</Level></RenderingInfo></Event>",
                    xml_escape(message(id))
                );
            }
            Format::KeyValue => {
                let _ = writeln!(
                    s,
                    "EventID: {id}\nTimeCreated: 2020-09-20T06:57:{sec:02}.456Z\nChannel: {channel}\nHostname: WORKSTATION5"
                );
                for (k, v) in &data {
                    let _ = writeln!(s, "{k}: {v}");
                }
                s.push_str("---\n");
            }
            Format::Evtx | Format::Auto => return None,
        }
    }
    Some(s.into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hostlog::parse_bytes;

    #[test]
    fn synthetic_inputs_parse_cleanly() {
        for f in [
            Format::Nxlog,
            Format::Winlogbeat,
            Format::EvtxDump,
            Format::Xml,
            Format::KeyValue,
        ] {
            let input = synthetic_input(f, 64).unwrap();
            let (evs, s) = parse_bytes("synthetic", &input, Format::Auto).unwrap();
            assert_eq!(s.format, Some(f));
            assert_eq!(
                (s.total, s.bad, s.skipped),
                (64, 0, 8),
                "{f}: {:?}",
                s.errors
            );
            assert_eq!(evs.len(), 56);
            let t = measure(f, &input, Duration::ZERO).unwrap();
            assert_eq!((t.records, t.iterations), (64, 1));
        }
        assert!(synthetic_input(Format::Evtx, 1).is_none());
    }

    /// Throughput report: run with
    /// `cargo test --release -p smbwatch-core --lib hostlog::bench -- --ignored --nocapture`.
    #[test]
    #[ignore = "measurement; run in release with --ignored --nocapture"]
    fn throughput_report() {
        let min = Duration::from_secs(3);
        for f in [
            Format::Nxlog,
            Format::Winlogbeat,
            Format::EvtxDump,
            Format::Xml,
            Format::KeyValue,
        ] {
            let input = synthetic_input(f, 20_000).unwrap();
            let t = measure(f, &input, min).unwrap();
            println!(
                "{:<11} {:>10.0} records/s {:>7.1} MB/s  ({} records, {} bytes/record)",
                f.name(),
                t.records_per_sec,
                t.mb_per_sec,
                t.records,
                t.bytes / t.records as usize
            );
        }
        // What the daemon and `hostlog parse` use: the format told per record.
        for f in [Format::Nxlog, Format::Xml, Format::KeyValue] {
            let input = synthetic_input(f, 20_000).unwrap();
            let t = measure(Format::Auto, &input, min).unwrap();
            println!(
                "{:<11} {:>10.0} records/s {:>7.1} MB/s  (auto on {} input)",
                "auto",
                t.records_per_sec,
                t.mb_per_sec,
                f.name()
            );
        }
        if let Some(p) = crate::hostlog::tests::data_file(crate::hostlog::tests::PSEXEC) {
            let bytes = std::fs::read(p).unwrap();
            let t = measure(Format::Evtx, &bytes, min).unwrap();
            println!(
                "{:<11} {:>10.0} records/s {:>7.1} MB/s  ({} records, real PsExec file)",
                "evtx", t.records_per_sec, t.mb_per_sec, t.records
            );
        }
    }
}
