//! Alerts as JSON lines with Elastic Common Schema (ECS) field names.
//!
//! One alert is one JSON object on one line, nested ECS style
//! (`{"event":{"kind":"alert",...}}`), so it can be shipped by Filebeat,
//! Vector or Fluent Bit without a custom mapping. The document is
//! [`ecs::Document`](super::ecs::Document), built once per alert by the
//! caller (who knows the sensor and the time): absent fields are omitted,
//! never `null`; fields ECS has no name for live under `smbwatch.*`.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde_json::Value;

use super::ecs::Document;

/// The document as a JSON value (nested objects).
pub fn to_ecs(doc: &Document<'_>) -> Value {
    serde_json::to_value(doc).expect("an ECS document serialises")
}

/// The document as one JSON line, without the trailing newline.
pub fn to_line(doc: &Document<'_>) -> String {
    // Strings, numbers and addresses only: serialising cannot fail.
    serde_json::to_string(doc).expect("an ECS document serialises")
}

/// Where JSON lines go: `-` is stdout, anything else a file path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JsonTarget {
    /// Standard output.
    Stdout,
    /// A file, opened for append (created if missing).
    File(PathBuf),
}

impl JsonTarget {
    /// Parses a `--json` argument: `-` is stdout, anything else a path.
    pub fn parse(arg: &str) -> Self {
        PathBuf::from(arg).into()
    }
}

/// `-` is stdout, any other path a file: the path is kept as it is (no
/// round trip through a string, which would mangle a non-UTF-8 name).
impl From<PathBuf> for JsonTarget {
    fn from(path: PathBuf) -> Self {
        if path.as_os_str() == "-" {
            Self::Stdout
        } else {
            Self::File(path)
        }
    }
}

/// Written as in the configuration: `-` or the path.
impl serde::Serialize for JsonTarget {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Stdout => s.serialize_str("-"),
            Self::File(p) => serde::Serialize::serialize(p, s),
        }
    }
}

/// Read as in the configuration (`alert.json`); an empty path is refused.
impl<'de> serde::Deserialize<'de> for JsonTarget {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let path = <PathBuf as serde::Deserialize>::deserialize(d)?;
        if path.as_os_str().is_empty() {
            return Err(serde::de::Error::custom(
                "empty path (use \"-\" for stdout)",
            ));
        }
        Ok(path.into())
    }
}

impl std::fmt::Display for JsonTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Stdout => f.write_str("stdout"),
            Self::File(p) => write!(f, "{}", p.display()),
        }
    }
}

/// Errors of the JSON lines sink.
#[derive(Debug, thiserror::Error)]
pub enum JsonError {
    /// The output file could not be opened.
    #[error("cannot open JSON alert file {path}: {source}")]
    Open {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The path is a symbolic link (refused, see [`JsonSink::open`]).
    #[error(
        "refusing JSON alert file {path}: it is a symbolic link (give the real path, or `-` for stdout)"
    )]
    Symlink {
        /// The link.
        path: PathBuf,
    },
    /// A line could not be written or flushed.
    #[error("cannot write JSON alert to {target}: {source}")]
    Write {
        /// `stdout` or the file path.
        target: String,
        /// Why.
        source: io::Error,
    },
}

/// Writes one JSON line per alert and flushes after each, so a reader tailing
/// the file (or a pipe) sees every alert as soon as it is raised.
pub struct JsonSink {
    name: String,
    /// The file, for [`JsonSink::reopen`]; `None` for stdout and writers.
    path: Option<PathBuf>,
    out: Mutex<Box<dyn Write + Send>>,
}

impl std::fmt::Debug for JsonSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JsonSink")
            .field("target", &self.name)
            .finish()
    }
}

