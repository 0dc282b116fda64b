//! How `PostgresUser` v1alpha1 maps to the hub (`v1`).

use serde::{Deserialize, Serialize};

use super::{v1, v1alpha1};
use crate::api::{
    common::{ClusterReference, ReclaimPolicy},
    conversion::{Lost, Parts, Spoke},
};

type Hub = Parts<v1::PostgresUserSpec, v1::PostgresUserStatus>;

/// The `v1` spec fields `v1alpha1` cannot express.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SpecLost {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    password_secret_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    createdb: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    createrole: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    inherit: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    valid_until: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    member_of: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    privileges: Option<Vec<v1::DatabasePrivileges>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reclaim_policy: Option<ReclaimPolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    client_certificate: Option<bool>,
}

/// The `v1` status fields `v1alpha1` cannot express.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusLost {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    role_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    password_secret_version: Option<String>,
}

impl Spoke<v1::PostgresUserSpec, v1::PostgresUserStatus> for v1alpha1::PostgresUser {
    type Spec = v1alpha1::PostgresUserSpec;
    type Status = v1alpha1::PostgresUserStatus;
    type Lost = Lost<SpecLost, StatusLost>;

    fn split(hub: Hub) -> (Parts<Self::Spec, Self::Status>, Self::Lost) {
        let s = hub.spec;
        let (password_secret_name, password_secret_key) = match s.password_secret {
            Some(secret) => (Some(secret.name), secret.key),
            None => (None, None),
        };
        let spec = v1alpha1::PostgresUserSpec {
            cluster: s.cluster.name,
            username: s.role_name,
            password_secret_name,
            login: s.login,
            connection_limit: s.connection_limit,
        };
        let spec_lost = SpecLost {
            password_secret_key,
            createdb: s.createdb,
            createrole: s.createrole,
            inherit: s.inherit,
            valid_until: s.valid_until,
            member_of: s.member_of,
            privileges: s.privileges,
            reclaim_policy: s.reclaim_policy,
            client_certificate: s.client_certificate,
        };
        let (status, status_lost) = match hub.status {
            None => (None, StatusLost::default()),
            Some(s) => (
                Some(v1alpha1::PostgresUserStatus {
                    conditions: s.conditions,
                    observed_generation: s.observed_generation,
                    binding: s.binding,
                }),
                StatusLost {
                    role_name: s.role_name,
                    password_secret_version: s.password_secret_version,
                },
            ),
        };
        (
            Parts { spec, status },
            Lost {
                spec: spec_lost,
                status: status_lost,
            },
        )
    }

    fn apply(spoke: Parts<Self::Spec, Self::Status>, lost: Self::Lost) -> Hub {
        let s = spoke.spec;
        let l = lost.spec;
        let spec = v1::PostgresUserSpec {
            cluster: ClusterReference { name: s.cluster },
            role_name: s.username,
            password_secret: s.password_secret_name.map(|name| v1::PasswordSecret {
                name,
                key: l.password_secret_key,
            }),
            login: s.login,
            createdb: l.createdb,
            createrole: l.createrole,
            inherit: l.inherit,
            connection_limit: s.connection_limit,
            valid_until: l.valid_until,
            member_of: l.member_of,
            privileges: l.privileges,
            reclaim_policy: l.reclaim_policy,
            client_certificate: l.client_certificate,
        };
        let status = spoke.status.map(|s| v1::PostgresUserStatus {
            conditions: s.conditions,
            observed_generation: s.observed_generation,
            binding: s.binding,
            role_name: lost.status.role_name,
            password_secret_version: lost.status.password_secret_version,
        });
        Parts { spec, status }
    }
}
