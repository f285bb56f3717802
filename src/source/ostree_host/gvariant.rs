//! OSTree's directory objects read straight from their serialized GVariant bytes: a `.dirtree`
//! (`(a(say)a(sayay))`: files with their content checksums, then subdirectories with their tree and
//! meta checksums) and a `.dirmeta` (`(uuua(ayay))`: big-endian uid, gid, mode, then xattrs). Every
//! offset is bounds-checked; anything malformed is an error naming the object, never a panic.

use crate::error::{Error, Result};

/// A file entry of a dirtree: name and content checksum (hex).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeFile {
    /// Entry name.
    pub name: String,
    /// Content object checksum.
    pub checksum: String,
}

/// A subdirectory entry of a dirtree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeDir {
    /// Entry name.
    pub name: String,
    /// Its dirtree checksum.
    pub tree: String,
    /// Its dirmeta checksum.
    pub meta: String,
}

/// A parsed dirtree.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DirTree {
    /// Files, in the object's (sorted) order.
    pub files: Vec<TreeFile>,
    /// Subdirectories, in the object's (sorted) order.
    pub dirs: Vec<TreeDir>,
}

/// A parsed dirmeta.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DirMeta {
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Mode, file type bits included.
    pub mode: u32,
}

fn bad(what: &str) -> Error {
    Error::InvalidInput(format!(
        "{what} is not a valid serialized object (the repository may be damaged: run ostree fsck)"
    ))
}

/// Size of a framing offset in a container of `len` bytes.
fn offset_size(len: usize) -> usize {
    match len {
        0 => 0,
        1..=0xff => 1,
        0x100..=0xffff => 2,
        0x1_0000..=0xffff_ffff => 4,
        _ => 8,
    }
}

/// The little-endian framing offset at `at` (of `size` bytes) in `data`.
fn read_offset(data: &[u8], at: usize, size: usize) -> Option<usize> {
    let b = data.get(at..at.checked_add(size)?)?;
    let mut v = 0u64;
    for (i, byte) in b.iter().enumerate() {
        v |= u64::from(*byte) << (8 * i);
    }
    usize::try_from(v).ok()
}

/// Splits a tuple of variable-size members (alignment 1) into its members: every member but the
/// last has its end recorded in the framing offsets at the tuple's end, last member's offset last.
fn tuple_members(data: &[u8], members: usize) -> Option<Vec<&[u8]>> {
    let osz = offset_size(data.len());
    let framing = osz.checked_mul(members - 1)?;
    let body_end = data.len().checked_sub(framing)?;
    let mut out = Vec::with_capacity(members);
    let mut start = 0usize;
    for i in 0..members - 1 {
        let end = read_offset(data, data.len() - osz * (i + 1), osz)?;
        if end < start || end > body_end {
            return None;
        }
        out.push(&data[start..end]);
        start = end;
    }
    out.push(data.get(start..body_end)?);
    Some(out)
}

/// Splits an array of variable-size elements (alignment 1) into its elements.
fn array_elements(data: &[u8]) -> Option<Vec<&[u8]>> {
    if data.is_empty() {
        return Some(Vec::new());
    }
    let osz = offset_size(data.len());
    let last_end = read_offset(data, data.len() - osz, osz)?;
    let table = data.len().checked_sub(last_end)?;
    if last_end > data.len() || table % osz != 0 {
        return None;
    }
    let n = table / osz;
    let mut out = Vec::with_capacity(n);
    let mut start = 0usize;
    for i in 0..n {
        let end = read_offset(data, last_end + i * osz, osz)?;
        if end < start || end > last_end {
            return None;
        }
        out.push(&data[start..end]);
        start = end;
    }
    Some(out)
}

/// A serialized `s`: UTF-8 bytes and a terminating nul.
fn string(data: &[u8]) -> Option<String> {
    let (nul, body) = data.split_last()?;
    if *nul != 0 || body.contains(&0) {
        return None;
    }
    String::from_utf8(body.to_vec()).ok()
}

