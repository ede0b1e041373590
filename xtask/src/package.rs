//! `cargo xtask package [--arch amd64|arm64]`: the Debian package, then a
//! check of what was built (control fields, contents, conffiles, md5sums,
//! maintainer scripts, lintian with every remaining tag justified in
//! `packaging/debian/lintian-overrides`; the package extracted into a
//! scratch root, its binary run (arm64: under qemu-user), its conffile
//! checked, its man pages rendered, its unit verified, and its embedded XDP
//! program loaded by a replay).

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

/// The architectures a package is built for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Arch {
    /// x86-64, built natively.
    Amd64,
    /// 64-bit ARM (many routers), cross-built with Debian's
    /// gcc-aarch64-linux-gnu and run under qemu-user for the check.
    Arm64,
}

impl Arch {
    /// Debian's name (the `Architecture` field).
    pub fn debian(self) -> &'static str {
        match self {
            Self::Amd64 => "amd64",
            Self::Arm64 => "arm64",
        }
    }

    /// The rust target of a cross build (none for the host's).
    fn triple(self) -> Option<&'static str> {
        match self {
            Self::Amd64 => None,
            Self::Arm64 => Some("aarch64-unknown-linux-gnu"),
        }
    }

    /// Where cargo puts the release build.
    fn release_dir(self) -> PathBuf {
        match self.triple() {
            Some(t) => target_dir().join(t).join("release"),
            None => target_dir().join("release"),
        }
    }

    /// A command running a binary of this architecture here.
    pub fn runner(self, bin: &Path) -> Command {
        match self {
            Self::Amd64 => Command::new(bin),
            Self::Arm64 => {
                let mut c = Command::new("qemu-aarch64-static");
                // The arm64 loader and libc of libc6-arm64-cross.
                c.args(["-L", "/usr/aarch64-linux-gnu"]).arg(bin);
                c
            }
        }
    }
}

