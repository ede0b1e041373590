//! The sensor a replay's alerts name: this machine, with the capture's
//! pcapng interface names (`if_name`) as the ingress interface names.
//!
//! Replay uses a capture interface's id + 1 as the ingress index (see
//! [`super::Replay`]), so interface id 0 named `eth1` becomes index 1 named
//! `eth1`. Names come from the interface descriptions before the first
//! packet (where capture tools write them); a later section's are not read.

use std::path::Path;

use super::capture::CaptureReader;
use crate::alert::sensor::Sensor;

/// This machine as the sensor, with the capture's interface names; a
/// capture that cannot be read (the replay itself reports why) or a
/// classic pcap gives no names.
pub fn of_capture(path: &Path) -> Sensor {
    let mut sensor = Sensor::local(&[]);
    let Ok(file) = std::fs::File::open(path) else {
        return sensor;
    };
    let Ok(mut reader) = CaptureReader::new(std::io::BufReader::new(file), None) else {
        return sensor;
    };
    // Reading the first packet reads every interface description before it.
    let _ = reader.next_record();
    for (id, name) in reader.interface_names().into_iter().enumerate() {
        if let (Some(name), Ok(id)) = (name, u32::try_from(id)) {
            sensor = sensor.with_interface(id + 1, name);
        }
    }
    sensor
}

#[cfg(test)]
mod tests {
    /// A capture that cannot be read names no interface (the replay itself
    /// reports why); the names of a readable one are the data plane's
    /// replay tests'.
    #[test]
    fn unreadable_captures_name_no_interface() {
        let missing = super::of_capture(std::path::Path::new("/nonexistent.pcapng"));
        assert!(missing.interfaces.is_empty());
    }
}
