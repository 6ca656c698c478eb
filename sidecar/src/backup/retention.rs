//! The retention policy: which complete snapshots `prune` keeps
//! (grandfather-father-son, as restic and borg count it).
//!
//! Each tier keeps, for each of its last N periods **that have a snapshot**,
//! the newest snapshot of that period; periods are UTC calendar days, ISO
//! weeks (Monday to Sunday, UTC) and UTC calendar months. Counting periods
//! with a snapshot rather than calendar time means that a stretch without
//! backups (an outage, a paused CronJob) does not make the tiers forget the
//! older restore points. The tiers add up (a snapshot kept by several is
//! kept once), with the newest `keep_last`; the newest snapshot is always
//! kept, whatever the settings.

use std::collections::BTreeSet;

use chrono::{DateTime, Datelike, Utc};

use crate::configuration::RetentionSettings;

/// What `prune` keeps and deletes, by snapshot id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Ids kept, newest first.
    pub keep: Vec<String>,
    /// Ids deleted, newest first.
    pub delete: Vec<String>,
}

/// Decides which of `snapshots` (id, finish time) to keep.
pub fn plan(snapshots: &[(String, DateTime<Utc>)], policy: &RetentionSettings) -> Plan {
    let mut sorted: Vec<&(String, DateTime<Utc>)> = snapshots.iter().collect();
    sorted.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| b.0.cmp(&a.0)));
    let mut keep = BTreeSet::new();
    // The newest is kept even with keep_last = 0: a policy must never leave
    // the store without a restorable snapshot.
    for (id, _) in sorted.iter().take(policy.keep_last.max(1)) {
        keep.insert(id.clone());
    }
    keep.extend(newest_per_period(&sorted, policy.daily, |at| {
        at.date_naive().num_days_from_ce()
    }));
    keep.extend(newest_per_period(&sorted, policy.weekly, |at| {
        let week = at.iso_week();
        week.year() * 100 + week.week() as i32
    }));
    keep.extend(newest_per_period(&sorted, policy.monthly, |at| {
        at.year() * 100 + at.month() as i32
    }));
    let (kept, deleted): (Vec<String>, Vec<String>) = sorted
        .iter()
        .map(|(id, _)| id.clone())
        .partition(|id| keep.contains(id));
    Plan {
        keep: kept,
        delete: deleted,
    }
}

