use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;
use crate::buffer::OverflowPolicy;
use crate::buffer::conformance::{self as suite, reading};

/// A fresh directory under the system temp dir, removed on drop.
pub(crate) struct TempDir(PathBuf);

impl TempDir {
    pub(crate) fn new(name: &str) -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "ha-dc-{name}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    pub(crate) fn join(&self, p: &str) -> PathBuf {
        self.0.join(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn seqs(b: &FileBuffer) -> Vec<u64> {
    b.peek(usize::MAX, usize::MAX)
        .unwrap()
        .iter()
        .map(EncodedReading::seq)
        .collect()
}

#[test]
fn conformance() {
    let dir = TempDir::new("conf");
    let mut n = 0;
    suite::run_all(|limits| {
        n += 1;
        FileBuffer::open(dir.join(&format!("b{n}")), limits).unwrap()
    });
}

#[test]
fn survives_reopen() {
    let dir = TempDir::new("reopen");
    let path = dir.join("buf");
    {
        let mut b = FileBuffer::open(&path, BufferLimits::default()).unwrap();
        for s in 0..10 {
            b.push(reading(s)).unwrap();
        }
        b.acknowledge(&[0, 1, 2, 7]).unwrap();
    }
    let b = FileBuffer::open(&path, BufferLimits::default()).unwrap();
    assert_eq!(seqs(&b), [3, 4, 5, 6, 8, 9]);
    assert_eq!(b.recovery().readings, 6);
    assert_eq!(b.recovery().discarded_bytes, 0);
    assert_eq!(
        b.bytes(),
        [3, 4, 5, 6, 8, 9]
            .map(|s| reading(s).len())
            .iter()
            .sum::<usize>()
    );
    assert_eq!(
        b.peek(1, usize::MAX).unwrap()[0],
        reading(3),
        "bytes come back unchanged"
    );
}

#[test]
fn replay_applies_overflow_drops() {
    let dir = TempDir::new("overflow");
    let path = dir.join("buf");
    let limits = BufferLimits {
        max_readings: 3,
        ..BufferLimits::default()
    };
    {
        let mut b = FileBuffer::open(&path, limits).unwrap();
        for s in 0..5 {
            b.push(reading(s)).unwrap();
        }
    }
    assert_eq!(seqs(&FileBuffer::open(&path, limits).unwrap()), [2, 3, 4]);
}

/// Cuts the file at every byte offset of its last record (a reading, then
/// a removal): the torn record is skipped, everything before it is kept,
/// and the buffer keeps working and reopens cleanly afterwards.
#[test]
fn torn_tail_at_every_offset_is_cut_off() {
    let dir = TempDir::new("torn");
    let path = dir.join("buf");
    let mut b = FileBuffer::open(&path, BufferLimits::default()).unwrap();
    for s in 0..4 {
        b.push(reading(s)).unwrap();
    }
    drop(b);
    let before_reading = fs::read(&path).unwrap();
    let mut b = FileBuffer::open(&path, BufferLimits::default()).unwrap();
    b.push(reading(4)).unwrap();
    drop(b);
    let before_removal = fs::read(&path).unwrap();
    let mut b = FileBuffer::open(&path, BufferLimits::default()).unwrap();
    b.acknowledge(&[0, 1]).unwrap();
    drop(b);
    let full = fs::read(&path).unwrap();

    let cases = [
        (
            &before_reading,
            &before_removal,
            vec![0, 1, 2, 3],
            vec![0, 1, 2, 3, 4],
        ),
        (&before_removal, &full, vec![0, 1, 2, 3, 4], vec![2, 3, 4]),
    ];
    for (start, end, torn_seqs, whole_seqs) in cases {
        for cut in start.len()..=end.len() {
            fs::write(&path, &end[..cut]).unwrap();
            let mut b = FileBuffer::open(&path, BufferLimits::default()).unwrap();
            let want = if cut == end.len() {
                &whole_seqs
            } else {
                &torn_seqs
            };
            assert_eq!(&seqs(&b), want, "cut at {cut}");
            assert_eq!(
                b.recovery().discarded_bytes,
                (cut - start.len()) as u64 % (end.len() - start.len()) as u64
            );
            b.push(reading(100)).unwrap();
            drop(b);
            let b = FileBuffer::open(&path, BufferLimits::default()).unwrap();
            assert_eq!(b.recovery().discarded_bytes, 0, "cut at {cut}");
            let mut want = want.clone();
            want.push(100);
            assert_eq!(seqs(&b), want, "cut at {cut}");
        }
    }
}

#[test]
fn corrupt_last_record_is_skipped() {
    let dir = TempDir::new("crc");
    let path = dir.join("buf");
    let mut b = FileBuffer::open(&path, BufferLimits::default()).unwrap();
    for s in 0..3 {
        b.push(reading(s)).unwrap();
    }
    drop(b);
    let mut bytes = fs::read(&path).unwrap();
    let last = bytes.len() - 3;
    bytes[last] ^= 0x20;
    fs::write(&path, &bytes).unwrap();
    let b = FileBuffer::open(&path, BufferLimits::default()).unwrap();
    assert_eq!(seqs(&b), [0, 1]);
    assert!(b.recovery().discarded_bytes > 0);
}

/// Byte offsets of each record of a buffer file (after the magic).
fn record_offsets(bytes: &[u8]) -> Vec<usize> {
    let mut out = Vec::new();
    let mut pos = MAGIC.len();
    while pos + HEADER <= bytes.len() {
        out.push(pos);
        let len = u32::from_le_bytes(bytes[pos..pos + 4].try_into().unwrap()) as usize;
        pos += HEADER + len;
    }
    out
}

/// Issue 14: one corrupt record in the middle of the file no longer
/// truncates everything after it. Each record of a 20-reading file is
/// corrupted in turn (a payload bit, the length, the checksum): every
/// other reading is recovered, the skip is counted, the file is rewritten
/// clean, and the buffer keeps working.
#[test]
fn corrupt_record_in_the_middle_is_skipped_and_later_ones_kept() {
    let dir = TempDir::new("middle");
    let path = dir.join("buf");
    let mut b = FileBuffer::open(&path, BufferLimits::default()).unwrap();
    for s in 0..20 {
        b.push(reading(s)).unwrap();
    }
    drop(b);
    let clean = fs::read(&path).unwrap();
    let offsets = record_offsets(&clean);
    assert_eq!(offsets.len(), 20);
    for (victim, &at) in offsets.iter().enumerate().take(19) {
        for (what, byte) in [
            ("payload", at + HEADER + 12),
            ("length", at + 1),
            ("crc", at + 5),
        ] {
            let mut bytes = clean.clone();
            bytes[byte] ^= 0x41;
            fs::write(&path, &bytes).unwrap();
            let mut b = FileBuffer::open(&path, BufferLimits::default()).unwrap();
            let want: Vec<u64> = (0..20).filter(|&s| s != victim as u64).collect();
            assert_eq!(seqs(&b), want, "{what} of record {victim}");
            let rec = b.recovery();
            assert_eq!(rec.skipped_regions, 1, "{what} of record {victim}");
            assert_eq!(rec.skipped_bytes, (offsets[victim + 1] - at) as u64);
            assert_eq!(rec.discarded_bytes, 0);
            assert_eq!(rec.readings, 19);
            b.push(reading(100)).unwrap();
            drop(b);
            let b = FileBuffer::open(&path, BufferLimits::default()).unwrap();
            assert_eq!(b.recovery().skipped_regions, 0, "rewritten clean");
            assert_eq!(b.recovery().discarded_bytes, 0);
            assert_eq!(b.len(), 20);
        }
    }
}

/// A corrupt stretch in the middle and a torn tail in the same file: the
/// middle is skipped, the tail cut.
#[test]
fn corrupt_middle_and_torn_tail_together() {
    let dir = TempDir::new("both");
    let path = dir.join("buf");
    let mut b = FileBuffer::open(&path, BufferLimits::default()).unwrap();
    for s in 0..6 {
        b.push(reading(s)).unwrap();
    }
    b.acknowledge(&[0]).unwrap();
    drop(b);
    let mut bytes = fs::read(&path).unwrap();
    let offsets = record_offsets(&bytes);
    // Garbage over records 2 and 3, and the last record (the removal) torn.
    for byte in &mut bytes[offsets[2] + 3..offsets[4] - 2] {
        *byte = 0xA5;
    }
    bytes.truncate(bytes.len() - 4);
    fs::write(&path, &bytes).unwrap();
    let b = FileBuffer::open(&path, BufferLimits::default()).unwrap();
    assert_eq!(seqs(&b), [0, 1, 4, 5], "the torn removal of 0 is lost");
    assert_eq!(b.recovery().skipped_regions, 1);
    assert_eq!(b.recovery().discarded_bytes, 13);
}

/// Found by the property fuzzer: acknowledging a `seq` twice in one call
/// counted its record as freed twice, and the next compaction check
/// underflowed.
#[test]
fn acknowledging_a_seq_twice_frees_it_once() {
    let dir = TempDir::new("dup-ack");
    let path = dir.join("buf");
    let mut b = FileBuffer::open(&path, BufferLimits::default()).unwrap();
    b.push(reading(0)).unwrap();
    b.push(reading(1)).unwrap();
    b.acknowledge(&[0, 0, 0]).unwrap();
    assert_eq!(seqs(&b), [1]);
    let live = reading_record_len(reading(1).len());
    assert_eq!(b.file_len() - MAGIC.len() as u64 - b.dead_bytes, live);
    b.push(reading(2)).unwrap();
    drop(b);
    assert_eq!(
        seqs(&FileBuffer::open(&path, BufferLimits::default()).unwrap()),
        [1, 2]
    );
}

#[test]
fn torn_header_of_a_new_file_and_foreign_files() {
    let dir = TempDir::new("header");
    let path = dir.join("buf");
    fs::write(&path, &MAGIC[..3]).unwrap();
    assert!(
        FileBuffer::open(&path, BufferLimits::default())
            .unwrap()
            .is_empty()
    );
    fs::write(&path, b"not a buffer at all").unwrap();
    assert!(matches!(
        FileBuffer::open(&path, BufferLimits::default()),
        Err(Error::Storage(_))
    ));
}

#[test]
fn compaction_bounds_the_file_and_keeps_the_readings() {
    let dir = TempDir::new("compact");
    let path = dir.join("buf");
    let mut b = FileBuffer::open(&path, BufferLimits::default()).unwrap();
    b.set_sync(false);
    let mut peak = 0;
    for s in 0..5000u64 {
        b.push(reading(s)).unwrap();
        if s >= 10 {
            b.acknowledge(&[s - 10]).unwrap();
        }
        peak = peak.max(b.file_len());
    }
    assert!(peak < 3 * COMPACT_MIN_DEAD, "file grew to {peak}");
    assert_eq!(b.file_len(), fs::metadata(&path).unwrap().len());
    drop(b);
    let b = FileBuffer::open(&path, BufferLimits::default()).unwrap();
    assert_eq!(seqs(&b), (4990..5000).collect::<Vec<_>>());
    assert!(!with_suffix(&path, ".tmp").exists());
}

#[test]
fn rejected_readings_go_to_their_file() {
    let dir = TempDir::new("rejected");
    let path = dir.join("buf");
    let mut b = FileBuffer::open(&path, BufferLimits::default()).unwrap();
    for s in 0..3 {
        b.push(reading(s)).unwrap();
    }
    let reason = ServerError {
        status: 422,
        code: "ts_in_future".into(),
        message: "ts must not be more than 5 minutes in the future".into(),
        field: Some("ts".into()),
        index: Some(0),
    };
    b.reject(&[reading(1)], &reason).unwrap();
    assert_eq!(seqs(&b), [0, 2]);
    let text = fs::read_to_string(b.rejected_path()).unwrap();
    let line: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(line["reason"]["error"], "ts_in_future");
    assert_eq!(line["reason"]["status"], 422);
    assert_eq!(line["reading"]["seq"], 1);
    drop(b);
    assert_eq!(
        seqs(&FileBuffer::open(&path, BufferLimits::default()).unwrap()),
        [0, 2]
    );
}

/// The rejected file rotates past its limit: `.rejected.1` holds the
/// previous lines, the one before is deleted and its lines counted.
#[test]
fn rejected_file_is_bounded_by_rotation() {
    let dir = TempDir::new("rotate");
    let path = dir.join("buf");
    let options = FileOptions::default().with_rejected_limit(4096);
    let mut b = FileBuffer::open_with(&path, BufferLimits::default(), options).unwrap();
    let reason = ServerError {
        status: 400,
        code: "malformed".into(),
        ..ServerError::default()
    };
    let line_len = {
        b.push(reading(0)).unwrap();
        b.reject(&[reading(0)], &reason).unwrap();
        fs::metadata(b.rejected_path()).unwrap().len()
    };
    let per_file = 4096 / line_len;
    let total = 3 * per_file + 2;
    for s in 1..total {
        b.push(reading(s)).unwrap();
        b.reject(&[reading(s)], &reason).unwrap();
        assert!(fs::metadata(b.rejected_path()).unwrap().len() <= 4096);
    }
    let rotated = with_suffix(&b.rejected_path(), ".1");
    let lines = |p: &Path| fs::read_to_string(p).unwrap().lines().count() as u64;
    let kept = lines(&b.rejected_path()) + lines(&rotated);
    assert_eq!(
        kept + b.rejected_dropped(),
        total,
        "every line kept or counted"
    );
    assert!(b.rejected_dropped() >= per_file);
    let last: serde_json::Value = serde_json::from_str(
        fs::read_to_string(b.rejected_path())
            .unwrap()
            .lines()
            .last()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(last["reading"]["seq"], total - 1, "the newest are kept");
    assert!(b.is_empty());
    assert!(
        FileBuffer::open_with(
            &path,
            BufferLimits::default(),
            FileOptions::default().with_rejected_limit(10)
        )
        .is_err()
    );
}

const CHILD_ENV: &str = "HA_DC_FILEBUF_CHILD";

/// Not a test on its own: the body of the child process that
/// `killed_writer_loses_nothing_it_reported` SIGKILLs. It appends readings
/// (and acknowledges every third) forever, printing each `seq` once its
/// push returned.
#[test]
fn child_writer() {
    let Ok(path) = std::env::var(CHILD_ENV) else {
        return;
    };
    let limits = BufferLimits {
        max_readings: 1_000_000,
        max_bytes: 1 << 30,
        overflow: OverflowPolicy::RejectNew,
    };
    let mut b = FileBuffer::open(&path, limits).unwrap();
    let mut seq = b
        .peek(usize::MAX, usize::MAX)
        .unwrap()
        .last()
        .map_or(0, |r| r.seq() + 1);
    let mut out = std::io::stdout().lock();
    loop {
        b.push(reading(seq)).unwrap();
        if seq % 3 == 2 {
            b.acknowledge(&[seq - 1]).unwrap();
        }
        writeln!(out, "stored {seq}").unwrap();
        out.flush().unwrap();
        seq += 1;
    }
}

/// Kills a writer process with SIGKILL at arbitrary points (between and in
/// the middle of writes), three times over the same file: every `seq` the
/// child reported stored survives, acknowledged ones stay gone, and the
/// file always reopens.
#[test]
fn killed_writer_loses_nothing_it_reported() {
    let dir = TempDir::new("kill");
    let path = dir.join("buf");
    let exe = std::env::current_exe().unwrap();
    let mut reported = Vec::new();
    for round in 0..3u64 {
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "buffer::file::tests::child_writer",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, &path)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let stop_after = 50 + 37 * round;
        let mut seen = 0;
        for line in lines.by_ref() {
            let line = line.unwrap();
            if let Some(seq) = line.strip_prefix("stored ") {
                reported.push(seq.parse::<u64>().unwrap());
                seen += 1;
                if seen == stop_after {
                    break;
                }
            }
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        // Lines already printed before the kill landed.
        for line in lines.map_while(Result::ok) {
            if let Some(seq) = line.strip_prefix("stored ") {
                reported.push(seq.parse().unwrap());
            }
        }
        let b = FileBuffer::open(&path, BufferLimits::default()).unwrap();
        let held = seqs(&b);
        for &s in &reported {
            if s % 3 != 1 {
                assert!(held.contains(&s), "round {round}: seq {s} lost");
            } else if reported.contains(&(s + 1)) {
                assert!(
                    !held.contains(&s),
                    "round {round}: acknowledged seq {s} back"
                );
            }
            // Else the kill may have landed after the acknowledgement of
            // `s` but before `s + 1` was reported: either state is right.
        }
        // No gaps: everything not acknowledged is there.
        let max = *held.last().unwrap();
        for s in 0..=max {
            if s % 3 != 1 {
                assert!(held.contains(&s), "round {round}: gap at {s}");
            }
        }
    }
    assert!(reported.len() >= 50 + 87 + 124);
}

/// A buffer file written by the format of release 0.1 (readings 0-5,
/// 1 acknowledged, 3 rejected) opens unchanged.
#[test]
fn existing_buffer_files_open_unchanged() {
    let dir = TempDir::new("fixture");
    let path = dir.join("buf");
    let fixture = include_bytes!("../../../tests/data/buffer-v1.log");
    fs::write(&path, fixture).unwrap();
    let b = FileBuffer::open(&path, BufferLimits::default()).unwrap();
    assert_eq!(seqs(&b), [0, 2, 4, 5]);
    assert_eq!(
        b.recovery(),
        Recovery {
            readings: 4,
            ..Recovery::default()
        }
    );
    for r in b.peek(10, usize::MAX).unwrap() {
        assert_eq!(r, reading(r.seq()));
    }
    drop(b);
    assert_eq!(fs::read(&path).unwrap(), fixture, "opening changed nothing");
}
