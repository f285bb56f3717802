//! Random bytes for tokens and link ids.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::time::{SystemTime, UNIX_EPOCH};

/// Fills `buf` from the OS random source. Should that fail (it does not on
/// Linux once the system is up), falls back to std's randomly keyed SipHash
/// over the time and position: these values need to be unique, not secret.
pub(crate) fn fill(buf: &mut [u8]) {
    if getrandom::fill(buf).is_ok() {
        return;
    }
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let state = RandomState::new();
    for (i, chunk) in buf.chunks_mut(8).enumerate() {
        let mut h = state.build_hasher();
        h.write_u128(nanos);
        h.write_usize(i);
        h.write_u32(std::process::id());
        let v = h.finish().to_le_bytes();
        chunk.copy_from_slice(&v[..chunk.len()]);
    }
}

/// A new random link id: the first 26 characters of the standard base32
/// (`A-Z2-7`) encoding of 17 random bytes, as the overlay driver's
/// `generateID` makes them. The caller checks that `l/<id>` is not taken.
pub fn new_link_id() -> String {
    let mut bytes = [0u8; 17];
    fill(&mut bytes);
    let mut s = crate::overlay::base32(&bytes);
    s.truncate(crate::overlay::LINK_ID_LEN);
    s
}
