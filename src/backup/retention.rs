//! Which backups a retention rule lets go, and what of the store goes with them: their objects,
//! and the WAL no remaining backup needs. The newest complete backup is never deleted.

use std::collections::BTreeSet;

use futures::TryStreamExt;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use object_store::ObjectStoreExt;

use super::{
    base::{self, BackupRecord},
    store::{Store, StoreError},
    wal::is_segment,
};

/// A retention rule.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Rule {
    /// Keep at most this many of the newest backups.
    pub keep_last: Option<usize>,
    /// Let backups older than this go.
    pub max_age: Option<SignedDuration>,
}

/// Parses `30d`, `8w` or `6m` (30-day months).
pub fn parse_age(text: &str) -> Option<SignedDuration> {
    let (number, unit) = text.split_at(text.len().checked_sub(1)?);
    let n: i64 = number.parse().ok().filter(|n| *n > 0)?;
    let days = match unit {
        "d" => n,
        "w" => n.checked_mul(7)?,
        "m" => n.checked_mul(30)?,
        _ => return None,
    };
    Some(SignedDuration::from_hours(days.checked_mul(24)?))
}

/// The names of `records` (each one complete) that `rule` lets go at `now`, of those `eligible`
/// (a schedule's own backups, say). The newest complete backup of all is never among them.
pub fn expired(
    records: &[BackupRecord],
    eligible: &BTreeSet<String>,
    rule: Rule,
    now: Timestamp,
) -> BTreeSet<String> {
    let stopped = |r: &BackupRecord| r.stopped_at.parse::<Timestamp>().ok();
    let newest = records.iter().max_by_key(|r| stopped(r)).map(|r| r.name.clone());
    let mut mine: Vec<&BackupRecord> = records.iter().filter(|r| eligible.contains(&r.name)).collect();
    mine.sort_by_key(|r| std::cmp::Reverse(stopped(r)));
    let mut out = BTreeSet::new();
    for (index, record) in mine.iter().enumerate() {
        let too_many = rule.keep_last.is_some_and(|keep| index >= keep);
        let too_old = match (rule.max_age, stopped(record)) {
            (Some(age), Some(at)) => now.duration_since(at) > age,
            _ => false,
        };
        if (too_many || too_old) && Some(&record.name) != newest.as_ref() {
            out.insert(record.name.clone());
        }
    }
    out
}

/// Applies `rule` to the backups of `eligible` in `store` at `now`: the names let go, with
/// their objects and the WAL no remaining backup needs deleted.
pub async fn run(
    store: &Store,
    eligible: &BTreeSet<String>,
    rule: Rule,
    now: Timestamp,
) -> Result<BTreeSet<String>, StoreError> {
    let records = base::list(store).await?;
    let expired = expired(&records, eligible, rule, now);
    if !expired.is_empty() {
        apply(store, &expired).await?;
    }
    Ok(expired)
}

/// The log-and-segment part of a WAL object's name, if it is a segment's (or a `.backup` or
/// `.partial` file of one): what orders segments across timelines.
fn segment_number(object: &str) -> Option<&str> {
    let name = object.rsplit('/').next()?;
    let segment = name.get(..24).filter(|s| is_segment(s))?;
    Some(&segment[8..])
}

/// Deletes the objects of backups `names`, then every WAL segment older than the oldest
/// remaining backup's first one; returns the deleted objects. Timeline history files stay.
pub async fn apply(store: &Store, names: &BTreeSet<String>) -> Result<Vec<String>, StoreError> {
    let mut deleted = Vec::new();
    for name in names {
        // The record first: from then on it is no backup, whatever else remains.
        for object in [
            base::RECORD,
            base::MANIFEST,
            base::BASE_TAR,
            base::BASE_TAR_GZ,
            base::BASE_TAR_PLAIN,
        ] {
            let path = base::location(store, name, object);
            match store.inner.delete(&path).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => deleted.push(path.to_string()),
                Err(e) => return Err(store.error(&e)),
            }
        }
    }
    let remaining = base::list(store).await?;
    let Some(cutoff) = remaining
        .iter()
        .filter_map(|r| r.begin_wal.get(8..).map(str::to_owned))
        .min()
    else {
        return Ok(deleted);
    };
    let wal = store.path("wal");
    let objects: Vec<object_store::ObjectMeta> = store
        .inner
        .list(Some(&wal))
        .try_collect()
        .await
        .map_err(|e| store.error(&e))?;
    for meta in objects {
        let location = meta.location.to_string();
        if segment_number(&location).is_some_and(|n| n < cutoff.as_str()) {
            store
                .inner
                .delete(&meta.location)
                .await
                .map_err(|e| store.error(&e))?;
            deleted.push(location);
        }
    }
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(name: &str, stopped_at: &str) -> BackupRecord {
        crate::backup::base::test_record(name, stopped_at, "0/0")
    }

    #[test]
    fn ages_are_days_weeks_and_months() {
        assert_eq!(parse_age("30d"), Some(SignedDuration::from_hours(720)));
        assert_eq!(parse_age("2w"), Some(SignedDuration::from_hours(336)));
        assert_eq!(parse_age("1m"), Some(SignedDuration::from_hours(720)));
        assert_eq!(parse_age("0d"), None);
        assert_eq!(parse_age("5y"), None);
    }

    #[test]
    fn the_rule_lets_old_and_surplus_backups_go_but_never_the_newest() {
        let records = [
            record("a", "2026-11-01T00:00:00Z"),
            record("b", "2026-11-20T00:00:00Z"),
            record("c", "2026-11-30T00:00:00Z"),
        ];
        let all: BTreeSet<String> = ["a", "b", "c"].map(String::from).into();
        let now: Timestamp = "2026-12-01T00:00:00Z".parse().unwrap();
        let rule = |keep_last, days: Option<i64>| Rule {
            keep_last,
            max_age: days.map(|d| SignedDuration::from_hours(d * 24)),
        };
        let names = |s: BTreeSet<String>| s.into_iter().collect::<Vec<_>>();
        assert_eq!(names(expired(&records, &all, rule(Some(2), None), now)), ["a"]);
        assert_eq!(names(expired(&records, &all, rule(None, Some(15)), now)), ["a"]);
        assert_eq!(
            names(expired(&records, &all, rule(Some(1), Some(15)), now)),
            ["a", "b"]
        );
        // Even when every backup is too old, the newest stays.
        assert_eq!(
            names(expired(&records, &all, rule(None, Some(0)), now)),
            ["a", "b"]
        );
        // Only eligible backups go.
        let only_c: BTreeSet<String> = ["c"].map(String::from).into();
        assert!(expired(&records, &only_c, rule(Some(1), Some(0)), now).is_empty());
    }

    #[test]
    fn segments_order_by_log_and_segment_across_timelines() {
        assert_eq!(
            segment_number("p/wal/0000000100000000/000000010000000000000003.gz"),
            Some("0000000000000003")
        );
        assert_eq!(
            segment_number("p/wal/0000000200000000/000000020000000000000003.00000028.backup.gz"),
            Some("0000000000000003")
        );
        assert_eq!(segment_number("p/wal/00000002.history.gz"), None);
    }
}
