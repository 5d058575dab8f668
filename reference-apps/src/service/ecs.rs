//! `--log-format ecs`: one JSON object per line in Elastic Common Schema
//! (ECS 8.11) field names, for Elasticsearch/Kibana without any ingest
//! pipeline.
//!
//! Every line has `@timestamp`, `log.level`, `log.logger`, `message`,
//! `ecs.version`, `service.name`, `service.version`, `event.dataset`
//! (`<service>.log`, as Elastic's ecs-logging libraries default it) and
//! `process.pid`. Fields of the event and of its spans are mapped:
//! `error` becomes `error.message`; the ECS names the services use
//! (`http.request.id` from the request span, `http.request.method`,
//! `url.path`, `http.response.status_code`, `event.duration`) are kept
//! when their value has the ECS type; anything else goes to `labels.*` as
//! a string (ECS `labels` are keywords), dots in its name replaced by `_`.
//! Keys are written dotted (`"log.level"`), which Elasticsearch reads as
//! the nested field.

use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::registry::LookupSpan;

/// The ECS version the field names and types follow.
pub const ECS_VERSION: &str = "8.11.0";

/// ECS fields the services set through tracing fields, and their type.
const DIRECT: &[(&str, Kind)] = &[
    ("http.request.id", Kind::Keyword),
    ("http.request.method", Kind::Keyword),
    ("url.path", Kind::Keyword),
    ("http.response.status_code", Kind::Long),
    ("event.duration", Kind::Long),
];

#[derive(Clone, Copy)]
enum Kind {
    Keyword,
    Long,
}

/// A `tracing_subscriber` layer writing ECS JSON lines to `writer`.
pub struct EcsLayer<W> {
    service: String,
    version: String,
    dataset: String,
    pid: u32,
    writer: W,
}

impl<W> EcsLayer<W> {
    /// Lines for `service` at `version`, written to `writer`.
    pub fn new(service: &str, version: &str, writer: W) -> Self {
        EcsLayer {
            service: service.to_owned(),
            version: version.to_owned(),
            dataset: format!("{service}.log"),
            pid: std::process::id(),
            writer,
        }
    }

    fn line<S>(&self, event: &Event<'_>, ctx: &Context<'_, S>) -> Vec<u8>
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
    {
        let meta = event.metadata();
        let mut out = Map::new();
        out.insert(
            "@timestamp".into(),
            rfc3339_millis(SystemTime::now()).into(),
        );
        out.insert(
            "log.level".into(),
            meta.level().as_str().to_ascii_lowercase().into(),
        );
        out.insert("log.logger".into(), meta.target().into());
        out.insert("message".into(), Value::String(String::new()));
        out.insert("ecs.version".into(), ECS_VERSION.into());
        out.insert("service.name".into(), self.service.clone().into());
        out.insert("service.version".into(), self.version.clone().into());
        out.insert("event.dataset".into(), self.dataset.clone().into());
        out.insert("process.pid".into(), self.pid.into());
        // Outermost span first, so inner spans and the event override.
        if let Some(scope) = ctx.event_scope(event) {
            for span in scope.from_root() {
                if let Some(fields) = span.extensions().get::<Fields>() {
                    for (k, v) in &fields.0 {
                        put(&mut out, k, v.clone());
                    }
                }
            }
        }
        let mut fields = Fields::default();
        event.record(&mut fields);
        for (k, v) in fields.0 {
            put(&mut out, &k, v);
        }
        let mut bytes = serde_json::to_vec(&Value::Object(out)).unwrap_or_default();
        bytes.push(b'\n');
        bytes
    }
}

/// Puts tracing field `name` into the ECS document under its ECS name.
fn put(out: &mut Map<String, Value>, name: &str, value: Value) {
    match name {
        "message" => {
            out.insert("message".into(), Value::String(as_text(value)));
            return;
        }
        "error" => {
            out.insert("error.message".into(), Value::String(as_text(value)));
            return;
        }
        _ => {}
    }
    if let Some((_, kind)) = DIRECT.iter().find(|(n, _)| *n == name) {
        match (kind, value) {
            (Kind::Keyword, v) => {
                out.insert(name.into(), Value::String(as_text(v)));
                return;
            }
            (Kind::Long, v @ Value::Number(_)) if v.is_i64() || v.is_u64() => {
                out.insert(name.into(), v);
                return;
            }
            (Kind::Long, v) => {
                out.insert(label(name), Value::String(as_text(v)));
                return;
            }
        }
    }
    out.insert(label(name), Value::String(as_text(value)));
}

fn label(name: &str) -> String {
    format!("labels.{}", name.replace('.', "_"))
}

fn as_text(value: Value) -> String {
    match value {
        Value::String(s) => s,
        other => other.to_string(),
    }
}

/// A span's or event's fields, in recording order.
#[derive(Default)]
struct Fields(Vec<(String, Value)>);

