//! The permissions the operator needs, as data, in one place. They build the ClusterRole of a
//! plain install and of the OLM bundle, and the tests run the operator with exactly these. No
//! wildcards.

use k8s_openapi::api::rbac::v1::{ClusterRole, PolicyRule};
use kube::api::ObjectMeta;

use crate::facts::kinds::GROUP;

/// One rule: these verbs on these resources of these API groups.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rule {
    /// API groups (`""` is the core group).
    pub api_groups: &'static [&'static str],
    /// Resources, with `/subresource` where one is meant.
    pub resources: &'static [&'static str],
    /// Verbs.
    pub verbs: &'static [&'static str],
}

const READ: &[&str] = &["get", "list", "watch"];
const OWN: &[&str] = &["get", "list", "watch", "create", "patch", "update"];

/// Everything `tusk-operator run` does across namespaces, and why.
pub const OPERATOR_RULES: &[Rule] = &[
    // Watch every Tusk object.
    Rule {
        api_groups: &[GROUP],
        resources: &[
            "postgresclusters",
            "postgresusers",
            "postgresdatabases",
            "postgresbackups",
            "postgresbackupschedules",
        ],
        verbs: READ,
    },
    // Write their status.
    Rule {
        api_groups: &[GROUP],
        resources: &[
            "postgresclusters/status",
            "postgresusers/status",
            "postgresdatabases/status",
            "postgresbackups/status",
            "postgresbackupschedules/status",
        ],
        verbs: &["get", "patch", "update"],
    },
    // Tusk's finalizer on users and databases, so it can drop the role or database first; and
    // the user and database a cluster's `bootstrap.initdb` asks for (server-side apply).
    Rule {
        api_groups: &[GROUP],
        resources: &["postgresusers", "postgresdatabases"],
        verbs: &["create", "patch"],
    },
    // A schedule's runs, and the backups retention lets go.
    Rule {
        api_groups: &[GROUP],
        resources: &["postgresbackups"],
        verbs: &["create", "delete"],
    },
    // Owner references that block deletion need this where OwnerReferencesPermissionEnforcement
    // is on (as on OpenShift): clusters own their children, users their binding Secrets,
    // schedules their backups.
    Rule {
        api_groups: &[GROUP],
        resources: &[
            "postgresclusters/finalizers",
            "postgresusers/finalizers",
            "postgresbackupschedules/finalizers",
        ],
        verbs: &["update"],
    },
    // A cluster's children. Server-side apply creates what is missing, so it needs create too.
    Rule {
        api_groups: &[""],
        resources: &["secrets", "configmaps", "services", "serviceaccounts"],
        verbs: OWN,
    },
    Rule {
        api_groups: &["apps"],
        resources: &["statefulsets"],
        verbs: OWN,
    },
    Rule {
        api_groups: &["policy"],
        resources: &["poddisruptionbudgets"],
        verbs: OWN,
    },
    // A cluster's NetworkPolicy when it asks for one; deleted when it no longer does.
    Rule {
        api_groups: &["networking.k8s.io"],
        resources: &["networkpolicies"],
        verbs: &["get", "list", "watch", "create", "patch", "update", "delete"],
    },
    // A cluster's cert-manager Certificate, with `tls.mode: CertManager`.
    Rule {
        api_groups: &["cert-manager.io"],
        resources: &["certificates"],
        verbs: &["get", "create", "patch"],
    },
    // What lets a cluster's pods read and renew its primary's Lease (granting it needs the
    // operator to hold those permissions too: see the leases rule).
    Rule {
        api_groups: &["rbac.authorization.k8s.io"],
        resources: &["roles", "rolebindings"],
        verbs: OWN,
    },
    // Each cluster's primary Lease: created once, watched to see the primary renew it, and
    // handed to a replica on failover.
    Rule {
        api_groups: &["coordination.k8s.io"],
        resources: &["leases"],
        verbs: &["get", "list", "watch", "create", "update"],
    },
    // Whether the claim a cluster backs up to exists yet (its pods mount it only then).
    Rule {
        api_groups: &[""],
        resources: &["persistentvolumeclaims"],
        verbs: &["get"],
    },
    // The role labels the -rw and -ro Services select on; a rolling update deletes each pod in
    // turn (the StatefulSet is OnDelete), the primary last.
    Rule {
        api_groups: &[""],
        resources: &["pods"],
        verbs: &["get", "list", "watch", "patch", "delete"],
    },
    // Events on the objects it reconciles: created, changed, drift repaired, failed. A repeated
    // Event is a patch of its series.
    Rule {
        api_groups: &["events.k8s.io"],
        resources: &["events"],
        verbs: &["create", "patch"],
    },
    // Who may read /metrics: the caller's token, then its right to `get` the URL.
    Rule {
        api_groups: &["authentication.k8s.io"],
        resources: &["tokenreviews"],
        verbs: &["create"],
    },
    Rule {
        api_groups: &["authorization.k8s.io"],
        resources: &["subjectaccessreviews"],
        verbs: &["create"],
    },
    // The cluster's TLS security profile (OpenShift's apiservers.config.openshift.io/cluster),
    // which the webhook and /metrics follow.
    Rule {
        api_groups: &["config.openshift.io"],
        resources: &["apiservers"],
        verbs: READ,
    },
];

