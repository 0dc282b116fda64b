//! Tusk's generator and task runner, as a library so that tests can drive it.

pub mod images;
pub mod olm;
pub mod pin;
