//! Device → partition assignment.

/// The partition of `device_id` among `partitions` queues.
///
/// The hash is 32-bit FNV-1a over the UTF-8 bytes of the device id, modulo
/// `partitions`: stable across builds, platforms and languages, so any
/// replica (and any tool) computes the same answer.
///
/// **Changing the partition count** moves most devices to another
/// partition, and a device's readings must stay in one queue to be analysed
/// in order. Change it with the pipeline drained: stop the ingest replicas
/// (devices buffer and retry), wait until every partition queue is empty,
/// set the new count in the shared configuration, then start analyzers and
/// ingest again. Analyzers rebuild their windows from the store, so no
/// history is lost.
///
/// `partitions` of 0 is treated as 1.
pub fn partition_for(device_id: &str, partitions: u32) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    for &b in device_id.as_bytes() {
        hash ^= u32::from(b);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash % partitions.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn is_stable_and_in_range() {
        // Known FNV-1a values: these must never change between releases.
        assert_eq!(partition_for("", u32::MAX), 0x811c_9dc5);
        assert_eq!(partition_for("a", u32::MAX), 0xe40c_292c);
        assert_eq!(partition_for("dev-00001", 1), 0);
        for n in [1, 2, 7, 16] {
            for i in 0..1000 {
                let id = format!("dev-{i:05}");
                let p = partition_for(&id, n);
                assert!(p < n);
                assert_eq!(p, partition_for(&id, n));
            }
        }
        assert_eq!(partition_for("x", 0), 0);
    }

    #[test]
    fn spreads_devices_evenly() {
        let n = 8;
        let mut counts = [0u32; 8];
        for i in 0..80_000 {
            counts[partition_for(&format!("dev-{i:05}"), n) as usize] += 1;
        }
        for c in counts {
            assert!((9_000..11_000).contains(&c), "{counts:?}");
        }
    }
}
