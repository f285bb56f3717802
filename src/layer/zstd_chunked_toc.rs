//! The table of contents (TOC) of a zstd:chunked layer, as c/storage's `pkg/chunked` places and
//! checks it: the layer descriptor's annotations `io.github.containers.zstd-chunked.manifest-checksum`
//! (sha256 of the *compressed* TOC bytes) and `…manifest-position` (`offset:length:uncompressed:type`,
//! type 1: the TOC is a zstd frame inside a skippable frame at that offset of the blob). While a
//! layer's blob streams through the import, those bytes are kept aside; once checked and
//! decompressed, the TOC is stored with the layer as podman 5 stores it after a partial pull (the
//! `zstd-chunked-manifest` big data, the layer's `toc-digest`), so that podman 5's later partial
//! pulls find our files. A TOC that does not check is ignored (as c/storage ignores it and pulls
//! whole): the layer is recorded as an ordinary zstd layer.

use std::collections::BTreeMap;

use serde::Deserialize;
use storage_format::Digest;

use super::tar_header::{EntryKind, TarHeader};

/// The annotation with the compressed TOC's digest.
pub const CHECKSUM_ANNOTATION: &str = "io.github.containers.zstd-chunked.manifest-checksum";
/// The annotation with the TOC's position.
pub const POSITION_ANNOTATION: &str = "io.github.containers.zstd-chunked.manifest-position";
/// The annotation with the tar-split's position (`offset:length:uncompressed`).
pub const TARSPLIT_POSITION_ANNOTATION: &str =
    "io.github.containers.zstd-chunked.tarsplit-position";
/// The layer big-data key of the uncompressed TOC (c/storage's `chunkedManifest`).
pub const MANIFEST_KEY: &str = "zstd-chunked-manifest";
/// The layer big-data key of the layer's format (`{"format":0}`: a directory tree).
pub const LAYER_DATA_KEY: &str = "zstd-chunked-layer-data";
/// What `zstd-chunked-layer-data` holds for a layer written as a tree.
pub const LAYER_DATA: &[u8] = b"{\"format\":0}";
/// The largest TOC c/storage accepts, compressed or not (`maxTocSize`).
const MAX_TOC: u64 = 150 << 20;

/// Where a layer's TOC is, as its descriptor says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TocRef {
    /// The sha256 of the compressed TOC bytes (the layer's `toc-digest` once checked).
    pub checksum: Digest,
    /// The offset of the compressed TOC in the blob.
    pub offset: u64,
    /// Its compressed length.
    pub length: u64,
    /// Its uncompressed length.
    pub uncompressed: u64,
    /// Where the tar-split is (`offset`, compressed length, uncompressed length), when the
    /// annotations say: what a partial pull fetches besides the TOC.
    pub tar_split: Option<(u64, u64, u64)>,
}

impl TocRef {
    /// The TOC a descriptor's annotations name, if they name one c/storage would use.
    pub fn from_annotations(a: &BTreeMap<String, String>) -> Option<TocRef> {
        // `n:n:…`, every field a number.
        let numbers = |key: &str| -> Option<Vec<u64>> {
            a.get(key)?.split(':').map(|p| p.parse().ok()).collect()
        };
        let checksum = Digest::parse(a.get(CHECKSUM_ANNOTATION)?).ok()?;
        let pos = numbers(POSITION_ANNOTATION)?;
        let tar_split = numbers(TARSPLIT_POSITION_ANNOTATION).and_then(|v| match v[..] {
            [offset, length, uncompressed] if length <= MAX_TOC => {
                Some((offset, length, uncompressed))
            }
            _ => None,
        });
        match pos[..] {
            [offset, length, uncompressed, 1] if length <= MAX_TOC && uncompressed <= MAX_TOC => {
                Some(TocRef {
                    checksum,
                    offset,
                    length,
                    uncompressed,
                    tar_split,
                })
            }
            _ => None,
        }
    }

    /// The blob's byte range to keep aside: `(offset, length)`.
    pub fn range(&self) -> (u64, u64) {
        (self.offset, self.length)
    }

