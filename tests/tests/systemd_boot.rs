//! The Debian package under a real systemd: a Debian 12 root (debootstrap,
//! cached in /var/cache/smbwatch-test) booted by `systemd-nspawn --boot`
//! with systemd 252 as PID 1 in the gateway namespace of a lab, its own
//! bpffs mounted at every boot (as systemd does on a host), the .deb
//! installed with dpkg, the service enabled with two interfaces and no
//! alert sink, and the container rebooted. Then, on one booted container:
//! the unit is active after the boot, READY, runs as `smbwatch` with
//! exactly CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN; an nmap sweep alerts in
//! the journal (priority, SMBWATCH_* fields); after `[alert] json` and a
//! reload, in a JSON file; `systemctl reload` of a bad file fails and the
//! old configuration stays; logrotate rotates and the next alert lands in
//! the new file; stop leaves no XDP program; remove/reinstall keeps the
//! enablement; purge removes the state.
//!
//! Ignored in a plain `cargo test`: it needs the package, which
//! `cargo xtask test` builds and passes as `SMBWATCH_DEB`.
//!
//! The container itself is in `systemd_boot/container.rs`.

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Result};
use integration_tests::{
    netns::{run, Lab, GW_ATTACKER_IF, GW_SERVERS_IF},
    require_root, skip,
};
use serde_json::Value;

// The container (one test binary: `cargo xtask test` runs it by name).
#[path = "systemd_boot/container.rs"]
mod container;

use container::{cached_root, Container};

const CONF: &str = "/etc/smbwatch/smbwatch.toml";
const ALERTS: &str = "/var/log/smbwatch/alerts.json";
/// CAP_NET_ADMIN (12), CAP_PERFMON (38), CAP_BPF (39).
const CAPS: u64 = (1 << 12) | (1 << 38) | (1 << 39);

