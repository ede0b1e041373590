//! The SMB alert rules: what a connection's observations mean.
//!
//! | Kind | Fires on | Severity |
//! |---|---|---|
//! | `smb_admin_share` | a tree connect to `ADMIN$` or a drive share (`C$`…) that the server accepted (or whose answer was not seen); a sensitive pipe (`[smb] sensitive_pipes`) opened on `IPC$` | high; medium for a pipe |
//! | `smb_file_drop` | a CREATE asking to write (WriteData/AppendData, or generic/maximal rights) or a WRITE of an executable or script (the host rules' extension list) on an administrative share | critical |
//! | `smb_remote_service` | svcctl RCreateService*, RStartService*, RChangeServiceConfig* | critical |
//! | `smb_remote_task` | atsvc NetrJobAdd; ITaskSchedulerService SchRpcRegisterTask, SchRpcRun | critical |
//! | `smb_dcsync` | drsuapi IDL_DRSGetNCChanges from a source not in `[smb] domain_controllers` | critical |
//! | `smb_v1` | an SMB1 NEGOTIATE offering no SMB2 dialect, or an SMB1 tree connect (the server did not upgrade) | low |
//! | `smb_enum` | `enum_burst` enumeration calls (samr, lsarpc lookups, srvsvc, wkssvc) from one source within `enum_window` | medium |
//!
//! One alert per act: an act is (kind, client, server, what: the share,
//! the file, the pipe, the interface), alerting once per `dedup_window`
//! (retransmissions, compound requests, the CREATE and WRITE of one file,
//! CreateService then StartService are one act). An enumeration burst is
//! one act per source. At most `max_alerts_per_source` per source and kind
//! per `dedup_window` (per kind, so a flood of one cheap act cannot use up
//! the cap before a service install); what is not raised is counted.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use chrono::{DateTime, Utc};

use super::{share_name, Account, SmbCounters, SmbSettings};
use crate::alert::{Alert, AlertKind, Severity, SmbEvidence};
use crate::correlate::is_executable;
use crate::timed::{delta, TimedIndex};
use smbwatch_smb::{ExploitSign, NtStatus, Observation};

/// svcctl operations that install or start code as a service.
const SERVICE_OPS: &[&str] = &[
    "RCreateServiceW",
    "RCreateServiceA",
    "RCreateServiceWOW64W",
    "RStartServiceW",
    "RStartServiceA",
    "RChangeServiceConfigW",
    "RChangeServiceConfigA",
];

/// Task operations that register or run a task.
const TASK_OPS: &[&str] = &["NetrJobAdd", "SchRpcRegisterTask", "SchRpcRun"];

/// Enumeration operations (account, group, share, session discovery; the
/// LSA SID lookups of RID cycling).
const ENUM_OPS: &[&str] = &[
    "SamrEnumerateDomainsInSamServer",
    "SamrEnumerateGroupsInDomain",
    "SamrEnumerateUsersInDomain",
    "SamrEnumerateAliasesInDomain",
    "SamrQueryDisplayInformation",
    "SamrQueryDisplayInformation2",
    "SamrQueryDisplayInformation3",
    "SamrGetMembersInGroup",
    "SamrGetMembersInAlias",
    "SamrLookupIdsInDomain",
    "SamrQueryInformationUser",
    "SamrGetGroupsForUser",
    "LsarEnumerateAccounts",
    "LsarLookupSids",
    "LsarLookupSids2",
    "LsarLookupSids3",
    "NetrShareEnum",
    "NetrSessionEnum",
    "NetrConnectionEnum",
    "NetrFileEnum",
    "NetrWkstaUserEnum",
];

/// Entries each rule table keeps (acts fired, alerts per source,
/// enumeration calls); with names cut to [`MAX_ACT`] bytes they stay
/// within a few MiB.
pub const MAX_RULE_ENTRIES: usize = 16_384;

/// Longest act key kept (bytes of the share/file/interface).
const MAX_ACT: usize = 256;

