#!/usr/bin/env python3
"""Writes docs/reliability.md from the result lines of a `scripts/faults` run.

    python3 scripts/reliability-doc.py RESULTS_FILE OUTPUT_MD

Each input line is `scenario=<name> key=value ...` as printed by the drills
in reference-apps/tests/faults. Nothing in the table is typed by hand.
"""

import datetime
import platform
import subprocess
import sys


def at_load(title, victim):
    """The entry of a drill's variant at load."""
    return (
        f"{title}, at load",
        "The same drill with the fleet at load: 1,000 devices offering 60 % of "
        "this run's knee (`knee_rate`; see *Drills at load* above) and reporting "
        "in waves, every device at the same instants. `offered_rate`, "
        "`acked_rate` and `load_pct` (acknowledged / knee) are measured over "
        "three waves before the fault; the fault is fired into a wave, once 200 or more "
        "of the fleet's sends are open (`fleet_open_sends`) and the victim holds "
        f"work (`in flight at fault`: {victim}).",
    )


# What each drill does and what passing it proves, by scenario name.
PROVES = {
    "ingest_kill9": (
        "1. Ingest replica crash (`kill -9`)",
        "One of two ingest replicas behind haproxy is killed while it holds "
        "unconfirmed publishes. haproxy drops it at the next health check; "
        "devices whose request died retry (seed policy: first retry after "
        "1 s) and land on the other replica. A 202 was only ever sent after "
        "the broker's confirm, so every acknowledged reading is stored.",
    ),
    "ingest_kill9_device_retry": (
        "1. Ingest replica crash (`kill -9`), balancer without re-sending",
        "The same drill with haproxy's request re-sending turned off "
        "(`retry-on conn-failure` only, as a plain Kubernetes Service or "
        "nginx would behave): the devices whose request died get a 502 and "
        "recover with their own retry after 1 s. This is the seed's "
        "client-visible failover (seed: ≤ 4 s; target: ≤ 1.5 s). How many "
        "devices it hits depends on how many requests were inside the replica "
        "at the kill and whether haproxy could still re-dispatch them: 0 or 1 "
        "in the runs so far (1 device: 1,027 ms, one retry); a device not "
        "disturbed counts 0.",
    ),
    "ingest_post_kill": (
        "1. Ingest replica crash (`POST /kill`)",
        "The same drill with the replica ending itself mid-request "
        "(`--enable-kill`), as the seed's drill did.",
    ),
    "ingest_kill9_mqtt": (
        "1. Ingest replica crash (`kill -9`), MQTT fleet",
        "The same drill with the fleet over MQTT 5 (each device its own "
        "session, TLS ending at ingest, haproxy in TCP mode with the same "
        "`/readyz` checks). TCP mode cannot re-send: the sessions on the "
        "killed replica die, the devices reconnect through haproxy to the "
        "other replica and resend what was not PUBACKed; a PUBACK was only "
        "ever sent after the broker's confirm, so nothing acknowledged is "
        "lost and the store's `(device_id, seq)` key absorbs the resends.",
    ),
    "ingest_kill9_at_load": at_load("1. Ingest replica crash (`kill -9`)", "requests awaiting the broker's confirm in the killed replica"),
    "ingest_sigstop": (
        "2. Hung ingest replica (`SIGSTOP`)",
        "A stopped process keeps its sockets open: nothing resets. haproxy's "
        "100 ms health check takes it out; requests already inside it time out "
        "at haproxy (1 s) and are re-sent to the other replica. After "
        "`SIGCONT` the woken replica publishes what it held: the store absorbs "
        "those late copies (`resends_absorbed`) and no row is doubled.",
    ),
    "rabbitmq_leader_kill9": (
        "3. RabbitMQ node crash (`kill -9` of a queue leader)",
        "A 3-node cluster, quorum queues with a member on every node. The "
        "leader of partition 0 is killed; publishers and consumers reconnect "
        "to the surviving nodes (every service is given all three addresses), "
        "unconfirmed publishes are republished, a new leader is elected. "
        "`stall_ms` is the longest time without any acknowledgement; the node "
        "is then restarted and rejoins (`rejoin_ms`).",
    ),
    "rabbitmq_leader_kill9_mqtt": (
        "3. RabbitMQ node crash, MQTT fleet",
        "The same drill with the fleet over MQTT: while the broker cannot "
        "confirm, ingest sends no PUBACK (the publishes wait, or the session "
        "ends with DISCONNECT 0x89 and the device resends), so the devices' "
        "readings stay in their buffers until a confirm covers them.",
    ),
    "rabbitmq_leader_kill9_at_load": at_load("3. RabbitMQ node crash", "requests awaiting a confirm over both replicas"),
    "analyzer_kill9": (
        "4. Analyzer crash mid-batch (`kill -9`)",
        "One of two analyzers is killed while it holds unacknowledged "
        "deliveries. The other replica's standby subscriptions are activated "
        "by the broker as soon as it sees the dead connection: `takeover_ms` "
        "runs from the kill until a batch of every partition the victim held "
        "is committed by the new owner (from the ownership record), long "
        "before the victim's lease lapses and the assignment follows "
        "(`reassigned_ms`, lease TTL 5 s; no lease shorter than that is "
        "trusted, so a busy machine cannot make it flap: `ownership_epochs` "
        "counts every claim, and the drill fails beyond three per partition). "
        "The deliveries it held come again (`redeliveries`). "
        "The anomalies stored equal those of an undisturbed detector run over "
        "the same stored readings (`verdicts_equal`): windows are rebuilt "
        "from the store correctly on takeover.",
    ),
    "analyzer_kill9_at_load": at_load("4. Analyzer crash mid-batch", "deliveries the killed analyzer had not acknowledged"),
    "postgres_restart": (
        "5. Database restart (fast shutdown)",
        "PostgreSQL is stopped (`pg_ctl stop -m fast`) for 3 s and started "
        "again. Ingest never touches the database: devices notice nothing. "
        "The analyzer holds its batch, retries, and drains the backlog that "
        "built up in the queue (`backlog_peak` readings, `drain_ms` after "
        "the database is back).",
    ),
    "postgres_restart_at_load": at_load("5. Database restart", "deliveries the analyzer had not acknowledged"),
    "faulty_update": (
        "6. Faulty update",
        "A third ingest replica that can never be ready (wrong broker URL) "
        "joins the balancer's backend, as a bad rollout's pod would. Its "
        "`/readyz` answers 503, haproxy never routes to it "
        "(`faulty_sessions=0`), devices see no error.",
    ),
    "sigterm_ingest": (
        "7. Graceful shutdown (`SIGTERM` to an ingest replica)",
        "The replica turns unready, finishes what it holds and exits 0 within "
        "its drain timeout (`exit_ms`); requests that reach it meanwhile get "
        "503 and haproxy re-sends them: no device sees an error.",
    ),
    "sigterm_analyzer": (
        "7. Graceful shutdown (`SIGTERM` to an analyzer)",
        "The analyzer finishes its batch, closes its subscriptions and leaves "
        "the group; the other's standby subscriptions take over at once "
        "(`takeover_ms`: from the signal until every partition it held has a "
        "batch committed by the new owner).",
    ),
    "sigterm_alerts": (
        "7. Graceful shutdown (`SIGTERM` to the alerts API)",
        "Four operator clients query `/v1/anomalies` in a loop; the API "
        "finishes every query it had started and exits 0 "
        "(`queries_ok_refused_failed`: answered / refused or reset before any "
        "answer, i.e. never processed / failed — the drill requires 0 failed).",
    ),
    "ingest_outage_30s": (
        "8. Ingest outage and backlog",
        "Both ingest replicas are killed for 30 s while the devices keep "
        "measuring; they buffer and retry on the seed's linear schedule. When "
        "ingest returns, every buffered reading arrives exactly once "
        "(`buffered_at_return` readings, drained in `drain_ms`), paced by the "
        "devices' own schedule: the new replicas refuse nothing "
        "(`refused_after_return=0`). Failover here is measured from the "
        "return of ingest.",
    ),
    "noisy_neighbour": (
        "9. Noisy neighbours",
        "The fleet runs undisturbed for 15 s, then for 30 s, "
        "beside it and with valid tokens: 4 closed-loop connections sending "
        "1 MiB adversarial bodies (one reading padded with about 130,000 "
        "metric names), 1,000 half-open connections, one device sending 100 new "
        "metric names a second, and one device at 10× its rate limit (the "
        "manifests' 5 readings/s). A body costs its device one token per "
        "4 KiB, so one padded body puts it in debt and it is refused from its "
        "headers, after a 1 s pause, until the debt is repaid. The fleet "
        "must lose nothing, see no error, keep its p99 send latency "
        "(`p99_noisy_ms`) within max(2× quiet, quiet + 20 ms) "
        "(`p99_bound_ms`), and ingest and the analyzer must stay under their "
        "manifests' memory limits (`*_rss_mib`: peak RSS / limit). Every "
        "reading of the new-names device is stored (`names_stored`). "
        "`p99_quiet_ms` and `p99_noisy_ms` are the median over each window's "
        "seconds of that second's p99, so one second in which the shared "
        "machine stalled neither loosens the bound nor trips it; the windows' "
        "plain p99s stand beside them (`p99_window_quiet_noisy_ms`).",
    ),
}

