//! Property fuzzing (stable Rust, proptest) of the buffer-file reader:
//! `FileBuffer::open` on arbitrary bytes and on mutated valid files never
//! panics, keeps within its bounds, allocates in proportion to the file
//! (never to a length field: a 4 GiB length prefix allocates nothing of
//! the kind), recovers to a file that reopens identically, and round-trips
//! valid files exactly.
//!
//! `cargo test -p ha-device-client --test buffer_fuzz` (a few seconds;
//! `PROPTEST_CASES=5000` for a longer run).
//!
//! One `#[test]` only: the allocation counter is process-wide, so nothing
//! else may run beside it in this binary.
#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::alloc::System;
use std::fs;
use std::path::{Path, PathBuf};

use ha_core::wire::{Metric, Reading, Timestamp};
use ha_device_client::{
    Buffer, BufferLimits, EncodedReading, FileBuffer, FileOptions, MemoryBuffer, OverflowPolicy,
};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const MAGIC: &[u8] = b"HADCBUF1";

fn limits() -> BufferLimits {
    BufferLimits {
        max_readings: 50,
        max_bytes: 8 << 10,
        overflow: OverflowPolicy::DropOldest,
    }
}

fn options() -> FileOptions {
    FileOptions::default().with_sync(false)
}

fn reading(seq: u64, value: f64) -> EncodedReading {
    EncodedReading::encode(&Reading {
        device_id: "dev-1".into(),
        seq,
        ts: Timestamp::from_unix_micros(1_795_694_400_000_000 + seq as i64),
        metrics: vec![Metric::new("pulse", value)],
    })
}

#[derive(Clone, Debug)]
enum Op {
    Push(u64, f64),
    Ack(Vec<u64>),
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    let op = prop_oneof![
        3 => (0u64..80, -1e6f64..1e6).prop_map(|(s, v)| Op::Push(s, v)),
        1 => proptest::collection::vec(0u64..80, 1..6).prop_map(Op::Ack),
    ];
    proptest::collection::vec(op, 0..60)
}

fn seqs(b: &impl Buffer) -> Vec<EncodedReading> {
    b.peek(usize::MAX, usize::MAX).unwrap()
}

/// Writes a valid buffer file by applying `ops` to a `FileBuffer`, and the
/// same ops to a `MemoryBuffer` (the model).
fn write_valid(path: &Path, ops: &[Op]) -> MemoryBuffer {
    let _ = fs::remove_file(path);
    let mut file = FileBuffer::open_with(path, limits(), options()).unwrap();
    let mut model = MemoryBuffer::new(limits());
    for op in ops {
        match op {
            Op::Push(s, v) => {
                let a = file.push(reading(*s, *v)).map(|p| p.dropped);
                let b = model.push(reading(*s, *v)).map(|p| p.dropped);
                assert_eq!(a.is_ok(), b.is_ok());
                if let (Ok(a), Ok(b)) = (a, b) {
                    assert_eq!(a, b);
                }
            }
            Op::Ack(seqs) => {
                file.acknowledge(seqs).unwrap();
                model.acknowledge(seqs).unwrap();
            }
        }
    }
    model
}

/// Opens `bytes` as a buffer file and checks what must hold for any input:
/// no panic (the runner reports one), bounds kept, allocation in
/// proportion to the input, and a recovered file that reopens with the
/// same readings and nothing more to repair.
fn open_any(path: &Path, bytes: &[u8]) -> Result<Option<Vec<EncodedReading>>, TestCaseError> {
    fs::write(path, bytes).unwrap();
    let region = Region::new(GLOBAL);
    let opened = FileBuffer::open_with(path, limits(), options());
    let allocated = region.change().bytes_allocated;
    // Reading the file (Vec doubling), the kept readings, the index and a
    // compaction buffer: each at most about the file's size.
    let bound = 6 * bytes.len() + (64 << 10);
    prop_assert!(
        allocated <= bound,
        "{allocated} bytes allocated opening {} bytes",
        bytes.len()
    );
    let b = match opened {
        Ok(b) => b,
        Err(e) => {
            prop_assert!(!bytes.starts_with(MAGIC), "a buffer file was refused: {e}");
            return Ok(None);
        }
    };
    prop_assert!(b.len() <= limits().max_readings);
    prop_assert!(b.bytes() <= limits().max_bytes);
    let held = seqs(&b);
    prop_assert!(held.windows(2).all(|w| w[0].seq() < w[1].seq()));
    drop(b);
    let again = FileBuffer::open_with(path, limits(), options()).unwrap();
    prop_assert_eq!(&seqs(&again), &held, "reopening changed the readings");
    let rec = again.recovery();
    prop_assert_eq!((rec.discarded_bytes, rec.skipped_bytes), (0, 0));
    Ok(Some(held))
}

