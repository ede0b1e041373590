//! `lateral_movement_chain` and `remote_file_drop`: the host-side steps
//! that follow a scan.
//!
//! A scan alert's source that then shows, on some target, a network logon
//! (4624 type 3), administrative share access (5140/5145) or a file written
//! through a share ([`super::file_drop`]) completes a chain. The first step
//! on a (source, target) fires one chain alert per `chain_window`; a share
//! write fires its own (once per window too) even after that, since it is
//! the step that stages the payload: scan → logon → share write.

use std::net::IpAddr;

use chrono::{DateTime, Utc};

use super::file_drop::{file_name, FileDrop};
use super::process::host_key;
use super::wire::file_key;
use super::Correlator;
use crate::alert::{Alert, AlertKind, Severity};
use crate::hostlog::rules::is_admin_share;
use crate::hostlog::{HostEvent, HostRecord, WindowsEvent};
use crate::timed::HeapSize;

/// A share access or network logon kept for chains.
#[derive(Debug, Clone)]
pub(super) struct ChainRec {
    pub host: Option<String>,
    /// A logon (4624) or a share access (5140, 5145); `None` for a wire act.
    pub event: Option<WindowsEvent>,
    pub share: Option<String>,
    pub relative_target: Option<String>,
    pub user: Option<String>,
    pub user_sid: Option<String>,
    /// A share write (a [`FileDrop`]), not just an access.
    pub wrote: bool,
    /// A wire act (an `smb_*` alert; no event): what it showed.
    pub wire: Option<Box<crate::alert::SmbEvidence>>,
}

/// A scan alert kept for chains.
#[derive(Debug, Clone)]
pub(super) struct ScanRec {
    /// Start of the scan (evidence `first_seen`, else the alert time).
    pub start: DateTime<Utc>,
    /// The alert's time.
    pub alert_ts: DateTime<Utc>,
    pub kind: AlertKind,
}

impl HeapSize for ChainRec {
    fn heap_size(&self) -> usize {
        self.host.heap_size()
            + self.share.heap_size()
            + self.relative_target.heap_size()
            + self.user.heap_size()
            + self.user_sid.heap_size()
            + self.wire.as_ref().map_or(0, |w| evidence_size(w))
    }
}

/// Heap bytes of wire evidence (its strings and lists).
fn evidence_size(e: &crate::alert::SmbEvidence) -> usize {
    std::mem::size_of::<crate::alert::SmbEvidence>()
        + e.tree.heap_size()
        + e.file.heap_size()
        + e.pipe.heap_size()
        + e.interface.heap_size()
        + e.operations.heap_size()
        + e.dialects.heap_size()
        + e.domain.heap_size()
        + e.workstation.heap_size()
        + e.host_events.capacity() * 4
}

impl HeapSize for ScanRec {
    fn heap_size(&self) -> usize {
        0
    }
}

/// Key of the chains already raised: source, lower-case target host, and
/// whether the step was a share write.
pub(super) type FiredKey = (IpAddr, String, bool);

