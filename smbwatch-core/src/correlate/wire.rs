//! SMB alerts from the wire, joined with host logs: one alert per act
//! whoever reported it, and chains that name what the wire showed.
//!
//! Two acts are reported both on the wire and by Windows: access to an
//! administrative share (`smb_admin_share` on a disk share, or on `IPC$`
//! for a remote-administration pipe; Security 5140/5145, which raise
//! `admin_share_access`) and a file written through
//! one (`smb_file_drop`; 5145 WriteData or Sysmon 11, which raise
//! `remote_file_drop`). The act's key is (client address, share name) or
//! (client address, file name).
//!
//! - **Wire first** (the usual order: host logs arrive after forwarding):
//!   when host events can arrive, the wire alert waits up to `[smb]
//!   host_wait` for the host record. If it comes, the one alert carries
//!   both: the wire's fields plus `event.code`, `host.name`, `user.id` and
//!   `smb.host_events`, and the host-side alert is not raised. If not, the
//!   wire alert goes out alone at the deadline, and a host record of the
//!   same act arriving later (within `retention` plus `clock_skew`) raises
//!   nothing more (counted: [`super::CorrelateStats::joined_late`]).
//! - **Host first** (a host record dated before the packets, as replay's
//!   merge by time meets it): once SMB samples arrive, the host alert waits
//!   `host_wait` for the wire's, which then goes out carrying both; the
//!   act's other records meanwhile add their event ids. Without a wire
//!   alert it goes out alone at its deadline. Before any SMB sample, host
//!   alerts go out at once, and a later wire alert of the act is not
//!   raised (counted: [`super::CorrelateStats::joined_late`]).
//!
//! Every wire act that follows a scan alert of its source completes a
//! `lateral_movement_chain` naming the act (share, file, pipe, RPC
//! operation), as host records do.

use std::collections::VecDeque;
use std::net::IpAddr;

use chrono::{DateTime, Utc};

use super::chain::ChainRec;
use super::file_drop::{file_name, FileDrop};
use super::Correlator;
use crate::alert::{Alert, AlertKind};
use crate::hostlog::{HostEvent, HostRecord};
use crate::smb::share_name;
use crate::timed::add;

/// Wire alerts waiting for their host record at most.
pub const MAX_WAITING: usize = 4096;
/// Host alerts waiting for the wire's at most (they carry a command line
/// of up to 4 KiB twice: about 10 MiB at the cap).
pub const MAX_HOST_WAITING: usize = 1024;

/// (client, `share:ADMIN$` or `file:name.exe`).
pub(super) type ActKey = (IpAddr, String);

/// Alerts of one side waiting for the other side's report of their act.
#[derive(Debug, Default)]
pub(super) struct Waiting {
    /// Wire alerts waiting for host records: (deadline, alert, key), in
    /// arrival order.
    queue: VecDeque<(DateTime<Utc>, Alert, ActKey)>,
    /// Host alerts (service installs, task creations) waiting for the
    /// wire's: (deadline, alert, key, what the wire alert would carry).
    host: VecDeque<(DateTime<Utc>, Alert, ActKey, HostCarry)>,
}

/// What a host record adds to the wire alert of its act.
#[derive(Debug)]
pub(super) struct HostCarry {
    id: u32,
    /// The event ids of the act's other records that arrived while it
    /// waited (a 7045 beside its 4697), at most 7.
    more: Vec<u32>,
    host: Option<String>,
    user_id: Option<String>,
    user: Option<String>,
    /// `; HOST logged it too: service X [event 4697]`.
    suffix: String,
}

impl HostCarry {
    /// The evidence of `ev`.
    pub(super) fn of(ev: &HostEvent) -> Self {
        let id = ev.event_id();
        let account = ev.account();
        let host = ev.host.as_deref().unwrap_or("the host");
        // What only the host knows: the service or task's name and command.
        let what = match &ev.record {
            HostRecord::ServiceInstall(s) => named("service", &s.service_name, &s.command),
            HostRecord::TaskCreation(t) => named("task", &t.task_name, &t.command),
            _ => String::new(),
        };
        Self {
            id,
            more: Vec::new(),
            host: ev.host.clone(),
            user_id: account.sid.clone(),
            user: account.qualified(),
            suffix: format!("; {host} logged it too{what} [event {id}]"),
        }
    }