impl JsonSink {
    /// Opens the target: stdout, or the file for append, created if missing
    /// with mode [`FILE_MODE`] (0640, less the umask). A path that is a
    /// symbolic link is refused.
    pub fn open(target: &JsonTarget) -> Result<Self, JsonError> {
        match target {
            JsonTarget::Stdout => Ok(Self::from_writer("stdout", Box::new(io::stdout()))),
            JsonTarget::File(path) => {
                let f = open_append(path)?;
                let mut sink = Self::from_writer(
                    path.display().to_string(),
                    Box::new(f) as Box<dyn Write + Send>,
                );
                sink.path = Some(path.clone());
                Ok(sink)
            }
        }
    }

    /// Opens the file again by its path (creating it if logrotate moved
    /// it away) and writes there from now on; stdout is left alone. If the
    /// open fails, the old file stays in use.
    pub fn reopen(&self) -> Result<(), JsonError> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let f = open_append(path)?;
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        // Lines are flushed after each write: nothing is pending in the old one.
        *out = Box::new(f);
        Ok(())
    }

    /// A sink over any writer (a pipe, a buffer in tests); `name` appears in
    /// error messages.
    pub fn from_writer(name: impl Into<String>, out: Box<dyn Write + Send>) -> Self {
        Self {
            name: name.into(),
            path: None,
            out: Mutex::new(out),
        }
    }

    /// Writes the alert's document as one line and flushes.
    pub fn write(&self, doc: &Document<'_>) -> Result<(), JsonError> {
        let mut line = to_line(doc);
        line.push('\n');
        // A poisoned lock only means another thread panicked mid-write; the
        // writer itself is still usable.
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        out.write_all(line.as_bytes())
            .and_then(|()| out.flush())
            .map_err(|source| JsonError::Write {
                target: self.name.clone(),
                source,
            })
    }
}

/// Mode of a newly created alert file: the owner writes, a log shipper's
/// group (e.g. `adm`) reads, nobody else: alerts name hosts, users and
/// processes.
pub const FILE_MODE: u32 = 0o640;