    /// The uncompressed TOC from `compressed` (the bytes kept aside, or fetched), when they are
    /// what the annotations say (digest, lengths, a zstd frame), in an anonymous temporary file
    /// in `dir` (the system's temporary directory when `None`): it may be tens of MB, and is
    /// read entry by entry ([`TocBytes::read`]), which refuses what is not a TOC. `Err` says
    /// why not.
    pub fn decompress_to_file(
        &self,
        compressed: impl std::io::Read,
        dir: Option<&std::path::Path>,
    ) -> Result<TocBytes, String> {
        let file = match dir {
            Some(d) => tempfile::tempfile_in(d),
            None => tempfile::tempfile(),
        }
        .map_err(|e| format!("a temporary file: {e}"))?;
        let mut out = std::io::BufWriter::with_capacity(64 * 1024, &file);
        self.decompress_into(compressed, &mut out)?;
        std::io::Write::flush(&mut out).map_err(|e| format!("a temporary file: {e}"))?;
        drop(out);
        Ok(TocBytes(file))
    }

    /// Reads the compressed TOC from `compressed` (its first [`length`](Self::length) bytes)
    /// and writes it decompressed to `out`, in pieces: a TOC of tens of MB is never in memory.
    /// `Err` says why it is not what the annotations say, or why it could not be read.
    fn decompress_into(
        &self,
        compressed: impl std::io::Read,
        out: &mut dyn std::io::Write,
    ) -> Result<(), String> {
        use sha2::Digest as _;
        /// Hashes and counts what is read through it.
        struct Hashing<R> {
            inner: R,
            hash: sha2::Sha256,
            n: u64,
        }
        impl<R: std::io::Read> std::io::Read for Hashing<R> {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                let n = self.inner.read(buf)?;
                self.hash.update(&buf[..n]);
                self.n += n as u64;
                Ok(n)
            }
        }
        let mut input = Hashing {
            inner: std::io::Read::take(compressed, self.length),
            hash: sha2::Sha256::new(),
            n: 0,
        };
        let decoded = (|| -> std::io::Result<u64> {
            let mut decoder = zstd::stream::read::Decoder::new(&mut input)?;
            // One byte more than the annotation says shows a TOC that is longer.
            std::io::copy(
                &mut std::io::Read::take(&mut decoder, self.uncompressed + 1),
                out,
            )
        })();
        // The rest of the bytes (a trailing skippable frame, say, or all of them when they do
        // not decode) are hashed too: a digest that differs is what is reported first.
        std::io::copy(&mut input, &mut std::io::sink()).map_err(|e| format!("reading it: {e}"))?;
        if input.n != self.length {
            return Err(format!(
                "{} bytes where the annotation says {}",
                input.n, self.length
            ));
        }
        let actual = Digest::from_sha256(input.hash.finalize().into());
        if actual != self.checksum {
            return Err(format!("its digest is {actual}, not {}", self.checksum));
        }
        let written = decoded.map_err(|e| format!("it does not decompress: {e}"))?;
        if written != self.uncompressed {
            return Err(format!(
                "it decompresses to {written} bytes, not {}",
                self.uncompressed
            ));
        }
        Ok(())
    }
}

/// Whether the TOC tells the truth about the files it names by digest, in the layer as it was
/// written from the whole blob: `written` holds each entry of the layer's tar (cleaned name; a
/// regular file's sha256, computed as the sink wrote it), in tar order. Each regular file the TOC
/// names with a digest must be, in the same order, a regular file of the layer with that content,
/// not replaced by a later entry of the same name. A TOC is kept only if it is true, since podman
/// takes files from a layer by the digests its TOC gives. `Err` names the first file that
/// differs. Both sides are read in order, neither is held in memory.
pub fn matches_digests(
    manifest: &TocBytes,
    written: super::file_digests::FileDigests,
) -> Result<(), String> {
    let mut w = written.finish().map_err(|e| e.to_string())?;
    manifest
        .read(|e| {
            if e.kind != "reg" || e.size == 0 {
                return Ok(());
            }
            let name = e.name.as_str();
            let (comps, escaped) = super::path::clean_components(name.as_bytes());
            if escaped {
                return Err(format!("{name}: a name that climbs out"));
            }
            let h = storage_format::path_hash(&super::path::join(&comps));
            let digest = loop {
                match w.next_record().map_err(|e| e.to_string())? {
                    Some((at, d)) if at == h => break d,
                    Some(_) => {}
                    None => {
                        return Err(format!(
                            "{name}: not a file of the layer (in the TOC's order)"
                        ));
                    }
                }
            };
            let want = e.digest.as_deref().unwrap_or_default();
            if digest.is_none_or(|d| sha256_bytes(want) != Some(d)) {
                return Err(format!("{name}: the TOC says {want}, the file differs"));
            }
            if !w.is_last(h, w.index()) {
                return Err(format!("{name}: replaced later in the layer"));
            }
            Ok(())
        })
        .map(|_| ())
}

