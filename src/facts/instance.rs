//! What an instance manager reports about its PostgreSQL at [`INSTANCE`] on the status port. The
//! operator polls it (through the one endpoint function, so tests map it to loopback) to know
//! each instance's role and how far it has come; the pod needs no access to the API for it.

use serde::{Deserialize, Serialize};

/// `GET` the [`InstanceState`] here.
pub const INSTANCE: &str = "/instance";
/// `POST` here to make the primary step down for a switchover: it stops taking writes, stops
/// PostgreSQL cleanly (a fast shutdown, which sends every WAL record to the streaming replicas),
/// and answers with [`Demoted`]. It then waits for the operator to hand the Lease on, and
/// rejoins as a replica of the new primary.
pub const DEMOTE: &str = "/demote";

/// `POST` a [`ReplicationRequest`] here: what replication the operator wants from this instance.
/// Every instance keeps it (a replica needs it the moment it is promoted); the primary also makes
/// the replicas' slots match.
pub const REPLICATION: &str = "/replication";

/// The parameters a hot standby must set at least as high as its primary (PostgreSQL's
/// "Administrator's Overview" of hot standby): each with PostgreSQL's default and the line of
/// `pg_controldata` that shows the value a replica last replayed from its primary. A replica
/// started with less than that aborts recovery: so a rolling update that lowers one restarts the
/// primary first, and each replica only once it replayed the primary's new values.
pub const STANDBY_LIMITS: [(&str, i64, &str); 5] = [
    ("max_connections", 100, "max_connections setting"),
    ("max_locks_per_transaction", 64, "max_locks_per_xact setting"),
    ("max_prepared_transactions", 0, "max_prepared_xacts setting"),
    ("max_wal_senders", 10, "max_wal_senders setting"),
    ("max_worker_processes", 8, "max_worker_processes setting"),
];

/// Values of the [`STANDBY_LIMITS`], by name.
pub type Limits = std::collections::BTreeMap<String, i64>;

/// The [`STANDBY_LIMITS`] a data directory's control file records, from `pg_controldata`'s
/// output (C locale).
pub fn control_file_limits(controldata: &str) -> Limits {
    controldata
        .lines()
        .filter_map(|line| {
            let (label, value) = line.split_once(':')?;
            let (name, ..) = STANDBY_LIMITS.iter().find(|(_, _, l)| *l == label.trim())?;
            Some(((*name).to_owned(), value.trim().parse().ok()?))
        })
        .collect()
}

/// What the operator wants of replication, sent to every instance at each reconcile.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplicationRequest {
    /// PostgreSQL's `synchronous_standby_names` from `spec.replication.synchronous` (empty:
    /// asynchronous for now). `None` when the cluster does not ask for synchronous replication:
    /// then the instance leaves the setting alone, and what the user put in
    /// `spec.postgres.parameters` (or PostgreSQL's default, asynchronous) stays in force.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub synchronous_standby_names: Option<String>,
    /// The instances that stream from this one when it is the primary: each has a physical
    /// replication slot ([`slot_name`]); other slots of Tusk's that no replica uses are dropped.
    pub replicas: Vec<String>,
}

/// The physical replication slot of instance `pod` on the primary: `tusk_` and the pod's name
/// with `_` for `-`, cut to PostgreSQL's 63 bytes by keeping the end (the ordinal), which differs
/// between the instances of a cluster.
pub fn slot_name(pod: &str) -> String {
    const MAX: usize = 63;
    let name: String = pod
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    let keep = MAX - "tusk_".len();
    let tail = &name[name.len().saturating_sub(keep)..];
    format!("tusk_{tail}")
}

/// The answer to [`DEMOTE`]: PostgreSQL stopped cleanly.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Demoted {
    /// Where the shutdown checkpoint, the last WAL record the old primary wrote, starts: a
    /// replica that received past it has every commit.
    pub checkpoint_lsn: String,
}

