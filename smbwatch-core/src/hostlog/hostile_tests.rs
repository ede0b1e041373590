//! Hostile and damaged input: crafted XML, oversized fields, mixed formats,
//! out-of-range times, Winlogbeat quirks and truncated EVTX files.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use super::tests::{data_file, PSEXEC};
use super::*;

fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

/// Generous: the inputs below took minutes with the quadratic code and
/// take milliseconds now; the bound only catches a return of that.
const LINEAR_BOUND: Duration = Duration::from_secs(20);

#[test]
fn xml_repeated_event_starts_cost_linear_time() {
    // 1 MiB of `<Event>` starts and one end tag: each start used to search
    // the rest of the line for `</Event>` again.
    let n = 150_000;
    let doc = format!("{}</Event>", "<Event>".repeat(n));
    let t = Instant::now();
    let (evs, sum) = parse_bytes("crafted.xml", doc.as_bytes(), Format::Xml).unwrap();
    assert!(t.elapsed() < LINEAR_BOUND, "{:?}", t.elapsed());
    assert!(evs.is_empty());
    assert_eq!((sum.total, sum.bad), (n as u64, n as u64));
    assert_eq!(sum.errors.len(), MAX_KEPT_ERRORS);
    assert!(sum.errors[0].to_string().contains("unterminated <Event>"));

    let t = Instant::now();
    let e = parse_line_at("peer", 3, &doc).unwrap_err();
    assert!(t.elapsed() < LINEAR_BOUND, "{:?}", t.elapsed());
    assert_eq!(
        e.to_string(),
        "peer: line 3: invalid XML: expected exactly one <Event> element on the line"
    );
}

#[test]
fn xml_many_attributes_cost_linear_time() {
    // quick-xml checks each attribute against all earlier ones for
    // duplicates unless told not to: 100,000 attributes were 5·10⁹ compares.
    let attrs: String = (0..100_000).map(|i| format!(" a{i}=\"\"")).collect();
    let line = format!(
        "<Event><System><Provider{attrs} Name=\"Microsoft-Windows-Sysmon\"/><EventID>3</EventID>\
         <TimeCreated SystemTime=\"2020-09-20T06:57:49Z\"/></System><EventData>\
         <Data Name=\"DestinationPort\">445</Data></EventData></Event>"
    );
    let t = Instant::now();
    let ev = parse_line(&line).unwrap().unwrap();
    assert!(t.elapsed() < LINEAR_BOUND, "{:?}", t.elapsed());
    assert_eq!(ev.as_connection().unwrap().dst_port, Some(445));
}

fn sysmon3_json(image: &str, user: &str, host: &str, cmd: &str) -> String {
    serde_json::json!({
        "EventID": 1,
        "Channel": "Microsoft-Windows-Sysmon/Operational",
        "Hostname": host,
        "UtcTime": "2020-09-20 06:57:48.481",
        "ProcessId": "8948",
        "Image": image,
        "ParentImage": image,
        "CommandLine": cmd,
        "User": user,
    })
    .to_string()
}

#[test]
fn oversized_fields_are_capped_at_parse_time() {
    // 60 KB values, multi-byte characters so the cut must find a boundary.
    let long = "é".repeat(30_000);
    let image = format!("C:\\{long}\\evil.exe");
    let line = sysmon3_json(&image, &long, &long, &long);
    let (evs, sum) = parse_bytes("big.jsonl", line.as_bytes(), Format::Auto).unwrap();
    assert_eq!(sum.parsed, 1, "{:?}", sum.errors);
    let ev = &evs[0];
    let p = ev.as_process_creation().unwrap();
    let image_out = p.process.image.as_deref().unwrap();
    assert!(image_out.len() <= 1024, "{}", image_out.len());
    assert!(image_out.starts_with("C:\\éé") && image_out.ends_with('…'));
    // The file name is taken before the path is cut.
    assert_eq!(p.process.image_name.as_deref(), Some("evil.exe"));
    assert!(p.parent_image.as_deref().unwrap().len() <= 1024);
    assert!(p.account.name.as_deref().unwrap().len() <= 256);
    assert!(ev.host.as_deref().unwrap().len() <= 256);
    assert!(p.command_line.as_deref().unwrap().len() <= 4096);
    assert!(ev.heap_bytes() <= HostEvent::MAX_HEAP_BYTES);
    eprintln!(
        "event: {} heap bytes; bound {} ({} inline)",
        ev.heap_bytes(),
        HostEvent::MAX_BYTES,
        std::mem::size_of::<HostEvent>()
    );
    assert_eq!(sum.truncated, 1, "one record had fields cut");
}