/// What leader election needs, in the operator's own namespace only: an OLM bundle grants these
/// through a Role there.
pub const LEADER_ELECTION_RULES: &[Rule] = &[Rule {
    api_groups: &["coordination.k8s.io"],
    resources: &["leases"],
    verbs: &["get", "create", "update"],
}];

/// The ClusterRole named `name` that grants [`OPERATOR_RULES`] and [`LEADER_ELECTION_RULES`]: a
/// plain install and the tests bind this one role.
pub fn cluster_role(name: &str) -> ClusterRole {
    ClusterRole {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            ..ObjectMeta::default()
        },
        rules: Some(
            OPERATOR_RULES
                .iter()
                .chain(LEADER_ELECTION_RULES)
                .map(|rule| PolicyRule {
                    api_groups: Some(rule.api_groups.iter().map(|s| (*s).to_owned()).collect()),
                    resources: Some(rule.resources.iter().map(|s| (*s).to_owned()).collect()),
                    verbs: rule.verbs.iter().map(|s| (*s).to_owned()).collect(),
                    ..PolicyRule::default()
                })
                .collect(),
        ),
        ..ClusterRole::default()
    }
}

/// A ClusterRole named `name` that lets its holder read the operator's `/metrics` (a `get` of the
/// non-resource URL), for a Prometheus ServiceAccount to be bound to.
pub fn metrics_reader_role(name: &str) -> ClusterRole {
    ClusterRole {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            labels: Some(
                [(
                    "app.kubernetes.io/name".to_owned(),
                    crate::facts::operator::NAME.to_owned(),
                )]
                .into(),
            ),
            ..ObjectMeta::default()
        },
        rules: Some(vec![PolicyRule {
            non_resource_urls: Some(vec![crate::facts::operator::METRICS_PATH.to_owned()]),
            verbs: vec!["get".to_owned()],
            ..PolicyRule::default()
        }]),
        ..ClusterRole::default()
    }
}

#[cfg(test)]
mod tests {
    use super::{LEADER_ELECTION_RULES, OPERATOR_RULES};
    use crate::facts::kinds::{CLUSTER_CHILDREN, EVENT, Kind, LEASE, POD, TUSK_KINDS, USER_CHILDREN};

    fn allows(kind: &Kind, resource: &str, verbs: &[&str]) -> bool {
        verbs.iter().all(|verb| {
            OPERATOR_RULES.iter().any(|r| {
                r.api_groups.contains(&kind.group)
                    && r.resources.contains(&resource)
                    && r.verbs.contains(verb)
            })
        })
    }

    #[test]
    fn every_kind_in_the_registry_is_granted() {
        for kind in TUSK_KINDS {
            assert!(
                allows(&kind, kind.plural, &["get", "list", "watch"]),
                "{kind:?}: read"
            );
            let status = format!("{}/status", kind.plural);
            assert!(
                allows(&kind, &status, &["get", "patch", "update"]),
                "{kind:?}: status"
            );
        }
        // Everything a controller applies, it must read, create and patch.
        for kind in CLUSTER_CHILDREN.iter().chain(&USER_CHILDREN) {
            assert!(
                allows(kind, kind.plural, &["get", "list", "watch", "create", "patch"]),
                "{kind:?} is a child kind the operator's RBAC does not cover"
            );
        }
        assert!(allows(&POD, POD.plural, &["get", "list", "watch", "patch"]));
        assert!(allows(&EVENT, EVENT.plural, &["create", "patch"]));
        assert!(allows(
            &LEASE,
            LEASE.plural,
            &["get", "list", "watch", "create", "update"]
        ));
    }

    #[test]
    fn no_rule_has_a_wildcard() {
        for rule in OPERATOR_RULES.iter().chain(LEADER_ELECTION_RULES) {
            for word in rule.api_groups.iter().chain(rule.resources).chain(rule.verbs) {
                assert!(!word.contains('*'), "{rule:?}");
            }
        }
    }
}
