//! SMB on the wire in ECS: the event line of each observation (`--events`,
//! `event.dataset: smbwatch.smb`) and the `smb.*`, `rpc.*` and `file.*`
//! objects SMB alerts carry.
//!
//! ECS fields where ECS has them: `source.*`/`destination.*` (the client
//! and the server), `source.domain` (the NTLMSSP workstation),
//! `user.name`/`user.domain` (the NTLMSSP account), `file.path`/`file.name`,
//! `network.protocol: smb`, `event.outcome` from the NT status. What ECS
//! has no field for follows the names Suricata and Zeek give it:
//! `smb.path` (`\\server\share`, Zeek `smb_mapping.path`), `smb.share_type`,
//! `smb.named_pipe`, `smb.dialect`, `smb.status`, `rpc.interface.name` and
//! `.uuid`, `rpc.opnum`, `rpc.operation` (Zeek `dce_rpc.operation`). The
//! bare share name is `smbwatch.share`, as on host-log alerts.

use serde::Serialize;
use smbwatch_core::alert::SmbEvidence;
use smbwatch_core::smb::{Account, Hole, NtStatus, Observation, ShareType, SmbEvent, Unseen};

use super::gateway::{LineEvent, LineNetwork};
use super::{empty, Ecs, Empty, Id, Keyword, Timestamp, ECS_VERSION, MODULE};

/// `event.dataset` of SMB event lines.
pub const SMB_DATASET: &str = "smbwatch.smb";

/// `source.*` / `destination.*` of an SMB line.
#[derive(Debug, Default, Serialize)]
pub struct Peer<'a> {
    /// Address.
    pub ip: Option<std::net::IpAddr>,
    /// Port.
    pub port: Option<u16>,
    /// `source.domain`: the NTLMSSP workstation name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub domain: Option<&'a str>,
    /// `source.mac`: the client's Ethernet address (ECS: upper case, dashes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
}

/// `file.*`.
#[derive(Debug, Default, Serialize)]
pub struct File {
    /// `\\server\share\name` when the share is known, else the name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// The last component.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// `smb.*`.
#[derive(Debug, Default, Serialize)]
pub struct Smb {
    /// `\\server\share` of the tree.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// `disk`, `pipe` or `print`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub share_type: Option<String>,
    /// The named pipe.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub named_pipe: Option<String>,
    /// The dialect the server chose (`3.1.1`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dialect: Option<String>,
    /// SMB1 dialects the client offered.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub dialects: Vec<String>,
    /// The MS17-010 sign (`eternalblue`, `doublepulsar_command`,
    /// `doublepulsar_answer`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exploit: Option<&'static str>,
    /// The answer's NT status (`0xc0000022`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// CREATE DesiredAccess, hex.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access: Option<String>,
    /// CREATE CreateDisposition.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disposition: Option<u32>,
    /// WRITE offset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    /// WRITE length.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub length: Option<u32>,
    /// The SMB session id whose messages are encrypted, hex.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// `anonymous` or `guest` logons.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logon: Option<&'static str>,
    /// What was not seen (`gap`, `sample_cut`, `malformed`, `limit`…).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unseen: Option<&'static str>,
    /// Its details (the field that did not parse, the cap).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unseen_detail: Option<String>,
    /// Bytes not seen.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unseen_bytes: Option<u64>,
    /// Enumeration calls in the burst (`smb_enum`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub calls: Option<u32>,
    /// A renamed file's name before (`smb_rename`; `file.*` is the new).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub renamed_from: Option<String>,
    /// Windows event ids of host-log records that reported the same act.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub host_events: Vec<u32>,
}

/// `rpc.interface.*`.
#[derive(Debug, Default, Serialize)]
pub struct RpcInterface {
    /// `svcctl`, `samr`…
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The abstract syntax UUID.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
}

/// `rpc.*`.
#[derive(Debug, Default, Serialize)]
pub struct Rpc {
    /// The interface.
    #[serde(skip_serializing_if = "empty")]
    pub interface: RpcInterface,
    /// The operation number.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub opnum: Option<u16>,
    /// Operation names (one on a call; the distinct ones of a burst).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub operation: Vec<String>,
    /// Why a call's interface is unknown (`bind_not_seen`,
    /// `bind_refused`, `contexts_full`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unbound: Option<&'static str>,
}

impl Empty for Peer<'_> {
    fn is_empty(&self) -> bool {
        self.ip.is_none() && self.port.is_none() && self.domain.is_none() && self.mac.is_none()
    }
}

impl Empty for File {
    fn is_empty(&self) -> bool {
        self.path.is_none() && self.name.is_none()
    }
}

