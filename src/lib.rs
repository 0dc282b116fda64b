//! Tusk: a PostgreSQL operator for Kubernetes and OpenShift.
//!
//! - [`admin`]: `/healthz`, `/readyz` and `/metrics`.
//! - [`api`]: the custom resources, their versions and conversion between them.
//! - [`webhook`]: the HTTPS conversion webhook the apiserver calls.
//! - [`crd`]: the CustomResourceDefinitions as Tusk installs them.
//! - [`instance`]: the instance manager, PID 1 of each PostgreSQL pod.
//! - [`migrate`]: storage-version migration of stored objects.
//! - [`controller`]: the controllers `tusk-operator run` hosts.
//! - [`sql`]: how the operator reaches clusters over SQL and converges roles and databases.
//! - [`rbac`]: the permissions the operator needs.

#![forbid(unsafe_code)]

pub mod admin;
pub mod api;
pub mod cli;
pub mod controller;
pub mod crd;
pub mod instance;
pub mod migrate;
pub mod rbac;
pub mod sql;
pub mod webhook;

/// The operator image this build of Tusk ships as; pods copy the instance manager from it.
pub const DEFAULT_OPERATOR_IMAGE: &str =
    concat!("ghcr.io/tusk-operator/tusk-operator:", env!("CARGO_PKG_VERSION"));

/// The PostgreSQL image a cluster runs when it names none; `{major}` becomes its major version.
pub const DEFAULT_POSTGRES_IMAGE: &str = "docker.io/library/postgres:{major}";