impl Correlator {
    /// Share access, network logons and file creations: file drops, and the
    /// chains they complete.
    pub(super) fn host_chain_event(&mut self, ev: &HostEvent) -> Vec<Alert> {
        let mut out = Vec::new();
        let mut drop = match &ev.record {
            HostRecord::ShareAccess(s) => FileDrop::from_share_write(s),
            HostRecord::FileCreation(f) => FileDrop::from_kernel_create(f),
            _ => None,
        };
        let mut joined = self.join_host(ev, drop.as_ref(), &mut out);
        if let Some(d) = &mut drop {
            let key = (
                host_key(ev.host.as_deref()),
                file_name(&d.path).to_ascii_lowercase(),
            );
            let window = self.chain_window;
            let seen = self
                .drops
                .get(&key)
                .any(|(t, ())| (*t - ev.ts).abs() <= window);
            if !seen {
                // Only for a drop not yet raised: the search walks the
                // chain events.
                if d.src.is_none() {
                    if let Some((src, user)) = self.sole_recent_source(ev) {
                        d.src = Some(src);
                        d.user = user;
                        // Now it has a source: the wire may have seen it.
                        joined |= self.join_host(ev, Some(d), &mut out);
                    }
                }
                // Kept even when the wire's alert carries it, so the same
                // drop's other records (5145 and Sysmon 11) stay one act.
                self.drops.insert(ev.ts, key, ());
                if !joined {
                    self.stats.file_drops += 1;
                    let alert = d.alert(ev);
                    match d.src {
                        // The wire may report it a moment later: while SMB
                        // samples arrive, it waits for the wire's alert.
                        Some(src) => {
                            self.host_alert(ev, alert, file_key(src, &d.path), &mut out);
                        }
                        None => out.push(alert),
                    }
                }
            }
        }
        self.joined_wire |= joined;
        let (src, share, relative_target) = match &ev.record {
            HostRecord::ShareAccess(s) if s.share_name.as_deref().is_some_and(is_admin_share) => {
                (s.src_ip, s.share_name.clone(), s.relative_target.clone())
            }
            HostRecord::Logon(l) if l.logon_type == Some(3) => (l.src_ip, None, None),
            _ => return out,
        };
        let Some(src) = src.filter(|a| !a.is_loopback()) else {
            return out;
        };
        // The client's logon session, which a service install or task
        // creation on the host names.
        if let Some(id) = ev.logon_id() {
            self.sessions
                .insert(ev.ts, (host_key(ev.host.as_deref()), id), src);
        }
        let account = ev.account();
        let rec = ChainRec {
            host: ev.host.clone(),
            event: Some(ev.windows_event()),
            share,
            relative_target,
            user: account.qualified(),
            user_sid: account.sid.clone(),
            wrote: drop.is_some(),
            wire: None,
        };
        let scans: Vec<ScanRec> = self.scans.get(&src).map(|(_, s)| s.clone()).collect();
        out.extend(
            scans
                .iter()
                .filter_map(|s| self.try_chain(src, s, ev.ts, &rec)),
        );
        self.chain_events.insert(ev.ts, src, rec);
        out
    }

    /// The one address (and its account) that logged on to or used a share
    /// of `ev`'s host in the `chain_window` before `ev` (plus skew); `None`
    /// when there were none or several.
    fn sole_recent_source(&self, ev: &HostEvent) -> Option<(IpAddr, Option<String>)> {
        let host = host_key(ev.host.as_deref());
        self.sole_source(ev.ts, |rec| host_key(rec.host.as_deref()) == host)
    }

    /// The one client address among the chain events within the chain
    /// window before `at` (and the skew after it) that `wanted` accepts,
    /// with the user of its latest; `None` when there were none or several.
    pub(super) fn sole_source(
        &self,
        at: DateTime<Utc>,
        wanted: impl Fn(&ChainRec) -> bool,
    ) -> Option<(IpAddr, Option<String>)> {
        let (from, to) = (at - self.chain_window, at + self.skew);
        let mut found: Option<(IpAddr, DateTime<Utc>, Option<String>)> = None;
        for (src, (ts, rec)) in self.chain_events.iter() {
            if *ts < from || *ts > to || !wanted(rec) {
                continue;
            }
            match &mut found {
                Some((s, _, _)) if s != src => return None,
                Some((_, t, u)) => {
                    if *ts >= *t {
                        *t = *ts;
                        u.clone_from(&rec.user);
                    }
                }
                None => found = Some((*src, *ts, rec.user.clone())),
            }
        }
        found.map(|(s, _, u)| (s, u))
    }