/// One instance as its instance manager sees it now.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InstanceState {
    /// The pod's name.
    pub pod: String,
    /// The uid of the pod object this instance manager runs for, when it knows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_uid: Option<String>,
    /// Whether `postgres` runs.
    pub running: bool,
    /// Whether it accepts writes (not in recovery); `None` when PostgreSQL does not answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary: Option<bool>,
    /// The cluster's system identifier, the same on every instance of one cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_identifier: Option<String>,
    /// The timeline it writes (a primary) or receives (a replica).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeline: Option<u32>,
    /// A primary's current write position, such as `0/3000060`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_lsn: Option<String>,
    /// A replica's last WAL position received and flushed from the primary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub received_lsn: Option<String>,
    /// A replica's last WAL position replayed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replayed_lsn: Option<String>,
    /// A replica's WAL receiver status (`streaming` while it streams).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wal_receiver: Option<String>,
    /// When a replica last heard from the primary, RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_primary_contact: Option<String>,
    /// Why PostgreSQL did not answer, when it did not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// When this instance last fenced itself, RFC 3339: as the primary it could not keep the
    /// primary's Lease, so it stopped PostgreSQL at once and no write committed on it beside a
    /// new primary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fenced_at: Option<String>,
    /// When this instance was last brought onto the primary's timeline, RFC 3339: its WAL went
    /// past the point where the primary's timeline forked off (a former primary, or a replica
    /// that received more than the one promoted), so it was rewound (or cloned afresh, its old
    /// data kept aside).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rewound_at: Option<String>,
    /// The values PostgreSQL runs with of the [`STANDBY_LIMITS`] (not a changed file's until a
    /// restart).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub standby_limits: Limits,
    /// A replica's values of the [`STANDBY_LIMITS`] as last replayed from its primary (its
    /// control file): it cannot start with less.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub replayed_limits: Limits,
}

/// A WAL position as PostgreSQL writes it (`16/B374D848`), as a number.
pub fn parse_lsn(text: &str) -> Option<u64> {
    let (high, low) = text.trim().split_once('/')?;
    Some((u64::from_str_radix(high, 16).ok()? << 32) | u64::from_str_radix(low, 16).ok()?)
}

/// A WAL position the way PostgreSQL writes it.
pub fn format_lsn(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xFFFF_FFFF)
}

impl InstanceState {
    /// How far this instance's WAL goes: a primary's write position, a replica's received
    /// position (or replayed, when it received nothing since it started).
    pub fn wal_position(&self) -> Option<u64> {
        let received = self.received_lsn.as_deref().and_then(parse_lsn);
        let replayed = self.replayed_lsn.as_deref().and_then(parse_lsn);
        match self.primary {
            Some(true) => self.current_lsn.as_deref().and_then(parse_lsn),
            Some(false) => received.max(replayed),
            None => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limits_a_replica_replayed_are_read_from_pg_controldata() {
        // As PostgreSQL 18's pg_controldata prints them (C locale).
        let text = "wal_level setting:                    replica\n\
                    wal_log_hints setting:                on\n\
                    max_connections setting:              150\n\
                    max_worker_processes setting:         8\n\
                    max_wal_senders setting:              10\n\
                    max_prepared_xacts setting:           0\n\
                    max_locks_per_xact setting:           64\n";
        let limits = control_file_limits(text);
        assert_eq!(limits.len(), 5, "{limits:?}");
        assert_eq!(limits["max_connections"], 150);
        assert_eq!(limits["max_prepared_transactions"], 0);
        assert_eq!(limits["max_locks_per_transaction"], 64);
    }

    #[test]
    fn slot_names_are_valid_and_keep_the_ordinal() {
        assert_eq!(slot_name("db-1"), "tusk_db_1");
        let long = format!("{}-12", "c".repeat(60));
        let slot = slot_name(&long);
        assert_eq!(slot.len(), 63);
        assert!(slot.ends_with("_12"));
        assert_ne!(slot, slot_name(&format!("{}-13", "c".repeat(60))));
    }

    #[test]
    fn positions_compare_as_numbers() {
        assert_eq!(parse_lsn("0/3000060"), Some(0x0300_0060));
        assert_eq!(parse_lsn("16/B374D848"), Some((0x16 << 32) | 0xB374_D848));
        assert!(parse_lsn("1/10").unwrap() > parse_lsn("0/FFFFFFFF").unwrap());
        assert_eq!(parse_lsn("nonsense"), None);
        let replica = InstanceState {
            primary: Some(false),
            received_lsn: Some("0/5000000".into()),
            replayed_lsn: Some("0/4000000".into()),
            ..InstanceState::default()
        };
        assert_eq!(replica.wal_position(), Some(0x0500_0000));
        let caught_up_without_streaming = InstanceState {
            received_lsn: None,
            ..replica.clone()
        };
        assert_eq!(caught_up_without_streaming.wal_position(), Some(0x0400_0000));
        assert_eq!(InstanceState::default().wal_position(), None);
    }
}
