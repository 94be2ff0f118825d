//! Shared devices, IPs, phones and Wi-Fi networks across participants: the
//! clusters that suggest fraud rings.
//!
//! Counting every distinct value of a 10-million-row list would make memory
//! grow with the input, so each field uses lossy counting (Manku & Motwani):
//! a value seen in more than 1 in `BUCKET` rows is always kept, counts are
//! exact from when a value was first kept and short by at most rows/`BUCKET`.
//! Below `BUCKET` rows every count is exact.

use std::collections::HashMap;
use std::hash::BuildHasher;

use serde::{Deserialize, Serialize};

const BUCKET: u64 = 25_000;
/// Fewer rows than this sharing a value is not a cluster.
const MIN_ROWS: u64 = 3;
const MAX_CLUSTERS: usize = 50;

/// The API fields whose shared values are reported, in the order shown.
pub const CLUSTER_FIELDS: [&str; 4] = ["deviceid", "clientip", "phonenum", "wifibssid"];

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cluster {
    pub field: String,
    pub value: String,
    pub rows: u64,
    pub high_risk_rows: u64,
}

/// Rows listed per cluster in report.html; the rest are counted as "N more".
pub const MEMBERS_SHOWN: usize = 25;

/// A row of a cluster, as report.html lists it (masked columns stay masked).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub row: u64,
    pub openid: String,
    pub level: Option<u8>,
}

/// The clusters of a run and, for each, its first rows.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Found {
    pub clusters: Vec<Cluster>,
    /// `members[i]`: the first `MEMBERS_SHOWN` rows of `clusters[i]`.
    pub members: Vec<Vec<Member>>,
    /// Input rows with a pushed verdict, counted when the results were written.
    #[serde(default)]
    pub feedback_rows: Option<u64>,
}

/// Collects the first rows of known clusters, in a pass after the counting
/// one (which learns the clusters only at its end): memory stays at
/// `MEMBERS_SHOWN` rows per cluster.
pub struct MemberCollector {
    /// Per cluster field: value → index of its cluster.
    by_value: [HashMap<String, usize>; 4],
    members: Vec<Vec<Member>>,
    /// Per cluster: the rows to list, `MEMBERS_SHOWN` or its counted rows
    /// if fewer (the counts are exact or short, so that many rows exist).
    wanted: Vec<usize>,
    /// Clusters with fewer members than wanted.
    open: usize,
}

impl MemberCollector {
    pub fn new(clusters: &[Cluster]) -> MemberCollector {
        let mut by_value: [HashMap<String, usize>; 4] = Default::default();
        for (i, c) in clusters.iter().enumerate() {
            if let Some(field) = CLUSTER_FIELDS.iter().position(|f| *f == c.field) {
                by_value[field].insert(c.value.clone(), i);
            }
        }
        let wanted: Vec<usize> = clusters
            .iter()
            .map(|c| MEMBERS_SHOWN.min(usize::try_from(c.rows).unwrap_or(usize::MAX)))
            .collect();
        MemberCollector {
            by_value,
            members: vec![Vec::new(); clusters.len()],
            open: wanted.iter().filter(|w| **w > 0).count(),
            wanted,
        }
    }

    /// Whether any cluster is on `CLUSTER_FIELDS[field]`.
    pub fn wants(&self, field: usize) -> bool {
        !self.by_value[field].is_empty()
    }

    /// Whether every cluster has its members: the rest of the input need
    /// not be read (a ring's first rows usually come early in a list).
    pub fn complete(&self) -> bool {
        self.open == 0
    }

    /// A row whose `CLUSTER_FIELDS[field]` is `value`; `member` is called
    /// only when the row belongs to a cluster that still has room.
    pub fn add(&mut self, field: usize, value: &str, member: impl FnOnce() -> Member) {
        if let Some(&i) = self.by_value[field].get(value)
            && self.members[i].len() < self.wanted[i]
        {
            self.members[i].push(member());
            if self.members[i].len() == self.wanted[i] {
                self.open -= 1;
            }
        }
    }

    pub fn finish(self) -> Vec<Vec<Member>> {
        self.members
    }
}

/// 32 bytes: at most 2 × `BUCKET` of them per field are held at once.
#[derive(Default)]
struct Entry {
    rows: u32,
    high: u32,
    /// Rows this value may have had before it was (re)admitted.
    error: u32,
    /// Kept from the value's second row since it was (re)admitted: most
    /// values are seen once and never need their text (copying every one
    /// took a fifth of the output pass).
    value: Option<Box<str>>,
}

/// Lossy counts of one field's values, keyed by a 64-bit hash of the value
/// (a collision among the at most 2 × `BUCKET` values kept is about 1 in 10⁹).
#[derive(Default)]
pub struct FieldCounter {
    seen: u64,
    hasher: foldhash::fast::RandomState,
    /// The keys are hashes already.
    entries: HashMap<u64, Entry, foldhash::fast::FixedState>,
}

