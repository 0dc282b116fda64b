//! Lossless conversion between the served versions of every Tusk kind.
//!
//! Conversion goes hub-and-spoke: every version converts to and from the storage version (the
//! hub), so any pair of versions converts in two steps. A spoke cannot express every hub field;
//! what it cannot express travels in one annotation, [`CONVERSION_DATA_ANNOTATION`], and comes back
//! when the object returns to the hub. The result: `A -> B -> A` gives back the identical object.
//!
//! Only `spec` and `status` are read as typed values. `metadata` is carried as the exact JSON text
//! the apiserver sent, and only parsed when the conversion annotation has to change. Each object's
//! top level is read in the same pass as the request around it ([`Incoming`]), and each converted
//! object is written straight into the reply: its text is read once and written once. An object
//! with a top-level field other than `apiVersion`, `kind`, `metadata`, `spec` and `status` is
//! refused rather than converted without it (the apiserver prunes such fields, so a stored
//! object never has one).

use std::{borrow::Cow, fmt, marker::PhantomData};

use kube::Resource;
use serde::{
    Deserialize, Deserializer, Serialize,
    de::{DeserializeOwned, IgnoredAny, MapAccess, SeqAccess, Visitor},
};
use serde_json::{Map, Value, value::RawValue};

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
    /// The object's top level is not that of a Kubernetes object.
    #[error("object {index} is not a Kubernetes object: {reason}")]
    NotAnObjectOfKubernetes {
        /// Position of the object in the request.
        index: usize,
        /// What serde reported, naming the field.
        reason: String,
    },
    /// The object's spec or status does not match the schema of its version.
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
        /// What serde reported, naming the field.
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
/// - `split(apply(spoke, lost)) == (spoke, lost)` for `lost` empty or taken from a `split`.
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

/// An object's `metadata`: the text the apiserver sent, until the conversion annotation changes.
#[derive(Debug)]
pub enum Metadata<'a> {
    /// The object has no metadata.
    Absent,
    /// Untouched JSON text, a slice of the request.
    Raw(&'a RawValue),
    /// Parsed, because an annotation changed.
    Parsed(Map<String, Value>),
}

#[derive(Deserialize)]
struct AnnotationsOnly {
    #[serde(default)]
    annotations: Option<Map<String, Value>>,
}

impl Metadata<'_> {
    /// The value of [`CONVERSION_DATA_ANNOTATION`], if present.
    fn conversion_annotation(&self) -> Option<String> {
        let value = match self {
            Metadata::Absent => return None,
            // Most objects never carry the annotation; find that out without parsing.
            Metadata::Raw(raw) if !raw.get().contains(CONVERSION_DATA_ANNOTATION) => return None,
            Metadata::Raw(raw) => serde_json::from_str::<AnnotationsOnly>(raw.get())
                .ok()?
                .annotations?
                .remove(CONVERSION_DATA_ANNOTATION)?,
            Metadata::Parsed(map) => map.get("annotations")?.get(CONVERSION_DATA_ANNOTATION)?.clone(),
        };
        match value {
            Value::String(value) => Some(value),
            _ => None,
        }
    }

    fn parsed(&mut self) -> Option<&mut Map<String, Value>> {
        let map = match std::mem::replace(self, Metadata::Absent) {
            Metadata::Absent => Map::new(),
            Metadata::Raw(raw) => match serde_json::from_str::<Value>(raw.get()) {
                Ok(Value::Object(map)) => map,
                // Not an object: leave it exactly as it was.
                _ => {
                    *self = Metadata::Raw(raw);
                    return None;
                }
            },
            Metadata::Parsed(map) => map,
        };
        *self = Metadata::Parsed(map);
        match self {
            Metadata::Parsed(map) => Some(map),
            _ => unreachable!("just set"),
        }
    }

    /// Removes the conversion annotation, and the annotations map if that leaves it empty.
    fn remove_conversion_annotation(&mut self) {
        let Some(metadata) = self.parsed() else { return };
        let Some(Value::Object(annotations)) = metadata.get_mut("annotations") else {
            return;
        };
        annotations.remove(CONVERSION_DATA_ANNOTATION);
        if annotations.is_empty() {
            metadata.remove("annotations");
        }
    }

    fn set_conversion_annotation(&mut self, value: String) {
        let Some(metadata) = self.parsed() else { return };
        let annotations = metadata
            .entry("annotations")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(annotations) = annotations {
            annotations.insert(CONVERSION_DATA_ANNOTATION.into(), Value::String(value));
        }
    }
}

