//! One table of objects Tusk's CRDs must refuse, and the words of each refusal, run by both
//! judges: the real kube-apiserver (`tests/apiserver.rs`) and kube's client-side CEL evaluator
//! (`tests/crd_validation.rs`).
//!
//! Each [`Refusal`] is an [`Attempt`] (create an object, or update one from `old`), the field
//! path the refusal names, and a [`Judge`]. Refusals by a CEL rule are checked by both; those by
//! the OpenAPI schema (types, bounds, patterns, enums, required fields, lengths) and by strict
//! field validation only by the apiserver, because the client-side evaluator runs CEL rules and
//! nothing else.

use serde_json::{Value, json};

use super::samples::{cluster, merge};

/// Creating an object of `kind` at `version` with `spec`, or updating it from `old` to `spec`.
pub struct Attempt {
    pub kind: &'static str,
    pub version: &'static str,
    /// For an update: the spec of the object as first created (valid).
    pub old: Option<Value>,
    pub spec: Value,
}

/// Who refuses an attempt, and in which words.
pub enum Judge {
    /// The OpenAPI schema, which only the apiserver checks: what it says after `<path>: `.
    Schema(&'static str),
    /// Strict field validation (as `kubectl` asks for) refuses a field the schema does not know;
    /// only the apiserver checks it.
    UnknownField,
    /// A CEL rule (`x-kubernetes-validations`), checked by the apiserver and the client-side
    /// evaluator alike. `value` is the value of the (string) field the rule sits on, which the
    /// apiserver quotes before the message.
    Rule {
        value: Option<&'static str>,
        message: &'static str,
    },
}

/// An attempt that must be refused, the field the refusal names, and its judge.
pub struct Refusal {
    pub attempt: Attempt,
    pub path: &'static str,
    pub judge: Judge,
}

impl Refusal {
    /// What the apiserver's refusal must contain.
    pub fn apiserver_says(&self) -> String {
        let path = self.path;
        match &self.judge {
            Judge::Schema(says) => format!("{path}: {says}"),
            Judge::UnknownField => format!("unknown field \"{path}\""),
            Judge::Rule { value: None, message } => format!("{path}: Invalid value: {message}"),
            Judge::Rule {
                value: Some(value),
                message,
            } => format!("{path}: Invalid value: \"{value}\": {message}"),
        }
    }

    /// One of the client-side CEL evaluator's errors, exactly, when a CEL rule judges this.
    pub fn cel_says(&self) -> Option<String> {
        match &self.judge {
            Judge::Rule { message, .. } => Some(format!("{}: {message}", self.path)),
            Judge::Schema(_) | Judge::UnknownField => None,
        }
    }

    /// Whether the apiserver refuses it only under strict field validation.
    pub fn strict(&self) -> bool {
        matches!(self.judge, Judge::UnknownField)
    }
}

impl Attempt {
    fn refused(self, path: &'static str, judge: Judge) -> Refusal {
        Refusal {
            attempt: self,
            path,
            judge,
        }
    }

    fn schema(self, path: &'static str, says: &'static str) -> Refusal {
        self.refused(path, Judge::Schema(says))
    }

    fn unknown_field(self, path: &'static str) -> Refusal {
        self.refused(path, Judge::UnknownField)
    }

    fn rule(self, path: &'static str, message: &'static str) -> Refusal {
        self.refused(path, Judge::Rule { value: None, message })
    }

