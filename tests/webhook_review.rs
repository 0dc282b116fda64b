//! The ConversionReview handler on good and hostile input: every bad body gets HTTP 400 or a
//! `Failure` result with a clear message, never a panic.

mod support;

use proptest::{
    prelude::*,
    test_runner::{Config, TestRunner},
};
use serde_json::{Value, json};
use support::arbitrary::cluster_v1alpha1;
use tusk::webhook::{Reply, review};

fn review_body(desired: &str, objects: Vec<Value>) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "ConversionReview",
        "request": {"uid": "0d7d5b5e-1c7e-4a0a-a1b4-3f5d0a6c9e21", "desiredAPIVersion": desired, "objects": objects},
    }))
    .unwrap()
}

fn cluster_v1alpha1_object() -> Value {
    json!({
        "apiVersion": "tusk.dev/v1alpha1",
        "kind": "PostgresCluster",
        "metadata": {"name": "db", "namespace": "apps"},
        "spec": {"version": "16", "replicas": 2, "storageSize": "1Gi"},
    })
}

fn response(reply: &Reply) -> Value {
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    let review: Value = serde_json::from_slice(&reply.body).unwrap();
    assert_eq!(review["apiVersion"], "apiextensions.k8s.io/v1");
    assert_eq!(review["kind"], "ConversionReview");
    review["response"].clone()
}

fn failure_message(reply: &Reply) -> String {
    let response = response(reply);
    assert_eq!(response["uid"], "0d7d5b5e-1c7e-4a0a-a1b4-3f5d0a6c9e21");
    assert_eq!(response["result"]["status"], "Failure", "{response}");
    response["result"]["message"].as_str().unwrap().to_owned()
}

fn bad_request(body: &[u8]) -> String {
    let reply = review(body);
    assert_eq!(reply.status, 400, "{}", String::from_utf8_lossy(&reply.body));
    String::from_utf8(reply.body).unwrap()
}

#[test]
fn converts_and_keeps_uid_and_order() {
    let mut second = cluster_v1alpha1_object();
    second["metadata"]["name"] = json!("second");
    let reply = review(&review_body(
        "tusk.dev/v1",
        vec![cluster_v1alpha1_object(), second],
    ));
    let response = response(&reply);
    assert_eq!(response["uid"], "0d7d5b5e-1c7e-4a0a-a1b4-3f5d0a6c9e21");
    assert_eq!(response["result"]["status"], "Success");
    let objects = response["convertedObjects"].as_array().unwrap();
    assert_eq!(objects.len(), 2);
    assert_eq!(objects[0]["apiVersion"], "tusk.dev/v1");
    assert_eq!(objects[0]["spec"]["postgres"]["version"], 16);
    assert_eq!(objects[0]["spec"]["instances"], 2);
    assert_eq!(objects[1]["metadata"]["name"], "second");
}

#[test]
fn unknown_desired_version_fails_with_the_allowed_ones() {
    let message = failure_message(&review(&review_body(
        "tusk.dev/v9",
        vec![cluster_v1alpha1_object()],
    )));
    assert_eq!(
        message,
        "desiredAPIVersion: PostgresCluster has no version \"v9\"; allowed versions are v1alpha1, v1beta1, v1"
    );
}

#[test]
fn desired_version_of_another_group_fails_even_without_objects() {
    let message = failure_message(&review(&review_body("apps/v1", vec![])));
    assert_eq!(
        message,
        "desiredAPIVersion \"apps/v1\" is not in group tusk.dev; allowed are tusk.dev/<version>"
    );
}

#[test]
fn unknown_object_version_fails() {
    let mut object = cluster_v1alpha1_object();
    object["apiVersion"] = json!("tusk.dev/v0");
    let message = failure_message(&review(&review_body("tusk.dev/v1", vec![object])));
    assert_eq!(
        message,
        "object 0: PostgresCluster has no version \"v0\"; allowed versions are v1alpha1, v1beta1, v1"
    );
}

