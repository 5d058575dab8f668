//! Conformance suites: one per trait, written once, run against every
//! backend (feature `test-util`).
//!
//! A backend's test file instantiates a suite with a fixture constructor:
//!
//! ```text
//! async fn fixture(partitions: u32) -> MyFixture { ... }
//! ha_core::queue_conformance!(fixture);
//! ha_core::store_conformance!(store_fixture);
//! ```
//!
//! Each check is also a public async function, for suites that want to pick.

mod ownership;
pub mod queue;
pub mod store;

/// The URL of a real server for tests, from the environment variable `var`
/// (set by `scripts/test`).
///
/// When it is missing: panics if `CI` is set (a missing server in CI is a
/// failure, never a silent skip); otherwise prints that the test is skipped
/// and returns `None`.
pub fn server_url(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(url) if !url.is_empty() => Some(url),
        _ if std::env::var_os("CI").is_some() => {
            panic!("{var} is not set but CI is: run the tests through scripts/test")
        }
        _ => {
            eprintln!(
                "SKIPPED: {var} is not set; run scripts/test to test against the real server"
            );
            None
        }
    }
}

/// A name no other test run uses, for queues and schemas: `prefix` plus
/// the process id, a clock reading and a counter.
pub fn unique_name(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{prefix}{}x{nanos:x}x{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Fixture readings: `device`, `seq`, at `ts_secs` seconds after the epoch,
/// with `metrics`.
pub fn reading(
    device: &str,
    seq: u64,
    ts_secs: i64,
    metrics: &[(&str, f64)],
) -> crate::wire::Reading {
    crate::wire::Reading {
        device_id: device.to_owned(),
        seq,
        ts: crate::wire::Timestamp::from_unix_micros(ts_secs * 1_000_000),
        metrics: metrics
            .iter()
            .map(|(n, v)| crate::wire::Metric::new(*n, *v))
            .collect(),
    }
}

/// Instantiates the [`queue`] conformance suite as `#[tokio::test]`s.
/// `$fixture` is an `async fn(partitions: u32) -> Option<impl QueueFixture>`;
/// `None` skips the test (see [`server_url`]).
#[macro_export]
macro_rules! queue_conformance {
    ($fixture:path) => {
        $crate::queue_conformance!(@tests $fixture;
            confirmed_messages_arrive_in_order,
            unacked_deliveries_are_redelivered_when_the_consumer_goes,
            nack_requeues_or_dead_letters,
            delivery_limit_dead_letters_a_poison_message,
            prefetch_bounds_unacked_deliveries,
            single_active_consumer_fails_over,
            ack_up_to_settles_earlier_deliveries,
            partitions_are_independent,
            invalid_partition_is_an_error,
            depth_counts_ready_messages,
        );
    };
    (@tests $fixture:path; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let Some(fixture) = $fixture($crate::conformance::queue::PARTITIONS).await else {
                    return;
                };
                $crate::conformance::queue::$name(&fixture).await;
            }
        )*
    };
}

/// Instantiates the [`store`] conformance suite as `#[tokio::test]`s.
/// `$fixture` is an `async fn() -> Option<Arc<dyn Store>>` giving an empty
/// store; `None` skips the test (see [`server_url`]).
#[macro_export]
macro_rules! store_conformance {
    ($fixture:path) => {
        $crate::store_conformance!(@tests $fixture;
            writes_are_idempotent_and_conflicts_counted,
            anomalies_are_idempotent,
            recent_values_are_the_newest_in_seq_order,
            recent_values_many_equals_one_query_per_series,
            anomalies_page_stably_under_concurrent_inserts,
            anomaly_filters_apply,
            readings_in_a_time_range,
            device_status_and_seq_gaps,
            retention_deletes_in_bounded_batches,
            concurrent_writers_store_one_row_per_key,
            empty_write_is_fine,
            membership_leases_expire_and_leave,
            fenced_writes_follow_the_newest_claim,
            racing_claims_get_distinct_epochs,
        );
    };
    (@tests $fixture:path; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let Some(store) = $fixture().await else {
                    return;
                };
                $crate::conformance::store::$name(store).await;
            }
        )*
    };
}
