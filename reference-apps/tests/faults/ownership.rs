//! The analyzers' partition-ownership record in a drill's database: the
//! overlap audit every drill passes, and the takeover time after a fault.

use std::time::SystemTime;

use ha_core::store::postgres::{PostgresConfig, PostgresStore};
use ha_core::store::{EpochRecord, Overlap, Store, find_overlaps};
use ha_core::wire::Timestamp;

/// The analyzers' membership group (their default).
const GROUP: &str = "analyzers";

/// Every ownership epoch the drill's analyzers recorded.
pub async fn epochs(db: &str) -> Vec<EpochRecord> {
    let store = PostgresStore::new(PostgresConfig {
        url: db.to_owned(),
        pool_size: 1,
        ..PostgresConfig::default()
    })
    .expect("store for the ownership record");
    store
        .partition_epochs(GROUP)
        .await
        .expect("read the ownership epochs")
}

/// The overlaps in the record (printed, so a failing drill says which).
pub fn overlaps(records: &[EpochRecord]) -> Vec<Overlap> {
    let found = find_overlaps(records);
    for o in &found {
        eprintln!("ownership overlap: {o:?}");
    }
    found
}

/// Milliseconds from `fault` until every partition `victim` held at that
/// moment had a batch committed by a new owner; `None` when the victim held
/// none, or one of them was never taken over.
pub fn takeover_ms(records: &[EpochRecord], victim: &str, fault: SystemTime) -> Option<u64> {
    let at = Timestamp::from(fault);
    let held: Vec<&EpochRecord> = records
        .iter()
        .filter(|r| r.owner == victim && r.claimed_at <= at)
        .filter(|r| r.superseded_at.is_none_or(|s| s > at))
        .collect();
    if held.is_empty() {
        return None;
    }
    let mut longest = 0;
    for h in held {
        let resumed = records
            .iter()
            .filter(|r| r.partition == h.partition && r.epoch > h.epoch && r.owner != victim)
            .filter_map(|r| r.first_commit_at)
            .min()?;
        let micros = resumed.unix_micros() - at.unix_micros();
        longest = longest.max(u64::try_from(micros / 1000).unwrap_or(0));
    }
    Some(longest)
}
