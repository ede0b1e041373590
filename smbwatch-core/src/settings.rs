//! The one shape of a settings problem, shared by every section's check
//! (the core's, the outputs', the data plane's and the application's), so
//! the configuration turns each into its `file:line:column: key: why`
//! error in one place.

/// One bad setting: the dotted key as written in the configuration file
/// (`smb.enum_burst`, `process_classes.lolbins[2]`) and why it is refused
/// (starting with the value when it helps: `0: must be at least 1`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {why}")]
pub struct Invalid {
    /// Dotted key, section included.
    pub key: String,
    /// What is wrong with the value.
    pub why: String,
}

impl Invalid {
    /// The problem `why` with `key`.
    pub fn new(key: impl Into<String>, why: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            why: why.into(),
        }
    }
}

/// `Err` of [`Invalid::new`]: the shorthand of a check's refusals
/// (`invalid(key, why)?`).
pub fn invalid(key: impl Into<String>, why: impl Into<String>) -> Result<(), Invalid> {
    Err(Invalid::new(key, why))
}
