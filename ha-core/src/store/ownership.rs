//! Partition ownership epochs: who committed batches for which partition,
//! and the audit that proves no two owners overlapped.
//!
//! An analyzer that starts consuming a partition first *claims* it
//! ([`Store::claim_partition`](super::Store::claim_partition)): the
//! partition's epoch goes up by one and the previous epoch is marked
//! superseded. Every batch it commits afterwards goes through
//! [`Store::write_fenced`](super::Store::write_fenced), which, in the same
//! transaction as the rows, checks that its epoch is still the current one
//! and records the commit against it. A replica that lost the partition
//! (crashed and came back, cut off from the broker) is refused with
//! [`StoreError::Fenced`](super::StoreError::Fenced) and writes nothing.
//!
//! [`find_overlaps`] re-checks the record from outside: for each partition,
//! epochs in claim order, no commit of an epoch after it was superseded,
//! and no two epochs' commit windows interleaving.

use serde::Serialize;

use crate::wire::Timestamp;

/// The right to commit batches of one partition: returned by a claim,
/// passed to every fenced write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fence {
    /// The consumer group (the analyzers' membership group).
    pub group: String,
    /// The partition.
    pub partition: u32,
    /// The claim's epoch: 1 for the first owner, +1 at each takeover.
    pub epoch: u64,
    /// The claiming replica.
    pub owner: String,
}

/// One ownership epoch of a partition, as the store recorded it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct EpochRecord {
    /// The partition.
    pub partition: u32,
    /// The epoch.
    pub epoch: u64,
    /// Who claimed it.
    pub owner: String,
    /// When it was claimed (store clock).
    pub claimed_at: Timestamp,
    /// When the next claim superseded it; `None` while current.
    pub superseded_at: Option<Timestamp>,
    /// First and last batch committed under this epoch (store clock, taken
    /// inside the committing transaction); `None` when none was.
    pub first_commit_at: Option<Timestamp>,
    /// See `first_commit_at`.
    pub last_commit_at: Option<Timestamp>,
    /// Batches committed under this epoch.
    pub batches: u64,
}

/// A violation [`find_overlaps`] found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum Overlap {
    /// A later epoch was claimed before an earlier one.
    EpochBackwards {
        /// The partition.
        partition: u32,
        /// The earlier epoch, claimed later.
        epoch: u64,
        /// The later epoch, claimed earlier.
        next: u64,
    },
    /// An epoch committed a batch after it was superseded.
    CommitAfterSuperseded {
        /// The partition.
        partition: u32,
        /// The epoch.
        epoch: u64,
        /// Its owner.
        owner: String,
    },
    /// Two epochs' commit windows interleave: two owners committed for the
    /// partition in the same span of time.
    WindowsInterleave {
        /// The partition.
        partition: u32,
        /// The earlier epoch and its owner.
        epoch: u64,
        /// Owner of `epoch`.
        owner: String,
        /// The later epoch that committed before `epoch`'s last commit.
        next: u64,
        /// Owner of `next`.
        next_owner: String,
    },
    /// Two current (unsuperseded) epochs for one partition.
    TwoCurrent {
        /// The partition.
        partition: u32,
    },
}

/// Checks `records` (any order, one group) for ownership overlaps; empty
/// when none. Commit times come from the store's clock inside the
/// committing transaction; fencing orders a commit before the claim that
/// supersedes it, so on one database clock the windows never interleave.
pub fn find_overlaps(records: &[EpochRecord]) -> Vec<Overlap> {
    let mut sorted: Vec<&EpochRecord> = records.iter().collect();
    sorted.sort_by_key(|r| (r.partition, r.epoch));
    let mut found = Vec::new();
    for part in sorted.chunk_by(|a, b| a.partition == b.partition) {
        let partition = part[0].partition;
        if part.iter().filter(|r| r.superseded_at.is_none()).count() > 1 {
            found.push(Overlap::TwoCurrent { partition });
        }
        for r in part {
            if let (Some(last), Some(end)) = (r.last_commit_at, r.superseded_at)
                && last > end
            {
                found.push(Overlap::CommitAfterSuperseded {
                    partition,
                    epoch: r.epoch,
                    owner: r.owner.clone(),
                });
            }
        }
        for (i, r) in part.iter().enumerate() {
            for next in &part[i + 1..] {
                if next.claimed_at < r.claimed_at {
                    found.push(Overlap::EpochBackwards {
                        partition,
                        epoch: r.epoch,
                        next: next.epoch,
                    });
                }
                if let (Some(last), Some(first)) = (r.last_commit_at, next.first_commit_at)
                    && first < last
                {
                    found.push(Overlap::WindowsInterleave {
                        partition,
                        epoch: r.epoch,
                        owner: r.owner.clone(),
                        next: next.epoch,
                        next_owner: next.owner.clone(),
                    });
                }
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(ms: i64) -> Timestamp {
        Timestamp::from_unix_micros(ms * 1000)
    }

    fn epoch(
        partition: u32,
        epoch: u64,
        owner: &str,
        claimed: i64,
        superseded: Option<i64>,
        commits: Option<(i64, i64)>,
    ) -> EpochRecord {
        EpochRecord {
            partition,
            epoch,
            owner: owner.into(),
            claimed_at: t(claimed),
            superseded_at: superseded.map(t),
            first_commit_at: commits.map(|(f, _)| t(f)),
            last_commit_at: commits.map(|(_, l)| t(l)),
            batches: u64::from(commits.is_some()),
        }
    }

    #[test]
    fn a_clean_history_has_no_overlap() {
        let records = vec![
            epoch(0, 2, "b", 100, None, Some((101, 500))),
            epoch(0, 1, "a", 0, Some(100), Some((1, 99))),
            epoch(1, 1, "b", 0, None, Some((5, 600))),
            // Claimed, never committed (lost the partition at once).
            epoch(2, 1, "a", 0, Some(50), None),
            epoch(2, 2, "b", 50, None, Some((60, 70))),
        ];
        assert_eq!(find_overlaps(&records), vec![]);
        assert_eq!(find_overlaps(&[]), vec![]);
    }

    #[test]
    fn each_violation_is_found() {
        let zombie = vec![
            epoch(0, 1, "a", 0, Some(100), Some((1, 150))),
            epoch(0, 2, "b", 100, None, Some((120, 500))),
        ];
        assert_eq!(
            find_overlaps(&zombie),
            vec![
                Overlap::CommitAfterSuperseded {
                    partition: 0,
                    epoch: 1,
                    owner: "a".into()
                },
                Overlap::WindowsInterleave {
                    partition: 0,
                    epoch: 1,
                    owner: "a".into(),
                    next: 2,
                    next_owner: "b".into()
                },
            ]
        );
        let backwards = vec![
            epoch(3, 1, "a", 200, Some(300), None),
            epoch(3, 2, "b", 100, Some(200), None),
            epoch(3, 3, "a", 300, None, None),
        ];
        assert_eq!(
            find_overlaps(&backwards),
            vec![Overlap::EpochBackwards {
                partition: 3,
                epoch: 1,
                next: 2
            }]
        );
        let two = vec![
            epoch(1, 1, "a", 0, None, None),
            epoch(1, 2, "b", 10, None, None),
        ];
        assert_eq!(
            find_overlaps(&two),
            vec![Overlap::TwoCurrent { partition: 1 }]
        );
    }
}
