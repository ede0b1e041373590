//! `cargo xtask setup`: everything the build and the tests need on a fresh
//! Debian 12 machine, installed idempotently (present things are skipped).

use std::process::Command;

use anyhow::{bail, Result};

use crate::cmd;

/// Debian packages and why each is needed.
const PACKAGES: &[(&str, &str)] = &[
    (
        "llvm-22-dev",
        "bpf-linker links the XDP program with LLVM 22",
    ),
    ("libpolly-22-dev", "bpf-linker's LLVM 22 link dependency"),
    ("zlib1g-dev", "bpf-linker's link dependency"),
    ("libzstd-dev", "bpf-linker's link dependency"),
    (
        "iproute2",
        "network namespaces, veth and XDP inspection (ip, ss)",
    ),
    ("iputils-ping", "lab reachability checks"),
    (
        "util-linux",
        "nsenter: run the daemon in a lab namespace with the host's bpffs",
    ),
    ("procps", "sysctl for forwarding in the lab gateway"),
    ("nmap", "real SYN scans in the lab"),
    ("samba", "real smbd servers in the lab"),
    ("smbclient", "real SMB client sessions in the lab"),
    (
        "python3-venv",
        "the virtualenvs impacket (psexec.py, smbexec.py, atexec.py, reg.py) and Coercer are installed into for the SMB labs",
    ),
    ("hping3", "crafted SYN floods in the lab"),
    (
        "nats-server",
        "the fleet broker (JetStream) for the two-gateway lab and the aggregator benchmark",
    ),
    (
        "tcpdump",
        "live lab captures for replay tests; the AF_PACKET baseline in benchmarks",
    ),
    (
        "rsyslog",
        "a real syslog collector for the syslog sink tests",
    ),
    ("rsyslog-gnutls", "TLS (RFC 5425) in the rsyslog tests"),
    ("nftables", "the nftables baseline in benchmarks"),
    (
        "netsniff-ng",
        "trafgen, the reference traffic generator for the shipped configs",
    ),
    ("bpftool", "inspecting loaded programs and maps"),
    (
        "openssl",
        "test certificates for the host-log listener's TLS tests",
    ),
    (
        "systemd",
        "systemd-analyze verifies the unit and rates its hardening",
    ),
    (
        "dpkg",
        "dpkg-deb checks the package; dpkg --root installs it into a scratch root",
    ),
    (
        "man-db",
        "man renders the generated man pages in the package check",
    ),
    (
        "prometheus",
        "a real Prometheus server scraping the daemon's /metrics in the lab (and promtool)",
    ),
    ("tmux", "driving `smbwatch top` in a terminal in the lab"),
    (
        "tshark",
        "Wireshark's dissector: the oracle the SMB parser's capture test compares with",
    ),
    (
        "debootstrap",
        "a Debian 12 root for the systemd boot test (cached under /var/cache/smbwatch-test)",
    ),
    (
        "systemd-container",
        "systemd-nspawn boots that root with systemd as PID 1 for the package test",
    ),
    (
        "lintian",
        "`cargo xtask package` fails on any lintian tag not justified in packaging/debian/lintian-overrides",
    ),
    (
        "gcc-aarch64-linux-gnu",
        "the linker of the arm64 cross build (`cargo xtask package --arch arm64`)",
    ),
    ("libc6-dev-arm64-cross", "the arm64 C library the cross build links against"),
    (
        "qemu-user-static",
        "runs the arm64 binary (--version, a replay) in the arm64 package check",
    ),
];

/// impacket from PyPI, the lateral-movement clients of the SMB lab
/// (`tests/tests/lab_smb.rs` and `lab_rpc.rs` look for its scripts in
/// `IMPACKET_VENV/bin`).
const IMPACKET: &str = "impacket==0.13.*";
const IMPACKET_VENV: &str = "/var/cache/smbwatch-test/impacket-0.13";

/// Coercer from PyPI, the coercion client of `tests/tests/lab_rpc.rs`, in
/// its own virtualenv: it wants impacket 0.10 (pinned here), the other
/// labs 0.13.
const COERCER: &[&str] = &["coercer==2.4.3", "impacket==0.10.0"];
const COERCER_VENV: &str = "/var/cache/smbwatch-test/coercer-2.4.3";

/// The rust target of the arm64 package.
const ARM64_TARGET: &str = "aarch64-unknown-linux-gnu";

const BPF_LINKER_VERSION: &str = "0.13.0";

/// cargo-deb, which `cargo xtask package` drives (installed only if absent).
const CARGO_DEB_VERSION: &str = "3.8.0";