/// Polls `f` until it returns `Some`, for at most `within`.
fn wait_for<T>(
    within: Duration,
    what: &str,
    mut f: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f()? {
            return Ok(v);
        }
        ensure!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The unit's journal entries matching `filter` (journalctl arguments), as JSON.
fn journal(c: &Container, filter: &str) -> Result<Vec<Value>> {
    let out = c.sh(&format!(
        "journalctl -b -u smbwatch.service -o json --no-pager {filter}"
    ))?;
    Ok(out
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect())
}

/// Alerts in a JSON lines file in the container (none if it is absent).
fn json_alerts(c: &Container, path: &str) -> Vec<Value> {
    std::fs::read_to_string(c.path(path))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// A fan-out sweep of the lab's 30 servers from `source` (an address the
/// attacker adds to its interface for this sweep: the detector alerts once
/// per source and window).
fn sweep_from(lab: &Lab, source: &str) -> Result<()> {
    lab.attacker
        .ip(&["addr", "add", &format!("{source}/24"), "dev", "a0"])?;
    let n = lab.sweep_30(&["-S", source, "-e", "a0"])?;
    ensure!(n == 30, "nmap probed {n} hosts, not 30");
    Ok(())
}

/// Sets keys in the conffile by uncommenting their lines: `(commented
/// line, replacement)`; fails if a line is not there.
fn edit_conf(c: &Container, edits: &[(&str, &str)]) -> Result<()> {
    let mut text = std::fs::read_to_string(c.path(CONF))?;
    for (from, to) in edits {
        ensure!(text.contains(from), "the conffile has no `{from}` line");
        text = text.replacen(from, to, 1);
    }
    std::fs::write(c.path(CONF), text)?;
    Ok(())
}

/// How many times the daemon has logged `what` this boot.
fn logged(c: &Container, what: &str) -> Result<usize> {
    Ok(journal(c, "")?
        .iter()
        .filter(|e| e["MESSAGE"].as_str().unwrap_or_default().contains(what))
        .count())
}

/// Runs `systemctl reload` and waits until the daemon has applied it
/// (systemctl returns once the signal is sent).
fn reload(c: &Container) -> Result<()> {
    let before = logged(c, "configuration reloaded")?;
    c.sh("systemctl reload smbwatch")?;
    wait_for(Duration::from_secs(10), "the reload applied", || {
        Ok((logged(c, "configuration reloaded")? > before).then_some(()))
    })
}

fn main_pid(c: &Container) -> Result<u32> {
    Ok(c.sh("systemctl show -P MainPID smbwatch")?.trim().parse()?)
}

fn xdp_attached(lab: &Lab) -> Result<bool> {
    let out = lab.gateway.ip(&["-d", "link", "show", GW_ATTACKER_IF])?;
    Ok(String::from_utf8_lossy(&out.stdout).contains("xdp"))
}

#[test]
#[ignore = "needs the package: `cargo xtask test` builds it and runs this with SMBWATCH_DEB"]
fn package_survives_reboot_reload_logrotate_and_reinstall() {
    require_root();
    let Some(deb) = std::env::var_os("SMBWATCH_DEB").map(PathBuf::from) else {
        panic!("SMBWATCH_DEB is not set: run `cargo xtask test`, or build with `cargo xtask package` and set it to target/debian/smbwatch_*.deb");
    };
    for tool in ["debootstrap", "systemd-nspawn", "nmap"] {
        if run("which", [tool]).is_err() {
            skip(&format!("{tool} is not installed (`cargo xtask setup`)"));
            return;
        }
    }
    if let Err(e) = body(&deb) {
        panic!("{e:#}");
    }
}

fn body(deb: &Path) -> Result<()> {
    let started = Instant::now();
    cached_root()?;
    let lab = Lab::new(30)?;
    lab.wait_reachable(lab.server_v4[0])?;
    let mut c = Container::new(lab.gateway.name())?;
    if let Err(e) = c.boot() {
        let log = c.log_text();
        // The one case that skips: this kernel (or the sandbox around it)
        // refuses the namespaces nspawn needs.
        if log.contains("Operation not permitted") && log.contains("namespace") {
            skip(&format!("systemd-nspawn cannot boot here: {log}"));
            return Ok(());
        }
        return Err(e);
    }
    eprintln!("booted in {:?}", started.elapsed());

    // Install, configure (interfaces only: no alert sink), enable, reboot.
    std::fs::copy(deb, c.path("/root/smbwatch.deb"))?;
    c.sh("dpkg -i /root/smbwatch.deb")?;
    ensure!(
        c.sh("systemctl is-enabled smbwatch || true")?.trim() == "disabled",
        "a first install must not enable the service before its interfaces are set"
    );
    let ifaces = format!("interfaces = [\"{GW_ATTACKER_IF}\", \"{GW_SERVERS_IF}\"]");
    edit_conf(&c, &[("# interfaces = []", &ifaces)])?;
    c.sh("smbwatch check-config /etc/smbwatch/smbwatch.toml")?;
    c.sh("systemctl enable smbwatch")?;
    c.reboot()?;
    eprintln!("rebooted at {:?}", started.elapsed());

    // Active after the boot, READY (Type=notify), the right user and caps.
    wait_for(
        Duration::from_secs(30),
        "smbwatch active after the boot",
        || Ok((c.sh("systemctl is-active smbwatch || true")?.trim() == "active").then_some(())),
    )?;
    let status = c.sh("systemctl show -P StatusText smbwatch")?;
    ensure!(
        status.contains("attached to g0, g1"),
        "StatusText: {status}"
    );
    let pid = main_pid(&c)?;
    let proc_status = c.sh(&format!("cat /proc/{pid}/status"))?;
    let uid = c.sh("id -u smbwatch")?.trim().to_owned();
    let field = |name: &str| {
        proc_status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(str::trim)
            .unwrap_or_default()
            .to_owned()
    };
    ensure!(
        field("Uid:").split_whitespace().all(|u| u == uid),
        "Uid: {} (smbwatch is {uid})",
        field("Uid:")
    );
    for caps in ["CapEff:", "CapPrm:", "CapBnd:"] {
        let v = u64::from_str_radix(&field(caps), 16)?;
        ensure!(v == CAPS, "{caps} {v:#x}, want {CAPS:#x}");
    }
    for dir in ["/var/lib/smbwatch", "/var/log/smbwatch"] {
        let mode = c.sh(&format!("stat -c %a {dir}"))?;
        ensure!(mode.trim() == "750", "{dir} has mode {mode}");
    }
    ensure!(xdp_attached(&lab)?, "no XDP program on g0 after the boot");

    // No sink configured: the alert is in the journal, at WARNING, with
    // its fields; lines carry no timestamp of their own.
    sweep_from(&lab, "203.0.113.21")?;
    let entry = wait_for(Duration::from_secs(15), "the alert in the journal", || {
        Ok(journal(&c, "SMBWATCH_RULE=smb_scan_fanout")?
            .into_iter()
            .next())
    })?;
    ensure!(entry["PRIORITY"] == "4", "{entry:#}");
    ensure!(entry["SYSLOG_IDENTIFIER"] == "smbwatch", "{entry:#}");
    ensure!(entry["SMBWATCH_SOURCE"] == "203.0.113.21", "{entry:#}");
    let ecs: Value = serde_json::from_str(entry["SMBWATCH_ECS"].as_str().unwrap_or("null"))?;
    ensure!(ecs["rule"]["id"] == "smb_scan_fanout", "{entry:#}");
    let attached = journal(&c, "PRIORITY=5")?;
    ensure!(!attached.is_empty(), "no INFO line at PRIORITY=5");
    for e in &attached {
        let m = e["MESSAGE"].as_str().unwrap_or_default();
        ensure!(!m.starts_with("20"), "a second timestamp: {m}");
    }

    // A JSON file, by a reload.
    let json = format!("# json = \"{ALERTS}\"");
    edit_conf(&c, &[(&json, &json[2..])])?;
    reload(&c)?;
    sweep_from(&lab, "203.0.113.22")?;
    wait_for(
        Duration::from_secs(15),
        "the alert in the JSON file",
        || {
            Ok(json_alerts(&c, ALERTS)
                .into_iter()
                .find(|a| a["source"]["ip"] == "203.0.113.22"))
        },
    )?;

    // A bad file: `systemctl reload` fails, the daemon is not disturbed,
    // and a HUP sent anyway is refused by the daemon at priority ERROR.
    let good = std::fs::read_to_string(c.path(CONF))?;
    edit_conf(
        &c,
        &[("# fanout_threshold = 20", "fanout_threshold = \"many\"")],
    )?;
    let reload = c.sh_status("systemctl reload smbwatch")?;
    ensure!(
        !reload.status.success(),
        "systemctl reload accepted a bad file"
    );
    c.sh("systemctl kill --kill-whom=main --signal=HUP smbwatch")?;
    wait_for(
        Duration::from_secs(10),
        "`reload failed` at priority 3",
        || {
            Ok(journal(&c, "-p err")?.into_iter().find(|e| {
                e["MESSAGE"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("reload failed")
            }))
        },
    )?;
    ensure!(main_pid(&c)? == pid, "the daemon restarted");
    sweep_from(&lab, "203.0.113.23")?;
    wait_for(
        Duration::from_secs(15),
        "an alert with the old configuration",
        || {
            Ok(json_alerts(&c, ALERTS)
                .into_iter()
                .find(|a| a["source"]["ip"] == "203.0.113.23"))
        },
    )?;
    std::fs::write(c.path(CONF), &good)?;

    // logrotate: the file moves, the next alert is in a new file.
    let before = logged(&c, "configuration reloaded")?;
    c.sh("logrotate --force /etc/logrotate.d/smbwatch")?;
    wait_for(
        Duration::from_secs(10),
        "the HUP of logrotate handled",
        || Ok((logged(&c, "configuration reloaded")? > before).then_some(())),
    )?;
    let rotated = format!("{ALERTS}.1");
    ensure!(c.path(&rotated).exists(), "logrotate did not rotate");
    let before = json_alerts(&c, &rotated).len();
    sweep_from(&lab, "203.0.113.24")?;
    wait_for(Duration::from_secs(15), "the alert in the new file", || {
        Ok(json_alerts(&c, ALERTS)
            .into_iter()
            .find(|a| a["source"]["ip"] == "203.0.113.24"))
    })?;
    ensure!(
        json_alerts(&c, &rotated).len() == before,
        "an alert went to the rotated file"
    );

    // A unit that cannot start (an interface that is gone) stops trying:
    // the start limit trips instead of restarting every 5 s forever.
    edit_conf(&c, &[(&ifaces, "interfaces = [\"gone0\"]")])?;
    let _ = c.sh_status("systemctl restart smbwatch");
    if let Err(e) = wait_for(Duration::from_secs(90), "the start limit to trip", || {
        // systemd 252 keeps Result=exit-code here and says it in the journal.
        let state = c.sh("systemctl show -P ActiveState smbwatch")?;
        Ok(
            (state.trim() == "failed" && logged(&c, "Start request repeated too quickly")? > 0)
                .then_some(()),
        )
    }) {
        let state = c.sh_status(
            "systemctl status --no-pager smbwatch; journalctl -b -u smbwatch --no-pager | tail -40",
        )?;
        bail!("{e}:\n{}", String::from_utf8_lossy(&state.stdout));
    }
    ensure!(!xdp_attached(&lab)?, "a failed start left an XDP program");
    std::fs::write(c.path(CONF), &good)?;
    c.sh("systemctl reset-failed smbwatch && systemctl start smbwatch")?;
    ensure!(xdp_attached(&lab)?, "no XDP program after the restart");

    // Stop detaches.
    c.sh("systemctl stop smbwatch")?;
    ensure!(
        !xdp_attached(&lab)?,
        "an XDP program is left on g0 after stop"
    );

    // Remove and reinstall keep the enablement (and the conffile).
    c.sh("dpkg -r smbwatch")?;
    c.sh("dpkg -i /root/smbwatch.deb")?;
    let enabled = c.sh("systemctl is-enabled smbwatch || true")?;
    ensure!(
        enabled.trim() == "enabled",
        "after remove/reinstall: {enabled}"
    );
    ensure!(
        std::fs::read_to_string(c.path(CONF))? == good,
        "the conffile changed"
    );
    let owner = c.sh(&format!("stat -c '%U:%G %a' {CONF}"))?;
    ensure!(owner.trim() == "root:smbwatch 640", "conffile: {owner}");

    // Purge removes the state, the logs and the enablement.
    c.sh("dpkg -P smbwatch")?;
    for gone in [
        "/var/lib/smbwatch",
        "/var/log/smbwatch",
        "/etc/systemd/system/multi-user.target.wants/smbwatch.service",
    ] {
        // symlink_metadata: the enablement link points into the container.
        ensure!(
            std::fs::symlink_metadata(c.path(gone)).is_err(),
            "{gone} survived the purge"
        );
    }
    eprintln!("done in {:?}", started.elapsed());
    Ok(())
}
