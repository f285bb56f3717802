//! Checking content objects against their names, as `ostree fsck` does, without libostree: an
//! object's checksum is the SHA-256 of its file header — the GVariant `(uuuus a(ayay))` of owner,
//! group and mode (big-endian), rdev 0, symlink target and xattrs, preceded by its length as a
//! big-endian u32 and four zero bytes — followed by its content. Ours hashes with the CPU's SHA
//! instructions (libostree 2022.7 on Debian uses GLib's portable SHA-256, 5× slower) and reads the
//! objects several at a time.

use std::path::Path;

use sha2::{Digest as _, Sha256};

use super::objects::{ObjectInfo, ObjectInfos, object_path};
use crate::error::{Error, Result};

/// Objects checked at once.
const CHECKERS: usize = 4;

/// The serialized file header of an object with `info`.
fn file_header(info: &ObjectInfo) -> Vec<u8> {
    let file_type: u32 = if info.symlink.is_some() {
        0o120000
    } else {
        0o100000
    };
    let mut h = Vec::with_capacity(32 + info.xattrs.len());
    for v in [info.uid, info.gid, info.mode | file_type, 0] {
        h.extend_from_slice(&v.to_be_bytes());
    }
    h.extend_from_slice(info.symlink.as_deref().unwrap_or("").as_bytes());
    h.push(0);
    let string_end = h.len();
    h.extend_from_slice(&info.xattrs);
    // One framing offset (the string's end), as wide as the whole container needs.
    let base = h.len();
    let width = [1usize, 2, 4, 8]
        .into_iter()
        .find(|w| {
            base + w
                <= if *w == 8 {
                    usize::MAX
                } else {
                    (1usize << (8 * w)) - 1
                }
        })
        .unwrap_or(8);
    h.extend_from_slice(&(string_end as u64).to_le_bytes()[..width]);
    h
}

/// The checksum of the object `csum` as stored in the repository at `repo_path`.
fn object_checksum(repo_path: &Path, csum: &str, info: &ObjectInfo) -> std::io::Result<String> {
    let header = file_header(info);
    let mut sha = Sha256::new();
    sha.update(
        u32::try_from(header.len())
            .unwrap_or(u32::MAX)
            .to_be_bytes(),
    );
    sha.update([0u8; 4]);
    sha.update(&header);
    if info.symlink.is_none() {
        let mut f = crate::fsutil::open_regular(None, &object_path(repo_path, csum, "file"))?;
        std::io::copy(&mut f, &mut sha)?;
    }
    Ok(hex::encode(sha.finalize()))
}

fn damaged(repo_path: &Path, csum: &str, why: &str) -> Error {
    Error::InvalidInput(format!(
        "object {csum} in {} is damaged ({why}): run `ostree fsck --delete` and pull the image again",
        repo_path.display()
    ))
}

/// Checks every object of `csums` against its name. A `bare` repository's objects are hashed here;
/// other modes go through libostree's `fsck_object`.
pub fn verify_objects<'c>(
    repo: &ostree::Repo,
    repo_path: &Path,
    csums: impl IntoIterator<Item = &'c String>,
) -> Result<()> {
    let csums: Vec<&String> = csums.into_iter().collect();
    let infos = ObjectInfos::load(repo, repo_path, csums.iter().copied())?;
    if !infos.bare() {
        for csum in csums {
            repo.fsck_object(
                ostree::ObjectType::File,
                csum,
                ostree::gio::Cancellable::NONE,
            )
            .map_err(|e| damaged(repo_path, csum, &e.to_string()))?;
        }
        return Ok(());
    }
    let results = crate::parallel::map_in_order(&csums, CHECKERS, |csum| -> Result<()> {
        let info = infos.get(csum)?;
        let actual = object_checksum(repo_path, csum, info)
            .map_err(|e| damaged(repo_path, csum, &e.to_string()))?;
        if actual != **csum {
            return Err(damaged(
                repo_path,
                csum,
                &format!("its content and metadata hash to {actual}"),
            ));
        }
        Ok(())
    });
    results.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ostree::glib;
    use ostree::glib::prelude::*;

    /// Our header is glib's serialization of the same `(uuuus a(ayay))`, for plain files, symlinks
    /// and objects with xattrs (framing offsets of 1 and 2 bytes).
    #[test]
    fn header_matches_glib() {
        let xattrs = |n: usize| -> Vec<(Vec<u8>, Vec<u8>)> {
            (0..n)
                .map(|i| (format!("user.k{i}\0").into_bytes(), vec![b'v'; i * 40]))
                .collect()
        };
        for (symlink, nx) in [(None, 0), (Some("../lib/x"), 0), (None, 2), (Some("t"), 12)] {
            let xv = xattrs(nx).to_variant();
            let info = ObjectInfo {
                uid: 1000,
                gid: 100,
                mode: 0o755,
                size: 0,
                symlink: symlink.map(str::to_owned),
                xattrs: xv.data().to_vec(),
            };
            let ft: u32 = if symlink.is_some() {
                0o120000
            } else {
                0o100000
            };
            let v = glib::Variant::tuple_from_iter([
                1000u32.to_be().to_variant(),
                100u32.to_be().to_variant(),
                (0o755u32 | ft).to_be().to_variant(),
                0u32.to_variant(),
                symlink.unwrap_or("").to_variant(),
                xv,
            ]);
            assert_eq!(v.type_().as_str(), "(uuuusa(ayay))");
            assert_eq!(file_header(&info), v.data(), "{symlink:?}, {nx} xattrs");
        }
    }
}