fn installed(pkg: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", pkg])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        .unwrap_or(false)
}

fn output(program: &str, args: &[&str]) -> Option<String> {
    Command::new(program)
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
}

/// Installs what is missing; prints what it installs and why.
pub fn run() -> Result<()> {
    let missing: Vec<_> = PACKAGES.iter().filter(|(p, _)| !installed(p)).collect();
    if !missing.is_empty() {
        for (p, why) in &missing {
            println!("setup: installing {p}: {why}");
        }
        cmd("apt-get", &["update", "-qq"])?;
        let mut args = vec!["install", "-y", "-qq", "--no-install-recommends"];
        args.extend(missing.iter().map(|(p, _)| *p));
        let status = Command::new("apt-get")
            .args(&args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()?;
        if !status.success() {
            bail!("apt-get install failed ({status})");
        }
    }

    let nightly = output("rustup", &["toolchain", "list"]).unwrap_or_default();
    if !nightly.lines().any(|l| l.starts_with("nightly")) {
        println!("setup: installing the nightly toolchain: the XDP program builds with -Z build-std=core");
        cmd(
            "rustup",
            &["toolchain", "install", "nightly", "--profile", "minimal"],
        )?;
    }
    let components = output(
        "rustup",
        &["component", "list", "--toolchain", "nightly", "--installed"],
    )
    .unwrap_or_default();
    if !components.lines().any(|l| l.starts_with("rust-src")) {
        println!("setup: installing nightly rust-src: core is rebuilt for bpfel-unknown-none");
        cmd(
            "rustup",
            &["component", "add", "rust-src", "--toolchain", "nightly"],
        )?;
    }

    let targets = output("rustup", &["target", "list", "--installed"]).unwrap_or_default();
    if !targets.lines().any(|l| l.trim() == ARM64_TARGET) {
        println!("setup: adding the rust target {ARM64_TARGET}: the arm64 package is cross-built");
        cmd("rustup", &["target", "add", ARM64_TARGET])?;
    }

    let linker = output("bpf-linker", &["--version"]).unwrap_or_default();
    if !linker.contains(BPF_LINKER_VERSION) {
        println!("setup: installing bpf-linker {BPF_LINKER_VERSION} against LLVM 22: it links the XDP program (about 2 minutes)");
        let status = Command::new("cargo")
            .args([
                "install",
                "bpf-linker",
                "--version",
                BPF_LINKER_VERSION,
                "--locked",
                "--no-default-features",
                "--features",
                "llvm-22",
            ])
            // Without it the link step cannot find LLVM 22.
            .env("LLVM_PREFIX", "/usr/lib/llvm-22")
            .status()?;
        if !status.success() {
            bail!("installing bpf-linker failed ({status})");
        }
    }
    if output("cargo", &["deb", "--version"]).is_none() {
        println!("setup: installing cargo-deb {CARGO_DEB_VERSION}: `cargo xtask package` builds the .deb with it (about 3 minutes on 2 cores)");
        cmd(
            "cargo",
            &[
                "install",
                "cargo-deb",
                "--version",
                CARGO_DEB_VERSION,
                "--locked",
            ],
        )?;
    }
    pip_venv(
        IMPACKET_VENV,
        &[IMPACKET],
        ("impacket", "0.13."),
        "psexec.py, smbexec.py, atexec.py, smbclient.py and reg.py in the SMB labs",
    )?;
    pip_venv(
        COERCER_VENV,
        COERCER,
        ("coercer", "2.4.3"),
        "Coercer's PetitPotam, DFSCoerce, ShadowCoerce and printer bug calls in the RPC lab",
    )?;
    println!("setup: everything present");
    Ok(())
}

/// Installs `packages` from PyPI into the virtualenv `venv` unless its
/// `check` package (name, version prefix) is there already.
fn pip_venv(venv: &str, packages: &[&str], check: (&str, &str), why: &str) -> Result<()> {
    let pip = format!("{venv}/bin/pip");
    let shown = output(&pip, &["show", check.0]).unwrap_or_default();
    if !shown
        .lines()
        .any(|l| l.starts_with(&format!("Version: {}", check.1)))
    {
        println!(
            "setup: installing {} from PyPI into {venv}: {why}",
            packages.join(" ")
        );
        // Debian's python, not whatever `python3` a user's PATH finds first.
        cmd("/usr/bin/python3", &["-m", "venv", venv])?;
        let mut args = vec!["install", "--quiet"];
        args.extend(packages);
        cmd(&pip, &args)?;
    }
    Ok(())
}