impl Serialize for Metadata<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Metadata::Absent => s.serialize_none(),
            Metadata::Raw(raw) => raw.serialize(s),
            Metadata::Parsed(map) => map.serialize(s),
        }
    }
}

/// One object on its way through conversion.
pub struct Object<'a, Spec, Status> {
    /// `kind`, carried through.
    pub kind: &'static str,
    /// `metadata`, carried through.
    pub metadata: Metadata<'a>,
    /// `spec` and `status`.
    pub parts: Parts<Spec, Status>,
}

/// The top level of an object: its five fields as slices of the request, not parsed.
#[derive(Default, Serialize)]
pub struct Envelope<'a> {
    /// `apiVersion`.
    #[serde(rename = "apiVersion", skip_serializing_if = "Option::is_none")]
    pub api_version: Option<&'a RawValue>,
    /// `kind`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<&'a RawValue>,
    /// `metadata`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<&'a RawValue>,
    /// `spec`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spec: Option<&'a RawValue>,
    /// `status`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<&'a RawValue>,
}

/// The top-level fields of a Kubernetes object, in the order the apiserver writes them.
const ENVELOPE_FIELDS: [&str; 5] = ["apiVersion", "kind", "metadata", "spec", "status"];

/// One entry of a request's `objects`, read in the same pass as the request: the object's top
/// level, or what keeps it from being a Kubernetes object.
///
/// Reading it never fails on the entry's shape, so the reply can name the object at fault. Unknown
/// top-level fields are refused: the apiserver prunes them, so an object that has one did not come
/// from it, and converting it would drop the field.
pub enum Incoming<'a> {
    /// A JSON object with only the five top-level fields, each at most once.
    Object(Envelope<'a>),
    /// Not a JSON object.
    NotAnObject,
    /// A JSON object with a top-level field that is unknown or repeated; the reason names it.
    NotKubernetes(String),
}

impl<'de: 'a, 'a> Deserialize<'de> for Incoming<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(IncomingVisitor(PhantomData))
    }
}

struct IncomingVisitor<'a>(PhantomData<Incoming<'a>>);

impl<'de: 'a, 'a> Visitor<'de> for IncomingVisitor<'a> {
    type Value = Incoming<'a>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a Kubernetes object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut envelope = Envelope::default();
        let mut problem = None;
        while let Some(TopLevel(field)) = map.next_key()? {
            let field = match field {
                Ok(field) => field,
                Err(name) => {
                    // Skipped without being built, however deep it is.
                    map.next_value::<IgnoredAny>()?;
                    problem.get_or_insert_with(|| {
                        format!(
                            "unknown field `{name}`, expected one of {}",
                            ENVELOPE_FIELDS.map(|f| format!("`{f}`")).join(", ")
                        )
                    });
                    continue;
                }
            };
            let slot = match field {
                0 => &mut envelope.api_version,
                1 => &mut envelope.kind,
                2 => &mut envelope.metadata,
                3 => &mut envelope.spec,
                4 => &mut envelope.status,
                _ => unreachable!("TopLevel gives an index into ENVELOPE_FIELDS"),
            };
            if slot.replace(map.next_value::<&'de RawValue>()?).is_some() {
                problem.get_or_insert_with(|| format!("duplicate field `{}`", ENVELOPE_FIELDS[field]));
            }
        }
        Ok(match problem {
            None => Incoming::Object(envelope),
            Some(reason) => Incoming::NotKubernetes(reason),
        })
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Incoming::NotAnObject)
    }

    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Incoming::NotAnObject)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(Incoming::NotAnObject)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(Incoming::NotAnObject)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Incoming::NotAnObject)
    }

    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(Incoming::NotAnObject)
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Incoming::NotAnObject)
    }
}

/// A top-level key: its index in [`ENVELOPE_FIELDS`], or the unknown name.
struct TopLevel(Result<usize, String>);

