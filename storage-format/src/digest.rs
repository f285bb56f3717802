//! `sha256:<hex>` content digests.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest as _, Sha256};

use crate::error::{Error, Result};

const PREFIX: &str = "sha256:";

/// A SHA-256 content digest, always held as `"sha256:<64 lowercase hex>"`.
///
/// It serialises (serde) as that string and displays as it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Digest {
    s: String,
}

impl Digest {
    /// Parses `"sha256:<64 lowercase hex>"`. Any other algorithm, length or
    /// case is refused with [`Error::InvalidDigest`].
    pub fn parse(s: &str) -> Result<Digest> {
        let hex = s
            .strip_prefix(PREFIX)
            .ok_or_else(|| Error::InvalidDigest(s.to_owned()))?;
        let ok = hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !ok {
            return Err(Error::InvalidDigest(s.to_owned()));
        }
        Ok(Digest { s: s.to_owned() })
    }

    /// The digest whose raw SHA-256 value is `bytes`.
    pub fn from_sha256(bytes: [u8; 32]) -> Digest {
        Digest {
            s: format!("{PREFIX}{}", hex::encode(bytes)),
        }
    }

    /// The SHA-256 digest of `data`.
    pub fn of_bytes(data: &[u8]) -> Digest {
        Digest::from_sha256(Sha256::digest(data).into())
    }

    /// The 64 hex characters, without `"sha256:"`.
    pub fn hex(&self) -> &str {
        &self.s[PREFIX.len()..]
    }

    /// The full `"sha256:<hex>"` string.
    pub fn as_str(&self) -> &str {
        &self.s
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.s)
    }
}

impl FromStr for Digest {
    type Err = Error;

    fn from_str(s: &str) -> Result<Digest> {
        Digest::parse(s)
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.s)
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Digest, D::Error> {
        let s = String::deserialize(deserializer)?;
        Digest::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // printf '' | sha256sum ; printf 'abc' | sha256sum
    const EMPTY: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    const ABC: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

    #[test]
    fn of_bytes_known_values() {
        for (data, hex) in [(&b""[..], EMPTY), (&b"abc"[..], ABC)] {
            let d = Digest::of_bytes(data);
            assert_eq!(d.hex(), hex);
            assert_eq!(d.as_str(), format!("sha256:{hex}"));
            assert_eq!(d.to_string(), d.as_str());
        }
    }

    #[test]
    fn parse_table() {
        let good = format!("sha256:{ABC}");
        let cases: Vec<(String, bool)> = vec![
            (good.clone(), true),
            (ABC.to_owned(), false),
            (format!("sha512:{ABC}"), false),
            (format!("sha256:{}", ABC.to_uppercase()), false),
            (format!("sha256:{}", &ABC[1..]), false),
            (format!("sha256:{ABC}0"), false),
            (format!("sha256:{}g", &ABC[1..]), false),
            ("sha256:".to_owned(), false),
            (String::new(), false),
        ];
        for (input, ok) in cases {
            let r = Digest::parse(&input);
            assert_eq!(r.is_ok(), ok, "{input}");
            if ok {
                assert_eq!(input.parse::<Digest>().unwrap().as_str(), input);
            } else {
                assert!(matches!(r, Err(Error::InvalidDigest(ref s)) if *s == input));
            }
        }
    }

    #[test]
    fn from_sha256_matches_of_bytes() {
        let raw: [u8; 32] = Sha256::digest(b"abc").into();
        assert_eq!(Digest::from_sha256(raw), Digest::of_bytes(b"abc"));
    }

    #[test]
    fn serde_as_string() {
        let d = Digest::of_bytes(b"abc");
        let json = serde_json::to_string(&d).unwrap();
        assert_eq!(json, format!("\"sha256:{ABC}\""));
        let back: Digest = serde_json::from_str(&json).unwrap();
        assert_eq!(back, d);
        assert!(serde_json::from_str::<Digest>("\"sha256:abc\"").is_err());
    }
}