    fn rule_on_value(self, path: &'static str, value: &'static str, message: &'static str) -> Refusal {
        self.refused(
            path,
            Judge::Rule {
                value: Some(value),
                message,
            },
        )
    }
}

fn create(kind: &'static str, version: &'static str, spec: Value) -> Attempt {
    Attempt {
        kind,
        version,
        old: None,
        spec,
    }
}

fn update(kind: &'static str, version: &'static str, old: Value, spec: Value) -> Attempt {
    Attempt {
        kind,
        version,
        old: Some(old),
        spec,
    }
}

/// Every refusal, of every kind and version.
pub fn refusals() -> Vec<Refusal> {
    let c = "PostgresCluster";
    let u = "PostgresUser";
    let d = "PostgresDatabase";
    let b = "PostgresBackup";
    let s = "PostgresBackupSchedule";
    let with = |base: &Value, patch: Value| {
        let mut spec = base.clone();
        merge(&mut spec, patch);
        spec
    };
    let user = json!({"cluster": {"name": "db"}, "roleName": "app"});
    let user_with = |patch: Value| with(&user, patch);
    let db = json!({"cluster": {"name": "db"}, "owner": "app", "databaseName": "app", "encoding": "UTF8"});
    let db_with = |patch: Value| with(&db, patch);
    let schedule = json!({"cluster": {"name": "db"}, "schedule": "@daily"});
    let schedule_with = |patch: Value| with(&schedule, patch);
    let alpha = json!({"version": "17", "storageSize": "10Gi", "storageClassName": "fast", "replicas": 2});
    let alpha_with = |patch: Value| with(&alpha, patch);
    let beta = json!({"postgresVersion": 18, "storage": {"size": "1Gi", "storageClassName": "fast"}});
    let beta_with = |patch: Value| with(&beta, patch);
    vec![
        // PostgresCluster v1: OpenAPI schema.
        create(c, "v1", cluster(json!({"instances": 11})))
            .schema("spec.instances", "Invalid value: 11: spec.instances in body should be less than or equal to 10"),
        create(c, "v1", cluster(json!({"instances": 0})))
            .schema("spec.instances", "Invalid value: 0: spec.instances in body should be greater than or equal to 1"),
        create(c, "v1", cluster(json!({"postgres": {"version": 14}})))
            .schema("spec.postgres.version", "Invalid value: 14: spec.postgres.version in body should be greater than or equal to 15"),
        create(c, "v1", cluster(json!({"postgres": {"version": 19}})))
            .schema("spec.postgres.version", "Invalid value: 19: spec.postgres.version in body should be less than or equal to 18"),
        create(c, "v1", cluster(json!({"postgres": null})))
            .schema("spec.postgres", "Required value"),
        create(c, "v1", cluster(json!({"storage": {"data": {"size": "ten gigs"}}})))
            .schema("spec.storage.data.size", "Invalid value: \"ten gigs\": spec.storage.data.size in body should match"),
        create(c, "v1", cluster(json!({"storage": {"reclaimPolicy": "Keep"}})))
            .schema("spec.storage.reclaimPolicy", "Unsupported value: \"Keep\": supported values: \"Retain\", \"Delete\""),
        create(c, "v1", cluster(json!({"postgres": {"image": "Postgres:Latest!"}})))
            .schema("spec.postgres.image", "Invalid value: \"Postgres:Latest!\": spec.postgres.image in body should match"),
        create(c, "v1", cluster(json!({"tls": {"mode": "Strict"}})))
            .schema("spec.tls.mode", "Unsupported value: \"Strict\": supported values: \"Disabled\", \"Operator\", \"Provided\""),
        create(c, "v1", cluster(json!({"backup": {"target": {"s3": {"bucket": "B", "credentialsSecret": "s3"}}}})))
            .schema("spec.backup.target.s3.bucket", "Invalid value: \"B\": spec.backup.target.s3.bucket in body should be at least 3 chars long"),
        create(c, "v1", cluster(json!({"backup": {"target": {"volume": {"claimName": "b"}}, "retention": "30 days"}})))
            .schema("spec.backup.retention", "Invalid value: \"30 days\": spec.backup.retention in body should match '^[1-9][0-9]*[dwm]$'"),
        create(c, "v1", cluster(json!({"updateStrategy": {"primaryUpdate": "Sometimes"}})))
            .schema("spec.updateStrategy.primaryUpdate", "Unsupported value: \"Sometimes\""),
        create(c, "v1", cluster(json!({"instances": "three"})))
            .schema("spec.instances", "Invalid value: \"string\": spec.instances in body must be of type integer: \"string\""),
        create(c, "v1", cluster(json!({"replicas": 3})))
            .unknown_field("spec.replicas"),
        // PostgresCluster v1: CEL.
        create(c, "v1", cluster(json!({"postgres": {"parameters": {"port": "5433", "work_mem": "4MB"}}})))
            .rule("spec.postgres", "parameters may not set port: Tusk manages it; all other PostgreSQL parameters are allowed"),
        create(c, "v1", cluster(json!({"tls": {"mode": "Provided"}})))
            .rule("spec.tls", "tls.secretName is required when tls.mode is Provided, and not allowed with any other mode"),
        create(c, "v1", cluster(json!({"tls": {"mode": "Operator", "secretName": "x"}})))
            .rule("spec.tls", "tls.secretName is required when tls.mode is Provided, and not allowed with any other mode"),
        create(c, "v1", cluster(json!({"tls": {"mode": "CertManager"}})))
            .rule("spec.tls", "tls.issuerRef is required when tls.mode is CertManager, and not allowed with any other mode"),
        create(c, "v1", cluster(json!({"tls": {"mode": "Operator", "issuerRef": {"name": "corp"}}})))
            .rule("spec.tls", "tls.issuerRef is required when tls.mode is CertManager, and not allowed with any other mode"),
        create(c, "v1", cluster(json!({"tls": {"mode": "Vault"}})))
            .schema("spec.tls.mode", "Unsupported value: \"Vault\": supported values: \"Disabled\", \"Operator\", \"Provided\", \"CertManager\""),
        create(c, "v1", cluster(json!({"bootstrap": {"initdb": {}, "fromBackup": {"backupName": "b"}}})))
            .rule("spec.bootstrap", "bootstrap: set exactly one of initdb, fromBackup or recovery"),
        create(c, "v1", cluster(json!({"bootstrap": {"recovery": {}}})))
            .rule("spec.bootstrap.recovery", "recovery: set exactly one of backup or source"),
        create(c, "v1", cluster(json!({"bootstrap": {"recovery": {"backup": {"name": "b"}, "target": {"lsn": "0/1", "xid": "7"}}}})))
            .rule("spec.bootstrap.recovery.target", "recovery.target: set at most one of time, lsn, xid or name"),
        create(c, "v1", cluster(json!({"backup": {"target": {"s3": {"bucket": "bkt", "credentialsSecret": "s", "serverSideEncryption": {"type": "aws:kms"}}}}})))
            .rule("spec.backup.target.s3.serverSideEncryption", "serverSideEncryption.kmsKeyId is required with type aws:kms and not allowed with AES256"),
        create(c, "v1", cluster(json!({"instances": 1, "updateStrategy": {"primaryUpdateMethod": "Switchover"}})))
            .rule("spec", "updateStrategy.primaryUpdateMethod Switchover needs instances of 2 or more; with a single instance use Restart"),
        create(c, "v1", cluster(json!({
                "instances": 3,
                "replication": {"synchronous": {"method": "Any", "number": 1}},
                "postgres": {"parameters": {"synchronous_standby_names": "*"}},
            })))
            .rule("spec", "postgres.parameters may not set synchronous_standby_names while replication.synchronous is set: Tusk names the standbys from replication.synchronous; keep one of the two"),
        create(c, "v1", cluster(
                json!({"backup": {"target": {"volume": {"claimName": "b"}, "s3": {"bucket": "bkt", "credentialsSecret": "s"}}}}),
            ))
            .rule("spec.backup.target", "backup target: set exactly one of volume, s3, azure or gcs"),
        update(c, "v1", cluster(json!({})), cluster(json!({"postgres": {"version": 16}})))
            .rule("spec.postgres", "version cannot go down from 17 to 16: a major-version downgrade is not possible; allowed are 17 or higher"),
        update(c, "v1", cluster(json!({})), cluster(json!({"storage": {"data": {"storageClassName": "slow"}}})))
            .rule("spec.storage.data", "storageClassName is immutable: a volume cannot move to another storage class; create a new cluster instead"),
        update(c, "v1", cluster(json!({})), cluster(json!({"storage": {"data": {"size": "5Gi"}}})))
            .rule("spec.storage.data", "size may grow but never shrink: it is 10Gi, so allowed values are 10Gi or more"),
        update(c, "v1", cluster(json!({})), cluster(json!({"storage": {"wal": {"size": "1Gi"}}})))
            .rule("spec.storage", "wal cannot be added or removed after the cluster is created; it may only be resized"),
        update(c, "v1", cluster(json!({"bootstrap": {"initdb": {"database": "app"}}})), cluster(json!({"bootstrap": {"initdb": {"database": "other"}}})))
            .rule("spec", "bootstrap is immutable: it only applies when the cluster is first created"),
        // Adding a bootstrap section later is changing it too.
        update(c, "v1", cluster(json!({})), cluster(json!({"bootstrap": {"initdb": {"database": "app"}}})))
            .rule("spec", "bootstrap is immutable: it only applies when the cluster is first created"),
        // PostgresCluster v1beta1 and v1alpha1.
        create(c, "v1beta1", beta_with(json!({"postgresql": {"parameters": {"data_directory": "/x"}}})))
            .rule("spec.postgresql", "parameters may not set data_directory: Tusk manages it; all other PostgreSQL parameters are allowed"),
        create(c, "v1beta1", beta_with(json!({"instances": 12})))
            .schema("spec.instances", "Invalid value: 12: spec.instances in body should be less than or equal to 10"),
        update(c, "v1beta1", beta.clone(), beta_with(json!({"postgresVersion": 17})))
            .rule("spec", "postgresVersion cannot go down from 18 to 17: a major-version downgrade is not possible; allowed are 18 or higher"),
        update(c, "v1beta1", beta.clone(), beta_with(json!({"storage": {"size": "512Mi"}})))
            .rule("spec.storage", "size may grow but never shrink: it is 1Gi, so allowed values are 1Gi or more"),
        create(c, "v1alpha1", alpha_with(json!({"version": "14"})))
            .schema("spec.version", "Unsupported value: \"14\": supported values: \"15\", \"16\", \"17\", \"18\""),
        create(c, "v1alpha1", alpha_with(json!({"storageSize": null})))
            .schema("spec.storageSize", "Required value"),
        update(c, "v1alpha1", alpha.clone(), alpha_with(json!({"version": "15"})))
            .rule("spec", "version cannot go down from 17 to 15: a major-version downgrade is not possible; allowed are 17 or higher"),
        update(c, "v1alpha1", alpha.clone(), alpha_with(json!({"storageSize": "1Gi"})))
            .rule("spec", "storageSize may grow but never shrink: it is 10Gi, so allowed values are 10Gi or more"),
        update(c, "v1alpha1", alpha.clone(), alpha_with(json!({"storageClassName": "slow"})))
            .rule("spec", "storageClassName is immutable: a volume cannot move to another storage class; create a new cluster instead"),
        // PostgresUser.
        create(u, "v1", user_with(json!({"roleName": "pg_monitor"})))
            .rule_on_value("spec.roleName", "pg_monitor", "roleName may not start with pg_: PostgreSQL reserves that prefix for system roles and objects"),
        create(u, "v1", user_with(json!({"roleName": "postgres"})))
            .rule_on_value("spec.roleName", "postgres", "roleName may not be one of postgres, public, none, current_user, session_user, current_role, tusk_replication: Tusk or PostgreSQL use these"),
        create(u, "v1", user_with(json!({"memberOf": ["app"]})))
            .rule("spec", "memberOf may not include the role itself (roleName); allowed are other roles"),
        create(u, "v1", user_with(json!({"connectionLimit": -2})))
            .schema("spec.connectionLimit", "Invalid value: -2: spec.connectionLimit in body should be greater than or equal to -1"),
        create(u, "v1", user_with(json!({"validUntil": "next tuesday"})))
            .schema("spec.validUntil", "Invalid value: \"next tuesday\": spec.validUntil in body must be of type date-time"),
        create(u, "v1", user_with(json!({"privileges": [{"database": "app", "privileges": ["DROP"]}]})))
            .schema("spec.privileges[0].privileges[0]", "Unsupported value: \"DROP\": supported values: \"CONNECT\", \"CREATE\", \"TEMPORARY\", \"ALL\""),
        create(u, "v1", user_with(json!({"privileges": [{"database": "app", "privileges": []}]})))
            .schema("spec.privileges[0].privileges", "Invalid value: 0: spec.privileges[0].privileges in body should have at least 1 items"),
        create(u, "v1", user_with(json!({"cluster": {"name": "Not_A_DNS_Name"}})))
            .schema("spec.cluster.name", "Invalid value: \"Not_A_DNS_Name\": spec.cluster.name in body should match"),
        create(u, "v1", user_with(json!({"roleName": "r".repeat(64)})))
            .schema("spec.roleName", "Too long: may not be"),
        update(u, "v1", user.clone(), user_with(json!({"cluster": {"name": "other"}})))
            .rule("spec", "cluster is immutable: a PostgresUser cannot move to another cluster; create a new one"),
        update(u, "v1", user.clone(), user_with(json!({"roleName": "app2"})))
            .rule("spec", "roleName is immutable: a role cannot be renamed; create a new PostgresUser"),
        create(u, "v1alpha1", json!({"cluster": "db", "username": "pg_x"}))
            .rule_on_value("spec.username", "pg_x", "username may not start with pg_: PostgreSQL reserves that prefix for system roles and objects"),
        update(u, "v1alpha1", json!({"cluster": "db", "username": "app"}), json!({"cluster": "db", "username": "app2"}))
            .rule("spec", "username is immutable: a role cannot be renamed; create a new PostgresUser"),
        create(u, "v1alpha1", json!({"cluster": "db", "roleName": "app"}))
            .unknown_field("spec.roleName"),
        // PostgresDatabase.
        create(d, "v1", db_with(json!({"databaseName": "template1"})))
            .rule_on_value("spec.databaseName", "template1", "databaseName may not be one of postgres, template0, template1: Tusk or PostgreSQL use these"),
        create(d, "v1", db_with(json!({"owner": "public"})))
            .rule_on_value("spec.owner", "public", "owner may not be one of postgres, public, none, current_user, session_user, current_role, tusk_replication: Tusk or PostgreSQL use these"),
        create(d, "v1", db_with(json!({"extensions": [{"name": "Bad Ext"}]})))
            .schema("spec.extensions[0].name", "Invalid value: \"Bad Ext\": spec.extensions[0].name in body should match"),
        create(d, "v1", db_with(json!({"reclaimPolicy": "Archive"})))
            .schema("spec.reclaimPolicy", "Unsupported value: \"Archive\": supported values: \"Retain\", \"Delete\""),
        create(d, "v1", db_with(json!({"owner": null})))
            .schema("spec.owner", "Required value"),
        update(d, "v1", db.clone(), db_with(json!({"encoding": "LATIN1"})))
            .rule("spec", "encoding and locale are immutable: PostgreSQL fixes them when the database is created"),
        update(d, "v1", db.clone(), db_with(json!({"databaseName": "app2"})))
            .rule("spec", "databaseName is immutable: Tusk does not rename databases"),
        create(d, "v1alpha1", json!({"cluster": "db", "owner": "app", "name": "pg_db"}))
            .rule_on_value("spec.name", "pg_db", "name may not start with pg_: PostgreSQL reserves that prefix for system roles and objects"),
        // PostgresBackup.
        create(b, "v1", json!({"cluster": {"name": "db"}, "method": "snapshot"}))
            .schema("spec.method", "Unsupported value: \"snapshot\": supported values: \"basebackup\", \"dump\""),
        create(b, "v1", json!({"cluster": {"name": "db"}, "target": {}}))
            .rule("spec.target", "backup target: set exactly one of volume, s3, azure or gcs"),
        create(b, "v1", json!({"method": "dump"}))
            .schema("spec.cluster", "Required value"),
        update(b, "v1", json!({"cluster": {"name": "db"}}), json!({"cluster": {"name": "db"}, "method": "dump"}))
            .rule("spec", "spec is immutable: a PostgresBackup records one run; create a new PostgresBackup to back up again"),
        update(b, "v1alpha1", json!({"cluster": "db"}), json!({"cluster": "db2"}))
            .rule("spec", "spec is immutable: a PostgresBackup records one run; create a new PostgresBackup to back up again"),
        // PostgresBackupSchedule.
        create(s, "v1", schedule_with(json!({"schedule": "every day"})))
            .schema("spec.schedule", "Invalid value: \"every day\": spec.schedule in body should match"),
        create(s, "v1", schedule_with(json!({"retention": {}})))
            .rule("spec.retention", "retention: set keepLast, maxAge or both; omit retention to keep every backup"),
        create(s, "v1", schedule_with(json!({"retention": {"keepLast": 1001}})))
            .schema("spec.retention.keepLast", "Invalid value: 1001: spec.retention.keepLast in body should be less than or equal to 1000"),
        create(s, "v1", schedule_with(json!({"timeZone": "Europe/Berlin; rm"})))
            .schema("spec.timeZone", "Invalid value: \"Europe/Berlin; rm\": spec.timeZone in body should match"),
        update(s, "v1", schedule.clone(), schedule_with(json!({"cluster": {"name": "other"}})))
            .rule("spec", "cluster is immutable: a schedule cannot move to another cluster; create a new one"),
        create(s, "v1alpha1", json!({"cluster": "db", "schedule": "@daily", "keepLast": 0}))
            .schema("spec.keepLast", "Invalid value: 0: spec.keepLast in body should be greater than or equal to 1"),

    ]
}
