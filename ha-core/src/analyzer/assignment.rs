//! Which partitions a replica owns, given the live replicas.

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

#[cfg(test)]
mod tests {
    use super::*;

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
