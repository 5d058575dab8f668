//! The append-only file buffer: survives a restart, detects a torn write.
//!
//! # File format
//!
//! An 8-byte header `HADCBUF1`, then records:
//!
//! ```text
//! len: u32 LE | crc32: u32 LE | kind: u8 | payload (len bytes)
//! kind 1 = reading: seq u64 LE, then the reading's wire-form JSON
//! kind 2 = removed: one or more seq u64 LE (acknowledged, rejected or dropped)
//! ```
//!
//! The CRC-32 (IEEE) covers `kind` and the payload. A record is only ever
//! appended, so a crash can only leave a *torn tail*: on open, the first
//! record that is short or fails its checksum ends the log, and the file is
//! truncated there (the lost record was never reported as stored). When
//! dead records outweigh the live ones, the file is compacted: the live
//! readings are written to `<path>.tmp`, synced, and renamed over the log.
//!
//! Readings refused by the server for good are appended, one JSON object
//! per line with the server's reason, to `<path>.rejected`.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use super::{Buffer, BufferLimits, EncodedReading, MemoryBuffer, Pushed};
use crate::error::{Error, ServerError};

const MAGIC: &[u8; 8] = b"HADCBUF1";
const HEADER: usize = 9;
const KIND_READING: u8 = 1;
const KIND_REMOVED: u8 = 2;
/// Compaction is not worth it below this many dead bytes.
const COMPACT_MIN_DEAD: u64 = 64 * 1024;

/// What opening a [`FileBuffer`] found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Readings recovered.
    pub readings: usize,
    /// Bytes of a torn or corrupt tail that were cut off (0 after a clean
    /// shutdown).
    pub discarded_bytes: u64,
}

/// A [`Buffer`] kept in an append-only file, with an in-memory index.
///
/// Every push and acknowledgement is one appended record, synced to the
/// device (`fdatasync`) before the call returns unless
/// [`set_sync(false)`](FileBuffer::set_sync) trades durability for flash
/// wear. See the module docs for the format.
#[derive(Debug)]
pub struct FileBuffer {
    path: PathBuf,
    file: File,
    index: MemoryBuffer,
    /// Length of the file up to the last complete record.
    file_len: u64,
    /// Bytes of records that no longer describe a buffered reading.
    dead_bytes: u64,
    sync: bool,
    recovery: Recovery,
}

