//! Helpers for the unit tests of smbwatch-core and the crates above it.

/// A test's input (a tool, a data set) is missing: under `CI=true` that is
/// a failure, since CI installs everything and must not pass by skipping;
/// elsewhere the test says what it skipped and goes on without it. The
/// integration tests have the same rule (`integration_tests::skip`).
pub fn skip(what: &str) {
    if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
        panic!("{what} (CI=true: a missing test input fails the run instead of skipping)");
    }
    eprintln!("SKIP: {what}");
}