/// Opens for append, creating with [`FILE_MODE`]. A symbolic link as the
/// last component is refused (`O_NOFOLLOW`): smbwatch runs as root, and a
/// link planted where the alert file goes would make it append to any file
/// the link names.
fn open_append(path: &Path) -> Result<File, JsonError> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(FILE_MODE)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(|source| {
            let is_link = std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink());
            if source.raw_os_error() == Some(libc::ELOOP) && is_link {
                JsonError::Symlink {
                    path: path.to_owned(),
                }
            } else {
                JsonError::Open {
                    path: path.to_owned(),
                    source,
                }
            }
        })
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;
    use std::sync::Arc;

    use chrono::{DateTime, TimeZone, Utc};
    use serde_json::json;

    use super::*;
    use crate::alert::{Alert, AlertKind, ProcessInfo, ScanEvidence, Severity};

    fn ts(s: u32, ms: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2024, 5, 1, 12, 0, s).unwrap()
            + chrono::Duration::milliseconds(ms.into())
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn scan_alert() -> Alert {
        let mut a = Alert::new(
            ts(7, 250),
            AlertKind::SmbScanFanout,
            Severity::High,
            "192.0.2.10 reached 3 hosts on 445 in 60 s".into(),
        );
        a.techniques = vec!["T1046", "T1210"];
        a.source_ip = Some(ip("192.0.2.10"));
        a.source_port = Some(50123);
        a.destination_ip = Some(ip("198.51.100.1"));
        a.destination_port = Some(445);
        a.community_id = Some("1:LQU9qZlK+B5F3KDmev6m5PMibrg=".into());
        a.ifindex = Some(3);
        a.vlan = Some(100);
        a.scan = Some(ScanEvidence {
            distinct_destinations: 3,
            destinations: vec![ip("198.51.100.1"), ip("198.51.100.2"), ip("2001:db8::3")],
            syns: 4,
            fragmented_syns: 0,
            accepted: 1,
            refused: 2,
            window_secs: 60,
            first_seen: ts(1, 0),
            last_seen: ts(7, 250),
            ..Default::default()
        });
        a
    }

    #[test]
    fn scan_alert_has_ecs_fields_nested() {
        let v = to_ecs(&crate::alert::ecs::test_doc(&scan_alert()));
        assert_eq!(v["@timestamp"], "2024-05-01T12:00:07.250Z");
        assert_eq!(v["ecs"]["version"], "9.4.0");
        let e = &v["event"];
        assert_eq!(e["kind"], "alert");
        assert_eq!(e["category"], json!(["intrusion_detection", "network"]));
        assert_eq!(e["type"], json!(["info"]));
        assert_eq!(
            (&e["module"], &e["dataset"]),
            (&json!("smbwatch"), &json!("smbwatch.alert"))
        );
        // No source event, no code: the slug is the rule's id.
        assert!(e.get("code").is_none());
        assert_eq!(e["severity"], 73);
        assert_eq!(e["risk_score"], 73.0);
        assert_eq!(e["created"], "2026-01-02T03:04:05.000Z");
        assert_eq!(e["start"], "2024-05-01T12:00:01.000Z");
        assert_eq!(e["end"], "2024-05-01T12:00:07.250Z");
        assert_eq!(e["id"].as_str().unwrap().len(), 32);
        assert_eq!(v["rule"]["id"], "smb_scan_fanout");
        assert_eq!(v["rule"]["name"], "SMB scan: fan-out to many hosts");
        assert_eq!(v["rule"]["ruleset"], "smbwatch");
        assert_eq!(v["source"]["ip"], "192.0.2.10");
        assert_eq!(v["source"]["port"], 50123);
        // The first flow's destination, with its community ID.
        assert_eq!(v["destination"]["ip"], "198.51.100.1");
        assert_eq!(v["destination"]["port"], 445);
        assert_eq!(v["network"]["transport"], "tcp");
        assert_eq!(v["network"]["type"], "ipv4");
        assert_eq!(v["network"]["direction"], "internal");
        assert_eq!(v["threat"]["technique"]["id"], json!(["T1046", "T1210"]));
        assert_eq!(v["threat"]["tactic"]["id"], json!(["TA0007", "TA0008"]));
        assert_eq!(v["threat"]["framework"], "MITRE ATT&CK");
        assert_eq!(
            v["related"]["ip"],
            json!(["192.0.2.10", "198.51.100.1", "198.51.100.2", "2001:db8::3"])
        );
        assert_eq!(v["observer"]["product"], "smbwatch");
        assert_eq!(
            v["network"]["community_id"],
            "1:LQU9qZlK+B5F3KDmev6m5PMibrg="
        );
        assert_eq!(v["observer"]["ingress"]["interface"]["id"], "3");
        assert_eq!(v["observer"]["ingress"]["vlan"]["id"], "100");
        let s = &v["smbwatch"];
        assert_eq!(s["distinct_destinations"], 3);
        assert_eq!(
            s["destinations"],
            json!(["198.51.100.1", "198.51.100.2", "2001:db8::3"])
        );
        assert_eq!(s["syns"], 4);
        assert_eq!(s["accepted"], 1);
        assert_eq!(s["refused"], 2);
        assert_eq!(s["window_secs"], 60);
        // Absent fields are omitted, not null.
        assert!(v.get("process").is_none());
        assert!(v.get("user").is_none());
        assert!(!to_line(&crate::alert::ecs::test_doc(&scan_alert())).contains("null"));
    }

    #[test]
    fn host_alert_carries_process_user_host_share() {
        let mut a = Alert::new(
            ts(0, 0),
            AlertKind::SuspiciousSmbClient,
            Severity::Medium,
            "python.exe opened 445".into(),
        );
        a.destination_ip = Some(ip("198.51.100.7"));
        a.process = Some(ProcessInfo {
            name: Some("python.exe".into()),
            pid: Some(4242),
            executable: Some(r"C:\Python\python.exe".into()),
        });
        a.processes = vec![ProcessInfo {
            name: Some("dns.exe".into()),
            pid: None,
            executable: None,
        }];
        a.user = Some(r"CORP\alice".into());
        a.host = Some("WS01".into());
        a.share = Some(r"\\*\ADMIN$".into());
        let v = to_ecs(&crate::alert::ecs::test_doc(&a));
        assert_eq!(v["destination"]["ip"], "198.51.100.7");
        assert_eq!(v["process"]["name"], "python.exe");
        assert_eq!(v["process"]["pid"], 4242);
        assert_eq!(v["process"]["executable"], r"C:\Python\python.exe");
        assert_eq!(v["user"]["name"], "alice");
        assert_eq!(v["user"]["domain"], "CORP");
        assert_eq!(v["host"]["name"], "ws01");
        assert_eq!(v["related"]["user"], json!(["alice"]));
        assert_eq!(v["related"]["hosts"], json!(["ws01"]));
        assert_eq!(v["smbwatch"]["share"], r"\\*\ADMIN$");
        assert_eq!(v["smbwatch"]["processes"], json!([{"name": "dns.exe"}]));
        assert_eq!(v["threat"]["technique"]["id"], json!(["T1210"]));
        // No source address: no direction.
        assert!(v["network"].get("direction").is_none());
        assert!(v["smbwatch"].get("syns").is_none());
    }

    /// The whole line, byte for byte: field order and types are the
    /// contract with whoever indexes these lines.
    #[test]
    fn lines_are_exact() {
        assert_eq!(
            to_line(&crate::alert::ecs::test_doc(&scan_alert())),
            r#"{"@timestamp":"2024-05-01T12:00:07.250Z","message":"192.0.2.10 reached 3 hosts on 445 in 60 s","ecs":{"version":"9.4.0"},"event":{"kind":"alert","category":["intrusion_detection","network"],"type":["info"],"module":"smbwatch","dataset":"smbwatch.alert","id":"7e7a5d799cd2a0e5c4723ba7789e0956","severity":73,"risk_score":73.0,"created":"2026-01-02T03:04:05.000Z","start":"2024-05-01T12:00:01.000Z","end":"2024-05-01T12:00:07.250Z"},"rule":{"id":"smb_scan_fanout","name":"SMB scan: fan-out to many hosts","reference":"docs/siem.md#smb_scan_fanout","ruleset":"smbwatch","version":"1"},"source":{"ip":"192.0.2.10","port":50123},"destination":{"ip":"198.51.100.1","port":445},"network":{"transport":"tcp","type":"ipv4","direction":"internal","community_id":"1:LQU9qZlK+B5F3KDmev6m5PMibrg="},"threat":{"framework":"MITRE ATT&CK","tactic":{"id":["TA0007","TA0008"],"name":["Discovery","Lateral Movement"],"reference":["https://attack.mitre.org/tactics/TA0007/","https://attack.mitre.org/tactics/TA0008/"]},"technique":{"id":["T1046","T1210"],"name":["Network Service Discovery","Exploitation of Remote Services"],"reference":["https://attack.mitre.org/techniques/T1046/","https://attack.mitre.org/techniques/T1210/"]}},"observer":{"type":"ids","vendor":"smbwatch","product":"smbwatch","version":"@VERSION@","ingress":{"interface":{"id":"3"},"vlan":{"id":"100"}}},"related":{"ip":["192.0.2.10","198.51.100.1","198.51.100.2","2001:db8::3"]},"smbwatch":{"distinct_destinations":3,"destinations":["198.51.100.1","198.51.100.2","2001:db8::3"],"syns":4,"accepted":1,"refused":2,"window_secs":60}}"#
            .replace("@VERSION@", crate::alert::sensor::VERSION)
        );
        let mut a = Alert::new(
            ts(0, 0),
            AlertKind::AdminShareAccess,
            Severity::Low,
            "share".into(),
        );
        a.source_ip = Some(ip("2001:db8::1"));
        a.destination_ip = Some(ip("198.51.100.7"));
        a.destination_port = Some(445);
        a.ifindex = Some(2);
        a.process = Some(ProcessInfo::default());
        a.processes = vec![
            ProcessInfo::default(),
            ProcessInfo {
                name: None,
                pid: Some(4),
                executable: Some("System".into()),
            },
        ];
        a.user = Some("corp\\u\"\n".into());
        a.user_id = Some("S-1-5-21-1".into());
        a.event_code = Some(5140);
        a.host = Some("WS01".into());
        a.share = Some(r"\\*\C$".into());
        assert_eq!(
            to_line(&crate::alert::ecs::test_doc(&a)),
            r#"{"@timestamp":"2024-05-01T12:00:00.000Z","message":"share","ecs":{"version":"9.4.0"},"event":{"kind":"alert","category":["intrusion_detection","network","file"],"type":["info"],"module":"smbwatch","dataset":"smbwatch.alert","code":"5140","id":"25be58086c404e973bc0da6cb26cb583","severity":21,"risk_score":21.0,"created":"2026-01-02T03:04:05.000Z"},"rule":{"id":"admin_share_access","name":"Administrative share access","reference":"docs/siem.md#admin_share_access","ruleset":"smbwatch","version":"1"},"source":{"ip":"2001:db8::1"},"destination":{"ip":"198.51.100.7","port":445},"network":{"transport":"tcp","type":"ipv6","direction":"internal"},"threat":{"framework":"MITRE ATT&CK","tactic":{"id":["TA0008"],"name":["Lateral Movement"],"reference":["https://attack.mitre.org/tactics/TA0008/"]},"technique":{"id":["T1021"],"name":["Remote Services"],"reference":["https://attack.mitre.org/techniques/T1021/"],"subtechnique":{"id":["T1021.002"],"name":["SMB/Windows Admin Shares"],"reference":["https://attack.mitre.org/techniques/T1021/002/"]}}},"observer":{"type":"ids","vendor":"smbwatch","product":"smbwatch","version":"@VERSION@","ingress":{"interface":{"id":"2"}}},"user":{"name":"u\"\n","domain":"CORP","id":"S-1-5-21-1"},"host":{"name":"ws01"},"related":{"ip":["2001:db8::1","198.51.100.7"],"user":["u\"\n","S-1-5-21-1"],"hosts":["ws01"]},"smbwatch":{"share":"\\\\*\\C$","processes":[{},{"pid":4,"executable":"System"}]}}"#
            .replace("@VERSION@", crate::alert::sensor::VERSION)
        );
    }

    /// An event time RFC 3339 cannot express never reaches `@timestamp`:
    /// it is clamped, and the original is kept beside it.
    #[test]
    fn out_of_range_times_give_a_valid_timestamp() {
        for (ts, want) in crate::alert::ecs::time::tests::out_of_range_times() {
            let mut a = scan_alert();
            a.ts = ts;
            a.scan.as_mut().unwrap().first_seen = ts;
            let v = to_ecs(&crate::alert::ecs::test_doc(&a));
            assert_eq!(v["@timestamp"], want, "{ts:?}");
            crate::alert::ecs::time::tests::assert_valid_time(v["@timestamp"].as_str().unwrap());
            crate::alert::ecs::time::tests::assert_valid_time(
                v["event"]["start"].as_str().unwrap(),
            );
            assert_eq!(
                v["smbwatch"]["original_timestamp"],
                ts.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
            );
        }
        assert!(
            to_ecs(&crate::alert::ecs::test_doc(&scan_alert()))["smbwatch"]
                .get("original_timestamp")
                .is_none()
        );
    }

    /// A `Write` over a shared buffer, to read back what the sink wrote.
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn sink_writes_one_parseable_line_per_alert() {
        let buf = Shared::default();
        let sink = JsonSink::from_writer("buf", Box::new(buf.clone()));
        sink.write(&crate::alert::ecs::test_doc(&scan_alert()))
            .unwrap();
        sink.write(&crate::alert::ecs::test_doc(&scan_alert()))
            .unwrap();
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        for l in lines {
            let v: Value = serde_json::from_str(l).unwrap();
            assert_eq!(v, to_ecs(&crate::alert::ecs::test_doc(&scan_alert())));
        }
    }

    #[test]
    fn file_sink_appends() {
        let dir = std::env::temp_dir().join(format!("smbwatch-json-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("alerts.jsonl");
        std::fs::write(&path, "{\"existing\":true}\n").unwrap();
        let sink = JsonSink::open(&JsonTarget::parse(path.to_str().unwrap())).unwrap();
        sink.write(&crate::alert::ecs::test_doc(&scan_alert()))
            .unwrap();
        drop(sink);
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0], "{\"existing\":true}");
    }

    fn temp_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("smbwatch-json-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn new_file_is_not_world_readable() {
        use std::os::unix::fs::PermissionsExt;
        let dir = temp_dir("mode");
        let path = dir.join("alerts.jsonl");
        JsonSink::open(&JsonTarget::File(path.clone()))
            .unwrap()
            .write(&crate::alert::ecs::test_doc(&scan_alert()))
            .unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        std::fs::remove_dir_all(&dir).unwrap();
        // 0640 less whatever the umask takes away.
        assert_eq!(mode & !FILE_MODE, 0, "{mode:o}");
        assert_ne!(mode & 0o600, 0, "{mode:o}");
    }

    #[test]
    fn a_symlink_is_refused_and_its_target_untouched() {
        let dir = temp_dir("symlink");
        let victim = dir.join("victim");
        std::fs::write(&victim, "precious\n").unwrap();
        let link = dir.join("alerts.jsonl");
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        let err = JsonSink::open(&JsonTarget::File(link.clone())).unwrap_err();
        let text = std::fs::read_to_string(&victim).unwrap();
        // A dangling link is refused too (it would create the target).
        let dangling = dir.join("dangling.jsonl");
        std::os::unix::fs::symlink(dir.join("nothing-here"), &dangling).unwrap();
        let err2 = JsonSink::open(&JsonTarget::File(dangling.clone())).unwrap_err();
        let created = dir.join("nothing-here").exists();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(matches!(err, JsonError::Symlink { .. }), "{err}");
        assert!(
            err.to_string().contains(&link.display().to_string()),
            "{err}"
        );
        assert!(err.to_string().contains("symbolic link"), "{err}");
        assert_eq!(text, "precious\n");
        assert!(matches!(err2, JsonError::Symlink { .. }), "{err2}");
        assert!(!created);
    }

    /// logrotate moves the file; after a reopen the next alert lands in a
    /// new file at the path, and the moved file keeps what it had.
    #[test]
    fn reopen_follows_the_path_after_rotation() {
        use std::os::unix::fs::PermissionsExt;
        let dir = temp_dir("reopen");
        let path = dir.join("alerts.json");
        let sink = JsonSink::open(&JsonTarget::File(path.clone())).unwrap();
        let doc_alert = scan_alert();
        let doc = crate::alert::ecs::test_doc(&doc_alert);
        sink.write(&doc).unwrap();
        let rotated = dir.join("alerts.json.1");
        std::fs::rename(&path, &rotated).unwrap();
        sink.write(&doc).unwrap();
        sink.reopen().unwrap();
        sink.write(&doc).unwrap();
        let lines = |p: &Path| std::fs::read_to_string(p).unwrap().lines().count();
        let (old, new) = (lines(&rotated), lines(&path));
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        // Reopening stdout is a no-op, not an error.
        JsonSink::open(&JsonTarget::Stdout)
            .unwrap()
            .reopen()
            .unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!((old, new), (2, 1));
        assert_eq!(mode & !FILE_MODE, 0, "{mode:o}");
    }

    #[test]
    fn open_error_names_the_path() {
        let err = JsonSink::open(&JsonTarget::File("/nonexistent-dir/x.jsonl".into())).unwrap_err();
        assert!(
            err.to_string().contains("/nonexistent-dir/x.jsonl"),
            "{err}"
        );
    }

    #[test]
    fn dash_is_stdout() {
        assert_eq!(JsonTarget::parse("-"), JsonTarget::Stdout);
        assert_eq!(
            JsonTarget::parse("a.jsonl"),
            JsonTarget::File("a.jsonl".into())
        );
    }
}
