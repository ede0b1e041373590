//! Builds the XDP program (smbwatch-ebpf) for bpfel-unknown-none with the
//! nightly toolchain and places the object in OUT_DIR for `include_bytes_aligned!`.
use std::{env, fs, path::PathBuf};

use anyhow::Context as _;
use aya_build::{Package, Toolchain};

fn main() -> anyhow::Result<()> {
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").context("OUT_DIR not set")?);
    // AYA_BUILD_SKIP=1 (aya-build's switch) builds the user space only, e.g.
    // for docs or quick checks of pure modules; the embedded object is then
    // empty and loading it fails with a message saying so.
    if env::var("AYA_BUILD_SKIP").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true")) {
        println!("cargo:rerun-if-env-changed=AYA_BUILD_SKIP");
        for object in ["smbwatch", "smbwatch-test"] {
            fs::write(out_dir.join(object), b"").context("writing empty eBPF object")?;
        }
        return Ok(());
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../smbwatch-ebpf");
    let root = root.to_str().context("non-UTF-8 path")?;
    aya_build::build_ebpf(
        [Package {
            name: "smbwatch-ebpf",
            root_dir: root,
            ..Default::default()
        }],
        Toolchain::default(),
    )
}
