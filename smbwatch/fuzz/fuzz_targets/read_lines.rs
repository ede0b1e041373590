//! Fuzz the bounded line reader that stdin and followed files go through:
//! any bytes give lines of at most `max_line` bytes without a newline, the
//! buffer never grows past `max_line`, and line numbers count up by one.
#![no_main]

use libfuzzer_sys::fuzz_target;
use smbwatch::daemon::inputs::lines::{AtEnd, Line, LineReader};

const MAX_LINE: usize = 64;

fuzz_target!(|data: &[u8]| {
    let mut reader = LineReader::new(MAX_LINE);
    // A small buffer so lines straddle refills.
    let mut src = std::io::BufReader::with_capacity(7, data);
    let mut expect = 1;
    while let Some(line) = reader.read(&mut src, AtEnd::Finish).unwrap() {
        assert_eq!(line.no(), expect);
        expect += 1;
        if let Line::Bytes { bytes, .. } = line {
            assert!(bytes.len() <= MAX_LINE);
            assert!(!bytes.contains(&b'\n'));
        }
        let _ = line.text("fuzz");
        assert!(reader.capacity() <= MAX_LINE);
    }
});
