//! Query-string parsing for the `/v1` routes: every bad parameter is a
//! `400` naming it; unknown and repeated parameters are rejected too, so a
//! typo (`devcie=`) never silently widens a query.

use std::time::Duration;

use axum::extract::Query;
use axum::extract::rejection::QueryRejection;
use axum::http::StatusCode;

use crate::http::ApiError;
use crate::store::{AnomalyCursor, AnomalyQuery, ReadingQuery};
use crate::wire::Timestamp;

/// The raw `name=value` pairs of a query string.
pub(super) type RawParams = Result<Query<Vec<(String, String)>>, QueryRejection>;

/// Default and largest page of `/v1/anomalies`.
pub(super) const ANOMALIES_DEFAULT_LIMIT: u32 = 100;
/// Largest page of `/v1/anomalies`.
pub(super) const ANOMALIES_MAX_LIMIT: u32 = 1000;
/// Default number of values of `/v1/devices/{id}/readings`.
pub(super) const READINGS_DEFAULT_LIMIT: u32 = 1000;
/// Largest number of values of `/v1/devices/{id}/readings`.
pub(super) const READINGS_MAX_LIMIT: u32 = 10_000;
/// Default time range of `/v1/devices/{id}/readings`: the last hour.
pub(super) const READINGS_DEFAULT_RANGE: Duration = Duration::from_secs(3600);

pub(super) fn bad_param(name: &str, message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "invalid_parameter", message)
        .at(Some(name.to_owned()), None)
}

/// Checked access to the parameters of one request.
pub(super) struct Params {
    pairs: Vec<(String, String)>,
}

impl Params {
    /// The pairs of `raw`, rejecting names outside `allowed` and repeats.
    pub(super) fn parse(raw: RawParams, allowed: &[&str]) -> Result<Params, ApiError> {
        let Query(pairs) = raw.map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_parameter",
                format!("malformed query string: {}", e.body_text()),
            )
        })?;
        for (i, (name, _)) in pairs.iter().enumerate() {
            if !allowed.contains(&name.as_str()) {
                return Err(bad_param(
                    name,
                    format!(
                        "unknown parameter `{name}`; expected one of: {}",
                        allowed.join(", ")
                    ),
                ));
            }
            if pairs[..i].iter().any(|(n, _)| n == name) {
                return Err(bad_param(name, format!("parameter `{name}` given twice")));
            }
        }
        Ok(Params { pairs })
    }

    /// The value of `name`; an empty value counts as absent.
    pub(super) fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(n, v)| n == name && !v.is_empty())
            .map(|(_, v)| v.as_str())
    }

    /// `name` as an RFC 3339 UTC timestamp.
    pub(super) fn time(&self, name: &str) -> Result<Option<Timestamp>, ApiError> {
        self.get(name)
            .map(|v| Timestamp::parse(v).map_err(|e| bad_param(name, format!("`{name}`: {e}"))))
            .transpose()
    }

    /// `name` as an integer in `1..=max`, or `default`.
    pub(super) fn limit(&self, name: &str, default: u32, max: u32) -> Result<u32, ApiError> {
        let Some(v) = self.get(name) else {
            return Ok(default);
        };
        match v.parse::<u32>() {
            Ok(n) if (1..=max).contains(&n) => Ok(n),
            _ => Err(bad_param(
                name,
                format!("`{name}` must be an integer from 1 to {max}"),
            )),
        }
    }
}

fn check_range(from: Option<Timestamp>, to: Option<Timestamp>) -> Result<(), ApiError> {
    match (from, to) {
        (Some(f), Some(t)) if f >= t => Err(bad_param("from", "`from` must be before `to`")),
        _ => Ok(()),
    }
}

/// The query of `GET /v1/anomalies`.
pub(super) fn anomaly_query(raw: RawParams) -> Result<AnomalyQuery, ApiError> {
    let p = Params::parse(raw, &["device", "metric", "from", "to", "limit", "cursor"])?;
    let (from, to) = (p.time("from")?, p.time("to")?);
    check_range(from, to)?;
    let after = p
        .get("cursor")
        .map(|c| {
            c.parse::<AnomalyCursor>().map_err(|_| {
                bad_param(
                    "cursor",
                    "malformed `cursor`: pass back a `next_cursor` unchanged",
                )
            })
        })
        .transpose()?;
    Ok(AnomalyQuery {
        device_id: p.get("device").map(str::to_owned),
        metric: p.get("metric").map(str::to_owned),
        from,
        to,
        after,
        limit: p.limit("limit", ANOMALIES_DEFAULT_LIMIT, ANOMALIES_MAX_LIMIT)?,
    })
}

/// The query of `GET /v1/devices/{id}/readings`, asking the store for one
/// value more than the limit so the answer can say it was truncated.
pub(super) fn reading_query(
    device_id: String,
    raw: RawParams,
    now: Timestamp,
) -> Result<(ReadingQuery, u32), ApiError> {
    let p = Params::parse(raw, &["metric", "from", "to", "limit"])?;
    let to = p.time("to")?.unwrap_or(now);
    let from = p
        .time("from")?
        .unwrap_or_else(|| to.saturating_sub(READINGS_DEFAULT_RANGE));
    check_range(Some(from), Some(to))?;
    let limit = p.limit("limit", READINGS_DEFAULT_LIMIT, READINGS_MAX_LIMIT)?;
    let query = ReadingQuery {
        device_id,
        metric: p.get("metric").map(str::to_owned),
        from,
        to,
        limit: limit + 1,
    };
    Ok((query, limit))
}

/// The filters of `GET /v1/stream`.
pub(super) fn stream_query(raw: RawParams, window: u32) -> Result<AnomalyQuery, ApiError> {
    let p = Params::parse(raw, &["device", "metric"])?;
    Ok(AnomalyQuery {
        device_id: p.get("device").map(str::to_owned),
        metric: p.get("metric").map(str::to_owned),
        limit: window,
        ..AnomalyQuery::default()
    })
}
