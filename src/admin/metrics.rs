//! The operator's Prometheus metrics: reconciles, errors by kind, a reconcile duration histogram
//! and the number of objects managed, per kind of object; SQL statements sent to clusters; and,
//! computed at each scrape, which backup schedules are overdue.

use std::{
    sync::{Arc, OnceLock},
    time::Duration,
};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric, text::encode},
    metrics::{
        MetricType,
        counter::Counter,
        family::Family,
        gauge::{ConstGauge, Gauge},
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};

type Labels = Vec<(String, String)>;

/// Rows of a gauge computed when scraped: labels and value.
pub type Rows = Box<dyn Fn() -> Vec<(Labels, i64)> + Send + Sync>;

/// `tusk_backup_schedule_overdue`, from the schedules the operator watches at the time of the
/// scrape: a deleted schedule leaves no stale series behind.
#[derive(Clone, Default)]
struct OverdueSchedules(Arc<OnceLock<Rows>>);

impl std::fmt::Debug for OverdueSchedules {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OverdueSchedules")
    }
}

impl Collector for OverdueSchedules {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let Some(rows) = self.0.get() else {
            return Ok(());
        };
        let mut family = encoder.encode_descriptor(
            "backup_schedule_overdue",
            "1 when a PostgresBackupSchedule that is not suspended named two run times since its last completed backup",
            None,
            MetricType::Gauge,
        )?;
        for (labels, value) in rows() {
            ConstGauge::new(value).encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

/// Every metric, and the registry that renders them.
pub struct Metrics {
    registry: Registry,
    reconciles: Family<Labels, Counter>,
    errors: Family<Labels, Counter>,
    duration: Family<Labels, Histogram, fn() -> Histogram>,
    managed: Family<Labels, Gauge>,
    sql_statements: Family<Labels, Counter>,
    overdue: OverdueSchedules,
}

fn duration_histogram() -> Histogram {
    // 5 ms to about 40 s.
    Histogram::new(exponential_buckets(0.005, 2.0, 14))
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("tusk");
        let reconciles = Family::<Labels, Counter>::default();
        let errors = Family::<Labels, Counter>::default();
        let duration =
            Family::<Labels, Histogram, fn() -> Histogram>::new_with_constructor(duration_histogram);
        let managed = Family::<Labels, Gauge>::default();
        let sql_statements = Family::<Labels, Counter>::default();
        registry.register(
            "sql_statements",
            "SQL statements sent to clusters, by kind: read (queries) or write (anything that changes something)",
            sql_statements.clone(),
        );
        registry.register(
            "reconciles",
            "Reconciles run, by kind of object",
            reconciles.clone(),
        );
        registry.register(
            "reconcile_errors",
            "Reconciles that failed, by kind of object and kind of error",
            errors.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "How long reconciles take, by kind of object",
            duration.clone(),
        );
        registry.register(
            "managed_objects",
            "Objects the operator manages, by kind",
            managed.clone(),
        );
        let overdue = OverdueSchedules::default();
        registry.register_collector(Box::new(overdue.clone()));
        Self {
            registry,
            reconciles,
            errors,
            duration,
            managed,
            sql_statements,
            overdue,
        }
    }
}

fn kind_label(kind: &str) -> Labels {
    vec![("kind".to_owned(), kind.to_owned())]
}

impl Metrics {
    /// Records one reconcile of a `kind` object that took `took`; `error` is the failure's label.
    pub fn reconciled(&self, kind: &str, took: Duration, error: Option<&str>) {
        self.reconciles.get_or_create(&kind_label(kind)).inc();
        self.duration
            .get_or_create(&kind_label(kind))
            .observe(took.as_secs_f64());
        if let Some(error) = error {
            let mut labels = kind_label(kind);
            labels.push(("error".to_owned(), error.to_owned()));
            self.errors.get_or_create(&labels).inc();
        }
    }

    /// Sets how many `kind` objects the operator manages.
    pub fn managing(&self, kind: &str, count: usize) {
        self.managed
            .get_or_create(&kind_label(kind))
            .set(i64::try_from(count).unwrap_or(i64::MAX));
    }

    /// The counter of SQL statements, by kind (`read` or `write`), shared with the connections.
    pub fn sql_statements(&self) -> Family<Labels, Counter> {
        self.sql_statements.clone()
    }

    /// Where `tusk_backup_schedule_overdue` comes from at each scrape; the first source given
    /// stays.
    pub fn overdue_schedules(&self, rows: Rows) {
        let _ = self.overdue.0.set(rows);
    }

    /// The metrics in Prometheus' text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    #[test]
    fn reconciles_errors_durations_and_counts_render() {
        let m = super::Metrics::default();
        m.reconciled("PostgresCluster", Duration::from_millis(20), None);
        m.reconciled("PostgresCluster", Duration::from_millis(20), Some("kube"));
        m.managing("PostgresCluster", 3);
        let text = m.render();
        assert!(
            text.contains("tusk_reconciles_total{kind=\"PostgresCluster\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("tusk_reconcile_errors_total{kind=\"PostgresCluster\",error=\"kube\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("tusk_reconcile_duration_seconds_count{kind=\"PostgresCluster\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("tusk_managed_objects{kind=\"PostgresCluster\"} 3"),
            "{text}"
        );
        assert!(!text.contains("backup_schedule_overdue"), "{text}");
        let labels = |name: &str| {
            vec![
                ("namespace".to_owned(), "ns".to_owned()),
                ("schedule".to_owned(), name.to_owned()),
            ]
        };
        let rows = vec![(labels("nightly"), 1), (labels("hourly"), 0)];
        m.overdue_schedules(Box::new(move || rows.clone()));
        let text = m.render();
        assert!(
            text.contains("tusk_backup_schedule_overdue{namespace=\"ns\",schedule=\"nightly\"} 1")
                && text.contains("tusk_backup_schedule_overdue{namespace=\"ns\",schedule=\"hourly\"} 0"),
            "{text}"
        );
    }
}
