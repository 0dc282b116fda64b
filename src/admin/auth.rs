//! Who may read `/metrics`: the caller's bearer token is checked with a TokenReview, and what it
//! names with a SubjectAccessReview for `get` on the non-resource URL `/metrics`, as
//! controller-runtime's metrics filter does. No token, or one the API server does not accept,
//! is 401; a user without the right is 403.
//!
//! Decisions are kept for [`DECISION_TTL`] by a hash of the token (never the token), so a
//! scrape every 30 s costs the API server two requests a minute at most; at most
//! [`MAX_CACHED`] are kept.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use k8s_openapi::api::{
    authentication::v1::{TokenReview, TokenReviewSpec},
    authorization::v1::{NonResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec},
};
use kube::{Api, Client, api::PostParams};
use sha2::{Digest, Sha256};

/// How long a decision is kept.
pub const DECISION_TTL: Duration = Duration::from_secs(30);
/// The most decisions kept at once.
pub const MAX_CACHED: usize = 1024;

/// What a request may do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// The caller is who it says and may read the path.
    Allowed,
    /// No token, or one the API server does not accept (401), and why.
    Unauthenticated(String),
    /// The caller may not read the path (403), and why.
    Forbidden(String),
}

/// Checks callers against the API server.
pub struct Authorizer {
    client: Client,
    cache: Mutex<HashMap<[u8; 32], (Decision, Instant)>>,
}

impl std::fmt::Debug for Authorizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authorizer").finish_non_exhaustive()
    }
}

/// The token of an `Authorization: Bearer <token>` header.
pub fn bearer(header: Option<&str>) -> Option<&str> {
    let value = header?.trim();
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

impl Authorizer {
    /// Checks with the API server `client` talks to.
    pub fn new(client: Client) -> Self {
        Self {
            client,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// May the caller with `authorization` (the header's value) `verb` the URL `path`?
    pub async fn check(&self, authorization: Option<&str>, verb: &str, path: &str) -> Decision {
        let Some(token) = bearer(authorization) else {
            return Decision::Unauthenticated(
                "an Authorization: Bearer token is required (a ServiceAccount token)".into(),
            );
        };
        let key: [u8; 32] = Sha256::new()
            .chain_update(verb)
            .chain_update([0])
            .chain_update(path)
            .chain_update([0])
            .chain_update(token)
            .finalize()
            .into();
        if let Some((decision, at)) = self.lock().get(&key)
            && at.elapsed() < DECISION_TTL
        {
            return decision.clone();
        }
        let decision = match self.review(token, verb, path).await {
            Ok(decision) => decision,
            // The API server could not be asked: refuse, and do not remember it.
            Err(e) => return Decision::Forbidden(format!("cannot check the token: {e}")),
        };
        let mut cache = self.lock();
        if cache.len() >= MAX_CACHED {
            cache.retain(|_, (_, at)| at.elapsed() < DECISION_TTL);
            if cache.len() >= MAX_CACHED {
                cache.clear();
            }
        }
        cache.insert(key, (decision.clone(), Instant::now()));
        decision
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], (Decision, Instant)>> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn review(&self, token: &str, verb: &str, path: &str) -> Result<Decision, kube::Error> {
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_owned()),
                ..Default::default()
            },
            ..Default::default()
        };
        let reviewed = Api::<TokenReview>::all(self.client.clone())
            .create(&PostParams::default(), &review)
            .await?;
        let status = reviewed.status.unwrap_or_default();
        let user = match status.user {
            Some(user) if status.authenticated == Some(true) => user,
            _ => {
                return Ok(Decision::Unauthenticated(match status.error {
                    Some(e) if !e.is_empty() => format!("the token is not valid: {e}"),
                    _ => "the token is not valid".into(),
                }));
            }
        };
        let name = user.username.clone().unwrap_or_default();
        let access = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: user.username,
                uid: user.uid,
                groups: user.groups,
                extra: user.extra,
                non_resource_attributes: Some(NonResourceAttributes {
                    path: Some(path.to_owned()),
                    verb: Some(verb.to_owned()),
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        let answered = Api::<SubjectAccessReview>::all(self.client.clone())
            .create(&PostParams::default(), &access)
            .await?;
        let status = answered.status.unwrap_or_default();
        Ok(if status.allowed {
            Decision::Allowed
        } else {
            Decision::Forbidden(format!(
                "{name} may not {verb} {path}{}",
                status
                    .reason
                    .filter(|r| !r.is_empty())
                    .map(|r| format!(": {r}"))
                    .unwrap_or_default()
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::bearer;

    #[test]
    fn only_a_bearer_token_is_taken() {
        assert_eq!(bearer(Some("Bearer abc.def")), Some("abc.def"));
        assert_eq!(bearer(Some("bearer   abc ")), Some("abc"));
        assert_eq!(bearer(Some("Basic dXNlcjpwYXNz")), None);
        assert_eq!(bearer(Some("Bearer ")), None);
        assert_eq!(bearer(Some("abc")), None);
        assert_eq!(bearer(None), None);
    }
}
