//! Property fuzzing on stable Rust (proptest) of every decoder that sees
//! bytes from outside: the ingest body parser, the queue envelope decoder,
//! the Basic-auth header and the timestamp parser. None may panic on any
//! input; each keeps its limits; encoders and decoders round-trip.
//!
//! `cargo test -p ha-core --all-features --test properties`; raise the
//! number of cases with `PROPTEST_CASES=100000` for a long run. The
//! coverage-guided counterpart for nightly users is `fuzz/` (cargo-fuzz).
#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]
#![cfg(feature = "server")]

use std::time::Duration;

use base64::Engine;
use ha_core::ingest::{AuthError, DeviceKeys, token_for};
use ha_core::wire::{
    Envelope, IngestBody, MAX_METRICS, MAX_READINGS, Metric, ParseError, Reading, Timestamp,
    UncheckedBody,
};
use proptest::prelude::*;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|c| c.parse().ok())
            .unwrap_or(512),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn now() -> Timestamp {
    Timestamp::parse("2026-11-26T12:00:00Z").unwrap()
}

fn device_id() -> impl Strategy<Value = String> {
    "[A-Za-z0-9._:-]{1,64}"
}

fn metric_name() -> impl Strategy<Value = String> {
    "[A-Za-z0-9_.-]{1,64}"
}

/// Timestamps from 2000 to `now`, whole microseconds.
fn timestamp() -> impl Strategy<Value = Timestamp> {
    (0i64..26 * 365 * 86_400_000_000)
        .prop_map(|us| now().saturating_sub(Duration::from_micros(u64::try_from(us).unwrap())))
}

fn reading() -> impl Strategy<Value = Reading> {
    (
        device_id(),
        0u64..=i64::MAX as u64,
        timestamp(),
        proptest::collection::btree_map(metric_name(), -1e12f64..1e12, 1..=MAX_METRICS),
    )
        .prop_map(|(device_id, seq, ts, metrics)| Reading {
            device_id,
            seq,
            ts,
            metrics: metrics
                .into_iter()
                .map(|(name, value)| Metric { name, value })
                .collect(),
        })
}

/// A byte string built from JSON-ish pieces, so mutations reach deep into
/// the parser instead of failing at the first byte.
fn jsonish() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        Just("{".to_owned()),
        Just("}".to_owned()),
        Just("[".to_owned()),
        Just("]".to_owned()),
        Just(",".to_owned()),
        Just(":".to_owned()),
        Just(r#""readings""#.to_owned()),
        Just(r#""device_id""#.to_owned()),
        Just(r#""seq""#.to_owned()),
        Just(r#""ts""#.to_owned()),
        Just(r#""metrics""#.to_owned()),
        Just(r#""2026-11-26T11:00:00Z""#.to_owned()),
        Just("1e400".to_owned()),
        Just("-0".to_owned()),
        Just("18446744073709551616".to_owned()),
        Just(r#""\ud800""#.to_owned()),
        Just("null".to_owned()),
        "[a-z0-9\"\\\\ ]{0,8}",
        any::<u32>().prop_map(|n| n.to_string()),
    ];
    proptest::collection::vec(piece, 0..64).prop_map(|p| p.concat().into_bytes())
}

fn check_parse(bytes: &[u8]) {
    match IngestBody::parse(bytes, now()) {
        Ok(body) => {
            assert!(!body.readings.is_empty() && body.readings.len() <= MAX_READINGS);
            for r in &body.readings {
                assert!(r.metrics.len() <= MAX_METRICS);
                r.validate_at(now()).expect("what parse accepts validates");
            }
        }
        Err(ParseError::Malformed { message, .. }) => {
            // Client text in error messages is cut short.
            assert!(message.len() < 4096, "{} bytes of message", message.len())
        }
        Err(_) => {}
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn the_body_parser_never_panics_on_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        check_parse(&bytes);
    }

    #[test]
    fn the_body_parser_never_panics_on_json_like_input(bytes in jsonish()) {
        check_parse(&bytes);
    }

    #[test]
    fn valid_bodies_round_trip_and_mutations_never_panic(
        readings in proptest::collection::vec(reading(), 1..8),
        cut in any::<prop::sample::Index>(),
        flip in any::<prop::sample::Index>(),
        byte in any::<u8>(),
    ) {
        let body = IngestBody { readings };
        let bytes = serde_json::to_vec(&body).unwrap();
        let back = IngestBody::parse(&bytes, now()).unwrap();
        prop_assert_eq!(&back, &body);
        check_parse(&bytes[..cut.index(bytes.len())]);
        let mut mutated = bytes.clone();
        let i = flip.index(mutated.len());
        mutated[i] = byte;
        check_parse(&mutated);
        // The shape step alone must agree on what it accepts.
        if let Ok(u) = UncheckedBody::parse(&mutated) {
            prop_assert!(u.device_ids().count() <= MAX_READINGS);
        }
    }

    #[test]
    fn envelopes_round_trip_and_garbage_is_an_error(
        readings in proptest::collection::vec(reading(), 0..8),
        cut in any::<prop::sample::Index>(),
        noise in proptest::collection::vec(any::<u8>(), 0..512),
    ) {
        let bytes = Envelope::encode(&readings);
        let back = Envelope::decode(&bytes).unwrap();
        prop_assert_eq!(&back.readings, &readings);
        let _ = Envelope::decode(&bytes[..cut.index(bytes.len())]);
        let _ = Envelope::decode(&noise);
    }

    #[test]
    fn basic_auth_accepts_exactly_the_right_token(
        id in device_id(),
        other in device_id(),
        garbage in proptest::collection::vec(any::<u8>(), 0..256),
    ) {
        let keys = DeviceKeys::from_keys(vec![b"property-test-key".to_vec()]).unwrap();
        let header = |user: &str, password: &str| {
            let b64 = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
            format!("Basic {b64}").into_bytes()
        };
        let token = token_for(b"property-test-key", &id);
        prop_assert_eq!(keys.verify(Some(&header(&id, &token))), Ok(id.clone()));
        if other != id {
            prop_assert_eq!(
                keys.verify(Some(&header(&other, &token))),
                Err(AuthError::WrongToken)
            );
        }
        // Any header at all: an answer, never a panic.
        let _ = keys.verify(Some(&garbage));
        let mut prefixed = b"Basic ".to_vec();
        prefixed.extend_from_slice(&garbage);
        let _ = keys.verify(Some(&prefixed));
    }

    #[test]
    fn timestamps_round_trip_and_never_panic(ts in timestamp(), text in "\\PC{0,40}") {
        prop_assert_eq!(Timestamp::parse(&ts.to_string()), Ok(ts));
        let _ = Timestamp::parse(&text);
        let shaped = format!("2026-{text}");
        let _ = Timestamp::parse(&shaped);
    }
}