/// A layer's checked TOC, to store with it.
#[derive(Debug)]
pub struct StoredToc {
    /// The compressed TOC's digest (the layer's `toc-digest`).
    pub digest: Digest,
    /// The uncompressed TOC JSON (the `zstd-chunked-manifest` big data).
    pub manifest: TocBytes,
}

/// An uncompressed TOC's JSON, in a file from its start (an anonymous one as a pull checks it,
/// or a layer's stored big data): tens of MB for a layer of a hundred thousand entries, so never
/// read into memory whole. Read with `pread`, so shared reads do not move each other.
#[derive(Debug)]
pub struct TocBytes(pub std::fs::File);

impl TocBytes {
    /// Reads the TOC (c/storage's JSON: an object with an array of entries) entry by entry,
    /// calling `each` with each in order, without building the list: a TOC of a million entries
    /// costs one entry's memory. Returns the TOC's `tarSplitDigest`. `Err` says what is wrong:
    /// the JSON, or the first error `each` returned.
    pub fn read(
        &self,
        mut each: impl FnMut(TocEntry) -> Result<(), String>,
    ) -> Result<Option<String>, String> {
        let mut de = serde_json::Deserializer::from_reader(std::io::BufReader::with_capacity(
            64 * 1024,
            crate::fsutil::ReadAt::new(&self.0),
        ));
        let mut failed: Option<String> = None;
        let mut call = |e: TocEntry| -> bool {
            match each(e) {
                Ok(()) => true,
                Err(why) => {
                    failed = Some(why);
                    false
                }
            }
        };
        let read = serde::Deserializer::deserialize_map(&mut de, TocVisitor { each: &mut call })
            .and_then(|split| de.end().map(|()| split));
        match (failed, read) {
            (Some(why), _) => Err(why),
            (None, Ok(split)) => Ok(split),
            (None, Err(e)) => Err(format!("the TOC: {e}")),
        }
    }

    /// Writes the bytes to `out`.
    pub fn write_to(&self, out: &mut dyn std::io::Write) -> std::io::Result<()> {
        // Through a buffer of 64 KiB: `io::copy` writes what a `BufRead` holds at once.
        let mut r =
            std::io::BufReader::with_capacity(64 * 1024, crate::fsutil::ReadAt::new(&self.0));
        std::io::copy(&mut r, out)?;
        Ok(())
    }
}

/// One TOC entry (c/storage's `FileMetadata`), the fields a partial pull reads.
#[derive(Debug, Deserialize)]
pub struct TocEntry {
    /// `reg`, `chunk`, `dir`, `symlink`, …
    #[serde(rename = "type")]
    pub kind: String,
    /// The entry's name.
    #[serde(default)]
    pub name: String,
    /// A regular file's size.
    #[serde(default)]
    pub size: u64,
    /// sha256 of a regular file's content.
    #[serde(default)]
    pub digest: Option<String>,
    /// Where the (first chunk's) frames start in the blob.
    #[serde(default)]
    pub offset: u64,
    /// Where the file's (or this chunk's) frames end.
    #[serde(default, rename = "endOffset")]
    pub end_offset: u64,
    /// The chunk's uncompressed size.
    #[serde(default, rename = "chunkSize")]
    pub chunk_size: u64,
    /// `zeros` for a run of zeros (nothing to fetch).
    #[serde(default, rename = "chunkType")]
    pub chunk_type: Option<String>,
    /// sha256 of the chunk's content (a file cut into several chunks: on the file's entry for
    /// its first chunk, on each `chunk` entry for the others).
    #[serde(default, rename = "chunkDigest")]
    pub chunk_digest: Option<String>,
    /// Where the chunk starts in its file.
    #[serde(default, rename = "chunkOffset")]
    pub chunk_offset: u64,
}

/// The top-level object of a TOC: `entries` streamed, `tarSplitDigest` kept, the rest skipped.
struct TocVisitor<'f, F> {
    each: &'f mut F,
}

impl<'de, F: FnMut(TocEntry) -> bool> serde::de::Visitor<'de> for TocVisitor<'_, F> {
    type Value = Option<String>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a TOC (a JSON object with entries)")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        use serde::de::Error as _;
        let mut split = None;
        let mut entries = false;
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "entries" if !entries => {
                    map.next_value_seed(EntriesSeed {
                        each: &mut *self.each,
                    })?;
                    entries = true;
                }
                "tarSplitDigest" => split = map.next_value::<Option<String>>()?,
                _ => {
                    map.next_value::<serde::de::IgnoredAny>()?;
                }
            }
        }
        if !entries {
            return Err(A::Error::missing_field("entries"));
        }
        Ok(split)
    }
}

