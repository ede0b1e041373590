//! The namespace lab: real nmap, smbd and smbclient traffic through a
//! gateway namespace where the real smbwatch binary has XDP attached.

use std::{net::IpAddr, time::Duration};

use integration_tests::{
    daemon::Daemon,
    events,
    netns::{Lab, ATTACKER_V4, ATTACKER_V6, GW_ATTACKER_IF, GW_SERVERS_IF},
    require_root,
    samba::Smbd,
};
use serde_json::Value;

/// The `new_pair` lines, or the answers (`response`).
fn of_type<'a>(lines: &'a [Value], t: &str) -> Vec<&'a Value> {
    let keep = if t == "response" {
        events::is_answer
    } else {
        events::is_new_pair
    };
    lines.iter().filter(|l| keep(l)).collect()
}

fn gateway_daemon(lab: &Lab) -> Daemon {
    Daemon::start(
        &lab.gateway,
        &[
            "--iface",
            GW_ATTACKER_IF,
            "--iface",
            GW_SERVERS_IF,
            "--stats-interval",
            "1s",
        ],
    )
    .expect("start smbwatch in the gateway namespace")
}

/// nmap -sS -p445 against `targets`: smbd listens on the first `listening`,
/// the rest refuse. Exactly one new_pair and one response per target.
fn nmap_sweep(v6: bool) {
    require_root();
    const N: usize = 8;
    const LISTENING: usize = 3;
    let lab = Lab::new(N).expect("lab");
    let targets: Vec<IpAddr> = if v6 {
        lab.server_v6.clone()
    } else {
        lab.server_v4.clone()
    };
    lab.wait_reachable(targets[0]).unwrap();
    let _smbd = Smbd::start(&lab.servers, &targets[..LISTENING]).expect("smbd");
    let daemon = gateway_daemon(&lab);

    let mut args = vec!["-n", "-Pn", "-sS", "-p445", "--max-retries", "2"];
    if v6 {
        args.push("-6");
    }
    let t: Vec<String> = targets.iter().map(|a| a.to_string()).collect();
    args.extend(t.iter().map(String::as_str));
    let out = lab.attacker.exec("nmap", &args).expect("nmap");
    let report = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        report.matches("445/tcp open").count(),
        LISTENING,
        "nmap saw: {report}"
    );

    let lines = daemon.lines_when(Duration::from_secs(5), |l| {
        of_type(l, "response").len() >= N
    });
    let pairs = of_type(&lines, "new_pair");
    let responses = of_type(&lines, "response");
    let attacker = if v6 { ATTACKER_V6 } else { ATTACKER_V4 };
    assert_eq!(pairs.len(), N, "one new_pair per target: {lines:#?}");
    assert_eq!(responses.len(), N, "one response per target: {lines:#?}");
    for p in &pairs {
        assert_eq!(p["source"]["ip"], attacker);
        assert_eq!(p["destination"]["port"], 445);
        assert!(p["observer"]["ingress"]["vlan"].is_null());
        assert!(p["@timestamp"].as_str().unwrap().ends_with('Z'));
    }
    for (i, target) in targets.iter().enumerate() {
        let r: Vec<_> = responses
            .iter()
            .filter(|r| r["destination"]["ip"] == target.to_string())
            .collect();
        assert_eq!(r.len(), 1, "one response from {target}");
        assert_eq!(r[0]["source"]["ip"], attacker);
        let want = if i < LISTENING { "accepted" } else { "refused" };
        assert_eq!(events::action(r[0]), want, "answer of {target}");
    }
    let pin_dir = daemon.pin_dir.clone();
    assert_eq!(daemon.stop().unwrap(), 0, "SIGTERM exits 0");
    assert!(!pin_dir.exists(), "pins removed on exit");
    let links = lab
        .gateway
        .ip(&["-d", "link", "show", GW_ATTACKER_IF])
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&links.stdout).contains("prog/xdp"),
        "XDP detached on exit"
    );
}

#[test]
fn nmap_sweep_ipv4() {
    nmap_sweep(false);
}

#[test]
fn nmap_sweep_ipv6() {
    nmap_sweep(true);
}

