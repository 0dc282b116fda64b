//! The Tusk API: group `tusk.dev`, five kinds, several versions each, and conversion between them.

pub mod common;
pub mod conversion;
pub mod postgres_backup;
pub mod postgres_backup_schedule;
pub mod postgres_cluster;
pub mod postgres_database;
pub mod postgres_user;

use std::sync::LazyLock;

use conversion::{ConversionError, Incoming, KindConverter, string_value};
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

/// Converts one object, the `index`th of a request, to `desired_api_version`, and writes it at the
/// end of `out`.
///
/// An object already at that version comes back with each of its fields as it came.
pub fn convert_into<'a>(
    object: &Incoming<'a>,
    desired_api_version: &str,
    index: usize,
    out: &mut Vec<u8>,
) -> Result<(), ConversionError> {
    let envelope = match object {
        Incoming::Object(envelope) => envelope,
        Incoming::NotAnObject => return Err(ConversionError::NotAnObject { index }),
        Incoming::NotKubernetes(reason) => {
            return Err(ConversionError::NotAnObjectOfKubernetes {
                index,
                reason: reason.clone(),
            });
        }
    };
    let string = |raw: Option<&'a RawValue>, field: &'static str| {
        raw.and_then(string_value)
            .ok_or(ConversionError::MissingTypeField { index, field })
    };
    let api_version = string(envelope.api_version, "apiVersion")?;
    let kind = string(envelope.kind, "kind")?;
    let from = in_group(&api_version).ok_or_else(|| ConversionError::ForeignGroup {
        index,
        api_version: api_version.clone().into_owned(),
        group: GROUP,
    })?;
    let converter =
        CONVERTERS
            .iter()
            .find(|c| c.kind() == kind)
            .ok_or_else(|| ConversionError::UnknownKind {
                index,
                kind: kind.clone().into_owned(),
                allowed: CONVERTERS.iter().map(|c| c.kind()).collect::<Vec<_>>().join(", "),
            })?;
    let to = desired_version(desired_api_version)?;
    converter.convert(envelope, from, to, index, out)
}

/// [`convert_into`] for one object already parsed.
pub fn convert_object(
    object: Value,
    desired_api_version: &str,
    index: usize,
) -> Result<Value, ConversionError> {
    let text = serde_json::to_string(&object).expect("a JSON value serializes");
    let incoming: Incoming<'_> = serde_json::from_str(&text).expect("a JSON value reads back");
    let mut out = Vec::new();
    convert_into(&incoming, desired_api_version, index, &mut out)?;
    Ok(serde_json::from_slice(&out).expect("conversion writes valid JSON"))
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
