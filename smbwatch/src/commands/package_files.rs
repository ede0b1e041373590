//! `smbwatch package-files DIR` (hidden): what the Debian package ships
//! besides the binary, generated from the definitions so they cannot drift:
//! smbwatch(8) and one page per subcommand from the command line (clap),
//! smbwatch.toml(5) and the conffile from the documented configuration.

use std::path::Path;

use anyhow::{Context as _, Result};

/// Writes `smbwatch.8`, `smbwatch-<sub>.8`, `smbwatch.toml.5` and
/// `smbwatch.toml` (the conffile) into `dir`.
pub fn write(cli: clap::Command, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let put = |name: &str, bytes: &[u8]| {
        let path = dir.join(name);
        std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))
    };
    let cli = cli.version(env!("CARGO_PKG_VERSION"));
    let mut pages = vec![("smbwatch.8".to_owned(), cli.clone())];
    for sub in cli.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("smbwatch-{}", sub.get_name());
        pages.push((
            format!("{name}.8"),
            sub.clone().name(name).version(env!("CARGO_PKG_VERSION")),
        ));
    }
    for (file, cmd) in pages {
        let mut buf = Vec::new();
        clap_mangen::Man::new(cmd)
            .section("8")
            .manual("System Administration")
            .render(&mut buf)?;
        put(&file, &buf)?;
    }
    let version = env!("CARGO_PKG_VERSION");
    put(
        "smbwatch.toml.5",
        smbwatch::config::docs::man5(version).as_bytes(),
    )?;
    put(
        "smbwatch.toml",
        smbwatch::config::docs::conffile().as_bytes(),
    )?;
    println!("{}", dir.display());
    Ok(())
}
