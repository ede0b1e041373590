//! A real rsyslogd for tests: started with a generated configuration in a
//! temporary directory, writing what it receives as JSON lines; killed on drop.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use serde_json::Value;

pub const RSYSLOGD_PATHS: [&str; 2] = ["/usr/sbin/rsyslogd", "/sbin/rsyslogd"];
pub const GTLS_DRIVERS: [&str; 2] = [
    "/usr/lib/x86_64-linux-gnu/rsyslog/lmnsd_gtls.so",
    "/usr/lib/rsyslog/lmnsd_gtls.so",
];
pub const APP: &str = "smbwatch";
/// A user name with every character SD-PARAM escaping must handle.
pub const TRICKY_USER: &str = r#"CORP\adm "ops]"#;

pub fn rsyslogd() -> Option<PathBuf> {
    let found = RSYSLOGD_PATHS
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists());
    if found.is_none() {
        crate::skip(
            "rsyslogd not installed (apt-get install -y rsyslog rsyslog-gnutls); \
             the syslog sink was not tested against a real collector",
        );
    }
    found
}

pub fn gtls_available() -> bool {
    let ok = GTLS_DRIVERS.iter().any(|p| Path::new(p).exists());
    if !ok {
        crate::skip("rsyslog's gtls driver not installed (apt-get install -y rsyslog-gnutls)");
    }
    ok
}

