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

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context as _, Result};
use integration_tests::{
    netns::{run, unique_tag, Lab, GW_ATTACKER_IF, GW_SERVERS_IF},
    require_root, skip,
};
use serde_json::Value;

/// The cached root; the name changes when what it includes does.
const CACHE: &str = "/var/cache/smbwatch-test/bookworm-v2";
/// The package's dependencies (dpkg -i installs no others) and logrotate.
const INCLUDE: &str = "systemd,systemd-sysv,dbus,iproute2,adduser,procps,logrotate";

/// Mounts a bpffs at /sys/fs/bpf at every boot: nspawn gives the container
/// none, systemd mounts none in a container, and a host has one (empty
/// after every boot, which is what the unit must survive).
const BPFFS_UNIT: &str = "[Unit]
Description=A BPF file system at /sys/fs/bpf, as systemd mounts it on a host
DefaultDependencies=no
Before=sysinit.target systemd-tmpfiles-setup.service
ConditionPathIsMountPoint=!/sys/fs/bpf

[Service]
Type=oneshot
ExecStart=/bin/mount -t bpf -o mode=0700,nosuid,nodev,noexec bpf /sys/fs/bpf

[Install]
WantedBy=sysinit.target
";

const CONF: &str = "/etc/smbwatch/smbwatch.toml";
const ALERTS: &str = "/var/log/smbwatch/alerts.json";
/// CAP_NET_ADMIN (12), CAP_PERFMON (38), CAP_BPF (39).
const CAPS: u64 = (1 << 12) | (1 << 38) | (1 << 39);

/// The Debian 12 root, built once (about a minute) and reused.
fn cached_root() -> Result<PathBuf> {
    let root = PathBuf::from(CACHE);
    if root.join("usr/bin/systemctl").exists() {
        return Ok(root);
    }
    let tmp = root.with_extension("tmp");
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(tmp.parent().unwrap())?;
    eprintln!("building {CACHE} with debootstrap (once; about a minute)");
    run(
        "debootstrap",
        [
            "--variant=minbase",
            &format!("--include={INCLUDE}"),
            "bookworm",
            tmp.to_str().unwrap(),
        ],
    )?;
    std::fs::rename(&tmp, &root)?;
    Ok(root)
}

/// A booted copy of the cached root, in the lab's gateway namespace; powered
/// off and deleted on drop.
struct Container {
    root: PathBuf,
    netns: String,
    name: String,
    nspawn: Option<Child>,
    leader: u32,
    log: PathBuf,
}

impl Container {
    fn new(netns: &str) -> Result<Self> {
        let tag = unique_tag();
        let root = std::env::temp_dir().join(format!("smbwatch-systemd-{tag}"));
        run(
            "cp",
            ["-a", CACHE, root.to_str().context("non-UTF-8 temp dir")?],
        )?;
        let units = root.join("etc/systemd/system");
        std::fs::write(units.join("test-bpffs.service"), BPFFS_UNIT)?;
        std::fs::create_dir_all(units.join("sysinit.target.wants"))?;
        std::os::unix::fs::symlink(
            "/etc/systemd/system/test-bpffs.service",
            units.join("sysinit.target.wants/test-bpffs.service"),
        )?;
        Ok(Self {
            log: root.with_extension("log"),
            root,
            netns: netns.to_owned(),
            name: format!("smbw{tag}"),
            nspawn: None,
            leader: 0,
        })
    }

    /// Boots and waits until systemd says the system is up.
    fn boot(&mut self) -> Result<()> {
        let log = std::fs::File::create(&self.log)?;
        let child = Command::new("systemd-nspawn")
            .arg("--directory")
            .arg(&self.root)
            .args([
                "--boot",
                "--register=no",
                "--keep-unit",
                "--capability=all",
                // nspawn's default seccomp filter blocks bpf(2).
                "--system-call-filter=bpf perf_event_open",
                "--console=pipe",
                "--machine",
                &self.name,
                &format!("--network-namespace-path=/var/run/netns/{}", self.netns),
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("spawning systemd-nspawn")?;
        let pid = child.id();
        self.nspawn = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        self.leader = loop {
            let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
                .unwrap_or_default();
            if let Some(p) = children.split_whitespace().next() {
                if std::fs::read_to_string(format!("/proc/{p}/comm"))
                    .is_ok_and(|c| c.trim() == "systemd")
                {
                    break p.parse()?;
                }
            }
            if let Some(status) = self.nspawn.as_mut().unwrap().try_wait()? {
                bail!(
                    "systemd-nspawn exited ({status}) before booting: {}",
                    self.log_text()
                );
            }
            ensure!(
                Instant::now() < deadline,
                "no container init: {}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        // Until PID 1 answers on its socket, systemctl prints nothing.
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let out = self.sh_status("systemctl is-system-running")?;
            let state = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            match state.as_str() {
                "running" | "degraded" => return Ok(()),
                "maintenance" | "stopping" => break,
                _ if Instant::now() > deadline => break,
                _ => std::thread::sleep(Duration::from_millis(250)),
            }
        }
        bail!(
            "the container did not boot: {}; {}",
            self.sh_status("systemctl is-system-running; systemctl --failed --no-pager")
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default(),
            self.log_text()
        )
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `sh -c SCRIPT` inside the container (its namespaces, a clean
    /// environment); returns the output whatever the exit status.
    fn sh_status(&self, script: &str) -> Result<Output> {
        Command::new("nsenter")
            .args([
                "-t",
                &self.leader.to_string(),
                "-m",
                "-u",
                "-i",
                "-n",
                "-p",
                "--",
            ])
            .args([
                "env",
                "-i",
                "PATH=/usr/sbin:/usr/bin:/sbin:/bin",
                "LC_ALL=C.UTF-8",
            ])
            .args(["sh", "-c", script])
            .stdin(Stdio::null())
            .output()
            .context("spawning nsenter")
    }

    /// [`Container::sh_status`], failing on a non-zero exit; returns stdout.
    fn sh(&self, script: &str) -> Result<String> {
        let out = self.sh_status(script)?;
        ensure!(
            out.status.success(),
            "`{script}` in the container failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `systemctl reboot` inside; nspawn (with --keep-unit) exits 133 for
    /// its supervisor to boot it again, which this does.
    fn reboot(&mut self) -> Result<()> {
        let _ = self.sh_status("systemctl reboot");
        let status = self.wait_exit(Duration::from_secs(60))?;
        ensure!(
            status.code() == Some(133),
            "nspawn did not report a reboot ({status}): {}",
            self.log_text()
        );
        self.boot()
    }

    fn wait_exit(&mut self, within: Duration) -> Result<std::process::ExitStatus> {
        let child = self.nspawn.as_mut().context("not booted")?;
        let deadline = Instant::now() + within;
        loop {
            if let Some(s) = child.try_wait()? {
                self.nspawn = None;
                return Ok(s);
            }
            ensure!(Instant::now() < deadline, "the container did not stop");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A host path for a path in the container.
    fn path(&self, inside: &str) -> PathBuf {
        self.root.join(inside.trim_start_matches('/'))
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        if self.nspawn.is_some() {
            let _ = self.sh_status("systemctl poweroff");
            if self.wait_exit(Duration::from_secs(30)).is_err() {
                if let Some(mut c) = self.nspawn.take() {
                    let _ = c.kill();
                    let _ = c.wait();
                }
            }
        }
        let _ = std::fs::remove_dir_all(&self.root);
        let _ = std::fs::remove_file(&self.log);
    }
}

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
