//! Week-long SMB captures for the baseline tests: an office whose
//! workstations use two file servers in office hours, one capture (pcap)
//! per day, and a day 8 that adds the anomalies a baseline must catch.
//!
//! Every connection is a real handshake on the wire (SYN, SYN-ACK, ACK),
//! so the captures go through the XDP program like any other. Addresses
//! are documentation ranges: the office in 192.0.2.0/24, the newcomer
//! 198.51.100.7. Day 1 is Monday 2026-11-02 (UTC).

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use smbwatch::packet::{tcp_flags, Segment};

use crate::pcap::{pcap_header, pcap_record};

/// Monday 2026-11-02 00:00:00 UTC.
pub const MONDAY: u32 = 1_793_577_600;

/// The two file servers.
pub const SERVERS: [IpAddr; 2] = [
    IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10)),
    IpAddr::V4(Ipv4Addr::new(192, 0, 2, 11)),
];

/// The never-seen client of day 8.
pub const NEWCOMER: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7));

/// Workstation `i` (0-based): 192.0.2.21 and up.
pub fn workstation(i: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(192, 0, 2, 21 + i))
}

/// Workstations in the office.
pub const WORKSTATIONS: u8 = 6;

/// The day-8 anomaly at 03:00: workstation 0 to workstation 1.
pub const NIGHT_EDGE: (u8, u8) = (0, 1);

/// Seconds since 1970 of day `day` (1-based), `hour`:`min`:`sec` UTC.
pub fn at(day: u32, hour: u32, min: u32, sec: u32) -> u32 {
    MONDAY + (day - 1) * 86_400 + hour * 3600 + min * 60 + sec
}

/// A capture being built: frames with their times, sorted when written.
#[derive(Default)]
pub struct Capture {
    frames: Vec<(u32, u32, Vec<u8>)>,
    sport: u16,
}

impl Capture {
    /// One SMB connection at `t`: SYN, SYN-ACK 1 ms later, ACK 2 ms later.
    pub fn connect(&mut self, t: u32, client: IpAddr, server: IpAddr) {
        self.sport = self.sport.wrapping_add(1).max(1024);
        let sport = self.sport;
        let syn = Segment::syn(client, server, sport, 445);
        let synack = Segment::new(server, client, 445, sport, tcp_flags::SYN | tcp_flags::ACK);
        let ack = Segment::new(client, server, sport, 445, tcp_flags::ACK);
        self.frames.push((t, 0, syn.frame()));
        self.frames.push((t, 1000, synack.frame()));
        self.frames.push((t, 2000, ack.frame()));
    }

    /// A SYN forged with `client`'s address at `t`: the server's SYN-ACK 1 ms
    /// later, and 2 ms later the real client's RST (its stack never sent the
    /// SYN): a handshake never confirmed.
    pub fn spoofed_syn(&mut self, t: u32, client: IpAddr, server: IpAddr) {
        self.sport = self.sport.wrapping_add(1).max(1024);
        let sport = self.sport;
        let syn = Segment::syn(client, server, sport, 445);
        let synack = Segment::new(server, client, 445, sport, tcp_flags::SYN | tcp_flags::ACK);
        let rst = Segment::new(client, server, sport, 445, tcp_flags::RST);
        self.frames.push((t, 0, syn.frame()));
        self.frames.push((t, 1000, synack.frame()));
        self.frames.push((t, 2000, rst.frame()));
    }

    /// Writes the capture (Ethernet) in time order.
    pub fn write(mut self, path: &Path) -> Result<()> {
        self.frames.sort_by_key(|(s, us, _)| (*s, *us));
        let mut v = pcap_header(1);
        for (s, us, f) in &self.frames {
            pcap_record(&mut v, *s, *us, f);
        }
        std::fs::write(path, v).with_context(|| format!("writing {}", path.display()))
    }

    /// Exchanges so far (connections and spoofed SYNs).
    pub fn connections(&self) -> usize {
        self.frames.len() / 3
    }
}

/// An ordinary day: on weekdays every workstation opens a share on the
/// first server at 08:xx and 10:xx and on the second at 13:xx and 16:xx
/// (the minute is its number); weekends (days 6, 7) are quiet.
pub fn office_day(c: &mut Capture, day: u32) {
    if matches!((day - 1) % 7, 5 | 6) {
        return;
    }
    for i in 0..WORKSTATIONS {
        let ws = workstation(i);
        let m = u32::from(i) * 5;
        c.connect(at(day, 8, m, 0), ws, SERVERS[0]);
        c.connect(at(day, 10, m, 0), ws, SERVERS[0]);
        c.connect(at(day, 13, m, 0), ws, SERVERS[1]);
        c.connect(at(day, 16, m, 0), ws, SERVERS[1]);
    }
}

/// Writes `day1.pcap` … `day7.pcap` (ordinary days) and `day8.pcap` (an
/// ordinary Monday plus workstation 0 → workstation 1 at 03:00 and
/// [`NEWCOMER`] → the first server at 10:30) into `dir`; returns the paths
/// in day order.
pub fn write_week(dir: &Path) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut out = Vec::new();
    for day in 1..=8 {
        let mut c = Capture::default();
        office_day(&mut c, day);
        if day == 8 {
            let (a, b) = NIGHT_EDGE;
            c.connect(at(8, 3, 0, 0), workstation(a), workstation(b));
            c.connect(at(8, 10, 30, 0), NEWCOMER, SERVERS[0]);
        }
        let p = dir.join(format!("day{day}.pcap"));
        c.write(&p)?;
        out.push(p);
    }
    Ok(out)
}

/// A capture of `clients` × `servers` distinct answered pairs in the
/// documentation ranges (at most 508 clients from 198.51.100.0/24 and
/// 203.0.113.0/24, at most 250 servers in 192.0.2.0/24): a long learn for
/// the crash test. One connection per second from `start`.
pub fn write_many_pairs(path: &Path, clients: u32, servers: u32, start: u32) -> Result<()> {
    let mut c = Capture::default();
    let mut t = start;
    for s in 0..servers {
        let server = IpAddr::V4(Ipv4Addr::new(192, 0, 2, (s % 250 + 1) as u8));
        for i in 0..clients {
            let n = i % 508;
            let client = if n < 254 {
                IpAddr::V4(Ipv4Addr::new(198, 51, 100, (n + 1) as u8))
            } else {
                IpAddr::V4(Ipv4Addr::new(203, 0, 113, (n - 253) as u8))
            };
            c.connect(t, client, server);
            t += 1;
        }
    }
    c.write(path)
}
