//! Every SMB capture in `../shared/data/pcap` replayed through the real XDP
//! program: the kernel samples each connection's payload, the pipeline
//! parses it (`Pipeline::smb_sample`), and what it saw is checked against
//! what Wireshark's dissector (`tshark`) reports for the same file.
//!
//! With the sample raised to cover the captures (255 segments of 4 KiB per
//! direction), the shares, pipes and files, users, RPC interfaces and
//! operations are the same sets. With the defaults (12 segments of 1 KiB)
//! what is seen is a subset, and a connection that showed less says so
//! (an `smb_unseen` observation: the sample ended or was cut).

use std::{
    collections::HashMap,
    net::SocketAddr,
    path::{Path, PathBuf},
};

use chrono::{DateTime, Utc};
use integration_tests::require_root;
use smbwatch::{
    dataplane::{LoadOptions, SampleOptions},
    event::GatewayEvent,
    pipeline::{Pipeline, PipelineConfig},
    replay::{Progress, Replay, ReplayOptions, ReplaySink},
};
use smbwatch_core::smb::{Observation, SmbEvent, SmbSample, Unseen};

#[path = "../../smbwatch-smb/tests/tshark/mod.rs"]
mod tshark;
use tshark::{oracle, skip, which, Seen};

const PCAP_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/data/pcap");

/// The SMB captures (the shared directory also holds a plain port scan).
const CAPTURES: &[&str] = &[
    "eternalblue-success-unpatched-win7.pcap",
    "otrf_covenant_copy_smb_CreateRequest_2020-09-22145302.cap",
    "otrf_empire_smbexec_dcerpc_smb_svcctl_WORKSTATION5_2020-09-20025716.cap",
    "suricata-verify_smb2-peter.pcap",
];

/// The pipeline's SMB events of a replay.
struct Collect {
    pipeline: Pipeline,
    events: Vec<SmbEvent>,
    samples: u64,
    /// Samples per connection and direction.
    per_flow: HashMap<(SocketAddr, SocketAddr, bool), u32>,
}

impl ReplaySink for Collect {
    fn event(&mut self, ev: &GatewayEvent) {
        self.pipeline.gateway_event(ev);
    }

    fn smb_sample(&mut self, sample: &SmbSample<'_>) {
        self.samples += 1;
        let to_server = sample.direction == smbwatch_core::smb::Direction::ToServer;
        *self
            .per_flow
            .entry((sample.client, sample.server, to_server))
            .or_default() += 1;
        self.events.extend(self.pipeline.smb_sample(sample).events);
    }

    fn smb_finish(&mut self, _end: DateTime<Utc>) {
        let out = self.pipeline.smb_flush();
        self.events.extend(out.events);
    }
}

/// What a replay gave.
struct Replayed {
    events: Vec<SmbEvent>,
    samples: u64,
    /// Some connection's direction was sampled up to the segment cap: the
    /// sample ended there.
    capped: bool,
}

/// Replays `path` with `sampling`.
fn replay(path: &Path, sampling: SampleOptions) -> Replayed {
    let cap = sampling.segments;
    let opts = ReplayOptions {
        progress: Progress::Never,
        load: LoadOptions {
            sampling,
            ..LoadOptions::default()
        },
    };
    let mut sink = Collect {
        pipeline: Pipeline::new(PipelineConfig::default()),
        events: Vec::new(),
        samples: 0,
        per_flow: HashMap::new(),
    };
    let summary = Replay::open(path, &opts)
        .expect("open capture")
        .run(&mut sink)
        .expect("replay");
    assert_eq!(summary.bad_samples, 0, "every sample record decodes");
    assert_eq!(summary.smb_samples, sink.samples);
    Replayed {
        capped: sink.per_flow.values().any(|&n| n >= cap),
        events: sink.events,
        samples: sink.samples,
    }
}

/// The replay saw what tshark saw; where less, only what the sample did
/// not reach, and that is said: a hole in a stream, or the sample's end.
fn check(name: &str, r: &Replayed, theirs: &Seen) -> Seen {
    let ours = seen(&r.events);
    assert!(
        subset(&ours, theirs),
        "{name}: the sample saw something tshark did not: {ours:#?}"
    );
    if &ours != theirs {
        let holes = r.events.iter().any(|e| {
            matches!(
                e.observation,
                Observation::Unseen {
                    what: Unseen::Stream { .. }
                }
            )
        });
        assert!(
            holes || r.capped,
            "{name}: less than tshark saw, and neither a hole nor the sample's end says why"
        );
    }
    ours
}

