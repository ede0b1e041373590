//! SMB alerts from the wire, joined with host logs: one alert per act
//! whoever reported it, and chains that name what the wire showed.
//!
//! Two acts are reported both on the wire and by Windows: access to an
//! administrative share (`smb_admin_share` on a disk share; Security
//! 5140/5145, which raise `admin_share_access`) and a file written through
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
//! - **Host first**: the host alert went out; the wire alert of the same
//!   act is not raised (counted: [`super::CorrelateStats::joined_late`]).
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
use crate::hostlog::HostEvent;
use crate::smb::share_name;
use crate::timed::add;

/// Wire alerts waiting for their host record at most.
pub const MAX_WAITING: usize = 4096;

/// (client, `share:ADMIN$` or `file:name.exe`).
pub(super) type ActKey = (IpAddr, String);

/// Wire alerts waiting for host records.
#[derive(Debug, Default)]
pub(super) struct Waiting {
    /// (deadline, alert, key), in arrival order.
    queue: VecDeque<(DateTime<Utc>, Alert, ActKey)>,
}

/// The act key of a wire alert, for the kinds host logs also report.
fn wire_key(a: &Alert) -> Option<ActKey> {
    let src = a.source_ip?;
    match a.kind {
        AlertKind::SmbAdminShare => {
            let share = a.share.as_deref()?;
            // A pipe on IPC$: no host record names the pipe.
            if share.eq_ignore_ascii_case("IPC$") {
                return None;
            }
            Some((src, format!("share:{}", share.to_ascii_uppercase())))
        }
        AlertKind::SmbFileDrop => {
            let file = a.smb.as_ref()?.file.as_deref()?;
            Some((
                src,
                format!("file:{}", file_name(file).to_ascii_lowercase()),
            ))
        }
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
        let share = share_name(share);
        if !share.eq_ignore_ascii_case("IPC$") {
            keys.push((src, format!("share:{}", share.to_ascii_uppercase())));
        }
    }
    if let Some(d) = drop {
        if let Some(src) = d.src {
            let f = file_name(&d.path).to_ascii_lowercase();
            keys.push((src, format!("file:{f}")));
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
        out
    }

    /// Every waiting wire alert, now (the end of input).
    pub fn release_all_wire(&mut self) -> Vec<Alert> {
        let mut out = Vec::new();
        while let Some((_, alert, key)) = self.waiting.queue.pop_front() {
            self.wire_acts.insert(alert.ts, key, ());
            out.push(alert);
        }
        out
    }

    /// Wire alerts waiting for host records now.
    pub fn wire_waiting(&self) -> usize {
        self.waiting.queue.len()
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
        let window = add(crate::timed::delta(self.cfg.retention), self.skew);
        let mut joined = false;
        for key in host_keys(ev, drop) {
            let at = self
                .waiting
                .queue
                .iter()
                .position(|(_, a, k)| *k == key && (a.ts - ev.ts).abs() <= window);
            if let Some(i) = at {
                let (_, mut alert, key) = self.waiting.queue.remove(i).expect("found");
                carry_host(&mut alert, ev);
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

/// Puts a host record's evidence on the wire alert of the same act.
fn carry_host(a: &mut Alert, ev: &HostEvent) {
    let id = ev.event_id();
    a.event_code = Some(id);
    a.host = a.host.take().or_else(|| ev.host.clone());
    let account = ev.account();
    a.user_id = a.user_id.take().or_else(|| account.sid.clone());
    a.user = a.user.take().or_else(|| account.qualified());
    if let Some(smb) = a.smb.as_mut() {
        if !smb.host_events.contains(&id) && smb.host_events.len() < 8 {
            smb.host_events.push(id);
        }
    }
    let host = ev.host.as_deref().unwrap_or("the host");
    a.message = format!("{}; {host} logged it too [event {}]", a.message, id);
}