impl Empty for Smb {
    fn is_empty(&self) -> bool {
        self.path.is_none()
            && self.share_type.is_none()
            && self.named_pipe.is_none()
            && self.dialect.is_none()
            && self.dialects.is_empty()
            && self.exploit.is_none()
            && self.status.is_none()
            && self.access.is_none()
            && self.disposition.is_none()
            && self.offset.is_none()
            && self.length.is_none()
            && self.session_id.is_none()
            && self.logon.is_none()
            && self.unseen.is_none()
            && self.unseen_detail.is_none()
            && self.unseen_bytes.is_none()
            && self.calls.is_none()
            && self.renamed_from.is_none()
            && self.host_events.is_empty()
    }
}

impl Empty for RpcInterface {
    fn is_empty(&self) -> bool {
        self.name.is_none() && self.uuid.is_none()
    }
}

impl Empty for Rpc {
    fn is_empty(&self) -> bool {
        self.interface.is_empty()
            && self.opnum.is_none()
            && self.operation.is_empty()
            && self.unbound.is_none()
    }
}

/// `\\server\share` + `\` + a share-relative name.
fn full_path(tree: Option<&str>, name: &str) -> String {
    match tree {
        Some(t) => format!(
            "{}\\{}",
            t.trim_end_matches('\\'),
            name.trim_start_matches('\\')
        ),
        None => name.to_owned(),
    }
}

fn last_component(name: &str) -> String {
    name.rsplit(['\\', '/']).next().unwrap_or(name).to_owned()
}

fn file(tree: Option<&str>, name: &str) -> File {
    File {
        path: Some(full_path(tree, name)),
        name: Some(last_component(name)),
    }
}

fn logon(a: &Account) -> Option<&'static str> {
    if a.anonymous {
        Some("anonymous")
    } else if a.guest {
        Some("guest")
    } else {
        None
    }
}

impl File {
    /// The file an alert names.
    pub fn of_alert(ev: Option<&SmbEvidence>) -> Self {
        match ev.and_then(|e| e.file.as_deref().map(|f| (e, f))) {
            Some((e, f)) => file(e.tree.as_deref(), f),
            None => Self::default(),
        }
    }
}

impl Smb {
    /// The `smb.*` of an alert's evidence.
    pub fn of_alert(ev: Option<&SmbEvidence>) -> Self {
        let Some(e) = ev else {
            return Self::default();
        };
        Self {
            path: e.tree.clone(),
            named_pipe: e.pipe.clone(),
            dialects: e.dialects.clone(),
            exploit: e.exploit,
            logon: e.logon,
            calls: e.calls,
            host_events: e.host_events.clone(),
            ..Self::default()
        }
    }
}

impl Rpc {
    /// The `rpc.*` of an alert's evidence.
    pub fn of_alert(ev: Option<&SmbEvidence>) -> Self {
        let Some(e) = ev else {
            return Self::default();
        };
        Self {
            interface: RpcInterface {
                name: e.interface.clone(),
                uuid: None,
            },
            opnum: None,
            operation: e.operations.clone(),
            unbound: None,
        }
    }
}

/// `user.*` of an SMB line: the NTLMSSP account.
#[derive(Debug, Default, Serialize)]
pub struct SmbUser<'a> {
    /// UserName.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<&'a str>,
    /// DomainName, upper-cased (as on alerts).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
}

impl Empty for SmbUser<'_> {
    fn is_empty(&self) -> bool {
        self.name.is_none() && self.domain.is_none()
    }
}

/// `observer.ingress.vlan` of an SMB line.
#[derive(Debug, Default, Serialize)]
pub struct SmbLineObserver {
    /// `observer.ingress.*`.
    #[serde(skip_serializing_if = "empty")]
    pub ingress: SmbLineIngress,
}

/// `observer.ingress.*` of an SMB line.
#[derive(Debug, Default, Serialize)]
pub struct SmbLineIngress {
    /// Outer VLAN id, when tagged.
    #[serde(skip_serializing_if = "empty")]
    pub vlan: Id<u16>,
}

impl Empty for SmbLineObserver {
    fn is_empty(&self) -> bool {
        self.ingress.is_empty()
    }
}

impl Empty for SmbLineIngress {
    fn is_empty(&self) -> bool {
        self.vlan.is_empty()
    }
}

/// `smbwatch.*` of an SMB line.
#[derive(Debug, Default, Serialize)]
pub struct SmbLineSmbwatch {
    /// The bare share name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub share: Option<String>,
}

impl Empty for SmbLineSmbwatch {
    fn is_empty(&self) -> bool {
        self.share.is_none()
    }
}

