use which::which;

/// Building this crate requires bpf-linker; fail early with a hint instead of
/// a linker error deep in the eBPF build.
fn main() {
    let bpf_linker = which("bpf-linker")
        .expect("bpf-linker not found on PATH: run `cargo xtask setup` (installs bpf-linker 0.13.0 against LLVM 22)");
    println!("cargo:rerun-if-changed={}", bpf_linker.to_str().unwrap());
}
