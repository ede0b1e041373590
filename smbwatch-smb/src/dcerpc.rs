//! Connection-oriented DCE/RPC PDUs (C706 12.6, MS-RPCE 2.2.2) carried over
//! SMB named pipes, and the names of the interfaces and operations that
//! matter for lateral movement.

use crate::wire::{Bytes, ParseError};

/// A DCE/RPC interface UUID, as the bytes appear on the wire (the first
/// three fields little-endian under NDR's little-endian data representation).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Uuid(pub [u8; 16]);

impl Uuid {
    /// Parses the textual form `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`.
    pub const fn from_str_const(s: &str) -> Self {
        let b = s.as_bytes();
        let mut hex = [0u8; 16];
        let (mut i, mut n) = (0, 0);
        while i < b.len() {
            if b[i] != b'-' {
                let v = match b[i] {
                    c @ b'0'..=b'9' => c - b'0',
                    c @ b'a'..=b'f' => c - b'a' + 10,
                    c @ b'A'..=b'F' => c - b'A' + 10,
                    _ => panic!("bad hex digit in a UUID literal"),
                };
                hex[n / 2] |= if n % 2 == 0 { v << 4 } else { v };
                n += 1;
            }
            i += 1;
        }
        assert!(n == 32, "a UUID literal has 32 hex digits");
        // Textual order to wire order: swap the first three fields.
        Self([
            hex[3], hex[2], hex[1], hex[0], hex[5], hex[4], hex[7], hex[6], hex[8], hex[9],
            hex[10], hex[11], hex[12], hex[13], hex[14], hex[15],
        ])
    }
}

impl std::fmt::Display for Uuid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let b = &self.0;
        write!(
            f,
            "{:08x}-{:04x}-{:04x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
            u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            u16::from_le_bytes([b[4], b[5]]),
            u16::from_le_bytes([b[6], b[7]]),
            b[8],
            b[9],
            b[10],
            b[11],
            b[12],
            b[13],
            b[14],
            b[15]
        )
    }
}

/// An RPC interface: its UUID and, when known, its name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Interface {
    /// The abstract syntax UUID.
    pub uuid: Uuid,
    /// The interface's usual name (Wireshark's, lower case where Wireshark
    /// uses it), `None` when not in [`INTERFACES`].
    pub name: Option<&'static str>,
}

impl Interface {
    /// The interface for a UUID.
    pub fn from_uuid(uuid: Uuid) -> Self {
        let known = INTERFACES.iter().find(|k| k.uuid == uuid);
        Self {
            uuid,
            name: known.map(|k| k.name),
        }
    }

    /// The operation's name, when the interface and opnum are known.
    pub fn operation(&self, opnum: u16) -> Option<&'static str> {
        INTERFACES
            .iter()
            .find(|k| k.uuid == self.uuid)?
            .ops
            .iter()
            .find(|(n, _)| *n == opnum)
            .map(|(_, name)| *name)
    }
}

impl std::fmt::Display for Interface {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.name {
            Some(n) => f.write_str(n),
            None => write!(f, "{}", self.uuid),
        }
    }
}

/// A known interface: UUID, name and the operations worth naming.
#[derive(Debug)]
pub struct KnownInterface {
    /// The abstract syntax UUID.
    pub uuid: Uuid,
    /// The name.
    pub name: &'static str,
    /// (opnum, operation name).
    pub ops: &'static [(u16, &'static str)],
}

const fn iface(
    uuid: &str,
    name: &'static str,
    ops: &'static [(u16, &'static str)],
) -> KnownInterface {
    KnownInterface {
        uuid: Uuid::from_str_const(uuid),
        name,
        ops,
    }
}