/// The `entries` array, each element handed over as it is parsed.
struct EntriesSeed<'f, F> {
    each: &'f mut F,
}

impl<'de, F: FnMut(TocEntry) -> bool> serde::de::DeserializeSeed<'de> for EntriesSeed<'_, F> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de, F: FnMut(TocEntry) -> bool> serde::de::Visitor<'de> for EntriesSeed<'_, F> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an array of TOC entries")
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        use serde::de::Error as _;
        while let Some(e) = seq.next_element::<TocEntry>()? {
            if !(self.each)(e) {
                return Err(A::Error::custom("stopped"));
            }
        }
        Ok(())
    }
}

/// The TOC's name for an entry kind.
pub(crate) fn toc_type(kind: EntryKind) -> Option<&'static str> {
    Some(match kind {
        EntryKind::Regular => "reg",
        EntryKind::HardLink => "hardlink",
        EntryKind::Symlink => "symlink",
        EntryKind::Directory => "dir",
        EntryKind::CharDevice => "char",
        EntryKind::BlockDevice => "block",
        EntryKind::Fifo => "fifo",
        _ => return None,
    })
}

/// Go's RFC 3339 with nanoseconds (trailing zeros trimmed), UTC, as Go marshals a time.
pub(crate) fn go_time(secs: i64, nsec: u32) -> String {
    use std::time::{Duration, UNIX_EPOCH};
    let t = if secs >= 0 {
        UNIX_EPOCH + Duration::new(secs.unsigned_abs(), nsec)
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs()) + Duration::from_nanos(nsec.into())
    };
    storage_format::time::rfc3339_nano(t)
}

/// The TOC fields of the entry `h` that do not depend on how its content is stored (type, name,
/// link, mode, size, owner, times, device, xattrs), as c/storage's `NewFileMetadata` takes them
/// from Go's tar reader; `None` for kinds a TOC does not list.
pub(crate) fn toc_entry_fields(
    h: &TarHeader,
) -> Option<serde_json::Map<String, serde_json::Value>> {
    use base64::Engine as _;
    let kind = toc_type(h.kind)?;
    let mut e = serde_json::Map::new();
    e.insert("type".into(), kind.into());
    e.insert("name".into(), String::from_utf8_lossy(&h.name).into());
    if !h.linkname.is_empty() {
        e.insert(
            "linkName".into(),
            String::from_utf8_lossy(&h.linkname).into(),
        );
    }
    // As c/storage's NewFileMetadata takes them from Go's reader, which its pull compares with
    // the tar-split: the mode field whole, the size of any entry, access and change times.
    if h.raw_mode != 0 {
        e.insert("mode".into(), h.raw_mode.into());
    }
    if h.size != 0 {
        e.insert("size".into(), h.size.into());
    }
    if h.uid != 0 {
        e.insert("uid".into(), h.uid.into());
    }
    if h.gid != 0 {
        e.insert("gid".into(), h.gid.into());
    }
    e.insert("modtime".into(), go_time(h.mtime, h.mtime_nsec).into());
    if let Some((secs, nsec)) = h.atime {
        e.insert("accesstime".into(), go_time(secs, nsec).into());
    }
    if let Some((secs, nsec)) = h.ctime {
        e.insert("changetime".into(), go_time(secs, nsec).into());
    }
    if h.devmajor != 0 {
        e.insert("devMajor".into(), h.devmajor.into());
    }
    if h.devminor != 0 {
        e.insert("devMinor".into(), h.devminor.into());
    }
    if !h.xattrs.is_empty() {
        let x: serde_json::Map<String, serde_json::Value> = h
            .xattrs
            .iter()
            .map(|(k, v)| {
                (
                    String::from_utf8_lossy(k).into_owned(),
                    base64::engine::general_purpose::STANDARD.encode(v).into(),
                )
            })
            .collect();
        e.insert("xattrs".into(), x.into());
    }
    Some(e)
}

