//! Ingest's own account of a step, from its `/metrics` before and after:
//! messages published, readings in them, mean confirm latency and mean
//! wait for a confirm — the part of a request's latency the broker and
//! group commit explain.

use crate::http1::Endpoint;
use crate::results::IngestAccount;

/// The cumulative counters the account is the difference of.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(super) struct Counters {
    messages: f64,
    readings: f64,
    confirm_sum: f64,
    confirm_count: f64,
    wait_sum: f64,
    wait_count: f64,
}

impl Counters {
    /// Reads them from Prometheus text; `None` when a series is missing.
    pub(super) fn parse(text: &str) -> Option<Counters> {
        let value = |name: &str| value(text, name);
        Some(Counters {
            messages: value("ha_ingest_readings_per_message_count")?,
            readings: value("ha_ingest_readings_per_message_sum")?,
            confirm_sum: value("ha_ingest_confirm_latency_seconds_sum")?,
            confirm_count: value("ha_ingest_confirm_latency_seconds_count")?,
            wait_sum: value("ha_ingest_ack_wait_seconds_sum")?,
            wait_count: value("ha_ingest_ack_wait_seconds_count")?,
        })
    }

    /// What happened between `before` and `self`.
    pub(super) fn since(&self, before: &Counters) -> IngestAccount {
        let mean_ms = |sum: f64, count: f64| {
            if count > 0.0 {
                sum / count * 1000.0
            } else {
                0.0
            }
        };
        IngestAccount {
            messages: (self.messages - before.messages).max(0.0) as u64,
            readings: (self.readings - before.readings).max(0.0) as u64,
            confirm_ms: mean_ms(
                self.confirm_sum - before.confirm_sum,
                self.confirm_count - before.confirm_count,
            ),
            ack_wait_ms: mean_ms(
                self.wait_sum - before.wait_sum,
                self.wait_count - before.wait_count,
            ),
        }
    }
}

/// The value of the unlabelled series `name` in Prometheus text.
pub(super) fn value(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse::<f64>().ok())
}

/// How long a scrape may take: a service that accepts and never answers
/// must not hold up a step or a drain (which poll it).
const SCRAPE_BOUND: std::time::Duration = std::time::Duration::from_secs(2);

/// `GET /metrics` from one of our services over a connection of its own;
/// `None` when it fails, answers other than 200, or takes over
/// [`SCRAPE_BOUND`].
pub(super) async fn scrape(service: &Endpoint) -> Option<String> {
    let get = async {
        let mut conn = service.connect(None).await.ok()?;
        let head = format!(
            "GET /metrics HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            service.addr
        );
        let (status, body) = conn.exchange(head.as_bytes(), b"").await.ok()?;
        (status == 200).then(|| String::from_utf8_lossy(&body).into_owned())
    };
    tokio::time::timeout(SCRAPE_BOUND, get).await.ok()?
}

/// Ingest's counters, from its `/metrics`.
pub(super) async fn read(ingest: &Endpoint) -> Option<Counters> {
    Counters::parse(&scrape(ingest).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BEFORE: &str = "# HELP ha_ingest_readings_per_message Readings per queue message\n\
        ha_ingest_readings_per_message_sum 100.0\n\
        ha_ingest_readings_per_message_count 40\n\
        ha_ingest_readings_per_message_bucket{le=\"1.0\"} 10\n\
        ha_ingest_confirm_latency_seconds_sum 0.080\n\
        ha_ingest_confirm_latency_seconds_count 40\n\
        ha_ingest_ack_wait_seconds_sum 0.5\n\
        ha_ingest_ack_wait_seconds_count 100\n";

    #[test]
    fn the_account_is_the_difference_of_two_scrapes() {
        let before = Counters::parse(BEFORE).unwrap();
        let after = Counters::parse(
            "ha_ingest_readings_per_message_sum 1100.0\n\
             ha_ingest_readings_per_message_count 140\n\
             ha_ingest_confirm_latency_seconds_sum 0.380\n\
             ha_ingest_confirm_latency_seconds_count 140\n\
             ha_ingest_ack_wait_seconds_sum 4.5\n\
             ha_ingest_ack_wait_seconds_count 1100\n",
        )
        .unwrap();
        let a = after.since(&before);
        assert_eq!(a.messages, 100);
        assert_eq!(a.readings, 1000);
        assert!((a.confirm_ms - 3.0).abs() < 1e-9, "{a:?}");
        assert!((a.ack_wait_ms - 4.0).abs() < 1e-9, "{a:?}");
    }

    #[test]
    fn a_missing_series_gives_no_account() {
        assert_eq!(
            Counters::parse("ha_ingest_readings_per_message_sum 1\n"),
            None
        );
        assert_eq!(Counters::parse(""), None);
    }

    #[tokio::test]
    async fn a_service_that_never_answers_gives_no_scrape_within_the_bound() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        // Accepts, reads nothing, answers nothing, keeps the connection.
        let held = tokio::spawn(async move {
            let (conn, _) = listener.accept().await.unwrap();
            tokio::time::sleep(std::time::Duration::from_secs(60)).await;
            drop(conn);
        });
        let service = Endpoint::parse(&format!("http://{addr}"), None).unwrap();
        let started = std::time::Instant::now();
        assert_eq!(scrape(&service).await, None);
        assert!(started.elapsed() < std::time::Duration::from_secs(30));
        held.abort();
    }

    #[test]
    fn a_value_is_the_unlabelled_series_of_that_exact_name() {
        let text = "ha_analyzer_owned_partitions_total 9\n\
                    ha_analyzer_owned_partitions{x=\"y\"} 7\n\
                    ha_analyzer_owned_partitions 4\n";
        assert_eq!(value(text, "ha_analyzer_owned_partitions"), Some(4.0));
        assert_eq!(value(text, "ha_analyzer_members"), None);
        assert_eq!(
            value("ha_analyzer_members two\n", "ha_analyzer_members"),
            None
        );
    }
}