/// The interfaces named. UUIDs are each specification's section 1.9
/// ("Standards Assignments"); operations are from the section listed with
/// each table (the method's opnum in the IDL).
pub static INTERFACES: &[KnownInterface] = &[
    // MS-SCMR 1.9; opnums MS-SCMR 3.1.4.
    iface(
        "367abb81-9844-35f1-ad32-98f038001003",
        "svcctl",
        &[
            (0, "RCloseServiceHandle"),
            (1, "RControlService"),
            (2, "RDeleteService"),
            (6, "RQueryServiceStatus"),
            (11, "RChangeServiceConfigW"),
            (12, "RCreateServiceW"),
            (14, "REnumServicesStatusW"),
            (15, "ROpenSCManagerW"),
            (16, "ROpenServiceW"),
            (17, "RQueryServiceConfigW"),
            (19, "RStartServiceW"),
            (23, "RChangeServiceConfigA"),
            (24, "RCreateServiceA"),
            (27, "ROpenSCManagerA"),
            (28, "ROpenServiceA"),
            (31, "RStartServiceA"),
            (37, "RChangeServiceConfig2W"),
            (42, "REnumServicesStatusExW"),
            (44, "RCreateServiceWOW64W"),
        ],
    ),
    // MS-TSCH 1.9; opnums MS-TSCH 3.2.5.2 (ATSvc).
    iface(
        "1ff70682-0a51-30e8-076d-740be8cee98b",
        "atsvc",
        &[
            (0, "NetrJobAdd"),
            (1, "NetrJobDel"),
            (2, "NetrJobEnum"),
            (3, "NetrJobGetInfo"),
        ],
    ),
    // MS-TSCH 1.9; opnums MS-TSCH 3.2.5.4 (ITaskSchedulerService).
    iface(
        "86d35949-83c9-4044-b424-db363231fd0c",
        "ITaskSchedulerService",
        &[
            (0, "SchRpcHighestVersion"),
            (1, "SchRpcRegisterTask"),
            (2, "SchRpcRetrieveTask"),
            (3, "SchRpcCreateFolder"),
            (6, "SchRpcEnumFolders"),
            (7, "SchRpcEnumTasks"),
            (12, "SchRpcRun"),
            (13, "SchRpcDelete"),
            (16, "SchRpcGetLastRunInfo"),
            (19, "SchRpcEnableTask"),
        ],
    ),
    // MS-TSCH 1.9; opnums MS-TSCH 3.2.5.3 (SASec).
    iface(
        "378e52b0-c0a9-11cf-822d-00aa0051e40f",
        "sasec",
        &[(0, "SASetAccountInformation")],
    ),
    // MS-SAMR 1.9; opnums MS-SAMR 3.1.5.
    iface(
        "12345778-1234-abcd-ef00-0123456789ac",
        "samr",
        &[
            (0, "SamrConnect"),
            (1, "SamrCloseHandle"),
            (5, "SamrLookupDomainInSamServer"),
            (6, "SamrEnumerateDomainsInSamServer"),
            (7, "SamrOpenDomain"),
            (8, "SamrQueryInformationDomain"),
            (11, "SamrEnumerateGroupsInDomain"),
            (12, "SamrCreateUserInDomain"),
            (13, "SamrEnumerateUsersInDomain"),
            (15, "SamrEnumerateAliasesInDomain"),
            (16, "SamrGetAliasMembership"),
            (17, "SamrLookupNamesInDomain"),
            (18, "SamrLookupIdsInDomain"),
            (25, "SamrGetMembersInGroup"),
            (33, "SamrGetMembersInAlias"),
            (34, "SamrOpenUser"),
            (36, "SamrQueryInformationUser"),
            (39, "SamrGetGroupsForUser"),
            (40, "SamrQueryDisplayInformation"),
            (48, "SamrQueryDisplayInformation2"),
            (50, "SamrCreateUser2InDomain"),
            (51, "SamrQueryDisplayInformation3"),
            (57, "SamrConnect2"),
            (62, "SamrConnect4"),
            (64, "SamrConnect5"),
        ],
    ),
    // MS-LSAT 1.9 / MS-LSAD 1.9 (one interface); opnums MS-LSAT 3.1.4 and
    // MS-LSAD 3.1.4.
    iface(
        "12345778-1234-abcd-ef00-0123456789ab",
        "lsarpc",
        &[
            (0, "LsarClose"),
            (6, "LsarOpenPolicy"),
            (7, "LsarQueryInformationPolicy"),
            (11, "LsarEnumerateAccounts"),
            (14, "LsarLookupNames"),
            (15, "LsarLookupSids"),
            (44, "LsarOpenPolicy2"),
            (45, "LsarGetUserName"),
            (46, "LsarQueryInformationPolicy2"),
            (57, "LsarLookupSids2"),
            (58, "LsarLookupNames2"),
            (68, "LsarLookupNames3"),
            (76, "LsarLookupSids3"),
            (77, "LsarLookupNames4"),
        ],
    ),
    // MS-SRVS 1.9; opnums MS-SRVS 3.1.4.
    iface(
        "4b324fc8-1670-01d3-1278-5a47bf6ee188",
        "srvsvc",
        &[
            (8, "NetrConnectionEnum"),
            (9, "NetrFileEnum"),
            (12, "NetrSessionEnum"),
            (14, "NetrShareAdd"),
            (15, "NetrShareEnum"),
            (16, "NetrShareGetInfo"),
            (21, "NetrServerGetInfo"),
            (28, "NetrRemoteTOD"),
        ],
    ),
    // MS-RRP 1.9; opnums MS-RRP 3.1.5.
    iface(
        "338cd001-2244-31f1-aaaa-900038001003",
        "winreg",
        &[
            (0, "OpenClassesRoot"),
            (1, "OpenCurrentUser"),
            (2, "OpenLocalMachine"),
            (4, "OpenUsers"),
            (5, "BaseRegCloseKey"),
            (6, "BaseRegCreateKey"),
            (7, "BaseRegDeleteKey"),
            (8, "BaseRegDeleteValue"),
            (9, "BaseRegEnumKey"),
            (10, "BaseRegEnumValue"),
            (15, "BaseRegOpenKey"),
            (16, "BaseRegQueryInfoKey"),
            (17, "BaseRegQueryValue"),
            (20, "BaseRegSaveKey"),
            (22, "BaseRegSetValue"),
            (31, "BaseRegSaveKeyEx"),
        ],
    ),
    // MS-DRSR 1.9; opnums MS-DRSR 4.1.
    iface(
        "e3514235-4b06-11d1-ab04-00c04fc2dcd2",
        "drsuapi",
        &[
            (0, "IDL_DRSBind"),
            (1, "IDL_DRSUnbind"),
            (2, "IDL_DRSReplicaSync"),
            (3, "IDL_DRSGetNCChanges"),
            (4, "IDL_DRSUpdateRefs"),
            (5, "IDL_DRSReplicaAdd"),
            (12, "IDL_DRSCrackNames"),
            (16, "IDL_DRSDomainControllerInfo"),
            (17, "IDL_DRSAddEntry"),
        ],
    ),
    // MS-RPCE 2.2.1.2.5 (the endpoint mapper, C706 appendix O).
    iface(
        "e1af8308-5d1f-11c9-91a4-08002b14a0fa",
        "epmapper",
        &[(2, "ept_lookup"), (3, "ept_map")],
    ),
    // MS-WKST 1.9; opnums MS-WKST 3.2.4.
    iface(
        "6bffd098-a112-3610-9833-46c3f87e345a",
        "wkssvc",
        &[(0, "NetrWkstaGetInfo"), (2, "NetrWkstaUserEnum")],
    ),
    // MS-NRPC 1.9; opnums MS-NRPC 3.5.4.
    iface(
        "12345678-1234-abcd-ef00-01234567cffb",
        "netlogon",
        &[
            (2, "NetrLogonSamLogon"),
            (4, "NetrServerReqChallenge"),
            (26, "NetrServerAuthenticate3"),
            (29, "NetrLogonGetDomainInfo"),
            (30, "NetrServerPasswordSet2"),
        ],
    ),
    // MS-RPRN 1.9; opnums MS-RPRN 3.1.4.
    iface(
        "12345678-1234-abcd-ef00-0123456789ab",
        "spoolss",
        &[
            (1, "RpcOpenPrinter"),
            (62, "RpcRemoteFindFirstPrinterChangeNotification"),
            (65, "RpcRemoteFindFirstPrinterChangeNotificationEx"),
            (69, "RpcOpenPrinterEx"),
            (89, "RpcAddPrinterDriverEx"),
        ],
    ),
    // MS-EFSR 1.9: the interface through \lsarpc, and through \efsrpc
    // (the second UUID); opnums MS-EFSR 3.1.4.2 (the calls that take a
    // path, which PetitPotam and its variants point at a UNC name).
    iface("c681d488-d850-11d0-8c52-00c04fd90f7e", "efsrpc", EFSR_OPS),
    iface("df1941c5-fe89-4e79-bf10-463657acf44d", "efsrpc", EFSR_OPS),
    // MS-DFSNM 1.9; opnums MS-DFSNM 3.1.4 (DFSCoerce's pair).
    iface(
        "4fc742e0-4a10-11cf-8273-00aa004ae673",
        "netdfs",
        &[(12, "NetrDfsAddStdRoot"), (13, "NetrDfsRemoveStdRoot")],
    ),
    // MS-EVEN 1.9; opnums MS-EVEN 3.1.4 (the backup-log opens take a
    // UNC path: Coercer's MS-EVEN method, "CheeseOunce").
    iface(
        "82273fdc-e32a-18c3-3f78-827929dc23ea",
        "eventlog",
        &[(9, "ElfrOpenBELW"), (16, "ElfrOpenBELA")],
    ),
    // MS-FSRVP 1.9; opnums MS-FSRVP 3.1.4 (ShadowCoerce's pair).
    iface(
        "a8e0653c-2744-4389-a61d-7373df8b2292",
        "fsrvp",
        &[(8, "IsPathSupported"), (9, "IsPathShadowCopied")],
    ),
];

