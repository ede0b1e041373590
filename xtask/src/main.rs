//! Developer tasks. `cargo xtask --help` lists them.
//!
//! xtask depends on nothing that needs the eBPF toolchain, so `cargo xtask
//! setup` works on a fresh machine; the other tasks run setup first (it
//! skips what is present) and then build and run the real thing.

mod package;
mod setup;

use std::process::Command;

use anyhow::{bail, Context as _, Result};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what the build and tests need (apt packages, nightly rust-src,
    /// bpf-linker 0.13.0 against LLVM 22), skipping what is present.
    Setup,
    /// The whole test suite: unit, kernel (BPF_PROG_TEST_RUN) and namespace
    /// lab tests, plus rustfmt and clippy. Needs root.
    Test,
    /// Build a namespace lab, run smbwatch on its gateway, sweep it with nmap,
    /// run an smbclient session, print what smbwatch saw, tear down. Needs root.
    Demo,
    /// Run the benchmarks; writes target/bench/report.json and report.md. Needs root.
    Bench {
        /// Extra arguments for the benchmark driver (see `cargo xtask bench -- --help`).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Build the Debian package (cargo-deb) into target/debian and check
    /// it: control, contents, conffiles, md5sums, scripts, lintian, an
    /// extracted install (binary, conffile, man pages, unit, XDP program;
    /// arm64 runs under qemu-user). Needs root.
    Package {
        /// Target architecture (arm64 is cross-built).
        #[arg(long, value_enum, default_value = "amd64")]
        arch: package::Arch,
    },
    /// Generate synthetic SMB traffic into a lab veth (see `cargo xtask gen -- --help`). Needs root.
    Gen {
        /// Arguments for the generator.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

fn main() -> Result<()> {
    forget_cargo_run_env();
    let cli = Cli::parse();
    match cli.task {
        Task::Setup => setup::run(),
        Task::Test => test(),
        Task::Demo => lab_bin("demo", &[], false),
        Task::Package { arch } => {
            require_root("cargo xtask package")?;
            package::run(arch)
        }
        Task::Bench { args } => lab_bin("bench", &args, true),
        Task::Gen { args } => lab_bin("gen", &args, true),
    }
}

/// Drops the package variables `cargo run` set for xtask itself, before
/// any cargo is spawned. ring's build script declares
/// `rerun-if-env-changed` on `CARGO_PKG_NAME`, `CARGO_MANIFEST_DIR` and
/// the like, so inheriting xtask's values made every `cargo xtask` after a
/// plain `cargo build` (and the other way round) rebuild ring, rustls,
/// async-nats and smbwatch: about a minute each time.
fn forget_cargo_run_env() {
    for (k, _) in std::env::vars_os() {
        let Some(k) = k.to_str() else { continue };
        if k.starts_with("CARGO_PKG_") || k.starts_with("CARGO_MANIFEST_") {
            std::env::remove_var(k);
        }
    }
}

/// Runs a command, streaming its output, failing if it fails.
pub(crate) fn cmd(program: &str, args: &[&str]) -> Result<()> {
    println!("$ {program} {}", args.join(" "));
    let status = Command::new(program)
        .args(args)
        .status()
        .with_context(|| format!("spawning {program}"))?;
    if !status.success() {
        bail!("`{program} {}` failed ({status})", args.join(" "));
    }
    Ok(())
}

fn require_root(what: &str) -> Result<()> {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        bail!("{what} loads XDP programs and creates network namespaces: run it as root");
    }
    Ok(())
}

fn test() -> Result<()> {
    require_root("cargo xtask test")?;
    setup::run()?;
    // The lab tests run the real binary; build it first.
    cmd("cargo", &["build", "-p", "smbwatch"])?;
    // Default members: the eBPF crate only builds for bpfel (via build.rs).
    cmd("cargo", &["test", "--no-fail-fast"])?;
    cmd("cargo", &["fmt", "--all", "--check"])?;
    cmd(
        "cargo",
        &["clippy", "--all-targets", "--", "-D", "warnings"],
    )?;
    // A release build (a few minutes): the package and its check.
    let deb = package::build(package::Arch::Amd64)?;
    package::check(
        &deb,
        package::Arch::Amd64,
        &package::target_dir().join("package-check-amd64"),
    )?;
    // The package under a real systemd: boot, reboot, reload, logrotate,
    // remove/reinstall, purge (tests/tests/systemd_boot.rs).
    let status = Command::new("cargo")
        .args([
            "test",
            "-p",
            "integration-tests",
            "--test",
            "systemd_boot",
            "--",
            "--ignored",
            "--nocapture",
        ])
        .env("SMBWATCH_DEB", &deb)
        .status()?;
    if !status.success() {
        bail!("the systemd boot test failed ({status})");
    }
    // The arm64 package: cross-built, its binary run under qemu-user.
    package::run(package::Arch::Arm64)?;
    println!("all tests passed");
    Ok(())
}

/// Builds smbwatch and runs one of the lab drivers in `tests/src/bin`.
fn lab_bin(name: &str, args: &[String], release: bool) -> Result<()> {
    require_root(&format!("cargo xtask {name}"))?;
    setup::run()?;
    let profile: &[&str] = if release { &["--release"] } else { &[] };
    let mut build = vec!["build", "-p", "smbwatch"];
    build.extend_from_slice(profile);
    cmd("cargo", &build)?;
    // Built apart from `run --quiet` so that the compilation (minutes on
    // a fresh checkout) shows its progress.
    let mut driver = vec!["build", "-p", "integration-tests", "--bin", name];
    driver.extend_from_slice(profile);
    cmd("cargo", &driver)?;
    let mut run = vec!["run", "--quiet", "-p", "integration-tests", "--bin", name];
    run.extend_from_slice(profile);
    run.push("--");
    run.extend(args.iter().map(String::as_str));
    cmd("cargo", &run)
}
