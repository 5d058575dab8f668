//! A run's report as a JSON file (`data-generator --report-file`), so that
//! a generator running in its own process or container can be audited
//! afterwards: what each device generated, which `seq`s were acknowledged,
//! and every send with its start and end.
//!
//! Send times are a process's monotonic [`Instant`]s, which mean nothing
//! outside it: the file holds them as wall-clock microseconds since the
//! epoch (the clock a host and its containers share), converted through an
//! [`Anchor`] taken on each side.

use std::path::Path;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::{DeviceReport, GeneratorReport, SendRecord};

/// One moment read on both clocks: converts between the process's
/// [`Instant`]s and wall-clock microseconds.
#[derive(Clone, Copy, Debug)]
pub struct Anchor {
    instant: Instant,
    unix_micros: i64,
}

impl Anchor {
    /// Both clocks, now.
    pub fn now() -> Anchor {
        let unix_micros = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as i64);
        Anchor {
            instant: Instant::now(),
            unix_micros,
        }
    }

    /// `at` on the wall clock.
    pub fn to_unix_micros(&self, at: Instant) -> i64 {
        if at >= self.instant {
            self.unix_micros + (at - self.instant).as_micros() as i64
        } else {
            self.unix_micros - (self.instant - at).as_micros() as i64
        }
    }

    /// The wall-clock time `micros` as an [`Instant`] of this process
    /// (times before the process's clock began come out as its origin).
    pub fn to_instant(&self, micros: i64) -> Instant {
        let offset = std::time::Duration::from_micros(micros.abs_diff(self.unix_micros));
        if micros >= self.unix_micros {
            self.instant + offset
        } else {
            self.instant.checked_sub(offset).unwrap_or(self.instant)
        }
    }
}

/// The file's content.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportFile {
    /// Per device, sorted by id.
    pub devices: Vec<DeviceEntry>,
}

/// One device (see [`DeviceReport`]; the client's counters are not kept).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceEntry {
    /// The device.
    pub device_id: String,
    /// Readings generated.
    pub generated: u64,
    /// Acknowledged `seq` ranges, inclusive.
    pub acknowledged: Vec<(u64, u64)>,
    /// `seq`s of injected spikes.
    pub spikes: Vec<u64>,
    /// Why the device could not run, if it could not.
    pub error: Option<String>,
    /// Every send.
    pub sends: Vec<SendEntry>,
}

/// One send, its times in wall-clock microseconds since the epoch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendEntry {
    /// When the send began.
    pub started_unix_us: i64,
    /// When it was acknowledged or given up.
    pub finished_unix_us: i64,
    /// Retries it needed.
    pub retries: u64,
    /// Whether everything it carried was acknowledged.
    pub ok: bool,
}

/// Why a report file cannot be written or read.
#[derive(Debug, thiserror::Error)]
pub enum ReportFileError {
    /// Writing (or renaming) the file failed.
    #[error("cannot write the report file {path}: {source}")]
    Write {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Reading the file failed.
    #[error("cannot read the report file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not the JSON of a [`ReportFile`].
    #[error("the report file {path} is not a generator report: {source}")]
    Format {
        /// The file.
        path: String,
        /// What the JSON parser said.
        source: serde_json::Error,
    },
}

impl ReportFileError {
    /// The file could not be read or written (as opposed to parsed).
    pub fn is_io(&self) -> bool {
        matches!(self, Self::Write { .. } | Self::Read { .. })
    }
}

impl ReportFile {
    /// `report`, its send times converted with `anchor`.
    pub fn from_report(report: &GeneratorReport, anchor: &Anchor) -> ReportFile {
        let devices = report
            .devices
            .iter()
            .map(|d| DeviceEntry {
                device_id: d.device_id.clone(),
                generated: d.generated,
                acknowledged: d.acknowledged.clone(),
                spikes: d.spikes.clone(),
                error: d.error.clone(),
                sends: d
                    .sends
                    .iter()
                    .map(|s| SendEntry {
                        started_unix_us: anchor.to_unix_micros(s.started),
                        finished_unix_us: anchor.to_unix_micros(s.finished),
                        retries: s.retries,
                        ok: s.ok,
                    })
                    .collect(),
            })
            .collect();
        ReportFile { devices }
    }