/// MS-EFSR's operations named (3.1.4.2).
const EFSR_OPS: &[(u16, &str)] = &[
    (0, "EfsRpcOpenFileRaw"),
    (4, "EfsRpcEncryptFileSrv"),
    (5, "EfsRpcDecryptFileSrv"),
    (6, "EfsRpcQueryUsersOnFile"),
    (7, "EfsRpcQueryRecoveryAgents"),
    (8, "EfsRpcRemoveUsersFromFile"),
    (9, "EfsRpcAddUsersToFile"),
    (12, "EfsRpcFileKeyInfo"),
    (13, "EfsRpcDuplicateEncryptionInfoFile"),
    (15, "EfsRpcAddUsersToFileEx"),
];

/// PDU types (C706 12.6.4.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PduType {
    /// REQUEST (0).
    Request,
    /// RESPONSE (2).
    Response,
    /// FAULT (3).
    Fault,
    /// BIND (11).
    Bind,
    /// BIND_ACK (12).
    BindAck,
    /// BIND_NAK (13).
    BindNak,
    /// ALTER_CONTEXT (14).
    AlterContext,
    /// ALTER_CONTEXT_RESP (15).
    AlterContextResp,
    /// Any other type.
    Other(u8),
}

/// The most presentation contexts read from one BIND.
pub const MAX_CONTEXTS: usize = 16;

