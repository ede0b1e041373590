//! A real Samba smbd inside a lab namespace, listening only on chosen addresses.

use std::{
    net::IpAddr,
    path::PathBuf,
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};

use crate::netns::{unique_tag, NetNs};

/// A running smbd; killed and its files removed on drop.
pub struct Smbd {
    child: Child,
    dir: PathBuf,
    /// The account's password ([`Smbd::start_admin`]), which pipe
    /// responders need to seal their answers.
    password: Option<String>,
}

impl Smbd {
    /// Starts smbd in `ns`, serving a guest share `public` on `addrs` only.
    pub fn start(ns: &NetNs, addrs: &[IpAddr]) -> Result<Self> {
        Self::start_with(ns, addrs, None)
    }

    /// Like [`Smbd::start`], and also exports writable shares named
    /// `ADMIN$` and `C$` to an account `user` with `password`, as a Windows
    /// host's administrative shares (what psexec-like tools write to).
    /// Samba needs a Unix account behind a password: `user` is mapped to
    /// root (`username map`), the password sits in this smbd's own passdb.
    /// The server offers no SMB 3 encryption (`server smb encrypt = off`).
    pub fn start_admin(ns: &NetNs, addrs: &[IpAddr], user: &str, password: &str) -> Result<Self> {
        Self::start_with(ns, addrs, Some((user, password)))
    }

