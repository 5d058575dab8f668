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
//! appended, so a crash can only leave a *torn tail*: on open, a record
//! that is short or fails its checksum and is followed by no intact record
//! ends the log, and the file is truncated there (the lost record was
//! never reported as stored). A corrupt stretch *followed* by intact
//! records (a bit flip, a bad flash page) is skipped instead: replay
//! resynchronises on the next intact record, keeps everything after it,
//! counts what it skipped in [`Recovery`], and rewrites the file without
//! it. If the skipped stretch held a removal record, the readings it
//! removed come back and are sent again; the server deduplicates them by
//! `(device_id, seq)`.
//!
//! When dead records outweigh the live ones, the file is compacted: the
//! live readings are written to `<path>.tmp`, synced, and renamed over the
//! log.
//!
//! Readings refused by the server for good are appended, one JSON object
//! per line with the server's reason, to `<path>.rejected`, which is
//! rotated to `<path>.rejected.1` past its limit (1 MiB by default, see
//! [`FileOptions`]): the previous `.1` is deleted and its lines counted
//! ([`FileBuffer::rejected_dropped`]). Readings refused for a clock rule
//! are held instead, in `<path>.held-future` and `<path>.held-old` (see
//! [the buffer docs](super#clock-refusals)).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

pub use options::FileOptions;

use format::{HEADER, MAGIC, encode_reading, encode_removal, reading_record_len, replay};
use rejected::RejectedFile;

use crate::buffer::held::Release;
use crate::buffer::memory::MemoryBuffer;
use crate::buffer::refusal::ClockRefusal;
use crate::buffer::{Buffer, BufferLimits, EncodedReading, Pushed};
use crate::error::{Error, ServerError};

mod format;
mod options;
mod rejected;

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
    /// Corrupt stretches in the middle of the file (between intact
    /// records) that were skipped; every intact record after them was
    /// kept. The file is rewritten without them.
    pub skipped_regions: usize,
    /// Their total size in bytes.
    pub skipped_bytes: u64,
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
    options: FileOptions,
    /// The holding areas (in-future, too-old), opened when first needed.
    held: [Option<Box<FileBuffer>>; 2],
    rejected: RejectedFile,
}

impl FileBuffer {
    /// Opens (or creates) the buffer at `path` with these bounds, replaying
    /// the log and cutting off a torn tail, with the default
    /// [`FileOptions`].
    ///
    /// Errors: [`Error::Storage`] if the file cannot be read or written, or
    /// is not a buffer file.
    pub fn open(path: impl AsRef<Path>, limits: BufferLimits) -> Result<Self, Error> {
        Self::open_with(path, limits, FileOptions::default())
    }

    /// Like [`open`](Self::open), with these options; also opens the
    /// holding areas `<path>.held-future` and `<path>.held-old` if they
    /// exist.
    ///
    /// Errors: [`Error::Config`] for invalid options; [`Error::Storage`].
    pub fn open_with(
        path: impl AsRef<Path>,
        limits: BufferLimits,
        options: FileOptions,
    ) -> Result<Self, Error> {
        options.validate()?;
        let mut buffer = Self::open_log(path.as_ref().to_path_buf(), limits, options)?;
        for refusal in ClockRefusal::ALL {
            let held = buffer.held_path(refusal);
            if held.exists() {
                let log = Self::open_log(held, options.hold, options)?;
                buffer.held[slot(refusal)] = Some(Box::new(log));
            }
        }
        Ok(buffer)
    }

    fn open_log(path: PathBuf, limits: BufferLimits, options: FileOptions) -> Result<Self, Error> {
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
        let replay = replay(&bytes, limits);
        let end = replay.end;
        let discarded = (bytes.len() - end) as u64;
        drop(bytes);
        if discarded > 0 {
            tracing::warn!(
                path = %path.display(),
                discarded_bytes = discarded,
                "Cut off a torn write at the end of the buffer file."
            );
            file.set_len(end as u64).map_err(Error::Storage)?;
            file.sync_all().map_err(Error::Storage)?;
        }
        let index = replay.index;
        let live = live_bytes(&index);
        let rejected = RejectedFile::new(
            with_suffix(&path, ".rejected"),
            with_suffix(&path, ".rejected.1"),
            options.rejected_max_bytes,
        );
        let mut buffer = FileBuffer {
            rejected,
            path,
            file,
            file_len: end as u64,
            // Skipped stretches are dead weight in the file too.
            dead_bytes: (replay.record_bytes + replay.skipped_bytes).saturating_sub(live),
            sync: options.sync,
            options,
            held: [None, None],
            recovery: Recovery {
                readings: index.len(),
                discarded_bytes: discarded,
                skipped_regions: replay.skipped_regions,
                skipped_bytes: replay.skipped_bytes,
            },
            index,
        };
        if replay.skipped_regions > 0 {
            tracing::warn!(
                path = %buffer.path.display(),
                regions = replay.skipped_regions,
                skipped_bytes = replay.skipped_bytes,
                readings = buffer.index.len(),
                "Skipped corrupt records in the middle of the buffer file; kept every intact record after them."
            );
            // Rewrite now, so that the corrupt bytes are not skipped (and
            // counted) again at the next start.
            if let Err(e) = buffer.compact() {
                tracing::warn!(error = %e, "Could not rewrite the buffer file after skipping corrupt records.");
            }
        } else {
            buffer.maybe_compact();
        }
        Ok(buffer)
    }

    /// Whether each write is synced to the device before returning
    /// (default `true`).
    pub fn set_sync(&mut self, sync: bool) {
        self.sync = sync;
        self.options.sync = sync;
        for log in self.held.iter_mut().flatten() {
            log.set_sync(sync);
        }
    }

