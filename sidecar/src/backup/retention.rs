//! The retention policy: which complete snapshots `prune` keeps.
//!
//! Kept: the newest `keep_last`; plus the newest snapshot of each of the
//! last `daily` UTC days that have one; plus the newest of each ISO week
//! with a snapshot in the last `weekly` × 7 days (so up to `weekly` + 1
//! weeks, the oldest one partly). The newest snapshot is always kept,
//! whatever the settings.

use std::collections::BTreeSet;

use chrono::{DateTime, Datelike, Duration, Utc};

use crate::configuration::RetentionSettings;

/// What `prune` keeps and deletes, by snapshot id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Ids kept, newest first.
    pub keep: Vec<String>,
    /// Ids deleted, newest first.
    pub delete: Vec<String>,
}

/// Decides which of `snapshots` (id, finish time) to keep at `now`.
pub fn plan(
    snapshots: &[(String, DateTime<Utc>)],
    policy: &RetentionSettings,
    now: DateTime<Utc>,
) -> Plan {
    let mut sorted: Vec<&(String, DateTime<Utc>)> = snapshots.iter().collect();
    sorted.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| b.0.cmp(&a.0)));
    let mut keep = BTreeSet::new();
    // The newest is kept even with keep_last = 0: a policy must never leave
    // the store without a restorable snapshot.
    for (id, _) in sorted.iter().take(policy.keep_last.max(1)) {
        keep.insert(id.clone());
    }
    let day_cutoff = (now - Duration::days(policy.daily as i64)).date_naive();
    let mut days_seen = BTreeSet::new();
    let week_cutoff = now - Duration::weeks(policy.weekly as i64);
    let mut weeks_seen = BTreeSet::new();
    for (id, at) in &sorted {
        if policy.daily > 0 && at.date_naive() > day_cutoff && days_seen.insert(at.date_naive()) {
            keep.insert(id.clone());
        }
        let week = at.iso_week();
        if policy.weekly > 0 && *at > week_cutoff && weeks_seen.insert((week.year(), week.week())) {
            keep.insert(id.clone());
        }
    }
    let (kept, deleted): (Vec<String>, Vec<String>) = sorted
        .iter()
        .map(|(id, _)| id.clone())
        .partition(|id| keep.contains(id));
    Plan {
        keep: kept,
        delete: deleted,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn policy(keep_last: usize, daily: usize, weekly: usize) -> RetentionSettings {
        RetentionSettings {
            keep_last,
            daily,
            weekly,
            incomplete_grace_seconds: 0,
        }
    }

    /// One snapshot every 6 hours for 60 days, ending at `now`.
    fn history(now: DateTime<Utc>) -> Vec<(String, DateTime<Utc>)> {
        (0..240)
            .map(|step| {
                let at = now - Duration::hours(6 * step);
                (at.format("%Y%m%dT%H%M%SZ").to_string(), at)
            })
            .collect()
    }

    #[test]
    fn keep_last_alone_keeps_the_newest_n() {
        let now = Utc.with_ymd_and_hms(2026, 11, 26, 12, 0, 0).unwrap();
        let snapshots = history(now);
        let plan = plan(&snapshots, &policy(3, 0, 0), now);
        assert_eq!(
            plan.keep,
            vec![
                snapshots[0].0.clone(),
                snapshots[1].0.clone(),
                snapshots[2].0.clone()
            ]
        );
        assert_eq!(plan.delete.len(), 237);
    }

    #[test]
    fn daily_and_weekly_keep_one_per_period() {
        // A Thursday; snapshots at 00, 06, 12 and 18 h UTC.
        let now = Utc.with_ymd_and_hms(2026, 11, 26, 12, 0, 0).unwrap();
        let snapshots = history(now);
        let plan = plan(&snapshots, &policy(1, 7, 4), now);
        assert_eq!(
            plan.keep,
            [
                // keep_last, and today's newest.
                "20261126T120000Z",
                // The newest of each of the 6 days before.
                "20261125T180000Z",
                "20261124T180000Z",
                "20261123T180000Z",
                // Also the newest of ISO week 47.
                "20261122T180000Z",
                "20261121T180000Z",
                "20261120T180000Z",
                // The newest of weeks 46, 45 and 44 (its newest, Sunday
                // 1 November, is within the last 4 × 7 days).
                "20261115T180000Z",
                "20261108T180000Z",
                "20261101T180000Z",
            ]
        );
        assert_eq!(plan.delete.len(), snapshots.len() - plan.keep.len());
    }

    #[test]
    fn the_newest_snapshot_is_never_deleted() {
        let now = Utc.with_ymd_and_hms(2026, 11, 26, 12, 0, 0).unwrap();
        // The only snapshot is a year old: outside every window.
        let old = now - Duration::days(365);
        let snapshots = vec![("old".to_string(), old)];
        let plan = plan(&snapshots, &policy(0, 1, 1), now);
        assert_eq!(plan.keep, vec!["old".to_string()]);
        assert!(plan.delete.is_empty());
    }
}
