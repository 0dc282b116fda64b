//! The conversion webhook: the apiserver posts a `ConversionReview`, Tusk answers with the
//! objects converted to the desired version.
//!
//! [`review`] is the whole protocol as a pure function of the request body, so it is tested
//! without a server; [`server`] puts it behind HTTPS.

pub mod server;
pub mod tls;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::api;

/// The only `ConversionReview` version Tusk speaks; the CRDs ask the apiserver for it.
pub const REVIEW_API_VERSION: &str = "apiextensions.k8s.io/v1";

/// What the webhook answers: an HTTP status and a body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// HTTP status code.
    pub status: u16,
    /// `application/json` for a `ConversionReview`, `text/plain` for a refusal.
    pub content_type: &'static str,
    /// The body.
    pub body: Vec<u8>,
}

impl Reply {
    /// A refusal of a request that is not a usable `ConversionReview` (HTTP 400).
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::plain(400, message)
    }

    /// A plain-text reply.
    pub fn plain(status: u16, message: impl Into<String>) -> Self {
        let mut body = message.into().into_bytes();
        body.push(b'\n');
        Self {
            status,
            content_type: "text/plain; charset=utf-8",
            body,
        }
    }

    fn review(response: Response<'_>) -> Self {
        let review = OutgoingReview {
            api_version: REVIEW_API_VERSION,
            kind: "ConversionReview",
            response,
        };
        let body = serde_json::to_vec(&review).expect("a ConversionReview serializes");
        Self {
            status: 200,
            content_type: "application/json",
            body,
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Review<'a> {
    api_version: Option<String>,
    kind: Option<String>,
    #[serde(borrow)]
    request: Option<Request<'a>>,
}

/// The request; objects stay slices of the body until they are converted.
#[derive(Deserialize)]
struct Request<'a> {
    uid: String,
    #[serde(rename = "desiredAPIVersion")]
    desired_api_version: String,
    #[serde(borrow)]
    objects: Vec<&'a RawValue>,
}

#[derive(Serialize)]
struct OutgoingReview<'a> {
    #[serde(rename = "apiVersion")]
    api_version: &'static str,
    kind: &'static str,
    response: Response<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Response<'a> {
    uid: &'a str,
    result: Outcome,
    converted_objects: Vec<Box<RawValue>>,
}

/// The `result` of a response, in the shape of `metav1.Status`.
#[derive(Serialize)]
struct Outcome {
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<u16>,
}

/// Answers one `ConversionReview` request body.
///
/// A body that is not a `ConversionReview` gets HTTP 400 with the reason. A well-formed review
/// whose objects cannot be converted gets a `Failure` result naming the object and the problem;
/// the apiserver then shows that message to the user.
pub fn review(body: &[u8]) -> Reply {
    let review: Review<'_> = match serde_json::from_slice(body) {
        Ok(review) => review,
        Err(e) if e.is_eof() => return Reply::bad_request(format!("request body is truncated JSON: {e}")),
        Err(e) if e.is_syntax() => return Reply::bad_request(format!("request body is not JSON: {e}")),
        Err(e) => return Reply::bad_request(format!("request body is not a ConversionReview: {e}")),
    };
    match review.api_version.as_deref() {
        Some(REVIEW_API_VERSION) => {}
        other => {
            return Reply::bad_request(format!(
                "ConversionReview apiVersion {other:?} is not supported; Tusk speaks {REVIEW_API_VERSION}"
            ));
        }
    }
    if review.kind.as_deref() != Some("ConversionReview") {
        return Reply::bad_request(format!("kind {:?} is not ConversionReview", review.kind));
    }
    let Some(request) = review.request else {
        return Reply::bad_request("ConversionReview has no request");
    };
    let desired = &request.desired_api_version;
    let converted: Result<Vec<_>, _> = api::desired_version(desired).and_then(|_| {
        request
            .objects
            .iter()
            .enumerate()
            .map(|(index, object)| api::convert_raw(object, desired, index))
            .collect()
    });
    let response = match converted {
        Ok(converted_objects) => Response {
            uid: &request.uid,
            result: Outcome {
                status: "Success",
                message: None,
                reason: None,
                code: None,
            },
            converted_objects,
        },
        Err(e) => {
            tracing::warn!(uid = %request.uid, error = %e, "conversion failed");
            Response {
                uid: &request.uid,
                result: Outcome {
                    status: "Failure",
                    message: Some(e.to_string()),
                    reason: Some("BadRequest"),
                    code: Some(400),
                },
                converted_objects: vec![],
            }
        }
    };
    Reply::review(response)
}