impl FileBuffer {
    /// Opens (or creates) the buffer at `path` with these bounds, replaying
    /// the log and cutting off a torn tail.
    ///
    /// Errors: [`Error::Storage`] if the file cannot be read or written, or
    /// is not a buffer file.
    pub fn open(path: impl AsRef<Path>, limits: BufferLimits) -> Result<Self, Error> {
        let path = path.as_ref().to_path_buf();
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)
            .map_err(Error::Storage)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(Error::Storage)?;
        if bytes.is_empty() {
            file.write_all(MAGIC).map_err(Error::Storage)?;
            file.sync_all().map_err(Error::Storage)?;
            bytes.extend_from_slice(MAGIC);
        }
        if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
            if MAGIC.starts_with(&bytes) {
                // Torn while writing the header of a new file.
                file.set_len(0).map_err(Error::Storage)?;
                file.write_all(MAGIC).map_err(Error::Storage)?;
                file.sync_all().map_err(Error::Storage)?;
                bytes = MAGIC.to_vec();
            } else {
                return Err(Error::Storage(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{} is not a device-client buffer file", path.display()),
                )));
            }
        }
        let mut index = MemoryBuffer::new(limits);
        let mut pos = MAGIC.len();
        let mut record_bytes = 0u64;
        while let Some((kind, payload, next)) = parse_record(&bytes, pos) {
            record_bytes += (next - pos) as u64;
            match kind {
                KIND_READING => {
                    let seq = read_u64(payload);
                    let reading = EncodedReading::from_parts(seq, payload[8..].to_vec());
                    match index.plan_push(&reading) {
                        Ok(dropped) => index.apply_push(reading, &dropped),
                        Err(e) => {
                            tracing::warn!(seq, error = %e, "Skipping a buffered reading on replay.")
                        }
                    }
                }
                _ => {
                    let seqs: Vec<u64> = payload.chunks_exact(8).map(read_u64).collect();
                    index.remove(&seqs);
                }
            }
            pos = next;
        }
        let discarded = (bytes.len() - pos) as u64;
        if discarded > 0 {
            tracing::warn!(
                path = %path.display(),
                discarded_bytes = discarded,
                "Cut off a torn write at the end of the buffer file."
            );
            file.set_len(pos as u64).map_err(Error::Storage)?;
            file.sync_all().map_err(Error::Storage)?;
        }
        let live = live_bytes(&index);
        let mut buffer = FileBuffer {
            path,
            file,
            file_len: pos as u64,
            dead_bytes: record_bytes.saturating_sub(live),
            sync: true,
            recovery: Recovery {
                readings: index.len(),
                discarded_bytes: discarded,
            },
            index,
        };
        buffer.maybe_compact();
        Ok(buffer)
    }

    /// Whether each write is synced to the device before returning
    /// (default `true`).
    pub fn set_sync(&mut self, sync: bool) {
        self.sync = sync;
    }

    /// What opening the file found.
    pub fn recovery(&self) -> Recovery {
        self.recovery
    }

    /// The log file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The rejected-readings file: `<path>.rejected`, JSON lines.
    pub fn rejected_path(&self) -> PathBuf {
        with_suffix(&self.path, ".rejected")
    }

    /// Current size of the log file in bytes.
    pub fn file_len(&self) -> u64 {
        self.file_len
    }

    /// Rewrites the log with only the buffered readings: written to
    /// `<path>.tmp`, synced, then renamed over the log. A failure before
    /// the rename leaves the old log in use, untouched.
    pub fn compact(&mut self) -> Result<(), Error> {
        let tmp = with_suffix(&self.path, ".tmp");
        let mut out = Vec::with_capacity(MAGIC.len() + live_bytes(&self.index) as usize);
        out.extend_from_slice(MAGIC);
        for (seq, json) in self.index.iter() {
            encode_reading(&mut out, seq, json);
        }
        let write = || -> io::Result<File> {
            let _ = fs::remove_file(&tmp);
            // The handle follows the file through the rename, so appends
            // go to the new log without reopening it.
            let mut f = OpenOptions::new()
                .read(true)
                .append(true)
                .create_new(true)
                .open(&tmp)?;
            f.write_all(&out)?;
            f.sync_all()?;
            fs::rename(&tmp, &self.path)?;
            Ok(f)
        };
        self.file = write().map_err(Error::Storage)?;
        self.file_len = out.len() as u64;
        self.dead_bytes = 0;
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            // Makes the rename durable; until then a crash brings back the
            // old log, which holds the same readings plus dead records.
            if let Err(e) = File::open(dir).and_then(|d| d.sync_all()) {
                tracing::warn!(error = %e, "Could not sync the buffer directory after compaction.");
            }
        }
        Ok(())
    }

    /// Compacts when dead records outweigh live ones. A failed compaction
    /// is logged and tried again later: the log itself is intact.
    fn maybe_compact(&mut self) {
        let live = self.file_len - MAGIC.len() as u64 - self.dead_bytes;
        if self.dead_bytes >= COMPACT_MIN_DEAD
            && self.dead_bytes > live
            && let Err(e) = self.compact()
        {
            tracing::warn!(path = %self.path.display(), error = %e, "Buffer compaction failed.");
        }
    }

    /// Appends `record`; on failure, cuts the file back to its last good
    /// length so that no torn record is left between good ones.
    fn append(&mut self, record: &[u8]) -> Result<(), Error> {
        let result = self.file.write_all(record).and_then(|()| {
            if self.sync {
                self.file.sync_data()
            } else {
                Ok(())
            }
        });
        match result {
            Ok(()) => {
                self.file_len += record.len() as u64;
                Ok(())
            }
            Err(e) => {
                if let Err(e2) = self.file.set_len(self.file_len) {
                    tracing::error!(error = %e2, "Could not cut a failed write off the buffer file.");
                }
                Err(Error::Storage(e))
            }
        }
    }

    /// The removal record for those of `seqs` that are buffered, and the
    /// record bytes it makes dead.
    fn removal_record(&self, seqs: &[u64]) -> Option<(Vec<u8>, u64)> {
        let mut payload = Vec::with_capacity(8 * seqs.len());
        let mut freed = 0;
        for &seq in seqs {
            if let Some(len) = self.index.size_of(seq) {
                payload.extend_from_slice(&seq.to_le_bytes());
                freed += reading_record_len(len);
            }
        }
        if payload.is_empty() {
            return None;
        }
        let mut record = Vec::with_capacity(HEADER + payload.len());
        encode_record(&mut record, KIND_REMOVED, &[&payload]);
        Some((record, freed))
    }

    fn append_removed(&mut self, seqs: &[u64]) -> Result<(), Error> {
        let Some((record, freed)) = self.removal_record(seqs) else {
            return Ok(());
        };
        self.append(&record)?;
        self.index.remove(seqs);
        self.dead_bytes += freed + record.len() as u64;
        self.maybe_compact();
        Ok(())
    }
}

