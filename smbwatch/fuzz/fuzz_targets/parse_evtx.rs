//! Fuzz the evtx parser: any input must give events, counted errors, or a
//! file-level error — never a panic — and the counts must add up.
#![no_main]

use libfuzzer_sys::fuzz_target;
use smbwatch::hostlog::{parse_bytes, Format};

fuzz_target!(|data: &[u8]| {
    if let Ok((events, s)) = parse_bytes("fuzz", data, Format::Evtx) {
        assert_eq!(s.parsed + s.skipped + s.bad, s.total);
        assert_eq!(events.len() as u64, s.parsed);
    }
});
