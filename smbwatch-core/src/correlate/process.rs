//! Process context: what 4688 and Sysmon 1 said about the processes that
//! later open SMB connections, and the process classes that raise an
//! alert's severity.
//!
//! Process creations are kept per host, keyed by Sysmon's `ProcessGuid`
//! where the record has one (it survives pid reuse, and NXLog drops
//! Sysmon's `ProcessId`) and by host and pid otherwise; a record with both
//! is stored once under its GUID with a small alias under its pid. A
//! lookup by pid takes the newest creation of that pid on that host not
//! after the connection (plus the clock skew): pids are reused.
//!
//! The table lives in the correlator and shares its byte budget
//! ([`super::CorrelateConfig::max_bytes`]); it is capped in entries
//! (`max_processes`) and pruned `process_retention` after creation by the
//! reference clock. A process older than that, or created before smbwatch
//! started reading the host's log, has no context: the alert then carries
//! only what the network record named.

use chrono::{DateTime, Duration as TimeDelta, Utc};
use serde::{Deserialize, Serialize};

use super::file_drop::file_name;
pub use crate::alert::ProcessClass;
use crate::alert::{Alert, ProcessContext, Severity};
use crate::hostlog::ProcessCreation;
use crate::timed::{Budgeted, HeapSize, TimedIndex};

/// `[process_classes]`: image file names per class, matched on the image's
/// file name case-insensitively (`powershell.exe`, not a path). A process of
/// any class opening SMB raises a high-severity alert. Every key optional;
/// the defaults follow the seed write-up (browsers, script interpreters)
/// and the usual LOLBin and Office lists.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProcessClassesConfig {
    /// Script interpreters.
    pub script_interpreters: Vec<String>,
    /// Living-off-the-land binaries.
    pub lolbins: Vec<String>,
    /// Office applications.
    pub office: Vec<String>,
    /// Web browsers.
    pub browsers: Vec<String>,
}

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_string()).collect()
}

impl Default for ProcessClassesConfig {
    fn default() -> Self {
        Self {
            script_interpreters: names(&[
                "powershell.exe",
                "powershell_ise.exe",
                "pwsh.exe",
                "python.exe",
                "pythonw.exe",
                "python3.exe",
                "wscript.exe",
                "cscript.exe",
                "mshta.exe",
            ]),
            lolbins: names(&[
                "rundll32.exe",
                "regsvr32.exe",
                "certutil.exe",
                "bitsadmin.exe",
                "msiexec.exe",
                "msbuild.exe",
                "installutil.exe",
                "regasm.exe",
                "regsvcs.exe",
                "cmstp.exe",
                "wmic.exe",
                "odbcconf.exe",
                "forfiles.exe",
            ]),
            office: names(&[
                "winword.exe",
                "excel.exe",
                "powerpnt.exe",
                "outlook.exe",
                "msaccess.exe",
                "mspub.exe",
                "onenote.exe",
                "visio.exe",
            ]),
            browsers: names(&[
                "chrome.exe",
                "msedge.exe",
                "firefox.exe",
                "iexplore.exe",
                "opera.exe",
                "brave.exe",
            ]),
        }
    }
}

/// Longest name accepted in `[process_classes]` (a Windows file name).
const MAX_CLASS_NAME: usize = 255;

impl ProcessClassesConfig {
    fn lists(&self) -> [(&'static str, ProcessClass, &[String]); 4] {
        [
            (
                "script_interpreters",
                ProcessClass::ScriptInterpreter,
                &self.script_interpreters,
            ),
            ("lolbins", ProcessClass::Lolbin, &self.lolbins),
            ("office", ProcessClass::Office, &self.office),
            ("browsers", ProcessClass::Browser, &self.browsers),
        ]
    }

    /// The class of an image file name (`powershell.exe`), if any.
    pub fn classify(&self, image_name: &str) -> Option<ProcessClass> {
        self.lists().into_iter().find_map(|(_, class, list)| {
            list.iter()
                .any(|n| n.eq_ignore_ascii_case(image_name))
                .then_some(class)
        })
    }

    /// Every name must be a bare file name, and in one class only.
    /// Returns the offending key (`lolbins[2]`) and the problem.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let mut seen: Vec<(String, &str)> = Vec::new();
        for (key, _, list) in self.lists() {
            for (i, name) in list.iter().enumerate() {
                let at = format!("{key}[{i}]");
                if name.trim().is_empty() {
                    return Err((at, "empty name".into()));
                }
                if name.len() > MAX_CLASS_NAME {
                    return Err((
                        at,
                        format!("longer than {MAX_CLASS_NAME} bytes: not a file name"),
                    ));
                }
                if name.contains(['\\', '/', ':']) {
                    return Err((
                        at,
                        format!("{name:?}: must be an image file name such as \"powershell.exe\", not a path"),
                    ));
                }
                let lower = name.to_ascii_lowercase();
                if let Some((_, other)) = seen.iter().find(|(n, _)| *n == lower) {
                    return Err((at, format!("{name:?} is also listed in {other}")));
                }
                seen.push((lower, key));
            }
        }
        Ok(())
    }
}

