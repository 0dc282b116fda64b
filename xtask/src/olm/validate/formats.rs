//! What the validators accept as a name, an image pull spec and an e-mail address; shared by the
//! bundle checks and the catalog checks.

/// DNS-1123 subdomain, at most 63 characters (a CSV name is also a label value).
pub fn is_dns_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name.split('.').all(|part| {
            !part.is_empty()
                && part
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && !part.starts_with('-')
                && !part.ends_with('-')
        })
}

/// Whether `image` is a pull spec: `[registry/]path[:tag][@sha256:digest]`, lower-case path.
pub fn is_image(image: &str) -> bool {
    let (name, digest) = match image.split_once('@') {
        Some((name, digest)) => (name, Some(digest)),
        None => (image, None),
    };
    if let Some(digest) = digest
        && !(digest.starts_with("sha256:")
            && digest.len() == 71
            && digest[7..].chars().all(|c| c.is_ascii_hexdigit()))
    {
        return false;
    }
    let last = name.rsplit('/').next().unwrap_or_default();
    let (path, tag) = match last.split_once(':') {
        Some((_, tag)) => (&name[..name.len() - tag.len() - 1], Some(tag)),
        None => (name, None),
    };
    if let Some(tag) = tag
        && (tag.is_empty()
            || tag.len() > 128
            || !tag
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c)))
    {
        return false;
    }
    let mut parts = path.split('/').peekable();
    let first = parts.peek().copied().unwrap_or_default();
    let has_registry =
        path.contains('/') && (first.contains('.') || first.contains(':') || first == "localhost");
    if has_registry {
        parts.next();
    }
    let mut any = false;
    for part in parts {
        any = true;
        if part.is_empty()
            || !part
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c))
        {
            return false;
        }
    }
    any
}

pub(super) fn is_email(text: &str) -> bool {
    let Some((local, domain)) = text.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !text.contains(char::is_whitespace)
        && !domain.contains('@')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_images_and_emails() {
        assert!(is_dns_name("tusk-operator.v1.0.0"));
        assert!(!is_dns_name("Tusk_Operator"));
        assert!(!is_dns_name(&"a".repeat(64)));
        assert!(is_image("ghcr.io/tusk-operator/tusk-operator:1.0.0"));
        assert!(is_image(&format!(
            "localhost:5000/tusk@sha256:{}",
            "0".repeat(64)
        )));
        assert!(!is_image("ghcr.io/Tusk/operator:1.0.0"));
        assert!(!is_image("postgres@sha256:abc"));
        assert!(is_email("maintainers@tusk.dev"));
        assert!(!is_email("maintainers@localhost"));
    }
}
