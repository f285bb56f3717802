//! Layer and image ID derivation (the rule c/image uses when it writes to
//! containers-storage).

use sha2::{Digest as _, Sha256};

use crate::digest::Digest;

/// The ID of a layer whose uncompressed digest (DiffID) is `diff_id`, on top
/// of the layer with ID `parent`.
///
/// A base layer's ID is the DiffID's hex. A child's ID is
/// `hex(sha256(parent + "+" + diff_id.hex()))` (a string hash, not the OCI
/// ChainID formula).
pub fn layer_id(parent: Option<&str>, diff_id: &Digest) -> String {
    match parent {
        None => diff_id.hex().to_owned(),
        Some(parent) => {
            let mut h = Sha256::new();
            h.update(parent.as_bytes());
            h.update(b"+");
            h.update(diff_id.hex().as_bytes());
            hex::encode(h.finalize())
        }
    }
}

/// The ID of an image (schema2 / OCI): the hex of its config digest.
pub fn image_id(config_digest: &Digest) -> String {
    config_digest.hex().to_owned()
}

/// Whether `id` has the form of a layer or image ID (64 lowercase hex digits), so it is safe as a
/// file name in the store.
pub fn is_valid_id(id: &str) -> bool {
    id.len() == 64
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    // printf '' | sha256sum, printf 'abc' | sha256sum
    const EMPTY: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    const ABC: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

    #[test]
    fn layer_ids() {
        let empty = Digest::parse(&format!("sha256:{EMPTY}")).unwrap();
        let abc = Digest::parse(&format!("sha256:{ABC}")).unwrap();
        let cases: &[(Option<&str>, &Digest, &str)] = &[
            // Base layer: the DiffID itself.
            (None, &empty, EMPTY),
            (None, &abc, ABC),
            // printf 'parent+e3b0…b855' | sha256sum
            (
                Some("parent"),
                &empty,
                "0fff58f3fa1c45f9464081a401231bb7540d9c327a8027d80196ace47e5fa3e6",
            ),
            // printf 'ba78…15ad+e3b0…b855' | sha256sum
            (
                Some(ABC),
                &empty,
                "3a965a20ddec1c4f7f5de85c2ae4e1d14629e1c9fd2cbefbe2e0ef4d8832a3f0",
            ),
        ];
        for (parent, diff, want) in cases {
            assert_eq!(layer_id(*parent, diff), *want, "{parent:?} {diff}");
        }
    }

    #[test]
    fn plus_separator() {
        // printf '%s' 'a+b' | sha256sum: the same hashing as layer_id's.
        let mut h = Sha256::new();
        h.update(b"a");
        h.update(b"+");
        h.update(b"b");
        assert_eq!(
            hex::encode(h.finalize()),
            "300273daf0bb57c239f83585d71ced54ce6b3b5fb81615abbeeb3f9cf5fae92f"
        );
    }

    #[test]
    fn image_id_is_config_hex() {
        let cfg = Digest::of_bytes(b"abc");
        assert_eq!(image_id(&cfg), ABC);
    }
}
