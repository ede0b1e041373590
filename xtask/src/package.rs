//! `cargo xtask package`: the Debian package for amd64, then a check of
//! what was built (control fields, contents, conffiles, maintainer
//! scripts; the package extracted into a scratch root, its binary run,
//! its conffile checked, its man pages rendered, its unit verified, and
//! its embedded XDP program loaded by a replay).

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, ensure, Context as _, Result};

use crate::cmd;

/// The workspace root (xtask lives one level below it).
fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask is inside the workspace")
        .to_path_buf()
}

/// The cargo target directory (`$CARGO_TARGET_DIR`, else `target/`).
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target"))
}

/// Runs `program args` and returns its stdout; fails with its stderr.
fn stdout(program: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("spawning {program}"))?;
    if !out.status.success() {
        bail!(
            "`{program} {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Builds the package; returns its path.
pub fn build() -> Result<PathBuf> {
    let ws = workspace();
    // The real eBPF build: the package's binary must carry the program.
    let status = Command::new("cargo")
        .args(["build", "--release", "-p", "smbwatch"])
        .env_remove("AYA_BUILD_SKIP")
        .current_dir(&ws)
        .status()?;
    ensure!(status.success(), "release build failed ({status})");
    let release = target_dir().join("release");
    let files = release.join("package");
    let _ = std::fs::remove_dir_all(&files);
    let bin = release.join("smbwatch");
    let bin = bin.to_str().context("non-UTF-8 target path")?;
    let files_s = files.to_str().context("non-UTF-8 target path")?;
    cmd(bin, &["package-files", files_s])?;
    for entry in std::fs::read_dir(&files)? {
        let p = entry?.path();
        let name = p.file_name().unwrap_or_default().to_string_lossy();
        if name.ends_with(".8") || name.ends_with(".5") {
            // -n: no name or time stamp, so rebuilds are byte-identical.
            cmd("gzip", &["-9nf", p.to_str().context("non-UTF-8 path")?])?;
        }
    }
    let out = Command::new("cargo")
        .args(["deb", "-p", "smbwatch", "--no-build"])
        .current_dir(&ws)
        .output()?;
    if !out.status.success() {
        bail!("cargo deb failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let deb = String::from_utf8_lossy(&out.stdout)
        .lines()
        .rev()
        .find(|l| l.trim_end().ends_with(".deb"))
        .map(|l| PathBuf::from(l.trim()))
        .context("cargo deb did not print the package path")?;
    println!("built {}", deb.display());
    Ok(deb)
}

/// Every file the package must install.
const CONTENTS: &[&str] = &[
    "./usr/bin/smbwatch",
    "./etc/smbwatch/smbwatch.toml",
    "./lib/systemd/system/smbwatch.service",
    "./usr/share/man/man8/smbwatch.8.gz",
    "./usr/share/man/man8/smbwatch-run.8.gz",
    "./usr/share/man/man8/smbwatch-status.8.gz",
    "./usr/share/man/man5/smbwatch.toml.5.gz",
    "./usr/share/doc/smbwatch/examples/smbwatch.toml",
    "./usr/share/doc/smbwatch/README.md",
    "./usr/share/doc/smbwatch/operations.md",
];

/// Checks the package at `deb`; `scratch` is a directory to use (emptied).
pub fn check(deb: &Path, scratch: &Path) -> Result<()> {
    let d = deb.to_str().context("non-UTF-8 package path")?;
    let field =
        |f: &str| -> Result<String> { Ok(stdout("dpkg-deb", &["-f", d, f])?.trim().to_owned()) };
    ensure!(field("Package")? == "smbwatch", "Package field");
    ensure!(
        field("Architecture")? == "amd64",
        "Architecture: {}",
        field("Architecture")?
    );
    let depends = field("Depends")?;
    for dep in ["libc6", "iproute2", "adduser"] {
        ensure!(depends.contains(dep), "Depends lacks {dep}: {depends}");
    }

    let listing = stdout("dpkg-deb", &["-c", d])?;
    for want in CONTENTS {
        ensure!(
            listing.lines().any(|l| l.ends_with(want)),
            "{want} is not in the package:\n{listing}"
        );
    }
    let conf_line = listing
        .lines()
        .find(|l| l.ends_with("./etc/smbwatch/smbwatch.toml"))
        .unwrap_or_default();
    ensure!(
        conf_line.starts_with("-rw-r-----"),
        "conffile mode: {conf_line}"
    );

    let _ = std::fs::remove_dir_all(scratch);
    let control = scratch.join("DEBIAN");
    let root = scratch.join("root");
    std::fs::create_dir_all(&root)?;
    let s = |p: &Path| p.to_str().map(str::to_owned).context("non-UTF-8 path");
    stdout("dpkg-deb", &["-e", d, &s(&control)?])?;
    let conffiles = std::fs::read_to_string(control.join("conffiles"))?;
    ensure!(
        conffiles.lines().collect::<Vec<_>>() == ["/etc/smbwatch/smbwatch.toml"],
        "conffiles: {conffiles:?}"
    );
    for script in ["postinst", "prerm", "postrm"] {
        let p = control.join(script);
        let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&p)?.permissions());
        ensure!(mode & 0o111 != 0, "{script} is not executable");
        stdout("sh", &["-n", &s(&p)?])?;
    }
    let postinst = std::fs::read_to_string(control.join("postinst"))?;
    ensure!(postinst.contains("adduser --system") && postinst.contains("/var/lib/smbwatch"));

    // Installed into a scratch root by extraction (dpkg --root would run
    // the maintainer scripts chrooted there, where adduser is absent).
    stdout("dpkg-deb", &["-x", d, &s(&root)?])?;
    let bin = s(&root.join("usr/bin/smbwatch"))?;
    let version = stdout(&bin, &["--version"])?;
    ensure!(version.starts_with("smbwatch "), "--version: {version}");
    let conf = s(&root.join("etc/smbwatch/smbwatch.toml"))?;
    stdout(&bin, &["check-config", &conf])?;
    let text = std::fs::read_to_string(&conf)?;
    ensure!(
        text.contains("# interfaces = []") && text.contains("# fanout_threshold = 20"),
        "conffile keys are not commented defaults"
    );
    for page in [
        "usr/share/man/man8/smbwatch.8.gz",
        "usr/share/man/man8/smbwatch-run.8.gz",
        "usr/share/man/man5/smbwatch.toml.5.gz",
    ] {
        let out = Command::new("man")
            .args(["--warnings", "-l"])
            .arg(root.join(page))
            .env("MANWIDTH", "80")
            .output()?;
        let rendered = String::from_utf8_lossy(&out.stdout);
        let warnings = String::from_utf8_lossy(&out.stderr);
        ensure!(
            out.status.success() && warnings.trim().is_empty(),
            "man {page}: {warnings}"
        );
        ensure!(rendered.contains("NAME"), "man {page} rendered nothing");
    }
    let run_page = stdout(
        "man",
        &[
            "-l",
            &s(&root.join("usr/share/man/man8/smbwatch-run.8.gz"))?,
        ],
    )?;
    ensure!(
        run_page.contains("--iface"),
        "smbwatch-run(8) lacks the run options"
    );
    let conf_page = stdout(
        "man",
        &[
            "-l",
            &s(&root.join("usr/share/man/man5/smbwatch.toml.5.gz"))?,
        ],
    )?;
    ensure!(
        conf_page.contains("fanout_threshold"),
        "smbwatch.toml(5) lacks the keys"
    );

    // The unit as installed, with ExecStart at the extracted binary.
    let unit = std::fs::read_to_string(root.join("lib/systemd/system/smbwatch.service"))?
        .replace("/usr/bin/smbwatch", &bin);
    let unit_path = scratch.join("smbwatch.service");
    std::fs::write(&unit_path, unit)?;
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&unit_path)
        .output()?;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(
        out.status.success() && err.trim().is_empty(),
        "systemd-analyze verify: {err}"
    );

    // The embedded XDP program loads and runs: an empty capture through it.
    let pcap = scratch.join("empty.pcap");
    // Magic, version 2.4 (two u16), zone, sigfigs, snap length, Ethernet.
    let header: Vec<u8> = [0xa1b2_c3d4u32, 0x0004_0002, 0, 0, 65535, 1]
        .iter()
        .flat_map(|w| w.to_le_bytes())
        .collect();
    std::fs::write(&pcap, header)?;
    let out = Command::new(&bin)
        .args(["replay", "--pcap"])
        .arg(&pcap)
        .output()?;
    ensure!(
        out.status.success(),
        "replay through the packaged binary's XDP program failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    println!("package check passed: {}", deb.display());
    Ok(())
}

/// `cargo xtask package`: build, then check.
pub fn run() -> Result<()> {
    crate::setup::run()?;
    let deb = build()?;
    check(&deb, &target_dir().join("package-check"))
}
