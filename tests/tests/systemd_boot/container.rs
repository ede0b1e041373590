//! The booted container: a cached Debian 12 root copied, booted with
//! `systemd-nspawn --boot` in the lab's gateway namespace, run in,
//! rebooted, and powered off and deleted on drop.

use std::{
    path::PathBuf,
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context as _, Result};
use integration_tests::netns::{run, unique_tag};

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

/// The Debian 12 root, built once (about a minute) and reused.
pub(super) fn cached_root() -> Result<PathBuf> {
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
pub(super) struct Container {
    root: PathBuf,
    netns: String,
    name: String,
    nspawn: Option<Child>,
    leader: u32,
    log: PathBuf,
}

impl Container {
    pub(super) fn new(netns: &str) -> Result<Self> {
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
    pub(super) fn boot(&mut self) -> Result<()> {
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

    pub(super) fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `sh -c SCRIPT` inside the container (its namespaces, a clean
    /// environment); returns the output whatever the exit status.
    pub(super) fn sh_status(&self, script: &str) -> Result<Output> {
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
    pub(super) fn sh(&self, script: &str) -> Result<String> {
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
    pub(super) fn reboot(&mut self) -> Result<()> {
        let _ = self.sh_status("systemctl reboot");
        let status = self.wait_exit(Duration::from_secs(60))?;
        ensure!(
            status.code() == Some(133),
            "nspawn did not report a reboot ({status}): {}",
            self.log_text()
        );
        self.boot()
    }

    pub(super) fn wait_exit(&mut self, within: Duration) -> Result<std::process::ExitStatus> {
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
    pub(super) fn path(&self, inside: &str) -> PathBuf {
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
