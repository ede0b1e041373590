//! Fuzz the line API the TCP listener and the file follower use (JSON of
//! any flavour or one XML event), and format detection on whole inputs.
#![no_main]

use libfuzzer_sys::fuzz_target;
use smbwatch::hostlog::{detect_format, parse_bytes, parse_line, Format};

fuzz_target!(|data: &[u8]| {
    let _ = detect_format(data);
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = parse_line(s);
    }
    if let Ok((events, s)) = parse_bytes("fuzz", data, Format::Auto) {
        assert_eq!(s.parsed + s.skipped + s.bad, s.total);
        assert_eq!(events.len() as u64, s.parsed);
    }
});
