//! Services installed and tasks created by a remote client, as the target
//! logged them (System 7045, Security 4697, Security 4698), joined with
//! `smb_remote_service` / `smb_remote_task` from the wire.
//!
//! These records name no client address: 4697 and 4698 name the creator's
//! logon session (`SubjectLogonId`), 7045 only the creator's SID. The
//! client is the address of the share access or network logon of that
//! session on the same host (5140/5145 `SubjectLogonId`, 4624
//! `TargetLogonId`), or for a 7045 the one address that account used the
//! host from in `chain_window`. Several addresses, or none: the record is
//! a local install (or an unknown client) and raises nothing, since
//! guessing would pin the act on the wrong host.
//!
//! The act's key is (client, `service`) or (client, `task`): the wire
//! knows hosts by address and hosts log themselves by name, so the
//! client's address is what both sides name. One act whichever reports it:
//! - the wire alert waiting for its host record carries it
//!   ([`super::wire`]);
//! - without a wire alert, the host record raises the same kind, from the
//!   host's evidence alone (`event.code` 7045/4697/4698, `host.name`);
//! - the same install's other record (a 7045 after its 4697) raises
//!   nothing more.

use std::net::IpAddr;

use super::process::host_key;
use super::Correlator;
use crate::alert::{Alert, AlertKind, Severity, SmbEvidence};
use crate::hostlog::{HostEvent, HostRecord};
use crate::timed::add;

/// The act key's name for a service install.
pub(super) const SERVICE: &str = "service";
/// The act key's name for a task creation.
pub(super) const TASK: &str = "task";

/// Most bytes of a service's or task's command quoted in a message (an
/// encoded PowerShell payload runs to kilobytes).
const MESSAGE_COMMAND_BYTES: usize = 512;

/// A command as a message quotes it: cut to [`MESSAGE_COMMAND_BYTES`].
pub(super) fn message_command(c: &str) -> String {
    let mut s = c.to_owned();
    crate::hostlog::cap_string(&mut s, MESSAGE_COMMAND_BYTES);
    s
}

impl Correlator {
    /// A service install or task creation: joined with the wire's alert of
    /// the act, else raised from the host's record when a remote client
    /// did it.
    pub(super) fn host_remote_exec(&mut self, ev: &HostEvent) -> Vec<Alert> {
        let (act, kind, what) = match &ev.record {
            HostRecord::ServiceInstall(s) => (
                SERVICE,
                AlertKind::SmbRemoteService,
                format!(
                    "installed service {}{}",
                    s.service_name.as_deref().unwrap_or("(unnamed)"),
                    s.command
                        .as_deref()
                        .map(|c| format!(" running {}", message_command(c)))
                        .unwrap_or_default()
                ),
            ),
            HostRecord::TaskCreation(t) => (
                TASK,
                AlertKind::SmbRemoteTask,
                format!(
                    "created scheduled task {}{}",
                    t.task_name.as_deref().unwrap_or("(unnamed)"),
                    t.command
                        .as_deref()
                        .map(|c| format!(" running {}", message_command(c)))
                        .unwrap_or_default()
                ),
            ),
            _ => return Vec::new(),
        };
        let Some((src, session_user)) = self.remote_client(ev) else {
            self.stats.local_exec += 1;
            return Vec::new();
        };
        let key = (src, act.to_owned());
        let window = add(crate::timed::delta(self.cfg.retention), self.skew);
        let mut out = Vec::new();
        // The same install's other record (7045 and 4697 of one service).
        if self.add_to_waiting(&key, ev)
            || self
                .host_acts
                .get(&key)
                .any(|(t, ())| (*t - ev.ts).abs() <= window)
        {
            self.stats.joined_late += 1;
            return out;
        }
        if self.join_keys(ev, vec![key.clone()], &mut out) {
            self.joined_wire = true;
            return out;
        }
        let account = ev.account();
        let user = account.qualified().or(session_user);
        let who = user.as_deref().unwrap_or("unknown user");
        let host = ev.host.as_deref().unwrap_or("an unknown host");
        let msg = format!(
            "{who} from {src} {what} on {host} [{}]",
            ev.windows_event().label()
        );
        let mut a = Alert::new(ev.ts, kind, Severity::Critical, msg);
        a.event_code = Some(ev.event_id());
        a.source_ip = Some(src);
        a.host = ev.host.clone();
        a.user = user;
        a.user_id = account.sid.clone();
        a.smb = Some(SmbEvidence {
            host_events: vec![ev.event_id()],
            ..SmbEvidence::default()
        });
        self.host_alert(ev, a, key, &mut out);
        out
    }

    /// The client that did `ev` (a 4697/4698 by its logon session, a 7045
    /// by its account's SID): the one address of the matching share access
    /// or network logon on `ev`'s host in the `chain_window` before `ev`
    /// (plus skew), and for a 7045 (which names no account) the account
    /// that record names. `None` when there was none, or several
    /// addresses.
    fn remote_client(&self, ev: &HostEvent) -> Option<(IpAddr, Option<String>)> {
        let logon = ev.logon_id();
        let sid = ev.account().sid.as_deref();
        if logon.is_none() && sid.is_none() {
            return None;
        }
        let host = host_key(ev.host.as_deref());
        let (from, to) = (ev.ts - self.chain_window, ev.ts + self.skew);
        if let Some(id) = logon {
            // A session id is the host's: one client, found by key (the
            // record names its creator itself).
            let mut found = None;
            for (ts, src) in self.sessions.get(&(host, id)) {
                if *ts < from || *ts > to {
                    continue;
                }
                match found {
                    Some(s) if s != *src => return None,
                    _ => found = Some(*src),
                }
            }
            return found.map(|s| (s, None));
        }
        // A 7045: the account's recent sources on the host (bounded by
        // `max_chain_events`).
        self.sole_source(ev.ts, |rec| {
            rec.wire.is_none()
                && rec.user_sid.as_deref() == sid
                && host_key(rec.host.as_deref()) == host
        })
    }
}