/// A dirtree entry name, as libostree validates one (`ot_util_filename_validate`): not empty, not
/// `.` or `..`, no `/`. Anything else would make a path outside its directory.
fn file_name(data: &[u8]) -> Option<String> {
    let n = string(data)?;
    (!n.is_empty() && n != "." && n != ".." && !n.contains('/')).then_some(n)
}

/// A 32-byte checksum as hex.
fn checksum(data: &[u8]) -> Option<String> {
    (data.len() == 32).then(|| hex::encode(data))
}

/// Parses a dirtree object's bytes; `what` names it in errors.
pub fn parse_dirtree(data: &[u8], what: &str) -> Result<DirTree> {
    let parse = || -> Option<DirTree> {
        let top = tuple_members(data, 2)?;
        let mut tree = DirTree::default();
        for e in array_elements(top[0])? {
            let m = tuple_members(e, 2)?;
            tree.files.push(TreeFile {
                name: file_name(m[0])?,
                checksum: checksum(m[1])?,
            });
        }
        for e in array_elements(top[1])? {
            let m = tuple_members(e, 3)?;
            tree.dirs.push(TreeDir {
                name: file_name(m[0])?,
                tree: checksum(m[1])?,
                meta: checksum(m[2])?,
            });
        }
        Some(tree)
    };
    parse().ok_or_else(|| bad(what))
}

/// Parses a dirmeta object's bytes; `what` names it in errors.
pub fn parse_dirmeta(data: &[u8], what: &str) -> Result<DirMeta> {
    let word = |i: usize| -> Option<u32> {
        let b: [u8; 4] = data.get(i * 4..i * 4 + 4)?.try_into().ok()?;
        Some(u32::from_be_bytes(b))
    };
    match (word(0), word(1), word(2)) {
        (Some(uid), Some(gid), Some(mode)) => Ok(DirMeta { uid, gid, mode }),
        _ => Err(bad(what)),
    }
}

