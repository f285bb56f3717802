//! Cleaning of entry paths the way a chrooted extraction sees them.

/// Splits a tar entry name into clean components, resolving `.` and `..` lexically against a root
/// that `..` cannot climb above (as `filepath.Join("/", name)` does inside c/storage's chroot).
/// Returns the components and whether any `..` tried to climb above the root.
pub(crate) fn clean_components(name: &[u8]) -> (Vec<&[u8]>, bool) {
    let mut out: Vec<&[u8]> = Vec::new();
    let mut escaped = false;
    for comp in name.split(|&b| b == b'/') {
        match comp {
            b"" | b"." => {}
            b".." => {
                if out.pop().is_none() {
                    escaped = true;
                }
            }
            c => out.push(c),
        }
    }
    (out, escaped)
}

/// Joins components with `/`.
pub fn join(components: &[&[u8]]) -> Vec<u8> {
    components.join(&b'/')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleaning() {
        let cases: &[(&[u8], &[u8], bool)] = &[
            (b"./a/b/", b"a/b", false),
            (b"a/../b", b"b", false),
            (b"../../etc/passwd", b"etc/passwd", true),
            (b"/abs//x/./y", b"abs/x/y", false),
            (b"./", b"", false),
        ];
        for (input, want, esc) in cases {
            let (c, e) = clean_components(input);
            assert_eq!(join(&c), *want, "{}", String::from_utf8_lossy(input));
            assert_eq!(e, *esc);
        }
    }
}