impl FieldCounter {
    pub fn add(&mut self, value: &str, high_risk: bool) {
        self.seen += 1;
        let bucket = self.seen.div_ceil(BUCKET);
        let entry = self
            .entries
            .entry(self.hasher.hash_one(value))
            .or_insert(Entry {
                error: (bucket - 1) as u32,
                ..Entry::default()
            });
        entry.rows = entry.rows.saturating_add(1);
        entry.high = entry.high.saturating_add(u32::from(high_risk));
        if entry.value.is_none() && entry.rows >= 2 {
            entry.value = Some(value.into());
        }
        if self.seen.is_multiple_of(BUCKET) {
            self.entries
                .retain(|_, e| u64::from(e.rows) + u64::from(e.error) > bucket);
        }
    }

    fn clusters(&self, field: &str) -> impl Iterator<Item = Cluster> + '_ {
        let field = field.to_string();
        self.entries
            .values()
            .filter(|e| u64::from(e.rows) >= MIN_ROWS)
            .filter_map(move |e| {
                Some(Cluster {
                    field: field.clone(),
                    value: e.value.as_deref()?.to_string(),
                    rows: u64::from(e.rows),
                    high_risk_rows: u64::from(e.high),
                })
            })
    }
}

/// Counters for every cluster field.
#[derive(Default)]
pub struct ClusterCounter {
    fields: [FieldCounter; 4],
}

impl ClusterCounter {
    /// Counts a row's value of `CLUSTER_FIELDS[field]`.
    pub fn add(&mut self, field: usize, value: &str, high_risk: bool) {
        self.fields[field].add(value, high_risk);
    }

    /// The largest clusters, most high-risk rows first.
    pub fn top(&self) -> Vec<Cluster> {
        let mut all: Vec<Cluster> = CLUSTER_FIELDS
            .iter()
            .zip(&self.fields)
            .flat_map(|(name, counter)| counter.clusters(name))
            .collect();
        all.sort_by(|a, b| {
            (b.high_risk_rows, b.rows)
                .cmp(&(a.high_risk_rows, a.rows))
                .then_with(|| (&a.field, &a.value).cmp(&(&b.field, &b.value)))
        });
        all.truncate(MAX_CLUSTERS);
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_inputs_are_counted_exactly() {
        let mut counter = ClusterCounter::default();
        for i in 0..10 {
            counter.add(0, "dev-ring", i < 7);
        }
        counter.add(0, "dev-solo", true);
        counter.add(1, "10.0.0.1", false);
        counter.add(1, "10.0.0.1", false);
        counter.add(1, "10.0.0.1", false);
        let top = counter.top();
        assert_eq!(top.len(), 2);
        assert_eq!(
            top[0],
            Cluster {
                field: "deviceid".into(),
                value: "dev-ring".into(),
                rows: 10,
                high_risk_rows: 7
            }
        );
        assert_eq!((top[1].field.as_str(), top[1].rows), ("clientip", 3));
    }

    #[test]
    fn members_are_collected_up_to_the_cap_for_known_clusters_only() {
        let clusters = vec![Cluster {
            field: "clientip".into(),
            value: "10.0.0.1".into(),
            rows: 40,
            high_risk_rows: 0,
        }];
        let mut collector = MemberCollector::new(&clusters);
        assert!(collector.wants(1) && !collector.wants(0));
        for row in 1..=40 {
            collector.add(1, "10.0.0.1", || Member {
                row,
                openid: format!("o{row}"),
                level: Some(1),
            });
            collector.add(1, "10.0.0.2", || unreachable!("not a cluster"));
        }
        let members = collector.finish();
        assert_eq!(members[0].len(), MEMBERS_SHOWN);
        assert_eq!(members[0][0].row, 1);
    }

    #[test]
    fn collection_is_complete_once_every_cluster_has_its_rows() {
        let cluster = |value: &str, rows| Cluster {
            field: "deviceid".into(),
            value: value.into(),
            rows,
            high_risk_rows: 0,
        };
        let clusters = vec![cluster("big", 1000), cluster("small", 3)];
        let mut collector = MemberCollector::new(&clusters);
        let member = |row| Member {
            row,
            openid: String::new(),
            level: None,
        };
        for row in 1..=MEMBERS_SHOWN as u64 {
            assert!(!collector.complete(), "row {row}");
            collector.add(0, "big", || member(row));
        }
        assert!(!collector.complete(), "\"small\" has no member yet");
        for row in 100..103 {
            collector.add(0, "small", || member(row));
        }
        assert!(collector.complete());
        collector.add(0, "small", || unreachable!("\"small\" counted 3 rows"));
        let members = collector.finish();
        assert_eq!(members[0].len(), MEMBERS_SHOWN);
        assert_eq!(
            members[1].iter().map(|m| m.row).collect::<Vec<_>>(),
            [100, 101, 102]
        );
        assert!(MemberCollector::new(&[]).complete());
    }

    #[test]
    fn memory_stays_bounded_and_heavy_values_survive() {
        let mut counter = FieldCounter::default();
        for i in 0..1_000_000u64 {
            if i % 1000 == 0 {
                counter.add("farm", true);
            } else {
                counter.add(&format!("u{i}"), false);
            }
        }
        assert!(
            counter.entries.len() <= 2 * BUCKET as usize,
            "{} entries",
            counter.entries.len()
        );
        let farm = &counter.entries[&counter.hasher.hash_one("farm")];
        assert_eq!(farm.value.as_deref(), Some("farm"));
        assert_eq!(farm.rows, 1000);
        assert_eq!(farm.high, 1000);
    }
}
