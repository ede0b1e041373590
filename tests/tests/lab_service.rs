//! The daemon as a service: unprivileged with only CAP_BPF, CAP_PERFMON and
//! CAP_NET_ADMIN (as the systemd unit runs it), and reloaded with SIGHUP
//! while systemd's notification socket listens.

use std::{
    os::unix::{fs::PermissionsExt as _, net::UnixDatagram},
    path::{Path, PathBuf},
    time::Duration,
};

use integration_tests::{
    alerts,
    daemon::Daemon,
    netns::{Lab, ATTACKER_V4, GW_ATTACKER_IF, GW_SERVERS_IF},
    require_root,
};
use serde_json::Value;

/// `nobody`/`nogroup` on Debian: an unprivileged user that exists everywhere.
const NOBODY: u32 = 65534;

/// A scratch directory owned by `nobody`, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Self {
        let d = std::env::temp_dir().join(format!(
            "smbwatch-svc-{tag}-{}",
            integration_tests::netns::unique_tag()
        ));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(d.join("run")).unwrap();
        for p in [&d, &d.join("run")] {
            std::os::unix::fs::chown(p, Some(NOBODY), Some(NOBODY)).unwrap();
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        Self(d)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `setpriv` turning root into `nobody` with only `caps` (setpriv names,
/// e.g. "bpf"), inheritable and ambient so they survive the exec.
fn as_nobody(caps: &[&str]) -> Vec<String> {
    let set = std::iter::once("-all".to_owned())
        .chain(caps.iter().map(|c| format!("+{c}")))
        .collect::<Vec<_>>()
        .join(",");
    vec![
        "setpriv".into(),
        format!("--reuid={NOBODY}"),
        format!("--regid={NOBODY}"),
        "--clear-groups".into(),
        format!("--inh-caps={set}"),
        format!("--ambient-caps={set}"),
        format!("--bounding-set={set}"),
        "--".into(),
    ]
}

/// A pin directory the unprivileged daemon may write: on hosts whose
/// /sys/fs/bpf is root-only (systemd mounts it 0700), the unit creates it
/// the same way before dropping privileges.
fn pin_dir_for_nobody() -> PathBuf {
    let dir = Daemon::unique_pin_dir();
    std::fs::create_dir_all(&dir).unwrap();
    std::os::unix::fs::chown(&dir, Some(NOBODY), Some(NOBODY)).unwrap();
    dir
}

fn fanout(alerts: &[Value]) -> Vec<&Value> {
    alerts
        .iter()
        .filter(|a| alerts::rule_id(a) == "smb_scan_fanout")
        .collect()
}

/// `nmap -sS -p445` from the attacker to 198.51.100.FIRST-LAST; the number
/// of hosts it reports a state for.
fn sweep(lab: &Lab, first: u8, last: u8) -> usize {
    let range = format!("198.51.100.{first}-{last}");
    let out = lab
        .attacker
        .exec("nmap", &["-n", "-Pn", "-sS", "-p445", &range])
        .expect("nmap");
    String::from_utf8_lossy(&out.stdout)
        .matches("445/tcp")
        .count()
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

#[test]
fn unprivileged_with_three_capabilities_attaches_detects_and_alerts() {
    require_root();
    let lab = Lab::new(30).expect("lab");
    lab.wait_reachable(lab.server_v4[0]).unwrap();
    let scratch = Scratch::new("nonroot");
    let json = scratch.0.join("alerts.json");
    let run = scratch.0.join("run");
    let wrap = as_nobody(&["bpf", "perfmon", "net_admin"]);
    let args = [
        "--iface",
        GW_ATTACKER_IF,
        "--iface",
        GW_SERVERS_IF,
        "--json",
        json.to_str().unwrap(),
    ];
    // systemd's socket, writable by the service user, with a 1 s watchdog.
    let sock_path = scratch.0.join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    std::fs::set_permissions(&sock_path, std::fs::Permissions::from_mode(0o666)).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let env = [
        ("RUNTIME_DIRECTORY", run.to_str().unwrap()),
        ("NOTIFY_SOCKET", sock_path.to_str().unwrap()),
        ("WATCHDOG_USEC", "1000000"),
    ];
    let mut daemon = Daemon::spawn_pinned(
        &lab.gateway,
        &strs(&wrap),
        &args,
        &env,
        pin_dir_for_nobody(),
    )
    .expect("daemon");
    daemon
        .wait_stderr("pinned maps", Duration::from_secs(30))
        .expect("attached as nobody");
    // READY, and keep-alives every half second while the drain thread beats.
    let first: Vec<String> = (0..4).map(|_| notification(&sock)).collect();
    assert!(first.iter().any(|m| m.starts_with("READY=1")), "{first:?}");
    assert!(
        first.iter().filter(|m| *m == "WATCHDOG=1").count() >= 2,
        "{first:?}"
    );
    let status = std::fs::read_to_string(format!("/proc/{}/status", daemon.pid())).unwrap();
    assert!(status.contains(&format!("Uid:\t{NOBODY}")), "{status}");
    assert!(status.contains("CapEff:\t000000c000001000"), "{status}");
    assert_eq!(sweep(&lab, 2, 31), 30, "nmap probed 30 hosts");
    let got = alerts::wait(&json, Duration::from_secs(10), |a| !fanout(a).is_empty());
    let f = fanout(&got);
    assert_eq!(f.len(), 1, "{got:#?}");
    assert_eq!(f[0]["source"]["ip"], ATTACKER_V4);
    let meta = std::fs::metadata(&json).unwrap();
    assert_eq!(
        std::os::unix::fs::MetadataExt::uid(&meta),
        NOBODY,
        "written by the unprivileged daemon"
    );
    assert_eq!(daemon.stop().unwrap(), 0);
}

#[test]
fn each_missing_capability_is_named() {
    require_root();
    let lab = Lab::new(1).expect("lab");
    let scratch = Scratch::new("caps");
    let run = scratch.0.join("run");
    let all = ["bpf", "perfmon", "net_admin"];
    for missing in all {
        let caps: Vec<&str> = all.iter().copied().filter(|c| *c != missing).collect();
        let wrap = as_nobody(&caps);
        let args = ["--iface", GW_ATTACKER_IF, "--iface", GW_SERVERS_IF];
        let env = [("RUNTIME_DIRECTORY", run.to_str().unwrap())];
        let mut d = Daemon::spawn_pinned(
            &lab.gateway,
            &strs(&wrap),
            &args,
            &env,
            pin_dir_for_nobody(),
        )
        .expect("spawn");
        let code = d.wait_exit(Duration::from_secs(10)).expect("exits");
        assert_ne!(code, 0);
        let err = d.stderr();
        let name = format!("CAP_{}", missing.to_uppercase());
        assert!(
            err.contains(&format!("smbwatch needs {name} to load")),
            "without {name}: {err}"
        );
    }
}

/// Reads one notification datagram (or panics after 10 s).
fn notification(sock: &UnixDatagram) -> String {
    let mut buf = [0u8; 1024];
    let n = sock.recv(&mut buf).expect("a notification within 10 s");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

fn write_config(path: &Path, threshold_block: &str) {
    std::fs::write(
        path,
        format!(
            "# reload test\n[detect]\n{threshold_block}\n# slow enough to keep every probe in the window\nwindow = \"10m\"\n"
        ),
    )
    .unwrap();
}

/// A source 15 hosts into a sweep under threshold 20; a broken file is
/// refused (file:line logged, old threshold kept: two more hosts raise
/// nothing); then threshold 10 is reloaded and the next host alerts with
/// the count carried over from before the reloads (18), with XDP attached
/// throughout. systemd's notification socket hears READY, RELOADING (with
/// MONOTONIC_USEC) and READY again for each reload, and STOPPING.
#[test]
fn sighup_swaps_the_threshold_and_keeps_detector_state() {
    require_root();
    let lab = Lab::new(30).expect("lab");
    lab.wait_reachable(lab.server_v4[0]).unwrap();
    let scratch = Scratch::new("reload");
    let json = scratch.0.join("alerts.json");
    let config = scratch.0.join("smbwatch.toml");
    write_config(&config, "fanout_threshold = 20");
    let sock_path = scratch.0.join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let args = [
        "--iface",
        GW_ATTACKER_IF,
        "--iface",
        GW_SERVERS_IF,
        "--json",
        json.to_str().unwrap(),
        "--config",
        config.to_str().unwrap(),
    ];
    let env = [("NOTIFY_SOCKET", sock_path.to_str().unwrap())];
    let mut daemon = Daemon::spawn(&lab.gateway, &[], &args, &env).expect("daemon");
    let ready = notification(&sock);
    assert!(ready.starts_with("READY=1\n"), "{ready:?}");
    assert!(
        daemon.stderr().contains("pinned maps"),
        "READY after attach"
    );
    let prog_before = attached(&lab);

    assert_eq!(sweep(&lab, 2, 16), 15);
    std::thread::sleep(Duration::from_secs(2));
    assert!(fanout(&alerts::read(&json)).is_empty(), "15 < 20");

    // Broken: a good-looking threshold with an invalid window after it.
    std::fs::write(
        &config,
        "[detect]\nfanout_threshold = 10\nwindow = \"0s\"\n",
    )
    .unwrap();
    daemon.signal(libc::SIGHUP);
    assert!(notification(&sock).starts_with("RELOADING=1\nMONOTONIC_USEC="));
    let after = notification(&sock);
    assert!(
        after.starts_with("READY=1\nSTATUS=reload failed"),
        "{after:?}"
    );
    daemon
        .wait_stderr("reload failed", Duration::from_secs(5))
        .unwrap();
    let line = format!("{}:3:1: detect.window", config.display());
    assert!(
        daemon.stderr().contains(&line),
        "names {line}: {}",
        daemon.stderr()
    );
    assert_eq!(sweep(&lab, 17, 18), 2);
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        fanout(&alerts::read(&json)).is_empty(),
        "17 hosts, old threshold 20 kept"
    );

    // Also a port, which needs a restart: reported, not applied.
    write_config(&config, "fanout_threshold = 10");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str("[dataplane]\nports = [445, 139]\n");
    std::fs::write(&config, text).unwrap();
    daemon.signal(libc::SIGHUP);
    assert!(notification(&sock).starts_with("RELOADING=1\n"));
    assert_eq!(
        notification(&sock),
        "READY=1\nSTATUS=configuration reloaded"
    );
    daemon
        .wait_stderr("detection settings swapped", Duration::from_secs(5))
        .unwrap();
    assert!(
        fanout(&alerts::read(&json)).is_empty(),
        "no alert until the next probe"
    );
    assert_eq!(sweep(&lab, 19, 21), 3);
    let got = alerts::wait(&json, Duration::from_secs(10), |a| !fanout(a).is_empty());
    let f = fanout(&got);
    assert_eq!(f.len(), 1, "{got:#?}");
    assert_eq!(f[0]["source"]["ip"], ATTACKER_V4);
    assert_eq!(
        f[0]["smbwatch"]["distinct_destinations"], 18,
        "the 17 hosts from before the reloads are still counted"
    );
    assert_eq!(attached(&lab), prog_before, "XDP never detached");
    let err = daemon.stderr();
    assert!(
        err.contains("dataplane.ports changed but needs a restart"),
        "{err}"
    );

    let (code, err) = daemon.stop_with_stderr().unwrap();
    assert_eq!(code, 0, "{err}");
    assert_eq!(notification(&sock), "STOPPING=1");
}

/// The ids of the XDP programs attached on the gateway's interfaces.
fn attached(lab: &Lab) -> Vec<u64> {
    let out = lab.gateway.ip(&["-d", "-j", "link", "show"]).unwrap();
    let links: Value = serde_json::from_slice(&out.stdout).unwrap();
    let ids: Vec<u64> = links
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|l| {
            l.pointer("/xdp/prog/id")
                .or_else(|| l.pointer("/xdp/attached/0/prog/id"))
                .and_then(Value::as_u64)
        })
        .collect();
    assert_eq!(ids.len(), 2, "attached to g0 and g1: {links}");
    ids
}

/// Sends lines to 127.0.0.1:`port` inside the gateway namespace (bash's
/// /dev/tcp), as a forwarder on the router would.
fn forward(lab: &Lab, dir: &Path, port: u16, lines: &[String]) {
    let file = dir.join("lines");
    std::fs::write(&file, lines.join("\n") + "\n").unwrap();
    lab.gateway
        .exec(
            "bash",
            &[
                "-c",
                &format!("cat {} > /dev/tcp/127.0.0.1/{port}", file.display()),
            ],
        )
        .expect("forward over TCP");
}

/// A Sysmon 3 record: `image` opened an SMB connection just now.
fn sysmon3(image: &str, sport: u16) -> String {
    let utc = chrono::Utc::now()
        .format("%Y-%m-%d %H:%M:%S%.3f")
        .to_string();
    serde_json::json!({
        "EventID": 3,
        "Channel": "Microsoft-Windows-Sysmon/Operational",
        "Hostname": "WS5.example.test",
        "ProcessId": "4242",
        "Image": format!("C:\\Tools\\{image}"),
        "Initiated": "true",
        "SourceIp": "192.0.2.50",
        "SourcePort": sport.to_string(),
        "DestinationIp": "198.51.100.2",
        "DestinationPort": "445",
        "UtcTime": utc,
    })
    .to_string()
}

fn host_alerts(path: &Path) -> Vec<String> {
    alerts::read(path)
        .iter()
        .filter(|a| alerts::rule_id(a) == "suspicious_smb_client")
        .map(|a| a["process"]["name"].as_str().unwrap_or("").to_owned())
        .collect()
}

/// Sinks and host-log inputs swap on SIGHUP: a reload adds a listener and
/// moves the JSON sink to another file; the next one allowlists an image
/// without touching the listener.
#[test]
fn sighup_swaps_sinks_listener_and_host_rules() {
    require_root();
    let lab = Lab::new(1).expect("lab");
    let scratch = Scratch::new("reload-inputs");
    let (first, second) = (scratch.0.join("first.json"), scratch.0.join("second.json"));
    let config = scratch.0.join("smbwatch.toml");
    std::fs::write(
        &config,
        format!("[alert]\njson = {:?}\n", first.to_str().unwrap()),
    )
    .unwrap();
    let args = [
        "--iface",
        GW_ATTACKER_IF,
        "--iface",
        GW_SERVERS_IF,
        "--config",
        config.to_str().unwrap(),
    ];
    let mut daemon = Daemon::start(&lab.gateway, &args).expect("daemon");
    assert!(!daemon.stderr().contains("listening for forwarded"));

    let port = integration_tests::rsyslog::free_tcp_port();
    let with_listener = |allow: &str| {
        format!(
            "[alert]\njson = {:?}\n[hostlog]\nlisten = \"tcp://127.0.0.1:{port}\"\n[hostlog.rules]\nallow_images = [{allow}]\n",
            second.to_str().unwrap()
        )
    };
    std::fs::write(&config, with_listener("")).unwrap();
    daemon.signal(libc::SIGHUP);
    daemon
        .wait_stderr(
            "listening for forwarded host events",
            Duration::from_secs(5),
        )
        .unwrap();
    daemon
        .wait_stderr("detection settings swapped", Duration::from_secs(5))
        .unwrap();
    forward(&lab, &scratch.0, port, &[sysmon3("python.exe", 50001)]);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while host_alerts(&second).is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(host_alerts(&second), ["python.exe"], "{}", daemon.stderr());
    assert!(host_alerts(&first).is_empty(), "the old sink is out");

    std::fs::write(&config, with_listener("\"python.exe\"")).unwrap();
    let before = daemon
        .stderr()
        .matches("detection settings swapped")
        .count();
    daemon.signal(libc::SIGHUP);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while daemon
        .stderr()
        .matches("detection settings swapped")
        .count()
        == before
    {
        assert!(std::time::Instant::now() < deadline, "{}", daemon.stderr());
        std::thread::sleep(Duration::from_millis(50));
    }
    // In order: the allowlisted image, then one that is not.
    forward(
        &lab,
        &scratch.0,
        port,
        &[sysmon3("python.exe", 50002), sysmon3("psexec.exe", 50003)],
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while host_alerts(&second).len() < 2 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(host_alerts(&second), ["python.exe", "psexec.exe"]);
    let err = daemon.stderr();
    assert_eq!(
        err.matches("host-log listener up").count(),
        1,
        "the second reload kept the listener: {err}"
    );
    assert_eq!(daemon.stop().unwrap(), 0);
}