#[test]
fn one_garbage_line_does_not_lose_the_json_lines_after_it() {
    let ev = r#"{"EventID":3,"Channel":"Microsoft-Windows-Sysmon/Operational","UtcTime":"2020-09-20 06:57:48.481","Image":"C:\\x\\python.exe","SourceIp":"192.0.2.5","DestinationIp":"192.0.2.6","DestinationPort":"445"}"#;
    for first in [
        "this is not a record",
        "<Event><System><EventID>3</EventID>",
        "<html>oops</html>",
    ] {
        let mut text = format!("{first}\n");
        for _ in 0..100 {
            text.push_str(ev);
            text.push('\n');
        }
        let (evs, sum) = parse_bytes("mixed.jsonl", text.as_bytes(), Format::Auto).unwrap();
        assert_eq!(evs.len(), 100, "first line {first:?}: {:?}", sum.errors);
        assert_eq!((sum.total, sum.parsed, sum.bad), (101, 100, 1), "{first:?}");
        assert_eq!(sum.errors[0].location, RecordLocation::Line(1), "{first:?}");
        assert!(sum.errors[0]
            .to_string()
            .starts_with("mixed.jsonl: line 1: "));
    }
}

#[test]
fn formats_are_told_per_record() {
    // An NXLog line, a Winlogbeat line (its @timestamp is the event time),
    // a Key: Value record, a one-line XML event, and an evtx_dump block.
    let nx = r#"{"EventID":4624,"Channel":"Security","EventTime":"2020-09-20 02:57:46","@timestamp":"2020-09-20T06:57:47.846Z","LogonType":"3","IpAddress":"192.0.2.1"}"#;
    let beat = r#"{"@timestamp":"2020-09-20T06:57:50Z","winlog":{"channel":"Security","event_id":4624,"event_data":{"LogonType":"3","IpAddress":"192.0.2.2"}}}"#;
    let kv = "EventID: 4624\nTimeCreated: 2020-09-20T06:57:51Z\nChannel: Security\nIpAddress: 192.0.2.3\n";
    let xml = r#"<Event><System><EventID>4624</EventID><TimeCreated SystemTime="2020-09-20T06:57:52Z"/><Channel>Security</Channel></System><EventData><Data Name="IpAddress">192.0.2.4</Data></EventData></Event>"#;
    let dump = "Record 9\n{\n  \"Event\": {\n    \"System\": {\"EventID\": 4624, \"Channel\": \"Security\", \"TimeCreated\": {\"#attributes\": {\"SystemTime\": \"2020-09-20T06:57:53Z\"}}},\n    \"EventData\": {\"IpAddress\": \"192.0.2.5\"}\n  }\n}\n";
    let text = format!("{nx}\n{beat}\n{kv}\n{xml}\n{dump}{nx}\n");
    let (evs, sum) = parse_bytes("mixed", text.as_bytes(), Format::Auto).unwrap();
    assert_eq!(
        (sum.total, sum.parsed, sum.bad),
        (6, 6, 0),
        "{:?}",
        sum.errors
    );
    let srcs: Vec<String> = evs
        .iter()
        .map(|e| e.src_ip().unwrap().to_string())
        .collect();
    assert_eq!(
        srcs,
        [
            "192.0.2.1",
            "192.0.2.2",
            "192.0.2.3",
            "192.0.2.4",
            "192.0.2.5",
            "192.0.2.1"
        ]
    );
    assert_eq!(evs[0].time_source, TimeSource::LocalInferred);
    assert_eq!(evs[1].time_source, TimeSource::Utc);
    assert_eq!(evs[1].ts, utc("2020-09-20T06:57:50Z"));
}

fn nxlog_with_time(field: &str, value: serde_json::Value) -> String {
    let mut v = serde_json::json!({
        "EventID": 4624, "Channel": "Security", "LogonType": "3", "IpAddress": "192.0.2.1",
    });
    v[field] = value;
    v.to_string()
}

