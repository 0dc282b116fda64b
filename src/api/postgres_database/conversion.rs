//! How `PostgresDatabase` v1alpha1 maps to the hub (`v1`).

use serde::{Deserialize, Serialize};

use super::{v1, v1alpha1};
use crate::api::{
    common::{ClusterReference, ReclaimPolicy},
    conversion::{Lost, Parts, Spoke},
};

type Hub = Parts<v1::PostgresDatabaseSpec, v1::PostgresDatabaseStatus>;

/// The `v1` spec fields `v1alpha1` cannot express.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SpecLost {
    /// Extensions with a version or schema, matched by name on the way back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    extensions: Option<Vec<v1::Extension>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    encoding: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    locale: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reclaim_policy: Option<ReclaimPolicy>,
}

impl Spoke<v1::PostgresDatabaseSpec, v1::PostgresDatabaseStatus> for v1alpha1::PostgresDatabase {
    type Spec = v1alpha1::PostgresDatabaseSpec;
    type Status = v1alpha1::PostgresDatabaseStatus;
    type Lost = Lost<SpecLost, ()>;

    fn split(hub: Hub) -> (Parts<Self::Spec, Self::Status>, Self::Lost) {
        let s = hub.spec;
        let names = s
            .extensions
            .as_ref()
            .map(|e| e.iter().map(|e| e.name.clone()).collect());
        let detailed: Vec<v1::Extension> = s
            .extensions
            .into_iter()
            .flatten()
            .filter(|e| e.version.is_some() || e.schema.is_some())
            .collect();
        let spec = v1alpha1::PostgresDatabaseSpec {
            cluster: s.cluster.name,
            name: s.database_name,
            owner: s.owner,
            extensions: names,
        };
        let spec_lost = SpecLost {
            extensions: (!detailed.is_empty()).then_some(detailed),
            encoding: s.encoding,
            locale: s.locale,
            reclaim_policy: s.reclaim_policy,
        };
        let status = hub.status.map(|s| v1alpha1::PostgresDatabaseStatus {
            conditions: s.conditions,
            observed_generation: s.observed_generation,
        });
        (
            Parts { spec, status },
            Lost {
                spec: spec_lost,
                status: (),
            },
        )
    }

    fn apply(spoke: Parts<Self::Spec, Self::Status>, lost: Self::Lost) -> Hub {
        let s = spoke.spec;
        let l = lost.spec;
        let detailed = l.extensions.unwrap_or_default();
        let extensions = s.extensions.map(|names| {
            names
                .into_iter()
                .map(|name| {
                    detailed
                        .iter()
                        .find(|e| e.name == name)
                        .cloned()
                        .unwrap_or(v1::Extension {
                            name,
                            version: None,
                            schema: None,
                        })
                })
                .collect()
        });
        let spec = v1::PostgresDatabaseSpec {
            cluster: ClusterReference { name: s.cluster },
            database_name: s.name,
            owner: s.owner,
            extensions,
            encoding: l.encoding,
            locale: l.locale,
            reclaim_policy: l.reclaim_policy,
        };
        let status = spoke.status.map(|s| v1::PostgresDatabaseStatus {
            conditions: s.conditions,
            observed_generation: s.observed_generation,
        });
        Parts { spec, status }
    }
}