pub fn temp_dir(tag: &str) -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let d = std::env::temp_dir().join(format!(
        "smbwatch-rsyslog-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = fs::remove_dir_all(&d);
    fs::create_dir_all(&d).unwrap();
    d
}

pub fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// What the rsyslogd under test listens on.
pub enum Input {
    Udp(u16),
    Tcp(u16),
    /// TLS with the CA, certificate and key files.
    Tls {
        port: u16,
        ca: PathBuf,
        cert: PathBuf,
        key: PathBuf,
    },
    /// A local datagram socket; `special_parser` is imuxsock's default
    /// (local 3164 format only).
    Unix {
        path: PathBuf,
        special_parser: bool,
    },
}

/// An rsyslogd this test started; killed on drop.
pub struct Rsyslog {
    bin: PathBuf,
    dir: PathBuf,
    conf: PathBuf,
    out: PathBuf,
    child: Option<Child>,
    probe: Probe,
}

/// How to tell that rsyslogd is ready to receive.
#[derive(Clone)]
enum Probe {
    /// Something accepts TCP connections on the port.
    Tcp(u16),
    /// A probe datagram sent there shows up in the output.
    Udp(u16),
    Unix(PathBuf),
}

impl Rsyslog {
    pub fn start(bin: &Path, dir: &Path, input: &Input) -> Self {
        let out = dir.join("received.jsonl");
        let mut global = format!(
            "global(workDirectory=\"{}\" maxMessageSize=\"64k\"",
            dir.display()
        );
        let (modules, probe) = match input {
            Input::Udp(port) => (
                format!(
                    "module(load=\"imudp\")\n\
                     input(type=\"imudp\" address=\"127.0.0.1\" port=\"{port}\")\n"
                ),
                Probe::Udp(*port),
            ),
            Input::Tcp(port) => (
                format!(
                    "module(load=\"imtcp\")\n\
                     input(type=\"imtcp\" address=\"127.0.0.1\" port=\"{port}\")\n"
                ),
                Probe::Tcp(*port),
            ),
            Input::Tls {
                port,
                ca,
                cert,
                key,
            } => {
                global += &format!(
                    " defaultNetstreamDriver=\"gtls\" defaultNetstreamDriverCAFile=\"{}\" \
                     defaultNetstreamDriverCertFile=\"{}\" defaultNetstreamDriverKeyFile=\"{}\"",
                    ca.display(),
                    cert.display(),
                    key.display()
                );
                (
                    format!(
                        "module(load=\"imtcp\" streamDriver.name=\"gtls\" streamDriver.mode=\"1\" \
                         streamDriver.authMode=\"anon\")\n\
                         input(type=\"imtcp\" address=\"127.0.0.1\" port=\"{port}\")\n"
                    ),
                    Probe::Tcp(*port),
                )
            }
            Input::Unix {
                path,
                special_parser,
            } => {
                let opts = if *special_parser {
                    String::new()
                } else {
                    " useSpecialParser=\"off\" parseHostname=\"on\"".into()
                };
                (
                    format!(
                        "module(load=\"imuxsock\" SysSock.Use=\"off\")\n\
                         input(type=\"imuxsock\" Socket=\"{}\"{opts})\n",
                        path.display()
                    ),
                    Probe::Unix(path.clone()),
                )
            }
        };
        global += ")\n";
        let conf = dir.join("rsyslog.conf");
        fs::write(
            &conf,
            format!(
                "{global}{modules}\
                 template(name=\"fields\" type=\"list\" option.jsonf=\"on\") {{\n\
                   property(outname=\"app\" name=\"app-name\" format=\"jsonf\")\n\
                   property(outname=\"host\" name=\"hostname\" format=\"jsonf\")\n\
                   property(outname=\"procid\" name=\"procid\" format=\"jsonf\")\n\
                   property(outname=\"msgid\" name=\"msgid\" format=\"jsonf\")\n\
                   property(outname=\"sd\" name=\"structured-data\" format=\"jsonf\")\n\
                   property(outname=\"msg\" name=\"msg\" format=\"jsonf\")\n\
                   property(outname=\"tag\" name=\"syslogtag\" format=\"jsonf\")\n\
                   property(outname=\"pri\" name=\"pri\" format=\"jsonf\")\n\
                   property(outname=\"raw\" name=\"rawmsg\" format=\"jsonf\")\n\
                 }}\n\
                 action(type=\"omfile\" file=\"{}\" template=\"fields\")\n",
                out.display()
            ),
        )
        .unwrap();
        let mut r = Self {
            bin: bin.to_owned(),
            dir: dir.to_owned(),
            conf,
            out,
            child: None,
            probe,
        };
        r.spawn();
        r
    }

    pub fn spawn(&mut self) {
        let pidfile = self.dir.join("rsyslogd.pid");
        // A SIGKILLed rsyslogd leaves its pid file behind.
        let _ = fs::remove_file(&pidfile);
        let stderr = fs::File::create(self.dir.join("rsyslogd.stderr")).unwrap();
        let child = Command::new(&self.bin)
            .arg("-n")
            .arg("-f")
            .arg(&self.conf)
            .arg("-i")
            .arg(&pidfile)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("spawn rsyslogd");
        self.child = Some(child);
        self.wait_ready();
    }

    pub fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(15);
        let mut n = 0;
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "rsyslogd exited ({status}) at start-up: {}",
                    self.diagnostics()
                );
            }
            assert!(
                Instant::now() < deadline,
                "rsyslogd not ready within 15 s: {}",
                self.diagnostics()
            );
            n += 1;
            let probe_msg = format!("<13>1 - - probe - - - probe {n}");
            let ready = match &self.probe {
                Probe::Tcp(port) => std::net::TcpStream::connect(("127.0.0.1", *port)).is_ok(),
                Probe::Udp(port) => {
                    let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
                    let _ = s.send_to(probe_msg.as_bytes(), ("127.0.0.1", *port));
                    std::thread::sleep(Duration::from_millis(50));
                    self.lines().iter().any(|l| l["app"] == "probe")
                }
                Probe::Unix(path) => {
                    let s = std::os::unix::net::UnixDatagram::unbound().unwrap();
                    let _ = s.send_to(probe_msg.as_bytes(), path);
                    std::thread::sleep(Duration::from_millis(50));
                    self.lines()
                        .iter()
                        .any(|l| l["raw"].as_str().unwrap_or("").contains("probe"))
                }
            };
            if ready {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL and reap: the collector dies without a goodbye.
    pub fn kill(&mut self) {
        self.stop(libc::SIGKILL);
    }

    /// Sends `signal` to this rsyslogd (and only it) and reaps it.
    pub fn stop(&mut self, signal: i32) {
        if let Some(mut c) = self.child.take() {
            let pid = i32::try_from(c.id()).expect("pid fits i32");
            // SAFETY: plain kill(2) on the child we spawned and still own
            // (not yet reaped, so the pid cannot have been reused).
            unsafe { libc::kill(pid, signal) };
            let _ = c.wait();
        }
    }

    pub fn diagnostics(&self) -> String {
        format!(
            "config {}:\n{}\nstderr:\n{}",
            self.conf.display(),
            fs::read_to_string(&self.conf).unwrap_or_default(),
            fs::read_to_string(self.dir.join("rsyslogd.stderr")).unwrap_or_default()
        )
    }

    /// Every line rsyslogd wrote so far, parsed.
    pub fn lines(&self) -> Vec<Value> {
        fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// The lines from smbwatch (probes and rsyslogd's own messages left out).
    pub fn alerts(&self) -> Vec<Value> {
        self.lines()
            .into_iter()
            .filter(|l| l["app"] == APP)
            .collect()
    }

    /// Waits until at least `n` smbwatch messages arrived.
    pub async fn wait_alerts(&self, n: usize, within: Duration) -> Vec<Value> {
        let deadline = Instant::now() + within;
        loop {
            let got = self.alerts();
            if got.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "{} of {n} messages arrived within {within:?}; got {got:#?}\n{}",
                got.len(),
                self.diagnostics()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        self.kill();
        if !std::thread::panicking() {
            let _ = fs::remove_dir_all(&self.dir);
        } else {
            eprintln!("rsyslogd files kept in {}", self.dir.display());
        }
    }
}
