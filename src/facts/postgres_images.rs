//! The PostgreSQL image catalog, `config/postgres-images.yaml`: the image a cluster runs when it
//! names none, one per major, each at a full minor version and, once read from the registry, a
//! digest. The operator binary carries the file as its default; the generator writes it into the
//! CSV.

use std::{collections::BTreeMap, sync::LazyLock};

use serde::Deserialize;

/// Where the catalog lives, relative to the repository root.
pub const FILE: &str = "config/postgres-images.yaml";

/// The catalog this binary was built with.
pub static BUILT_IN: LazyLock<Catalog> = LazyLock::new(|| {
    Catalog::parse(include_str!("../../config/postgres-images.yaml"))
        .unwrap_or_else(|e| panic!("{FILE}: {e}"))
});

/// The whole catalog.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Catalog {
    /// The image repository, without tag or digest.
    pub repository: String,
    /// One entry per major version.
    pub images: Vec<Entry>,
}

/// One major's image.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Entry {
    /// The major version.
    pub major: i32,
    /// The full version, `<major>.<minor>`: the image's tag.
    pub version: String,
    /// `sha256:<64 hex digits>`, as the registry reported it.
    #[serde(default)]
    pub digest: Option<String>,
}

impl Entry {
    /// The image reference: by digest once one is recorded, by its full-version tag until then.
    pub fn reference(&self, repository: &str) -> String {
        match &self.digest {
            Some(digest) => format!("{repository}@{digest}"),
            None => format!("{repository}:{}", self.version),
        }
    }
}

impl Catalog {
    /// Parses and checks a catalog.
    pub fn parse(text: &str) -> Result<Self, String> {
        let catalog: Catalog = serde_saphyr::from_str(text).map_err(|e| e.to_string())?;
        let mut errors = Vec::new();
        if catalog.repository.is_empty() || catalog.repository.contains(['@', ' ']) {
            errors.push(format!(
                "repository: {:?} is not an image repository (a name without tag or digest)",
                catalog.repository
            ));
        }
        let mut seen = BTreeMap::new();
        for (i, entry) in catalog.images.iter().enumerate() {
            if let Some(first) = seen.insert(entry.major, i) {
                errors.push(format!(
                    "images[{i}].major: {} is also images[{first}]'s",
                    entry.major
                ));
            }
            let parts: Vec<&str> = entry.version.split('.').collect();
            let numeric = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
            if parts.len() != 2 || !parts.iter().all(|p| numeric(p)) || parts[0] != entry.major.to_string() {
                errors.push(format!(
                    "images[{i}].version: {:?} is not a full version of major {}: write `{}.<minor>`",
                    entry.version, entry.major, entry.major
                ));
            }
            if let Some(digest) = &entry.digest
                && !is_digest(digest)
            {
                errors.push(format!(
                    "images[{i}].digest: {digest:?} is not `sha256:` and 64 lowercase hex digits"
                ));
            }
        }
        if errors.is_empty() {
            Ok(catalog)
        } else {
            Err(errors.join("; "))
        }
    }

    /// Each major's image reference.
    pub fn references(&self) -> BTreeMap<i32, String> {
        self.images
            .iter()
            .map(|e| (e.major, e.reference(&self.repository)))
            .collect()
    }

    /// The `--postgres-images` value that names every entry: `15=<image>,16=<image>`.
    pub fn flag_value(&self) -> String {
        self.references()
            .iter()
            .map(|(major, image)| format!("{major}={image}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Whether every entry is pinned by digest.
    pub fn pinned(&self) -> bool {
        self.images.iter().all(|e| e.digest.is_some())
    }
}

/// Parses a `--postgres-images` value, `15=<image>,16=<image>`.
pub fn parse_flag(value: &str) -> Result<BTreeMap<i32, String>, String> {
    let mut images = BTreeMap::new();
    for item in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let Some((major, image)) = item.split_once('=') else {
            return Err(format!("{item:?} is not `<major>=<image>`"));
        };
        let major: i32 = major
            .trim()
            .parse()
            .map_err(|_| format!("{item:?}: the major version {major:?} is not a number"))?;
        let image = image.trim();
        if image.is_empty() {
            return Err(format!("{item:?}: no image for major {major}"));
        }
        if images.insert(major, image.to_owned()).is_some() {
            return Err(format!("major {major} is named twice"));
        }
    }
    Ok(images)
}

/// `sha256:` and 64 lowercase hex digits.
pub fn is_digest(text: &str) -> bool {
    text.strip_prefix("sha256:")
        .is_some_and(|hex| hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_catalog_parses_and_pins_full_versions() {
        let catalog = &*BUILT_IN;
        assert!(!catalog.images.is_empty());
        for (major, image) in catalog.references() {
            let entry = catalog.images.iter().find(|e| e.major == major).unwrap();
            assert!(
                image.ends_with(&format!(":{}", entry.version)) || image.contains("@sha256:"),
                "{image}"
            );
            assert_ne!(image, format!("{}:{major}", catalog.repository), "a floating tag");
        }
    }

    #[test]
    fn bad_entries_are_refused_with_the_field() {
        let refused = |text: &str| Catalog::parse(text).unwrap_err();
        let e = refused("repository: r\nimages:\n  - {major: 15, version: \"15\"}\n");
        assert!(e.contains("images[0].version") && e.contains("15.<minor>"), "{e}");
        let e = refused("repository: r\nimages:\n  - {major: 15, version: \"16.1\"}\n");
        assert!(e.contains("images[0].version"), "{e}");
        let e = refused("repository: r\nimages:\n  - {major: 15, version: \"15.1\", digest: sha256:abc}\n");
        assert!(e.contains("images[0].digest"), "{e}");
        let e = refused(
            "repository: r\nimages:\n  - {major: 15, version: \"15.1\"}\n  - {major: 15, version: \"15.2\"}\n",
        );
        assert!(e.contains("images[1].major"), "{e}");
        let e = refused("repository: r:15\nimages: []\nextra: 1\n");
        assert!(e.contains("extra"), "{e}");
    }

    #[test]
    fn a_digest_wins_over_the_tag() {
        let digest = format!("sha256:{}", "a".repeat(64));
        let catalog = Catalog::parse(&format!(
            "repository: r\nimages:\n  - {{major: 15, version: \"15.1\", digest: \"{digest}\"}}\n  - {{major: 16, version: \"16.2\"}}\n"
        ))
        .unwrap();
        assert_eq!(catalog.flag_value(), format!("15=r@{digest},16=r:16.2"));
        assert!(!catalog.pinned());
        assert_eq!(parse_flag(&catalog.flag_value()).unwrap(), catalog.references());
    }

    #[test]
    fn the_flag_refuses_what_it_cannot_read() {
        assert!(parse_flag("15").unwrap_err().contains("<major>=<image>"));
        assert!(parse_flag("x=img").unwrap_err().contains("not a number"));
        assert!(parse_flag("15=").unwrap_err().contains("no image"));
        assert!(parse_flag("15=a,15=b").unwrap_err().contains("twice"));
        assert_eq!(parse_flag("").unwrap(), BTreeMap::new());
    }
}
