//! The XDP program loads under every configuration an operator can set.
//!
//! Settings are `.rodata` constants the verifier specialises on, so each
//! configuration is a verification of its own: a constant that prunes the
//! verifier's states differently can push the program past the kernel's
//! million processed instructions (sampling off once did). This loads a
//! covering set (each operator-settable extreme at least once, plus the
//! combinations that look worst) and prints the verifier's instruction
//! count of each (`--nocapture`), so a configuration close to the limit
//! shows before it fails.

use std::time::Duration;

use aya::programs::ProgramError;
use integration_tests::require_root;
use smbwatch::dataplane::{
    AnswerCheck, Dataplane, DataplaneError, LoadOptions, SampleOptions, MAX_ACTIVITY_EPOCH,
    MIN_ACTIVITY_EPOCH,
};
use smbwatch_common::{
    sample::{SAMPLE_MAX_BYTES, SAMPLE_MAX_SEGMENTS},
    MAX_PORTS,
};

/// The kernel's limit on instructions processed while verifying.
const VERIFIER_LIMIT: u32 = 1_000_000;

/// The largest tables the configuration accepts (`dataplane.max_sources`,
/// `dataplane.max_pairs`, `dataplane.sampling.flows`; config/validate.rs).
const MAX_SOURCES: u32 = 1 << 22;
const MAX_PAIRS: u32 = 1 << 24;
const MAX_FLOWS: u32 = 1 << 24;

/// The most ports the program holds, all distinct.
fn all_ports() -> Vec<u16> {
    (0..MAX_PORTS as u16).map(|i| 445 + 1000 * i).collect()
}

fn sampling_max() -> SampleOptions {
    SampleOptions {
        segments: SAMPLE_MAX_SEGMENTS,
        bytes: SAMPLE_MAX_BYTES as u32,
        ..SampleOptions::default()
    }
}

fn sampling_off() -> SampleOptions {
    SampleOptions {
        segments: 0,
        ..SampleOptions::default()
    }
}

/// Sampling with its budgets off (0: no byte budget, no per-source rate).
fn sampling_unbudgeted() -> SampleOptions {
    SampleOptions {
        bytes_per_cpu: 0,
        source_flows: 0,
        ..sampling_max()
    }
}

fn smallest_tables(o: LoadOptions) -> LoadOptions {
    LoadOptions {
        max_sources: 2,
        max_pairs: 4,
        sampling: SampleOptions {
            flows: 1,
            ring_bytes: 4096,
            ..o.sampling.clone()
        },
        ..o
    }
}

/// The covering set: (name, options).
fn configurations() -> Vec<(&'static str, LoadOptions)> {
    let d = LoadOptions::default;
    vec![
        ("defaults", d()),
        (
            "sampling off",
            LoadOptions {
                sampling: sampling_off(),
                ..d()
            },
        ),
        (
            "sampling 1 segment of 1 byte",
            LoadOptions {
                sampling: SampleOptions {
                    segments: 1,
                    bytes: 1,
                    ..SampleOptions::default()
                },
                ..d()
            },
        ),
        (
            "sampling maximum segments and bytes",
            LoadOptions {
                sampling: sampling_max(),
                ..d()
            },
        ),
        (
            "sampling without budgets, source rate 255",
            LoadOptions {
                sampling: SampleOptions {
                    source_flows: 255,
                    ..sampling_unbudgeted()
                },
                ..d()
            },
        ),
        (
            "2 ports",
            LoadOptions {
                ports: all_ports()[..2].to_vec(),
                ..d()
            },
        ),
        (
            "3 ports",
            LoadOptions {
                ports: all_ports()[..3].to_vec(),
                ..d()
            },
        ),
        (
            "all ports",
            LoadOptions {
                ports: all_ports(),
                ..d()
            },
        ),
        (
            "replay",
            LoadOptions {
                replay: true,
                ..d()
            },
        ),
        (
            "answers other-ingress",
            LoadOptions {
                answers: AnswerCheck::OtherIngress,
                ..d()
            },
        ),
        (
            "no event budget",
            LoadOptions {
                events_per_cpu: 0,
                ..d()
            },
        ),
        (
            "largest event budget",
            LoadOptions {
                events_per_cpu: 10_000_000,
                ..d()
            },
        ),
        (
            "shortest activity epoch and fan-out window",
            LoadOptions {
                activity_epoch: MIN_ACTIVITY_EPOCH,
                fanout_window: Duration::from_secs(1),
                ..d()
            },
        ),
        (
            "longest activity epoch",
            LoadOptions {
                activity_epoch: MAX_ACTIVITY_EPOCH,
                fanout_window: Duration::from_secs(3600),
                ..d()
            },
        ),
        ("smallest tables", smallest_tables(d())),
        (
            "largest tables",
            LoadOptions {
                max_sources: MAX_SOURCES,
                max_pairs: MAX_PAIRS,
                sampling: SampleOptions {
                    flows: MAX_FLOWS,
                    ..SampleOptions::default()
                },
                ..d()
            },
        ),
        // The combinations with the most live branches.
        (
            "worst: all ports, sampling max unbudgeted, other-ingress, no event budget, smallest tables",
            smallest_tables(LoadOptions {
                ports: all_ports(),
                sampling: sampling_unbudgeted(),
                answers: AnswerCheck::OtherIngress,
                events_per_cpu: 0,
                ..d()
            }),
        ),
        (
            "worst: all ports, sampling off, other-ingress, replay",
            LoadOptions {
                ports: all_ports(),
                sampling: sampling_off(),
                answers: AnswerCheck::OtherIngress,
                replay: true,
                ..d()
            },
        ),
        (
            "worst: all ports, sampling max, replay, largest tables",
            LoadOptions {
                ports: all_ports(),
                replay: true,
                max_sources: MAX_SOURCES,
                max_pairs: MAX_PAIRS,
                sampling: SampleOptions {
                    flows: MAX_FLOWS,
                    ..sampling_max()
                },
                ..d()
            },
        ),
    ]
}

/// The verifier's last lines when it refused the program, else the error.
fn refusal(e: &DataplaneError) -> String {
    match e {
        DataplaneError::Program {
            source:
                ProgramError::LoadError {
                    io_error,
                    verifier_log,
                },
            ..
        } => {
            let log = verifier_log.to_string();
            let lines: Vec<&str> = log.lines().collect();
            let tail = lines[lines.len().saturating_sub(25)..].join("\n");
            format!("{io_error}; verifier log tail:\n{tail}")
        }
        e => format!("{e:?}"),
    }
}

#[test]
fn every_operator_configuration_loads() {
    require_root();
    let mut failed = Vec::new();
    let mut worst = (0, "");
    for (name, opts) in configurations() {
        match Dataplane::load(&opts) {
            Ok(dp) => {
                let insns = dp.verified_instructions().expect("program info");
                match insns {
                    Some(n) => {
                        println!("{n:>9} instructions verified: {name}");
                        if n > VERIFIER_LIMIT / 10 * 9 {
                            println!("          WARNING: within 10% of the verifier's limit");
                        }
                        assert!(n < VERIFIER_LIMIT, "{name}: {n}");
                        if n > worst.0 {
                            worst = (n, name);
                        }
                    }
                    None => println!("  (kernel does not report) loaded: {name}"),
                }
            }
            Err(e) => {
                let why = refusal(&e);
                println!("FAILED: {name}: {why}");
                failed.push(format!("{name} ({opts:?}): {why}"));
            }
        }
    }
    println!("most: {} ({})", worst.0, worst.1);
    assert!(
        failed.is_empty(),
        "configurations that do not load:\n{}",
        failed.join("\n\n")
    );
}
