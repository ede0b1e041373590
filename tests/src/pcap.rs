//! Classic pcap files written by the tests (little-endian, microseconds).

/// The file header of a classic little-endian microsecond pcap of `link`.
pub fn pcap_header(link: u32) -> Vec<u8> {
    let mut v = 0xa1b2_c3d4u32.to_le_bytes().to_vec();
    v.extend_from_slice(&2u16.to_le_bytes());
    v.extend_from_slice(&4u16.to_le_bytes());
    for x in [0u32, 0, 65535, link] {
        v.extend_from_slice(&x.to_le_bytes());
    }
    v
}

/// Appends one record taken at `sec` seconds and `usec` microseconds.
pub fn pcap_record(v: &mut Vec<u8>, sec: u32, usec: u32, data: &[u8]) {
    for x in [sec, usec, data.len() as u32, data.len() as u32] {
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.extend_from_slice(data);
}