/// Lower-case host name: the key of every per-host table (forwarders
/// differ in case).
pub(super) fn host_key(host: Option<&str>) -> String {
    host.unwrap_or_default().to_ascii_lowercase()
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum ProcKey {
    /// Sysmon `ProcessGuid` (as logged; GUIDs are unique across hosts).
    Guid(String),
    /// Lower-case host name and pid.
    Pid(String, u32),
}

impl HeapSize for ProcKey {
    fn heap_size(&self) -> usize {
        match self {
            Self::Guid(g) => g.heap_size(),
            Self::Pid(h, _) => h.heap_size(),
        }
    }
}

/// One process creation.
#[derive(Debug)]
struct ProcRec {
    image: Option<String>,
    command_line: Option<String>,
    parent_image: Option<String>,
    parent_pid: Option<u32>,
    parent_guid: Option<String>,
    user: Option<String>,
}

#[derive(Debug)]
enum ProcEntry {
    Full(ProcRec),
    /// The pid of a process stored under this GUID.
    Alias(String),
}

impl HeapSize for ProcEntry {
    fn heap_size(&self) -> usize {
        match self {
            Self::Full(r) => {
                r.image.heap_size()
                    + r.command_line.heap_size()
                    + r.parent_image.heap_size()
                    + r.parent_guid.heap_size()
                    + r.user.heap_size()
            }
            Self::Alias(g) => g.heap_size(),
        }
    }
}

/// What a lookup found: the creation's context and its account.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Found {
    /// Command line, parent, class left for the caller.
    pub context: ProcessContext,
    /// The image as the creation record logged it.
    pub image: Option<String>,
    /// The account the creation record names.
    pub user: Option<String>,
}

/// Process creations by GUID and by host and pid (see the module docs).
#[derive(Debug)]
pub(crate) struct ProcessTable {
    index: TimedIndex<ProcKey, ProcEntry>,
}

impl ProcessTable {
    /// At most `cap` entries (a GUID and a pid alias are two).
    pub fn new(cap: usize) -> Self {
        Self {
            index: TimedIndex::new(cap),
        }
    }

    /// Keep a 4688 / Sysmon 1 record. Records naming neither a GUID nor a
    /// pid cannot be found again and are not kept.
    pub fn insert(&mut self, ts: DateTime<Utc>, host: Option<&str>, p: &ProcessCreation) {
        let rec = ProcRec {
            image: p.process.image.clone(),
            command_line: p.command_line.clone(),
            parent_image: p.parent_image.clone(),
            parent_pid: p.parent_pid,
            parent_guid: p.parent_guid.clone(),
            user: p.account.qualified(),
        };
        let host = host_key(host);
        match (&p.process.guid, p.process.pid) {
            (Some(g), pid) => {
                self.index
                    .insert(ts, ProcKey::Guid(g.clone()), ProcEntry::Full(rec));
                if let Some(pid) = pid {
                    self.index
                        .insert(ts, ProcKey::Pid(host, pid), ProcEntry::Alias(g.clone()));
                }
            }
            (None, Some(pid)) => {
                self.index
                    .insert(ts, ProcKey::Pid(host, pid), ProcEntry::Full(rec));
            }
            (None, None) => {}
        }
    }

    fn by_guid(&self, guid: &str) -> Option<(DateTime<Utc>, &ProcRec)> {
        self.index
            .get(&ProcKey::Guid(guid.to_string()))
            .filter_map(|(ts, e)| match e {
                ProcEntry::Full(r) => Some((*ts, r)),
                ProcEntry::Alias(_) => None,
            })
            .max_by_key(|(ts, _)| *ts)
    }

