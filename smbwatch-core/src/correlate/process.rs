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
//! reference clock. Whichever cap is reached, the host holding the most
//! bytes gives up its oldest entry ([`ProcessTable`]): one host's flood of
//! process creations evicts its own context, not every other host's. A process older than that, or created before smbwatch
//! started reading the host's log, has no context: the alert then carries
//! only what the network record named.

use std::collections::{BTreeSet, HashMap};

use chrono::{DateTime, Duration as TimeDelta, Utc};
use serde::{Deserialize, Serialize};

use super::file_drop::file_name;
pub use crate::alert::ProcessClass;
use crate::alert::{Alert, ProcessContext, Severity};
use crate::hostlog::ProcessCreation;
use crate::settings::Invalid;
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
    /// The error names the key (`process_classes.lolbins[2]`).
    pub fn validate(&self) -> Result<(), Invalid> {
        let mut seen: Vec<(String, &str)> = Vec::new();
        for (key, _, list) in self.lists() {
            for (i, name) in list.iter().enumerate() {
                let at = format!("process_classes.{key}[{i}]");
                if name.trim().is_empty() {
                    return Err(Invalid::new(at, "empty name"));
                }
                if name.len() > MAX_CLASS_NAME {
                    return Err(Invalid::new(
                        at,
                        format!("longer than {MAX_CLASS_NAME} bytes: not a file name"),
                    ));
                }
                if name.contains(['\\', '/', ':']) {
                    return Err(Invalid::new(
                        at,
                        format!("{name:?}: must be an image file name such as \"powershell.exe\", not a path"),
                    ));
                }
                let lower = name.to_ascii_lowercase();
                if let Some((_, other)) = seen.iter().find(|(n, _)| *n == lower) {
                    return Err(Invalid::new(
                        at,
                        format!("{name:?} is also listed in process_classes.{other}"),
                    ));
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
    /// Sysmon `ProcessGuid` (as logged).
    Guid(String),
    /// Process id (on the shard's host).
    Pid(u32),
}

impl HeapSize for ProcKey {
    fn heap_size(&self) -> usize {
        match self {
            Self::Guid(g) => g.heap_size(),
            Self::Pid(_) => 0,
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

/// Accounted cost of a host's shard itself, besides its entries: its name
/// (kept twice: the shard and the name index), the map slots and the two
/// ordering sets' nodes (a round figure at or above the real use), and
/// its table's fixed part (a flood of host names with one record each is
/// many small tables).
fn shard_cost(host: &str) -> usize {
    2 * host.len() + 256 + TimedIndex::<ProcKey, ProcEntry>::fixed_bytes()
}

/// One host's process creations.
#[derive(Debug)]
struct Shard {
    host: String,
    index: TimedIndex<ProcKey, ProcEntry>,
}

impl Shard {
    fn bytes(&self) -> usize {
        Budgeted::bytes(&self.index) + shard_cost(&self.host)
    }
}

/// Why process creations were evicted (each time from the host holding
/// the most bytes: see [`ProcessTable`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ProcessEvictions {
    /// `max_processes` reached.
    pub entries: u64,
    /// The correlator's `max_bytes` reached with this table the largest.
    pub bytes: u64,
}

/// Process creations, one shard per host (see the module docs).
///
/// **Fair shares.** When the table must give up an entry (its entry cap,
/// or the correlator's byte budget), the oldest entry of the host holding
/// the most bytes goes: a host flooding 4688s (or a forwarder lying in its
/// name) evicts its own context, and every other host keeps its own until
/// the flooder is down to their size. Hosts are ordered by bytes in a
/// B-tree, so an eviction costs O(log hosts) whatever the number of hosts;
/// shards are pruned by time in the order of their oldest entry, so a
/// prune that removes nothing costs one comparison. A name a hostile
/// forwarder invents is a host like any other: inventing many only splits
/// the flood into many small hosts, each of which evicts itself first once
/// it is the largest.
#[derive(Debug)]
pub(crate) struct ProcessTable {
    cap: usize,
    ids: HashMap<String, u32, ahash::RandomState>,
    shards: HashMap<u32, Shard, ahash::RandomState>,
    next_id: u32,
    /// (accounted bytes, shard): the heaviest host is the last.
    weights: BTreeSet<(usize, u32)>,
    /// (oldest entry's time, shard): what a prune must look at first.
    fronts: BTreeSet<(DateTime<Utc>, u32)>,
    entries: usize,
    bytes: usize,
    evictions: ProcessEvictions,
}

impl ProcessTable {
    /// At most `cap` entries (a GUID and a pid alias are two).
    pub fn new(cap: usize) -> Self {
        Self {
            cap: cap.max(1),
            ids: HashMap::default(),
            shards: HashMap::default(),
            next_id: 0,
            weights: BTreeSet::new(),
            fronts: BTreeSet::new(),
            entries: 0,
            bytes: 0,
            evictions: ProcessEvictions::default(),
        }
    }

    /// Run `f` on a shard and re-index it (weights, fronts, totals); an
    /// emptied shard is removed. `None` for an unknown shard.
    fn touch<R>(
        &mut self,
        id: u32,
        f: impl FnOnce(&mut TimedIndex<ProcKey, ProcEntry>) -> R,
    ) -> Option<R> {
        let shard = self.shards.get_mut(&id)?;
        let (b0, f0, n0) = (shard.bytes(), shard.index.oldest(), shard.index.len());
        let r = f(&mut shard.index);
        let (b1, f1, n1) = (shard.bytes(), shard.index.oldest(), shard.index.len());
        self.weights.remove(&(b0, id));
        if let Some(t) = f0 {
            self.fronts.remove(&(t, id));
        }
        self.entries = self.entries - n0 + n1;
        match f1 {
            Some(t) => {
                self.bytes = self.bytes - b0 + b1;
                self.weights.insert((b1, id));
                self.fronts.insert((t, id));
            }
            None => {
                // Empty: the shard goes, with its own cost.
                self.bytes -= b0;
                if let Some(shard) = self.shards.remove(&id) {
                    self.ids.remove(&shard.host);
                }
            }
        }
        Some(r)
    }

    /// The shard of `host`, created empty if new.
    fn shard_of(&mut self, host: String) -> u32 {
        if let Some(id) = self.ids.get(&host) {
            return *id;
        }
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        let shard = Shard {
            host: host.clone(),
            // The table's cap is enforced across shards, below.
            index: TimedIndex::new(usize::MAX),
        };
        let b = shard.bytes();
        self.bytes += b;
        self.weights.insert((b, id));
        self.shards.insert(id, shard);
        self.ids.insert(host, id);
        id
    }

    /// Evict the oldest entry of the host holding the most bytes; false
    /// when the table is empty.
    fn evict_heaviest(&mut self) -> bool {
        let Some(&(_, id)) = self.weights.last() else {
            return false;
        };
        // The indexes change only with their shard (`touch`, `shard_of`),
        // so the heaviest is always there.
        self.touch(id, |index| index.evict_oldest())
            .unwrap_or(false)
    }

    /// Keep a 4688 / Sysmon 1 record of `host` at `ts`. Records naming
    /// neither a GUID nor a pid cannot be found again and are not kept.
    pub fn insert(&mut self, ts: DateTime<Utc>, host: Option<&str>, p: &ProcessCreation) {
        let (guid, pid) = (&p.process.guid, p.process.pid);
        let needed = match (guid, pid) {
            (None, None) => return,
            (Some(_), Some(_)) => 2,
            _ => 1,
        };
        while self.entries + needed > self.cap && self.evict_heaviest() {
            self.evictions.entries += 1;
        }
        let rec = ProcRec {
            image: p.process.image.clone(),
            command_line: p.command_line.clone(),
            parent_image: p.parent_image.clone(),
            parent_pid: p.parent_pid,
            parent_guid: p.parent_guid.clone(),
            user: p.account.qualified(),
        };
        let id = self.shard_of(host_key(host));
        self.touch(id, |index| match (guid, pid) {
            (Some(g), pid) => {
                index.insert(ts, ProcKey::Guid(g.clone()), ProcEntry::Full(rec));
                if let Some(pid) = pid {
                    index.insert(ts, ProcKey::Pid(pid), ProcEntry::Alias(g.clone()));
                }
            }
            (None, Some(pid)) => index.insert(ts, ProcKey::Pid(pid), ProcEntry::Full(rec)),
            (None, None) => {}
        });
    }

    fn shard(&self, host: &str) -> Option<&Shard> {
        self.ids.get(host).and_then(|id| self.shards.get(id))
    }

    /// The creation under `guid`: on `host` first, else on any host
    /// (GUIDs are unique across hosts, and forwarders spell one host's
    /// name differently). Only alerts look, so the walk is rare.
    fn by_guid(&self, host: &str, guid: &str) -> Option<(DateTime<Utc>, &ProcRec)> {
        let key = ProcKey::Guid(guid.to_string());
        self.shard(host)
            .and_then(|s| newest_full(s, &key))
            .or_else(|| {
                self.shards
                    .values()
                    .filter_map(|s| newest_full(s, &key))
                    .max_by_key(|(ts, _)| *ts)
            })
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
        if let Some(found) = guid.and_then(|g| self.by_guid(host, g)) {
            return Some(found);
        }
        let (ts, entry) = self
            .shard(host)?
            .index
            .get(&ProcKey::Pid(pid?))
            .filter(|(ts, _)| *ts <= at + skew)
            .max_by_key(|(ts, _)| *ts)?;
        match entry {
            ProcEntry::Full(r) => Some((*ts, r)),
            ProcEntry::Alias(g) => self.by_guid(host, g),
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

    /// Drop creations older than `cutoff`, host by host in the order of
    /// their oldest entry.
    pub fn prune(&mut self, cutoff: DateTime<Utc>) {
        while let Some(&(ts, id)) = self.fronts.first() {
            if ts >= cutoff {
                return;
            }
            if self.touch(id, |index| index.prune(cutoff)).is_none() {
                // Not reachable (see `evict_heaviest`); never loop on it.
                self.fronts.remove(&(ts, id));
            }
        }
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.entries
    }

    /// Hosts with process context held.
    pub fn hosts(&self) -> usize {
        self.shards.len()
    }

    /// Entries evicted by the caps, by reason.
    pub fn evictions(&self) -> ProcessEvictions {
        self.evictions
    }

    /// Entries evicted by the caps.
    pub fn evicted(&self) -> u64 {
        self.evictions.entries + self.evictions.bytes
    }
}

/// The newest full record under `key` in one shard.
fn newest_full<'a>(s: &'a Shard, key: &ProcKey) -> Option<(DateTime<Utc>, &'a ProcRec)> {
    s.index
        .get(key)
        .filter_map(|(ts, e)| match e {
            ProcEntry::Full(r) => Some((*ts, r)),
            ProcEntry::Alias(_) => None,
        })
        .max_by_key(|(ts, _)| *ts)
}

impl Budgeted for ProcessTable {
    fn bytes(&self) -> usize {
        self.bytes
    }
    fn evict_oldest(&mut self) -> bool {
        let evicted = self.evict_heaviest();
        if evicted {
            self.evictions.bytes += 1;
        }
        evicted
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
