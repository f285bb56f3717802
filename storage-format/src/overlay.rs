//! overlay driver naming: link ids (`<G>/overlay/l/<link>`) and `lower` files.

/// The directory of the driver home holding the short symlinks
/// (`l/<link> -> ../<layer id>/diff`).
pub const LINK_DIR: &str = "l";

const BASE32: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
pub(crate) const LINK_ID_LEN: usize = 26;

/// Encodes `data` in standard base32 without padding.
pub(crate) fn base32(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(5) * 8);
    let mut acc: u32 = 0;
    let mut bits = 0;
    for &b in data {
        acc = (acc << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(char::from(BASE32[((acc >> bits) & 31) as usize]));
        }
        acc &= (1 << bits) - 1;
    }
    if bits > 0 {
        out.push(char::from(BASE32[((acc << (5 - bits)) & 31) as usize]));
    }
    out
}

/// The content of a child layer's `lower` file: `"l/<parent_link>"`,
/// followed by `":"` and the parent's own `lower` content if it has one
/// (nearest parent first).
pub fn lower_chain(parent_link: &str, parent_lower: Option<&str>) -> String {
    match parent_lower {
        Some(lower) if !lower.is_empty() => format!("{LINK_DIR}/{parent_link}:{lower}"),
        _ => format!("{LINK_DIR}/{parent_link}"),
    }
}

/// The entries of a `lower` file's content (e.g. `["l/ABC", "l/DEF"]`),
/// nearest parent first. Surrounding whitespace and empty entries are
/// ignored.
pub fn parse_lower(s: &str) -> Vec<String> {
    s.trim()
        .split(':')
        .filter(|e| !e.is_empty())
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base32_known_values() {
        // printf %s "$x" | base32 (padding removed)
        let cases: &[(&[u8], &str)] = &[
            (b"", ""),
            (b"f", "MY"),
            (b"fo", "MZXQ"),
            (b"foo", "MZXW6"),
            (b"foob", "MZXW6YQ"),
            (b"fooba", "MZXW6YTB"),
            (b"foobar", "MZXW6YTBOI"),
            (&[0xff; 17], "777777777777777777777777777Q"),
        ];
        for (data, want) in cases {
            assert_eq!(base32(data), *want, "{data:?}");
        }
    }

    #[test]
    fn link_ids() {
        let a = crate::new_link_id();
        let b = crate::new_link_id();
        for id in [&a, &b] {
            assert_eq!(id.len(), 26, "{id}");
            assert!(id.bytes().all(|c| BASE32.contains(&c)), "{id}");
        }
        assert_ne!(a, b);
    }

    #[test]
    fn lower_chains() {
        let cases: &[(&str, Option<&str>, &str)] = &[
            ("AAA", None, "l/AAA"),
            ("AAA", Some(""), "l/AAA"),
            ("BBB", Some("l/AAA"), "l/BBB:l/AAA"),
            ("CCC", Some("l/BBB:l/AAA"), "l/CCC:l/BBB:l/AAA"),
        ];
        for (link, lower, want) in cases {
            assert_eq!(lower_chain(link, *lower), *want);
        }
        // Three layers built up one after the other.
        let l2 = lower_chain("L1", None);
        let l3 = lower_chain("L2", Some(&l2));
        assert_eq!(l3, "l/L2:l/L1");
        assert_eq!(parse_lower(&l3), ["l/L2", "l/L1"]);
    }

    #[test]
    fn parse_lowers() {
        let cases: &[(&str, &[&str])] = &[
            ("", &[]),
            ("l/A", &["l/A"]),
            ("l/A:l/B", &["l/A", "l/B"]),
            ("l/A:l/B\n", &["l/A", "l/B"]),
            ("l/A::l/B:", &["l/A", "l/B"]),
        ];
        for (input, want) in cases {
            assert_eq!(parse_lower(input), *want, "{input:?}");
        }
    }
}
