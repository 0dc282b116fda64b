//! Shared test support: generators of random valid Tusk objects at every version.
#![allow(dead_code, missing_docs)]

pub mod apiserver;
pub mod arbitrary;
pub mod samples;
