//! Storage-version migration: rewrite every stored object of a CRD at its current storage
//! version, then trim `status.storedVersions` to that version alone.
//!
//! Only after this may a later release stop serving an older version: the apiserver cannot read
//! an object stored at a version the CRD no longer lists. Each object is read and written back
//! unchanged; the apiserver converts it to the storage version on the way in, so etcd then holds
//! it at that version. An object changed or deleted meanwhile needs nothing: whoever changed it
//! wrote it at the storage version already.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{
    Api, Client,
    api::{ApiResource, DynamicObject, ListParams, Patch, PatchParams, PostParams},
};
use serde_json::json;

/// The field manager Tusk writes migrations with.
pub const FIELD_MANAGER: &str = "tusk-storage-migration";

/// How many objects one list request returns.
const PAGE_SIZE: u32 = 250;

/// How often an object changed under a rewrite is read and tried again.
const CONFLICT_RETRIES: usize = 5;

/// What a migration did to one CRD.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Migration {
    /// The CRD's name.
    pub crd: String,
    /// The version every object is now stored at.
    pub storage_version: String,
    /// `status.storedVersions` before.
    pub stored_versions_before: Vec<String>,
    /// Objects written back.
    pub rewritten: usize,
    /// Objects deleted while the migration ran.
    pub gone: usize,
}

/// Why a migration stopped. Nothing is trimmed unless every object was rewritten.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    /// A request to the apiserver failed.
    #[error("{crd}: {action}: {source}")]
    Kube {
        /// The CRD.
        crd: String,
        /// What was being done.
        action: String,
        /// The error.
        source: kube::Error,
    },
    /// The CRD marks no version as the storage version.
    #[error("{0}: no version has storage: true")]
    NoStorageVersion(String),
}

/// Migrates every object of the CRD `crd_name` to its storage version, then sets
/// `status.storedVersions` to that version alone.
pub async fn migrate(client: &Client, crd_name: &str) -> Result<Migration, MigrateError> {
    let fail = |action: String| {
        let crd = crd_name.to_owned();
        move |source| MigrateError::Kube { crd, action, source }
    };
    let crds = Api::<CustomResourceDefinition>::all(client.clone());
    let crd = crds.get(crd_name).await.map_err(fail("reading the CRD".into()))?;
    let storage = crd
        .spec
        .versions
        .iter()
        .find(|v| v.storage)
        .ok_or_else(|| MigrateError::NoStorageVersion(crd_name.to_owned()))?
        .name
        .clone();
    let before = crd
        .status
        .as_ref()
        .and_then(|s| s.stored_versions.clone())
        .unwrap_or_default();
    let resource = ApiResource {
        group: crd.spec.group.clone(),
        version: storage.clone(),
        api_version: format!("{}/{storage}", crd.spec.group),
        kind: crd.spec.names.kind.clone(),
        plural: crd.spec.names.plural.clone(),
    };
    let namespaced = crd.spec.scope == "Namespaced";
    let all = Api::<DynamicObject>::all_with(client.clone(), &resource);
    let mut migration = Migration {
        crd: crd_name.to_owned(),
        storage_version: storage.clone(),
        stored_versions_before: before,
        rewritten: 0,
        gone: 0,
    };
    let mut params = ListParams::default().limit(PAGE_SIZE);
    loop {
        let page = all.list(&params).await.map_err(fail("listing objects".into()))?;
        for object in page.items {
            let api = match (namespaced, object.metadata.namespace.as_deref()) {
                (true, Some(ns)) => Api::namespaced_with(client.clone(), ns, &resource),
                _ => all.clone(),
            };
            if rewrite(&api, object)
                .await
                .map_err(fail("rewriting an object".into()))?
            {
                migration.rewritten += 1;
            } else {
                migration.gone += 1;
            }
        }
        match page.metadata.continue_ {
            Some(token) if !token.is_empty() => params = params.continue_token(&token),
            _ => break,
        }
    }
    crds.patch_status(
        crd_name,
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"storedVersions": [storage]}})),
    )
    .await
    .map_err(fail("trimming status.storedVersions".into()))?;
    Ok(migration)
}

/// Writes `object` back unchanged. False when it was deleted meanwhile.
async fn rewrite(api: &Api<DynamicObject>, mut object: DynamicObject) -> Result<bool, kube::Error> {
    let name = object.metadata.name.clone().unwrap_or_default();
    let params = PostParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..PostParams::default()
    };
    for _ in 0..CONFLICT_RETRIES {
        match api.replace(&name, &params, &object).await {
            Ok(_) => return Ok(true),
            Err(kube::Error::Api(status)) if status.code == 404 => return Ok(false),
            Err(kube::Error::Api(status)) if status.code == 409 => match api.get_opt(&name).await? {
                Some(fresh) => object = fresh,
                None => return Ok(false),
            },
            Err(e) => return Err(e),
        }
    }
    // Changed on every try: each of those changes was written at the storage version already.
    Ok(true)
}
