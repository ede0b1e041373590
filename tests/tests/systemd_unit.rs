//! The shipped systemd unit (packaging/smbwatch.service), checked by
//! systemd's own tools: `systemd-analyze verify` finds nothing, and
//! `systemd-analyze security --offline=true` rates its exposure at most 2.0.

use std::{path::PathBuf, process::Command};

use integration_tests::{daemon::smbwatch_bin, skip};

const UNIT: &str = include_str!("../../packaging/smbwatch.service");

/// The unit in a scratch directory, removed on drop.
struct UnitCopy(PathBuf);

impl UnitCopy {
    /// The unit with ExecStart pointing at the binary this build made
    /// (verify checks that the command exists and is executable; the
    /// package installs it at /usr/bin/smbwatch).
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!(
            "smbwatch-unit-{}",
            integration_tests::netns::unique_tag()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let bin = smbwatch_bin();
        let text = UNIT.replace("/usr/bin/smbwatch", bin.to_str().unwrap());
        std::fs::write(dir.join("smbwatch.service"), text).unwrap();
        Self(dir)
    }

    fn path(&self) -> PathBuf {
        self.0.join("smbwatch.service")
    }
}

impl Drop for UnitCopy {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn systemd_analyze() -> bool {
    let ok = Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        skip("systemd-analyze is not installed (Debian package systemd)");
    }
    ok
}

#[test]
fn unit_verifies_clean() {
    if !systemd_analyze() {
        return;
    }
    let unit = UnitCopy::new();
    // Man pages are checked on the installed package (cargo xtask package).
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(unit.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "verify failed: {stderr}");
    assert!(stderr.trim().is_empty(), "verify complained: {stderr}");
}

#[test]
fn unit_exposure_is_at_most_2() {
    if !systemd_analyze() {
        return;
    }
    let unit = UnitCopy::new();
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--no-pager"])
        .arg(unit.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let exposure: f64 = text
        .lines()
        .find_map(|l| {
            l.split("Overall exposure level for smbwatch.service:")
                .nth(1)
        })
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in: {text}"));
    assert!(exposure <= 2.0, "exposure {exposure} > 2.0:\n{text}");
    // The capabilities are exactly the three XDP needs.
    for cap in ["CAP_BPF", "CAP_NET_ADMIN"] {
        assert!(text.contains(&format!("CapabilityBoundingSet=~{cap}")));
    }
    for line in UNIT.lines().filter(|l| {
        l.starts_with("AmbientCapabilities=") || l.starts_with("CapabilityBoundingSet=")
    }) {
        let caps: Vec<&str> = line.split_once('=').unwrap().1.split_whitespace().collect();
        assert_eq!(caps, ["CAP_BPF", "CAP_PERFMON", "CAP_NET_ADMIN"], "{line}");
    }
}