/// Runs `bin ARGS` (of `arch`) and returns its stdout; fails with its stderr.
fn run_bin(arch: Arch, bin: &Path, args: &[&str]) -> Result<String> {
    let out = arch
        .runner(bin)
        .args(args)
        .output()
        .with_context(|| format!("running {}", bin.display()))?;
    if !out.status.success() {
        bail!(
            "`{} {}` failed: {}",
            bin.display(),
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Builds the package for `arch`; returns its path.
pub fn build(arch: Arch) -> Result<PathBuf> {
    let ws = workspace();
    // The real eBPF build: the package's binary must carry the program
    // (the same bpfel object for every architecture).
    let mut build = Command::new("cargo");
    build
        .args(["build", "--release", "-p", "smbwatch"])
        .env_remove("AYA_BUILD_SKIP")
        .current_dir(&ws);
    if let Some(t) = arch.triple() {
        build
            .args(["--target", t])
            .env(
                "CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER",
                "aarch64-linux-gnu-gcc",
            )
            .env("CC_aarch64_unknown_linux_gnu", "aarch64-linux-gnu-gcc");
    }
    let status = build.status()?;
    ensure!(status.success(), "release build failed ({status})");
    let release = arch.release_dir();
    let files = release.join("package");
    let _ = std::fs::remove_dir_all(&files);
    let files_s = files.to_str().context("non-UTF-8 target path")?;
    println!("$ smbwatch package-files {files_s}");
    run_bin(arch, &release.join("smbwatch"), &["package-files", files_s])?;
    for entry in std::fs::read_dir(&files)? {
        let p = entry?.path();
        let name = p.file_name().unwrap_or_default().to_string_lossy();
        if name.ends_with(".8") || name.ends_with(".5") {
            // -n: no name or time stamp, so rebuilds are byte-identical.
            cmd("gzip", &["-9nf", p.to_str().context("non-UTF-8 path")?])?;
        }
    }
    let mut deb_cmd = Command::new("cargo");
    deb_cmd
        .args(["deb", "-p", "smbwatch", "--no-build"])
        .current_dir(&ws);
    if let Some(t) = arch.triple() {
        deb_cmd.args(["--target", t]);
    }
    let out = deb_cmd.output()?;
    if !out.status.success() {
        bail!("cargo deb failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let deb = String::from_utf8_lossy(&out.stdout)
        .lines()
        .rev()
        .find(|l| l.trim_end().ends_with(".deb"))
        .map(|l| PathBuf::from(l.trim()))
        .context("cargo deb did not print the package path")?;
    add_md5sums(&deb)?;
    println!("built {}", deb.display());
    Ok(deb)
}

/// cargo-deb writes no `md5sums` (dpkg --verify and debsums read it):
/// unpack, add one for every file but the conffiles (as dh_md5sums does),
/// and build the package again with root as every file's owner.
fn add_md5sums(deb: &Path) -> Result<()> {
    let tree = deb.with_extension("tree");
    let _ = std::fs::remove_dir_all(&tree);
    let s = |p: &Path| p.to_str().map(str::to_owned).context("non-UTF-8 path");
    stdout("dpkg-deb", &["-R", &s(deb)?, &s(&tree)?])?;
    let script = r#"set -e
cd "$1"
: > DEBIAN/md5sums
find . -path ./DEBIAN -prune -o -type f -print | sed 's|^\./||' | LC_ALL=C sort |
while IFS= read -r f; do
    if grep -qxF "/$f" DEBIAN/conffiles 2>/dev/null; then continue; fi
    md5sum "$f" >> DEBIAN/md5sums
done
chmod 0644 DEBIAN/md5sums
"#;
    stdout("sh", &["-c", script, "add-md5sums", &s(&tree)?])?;
    stdout(
        "dpkg-deb",
        &["--root-owner-group", "-Zxz", "-b", &s(&tree)?, &s(deb)?],
    )?;
    std::fs::remove_dir_all(&tree)?;
    Ok(())
}

/// Every file the package must install.
const CONTENTS: &[&str] = &[
    "./usr/bin/smbwatch",
    "./etc/smbwatch/smbwatch.toml",
    "./etc/logrotate.d/smbwatch",
    "./lib/systemd/system/smbwatch.service",
    "./usr/lib/tmpfiles.d/smbwatch.conf",
    "./usr/share/man/man8/smbwatch.8.gz",
    "./usr/share/man/man8/smbwatch-run.8.gz",
    "./usr/share/man/man8/smbwatch-status.8.gz",
    "./usr/share/man/man8/smbwatch-baseline-learn.8.gz",
    "./usr/share/man/man5/smbwatch.toml.5.gz",
    "./usr/share/doc/smbwatch/examples/smbwatch.toml",
    "./usr/share/doc/smbwatch/README.md",
    "./usr/share/doc/smbwatch/operations.md",
    "./usr/share/doc/smbwatch/service.md",
    "./usr/share/doc/smbwatch/changelog.Debian.gz",
    "./usr/share/doc/smbwatch/copyright",
    "./usr/share/bash-completion/completions/smbwatch",
    "./usr/share/zsh/vendor-completions/_smbwatch",
    "./usr/share/fish/vendor_completions.d/smbwatch.fish",
    "./usr/share/lintian/overrides/smbwatch",
];

/// Runs lintian on the package; fails on any tag it shows (overridden
/// tags, each with its reason in `packaging/debian/lintian-overrides`,
/// are not shown), at every level down to info.
fn lintian(deb: &str) -> Result<()> {
    let out = Command::new("lintian")
        .args([
            "--fail-on",
            "error,warning,info",
            "--display-info",
            "--tag-display-limit",
            "0",
            deb,
        ])
        .output()
        .context("spawning lintian (`cargo xtask setup` installs it)")?;
    let tags = String::from_utf8_lossy(&out.stdout);
    let tags: Vec<&str> = tags
        .lines()
        .filter(|l| l.starts_with(['E', 'W', 'I']) && l.contains(": smbwatch"))
        .collect();
    ensure!(
        out.status.success() && tags.is_empty(),
        "lintian: fix these or justify each in packaging/debian/lintian-overrides:\n{}\n{}",
        tags.join("\n"),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    println!("lintian: clean");
    Ok(())
}

/// Checks the package at `deb`; `scratch` is a directory to use (emptied).
pub fn check(deb: &Path, arch: Arch, scratch: &Path) -> Result<()> {
    let d = deb.to_str().context("non-UTF-8 package path")?;
    let field =
        |f: &str| -> Result<String> { Ok(stdout("dpkg-deb", &["-f", d, f])?.trim().to_owned()) };
    ensure!(field("Package")? == "smbwatch", "Package field");
    ensure!(
        field("Architecture")? == arch.debian(),
        "Architecture: {}",
        field("Architecture")?
    );
    ensure!(
        field("Maintainer")?.contains('@'),
        "Maintainer without an address"
    );
    let depends = field("Depends")?;
    for dep in ["libc6", "iproute2", "adduser", "procps"] {
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
    let mut conffiles: Vec<_> = conffiles.lines().collect();
    conffiles.sort_unstable();
    ensure!(
        conffiles == ["/etc/logrotate.d/smbwatch", "/etc/smbwatch/smbwatch.toml"],
        "conffiles: {conffiles:?}"
    );
    for script in ["postinst", "prerm", "postrm"] {
        let p = control.join(script);
        let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&p)?.permissions());
        ensure!(mode & 0o111 != 0, "{script} is not executable");
        stdout("sh", &["-n", &s(&p)?])?;
        let text = std::fs::read_to_string(&p)?;
        // dh_installsystemd's way: deb-systemd-invoke honours policy-rc.d.
        for line in text.lines().filter(|l| !l.trim_start().starts_with('#')) {
            ensure!(
                !line.contains("systemctl ") || line.contains("daemon-reload"),
                "{script} calls systemctl directly (use deb-systemd-invoke/-helper): {line}"
            );
        }
    }
    let postinst = std::fs::read_to_string(control.join("postinst"))?;
    ensure!(postinst.contains("adduser --system") && postinst.contains("/var/lib/smbwatch"));

    // Installed into a scratch root by extraction (dpkg --root would run
    // the maintainer scripts chrooted there, where adduser is absent).
    stdout("dpkg-deb", &["-x", d, &s(&root)?])?;
    // Every file but the conffiles is in md5sums, and each sum holds.
    let md5sums =
        std::fs::read_to_string(control.join("md5sums")).context("the package has no md5sums")?;
    let listed = |f: &str| md5sums.lines().any(|l| l.ends_with(&format!("  {f}")));
    ensure!(listed("usr/bin/smbwatch"), "md5sums lacks the binary");
    ensure!(
        !listed("etc/smbwatch/smbwatch.toml"),
        "md5sums lists a conffile"
    );
    let out = Command::new("md5sum")
        .args(["--check", "--quiet"])
        .arg(control.join("md5sums"))
        .current_dir(&root)
        .output()?;
    ensure!(
        out.status.success(),
        "md5sums do not match: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    lintian(d)?;
    let bin_path = root.join("usr/bin/smbwatch");
    let bin = s(&bin_path)?;
    let version = run_bin(arch, &bin_path, &["--version"])?;
    ensure!(version.starts_with("smbwatch "), "--version: {version}");
    let conf = s(&root.join("etc/smbwatch/smbwatch.toml"))?;
    // The shipped file sets no interface, and the daemon refuses to start
    // without one: check-config says so; with one set it is good.
    let refused = arch
        .runner(&bin_path)
        .args(["check-config", &conf])
        .output()?;
    ensure!(
        !refused.status.success()
            && String::from_utf8_lossy(&refused.stderr).contains("no interfaces"),
        "check-config accepted a file without interfaces: {}",
        String::from_utf8_lossy(&refused.stderr)
    );
    let with_iface = scratch.join("with-iface.toml");
    std::fs::write(
        &with_iface,
        std::fs::read_to_string(&conf)?.replacen("# interfaces = []", "interfaces = [\"eth0\"]", 1),
    )?;
    run_bin(arch, &bin_path, &["check-config", &s(&with_iface)?])?;
    let text = std::fs::read_to_string(&conf)?;
    ensure!(
        text.contains("# interfaces = []") && text.contains("# fanout_threshold = 20"),
        "conffile keys are not commented defaults"
    );
    for page in [
        "usr/share/man/man8/smbwatch.8.gz",
        "usr/share/man/man8/smbwatch-run.8.gz",
        "usr/share/man/man8/smbwatch-baseline.8.gz",
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
    for section in ["FILES", "SIGNALS", "EXIT STATUS", "EXAMPLES", "ENVIRONMENT"] {
        ensure!(
            run_page.contains(&format!("\n{section}\n")),
            "smbwatch-run(8) lacks {section}"
        );
    }
    // Every page another page names is shipped (there is no smbwatch-help).
    let man8 = root.join("usr/share/man/man8");
    for entry in std::fs::read_dir(&man8)? {
        let page = entry?.path();
        let text = stdout("man", &["-l", &s(&page)?])?;
        for word in text.split(|c: char| c.is_whitespace() || c == ',') {
            // The footer runs the version into the name: "0.1.0smbwatch-run(8)".
            let word = word.rfind("smbwatch").map_or(word, |i| &word[i..]);
            if let Some(name) = word.strip_suffix("(8)") {
                ensure!(
                    man8.join(format!("{name}.8.gz")).exists(),
                    "{} names {word}, which is not shipped",
                    page.display()
                );
            }
        }
    }
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

    replay_empty(arch, &bin_path, scratch, deb)
}

/// The embedded XDP program loads and runs: an empty capture through it.
fn replay_empty(arch: Arch, bin: &Path, scratch: &Path, deb: &Path) -> Result<()> {
    let pcap = scratch.join("empty.pcap");
    // Magic, version 2.4 (two u16), zone, sigfigs, snap length, Ethernet.
    let header: Vec<u8> = [0xa1b2_c3d4u32, 0x0004_0002, 0, 0, 65535, 1]
        .iter()
        .flat_map(|w| w.to_le_bytes())
        .collect();
    std::fs::write(&pcap, header)?;
    let out = arch
        .runner(bin)
        .args(["replay", "--pcap"])
        .arg(&pcap)
        .output()?;
    let err = String::from_utf8_lossy(&out.stderr);
    if arch == Arch::Arm64 {
        // qemu-user has no bpf(2): the arm64 binary read the capture and
        // parsed its embedded object, and the first map creation is where
        // qemu answers ENOSYS. The program itself is the same bpfel object
        // the amd64 check loads and runs.
        ensure!(
            !out.status.success()
                && err.contains("failed to create map")
                && err.contains("os error 38"),
            "the arm64 replay under qemu-user did not reach the kernel load: {err}"
        );
        println!(
            "replay under qemu-user: object parsed, map creation reached (qemu has no bpf(2))"
        );
    } else {
        ensure!(
            out.status.success(),
            "replay through the packaged binary's XDP program failed: {err}"
        );
    }
    println!(
        "package check passed ({}): {}",
        arch.debian(),
        deb.display()
    );
    Ok(())
}

/// `cargo xtask package`: build, then check.
pub fn run(arch: Arch) -> Result<()> {
    crate::setup::run()?;
    let deb = build(arch)?;
    check(
        &deb,
        arch,
        &target_dir().join(format!("package-check-{}", arch.debian())),
    )
}