/// A parsed PDU (the parts the session uses).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Pdu {
    /// BIND or ALTER_CONTEXT: (context id, interface) per context item, at
    /// most [`MAX_CONTEXTS`]; `more` when the PDU listed more.
    Bind {
        /// The context items read.
        items: Vec<(u16, Interface)>,
        /// Items past [`MAX_CONTEXTS`] were not read.
        more: bool,
    },
    /// BIND_ACK or ALTER_CONTEXT_RESP: whether each context (in order) was
    /// accepted.
    BindAck(Vec<bool>),
    /// REQUEST: context id, opnum, and whether this is the first fragment.
    Request {
        /// Presentation context id.
        context: u16,
        /// Operation number.
        opnum: u16,
        /// PFC_FIRST_FRAG.
        first: bool,
    },
    /// Any other PDU.
    Other(PduType),
}

/// The common header: type, flags, frag_length.
pub fn header(b: &[u8]) -> Result<(PduType, u8, u16), ParseError> {
    let r = Bytes(b);
    let vers = r.u8("DCE/RPC rpc_vers", 0)?;
    if vers != 5 {
        return Err(ParseError::BadValue {
            what: "DCE/RPC rpc_vers",
            value: u64::from(vers),
        });
    }
    let ptype = match r.u8("DCE/RPC PTYPE", 2)? {
        0 => PduType::Request,
        2 => PduType::Response,
        3 => PduType::Fault,
        11 => PduType::Bind,
        12 => PduType::BindAck,
        13 => PduType::BindNak,
        14 => PduType::AlterContext,
        15 => PduType::AlterContextResp,
        t => PduType::Other(t),
    };
    let flags = r.u8("DCE/RPC pfc_flags", 3)?;
    // Only little-endian integer representation is followed (what Windows
    // and Samba send); big-endian is reported as a bad value.
    let drep = r.u8("DCE/RPC drep", 4)?;
    if drep & 0xF0 != 0x10 {
        return Err(ParseError::BadValue {
            what: "DCE/RPC drep (big-endian)",
            value: u64::from(drep),
        });
    }
    let frag_len = r.u16("DCE/RPC frag_length", 8)?;
    if frag_len < 16 {
        return Err(ParseError::BadValue {
            what: "DCE/RPC frag_length",
            value: u64::from(frag_len),
        });
    }
    Ok((ptype, flags, frag_len))
}