/// One SMB observation as an ECS event line.
#[derive(Debug, Serialize)]
pub struct SmbLine<'a> {
    /// The segment's time.
    #[serde(rename = "@timestamp")]
    pub timestamp: Timestamp,
    /// `ecs.*`.
    pub ecs: Ecs,
    /// `event.*`.
    pub event: LineEvent,
    /// The client.
    pub source: Peer<'a>,
    /// The server.
    pub destination: Peer<'a>,
    /// `network.*`.
    pub network: LineNetwork,
    /// `observer.*`.
    #[serde(skip_serializing_if = "empty")]
    pub observer: SmbLineObserver,
    /// The NTLMSSP account of the connection.
    #[serde(skip_serializing_if = "empty")]
    pub user: SmbUser<'a>,
    /// `file.*`.
    #[serde(skip_serializing_if = "empty")]
    pub file: File,
    /// `smb.*`.
    #[serde(skip_serializing_if = "empty")]
    pub smb: Smb,
    /// `rpc.*`.
    #[serde(skip_serializing_if = "empty")]
    pub rpc: Rpc,
    /// `smbwatch.*`.
    #[serde(skip_serializing_if = "empty")]
    pub smbwatch: SmbLineSmbwatch,
}

fn outcome(status: Option<NtStatus>) -> Option<&'static str> {
    status.map(|s| {
        if s == NtStatus::SUCCESS {
            "success"
        } else {
            "failure"
        }
    })
}

fn status(s: Option<NtStatus>) -> Option<String> {
    s.map(|s| format!("{:#010x}", s.0))
}

fn unseen(u: &Unseen) -> (&'static str, Option<String>, Option<u64>) {
    match u {
        Unseen::Stream { hole, bytes } => (
            match hole {
                Hole::Gap => "gap",
                Hole::SampleCut => "sample_cut",
                Hole::SampleEnd => "sample_end",
                Hole::Resync => "resync",
            },
            None,
            Some(*bytes),
        ),
        Unseen::Malformed(e) => ("malformed", Some(e.to_string()), None),
        Unseen::NotSmb { len } => ("not_smb", None, Some(u64::from(*len))),
        Unseen::Compressed => ("compressed", None, None),
        Unseen::NoRequest { command } => ("no_request", Some(format!("{command:?}")), None),
        Unseen::RpcCut { bytes } => ("rpc_cut", None, Some(*bytes)),
        Unseen::NoPipe { bytes } => ("no_pipe", None, Some(*bytes)),
        Unseen::Limit(l) => ("limit", Some(format!("{l:?}")), None),
    }
}

/// ECS `source.mac`: upper case, dash-separated.
fn mac(m: smbwatch_core::event::MacAddr) -> String {
    let b = m.0;
    format!(
        "{:02X}-{:02X}-{:02X}-{:02X}-{:02X}-{:02X}",
        b[0], b[1], b[2], b[3], b[4], b[5]
    )
}

