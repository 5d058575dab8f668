//! The SQL of the store. Valid for PostgreSQL and CockroachDB: no
//! `LISTEN/NOTIFY`, temporary tables, advisory locks or `SERIAL` semantics
//! (a test scans this file for them).

/// Writes a batch of readings and their anomalies in one statement, hence
/// one round trip and one implicit transaction. The outer `SELECT` sees the
/// table as it was before the statement, so joining the input against it
/// finds the keys that were already stored, and which of them differ.
///
/// `fenced`: the statement also takes `$14..$17` (group, partition, epoch,
/// owner), locks the partition's owner row if that epoch is still current
/// (a claim updates the same row: a claim and a fenced write are
/// serialized, and PostgreSQL re-checks the epoch after waiting for the
/// lock), counts the batch against the epoch, inserts nothing otherwise,
/// and returns a fourth column: 1 when the epoch was current, 0 when
/// fenced off. Each table is modified once (CockroachDB refuses more).
pub(super) fn write_sql(fenced: bool) -> String {
    let (fence, gate, fenced_col) = if fenced {
        (
            "fence AS (
    SELECT 1 FROM partition_owners
    WHERE grp = $14 AND part = $15 AND epoch = $16 AND owner = $17
    FOR UPDATE
), counted AS (
    UPDATE partition_epochs SET batches = batches + 1,
        first_commit_at = COALESCE(first_commit_at, clock_timestamp()),
        last_commit_at = clock_timestamp()
    WHERE grp = $14 AND part = $15 AND epoch = $16 AND EXISTS (SELECT 1 FROM fence)
    RETURNING 1
), ",
            "WHERE EXISTS (SELECT 1 FROM counted)",
            ",\n    (SELECT count(*) FROM counted)",
        )
    } else {
        ("", "", "")
    };
    format!(
        "
WITH {fence}r_in AS (
    SELECT * FROM unnest($1::TEXT[], $2::INT8[], $3::TEXT[], $4::TIMESTAMPTZ[], $5::FLOAT8[])
        AS t(device_id, seq, metric, ts, value)
), r_ins AS (
    INSERT INTO readings (device_id, seq, metric, ts, value)
    SELECT device_id, seq, metric, ts, value FROM r_in {gate}
    ON CONFLICT (device_id, seq, metric) DO NOTHING
    RETURNING 1
), a_in AS (
    SELECT * FROM unnest($6::TEXT[], $7::INT8[], $8::TEXT[], $9::TIMESTAMPTZ[], $10::FLOAT8[],
                         $11::FLOAT8[], $12::FLOAT8[], $13::TEXT[])
        AS t(device_id, seq, metric, ts, value, score, anomaly_score, detector)
), a_ins AS (
    INSERT INTO anomalies (device_id, seq, metric, ts, value, score, anomaly_score, detector)
    SELECT device_id, seq, metric, ts, value, score, anomaly_score, detector FROM a_in {gate}
    ON CONFLICT (device_id, seq, metric) DO NOTHING
    RETURNING 1
)
SELECT
    (SELECT count(*) FROM r_ins),
    (SELECT count(*) FROM r_in JOIN readings r
        ON r.device_id = r_in.device_id AND r.seq = r_in.seq AND r.metric = r_in.metric
        WHERE (r.ts <> r_in.ts OR r.value <> r_in.value)
          -- Only when some key was already stored (a redelivery, a resend):
          -- a one-time filter, so the common batch skips this join.
          AND (SELECT count(*) FROM r_ins) < (SELECT count(*) FROM r_in)),
    (SELECT count(*) FROM a_ins){fenced_col}"
    )
}

/// Claims a partition: the owner row's epoch goes up by one (its lock
/// waits for a fenced write of the previous epoch that is committing; the
/// claim time is taken after the lock) and the new epoch is recorded.
pub(super) const CLAIM: &str = "
WITH cur AS (
    INSERT INTO partition_owners (grp, part, epoch, owner, claimed_at)
    VALUES ($1, $2, 1, $3, clock_timestamp())
    ON CONFLICT (grp, part) DO UPDATE SET epoch = partition_owners.epoch + 1,
        owner = excluded.owner, claimed_at = clock_timestamp()
    RETURNING epoch, claimed_at
)
INSERT INTO partition_epochs (grp, part, epoch, owner, claimed_at)
SELECT $1, $2, epoch, $3, claimed_at FROM cur
RETURNING epoch";

/// Every epoch of a group; an epoch was superseded when the next one was
/// claimed.
pub(super) const PARTITION_EPOCHS: &str = "
SELECT part, epoch, owner, claimed_at,
    lead(claimed_at) OVER (PARTITION BY part ORDER BY epoch),
    first_commit_at, last_commit_at, batches
FROM partition_epochs WHERE grp = $1 ORDER BY part, epoch";

/// The newest `$4` values of a series with `seq <= $3`, oldest first.
pub(super) const RECENT_VALUES: &str = "
SELECT seq, value FROM (
    SELECT seq, value FROM readings
    WHERE device_id = $1 AND metric = $2 AND seq <= $3
    ORDER BY seq DESC LIMIT $4
) t ORDER BY seq";

pub(super) const DEVICE_STATUS: &str =
    "SELECT max(ts), max(seq) FROM readings WHERE device_id = $1";

pub(super) const SEQ_GAPS: &str = "
SELECT prev + 1, seq - 1 FROM (
    SELECT seq, lag(seq) OVER (ORDER BY seq) AS prev
    FROM (SELECT DISTINCT seq FROM readings WHERE device_id = $1 AND seq >= $2 AND seq <= $3) s
) t
WHERE seq > prev + 1 ORDER BY seq LIMIT $4";

