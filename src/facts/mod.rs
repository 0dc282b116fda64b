//! Facts every part of Tusk shares, at the bottom of the crate: what a cluster's children are
//! called and where things live in its pods ([`cluster`]), what an instance manager reports
//! about itself ([`instance`]), how the operator itself is deployed ([`operator`]), and which
//! kinds Tusk serves and writes ([`kinds`]), and the PostgreSQL images clusters run by default
//! ([`postgres_images`]).
//!
//! Nothing here imports another module of Tusk; everything else imports from here. A name, port,
//! label or path that two modules (or the generator, or the tests) need is defined here once.

pub mod cluster;
pub mod instance;
pub mod kinds;
pub mod operator;
pub mod postgres_images;