#[test]
fn times_outside_the_sane_range_are_rejected_with_the_value() {
    for (field, value, shown) in [
        (
            "EventTime",
            serde_json::json!(8_000_000_000_000_000_000u64),
            "8000000000000000000",
        ),
        (
            "EventTime",
            serde_json::json!("0000-01-01 00:00:00"),
            "0000-01-01 00:00:00",
        ),
        (
            "TimeCreated",
            serde_json::json!("9999-12-31T23:59:59Z"),
            "9999-12-31T23:59:59Z",
        ),
        (
            "TimeCreated",
            serde_json::json!("1969-12-31T23:59:59Z"),
            "1969-12-31T23:59:59Z",
        ),
        (
            "UtcTime",
            serde_json::json!("2201-01-01 00:00:00"),
            "2201-01-01 00:00:00",
        ),
    ] {
        let line = nxlog_with_time(field, value);
        let e = parse_line_at("t.jsonl", 4, &line).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.starts_with("t.jsonl: line 4: ") && msg.contains(shown) && msg.contains("1970"),
            "{msg}"
        );
    }
    // The bounds themselves are accepted.
    for t in ["1970-01-01T00:00:00Z", "2200-12-31T23:59:59.999Z"] {
        let line = nxlog_with_time("TimeCreated", serde_json::json!(t));
        assert_eq!(parse_line(&line).unwrap().unwrap().ts, utc(t));
    }
}

#[test]
fn leap_second_is_clamped_to_the_last_nanosecond_of_the_minute() {
    let line = nxlog_with_time("TimeCreated", serde_json::json!("2016-12-31T23:59:60.5Z"));
    let ev = parse_line(&line).unwrap().unwrap();
    assert_eq!(ev.ts, utc("2016-12-31T23:59:59.999999999Z"));
    assert!(ev.ts.timestamp_subsec_nanos() < 1_000_000_000);
    let json = serde_json::to_string(&ev).unwrap();
    assert!(json.contains("23:59:59.999999999Z"), "{json}");
}

/// A Winlogbeat 7.x Sysmon 3 record: `winlog.user` is the account Sysmon
/// runs as, `user` (and `winlog.event_data.User`, absent here) the process's.
fn beat_sysmon3(user_first: bool) -> String {
    let user = r#""user":{"name":"pgustavo","domain":"THESHIRE"}"#;
    let winlog = r#""winlog":{"channel":"Microsoft-Windows-Sysmon/Operational","event_id":3,"provider_name":"Microsoft-Windows-Sysmon","computer_name":"WORKSTATION5","user":{"identifier":"S-1-5-18","name":"SYSTEM","domain":"NT AUTHORITY","type":"User"},"event_data":{"Initiated":"true"}}"#;
    let rest = r#""@timestamp":"2020-09-20T06:57:48.481Z","process":{"pid":8948,"executable":"C:\\x\\powershell.exe"},"source":{"ip":"172.18.39.5","port":50504},"destination":{"ip":"172.18.39.6","port":445},"network":{"transport":"tcp","direction":"egress"}"#;
    if user_first {
        format!("{{{user},{winlog},{rest}}}")
    } else {
        format!("{{{winlog},{user},{rest}}}")
    }
}

#[test]
fn winlogbeat_user_is_the_records_own_not_the_loggers() {
    for user_first in [true, false] {
        let ev = parse_line(&beat_sysmon3(user_first)).unwrap().unwrap();
        assert_eq!(
            ev.account().qualified().as_deref(),
            Some("THESHIRE\\pgustavo"),
            "{user_first}"
        );
    }
    // `winlog.event_data.User` wins over both.
    let line = beat_sysmon3(false).replace(
        r#""Initiated":"true""#,
        r#""Initiated":"true","User":"THESHIRE\\sam""#,
    );
    let ev = parse_line(&line).unwrap().unwrap();
    assert_eq!(ev.account().qualified().as_deref(), Some("THESHIRE\\sam"));
}

