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
    let err = |location, problem| RecordError {
        input: name.to_string(),
        location,
        problem,
    };
    for (chunk_no, chunk) in parser.chunks().enumerate() {
        let chunk_no = chunk_no as u64;
        let mut data = match chunk {
            Ok(d) => d,
            Err(e) => {
                summary.record(
                    Err(err(
                        RecordLocation::EvtxChunk(chunk_no),
                        RecordProblem::Evtx(clip_message(e)),
                    )),
                    out,
                );
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
        let mut chunk = match data.parse(Arc::clone(&settings)) {
            Ok(c) => c,
            Err(e) => {
                summary.bad_many(
                    err(
                        RecordLocation::EvtxChunk(chunk_no),
                        RecordProblem::Evtx(clip_message(e)),
                    ),
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
        if let Some(missing) = promised.map(|p| p.saturating_sub(seen)).filter(|&m| m > 0) {
            let after = last_id.unwrap_or(first_id.saturating_sub(1));
            summary.bad_many(
                err(
                    RecordLocation::EvtxChunk(chunk_no),
                    RecordProblem::Evtx(format!(
                        "{missing} record(s) after event record id {after} could not be read"
                    )),
                ),
                missing,
            );
        }
    }
    // The crate stops silently at a cut chunk; say so, or a cut file reads
    // as a short one (or, cut inside its first chunk, as an empty one).
    if let Some((chunk, expected)) = truncation {
        summary.bad_many(
            err(
                RecordLocation::EvtxChunk(chunk),
                RecordProblem::TruncatedFile {
                    size: bytes.len() as u64,
                    expected,
                },
            ),
            1,
        );
    }
    Ok(())
}

/// EVTX layout: a 4 KiB file header, then 64 KiB chunks.
const FILE_HEADER: u64 = 4096;
const CHUNK: u64 = 65536;

/// `(first chunk cut or missing, bytes the file should have)` when the file
/// ends inside a chunk (other than in zero padding) or holds fewer chunks
/// than its header counts.
fn truncation(bytes: &[u8], header_chunks: u16) -> Option<(u64, u64)> {
    let len = bytes.len() as u64;
    let data = len.saturating_sub(FILE_HEADER);
    let whole = data / CHUNK;
    let tail = &bytes[(FILE_HEADER + whole * CHUNK).min(len) as usize..];
    let cut = tail.iter().any(|&b| b != 0);
    let expected_chunks = u64::from(header_chunks).max(whole + u64::from(cut));
    let expected = FILE_HEADER + expected_chunks * CHUNK;
    (len < expected).then_some((whole, expected))
}