    /// Adds only the record's event id to an alert another record of the
    /// same act already completed.
    fn apply_id(self, a: &mut Alert) {
        if let Some(smb) = a.smb.as_mut() {
            for id in std::iter::once(self.id).chain(self.more) {
                if !smb.host_events.contains(&id) && smb.host_events.len() < 8 {
                    smb.host_events.push(id);
                }
            }
        }
    }

    /// Puts the evidence on the wire alert of the same act.
    fn apply(mut self, a: &mut Alert) {
        a.event_code = Some(self.id);
        a.host = a.host.take().or(self.host.take());
        a.user_id = a.user_id.take().or(self.user_id.take());
        a.user = a.user.take().or(self.user.take());
        a.message.push_str(&self.suffix);
        self.apply_id(a);
    }
}

/// The act key of `src`'s access to `share` (bare, `\\*\C$` or
/// `\\server\C$`: the host's and the wire's forms give the same key).
pub(super) fn share_key(src: IpAddr, share: &str) -> ActKey {
    (
        src,
        format!("share:{}", share_name(share).to_ascii_uppercase()),
    )
}

/// The act key of a file `src` wrote (share-relative or a full local
/// path: the name alone is compared).
pub(super) fn file_key(src: IpAddr, path: &str) -> ActKey {
    (
        src,
        format!("file:{}", file_name(path).to_ascii_lowercase()),
    )
}

/// The act key of a wire alert, for the kinds host logs also report.
fn wire_key(a: &Alert) -> Option<ActKey> {
    let src = a.source_ip?;
    match a.kind {
        AlertKind::SmbAdminShare => {
            // IPC$ too: the wire raises it for a remote-administration
            // pipe, Windows logs the same tree connect as 5140/5145 IPC$.
            Some(share_key(src, a.share.as_deref()?))
        }
        AlertKind::SmbFileDrop => Some(file_key(src, a.smb.as_ref()?.file.as_deref()?)),
        AlertKind::SmbRemoteService => Some((src, super::remote_exec::SERVICE.to_owned())),
        AlertKind::SmbRemoteTask => Some((src, super::remote_exec::TASK.to_owned())),
        _ => None,
    }
}

/// The act keys a host record reports.
fn host_keys(ev: &HostEvent, drop: Option<&FileDrop>) -> Vec<ActKey> {
    let mut keys = Vec::new();
    if let Some((Some(src), Some(share))) = ev
        .as_share_access()
        .map(|s| (s.src_ip, s.share_name.as_deref()))
    {
        keys.push(share_key(src, share));
    }
    if let Some(d) = drop {
        if let Some(src) = d.src {
            keys.push(file_key(src, &d.path));
        }
    }
    keys
}

impl Correlator {
    /// How long a wire alert waits for its host record (`[smb]
    /// host_wait`; zero: never).
    #[must_use]
    pub fn with_host_wait(mut self, d: std::time::Duration) -> Self {
        self.host_wait = crate::timed::delta(d);
        self
    }

    /// An alert of the SMB rules (seen on the wire). Returns what goes out
    /// now: the alert itself (unless it waits for a host record or a host
    /// record already reported the act), and the chains it completes.
    /// `wait`: host events can arrive, so waiting is worth it.
    pub fn on_wire_alert(&mut self, alert: Alert, wait: bool) -> Vec<Alert> {
        self.advance(alert.ts);
        let mut out = self.wire_chain(&alert);
        let Some(key) = wire_key(&alert) else {
            out.push(alert);
            return out;
        };
        let window = add(crate::timed::delta(self.cfg.retention), self.skew);
        // Host alerts of the act waiting for this one: one alert, the
        // wire's, carrying the first one's evidence and the others' ids
        // (a 5140 and a 5145 of one share, a 5145 and a Sysmon 11 of one
        // file).
        let mut alert = alert;
        let mut joined = false;
        while let Some(i) = self
            .waiting
            .host
            .iter()
            .position(|(_, h, k, _)| *k == key && (h.ts - alert.ts).abs() <= window)
        {
            let (_, _, _, carry) = self.waiting.host.remove(i).expect("found");
            if joined {
                carry.apply_id(&mut alert);
                self.stats.joined_late += 1;
            } else {
                carry.apply(&mut alert);
                self.stats.joined += 1;
                joined = true;
            }
        }
        if joined {
            self.wire_acts.insert(alert.ts, key, ());
            out.push(alert);
            return out;
        }
        if self
            .host_acts
            .get(&key)
            .any(|(t, ())| (*t - alert.ts).abs() <= window)
        {
            self.stats.joined_late += 1;
            return out;
        }
        if wait
            && self.host_wait > chrono::TimeDelta::zero()
            && self.waiting.queue.len() < MAX_WAITING
        {
            let deadline = alert.ts + self.host_wait;
            self.waiting.queue.push_back((deadline, alert, key));
        } else {
            self.wire_acts.insert(alert.ts, key, ());
            out.push(alert);
        }
        self.enforce_budget();
        out
    }

