//! Fair shares of process context: one host's flood of process creations
//! evicts its own context, never the other hosts' (issue 18). Time comes
//! from the events.

use super::*;
use crate::hostlog::{
    Account, HostRecord, Process, ProcessCreation, ProcessLog, TimeSource, MAX_COMMAND_LINE_BYTES,
    MAX_NAME_BYTES, MAX_PATH_BYTES, MAX_SID_BYTES,
};

fn t0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-12-06T10:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

/// A 4688 of `host`: process `pid` running `cmd`, padded to `pad` bytes
/// per string (the parser's caps at most).
fn creation(host: &str, pid: u32, at: DateTime<Utc>, cmd: &str, pad: usize) -> HostEvent {
    let fill = |n: usize| "x".repeat(pad.min(n));
    HostEvent {
        ts: at,
        time_source: TimeSource::Utc,
        host: Some(host.to_string()),
        channel: Some("Security".into()),
        record_id: None,
        record: HostRecord::ProcessCreation(ProcessCreation {
            log: ProcessLog::Security,
            process: Process {
                pid: Some(pid),
                image: Some(format!("C:\\{}\\a.exe", fill(MAX_PATH_BYTES - 9))),
                image_name: Some("a.exe".into()),
                guid: None,
            },
            parent_pid: Some(1),
            parent_image: Some(fill(MAX_PATH_BYTES)),
            parent_guid: None,
            command_line: Some(format!("{cmd}{}", fill(MAX_COMMAND_LINE_BYTES - 64))),
            account: Account {
                domain: Some(fill(MAX_NAME_BYTES)),
                name: Some(fill(MAX_NAME_BYTES)),
                sid: Some(fill(MAX_SID_BYTES)),
            },
        }),
    }
}

const QUIET: [&str; 3] = ["WS1", "WS2", "SRV-FILES"];
const PER_QUIET: u32 = 50;

/// The quiet hosts' creations, one a second, with ordinary strings.
fn quiet_hosts(c: &mut Correlator) {
    for (i, host) in QUIET.iter().enumerate() {
        for pid in 0..PER_QUIET {
            let at = t0() + chrono::Duration::seconds(i64::from(pid) + 100 * i as i64);
            c.on_host_event(&creation(
                host,
                1000 + pid,
                at,
                &format!("{host} job {pid}"),
                20,
            ));
        }
    }
}

/// Every quiet host's every process still has its command line.
fn assert_quiet_intact(c: &Correlator) {
    let at = t0() + chrono::Duration::hours(1);
    for host in QUIET {
        for pid in 0..PER_QUIET {
            let found = c
                .processes
                .lookup(Some(host), Some(1000 + pid), None, at, c.skew)
                .unwrap_or_else(|| panic!("{host} pid {} evicted: {:?}", 1000 + pid, c.stats()));
            let cmd = found.context.command_line.unwrap();
            assert!(cmd.starts_with(&format!("{host} job {pid}")), "{cmd:.40}");
        }
    }
}

fn flood(c: &mut Correlator, n: u32, pad: usize) {
    let start = t0() + chrono::Duration::minutes(10);
    for i in 0..n {
        let at = start + chrono::Duration::milliseconds(i64::from(i));
        c.on_host_event(&creation("FLOOD", 10_000 + i, at, "flood", pad));
    }
}

#[test]
fn a_flood_of_large_4688s_evicts_only_the_flooders_own_context() {
    let cfg = CorrelateConfig::default();
    let mut c = Correlator::new(cfg.clone());
    c.advance(t0() + chrono::Duration::minutes(30));
    quiet_hosts(&mut c);
    // 12,000 at the caps: about 88 MB of strings against a 64 MiB budget.
    flood(&mut c, 12_000, usize::MAX);
    let s = c.stats();
    assert!(s.bytes <= cfg.max_bytes as u64, "{s:?}");
    assert!(s.process_evictions.bytes > 1_000, "{s:?}");
    assert_eq!(s.process_evictions.entries, 0, "{s:?}");
    assert_eq!(s.process_hosts, 4);
    assert_quiet_intact(&c);
    // The flooder keeps its newest.
    let at = t0() + chrono::Duration::hours(1);
    assert!(c
        .processes
        .lookup(Some("FLOOD"), Some(10_000 + 11_999), None, at, c.skew)
        .is_some());
    assert!(c
        .processes
        .lookup(Some("FLOOD"), Some(10_000), None, at, c.skew)
        .is_none());
}

#[test]
fn a_flood_of_small_4688s_past_the_entry_cap_evicts_only_the_flooder() {
    let cfg = CorrelateConfig::default();
    let mut c = Correlator::new(cfg.clone());
    c.advance(t0() + chrono::Duration::minutes(30));
    quiet_hosts(&mut c);
    flood(&mut c, 70_000, 0);
    let s = c.stats();
    assert_eq!(c.processes.len(), cfg.max_processes, "{s:?}");
    let floods = 70_000 + QUIET.len() * PER_QUIET as usize - cfg.max_processes;
    assert_eq!(s.process_evictions.entries, floods as u64, "{s:?}");
    assert_quiet_intact(&c);
    // Time still prunes, host by host: a day later everything is gone.
    c.advance(t0() + chrono::Duration::days(2));
    assert_eq!((c.processes.len(), c.stats().process_hosts), (0, 0));
    assert_eq!(
        Budgeted::bytes(&c.processes),
        0,
        "shards' own cost released"
    );
}
