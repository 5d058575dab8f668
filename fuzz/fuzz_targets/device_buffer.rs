//! The device buffer file reader: any file content opens (recovering what
//! is intact) or gives an error, never a panic; a recovered file reopens
//! unchanged.
#![no_main]

use std::sync::atomic::{AtomicU64, Ordering};

use ha_device_client::{Buffer, BufferLimits, FileBuffer};
use libfuzzer_sys::fuzz_target;

static RUN: AtomicU64 = AtomicU64::new(0);

fuzz_target!(|data: &[u8]| {
    let dir = std::env::temp_dir().join(format!(
        "ha-fuzz-buffer-{}-{}",
        std::process::id(),
        RUN.fetch_add(1, Ordering::Relaxed)
    ));
    if std::fs::create_dir_all(&dir).is_err() {
        return;
    }
    let path = dir.join("buffer.log");
    if std::fs::write(&path, data).is_ok()
        && let Ok(first) = FileBuffer::open(&path, BufferLimits::default())
    {
        let kept = first.len();
        drop(first);
        let again = FileBuffer::open(&path, BufferLimits::default()).expect("a recovered file reopens");
        assert_eq!(again.len(), kept);
    }
    let _ = std::fs::remove_dir_all(&dir);
});
