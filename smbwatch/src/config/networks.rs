//! What is wrong with a network value the `ipnet` parser refused: it says
//! only "invalid IP address syntax", whatever the mistake.

use std::net::IpAddr;

/// The parser's message for any address or prefix it refuses.
pub(super) const IPNET_MESSAGE: &str = "invalid IP address syntax";

/// Why `value` (the text between the quotes) is not an address or a
/// prefix, with the accepted forms.
pub(super) fn explain(value: &str) -> String {
    const FORMS: &str =
        "expected an address or a prefix, e.g. \"192.0.2.7\", \"192.0.2.0/24\", \"2001:db8::/32\"";
    let Some((addr, len)) = value.split_once('/') else {
        return format!("\"{value}\" is not an IP address; {FORMS}");
    };
    let Ok(addr) = addr.trim().parse::<IpAddr>() else {
        return format!("\"{addr}\" in \"{value}\" is not an IP address; {FORMS}");
    };
    let bits = if addr.is_ipv4() { 32 } else { 128 };
    match len.trim().parse::<u32>() {
        Ok(n) if n > bits => format!(
            "prefix length {n} in \"{value}\" is longer than an {} address ({bits} bits)",
            if addr.is_ipv4() { "IPv4" } else { "IPv6" }
        ),
        _ => format!("\"{len}\" in \"{value}\" is not a prefix length (0 to {bits}); {FORMS}"),
    }
}

/// The quoted string at `offset` (where the TOML error points), if any.
pub(super) fn quoted_at(text: &str, offset: usize) -> Option<&str> {
    let rest = text.get(offset..)?.strip_prefix('"')?;
    rest.split_once('"').map(|(v, _)| v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_mistake_is_named() {
        assert_eq!(
            explain("10.0.0.0/33"),
            "prefix length 33 in \"10.0.0.0/33\" is longer than an IPv4 address (32 bits)"
        );
        assert!(explain("2001:db8::/129").contains("longer than an IPv6 address (128 bits)"));
        assert!(explain("10.0.0/8").starts_with("\"10.0.0\" in \"10.0.0/8\" is not an IP address"));
        assert!(explain("10.0.0.0/x")
            .starts_with("\"x\" in \"10.0.0.0/x\" is not a prefix length (0 to 32)"));
        assert!(explain("gateway").starts_with("\"gateway\" is not an IP address; expected"));
    }

    #[test]
    fn the_quoted_value_is_found_at_the_error() {
        let text = "allow = [\"10.0.0.0/33\"]";
        assert_eq!(quoted_at(text, 9), Some("10.0.0.0/33"));
        assert_eq!(quoted_at(text, 0), None);
        assert_eq!(quoted_at(text, 999), None);
    }
}