    /// The report, its send times as [`Instant`]s of this process.
    pub fn into_report(self, anchor: &Anchor) -> GeneratorReport {
        let devices = self
            .devices
            .into_iter()
            .map(|d| DeviceReport {
                sends: d
                    .sends
                    .iter()
                    .map(|s| SendRecord {
                        started: anchor.to_instant(s.started_unix_us),
                        finished: anchor.to_instant(s.finished_unix_us),
                        retries: s.retries,
                        ok: s.ok,
                    })
                    .collect(),
                device_id: d.device_id,
                generated: d.generated,
                acknowledged: d.acknowledged,
                spikes: d.spikes,
                error: d.error,
                counters: Default::default(),
            })
            .collect();
        GeneratorReport::new(devices)
    }

    /// Writes the file (to a temporary name first, then renamed: a reader
    /// never sees half of it).
    pub fn write(&self, path: &Path) -> Result<(), ReportFileError> {
        let err = |source| ReportFileError::Write {
            path: path.display().to_string(),
            source,
        };
        let json = serde_json::to_vec(self).map_err(|e| err(std::io::Error::other(e)))?;
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".partial");
        std::fs::write(&tmp, json).map_err(err)?;
        std::fs::rename(&tmp, path).map_err(err)
    }

    /// Reads a file [`write`](Self::write) wrote.
    pub fn read(path: &Path) -> Result<ReportFile, ReportFileError> {
        let bytes = std::fs::read(path).map_err(|source| ReportFileError::Read {
            path: path.display().to_string(),
            source,
        })?;
        serde_json::from_slice(&bytes).map_err(|source| ReportFileError::Format {
            path: path.display().to_string(),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn report(at: Instant) -> GeneratorReport {
        GeneratorReport::new(vec![DeviceReport {
            device_id: "dev-00001".into(),
            generated: 12,
            acknowledged: vec![(0, 4), (6, 11)],
            spikes: vec![7],
            error: None,
            sends: vec![
                SendRecord {
                    started: at,
                    finished: at + Duration::from_millis(3),
                    retries: 0,
                    ok: true,
                },
                SendRecord {
                    started: at + Duration::from_millis(200),
                    finished: at + Duration::from_millis(1_450),
                    retries: 2,
                    ok: false,
                },
            ],
            ..DeviceReport::default()
        }])
    }

    #[test]
    fn a_report_survives_the_file_with_its_send_times() {
        let anchor = Anchor::now();
        let at = Instant::now();
        let original = report(at);
        let dir = std::env::temp_dir().join(ha_core::conformance::unique_name("report-file-"));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("report.json");
        ReportFile::from_report(&original, &anchor)
            .write(&path)
            .unwrap();
        let back = ReportFile::read(&path).unwrap().into_report(&anchor);
        let (a, b) = (&original.devices[0], &back.devices[0]);
        assert_eq!(a.device_id, b.device_id);
        assert_eq!(a.acknowledged, b.acknowledged);
        assert_eq!(b.acknowledged_seqs().count(), 11, "seqs 0..=4 and 6..=11");
        assert_eq!((a.generated, &a.spikes), (b.generated, &b.spikes));
        for (x, y) in a.sends.iter().zip(&b.sends) {
            // Microsecond precision through the wall clock.
            assert!(
                x.started.max(y.started) - x.started.min(y.started) <= Duration::from_micros(1)
            );
            assert!(
                x.finished.max(y.finished) - x.finished.min(y.finished) <= Duration::from_micros(1)
            );
            assert_eq!((x.retries, x.ok), (y.retries, y.ok));
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn another_process_anchor_maps_the_same_wall_clock_time() {
        // Two anchors taken at different moments agree on an event's wall
        // time: that is what lets a host audit a container's sends.
        let first = Anchor::now();
        let event = Instant::now() + Duration::from_millis(50);
        let wall = first.to_unix_micros(event);
        std::thread::sleep(Duration::from_millis(20));
        let second = Anchor::now();
        let back = second.to_instant(wall);
        let skew = back.max(event) - back.min(event);
        assert!(skew < Duration::from_millis(5), "{skew:?}");
        // Before the anchor as well as after it.
        assert!(second.to_unix_micros(first.instant) < second.unix_micros);
    }

    #[test]
    fn unreadable_and_malformed_files_are_named_errors() {
        let missing = Path::new("/nonexistent/ha-report.json");
        let e = ReportFile::read(missing).unwrap_err();
        assert!(e.is_io(), "{e}");
        assert!(e.to_string().contains("/nonexistent/ha-report.json"), "{e}");
        let dir = std::env::temp_dir().join(ha_core::conformance::unique_name("report-file-"));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("bad.json");
        std::fs::write(&path, b"{\"devices\": 3}").unwrap();
        let e = ReportFile::read(&path).unwrap_err();
        assert!(
            !e.is_io() && e.to_string().contains("not a generator report"),
            "{e}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
