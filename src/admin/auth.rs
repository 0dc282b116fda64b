//! Who may read `/metrics`. No token, or one the API server does not accept, is 401; a user
//! without the right to `get` the non-resource URL `/metrics` is 403. Two ways to ask:
//! - [`Authorizer::new`] (the operator): a TokenReview says who the token is, and a
//!   SubjectAccessReview whether they may, as controller-runtime's metrics filter does; the
//!   operator's ServiceAccount may create both.
//! - [`Authorizer::as_caller`] (the PostgreSQL pods): a SelfSubjectAccessReview sent with the
//!   caller's own token, which the API server authenticates (401 for a bad token) and answers for
//!   that caller. Every authenticated user may ask it about themselves, so the pods' ServiceAccount
//!   needs no cluster-wide grant.
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
    authorization::v1::{
        NonResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec, SubjectAccessReview,
        SubjectAccessReviewSpec,
    },
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

/// How a token is checked.
enum Reviewer {
    /// TokenReview and SubjectAccessReview with this client's own rights.
    Delegated(Client),
    /// A SelfSubjectAccessReview as the caller, to the API server of this configuration.
    AsCaller(Box<kube::Config>),
}

/// Checks callers against the API server.
pub struct Authorizer {
    reviewer: Reviewer,
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
    /// Checks with TokenReviews and SubjectAccessReviews that `client` may create.
    pub fn new(client: Client) -> Self {
        Self {
            reviewer: Reviewer::Delegated(client),
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// Checks by asking the API server of `config` as the caller (its credentials are replaced by
    /// the caller's token).
    pub fn as_caller(config: kube::Config) -> Self {
        Self {
            reviewer: Reviewer::AsCaller(Box::new(config)),
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
        let client = match &self.reviewer {
            Reviewer::Delegated(client) => client,
            Reviewer::AsCaller(config) => return as_caller(config, token, verb, path).await,
        };
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_owned()),
                ..Default::default()
            },
            ..Default::default()
        };
        let reviewed = Api::<TokenReview>::all(client.clone())
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
        let answered = Api::<SubjectAccessReview>::all(client.clone())
            .create(&PostParams::default(), &access)
            .await?;
        Ok(decide(answered.status.unwrap_or_default(), &name, verb, path))
    }
}

/// What an access review's answer means for `who`.
fn decide(
    status: k8s_openapi::api::authorization::v1::SubjectAccessReviewStatus,
    who: &str,
    verb: &str,
    path: &str,
) -> Decision {
    if status.allowed {
        return Decision::Allowed;
    }
    let reason = status
        .reason
        .filter(|r| !r.is_empty())
        .map(|r| format!(": {r}"))
        .unwrap_or_default();
    Decision::Forbidden(format!("{who} may not {verb} {path}{reason}"))
}

/// A SelfSubjectAccessReview for `verb` on `path`, sent to the API server of `config` with
/// `token` as the only credential.
async fn as_caller(
    config: &kube::Config,
    token: &str,
    verb: &str,
    path: &str,
) -> Result<Decision, kube::Error> {
    let mut config = config.clone();
    config.auth_info = serde_json::from_value(serde_json::json!({ "token": token }))
        .map_err(|e| kube::Error::Service(format!("a bearer token: {e}").into()))?;
    let client = Client::try_from(config)?;
    let review = SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            non_resource_attributes: Some(NonResourceAttributes {
                path: Some(path.to_owned()),
                verb: Some(verb.to_owned()),
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    match Api::<SelfSubjectAccessReview>::all(client)
        .create(&PostParams::default(), &review)
        .await
    {
        Err(kube::Error::Api(status)) if status.code == 401 => {
            Ok(Decision::Unauthenticated("the token is not valid".into()))
        }
        Err(e) => Err(e),
        Ok(answered) => Ok(decide(
            answered.status.unwrap_or_default(),
            "the token's holder",
            verb,
            path,
        )),
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