COLUMNS = [
    ("sent", "sent"),
    ("acked", "acked"),
    ("stored", "stored once"),
    ("lost", "lost"),
    ("duplicates", "dup."),
    ("dead_lettered", "dead-lettered"),
    ("ownership_overlaps", "ownership overlaps"),
    ("in_flight_at_fault", "in flight at fault"),
    ("redeliveries", "redeliveries"),
    ("failover_max_ms", "failover max ms"),
    ("failover_p99_ms", "failover p99 ms"),
    ("retries_max", "retries max"),
]


def parse(path):
    rows = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line.startswith("scenario="):
                continue
            fields = dict(kv.split("=", 1) for kv in line.split() if "=" in kv)
            rows.append(fields)
    return rows


def run(cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, check=False).stdout.strip()
    except OSError:
        return ""


def machine():
    model = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    cores = run(["nproc"])
    versions = run(
        ["dpkg-query", "-W", "-f", "${Package} ${Version}\n", "rabbitmq-server", "postgresql-15", "haproxy"]
    )
    return model, cores, platform.release(), versions.replace("\n", ", ")


def knee_steps(results):
    """The knee steps `at_load.rs` logged beside the results file, as text."""
    import os

    path = os.path.join(os.path.dirname(results), "knee-steps.txt")
    try:
        with open(path, encoding="utf-8") as f:
            steps = [line.strip() for line in f if line.strip()]
    except OSError:
        return ""
    return "; ".join(steps)


