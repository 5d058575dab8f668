//! The bytes of a buffer file: record encoding, the checksum, and replay
//! (reading a whole log back into an index), kept apart from the file
//! handling so that it can be tested and fuzzed on plain byte slices.
//!
//! ```text
//! "HADCBUF1" then records:
//! len: u32 LE | crc32: u32 LE | kind: u8 | payload (len bytes)
//! kind 1 = reading: seq u64 LE, then the reading's wire-form JSON
//! kind 2 = removed: one or more seq u64 LE (acknowledged, rejected or dropped)
//! ```

use crate::buffer::memory::MemoryBuffer;
use crate::buffer::{BufferLimits, EncodedReading};

pub(super) const MAGIC: &[u8; 8] = b"HADCBUF1";
pub(super) const HEADER: usize = 9;
const KIND_READING: u8 = 1;
const KIND_REMOVED: u8 = 2;

/// What replaying a log found.
#[derive(Debug)]
pub(super) struct Replay {
    /// The live readings, within the limits.
    pub(super) index: MemoryBuffer,
    /// End of the last intact record: where the next append goes.
    pub(super) end: usize,
    /// Bytes of intact records (live or dead).
    pub(super) record_bytes: u64,
    /// Corrupt stretches between intact records that were skipped.
    pub(super) skipped_regions: usize,
    /// Their total size.
    pub(super) skipped_bytes: u64,
}

/// Replays the records of `bytes` (which starts with [`MAGIC`]).
///
/// A record that is short or fails its checksum is either a *torn tail*
/// (no intact record follows it: replay ends there, as after a crash
/// mid-append) or a corrupt stretch in the middle (a bit flip, a bad flash
/// page): replay resynchronises on the next intact record and counts the
/// skipped bytes. Never allocates more than the intact records it keeps
/// (a length field is only trusted once the bytes it names exist).
pub(super) fn replay(bytes: &[u8], limits: BufferLimits) -> Replay {
    let mut index = MemoryBuffer::new(limits);
    let mut pos = MAGIC.len().min(bytes.len());
    let mut replay_end = pos;
    let mut record_bytes = 0u64;
    let mut skipped_regions = 0;
    let mut skipped_bytes = 0u64;
    loop {
        match parse_record(bytes, pos) {
            Some((kind, payload, next)) => {
                record_bytes += (next - pos) as u64;
                apply(&mut index, kind, payload);
                pos = next;
                replay_end = pos;
            }
            None => match next_intact(bytes, pos + 1) {
                Some(resume) => {
                    skipped_regions += 1;
                    skipped_bytes += (resume - pos) as u64;
                    pos = resume;
                }
                None => break,
            },
        }
    }
    Replay {
        index,
        end: replay_end,
        record_bytes,
        skipped_regions,
        skipped_bytes,
    }
}

fn apply(index: &mut MemoryBuffer, kind: u8, payload: &[u8]) {
    if kind == KIND_READING {
        let seq = read_u64(payload);
        let json = &payload[8..];
        if json.len() > index.limits().max_bytes {
            tracing::warn!(
                seq,
                "Skipping a buffered reading larger than the buffer on replay."
            );
            return;
        }
        let reading = EncodedReading::from_parts(seq, json.to_vec());
        match index.plan_push(&reading) {
            Ok(dropped) => index.apply_push(reading, &dropped),
            Err(e) => tracing::warn!(seq, error = %e, "Skipping a buffered reading on replay."),
        }
    } else {
        let seqs: Vec<u64> = payload.chunks_exact(8).map(read_u64).collect();
        index.remove(&seqs);
    }
}

/// The first position at or after `from` where an intact record starts.
fn next_intact(bytes: &[u8], from: usize) -> Option<usize> {
    (from..bytes.len().saturating_sub(HEADER - 1)).find(|&p| parse_record(bytes, p).is_some())
}

/// Size of the record holding a reading of `json_len` bytes.
pub(super) fn reading_record_len(json_len: usize) -> u64 {
    (HEADER + 8 + json_len) as u64
}

fn read_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}

/// Appends the record of a reading.
pub(super) fn encode_reading(out: &mut Vec<u8>, seq: u64, json: &[u8]) {
    encode_record(out, KIND_READING, &[&seq.to_le_bytes(), json]);
}

/// Appends the record removing `seqs` (which must not be empty).
pub(super) fn encode_removal(out: &mut Vec<u8>, seqs_le: &[u8]) {
    encode_record(out, KIND_REMOVED, &[seqs_le]);
}

fn encode_record(out: &mut Vec<u8>, kind: u8, parts: &[&[u8]]) {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    let mut crc = Crc32::new();
    crc.update(&[kind]);
    for p in parts {
        crc.update(p);
    }
    // Payloads are bounded by the buffer's byte bound, far below 4 GiB.
    out.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_le_bytes());
    out.extend_from_slice(&crc.finish().to_le_bytes());
    out.push(kind);
    for p in parts {
        out.extend_from_slice(p);
    }
}

/// The record at `pos`: `(kind, payload, next position)`, or `None` if it
/// is incomplete or corrupt. The cheap checks come before the checksum,
/// so that scanning for the next intact record stays fast.
fn parse_record(bytes: &[u8], pos: usize) -> Option<(u8, &[u8], usize)> {
    let head = bytes.get(pos..pos.checked_add(HEADER)?)?;
    let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
    let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
    let kind = head[8];
    let well_formed = match kind {
        KIND_READING => len > 8,
        KIND_REMOVED => len > 0 && len.is_multiple_of(8),
        _ => false,
    };
    if !well_formed {
        return None;
    }
    let next = (pos + HEADER).checked_add(len)?;
    let payload = bytes.get(pos + HEADER..next)?;
    let mut c = Crc32::new();
    c.update(&[kind]);
    c.update(payload);
    (c.finish() == crc).then_some((kind, payload, next))
}

/// CRC-32 (IEEE 802.3, reflected, polynomial 0xEDB88320).
struct Crc32(u32);

const CRC_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
};

impl Crc32 {
    fn new() -> Self {
        Crc32(0xFFFF_FFFF)
    }

    fn update(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = CRC_TABLE[((self.0 ^ u32::from(b)) & 0xFF) as usize] ^ (self.0 >> 8);
        }
    }

    fn finish(&self) -> u32 {
        self.0 ^ 0xFFFF_FFFF
    }
}