/// The 32 bytes of a `sha256:…` digest.
pub fn sha256_bytes(d: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(d.strip_prefix("sha256:")?, &mut out).ok()?;
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_checked_in_order() {
        let d = |b: u8| [b; 32];
        let hex = |b: u8| format!("sha256:{}", hex::encode([b; 32]));
        let toc = format!(
            r#"{{"version":1,"entries":[{{"type":"dir","name":"./"}},{{"type":"reg","name":"./a","size":3,"digest":"{}"}},{{"type":"chunk","name":"./a"}},{{"type":"reg","name":"e"}}]}}"#,
            hex(1)
        );
        let written = |entries: &[(&[u8], Option<[u8; 32]>)]| {
            let mut w = super::super::file_digests::FileDigests::default();
            for (name, d) in entries {
                w.push(name, d.as_ref()).expect("push");
            }
            w
        };
        let files = |a: u8| vec![(&b""[..], None), (&b"a"[..], Some(d(a))), (&b"e"[..], None)];
        let mem = |t: &str| toc_file(t.as_bytes());
        assert_eq!(matches_digests(&mem(&toc), written(&files(1))), Ok(()));
        assert!(matches_digests(&mem(&toc), written(&files(2))).is_err());
        let mut more = files(1);
        more.push((&b"a"[..], None));
        assert!(
            matches_digests(&mem(&toc), written(&more)).is_err(),
            "an entry the TOC lacks"
        );
        let replaced = toc.replace(
            r#"{"type":"reg","name":"e"}"#,
            r#"{"type":"symlink","name":"a"}"#,
        );
        let mut then_link = files(1);
        then_link[2].0 = &b"a"[..];
        assert!(
            matches_digests(&mem(&replaced), written(&then_link)).is_err(),
            "replaced later"
        );
    }

    /// `bytes` as a TOC in a file.
    fn toc_file(bytes: &[u8]) -> TocBytes {
        use std::io::Write as _;
        let mut f = tempfile::tempfile().expect("tempfile");
        f.write_all(bytes).expect("write");
        TocBytes(f)
    }

    #[test]
    fn toc_read_entry_by_entry() {
        let toc = br#"{"version":1,"entries":[{"type":"dir","name":"./"},{"type":"reg","name":"a\u0041","size":3,"x":[1,{"y":2}]}],"tarSplitDigest":"sha256:ab"}"#;
        let mut names = Vec::new();
        let split = toc_file(toc).read(|e| {
            names.push((e.kind, e.name, e.size));
            Ok(())
        });
        assert_eq!(split, Ok(Some("sha256:ab".to_string())));
        assert_eq!(
            names,
            vec![
                ("dir".to_string(), "./".to_string(), 0),
                ("reg".to_string(), "aA".to_string(), 3)
            ]
        );
        // The first error of the callback, as it gave it; the rest is not read.
        let mut seen = 0;
        let r = toc_file(toc).read(|_| {
            seen += 1;
            Err("no".into())
        });
        assert_eq!((r, seen), (Err("no".to_string()), 1));
        // Not a TOC.
        assert!(toc_file(br#"{"version":1}"#).read(|_| Ok(())).is_err());
        assert!(toc_file(br#"{"entries":{}}"#).read(|_| Ok(())).is_err());
        assert!(toc_file(br#"{"entries":[]} x"#).read(|_| Ok(())).is_err());
        assert_eq!(toc_file(br#"{"entries":[]}"#).read(|_| Ok(())), Ok(None));
    }

    #[test]
    fn annotations_and_checks() {
        let toc = br#"{"version":1,"entries":[{"type":"dir","name":"."}]}"#;
        let compressed = zstd::bulk::compress(toc, 3).expect("compress");
        let mut a = BTreeMap::new();
        a.insert(
            CHECKSUM_ANNOTATION.to_string(),
            Digest::of_bytes(&compressed).to_string(),
        );
        a.insert(
            POSITION_ANNOTATION.to_string(),
            format!("100:{}:{}:1", compressed.len(), toc.len()),
        );
        let r = TocRef::from_annotations(&a).expect("a TOC");
        assert_eq!(r.range(), (100, compressed.len() as u64));
        let mut back = Vec::new();
        r.decompress_to_file(&compressed[..], None)
            .expect("checks")
            .write_to(&mut back)
            .expect("read back");
        assert_eq!(back, toc.to_vec());
        let mut bad = compressed.clone();
        bad[0] ^= 1;
        assert!(
            r.decompress_to_file(&bad[..], None)
                .unwrap_err()
                .contains("digest")
        );
        a.insert(POSITION_ANNOTATION.to_string(), "1:2:3:2".into());
        assert!(TocRef::from_annotations(&a).is_none(), "type 2 is not ours");
        assert!(TocRef::from_annotations(&BTreeMap::new()).is_none());
    }
}
