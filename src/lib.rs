//! Tusk: a PostgreSQL operator for Kubernetes and OpenShift.
//!
//! - [`api`]: the custom resources, their versions and conversion between them.
//! - [`webhook`]: the HTTPS conversion webhook the apiserver calls.
//! - [`crd`]: the CustomResourceDefinitions as Tusk installs them.
//! - [`migrate`]: storage-version migration of stored objects.

#![forbid(unsafe_code)]

pub mod api;
pub mod cli;
pub mod crd;
pub mod migrate;
pub mod webhook;
