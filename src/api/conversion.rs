//! Lossless conversion between the served versions of every Tusk kind.
//!
//! Conversion goes hub-and-spoke: every version converts to and from the storage version (the
//! hub), so any pair of versions converts in two steps. A spoke cannot express every hub field;
//! what it cannot express travels in one annotation, [`CONVERSION_DATA_ANNOTATION`], and comes back
//! when the object returns to the hub. The result: `A -> B -> A` gives back the identical object.
//!
//! Only `spec` and `status` are read as typed values. Everything else (`metadata` above all) is
//! carried as the JSON the apiserver sent, so nothing the conversion does not understand is lost.

use kube::Resource;
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use serde_json::{Map, Value};

/// The one annotation that carries what a spoke version cannot express.
pub const CONVERSION_DATA_ANNOTATION: &str = "tusk.dev/conversion-data";

/// Why an object could not be converted.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConversionError {
    /// The object is not a JSON object.
    #[error("object {index} is not a JSON object")]
    NotAnObject {
        /// Position of the object in the request.
        index: usize,
    },
    /// The object has no usable `apiVersion` or `kind`.
    #[error("object {index}: {field} is missing or not a string")]
    MissingTypeField {
        /// Position of the object in the request.
        index: usize,
        /// `apiVersion` or `kind`.
        field: &'static str,
    },
    /// The object belongs to another API group.
    #[error(
        "object {index}: apiVersion {api_version:?} is not in group {group}; this webhook converts only {group} objects"
    )]
    ForeignGroup {
        /// Position of the object in the request.
        index: usize,
        /// The apiVersion the object carried.
        api_version: String,
        /// The group Tusk serves.
        group: &'static str,
    },
    /// The desired apiVersion is not in Tusk's group.
    #[error("desiredAPIVersion {desired:?} is not in group {group}; allowed are {group}/<version>")]
    DesiredVersionNotInGroup {
        /// The desiredAPIVersion of the request.
        desired: String,
        /// The group Tusk serves.
        group: &'static str,
    },
    /// The object's kind is not a Tusk kind.
    #[error("object {index}: kind {kind:?} is not a Tusk kind; allowed kinds are {allowed}")]
    UnknownKind {
        /// Position of the object in the request.
        index: usize,
        /// The kind the object carried.
        kind: String,
        /// The kinds Tusk serves, comma-separated.
        allowed: String,
    },
    /// A version that the kind does not have, on the object or as the desired version.
    #[error("{what}: {kind} has no version {version:?}; allowed versions are {allowed}")]
    UnknownVersion {
        /// Which version was wrong: the object's or the desired one.
        what: String,
        /// The kind in question.
        kind: &'static str,
        /// The version asked for.
        version: String,
        /// The versions the kind has, comma-separated.
        allowed: String,
    },
    /// `spec` or `status` does not match the schema of its version.
    #[error("object {index} ({kind} {version}): {part} does not match the schema: {reason}")]
    Malformed {
        /// Position of the object in the request.
        index: usize,
        /// The kind of the object.
        kind: &'static str,
        /// The version of the object.
        version: String,
        /// `spec` or `status`.
        part: &'static str,
        /// What serde reported.
        reason: String,
    },
}

/// The parts of an object that conversion reads as typed values.
#[derive(Clone, Debug, PartialEq)]
pub struct Parts<Spec, Status> {
    /// The object's `spec`.
    pub spec: Spec,
    /// The object's `status`, when it has one.
    pub status: Option<Status>,
}

/// A version that converts to and from the hub version `H` of its kind.
///
/// Implementations are two pure functions; the annotation bookkeeping around them is shared.
/// They must satisfy, for every valid value:
/// - `apply(split(hub)) == hub` (nothing of the hub is lost), and
/// - `split(apply(spoke, Lost::default())) == (spoke, Lost::default())`.
pub trait Spoke<HubSpec, HubStatus>: Sized {
    /// This version's spec.
    type Spec: Clone + PartialEq + Serialize + DeserializeOwned;
    /// This version's status.
    type Status: Clone + PartialEq + Serialize + DeserializeOwned;
    /// The hub fields this version cannot express. `Default` means nothing is lost.
    type Lost: Clone + Default + PartialEq + Serialize + DeserializeOwned;

    /// Splits a hub object into this version's fields and what they cannot express.
    fn split(hub: Parts<HubSpec, HubStatus>) -> (Parts<Self::Spec, Self::Status>, Self::Lost);

    /// Builds the hub object from this version's fields and what was lost on the way down.
    fn apply(spoke: Parts<Self::Spec, Self::Status>, lost: Self::Lost) -> Parts<HubSpec, HubStatus>;
}

/// What the annotation holds: the lost fields, and the annotation's own earlier value if the hub
/// object carried one (so even that is given back).
#[derive(Serialize, Deserialize)]
struct Stash<L> {
    #[serde(flatten)]
    lost: L,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    previous: Option<String>,
}

/// One object on its way through conversion: its typed parts, plus the rest as JSON.
pub struct Object<Spec, Status> {
    /// `spec` and `status`.
    pub parts: Parts<Spec, Status>,
    /// `apiVersion`, `kind`, `metadata` and anything else, untouched.
    pub rest: Map<String, Value>,
}

