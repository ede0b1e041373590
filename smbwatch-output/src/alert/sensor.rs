//! The sensor an alert comes from (`observer.*`): this machine's name and
//! the names of the interfaces smbwatch watches, resolved once at start-up
//! (an interface index means nothing off the box).

use std::collections::BTreeMap;

/// `observer.type`: smbwatch is a network intrusion detection sensor.
pub const OBSERVER_TYPE: &str = "ids";
/// `observer.vendor` and `observer.product`.
pub const PRODUCT: &str = "smbwatch";
/// `observer.version`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// What the alert document says about the sensor. Resolved once (see
/// [`Sensor::local`]); the document itself does no I/O.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Sensor {
    /// `observer.hostname`, lower-cased.
    pub hostname: Option<String>,
    /// Interface index to name (`observer.ingress.interface.name`).
    pub interfaces: BTreeMap<u32, String>,
}

impl Sensor {
    /// A sensor with a host name and no interface names (lower-cased, as
    /// `host.name`).
    pub fn named(hostname: Option<&str>) -> Self {
        Self {
            hostname: hostname.map(str::to_lowercase),
            interfaces: BTreeMap::new(),
        }
    }

    /// This machine: its host name (`gethostname(2)`) and the index of
    /// each named interface (`if_nametoindex(3)`; a name that does not
    /// resolve is left out).
    pub fn local(ifaces: &[String]) -> Self {
        let mut s = Self::named(system_hostname().as_deref());
        for name in ifaces {
            if let Some(i) = if_index(name) {
                s.interfaces.insert(i, name.clone());
            }
        }
        s
    }

    /// With an interface index named (replay: the capture's interfaces).
    pub fn with_interface(mut self, index: u32, name: impl Into<String>) -> Self {
        self.interfaces.insert(index, name.into());
        self
    }
}

fn if_index(name: &str) -> Option<u32> {
    let c = std::ffi::CString::new(name).ok()?;
    // SAFETY: a valid NUL-terminated string; the call only reads it.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (i != 0).then_some(i)
}

/// The host name of this machine (`gethostname(2)`), `None` if unavailable.
pub fn system_hostname() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname writes at most
    // that many bytes.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return None;
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    let name = String::from_utf8_lossy(&buf[..end]).into_owned();
    (!name.is_empty()).then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_resolves_and_names_are_lowercased() {
        let s = Sensor::local(&["lo".into(), "no-such-if0".into()]);
        assert_eq!(s.interfaces.values().collect::<Vec<_>>(), ["lo"]);
        assert_eq!(
            Sensor::named(Some("GW1.Example")).hostname.as_deref(),
            Some("gw1.example")
        );
    }
}