#[test]
fn wrong_kind_fails_with_the_allowed_kinds() {
    let mut object = cluster_v1alpha1_object();
    object["kind"] = json!("MySQLCluster");
    let message = failure_message(&review(&review_body("tusk.dev/v1", vec![object])));
    assert_eq!(
        message,
        "object 0: kind \"MySQLCluster\" is not a Tusk kind; allowed kinds are PostgresCluster, PostgresUser, \
         PostgresDatabase, PostgresBackup, PostgresBackupSchedule"
    );
}

#[test]
fn objects_of_another_group_fail() {
    let deployment =
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"}, "spec": {}});
    let message = failure_message(&review(&review_body(
        "tusk.dev/v1",
        vec![cluster_v1alpha1_object(), deployment],
    )));
    assert_eq!(
        message,
        "object 1: apiVersion \"apps/v1\" is not in group tusk.dev; this webhook converts only tusk.dev objects"
    );
}

#[test]
fn objects_without_type_fields_or_not_objects_fail() {
    let message = failure_message(&review(&review_body(
        "tusk.dev/v1",
        vec![json!({"kind": "PostgresCluster"})],
    )));
    assert_eq!(message, "object 0: apiVersion is missing or not a string");
    let message = failure_message(&review(&review_body("tusk.dev/v1", vec![json!([1, 2])])));
    assert_eq!(message, "object 0 is not a JSON object");
}

#[test]
fn a_spec_that_breaks_the_schema_fails_naming_the_field() {
    let mut object = cluster_v1alpha1_object();
    object["spec"]["version"] = json!("sixteen");
    let message = failure_message(&review(&review_body("tusk.dev/v1", vec![object])));
    assert!(message.starts_with("object 0 (PostgresCluster v1alpha1): spec does not match the schema: version \"sixteen\" is not a PostgreSQL major version; allowed are \"15\" to \"18\""), "{message}");
    let mut object = cluster_v1alpha1_object();
    object["spec"].as_object_mut().unwrap().remove("storageSize");
    let message = failure_message(&review(&review_body("tusk.dev/v1", vec![object])));
    assert!(message.contains("missing field `storageSize`"), "{message}");
    let mut object = cluster_v1alpha1_object();
    object["extra"] = json!("dropped?");
    let message = failure_message(&review(&review_body("tusk.dev/v1", vec![object])));
    assert!(message.contains("unknown field `extra`"), "{message}");
}

#[test]
fn missing_request_is_a_bad_request() {
    let body = br#"{"apiVersion":"apiextensions.k8s.io/v1","kind":"ConversionReview"}"#;
    assert_eq!(bad_request(body), "ConversionReview has no request\n");
}

#[test]
fn request_without_uid_is_a_bad_request() {
    let body = br#"{"apiVersion":"apiextensions.k8s.io/v1","kind":"ConversionReview","request":{"desiredAPIVersion":"tusk.dev/v1","objects":[]}}"#;
    assert!(bad_request(body).starts_with("request body is not a ConversionReview: missing field `uid`"));
}

#[test]
fn wrong_review_api_version_is_a_bad_request() {
    let body = br#"{"apiVersion":"apiextensions.k8s.io/v1beta1","kind":"ConversionReview","request":{"uid":"u","desiredAPIVersion":"tusk.dev/v1","objects":[]}}"#;
    assert_eq!(
        bad_request(body),
        "ConversionReview apiVersion Some(\"apiextensions.k8s.io/v1beta1\") is not supported; Tusk speaks apiextensions.k8s.io/v1\n"
    );
}

#[test]
fn wrong_review_kind_is_a_bad_request() {
    let body = br#"{"apiVersion":"apiextensions.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u","desiredAPIVersion":"tusk.dev/v1","objects":[]}}"#;
    assert_eq!(
        bad_request(body),
        "kind Some(\"AdmissionReview\") is not ConversionReview\n"
    );
}