impl<Spec: DeserializeOwned, Status: DeserializeOwned> Object<Spec, Status> {
    /// Reads the typed parts out of a JSON object.
    pub fn decode(mut rest: Map<String, Value>, at: &Location<'_>) -> Result<Self, ConversionError> {
        let spec = rest.remove("spec").unwrap_or(Value::Null);
        let spec = serde_json::from_value(spec).map_err(|e| at.malformed("spec", &e))?;
        let status = match rest.remove("status") {
            None => None,
            Some(v) => Some(serde_json::from_value(v).map_err(|e| at.malformed("status", &e))?),
        };
        Ok(Self {
            parts: Parts { spec, status },
            rest,
        })
    }
}

impl<Spec: Serialize, Status: Serialize> Object<Spec, Status> {
    /// Writes the object back as JSON with the given `apiVersion`.
    pub fn encode(self, api_version: &str) -> Value {
        let mut map = self.rest;
        map.insert("apiVersion".into(), Value::String(api_version.into()));
        map.insert(
            "spec".into(),
            serde_json::to_value(self.parts.spec).expect("API types serialize"),
        );
        if let Some(status) = self.parts.status {
            map.insert(
                "status".into(),
                serde_json::to_value(status).expect("API types serialize"),
            );
        }
        Value::Object(map)
    }
}

/// Where an object sits, for error messages.
pub struct Location<'a> {
    /// Position of the object in the request.
    pub index: usize,
    /// Its kind.
    pub kind: &'static str,
    /// Its version.
    pub version: &'a str,
}

impl Location<'_> {
    fn malformed(&self, part: &'static str, e: &serde_json::Error) -> ConversionError {
        ConversionError::Malformed {
            index: self.index,
            kind: self.kind,
            version: self.version.to_owned(),
            part,
            reason: e.to_string(),
        }
    }
}

fn annotations(rest: &Map<String, Value>) -> Option<&Map<String, Value>> {
    rest.get("metadata")?.get("annotations")?.as_object()
}

fn take_annotation(rest: &mut Map<String, Value>) -> Option<String> {
    let metadata = rest.get_mut("metadata")?.as_object_mut()?;
    let annotations = metadata.get_mut("annotations")?.as_object_mut()?;
    match annotations.get(CONVERSION_DATA_ANNOTATION) {
        Some(Value::String(_)) => {}
        _ => return None,
    }
    let Some(Value::String(value)) = annotations.remove(CONVERSION_DATA_ANNOTATION) else {
        unreachable!("checked above")
    };
    if annotations.is_empty() {
        metadata.remove("annotations");
    }
    Some(value)
}

fn put_annotation(rest: &mut Map<String, Value>, value: String) {
    let metadata = rest
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    let Value::Object(metadata) = metadata else { return };
    let annotations = metadata
        .entry("annotations")
        .or_insert_with(|| Value::Object(Map::new()));
    if let Value::Object(annotations) = annotations {
        annotations.insert(CONVERSION_DATA_ANNOTATION.into(), Value::String(value));
    }
}

/// Reads `value` as a stash that [`down`] would have written for `spoke`, or returns `None` when
/// it is something else (then it is a value to keep as it is).
fn accepted_stash<HS, HT, S: Spoke<HS, HT>>(
    spoke: &Parts<S::Spec, S::Status>,
    value: &str,
) -> Option<(S::Lost, Option<String>)> {
    let stash: Stash<S::Lost> = serde_json::from_str(value).ok()?;
    let canonical = serde_json::to_string(&stash).ok()?;
    if canonical != value {
        return None;
    }
    let empty = stash.lost == S::Lost::default();
    match &stash.previous {
        // A stash that carries nothing is not one Tusk writes.
        None if empty => return None,
        // Tusk wraps an earlier value with nothing lost only when that value itself reads as a
        // stash; otherwise it would have left the value as it was.
        Some(previous) if empty && accepted_stash::<HS, HT, S>(spoke, previous).is_none() => return None,
        _ => {}
    }
    let (again, lost) = S::split(S::apply(spoke.clone(), stash.lost.clone()));
    (again == *spoke && lost == stash.lost).then_some((stash.lost, stash.previous))
}

/// Converts a spoke object up to the hub.
pub fn up<HS, HT, S: Spoke<HS, HT>>(object: Object<S::Spec, S::Status>) -> Object<HS, HT> {
    let Object { parts, mut rest } = object;
    let stash = annotations(&rest)
        .and_then(|a| a.get(CONVERSION_DATA_ANNOTATION))
        .and_then(Value::as_str)
        .and_then(|value| accepted_stash::<HS, HT, S>(&parts, value));
    let Some((lost, previous)) = stash else {
        return Object {
            parts: S::apply(parts, S::Lost::default()),
            rest,
        };
    };
    take_annotation(&mut rest);
    if let Some(previous) = previous {
        put_annotation(&mut rest, previous);
    }
    Object {
        parts: S::apply(parts, lost),
        rest,
    }
}