    fn start_with(ns: &NetNs, addrs: &[IpAddr], admin: Option<(&str, &str)>) -> Result<Self> {
        let dir = std::env::temp_dir().join(format!("smbwatch-smbd-{}", unique_tag()));
        let share = dir.join("share");
        std::fs::create_dir_all(&share)?;
        std::fs::write(share.join("hello.txt"), "hello from the lab\n")?;
        for sub in ["private", "lock", "state", "cache", "pid", "ncalrpc"] {
            std::fs::create_dir_all(dir.join(sub))?;
        }
        let interfaces: Vec<String> = addrs.iter().map(|a| a.to_string()).collect();
        let d = dir.display();
        let conf = format!(
            "[global]\n\
             interfaces = {ifs}\n\
             bind interfaces only = yes\n\
             smb ports = 445\n\
             disable netbios = yes\n\
             server role = standalone server\n\
             map to guest = Bad User\n\
             private dir = {d}/private\n\
             lock directory = {d}/lock\n\
             state directory = {d}/state\n\
             cache directory = {d}/cache\n\
             pid directory = {d}/pid\n\
             ncalrpc dir = {d}/ncalrpc\n\
             log file = {d}/log.%m\n\
             passdb backend = tdbsam:{d}/private/passdb.tdb\n\
             load printers = no\n\
             printing = bsd\n\
             printcap name = /dev/null\n\
             disable spoolss = yes\n\
             [public]\n\
             path = {share}\n\
             guest ok = yes\n\
             read only = yes\n",
            ifs = interfaces.join(" "),
            share = share.display(),
        );
        let conf_path = dir.join("smb.conf");
        if let Some((user, password)) = admin {
            let map = dir.join("users.map");
            std::fs::write(&map, format!("root = {user}\n"))?;
            // [global] options go in front of the shares. impacket encrypts
            // every SMB 3 session whose server offers encryption (as Windows
            // does): not offering it leaves its acts visible on the wire.
            let mut with = conf.replacen(
                "[public]",
                &format!(
                    "username map = {}\nserver smb encrypt = off\n[public]",
                    map.display()
                ),
                1,
            );
            for (name, sub) in [("ADMIN$", "admin"), ("C$", "c")] {
                let path = dir.join(sub);
                std::fs::create_dir_all(&path)?;
                with.push_str(&format!(
                    "[{name}]\npath = {}\nread only = no\nvalid users = root\n",
                    path.display()
                ));
            }
            std::fs::write(&conf_path, with)?;
            let mut add = std::process::Command::new("smbpasswd")
                .arg("-c")
                .arg(&conf_path)
                .args(["-s", "-a", "root"])
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .context("smbpasswd (install samba: cargo xtask setup)")?;
            use std::io::Write as _;
            add.stdin
                .take()
                .context("smbpasswd stdin")?
                .write_all(format!("{password}\n{password}\n").as_bytes())?;
            let out = add.wait_with_output()?;
            if !out.status.success() {
                bail!(
                    "smbpasswd -a root failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        } else {
            std::fs::write(&conf_path, conf)?;
        }
        let log = std::fs::File::create(dir.join("smbd.out"))?;
        let child = ns
            .command("smbd")
            .args(["-F", "--no-process-group", "--debug-stdout", "-s"])
            .arg(&conf_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting smbd (install samba: cargo xtask setup)")?;
        let mut me = Self {
            child,
            dir,
            password: admin.map(|(_, p)| p.to_owned()),
        };
        me.wait_listening(ns, addrs)?;
        Ok(me)
    }

    /// Makes a server started with [`Smbd::start_admin`] offer SMB 3
    /// encryption to the connections that follow (as Windows does), by
    /// rewriting its smb.conf and sending SIGHUP (smbd reloads it).
    pub fn offer_encryption(&self) -> Result<()> {
        let path = self.dir.join("smb.conf");
        let conf = std::fs::read_to_string(&path)?;
        if !conf.contains("server smb encrypt = off") {
            bail!("this smbd was not started with start_admin");
        }
        std::fs::write(
            &path,
            conf.replace("server smb encrypt = off", "server smb encrypt = default"),
        )?;
        // SAFETY: plain kill(2) on our child.
        if unsafe { libc::kill(self.child.id() as i32, libc::SIGHUP) } != 0 {
            bail!("SIGHUP to smbd: {}", std::io::Error::last_os_error());
        }
        Ok(())
    }

    fn wait_listening(&mut self, ns: &NetNs, addrs: &[IpAddr]) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let out = ns.exec("ss", &["-Hltn", "sport = :445"])?;
            let text = String::from_utf8_lossy(&out.stdout);
            if addrs.iter().all(|a| {
                let needle = match a {
                    IpAddr::V4(v4) => format!("{v4}:445"),
                    IpAddr::V6(v6) => format!("[{v6}]:445"),
                };
                text.contains(&needle)
            }) {
                return Ok(());
            }
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "smbd exited ({status}) before listening: {}",
                    std::fs::read_to_string(self.dir.join("smbd.out")).unwrap_or_default()
                );
            }
            if Instant::now() > deadline {
                bail!("smbd did not listen on {addrs:?} within 20 s; listening: {text}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// A DCE/RPC responder behind one named pipe of an [`Smbd`]
/// (`np_responder.py`); killed on drop.
pub struct PipeResponder {
    child: Child,
}

impl Smbd {
    /// Serves `\pipe\<name>` (a pipe Samba has no server for, e.g.
    /// `atsvc`) with `np_responder.py` run by `python` (one that imports
    /// impacket): smbd hands a client's open of the pipe to the socket
    /// `ncalrpc dir/np/<name>` before asking samba-dcerpcd. Every BIND is
    /// accepted and every call answered with a fault: the client's calls
    /// go on the wire and nothing runs.
    pub fn serve_pipe(&self, python: &str, name: &str) -> Result<PipeResponder> {
        let script = self.dir.join("np_responder.py");
        // Written once: rewriting it under a responder still reading it
        // would hand that one a cut script.
        if !script.exists() {
            std::fs::write(&script, include_str!("np_responder.py"))?;
        }
        let np = self.dir.join("ncalrpc").join("np");
        std::fs::create_dir_all(&np)?;
        let sock = np.join(name.to_ascii_lowercase());
        // samba-dcerpcd may listen there already (for a pipe it serves
        // itself): the responder replaces that socket, and is waited for.
        match std::fs::remove_file(&sock) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(e).with_context(|| format!("removing {}", sock.display()))
            }
            _ => {}
        }
        let log = std::fs::File::create(self.dir.join(format!("np-{name}.out")))?;
        let mut cmd = std::process::Command::new(python);
        if let Some(p) = &self.password {
            cmd.env("NP_RESPONDER_PASSWORD", p);
        }
        let child = cmd
            .arg(&script)
            .arg(&sock)
            .arg(name)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {python} np_responder.py"))?;
        let mut me = PipeResponder { child };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !sock.exists() {
            if let Some(status) = me.child.try_wait()? {
                bail!("np_responder.py for {name} exited: {status}");
            }
            if Instant::now() > deadline {
                bail!("np_responder.py did not listen on {}", sock.display());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(me)
    }
}

impl Drop for PipeResponder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Smbd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