    /// Wire alerts whose wait is over at `now` (they go out alone).
    pub fn release_wire(&mut self, now: DateTime<Utc>) -> Vec<Alert> {
        let mut out = Vec::new();
        while self
            .waiting
            .queue
            .front()
            .is_some_and(|(d, _, _)| *d <= now)
        {
            let (_, alert, key) = self.waiting.queue.pop_front().expect("checked");
            self.wire_acts.insert(alert.ts, key, ());
            out.push(alert);
        }
        // Host alerts: their key is in `host_acts` already.
        while let Some((_, alert, _, _)) = self.waiting.host.pop_front_if(|(d, _, _, _)| *d <= now)
        {
            self.count_host_alert(&alert);
            out.push(alert);
        }
        out
    }

    /// A host alert raised alone (no wire alert of its act).
    fn count_host_alert(&mut self, a: &Alert) {
        if matches!(
            a.kind,
            AlertKind::SmbRemoteService | AlertKind::SmbRemoteTask
        ) {
            self.stats.remote_exec += 1;
        }
    }

    /// A host `admin_share_access` alert (raised by the host rules). The
    /// wire reports the same tree connect (with the pipe opened on `IPC$`,
    /// the workstation and the NTLMSSP user), and the host logs it at the
    /// tree connect, so in time order its record may come first: while
    /// SMB samples arrive it waits `host_wait` for the wire's alert, which
    /// then carries both. Returns what goes out now.
    pub fn host_share_alert(&mut self, ev: &HostEvent, alert: Alert) -> Vec<Alert> {
        let mut out = Vec::new();
        match (alert.source_ip, alert.share.as_deref()) {
            (Some(src), Some(share)) => {
                let key = share_key(src, share);
                self.host_alert(ev, alert, key, &mut out);
            }
            _ => out.push(alert),
        }
        out
    }

    /// Every waiting wire alert, now (the end of input).
    pub fn release_all_wire(&mut self) -> Vec<Alert> {
        let mut out = Vec::new();
        while let Some((_, alert, key)) = self.waiting.queue.pop_front() {
            self.wire_acts.insert(alert.ts, key, ());
            out.push(alert);
        }
        while let Some((_, a, _, _)) = self.waiting.host.pop_front() {
            self.count_host_alert(&a);
            out.push(a);
        }
        out
    }

    /// Alerts waiting for the other side's report now: wire alerts for
    /// host records, host alerts (service installs, tasks) for the wire's.
    pub fn wire_waiting(&self) -> usize {
        self.waiting.queue.len() + self.waiting.host.len()
    }

    /// SMB samples arrive: a host alert of an act the wire also reports
    /// (a service install, a task) waits `host_wait` for the wire's.
    pub fn saw_wire(&mut self) {
        self.wire_inputs = true;
    }

    /// A host alert of `key`: out now, or waiting for the wire alert of
    /// the same act when SMB samples arrive.
    pub(super) fn host_alert(
        &mut self,
        ev: &HostEvent,
        alert: Alert,
        key: ActKey,
        out: &mut Vec<Alert>,
    ) {
        if self.wire_inputs
            && self.host_wait > chrono::TimeDelta::zero()
            && self.waiting.host.len() < MAX_HOST_WAITING
        {
            // By the reference clock: the host's own may be far off.
            let now = self
                .clock
                .cutoff(chrono::TimeDelta::zero())
                .unwrap_or(ev.ts);
            let carry = HostCarry::of(ev);
            self.waiting
                .host
                .push_back((now + self.host_wait, alert, key, carry));
        } else {
            self.count_host_alert(&alert);
            out.push(alert);
        }
    }

