//! The stream reassembler's tests: framing, holes, order, bounds.

use super::*;

fn nb(body: &[u8]) -> Vec<u8> {
    let mut v = (body.len() as u32).to_be_bytes().to_vec();
    v[0] = 0;
    v.extend_from_slice(body);
    v
}

fn smb(n: usize) -> Vec<u8> {
    let mut b = vec![0xFE, b'S', b'M', b'B'];
    b.resize(n, 0x11);
    b
}

fn messages(ev: &[StreamEvent]) -> Vec<(usize, Cut)> {
    ev.iter()
        .filter_map(|e| match e {
            StreamEvent::Message(m) => Some((m.bytes.len(), m.cut)),
            _ => None,
        })
        .collect()
}

#[test]
fn messages_split_and_joined_across_segments() {
    let mut wire = nb(&smb(100));
    wire.extend(nb(&smb(70)));
    let mut s = Stream::new();
    let mut out = Vec::new();
    // Split at odd places, one cut inside the second header.
    s.push(Segment::whole(1000, &wire[..3]), &mut out);
    s.push(Segment::whole(1003, &wire[3..106]), &mut out);
    s.push(Segment::whole(1106, &wire[106..]), &mut out);
    assert_eq!(
        messages(&out),
        vec![(100, Cut::Complete), (70, Cut::Complete)]
    );
}

#[test]
fn out_of_order_is_held_and_retransmissions_dropped() {
    let wire = nb(&smb(300));
    let mut s = Stream::new();
    let mut out = Vec::new();
    s.push(Segment::whole(0, &wire[..100]), &mut out);
    s.push(Segment::whole(200, &wire[200..]), &mut out);
    assert!(out.is_empty());
    s.push(Segment::whole(50, &wire[50..150]), &mut out); // overlap
    s.push(Segment::whole(150, &wire[150..200]), &mut out);
    assert_eq!(messages(&out), vec![(300, Cut::Complete)]);
    assert_eq!(s.counters().reordered, 1);
    s.push(Segment::whole(0, &wire[..100]), &mut out);
    assert_eq!(s.counters().retransmitted, 1);
}

#[test]
fn a_hole_inside_a_message_keeps_the_framing() {
    let mut wire = nb(&smb(2000));
    wire.extend(nb(&smb(80)));
    let mut s = Stream::new();
    let mut out = Vec::new();
    // The sample copied 1000 of the first 1500 bytes.
    s.push(
        Segment {
            seq: 7,
            data: &wire[..1000],
            wire_len: 1500,
        },
        &mut out,
    );
    s.push(Segment::whole(1507, &wire[1500..]), &mut out);
    assert_eq!(
        messages(&out),
        vec![(996, Cut::Unseen), (80, Cut::Complete)]
    );
    assert!(out.contains(&StreamEvent::Unseen {
        hole: Hole::SampleCut,
        bytes: 500
    }));
}

#[test]
fn a_hole_over_a_header_resyncs_on_the_next_one() {
    let mut wire = nb(&smb(100));
    wire.extend(nb(&smb(100)));
    wire.extend(nb(&smb(60)));
    let mut s = Stream::new();
    let mut out = Vec::new();
    s.push(Segment::whole(0, &wire[..100]), &mut out);
    // 104..110 (the second header) never arrives.
    s.push(Segment::whole(110, &wire[110..]), &mut out);
    s.finish(&mut out);
    assert_eq!(messages(&out), vec![(96, Cut::Unseen), (60, Cut::Complete)]);
    assert!(out.iter().any(|e| matches!(
        e,
        StreamEvent::Unseen {
            hole: Hole::Gap,
            bytes: 10
        }
    )));
    assert!(out.iter().any(|e| matches!(
        e,
        StreamEvent::Unseen {
            hole: Hole::Resync,
            ..
        }
    )));
}

#[test]
fn sample_end_inside_a_message_is_said() {
    let wire = nb(&smb(500));
    let mut s = Stream::new();
    let mut out = Vec::new();
    s.push(Segment::whole(0, &wire[..200]), &mut out);
    s.finish(&mut out);
    assert_eq!(messages(&out), vec![(196, Cut::Unseen)]);
    assert!(out.contains(&StreamEvent::Unseen {
        hole: Hole::SampleEnd,
        bytes: 304
    }));
}

#[test]
fn huge_declared_lengths_keep_only_a_prefix() {
    let mut s = Stream::new();
    let mut out = Vec::new();
    let mut seq = 0u32;
    let head = [0x00, 0xFF, 0xFF, 0xFF, 0xFE, b'S', b'M', b'B'];
    s.push(Segment::whole(seq, &head), &mut out);
    seq += 8;
    let chunk = vec![0u8; 60_000];
    for _ in 0..10 {
        s.push(Segment::whole(seq, &chunk), &mut out);
        seq = seq.wrapping_add(60_000);
    }
    s.finish(&mut out);
    let m = messages(&out);
    assert_eq!(m, vec![(MAX_MESSAGE_PREFIX, Cut::Unseen)]);
    assert!(s.counters().skipped_bytes > 500_000);
}

#[test]
fn the_out_of_order_hold_is_bounded() {
    let mut s = Stream::new();
    let mut out = Vec::new();
    s.push(Segment::whole(0, &[0, 0, 0, 4]), &mut out);
    for i in 0..100u32 {
        s.push(Segment::whole(1000 + i * 2000, &[0u8; 1000]), &mut out);
        assert!(s.pending.len() <= MAX_PENDING_SEGMENTS);
        assert!(s.pending_bytes <= MAX_PENDING_BYTES);
    }
    assert!(s.counters().gaps > 0);
}

#[test]
fn sequence_numbers_wrap() {
    let wire = nb(&smb(100));
    let mut s = Stream::new();
    let mut out = Vec::new();
    let start = u32::MAX - 20;
    s.push(Segment::whole(start, &wire[..50]), &mut out);
    s.push(
        Segment::whole(start.wrapping_add(50), &wire[50..]),
        &mut out,
    );
    assert_eq!(messages(&out), vec![(100, Cut::Complete)]);
}
