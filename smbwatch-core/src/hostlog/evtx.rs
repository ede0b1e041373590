//! Binary EVTX files, through the `evtx` crate.
//!
//! Records are rendered to compact JSON by the crate and read by the same
//! streaming visitor as evtx_dump output (the shapes are identical), which
//! avoids building a `serde_json::Value` per record.
//!
//! Accounting: chunks are walked one by one so that every record is counted.
//! A record the crate cannot render is one bad record; when a chunk stops
//! yielding records early, the records its header promises but that were
//! never reached are counted bad under one error; a chunk that cannot be
//! read at all counts as one bad record (its header, and so its record
//! count, is not trustworthy). A file that ends inside a chunk, or holds
//! fewer chunks than its header counts, gets one more bad record saying it
//! is truncated (the crate itself stops there silently).

use std::io::Cursor;
use std::sync::Arc;

use ::evtx::{EvtxParser, ParserSettings};

use super::fields::Flavour;
use super::{
    clip_message, json, HostEvent, HostLogError, ParseSummary, RecordError, RecordLocation,
    RecordProblem,
};

/// Most records a 64 KiB chunk can hold (a record is at least 24 bytes of
/// header plus a few bytes of BinXML); beyond it a header count is garbage.
const MAX_RECORDS_PER_CHUNK: u64 = 65536 / 28;

pub(super) fn parse(
    name: &str,
    bytes: &[u8],
    summary: &mut ParseSummary,
    out: &mut Vec<HostEvent>,
) -> Result<(), HostLogError> {
    let settings = ParserSettings::new()
        .num_threads(1)
        .indent(false)
        .separate_json_attributes(false);
    let mut parser = EvtxParser::from_read_seek(Cursor::new(bytes))
        .map_err(|e| HostLogError::EvtxHeader {
            path: name.to_string(),
            message: e.to_string(),
        })?
        .with_configuration(settings.clone());
    // A header that fails its checksum may count garbage chunks.
    let header = parser.header();
    let header_chunks = if header.validate_checksum() {
        header.chunk_count
    } else {
        0
    };
    let truncation = truncation(bytes, header_chunks);
    let settings = Arc::new(settings);
    read_chunks(name, &mut parser, &settings, None, summary, out);
    let Some(cut) = truncation else {
        return Ok(());
    };
    let problem = RecordProblem::TruncatedFile {
        size: bytes.len() as u64,
        expected: cut.expected,
    };
    // The crate stops silently at a cut chunk. Read what is left of it as
    // a chunk padded with zeros (which the crate takes for free space), so
    // the records before the cut are kept and those after it counted.
    let tail = &bytes[cut.tail_start..];
    if tail.len() >= CHUNK_HEADER {
        let mut padded = Vec::with_capacity(FILE_HEADER as usize + CHUNK as usize);
        padded.extend_from_slice(&bytes[..FILE_HEADER as usize]);
        padded.extend_from_slice(tail);
        padded.resize(FILE_HEADER as usize + CHUNK as usize, 0);
        if let Ok(p) = EvtxParser::from_read_seek(Cursor::new(padded.as_slice())) {
            let mut p = p.with_configuration((*settings).clone());
            let cut_chunk = Some((cut.chunk, problem.clone()));
            if read_chunks(name, &mut p, &settings, cut_chunk, summary, out) {
                return Ok(());
            }
        }
    }
    summary.bad_many(
        RecordError {
            input: name.to_string(),
            location: RecordLocation::EvtxChunk(cut.chunk),
            problem,
        },
        1,
    );
    Ok(())
}

