//! MQTT beside HTTPS: the same open-loop driver and steps over MQTT QoS 1
//! sessions, and memory per idle MQTT session beside the HTTPS one.

use std::fmt::Write as _;

use super::markdown::steps_table;
use super::*;
use crate::results::Connections;

/// MQTT's best sustained rate over HTTPS's, both with the analyzer storing.
pub(super) fn mqtt_ratio(r: &RunResults) -> Option<f64> {
    let m = RunResults::max_sustained(&r.mqtt)?;
    let h = RunResults::max_sustained(&r.ours)?;
    (h > 0.0).then(|| m / h)
}

/// The headline bullet; nothing when MQTT was not measured.
pub(super) fn mqtt_bullet(md: &mut String, r: &RunResults) {
    if r.mqtt.is_empty() {
        return;
    }
    let _ = writeln!(
        md,
        "- **Over MQTT** (QoS 1, one reading per PUBLISH, PUBACK after the broker confirmed; analyzer storing, same driver and steps): **{} readings/s** sustained = {} the HTTPS figure of the same run; up to {} readings/s stored.",
        sustained_text(&r.mqtt),
        mqtt_ratio(r).map_or_else(|| "n/a".into(), |x| format!("{x:.2}×")),
        opt_rate(max_stored(&r.mqtt))
    );
}

/// Rows of the targets table.
/// The end-to-end stored target met over MQTT (the same target as the
/// HTTPS row above it: one reading per message, sustained, zero loss).
pub(super) fn stored_target_row(md: &mut String, r: &RunResults, lost: u64) {
    if r.mqtt.is_empty() {
        return;
    }
    let stored = max_stored(&r.mqtt);
    let _ = writeln!(
        md,
        "| … the same over MQTT (QoS 1, one reading per PUBLISH) | {} readings/s, {} lost | {} |",
        opt_rate(stored),
        lost,
        met(stored.map(|s| s >= TARGET_STORED && lost == 0))
    );
}

pub(super) fn mqtt_target_rows(md: &mut String, r: &RunResults) {
    if !r.mqtt.is_empty() {
        let _ = writeln!(
            md,
            "| MQTT QoS 1 readings/s beside HTTPS, same run (MQTT issue; no figure set) | {} MQTT vs {} HTTPS = {} | — |",
            sustained_text(&r.mqtt),
            sustained_text(&r.ours),
            mqtt_ratio(r).map_or_else(|| "n/a".into(), |x| format!("{x:.2}×"))
        );
    }
    if let Some(c) = &r.conns_mqtt {
        let _ = writeln!(
            md,
            "| ≤ 16 KiB RSS per idle MQTT session in ingest | {} (at {} sessions; HTTPS: {}) | {} |",
            kib(c.ingest_per_connection()),
            rate(c.connections as f64),
            r.conns
                .as_ref()
                .map_or_else(|| "not measured".into(), |h| kib(h.ingest_per_connection())),
            met(Some(c.ingest_per_connection() <= TARGET_INGEST_CONN))
        );
    }
}

/// The section: the two transports side by side, then MQTT's steps.
pub(super) fn mqtt_section(md: &mut String, r: &RunResults) {
    if r.mqtt.is_empty() && r.conns_mqtt.is_none() {
        return;
    }
    let _ = writeln!(md, "## MQTT beside HTTPS\n");
    let _ = writeln!(
        md,
        "The open-loop driver of the HTTPS steps, over MQTT 3.1.1 on TLS to ingest's MQTT listener: each of its {} connections is one device's session (user name the device id, password its token), publishing QoS 1 to `readings/{{device_id}}` with the same JSON body as `POST /v1/readings`, one reading per PUBLISH, up to 32 in flight per session (the listener's receive maximum); latency runs from when a publish was due to its PUBACK, which ingest sends only after the broker confirmed. These steps run right after the HTTPS ones, analyzer storing. Idle memory: a fresh ingest process each, `data-generator --transport mqtt` (the device client, MQTT 5) holding one session per device, as the HTTPS measurement does with one keep-alive connection per device.\n",
        r.connections
    );
    let _ = writeln!(md, "| | HTTPS | MQTT | MQTT / HTTPS |\n|---|---|---|---|");
    let (h, m) = (
        RunResults::max_sustained(&r.ours),
        RunResults::max_sustained(&r.mqtt),
    );
    let _ = writeln!(
        md,
        "| max sustained, one reading per request / PUBLISH (readings/s) | {} | {} | {} |",
        sustained_text(&r.ours),
        sustained_text(&r.mqtt),
        ratio(m, h)
    );
    let (hs, ms) = (max_stored(&r.ours), max_stored(&r.mqtt));
    let _ = writeln!(
        md,
        "| stored, max sustained step (readings/s) | {} | {} | {} |",
        opt_rate(hs),
        opt_rate(ms),
        ratio(ms, hs)
    );
    let (hp, mp) = (
        step_near(&r.ours, TARGET_STORED / 2.0),
        step_near(&r.mqtt, TARGET_STORED / 2.0),
    );
    let p99 = |s: Option<&StepRow>| {
        s.map_or_else(
            || "not measured".into(),
            |s| format!("{:.1} ms at {}", s.p99_ms, rate(s.offered_rps)),
        )
    };
    // Latencies compare only at the same offered rate.
    let same = match (hp, mp) {
        (Some(h), Some(m)) if h.offered_rps == m.offered_rps => {
            ratio(Some(m.p99_ms), Some(h.p99_ms))
        }
        _ => "n/a (different steps)".into(),
    };
    let _ = writeln!(
        md,
        "| p99 ack latency near 7,500 offered | {} | {} | {same} |",
        p99(hp),
        p99(mp)
    );
    let per = |c: &Option<Connections>| c.as_ref().map(Connections::ingest_per_connection);
    let held = |c: &Option<Connections>| {
        c.as_ref()
            .map_or_else(|| "not measured".into(), |c| rate(c.connections as f64))
    };
    let _ = writeln!(
        md,
        "| ingest RSS per idle connection / session | {} (at {}) | {} (at {}) | {} |",
        per(&r.conns).map_or_else(|| "not measured".into(), kib),
        held(&r.conns),
        per(&r.conns_mqtt).map_or_else(|| "not measured".into(), kib),
        held(&r.conns_mqtt),
        ratio(per(&r.conns_mqtt), per(&r.conns))
    );
    let gen_per = |c: &Option<Connections>| c.as_ref().map(Connections::generator_per_device);
    let _ = writeln!(
        md,
        "| generator RSS per simulated device | {} | {} | {} |\n",
        gen_per(&r.conns).map_or_else(|| "not measured".into(), kib),
        gen_per(&r.conns_mqtt).map_or_else(|| "not measured".into(), kib),
        ratio(gen_per(&r.conns_mqtt), gen_per(&r.conns))
    );
    if !r.mqtt.is_empty() {
        steps_table(
            md,
            "Ours over MQTT (QoS 1, one reading per PUBLISH; analyzer storing)",
            &r.mqtt,
            true,
        );
    }
}
