//! The conversion webhook: the apiserver posts a `ConversionReview`, Tusk answers with the
//! objects converted to the desired version.
//!
//! [`review`] is the whole protocol as a pure function of the request body, so it is tested
//! without a server; [`server`] puts it behind HTTPS.

pub mod server;
pub mod tls;

use serde::{Deserialize, Serialize};

use crate::api::{self, conversion::Incoming};

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
        Self::json(serde_json::to_vec(&review).expect("a ConversionReview serializes"))
    }

    /// A `ConversionReview` already written as JSON.
    fn json(body: Vec<u8>) -> Self {
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

/// The request; each object's top level is read with it, and its parts stay slices of the body
/// until they are converted.
#[derive(Deserialize)]
struct Request<'a> {
    uid: String,
    #[serde(rename = "desiredAPIVersion")]
    desired_api_version: String,
    #[serde(borrow)]
    objects: Vec<Incoming<'a>>,
}

#[derive(Serialize)]
struct OutgoingReview<'a> {
    #[serde(rename = "apiVersion")]
    api_version: &'static str,
    kind: &'static str,
    response: Response<'a>,
}

/// A response with no objects: a refusal, or the frame the converted objects are written into.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Response<'a> {
    uid: &'a str,
    result: Outcome,
    converted_objects: [(); 0],
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
    // Checked once here, so that no part of the body is checked again when it is taken as it is.
    let body = match std::str::from_utf8(body) {
        Ok(body) => body,
        Err(e) if e.error_len().is_none() => {
            return Reply::bad_request("request body is truncated JSON: it ends inside a UTF-8 character");
        }
        Err(e) => return Reply::bad_request(format!("request body is not JSON: it is not UTF-8 ({e})")),
    };
    let review: Review<'_> = match serde_json::from_str(body) {
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
    match converted(&request, body.len()) {
        Ok(body) => Reply::json(body),
        Err(e) => {
            tracing::warn!(uid = %request.uid, error = %e, "conversion failed");
            Reply::review(Response {
                uid: &request.uid,
                result: Outcome {
                    status: "Failure",
                    message: Some(e.to_string()),
                    reason: Some("BadRequest"),
                    code: Some(400),
                },
                converted_objects: [],
            })
        }
    }
}

/// The successful `ConversionReview`, each object converted straight into it: the objects' text
/// is written once, where it stays.
fn converted(request: &Request<'_>, request_len: usize) -> Result<Vec<u8>, api::conversion::ConversionError> {
    let desired = &request.desired_api_version;
    api::desired_version(desired)?;
    // A converted object is about as long as the one sent; the spare covers a stash.
    let mut body = Vec::with_capacity(request_len + request_len / 8 + 256);
    let (head, tail) = success_frame(&request.uid);
    body.extend_from_slice(&head);
    for (index, object) in request.objects.iter().enumerate() {
        if index > 0 {
            body.push(b',');
        }
        api::convert_into(object, desired, index, &mut body)?;
    }
    body.extend_from_slice(&tail);
    Ok(body)
}

/// A successful review with no objects, split inside its empty `convertedObjects` list, which
/// the serialization writes last.
fn success_frame(uid: &str) -> (Vec<u8>, Vec<u8>) {
    let mut head = Reply::review(Response {
        uid,
        result: SUCCESS,
        converted_objects: [],
    })
    .body;
    let at = head
        .windows(2)
        .rposition(|w| w == b"[]")
        .expect("the empty list of objects is last")
        + 1;
    let tail = head.split_off(at);
    (head, tail)
}

const SUCCESS: Outcome = Outcome {
    status: "Success",
    message: None,
    reason: None,
    code: None,
};
