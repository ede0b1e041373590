//! `[smb]`: what the SMB monitor keeps and what its rules call sensitive.

use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::settings::{invalid, Invalid};

/// SMB monitor settings (`[smb]`; every key optional).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SmbSettings {
    /// Parse sampled SMB payload at all (off: samples are counted and
    /// dropped).
    pub enabled: bool,
    /// Bytes the connection table may hold (parser state included); past
    /// it the oldest connection is finished early and dropped (counted).
    pub max_bytes: usize,
    /// A connection with no sample for this long is finished and dropped.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Administrative shares besides the drive shares (`C$`, `D$`…, always
    /// administrative): a tree connect to one is `smb_admin_share`.
    pub admin_shares: Vec<String>,
    /// Named pipes whose opening on `IPC$` is `smb_admin_share` (remote
    /// administration: services, tasks, registry, PsExec-style pipes).
    pub sensitive_pipes: Vec<String>,
    /// Domain controllers: `IDL_DRSGetNCChanges` from one of these is
    /// replication, from anything else `smb_dcsync`; spoolss change
    /// notifications asked of one are the printer bug (`smb_coercion`).
    /// Not learned.
    pub domain_controllers: Vec<IpNet>,
    /// Enumeration calls (samr, lsarpc, srvsvc, wkssvc) from one source
    /// within `enum_window` that make `smb_enum`.
    pub enum_burst: u32,
    /// The window of `enum_burst`.
    #[serde(with = "humantime_serde")]
    pub enum_window: Duration,
    /// The same act (source, server, kind, share/file/interface) alerts
    /// once per this long.
    #[serde(with = "humantime_serde")]
    pub dedup_window: Duration,
    /// Most SMB alerts per source and kind per `dedup_window` (the rest
    /// counted).
    pub max_alerts_per_source: u32,
    /// When host logs are read: how long an alert of an act Windows also
    /// logs (admin share access, file drop, service install, task) waits
    /// for the other side's report (the host record, or the wire's alert
    /// when the host logged first), so one alert carries both (zero: never
    /// waits).
    #[serde(with = "humantime_serde")]
    pub host_wait: Duration,
}

impl Default for SmbSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            max_bytes: 32 << 20,
            idle_timeout: Duration::from_secs(120),
            admin_shares: vec!["ADMIN$".into()],
            sensitive_pipes: [
                "svcctl",
                "atsvc",
                "winreg",
                "PSEXESVC",
                "RemCom_communicaton",
                "paexec",
            ]
            .map(String::from)
            .to_vec(),
            domain_controllers: Vec::new(),
            enum_burst: 10,
            enum_window: Duration::from_secs(60),
            dedup_window: Duration::from_secs(600),
            max_alerts_per_source: 64,
            host_wait: Duration::from_secs(10),
        }
    }
}

impl SmbSettings {
    /// Least `max_bytes` accepted: one connection at its worst.
    pub const MIN_BYTES: usize = 256 << 10;

    /// Checks values the types accept but the monitor cannot use; the
    /// error names the key (`smb.enum_burst`).
    pub fn validate(&self) -> Result<(), Invalid> {
        for (name, zero) in [
            ("idle_timeout", self.idle_timeout.is_zero()),
            ("enum_window", self.enum_window.is_zero()),
            ("dedup_window", self.dedup_window.is_zero()),
            ("enum_burst", self.enum_burst == 0),
            ("max_alerts_per_source", self.max_alerts_per_source == 0),
        ] {
            if zero {
                invalid(format!("smb.{name}"), "must be greater than zero")?;
            }
        }
        if self.max_bytes < Self::MIN_BYTES {
            invalid(
                "smb.max_bytes",
                format!(
                    "{}: must be at least {} (one connection)",
                    self.max_bytes,
                    Self::MIN_BYTES
                ),
            )?;
        }
        Ok(())
    }

    /// True for a bare share name that is administrative: a drive share
    /// (`C$`) or one of `admin_shares`. `IPC$` is not (see
    /// `sensitive_pipes`).
    pub fn is_admin_share(&self, share: &str) -> bool {
        let b = share.as_bytes();
        (b.len() == 2 && b[0].is_ascii_alphabetic() && b[1] == b'$')
            || self
                .admin_shares
                .iter()
                .any(|s| s.eq_ignore_ascii_case(share))
    }

    /// True for a pipe name (as opened: `svcctl`, `\PIPE\svcctl`) listed in
    /// `sensitive_pipes`.
    pub fn is_sensitive_pipe(&self, pipe: &str) -> bool {
        let name = pipe_name(pipe);
        self.sensitive_pipes
            .iter()
            .any(|s| s.eq_ignore_ascii_case(name))
    }

    /// True when `ip` is a configured domain controller.
    pub fn is_domain_controller(&self, ip: std::net::IpAddr) -> bool {
        self.domain_controllers.iter().any(|n| n.contains(&ip))
    }
}

/// A pipe's bare name: `\PIPE\svcctl` and `svcctl` are both `svcctl`.
pub fn pipe_name(pipe: &str) -> &str {
    let p = pipe.trim_start_matches('\\');
    match p.get(..5) {
        Some(pre) if pre.eq_ignore_ascii_case("PIPE\\") => &p[5..],
        _ => p,
    }
}

/// The bare share name of a tree path (`\\server\C$` is `C$`).
pub fn share_name(path: &str) -> &str {
    path.trim_end_matches('\\')
        .rsplit('\\')
        .next()
        .unwrap_or(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_classes() {
        let s = SmbSettings::default();
        assert!(s.validate().is_ok());
        assert!(s.is_admin_share("ADMIN$") && s.is_admin_share("c$"));
        assert!(!s.is_admin_share("IPC$") && !s.is_admin_share("public"));
        assert!(s.is_sensitive_pipe("svcctl") && s.is_sensitive_pipe("\\PIPE\\SVCCTL"));
        assert!(!s.is_sensitive_pipe("srvsvc"));
        assert_eq!(share_name("\\\\WORKSTATION6\\C$"), "C$");
        assert_eq!(share_name("C$"), "C$");
        let bad = SmbSettings {
            enum_burst: 0,
            ..SmbSettings::default()
        };
        assert_eq!(
            bad.validate(),
            Err(Invalid::new("smb.enum_burst", "must be greater than zero"))
        );
        let small = SmbSettings {
            max_bytes: 10,
            ..SmbSettings::default()
        };
        assert!(small
            .validate()
            .unwrap_err()
            .to_string()
            .contains("max_bytes"));
    }
}