impl<'a> SmbLine<'a> {
    /// The line of one observation. Categories: `network` always;
    /// `authentication` for logons, `file` for creates, writes and
    /// closes. Types: `protocol` (negotiate, RPC, encryption, unseen),
    /// `start` (logon), `access` (tree connect, create of an existing
    /// file), `creation` (create of a new file, write), `end` (close).
    pub fn new(ev: &'a SmbEvent) -> Self {
        let tree = ev.share.as_deref();
        let mut smb = Smb {
            path: ev.share.clone(),
            named_pipe: ev.pipe.clone(),
            ..Smb::default()
        };
        let mut rpc = Rpc::default();
        let mut f = File::default();
        let mut out = None;
        let (category, types): (&'static [&'static str], &'static [&'static str]) =
            match &ev.observation {
                Observation::Smb1 { dialects } => {
                    smb.dialects = dialects.iter().take(16).cloned().collect();
                    (&["network"], &["protocol"])
                }
                Observation::Exploit { sign } => {
                    smb.exploit = Some(sign.name());
                    (&["network", "intrusion_detection"], &["info"])
                }
                Observation::Negotiate { dialect } => {
                    smb.dialect = Some(dialect.to_string());
                    (&["network"], &["protocol"])
                }
                Observation::Auth { status: s, .. } => {
                    out = outcome(*s);
                    smb.status = status(*s);
                    smb.logon = ev.account.as_ref().and_then(logon);
                    (&["network", "authentication"], &["start"])
                }
                Observation::TreeConnect {
                    path,
                    share_type,
                    status: s,
                } => {
                    out = outcome(*s);
                    smb.status = status(*s);
                    smb.path = Some(path.clone());
                    smb.share_type = share_type.map(|t| match t {
                        ShareType::Disk => "disk".to_owned(),
                        ShareType::Pipe => "pipe".to_owned(),
                        ShareType::Print => "print".to_owned(),
                        ShareType::Other(v) => format!("{v:#04x}"),
                    });
                    (&["network"], &["access"])
                }
                Observation::Create {
                    name,
                    pipe,
                    access,
                    disposition,
                    status: s,
                } => {
                    out = outcome(*s);
                    smb.status = status(*s);
                    smb.access = Some(format!("{access:#010x}"));
                    smb.disposition = Some(*disposition);
                    if *pipe {
                        smb.named_pipe = Some(name.clone());
                    } else {
                        f = file(tree, name);
                    }
                    // FILE_OPEN (1) opens what exists; the others may create.
                    let ty: &'static [&'static str] = if *disposition == 1 {
                        &["access"]
                    } else {
                        &["creation"]
                    };
                    (&["network", "file"], ty)
                }
                Observation::Write { name, offset, len } => {
                    smb.offset = Some(*offset);
                    smb.length = Some(*len);
                    if let Some(n) = name {
                        f = file(tree, n);
                    }
                    (&["network", "file"], &["change"])
                }
                Observation::Rename { name, to } => {
                    smb.renamed_from = name.as_ref().map(|n| full_path(tree, n));
                    f = file(tree, to);
                    (&["network", "file"], &["change"])
                }
                Observation::Close { name } => {
                    if let Some(n) = name {
                        f = file(tree, n);
                    }
                    (&["network", "file"], &["end"])
                }
                Observation::RpcBind { interface } => {
                    rpc.interface = RpcInterface {
                        name: interface.name.map(str::to_owned),
                        uuid: Some(interface.uuid.to_string()),
                    };
                    (&["network"], &["protocol"])
                }
                Observation::RpcCall {
                    interface,
                    unbound,
                    opnum,
                    operation,
                } => {
                    if let Some(i) = interface {
                        rpc.interface = RpcInterface {
                            name: i.name.map(str::to_owned),
                            uuid: Some(i.uuid.to_string()),
                        };
                    }
                    rpc.unbound = unbound.map(smbwatch_core::smb::Unbound::name);
                    rpc.opnum = Some(*opnum);
                    rpc.operation = operation.iter().map(|o| (*o).to_owned()).collect();
                    (&["network"], &["protocol"])
                }
                Observation::Encrypted { session_id } => {
                    smb.session_id = Some(format!("{session_id:#018x}"));
                    (&["network"], &["protocol"])
                }
                Observation::Unseen { what } => {
                    let (k, d, b) = unseen(what);
                    smb.unseen = Some(k);
                    smb.unseen_detail = d;
                    smb.unseen_bytes = b;
                    (&["network"], &["info"])
                }
            };
        let account = ev.account.as_ref();
        let named = account.filter(|a| !a.anonymous && !a.user.is_empty());
        Self {
            timestamp: Timestamp::new(ev.ts),
            ecs: Ecs {
                version: ECS_VERSION,
            },
            event: LineEvent {
                kind: "event",
                category,
                types,
                action: ev.action(),
                outcome: out,
                module: MODULE,
                dataset: SMB_DATASET,
            },
            source: Peer {
                ip: Some(ev.client.ip()),
                port: Some(ev.client.port()),
                domain: account
                    .map(|a| a.workstation.as_str())
                    .filter(|w| !w.is_empty()),
                mac: ev.client_mac.map(mac),
            },
            destination: Peer {
                ip: Some(ev.server.ip()),
                port: Some(ev.server.port()),
                domain: None,
                mac: None,
            },
            network: LineNetwork {
                transport: "tcp",
                kind: if ev.client.is_ipv4() { "ipv4" } else { "ipv6" },
                protocol: Some("smb"),
            },
            observer: SmbLineObserver {
                ingress: SmbLineIngress {
                    vlan: Id {
                        id: ev.vlan.map(Keyword),
                    },
                },
            },
            user: SmbUser {
                name: named.map(|a| a.user.as_str()),
                domain: named
                    .map(|a| a.domain.to_uppercase())
                    .filter(|d| !d.is_empty()),
            },
            file: f,
            smb,
            rpc,
            smbwatch: SmbLineSmbwatch {
                share: tree.map(|t| smbwatch_core::smb::share_name(t).to_owned()),
            },
        }
    }

    /// The line as JSON.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("an SMB line serialises")
    }
}

#[cfg(test)]
#[path = "smb_tests.rs"]
mod tests;
