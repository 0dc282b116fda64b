//! Property tests: conversion between every pair of versions of every kind is lossless.
//!
//! For random valid objects `a` at version A and every version B: converting `a` to B and back
//! to A gives `a` again, byte for byte as JSON; converting to A itself changes nothing. Objects
//! at a version come from two sources: generated at that version directly, and converted down
//! from a random object of another version, so they also carry the conversion annotation.

mod support;

use proptest::{
    prelude::*,
    test_runner::{Config, RngAlgorithm, TestRunner},
};
use serde_json::Value;
use support::arbitrary::*;

/// Cases per pair of versions. The issue asks for at least 10,000 in CI; `PROPTEST_CASES` may
/// raise it, never lower it.
fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
        .max(10_000)
}

/// The runner's settings. XorShift, not the default ChaCha: ChaCha is a cryptographic generator
/// that an unoptimised test build spends most of its time in, and these cases need no
/// cryptographic randomness.
fn config() -> Config {
    Config {
        cases: cases(),
        failure_persistence: None,
        rng_algorithm: RngAlgorithm::XorShift,
        ..Config::default()
    }
}

fn convert(object: Value, version: &str) -> Result<Value, String> {
    tusk::api::convert_object(object, &format!("tusk.dev/{version}"), 0).map_err(|e| e.to_string())
}

type Generators = Vec<(&'static str, BoxedStrategy<Value>)>;

/// Objects at `version`: generated there, or converted there from any other version.
fn objects_at(generators: Generators, version: &'static str) -> BoxedStrategy<Value> {
    let strategies: Vec<BoxedStrategy<Value>> = generators
        .into_iter()
        .map(|(v, s)| {
            if v == version {
                s
            } else {
                s.prop_map(move |o| convert(o, version).expect("valid objects convert"))
                    .boxed()
            }
        })
        .collect();
    proptest::strategy::Union::new(strategies).boxed()
}

fn round_trip(generators: Generators, from: &'static str, to: &'static str) {
    let strategy = objects_at(generators, from);
    TestRunner::new(config())
        .run(&strategy, |a| {
            let b = convert(a.clone(), to).map_err(TestCaseError::fail)?;
            let expected = format!("tusk.dev/{to}");
            prop_assert_eq!(b["apiVersion"].as_str(), Some(expected.as_str()));
            prop_assert_eq!(&b["kind"], &a["kind"]);
            let back = convert(b, from).map_err(TestCaseError::fail)?;
            prop_assert_eq!(back, a);
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{from} -> {to} -> {from}: {e}"));
}

fn cluster() -> Generators {
    vec![
        ("v1alpha1", cluster_v1alpha1().boxed()),
        ("v1beta1", cluster_v1beta1().boxed()),
        ("v1", cluster_v1().boxed()),
    ]
}

fn user() -> Generators {
    vec![("v1alpha1", user_v1alpha1().boxed()), ("v1", user_v1().boxed())]
}

fn database() -> Generators {
    vec![
        ("v1alpha1", database_v1alpha1().boxed()),
        ("v1", database_v1().boxed()),
    ]
}

fn backup() -> Generators {
    vec![
        ("v1alpha1", backup_v1alpha1().boxed()),
        ("v1", backup_v1().boxed()),
    ]
}

fn schedule() -> Generators {
    vec![
        ("v1alpha1", schedule_v1alpha1().boxed()),
        ("v1", schedule_v1().boxed()),
    ]
}

macro_rules! pairs {
    ($($name:ident: $kind:ident $from:literal -> $to:literal;)*) => {
        $(
            #[test]
            fn $name() {
                on_deep_stack(|| round_trip($kind(), $from, $to));
            }
        )*
    };
}

pairs! {
    cluster_v1alpha1_v1alpha1: cluster "v1alpha1" -> "v1alpha1";
    cluster_v1alpha1_v1beta1: cluster "v1alpha1" -> "v1beta1";
    cluster_v1alpha1_v1: cluster "v1alpha1" -> "v1";
    cluster_v1beta1_v1alpha1: cluster "v1beta1" -> "v1alpha1";
    cluster_v1beta1_v1beta1: cluster "v1beta1" -> "v1beta1";
    cluster_v1beta1_v1: cluster "v1beta1" -> "v1";
    cluster_v1_v1alpha1: cluster "v1" -> "v1alpha1";
    cluster_v1_v1beta1: cluster "v1" -> "v1beta1";
    cluster_v1_v1: cluster "v1" -> "v1";
    user_v1alpha1_v1alpha1: user "v1alpha1" -> "v1alpha1";
    user_v1alpha1_v1: user "v1alpha1" -> "v1";
    user_v1_v1alpha1: user "v1" -> "v1alpha1";
    user_v1_v1: user "v1" -> "v1";
    database_v1alpha1_v1alpha1: database "v1alpha1" -> "v1alpha1";
    database_v1alpha1_v1: database "v1alpha1" -> "v1";
    database_v1_v1alpha1: database "v1" -> "v1alpha1";
    database_v1_v1: database "v1" -> "v1";
    backup_v1alpha1_v1alpha1: backup "v1alpha1" -> "v1alpha1";
    backup_v1alpha1_v1: backup "v1alpha1" -> "v1";
    backup_v1_v1alpha1: backup "v1" -> "v1alpha1";
    backup_v1_v1: backup "v1" -> "v1";
    schedule_v1alpha1_v1alpha1: schedule "v1alpha1" -> "v1alpha1";
    schedule_v1alpha1_v1: schedule "v1alpha1" -> "v1";
    schedule_v1_v1alpha1: schedule "v1" -> "v1alpha1";
    schedule_v1_v1: schedule "v1" -> "v1";
}

/// Converting to the version an object already has returns it untouched, even the parts a
/// typed read would normalise.
#[test]
fn same_version_is_untouched() {
    on_deep_stack(same_version_round);
}

fn same_version_round() {
    let all: Vec<BoxedStrategy<Value>> = [cluster(), user(), database(), backup(), schedule()]
        .into_iter()
        .flatten()
        .map(|(_, s)| s)
        .collect();
    TestRunner::new(config())
        .run(&proptest::strategy::Union::new(all), |a| {
            let version = a["apiVersion"]
                .as_str()
                .unwrap()
                .trim_start_matches("tusk.dev/")
                .to_owned();
            prop_assert_eq!(convert(a.clone(), &version).map_err(TestCaseError::fail)?, a);
            Ok(())
        })
        .unwrap();
}
