//! What an operator sees from the command line when something is off: the
//! real binary, run as a user would run it.

use std::process::{Command, Output};

use integration_tests::{daemon::smbwatch_bin, netns::unique_tag, require_root};

fn smbwatch(args: &[&str]) -> Output {
    Command::new(smbwatch_bin())
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("running smbwatch")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A scratch directory, removed on drop.
struct Scratch(std::path::PathBuf);

impl Scratch {
    fn new(what: &str) -> Self {
        let d = std::env::temp_dir().join(format!("smbwatch-cli-{what}-{}", unique_tag()));
        std::fs::create_dir_all(&d).unwrap();
        Self(d)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `status` as a user who may not enter the pin directory (the bpffs is
/// 0700 root) names the permissions, not "nothing pinned".
#[test]
fn status_as_non_root_names_the_permissions() {
    require_root();
    let s = Scratch::new("status");
    let locked = s.0.join("bpf");
    std::fs::create_dir_all(locked.join("smbwatch")).unwrap();
    std::fs::set_permissions(&locked, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    // The scratch directory itself must be reachable by nobody.
    std::fs::set_permissions(&s.0, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let pin_dir = locked.join("smbwatch");
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(smbwatch_bin())
        .args(["status", "--pin-dir"])
        .arg(&pin_dir)
        .output()
        .expect("setpriv (util-linux)");
    let err = stderr(&out);
    assert!(!out.status.success());
    assert!(err.contains("Permission denied"), "{err}");
    assert!(err.contains("run this as root"), "{err}");
    assert!(!err.contains("nothing pinned"), "{err}");
    assert_eq!(
        err.matches("os error 13").count(),
        1,
        "cause said once: {err}"
    );
}

/// `top` without a terminal says so and where to look instead.
#[test]
fn top_without_a_terminal_says_so() {
    let out = smbwatch(&["top", "--connect", "127.0.0.1:9"]);
    let err = stderr(&out);
    assert!(!out.status.success());
    assert!(err.contains("terminal"), "{err}");
    assert!(err.contains("/top"), "{err}");
    assert!(!err.contains("os error 6"), "{err}");
}

/// check-config refuses what the daemon refuses to start with.
#[test]
fn check_config_refuses_a_file_without_interfaces() {
    let s = Scratch::new("conf");
    let none = s.0.join("none.toml");
    std::fs::write(&none, "[detect]\nfanout_threshold = 25\n").unwrap();
    let out = smbwatch(&["check-config", none.to_str().unwrap()]);
    let err = stderr(&out);
    assert!(!out.status.success(), "accepted: {err}");
    assert!(err.contains("no interfaces"), "{err}");
    assert!(err.contains("none.toml"), "{err}");
    let good = s.0.join("good.toml");
    std::fs::write(&good, "[dataplane]\ninterfaces = [\"eth0\"]\n").unwrap();
    let out = smbwatch(&["check-config", good.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    // An alert file in a directory that does not exist: `run` would fail.
    let lost = s.0.join("lost.toml");
    let missing = s.0.join("no-such-dir");
    std::fs::write(
        &lost,
        format!(
            "[dataplane]\ninterfaces = [\"eth0\"]\n[alert]\njson = \"{}/alerts.json\"\n",
            missing.display()
        ),
    )
    .unwrap();
    let out = smbwatch(&["check-config", lost.to_str().unwrap()]);
    let err = stderr(&out);
    assert!(!out.status.success(), "accepted: {err}");
    assert!(
        err.contains("alert.json") && err.contains("no-such-dir") && err.contains("does not exist"),
        "{err}"
    );
    std::fs::create_dir(&missing).unwrap();
    let out = smbwatch(&["check-config", lost.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
}

/// `baseline show` and `export` on a mistyped path say there is no
/// database, and create nothing (they used to create an empty one and show
/// it as an empty baseline).
#[test]
fn baseline_show_refuses_a_missing_database() {
    let s = Scratch::new("baseline");
    let db = s.0.join("typo").join("baseline.redb");
    for cmd in ["show", "export"] {
        let out = smbwatch(&["baseline", cmd, "--db", db.to_str().unwrap()]);
        let err = stderr(&out);
        assert!(!out.status.success(), "{cmd} accepted: {err}");
        assert!(err.contains("no baseline database there"), "{err}");
        assert!(!s.0.join("typo").exists(), "{cmd} created the directory");
    }
}
