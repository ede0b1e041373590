//! Enrichment: host-rule and scan alerts get what the other records of the
//! same flow, the gateway and the process creations said.

use std::collections::HashSet;

use chrono::{DateTime, Utc};

use super::{delta, fill, same_process, Correlator, NetRec};
use crate::alert::{Alert, AlertKind, ProcessInfo};

impl Correlator {
    /// Fill a host-rule alert (e.g. `suspicious_smb_client` from 5156,
    /// which names no user) from the other records of the same flow, and
    /// the gateway's interface and VLAN from the matching pair.
    /// A `suspicious_smb_client` also gets its process's creation record
    /// (command line, parent) and its process class.
    pub fn enrich_alert(&mut self, alert: &mut Alert) {
        let guid = self.enrich_flow(alert);
        if alert.kind == AlertKind::SuspiciousSmbClient {
            self.add_process_context(alert, guid.as_deref());
        }
    }

    /// The flow part of [`Self::enrich_alert`]; returns the Sysmon
    /// `ProcessGuid` a record of the flow named.
    fn enrich_flow(&self, alert: &mut Alert) -> Option<String> {
        let (Some(src), Some(dst), Some(dport)) = (
            alert.source_ip,
            alert.destination_ip,
            alert.destination_port,
        ) else {
            return None;
        };
        let mut guid = None;
        let key = (src, dst, dport);
        let near = |ts: &DateTime<Utc>| (*ts - alert.ts).abs() <= self.skew;
        let process = alert.process.get_or_insert_with(ProcessInfo::default);
        for (_, net) in self.host_net.get(&key).filter(|(ts, _)| near(ts)) {
            // Only records of the same process (where both say which).
            let same_pid = matches!((process.pid, net.process.pid), (Some(a), Some(b)) if a != b);
            let same_name = matches!((&process.name, &net.process.name), (Some(a), Some(b)) if !a.eq_ignore_ascii_case(b));
            if same_pid || same_name {
                continue;
            }
            fill(&mut process.pid, &net.process.pid);
            fill(&mut process.name, &net.process.name);
            fill(&mut process.executable, &net.process.executable);
            fill(&mut alert.user, &net.user);
            fill(&mut alert.host, &net.host);
            fill(&mut guid, &net.guid);
        }
        if alert
            .process
            .as_ref()
            .is_some_and(|p| *p == ProcessInfo::default())
        {
            alert.process = None;
        }
        if let Some((_, pair)) = self.pairs.get(&key).find(|(ts, _)| near(ts)) {
            alert.ifindex.get_or_insert(pair.ifindex);
            if alert.vlan.is_none() {
                alert.vlan = pair.vlan;
            }
        }
        guid
    }

    /// List, on a scan alert, the processes seen opening connections from
    /// its source to the scanned port (445 and 139 when the alert names
    /// none) during the scan (± skew); the first of them of a process
    /// class, else the first that is not the kernel, becomes the alert's
    /// `process`, with its creation record and user.
    pub fn enrich_scan_alert(&mut self, alert: &mut Alert) {
        let Some(src) = alert.source_ip else { return };
        let (from, to) = match &alert.scan {
            Some(e) => (e.first_seen.min(alert.ts), e.last_seen.max(alert.ts)),
            None => (alert.ts - delta(self.cfg.retention), alert.ts),
        };
        let (from, to) = (from - self.skew, to + self.skew);
        // The scanned port, or both SMB ports when the alert does not say.
        let ports: HashSet<u16> = match alert.destination_port {
            Some(p) => HashSet::from([p]),
            None => HashSet::from([445, 139]),
        };
        let mut hits: Vec<(DateTime<Utc>, &NetRec)> = self
            .host_net
            .iter()
            .filter(|((s, _, dport), (ts, _))| {
                *s == src && *ts >= from && *ts <= to && ports.contains(dport)
            })
            .map(|(_, (ts, net))| (*ts, net))
            .collect();
        hits.sort_by_key(|(ts, _)| *ts);
        for (_, net) in &hits {
            if alert.processes.len() >= self.cfg.max_processes_listed {
                break;
            }
            if !alert
                .processes
                .iter()
                .any(|q| same_process(q, &net.process))
            {
                alert.processes.push(net.process.clone());
            }
        }
        let classed = |n: &NetRec| {
            n.process
                .name
                .as_deref()
                .is_some_and(|name| self.classes.classify(name).is_some())
        };
        let kernel = |n: &NetRec| {
            n.process.pid == Some(crate::hostlog::rules::SYSTEM_PID)
                || n.process
                    .name
                    .as_deref()
                    .is_some_and(|x| x.eq_ignore_ascii_case("System"))
        };
        let primary = hits
            .iter()
            .find(|(_, n)| classed(n))
            .or_else(|| hits.iter().find(|(_, n)| !kernel(n)))
            .map(|(ts, n)| (*ts, (*n).clone()));
        if let (None, Some((ts, net))) = (&alert.process, primary) {
            alert.process = Some(net.process);
            fill(&mut alert.user, &net.user);
            fill(&mut alert.host, &net.host);
            self.add_context_at(alert, net.guid.as_deref(), ts);
        }
    }
}
