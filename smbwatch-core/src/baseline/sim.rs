//! A simulated enterprise network: two weeks of SMB as the gateway reports
//! it (`NewPair`/`Active`, `Accepted`, `Confirmed` once per pair and hourly
//! epoch, with the frame's source MAC where the router is the first hop)
//! and the logons host logs give (workstation name and address), plus the
//! anomalies of issue 18's Measure section injected in week 2.
//!
//! Seeded and parameterised (sizes, DHCP churn, schedules, a new file
//! server, DFS referrals, SCCM, scanner, backup, jump host, early and late
//! days, weekends): the evaluation ([`super::eval`]) learns week 1 and
//! scores week 2. Test and bench support only.

use std::net::{IpAddr, Ipv4Addr};

use chrono::{DateTime, Utc};

use crate::event::{GatewayEvent, GatewayEventKind, MacAddr};

/// Seconds in a day.
pub const DAY: i64 = 86_400;
const HOUR: i64 = 3600;

/// Monday 2026-11-02 00:00 UTC: day 0 of the simulation.
pub const MONDAY: i64 = 1_793_577_600;

/// What the network looks like.
#[derive(Clone, Debug)]
pub struct NetParams {
    /// Seeds every random choice.
    pub seed: u64,
    /// Workstations.
    pub workstations: u32,
    /// Domain controllers (DFS referrals send clients to any of them).
    pub dcs: u32,
    /// File servers from day 0.
    pub file_servers: u32,
    /// Application servers.
    pub app_servers: u32,
    /// Workstations moved to another address per day (freed addresses are
    /// reused by later moves).
    pub dhcp_moves_per_day: u32,
    /// Share of workstations on networks where the router is their first
    /// hop (their frames carry their own MAC); the others sit behind
    /// another router (its MAC on every frame).
    pub first_hop_share: f64,
    /// Share of the other workstations whose logons reach smbwatch (4624
    /// with `WorkstationName` and `IpAddress`).
    pub logs_share: f64,
    /// Day (0-based) from which a new file server takes a share of clients.
    pub new_file_server_day: Option<u32>,
    /// Chance a workstation user logs on well early or stays late on a day.
    pub early_late: f64,
    /// Chance a workstation is used on a weekend day.
    pub weekend: f64,
    /// Chance a logon is referred (DFS) to another domain controller.
    pub dfs_referral: f64,
}

impl NetParams {
    /// The network of issue 18: 500 workstations, 4 DCs, 2 file servers,
    /// 30 application servers, 10 DHCP moves a day, a new file server from
    /// day 9 (index 8).
    pub fn enterprise(seed: u64) -> Self {
        Self {
            seed,
            workstations: 500,
            dcs: 4,
            file_servers: 2,
            app_servers: 30,
            dhcp_moves_per_day: 10,
            first_hop_share: 0.7,
            logs_share: 0.7,
            new_file_server_day: Some(8),
            early_late: 0.05,
            weekend: 0.03,
            dfs_referral: 0.05,
        }
    }
}

/// One input of the simulation.
#[derive(Clone, Debug)]
pub enum SimEvent {
    /// What the gateway reports.
    Gateway(GatewayEvent),
    /// A logon on a server naming the client workstation and its address
    /// (4624 `WorkstationName`, `IpAddress`).
    Logon {
        /// When.
        ts: DateTime<Utc>,
        /// The workstation's address.
        ip: IpAddr,
        /// Its name.
        name: String,
    },
}

impl SimEvent {
    /// The event's time.
    pub fn ts(&self) -> DateTime<Utc> {
        match self {
            Self::Gateway(e) => e.ts,
            Self::Logon { ts, .. } => *ts,
        }
    }
}

/// An injected anomaly: what the baseline must raise at its first connection.
#[derive(Clone, Debug)]
pub struct Anomaly {
    /// What it is.
    pub name: &'static str,
    /// Its source.
    pub src: IpAddr,
    /// Its first connection (Unix seconds) and destination.
    pub first: (i64, IpAddr),
    /// Alerts of `src` from `first` for this long belong to it.
    pub span: i64,
}