impl Fields {
    fn set(&mut self, name: &str, value: Value) {
        match self.0.iter_mut().find(|(k, _)| k == name) {
            Some(slot) => slot.1 = value,
            None => self.0.push((name.to_owned(), value)),
        }
    }
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.set(field.name(), Value::String(format!("{value:?}")));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.set(field.name(), Value::String(value.to_owned()));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.set(field.name(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.set(field.name(), value.into());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.set(field.name(), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.set(field.name(), value.into());
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.set(field.name(), Value::String(value.to_string()));
    }
}

impl<S, W> Layer<S> for EcsLayer<W>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> MakeWriter<'w> + 'static,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        attrs.record(&mut fields);
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(fields);
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id) {
            let mut ext = span.extensions_mut();
            if let Some(fields) = ext.get_mut::<Fields>() {
                values.record(fields);
            }
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let line = self.line(event, &ctx);
        // A log line that cannot be written has nowhere to be reported.
        let _ = self.writer.make_writer().write_all(&line);
    }
}

/// `t` as `2026-11-27T04:05:06.789Z` (UTC, milliseconds).
pub fn rfc3339_millis(t: SystemTime) -> String {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since.subsec_millis()
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's
/// algorithm, for days on or after the epoch).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;
    use tracing_subscriber::layer::SubscriberExt;

    #[test]
    fn timestamps_are_rfc3339_utc_with_millis() {
        let at = |s: u64, ms: u64| {
            rfc3339_millis(UNIX_EPOCH + Duration::from_secs(s) + Duration::from_millis(ms))
        };
        assert_eq!(at(0, 0), "1970-01-01T00:00:00.000Z");
        // 2000-02-29 (a leap day in a century leap year) 12:34:56.789
        assert_eq!(at(951_827_696, 789), "2000-02-29T12:34:56.789Z");
        assert_eq!(at(1_798_761_599, 999), "2026-12-31T23:59:59.999Z");
        assert_eq!(at(4_107_542_400, 1), "2100-03-01T00:00:00.001Z");
    }

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .map_err(|_| std::io::Error::other("poisoned"))?
                .extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl MakeWriter<'_> for Buf {
        type Writer = Buf;
        fn make_writer(&self) -> Buf {
            self.clone()
        }
    }

    fn lines(f: impl FnOnce()) -> Vec<Map<String, Value>> {
        let buf = Buf::default();
        let subscriber =
            tracing_subscriber::registry().with(EcsLayer::new("ingest-api", "1.2.3", buf.clone()));
        tracing::subscriber::with_default(subscriber, f);
        let text = String::from_utf8(buf.0.lock().expect("lock").clone()).expect("utf-8");
        text.lines()
            .map(|l| match serde_json::from_str(l) {
                Ok(Value::Object(m)) => m,
                other => panic!("not a JSON object: {l}: {other:?}"),
            })
            .collect()
    }

    #[test]
    fn lines_carry_the_base_fields_span_fields_and_mapped_event_fields() {
        let got = lines(|| {
            let span = tracing::info_span!("request", http.request.id = "abc-1", url.path = "/x");
            let _e = span.enter();
            tracing::warn!(
                error = %"broker gone",
                http.response.status_code = 503u16,
                partition = 3,
                queue.name = "q",
                "Publish failed."
            );
        });
        assert_eq!(got.len(), 1);
        let l = &got[0];
        assert_eq!(l["message"], "Publish failed.");
        assert_eq!(l["log.level"], "warn");
        assert_eq!(l["service.name"], "ingest-api");
        assert_eq!(l["service.version"], "1.2.3");
        assert_eq!(l["event.dataset"], "ingest-api.log");
        assert_eq!(l["ecs.version"], ECS_VERSION);
        assert_eq!(l["error.message"], "broker gone");
        assert_eq!(l["http.request.id"], "abc-1");
        assert_eq!(l["url.path"], "/x");
        assert_eq!(l["http.response.status_code"], 503);
        assert_eq!(l["labels.partition"], "3");
        assert_eq!(l["labels.queue_name"], "q");
        assert!(l["process.pid"].is_u64());
        assert!(!l.contains_key("error"));
    }

    #[test]
    fn a_long_field_with_another_type_goes_to_labels() {
        let got = lines(|| tracing::info!(event.duration = "soon", "x"));
        assert_eq!(got[0]["labels.event_duration"], "soon");
        assert!(!got[0].contains_key("event.duration"));
    }

    #[test]
    fn an_event_outside_spans_still_has_every_base_field() {
        let got = lines(|| tracing::error!("no span"));
        for k in [
            "@timestamp",
            "log.level",
            "log.logger",
            "message",
            "ecs.version",
            "service.name",
            "service.version",
            "event.dataset",
            "process.pid",
        ] {
            assert!(got[0].contains_key(k), "{k} missing");
        }
        assert!(!got[0].contains_key("http.request.id"));
    }
}
