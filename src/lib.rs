//! Tusk: a PostgreSQL operator for Kubernetes and OpenShift.
//!
//! - [`facts`]: names, ports, labels, paths and kinds every other module shares (imports nothing).
//! - [`admin`]: `/healthz`, `/readyz` and `/metrics`.
//! - [`api`]: the custom resources, their versions and conversion between them.
//! - [`webhook`]: the HTTPS conversion webhook the apiserver calls.
//! - [`crd`]: the CustomResourceDefinitions as Tusk installs them.
//! - [`instance`]: the instance manager, PID 1 of each PostgreSQL pod.
//! - [`backup`]: WAL archiving, base backups and restores in an object store.
//! - [`migrate`]: storage-version migration of stored objects.
//! - [`controller`]: the controllers `tusk-operator run` hosts.
//! - [`sql`]: how the operator reaches clusters over SQL and converges roles and databases.
//! - [`password`]: the superuser password rule, and random passwords.
//! - [`process`]: durations on the command line, and how one shutdown reaches every task.
//! - [`rbac`]: the permissions the operator needs.

#![forbid(unsafe_code)]

pub mod admin;
pub mod api;
pub mod backup;
pub mod cli;
pub mod controller;
pub mod crd;
pub mod facts;
pub mod instance;
pub mod migrate;
pub mod password;
pub mod pki;
pub mod process;
pub mod rbac;
pub mod sql;
pub mod tls_profile;
pub mod webhook;
