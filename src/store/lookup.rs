//! Finding an image by the name a user typed, as podman does: full name, short name, or ID prefix.

use storage_format::ImageRecord;

use crate::error::{Error, Result};
use crate::reference::normalize;

/// Finds the image `name` among `images`. Accepts a full or short name (`busybox`, `me/app:1`), an image
/// ID or a unique ID prefix (at least 3 hex digits), or `name@sha256:…` by manifest digest.
pub fn find_image<'a>(images: &'a [ImageRecord], name: &str) -> Result<&'a ImageRecord> {
    let not_found = || {
        Error::not_found(
            name.to_string(),
            format!("image {name:?} is not in the store: check `podman images` (or pull it first)"),
        )
    };
    // ID or ID prefix.
    let is_hex = name.len() >= 3
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase());
    if is_hex {
        let hits: Vec<&ImageRecord> = images.iter().filter(|i| i.id.starts_with(name)).collect();
        match hits.as_slice() {
            [one] => return Ok(one),
            [] => {}
            many => return Err(ambiguous(name, many)),
        }
    }
    if let Some((repo, digest)) = name.split_once('@') {
        let hits: Vec<&ImageRecord> = images
            .iter()
            .filter(|i| {
                i.digest.as_deref() == Some(digest)
                    || i.big_data_digests
                        .values()
                        .any(|d| d.as_str() == Some(digest))
            })
            .filter(|i| i.names.iter().any(|n| repo_of(n).ends_with(repo)))
            .collect();
        return match hits.as_slice() {
            [one] => Ok(one),
            [] => Err(not_found()),
            many => Err(ambiguous(name, many)),
        };
    }
    if let Ok(full) = normalize(name)
        && let Some(img) = images.iter().find(|i| i.names.contains(&full))
    {
        return Ok(img);
    }
    // A short name: match "…/NAME:TAG" for any registry, as podman does for local images.
    let suffix = short_name_suffix(name);
    let hits: Vec<&ImageRecord> = images
        .iter()
        .filter(|i| i.names.iter().any(|n| n.ends_with(&suffix)))
        .collect();
    match hits.as_slice() {
        [one] => Ok(one),
        [] => Err(not_found()),
        many => Err(ambiguous(name, many)),
    }
}

/// The full name of `img` that `typed` (as [`find_image`] took it) stands for; `None` when it
/// named the image by ID or digest.
pub fn matched_name(img: &ImageRecord, typed: &str) -> Option<String> {
    if typed.contains('@') || img.id.starts_with(typed) {
        return None;
    }
    if let Ok(full) = normalize(typed)
        && img.names.contains(&full)
    {
        return Some(full);
    }
    let suffix = short_name_suffix(typed);
    img.names.iter().find(|n| n.ends_with(&suffix)).cloned()
}

/// What a full name ends with when `short` (`busybox`, `me/app:1`) names it: `/NAME:TAG`, with
/// `:latest` when no tag is given.
fn short_name_suffix(short: &str) -> String {
    if short.rsplit('/').next().is_some_and(|l| l.contains(':')) {
        format!("/{short}")
    } else {
        format!("/{short}:latest")
    }
}

fn repo_of(name: &str) -> &str {
    let last_slash = name.rfind('/').map(|i| i + 1).unwrap_or(0);
    match name[last_slash..].find(':') {
        Some(i) => &name[..last_slash + i],
        None => name,
    }
}

fn ambiguous(name: &str, hits: &[&ImageRecord]) -> Error {
    let list: Vec<String> = hits
        .iter()
        .map(|i| {
            i.names
                .first()
                .cloned()
                .unwrap_or_else(|| i.id[..12.min(i.id.len())].to_string())
        })
        .collect();
    Error::InvalidInput(format!(
        "image name {name:?} is ambiguous: it matches {}; use the full name",
        list.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn img(id: &str, names: &[&str]) -> ImageRecord {
        ImageRecord {
            id: id.into(),
            names: names.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn lookup() {
        let images = vec![
            img("aaa111", &["docker.io/library/busybox:latest"]),
            img("bbb222", &["quay.io/x/app:1", "localhost/app:latest"]),
            img("ccc333", &["quay.io/y/app:1"]),
        ];
        assert_eq!(find_image(&images, "busybox").unwrap().id, "aaa111");
        assert_eq!(find_image(&images, "localhost/app").unwrap().id, "bbb222");
        assert_eq!(find_image(&images, "app").unwrap().id, "bbb222");
        assert_eq!(find_image(&images, "bbb").unwrap().id, "bbb222");
        assert!(matches!(
            find_image(&images, "app:1"),
            Err(Error::InvalidInput(_))
        ));
        assert!(matches!(
            find_image(&images, "nope"),
            Err(Error::NotFound { .. })
        ));
    }
}