/// Read every chunk of `parser` into `summary`; false when it had none.
/// `cut` is set for the padded remains of a truncated file's cut chunk: its
/// number in the file, and the problem that reports it (listed even when
/// no record was lost, and in place of the library's error when the
/// remains cannot be read).
fn read_chunks(
    name: &str,
    parser: &mut EvtxParser<Cursor<&[u8]>>,
    settings: &Arc<ParserSettings>,
    cut: Option<(u64, RecordProblem)>,
    summary: &mut ParseSummary,
    out: &mut Vec<HostEvent>,
) -> bool {
    let err = |location, problem| RecordError {
        input: name.to_string(),
        location,
        problem,
    };
    // A chunk-level error in a cut chunk's remains is the cut's doing.
    let lib = |e: &dyn std::fmt::Display| match &cut {
        Some((_, truncated)) => truncated.clone(),
        None => RecordProblem::Evtx(clip_message(e)),
    };
    let mut any = false;
    for (chunk_no, chunk) in parser.chunks().enumerate() {
        any = true;
        let chunk_no = cut.as_ref().map_or(chunk_no as u64, |c| c.0);
        let mut data = match chunk {
            Ok(d) => d,
            Err(e) => {
                summary.record(Err(err(RecordLocation::EvtxChunk(chunk_no), lib(&e))), out);
                continue;
            }
        };
        let h = &data.header;
        let promised = h
            .last_event_record_id
            .checked_sub(h.first_event_record_id)
            .map(|d| d + 1)
            .filter(|&n| n <= MAX_RECORDS_PER_CHUNK);
        let first_id = h.first_event_record_id;
        let mut chunk = match data.parse(Arc::clone(settings)) {
            Ok(c) => c,
            Err(e) => {
                summary.bad_many(
                    err(RecordLocation::EvtxChunk(chunk_no), lib(&e)),
                    promised.unwrap_or(1),
                );
                continue;
            }
        };
        let mut seen = 0u64;
        let mut last_id = None;
        for record in chunk.iter() {
            seen += 1;
            let outcome = match record {
                Ok(r) => {
                    let id = r.event_record_id;
                    last_id = Some(id);
                    match r.into_json() {
                        Ok(s) => json::parse_record(&s.data, Some(Flavour::Windows))
                            .map_err(|p| err(RecordLocation::EvtxRecord(id), p)),
                        Err(e) => Err(err(
                            RecordLocation::EvtxRecord(id),
                            RecordProblem::Evtx(clip_message(e)),
                        )),
                    }
                }
                Err(e) => Err(err(
                    RecordLocation::EvtxChunk(chunk_no),
                    RecordProblem::Evtx(clip_message(e)),
                )),
            };
            summary.record(outcome, out);
        }
        let missing = promised.map_or(0, |p| p.saturating_sub(seen));
        let after = last_id.unwrap_or(first_id.saturating_sub(1));
        let problem = match &cut {
            // Listed even when no record was lost (cut in free space).
            Some((_, truncated)) => truncated.clone(),
            None if missing > 0 => RecordProblem::Evtx(format!(
                "{missing} record(s) after event record id {after} could not be read"
            )),
            None => continue,
        };
        summary.bad_many(err(RecordLocation::EvtxChunk(chunk_no), problem), missing);
    }
    any
}

/// EVTX layout: a 4 KiB file header, then 64 KiB chunks.
const FILE_HEADER: u64 = 4096;
const CHUNK: u64 = 65536;

/// Bytes of an EVTX chunk header (the crate needs it whole to read a chunk).
const CHUNK_HEADER: usize = 512;

/// Where a truncated file is cut.
struct Cut {
    /// The first chunk cut or missing.
    chunk: u64,
    /// Where the cut chunk's remains start (the end of the file when the
    /// file ends at a chunk boundary and whole chunks are missing).
    tail_start: usize,
    /// Bytes the file should have.
    expected: u64,
}

/// Where the file is cut, when it ends inside a chunk (other than in zero
/// padding) or holds fewer chunks than its header counts.
fn truncation(bytes: &[u8], header_chunks: u16) -> Option<Cut> {
    let len = bytes.len() as u64;
    let data = len.saturating_sub(FILE_HEADER);
    let whole = data / CHUNK;
    let tail_start = (FILE_HEADER + whole * CHUNK).min(len) as usize;
    let cut = bytes[tail_start..].iter().any(|&b| b != 0);
    // Only a cut chunk has remains worth reading.
    let tail_start = if cut { tail_start } else { bytes.len() };
    let expected_chunks = u64::from(header_chunks).max(whole + u64::from(cut));
    let expected = FILE_HEADER + expected_chunks * CHUNK;
    (len < expected).then_some(Cut {
        chunk: whole,
        tail_start,
        expected,
    })
}
