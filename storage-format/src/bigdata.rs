//! File names of big-data items (`<G>/<driver>-images/<imageID>/<name>`, and
//! the same for layers and containers).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

fn is_plain(c: char) -> bool {
    c == '.' || c.is_ascii_digit() || c.is_ascii_lowercase()
}

/// The file name under which the big-data item `key` is stored
/// (c/storage `makeBigDataBaseName`).
///
/// It is `key` itself if every character is in `[.0-9a-z]`; otherwise it is
/// `"="` followed by the standard, padded base64 of the key's bytes.
pub fn big_data_file_name(key: &str) -> String {
    if key.chars().all(is_plain) {
        key.to_owned()
    } else {
        format!("={}", STANDARD.encode(key.as_bytes()))
    }
}

/// The big-data key stored in the file `name`: the inverse of
/// [`big_data_file_name`].
///
/// Returns `None` for a name that no key produces: an empty name, a plain
/// name with characters outside `[.0-9a-z]`, or an `=` name whose base64 is
/// invalid or does not decode to UTF-8.
pub fn big_data_key_from_file_name(name: &str) -> Option<String> {
    if let Some(encoded) = name.strip_prefix('=') {
        let bytes = STANDARD.decode(encoded).ok()?;
        String::from_utf8(bytes).ok()
    } else if !name.is_empty() && name.chars().all(is_plain) {
        Some(name.to_owned())
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CFG: &str = "sha256:315d2a0cc9d2cb2b3c70e0b8e06d9e96bc62ee6ae0bc2cf7e1ad92eb3f8a0e91";
    const MAN: &str =
        "manifest-sha256:d99e66ec2a43fe17dfd6c1a2a2a0f05d0e2bc0e3c3d32d2cf31b1d2a7ae3bd66";
    const SIG: &str = "signature-d99e66ec2a43fe17dfd6c1a2a2a0f05d0e2bc0e3c3d32d2cf31b1d2a7ae3bd66";

    #[test]
    fn names_round_trip() {
        // Expected values: printf %s "$key" | base64 -w0
        let cases: &[(&str, &str)] = &[
            ("manifest", "manifest"),
            ("a", "a"),
            ("v1.2.3", "v1.2.3"),
            (
                CFG,
                "=c2hhMjU2OjMxNWQyYTBjYzlkMmNiMmIzYzcwZTBiOGUwNmQ5ZTk2YmM2MmVlNmFlMGJjMmNmN2UxYWQ5MmViM2Y4YTBlOTE=",
            ),
            (
                MAN,
                "=bWFuaWZlc3Qtc2hhMjU2OmQ5OWU2NmVjMmE0M2ZlMTdkZmQ2YzFhMmEyYTBmMDVkMGUyYmMwZTNjM2QzMmQyY2YzMWIxZDJhN2FlM2JkNjY=",
            ),
            (
                SIG,
                "=c2lnbmF0dXJlLWQ5OWU2NmVjMmE0M2ZlMTdkZmQ2YzFhMmEyYTBmMDVkMGUyYmMwZTNjM2QzMmQyY2YzMWIxZDJhN2FlM2JkNjY=",
            ),
            ("Manifest", "=TWFuaWZlc3Q="),
            ("é", "=w6k="),
        ];
        for (key, name) in cases {
            assert_eq!(big_data_file_name(key), *name, "{key}");
            assert_eq!(
                big_data_key_from_file_name(name).as_deref(),
                Some(*key),
                "{name}"
            );
        }
    }

    #[test]
    fn bad_names() {
        for name in ["", "Manifest", "a b", "=!!!", "=/w=="] {
            assert_eq!(big_data_key_from_file_name(name), None, "{name}");
        }
    }
}