impl<'de> Deserialize<'de> for TopLevel {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = TopLevel;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a field name")
            }

            fn visit_str<E>(self, key: &str) -> Result<TopLevel, E> {
                Ok(TopLevel(
                    ENVELOPE_FIELDS
                        .iter()
                        .position(|f| *f == key)
                        .ok_or_else(|| key.to_owned()),
                ))
            }
        }
        deserializer.deserialize_identifier(KeyVisitor)
    }
}

/// A JSON string's value, borrowed from the text unless it has escapes; `None` for anything
/// but a string.
pub fn string_value(raw: &RawValue) -> Option<Cow<'_, str>> {
    serde_json::from_str::<&str>(raw.get())
        .map(Cow::Borrowed)
        .or_else(|_| serde_json::from_str::<String>(raw.get()).map(Cow::Owned))
        .ok()
}

#[derive(Serialize)]
struct Outgoing<'a, Spec, Status> {
    #[serde(rename = "apiVersion")]
    api_version: &'a str,
    kind: &'a str,
    #[serde(skip_serializing_if = "is_absent")]
    metadata: &'a Metadata<'a>,
    spec: &'a Spec,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: &'a Option<Status>,
}

fn is_absent(metadata: &&Metadata<'_>) -> bool {
    matches!(metadata, Metadata::Absent)
}

impl<'a, Spec: DeserializeOwned, Status: DeserializeOwned> Object<'a, Spec, Status> {
    /// Reads an object of one version: `spec` and `status` typed, the rest carried.
    pub fn decode(
        envelope: &Envelope<'a>,
        kind: &'static str,
        at: &Location<'_>,
    ) -> Result<Self, ConversionError> {
        let spec = envelope.spec.map_or("null", RawValue::get);
        let spec = serde_json::from_str(spec).map_err(|e| at.malformed("spec", &e))?;
        let status = match envelope.status {
            None => None,
            Some(raw) => serde_json::from_str(raw.get()).map_err(|e| at.malformed("status", &e))?,
        };
        Ok(Self {
            kind,
            metadata: envelope.metadata.map_or(Metadata::Absent, Metadata::Raw),
            parts: Parts { spec, status },
        })
    }
}

impl<Spec: Serialize, Status: Serialize> Object<'_, Spec, Status> {
    /// Writes the object as JSON text with the given `apiVersion` at the end of `out`.
    pub fn encode(self, api_version: &str, out: &mut Vec<u8>) {
        let outgoing = Outgoing {
            api_version,
            kind: self.kind,
            metadata: &self.metadata,
            spec: &self.parts.spec,
            status: &self.parts.status,
        };
        serde_json::to_writer(out, &outgoing).expect("API types serialize");
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

/// Reads `value` as a stash in the form [`down`] writes, or returns `None` when it is something
/// else (a value to keep as it is).
///
/// A stash is applied even when the spoke was edited since it was written: what the spoke
/// expresses wins, and the stash only fills in what the spoke cannot say. So a field only the hub
/// has survives an edit made through an older version.
fn read_stash<L>(value: &str) -> Option<(L, Option<String>)>
where
    L: Default + PartialEq + Serialize + DeserializeOwned,
{
    let stash: Stash<L> = serde_json::from_str(value).ok()?;
    if serde_json::to_string(&stash).ok()? != value {
        return None;
    }
    let empty = stash.lost == L::default();
    match &stash.previous {
        // A stash that carries nothing is not one Tusk writes.
        None if empty => None,
        // Tusk wraps an earlier value with nothing lost only when that value itself reads as a
        // stash; otherwise it would have left the value as it was.
        Some(previous) if empty && read_stash::<L>(previous).is_none() => None,
        _ => Some((stash.lost, stash.previous)),
    }
}

/// Converts a spoke object up to the hub.
pub fn up<'a, HS, HT, S: Spoke<HS, HT>>(object: Object<'a, S::Spec, S::Status>) -> Object<'a, HS, HT> {
    let Object {
        kind,
        mut metadata,
        parts,
    } = object;
    let stash = metadata
        .conversion_annotation()
        .and_then(|value| read_stash::<S::Lost>(&value));
    let Some((lost, previous)) = stash else {
        return Object {
            kind,
            metadata,
            parts: S::apply(parts, S::Lost::default()),
        };
    };
    match previous {
        Some(previous) => metadata.set_conversion_annotation(previous),
        None => metadata.remove_conversion_annotation(),
    }
    Object {
        kind,
        metadata,
        parts: S::apply(parts, lost),
    }
}