/// The root dirtree and dirmeta checksums (hex) of a commit object's bytes
/// (`(a{sv}aya(say)sstayay)`: metadata, parent, related, subject, body, timestamp, root tree, root
/// meta). `None` when malformed.
pub fn parse_commit_root(data: &[u8]) -> Option<(String, String)> {
    let n = data.len();
    let osz = offset_size(n);
    // Six variable-size members precede the last one; their ends are stored last-first at the end.
    let end_of = |k: usize| read_offset(data, n.checked_sub(osz * (k + 1))?, osz);
    let body_end = end_of(4)?;
    // The timestamp (`t`) is 8-aligned and 8 bytes long; the root tree follows it.
    let tree_start = body_end.checked_add(7)? / 8 * 8 + 8;
    let tree_end = end_of(5)?;
    let meta_end = n.checked_sub(osz * 6)?;
    if tree_start > tree_end || tree_end > meta_end {
        return None;
    }
    Some((
        checksum(&data[tree_start..tree_end])?,
        checksum(&data[tree_end..meta_end])?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ostree::glib::prelude::*;

    fn sum(b: u8) -> [u8; 32] {
        [b; 32]
    }

    /// Our parser agrees with glib's on dirtrees glib serialized, small and large (framing offsets of
    /// 1, 2 and 4 bytes).
    #[test]
    fn dirtree_matches_glib() {
        for (files, dirs) in [
            (0usize, 0usize),
            (1, 0),
            (0, 1),
            (3, 2),
            (300, 40),
            (3000, 500),
        ] {
            let f: Vec<(String, Vec<u8>)> = (0..files)
                .map(|i| (format!("file-{i}"), sum(i as u8).to_vec()))
                .collect();
            let d: Vec<(String, Vec<u8>, Vec<u8>)> = (0..dirs)
                .map(|i| {
                    (
                        format!("dir-{i}"),
                        sum(i as u8).to_vec(),
                        sum(!(i as u8)).to_vec(),
                    )
                })
                .collect();
            let v = (f.clone(), d.clone()).to_variant();
            assert_eq!(v.type_().as_str(), "(a(say)a(sayay))");
            let parsed = parse_dirtree(v.data(), "test").expect("parses");
            assert_eq!(parsed.files.len(), files);
            assert_eq!(parsed.dirs.len(), dirs);
            for (p, (n, c)) in parsed.files.iter().zip(&f) {
                assert_eq!(&p.name, n);
                assert_eq!(p.checksum, hex::encode(c));
            }
            for (p, (n, t, m)) in parsed.dirs.iter().zip(&d) {
                assert_eq!(&p.name, n);
                assert_eq!(p.tree, hex::encode(t));
                assert_eq!(p.meta, hex::encode(m));
            }
        }
    }

    #[test]
    fn dirmeta_is_big_endian() {
        let xattrs: Vec<(Vec<u8>, Vec<u8>)> = vec![(b"user.a\0".to_vec(), b"b".to_vec())];
        let v = (1000u32.to_be(), 100u32.to_be(), 0o40755u32.to_be(), xattrs).to_variant();
        let m = parse_dirmeta(v.data(), "test").expect("parses");
        assert_eq!(
            m,
            DirMeta {
                uid: 1000,
                gid: 100,
                mode: 0o40755
            }
        );
    }

    /// A commit glib serialized: our reader finds the root tree and meta.
    #[test]
    fn commit_root_matches_glib() {
        for (subject, body, meta_entries) in
            [("", "", 0usize), ("s", "a longer body", 3), ("x", "", 40)]
        {
            let dict = ostree::glib::VariantDict::new(None);
            for i in 0..meta_entries {
                dict.insert_value(&format!("key{i}"), &"value".repeat(i + 1).to_variant());
            }
            let related: Vec<(String, Vec<u8>)> = vec![("r".into(), sum(9).to_vec())];
            let v = ostree::glib::Variant::tuple_from_iter([
                dict.end(),
                sum(1).to_vec().to_variant(),
                related.to_variant(),
                subject.to_variant(),
                body.to_variant(),
                1_700_000_000u64.to_be().to_variant(),
                sum(2).to_vec().to_variant(),
                sum(3).to_vec().to_variant(),
            ]);
            assert_eq!(v.type_().as_str(), "(a{sv}aya(say)sstayay)");
            assert_eq!(
                parse_commit_root(v.data()),
                Some((hex::encode(sum(2)), hex::encode(sum(3)))),
                "subject {subject:?}, body {body:?}, {meta_entries} metadata entries"
            );
            let d = v.data();
            for cut in 0..d.len() {
                let _ = parse_commit_root(&d[..cut]);
            }
        }
    }

    /// Truncated or garbled bytes are errors, never panics.
    #[test]
    fn malformed_is_an_error() {
        let v = (
            vec![("a".to_string(), sum(1).to_vec())],
            Vec::<(String, Vec<u8>, Vec<u8>)>::new(),
        )
            .to_variant();
        let data = v.data().to_vec();
        for cut in 0..data.len() {
            let _ = parse_dirtree(&data[..cut], "cut");
        }
        for i in 0..data.len() {
            let mut d = data.clone();
            d[i] ^= 0xff;
            let _ = parse_dirtree(&d, "flipped");
        }
        assert!(parse_dirmeta(&[0; 11], "short").is_err());
    }

    /// Names libostree refuses (found by the gvariant fuzz target: "/in" parsed) are refused: a
    /// dirtree may not name a path outside its directory.
    #[test]
    fn names_that_leave_the_directory_are_refused() {
        for bad in ["/in", "..", ".", "", "a/b", "../etc"] {
            let files = (
                vec![(bad.to_string(), sum(1).to_vec())],
                Vec::<(String, Vec<u8>, Vec<u8>)>::new(),
            )
                .to_variant();
            assert!(parse_dirtree(files.data(), "t").is_err(), "file {bad:?}");
            let dirs = (
                Vec::<(String, Vec<u8>)>::new(),
                vec![(bad.to_string(), sum(1).to_vec(), sum(2).to_vec())],
            )
                .to_variant();
            assert!(parse_dirtree(dirs.data(), "t").is_err(), "dir {bad:?}");
        }
    }
}