    /// Feed a scan alert (`smb_scan_fanout`, `smb_scan_trw`): remembered for
    /// chains, and checked against share/logon events already seen.
    pub fn on_scan_alert(&mut self, alert: &Alert) -> Vec<Alert> {
        if !matches!(alert.kind, AlertKind::SmbScanFanout | AlertKind::SmbScanTrw) {
            return Vec::new();
        }
        let Some(src) = alert.source_ip else {
            return Vec::new();
        };
        self.advance(alert.ts);
        self.stats.scan_alerts += 1;
        let s = ScanRec {
            start: alert
                .scan
                .as_ref()
                .map_or(alert.ts, |e| e.first_seen.min(alert.ts)),
            alert_ts: alert.ts,
            kind: alert.kind,
        };
        let seen: Vec<(DateTime<Utc>, ChainRec)> = self.chain_events.get(&src).cloned().collect();
        let out = seen
            .iter()
            .filter_map(|(ts, rec)| self.try_chain(src, &s, *ts, rec))
            .collect();
        self.scans.insert(alert.ts, src, s);
        self.enforce_budget();
        out
    }

    /// A chain alert if `rec` (at `ts`) follows scan `s` in time and this
    /// (source, target, write or not) has not fired within `chain_window`.
    pub(super) fn try_chain(
        &mut self,
        src: IpAddr,
        s: &ScanRec,
        ts: DateTime<Utc>,
        rec: &ChainRec,
    ) -> Option<Alert> {
        if ts < s.start - self.skew || ts > s.alert_ts + self.chain_window {
            return None;
        }
        let target = host_key(Some(rec.host.as_deref().unwrap_or("unknown host")));
        let fkey = (src, target.clone(), rec.wrote);
        if self
            .fired
            .get(&fkey)
            .any(|(f, ())| (*f - ts).abs() <= self.chain_window)
        {
            return None;
        }
        self.fired.insert(ts, fkey, ());
        self.stats.chains += 1;
        let host = rec.host.as_deref().unwrap_or("an unknown host");
        let who = rec
            .user
            .as_deref()
            .map(|u| format!(" as {u}"))
            .unwrap_or_default();
        let after = (ts - s.alert_ts).num_seconds();
        let when = if after >= 0 {
            format!("{after} s after")
        } else {
            format!("{} s before", -after)
        };
        let relative = rec
            .relative_target
            .as_deref()
            .map(|t| format!(" ({t})"))
            .unwrap_or_default();
        let (what, severity) = match &rec.share {
            Some(share) if rec.wrote => {
                // The steps before the write, from what was kept.
                let logged_on = self.chain_events.get(&src).any(|(t, r)| {
                    r.event == Some(WindowsEvent::Logon)
                        && *t <= ts
                        && host_key(r.host.as_deref()) == target
                });
                let steps = if logged_on {
                    "logged on over the network and then wrote"
                } else {
                    "wrote"
                };
                (
                    format!("{steps} \\\\*\\{share}{relative}"),
                    Severity::Critical,
                )
            }
            Some(share) => {
                let sev = if share.eq_ignore_ascii_case("IPC$") {
                    Severity::High
                } else {
                    Severity::Critical
                };
                (format!("accessed \\\\*\\{share}{relative}"), sev)
            }
            None => (
                "logged on over the network (4624 type 3)".to_string(),
                Severity::High,
            ),
        };
        let (what, evidence) = match &rec.wire {
            Some(w) => {
                // What the wire showed: the share, file, pipe and calls.
                let calls = match (&w.pipe, w.operations.is_empty()) {
                    (Some(p), false) => format!(" via \\{p} ({})", w.operations.join(", ")),
                    _ => String::new(),
                };
                (format!("{what}{calls}"), "SMB on the wire".to_owned())
            }
            None => (
                what,
                rec.event.map(|e| e.label().to_string()).unwrap_or_default(),
            ),
        };
        let msg = format!(
            "{src} scanned SMB ({}) then {what} on {host}{who}, {when} the scan alert [{evidence}]",
            s.kind.code(),
        );
        let mut a = Alert::new(ts, AlertKind::LateralMovementChain, severity, msg);
        if rec.wrote {
            // A write through the share is also a tool transfer.
            a.techniques.push("T1570");
        }
        a.event_code = rec.event.map(WindowsEvent::id);
        a.smb = rec.wire.as_deref().cloned();
        a.source_ip = Some(src);
        a.host = rec.host.clone();
        a.user = rec.user.clone();
        a.user_id = rec.user_sid.clone();
        a.share = rec.share.clone();
        Some(a)
    }
}