#[test]
fn winlogbeat_network_transport_is_the_protocol() {
    let ev = parse_line(&beat_sysmon3(true)).unwrap().unwrap();
    let protocol = |ev: HostEvent| ev.as_connection().unwrap().protocol;
    assert_eq!(protocol(ev), Some(6));
    let udp = beat_sysmon3(true).replace(r#""transport":"tcp""#, r#""transport":"udp""#);
    assert_eq!(protocol(parse_line(&udp).unwrap().unwrap()), Some(17));
    // ECS `network.iana_number` when there is no transport.
    let iana = beat_sysmon3(true).replace(r#""transport":"tcp""#, r#""iana_number":"6""#);
    assert_eq!(protocol(parse_line(&iana).unwrap().unwrap()), Some(6));
}

#[test]
fn winlogbeat_time_created_alone_is_the_time() {
    let line = r#"{"winlog":{"channel":"Security","event_id":4624,"time_created":"2020-09-20T06:57:50.123Z","event_data":{"LogonType":"3","IpAddress":"192.0.2.7"}}}"#;
    let ev = parse_line(line).unwrap().unwrap();
    assert_eq!(ev.ts, utc("2020-09-20T06:57:50.123Z"));
    assert_eq!(ev.time_source, TimeSource::Utc);
}

/// A fresh directory under the system temp dir, removed on drop.
pub(crate) struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub(crate) fn new(tag: &str) -> Self {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let p = std::env::temp_dir().join(format!(
            "smbwatch-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&p).unwrap();
        Self(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn truncated_evtx_is_reported_and_what_is_left_is_read() {
    let Some(p) = data_file(PSEXEC) else { return };
    let bytes = std::fs::read(&p).unwrap();
    let (_, whole) = parse_file(&p, Format::Auto).unwrap();
    assert_eq!(whole.bad, 0);
    let dir = TempDir::new("evtx");
    let cut = dir.0.join("cut.evtx");
    // The file is a 4 KiB header and one 64 KiB chunk whose records fill
    // its first half. Cut at 8 KiB into the chunk: every record the chunk
    // promises is accounted for, those before the cut read, the rest bad
    // under one error naming the truncation.
    std::fs::write(&cut, &bytes[..4096 + 8192]).unwrap();
    let (evs, sum) = parse_file(&cut, Format::Auto).unwrap();
    assert_eq!(sum.total, whole.total, "{sum:?}");
    assert!(sum.parsed > 0 && sum.parsed < whole.parsed, "{sum:?}");
    assert_eq!(evs.len() as u64, sum.parsed);
    assert!(sum.bad > 0);
    let msg = sum.errors.last().unwrap().to_string();
    assert_eq!(
        msg,
        format!(
            "{}: chunk 0: EVTX file truncated: 12288 bytes where its chunks need 69632; \
             any records past the cut are lost",
            cut.display()
        )
    );
    eprintln!("cut at 8 KiB into the chunk: {sum:?}");

    // Cut in the chunk's free space: nothing lost, the cut still reported.
    std::fs::write(&cut, &bytes[..4096 + 32768]).unwrap();
    let (_, sum) = parse_file(&cut, Format::Auto).unwrap();
    assert_eq!(
        (sum.total, sum.parsed, sum.bad),
        (whole.total, whole.parsed, 0)
    );
    assert!(sum.errors[0]
        .to_string()
        .contains("EVTX file truncated: 36864 bytes"));

    // Cut inside the chunk header: nothing to read, still reported.
    std::fs::write(&cut, &bytes[..4096 + 100]).unwrap();
    let (_, sum) = parse_file(&cut, Format::Auto).unwrap();
    assert_eq!((sum.total, sum.bad), (1, 1), "{sum:?}");
    assert!(sum.errors[0]
        .to_string()
        .contains("EVTX file truncated: 4196 bytes"));
}

#[test]
fn a_bad_evtx_dump_block_does_not_swallow_the_json_lines_after_it() {
    let ev = r#"{"EventID":4624,"Channel":"Security","TimeCreated":"2020-09-20T06:57:50Z","IpAddress":"192.0.2.9"}"#;
    let text = format!("Record 1\n{{\n  \"Event\": oops\n}}\n{ev}\n{ev}\n");
    let (evs, sum) = parse_bytes("d", text.as_bytes(), Format::Auto).unwrap();
    assert_eq!(
        (sum.total, sum.parsed, sum.bad),
        (3, 2, 1),
        "{:?}",
        sum.errors
    );
    assert_eq!(evs.len(), 2);
    assert_eq!(sum.errors[0].location, RecordLocation::Line(1));
}