    /// What opening the file found.
    pub fn recovery(&self) -> Recovery {
        self.recovery
    }

    /// The log file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The rejected-readings file: `<path>.rejected`, JSON lines (rotated
    /// to `<path>.rejected.1` past its limit, see [`FileOptions`]).
    pub fn rejected_path(&self) -> PathBuf {
        self.rejected.path().clone()
    }

    /// Rejected readings deleted by the rotation of the rejected file since
    /// the buffer was opened (lines of the dropped `<path>.rejected.1`).
    pub fn rejected_dropped(&self) -> u64 {
        self.rejected.dropped()
    }

    /// The log of the holding area for `refusal`: `<path>.held-future` or
    /// `<path>.held-old` (same format as the buffer file).
    pub fn held_path(&self, refusal: ClockRefusal) -> PathBuf {
        match refusal {
            ClockRefusal::InFuture => with_suffix(&self.path, ".held-future"),
            ClockRefusal::TooOld => with_suffix(&self.path, ".held-old"),
        }
    }

    /// The holding area for `refusal`, opened (created) if need be.
    fn held_log(&mut self, refusal: ClockRefusal) -> Result<&mut FileBuffer, Error> {
        let path = self.held_path(refusal);
        let (hold, options) = (self.options.hold, self.options);
        let slot = &mut self.held[slot(refusal)];
        if slot.is_none() {
            *slot = Some(Box::new(Self::open_log(path, hold, options)?));
        }
        slot.as_deref_mut()
            .ok_or_else(|| Error::Storage(io::Error::other("holding area not open")))
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
        let live = self
            .file_len
            .saturating_sub(MAGIC.len() as u64 + self.dead_bytes);
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
        // A seq named twice frees its record once (found by fuzzing:
        // counting it twice drove the dead-byte count past the file size).
        let mut seqs = seqs.to_vec();
        seqs.sort_unstable();
        seqs.dedup();
        let mut payload = Vec::with_capacity(8 * seqs.len());
        let mut freed = 0;
        for seq in seqs {
            if let Some(len) = self.index.size_of(seq) {
                payload.extend_from_slice(&seq.to_le_bytes());
                freed += reading_record_len(len);
            }
        }
        if payload.is_empty() {
            return None;
        }
        let mut record = Vec::with_capacity(HEADER + payload.len());
        encode_removal(&mut record, &payload);
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
        // Into the rejected file first: a crash in between leaves the
        // reading in both places, never in neither.
        self.rejected
            .append(readings, reason)
            .map_err(Error::Storage)?;
        let seqs: Vec<u64> = readings.iter().map(EncodedReading::seq).collect();
        self.append_removed(&seqs)
    }

    fn hold(
        &mut self,
        readings: &[EncodedReading],
        refusal: ClockRefusal,
    ) -> Result<Option<Pushed>, Error> {
        // Into the holding area first, as for `reject`; pushing a reading
        // held already (after such a crash) is a no-op.
        let log = self.held_log(refusal)?;
        let mut pushed = Pushed::default();
        for r in readings {
            match log.push(r.clone()) {
                Ok(p) => pushed.dropped.extend(p.dropped),
                Err(Error::DuplicateSeq(_)) => {}
                Err(e) if e.is_buffer_full() => pushed.dropped.push(r.seq()),
                Err(e) => return Err(e),
            }
        }
        let seqs: Vec<u64> = readings.iter().map(EncodedReading::seq).collect();
        self.append_removed(&seqs)?;
        Ok(Some(pushed))
    }

    fn held(&self, refusal: ClockRefusal) -> Result<Vec<EncodedReading>, Error> {
        match &self.held[slot(refusal)] {
            Some(log) => log.peek(usize::MAX, usize::MAX),
            None => Ok(Vec::new()),
        }
    }

    fn held_len(&self, refusal: ClockRefusal) -> usize {
        self.held[slot(refusal)].as_ref().map_or(0, |log| log.len())
    }

    fn release(&mut self, refusal: ClockRefusal) -> Result<Pushed, Error> {
        let held = self.held(refusal)?;
        let mut out = Pushed::default();
        let mut moved = Vec::new();
        let mut result = Ok(());
        for r in held {
            let seq = r.seq();
            let step = match Release::decide(seq, self.index.plan_push(&r)) {
                Ok(step) => step,
                Err(e) => {
                    result = Err(e);
                    break;
                }
            };
            match step {
                // Into the flush order first: a crash before the holding
                // area forgets it leaves it in both, never in neither.
                Release::Push(_) => match self.push(r) {
                    Ok(p) => out.dropped.extend(p.dropped),
                    Err(e) => {
                        result = Err(e);
                        break;
                    }
                },
                Release::AlreadyThere => {}
                Release::Lost => out.dropped.push(seq),
                Release::Stop => break,
            }
            moved.push(seq);
        }
        if let Some(log) = self.held[slot(refusal)].as_deref_mut() {
            log.acknowledge(&moved)?;
        }
        result.map(|()| out)
    }

    fn forget_held(&mut self, seqs: &[u64]) -> Result<(), Error> {
        for log in self.held.iter_mut().flatten() {
            log.acknowledge(seqs)?;
        }
        Ok(())
    }

    fn len(&self) -> usize {
        self.index.len()
    }

    fn bytes(&self) -> usize {
        self.index.bytes()
    }
}

fn slot(refusal: ClockRefusal) -> usize {
    match refusal {
        ClockRefusal::InFuture => 0,
        ClockRefusal::TooOld => 1,
    }
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

fn live_bytes(index: &MemoryBuffer) -> u64 {
    index.iter().map(|(_, j)| reading_record_len(j.len())).sum()
}

#[cfg(test)]
mod tests;