/// The newest snapshot of each of the newest `count` periods that have one;
/// `sorted` is newest first, so the first snapshot met in a period is its
/// newest.
fn newest_per_period(
    sorted: &[&(String, DateTime<Utc>)],
    count: usize,
    period: impl Fn(&DateTime<Utc>) -> i32,
) -> Vec<String> {
    let mut seen = BTreeSet::new();
    let mut kept = Vec::new();
    for (id, at) in sorted {
        if seen.len() == count {
            break;
        }
        if seen.insert(period(at)) {
            kept.push(id.clone());
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Duration, NaiveDate, TimeZone};

    fn policy(keep_last: usize, daily: usize, weekly: usize, monthly: usize) -> RetentionSettings {
        RetentionSettings {
            keep_last,
            daily,
            weekly,
            monthly,
            incomplete_grace_seconds: 0,
        }
    }

    fn id(at: DateTime<Utc>) -> String {
        at.format("%Y%m%dT%H%M%SZ").to_string()
    }

    /// Two snapshots a day (03:00 and 15:00 UTC) for a year, from Thursday
    /// 27 November 2025 to Thursday 26 November 2026, except on `skipped` days.
    fn year(skipped: &[NaiveDate]) -> Vec<(String, DateTime<Utc>)> {
        let first = Utc.with_ymd_and_hms(2025, 11, 27, 3, 0, 0).unwrap();
        (0..365)
            .flat_map(|day| {
                [
                    first + Duration::days(day),
                    first + Duration::days(day) + Duration::hours(12),
                ]
            })
            .filter(|at| !skipped.contains(&at.date_naive()))
            .map(|at| (id(at), at))
            .collect()
    }

    /// `"2026-11-26 15"` as a snapshot id.
    fn at(text: &str) -> String {
        let (date, hour) = text.split_once(' ').unwrap();
        let date: NaiveDate = date.parse().unwrap();
        id(Utc.from_utc_datetime(&date.and_hms_opt(hour.parse().unwrap(), 0, 0).unwrap()))
    }

    #[test]
    fn each_tier_keeps_the_newest_snapshot_of_its_last_periods_over_a_year() {
        let nov = |day: u32| NaiveDate::from_ymd_opt(2026, 11, day).unwrap();
        // Backups failed from Sunday 22 to Tuesday 24 November.
        let gap = [nov(22), nov(23), nov(24)];
        let table: Vec<(&str, RetentionSettings, &[NaiveDate], Vec<&str>)> = vec![
            (
                "keep_last counts snapshots, not days",
                policy(3, 0, 0, 0),
                &[],
                vec!["2026-11-26 15", "2026-11-26 03", "2026-11-25 15"],
            ),
            (
                "daily: the newest of each of the last 7 days",
                policy(0, 7, 0, 0),
                &[],
                vec![
                    "2026-11-26 15",
                    "2026-11-25 15",
                    "2026-11-24 15",
                    "2026-11-23 15",
                    "2026-11-22 15",
                    "2026-11-21 15",
                    "2026-11-20 15",
                ],
            ),
            (
                "daily: days without a snapshot do not count",
                policy(0, 7, 0, 0),
                &gap,
                vec![
                    "2026-11-26 15",
                    "2026-11-25 15",
                    "2026-11-21 15",
                    "2026-11-20 15",
                    "2026-11-19 15",
                    "2026-11-18 15",
                    "2026-11-17 15",
                ],
            ),
            (
                "weekly: the newest of each ISO week, the current one first",
                policy(0, 0, 4, 0),
                &[],
                vec![
                    "2026-11-26 15",
                    "2026-11-22 15",
                    "2026-11-15 15",
                    "2026-11-08 15",
                ],
            ),
            (
                "weekly: a week whose Sunday failed keeps its last good day",
                policy(0, 0, 2, 0),
                &gap,
                vec!["2026-11-26 15", "2026-11-21 15"],
            ),
            (
                "monthly: the newest of each calendar month",
                policy(0, 0, 0, 12),
                &[],
                vec![
                    "2026-11-26 15",
                    "2026-10-31 15",
                    "2026-09-30 15",
                    "2026-08-31 15",
                    "2026-07-31 15",
                    "2026-06-30 15",
                    "2026-05-31 15",
                    "2026-04-30 15",
                    "2026-03-31 15",
                    "2026-02-28 15",
                    "2026-01-31 15",
                    "2025-12-31 15",
                ],
            ),
            (
                "monthly: more months than the store holds keeps one of each",
                policy(0, 0, 0, 24),
                &[],
                vec![
                    "2026-11-26 15",
                    "2026-10-31 15",
                    "2026-09-30 15",
                    "2026-08-31 15",
                    "2026-07-31 15",
                    "2026-06-30 15",
                    "2026-05-31 15",
                    "2026-04-30 15",
                    "2026-03-31 15",
                    "2026-02-28 15",
                    "2026-01-31 15",
                    "2025-12-31 15",
                    "2025-11-30 15",
                ],
            ),
            (
                "the tiers add up, each snapshot kept once",
                policy(2, 3, 2, 3),
                &[],
                vec![
                    "2026-11-26 15",
                    "2026-11-26 03",
                    "2026-11-25 15",
                    "2026-11-24 15",
                    "2026-11-22 15",
                    "2026-10-31 15",
                    "2026-09-30 15",
                ],
            ),
        ];
        for (case, policy, skipped, expected) in table {
            let snapshots = year(skipped);

            let plan = plan(&snapshots, &policy);

            let expected: Vec<String> = expected.into_iter().map(at).collect();
            assert_eq!(plan.keep, expected, "{case}");
            assert_eq!(
                plan.keep.len() + plan.delete.len(),
                snapshots.len(),
                "{case}"
            );
        }
    }

    #[test]
    fn the_newest_snapshot_is_never_deleted() {
        let old = Utc.with_ymd_and_hms(2025, 11, 26, 12, 0, 0).unwrap();
        let snapshots = vec![("old".to_string(), old)];
        let plan = plan(&snapshots, &policy(0, 0, 0, 0));
        assert_eq!(plan.keep, vec!["old".to_string()]);
        assert!(plan.delete.is_empty());
    }
}