/// Parses the PDU at the start of `b` (which may be cut short: fields past
/// the end are errors).
pub fn parse(b: &[u8]) -> Result<Pdu, ParseError> {
    let (ptype, flags, _) = header(b)?;
    let r = Bytes(b);
    Ok(match ptype {
        PduType::Bind | PduType::AlterContext => {
            // C706 12.6.4.3: max_xmit, max_recv, assoc_group, then the
            // p_cont_list_t at 24.
            let n = usize::from(r.u8("BIND n_context_elem", 24)?);
            let mut items = Vec::new();
            let mut at = 28;
            for _ in 0..n.min(MAX_CONTEXTS) {
                let id = r.u16("BIND p_cont_id", at)?;
                let transfers = usize::from(r.u8("BIND n_transfer_syn", at + 2)?);
                let uuid = Uuid(r.b16("BIND abstract syntax", at + 4)?);
                items.push((id, Interface::from_uuid(uuid)));
                // id(2) n(1) reserved(1) abstract(20) transfers(20 each).
                at += 24 + 20 * transfers;
            }
            Pdu::Bind {
                items,
                more: n > MAX_CONTEXTS,
            }
        }
        PduType::BindAck | PduType::AlterContextResp => {
            // C706 12.6.4.4: secondary address (length-prefixed, padded to
            // 4), then the result list.
            let sec_len = usize::from(r.u16("BIND_ACK sec_addr length", 24)?);
            let at = (26 + sec_len + 3) & !3;
            let n = usize::from(r.u8("BIND_ACK n_results", at)?);
            let mut res = Vec::new();
            for i in 0..n.min(MAX_CONTEXTS) {
                // result(2) reason(2) transfer syntax(20).
                res.push(r.u16("BIND_ACK result", at + 4 + 24 * i)? == 0);
            }
            Pdu::BindAck(res)
        }
        PduType::Request => Pdu::Request {
            context: r.u16("REQUEST p_cont_id", 20)?,
            opnum: r.u16("REQUEST opnum", 22)?,
            first: flags & 0x1 != 0,
        },
        t => Pdu::Other(t),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_print_as_wireshark_prints_them() {
        let u = Uuid::from_str_const("367abb81-9844-35f1-ad32-98f038001003");
        assert_eq!(u.to_string(), "367abb81-9844-35f1-ad32-98f038001003");
        assert_eq!(u.0[..4], [0x81, 0xbb, 0x7a, 0x36]);
        let i = Interface::from_uuid(u);
        assert_eq!(i.name, Some("svcctl"));
        assert_eq!(i.operation(12), Some("RCreateServiceW"));
        assert_eq!(i.operation(999), None);
    }

    #[test]
    fn every_table_is_sorted_and_unique() {
        for k in INTERFACES {
            assert!(k.ops.windows(2).all(|w| w[0].0 < w[1].0), "{}", k.name);
            assert_eq!(INTERFACES.iter().filter(|o| o.uuid == k.uuid).count(), 1);
        }
    }

    #[test]
    fn hostile_pdus_are_errors() {
        assert!(parse(&[5, 0, 11]).is_err());
        // A BIND claiming 255 contexts in 40 bytes.
        let mut b = vec![5, 0, 11, 3, 0x10, 0, 0, 0, 40, 0, 0, 0, 1, 0, 0, 0];
        b.resize(40, 0);
        b[24] = 255;
        assert!(parse(&b).is_err());
    }
}