impl Buffer for FileBuffer {
    fn push(&mut self, reading: EncodedReading) -> Result<Pushed, Error> {
        let dropped = self.index.plan_push(&reading)?;
        let dropped_present = self.removal_record(&dropped);
        let mut record = Vec::with_capacity(HEADER + 8 + reading.len());
        encode_reading(&mut record, reading.seq(), reading.json());
        // One write: a torn removal record only leaves the buffer over its
        // bound, which replay corrects by dropping the oldest again.
        if let Some((removal, _)) = &dropped_present {
            record.extend_from_slice(removal);
        }
        self.append(&record)?;
        if let Some((removal, freed)) = dropped_present {
            self.dead_bytes += freed + removal.len() as u64;
        }
        self.index.apply_push(reading, &dropped);
        self.maybe_compact();
        Ok(Pushed { dropped })
    }

    fn peek(&self, max_count: usize, max_bytes: usize) -> Result<Vec<EncodedReading>, Error> {
        self.index.peek(max_count, max_bytes)
    }

    fn acknowledge(&mut self, seqs: &[u64]) -> Result<(), Error> {
        self.append_removed(seqs)
    }

    fn reject(&mut self, readings: &[EncodedReading], reason: &ServerError) -> Result<(), Error> {
        let mut lines = Vec::new();
        for r in readings {
            let reason_json = serde_json::json!({
                "status": reason.status,
                "error": reason.code,
                "message": reason.message,
                "field": reason.field,
                "index": reason.index,
            });
            lines.extend_from_slice(br#"{"reason":"#);
            lines.extend_from_slice(reason_json.to_string().as_bytes());
            lines.extend_from_slice(br#","reading":"#);
            lines.extend_from_slice(r.json());
            lines.extend_from_slice(b"}\n");
        }
        // Into the rejected file first: a crash in between leaves the
        // reading in both places, never in neither.
        let mut f = OpenOptions::new()
            .append(true)
            .create(true)
            .open(self.rejected_path())
            .map_err(Error::Storage)?;
        f.write_all(&lines)
            .and_then(|()| f.sync_data())
            .map_err(Error::Storage)?;
        let seqs: Vec<u64> = readings.iter().map(EncodedReading::seq).collect();
        self.append_removed(&seqs)
    }

    fn len(&self) -> usize {
        self.index.len()
    }

    fn bytes(&self) -> usize {
        self.index.bytes()
    }
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

fn reading_record_len(json_len: usize) -> u64 {
    (HEADER + 8 + json_len) as u64
}

fn live_bytes(index: &MemoryBuffer) -> u64 {
    index.iter().map(|(_, j)| reading_record_len(j.len())).sum()
}

fn read_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}

fn encode_reading(out: &mut Vec<u8>, seq: u64, json: &[u8]) {
    encode_record(out, KIND_READING, &[&seq.to_le_bytes(), json]);
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
/// is incomplete or corrupt.
fn parse_record(bytes: &[u8], pos: usize) -> Option<(u8, &[u8], usize)> {
    let head = bytes.get(pos..pos + HEADER)?;
    let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
    let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
    let kind = head[8];
    let payload = bytes.get(pos + HEADER..(pos + HEADER).checked_add(len)?)?;
    let mut c = Crc32::new();
    c.update(&[kind]);
    c.update(payload);
    let well_formed = match kind {
        KIND_READING => len > 8,
        KIND_REMOVED => len > 0 && len.is_multiple_of(8),
        _ => false,
    };
    (c.finish() == crc && well_formed).then_some((kind, payload, pos + HEADER + len))
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

#[cfg(test)]
mod tests;