fn smbclient_session(v6: bool) {
    require_root();
    let lab = Lab::new(2).expect("lab");
    let server = if v6 {
        lab.server_v6[0]
    } else {
        lab.server_v4[0]
    };
    lab.wait_reachable(server).unwrap();
    let _smbd = Smbd::start(&lab.servers, &[server]).expect("smbd");
    let daemon = gateway_daemon(&lab);
    let unc = match server {
        IpAddr::V4(a) => format!("//{a}/public"),
        IpAddr::V6(a) => format!("//{a}/public"),
    };
    let out = lab
        .attacker
        .exec(
            "smbclient",
            &[&unc, "-N", "-c", "get hello.txt /dev/stdout"],
        )
        .expect("smbclient");
    assert!(String::from_utf8_lossy(&out.stdout).contains("hello from the lab"));
    let lines = daemon.lines_when(Duration::from_secs(5), |l| {
        !of_type(l, "response").is_empty()
    });
    let pairs = of_type(&lines, "new_pair");
    let responses = of_type(&lines, "response");
    assert_eq!(pairs.len(), 1, "{lines:#?}");
    assert_eq!(pairs[0]["destination"]["ip"], server.to_string());
    assert_eq!(responses.len(), 1, "{lines:#?}");
    assert_eq!(events::action(responses[0]), "accepted");
    assert_eq!(daemon.stop().unwrap(), 0);
}

#[test]
fn smbclient_session_ipv4() {
    smbclient_session(false);
}

#[test]
fn smbclient_session_ipv6() {
    smbclient_session(true);
}

fn smbwatch_in(ns: &integration_tests::netns::NetNs, args: &[&str]) -> std::process::Output {
    ns.command(integration_tests::daemon::smbwatch_bin().to_str().unwrap())
        .args(args)
        .output()
        .expect("run smbwatch")
}

#[test]
fn unknown_and_down_interfaces_are_named() {
    require_root();
    let lab = Lab::new(1).expect("lab");
    let out = smbwatch_in(
        &lab.gateway,
        &[
            "run",
            "--iface",
            "nosuch0",
            "--pin-dir",
            "/sys/fs/bpf/smbw-bad-if",
        ],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("interface nosuch0: no such interface"),
        "{err}"
    );
    lab.gateway
        .ip(&["link", "set", GW_SERVERS_IF, "down"])
        .unwrap();
    let out = smbwatch_in(
        &lab.gateway,
        &[
            "run",
            "--iface",
            GW_SERVERS_IF,
            "--pin-dir",
            "/sys/fs/bpf/smbw-bad-if",
        ],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("interface {GW_SERVERS_IF} is down")),
        "{err}"
    );
}

/// A program attached with `ip link` (netlink): smbwatch refuses it and
/// names it, and replaces it only with --force.
#[test]
fn foreign_xdp_program_refused_unless_forced() {
    require_root();
    let lab = Lab::new(1).expect("lab");
    // Load the empty program and pin it, then attach it the way another
    // tool would: `ip link set dev g0 xdpgeneric pinned PATH`.
    let pin = format!(
        "/sys/fs/bpf/smbw-foreign-{}",
        integration_tests::netns::unique_tag()
    );
    let mut ebpf = aya::EbpfLoader::new()
        .load(smbwatch::dataplane::test_programs::TEST_EBPF_OBJECT)
        .expect("load object");
    let prog: &mut aya::programs::Xdp = ebpf
        .program_mut(smbwatch_common::FLOOR_PROGRAM_NAME)
        .unwrap()
        .try_into()
        .unwrap();
    prog.load().unwrap();
    prog.pin(&pin).unwrap();
    struct Unpin(String);
    impl Drop for Unpin {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
    let _unpin = Unpin(pin.clone());
    // Through nsenter: `ip -n` remounts /sys and would not see the pin.
    lab.gateway
        .exec(
            "ip",
            &[
                "link",
                "set",
                "dev",
                GW_ATTACKER_IF,
                "xdpgeneric",
                "pinned",
                &pin,
            ],
        )
        .expect("attach foreign program");

    let out = smbwatch_in(
        &lab.gateway,
        &[
            "run",
            "--iface",
            GW_ATTACKER_IF,
            "--pin-dir",
            "/sys/fs/bpf/smbw-foreign-run",
        ],
    );
    assert!(!out.status.success(), "refused");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("already has an XDP program attached"), "{err}");
    assert!(err.contains("smbwatch_floor"), "names the program: {err}");
    assert!(err.contains("--force"), "says how to override: {err}");

    let daemon =
        Daemon::start(&lab.gateway, &["--iface", GW_ATTACKER_IF, "--force"]).expect("forced start");
    assert!(
        daemon.stderr().contains("--force: detaching"),
        "{}",
        daemon.stderr()
    );
    let shown = lab
        .gateway
        .ip(&["-d", "link", "show", GW_ATTACKER_IF])
        .unwrap();
    let shown = String::from_utf8_lossy(&shown.stdout).to_string();
    assert!(
        shown.contains("name smbwatch "),
        "smbwatch's program is attached now: {shown}"
    );
    assert_eq!(daemon.stop().unwrap(), 0);
}