/// Two weeks of a simulated network.
pub struct Sim {
    /// Events in time order.
    pub events: Vec<SimEvent>,
    /// The anomalies injected in week 2.
    pub anomalies: Vec<Anomaly>,
    /// The vulnerability scanner (to allowlist).
    pub scanner: IpAddr,
}

/// SplitMix64: small, seeded, good enough for a simulation.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn chance(&mut self, p: f64) -> bool {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }
}

struct Ws {
    name: String,
    addr: u32,
    mac: Option<MacAddr>,
    logs: bool,
    start: i64,
    end: i64,
    dc: u32,
    fs: u32,
    apps: Vec<u32>,
    new_fs: bool,
}

fn v4(a: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(a))
}

const SERVERS: u32 = 0x0a01_0000; // 10.1.0.0/24
const APPS: u32 = 0x0a01_0100; // 10.1.1.0/24
const HQ: u32 = 0x0a0a_0000; // 10.10.0.0/16: the router is the first hop
const BRANCH: u32 = 0x0a14_0000; // 10.20.0.0/16: behind another router
const BRANCH_ROUTER: MacAddr = MacAddr([0x00, 0x1b, 0x21, 0xff, 0, 1]);

fn dc(i: u32) -> u32 {
    SERVERS + 1 + i
}
fn fs(i: u32) -> u32 {
    SERVERS + 10 + i
}
const SCCM: u32 = SERVERS + 20;
const SCANNER: u32 = SERVERS + 30;
const BACKUP: u32 = SERVERS + 31;
const JUMP: u32 = SERVERS + 32;

fn server_mac(a: u32) -> MacAddr {
    let b = a.to_be_bytes();
    MacAddr([0x00, 0x50, 0x56, b[1], b[2], b[3]])
}

