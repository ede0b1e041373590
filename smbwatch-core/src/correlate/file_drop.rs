//! `remote_file_drop`: a file written onto a host through an
//! administrative share — how PsExec, smbexec-style tools and most SMB
//! lateral movement stage their payload.
//!
//! Two records show it (both seen in the real logs under `../shared/data`):
//!
//! - **Security 5145** on `ADMIN$` or a drive share (`C$`, `D$`…) whose
//!   requested access includes WriteData (`0x2`, `%%4417`) or AppendData
//!   (`0x4`, `%%4418`), from a remote, non-loopback `IpAddress`, naming a
//!   file (`RelativeTargetName` other than the share root). PsExec logs
//!   this for `PSEXESVC.exe` on `ADMIN$`; Covenant's copy for
//!   `ProgramData\GruntHTTP.exe` on `C$`. Writes to `IPC$` are named-pipe
//!   traffic, not files, and are ignored.
//! - **Sysmon 11** (file create) of an executable by the kernel (`System`,
//!   pid 4): on a Windows host that is the SMB server writing on behalf of
//!   a network client (Covenant's `C:\ProgramData\GruntHTTP.exe`). Local
//!   installers run as their own processes. The record names no client:
//!   the source is taken from the network logons and share accesses seen
//!   on that host in the `chain_window` before, when they all come from one
//!   address.
//!
//! One drop logged by several records (PsExec's two 5145s per file, and a
//! 5145 plus a Sysmon 11) is one alert: the pair (host, file name) fires
//! once per `chain_window`. Executables and scripts are critical, other
//! files high.

use std::net::IpAddr;

use crate::alert::{Alert, AlertKind, Severity};
use crate::hostlog::rules::{is_admin_share, is_kernel_client};
use crate::hostlog::{FileCreation, HostEvent, ShareAccess, ShareLog};

/// `WriteData` (or `AddFile`): bit 1 of a file access mask.
pub const WRITE_DATA: u32 = 0x2;
/// `AppendData` (or `AddSubdirectory`): bit 2.
pub const APPEND_DATA: u32 = 0x4;

/// File extensions that run when started or loaded (the payload of a drop).
const EXECUTABLE_EXTENSIONS: &[&str] = &[
    "exe", "dll", "sys", "scr", "com", "cpl", "msi", "ps1", "psm1", "bat", "cmd", "vbs", "vbe",
    "js", "jse", "wsf", "hta", "lnk",
];

/// The final component of a Windows path.
pub(super) fn file_name(path: &str) -> &str {
    path.rsplit(['\\', '/']).next().unwrap_or(path)
}

/// True when `path`'s extension is one that runs ([`EXECUTABLE_EXTENSIONS`]).
pub fn is_executable(path: &str) -> bool {
    let name = file_name(path);
    name.rsplit_once('.').is_some_and(|(stem, ext)| {
        !stem.is_empty()
            && EXECUTABLE_EXTENSIONS
                .iter()
                .any(|e| e.eq_ignore_ascii_case(ext))
    })
}

/// A local drive path (`C:\...`), also in its `\\?\` and `\??\` forms:
/// everything on a drive is reachable through its `X$` share.
fn on_a_drive(path: &str) -> bool {
    let p = path
        .strip_prefix(r"\\?\")
        .or_else(|| path.strip_prefix(r"\??\"))
        .unwrap_or(path);
    let b = p.as_bytes();
    b.len() > 3 && b[0].is_ascii_alphabetic() && b[1] == b':' && b[2] == b'\\'
}

/// One drop, whichever record showed it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct FileDrop {
    /// The client, when the record (or the host's recent logons) names one.
    pub src: Option<IpAddr>,
    /// Share written through (5145 only).
    pub share: Option<String>,
    /// The file: share-relative (5145) or the full local path (Sysmon 11).
    pub path: String,
    /// The account that wrote it (5145's subject; for Sysmon 11, that of
    /// the logon the source came from).
    pub user: Option<String>,
}

impl FileDrop {
    /// A 5145 that writes a file through `ADMIN$` or a drive share from a
    /// remote address.
    pub fn from_share_write(ev: &ShareAccess) -> Option<Self> {
        if ev.log != ShareLog::Object {
            return None;
        }
        let share = ev.share_name.as_deref()?;
        let writes = ev
            .access_mask
            .is_some_and(|m| m & (WRITE_DATA | APPEND_DATA) != 0);
        let src = ev
            .src_ip
            .filter(|a| !a.is_loopback() && !a.is_unspecified())?;
        let path = ev.relative_target.as_deref()?.trim_matches('\\');
        if !writes
            || !is_admin_share(share)
            || share.eq_ignore_ascii_case("IPC$")
            || path.is_empty()
        {
            return None;
        }
        Some(Self {
            src: Some(src),
            share: Some(share.to_string()),
            path: path.to_string(),
            user: ev.account.qualified(),
        })
    }

    /// A Sysmon 11 creating an executable on a drive, by the kernel.
    pub fn from_kernel_create(ev: &FileCreation) -> Option<Self> {
        if !is_kernel_client(&ev.process) {
            return None;
        }
        let path = ev.target_filename.as_deref()?;
        (on_a_drive(path) && is_executable(path)).then(|| Self {
            src: None,
            share: None,
            path: path.to_string(),
            user: None,
        })
    }

    /// The alert for this drop seen in `ev`.
    pub fn alert(&self, ev: &HostEvent) -> Alert {
        let exe = is_executable(&self.path);
        let severity = if exe {
            Severity::Critical
        } else {
            Severity::High
        };
        let who = self.user.as_deref().unwrap_or("unknown user");
        let from = self
            .src
            .map(|a| format!(" from {a}"))
            .unwrap_or_else(|| " from an unknown address".into());
        let host = ev.host.as_deref().unwrap_or("an unknown host");
        let what = match &self.share {
            Some(share) => format!("{who}{from} wrote \\\\*\\{share}\\{}", self.path),
            None => format!(
                "System created {} on behalf of a network client{from}{}",
                self.path,
                self.user
                    .as_deref()
                    .map(|u| format!(" ({u})"))
                    .unwrap_or_default()
            ),
        };
        let kind = if exe { " (an executable)" } else { "" };
        let msg = format!("{what}{kind} on {host} [{}]", ev.windows_event().label());
        let mut a = Alert::new(ev.ts, AlertKind::RemoteFileDrop, severity, msg);
        a.event_code = Some(ev.event_id());
        a.source_ip = self.src;
        a.host = ev.host.clone();
        a.user = self.user.clone();
        a.user_id = ev.account().sid.clone();
        a.share = self.share.clone();
        a
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn executables_by_extension() {
        for p in [
            "PSEXESVC.exe",
            r"ProgramData\GruntHTTP.EXE",
            r"C:\x\a.ps1",
            "b.dll",
        ] {
            assert!(is_executable(p), "{p}");
        }
        for p in ["notes.txt", ".exe", r"dir.exe\file", "exe", r"C:\Windows\"] {
            assert!(!is_executable(p), "{p}");
        }
    }

    #[test]
    fn drive_paths() {
        assert!(on_a_drive(r"C:\Windows\PSEXESVC.exe"));
        assert!(on_a_drive(r"\\?\C:\Windows\PSEXESVC.exe"));
        assert!(on_a_drive(r"\??\d:\x.exe"));
        assert!(!on_a_drive(r"\\server\share\x.exe"));
        assert!(!on_a_drive("C:"));
        assert!(!on_a_drive("x.exe"));
    }
}