/// A CREATE's DesiredAccess bits that allow writing the file's data:
/// `WriteData`, `AppendData`, and the generic and maximal rights that
/// include them (`GENERIC_WRITE`, `GENERIC_ALL`, `MAXIMUM_ALLOWED`; MS-SMB2
/// 2.2.13.1.1), so asking broadly does not hide a write.
const WRITE_ACCESS: u32 = crate::correlate::WRITE_DATA
    | crate::correlate::APPEND_DATA
    | 0x4000_0000
    | 0x1000_0000
    | 0x0200_0000;

/// What the rules know of the connection an observation came from.
#[derive(Debug)]
pub(super) struct Context<'a> {
    pub ts: DateTime<Utc>,
    pub client: SocketAddr,
    pub server: SocketAddr,
    pub vlan: Option<u16>,
    pub account: Option<&'a Account>,
    pub share: Option<&'a str>,
    pub pipe: Option<&'a str>,
}

/// Per-connection rule state, kept with the connection.
#[derive(Debug, Default)]
pub(super) struct FlowRules {
    /// SMB1 NEGOTIATE seen and no SMB2 answer yet.
    smb1: Option<Vec<String>>,
}

impl FlowRules {
    pub fn heap_size(&self) -> usize {
        self.smb1
            .as_ref()
            .map_or(0, |d| d.iter().map(|s| s.capacity() + 24).sum())
    }
}

/// The rules' shared state (across connections).
#[derive(Debug)]
pub(super) struct Rules {
    fired: TimedIndex<(IpAddr, IpAddr, String), ()>,
    /// Alerts raised per (source, kind code).
    per_source: TimedIndex<(IpAddr, String), ()>,
    enum_calls: TimedIndex<IpAddr, u16>,
}

/// The index of an operation name in [`ENUM_OPS`] (kept per call instead of
/// the name).
fn enum_op(op: &str) -> Option<u16> {
    ENUM_OPS.iter().position(|o| *o == op).map(|i| i as u16)
}

