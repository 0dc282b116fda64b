//! Conversion throughput: a ConversionReview of 1,000 `PostgresCluster` objects from v1alpha1 to
//! v1 and back, through the same handler the webhook serves (JSON bytes in, JSON bytes out).
//!
//! Run with `cargo bench --bench conversion`. Criterion reports `thrpt` in objects per second
//! (`elem/s`); the last line prints the round-trip figure on its own. Between the two hops the
//! objects are passed on as JSON text, as the apiserver does.

use std::{
    hint::black_box,
    time::{Duration, Instant},
};

use criterion::{Criterion, Throughput, criterion_group};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json, value::RawValue};
use tusk::webhook::review;

const OBJECTS: usize = 1_000;

fn cluster(i: usize) -> Value {
    json!({
        "apiVersion": "tusk.dev/v1alpha1",
        "kind": "PostgresCluster",
        "metadata": {
            "name": format!("db-{i}"),
            "namespace": "apps",
            "uid": "6f1c7a52-0d6b-4a59-9a0e-2b0c0d7f3e11",
            "resourceVersion": format!("{}", 1000 + i),
            "generation": 3,
            "creationTimestamp": "2026-11-21T10:00:00Z",
            "labels": {"team": "payments", "env": "prod"},
        },
        "spec": {
            "version": "16",
            "replicas": 3,
            "storageSize": "20Gi",
            "storageClassName": "fast",
            "parameters": {"max_connections": "200", "shared_buffers": "512MB", "work_mem": "8MB"},
        },
        "status": {
            "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "2026-11-21T10:05:00Z", "reason": "AllInstancesReady", "message": "3 of 3 instances ready"}],
            "observedGeneration": 3,
            "replicas": 3,
            "readyReplicas": 3,
            "binding": {"name": format!("db-{i}-superuser")},
        },
    })
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Request<'a, T> {
    api_version: &'a str,
    kind: &'a str,
    request: RequestBody<'a, T>,
}

#[derive(Serialize)]
struct RequestBody<'a, T> {
    uid: &'a str,
    #[serde(rename = "desiredAPIVersion")]
    desired_api_version: &'a str,
    objects: &'a [T],
}

fn review_body<T: Serialize>(desired: &str, objects: &[T]) -> Vec<u8> {
    let request = Request {
        api_version: "apiextensions.k8s.io/v1",
        kind: "ConversionReview",
        request: RequestBody {
            uid: "bench",
            desired_api_version: desired,
            objects,
        },
    };
    serde_json::to_vec(&request).unwrap()
}

#[derive(Deserialize)]
struct Reply<'a> {
    #[serde(borrow)]
    response: Response<'a>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Response<'a> {
    #[serde(borrow)]
    converted_objects: Vec<&'a RawValue>,
}

/// The next request, made from the objects of a reply the way the apiserver would pass them on:
/// as JSON text, without building a tree.
fn next_review(reply_body: &[u8], desired: &str) -> Vec<u8> {
    let reply: Reply<'_> = serde_json::from_slice(reply_body).unwrap();
    review_body(desired, &reply.response.converted_objects)
}

/// One round trip: v1alpha1 -> v1, then v1 -> v1alpha1.
fn round_trip(up: &[u8]) -> Vec<u8> {
    let at_v1 = review(up);
    review(&next_review(&at_v1.body, "tusk.dev/v1alpha1")).body
}

fn benches(c: &mut Criterion) {
    let objects: Vec<Value> = (0..OBJECTS).map(cluster).collect();
    let up = review_body("tusk.dev/v1", &objects);
    let down = next_review(&review(&up).body, "tusk.dev/v1alpha1");
    let back: Value = serde_json::from_slice(&round_trip(&up)).unwrap();
    assert_eq!(
        back["response"]["convertedObjects"],
        json!(objects),
        "the round trip is lossless"
    );

    let mut group = c.benchmark_group("conversion");
    group.throughput(Throughput::Elements(OBJECTS as u64));
    group.bench_function("v1alpha1 -> v1 (1,000 objects)", |b| {
        b.iter(|| review(black_box(&up)))
    });
    group.bench_function("v1 -> v1alpha1 (1,000 objects)", |b| {
        b.iter(|| review(black_box(&down)))
    });
    group.bench_function("v1alpha1 -> v1 -> v1alpha1 (1,000 objects)", |b| {
        b.iter(|| round_trip(black_box(&up)))
    });
    group.finish();

    // The headline figure: whole reviews, both directions, for about three seconds.
    let start = Instant::now();
    let mut rounds = 0u64;
    while start.elapsed() < Duration::from_secs(3) {
        black_box(round_trip(&up));
        rounds += 1;
    }
    let seconds = start.elapsed().as_secs_f64();
    let objects_per_second = (rounds * OBJECTS as u64) as f64 / seconds;
    println!(
        "\nround trip v1alpha1 -> v1 -> v1alpha1, reviews of {OBJECTS} objects: {objects_per_second:.0} objects/s \
         round-tripped = {:.0} object conversions/s ({rounds} round trips in {seconds:.1} s)",
        2.0 * objects_per_second
    );
}

criterion_group!(conversion, benches);

fn main() {
    conversion();
    Criterion::default().configure_from_args().final_summary();
}