    /// Another record of an act whose host alert is waiting for the
    /// wire's (a 7045 beside its 4697): its event id joins the waiting
    /// alert's. False when no host alert of `key` waits.
    pub(super) fn add_to_waiting(&mut self, key: &ActKey, ev: &HostEvent) -> bool {
        let window = add(crate::timed::delta(self.cfg.retention), self.skew);
        let Some((_, alert, _, carry)) = self
            .waiting
            .host
            .iter_mut()
            .find(|(_, a, k, _)| k == key && (a.ts - ev.ts).abs() <= window)
        else {
            return false;
        };
        let id = ev.event_id();
        if id != carry.id && !carry.more.contains(&id) && carry.more.len() < 7 {
            carry.more.push(id);
            if let Some(smb) = alert.smb.as_mut() {
                smb.host_events.push(id);
            }
        }
        true
    }

    /// A host record of an act the wire may have reported: the waiting wire
    /// alert it completes (pushed to `out`, carrying both). Returns true
    /// when the act was the wire's, so the host-side alert is not raised.
    pub(super) fn join_host(
        &mut self,
        ev: &HostEvent,
        drop: Option<&FileDrop>,
        out: &mut Vec<Alert>,
    ) -> bool {
        self.join_keys(ev, host_keys(ev, drop), out)
    }

    /// [`Self::join_host`] for the act keys `ev` reports.
    pub(super) fn join_keys(
        &mut self,
        ev: &HostEvent,
        keys: Vec<ActKey>,
        out: &mut Vec<Alert>,
    ) -> bool {
        let window = add(crate::timed::delta(self.cfg.retention), self.skew);
        let mut joined = false;
        for key in keys {
            let at = self
                .waiting
                .queue
                .iter()
                .position(|(_, a, k)| *k == key && (a.ts - ev.ts).abs() <= window);
            if let Some(i) = at {
                let (_, mut alert, key) = self.waiting.queue.remove(i).expect("found");
                HostCarry::of(ev).apply(&mut alert);
                self.stats.joined += 1;
                self.wire_acts.insert(alert.ts, key, ());
                out.push(alert);
                joined = true;
            } else if self
                .wire_acts
                .get(&key)
                .any(|(t, ())| (*t - ev.ts).abs() <= window)
            {
                self.stats.joined_late += 1;
                joined = true;
            } else {
                self.host_acts.insert(ev.ts, key, ());
            }
        }
        joined
    }

    /// A chain for a wire act from a source that raised a scan alert; the
    /// act is kept so a later scan alert finds it too.
    fn wire_chain(&mut self, alert: &Alert) -> Vec<Alert> {
        let (Some(src), Some(dst)) = (alert.source_ip, alert.destination_ip) else {
            return Vec::new();
        };
        if !matches!(
            alert.kind,
            AlertKind::SmbAdminShare
                | AlertKind::SmbFileDrop
                | AlertKind::SmbRemoteService
                | AlertKind::SmbRemoteTask
        ) {
            return Vec::new();
        }
        let smb = alert.smb.clone().unwrap_or_default();
        let relative = smb.file.clone().or_else(|| {
            let ops = smb.operations.join(", ");
            match (&smb.pipe, ops.is_empty()) {
                (Some(p), true) => Some(format!("pipe {p}")),
                (Some(p), false) => Some(format!("pipe {p}: {ops}")),
                (None, _) => None,
            }
        });
        let rec = ChainRec {
            host: Some(dst.to_string()),
            event: None,
            share: alert.share.clone(),
            relative_target: relative,
            user: alert.user.clone(),
            user_sid: None,
            wrote: alert.kind == AlertKind::SmbFileDrop,
            wire: Some(Box::new(smb)),
        };
        let scans: Vec<_> = self.scans.get(&src).map(|(_, s)| s.clone()).collect();
        let out = scans
            .iter()
            .filter_map(|s| self.try_chain(src, s, alert.ts, &rec))
            .collect();
        self.chain_events.insert(alert.ts, src, rec);
        out
    }
}

/// `: service NAME running COMMAND` for the message.
fn named(what: &str, name: &Option<String>, command: &Option<String>) -> String {
    let name = name.as_deref().unwrap_or("(unnamed)");
    match command {
        Some(c) => format!(
            ": {what} {name} running {}",
            super::remote_exec::message_command(c)
        ),
        None => format!(": {what} {name}"),
    }
}