#[test]
fn non_json_and_truncated_json_are_bad_requests() {
    assert!(bad_request(b"hello").starts_with("request body is not JSON"));
    assert!(bad_request(b"").starts_with("request body is truncated JSON"));
    let body = review_body("tusk.dev/v1", vec![cluster_v1alpha1_object()]);
    assert!(bad_request(&body[..body.len() / 2]).starts_with("request body is truncated JSON"));
    // Bytes that are not UTF-8, anywhere, and a body cut inside a character.
    assert!(bad_request(b"\xff{}").starts_with("request body is not JSON: it is not UTF-8"));
    let mut object = cluster_v1alpha1_object();
    object["metadata"]["annotations"] = json!({"note": "caf\u{e9}"});
    let body = review_body("tusk.dev/v1", vec![object]);
    let cut = body
        .iter()
        .position(|b| *b == 0xc3)
        .expect("the body holds a two-byte character")
        + 1;
    assert_eq!(
        bad_request(&body[..cut]),
        "request body is truncated JSON: it ends inside a UTF-8 character\n"
    );
    let mut broken = body.clone();
    broken[cut] = b'x';
    assert!(bad_request(&broken).starts_with("request body is not JSON: it is not UTF-8"));
}

#[test]
fn deeply_nested_json_is_refused_without_overflowing_the_stack() {
    let nested = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let body = format!(
        r#"{{"apiVersion":"apiextensions.k8s.io/v1","kind":"ConversionReview","request":{{"uid":"0d7d5b5e-1c7e-4a0a-a1b4-3f5d0a6c9e21","desiredAPIVersion":"tusk.dev/v1","objects":[{nested}]}}}}"#
    );
    assert_eq!(
        failure_message(&review(body.as_bytes())),
        "object 0 is not a JSON object"
    );
    // The same depth inside a spec is an unknown field, refused by name before it is walked.
    let object = |spec_extra: &str, metadata: &str| {
        format!(
            r#"{{"apiVersion":"tusk.dev/v1alpha1","kind":"PostgresCluster","metadata":{metadata},"spec":{{"version":"16","storageSize":"1Gi"{spec_extra}}}}}"#
        )
    };
    let body = |object: String| {
        format!(
            r#"{{"apiVersion":"apiextensions.k8s.io/v1","kind":"ConversionReview","request":{{"uid":"0d7d5b5e-1c7e-4a0a-a1b4-3f5d0a6c9e21","desiredAPIVersion":"tusk.dev/v1","objects":[{object}]}}}}"#
        )
    };
    let message = failure_message(&review(
        body(object(&format!(r#","deep":{nested}"#), "{}")).as_bytes(),
    ));
    assert!(message.contains("unknown field `deep`"), "{message}");
    // Inside metadata it is carried through as it came, neither parsed nor lost.
    let metadata = format!(r#"{{"name":"db","labels":{{"x":{nested}}}}}"#);
    let reply = review(body(object("", &metadata)).as_bytes());
    assert_eq!(reply.status, 200);
    let text = String::from_utf8(reply.body).unwrap();
    assert!(text.contains(&metadata), "metadata came back changed");
}

/// Arbitrary bytes, and valid reviews with bytes flipped or cut, never panic, and always get a
/// 200 ConversionReview or a 400.
#[test]
fn arbitrary_bytes_never_panic() {
    let valid = cluster_v1alpha1().prop_map(|o| review_body("tusk.dev/v1beta1", vec![o]));
    let mutated = (valid, any::<prop::sample::Index>(), any::<u8>(), any::<bool>()).prop_map(
        |(mut body, at, byte, cut)| {
            let i = at.index(body.len());
            if cut {
                body.truncate(i);
            } else {
                body[i] = byte;
            }
            body
        },
    );
    let strategy = prop_oneof![prop::collection::vec(any::<u8>(), 0..512), mutated];
    TestRunner::new(Config {
        cases: 20_000,
        failure_persistence: None,
        ..Config::default()
    })
    .run(&strategy, |body| {
        let reply = review(&body);
        match reply.status {
            200 => {
                let review: Value = serde_json::from_slice(&reply.body).expect("200 carries JSON");
                let result = review["response"]["result"]["status"]
                    .as_str()
                    .unwrap_or_default();
                prop_assert!(result == "Success" || result == "Failure");
            }
            400 => prop_assert!(!reply.body.is_empty()),
            other => prop_assert!(false, "unexpected status {other}"),
        }
        Ok(())
    })
    .unwrap();
}
