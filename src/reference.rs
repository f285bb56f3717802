//! Image names as podman normalizes them (`foo` → `docker.io/library/foo:latest`).

use crate::error::{Error, Result};

/// Normalizes an image name the way c/image's `reference.ParseNormalizedNamed` + `TagNameOnly` do.
pub fn normalize(name: &str) -> Result<String> {
    let bad = || {
        Error::InvalidInput(format!(
            "invalid image name {name:?}: use e.g. localhost/name:tag"
        ))
    };
    if name.is_empty() || name.chars().any(char::is_whitespace) {
        return Err(bad());
    }
    let (rest, digest) = match name.split_once('@') {
        Some((r, d)) => (r, Some(d)),
        None => (name, None),
    };
    // The tag is after the last ':' that follows the last '/'.
    let last_slash = rest.rfind('/').map(|i| i + 1).unwrap_or(0);
    let (repo, tag) = match rest[last_slash..].rfind(':') {
        Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
        None => (rest, None),
    };
    if repo.is_empty() || repo.chars().any(|c| c.is_ascii_uppercase()) {
        return Err(bad());
    }
    let first = repo.split('/').next().unwrap_or("");
    let has_domain =
        repo.contains('/') && (first.contains('.') || first.contains(':') || first == "localhost");
    let mut full = if has_domain {
        repo.to_string()
    } else if repo.contains('/') {
        format!("docker.io/{repo}")
    } else {
        format!("docker.io/library/{repo}")
    };
    if let Some(t) = tag {
        if t.is_empty()
            || !t
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
        {
            return Err(bad());
        }
        full.push(':');
        full.push_str(t);
    }
    match digest {
        Some(d) => {
            storage_format::Digest::parse(d).map_err(|_| bad())?;
            full.push('@');
            full.push_str(d);
        }
        None if tag.is_none() => full.push_str(":latest"),
        None => {}
    }
    Ok(full)
}

#[cfg(test)]
mod tests {
    use super::normalize;

    #[test]
    fn names() {
        let cases = [
            ("localhost/bootc", "localhost/bootc:latest"),
            ("busybox", "docker.io/library/busybox:latest"),
            ("quay.io/a/b:1.0", "quay.io/a/b:1.0"),
            ("me/app:v1", "docker.io/me/app:v1"),
            ("localhost:5000/x", "localhost:5000/x:latest"),
        ];
        for (i, want) in cases {
            assert_eq!(normalize(i).unwrap(), want, "{i}");
        }
        assert!(normalize("Upper/Case").is_err());
        assert!(normalize("").is_err());
    }
}
