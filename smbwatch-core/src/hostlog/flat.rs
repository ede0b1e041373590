//! The JSON form of a [`HostEvent`]: one flat object, the same as before
//! the event had typed records (`smbwatch hostlog` prints it, the fleet
//! carries it: `docs/fleet.md`), so neither its readers nor gateways and
//! aggregators of different versions notice the change. A field the
//! record's kind does not have is `null`; reading one back checks that
//! `event_id` and `kind` agree and drops fields the kind does not have.

use std::net::IpAddr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::event::*;

/// The flat object, borrowed for writing.
#[derive(Serialize)]
struct FlatRef<'a> {
    ts: DateTime<Utc>,
    time_source: TimeSource,
    host: Option<&'a str>,
    channel: Option<&'a str>,
    event_id: u32,
    kind: HostEventKind,
    record_id: Option<u64>,
    src_ip: Option<IpAddr>,
    src_port: Option<u16>,
    dst_ip: Option<IpAddr>,
    dst_port: Option<u16>,
    protocol: Option<u8>,
    direction: Option<Direction>,
    pid: Option<u32>,
    image: Option<&'a str>,
    image_name: Option<&'a str>,
    user: Option<String>,
    user_sid: Option<&'a str>,
    logon_type: Option<u32>,
    share_name: Option<&'a str>,
    relative_target: Option<&'a str>,
    target_filename: Option<&'a str>,
    parent_image: Option<&'a str>,
    command_line: Option<&'a str>,
    process_guid: Option<&'a str>,
    parent_process_guid: Option<&'a str>,
    parent_pid: Option<u32>,
    access_mask: Option<u32>,
    /// New with the typed records: absent (not `null`) when unknown, so
    /// older readers see the object they know.
    #[serde(skip_serializing_if = "Option::is_none")]
    workstation: Option<&'a str>,
    /// New with service and task events (7045, 4697, 4698), absent when
    /// unknown like `workstation`.
    #[serde(skip_serializing_if = "Option::is_none")]
    logon_id: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    service_name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    task_name: Option<&'a str>,
}

/// The flat object, owned for reading.
#[derive(Deserialize)]
struct Flat {
    ts: DateTime<Utc>,
    time_source: TimeSource,
    host: Option<String>,
    channel: Option<String>,
    event_id: u32,
    kind: HostEventKind,
    record_id: Option<u64>,
    src_ip: Option<IpAddr>,
    src_port: Option<u16>,
    dst_ip: Option<IpAddr>,
    dst_port: Option<u16>,
    protocol: Option<u8>,
    direction: Option<Direction>,
    pid: Option<u32>,
    image: Option<String>,
    image_name: Option<String>,
    user: Option<String>,
    user_sid: Option<String>,
    logon_type: Option<u32>,
    share_name: Option<String>,
    relative_target: Option<String>,
    target_filename: Option<String>,
    parent_image: Option<String>,
    command_line: Option<String>,
    process_guid: Option<String>,
    parent_process_guid: Option<String>,
    parent_pid: Option<u32>,
    access_mask: Option<u32>,
    #[serde(default)]
    workstation: Option<String>,
    #[serde(default)]
    logon_id: Option<u64>,
    #[serde(default)]
    service_name: Option<String>,
    #[serde(default)]
    task_name: Option<String>,
}

impl Serialize for HostEvent {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let account = self.account();
        let process = self.process();
        let mut f = FlatRef {
            ts: self.ts,
            time_source: self.time_source,
            host: self.host.as_deref(),
            channel: self.channel.as_deref(),
            event_id: self.event_id(),
            kind: self.kind(),
            record_id: self.record_id,
            src_ip: self.src_ip(),
            src_port: None,
            dst_ip: None,
            dst_port: None,
            protocol: None,
            direction: None,
            pid: process.and_then(|p| p.pid),
            image: process.and_then(|p| p.image.as_deref()),
            image_name: process.and_then(|p| p.image_name.as_deref()),
            user: account.qualified(),
            user_sid: account.sid.as_deref(),
            logon_type: None,
            share_name: None,
            relative_target: None,
            target_filename: None,
            parent_image: None,
            command_line: None,
            process_guid: process.and_then(|p| p.guid.as_deref()),
            parent_process_guid: None,
            parent_pid: None,
            access_mask: None,
            workstation: None,
            logon_id: self.logon_id(),
            service_name: None,
            task_name: None,
        };
        match &self.record {
            HostRecord::NetworkConnection(r) => {
                f.src_port = r.src_port;
                f.dst_ip = r.dst_ip;
                f.dst_port = r.dst_port;
                f.protocol = r.protocol;
                f.direction = r.direction;
            }
            HostRecord::ProcessCreation(r) => {
                f.parent_image = r.parent_image.as_deref();
                f.command_line = r.command_line.as_deref();
                f.parent_process_guid = r.parent_guid.as_deref();
                f.parent_pid = r.parent_pid;
            }
            HostRecord::FileCreation(r) => f.target_filename = r.target_filename.as_deref(),
            HostRecord::Logon(r) => {
                f.src_port = r.src_port;
                f.logon_type = r.logon_type;
                f.workstation = r.workstation.as_deref();
            }
            HostRecord::ShareAccess(r) => {
                f.src_port = r.src_port;
                f.share_name = r.share_name.as_deref();
                f.relative_target = r.relative_target.as_deref();
                f.access_mask = r.access_mask;
            }
            // What a service or task runs is its command line.
            HostRecord::ServiceInstall(r) => {
                f.service_name = r.service_name.as_deref();
                f.command_line = r.command.as_deref();
            }
            HostRecord::TaskCreation(r) => {
                f.task_name = r.task_name.as_deref();
                f.command_line = r.command.as_deref();
            }
        }
        f.serialize(s)
    }
}