/// SIGTERM at any point of start-up: exit 0, nothing left attached or pinned.
#[test]
fn sigterm_during_startup_cleans_up() {
    require_root();
    let lab = Lab::new(1).expect("lab");
    for delay_ms in [0u64, 5, 20, 60, 150] {
        let pin = format!(
            "/sys/fs/bpf/smbw-term-{}",
            integration_tests::netns::unique_tag()
        );
        let mut child = lab
            .gateway
            .command(integration_tests::daemon::smbwatch_bin().to_str().unwrap())
            .args([
                "run",
                "--iface",
                GW_ATTACKER_IF,
                "--iface",
                GW_SERVERS_IF,
                "--pin-dir",
                &pin,
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        // nsenter execs smbwatch in place, so the child pid is smbwatch's.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let status = child.wait().unwrap();
        // Before tokio installs its handler the default action kills the
        // process; either way nothing may stay attached or pinned.
        assert!(
            status.success() || status.code().is_none(),
            "SIGTERM after {delay_ms} ms: {status}"
        );
        assert!(
            !std::path::Path::new(&pin).exists(),
            "pins removed (delay {delay_ms} ms)"
        );
        for ifname in [GW_ATTACKER_IF, GW_SERVERS_IF] {
            let shown = lab.gateway.ip(&["-d", "link", "show", ifname]).unwrap();
            assert!(
                !String::from_utf8_lossy(&shown.stdout).contains("prog/xdp"),
                "XDP detached from {ifname} (delay {delay_ms} ms)"
            );
        }
    }
}

/// One daemon per pin directory, whatever path names it: a second daemon
/// given the first one's directory through a symbolic link (the service
/// reaches /sys/fs/bpf/smbwatch through a bind mount the same way) is
/// refused and names the owner, and the first daemon's pins stay.
#[test]
fn second_daemon_on_the_same_pin_directory_by_another_path_is_refused() {
    require_root();
    let lab = Lab::new(1).expect("lab");
    let other = Lab::new(1).expect("second lab");
    let first = Daemon::start(&lab.gateway, &["--iface", GW_ATTACKER_IF]).expect("first daemon");
    let alias = format!("{}-alias", first.pin_dir.display());
    std::os::unix::fs::symlink(&first.pin_dir, &alias).expect("symlink on bpffs");
    struct Remove(String);
    impl Drop for Remove {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
    let _alias = Remove(alias.clone());
    let out = smbwatch_in(
        &other.gateway,
        &["run", "--iface", GW_ATTACKER_IF, "--pin-dir", &alias],
    );
    assert!(!out.status.success(), "the second daemon ran");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("another smbwatch"), "{err}");
    assert!(err.contains(&format!("pid {}", first.pid())), "{err}");
    assert!(
        first.pin_dir.join("prog").exists(),
        "the first daemon's pins were removed"
    );
    // The second one detached again: nothing left on its interface.
    let links = other
        .gateway
        .ip(&["-d", "link", "show", GW_ATTACKER_IF])
        .unwrap();
    assert!(!String::from_utf8_lossy(&links.stdout).contains("xdp"));
    assert_eq!(first.stop().unwrap(), 0);
}
