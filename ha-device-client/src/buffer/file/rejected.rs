//! The rejected-readings file: JSON lines of readings the server refused
//! for good, size-bounded by rotation.

use std::fs::{self, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::path::PathBuf;

use crate::buffer::EncodedReading;
use crate::error::ServerError;

/// `<path>.rejected`, rotated to `<path>.rejected.1` past its limit.
#[derive(Debug)]
pub(super) struct RejectedFile {
    path: PathBuf,
    /// Where the file rotates to.
    rotated: PathBuf,
    max_bytes: u64,
    /// Lines deleted by rotation since the buffer was opened.
    dropped: u64,
}

impl RejectedFile {
    pub(super) fn new(path: PathBuf, rotated: PathBuf, max_bytes: u64) -> Self {
        RejectedFile {
            path,
            rotated,
            max_bytes,
            dropped: 0,
        }
    }

    pub(super) fn path(&self) -> &PathBuf {
        &self.path
    }

    pub(super) fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Appends one line per reading, `{"reason":{...},"reading":{...}}`,
    /// synced; rotates first if the file would pass its limit.
    pub(super) fn append(
        &mut self,
        readings: &[EncodedReading],
        reason: &ServerError,
    ) -> io::Result<()> {
        let reason_json = serde_json::json!({
            "status": reason.status,
            "error": reason.code,
            "message": reason.message,
            "field": reason.field,
            "index": reason.index,
        })
        .to_string();
        let mut lines = Vec::new();
        for r in readings {
            lines.extend_from_slice(br#"{"reason":"#);
            lines.extend_from_slice(reason_json.as_bytes());
            lines.extend_from_slice(br#","reading":"#);
            lines.extend_from_slice(r.json());
            lines.extend_from_slice(b"}\n");
        }
        let len = match fs::metadata(&self.path) {
            Ok(m) => m.len(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
            Err(e) => return Err(e),
        };
        if len > 0 && len + lines.len() as u64 > self.max_bytes {
            self.rotate()?;
        }
        let mut f = OpenOptions::new()
            .append(true)
            .create(true)
            .open(&self.path)?;
        f.write_all(&lines)?;
        f.sync_data()
    }

    fn rotate(&mut self) -> io::Result<()> {
        let old = &self.rotated;
        let lost = match fs::File::open(old) {
            Ok(f) => {
                let mut n = 0u64;
                for line in BufReader::new(f).split(b'\n') {
                    line?;
                    n += 1;
                }
                n
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
            Err(e) => return Err(e),
        };
        fs::rename(&self.path, old)?;
        if lost > 0 {
            self.dropped += lost;
            tracing::warn!(
                path = %old.display(),
                lines = lost,
                "Rejected-readings file full; dropped its oldest rotation."
            );
        }
        Ok(())
    }
}