impl<'de> Deserialize<'de> for HostEvent {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let f = Flat::deserialize(d)?;
        let event = WindowsEvent::from_id(f.event_id).ok_or_else(|| {
            serde::de::Error::custom(format!("event_id {} is not one smbwatch reads", f.event_id))
        })?;
        if event.kind() != f.kind {
            return Err(serde::de::Error::custom(format!(
                "event_id {} is not a {:?} event",
                f.event_id, f.kind
            )));
        }
        let account = match f.user {
            Some(u) => Account::from_qualified(u, f.user_sid),
            None => Account {
                sid: f.user_sid,
                ..Account::default()
            },
        };
        let process = Process {
            pid: f.pid,
            image: f.image,
            image_name: f.image_name,
            guid: f.process_guid,
        };
        let record = match event {
            WindowsEvent::SysmonNetworkConnect | WindowsEvent::ConnectionPermitted => {
                HostRecord::NetworkConnection(NetworkConnection {
                    log: ConnectionLog::of(event),
                    src_ip: f.src_ip,
                    src_port: f.src_port,
                    dst_ip: f.dst_ip,
                    dst_port: f.dst_port,
                    protocol: f.protocol,
                    direction: f.direction,
                    process,
                    account,
                })
            }
            WindowsEvent::SysmonProcessCreate | WindowsEvent::ProcessCreated => {
                HostRecord::ProcessCreation(ProcessCreation {
                    log: ProcessLog::of(event),
                    process,
                    parent_pid: f.parent_pid,
                    parent_image: f.parent_image,
                    parent_guid: f.parent_process_guid,
                    command_line: f.command_line,
                    account,
                })
            }
            WindowsEvent::SysmonFileCreate => HostRecord::FileCreation(FileCreation {
                process,
                target_filename: f.target_filename,
                account,
            }),
            WindowsEvent::Logon => HostRecord::Logon(Logon {
                src_ip: f.src_ip,
                src_port: f.src_port,
                workstation: f.workstation,
                logon_type: f.logon_type,
                logon_id: f.logon_id,
                account,
            }),
            WindowsEvent::ShareAccessed | WindowsEvent::ShareObjectChecked => {
                HostRecord::ShareAccess(ShareAccess {
                    log: ShareLog::of(event),
                    src_ip: f.src_ip,
                    src_port: f.src_port,
                    share_name: f.share_name,
                    relative_target: f.relative_target,
                    access_mask: f.access_mask,
                    logon_id: f.logon_id,
                    account,
                })
            }
            WindowsEvent::ServiceInstalled | WindowsEvent::SecurityServiceInstalled => {
                HostRecord::ServiceInstall(ServiceInstall {
                    log: ServiceLog::of(event),
                    service_name: f.service_name,
                    command: f.command_line,
                    logon_id: f.logon_id,
                    account,
                })
            }
            WindowsEvent::TaskCreated => HostRecord::TaskCreation(TaskCreation {
                task_name: f.task_name,
                command: f.command_line,
                logon_id: f.logon_id,
                account,
            }),
        };
        Ok(HostEvent {
            ts: f.ts,
            time_source: f.time_source,
            host: f.host,
            channel: f.channel,
            record_id: f.record_id,
            record,
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::hostlog::tests::{data_file, COVENANT, EMPIRE, PSEXEC};
    use crate::hostlog::{parse_file, parse_line, Format, HostEvent};

    /// The object is the one written before the typed records: same keys,
    /// same order, `null` for what the kind lacks.
    #[test]
    fn the_json_form_is_the_flat_object() {
        let ev = parse_line(
            r#"{"EventID":5156,"Channel":"Security","Hostname":"WS1","TimeCreated":"2024-05-01T12:00:00Z","ProcessId":"8948","Application":"\\device\\x\\powershell.exe","Direction":"%%14593","SourceAddress":"192.0.2.5","SourcePort":"50001","DestAddress":"192.0.2.6","DestPort":"445","Protocol":"6"}"#,
        )
        .unwrap()
        .unwrap();
        let json = serde_json::to_string(&ev).unwrap();
        assert_eq!(
            json,
            r#"{"ts":"2024-05-01T12:00:00Z","time_source":"utc","host":"WS1","channel":"Security","event_id":5156,"kind":"network_connection","record_id":null,"src_ip":"192.0.2.5","src_port":50001,"dst_ip":"192.0.2.6","dst_port":445,"protocol":6,"direction":"outbound","pid":8948,"image":"\\device\\x\\powershell.exe","image_name":"powershell.exe","user":null,"user_sid":null,"logon_type":null,"share_name":null,"relative_target":null,"target_filename":null,"parent_image":null,"command_line":null,"process_guid":null,"parent_process_guid":null,"parent_pid":null,"access_mask":null}"#
        );
        assert_eq!(serde_json::from_str::<HostEvent>(&json).unwrap(), ev);
    }

    /// Every event of the real logs reads back as itself.
    #[test]
    fn real_events_round_trip() {
        for name in [EMPIRE, COVENANT, PSEXEC] {
            let Some(p) = data_file(name) else { return };
            let (evs, _) = parse_file(&p, Format::Auto).unwrap();
            assert!(!evs.is_empty());
            for ev in evs {
                let json = serde_json::to_string(&ev).unwrap();
                assert_eq!(
                    serde_json::from_str::<HostEvent>(&json).unwrap(),
                    ev,
                    "{json}"
                );
            }
        }
    }
}
