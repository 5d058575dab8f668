//! What an MQTT 5 reason code means to the client, in the terms the HTTPS
//! path already acts on: a permanent refusal becomes the answer the
//! equivalent HTTP status would be (so the same state machine rejects,
//! splits or holds), a transient one an [`Error::Mqtt`] (retried on the
//! policy's schedule). Pure: no I/O.
//!
//! | reason code | treated as | so |
//! |---|---|---|
//! | < 0x80 (0x00 success, 0x10 no matching subscribers) | 2xx | acknowledged |
//! | 0x99 payload format invalid | 422 | refused readings rejected (bisected) or held for a clock rule |
//! | 0x95 packet too large, 0x99 with reason `body_too_large` | 413 | batch split |
//! | 0x86 bad user name or password, 0x87 not authorized, 0x8A banned | 401 / 403 | [`Error::Unauthorized`](crate::Error::Unauthorized), readings kept |
//! | 0x81, 0x82, 0x84, 0x85, 0x8C, 0x90, 0x9A, 0x9B, 0x9D | another 4xx | [`Error::Status`](crate::Error::Status), readings kept (configuration or version skew) |
//! | 0x97 quota exceeded (waiting at least the reason string's `retry after N s`), 0x80, 0x83, 0x88, 0x89, 0x8B, 0x8D, 0x8E, 0x93, 0x96, 0x98, 0x9C, 0x9F, 0xA0, any other | 429 / 5xx | [`Error::Mqtt`], retried with backoff |

use std::time::Duration;

use super::super::response::Response;
use crate::error::Error;

/// The HTTP status a permanent refusal is treated as, if `code` is one.
fn refusal_status(code: u8) -> Option<(u16, &'static str)> {
    Some(match code {
        0x99 => (422, "payload_format_invalid"),
        0x95 => (413, "packet_too_large"),
        0x86 => (401, "bad_username_or_password"),
        0x87 => (403, "not_authorized"),
        0x8A => (403, "banned"),
        0x81 => (404, "malformed_packet"),
        0x82 => (404, "protocol_error"),
        0x84 => (404, "unsupported_protocol_version"),
        0x85 => (404, "client_identifier_not_valid"),
        0x8C => (404, "bad_authentication_method"),
        0x90 => (404, "topic_name_invalid"),
        0x9A => (404, "retain_not_supported"),
        0x9B => (404, "qos_not_supported"),
        0x9D => (404, "server_moved"),
        _ => return None,
    })
}

/// What a reason code in `packet` (`CONNACK`, `PUBACK`, `DISCONNECT`)
/// comes to: `Ok` with the answer to act on (2xx or a permanent
/// refusal), or the transient [`Error::Mqtt`].
pub(super) fn answer(packet: &'static str, code: u8, reason: &str) -> Result<Response, Error> {
    if code < 0x80 && packet != "DISCONNECT" {
        return Ok(Response {
            status: 202,
            retry_after: None,
            body: Vec::new(),
        });
    }
    // The ingest refuses a body over its limit with 0x99 `body_too_large`:
    // split the batch, as for 413.
    let code_or_too_large = if code == 0x99 && reason.trim_start().starts_with("body_too_large") {
        0x95
    } else {
        code
    };
    let Some((status, default_code)) = refusal_status(code_or_too_large) else {
        return Err(Error::Mqtt {
            packet,
            code,
            reason: reason.to_owned(),
            retry_after: retry_after(reason),
        });
    };
    Ok(Response {
        status,
        retry_after: None,
        body: error_body(packet, code, default_code, reason),
    })
}

/// The wait a reason string asks for: `... retry after N s ...`.
fn retry_after(reason: &str) -> Option<Duration> {
    let (_, rest) = reason.split_once("retry after ")?;
    let digits = rest.split(|c: char| !c.is_ascii_digit()).next()?;
    digits.parse().ok().map(Duration::from_secs)
}