/// Converts a hub object down to a spoke, stashing what the spoke cannot express.
pub fn down<HS, HT, S: Spoke<HS, HT>>(object: Object<HS, HT>) -> Object<S::Spec, S::Status> {
    let Object { parts, mut rest } = object;
    let (parts, lost) = S::split(parts);
    let previous = annotations(&rest)
        .and_then(|a| a.get(CONVERSION_DATA_ANNOTATION))
        .and_then(Value::as_str);
    let wrap = lost != S::Lost::default()
        || previous.is_some_and(|p| accepted_stash::<HS, HT, S>(&parts, p).is_some());
    if wrap {
        let previous = take_annotation(&mut rest);
        let stash = Stash { lost, previous };
        put_annotation(
            &mut rest,
            serde_json::to_string(&stash).expect("stash serializes"),
        );
    }
    Object { parts, rest }
}

fn is_default<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
}

/// The usual shape of a spoke's lost data: spec fields and status fields, each omitted when empty.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(bound(
    serialize = "S: Serialize + Default + PartialEq, T: Serialize + Default + PartialEq",
    deserialize = "S: Deserialize<'de> + Default, T: Deserialize<'de> + Default"
))]
pub struct Lost<S, T> {
    /// Spec fields the spoke cannot express.
    #[serde(default, skip_serializing_if = "is_default")]
    pub spec: S,
    /// Status fields the spoke cannot express.
    #[serde(default, skip_serializing_if = "is_default")]
    pub status: T,
}

/// Reads an object of one version and brings it to the hub.
type ToHub<HS, HT> = fn(Map<String, Value>, &Location<'_>) -> Result<Object<HS, HT>, ConversionError>;

/// How one served version of a kind goes to and comes from the hub.
pub struct Version<HS, HT> {
    /// The version name, for example `v1beta1`.
    pub name: String,
    to_hub: ToHub<HS, HT>,
    from_hub: fn(Object<HS, HT>, &str) -> Value,
}

impl<HS, HT> Version<HS, HT>
where
    HS: Serialize + DeserializeOwned,
    HT: Serialize + DeserializeOwned,
{
    /// The hub version `H`: read and written as it is.
    pub fn hub<H: Resource<DynamicType = ()>>() -> Self {
        Self {
            name: H::version(&()).into_owned(),
            to_hub: Object::decode,
            from_hub: Object::encode,
        }
    }

    /// A spoke version, converted through [`Spoke`].
    pub fn spoke<S: Spoke<HS, HT> + Resource<DynamicType = ()>>() -> Self {
        Self {
            name: S::version(&()).into_owned(),
            to_hub: |map, at| Ok(up::<HS, HT, S>(Object::decode(map, at)?)),
            from_hub: |hub, api_version| down::<HS, HT, S>(hub).encode(api_version),
        }
    }
}

/// Converts objects of one kind between its versions.
pub trait KindConverter: Send + Sync {
    /// The kind, for example `PostgresCluster`.
    fn kind(&self) -> &'static str;
    /// The versions served, oldest first.
    fn versions(&self) -> Vec<&str>;
    /// Converts one object from version `from` to version `to`; both must be served.
    fn convert(
        &self,
        object: Map<String, Value>,
        from: &str,
        to: &str,
        index: usize,
    ) -> Result<Value, ConversionError>;
}

/// A [`KindConverter`] built from a kind's version table.
pub struct Kind<HS, HT> {
    kind: &'static str,
    group: &'static str,
    versions: Vec<Version<HS, HT>>,
}

impl<HS, HT> Kind<HS, HT> {
    /// A kind of `group` whose versions are `versions`, oldest first.
    pub fn new(kind: &'static str, group: &'static str, versions: Vec<Version<HS, HT>>) -> Self {
        Self {
            kind,
            group,
            versions,
        }
    }

    fn version(
        &self,
        name: &str,
        what: impl FnOnce() -> String,
    ) -> Result<&Version<HS, HT>, ConversionError> {
        self.versions
            .iter()
            .find(|v| v.name == name)
            .ok_or_else(|| ConversionError::UnknownVersion {
                what: what(),
                kind: self.kind,
                version: name.to_owned(),
                allowed: self
                    .versions
                    .iter()
                    .map(|v| v.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }
}

impl<HS, HT> KindConverter for Kind<HS, HT> {
    fn kind(&self) -> &'static str {
        self.kind
    }

    fn versions(&self) -> Vec<&str> {
        self.versions.iter().map(|v| v.name.as_str()).collect()
    }

    fn convert(
        &self,
        object: Map<String, Value>,
        from: &str,
        to: &str,
        index: usize,
    ) -> Result<Value, ConversionError> {
        let source = self.version(from, || format!("object {index}"))?;
        let target = self.version(to, || "desiredAPIVersion".to_owned())?;
        if from == to {
            return Ok(Value::Object(object));
        }
        let at = Location {
            index,
            kind: self.kind,
            version: from,
        };
        let hub = (source.to_hub)(object, &at)?;
        Ok((target.from_hub)(hub, &format!("{}/{}", self.group, to)))
    }
}
