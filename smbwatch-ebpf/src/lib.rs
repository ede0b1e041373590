#![no_std]
// Exists so smbwatch can list this crate as a build-dependency (see smbwatch/Cargo.toml).