pub(super) const DELETE_BEFORE: &str = "
DELETE FROM readings WHERE (device_id, seq, metric) IN (
    SELECT device_id, seq, metric FROM readings WHERE ts < $1 LIMIT $2
)";

/// Renews a member's lease (store clock) and lists the live members. The
/// outer query cannot see the upsert's row, hence the `UNION`.
pub(super) const HEARTBEAT: &str = "
WITH up AS (
    INSERT INTO group_members (grp, member, expires_at)
    VALUES ($1, $2, now() + $3::INT8 * INTERVAL '1 millisecond')
    ON CONFLICT (grp, member) DO UPDATE SET expires_at = excluded.expires_at
    RETURNING member
)
SELECT member FROM group_members WHERE grp = $1 AND member <> $2 AND expires_at > now()
UNION SELECT member FROM up
ORDER BY 1";

pub(super) const LEAVE: &str = "DELETE FROM group_members WHERE grp = $1 AND member = $2";

/// Forgets leases that expired long ago.
pub(super) const FORGET_EXPIRED: &str =
    "DELETE FROM group_members WHERE grp = $1 AND expires_at < now() - INTERVAL '1 hour'";

pub(super) const ANOMALY_COLUMNS: &str =
    "device_id, seq, metric, ts, value, score, anomaly_score, detector";

/// The anomalies query for the filters that are set (device, metric, from,
/// to, after-cursor); placeholders are numbered in that order, the limit
/// last.
pub(super) fn anomaly_sql(device: bool, metric: bool, from: bool, to: bool, after: bool) -> String {
    let mut conds = Vec::new();
    let mut n = 0;
    let mut p = || {
        n += 1;
        format!("${n}")
    };
    if device {
        conds.push(format!("device_id = {}", p()));
    }
    if metric {
        conds.push(format!("metric = {}", p()));
    }
    if from {
        conds.push(format!("ts >= {}", p()));
    }
    if to {
        conds.push(format!("ts < {}", p()));
    }
    if after {
        let (a, b, c, d) = (p(), p(), p(), p());
        conds.push(format!(
            "(ts, device_id, seq, metric) < ({a}, {b}, {c}, {d})"
        ));
    }
    let limit = p();
    let filter = if conds.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", conds.join(" AND "))
    };
    format!(
        "SELECT {ANOMALY_COLUMNS} FROM anomalies {filter} ORDER BY ts DESC, device_id DESC, seq DESC, metric DESC LIMIT {limit}"
    )
}

/// A device's values in a time range, optionally of one metric
/// (`$1` device, `$2` from, `$3` to, then the metric if any, the limit last).
pub(super) fn readings_sql(metric: bool) -> String {
    let (m, limit) = if metric {
        ("AND metric = $4", "$5")
    } else {
        ("", "$4")
    };
    format!(
        "SELECT seq, ts, metric, value FROM readings \
         WHERE device_id = $1 AND ts >= $2 AND ts < $3 {m} \
         ORDER BY ts, seq, metric LIMIT {limit}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every statement the store sends, including each shape of the
    /// dynamically built queries.
    fn all_statements() -> Vec<String> {
        let mut all: Vec<String> = [
            RECENT_VALUES,
            DEVICE_STATUS,
            SEQ_GAPS,
            DELETE_BEFORE,
            HEARTBEAT,
            LEAVE,
            FORGET_EXPIRED,
            CLAIM,
            PARTITION_EPOCHS,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        all.extend(
            super::super::migrate::MIGRATIONS
                .iter()
                .map(|m| m.sql.to_string()),
        );
        for bits in 0..32u8 {
            let b = |i: u8| bits & (1 << i) != 0;
            all.push(anomaly_sql(b(0), b(1), b(2), b(3), b(4)));
        }
        all.push(readings_sql(false));
        all.push(readings_sql(true));
        all.push(write_sql(false));
        all.push(write_sql(true));
        all
    }

    #[test]
    fn uses_nothing_cockroachdb_lacks() {
        let banned = [
            "LISTEN",
            "NOTIFY",
            "TEMPORARY",
            "TEMP ",
            "ADVISORY",
            "SERIAL",
            "COPY",
            "RETURNING *",
        ];
        for sql in all_statements() {
            let code: String = sql
                .lines()
                .filter(|l| !l.trim_start().starts_with("--"))
                .collect::<Vec<_>>()
                .join("\n")
                .to_uppercase();
            for b in banned {
                assert!(!code.contains(b), "`{b}` in: {sql}");
            }
        }
    }

    /// CockroachDB refuses a statement that modifies one table twice
    /// (e.g. an `UPDATE` in a CTE and an `INSERT` of the same table).
    #[test]
    fn no_statement_modifies_a_table_twice() {
        for sql in all_statements() {
            let words: Vec<String> = sql
                .split_whitespace()
                .map(|w| {
                    w.trim_matches(|c: char| c == '(' || c == ')')
                        .to_uppercase()
                })
                .collect();
            let mut modified = Vec::new();
            for (i, w) in words.iter().enumerate() {
                let table = match w.as_str() {
                    // `ON CONFLICT ... DO UPDATE SET` modifies the INSERT's table.
                    "UPDATE" => words.get(i + 1).filter(|t| *t != "SET"),
                    "INTO" | "FROM"
                        if i > 0 && matches!(words[i - 1].as_str(), "INSERT" | "DELETE") =>
                    {
                        words.get(i + 1)
                    }
                    _ => None,
                };
                if let Some(t) = table {
                    assert!(!modified.contains(t), "{t} modified twice in: {sql}");
                    modified.push(t.clone());
                }
            }
        }
    }
}