/// The JSON error body the client parses for an HTTP refusal. A reason
/// string that is itself such a body (`{"error":"ts_in_future",...}`) is
/// taken as is; one that starts with an error code (`ts_in_future: ...`)
/// gives that code, so clock refusals are held apart as over HTTPS.
fn error_body(packet: &str, code: u8, default_code: &str, reason: &str) -> Vec<u8> {
    let trimmed = reason.trim();
    if trimmed.starts_with('{') && trimmed.ends_with('}') {
        // The client parses it as it parses an HTTP error body (and keeps
        // it as the message if it is not one).
        return trimmed.as_bytes().to_vec();
    }
    let word_end = trimmed
        .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
        .unwrap_or(trimmed.len());
    let word = &trimmed[..word_end];
    let rest = &trimmed[word_end..];
    let is_code = !word.is_empty() && (rest.is_empty() || rest.starts_with([':', ' ']));
    let error = if is_code { word } else { default_code };
    let message = if trimmed.is_empty() {
        format!("MQTT {packet} reason code {code:#04x}")
    } else {
        format!("MQTT {packet} reason code {code:#04x}: {trimmed}")
    };
    // Strings serialise without failing; the fallback is never used.
    let quote = |s: &str| serde_json::to_string(s).unwrap_or_default();
    format!(
        r#"{{"error":{},"message":{}}}"#,
        quote(error),
        quote(&message)
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(packet: &'static str, code: u8) -> Result<u16, u8> {
        match answer(packet, code, "") {
            Ok(r) => Ok(r.status),
            Err(Error::Mqtt { code, .. }) => Err(code),
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn codes_map_to_what_the_https_path_acts_on() {
        assert_eq!(status("PUBACK", 0x00), Ok(202));
        assert_eq!(status("PUBACK", 0x10), Ok(202), "no matching subscribers");
        assert_eq!(status("CONNACK", 0x00), Ok(202));
        assert_eq!(status("PUBACK", 0x99), Ok(422));
        assert_eq!(status("PUBACK", 0x87), Ok(403));
        assert_eq!(status("CONNACK", 0x86), Ok(401));
        assert_eq!(status("DISCONNECT", 0x95), Ok(413));
        assert_eq!(status("PUBACK", 0x90), Ok(404));
        let too_large = answer("PUBACK", 0x99, "body_too_large: over 1 MiB").unwrap();
        assert_eq!(too_large.status, 413, "split, as for HTTP 413");
        for transient in [0x97, 0x80, 0x83, 0x88, 0x89, 0x8B, 0x8E, 0x9C, 0x9F, 0xFE] {
            assert_eq!(
                status("PUBACK", transient),
                Err(transient),
                "{transient:#x}"
            );
        }
        match answer("PUBACK", 0x97, "rate_limited: retry after 3 s") {
            Err(Error::Mqtt { retry_after, .. }) => {
                assert_eq!(retry_after, Some(Duration::from_secs(3)));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(retry_after("busy"), None);
        // A normal DISCONNECT while a PUBLISH waits is no acknowledgement.
        assert_eq!(status("DISCONNECT", 0x00), Err(0x00));
    }

    #[test]
    fn reason_strings_carry_the_servers_error_code() {
        let body = |reason| {
            let r = answer("PUBACK", 0x99, reason).unwrap();
            serde_json::from_slice::<serde_json::Value>(&r.body).unwrap()
        };
        assert_eq!(body("ts_in_future: 40 s ahead")["error"], "ts_in_future");
        assert_eq!(body("ts_too_old")["error"], "ts_too_old");
        assert_eq!(body("Bad JSON at 3")["error"], "payload_format_invalid");
        assert_eq!(body("")["error"], "payload_format_invalid");
        let v = body(r#"{"error":"invalid_value","index":2,"field":"metrics"}"#);
        assert_eq!(
            (v["error"].as_str(), v["index"].as_u64()),
            (Some("invalid_value"), Some(2))
        );
        assert!(
            body("malformed: x")["message"]
                .as_str()
                .unwrap()
                .contains("0x99")
        );
    }
}