    /// The creation of a process: by GUID when given, else the newest
    /// creation of `pid` on `host` not after `at + skew`.
    fn find(
        &self,
        host: &str,
        pid: Option<u32>,
        guid: Option<&str>,
        at: DateTime<Utc>,
        skew: TimeDelta,
    ) -> Option<(DateTime<Utc>, &ProcRec)> {
        if let Some(found) = guid.and_then(|g| self.by_guid(g)) {
            return Some(found);
        }
        let (ts, entry) = self
            .index
            .get(&ProcKey::Pid(host.to_string(), pid?))
            .filter(|(ts, _)| *ts <= at + skew)
            .max_by_key(|(ts, _)| *ts)?;
        match entry {
            ProcEntry::Full(r) => Some((*ts, r)),
            ProcEntry::Alias(g) => self.by_guid(g),
        }
    }

    /// The context of the process `pid`/`guid` on `host` at `at`, with its
    /// parent's command line when the parent's creation was kept too.
    pub fn lookup(
        &self,
        host: Option<&str>,
        pid: Option<u32>,
        guid: Option<&str>,
        at: DateTime<Utc>,
        skew: TimeDelta,
    ) -> Option<Found> {
        let host = host_key(host);
        let (created, rec) = self.find(&host, pid, guid, at, skew)?;
        let parent = self
            .find(
                &host,
                rec.parent_pid,
                rec.parent_guid.as_deref(),
                created,
                skew,
            )
            .map(|(_, p)| p)
            // A record naming itself as its parent (a forged or reused
            // pid) has no parent to report.
            .filter(|p| !std::ptr::eq(*p, rec));
        Some(Found {
            context: ProcessContext {
                command_line: rec.command_line.clone(),
                parent_executable: rec.parent_image.clone(),
                parent_command_line: parent.and_then(|p| p.command_line.clone()),
                class: None,
            },
            image: rec.image.clone(),
            user: rec.user.clone(),
        })
    }

    /// Drop creations older than `cutoff`.
    pub fn prune(&mut self, cutoff: DateTime<Utc>) {
        self.index.prune(cutoff);
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Entries evicted by the caps.
    pub fn evicted(&self) -> u64 {
        self.index.evicted()
    }
}

impl Budgeted for ProcessTable {
    fn bytes(&self) -> usize {
        Budgeted::bytes(&self.index)
    }
    fn evict_oldest(&mut self) -> bool {
        self.index.evict_oldest()
    }
}

impl super::Correlator {
    /// [`Self::add_context_at`] the alert's own time.
    pub(super) fn add_process_context(&mut self, alert: &mut Alert, guid: Option<&str>) {
        self.add_context_at(alert, guid, alert.ts);
    }

    /// Fill `alert.process_context` from the creation of `alert.process`
    /// (by `guid`, else by host and pid as of `at`), fill a missing image
    /// and user from it, and raise the alert to high severity when the
    /// process's image is of a class.
    pub(super) fn add_context_at(
        &mut self,
        alert: &mut Alert,
        guid: Option<&str>,
        at: DateTime<Utc>,
    ) {
        let Some(p) = alert.process.as_mut() else {
            return;
        };
        let found = self
            .processes
            .lookup(alert.host.as_deref(), p.pid, guid, at, self.skew);
        let mut ctx = alert.process_context.take().unwrap_or_default();
        if let Some(f) = found {
            self.stats.with_process_context += 1;
            if p.executable.is_none() {
                p.executable.clone_from(&f.image);
            }
            if p.name.is_none() {
                p.name = f.image.as_deref().map(|i| file_name(i).to_string());
            }
            if alert.user.is_none() {
                alert.user = f.user;
            }
            ctx = ProcessContext {
                class: ctx.class,
                ..f.context
            };
        }
        ctx.class = p.name.as_deref().and_then(|n| self.classes.classify(n));
        if let (Some(class), Some(name)) = (ctx.class, p.name.as_deref()) {
            alert.message = format!("{}; {name} is {}", alert.message, class.label());
            alert.severity = alert.severity.max(Severity::High);
        }
        if ctx != ProcessContext::default() {
            alert.process_context = Some(ctx);
        }
    }
}