/// What the events show, as the oracle's sets.
fn seen(events: &[SmbEvent]) -> Seen {
    let mut s = Seen::default();
    for e in events {
        match &e.observation {
            Observation::Smb1 { .. } => s.smb1 = true,
            Observation::Exploit { sign } => {
                s.exploits.insert(sign.name().to_owned());
            }
            Observation::Negotiate { dialect } => {
                s.dialects.insert(dialect.0);
            }
            Observation::TreeConnect { path, .. } => {
                s.shares.insert(path.clone());
            }
            Observation::Create { name, .. } => {
                s.created.insert(name.clone());
            }
            Observation::Write { name: Some(n), .. } => {
                s.written.insert(n.clone());
            }
            Observation::Auth { user, .. } => {
                s.users.insert(user.clone());
            }
            Observation::RpcBind { interface } => {
                s.binds.insert(interface.uuid.to_string());
            }
            Observation::RpcCall {
                interface: Some(i),
                opnum,
                ..
            } => {
                s.calls.insert((i.uuid.to_string(), *opnum));
            }
            _ => {}
        }
    }
    s
}

/// `a` within `b`, field by field.
fn subset(a: &Seen, b: &Seen) -> bool {
    (!a.smb1 || b.smb1)
        && a.dialects.is_subset(&b.dialects)
        && a.shares.is_subset(&b.shares)
        && a.created.is_subset(&b.created)
        && a.written.is_subset(&b.written)
        && a.users.is_subset(&b.users)
        && a.binds.is_subset(&b.binds)
        && a.calls.is_subset(&b.calls)
        && a.exploits.is_subset(&b.exploits)
}

/// The captures present, or none (said, and a failure under CI=true).
fn captures() -> Vec<(&'static str, PathBuf)> {
    if which("tshark").is_none() {
        skip("tshark not installed (cargo xtask setup installs it)");
        return Vec::new();
    }
    let mut out = Vec::new();
    for name in CAPTURES {
        let path = PathBuf::from(PCAP_DIR).join(name);
        if path.exists() {
            out.push((*name, path));
        } else {
            skip(&format!(
                "{} not found (the shared test captures are not part of the repository)",
                path.display()
            ));
        }
    }
    out
}

#[test]
fn replayed_samples_match_wiresharks_dissector() {
    require_root();
    // As much as the sampler takes: each of the three attack captures is
    // then seen whole; the file-copy capture (smb2-peter) runs past 255
    // segments.
    let whole = SampleOptions {
        segments: 255,
        bytes: 4096,
        ..SampleOptions::default()
    };
    for (name, path) in captures() {
        let theirs = oracle(&path);
        let r = replay(&path, whole.clone());
        assert!(r.samples > 0, "{name}: no samples");
        let ours = check(name, &r, &theirs);
        eprintln!("{name}: {} samples, {ours:#?}", r.samples);
        if !r.capped {
            assert_eq!(
                ours, theirs,
                "{name}: replay (left) and tshark (right) differ"
            );
        }
    }
}

#[test]
fn the_default_sample_sees_a_subset_and_says_what_it_missed() {
    require_root();
    for (name, path) in captures() {
        let theirs = oracle(&path);
        let r = replay(&path, SampleOptions::default());
        let ours = check(name, &r, &theirs);
        eprintln!("{name}: {} samples (defaults), {ours:#?}", r.samples);
    }
}

#[test]
fn the_default_sample_still_names_the_lateral_moves() {
    require_root();
    for (name, path) in captures() {
        let s = seen(&replay(&path, SampleOptions::default()).events);
        match name {
            n if n.starts_with("otrf_empire") => {
                assert!(s.users.contains("pgustavo"), "{s:#?}");
                assert!(s.shares.contains("\\\\WORKSTATION6.theshire.local\\IPC$"));
                assert!(s.created.contains("svcctl"));
            }
            n if n.starts_with("eternalblue") => {
                assert!(s.smb1);
                assert!(s.shares.contains("\\\\192.168.198.203\\IPC$"));
                // The exploit and the implant's ping are early in their
                // connections; the implant's answer comes after the
                // exploit's 40 KiB, past the default sample.
                assert!(s.exploits.contains("eternalblue"), "{s:#?}");
                assert!(s.exploits.contains("doublepulsar_command"), "{s:#?}");
            }
            n if n.starts_with("otrf_covenant") => {
                assert!(s.shares.contains("\\\\WORKSTATION6\\C$"), "{s:#?}");
            }
            _ => {}
        }
    }
}