fn cut(mut s: String) -> String {
    if s.len() > MAX_ACT {
        let mut end = MAX_ACT;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

fn succeeded(status: Option<NtStatus>) -> bool {
    status.is_none_or(|s| s == NtStatus::SUCCESS)
}

impl Rules {
    pub fn new() -> Self {
        Self {
            fired: TimedIndex::new(MAX_RULE_ENTRIES),
            per_source: TimedIndex::new(MAX_RULE_ENTRIES),
            enum_calls: TimedIndex::new(MAX_RULE_ENTRIES),
        }
    }

    /// Entries evicted by the caps.
    pub fn evicted(&self) -> u64 {
        self.fired.evicted() + self.per_source.evicted() + self.enum_calls.evicted()
    }

    /// Drops what is older than the rules' windows at `now`.
    pub fn prune(&mut self, settings: &SmbSettings, now: DateTime<Utc>) {
        self.fired.prune(now - delta(settings.dedup_window));
        self.per_source.prune(now - delta(settings.dedup_window));
        self.enum_calls.prune(now - delta(settings.enum_window));
    }

    /// The alerts one observation raises.
    pub fn check(
        &mut self,
        settings: &SmbSettings,
        counters: &mut SmbCounters,
        flow: &mut FlowRules,
        cx: &Context<'_>,
        o: &Observation,
        out: &mut Vec<Alert>,
    ) {
        let tree = cx.share.map(share_name);
        let mut raise = |rules: &mut Self, a: Draft| {
            if let Some(alert) = rules.raise(settings, counters, cx, a) {
                out.push(alert);
            }
        };
        match o {
            Observation::Smb1 { dialects } => {
                let upgrade = dialects.iter().any(|d| d.starts_with("SMB 2"));
                if upgrade {
                    flow.smb1 = Some(dialects.clone());
                } else {
                    raise(self, smb_v1(dialects, "offered only SMB1 dialects"));
                }
            }
            Observation::Negotiate { .. } => flow.smb1 = None,
            Observation::Exploit { sign } => raise(self, exploit(*sign)),
            Observation::TreeConnect { path, status, .. } => {
                if let Some(dialects) = flow.smb1.take() {
                    raise(self, smb_v1(&dialects, "connected a share over SMB1"));
                }
                let share = share_name(path);
                if succeeded(*status) && settings.is_admin_share(share) {
                    raise(
                        self,
                        Draft {
                            kind: AlertKind::SmbAdminShare,
                            severity: Severity::High,
                            act: share.to_ascii_uppercase(),
                            what: format!("connected to {path}"),
                            evidence: SmbEvidence {
                                tree: Some(path.clone()),
                                ..SmbEvidence::default()
                            },
                        },
                    );
                }
            }
            Observation::Create {
                name,
                pipe: true,
                status,
                ..
            } if succeeded(*status) && settings.is_sensitive_pipe(name) => raise(
                self,
                Draft {
                    kind: AlertKind::SmbAdminShare,
                    severity: Severity::Medium,
                    act: format!("IPC$\\{}", super::pipe_name(name).to_ascii_lowercase()),
                    what: format!(
                        "opened the pipe \\{} on {}",
                        super::pipe_name(name),
                        cx.share.unwrap_or("IPC$")
                    ),
                    evidence: SmbEvidence {
                        tree: cx.share.map(str::to_owned),
                        pipe: Some(name.clone()),
                        ..SmbEvidence::default()
                    },
                },
            ),
            Observation::Create {
                name,
                pipe: false,
                access,
                status,
                ..
            } if succeeded(*status) && access & WRITE_ACCESS != 0 => {
                let verb = "opened for writing";
                self.drop(settings, (tree, cx.share), name, verb, &mut raise);
            }
            Observation::Write {
                name: Some(name), ..
            } => {
                self.drop(settings, (tree, cx.share), name, "wrote", &mut raise);
            }
            // Dropped under a harmless name, renamed to run: the drop is
            // the final name.
            Observation::Rename { name, to } => {
                let verb = match name {
                    Some(n) => format!("renamed {n} to"),
                    None => "renamed a file to".to_owned(),
                };
                self.drop(settings, (tree, cx.share), to, &verb, &mut raise);
            }
            Observation::RpcCall {
                interface: Some(iface),
                operation: Some(op),
                ..
            } => {
                let evidence = || SmbEvidence {
                    tree: cx.share.map(str::to_owned),
                    pipe: cx.pipe.map(str::to_owned),
                    interface: Some(iface.to_string()),
                    operations: vec![(*op).to_owned()],
                    ..SmbEvidence::default()
                };
                let name = iface.name.unwrap_or("");
                if name == "svcctl" && SERVICE_OPS.contains(op) {
                    raise(
                        self,
                        Draft {
                            kind: AlertKind::SmbRemoteService,
                            severity: Severity::Critical,
                            act: "svcctl".into(),
                            what: format!("called svcctl {op}"),
                            evidence: evidence(),
                        },
                    );
                } else if TASK_OPS.contains(op) {
                    raise(
                        self,
                        Draft {
                            kind: AlertKind::SmbRemoteTask,
                            severity: Severity::Critical,
                            act: name.to_owned(),
                            what: format!("called {iface} {op}"),
                            evidence: evidence(),
                        },
                    );
                } else if *op == "IDL_DRSGetNCChanges"
                    && !settings.is_domain_controller(cx.client.ip())
                {
                    raise(
                        self,
                        Draft {
                            kind: AlertKind::SmbDcsync,
                            severity: Severity::Critical,
                            act: "drsuapi".into(),
                            what: "asked for directory replication (drsuapi \
                                   IDL_DRSGetNCChanges) and is not a configured \
                                   domain controller"
                                .into(),
                            evidence: evidence(),
                        },
                    );
                } else if let Some(what) =
                    coercion(name, op, || settings.is_domain_controller(cx.server.ip()))
                {
                    raise(
                        self,
                        Draft {
                            kind: AlertKind::SmbCoercion,
                            severity: Severity::High,
                            act: name.to_owned(),
                            what: format!("called {iface} {op} ({what})"),
                            evidence: evidence(),
                        },
                    );
                } else if name == "winreg" && REGISTRY_SAVE_OPS.contains(op) {
                    raise(
                        self,
                        Draft {
                            kind: AlertKind::SmbRegistryDump,
                            severity: Severity::Critical,
                            act: "winreg".into(),
                            what: format!("had the server save a registry hive (winreg {op})"),
                            evidence: evidence(),
                        },
                    );
                } else if let Some(i) = enum_op(op) {
                    self.enumeration(settings, cx, i, &mut raise);
                }
            }
            _ => {}
        }
    }

    /// `smb_file_drop` for an executable on an administrative share (the
    /// bare share name and the tree's path); `verb` says what was seen.
    fn drop(
        &mut self,
        settings: &SmbSettings,
        (tree, path): (Option<&str>, Option<&str>),
        file: &str,
        verb: &str,
        raise: &mut impl FnMut(&mut Self, Draft),
    ) {
        let Some(share) = tree.filter(|s| settings.is_admin_share(s)) else {
            return;
        };
        if !is_executable(file) {
            return;
        }
        raise(
            self,
            Draft {
                kind: AlertKind::SmbFileDrop,
                severity: Severity::Critical,
                act: format!("{}\\{}", share.to_ascii_uppercase(), file.to_lowercase()),
                what: format!("{verb} {}\\{file} (an executable)", path.unwrap_or(share)),
                evidence: SmbEvidence {
                    tree: path.map(str::to_owned),
                    file: Some(file.to_owned()),
                    ..SmbEvidence::default()
                },
            },
        );
    }

    /// Counts one enumeration call; `smb_enum` at the burst.
    fn enumeration(
        &mut self,
        settings: &SmbSettings,
        cx: &Context<'_>,
        op: u16,
        raise: &mut impl FnMut(&mut Self, Draft),
    ) {
        let src = cx.client.ip();
        let from = cx.ts - delta(settings.enum_window);
        self.enum_calls.insert(cx.ts, src, op);
        let mut calls = 0u32;
        let mut ops: Vec<String> = Vec::new();
        for (t, i) in self.enum_calls.get(&src) {
            if *t >= from {
                calls += 1;
                let name = ENUM_OPS[usize::from(*i)];
                if !ops.iter().any(|o| o == name) {
                    ops.push(name.to_owned());
                }
            }
        }
        if calls < settings.enum_burst {
            return;
        }
        raise(
            self,
            Draft {
                kind: AlertKind::SmbEnum,
                severity: Severity::Medium,
                act: "enum".into(),
                what: format!(
                    "made {calls} enumeration calls within {} ({})",
                    humantime::format_duration(settings.enum_window),
                    ops.join(", ")
                ),
                evidence: SmbEvidence {
                    operations: ops,
                    calls: Some(calls),
                    ..SmbEvidence::default()
                },
            },
        );
    }

    /// The alert for `d` unless the act already fired within
    /// `dedup_window` or the source is at its cap.
    fn raise(
        &mut self,
        settings: &SmbSettings,
        counters: &mut SmbCounters,
        cx: &Context<'_>,
        d: Draft,
    ) -> Option<Alert> {
        let src = cx.client.ip();
        // An enumeration burst is one act per source, whatever the servers.
        let dst = if d.kind == AlertKind::SmbEnum {
            IpAddr::V4(Ipv4Addr::UNSPECIFIED)
        } else {
            cx.server.ip()
        };
        let key = (src, dst, cut(format!("{}|{}", d.kind.code(), d.act)));
        let window = delta(settings.dedup_window);
        if self
            .fired
            .get(&key)
            .any(|(t, ())| (*t - cx.ts).abs() <= window)
        {
            counters.duplicates += 1;
            return None;
        }
        let src_kind = (src, d.kind.code().to_owned());
        let raised = self
            .per_source
            .get(&src_kind)
            .filter(|(t, ())| (*t - cx.ts).abs() <= window)
            .count();
        if raised >= settings.max_alerts_per_source as usize {
            counters.over_source_cap += 1;
            return None;
        }
        self.fired.insert(cx.ts, key, ());
        self.per_source.insert(cx.ts, src_kind, ());
        counters.alerts += 1;
        Some(d.into_alert(cx))
    }
}

/// An alert before dedup: kind, severity, the act's key and words.
pub(super) struct Draft {
    kind: AlertKind,
    severity: Severity,
    /// What makes the act distinct besides (kind, client, server).
    act: String,
    /// The verb phrase of the message (`connected to \\srv\ADMIN$`).
    what: String,
    evidence: SmbEvidence,
}

/// winreg calls that write a hive to a file on the server (MS-RRP 3.1.5.20,
/// 3.1.5.31).
const REGISTRY_SAVE_OPS: &[&str] = &["BaseRegSaveKey", "BaseRegSaveKeyEx"];

/// Whether `op` of the interface named `iface` makes the server connect
/// and authenticate to a path the caller chose, and which tool family
/// does it. The printer bug is also what every print client does to its
/// print server, so it counts only against a configured domain controller
/// (`to_dc`), where no print client has business.
fn coercion(iface: &str, op: &str, to_dc: impl FnOnce() -> bool) -> Option<&'static str> {
    match iface {
        // Every named MS-EFSR call takes a file path.
        "efsrpc" => Some("PetitPotam"),
        "netdfs" => Some("DFSCoerce"),
        "fsrvp" => Some("ShadowCoerce"),
        // A backup log opened from a path the caller names.
        "eventlog" if op.starts_with("ElfrOpenBEL") => Some("MS-EVEN backup log"),
        "spoolss" if op.starts_with("RpcRemoteFindFirstPrinterChangeNotification") && to_dc() => {
            Some("printer bug")
        }
        _ => None,
    }
}

/// MS17-010's exploit and its implant's command are one act per (client,
/// server); the implant's answer, which says the server is compromised,
/// is another.
fn exploit(sign: ExploitSign) -> Draft {
    let (severity, act, what) = match sign {
        ExploitSign::EternalBlue => (
            Severity::Critical,
            "MS17-010",
            "sent EternalBlue's oversized NT_TRANSACT (MS17-010)",
        ),
        ExploitSign::DoublePulsarCommand => (
            Severity::Critical,
            "MS17-010",
            "sent a DoublePulsar implant command (TRANS2_SESSION_SETUP)",
        ),
        ExploitSign::DoublePulsarAnswer => (
            Severity::Critical,
            "MS17-010 implant",
            "found a DoublePulsar implant answering (the server is compromised)",
        ),
    };
    Draft {
        kind: AlertKind::SmbExploit,
        severity,
        act: act.to_owned(),
        what: what.to_owned(),
        evidence: SmbEvidence {
            exploit: Some(sign.name()),
            ..SmbEvidence::default()
        },
    }
}

fn smb_v1(dialects: &[String], what: &str) -> Draft {
    Draft {
        kind: AlertKind::SmbV1,
        severity: Severity::Low,
        act: String::new(),
        what: what.to_owned(),
        evidence: SmbEvidence {
            dialects: dialects.iter().take(16).cloned().collect(),
            ..SmbEvidence::default()
        },
    }
}

impl Draft {
    fn into_alert(self, cx: &Context<'_>) -> Alert {
        let (src, dst) = (cx.client, cx.server);
        let user = cx.account.and_then(Account::qualified);
        let who = match (cx.account, &user) {
            (_, Some(u)) => format!(" as {u}"),
            (Some(a), None) if a.anonymous => " (anonymous)".to_owned(),
            _ => String::new(),
        };
        let msg = format!(
            "{} {} on {}{who} [SMB on the wire]",
            src.ip(),
            self.what,
            dst.ip()
        );
        let mut a = Alert::new(cx.ts, self.kind, self.severity, msg);
        a.source_ip = Some(src.ip());
        a.source_port = Some(src.port());
        a.destination_ip = Some(dst.ip());
        a.destination_port = Some(dst.port());
        a.vlan = cx.vlan;
        a.community_id = Some(crate::community_id::community_id_v1(
            src.ip(),
            dst.ip(),
            src.port(),
            dst.port(),
            crate::community_id::PROTO_TCP,
            0,
        ));
        a.user = user;
        a.share = self
            .evidence
            .tree
            .as_deref()
            .map(|t| share_name(t).to_owned());
        let mut ev = self.evidence;
        if let Some(acc) = cx.account {
            ev.domain = Some(acc.domain.clone()).filter(|d| !d.is_empty());
            ev.workstation = Some(acc.workstation.clone()).filter(|w| !w.is_empty());
            ev.logon = if acc.anonymous {
                Some("anonymous")
            } else if acc.guest {
                Some("guest")
            } else {
                None
            };
        }
        a.smb = Some(ev);
        a
    }
}
