//! `user.name` / `user.domain` from an account as Windows logs it.
//!
//! Host logs name an account `DOMAIN\user` (NetBIOS domain, e.g.
//! `THESHIRE\pgustavo`), `user@domain` (a UPN, e.g.
//! `pgustavo@theshire.local`) or bare. ECS wants the short name in
//! `user.name` and the domain in `user.domain`. The domain is written
//! upper-case, whatever the log said (Windows compares domains without
//! case; `theshire` and `THESHIRE` are one domain): one person is then one
//! `user.name` + `user.domain` pair per domain form. A NetBIOS domain and
//! its DNS name (`THESHIRE`, `THESHIRE.LOCAL`) stay distinct: mapping one
//! to the other needs the directory. The name keeps its case as logged.

/// An account split into short name and domain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Account<'a> {
    /// The short name (`pgustavo`, `WS01$`).
    pub name: &'a str,
    /// The domain, upper-cased, if the account named one.
    pub domain: Option<String>,
}

/// Splits `DOMAIN\user` or `user@domain`; anything else is a bare name.
/// An empty part on either side leaves the account whole.
pub fn split(account: &str) -> Account<'_> {
    let parts = account
        .split_once('\\')
        .map(|(d, n)| (n, d))
        .or_else(|| account.rsplit_once('@'));
    match parts {
        Some((name, domain)) if !name.is_empty() && !domain.is_empty() => Account {
            name,
            domain: Some(domain.to_uppercase()),
        },
        _ => Account {
            name: account,
            domain: None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn netbios_upn_and_bare_accounts() {
        for (raw, name, domain) in [
            (r"THESHIRE\pgustavo", "pgustavo", Some("THESHIRE")),
            (
                r"theshire.local\pgustavo",
                "pgustavo",
                Some("THESHIRE.LOCAL"),
            ),
            (
                "pgustavo@theshire.local",
                "pgustavo",
                Some("THESHIRE.LOCAL"),
            ),
            (r"NT AUTHORITY\SYSTEM", "SYSTEM", Some("NT AUTHORITY")),
            (r"THESHIRE\WORKSTATION5$", "WORKSTATION5$", Some("THESHIRE")),
            ("alice", "alice", None),
            (r"\alice", r"\alice", None),
            (r"CORP\", r"CORP\", None),
            ("a@", "a@", None),
        ] {
            let a = split(raw);
            assert_eq!((a.name, a.domain.as_deref()), (name, domain), "{raw}");
        }
    }
}