struct Dir(PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

#[test]
fn buffer_file_reader_properties() {
    let dir = Dir(std::env::temp_dir().join(format!("ha-dc-fuzz-{}", std::process::id())));
    let _ = fs::remove_dir_all(&dir.0);
    fs::create_dir_all(&dir.0).unwrap();
    let path = dir.0.join("buf");
    let config = Config {
        failure_persistence: None,
        ..Config::default()
    };

    // 1. Arbitrary bytes, with and without the magic.
    TestRunner::new(config.clone())
        .run(
            &(
                any::<bool>(),
                proptest::collection::vec(any::<u8>(), 0..4096),
            ),
            |(magic, tail)| {
                let mut bytes = if magic { MAGIC.to_vec() } else { Vec::new() };
                bytes.extend_from_slice(&tail);
                open_any(&path, &bytes).map(|_| ())
            },
        )
        .unwrap();

    // 2. Valid files round-trip exactly (same readings, same bytes, as the
    //    model), and reopen with nothing to repair.
    TestRunner::new(config.clone())
        .run(&ops(), |ops| {
            let model = write_valid(&path, &ops);
            let bytes = fs::read(&path).unwrap();
            let held = open_any(&path, &bytes)?.expect("a valid file opens");
            prop_assert_eq!(&held, &seqs(&model));
            let b = FileBuffer::open_with(&path, limits(), options()).unwrap();
            prop_assert_eq!(b.recovery().readings, model.len());
            prop_assert_eq!(b.bytes(), model.bytes());
            Ok(())
        })
        .unwrap();

    // 3. Mutated valid files: bit flips, overwritten length fields (up to
    //    4 GiB), truncation, inserted garbage.
    #[derive(Clone, Debug)]
    enum Mutation {
        Flip(usize, u8),
        Length(usize, u32),
        Truncate(usize),
        Insert(usize, Vec<u8>),
    }
    let mutation = prop_oneof![
        (any::<usize>(), 1u8..=255).prop_map(|(at, x)| Mutation::Flip(at, x)),
        (
            any::<usize>(),
            prop_oneof![Just(u32::MAX), Just(1 << 31), any::<u32>()]
        )
            .prop_map(|(at, len)| Mutation::Length(at, len)),
        any::<usize>().prop_map(Mutation::Truncate),
        (
            any::<usize>(),
            proptest::collection::vec(any::<u8>(), 1..64)
        )
            .prop_map(|(at, g)| Mutation::Insert(at, g)),
    ];
    TestRunner::new(config)
        .run(
            &(ops(), proptest::collection::vec(mutation, 1..4)),
            |(ops, mutations)| {
                write_valid(&path, &ops);
                let mut bytes = fs::read(&path).unwrap();
                for m in mutations {
                    let n = bytes.len();
                    match m {
                        Mutation::Flip(at, x) => bytes[at % n] ^= x,
                        Mutation::Length(at, len) if n >= 4 => {
                            let at = at % (n - 3);
                            bytes[at..at + 4].copy_from_slice(&len.to_le_bytes());
                        }
                        Mutation::Length(..) => {}
                        Mutation::Truncate(at) => bytes.truncate(at % (n + 1)),
                        Mutation::Insert(at, g) => {
                            let at = at % (n + 1);
                            bytes.splice(at..at, g);
                        }
                    }
                    if bytes.is_empty() {
                        break;
                    }
                }
                open_any(&path, &bytes).map(|_| ())
            },
        )
        .unwrap();

    // 4. The named case: a record whose length prefix says 4 GiB, followed
    //    by intact records. Nothing near 4 GiB is allocated, and the later
    //    records are kept (resynchronisation).
    let mut model_ops: Vec<Op> = (0..5).map(|s| Op::Push(s, s as f64)).collect();
    model_ops.push(Op::Ack(vec![]));
    write_valid(&path, &model_ops[..5]);
    let mut bytes = fs::read(&path).unwrap();
    bytes[MAGIC.len()..MAGIC.len() + 4].copy_from_slice(&u32::MAX.to_le_bytes());
    let held = open_any(&path, &bytes).unwrap().unwrap();
    let got: Vec<u64> = held.iter().map(EncodedReading::seq).collect();
    assert_eq!(got, [1, 2, 3, 4]);
}
