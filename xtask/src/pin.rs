//! `cargo xtask pin-postgres`: records in `config/postgres-images.yaml` the digest the registry
//! serves for each entry's `<repository>:<version>` (for a multi-architecture image, its index),
//! so that clusters and the CSV reference the image by digest. The digest is only ever read from
//! the registry: an entry that already has one keeps it, and nothing is written unless every
//! entry resolved.

use std::path::Path;

use tusk::facts::postgres_images::{Catalog, FILE, is_digest};

/// Reads every missing digest from the registry and writes them into `root`'s catalog; returns
/// what it recorded, `(major, reference, digest)`.
pub async fn pin_postgres(root: &Path, plain_http: bool) -> Result<Vec<(i32, String, String)>, String> {
    let path = root.join(FILE);
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{FILE}: {e}"))?;
    let catalog = Catalog::parse(&text).map_err(|e| format!("{FILE}: {e}"))?;
    let (client, auth) = crate::images::registry_client(plain_http);
    let mut pinned = Vec::new();
    for entry in catalog.images.iter().filter(|e| e.digest.is_none()) {
        let tagged = format!("{}:{}", catalog.repository, entry.version);
        let reference: oci_client::Reference = tagged.parse().map_err(|e| format!("{tagged}: {e}"))?;
        let digest = client
            .fetch_manifest_digest(&reference, &auth)
            .await
            .map_err(|e| format!("{tagged}: reading its digest from the registry: {e}"))?;
        if !is_digest(&digest) {
            return Err(format!(
                "{tagged}: the registry answered {digest:?}, not a sha256 digest"
            ));
        }
        pinned.push((entry.major, tagged, digest));
    }
    let mut text = text;
    for (major, _, digest) in &pinned {
        text = with_digest(&text, *major, digest)?;
    }
    let after = Catalog::parse(&text).map_err(|e| format!("{FILE} after pinning: {e}"))?;
    for (major, tagged, digest) in &pinned {
        let entry = after.images.iter().find(|e| e.major == *major);
        if entry.and_then(|e| e.digest.as_deref()) != Some(digest.as_str()) {
            return Err(format!(
                "{FILE}: {tagged} was not recorded as {digest}; edit it by hand"
            ));
        }
    }
    if !pinned.is_empty() {
        std::fs::write(&path, text).map_err(|e| format!("{FILE}: {e}"))?;
    }
    Ok(pinned)
}

/// `text` with `digest: <digest>` added to the entry of `major` (`  - major: N` and its indented
/// lines), keeping every other line and comment.
pub fn with_digest(text: &str, major: i32, digest: &str) -> Result<String, String> {
    let lines: Vec<&str> = text.lines().collect();
    let start = lines
        .iter()
        .position(|l| l.trim_start().strip_prefix("- major:").map(str::trim) == Some(&major.to_string()))
        .ok_or_else(|| format!("{FILE}: no `- major: {major}` entry"))?;
    let indent = lines[start].len() - lines[start].trim_start().len() + 2;
    let mut end = start + 1;
    while end < lines.len()
        && lines[end].len() - lines[end].trim_start().len() >= indent
        && !lines[end].trim().is_empty()
    {
        end += 1;
    }
    if lines[start..end]
        .iter()
        .any(|l| l.trim_start().starts_with("digest:"))
    {
        return Err(format!("{FILE}: major {major} already has a digest"));
    }
    let mut out: Vec<String> = lines[..end].iter().map(|l| (*l).to_owned()).collect();
    out.push(format!("{}digest: {digest}", " ".repeat(indent)));
    out.extend(lines[end..].iter().map(|l| (*l).to_owned()));
    Ok(out.join("\n") + "\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_digest_joins_its_entry_and_nothing_else_moves() {
        let text = "# c\nrepository: r\nimages:\n  - major: 15\n    version: \"15.2\"\n  - major: 16\n    version: \"16.1\"\n";
        let digest = format!("sha256:{}", "b".repeat(64));
        let out = with_digest(text, 15, &digest).unwrap();
        assert_eq!(
            out,
            format!(
                "# c\nrepository: r\nimages:\n  - major: 15\n    version: \"15.2\"\n    digest: {digest}\n  - major: 16\n    version: \"16.1\"\n"
            )
        );
        let catalog = Catalog::parse(&out).unwrap();
        assert_eq!(catalog.images[0].digest.as_deref(), Some(digest.as_str()));
        assert_eq!(catalog.images[1].digest, None);
        assert!(
            with_digest(&out, 15, &digest)
                .unwrap_err()
                .contains("already has a digest")
        );
        assert!(
            with_digest(text, 17, &digest)
                .unwrap_err()
                .contains("no `- major: 17`")
        );
    }
}
