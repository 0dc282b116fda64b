//! The Tusk API: group `tusk.dev`, five kinds, several versions each, and conversion between them.

pub mod common;
pub mod conversion;
pub mod postgres_backup;
pub mod postgres_backup_schedule;
pub mod postgres_cluster;
pub mod postgres_database;
pub mod postgres_user;

use std::sync::LazyLock;

use conversion::{ConversionError, Envelope, KindConverter};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde_json::{Value, value::RawValue};

pub use crate::facts::kinds::{GROUP, STORAGE_VERSION};

/// Every kind's converter.
static CONVERTERS: LazyLock<Vec<Box<dyn KindConverter>>> = LazyLock::new(|| {
    vec![
        Box::new(postgres_cluster::converter()),
        Box::new(postgres_user::converter()),
        Box::new(postgres_database::converter()),
        Box::new(postgres_backup::converter()),
        Box::new(postgres_backup_schedule::converter()),
    ]
});

/// One CRD per kind, each serving every version of the kind and storing [`STORAGE_VERSION`].
///
/// Conversion is left as the apiserver's default; [`crate::crd`] sets the webhook.
pub fn crds() -> Vec<CustomResourceDefinition> {
    vec![
        postgres_cluster::crd(),
        postgres_user::crd(),
        postgres_database::crd(),
        postgres_backup::crd(),
        postgres_backup_schedule::crd(),
    ]
}

/// Converts one object, the `index`th of a request, to `desired_api_version`.
///
/// An object already at that version comes back untouched, byte for byte.
pub fn convert_raw(
    object: &RawValue,
    desired_api_version: &str,
    index: usize,
) -> Result<Box<RawValue>, ConversionError> {
    if !object.get().trim_start().starts_with('{') {
        return Err(ConversionError::NotAnObject { index });
    }
    let envelope: Envelope<'_> =
        serde_json::from_str(object.get()).map_err(|e| ConversionError::NotAnObjectOfKubernetes {
            index,
            reason: e.to_string(),
        })?;
    let string = |raw: Option<&RawValue>, field: &'static str| {
        raw.and_then(|r| serde_json::from_str::<String>(r.get()).ok())
            .ok_or(ConversionError::MissingTypeField { index, field })
    };
    let api_version = string(envelope.api_version, "apiVersion")?;
    let kind = string(envelope.kind, "kind")?;
    let from = in_group(&api_version).ok_or_else(|| ConversionError::ForeignGroup {
        index,
        api_version: api_version.clone(),
        group: GROUP,
    })?;
    let converter =
        CONVERTERS
            .iter()
            .find(|c| c.kind() == kind)
            .ok_or_else(|| ConversionError::UnknownKind {
                index,
                kind: kind.clone(),
                allowed: CONVERTERS.iter().map(|c| c.kind()).collect::<Vec<_>>().join(", "),
            })?;
    let to = desired_version(desired_api_version)?;
    converter.convert(object, &envelope, from, to, index)
}

/// [`convert_raw`] for an object already parsed.
pub fn convert_object(
    object: Value,
    desired_api_version: &str,
    index: usize,
) -> Result<Value, ConversionError> {
    let raw = serde_json::value::to_raw_value(&object).expect("a JSON value serializes");
    let converted = convert_raw(&raw, desired_api_version, index)?;
    Ok(serde_json::from_str(converted.get()).expect("conversion writes valid JSON"))
}

/// The version part of a desired apiVersion, which must be in [`GROUP`].
pub fn desired_version(desired_api_version: &str) -> Result<&str, ConversionError> {
    in_group(desired_api_version).ok_or_else(|| ConversionError::DesiredVersionNotInGroup {
        desired: desired_api_version.to_owned(),
        group: GROUP,
    })
}

/// The version part of `api_version` when it is in [`GROUP`].
fn in_group(api_version: &str) -> Option<&str> {
    api_version.strip_prefix(GROUP)?.strip_prefix('/')
}

#[cfg(test)]
mod registry {
    use crate::facts::kinds::TUSK_KINDS;

    #[test]
    fn the_crds_and_converters_are_the_registrys_kinds_in_its_order() {
        let crds: Vec<(String, String, String)> = super::crds()
            .into_iter()
            .map(|c| (c.spec.group, c.spec.names.kind, c.spec.names.plural))
            .collect();
        let registry: Vec<(String, String, String)> = TUSK_KINDS
            .iter()
            .map(|k| (k.group.to_owned(), k.kind.to_owned(), k.plural.to_owned()))
            .collect();
        assert_eq!(crds, registry);
        let converters: Vec<&str> = super::CONVERTERS.iter().map(|c| c.kind()).collect();
        assert_eq!(converters, TUSK_KINDS.map(|k| k.kind));
    }
}
