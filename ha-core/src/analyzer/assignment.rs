//! Which partitions a replica owns, given the live replicas, and when a
//! replica consuming a partition assigned elsewhere makes way.

use std::time::Duration;

use tokio::time::Instant;

/// The partitions `me` owns among the sorted live `members`: partition `p`
/// goes to `members[p % members.len()]`. Every replica computes the same
/// answer from the same member list; shares differ by at most one.
///
/// When `me` is not in the list (its lease lapsed), it owns nothing.
pub fn owned_partitions(members: &[String], me: &str, partitions: u32) -> Vec<u32> {
    let Some(rank) = members.iter().position(|m| m == me) else {
        return Vec::new();
    };
    let n = members.len();
    (0..partitions)
        .filter(|p| *p as usize % n == rank)
        .collect()
}

/// This replica's view of the assignment: each partition's assigned
/// member and since when (local clock) it has been.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct View {
    owners: Vec<Option<(String, Instant)>>,
}

impl View {
    /// Updates the view from the live `members` at `now`; a partition
    /// whose assigned member changes restarts its `since`. No members (the
    /// lease lapsed) leaves every partition unassigned.
    pub(super) fn update(&mut self, members: &[String], partitions: u32, now: Instant) {
        self.owners.resize(partitions as usize, None);
        for (p, slot) in self.owners.iter_mut().enumerate() {
            let owner = (!members.is_empty()).then(|| &members[p % members.len()]);
            match (owner, slot.as_ref()) {
                (Some(o), Some((current, _))) if o == current => {}
                (Some(o), _) => *slot = Some((o.clone(), now)),
                (None, _) => *slot = None,
            }
        }
    }

    /// The member `partition` is assigned to, if any.
    pub(super) fn owner(&self, partition: u32) -> Option<&str> {
        self.owners
            .get(partition as usize)
            .and_then(|o| o.as_ref())
            .map(|(name, _)| name.as_str())
    }

    /// Whether `me`, active on `partition` since `active_since`, makes way
    /// for the partition's assigned member: one that has been assigned it,
    /// and so held its lease, for `lease_wait` since both the assignment
    /// and the activation. A member that died before the activation (the
    /// reason `me` became active) loses its lease within the TTL, which
    /// changes the assignment first; so `lease_wait` (TTL plus a heartbeat)
    /// tells a live owner from a crashed one without any shorter timeout.
    pub(super) fn should_yield(
        &self,
        partition: u32,
        me: &str,
        active_since: Instant,
        lease_wait: Duration,
        now: Instant,
    ) -> bool {
        match self.owners.get(partition as usize) {
            Some(Some((owner, since))) if owner != me => {
                now >= (*since).max(active_since) + lease_wait
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_standby_makes_way_only_for_an_owner_that_outlived_its_lease() {
        let ab = names(&["a", "b"]);
        let wait = Duration::from_secs(6);
        let t0 = Instant::now();
        let mut view = View::default();
        assert_eq!(view.owner(0), None);
        view.update(&ab, 4, t0);
        assert_eq!((view.owner(0), view.owner(1)), (Some("a"), Some("b")));
        // b took partition 0 (a's) over at t0 + 1 s: a may just have died.
        let active = t0 + Duration::from_secs(1);
        assert!(!view.should_yield(0, "b", active, wait, t0 + Duration::from_secs(6)));
        // a still assigned a lease-time after the takeover: a is alive.
        assert!(view.should_yield(0, "b", active, wait, t0 + Duration::from_secs(7)));
        // Never for its own partitions, nor for partitions out of range.
        assert!(!view.should_yield(1, "b", active, wait, t0 + Duration::from_secs(60)));
        assert!(!view.should_yield(9, "b", active, wait, t0 + Duration::from_secs(60)));
        // a's lease lapsed at t0 + 5 s: b is the owner now, keeps it.
        view.update(&names(&["b"]), 4, t0 + Duration::from_secs(5));
        assert!(!view.should_yield(0, "b", active, wait, t0 + Duration::from_secs(60)));
        // c joins at t0 + 10 s and is assigned 1 and 3: b keeps them until
        // c has held its lease for the wait after joining.
        let bc = names(&["b", "c"]);
        let joined = t0 + Duration::from_secs(10);
        view.update(&bc, 4, joined);
        assert!(!view.should_yield(1, "b", active, wait, joined + Duration::from_secs(5)));
        assert!(view.should_yield(1, "b", active, wait, joined + wait));
        assert!(!view.should_yield(0, "b", active, wait, joined + wait));
        // An unchanged membership keeps every `since`.
        let before = view.clone();
        view.update(&bc, 4, joined + Duration::from_secs(30));
        assert_eq!(view, before);
        // No lease: nothing assigned, nothing to make way for.
        view.update(&[], 4, joined + Duration::from_secs(40));
        assert!(!view.should_yield(1, "b", active, wait, joined + Duration::from_secs(99)));
    }

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn splits_evenly_and_covers_everything_once() {
        let members = names(&["a", "b", "c"]);
        let mut all: Vec<u32> = members
            .iter()
            .flat_map(|m| owned_partitions(&members, m, 8))
            .collect();
        all.sort_unstable();
        assert_eq!(all, (0..8).collect::<Vec<_>>());
        assert_eq!(owned_partitions(&members, "a", 8), vec![0, 3, 6]);
        assert_eq!(owned_partitions(&members, "c", 8), vec![2, 5]);
        let two = names(&["a", "b"]);
        assert_eq!(owned_partitions(&two, "b", 8).len(), 4);
        assert_eq!(owned_partitions(&names(&["a"]), "a", 8).len(), 8);
        assert!(owned_partitions(&two, "zed", 8).is_empty());
        assert!(owned_partitions(&[], "a", 8).is_empty());
    }
}