/// Builds the events of `days` days (14: two weeks) for `p`.
pub fn simulate(p: &NetParams, days: u32) -> Sim {
    let mut rng = Rng(p.seed ^ 0x5eed_0f18);
    let first_hop = (f64::from(p.workstations) * p.first_hop_share).round() as u32;
    let mut ws: Vec<Ws> = (0..p.workstations)
        .map(|i| {
            let hq = i < first_hop;
            let base = if hq { HQ } else { BRANCH };
            let idx = if hq { i } else { i - first_hop };
            let start = 7 * HOUR + rng.below(3 * 3600) as i64;
            let napps = 1 + rng.below(3) as usize;
            let apps = (0..napps)
                .map(|_| {
                    // Skewed: a few applications serve most users.
                    let r = rng.below(u64::from(p.app_servers)) as u32;
                    r * r / p.app_servers.max(1)
                })
                .collect();
            Ws {
                name: format!("WS{i:04}"),
                addr: base + 256 + idx,
                mac: hq.then(|| {
                    let b = i.to_be_bytes();
                    MacAddr([0x3c, 0x52, 0x82, b[1], b[2], b[3]])
                }),
                logs: !hq && rng.chance(p.logs_share),
                start,
                end: start + 8 * HOUR + rng.below(2 * 3600) as i64,
                dc: rng.below(u64::from(p.dcs)) as u32,
                fs: rng.below(u64::from(p.file_servers)) as u32,
                apps,
                new_fs: rng.chance(0.4),
            }
        })
        .collect();
    // Free addresses per site (never used yet, then those freed by moves).
    let mut free_hq: std::collections::VecDeque<u32> =
        (0..40).map(|i| HQ + 256 + p.workstations + i).collect();
    let mut free_br: std::collections::VecDeque<u32> =
        (0..40).map(|i| BRANCH + 256 + p.workstations + i).collect();

    let mut out: Vec<SimEvent> = Vec::new();
    let mut seen: std::collections::HashSet<(u32, u32)> = Default::default();
    // One use of a pair in an epoch: the kernel's reports for it.
    let mut session =
        |out: &mut Vec<SimEvent>, t: i64, src: u32, dst: u32, mac: Option<MacAddr>| {
            let kind = if seen.insert((src, dst)) {
                GatewayEventKind::NewPair
            } else {
                GatewayEventKind::Active
            };
            let ts = DateTime::from_timestamp(t, 0).expect("valid time");
            let sport = 49152 + (t % 16000) as u16;
            let mut syn = GatewayEvent::new(ts, kind, v4(src), v4(dst), sport, 445);
            syn.src_mac = mac;
            let mut ack =
                GatewayEvent::new(ts, GatewayEventKind::Accepted, v4(src), v4(dst), sport, 445);
            ack.src_mac = Some(server_mac(dst));
            let mut conf = syn.clone();
            conf.kind = GatewayEventKind::Confirmed;
            out.push(SimEvent::Gateway(syn));
            out.push(SimEvent::Gateway(ack));
            out.push(SimEvent::Gateway(conf));
        };
    let all_servers: Vec<u32> = (0..p.dcs)
        .map(dc)
        .chain((0..p.file_servers).map(fs))
        .chain((0..p.app_servers).map(|i| APPS + 1 + i))
        .chain([SCCM])
        .collect();
    let mut anomalies = Vec::new();

    for day in 0..days {
        let t0 = MONDAY + i64::from(day) * DAY;
        let weekday = day % 7;
        let weekend = weekday >= 5;
        // DHCP: some workstations come back on another address today.
        for _ in 0..p.dhcp_moves_per_day {
            let i = rng.below(u64::from(p.workstations)) as usize;
            let w = &mut ws[i];
            let pool = if w.mac.is_some() {
                &mut free_hq
            } else {
                &mut free_br
            };
            if let Some(a) = pool.pop_front() {
                pool.push_back(w.addr);
                w.addr = a;
            }
        }
        for w in ws.iter() {
            let mac = w.mac.or(if w.addr & 0xffff_0000 == BRANCH {
                Some(BRANCH_ROUTER)
            } else {
                None
            });
            let (start, end) = if weekend {
                if !rng.chance(p.weekend) {
                    continue;
                }
                let s = (9 + rng.below(6) as i64) * HOUR;
                (s, s + (1 + rng.below(3) as i64) * HOUR)
            } else {
                if rng.chance(0.08) {
                    continue; // away today
                }
                let mut s = w.start + (rng.below(3600) as i64 - 1800);
                let mut e = w.end + (rng.below(3600) as i64 - 1800);
                if rng.chance(p.early_late) {
                    s -= 2 * HOUR;
                }
                if rng.chance(p.early_late) {
                    e += 2 * HOUR;
                }
                (s, e)
            };
            let t = t0 + start;
            if w.logs {
                out.push(SimEvent::Logon {
                    ts: DateTime::from_timestamp(t, 0).expect("valid time"),
                    ip: v4(w.addr),
                    name: w.name.clone(),
                });
            }
            let logon_dc = if rng.chance(p.dfs_referral) {
                rng.below(u64::from(p.dcs)) as u32
            } else {
                w.dc
            };
            session(&mut out, t + 1, w.addr, dc(logon_dc), mac);
            // SCCM client policy: a package pull some days.
            if rng.chance(0.3) {
                let at = t + rng.below((end - start).max(1) as u64) as i64;
                session(&mut out, at, w.addr, SCCM, mac);
            }
            // Hourly epochs while the user works.
            let mut h = (t / HOUR + 1) * HOUR;
            while h < t0 + end {
                let m = h + rng.below(3000) as i64;
                if rng.chance(0.7) {
                    let f = match p.new_file_server_day {
                        Some(d) if day >= d && w.new_fs => fs(p.file_servers),
                        _ => fs(w.fs),
                    };
                    session(&mut out, m, w.addr, f, mac);
                }
                for &a in &w.apps {
                    if rng.chance(0.3) {
                        session(&mut out, m + 20, w.addr, APPS + 1 + a, mac);
                    }
                }
                if rng.chance(0.3) {
                    session(&mut out, m + 40, w.addr, dc(w.dc), mac);
                }
                h += HOUR;
            }
        }
        let sm = |a: u32| Some(server_mac(a));
        // SCCM pushes to 15 % of workstations at midday on weekdays.
        if !weekend {
            for w in ws.iter() {
                if rng.chance(0.15) {
                    let at = t0 + 12 * HOUR + rng.below(2 * 3600) as i64;
                    session(&mut out, at, SCCM, w.addr, sm(SCCM));
                }
            }
            // The jump host: admins on a few servers in office hours.
            for _ in 0..3 + rng.below(6) {
                let s = all_servers[rng.below(all_servers.len() as u64) as usize];
                let at = t0 + 9 * HOUR + rng.below(8 * 3600) as i64;
                session(&mut out, at, JUMP, s, sm(JUMP));
            }
        }
        // Backup every night, 01:00-04:00, every server.
        for (k, &s) in all_servers.iter().enumerate() {
            let at = t0 + HOUR + (k as i64 * 3 * 3600) / all_servers.len() as i64;
            session(&mut out, at, BACKUP, s, sm(BACKUP));
        }
        // The vulnerability scanner: Wednesday evenings, everything.
        if weekday == 2 {
            for (k, w) in ws.iter().enumerate() {
                let at = t0 + 20 * HOUR + k as i64 * 10;
                session(&mut out, at, SCANNER, w.addr, sm(SCANNER));
            }
        }
        // Week 2's anomalies.
        if day >= 7 {
            let pick = |rng: &mut Rng| rng.below(u64::from(p.workstations)) as usize;
            match weekday {
                1 => {
                    // A workstation reaching 15 other workstations.
                    let a = pick(&mut rng);
                    let at = t0 + 14 * HOUR + 600;
                    let mut first = None;
                    for k in 0..15 {
                        let mut b = pick(&mut rng);
                        if b == a {
                            b = (b + 1) % ws.len();
                        }
                        let t = at + k * 20;
                        first.get_or_insert((t, v4(ws[b].addr)));
                        let mac = ws[a]
                            .mac
                            .or(Some(BRANCH_ROUTER).filter(|_| ws[a].addr & 0xffff_0000 == BRANCH));
                        session(&mut out, t, ws[a].addr, ws[b].addr, mac);
                    }
                    anomalies.push(Anomaly {
                        name: "workstation reaching 15 workstations",
                        src: v4(ws[a].addr),
                        first: first.expect("15 targets"),
                        span: 3600,
                    });
                }
                2 => {
                    // A file server acting as an SMB client at 03:00.
                    let at = t0 + 3 * HOUR;
                    let dst = ws[pick(&mut rng)].addr;
                    session(&mut out, at, fs(0), dst, sm(fs(0)));
                    session(&mut out, at + 30, fs(0), dc(0), sm(fs(0)));
                    anomalies.push(Anomaly {
                        name: "file server as SMB client at 03:00",
                        src: v4(fs(0)),
                        first: (at, v4(dst)),
                        span: 3600,
                    });
                }
                3 => {
                    // SCCM reaching workstations at 03:10.
                    let at = t0 + 3 * HOUR + 600;
                    let mut first = None;
                    for k in 0..5 {
                        let dst = ws[pick(&mut rng)].addr;
                        first.get_or_insert((at + k * 5, v4(dst)));
                        session(&mut out, at + k * 5, SCCM, dst, sm(SCCM));
                    }
                    anomalies.push(Anomaly {
                        name: "SCCM reaching workstations at 03:10",
                        src: v4(SCCM),
                        first: first.expect("5 targets"),
                        span: 3600,
                    });
                }
                4 => {
                    // A workstation on its own file server at 03:30.
                    let w = &ws[pick(&mut rng)];
                    let at = t0 + 3 * HOUR + 1800;
                    let mac = w
                        .mac
                        .or(Some(BRANCH_ROUTER).filter(|_| w.addr & 0xffff_0000 == BRANCH));
                    let f = match p.new_file_server_day {
                        Some(d) if day >= d && w.new_fs => fs(p.file_servers),
                        _ => fs(w.fs),
                    };
                    session(&mut out, at, w.addr, f, mac);
                    anomalies.push(Anomaly {
                        name: "workstation on its own file server at 03:30",
                        src: v4(w.addr),
                        first: (at, v4(f)),
                        span: 3600,
                    });
                }
                _ => {}
            }
        }
    }
    // Stable: a session's three reports keep their order.
    out.sort_by_key(SimEvent::ts);
    Sim {
        events: out,
        anomalies,
        scanner: v4(SCANNER),
    }
}
