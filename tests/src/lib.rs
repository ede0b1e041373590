//! Helpers for the kernel and lab tests.

pub mod alerts;
pub mod bench;
pub mod certs;
pub mod daemon;
pub mod events;
pub mod fleet;
pub mod gen;
pub mod http;
pub mod kernel;
pub mod listen;
pub mod netns;
pub mod pcap;
pub mod prometheus;
pub mod rsyslog;
pub mod samba;
pub mod tmux;
pub mod week;

/// Kernel and lab tests need root; say so plainly instead of failing on EPERM.
pub fn require_root() {
    // SAFETY: geteuid never fails.
    if unsafe { libc::geteuid() } != 0 {
        panic!("this test loads XDP programs and creates network namespaces: run it as root (cargo xtask test does)");
    }
}

/// A test's input (a tool, a data set) is missing: under `CI=true` that is
/// a failure, since CI installs everything and must not pass by skipping;
/// elsewhere the test says what it skipped and returns.
pub fn skip(what: &str) {
    if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
        panic!("{what} (CI=true: a missing test input fails the run instead of skipping)");
    }
    eprintln!("SKIP: {what}");
}

/// A scratch directory under the system temp dir, unique per run, removed
/// when dropped (also when the test fails).
pub struct Scratch(pub std::path::PathBuf);

impl Scratch {
    /// Creates `smbwatch-NAME-<tag>`.
    pub fn new(name: &str) -> Self {
        let p = std::env::temp_dir().join(format!("smbwatch-{name}-{}", netns::unique_tag()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("creating a scratch directory");
        Self(p)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Failures collected over the cases of one lab, reported together: one
/// failing case must not hide what the others found.
#[derive(Default)]
pub struct Findings(Vec<String>);

impl Findings {
    /// Records `what` unless `ok` (and says it on stderr at once).
    pub fn check(&mut self, ok: bool, what: impl FnOnce() -> String) {
        if !ok {
            let w = what();
            eprintln!("FAILED: {w}");
            self.0.push(w);
        }
    }

    /// Fails the test with every recorded failure, if any.
    pub fn assert_none(self) {
        assert!(
            self.0.is_empty(),
            "{} failed:\n{}",
            self.0.len(),
            self.0.join("\n\n")
        );
    }
}