/// Converts a hub object down to a spoke, stashing what the spoke cannot express.
pub fn down<'a, HS, HT, S: Spoke<HS, HT>>(object: Object<'a, HS, HT>) -> Object<'a, S::Spec, S::Status> {
    let Object {
        kind,
        mut metadata,
        parts,
    } = object;
    let (parts, lost) = S::split(parts);
    let previous = metadata.conversion_annotation();
    let wrap = lost != S::Lost::default()
        || previous
            .as_deref()
            .is_some_and(|p| read_stash::<S::Lost>(p).is_some());
    if wrap {
        let stash = Stash { lost, previous };
        metadata.set_conversion_annotation(serde_json::to_string(&stash).expect("stash serializes"));
    }
    Object {
        kind,
        metadata,
        parts,
    }
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
type ToHub<HS, HT> =
    for<'a> fn(&Envelope<'a>, &'static str, &Location<'_>) -> Result<Object<'a, HS, HT>, ConversionError>;

/// Takes a hub object to one version and writes it as JSON text with the given `apiVersion` at
/// the end of the buffer.
type FromHub<HS, HT> = fn(Object<'_, HS, HT>, &str, &mut Vec<u8>);

/// How one served version of a kind goes to and comes from the hub.
pub struct Version<HS, HT> {
    /// The version name, for example `v1beta1`.
    pub name: String,
    /// `<group>/<name>`, set when the version joins its [`Kind`].
    api_version: String,
    to_hub: ToHub<HS, HT>,
    from_hub: FromHub<HS, HT>,
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
            api_version: String::new(),
            to_hub: |envelope, kind, at| Object::decode(envelope, kind, at),
            from_hub: |hub, api_version, out| hub.encode(api_version, out),
        }
    }

    /// A spoke version, converted through [`Spoke`].
    pub fn spoke<S: Spoke<HS, HT> + Resource<DynamicType = ()>>() -> Self {
        Self {
            name: S::version(&()).into_owned(),
            api_version: String::new(),
            to_hub: |envelope, kind, at| Ok(up::<HS, HT, S>(Object::decode(envelope, kind, at)?)),
            from_hub: |hub, api_version, out| down::<HS, HT, S>(hub).encode(api_version, out),
        }
    }
}

/// Converts objects of one kind between its versions.
pub trait KindConverter: Send + Sync {
    /// The kind, for example `PostgresCluster`.
    fn kind(&self) -> &'static str;
    /// The versions served, oldest first.
    fn versions(&self) -> Vec<&str>;
    /// Converts one object from version `from` to version `to`, both served, and writes it at
    /// the end of `out`. An object already at `to` is written with each field as it came.
    fn convert(
        &self,
        envelope: &Envelope<'_>,
        from: &str,
        to: &str,
        index: usize,
        out: &mut Vec<u8>,
    ) -> Result<(), ConversionError>;
}

/// A [`KindConverter`] built from a kind's version table.
pub struct Kind<HS, HT> {
    kind: &'static str,
    versions: Vec<Version<HS, HT>>,
}

impl<HS, HT> Kind<HS, HT> {
    /// A kind of `group` whose versions are `versions`, oldest first.
    pub fn new(kind: &'static str, group: &'static str, mut versions: Vec<Version<HS, HT>>) -> Self {
        for version in &mut versions {
            version.api_version = format!("{group}/{}", version.name);
        }
        Self { kind, versions }
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
        envelope: &Envelope<'_>,
        from: &str,
        to: &str,
        index: usize,
        out: &mut Vec<u8>,
    ) -> Result<(), ConversionError> {
        let source = self.version(from, || format!("object {index}"))?;
        let target = self.version(to, || "desiredAPIVersion".to_owned())?;
        if from == to {
            serde_json::to_writer(out, envelope).expect("JSON text serializes");
            return Ok(());
        }
        let at = Location {
            index,
            kind: self.kind,
            version: from,
        };
        let hub = (source.to_hub)(envelope, self.kind, &at)?;
        (target.from_hub)(hub, &target.api_version, out);
        Ok(())
    }
}