def main():
    results, out = sys.argv[1], sys.argv[2]
    order = list(PROVES)
    rows = sorted(
        parse(results),
        key=lambda r: order.index(r["scenario"]) if r["scenario"] in order else len(order),
    )
    if not rows:
        sys.exit(f"{results}: no result lines")
    model, cores, kernel, versions = machine()
    knee = knee_steps(results)
    known = {k for k, _ in COLUMNS} | {"scenario", "disturbed_devices"}
    lines = [
        "# Reliability: the failure drills, measured",
        "",
        "<!-- Generated by `scripts/faults --docs` from the drills' result lines; do not edit by hand. -->",
        "",
        f"Last full run: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC on "
        f"{cores} cores ({model}), Linux {kernel}; {versions}.",
        "",
        "Every drill runs the real binaries on loopback: two `ingest-api` replicas "
        "behind haproxy (TLS at the balancer, health check `GET /readyz` every "
        "100 ms with a 300 ms timeout, `fall 2 rise 2`, failed or timed-out requests re-sent to another "
        "replica), `analyzer` replicas, a 3-node RabbitMQ cluster with quorum "
        "queues (4 partitions) and PostgreSQL. The load is the seed's fleet "
        "emulated with `ha-device-client`: 100 devices, one reading every 200 ms "
        "each, the seed's retry policy (linear 1 s … 10 s, 10 retries, no jitter). "
        "The fault is injected once work is in flight (`in flight at fault`: the "
        "victim's unconfirmed publishes or unacknowledged deliveries, or the "
        "fleet's open requests, sampled a few ms before). Afterwards every "
        "device sends what it still holds and the store is counted per "
        "`(device_id, seq, metric)`.",
        "",
        "**Drills at load** (`*_at_load`): before the first of them, the run "
        "measures the knee of this very topology (debug binaries, the fleet in "
        "the same process, everything on the same cores): 1,000 devices, one "
        "reading per request, offered rates stepped up 1.5× at a time for 6 s "
        "each; the knee is the highest offered rate of which ≥ 95 % was "
        "acknowledged with nothing given up. The drills at load then run "
        "1,000 devices offering 60 % of it in waves (catch-up batches allowed, "
        "as real devices do) and fire into a wave: 200 or more sends open."
        + (f" This run's knee: {knee}." if knee else ""),
        "",
        "Reproduce: `scripts/faults --docs` (every drill, then this file). "
        "CI runs `scripts/faults` on every change.",
        "",
        "| drill | " + " | ".join(title for _, title in COLUMNS) + " | also measured |",
        "|---|" + "---:|" * len(COLUMNS) + "---|",
    ]
    for r in rows:
        extra = ", ".join(f"{k}={v}" for k, v in r.items() if k not in known)
        if "disturbed_devices" in r:
            extra = f"disturbed_devices={r['disturbed_devices']}" + (", " + extra if extra else "")
        lines.append(
            f"| `{r['scenario']}` | "
            + " | ".join(r.get(k, "") for k, _ in COLUMNS)
            + f" | {extra} |"
        )
    lines += [
        "",
        "Columns: `sent` readings generated by the devices; `acked` distinct "
        "readings answered 2xx; `stored once` acknowledged readings stored exactly "
        "once; `lost` acknowledged but not stored; `dup.` rows beyond one per key "
        "(readings and anomalies); `dead-lettered` messages in the drill's "
        "dead-letter queue; `ownership overlaps` violations of one owner per "
        "partition in the analyzers' ownership record (every committed batch "
        "is counted against its owner's epoch in the same transaction; "
        "`find_overlaps` checks that epochs were claimed in order, none "
        "committed after it was superseded, and no two epochs' commit windows "
        "interleave); `failover` for every device whose send met the fault "
        "(in flight at the fault or started within 2 s of it) and failed, was "
        "retried or stalled (> 300 ms), the time from the fault to "
        "its first successful send after it (`disturbed_devices` of them); "
        "`retries max` the most retries one send needed.",
        "",
        "Every drill fails unless lost = 0, duplicates = 0, dead-lettered = 0, "
        "ownership overlaps = 0, every generated reading was acknowledged in the end, and the fault met "
        "work in flight.",
        "",
        "## What the drills found",
        "",
        "- **Readiness that follows a shared dependency takes every replica out "
        "at once.** In the database-restart drill the broker's confirms stalled "
        "for a moment (the disk was busy); `/readyz` probed the broker, the 200 ms "
        "health checks of haproxy timed out on *both* replicas, and haproxy "
        "answered 503 to every device, turning a stall into an outage. `/readyz` "
        "now answers from the last success for a grace period (`ready_grace`, "
        "5 s) while it checks the broker in the background, unless a publish "
        "failed; a hung process still fails its checks, a dead broker still "
        "turns it unready.",
        "- **A graceful shutdown dropped requests that had just been accepted.** "
        "The `SIGTERM` drill of the alerts API saw a few queries closed without "
        "an answer: hyper counts a connection whose request is not parsed yet as "
        "idle and closes it when the drain starts. `serve` now gives freshly "
        "accepted connections 100 ms to send their request before the drain. "
        "Connections still in the kernel's listen backlog when the listener "
        "closes are reset before any byte is answered (counted as refused: never "
        "processed, safe to retry); the balancer's readiness check is what keeps "
        "new connections away from a draining replica.",
        "",
        "- **Health checks tuned for fast detection flap on a busy machine.** "
        "With one failed 200 ms check taking a replica out (`fall 1`), a moment "
        "of CPU starvation on the 2-core machine took both replicas out and "
        "haproxy answered 503 to every device. Two failed checks of 300 ms "
        "(`fall 2`) still remove a hung replica in under a second "
        "(`balancer_removed_ms` in the `SIGSTOP` drill) without those false "
        "outages.",
        "",
        "## What each drill proves",
        "",
    ]
    for r in rows:
        title, text = PROVES.get(r["scenario"], (r["scenario"], ""))
        lines += [f"### {title}", "", text, ""]
    with open(out, "w", encoding="utf-8") as f:
        f.write("\n".join(lines).rstrip() + "\n")


if __name__ == "__main__":
    main()
